"""Where a step keeps what a retry of the same pipeline run resumes from, and how it claims it.

A pod's own disk dies with the pod, so the resumable state of the long steps (teacher SFT, the SFT
baseline, distillation, the teacher-cache build) lives under the model cache, which clusters mount from
the model-cache PVC (`OTDISTILL_CACHE`, see pipelines/cluster.py), scoped to the pipeline run:

    <OTDISTILL_CACHE>/checkpoints/<KFP run id>/<step>/

and, for the training steps, mirrored to `<checkpoint_uri>/<KFP run id>/<step>/` in S3 when the step's
train section sets `checkpoint_uri`. A retried task (`cluster.retry`, a preempted pod) and a retried run
(KFP's Retry: `POST /apis/v2beta1/runs/{run_id}:retry`, the UI's Retry button) keep the run id, so they
find it; a cloned or newly submitted run has a new id and starts from step 0 (its finished steps are KFP
cache hits). Locally `otdistill run --resume <run id>` re-runs a run id.

Every checkpoint records the step's fingerprint (`otdistill.fingerprint`: config section, data hash, base
model source and revision); only a matching one is resumed, others are refused with a warning naming both
fingerprints and moved to `refused-<12 hex>/` beside it. When the step has written its output artifact,
its checkpoints are removed (the refused ones stay); a run that failed and is never retried leaves its
`checkpoints/<run id>/` on the PVC, until a later run's `open_run` prunes it: the directories of runs that
nothing has written to for `steps.stale_checkpoint_days` (`prune_stale_checkpoints`; a retry after that
starts its step from 0).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from otdistill.fingerprint import combined_data_hash, fingerprint, model_identity, snapshot_data_hash
from otdistill.models import ResolvedModel
from otdistill.models.cache import default_cache_dir
from otdistill.steps.runtime import RUN_ID_ENV
from otdistill.training.checkpoints import REFUSED, S3CheckpointStore, remove_if_empty, set_aside
from otdistill.training.config import TrainConfig

log = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
FINGERPRINT_FILE = "otdistill_fingerprint.json"
_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _component(value: str, what: str) -> str:
    if not _SAFE.match(value):
        raise ValueError(f"{what} {value!r} cannot name a checkpoint directory (letters, digits, . _ - only)")
    return value


class StepCheckpoints:
    """One step's resumable state in one pipeline run: its directory, and the fingerprint it must match
    (known once the step has resolved its models: `for_training` / `claim`)."""

    def __init__(
        self, step: str, section_json: str, data_dir: str | Path, validation_dir: str | Path | None = None
    ) -> None:
        run_id = os.environ.get(RUN_ID_ENV, "").strip()
        if not run_id:
            raise RuntimeError(
                f"{RUN_ID_ENV} is not set: a step's checkpoints are scoped to the pipeline run id "
                "(set by `otdistill run` locally and from the pod label `pipeline/runid` on a cluster)"
            )
        self.step = _component(step, "step name")
        self.run_id = _component(run_id, "pipeline run id")
        self.directory = default_cache_dir() / CHECKPOINTS_DIR / self.run_id / self.step
        self.section_json = section_json
        self.data_sha256 = snapshot_data_hash(data_dir)
        if validation_dir is not None:  # its rows choose when to stop and which checkpoint to end with
            self.data_sha256 = combined_data_hash(self.data_sha256, snapshot_data_hash(validation_dir))
        self.fingerprint: str | None = None
        self._train: TrainConfig | None = None

    def fingerprint_with(self, models: Mapping[str, ResolvedModel]) -> str:
        """This step's fingerprint with `models` (role -> the resolved model) as its models part."""
        identities = {role: model_identity(m.source, m.revision) for role, m in models.items()}
        self.fingerprint = fingerprint(self.section_json, self.data_sha256, identities)
        log.info("%s: checkpoints in %s, fingerprint %s", self.step, self.directory, self.fingerprint)
        return self.fingerprint

    def s3_uri(self, checkpoint_uri: str | None) -> str | None:
        """The run-scoped S3 prefix under `checkpoint_uri` (None when there is no S3 mirror)."""
        if not checkpoint_uri:
            return None
        return f"{checkpoint_uri.rstrip('/')}/{self.run_id}/{self.step}"

    def for_training(self, train: TrainConfig, models: Mapping[str, ResolvedModel]) -> TrainConfig:
        """`train` writing its checkpoints here (and to the run-scoped S3 prefix), fingerprinted."""
        self._train = dataclasses.replace(
            train,
            output_dir=str(self.directory),
            checkpoint_uri=self.s3_uri(train.checkpoint_uri),
            checkpoint_fingerprint=self.fingerprint_with(models),
        )
        return self._train

    def claim(self, name: str, models: Mapping[str, ResolvedModel]) -> Path:
        """`<directory>/<name>` for resumable state that is not a Trainer checkpoint (a teacher cache being
        built): kept when it records this fingerprint, refused and moved aside otherwise; returned empty or
        with the matching state of an interrupted attempt."""
        ours = self.fingerprint_with(models)
        work = self.directory / name
        marker = work / FINGERPRINT_FILE
        if work.exists():
            theirs = None
            if marker.is_file():
                theirs = json.loads(marker.read_text(encoding="utf-8")).get("fingerprint")
            if theirs != ours:
                set_aside(work, theirs, ours)
            else:
                log.info("%s: resuming the state of an interrupted attempt in %s", self.step, work)
        work.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"fingerprint": ours}), encoding="utf-8")
        return work

    def finished(self) -> None:
        """The step's output artifact is written: remove its checkpoints (local, and the S3 mirror), keeping
        refused ones; then the run's directory if nothing is left in it."""
        train = self._train
        if train is not None and train.checkpoint_uri:
            S3CheckpointStore(train.checkpoint_uri, train.s3_endpoint_url).remove_checkpoints()
        if self.directory.is_dir():
            for item in self.directory.iterdir():
                if not item.name.startswith(REFUSED):
                    _remove(item)
        remove_if_empty(self.directory)
        remove_if_empty(self.directory.parent)


@contextmanager
def step_checkpoints(
    step: str, section_json: str, data_dir: str | Path, validation_dir: str | Path | None = None
) -> Iterator[StepCheckpoints]:
    """`StepCheckpoints` of `step` in this pipeline run; removed when the block ends without an error (the
    block writes the step's output artifact), kept for a retry when it raises. `validation_dir`: the
    validation snapshot a training step validates on, part of the fingerprint's data."""
    checkpoints = StepCheckpoints(step, section_json, data_dir, validation_dir)
    yield checkpoints
    checkpoints.finished()


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Pruned:
    """The checkpoints of one pipeline run, removed: its id, their size, how long nothing wrote to them."""

    run_id: str
    bytes: int
    idle_days: float


def prune_stale_checkpoints(
    max_idle_days: float, *, keep: str = "", root: Path | None = None, now: float | None = None
) -> list[Pruned]:
    """Remove `<root>/<run id>/` (root: the model cache's `checkpoints/`) for every pipeline run other than
    `keep` whose newest file or directory is older than `max_idle_days`: what a failed run that was never
    retried left behind (a running step rewrites its checkpoints every `save_steps`, and `finished` removes
    them when it succeeds). One that cannot be read or removed is logged and left, never an error: pruning
    must not fail the run that does it. Returns what was removed."""
    root = root if root is not None else default_cache_dir() / CHECKPOINTS_DIR
    if max_idle_days <= 0 or not root.is_dir():
        return []
    now = time.time() if now is None else now
    removed: list[Pruned] = []
    for run_dir in sorted(root.iterdir()):
        if run_dir.name == keep or not run_dir.is_dir() or run_dir.is_symlink():
            continue
        try:
            newest, size = _newest_and_size(run_dir)
        except OSError as exc:
            log.warning("checkpoints of run %s: cannot read them (%s); left in place", run_dir.name, exc)
            continue
        idle_days = (now - newest) / 86400
        if idle_days <= max_idle_days:
            continue
        shutil.rmtree(run_dir, ignore_errors=True)
        if run_dir.exists():
            log.warning("checkpoints of run %s: could not remove all of %s", run_dir.name, run_dir)
            continue
        log.info(
            "removed the checkpoints of run %s: %.1f GB nothing wrote to for %.1f days (more than %g)",
            run_dir.name,
            size / 1e9,
            idle_days,
            max_idle_days,
        )
        removed.append(Pruned(run_dir.name, size, idle_days))
    return removed


def _newest_and_size(top: Path) -> tuple[float, int]:
    """The newest modification time of `top` and anything below it, and the bytes of its files."""
    newest, size = top.lstat().st_mtime, 0
    for dirpath, dirnames, filenames in os.walk(top, onerror=_raise):
        for name in (*dirnames, *filenames):
            info = os.lstat(os.path.join(dirpath, name))
            newest = max(newest, info.st_mtime)
            if name in filenames:
                size += info.st_size
    return newest, size


def _raise(exc: OSError) -> None:
    raise exc
