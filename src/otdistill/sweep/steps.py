"""The sweep's own steps: its held-out rows, one student's evaluation, and its registration.

Each is a function of files and config JSON, as in `otdistill.steps`; the components in `components/`
(`prepare_test_data`, `sweep_row`, `evaluate_student`, `register_student`, `aggregate_sweep`) are thin
wrappers around them. A row's record (`row.json`, written by `evaluate_student`, completed by
`register_student`) is what the aggregation reads: its variant and seed, and each split's scores JSON as
`otdistill.steps.evaluate` writes it (means and per-row scores by example id).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from otdistill.config import RunConfig
from otdistill.fingerprint import snapshot_data_hash
from otdistill.models.weights_hash import WEIGHTS_SHA256_TAG, weights_sha256
from otdistill.steps.common import load_step_config, setup_logging
from otdistill.sweep.config import TEACHER, SweepConfig

log = logging.getLogger(__name__)

TEST_MARKER = "test_data.json"  # in the test data artifact: its source, split and rows (0: no test data)
ROW_TAG_PREFIX = "otdistill.sweep."


def prepare_test_data(
    config_json: str, source: str, split: str, rows: int, data_dir: str | Path, report_dir: str | Path
) -> dict[str, Any]:
    """Snapshot the held-out rows (`source` "" : none, an empty artifact); `rows` 0 : all of the split.

    config_json: `open_run`'s `prepare_validation_data` section (task, both models, cuts); the rows are
    validated and snapshot like the validation split, as the `test` split of their own source.
    """
    from otdistill.steps.prepare_data import prepare_data

    setup_logging()
    out = Path(data_dir)
    out.mkdir(parents=True, exist_ok=True)
    marker: dict[str, Any] = {"source": source, "split": split, "rows": 0, "sha256": ""}
    if source.strip():
        cfg = load_step_config(config_json)
        data_cfg = dataclasses.replace(
            cfg.data, source=source, split=split, revision=None, limit=rows if rows > 0 else None
        )
        result = prepare_data(config_json, "test", out, report_dir, data_config=data_cfg)
        marker.update(rows=int(result.metadata["rows"]), sha256=result.data_hash)
    else:
        Path(report_dir).mkdir(parents=True, exist_ok=True)
        log.info("no test data given (test_data is empty): students are scored on the validation rows only")
    (out / TEST_MARKER).write_text(json.dumps(marker, sort_keys=True), encoding="utf-8")
    return marker


def read_test_marker(test_dir: str | Path) -> dict[str, Any]:
    path = Path(test_dir) / TEST_MARKER
    if not path.is_file():
        raise FileNotFoundError(f"{test_dir} is not a prepare_test_data artifact (no {TEST_MARKER})")
    return dict(json.loads(path.read_text(encoding="utf-8")))


def evaluate_student(
    config_json: str,
    validation_dir: str | Path,
    test_dir: str | Path,
    model_dir: str | Path,
    *,
    row: Mapping[str, Any],
    record_path: str | Path,
    report_path: str | Path,
    train_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Score one student (`row`: its loop item, `otdistill.sweep.rows.Row.item`) on the validation rows
    and, when there are any, the test rows; write the row's record (JSON: row, variant, seed, sft, each
    split's scores) and the validation HTML report. Returns the record. The teacher's row (`TEACHER`) is
    scored as the teacher answered the training snapshot `train_dir`: with its few-shot examples, if any
    (`otdistill.steps.evaluate`)."""
    from otdistill.steps.evaluate import evaluate

    setup_logging()
    name = str(row["row"])
    splits: dict[str, Any] = {}
    marker = read_test_marker(test_dir)
    with tempfile.TemporaryDirectory(prefix="otdistill-row-") as tmp:
        scratch = Path(tmp)
        models = {name: model_dir}
        teacher = TEACHER if name == TEACHER else None  # a student is scored zero-shot, as it is served
        splits["validation"] = evaluate(
            config_json,
            validation_dir,
            models,
            scratch / "validation.json",
            report_path,
            teacher=teacher,
            train_dir=train_dir,
        ).scores
        if marker["rows"]:
            cfg = load_step_config(config_json).with_overrides({"validation.split": marker["split"]})
            splits["test"] = evaluate(
                cfg.section_json("evaluate"),
                test_dir,
                models,
                scratch / "test.json",
                scratch / "test.html",
                teacher=teacher,
                train_dir=train_dir,
            ).scores
    record = {
        "row": name,
        "variant": str(row["variant"]),
        "seed": int(row["seed"]),
        "sft": bool(row["sft"]),
        "splits": splits,
        **_training(model_dir),
    }
    _write_json(record_path, record)
    return record


def _training(model_dir: str | Path) -> dict[str, Any]:
    """What the trained model's training result says for its record: `objective` (term -> mean share over
    its logged steps) and `trained_with` (what decided the weights besides the config: torch version,
    threads, CPU kernels, seed; `otdistill.training.determinism`). Rows of two runs are tabled together
    only when their teachers agree (`otdistill.sweep.records`); `trained_with` says why two did not.
    Both {} for a model not trained here, or trained before they were recorded."""
    from otdistill.training.runner import RESULT_FILE, TrainResult

    if not (Path(model_dir) / RESULT_FILE).is_file():
        return {"objective": {}, "trained_with": {}}
    result = TrainResult.load(model_dir)
    trained_with = dict(result.record.get("determinism", {}))
    return {"objective": result.objective_shares(), "trained_with": trained_with}


def _write_json(path: str | Path, data: Any) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")


def registered_name(model_name: str, variant: str) -> str:
    """One registered model per variant (one version per seed and run): `<tracking name>-<variant>`."""
    return f"{model_name}-{variant}".replace("_", "-")


def register_student(
    config_json: str,
    train_dir: str | Path,
    validation_dir: str | Path,
    model_dir: str | Path,
    record_in: str | Path,
    record_out: str | Path,
) -> dict[str, Any]:
    """Register one sweep student, without promoting it: a version of `<registered_model_name>-<variant>`
    (the served pyfunc of `log_student_model`), tagged with its row, seed, scores and lineage, its scores
    recorded under the validation rows' score key (`otdistill.tracking.scores`) as the gate records them.
    No alias is set: the sweep measures, the main pipeline's gate promotes. The version carries its weights'
    content hash (`WEIGHTS_SHA256_TAG`): a retry of the step, or a later run of the sweep that resumes from
    the step cache (the same trained student), finds the version of this row with these weights and
    registers nothing again. Writes the row's record with the version added.
    train_dir: the training split's artifact: its report's content hash is the version's data lineage."""
    import mlflow

    from otdistill.steps.common import pipeline_run, read_model_info, snapshot_data_config, step_tags
    from otdistill.tracking import log_student_model
    from otdistill.tracking.connection import tracking_client
    from otdistill.tracking.registry import METRIC_TAG_PREFIX
    from otdistill.tracking.runs import step_run
    from otdistill.tracking.scores import record_row_scores, record_scores, version_uri
    from otdistill.tracking.serving import data_input_example

    setup_logging()
    cfg = load_step_config(config_json)
    tracking = cfg.tracking
    record = json.loads(Path(record_in).read_text(encoding="utf-8"))
    row, variant = str(record["row"]), str(record["variant"])
    validation = record["splits"]["validation"]
    metric = tracking.promotion_metric
    name = registered_name(tracking.registered_model_name, variant)
    data_hash = snapshot_data_hash(train_dir)
    weights = weights_sha256(model_dir)
    parent = pipeline_run(tracking, cfg.name)
    client = tracking_client(tracking)
    tags = {
        ROW_TAG_PREFIX + "row": row,
        ROW_TAG_PREFIX + "variant": variant,
        ROW_TAG_PREFIX + "seed": str(record["seed"]),
        ROW_TAG_PREFIX + "parent_run_id": parent.run_id,
        "otdistill.lineage.data_hash": data_hash,
        WEIGHTS_SHA256_TAG: weights,
        **{
            f"otdistill.eval.{split}.{k}": repr(float(v))
            for split, s in record["splits"].items()
            for k, v in s["models"][row].items()
        },
    }
    if metric in validation["models"][row]:
        tags[METRIC_TAG_PREFIX + metric] = repr(float(validation["models"][row][metric]))
    version = _existing(client, name, row, weights)
    if version is None:
        task, example = data_input_example(snapshot_data_config(cfg, validation_dir, cfg.validation.split))
        info = read_model_info(model_dir)
        with step_run(parent, "register_student", tags={**step_tags(cfg), **tags}) as run:
            model_info = log_student_model(
                run,
                model_dir,
                task=task,
                input_example=example,
                eval_config=cfg.eval,
                metadata={**{k: str(v) for k, v in info.items()}, "row": row},
            )
            mv = mlflow.register_model(
                model_info.model_uri, name, await_registration_for=tracking.request_timeout_s, tags=tags
            )
            version = str(mv.version)
            key = str(validation.get("score_key", ""))
            if key:
                record_scores(client, name, version, key, validation["models"][row])
                if row in validation.get("row_scores", {}):
                    record_row_scores(client, run.run_id, name, version, key, validation["row_scores"][row])
        log.info("registered %s v%s (row %s; not promoted)", name, version, row)
    else:
        log.info("row %s with these weights is already registered as %s v%s", row, name, version)
    record["registered"] = {"name": name, "version": version, "uri": version_uri(name, version)}
    _write_json(record_out, record)
    return dict(record)


def _existing(client: Any, name: str, row: str, weights: str) -> str | None:
    """The version an earlier attempt of this step (in this pipeline run or an earlier one) registered for
    `row` with the weights whose content hash is `weights`, if any."""
    from mlflow.exceptions import MlflowException

    try:
        versions = client.search_model_versions(f"name='{name}'")
    except MlflowException:
        return None
    mine = [
        mv
        for mv in versions
        if mv.tags.get(WEIGHTS_SHA256_TAG) == weights and mv.tags.get(ROW_TAG_PREFIX + "row") == row
    ]
    return str(min(int(mv.version) for mv in mine)) if mine else None


def aggregate_sweep(
    config_json: str,
    parent_run_id: str,
    record_paths: list[str | Path],
    out_dir: str | Path,
    teacher_path: str | Path | None = None,
) -> dict[str, Any]:
    """Read every row's record, build the table and the intervals against the SFT row
    (`otdistill.sweep.aggregate`; `teacher_path`: the teacher's record, the pilot row), and write them
    to the parent MLflow run: the files under `sweep/` (table.md, table.csv, row_differences.csv,
    comparisons.json, pairwise.json, plot.png, and the records read, `records/`), the numbers as metrics
    (`sweep/<split>/<variant>/mean|sd|diff|low|high`, `.../diff_vs_<other>` between distilled rows)
    and the table as the tag `otdistill.sweep.table` (what the run's page shows).
    Returns the files and metrics."""
    from otdistill.steps.common import pipeline_run
    from otdistill.sweep import aggregate

    setup_logging()
    cfg = load_step_config(config_json)
    records = [json.loads(Path(p).read_text(encoding="utf-8")) for p in record_paths]
    teacher = json.loads(Path(teacher_path).read_text(encoding="utf-8")) if teacher_path else None
    summary, files = _table(cfg, records, teacher, Path(out_dir))
    parent = pipeline_run(cfg.tracking, cfg.name, parent_run_id)
    numbers = aggregate.metrics(summary)
    parent.log_metrics(numbers)
    for path in files.values():  # the records folder as sweep/records/
        parent.log_artifact(path, aggregate.ARTIFACT_DIR + ("" if path.is_file() else f"/{path.name}"))
    parent.set_tags({ROW_TAG_PREFIX + "table": aggregate.markdown(summary)[:5000]})
    log.info("sweep table:\n%s", aggregate.markdown(summary))
    return {"files": {k: str(v) for k, v in files.items()}, "metrics": numbers}


def aggregate_records(
    cfg: RunConfig, sweep: SweepConfig, record_dirs: list[Path], out_dir: Path
) -> dict[str, Path]:
    """The table of rows run earlier, from their records (`records/` folders of one or several runs that
    share a trunk, `otdistill.sweep.records.read_record_dirs`), written to `out_dir` as the aggregation
    writes it; nothing is logged to MLflow. Returns the files.

    The rows are put in the sweep's variant order, then by seed, as the pipeline's loop hands them to its
    aggregation (files are read in name order): the same records make the same table, its rows and each
    pair's direction (MultiLevelOT against ULD) alike. Variants the config does not list come last."""
    from otdistill.sweep.records import read_record_dirs

    records, teacher = read_record_dirs(record_dirs)
    order = {v.name: i for i, v in enumerate(sweep.variants)}
    records.sort(key=lambda r: (order.get(str(r["variant"]), len(order)), str(r["variant"]), int(r["seed"])))
    return _table(cfg, records, teacher, out_dir)[1]


def _table(
    cfg: RunConfig, records: list[dict[str, Any]], teacher: dict[str, Any] | None, out_dir: Path
) -> tuple[Any, dict[str, Path]]:
    """The summary of `records` and its files in `out_dir`, the records themselves under `records/`."""
    from otdistill.sweep import aggregate
    from otdistill.sweep.records import write_records

    tracking = cfg.tracking
    summary = aggregate.summarize(
        records, tracking.promotion_metric, greater_is_better=tracking.greater_is_better, teacher=teacher
    )
    title = f"{cfg.name}: {len(records)} students ({cfg.data.task})"
    files = aggregate.write_files(summary, out_dir, title)
    files["records"] = write_records(records, teacher, out_dir)
    return summary, files
