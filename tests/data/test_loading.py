"""Validation policy end to end: bad rows of every kind, fail vs skip, counts in the report, limits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from otdistill.data import DataConfig, DataValidationError, load_examples
from tests.data.rows import write_jsonl


def good_rows(shared_data: Path, n: int) -> list[dict[str, Any]]:
    with open(shared_data / "dialogsum" / "train.jsonl", encoding="utf-8") as fh:
        return [json.loads(next(fh)) for _ in range(n)]


@pytest.fixture
def messy_file(shared_data: Path, tmp_path: Path) -> Path:
    """Real DialogSum rows with one bad row of each kind at known indices (blank lines are not rows)."""
    rows: list[Any] = good_rows(shared_data, 9)
    rows[1] = {k: v for k, v in rows[1].items() if k != "dialogue"}  # 1: missing
    rows[2] = dict(rows[2], summary="")  # 2: empty
    rows[3] = dict(rows[3], dialogue=42)  # 3: wrong type
    rows[4] = '{"fname": "broken", "dialogue": '  # 4: not JSON
    rows[5] = '["a", "list"]'  # 5: not an object
    rows[6] = dict(rows[6], fname=rows[0]["fname"])  # 6: duplicate id
    rows[7] = dict(rows[7], dialogue="x" * 5000)  # 7: over-long for max_field_chars=4000
    rows.insert(8, "")  # a blank line: skipped, does not count as a row
    return write_jsonl(tmp_path / "train.jsonl", rows)


def test_skip_policy_counts_every_bad_row_by_reason(messy_file: Path) -> None:
    cfg = DataConfig(task="dialogsum", source=str(messy_file), on_error="skip", max_field_chars=4000)
    split = load_examples(cfg, progress=False)
    r = split.report
    assert (r.rows_read, r.rows_kept, r.rows_skipped) == (9, 2, 7)
    assert r.skipped_by_reason == {
        "duplicate_id": 1,
        "empty": 1,
        "invalid_json": 1,
        "missing": 1,
        "too_long": 1,
        "wrong_type": 2,
    }
    assert [(i["index"], i["field"]) for i in r.issues] == [
        (1, "dialogue"),
        (2, "summary"),
        (3, "dialogue"),
        (4, "<json>"),
        (5, "<row>"),
        (6, "fname"),
        (7, "dialogue"),
    ]
    assert split.source_indices == [0, 8]
    assert "line 5" in r.issues[3]["message"]
    assert json.loads(r.to_json())["skipped_by_reason"]["wrong_type"] == 2
    assert r.counts()["skipped/too_long"] == 1.0
    assert "skipped 7" in r.summary()


def test_fail_policy_stops_at_first_bad_row_naming_it(messy_file: Path) -> None:
    with pytest.raises(DataValidationError) as err:
        load_examples(DataConfig(task="dialogsum", source=str(messy_file)), progress=False)
    assert (err.value.issue.index, err.value.issue.field, err.value.issue.reason) == (
        1,
        "dialogue",
        "missing",
    )
    message = str(err.value)
    assert (
        "row 1, field 'dialogue'" in message and "on_error='skip'" in message and str(messy_file) in message
    )


def test_limit_reads_only_the_first_rows(shared_data: Path) -> None:
    cfg = DataConfig(task="fairytaleqa", source=str(shared_data / "fairytaleqa"), split="train", limit=25)
    split = load_examples(cfg, progress=False)
    assert split.report.rows_read == 25 and len(split.examples) == 25
    assert split.source_indices == list(range(25))


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="on_error"):
        DataConfig(on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_length"):
        DataConfig(max_length=1)
    with pytest.raises(ValueError, match="limit"):
        DataConfig(limit=-1)


def test_report_round_trips_through_a_json_file(messy_file: Path, tmp_path: Path) -> None:
    from otdistill.data import DataReport

    cfg = DataConfig(task="dialogsum", source=str(messy_file), on_error="skip", max_field_chars=4000)
    report = load_examples(cfg, progress=False).report
    path = report.write_json(tmp_path / "out" / "data_report.json")
    again = DataReport.from_dict(json.loads(path.read_text(encoding="utf-8")))
    assert again == report


def test_empty_source_is_refused() -> None:
    from otdistill.data import DataSourceError

    with pytest.raises(DataSourceError, match="source is empty"):
        load_examples(DataConfig(source=""), progress=False)
