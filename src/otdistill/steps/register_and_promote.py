"""Step `register_and_promote`: register the distilled student and decide whether it becomes champion.

The gate: every new version gets the alias `challenger`; it takes `champion` only if its promotion metric
beats (by more than the margin, in the metric's direction)

  1. the SFT baseline student of the same run (same data, same evaluation), when the run trained one
     (`steps.skip_sft_baseline` off; with it on there is no SFT baseline and the condition is recorded
     as absent), and
  2. the current champion, scored on this run's validation rows with this run's scoring settings (a
     score taken on other data is not comparable). `score_champion` took that score on the GPU, or
     found it recorded on the champion's version (`otdistill.tracking.scores`); this step only compares
     numbers, so it stays a light CPU step. If the champion moved during the run to a version with no
     comparable score, the candidate is not promoted (the reason says so; a re-run compares them).

Registration, the champion comparison, the alias move and its race handling are the tracking part's
(`otdistill.tracking.register_and_promote`); this step feeds it the right numbers: condition 1 is checked
here first, and for condition 2 the champion's recorded metric is replaced by its comparable score (the
old one is kept in a `.previous` tag) before the tracking gate reads it. Both versions keep their scores
on these rows under the run's score key, for the next run to reuse. The decision and all its numbers are tags
on the new version. Re-running the step for the same pipeline run finds its version and registers nothing.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from otdistill.config import RunConfig
from otdistill.models.weights_hash import WEIGHTS_SHA256_TAG, weights_sha256
from otdistill.stats import (
    GATE_METHODS,
    Comparison,
    RowScores,
    clears_margin,
    compare_rows,
    metric_column,
    point_comparison,
)
from otdistill.steps.common import read_model_info, snapshot_data_config
from otdistill.steps.prologue import start_step
from otdistill.tracking import (
    Lineage,
    PipelineRun,
    TrackingConfig,
    log_lineage,
    log_student_model,
)
from otdistill.tracking import register_and_promote as tracking_register
from otdistill.tracking.connection import tracking_client
from otdistill.tracking.datasets import snapshot_dataset
from otdistill.tracking.metric_names import eval_metrics
from otdistill.tracking.registry import METRIC_TAG_PREFIX, REASON_TAG, REJECTED, STATUS_TAG
from otdistill.tracking.runs import STEP_TAG
from otdistill.tracking.scores import (
    alias_holder,
    record_row_scores,
    record_scores,
    recorded_row_scores,
    recorded_scores,
)
from otdistill.tracking.serving import data_input_example

log = logging.getLogger(__name__)

CHALLENGER_ALIAS = "challenger"
STEP = "register_and_promote"
GATE_PREFIX = "otdistill.gate."
EVAL_PREFIX = "otdistill.eval."


@dataclass(frozen=True)
class GateCheck:
    """The gate numbers: does the candidate beat the SFT baseline and the champion (on the same rows)?

    candidate / baseline / champion: the means; baseline_test / champion_test: the candidate minus each
    comparator (`otdistill.stats.Comparison`: the bootstrap interval and its number of rows, or the point
    difference), None where that comparator is absent or not comparable.
    """

    candidate: float
    baseline: float | None
    champion: float | None
    champion_version: str | None
    margin: float
    greater_is_better: bool
    beats_baseline: bool
    beats_champion: bool
    reason: str
    # Where the champion's number came from (`champion_score`'s answer), or why there is none.
    champion_source: str | None = None
    method: str = "point"
    baseline_test: Comparison | None = None
    champion_test: Comparison | None = None

    @property
    def passed(self) -> bool:
        return self.beats_baseline and self.beats_champion

    def tags(self) -> dict[str, str]:
        """Every number as ``otdistill.gate.<field>``; each comparison as ``<side>_diff``, ``_low``,
        ``_high``, ``_rows`` and ``confidence``."""
        tests = {"baseline_test", "champion_test"}
        plain: dict[str, object] = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name not in tests
        }
        for side, test in (("baseline", self.baseline_test), ("champion", self.champion_test)):
            plain[f"{side}_diff"] = test.mean_diff if test else None
            plain[f"{side}_low"] = test.low if test else None
            plain[f"{side}_high"] = test.high if test else None
            plain[f"{side}_rows"] = test.rows if test else None
            if test is not None:
                plain["confidence"] = test.confidence
        return {f"{GATE_PREFIX}{k}": "" if v is None else str(v) for k, v in plain.items()}


def _test(
    side: str,
    candidate: float,
    other: float,
    candidate_rows: RowScores | None,
    other_rows: RowScores | None,
    *,
    method: str,
    greater_is_better: bool,
    confidence: float,
    resamples: int,
    seed: int,
) -> Comparison:
    """The candidate against one comparator: the paired bootstrap over rows, or the difference of means."""
    if method == "point":
        return point_comparison(candidate, other, greater_is_better=greater_is_better)
    for who, rows in (("candidate", candidate_rows), (side, other_rows)):
        if rows is None:
            raise ValueError(
                f"gate_method bootstrap needs the per-row scores of the {who} (none given: scores from an "
                "evaluate step older than per-row scores? re-run it, or set tracking.gate_method=point)"
            )
    assert candidate_rows is not None and other_rows is not None
    return compare_rows(
        candidate_rows,
        other_rows,
        greater_is_better=greater_is_better,
        confidence=confidence,
        resamples=resamples,
        seed=seed,
        names=("candidate", side),
    )


def check_gate(
    candidate: float,
    baseline: float | None,
    champion: float | None,
    *,
    margin: float,
    greater_is_better: bool = True,
    champion_version: str | None = None,
    method: str = "bootstrap",
    candidate_rows: RowScores | None = None,
    baseline_rows: RowScores | None = None,
    champion_rows: RowScores | None = None,
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> GateCheck:
    """Compare the candidate with the SFT baseline and the champion (on this run's rows); None: absent.

    method "bootstrap": the paired bootstrap interval of the candidate's gain over the rows (`*_rows`:
    ``{example id: score}``, matched by id) must lie above `margin` (its lower bound); "point": the gain
    of the means must. Either way the rule is `otdistill.stats.clears_margin`, as in the tracking gate.
    """
    for name, value in (("candidate", candidate), ("baseline", baseline), ("champion", champion)):
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{name} metric must be finite, got {value}")
    if method not in GATE_METHODS:
        raise ValueError(f"gate method must be one of {', '.join(GATE_METHODS)}, got {method!r}")
    settings: dict[str, Any] = {
        "method": method,
        "greater_is_better": greater_is_better,
        "confidence": confidence,
        "resamples": resamples,
        "seed": seed,
    }
    reasons = []
    beats_baseline, baseline_test = True, None
    if baseline is not None:
        baseline_test = _test("SFT baseline", candidate, baseline, candidate_rows, baseline_rows, **settings)
        beats_baseline = clears_margin(baseline_test, margin)
        verb = "beats" if beats_baseline else "does not beat"
        reasons.append(
            f"{verb} the SFT baseline {baseline:.6g} ({baseline_test.describe()} vs margin {margin:g})"
        )
    else:
        reasons.append("no SFT baseline in this run")
    beats_champion, champion_test = True, None
    if champion is None:
        reasons.append("no champion yet")
    else:
        champion_test = _test("champion", candidate, champion, candidate_rows, champion_rows, **settings)
        beats_champion = clears_margin(champion_test, margin)
        verb = "beats" if beats_champion else "does not beat"
        reasons.append(
            f"{verb} champion v{champion_version} at {champion:.6g} on these rows "
            f"({champion_test.describe()} vs margin {margin:g})"
        )
    return GateCheck(
        candidate=candidate,
        baseline=baseline,
        champion=champion,
        champion_version=champion_version,
        margin=margin,
        greater_is_better=greater_is_better,
        beats_baseline=beats_baseline,
        beats_champion=beats_champion,
        reason=f"candidate {candidate:.6g}: " + "; ".join(reasons),
        method=method,
        baseline_test=baseline_test,
        champion_test=champion_test,
    )


@dataclass(frozen=True)
class RegisterResult:
    """The step's outcome; `tags` are the new version's (gate numbers under GATE_PREFIX, scores under
    EVAL_PREFIX), so a re-run that finds its version reports the same decision."""

    model_uri: str
    version: str
    promoted: bool
    status: str
    reason: str
    tags: dict[str, str]
    metric: str = ""
    champion_alias: str = ""


def existing_version(client: MlflowClient, name: str, experiment_id: str, parent_run_id: str) -> Any | None:
    """The version an earlier attempt of this step registered for this pipeline run, if any.

    A version's run id is set atomically at registration; the step's nested run names its parent, so
    this finds the version even if the earlier attempt died right after registering.
    """
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}' and tags.`{STEP_TAG}` = '{STEP}'",
    )
    run_ids = {r.info.run_id for r in runs}
    if not run_ids:
        return None
    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException:
        return None
    mine = [mv for mv in versions if mv.run_id in run_ids]
    return min(mine, key=lambda mv: int(mv.version)) if mine else None


def champion_score(
    champion_scores: dict[str, Any], client: MlflowClient, name: str, version: str, key: str
) -> tuple[dict[str, float] | None, dict[str, dict[str, float]] | None, str]:
    """The champion v`version`'s scores on this run's rows and settings (`key`): means, per-row scores
    (``{example id: {metric: score}}``, None when not recorded) and where they came from.

    From `score_champion` when it scored (or found recorded) this very version; else recorded on the
    version under `key` (another run's gate kept them); else (None, None, why): not comparable.
    """
    if champion_scores.get("version") == version and champion_scores.get("score_key") == key:
        rows = champion_scores.get("rows") or None
        return dict(champion_scores["metrics"]), rows, f"{champion_scores.get('source')} by score_champion"
    recorded = recorded_scores(client, name, version, key)
    if recorded is not None:
        return recorded, recorded_row_scores(client, name, version, key), "recorded by another run"
    scored = champion_scores.get("version")
    return (
        None,
        None,
        (
            f"champion v{version} took the alias after this run's score_champion "
            f"({f'v{scored}' if scored else 'no champion'}) and has no score on this run's validation rows "
            "and scoring settings"
        ),
    )


def _metric(scores: dict[str, Any], label: str, metric: str) -> float | None:
    models = scores.get("models", {})
    if label not in models:
        return None
    if metric not in models[label]:
        raise KeyError(
            f"promotion metric {metric!r} is not among the evaluation metrics of {label} "
            f"({', '.join(sorted(models[label]))}); set tracking.promotion_metric to one of them"
        )
    return float(models[label][metric])


def _lineage(cfg: RunConfig, scores: dict[str, Any], data_hash: str) -> Lineage:
    prov = scores.get("provenance", {})
    teacher, student = prov.get("teacher", {}), prov.get("distilled", {})
    return Lineage(
        data_hash=data_hash,
        teacher_id=teacher.get("artifact.base_source")
        or teacher.get("artifact.source")
        or cfg.teacher.source,
        teacher_revision=teacher.get("artifact.base_revision")
        or teacher.get("artifact.revision")
        or "unknown",
        student_id=student.get("artifact.base_source") or cfg.student.source,
        student_revision=student.get("artifact.base_revision") or "unknown",
        loss=student.get("artifact.loss") or cfg.distill.loss,
    )


def register_and_promote(
    config_json: str,
    parent_run_id: str,
    data_hash: str,
    validation_dir: str | Path,
    student_dir: str | Path,
    scores_path: str | Path,
    decision_path: str | Path,
    champion_scores_path: str | Path | None = None,
) -> RegisterResult:
    """Register the distilled student for this pipeline run (once) and apply the promotion gate.

    data_hash: content hash of the training split (from `prepare_data`), recorded as lineage.
    scores_path: `evaluate`'s scores; champion_scores_path: `score_champion`'s (None: none taken, then
    only a score recorded on the champion's version for these rows and settings can be compared).
    """
    step = start_step(config_json, STEP, parent_run_id=parent_run_id)
    cfg = step.cfg
    tracking = cfg.tracking
    name, metric = tracking.registered_model_name, tracking.promotion_metric
    scores = json.loads(Path(scores_path).read_text(encoding="utf-8"))
    champion_file = Path(champion_scores_path) if champion_scores_path else None
    champion_scores = json.loads(champion_file.read_text(encoding="utf-8")) if champion_file else {}
    scores_key = str(scores.get("score_key", ""))  # the rows and settings the scores were taken with
    candidate = _metric(scores, "distilled", metric)
    if candidate is None:
        raise KeyError(f"{scores_path} has no scores for the distilled student")
    baseline = _metric(scores, "sft_baseline", metric)
    parent = step.parent
    client = tracking_client(tracking)

    done = existing_version(client, name, parent.experiment_id, parent.run_id)
    if done is not None:
        result = _result(name, done.version, dict(done.tags), tracking, client)
        log.info(
            "pipeline run already registered %s v%s (%s); nothing to do", name, done.version, result.status
        )
        _finish(parent, result, scores, decision_path)
        return result

    champion_mv = alias_holder(client, name, tracking.champion_alias)
    champion_scores_now: dict[str, float] | None = None
    champion_table: dict[str, dict[str, float]] | None = None
    comparable, how = True, ""
    if champion_mv is not None:
        champion_scores_now, champion_table, how = champion_score(
            champion_scores, client, name, str(champion_mv.version), scores_key
        )
        if champion_scores_now is not None and champion_table is None and tracking.gate_method != "point":
            champion_scores_now, how = (
                None,
                f"{how}, without its per-row scores (the bootstrap gate needs them)",
            )
        comparable = champion_scores_now is not None
        log.info("champion v%s: %s", champion_mv.version, how)
    champion = (
        _metric({"models": {"champion": champion_scores_now}}, "champion", metric)
        if champion_scores_now is not None
        else None
    )
    tables: dict[str, dict[str, dict[str, float]]] = scores.get("row_scores", {})

    def column(table: dict[str, dict[str, float]] | None, who: str) -> dict[str, float] | None:
        return None if table is None else metric_column(table, metric, where=f"{who} per-row scores")

    gate = check_gate(
        candidate,
        baseline,
        champion,
        margin=tracking.promotion_margin,
        greater_is_better=tracking.greater_is_better,
        champion_version=str(champion_mv.version) if champion_mv is not None else None,
        method=tracking.gate_method,
        candidate_rows=column(tables.get("distilled"), f"{scores_path}: distilled"),
        baseline_rows=column(tables.get("sft_baseline"), f"{scores_path}: sft_baseline"),
        champion_rows=column(champion_table, f"champion v{champion_mv.version if champion_mv else ''}"),
        confidence=tracking.gate_confidence,
        resamples=tracking.gate_resamples,
        seed=tracking.gate_seed,
    )
    if champion_mv is not None:
        gate = replace(gate, champion_source=how)
    if not comparable:
        gate = replace(gate, beats_champion=False, reason=f"{gate.reason}; {how}: not promoted")
    log.info("gate: %s", gate.reason)
    info = read_model_info(student_dir)
    lineage = _lineage(cfg, scores, data_hash)
    task, example = data_input_example(snapshot_data_config(cfg, validation_dir, cfg.validation.split))
    with step.tracked() as run:
        log_lineage(run, lineage)
        log_lineage(parent, lineage)
        model_info = log_student_model(
            run,
            student_dir,
            task=task,
            input_example=example,
            eval_config=cfg.eval,
            metadata={k: str(v) for k, v in info.items()},
        )
        if champion_mv is not None and champion_scores_now is not None and scores_key:
            record_scores(client, name, str(champion_mv.version), scores_key, champion_scores_now)
            if champion_table:
                record_row_scores(
                    client, run.run_id, name, str(champion_mv.version), scores_key, champion_table
                )
        if gate.beats_baseline and comparable and champion_mv is not None and champion is not None:
            # Hand the tracking gate the champion's score on *this* data (see the module doc).
            metric_tag = METRIC_TAG_PREFIX + metric
            old = champion_mv.tags.get(metric_tag)
            if old is not None:
                client.set_model_version_tag(name, champion_mv.version, metric_tag + ".previous", old)
            client.set_model_version_tag(name, champion_mv.version, metric_tag, repr(champion))
            client.set_model_version_tag(
                name, champion_mv.version, "otdistill.rescored_by_run", parent.run_id
            )
        if gate.beats_baseline and comparable:
            decision = tracking_register(
                run.run_id,
                candidate,
                tracking,
                model_uri=model_info.model_uri,
                champion_comparison=(str(champion_mv.version), gate.champion_test)
                if gate.champion_test is not None and champion_mv is not None
                else None,
            )
            version, status, reason = decision.version, decision.status, decision.reason
        else:
            mv = mlflow.register_model(
                model_info.model_uri,
                name,
                await_registration_for=tracking.request_timeout_s,
                tags={METRIC_TAG_PREFIX + metric: repr(candidate), STATUS_TAG: REJECTED},
            )
            version, status, reason = str(mv.version), REJECTED, gate.reason
            client.set_model_version_tag(name, version, REASON_TAG, reason)
            run.set_tags({STATUS_TAG: status, REASON_TAG: reason, "otdistill.registered_version": version})
        client.set_registered_model_alias(name, CHALLENGER_ALIAS, version)
        if scores_key:
            record_scores(client, name, version, scores_key, scores["models"]["distilled"])
            if "distilled" in tables:
                record_row_scores(client, run.run_id, name, version, scores_key, tables["distilled"])
        tags = {
            **gate.tags(),
            **{
                f"{EVAL_PREFIX}{label}.{k}": repr(float(v))
                for label, m in scores["models"].items()
                for k, v in m.items()
            },
            **lineage.as_tags(),
            "otdistill.parent_run_id": parent.run_id,
            # the student's identity by content, for `otdistill reproduce`'s bit-for-bit verdict
            WEIGHTS_SHA256_TAG: weights_sha256(student_dir),
        }
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
        run.set_tags(gate.tags())
        from otdistill.steps.version_record import log_model_metrics  # it imports this module

        validation = snapshot_dataset(validation_dir, cfg.data.subset)
        log_model_metrics(model_info.model_id, scores["models"]["distilled"], tags, status, validation)
    result = _result(name, version, {**tags, STATUS_TAG: status, REASON_TAG: reason}, tracking, client)
    _finish(parent, result, scores, decision_path)
    log.info("%s v%s: %s (%s)", name, version, status, reason)
    return result


def _finish(
    parent: PipelineRun, result: RegisterResult, scores: dict[str, Any], decision_path: str | Path
) -> None:
    """Record the outcome, the scores and the gate's numbers on the parent run (even when `evaluate` was
    a cache hit: this step always runs), describe the version, and write the decision artifact. The
    parent run stays open: the pipeline's exit handler (`close_run`) ends it, whatever happened."""
    parent.set_tags(
        {"otdistill.model_uri": result.model_uri, STATUS_TAG: result.status, REASON_TAG: result.reason}
    )
    from otdistill.steps.version_record import describe_version, gate_metrics  # they import this module

    evaluated = {k: v for label, m in scores["models"].items() for k, v in eval_metrics(label, m).items()}
    parent.log_metrics({**evaluated, **gate_metrics(result.tags, result.status)})
    describe_version(parent.client, result)
    _write_decision(decision_path, result)


def _result(
    name: str, version: str, tags: dict[str, str], tracking: TrackingConfig, client: MlflowClient
) -> RegisterResult:
    holder = alias_holder(client, name, tracking.champion_alias)
    promoted = holder is not None and str(holder.version) == str(version)
    return RegisterResult(
        model_uri=f"models:/{name}/{version}",
        version=str(version),
        promoted=promoted,
        status=tags.get(STATUS_TAG, ""),
        reason=tags.get(REASON_TAG, ""),
        tags=tags,
        metric=tracking.promotion_metric,
        champion_alias=tracking.champion_alias,
    )


def _write_decision(path: str | Path, result: RegisterResult) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(asdict(result), indent=2, sort_keys=True), encoding="utf-8")
