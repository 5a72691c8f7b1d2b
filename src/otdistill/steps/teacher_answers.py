"""Step `teacher_answers` (the authors' recipe): the teacher answers every training row, and its answers
become the training targets of the teacher cache and of every student.

In the trunk only with `targets.source: teacher`, between the teacher (tuned, or used as is and prompted
few-shot) and `cache_teacher`. It reads the gold training snapshot (`prepare_data`) and writes a new one in
the same layout, whose rows keep their gold fields for the record and carry the teacher's answer
(`otdistill.data.targets`). `targets.few_shot` rows drawn with `targets.seed` are the teacher's solved
examples: they are written as shots, shown in the teacher's prompts and answered by nobody. Every later
step reads the snapshot through `load_examples`, so the teacher cache takes the teacher's logits in the
few-shot context it answered in, while the student's prompt stays zero-shot.

Answers are the evaluation's greedy generation (`otdistill.evaluation.generate_answers`: prompts, batching,
stop tokens, progress), `targets.max_new_tokens` (else `eval.max_new_tokens`) new tokens, and the first
line of it, stripped, as in the authors' generator (llm_distillation/datasets/generator.py): a few-shot
prompted model that does not stop goes on with another example. The teacher's prompt is cut to leave room
for the answer within `data.max_length`; where it was cut, the row records how much context the teacher
saw, and training uses that context. Rows the teacher cannot answer (its prompt cannot fit, or its answer
is empty) are skipped and counted in the data report, whatever `data.on_error` says: they are the model's
doing, not the data's. Then the new rows are validated and tokenised for both models like any prepared
split (`prepare_split`), so its report and content hash (which covers the shots) describe what the
students train on. The gold split's hash is kept as the tag `otdistill.gold_data_hash`.

A rerun with the same inputs is a KFP step-cache hit; an interrupted generation starts again (one greedy
pass over the training rows, the cost of an evaluation of the teacher on them).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otdistill.config import ConfigError, RunConfig
from otdistill.data import DataConfig, DataReport, Example, load_examples
from otdistill.data.errors import RowIssue
from otdistill.data.targets import shot_record, target_record
from otdistill.evaluation.config import EvalConfig
from otdistill.fingerprint import DATA_REPORT
from otdistill.models import load_tokenizer, resolve_model
from otdistill.steps.common import resolve_model_artifact, snapshot_data_config
from otdistill.steps.prepare_data import (
    GOLD_HASH_TAG,
    HASH_TAGS,
    PrepareResult,
    prepare_split,
    record_split,
    write_snapshot,
)
from otdistill.steps.prologue import step_prologue
from otdistill.tracking.metric_names import data_metric

log = logging.getLogger(__name__)

STEP = "teacher_answers"
ANSWERS_FILE = "teacher_answers.jsonl"  # per row: id, the teacher's answer, the gold response, the prompt cut


def choose_shots(n_rows: int, k: int, seed: int) -> list[int]:
    """The positions (ascending) of the `k` rows of `n_rows` that are the teacher's few-shot examples: a
    fixed draw per seed. At least one row must remain to be answered."""
    if k == 0:
        return []
    if k >= n_rows:
        raise ValueError(
            f"targets.few_shot ({k}) leaves no training row to answer: the training split has {n_rows} rows"
        )
    return sorted(random.Random(seed).sample(range(n_rows), k))


def answer_text(generated: str) -> str:
    """The training target in a generation: its first line, stripped (see the module doc)."""
    return generated.strip().split("\n", 1)[0].strip()


def answer_settings(cfg: RunConfig) -> EvalConfig:
    """The evaluation settings the teacher answers with: `targets.max_new_tokens` (else the evaluation's),
    every row, and the prompt cut so the answer and its end token fit `data.max_length` (and
    `data.max_prompt_tokens`, when set)."""
    return prompted_settings(cfg, cfg.targets.max_new_tokens or cfg.eval.max_new_tokens)


def prompted_settings(cfg: RunConfig, new_tokens: int) -> EvalConfig:
    """The evaluation's settings for the few-shot teacher answering in at most `new_tokens` tokens: its
    prompt (shots first) cut to leave room for them and an end token within `data.max_length` (and
    `data.max_prompt_tokens`, when set), not to `eval.max_prompt_tokens`, which sizes a zero-shot prompt.
    The teacher answers the training rows with these (`answer_settings`), and is scored with them
    (`otdistill.steps.evaluate`), so its score is that of the answers it gave."""
    budget = cfg.data.max_length - new_tokens - 1
    if cfg.data.max_prompt_tokens is not None:
        budget = min(budget, cfg.data.max_prompt_tokens)
    if budget < 1:
        raise ConfigError(
            f"data.max_length ({cfg.data.max_length}) leaves no room for a prompt before an answer of "
            f"targets.max_new_tokens / eval.max_new_tokens ({new_tokens}) tokens"
        )
    return dataclasses.replace(cfg.eval, max_new_tokens=new_tokens, max_prompt_tokens=budget, limit=None)


@dataclass(frozen=True)
class Answers:
    """The teacher's answers: a record per answered or shot row (by source index), the rows left out."""

    records: dict[int, dict[str, Any]]
    skipped: list[RowIssue]
    table: list[dict[str, Any]]
    generation: dict[str, float]


def generate_targets(
    model: Any,
    tokenizer: Any,
    examples: Sequence[Example],
    indices: Sequence[int],
    settings: EvalConfig,
    k: int,
    seed: int,
) -> Answers:
    """Let the teacher answer `examples` (rows `indices` of their source) with `k` of them as its shots."""
    from otdistill.evaluation.evaluate import generate_answers

    shot_positions = choose_shots(len(examples), k, seed)
    shots = [examples[i] for i in shot_positions]
    records: dict[int, dict[str, Any]] = {indices[i]: shot_record() for i in shot_positions}
    rest = [i for i in range(len(examples)) if i not in set(shot_positions)]
    prepared, gen = generate_answers(
        model, tokenizer, [examples[i] for i in rest], settings, desc="teacher answers", shots=shots
    )
    if not prepared.examples:
        raise ValueError(
            f"the teacher can answer none of the {len(rest)} training rows: its {k}-shot prompt leaves no "
            f"room within data.max_length for an answer of {settings.max_new_tokens} tokens; raise "
            "data.max_length or lower targets.few_shot / targets.max_new_tokens"
        )
    index_of = {examples[i].id: indices[i] for i in rest}
    gold = {ex.id: ex for ex in examples}
    answered = {ex.id for ex in prepared.examples}
    named = {str(row["row"]): str(row["message"]) for row in prepared.skipped_rows}  # the first few
    skipped = [
        RowIssue(index_of[ex.id], "<prompt>", "too_long", named.get(ex.id, "the teacher's prompt cannot fit"))
        for ex in (examples[i] for i in rest)
        if ex.id not in answered
    ]
    table: list[dict[str, Any]] = []
    for ex, text, cut in zip(prepared.examples, gen.texts, prepared.truncated, strict=True):
        index, answer = index_of[ex.id], answer_text(text)
        table.append({"id": ex.id, "answer": answer, "gold": gold[ex.id].response, "prompt_cut": cut})
        if not answer:
            skipped.append(RowIssue(index, "<answer>", "empty_answer", "the teacher's answer is empty"))
            continue
        records[index] = target_record(answer, len(ex.context) if cut else None)
    generation = {
        "answered": float(len(table)),
        "tokens_per_second": gen.tokens_per_second,
        "seconds": gen.seconds,
        "mean_generated_tokens": sum(gen.num_tokens) / len(gen.num_tokens) if gen.num_tokens else 0.0,
        "stopped_fraction": sum(gen.stopped) / len(gen.stopped) if gen.stopped else 0.0,
    }
    return Answers(records, sorted(skipped, key=lambda issue: issue.index), table, generation)


def write_answers_split(
    gold: DataConfig, answers: Answers, t_tok: Any, s_tok: Any, out_dir: Path, source: str
) -> DataReport:
    """The gold snapshot's rows with the teacher's records, validated and tokenised like any prepared
    split into `out_dir` (rows, data report); the rows left out are counted as skipped in the report."""
    with tempfile.TemporaryDirectory(prefix="otdistill-answers-") as draft:
        write_snapshot(gold, sorted(answers.records), Path(draft), answers.records)
        report = prepare_split(dataclasses.replace(gold, source=draft), t_tok, s_tok, out_dir)
    report.source = source
    report.rows_read += len(answers.skipped)
    for issue in answers.skipped:
        report.record_skip(issue)
    (out_dir / DATA_REPORT).write_text(report.to_json(), encoding="utf-8")
    return report


def teacher_answers(
    config_json: str,
    settings_json: str,
    teacher_dir: str | Path,
    train_dir: str | Path,
    data_dir: str | Path,
    report_dir: str | Path,
) -> PrepareResult:
    """The step: `config_json` holds the run-time sections (name, teacher, student, data: open_run's
    `prepare_data` config), `settings_json` the compiled ones (eval, targets); `teacher_dir` the teacher
    Model artifact, `train_dir` the gold training snapshot; writes the answers' snapshot to `data_dir` and
    its report and answers to `report_dir`."""
    merged = json.dumps({**json.loads(config_json), **json.loads(settings_json)}, sort_keys=True)
    with step_prologue(merged, STEP) as step:
        cfg, run = step.cfg, step.run
        targets = cfg.targets
        if not targets.from_teacher:
            raise ConfigError("targets.source is 'gold': the teacher_answers step has nothing to do")
        settings = answer_settings(cfg)
        run.log_params({"targets": dataclasses.asdict(targets), "max_new_tokens": settings.max_new_tokens})
        gold_cfg = snapshot_data_config(cfg, train_dir, cfg.data.split)
        loaded = load_examples(gold_cfg)
        from otdistill.evaluation.evaluate import load_model_ref

        teacher = resolve_model_artifact(teacher_dir)
        model, t_tok, _ = load_model_ref(teacher, settings)
        s_tok = load_tokenizer(resolve_model(cfg.student))
        log.info(
            "teacher %s answers %d training rows, %d-shot (seed %d), up to %d new tokens",
            teacher.source,
            len(loaded.examples) - targets.few_shot,
            targets.few_shot,
            targets.seed,
            settings.max_new_tokens,
        )
        answers = generate_targets(
            model, t_tok, loaded.examples, loaded.source_indices, settings, targets.few_shot, targets.seed
        )
        del model
        report = write_answers_split(gold_cfg, answers, t_tok, s_tok, Path(data_dir), cfg.data.source)
        report_dir = Path(report_dir)
        report_dir.mkdir(parents=True, exist_ok=True)
        (report_dir / ANSWERS_FILE).write_text(
            "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in answers.table), encoding="utf-8"
        )
        gold_sha = loaded.report.content_sha256
        return record_split(
            step,
            report,
            name=STEP,
            context="training",
            subset=cfg.data.subset,
            report_dir=report_dir,
            report_doc={"train": report.to_dict(), "gold_sha256": gold_sha},
            tags={HASH_TAGS["train"]: report.content_sha256, GOLD_HASH_TAG: gold_sha},
            metrics={
                **{data_metric(STEP, k): v for k, v in answers.generation.items()},
                data_metric(STEP, "shots"): float(targets.few_shot),
            },
            metadata={"gold_sha256": gold_sha, "targets": "teacher", "few_shot": str(targets.few_shot)},
            files=[report_dir / ANSWERS_FILE],
        )
