"""Steps `prepare_data` and `prepare_validation_data`: validate a split, check both tokenisations, snapshot.

The snapshot (the kept rows, in the source's own layout, as `<split>.jsonl`) is what every later step
reads: the training data is fixed by content for the whole run even if the hub or the S3 prefix changes
underneath, and a cluster's GPU steps never fetch from the original source again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otdistill.config import RunConfig
from otdistill.data import DataConfig, DataReport, config_rows, load_examples, tokenize_pair_split
from otdistill.data.targets import RECORD_FIELD
from otdistill.fingerprint import DATA_REPORT
from otdistill.models import load_tokenizer, resolve_model
from otdistill.steps.prologue import Step, step_prologue
from otdistill.tracking.datasets import log_dataset, prepared_dataset
from otdistill.tracking.metric_names import data_metric

log = logging.getLogger(__name__)


# The two splits are two steps (two cache keys): the validation rows do not touch the training data artifact.
# A sweep's held-out rows (`test`) come from a source of their own: `prepare_data(..., data_config=...)`.
SPLIT_STEPS = {"train": "prepare_data", "validation": "prepare_validation_data", "test": "prepare_test_data"}
HASH_TAGS = {
    "train": "otdistill.data_hash",
    "validation": "otdistill.validation_hash",
    "test": "otdistill.test_hash",
}
# With teacher answers as the training targets (`otdistill.steps.teacher_answers`), the "train" tag holds the
# answers' hash (what the students trained on) and this one the gold split's, which the source still has.
GOLD_HASH_TAG = "otdistill.gold_data_hash"
# The role each split plays, as the MLflow dataset input's context.
SPLIT_CONTEXTS = {"train": "training", "validation": "validation", "test": "testing"}


@dataclass(frozen=True)
class PrepareResult:
    data_hash: str
    metrics: dict[str, float]
    metadata: dict[str, str]


def write_snapshot(
    config: DataConfig, keep: list[int], out_dir: Path, records: Mapping[int, Mapping[str, Any]] | None = None
) -> Path:
    """Write the source rows with indices `keep` to `<out_dir>/<split>.jsonl`, in source order; a row
    whose index is in `records` gets that record as its `otdistill.data.targets.RECORD_FIELD`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{config.split}.jsonl"
    wanted = set(keep)
    last = max(keep) if keep else -1
    written = 0
    rows = config_rows(config)
    with path.open("w", encoding="utf-8") as fh:
        for index, row in rows:
            if index > last:
                break
            if index in wanted:
                if records and index in records and isinstance(row, dict):
                    row = {**row, RECORD_FIELD: dict(records[index])}
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                written += 1
    close = getattr(rows, "close", None)
    if close is not None:
        close()
    if written != len(keep):
        raise RuntimeError(
            f"snapshot of {config.source}/{config.split} wrote {written} rows, expected {len(keep)}"
        )
    return path


def prepare_split(config: DataConfig, t_tok: object, s_tok: object, out_dir: Path) -> DataReport:
    """Validate, tokenise for both models and snapshot the kept rows (and the teacher's few-shot rows, when
    the split has any) with the data report: a prepared split, from any source."""
    loaded = load_examples(config)
    if not loaded.examples:
        raise ValueError(
            f"no usable rows in {config.source} split {config.split!r}: {loaded.report.summary()}"
        )
    paired = tokenize_pair_split(loaded, t_tok, s_tok, config)
    write_snapshot(config, sorted(paired.source_indices + paired.shot_indices), out_dir)
    (out_dir / DATA_REPORT).write_text(paired.report.to_json(), encoding="utf-8")
    return paired.report


def split_config(cfg: RunConfig, split: str) -> DataConfig:
    """The DataConfig of `split` ("train": `data`; "validation": `data` on the validation split and cap)."""
    if split == "train":
        return cfg.data
    if split == "validation":
        return dataclasses.replace(cfg.data, split=cfg.validation.split, limit=cfg.validation.limit)
    if split == "test":
        raise ValueError("the test split has its own source: pass prepare_data(..., data_config=...)")
    raise ValueError(f"split must be one of {sorted(SPLIT_STEPS)}, got {split!r}")


def prepare_data(
    config_json: str,
    split: str,
    data_dir: str | Path,
    report_dir: str | Path,
    *,
    data_config: DataConfig | None = None,
) -> PrepareResult:
    """Validate and snapshot one split (`train`, `validation`, or `test` with its own `data_config`);
    record its report and content hash."""
    with step_prologue(config_json, SPLIT_STEPS[split]) as step:
        cfg, run = step.cfg, step.run
        data_cfg = data_config or split_config(cfg, split)
        run.log_params({split: data_cfg.to_dict()})
        log.info("loading tokenizers of %s and %s", cfg.teacher.source, cfg.student.source)
        t_tok = load_tokenizer(resolve_model(cfg.teacher))
        s_tok = load_tokenizer(resolve_model(cfg.student))
        report = prepare_split(data_cfg, t_tok, s_tok, Path(data_dir))
        return record_split(
            step,
            report,
            name=split,
            context=SPLIT_CONTEXTS[split],
            subset=data_cfg.subset,
            report_dir=report_dir,
            report_doc={split: report.to_dict()},
            tags={HASH_TAGS[split]: report.content_sha256},
        )


def record_split(
    step: Step,
    report: DataReport,
    *,
    name: str,
    context: str,
    subset: str | None,
    report_dir: str | Path,
    report_doc: Mapping[str, Any],
    tags: Mapping[str, str],
    metrics: Mapping[str, float] | None = None,
    metadata: Mapping[str, str] | None = None,
    files: Sequence[Path] = (),
) -> PrepareResult:
    """What a prepared split records, whichever step made it (`prepare_data` from a source,
    `teacher_answers` from the teacher's answers): its report's counts as metrics `data/<name>/...` (and
    `metrics`), the MLflow dataset input in `context`, `report_doc` as the data report artifact under
    `data/<name>` (with `files`), `tags` on the step's run and the pipeline's parent run; returns the KFP
    step's result (content hash, metrics, artifact metadata plus `metadata`)."""
    run = step.run
    logged = {data_metric(name, k): v for k, v in report.counts().items()}
    logged.update(metrics or {})
    run.log_metrics(logged)
    log_dataset(prepared_dataset(report, subset), context)
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / DATA_REPORT).write_text(json.dumps(report_doc, indent=2, sort_keys=True), encoding="utf-8")
    for path in (report_dir / DATA_REPORT, *files):
        run.log_artifact(path, f"data/{name}")
    run.set_tags(dict(tags))
    step.parent.set_tags(dict(tags))
    log.info("%s: %s", name, report.summary())
    return PrepareResult(
        data_hash=report.content_sha256,
        metrics=logged,
        metadata={
            "rows": str(report.rows_kept),
            "sha256": report.content_sha256,
            "task": report.task,
            **(metadata or {}),
        },
    )
