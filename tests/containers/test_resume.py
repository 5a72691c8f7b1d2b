"""A distillation container killed mid-training (SIGKILL, as a preempted node does it) loses nothing.

Every step runs in the CPU image (kfp.local DockerRunner) against the container stage's `mlflow server`:

1. run 1, with one task retry (`cluster.retry`, which kfp.local honours as KFP does on a cluster): once
   the distillation has written a checkpoint, `docker kill --signal KILL` its container; KFP retries the
   task under the same run id and it resumes at that checkpoint (its log says which step); once it has
   written a newer one, kill it again: no retry is left, the local run fails at `distill_student`;
2. run 2: `otdistill run --resume <run 1's id>` (KFP's Retry of a failed run keeps the run id the same
   way): the finished steps are cache hits, and the distillation resumes at the newest checkpoint, finishes,
   and removes its checkpoints;
3. the reference: the container of run 1's first distillation attempt (which started from step 0) run
   again, uninterrupted, as it was: the same image, command (the component's code and executor input:
   config, teacher, teacher cache, training data), environment, mounts, user and network, with only its
   pipeline run id (a new one: no checkpoint to find) and its output location changed. Only the
   distillation is re-run: the rest of the DAG would not touch the weights. In deterministic mode its
   student equals the resumed run's, tensor for tensor, bit for bit.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from kfp.dsl.constants import WORKSPACE_MOUNT_PATH
from safetensors.torch import load_file

from otdistill.config import RunConfig, TrackingConfig, load_config
from otdistill.steps.runtime import RUN_ID_ENV
from otdistill.tracking.access import as_user, provision_pipeline_identity
from otdistill.tracking.runs import find_pipeline_run, finish_pipeline_run
from otdistill.training import verify_checkpoint
from tests.containers.conftest import docker
from tests.servers.processes import ServerStack

ROOT = Path(__file__).resolve().parents[2]
DIALOGSUM = ROOT.parent / "shared" / "data" / "dialogsum"
STEPS, SAVE_EVERY = 24, 4
RESUMING = re.compile(r"distill: resuming from (\S+) \(step (\d+)\)")
# the distillation's checkpoint fingerprint: its config section, training data hash, student and teacher
FINGERPRINT = re.compile(r"distill_student: checkpoints in \S+, fingerprint (\S+)")


@dataclass
class Kill:
    """What the watcher did: the containers it killed (and their `docker inspect`), and the newest complete
    checkpoint after each kill."""

    containers: list[str] = field(default_factory=list)
    inspected: list[dict[str, Any]] = field(default_factory=list)
    left_at: list[int] = field(default_factory=list)
    error: str = ""
    done: threading.Event = field(default_factory=threading.Event)


def _complete(checkpoint_dirs: list[Path]) -> list[Path]:
    return [p for p in checkpoint_dirs if verify_checkpoint(p, check_hashes=False) is None]


def _step(path: Path) -> int:
    return int(path.name.split("-")[1])


def _distill_container(run_dir: Path, exclude: list[str]) -> tuple[str, dict[str, Any]]:
    """The running container of this run's `distill_student` step (it bind-mounts the run directory), and
    its `docker inspect`; ("", {}) when there is none."""
    for cid in docker("ps", "-q", "--no-trunc").stdout.split():
        info = json.loads(docker("inspect", cid, check=False).stdout or "[{}]")[0]
        mounts = {m.get("Source") for m in info.get("Mounts", [])}
        command = " ".join((info.get("Config") or {}).get("Cmd") or []) + " ".join(info.get("Args") or [])
        if str(run_dir) in mounts and "distill_student" in command and cid not in exclude:
            return str(cid), info
    return "", {}


def _watch_and_kill(run_dir: Path, checkpoints: Path, kill: Kill, kills: int, timeout_s: float) -> None:
    """SIGKILL the distillation container each time a complete checkpoint newer than the last kill's
    exists, `kills` times."""
    deadline = time.monotonic() + timeout_s
    pattern = "*/distill_student/checkpoint-*"
    try:
        while time.monotonic() < deadline and not kill.done.is_set() and len(kill.containers) < kills:
            newest = max((_step(p) for p in _complete(list(checkpoints.glob(pattern)))), default=0)
            if newest > max(kill.left_at, default=0):
                container, info = _distill_container(run_dir, kill.containers)
                if container:
                    docker("kill", "--signal", "KILL", container)
                    kill.containers.append(container)
                    kill.inspected.append(info)
                    left = _complete(list(checkpoints.glob(pattern)))  # nothing writes any more
                    kill.left_at.append(max(_step(p) for p in left))
            time.sleep(0.05)
        if len(kill.containers) < kills and not kill.done.is_set():
            kill.error = f"killed {len(kill.containers)} of {kills} distillation containers in time"
    except Exception as exc:  # reported by the test, not lost in the thread
        kill.error = f"{type(exc).__name__}: {exc}"


def _students(run_dir: Path) -> set[Path]:
    return set(run_dir.glob("kfp/**/distill-student/student_model/model.safetensors"))


def _executor_input(command: list[str]) -> tuple[int, dict[str, Any]]:
    """Where the KFP executor input is in a task container's command, and its value."""
    at = command.index("--executor_input") + 1
    return at, json.loads(command[at])


def replay_uninterrupted(
    info: dict[str, Any], run_id: str, out_dir: Path, log_path: Path
) -> tuple[Path, dict[str, Any]]:
    """Run the task container `info` (a `docker inspect`) again to completion, as the DockerRunner started
    it (image, command, environment, mounts, user, network), with pipeline run id `run_id` and its output
    artifacts in `out_dir`. Returns the student model directory and the executor input it ran with."""
    config, host = info["Config"], info["HostConfig"]
    command = list(config["Cmd"])
    at, executor_input = _executor_input(command)
    outputs = executor_input["outputs"]
    for name, artifacts in outputs["artifacts"].items():
        for artifact in artifacts["artifacts"]:
            artifact["uri"] = str(out_dir / name)
    outputs["outputFile"] = str(out_dir / "executor_output.json")
    command[at] = json.dumps(executor_input)
    out_dir.mkdir(parents=True)

    env = dict(item.split("=", 1) for item in config["Env"])
    assert env[RUN_ID_ENV] != run_id
    env[RUN_ID_ENV] = run_id
    name = f"otdistill-test-reference-{secrets.token_hex(4)}"
    argv = ["docker", "run", "--rm", "--name", name, f"--network={host['NetworkMode']}"]
    if config.get("User"):
        argv.append(f"--user={config['User']}")
    for mount in info["Mounts"]:
        if mount["Type"] == "volume" and mount["Destination"] in (config.get("Volumes") or {}):
            continue  # the image's VOLUME: `docker run` gives the new container an empty one too
        assert mount["Type"] == "bind", mount
        source = mount["Source"]
        if mount["Destination"] == WORKSPACE_MOUNT_PATH and not Path(source).exists():
            source = out_dir / "kfp-workspace"  # kfp.local's per-run workspace (empty), removed after the run
            source.mkdir()
        read_only = "" if mount["RW"] else ",readonly"
        argv.append(f"--mount=type=bind,source={source},target={mount['Destination']}{read_only}")
    argv += [a for variable in env for a in ("-e", variable)]  # values from the environment, not argv
    argv += [config["Image"], *command]
    with open(log_path, "w", encoding="utf-8") as out:
        try:
            done = subprocess.run(
                argv,
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=1200,
                check=False,
            )
        finally:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60, check=False)
    output = log_path.read_text(encoding="utf-8", errors="replace")
    assert done.returncode == 0, f"the reference distillation exited {done.returncode}:\n{output[-4000:]}"
    return out_dir / "student_model", executor_input


@dataclass
class Runs:
    cfg: RunConfig
    cache: Path
    run_id: str
    kill: Kill
    first_error: str
    first_log: str
    newest_after_first: int
    finished_in_first: bool
    resumed: object
    resumed_log: str
    resumed_student: Path
    checkpoints_left: bool
    resumed_config: str
    reference_config: str
    reference_log: str
    reference_error: str
    reference_student: Path


@pytest.fixture(scope="module")
def runs(
    container_stack: ServerStack, tiny_pair: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Runs]:
    from otdistill.pipelines.local import run_local

    teacher, student = tiny_pair
    overrides = {
        "name": "tiny-resume",
        "teacher.source": str(teacher),
        "student.source": str(student),
        "data.source": str(DIALOGSUM),
        "steps.skip_teacher_sft": True,
        "steps.skip_sft_baseline": True,
        "distill.max_steps": STEPS,
        "distill.save_steps": SAVE_EVERY,
        "distill.save_total_limit": None,
        "distill.deterministic": True,
        "cluster.retry.num_retries": 1,
        "cluster.retry.backoff_duration": "1s",
        "tracking.tracking_uri": container_stack.mlflow.uri,
        "tracking.experiment": "otdistill-resume",
        "tracking.registered_model_name": "otdistill-resume-student",
    }
    cfg = load_config(ROOT / "configs" / "tiny.yaml", overrides)
    run_dir = tmp_path_factory.mktemp("resume-run")
    cache = tmp_path_factory.mktemp("resume-model-cache")
    seconds: dict[str, float] = {}
    with as_user(container_stack.mlflow.admin):  # the server runs basic-auth: the pipeline's user
        provision_pipeline_identity(container_stack.mlflow.uri, container_stack.pipeline, [cfg.tracking])
    with as_user(container_stack.pipeline), pytest.MonkeyPatch.context() as mp:
        mp.setenv("OTDISTILL_CACHE", str(cache))  # the PVC's role: checkpoints/<run id>/<step>/
        mp.setenv(RUN_ID_ENV, "")  # run_local sets it; restored afterwards
        kill = Kill()
        watcher = threading.Thread(
            target=_watch_and_kill, args=(run_dir, cache / "checkpoints", kill, 2, 1500.0)
        )
        watcher.start()
        started = time.monotonic()
        first_error = ""
        try:
            run_local(cfg, run_dir, runner="docker")
        except Exception as exc:
            first_error = f"{type(exc).__name__}: {exc}"
        finally:
            kill.done.set()
            watcher.join()
        seconds["run 1 (killed twice)"] = time.monotonic() - started
        (log,) = (run_dir / "logs").glob("*.log")
        run_id, first_log = log.stem, log.read_text(encoding="utf-8", errors="replace")
        step_dir = cache / "checkpoints" / run_id / "distill_student"
        newest_after_first = max(
            (_step(p) for p in _complete(list(step_dir.glob("checkpoint-*")))), default=0
        )
        finished_in_first = (step_dir / "model").exists()

        started = time.monotonic()
        resumed = run_local(cfg, run_dir, runner="docker", resume=run_id)
        seconds["run 2 (--resume)"] = time.monotonic() - started
        resumed_log = log.read_text(encoding="utf-8", errors="replace")[len(first_log) :]
        (resumed_student,) = _students(run_dir)
        checkpoints_left = (cache / "checkpoints" / run_id).exists()
        # what run 2's distillation was given as its config (open_run's output parameter)
        opened = resumed_student.parents[2] / "open-run" / "executor_output.json"  # run 2's root
        resumed_config = json.loads(opened.read_text())["parameterValues"]["distill_student"]

        started = time.monotonic()
        reference_id = f"reference-{secrets.token_hex(4)}"
        reference_log = run_dir / "reference.log"
        reference_student = Path()
        reference_config = reference_error = ""
        try:
            assert kill.inspected, "no distillation container was killed, so none to replay"
            model_dir, executor_input = replay_uninterrupted(
                kill.inspected[0], reference_id, run_dir / "reference", reference_log
            )
            reference_student = model_dir / "model.safetensors"
            reference_config = executor_input["inputs"]["parameterValues"]["config"]
        except AssertionError as exc:  # the bit-for-bit test reports it; the others still run
            reference_error = str(exc)
        finally:
            # the step opened a parent MLflow run of its own (no open_run for this id): end it
            parent = find_pipeline_run(TrackingConfig(tracking_uri=container_stack.mlflow.uri), reference_id)
            if parent is not None:
                finish_pipeline_run(parent, "FINISHED" if not reference_error else "FAILED")
        seconds["reference (distillation only, uninterrupted)"] = time.monotonic() - started
    print(f"resume in containers: {', '.join(f'{k} {v:.0f} s' for k, v in seconds.items())}")
    print(f"killed at checkpoints {kill.left_at} of {STEPS} steps")
    yield Runs(
        cfg=cfg,
        cache=cache,
        run_id=run_id,
        kill=kill,
        first_error=first_error,
        first_log=first_log,
        newest_after_first=newest_after_first,
        finished_in_first=finished_in_first,
        resumed=resumed,
        resumed_log=resumed_log,
        resumed_student=resumed_student,
        checkpoints_left=checkpoints_left,
        resumed_config=resumed_config,
        reference_config=reference_config,
        reference_log=reference_log.read_text(encoding="utf-8", errors="replace")
        if reference_log.exists()
        else "",
        reference_error=reference_error,
        reference_student=reference_student,
    )


def test_a_killed_task_is_retried_and_resumes_then_the_run_fails(runs: Runs) -> None:
    kill = runs.kill
    assert not kill.error, kill.error
    assert len(kill.containers) == 2 and 0 < kill.left_at[0] < kill.left_at[1] < STEPS, kill
    # KFP's task retry (same run id) resumed at the checkpoint the first kill left
    assert [int(step) for _, step in RESUMING.findall(runs.first_log)] == [kill.left_at[0]]
    assert "refusing to resume" not in runs.first_log
    assert "distill" in runs.first_error, runs.first_error  # the second kill failed the run there
    assert runs.newest_after_first == kill.left_at[1]  # what the failed run left for a retry
    assert not runs.finished_in_first, "the killed distillation must not have finished"


def test_rerunning_the_run_id_resumes_at_the_last_checkpoint(runs: Runs) -> None:
    found = RESUMING.findall(runs.resumed_log)
    assert found, f"no resume line in the resumed run's log:\n{runs.resumed_log[-4000:]}"
    assert [(Path(path).name, int(step)) for path, step in found] == [
        (f"checkpoint-{runs.kill.left_at[1]}", runs.kill.left_at[1])
    ]
    assert "refusing to resume" not in runs.resumed_log
    assert runs.resumed.pipeline_run_id == runs.run_id  # type: ignore[attr-defined]
    # the step ended well: its checkpoints are gone, nothing of the run is left on the "PVC"
    assert not runs.checkpoints_left


def test_resumed_student_equals_the_uninterrupted_one_bit_for_bit(runs: Runs) -> None:
    assert not runs.reference_error, runs.reference_error
    # the reference distilled with what run 2's distillation had, from step 0 to the end, uninterrupted:
    # the same config, and the same fingerprint (config section, data hash, student and teacher)
    assert runs.reference_config == runs.resumed_config
    fingerprints = set(FINGERPRINT.findall(runs.resumed_log))
    assert fingerprints and set(FINGERPRINT.findall(runs.reference_log)) == fingerprints
    info = [
        json.loads((p.parent / "otdistill_model.json").read_text())
        for p in (runs.resumed_student, runs.reference_student)
    ]
    assert info[0] == info[1] and info[0]["global_step"] == str(STEPS), info
    assert json.loads(runs.reference_config)["distill"]["deterministic"] is True
    assert not RESUMING.findall(runs.reference_log), runs.reference_log[-4000:]
    assert f"distillation done: {STEPS} steps" in runs.reference_log, runs.reference_log[-4000:]
    resumed = load_file(str(runs.resumed_student))
    reference = load_file(str(runs.reference_student))
    assert resumed.keys() == reference.keys()
    for name in resumed:
        assert torch.equal(resumed[name], reference[name]), name
    initial = load_file(str(Path(runs.cfg.student.source) / "model.safetensors"))
    assert any(not torch.equal(initial[k], resumed[k]) for k in initial if k in resumed)
