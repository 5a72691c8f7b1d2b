"""What the registry recorded about a model version, and the run config rebuilt from it.

`otdistill reproduce` starts from a registered version (``models:/name/3``, ``models:/name@champion``) or a
pipeline's MLflow run id, and needs only the tracking store: the version's tags name its parent run
(`otdistill.parent_run_id`) and its lineage (data hash, model revisions); the parent run holds the whole
config as the artifact `config.yaml`, the validation split's hash, and its steps' runs the precision they
trained in. `rebuild_config` turns that into the config of a rebuild: the same sources at their recorded
revisions (a hub branch pinned to the commit it resolved to), the same seeds, the recorded precision,
deterministic kernels, no step cache; `--set` overrides on top, recorded as deviations.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otdistill.config import ConfigError, RunConfig
from otdistill.tracking.lineage import LINEAGE_PREFIX

CONFIG_ARTIFACT = "config.yaml"
PARENT_RUN_TAG = "otdistill.parent_run_id"
MODEL_URI_TAG = "otdistill.model_uri"
VALIDATION_HASH_TAG = "otdistill.validation_hash"
# The training sections, and the step whose MLflow run records the precision each one trained in.
TRAINING_STEPS = {
    "teacher_sft": "train_teacher",
    "sft_baseline": "train_sft_baseline",
    "distill": "distill_student",
}
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


class ReproduceError(RuntimeError):
    """A run cannot be reproduced: something it recorded is missing or can no longer be had (named)."""


@dataclass(frozen=True)
class Original:
    """The registered version to reproduce and what its run recorded."""

    model_name: str
    version: str
    parent_run_id: str
    experiment_id: str
    version_tags: dict[str, str]
    parent_tags: dict[str, str]
    config: RunConfig
    # section -> precision ("fp32" / "bf16") its training step recorded, where the step ran in this run
    precisions: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"models:/{self.model_name}/{self.version}"

    @property
    def lineage(self) -> dict[str, str]:
        tags = self.version_tags or self.parent_tags
        return {k.removeprefix(LINEAGE_PREFIX): v for k, v in tags.items() if k.startswith(LINEAGE_PREFIX)}


def _version(client: Any, ref: str) -> Any:
    from mlflow.exceptions import MlflowException

    match = _VERSION_URI.match(ref.strip())
    try:
        if match is not None:
            if match["alias"]:
                return client.get_model_version_by_alias(match["name"], match["alias"])
            return client.get_model_version(match["name"], match["version"])
        run = client.get_run(ref.strip())
    except MlflowException as exc:
        hint = _versions_hint(client, match["name"]) if match is not None and match["alias"] else ""
        raise ReproduceError(f"{ref}: not found in the tracking store: {exc.message}{hint}") from None
    tags = run.data.tags
    parent_id = tags.get("mlflow.parentRunId")
    if parent_id:  # a step's run: its pipeline's parent run registered the model
        tags = client.get_run(parent_id).data.tags
    match = _VERSION_URI.match(tags.get(MODEL_URI_TAG, ""))
    if match is None or not match["version"]:
        raise ReproduceError(f"run {ref} registered no model version (its parent has no {MODEL_URI_TAG} tag)")
    return client.get_model_version(match["name"], match["version"])


def _versions_hint(client: Any, name: str) -> str:
    """For an alias nobody holds (the gate promoted no version, as the quickstart's statistical gate may
    decide): the model's versions and their gate decisions, so the user can name one instead."""
    from mlflow.exceptions import MlflowException

    from otdistill.tracking.registry import REASON_TAG, STATUS_TAG

    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException:
        return ""
    if not versions:
        return ""
    lines = [
        f"  models:/{name}/{mv.version}: {mv.tags.get(STATUS_TAG, 'no gate decision')}"
        + (f" ({mv.tags[REASON_TAG]})" if REASON_TAG in mv.tags else "")
        for mv in sorted(versions, key=lambda mv: int(mv.version))
    ]
    return (
        f"\nno version holds that alias; the versions of {name}, any of which reproduce takes:\n"
        + "\n".join(lines)
    )


def _recorded_precisions(client: Any, parent: Any) -> dict[str, str]:
    """The precision each training section ran in, from its step run's params (where the step ran in this
    pipeline run; a step-cache hit's run belongs to the run that computed it)."""
    runs = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    )
    steps = {step: section for section, step in TRAINING_STEPS.items()}
    out: dict[str, str] = {}
    for run in runs:
        section = steps.get(run.data.tags.get("otdistill.step", ""))
        names = [v for k, v in run.data.params.items() if k.endswith(".precision.name")]
        if section and names:
            out[section] = names[0]
    return out


def load_original(client: Any, ref: str) -> Original:
    """Find the version `ref` names, its parent run and that run's recorded config."""
    import mlflow
    from mlflow.exceptions import MlflowException

    mv = _version(client, ref)
    version_tags = dict(mv.tags)
    parent_id = version_tags.get(PARENT_RUN_TAG, "")
    if not parent_id and mv.run_id:
        parent_id = client.get_run(mv.run_id).data.tags.get("mlflow.parentRunId", "")
    if not parent_id:
        raise ReproduceError(f"models:/{mv.name}/{mv.version} names no parent run ({PARENT_RUN_TAG})")
    parent = client.get_run(parent_id)
    with tempfile.TemporaryDirectory(prefix="otdistill-reproduce-") as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=parent_id,
                artifact_path=CONFIG_ARTIFACT,
                dst_path=tmp,
                tracking_uri=client.tracking_uri,
            )
        except (MlflowException, OSError) as exc:
            raise ReproduceError(
                f"run {parent_id} (parent of models:/{mv.name}/{mv.version}) has no readable "
                f"{CONFIG_ARTIFACT} artifact: {exc}"
            ) from None
        try:
            config = RunConfig.from_yaml(path)
        except ConfigError as exc:
            raise ReproduceError(f"the recorded config of run {parent_id} no longer loads: {exc}") from None
    return Original(
        model_name=mv.name,
        version=str(mv.version),
        parent_run_id=parent_id,
        experiment_id=str(parent.info.experiment_id),
        version_tags=version_tags,
        parent_tags=dict(parent.data.tags),
        config=config,
        precisions=_recorded_precisions(client, parent),
    )


@dataclass(frozen=True)
class Rebuild:
    """The rebuild's config, what was pinned to make it the original's, and the deliberate deviations."""

    config: RunConfig
    pins: dict[str, str]
    deviations: dict[str, Any]


def _is_hub_model(source: str) -> bool:
    from otdistill.models.hub import looks_like_hub_id

    source = source.strip()
    if source.startswith(("pypi:", "s3://", "/", ".", "~")) or Path(source).expanduser().exists():
        return False
    return looks_like_hub_id(source)


def rebuild_config(original: Original, overrides: Mapping[str, Any], tracking_uri: str) -> Rebuild:
    """The original's recorded config, made exactly reproducible, with `overrides` applied last.

    tracking_uri: where the rebuild logs ("" keeps the recorded one: a cluster's own server). The rebuild
    registers under ``<name>-reproduction`` so that it can never take the original's aliases.
    """
    cfg = original.config
    lineage = original.lineage
    pins: dict[str, str] = {}
    for role in ("teacher", "student"):
        spec = getattr(cfg, role)
        recorded = lineage.get(f"{role}_revision", "")
        if _is_hub_model(spec.source) and _COMMIT.match(recorded) and spec.revision != recorded:
            pins[f"{role}.revision"] = f"{spec.revision} -> {recorded}"
            cfg = dataclasses.replace(cfg, **{role: dataclasses.replace(spec, revision=recorded)})
    for section in TRAINING_STEPS:
        train = getattr(cfg, section)
        changes: dict[str, Any] = {}
        if not train.deterministic:
            changes["deterministic"] = True
        precision = original.precisions.get(section)
        if train.precision == "auto" and precision:
            changes["precision"] = precision
        if changes:
            pins.update({f"{section}.{k}": f"{getattr(train, k)} -> {v}" for k, v in changes.items()})
            cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(train, **changes)})
    tracking = dataclasses.replace(
        cfg.tracking,
        tracking_uri=tracking_uri or cfg.tracking.tracking_uri,
        registered_model_name=f"{original.model_name}-reproduction",
    )
    cfg = dataclasses.replace(
        cfg, tracking=tracking, steps=dataclasses.replace(cfg.steps, enable_caching=False)
    )
    try:
        cfg = cfg.with_overrides(overrides) if overrides else cfg.with_overrides({})
    except ConfigError as exc:
        raise ReproduceError(f"--set: {exc}") from None
    return Rebuild(config=cfg, pins=pins, deviations=dict(overrides))


def deviation_json(deviations: Mapping[str, Any]) -> str:
    return json.dumps(dict(deviations), sort_keys=True, default=str)
