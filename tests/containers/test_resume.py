"""A distillation container killed mid-training (SIGKILL, as a preempted node does it) loses nothing.

Every step runs in the CPU image (kfp.local DockerRunner) against the container stage's `mlflow server`:

1. run 1, with one task retry (`cluster.retry`, which kfp.local honours as KFP does on a cluster): once
   the distillation has written a checkpoint, `docker kill --signal KILL` its container; KFP retries the
   task under the same run id and it resumes at that checkpoint (its log says which step); once it has
   written a newer one, kill it again: no retry is left, the local run fails at `distill_student`;
2. run 2: `otdistill run --resume <run 1's id>` (KFP's Retry of a failed run keeps the run id the same
   way): the finished steps are cache hits, and the distillation resumes at the newest checkpoint, finishes,
   and removes its checkpoints;
3. run 3: the same config but for a setting that does not touch the weights (`distill.logging_steps`, so
   only the distillation and what follows it re-run, uninterrupted); in deterministic mode both students
   are equal, tensor for tensor, bit for bit.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from otdistill.config import RunConfig, load_config
from otdistill.steps.runtime import RUN_ID_ENV
from otdistill.training import verify_checkpoint
from tests.containers.conftest import docker
from tests.servers.processes import ServerStack

ROOT = Path(__file__).resolve().parents[2]
DIALOGSUM = ROOT.parent / "shared" / "data" / "dialogsum"
STEPS, SAVE_EVERY = 24, 4
RESUMING = re.compile(r"distill: resuming from (\S+) \(step (\d+)\)")


@dataclass
class Kill:
    """What the watcher did: the containers it killed, and the newest complete checkpoint after each kill."""

    containers: list[str] = field(default_factory=list)
    left_at: list[int] = field(default_factory=list)
    error: str = ""
    done: threading.Event = field(default_factory=threading.Event)


def _complete(checkpoint_dirs: list[Path]) -> list[Path]:
    return [p for p in checkpoint_dirs if verify_checkpoint(p, check_hashes=False) is None]


def _step(path: Path) -> int:
    return int(path.name.split("-")[1])


def _distill_container(run_dir: Path, exclude: list[str]) -> str:
    """The running container of this run's `distill_student` step (it bind-mounts the run directory)."""
    for cid in docker("ps", "-q", "--no-trunc").stdout.split():
        info = json.loads(docker("inspect", cid, check=False).stdout or "[{}]")[0]
        mounts = {m.get("Source") for m in info.get("Mounts", [])}
        command = " ".join((info.get("Config") or {}).get("Cmd") or []) + " ".join(info.get("Args") or [])
        if str(run_dir) in mounts and "distill_student" in command and cid not in exclude:
            return str(cid)
    return ""


def _watch_and_kill(run_dir: Path, checkpoints: Path, kill: Kill, kills: int, timeout_s: float) -> None:
    """SIGKILL the distillation container each time a complete checkpoint newer than the last kill's
    exists, `kills` times."""
    deadline = time.monotonic() + timeout_s
    pattern = "*/distill_student/checkpoint-*"
    try:
        while time.monotonic() < deadline and not kill.done.is_set() and len(kill.containers) < kills:
            newest = max((_step(p) for p in _complete(list(checkpoints.glob(pattern)))), default=0)
            if newest > max(kill.left_at, default=0):
                container = _distill_container(run_dir, kill.containers)
                if container:
                    docker("kill", "--signal", "KILL", container)
                    kill.containers.append(container)
                    left = _complete(list(checkpoints.glob(pattern)))  # nothing writes any more
                    kill.left_at.append(max(_step(p) for p in left))
            time.sleep(0.05)
        if len(kill.containers) < kills and not kill.done.is_set():
            kill.error = f"killed {len(kill.containers)} of {kills} distillation containers in time"
    except Exception as exc:  # reported by the test, not lost in the thread
        kill.error = f"{type(exc).__name__}: {exc}"


def _students(run_dir: Path) -> set[Path]:
    return set(run_dir.glob("kfp/**/distill-student/student_model/model.safetensors"))


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
    with pytest.MonkeyPatch.context() as mp:
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

        started = time.monotonic()
        reference_cfg = cfg.with_overrides({"distill.logging_steps": 2})  # not the weights: a cache miss
        run_local(reference_cfg, run_dir, runner="docker")
        seconds["run 3 (uninterrupted)"] = time.monotonic() - started
        (reference_student,) = _students(run_dir) - {resumed_student}
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
    assert not (runs.cache / "checkpoints" / runs.run_id).exists()


def test_resumed_student_equals_the_uninterrupted_one_bit_for_bit(runs: Runs) -> None:
    resumed = load_file(str(runs.resumed_student))
    reference = load_file(str(runs.reference_student))
    assert resumed.keys() == reference.keys()
    for name in resumed:
        assert torch.equal(resumed[name], reference[name]), name
    initial = load_file(str(Path(runs.cfg.student.source) / "model.safetensors"))
    assert any(not torch.equal(initial[k], resumed[k]) for k in initial if k in resumed)
