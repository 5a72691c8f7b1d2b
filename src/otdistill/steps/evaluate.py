"""Step `evaluate`: teacher, SFT baseline student and distilled student on the same validation rows.

Writes `scores.json` ({label: {metric: mean}}, the task's headline metric, and each model's per-row scores
by example id for the bootstrap gate) for the promotion gate, and the combined HTML report (tables,
charts, worst examples) for people. `score_key` names the rows
and scoring settings (`otdistill.tracking.scores`): the registry keeps the scores under it for later runs.

A teacher that answered the training rows prompted few-shot (the authors' recipe: the training snapshot
holds its shots, `otdistill.steps.teacher_answers`) is scored prompted with the same shots and prompt
budget (`prompted_settings`): its score is that of the answers the students learned from. Students are
always scored zero-shot, as they are served.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otdistill.config import RunConfig
from otdistill.data import Example, load_examples
from otdistill.evaluation import EvalResult, compare_models, evaluate_model
from otdistill.stats import row_table
from otdistill.steps.common import read_model_info, resolve_model_artifact, snapshot_data_config
from otdistill.steps.prologue import step_prologue
from otdistill.steps.teacher_answers import prompted_settings
from otdistill.tracking.datasets import log_dataset, snapshot_dataset
from otdistill.tracking.metric_names import eval_metrics
from otdistill.tracking.scores import score_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalStepResult:
    scores: dict[str, Any]
    metrics: dict[str, float]


def evaluate(
    config_json: str,
    validation_dir: str | Path,
    models: Mapping[str, str | Path],
    scores_path: str | Path,
    report_path: str | Path,
    *,
    teacher: str | None = None,
    train_dir: str | Path | None = None,
) -> EvalStepResult:
    """Evaluate each Model artifact in `models` (label -> directory); write scores JSON and HTML report.

    teacher: the label in `models` that is the teacher, if any; `train_dir`: the training snapshot the
    students learned from. When it holds the teacher's few-shot examples, the teacher is scored with them.
    """
    with step_prologue(config_json, "evaluate") as step:
        cfg, run = step.cfg, step.run
        run.log_params(cfg.eval.to_dict())
        data = snapshot_data_config(cfg, validation_dir, cfg.validation.split)
        loaded = load_examples(data)
        log_dataset(snapshot_dataset(validation_dir, cfg.data.subset), "evaluation")
        shots = teacher_shots(cfg, train_dir) if teacher is not None and train_dir is not None else []
        results: list[EvalResult] = []
        with tempfile.TemporaryDirectory(prefix="otdistill-eval-") as scratch:
            for label, model_dir in models.items():
                resolved = resolve_model_artifact(model_dir)
                prompted = label == teacher and bool(shots)
                settings = prompted_settings(cfg, cfg.eval.max_new_tokens) if prompted else cfg.eval
                log.info(
                    "evaluating %s (%s) on %d rows%s",
                    label,
                    resolved.source,
                    len(loaded.examples),
                    f", prompted with its {len(shots)} shots" if prompted else "",
                )
                result = evaluate_model(
                    resolved,
                    loaded.task,
                    loaded.examples,
                    settings,
                    Path(scratch) / label,
                    label=label,
                    shots=shots if prompted else (),
                )
                result.model.update({f"artifact.{k}": str(v) for k, v in read_model_info(model_dir).items()})
                results.append(result)
                log.info("%s: %s=%.4f", label, result.metric, result.headline)
            files = compare_models(
                results, Path(scratch) / "compare", title=f"{cfg.name}: {loaded.task.name}"
            )
            Path(report_path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(files["report"], report_path)
        scores: dict[str, Any] = {
            "task": loaded.task.name,
            "metric": results[0].metric,
            "rows": len(loaded.examples),
            "data_sha256": loaded.report.content_sha256,
            "score_key": score_key(loaded.report.content_sha256, cfg.eval.scoring_settings()),
            "models": {r.label: dict(r.metrics) for r in results},
            # per example id, for the bootstrap gate (`otdistill.stats`): {label: {id: {metric: score}}}
            "row_scores": {r.label: row_table(r.records, where=f"{r.label} predictions") for r in results},
            "provenance": {r.label: dict(r.model) for r in results},
            # label -> the few-shot examples its prompts showed (a teacher under the authors' recipe)
            "shots": {teacher: len(shots)} if teacher is not None and shots else {},
        }
        Path(scores_path).parent.mkdir(parents=True, exist_ok=True)
        Path(scores_path).write_text(json.dumps(scores, indent=2, sort_keys=True), encoding="utf-8")
        run.log_artifact(scores_path, "eval")
        metrics = {k: v for r in results for k, v in eval_metrics(r.label, r.metrics).items()}
    return EvalStepResult(scores=scores, metrics=metrics)


def teacher_shots(cfg: RunConfig, train_dir: str | Path) -> list[Example]:
    """The few-shot examples the teacher answered the training rows with: the shots of the training
    snapshot `train_dir` (none unless it is a teacher-answers snapshot with `targets.few_shot` > 0)."""
    return load_examples(snapshot_data_config(cfg, train_dir, cfg.data.split)).shots
