"""Data parallel on CPU (gloo, two processes via torchrun) == one process with the doubled batch.

Every multi-process run here goes through `otdistill.training.launch`, the path a training step takes in
its pod when `cluster.gpus` > 1: the job is written to a file and `torchrun` runs it as a child.

DDP with a replicated teacher runs in the fast suite; a teacher sharded with FSDP2 is slow-marked (more
collectives on a 2-core machine). FSDP of the trained model itself is accelerate's, which runs it on GPUs
only: it cannot be exercised here (a request for it fails in the ranks, and the launcher reports it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from otdistill.config import RunConfig
from otdistill.data import Example
from otdistill.models import ModelSpec
from otdistill.steps.common import RUN_ID_ENV
from otdistill.steps.train_sft import train_sft
from otdistill.tracking import TrackingConfig, open_pipeline_run
from otdistill.training import TrainConfig, TrainResult, distill_student
from otdistill.training.launch import DistributedTrainingError, Stage, TrainingJob, launch_torchrun
from tests.training.conftest import DIALOGSUM, MAX_LENGTH, data_config, tiny_config


def _launch(stage: Stage, train: TrainConfig, student: Path, teacher: Path) -> TrainResult:
    """Two ranks through the launcher, on the same 16 examples as the `examples` fixture."""
    job = TrainingJob(
        stage,
        train,
        data_config(),
        student=ModelSpec(source=str(student)),
        teacher=ModelSpec(source=str(teacher)),
    )
    return launch_torchrun(job, processes=2)


DDP_CASES = [
    pytest.param({}, id="ddp"),
    pytest.param({"teacher_sharding": "fsdp"}, id="ddp-sharded-teacher", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("mode", DDP_CASES)
def test_two_processes_equal_one_process_with_double_batch(
    mode: dict[str, str], tiny_pair: tuple[Path, Path], examples: list[Example], tmp_path: Path
) -> None:
    """torchrun x2 (gloo, CPU), batch 2 each == one process, batch 4: loss parts and final weights."""
    teacher, student = tiny_pair
    common = {"max_steps": 3, "save_steps": 3, "learning_rate": 3e-3}
    dist_cfg = tiny_config(tmp_path / "dist", per_device_batch_size=2, **common, **mode)
    dist = _launch("distill", dist_cfg, student, teacher)
    assert dist.record["world_size"] == 2
    assert dist.record["distributed"] == mode.get("distributed", "ddp")
    assert dist.record["teacher_sharding"] == mode.get("teacher_sharding", "replicate")

    single_cfg = tiny_config(tmp_path / "single", per_device_batch_size=4, **common)
    single = distill_student(single_cfg, student, teacher, examples, max_length=MAX_LENGTH)

    # the same global batches: the same loss parts at every step (gathered over both ranks)
    for a, b in zip(dist.history, single.history, strict=True):
        for key in ("loss", "loss_ce", "loss_had", "loss_sl", "loss_sd"):
            assert abs(a[key] - b[key]) <= 1e-4 * max(1.0, abs(b[key])), (a["step"], key, a[key], b[key])
    w_dist = load_file(str(tmp_path / "dist" / "model" / "model.safetensors"))
    w_one = load_file(str(tmp_path / "single" / "model" / "model.safetensors"))
    initial = load_file(str(student / "model.safetensors"))
    assert w_dist.keys() == w_one.keys()
    for key in w_one:
        torch.testing.assert_close(w_dist[key], w_one[key], rtol=1e-4, atol=1e-5, msg=key)
    assert any(not torch.allclose(initial[k], w_one[k]) for k in w_one)
    # both ranks' RNG states are in the (atomically finalized) checkpoint
    ckpt = tmp_path / "dist" / "checkpoint-3"
    assert (ckpt / "rng_state_0.pth").is_file() and (ckpt / "rng_state_1.pth").is_file()


# ---- the step, as its pod runs it -----------------------------------------------------------------------
@pytest.fixture()
def step_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """What a training step's pod has: a tracking server in the environment, the model cache, a snapshot
    of the training split (8 DialogSum rows) written by `prepare_data`'s layout."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("OTDISTILL_CACHE", str(tmp_path / "cache"))
    snapshot = tmp_path / "train_data"
    snapshot.mkdir()
    with open(DIALOGSUM / "train.jsonl", encoding="utf-8") as src:
        (snapshot / "train.jsonl").write_text("".join(src.readlines()[:8]), encoding="utf-8")
    yield {"uri": uri, "snapshot": snapshot, "root": tmp_path}


def _sft_baseline_step(
    env: dict[str, Any], student: Path, gpus: int, per_device: int, monkeypatch: pytest.MonkeyPatch
) -> tuple[TrainResult, str]:
    """The SFT-baseline step of its own pipeline run with `cluster.gpus: gpus`; (result, step run id).

    Plain SGD without clipping (a huge max_grad_norm still logs the norm): the weights after a step are
    the gradients, scaled, which Adam's first step (a sign) would hide."""
    run_id = f"gpus-{gpus}"
    monkeypatch.setenv(RUN_ID_ENV, run_id)
    parent = open_pipeline_run(TrackingConfig(tracking_uri=env["uri"]), "dist", pipeline_run_id=run_id)
    cfg = RunConfig.from_dict(
        {
            "name": "dist",
            "student": {"source": str(student)},
            "data": {"task": "dialogsum", "source": str(DIALOGSUM), "max_length": MAX_LENGTH},
            "sft_baseline": {
                "max_steps": 2,
                "per_device_batch_size": per_device,
                "optimizer": "sgd",
                "learning_rate": 0.5,
                "lr_scheduler": "constant",
                "max_grad_norm": 1e6,
                "logging_steps": 1,
                "save_steps": 1000,
                "precision": "fp32",
                "progress_bar": False,
            },
            "cluster": {"gpus": gpus},
        }
    )
    model_dir = env["root"] / f"model-{gpus}"
    # the step's input is exactly what the pipeline hands it: the step's config section
    train_sft(cfg.section_json("train_sft_baseline"), "student", env["snapshot"], model_dir)
    result = TrainResult.load(model_dir)
    (step,) = MlflowClient(env["uri"]).search_runs(
        [parent.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.run_id}'"
    )
    return result, step.info.run_id


def test_the_training_step_on_two_processes_equals_one_process(
    step_env: dict[str, Any], tiny_pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cluster.gpus: 2` -> the step launches two gloo ranks of batch 2; `gpus: 1` -> one process of batch
    4: after each of two SGD steps the loss and the gradient norm agree, and so do the final weights."""
    _, student = tiny_pair
    two, two_run = _sft_baseline_step(step_env, student, gpus=2, per_device=2, monkeypatch=monkeypatch)
    one, _ = _sft_baseline_step(step_env, student, gpus=1, per_device=4, monkeypatch=monkeypatch)
    assert two.record["world_size"] == 2 and two.record["distributed"] == "ddp"
    assert one.record["world_size"] == 1
    assert [h["step"] for h in two.history] == [h["step"] for h in one.history] == [1, 2]
    for a, b in zip(two.history, one.history, strict=True):
        for key in ("loss", "grad_norm"):
            assert abs(a[key] - b[key]) <= 1e-5 * max(1.0, abs(b[key])), (a["step"], key, a[key], b[key])
    w_two = load_file(str(step_env["root"] / "model-2" / "model.safetensors"))
    w_one = load_file(str(step_env["root"] / "model-1" / "model.safetensors"))
    initial = load_file(str(student / "model.safetensors"))
    for key in w_one:
        torch.testing.assert_close(w_two[key], w_one[key], rtol=0, atol=1e-5, msg=key)
    assert any(not torch.allclose(initial[k], w_one[k]) for k in w_one)
    # rank 0 of the child logged into the step's own run, which the step then ended
    client = MlflowClient(step_env["uri"])
    run = client.get_run(two_run)
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(two_run, "train/loss")] == [1, 2]
    assert run.data.params["distill.world_size"] == "2"


def test_a_failing_rank_fails_the_launch_with_its_error(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    """The ranks refuse FSDP of the trained model on CPU: the launcher raises with torchrun's exit code and
    the ranks' own error in the output tail, and no result is read."""
    teacher, student = tiny_pair
    cfg = tiny_config(tmp_path / "fsdp", loss="none", distributed="fsdp", max_steps=1)
    with pytest.raises(DistributedTrainingError) as caught:
        _launch("distill", cfg, student, teacher)
    assert caught.value.returncode != 0 and caught.value.processes == 2
    assert "accelerate did not enable FSDP" in caught.value.tail
    assert not (tmp_path / "fsdp" / "model").exists()


def test_job_files_carry_resolved_models_unchanged(tiny_pair: tuple[Path, Path]) -> None:
    """A step resolves its models once; the ranks get the same local files and provenance, not a new
    resolution (which N ranks would race on)."""
    from otdistill.models import resolve_model

    _, student = tiny_pair
    resolved = resolve_model(ModelSpec(source=str(student)))
    job = TrainingJob("distill", TrainConfig(loss="none"), data_config(), student=resolved)
    back = TrainingJob.from_dict(json.loads(json.dumps(job.to_dict())))
    assert back.student == resolved and back.teacher is None
    assert back.train == job.train and back.data == job.data


STEP_SCRIPT = """
import signal, sys, yaml
from otdistill.training.launch import TrainingJob, launch_torchrun

def terminated(signum, frame):  # what `step_run` does with SIGTERM in a step's main thread
    raise SystemExit(143)

signal.signal(signal.SIGTERM, terminated)
with open(sys.argv[1], encoding="utf-8") as fh:
    launch_torchrun(TrainingJob.from_dict(yaml.safe_load(fh)), processes=2)
"""


def test_sigterm_to_the_step_stops_its_ranks(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    """A pod eviction's SIGTERM reaches the step while torchrun runs: the step stops torchrun and its ranks
    (no rank is left holding a GPU) and exits as terminated."""
    import contextlib
    import subprocess
    import sys
    import time

    import psutil
    import yaml

    teacher, student = tiny_pair
    job = TrainingJob(
        "distill",
        tiny_config(tmp_path / "out", loss="none", max_steps=100_000, save_steps=100_000),
        data_config(),
        student=ModelSpec(source=str(student)),
    )
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job.to_dict()), encoding="utf-8")
    (tmp_path / "step.py").write_text(STEP_SCRIPT, encoding="utf-8")
    step = subprocess.Popen([sys.executable, str(tmp_path / "step.py"), str(tmp_path / "job.yaml")])
    proc = psutil.Process(step.pid)
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 300
        while len(children) < 3 and time.monotonic() < deadline:  # torchrun and its two ranks
            assert step.poll() is None, "the step ended before it was signalled"
            children = proc.children(recursive=True)
            time.sleep(0.5)
        assert len(children) >= 3, children
        step.send_signal(15)
        assert step.wait(timeout=120) == 143
        # the step waited for torchrun, which waited for its ranks: none outlives the step
        _, alive = psutil.wait_procs(children, timeout=2)
        assert not alive, alive
    finally:
        for leftover in [*children, proc]:  # after a failure only: leave no rank running
            with contextlib.suppress(psutil.NoSuchProcess):
                leftover.kill()
