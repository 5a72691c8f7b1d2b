"""prepare_data: snapshots the kept rows of one split in the source layout, with its report and hash."""

import json
from pathlib import Path

from otdistill.components.conftest import Env, Upstream


def test_prepare_data_snapshots_each_split(env: Env, upstream: Upstream) -> None:
    train = Path(upstream.train.path) / "train.jsonl"
    rows = [json.loads(line) for line in train.read_text().splitlines()]
    assert len(rows) == 4 and {"dialogue", "summary"} <= set(rows[0])
    val_rows = (Path(upstream.validation.path) / "validation.jsonl").read_text().splitlines()
    assert len(val_rows) == 2 and "summary1" in json.loads(val_rows[0])
    assert upstream.data_hash == upstream.train.metadata["sha256"] and len(upstream.data_hash) == 64
    assert (
        upstream.validation.metadata["rows"] == "2"
        and upstream.validation.metadata["sha256"] != upstream.data_hash
    )
    report = json.loads((Path(env.root) / "artifacts" / "up-report" / "data_report.json").read_text())
    assert report["train"]["rows_kept"] == 4 and "validation" not in report
    val_report = json.loads((Path(env.root) / "artifacts" / "up-val-report" / "data_report.json").read_text())
    assert val_report["validation"]["rows_kept"] == 2
