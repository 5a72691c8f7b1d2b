"""Step `prepare_data`: validate the task's rows, check both tokenisations, snapshot the splits.

The snapshot (the kept rows, in the source's own layout, as `<split>.jsonl`) is what every later step
reads: the training data is fixed by content for the whole run even if the hub or the S3 prefix changes
underneath, and a cluster's GPU steps never fetch from the original source again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from otdistill.data import DataConfig, DataReport, config_rows, load_examples, tokenize_pair_split
from otdistill.models import load_tokenizer, resolve_model
from otdistill.steps.common import load_step_config, pipeline_run, setup_logging, step_tags
from otdistill.tracking.runs import step_run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrepareResult:
    data_hash: str
    metrics: dict[str, float]
    train_metadata: dict[str, str]
    validation_metadata: dict[str, str]


def _snapshot(config: DataConfig, keep: list[int], out_dir: Path) -> Path:
    """Write the source rows with indices `keep` to `<out_dir>/<split>.jsonl`, in source order."""
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


def _split(config: DataConfig, t_tok: object, s_tok: object, out_dir: Path) -> DataReport:
    loaded = load_examples(config)
    if not loaded.examples:
        raise ValueError(
            f"no usable rows in {config.source} split {config.split!r}: {loaded.report.summary()}"
        )
    paired = tokenize_pair_split(loaded, t_tok, s_tok, config)
    _snapshot(config, paired.source_indices, out_dir)
    (out_dir / "data_report.json").write_text(paired.report.to_json(), encoding="utf-8")
    return paired.report


def prepare_data(
    config_json: str, train_dir: str | Path, validation_dir: str | Path, report_dir: str | Path
) -> PrepareResult:
    """Validate and snapshot the training and validation splits; record reports and the data hash."""
    setup_logging()
    cfg = load_step_config(config_json)
    train_cfg = cfg.data
    val_cfg = dataclasses.replace(cfg.data, split=cfg.validation.split, limit=cfg.validation.limit)
    parent = pipeline_run(cfg.tracking, cfg.name)
    with step_run(parent, "prepare_data", tags=step_tags(cfg)) as run:
        run.log_params({"data": cfg.data.to_dict(), "validation": dataclasses.asdict(cfg.validation)})
        log.info("loading tokenizers of %s and %s", cfg.teacher.source, cfg.student.source)
        t_tok = load_tokenizer(resolve_model(cfg.teacher))
        s_tok = load_tokenizer(resolve_model(cfg.student))
        train = _split(train_cfg, t_tok, s_tok, Path(train_dir))
        val = _split(val_cfg, t_tok, s_tok, Path(validation_dir))
        metrics = {**train.metrics("data.train"), **val.metrics("data.validation")}
        run.log_metrics(metrics)
        report_dir = Path(report_dir)
        report_dir.mkdir(parents=True, exist_ok=True)
        both = {"train": train.to_dict(), "validation": val.to_dict()}
        (report_dir / "data_report.json").write_text(
            json.dumps(both, indent=2, sort_keys=True), encoding="utf-8"
        )
        run.log_artifact(report_dir / "data_report.json", "data")
        run.set_tags(
            {"otdistill.data_hash": train.content_sha256, "otdistill.validation_hash": val.content_sha256}
        )
        parent.set_tags({"otdistill.data_hash": train.content_sha256})
    log.info("train: %s", train.summary())
    log.info("validation: %s", val.summary())
    return PrepareResult(
        data_hash=train.content_sha256,
        metrics=metrics,
        train_metadata={"rows": str(train.rows_kept), "sha256": train.content_sha256, "task": train.task},
        validation_metadata={"rows": str(val.rows_kept), "sha256": val.content_sha256, "task": val.task},
    )
