"""What an evaluation produces: one `PredictionRecord` per scored example and one `EvalResult` per model.

Kept apart from the code that computes them so that reports, MLflow logging and the Kubeflow components can
read results (also back from their JSON files) without loading a model.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class PredictionRecord:
    """One scored example: what the model saw and said, the gold answers, and every metric's score."""

    id: str
    prompt: str
    prediction: str
    references: list[str]
    scores: dict[str, float]
    generated_tokens: int = 0
    stopped: bool = True
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PredictionRecord:
        return cls(
            id=str(data["id"]),
            prompt=str(data["prompt"]),
            prediction=str(data["prediction"]),
            references=[str(r) for r in data["references"]],
            scores={str(k): float(v) for k, v in data["scores"].items()},
            generated_tokens=int(data.get("generated_tokens", 0)),
            stopped=bool(data.get("stopped", True)),
            truncated=bool(data.get("truncated", False)),
        )


@dataclass
class EvalResult:
    """The evaluation of one model on one task.

    label: the model's name in reports and metric keys ("teacher", "sft", "distilled").
    model: provenance of the model (`ResolvedModel.record()`, plus registry name/version for models:/ URIs).
    metric: the task's headline metric; `metrics` holds the mean of every per-example score over `records`.
    skipped: rows not scored, counted by reason ("no_reference", or a data validation reason such as
      "missing"); `skipped_rows` names the first few (id or row index, reason, message).
    generation: throughput and stopping statistics of the generation pass.
    files: the files written for this result (predictions, metrics, report), by kind.
    """

    label: str
    task: str
    metric: str
    metrics: dict[str, float]
    records: list[PredictionRecord]
    model: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_rows: list[dict[str, Any]] = field(default_factory=list)
    generation: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    @property
    def num_scored(self) -> int:
        return len(self.records)

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    @property
    def headline(self) -> float:
        """The mean of the task's headline metric."""
        return self.metrics[self.metric]

    def summary(self) -> dict[str, Any]:
        """Everything but the per-example records: the content of ``metrics.json``."""
        return {
            "label": self.label,
            "task": self.task,
            "metric": self.metric,
            "metrics": dict(self.metrics),
            "num_scored": self.num_scored,
            "num_skipped": self.num_skipped,
            "skipped": dict(self.skipped),
            "skipped_rows": list(self.skipped_rows),
            "generation": dict(self.generation),
            "model": dict(self.model),
            "config": dict(self.config),
        }

    def worst(self, n: int = 10) -> list[PredictionRecord]:
        """The `n` records with the lowest headline score (ties: the order they were evaluated in)."""
        return sorted(self.records, key=lambda r: r.scores[self.metric])[:n]


def mean_scores(records: list[PredictionRecord], keys: tuple[str, ...]) -> dict[str, float]:
    """Mean of each metric over the records; raises when there is nothing to average."""
    if not records:
        raise ValueError("no example could be scored (every row was skipped); see the skipped counts")
    out = {k: math.fsum(r.scores[k] for r in records) / len(records) for k in keys}
    return out


def prediction_table(records: list[PredictionRecord]) -> dict[str, list[Any]]:
    """The records as columns (id, prompt, prediction, references one per line, each metric's score,
    generated tokens, stopped, truncated): a table MLflow stores and its UI shows (``mlflow.log_table``)."""
    metrics = sorted({k for r in records for k in r.scores})
    table: dict[str, list[Any]] = {
        "id": [r.id for r in records],
        "prompt": [r.prompt for r in records],
        "prediction": [r.prediction for r in records],
        "references": ["\n".join(r.references) for r in records],
    }
    table.update({m: [r.scores.get(m) for r in records] for m in metrics})
    table["generated_tokens"] = [r.generated_tokens for r in records]
    table["stopped"] = [r.stopped for r in records]
    table["truncated"] = [r.truncated for r in records]
    return table


def write_predictions(records: list[PredictionRecord], path: Path) -> Path:
    """Per-example predictions as JSON Lines (one record per line, UTF-8, non-ASCII kept readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
    return path


def read_predictions(path: Path) -> list[PredictionRecord]:
    """Read back a predictions file written by `write_predictions`; a bad line is named by its number."""
    records = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                records.append(PredictionRecord.from_dict(json.loads(line)))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ValueError(f"{path}, line {n}: not a prediction record ({exc})") from exc
    return records


def write_metrics(result: EvalResult, path: Path) -> Path:
    """`EvalResult.summary()` as pretty JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.summary(), indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return path


def load_result(metrics_path: Path, predictions_path: Path) -> EvalResult:
    """Rebuild an `EvalResult` from its metrics JSON and predictions JSONL (e.g. in a later pipeline step)."""
    data = json.loads(Path(metrics_path).read_text(encoding="utf-8"))
    return EvalResult(
        label=data["label"],
        task=data["task"],
        metric=data["metric"],
        metrics={k: float(v) for k, v in data["metrics"].items()},
        records=read_predictions(Path(predictions_path)),
        model=dict(data.get("model", {})),
        skipped={k: int(v) for k, v in data.get("skipped", {}).items()},
        skipped_rows=list(data.get("skipped_rows", [])),
        generation={k: float(v) for k, v in data.get("generation", {}).items()},
        config=dict(data.get("config", {})),
        files={"metrics": str(metrics_path), "predictions": str(predictions_path)},
    )
