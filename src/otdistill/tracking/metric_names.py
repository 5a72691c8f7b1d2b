"""The one naming scheme of the metrics this package logs: `/` groups, which the MLflow UI groups charts by.

- ``train/<name>``: what the trainer logs per optimizer step (``train/loss``, ``train/loss_ce``, ...),
  ``val/<name>`` its validation during training (``val/loss``; `otdistill.training.callbacks`);
- ``eval/<model>/<metric>``: a model's mean score on the validation rows (``eval/distilled/rougeLsum``),
  ``eval/<model>/generation/<name>`` the statistics of its generation pass;
- ``gate/<name>``: the promotion gate's numbers (``gate/candidate``, ``gate/margin``, ``gate/promoted``);
- ``data/<split>/<name>``: rows read, kept, skipped (``data/train/skipped/<reason>``);
- ``cache/<name>``: the teacher cache's shards and examples;
- ``sweep/<split>/<variant>/<name>``: a sweep's aggregate (``mean``, ``sd``; ``diff``, ``low``, ``high``
  against its SFT row) on the parent run;
- ``system/<name>``: MLflow's own system metrics (CPU, memory, disk, network, GPU).

Tags keep their ``otdistill.`` namespace (the registry searches them); these names are the metrics', in
MLflow and in the KFP Metrics artifacts that show the same numbers. docs/pipeline.md has the table.
"""

from __future__ import annotations

TRAIN = "train"
VALIDATION = "val"
EVAL = "eval"
GATE = "gate"
DATA = "data"
CACHE = "cache"
GENERATION = "generation"


def _join(*parts: str) -> str:
    for part in parts:
        if not part or part.startswith("/") or part.endswith("/"):
            raise ValueError(f"empty or slash-edged part {part!r} in metric name {'/'.join(parts)!r}")
    return "/".join(parts)


def train_metric(name: str) -> str:
    """``train/<name>``: a key of the trainer's log at an optimizer step (``train/loss_sd``)."""
    return _join(TRAIN, name)


def validation_metric(name: str) -> str:
    """``val/<name>``: a number of the validation during training (``val/loss``)."""
    return _join(VALIDATION, name)


def eval_metric(model: str, metric: str) -> str:
    """``eval/<model>/<metric>``: `model`'s (teacher, sft_baseline, distilled, champion) score."""
    return _join(EVAL, model, metric)


def generation_metric(model: str, name: str) -> str:
    """``eval/<model>/generation/<name>``: a statistic of `model`'s generation pass."""
    return _join(EVAL, model, GENERATION, name)


def gate_metric(name: str) -> str:
    """``gate/<name>``: a number of the promotion decision."""
    return _join(GATE, name)


def data_metric(split: str, name: str) -> str:
    """``data/<split>/<name>``: a count of the prepared split."""
    return _join(DATA, split, name)


def cache_metric(name: str) -> str:
    """``cache/<name>``: a count of the teacher cache."""
    return _join(CACHE, name)


def sweep_metric(split: str, variant: str, name: str) -> str:
    """``sweep/<split>/<variant>/<name>``: one number of a sweep's aggregate table."""
    return _join("sweep", split, variant, name)


def eval_metrics(model: str, metrics: dict[str, float]) -> dict[str, float]:
    """`metrics` ({metric: value}) of one model under their ``eval/<model>/<metric>`` names."""
    return {eval_metric(model, k): float(v) for k, v in metrics.items()}
