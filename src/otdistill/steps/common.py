"""What the steps share: environment names, config parsing, the parent MLflow run, Model artifacts.

A Model artifact is a directory. A trained model is stored whole (Hugging Face files: config, safetensors,
tokenizer); a model used as is (the teacher without SFT, the untuned student) is stored as a reference
(`model_ref.json`: its ModelSpec) and resolved by the consumer, so multi-GB weights are not copied into
the artifact store for nothing. Both carry `otdistill_model.json` (role, source, revision) for lineage.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from otdistill.config import RunConfig, from_dict, to_dict
from otdistill.data import DataConfig
from otdistill.fingerprint import DATA_REPORT
from otdistill.models import ModelSpec, ResolvedModel, resolve_model

# The environment names, component image and log setup, kept importable without the ML stack (the
# components import them at compile time), are also importable from here.
from otdistill.steps.runtime import (  # noqa: F401
    CACHE_ENV,
    COMPONENT_IMAGE,
    IMAGE_ENV,
    RUN_ID_ENV,
    setup_logging,
)
from otdistill.tracking.config import TrackingConfig
from otdistill.tracking.runs import PipelineRun, attach_pipeline_run, find_pipeline_run, open_pipeline_run
from otdistill.training.config import TrainConfig

MODEL_INFO = "otdistill_model.json"
MODEL_REF = "model_ref.json"

log = logging.getLogger("otdistill.steps")


def load_step_config(config_json: str) -> RunConfig:
    """The step's config sections as a RunConfig (sections the step does not read keep their defaults)."""
    return RunConfig.from_json(config_json)


def pipeline_run(tracking: TrackingConfig, run_name: str, parent_run_id: str | None = None) -> PipelineRun:
    """This pipeline run's parent MLflow run.

    By id when the step gets it as an input (the uncached `register_and_promote`). A cached step gets
    neither the id nor the tracking section (they would enter its cache key): it reaches the server named
    by its environment (`tracking` then holds defaults: `MLFLOW_TRACKING_URI`), finds the parent by the
    KFP run id in the environment, in whatever experiment `open_run` put it, and works with the tracking
    settings recorded there. With no parent yet (a step run on its own), it opens one with `tracking`.
    """
    if parent_run_id:
        return attach_pipeline_run(tracking, parent_run_id)
    run_id = os.environ.get(RUN_ID_ENV, "").strip()
    if not run_id:
        raise RuntimeError(
            f"{RUN_ID_ENV} is not set: a step needs the pipeline run id to find its MLflow parent run "
            "(set by `otdistill run` locally and from the pod label `pipeline/runid` on a cluster)"
        )
    found = find_pipeline_run(tracking, run_id)
    if found is not None:
        return found
    log.warning("no MLflow parent run for pipeline run %s yet: opening one (%s)", run_id, tracking.experiment)
    return open_pipeline_run(tracking, run_name, pipeline_run_id=run_id)


def model_spec(cfg: RunConfig, role: str) -> ModelSpec:
    """The configured teacher or student spec; one component serves both roles (SFT, references)."""
    if role == "teacher":
        return cfg.teacher
    if role == "student":
        return cfg.student
    raise ValueError(f"role must be 'teacher' or 'student', got {role!r}")


def write_model_info(model_dir: Path, info: dict[str, Any]) -> None:
    """Write `otdistill_model.json`: what a Model artifact is (role, stage, base model, revisions)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / MODEL_INFO).write_text(json.dumps(info, indent=2, sort_keys=True), encoding="utf-8")


def read_model_info(model_dir: str | Path) -> dict[str, Any]:
    """The artifact's `otdistill_model.json` (empty for a plain Hugging Face directory)."""
    path = Path(model_dir) / MODEL_INFO
    if not path.exists():
        return {}
    return dict(json.loads(path.read_text(encoding="utf-8")))


def write_model_reference(
    model_dir: str | Path, spec: ModelSpec, resolved: ResolvedModel, role: str
) -> dict[str, str]:
    """Record `spec` in `model_dir` as a reference Model artifact; returns its metadata."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / MODEL_REF).write_text(json.dumps(to_dict(spec), indent=2, sort_keys=True), encoding="utf-8")
    record = resolved.record()
    info = {"role": role, "kind": "reference", "source_kind": record.pop("kind", "")}
    info.update({k: v for k, v in record.items() if k != "path"})
    write_model_info(model_dir, info)
    return info


def resolve_model_artifact(model_dir: str | Path) -> ResolvedModel:
    """A Model artifact directory -> a local Hugging Face model directory (resolving references)."""
    model_dir = Path(model_dir)
    ref = model_dir / MODEL_REF
    if ref.exists():
        spec = from_dict(ModelSpec, json.loads(ref.read_text(encoding="utf-8")), "model_ref")
        return resolve_model(spec)
    if not (model_dir / "config.json").exists():
        raise FileNotFoundError(
            f"{model_dir} is not a model artifact: it has neither {MODEL_REF} nor a Hugging Face config.json"
        )
    return resolve_model(ModelSpec(source=str(model_dir)))


def snapshot_data_config(cfg: RunConfig, snapshot_dir: str | Path, split: str) -> DataConfig:
    """The DataConfig that reads a `prepare_data` snapshot: same task and cuts, the snapshot as source.

    Every step that tokenises (SFT, teacher cache, distillation, evaluation) uses this one, so the teacher
    cache and the distillation see exactly the same examples, cut the same way.
    """
    return dataclasses.replace(cfg.data, source=str(snapshot_dir), split=split, revision=None, limit=None)


def step_tags(cfg: RunConfig) -> dict[str, str]:
    """Tags every step run carries: the pipeline name, and the image it ran in."""
    return {"otdistill.pipeline": cfg.name, "otdistill.container_image": os.environ.get(IMAGE_ENV, "local")}


def copy_model(src: str | Path, dst: str | Path) -> None:
    """Copy a Hugging Face model directory's files into the (possibly existing) artifact directory."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for item in Path(src).iterdir():
        target = dst / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            shutil.copy2(item, target)


def log_training_datasets(cfg: RunConfig, train_dir: str | Path, validation_dir: str | Path | None) -> None:
    """Record on the step run (MLflow's active run) the prepared snapshots a training step reads: the
    training split, and the validation split when the stage validates on it (the UI's Datasets view)."""
    from otdistill.tracking.datasets import log_dataset, snapshot_dataset

    for snapshot, context in ((train_dir, "training"), (validation_dir, "validation")):
        if snapshot is None:
            continue
        if not (Path(snapshot) / DATA_REPORT).is_file():  # not a prepare_data output: nothing to describe it
            log.warning("%s has no %s: its dataset input is not logged", snapshot, DATA_REPORT)
            continue
        log_dataset(snapshot_dataset(snapshot, cfg.data.subset), context)


def validation_snapshot_config(
    cfg: RunConfig, train: TrainConfig, snapshot_dir: str | Path | None
) -> DataConfig | None:
    """The DataConfig of the validation snapshot a training stage validates on, or None when it does not
    (`train.eval_every_steps` is 0). The split is the one the snapshot's report records: a training step's
    config sections hold no `validation` section (it would enter their cache key)."""
    if not train.validates:
        return None
    if snapshot_dir is None:
        raise ValueError(
            f"eval_every_steps is {train.eval_every_steps} but the step got no validation data "
            "(the pipeline passes prepare_validation_data's snapshot when it is set)"
        )
    report = Path(snapshot_dir) / DATA_REPORT
    if not report.is_file():
        raise FileNotFoundError(f"{snapshot_dir} is not a prepared data snapshot: it has no {DATA_REPORT}")
    split = str(json.loads(report.read_text(encoding="utf-8"))["split"])
    return snapshot_data_config(cfg, snapshot_dir, split)
