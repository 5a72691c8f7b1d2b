"""From a `DataConfig` to validated examples, and to paired teacher/student features, with a `DataReport`.

Validation happens before any model sees a row: each raw row goes through the task's `to_example` (missing,
empty, wrongly typed fields), then a length check on its texts (`max_field_chars`) and an id-uniqueness
check; `tokenize_pair_split` adds the token-length check (a row that cannot fit `max_length` even with its
context cut away). Under `on_error="fail"` the first bad row raises `DataValidationError` naming index and
field; under "skip" it is dropped and counted by reason. The report's content hash covers exactly the
examples kept (and the teacher's few-shot examples, when the split has any).

A teacher-answers snapshot's rows carry a record (`otdistill.data.targets`): the teacher's answer replaces
the response, and the rows marked as shots become `LoadedSplit.shots`, the examples the teacher's prompts
show (`PairEncoder(teacher_shots=...)`), instead of training rows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from otdistill.data.config import DataConfig
from otdistill.data.errors import DataValidationError, RowIssue, RowValidationError
from otdistill.data.examples import Example
from otdistill.data.hashing import content_hash
from otdistill.data.report import MAX_RECORDED_ISSUES, DataReport
from otdistill.data.sources import Row, iter_rows
from otdistill.data.targets import apply_record, is_shot, read_record
from otdistill.data.tasks import FieldTask, Task, get_task, list_tasks, register_task
from otdistill.data.tokenization import PairedFeature, PairEncoder
from otdistill.progress import progress_bar as tqdm

log = logging.getLogger(__name__)


@dataclass
class LoadedSplit:
    """Validated examples of one split; `source_indices[i]` is the row index `examples[i]` came from.

    `shots` (rows `shot_indices`): the teacher's few-shot examples, not training rows
    (`otdistill.data.targets`).
    """

    examples: list[Example]
    source_indices: list[int]
    report: DataReport
    task: Task
    shots: list[Example] = field(default_factory=list)
    shot_indices: list[int] = field(default_factory=list)


@dataclass
class PairedSplit:
    """Features ready for `PairedCollator`, with the examples they came from (same order) and the report."""

    features: list[PairedFeature]
    examples: list[Example]
    source_indices: list[int]
    report: DataReport
    task: Task
    shots: list[Example] = field(default_factory=list)
    shot_indices: list[int] = field(default_factory=list)


def resolve_task(config: DataConfig) -> Task:
    """The config's task, registering `config.task_spec` first when one is given."""
    if config.task_spec is not None:
        spec = dict(config.task_spec)
        spec.setdefault("name", config.task)
        if config.task in list_tasks():
            existing = get_task(config.task)
            if not (isinstance(existing, FieldTask) and existing == FieldTask.from_dict(spec)):
                raise ValueError(f"task_spec redefines the already registered task {config.task!r}")
            return existing
        return register_task(spec)
    return get_task(config.task)


def _where(report: DataReport) -> str:
    return f"{report.task}/{report.split} from {report.source}"


def _check_lengths(example: Example, task: Task, index: int, max_chars: int) -> None:
    for attribute in ("instruction", "context", "response"):
        n = len(getattr(example, attribute))
        if n > max_chars:
            raise RowValidationError.make(
                index,
                task.source_field(attribute),
                "too_long",
                f"{n} characters, max_field_chars is {max_chars}",
            )


def _handle(issue: RowIssue, config: DataConfig, report: DataReport) -> None:
    if config.on_error == "fail":
        raise DataValidationError(issue, _where(report))
    report.record_skip(issue)
    if report.rows_skipped <= MAX_RECORDED_ISSUES:
        log.warning("skipping bad row: %s", issue)
    elif report.rows_skipped == MAX_RECORDED_ISSUES + 1:
        log.warning("more bad rows are skipped; they are counted by reason in the data report")


def config_rows(config: DataConfig) -> Iterator[tuple[int, Row | RowIssue]]:
    """`(index, row or RowIssue)` of the split `config` names: its source, split, revision, subset and S3
    endpoint. The one way to read a DataConfig's rows, so that validation, the training-data snapshot and
    the serving example all see the same rows by the same indices."""
    return iter_rows(
        config.source,
        split=config.split,
        revision=config.revision,
        s3_endpoint_url=config.s3_endpoint_url,
        subset=config.subset,
    )


def load_examples(config: DataConfig, *, progress: bool = True) -> LoadedSplit:
    """Read, validate and convert the split `config` names; see the module doc for the policy."""
    task = resolve_task(config)
    report = DataReport(task=task.name, source=config.source, split=config.split, revision=config.revision)
    rows = config_rows(config)
    examples: list[Example] = []
    indices: list[int] = []
    shots: list[Example] = []
    shot_indices: list[int] = []
    seen: dict[str, int] = {}
    bar = tqdm(
        desc=f"validating {task.name}/{config.split}", unit="row", disable=not progress, total=config.limit
    )
    try:
        for index, item in rows:
            if config.limit is not None and report.rows_read >= config.limit:
                break
            report.rows_read += 1
            bar.update(1)
            try:
                if isinstance(item, RowIssue):
                    raise RowValidationError(item)
                example = task.to_example(item, index)
                record = read_record(item, index)
                if record is not None and not is_shot(record):
                    example = apply_record(example, record)
                _check_lengths(example, task, index, config.max_field_chars)
                if example.id in seen:
                    raise RowValidationError.make(
                        index,
                        task.id_field_of(item),
                        "duplicate_id",
                        f"id {example.id!r} already used by row {seen[example.id]}",
                    )
            except RowValidationError as exc:
                _handle(exc.issue, config, report)
                continue
            seen[example.id] = index
            if is_shot(record):
                shots.append(example)
                shot_indices.append(index)
                continue
            examples.append(example)
            indices.append(index)
    finally:
        bar.close()
        close = getattr(rows, "close", None)
        if close is not None:
            close()  # ends a generator early (removes an S3 download directory at once)
    report.rows_kept = len(examples)
    report.content_sha256 = content_hash(task.name, examples, shots)
    log.info("%s", report.summary())
    if shots:
        log.info("%d rows are the teacher's few-shot examples, not training rows", len(shots))
    return LoadedSplit(examples, indices, report, task, shots, shot_indices)


def tokenize_pair_split(
    loaded: LoadedSplit,
    teacher_tokenizer: Any,
    student_tokenizer: Any,
    config: DataConfig,
    *,
    progress: bool = True,
) -> PairedSplit:
    """Encode every loaded example for teacher and student; rows that cannot fit follow `config.on_error`.

    The report is updated in place: too-long rows are counted as skipped, `truncated` counts examples whose
    context was cut, and the content hash is recomputed over the examples that remain.
    """
    encoder = PairEncoder(
        teacher_tokenizer,
        student_tokenizer,
        max_length=config.max_length,
        max_prompt_tokens=config.max_prompt_tokens,
        teacher_shots=loaded.shots,
    )
    report, task = loaded.report, loaded.task
    features: list[PairedFeature] = []
    examples: list[Example] = []
    indices: list[int] = []
    truncated = 0
    pairs = zip(loaded.examples, loaded.source_indices, strict=True)
    for example, index in tqdm(pairs, total=len(loaded.examples), desc="tokenizing", disable=not progress):
        try:
            feature = encoder.encode(
                example,
                index,
                response_field=task.source_field("response"),
                context_field=task.source_field("context"),
            )
        except RowValidationError as exc:
            _handle(exc.issue, config, report)
            continue
        truncated += feature.truncated
        features.append(feature)
        examples.append(example)
        indices.append(index)
    report.rows_kept = len(examples)
    report.truncated = truncated
    report.content_sha256 = content_hash(task.name, examples, loaded.shots)
    if truncated:
        log.info("%d of %d examples had their context truncated to fit max_length", truncated, len(examples))
    return PairedSplit(features, examples, indices, report, task, loaded.shots, loaded.shot_indices)


def load_paired(
    config: DataConfig, teacher_tokenizer: Any, student_tokenizer: Any, *, progress: bool = True
) -> PairedSplit:
    """`load_examples` then `tokenize_pair_split`: the one call a trainer or teacher cache needs."""
    return tokenize_pair_split(
        load_examples(config, progress=progress),
        teacher_tokenizer,
        student_tokenizer,
        config,
        progress=progress,
    )
