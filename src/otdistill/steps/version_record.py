"""What a registered student shows in the MLflow UI: a readable description, and metrics on its logged model.

The registry page of a version shows its description: here what it was distilled from (teacher, student
base, loss, training data hash, weights hash), the scores of every model evaluated in its run, and the
promotion gate's decision with its numbers (`otdistill.steps.gate_report.decision_markdown`, the same text
the KFP UI shows). Everything is read from the version's tags (`RegisterResult.tags`), so a retried step
that finds its version writes the same description. `register_and_promote` imports this module where it
uses it: this module imports that one.

MLflow 3 keeps metrics on the logged model too (``mlflow.log_metrics(..., model_id=...)``), which the
model's and the version's pages list: the distilled student's evaluation (``eval/distilled/<metric>``,
with the validation dataset it was taken on) and the gate's numbers (``gate/<name>``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from mlflow.data.dataset import Dataset
from mlflow.tracking import MlflowClient

from otdistill.models.weights_hash import WEIGHTS_SHA256_TAG
from otdistill.steps.gate_report import decision_markdown
from otdistill.steps.register_and_promote import EVAL_PREFIX, GATE_PREFIX, RegisterResult
from otdistill.tracking.lineage import LINEAGE_PREFIX
from otdistill.tracking.metric_names import eval_metrics, gate_metric
from otdistill.tracking.registry import PROMOTED
from otdistill.tracking.scores import parse_version_uri

# MLflow's registry stores at most 5000 characters of a version's description.
MAX_DESCRIPTION_CHARS = 5000
# Gate fields that are not numbers of the decision (a version number, words).
NOT_GATE_METRICS = frozenset({"champion_version", "reason", "method", "champion_source"})


def gate_metrics(tags: Mapping[str, str], status: str) -> dict[str, float]:
    """The gate's numbers from its ``otdistill.gate.<field>`` tags as ``gate/<field>`` metrics (yes/no
    fields as 1/0, absent comparators left out), and ``gate/promoted`` from the registration's status."""
    out: dict[str, float] = {}
    for key, raw in tags.items():
        field = key.removeprefix(GATE_PREFIX)
        if not key.startswith(GATE_PREFIX) or field in NOT_GATE_METRICS or raw == "":
            continue
        if raw in ("True", "False"):
            out[gate_metric(field)] = 1.0 if raw == "True" else 0.0
            continue
        try:
            value = float(raw)
        except ValueError:
            continue
        if math.isfinite(value):
            out[gate_metric(field)] = value
    out[gate_metric("promoted")] = 1.0 if status == PROMOTED else 0.0
    return out


def log_model_metrics(
    model_id: str, scores: Mapping[str, float], tags: Mapping[str, str], status: str, dataset: Dataset
) -> None:
    """On MLflow's active run, linked to the logged model `model_id`: the distilled student's `scores`
    (taken on `dataset`) and the gate's numbers (`gate_metrics`)."""
    import mlflow

    mlflow.log_metrics(eval_metrics("distilled", dict(scores)), model_id=model_id, dataset=dataset)
    mlflow.log_metrics(gate_metrics(tags, status), model_id=model_id)


def eval_scores(tags: Mapping[str, str]) -> dict[str, dict[str, float]]:
    """{model: {metric: score}} from the version's ``otdistill.eval.<model>.<metric>`` tags."""
    scores: dict[str, dict[str, float]] = {}
    for key, raw in tags.items():
        if key.startswith(EVAL_PREFIX):
            label, _, metric = key.removeprefix(EVAL_PREFIX).rpartition(".")
            scores.setdefault(label, {})[metric] = float(raw)
    return scores


def _code(text: str) -> str:
    return f"`{text.replace('`', '')}`" if text else "not recorded"


def provenance_markdown(tags: Mapping[str, str]) -> str:
    """What the version was made from, as a Markdown table (from its lineage and weights-hash tags)."""
    lineage = {k.removeprefix(LINEAGE_PREFIX): v for k, v in tags.items() if k.startswith(LINEAGE_PREFIX)}

    def model(role: str) -> str:
        name, revision = lineage.get(f"{role}_id", ""), lineage.get(f"{role}_revision", "")
        return f"{_code(name)} at revision {_code(revision)}" if name else "not recorded"

    rows = [
        ("Teacher", model("teacher")),
        ("Student base", model("student")),
        ("Loss", _code(lineage.get("loss", ""))),
        ("Training data (sha256 of the kept rows)", _code(lineage.get("data_hash", ""))),
        ("Weights (sha256 of the tensors)", _code(tags.get(WEIGHTS_SHA256_TAG, ""))),
        ("Code", _code(lineage.get("code_version", ""))),
        ("Image", _code(lineage.get("container_image", ""))),
        ("Pipeline's MLflow run", _code(tags.get("otdistill.parent_run_id", ""))),
    ]
    return "\n".join(["| Distilled from | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def scores_markdown(scores: Mapping[str, Mapping[str, float]]) -> str:
    """Every model's every score on the run's validation rows, one row per model."""
    metrics = sorted({m for values in scores.values() for m in values})
    lines = [f"| Model | {' | '.join(metrics)} |", "|---|" + "---|" * len(metrics)]
    for label in sorted(scores):
        cells = [f"{scores[label][m]:.6g}" if m in scores[label] else "" for m in metrics]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    return "\n".join(lines)


def version_description(result: RegisterResult) -> str:
    """The version's description: provenance, scores, and the gate decision with its numbers; cut to
    what the registry stores (the whole decision is also the step's `decision_report` artifact)."""
    parts = [provenance_markdown(result.tags)]
    scores = eval_scores(result.tags)
    if scores:
        parts.append("## Scores on the run's validation rows\n\n" + scores_markdown(scores))
    parts.append(decision_markdown(result).replace("# Promotion gate", "## Promotion gate", 1))
    text = "\n\n".join(parts).rstrip() + "\n"
    if len(text) > MAX_DESCRIPTION_CHARS:
        note = "\n\n(cut: the whole decision is the register_and_promote step's decision_report)\n"
        text = text[: MAX_DESCRIPTION_CHARS - len(note)] + note
    return text


def describe_version(client: MlflowClient, result: RegisterResult) -> None:
    """Write `version_description` as the registered version's description."""
    name, version = parse_version_uri(result.model_uri)
    client.update_model_version(name, version, description=version_description(result))
