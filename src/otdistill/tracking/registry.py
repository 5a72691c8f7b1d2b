"""Registering the distilled student and promoting it to the champion alias only when it is better.

`register_and_promote` registers a new model version (every candidate is kept, promoted or not), compares its
metric with the champion's recorded metric and moves the alias only when the candidate wins by more than the
configured margin. The decision and its reason are recorded on the version's tags and on the run.

The registry has no compare-and-set on aliases, so two pipelines finishing at once could each read the old
champion, each set the alias, and the worse one could be left holding it. To converge, each promoter tags its
version ``promoted`` *before* setting the alias, then re-checks after a short settle: among the versions
promoted since the champion it replaced (and the current holder) the best must hold the alias; if not, it
moves the alias there. Whoever re-checks last sees every competitor's tag (tags precede alias writes), so
the alias ends on the best candidate and a loser records ``superseded`` instead of overwriting a better one.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from otdistill.stats import Comparison, clears_margin, point_comparison
from otdistill.tracking.config import TrackingConfig
from otdistill.tracking.connection import TrackingError, tracking_client
from otdistill.tracking.lineage import LINEAGE_PREFIX
from otdistill.tracking.metric_names import eval_metric
from otdistill.tracking.model_logging import STUDENT_ARTIFACT_NAME
from otdistill.tracking.scores import alias_holder

log = logging.getLogger(__name__)

METRIC_TAG_PREFIX = "otdistill.metric."
STATUS_TAG = "otdistill.promotion.status"
REASON_TAG = "otdistill.promotion.reason"
DECISION_ARTIFACT = "promotion_decision.json"
MAX_SETTLE_ROUNDS = 5

PENDING, PROMOTED, REJECTED, SUPERSEDED = "pending", "promoted", "rejected", "superseded"


@dataclass(frozen=True)
class PromotionDecision:
    """Outcome of one registration: the new version, the champion it was compared with, and why."""

    model_name: str
    version: str
    alias: str
    metric: str
    candidate_value: float
    champion_version: str | None
    champion_value: float | None
    margin: float
    promoted: bool
    status: str
    reason: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class _Scored:
    version: str
    value: float | None


def _recorded_value(client: MlflowClient, mv: ModelVersion, metric: str) -> float | None:
    """A version's metric: its registry tag, else the metric logged on its run, else None."""
    raw = mv.tags.get(METRIC_TAG_PREFIX + metric)
    if raw is not None:
        try:
            return float(raw)
        except ValueError:
            log.warning("version %s has a non-numeric %s tag: %r", mv.version, metric, raw)
    if mv.run_id:
        try:
            logged = client.get_run(mv.run_id).data.metrics
        except MlflowException:
            logged = {}
        # the registering run's `eval/distilled/<metric>` (`metric_names`); a bare name from other tools
        value = logged.get(eval_metric("distilled", metric), logged.get(metric))
        if value is not None:
            return float(value)
    return None


def _run_lineage(client: MlflowClient, run_id: str) -> dict[str, str]:
    """Lineage tags of the run, or of its parent run when the step itself has none (copied onto the
    model version so the registry alone tells what a student was made from)."""
    try:
        tags = client.get_run(run_id).data.tags
    except MlflowException as exc:
        raise TrackingError(f"run {run_id!r} to register a model from was not found: {exc.message}") from exc
    lineage = {k: v for k, v in tags.items() if k.startswith(LINEAGE_PREFIX)}
    parent_id = tags.get("mlflow.parentRunId")
    if not lineage and parent_id:
        parent_tags = client.get_run(parent_id).data.tags
        lineage = {k: v for k, v in parent_tags.items() if k.startswith(LINEAGE_PREFIX)}
    return lineage


def _holder(client: MlflowClient, name: str, alias: str, metric: str) -> _Scored | None:
    mv = alias_holder(client, name, alias)
    if mv is None:
        return None
    return _Scored(str(mv.version), _recorded_value(client, mv, metric))


def _best(candidates: list[_Scored], greater_is_better: bool) -> _Scored:
    """Best value; ties go to the earlier version, so a re-run with an equal score does not churn."""
    scored = [c for c in candidates if c.value is not None]
    if not scored:
        return min(candidates, key=lambda c: int(c.version))
    sign = 1.0 if greater_is_better else -1.0
    return max(scored, key=lambda c: (sign * float(c.value or 0.0), -int(c.version)))


def _settle(client: MlflowClient, config: TrackingConfig, baseline: int, own: _Scored) -> _Scored:
    """Re-check the alias until the best concurrently promoted version holds it; return that version."""
    name, alias, metric = config.registered_model_name, config.champion_alias, config.promotion_metric
    best = own
    for _ in range(MAX_SETTLE_ROUNDS):
        time.sleep(config.race_settle_s * (1.0 + random.random()))
        holder = _holder(client, name, alias, metric)
        contenders = [
            _Scored(str(mv.version), _recorded_value(client, mv, metric))
            for mv in client.search_model_versions(f"name='{name}'")
            if int(mv.version) > baseline and mv.tags.get(STATUS_TAG) == PROMOTED
        ]
        if holder is not None and all(c.version != holder.version for c in contenders):
            contenders.append(holder)
        if all(c.version != own.version for c in contenders):
            contenders.append(own)
        best = _best(contenders, config.greater_is_better)
        if holder is not None and holder.version == best.version:
            return best
        held = holder.version if holder else None
        log.info("alias %s@%s on v%s, moving it to better v%s", name, alias, held, best.version)
        client.set_registered_model_alias(name, alias, best.version)
    return best


def _record(client: MlflowClient, run_id: str, decision: PromotionDecision) -> None:
    name, version = decision.model_name, decision.version
    client.set_model_version_tag(name, version, STATUS_TAG, decision.status)
    client.set_model_version_tag(name, version, REASON_TAG, decision.reason)
    client.set_tag(run_id, STATUS_TAG, decision.status)
    client.set_tag(run_id, REASON_TAG, decision.reason)
    client.set_tag(run_id, "otdistill.registered_version", version)
    client.log_dict(run_id, decision.as_dict(), DECISION_ARTIFACT)


def register_and_promote(
    run_id: str,
    metric_value: float,
    config: TrackingConfig,
    *,
    model_uri: str | None = None,
    champion_comparison: tuple[str, Comparison] | None = None,
) -> PromotionDecision:
    """Register the student logged in `run_id` and promote it to the champion alias if it wins.

    model_uri: the logged model (``ModelInfo.model_uri``); default ``runs:/<run_id>/student``.
    The candidate wins when it clears `promotion_margin` against the champion
    (`otdistill.stats.clears_margin`, the one promotion rule), or when there is no champion yet.
    champion_comparison: (version, comparison) the caller took on its rows (the pipeline's bootstrap over
    the validation rows); used when that version still holds the alias, else the champion's recorded
    `promotion_metric` is compared as a point. The server is checked first (bounded), so an unreachable
    server fails before anything is registered.
    """
    if not math.isfinite(metric_value):
        raise ValueError(f"{config.promotion_metric} must be a finite number to register, got {metric_value}")
    client = tracking_client(config)
    name, alias, metric = config.registered_model_name, config.champion_alias, config.promotion_metric
    source = model_uri or f"runs:/{run_id}/{STUDENT_ARTIFACT_NAME}"
    tags = {
        **_run_lineage(client, run_id),
        METRIC_TAG_PREFIX + metric: repr(float(metric_value)),
        STATUS_TAG: PENDING,
    }
    mv = mlflow.register_model(source, name, await_registration_for=config.request_timeout_s, tags=tags)
    version = str(mv.version)
    own = _Scored(version, float(metric_value))
    champion = _holder(client, name, alias, metric)

    def decide(promoted: bool, status: str, reason: str) -> PromotionDecision:
        return PromotionDecision(
            model_name=name,
            version=version,
            alias=alias,
            metric=metric,
            candidate_value=float(metric_value),
            champion_version=champion.version if champion else None,
            champion_value=champion.value if champion else None,
            margin=config.promotion_margin,
            promoted=promoted,
            status=status,
            reason=reason,
        )

    if champion is None:
        reason = f"no model held @{alias}; v{version} becomes champion with {metric}={metric_value:.6g}"
    elif champion.value is None:
        decision = decide(
            False,
            REJECTED,
            f"champion v{champion.version} has no recorded {metric}; not comparable, promote manually",
        )
        _record(client, run_id, decision)
        return decision
    else:
        if champion_comparison is not None and champion_comparison[0] == champion.version:
            comparison = champion_comparison[1]
        else:
            comparison = point_comparison(
                float(metric_value), champion.value, greater_is_better=config.greater_is_better
            )
        if not clears_margin(comparison, config.promotion_margin):
            decision = decide(
                False,
                REJECTED,
                f"{metric}={metric_value:.6g} vs champion v{champion.version} {champion.value:.6g}: "
                f"improvement {comparison.describe()} is not more than "
                f"the margin {config.promotion_margin:g}",
            )
            _record(client, run_id, decision)
            return decision
        reason = (
            f"{metric}={metric_value:.6g} beats champion v{champion.version} ({champion.value:.6g}) by "
            f"{comparison.describe()} > margin {config.promotion_margin:g}"
        )

    # Tag before the alias write: a concurrent promoter's re-check must be able to see this candidate.
    client.set_model_version_tag(name, version, STATUS_TAG, PROMOTED)
    client.set_registered_model_alias(name, alias, version)
    baseline = int(champion.version) if champion else 0
    winner = _settle(client, config, baseline, own)
    if winner.version == version:
        decision = decide(True, PROMOTED, reason)
    else:
        decision = decide(
            False,
            SUPERSEDED,
            f"{reason}; superseded by concurrently registered v{winner.version} ({metric}={winner.value})",
        )
    _record(client, run_id, decision)
    log.info("registered %s v%s: %s (%s)", name, version, decision.status, decision.reason)
    return decision


def resolve_alias(name: str, alias: str, config: TrackingConfig, dst_dir: str | Path | None = None) -> Path:
    """Download ``models:/name@alias`` and return a local Hugging Face directory (config, weights, tokenizer).

    The student's Hugging Face directory is found in the download as evaluation finds it
    (`otdistill.evaluation.registry.assemble_hf_dir`) and moved to ``<dst_dir>/hf``, so `from_pretrained`
    loads it whole. `registered_model.json` beside it records which version was resolved.
    """
    from otdistill.evaluation.registry import assemble_hf_dir
    from otdistill.models import ModelSourceError

    client = tracking_client(config)
    try:
        mv = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise TrackingError(f"no model version of {name!r} holds alias {alias!r}: {exc.message}") from exc
    root = Path(dst_dir) if dst_dir is not None else Path(tempfile.mkdtemp(prefix="otdistill-model-"))
    download = root / "mlflow"
    hf_dir = root / "hf"
    for old in (download, hf_dir):
        if old.exists():
            shutil.rmtree(old)
    download.mkdir(parents=True)
    pinned = f"models:/{name}/{mv.version}"
    local = Path(mlflow.artifacts.download_artifacts(pinned, dst_path=str(download)))
    try:
        assemble_hf_dir(local, hf_dir, pinned)
    except ModelSourceError as exc:
        raise TrackingError(f"{name} v{mv.version} holds no Hugging Face model: {exc}") from exc
    shutil.rmtree(download)
    if not (hf_dir / "config.json").is_file() or not any(hf_dir.glob("*.safetensors")):
        raise TrackingError(f"{name} v{mv.version} has no config.json / safetensors weights")
    (root / "registered_model.json").write_text(
        json.dumps({"name": name, "alias": alias, "version": str(mv.version), "run_id": mv.run_id}, indent=2)
    )
    return hf_dir
