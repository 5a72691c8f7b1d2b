"""Undecodable and unparsable input: named errors that say which file and line, under both `on_error`s.

A bad line is a bad row (raised with its file and line under "fail", counted under "skip"); a Parquet file
that cannot be read at all is a `DataSourceError` naming it under either policy.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from otdistill.data import DataConfig, DataSourceError, DataValidationError, load_examples

GOOD = [{"id": f"r{i}", "dialogue": f"#Person1#: hello {i}", "summary": f"greeting {i}"} for i in range(3)]


def _jsonl(path: Path, middle: bytes) -> Path:
    """GOOD[0], then the bad line `middle` (line 2), then GOOD[1] and GOOD[2]."""
    lines = [json.dumps(GOOD[0]).encode(), middle, *(json.dumps(r).encode() for r in GOOD[1:])]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _config(path: Path, on_error: str) -> DataConfig:
    return DataConfig(task="dialogsum", source=str(path), on_error=on_error)


BAD_LINES = {
    "invalid_utf8": b'{"id": "x", "dialogue": "caf\xe9", "summary": "s"}',  # Latin-1, not UTF-8
    "deeply_nested": b"[" * 100_000 + b"]" * 100_000,
    "surrogate": b'{"id": "x", "dialogue": "\\ud800 alone", "summary": "s"}',
}
EXPECTED = {
    "invalid_utf8": ("invalid_utf8", "not UTF-8 text"),
    "deeply_nested": ("invalid_json", "nested too deeply"),
    "surrogate": ("invalid_text", "unpaired UTF-16 surrogate"),
}


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_a_bad_line_is_named_by_file_and_line_under_fail(kind: str, tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "train.jsonl", BAD_LINES[kind])
    reason, words = EXPECTED[kind]
    with pytest.raises(DataValidationError, match=f"train.jsonl line 2: .*{words}") as info:
        load_examples(_config(path, "fail"), progress=False)
    assert info.value.issue.index == 1 and info.value.issue.reason == reason
    assert str(path) in str(info.value)  # the data set's full path, too


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_a_bad_line_is_skipped_and_counted_under_skip(kind: str, tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "train.jsonl", BAD_LINES[kind])
    loaded = load_examples(_config(path, "skip"), progress=False)
    assert [e.id for e in loaded.examples] == ["r0", "r1", "r2"]
    assert loaded.source_indices == [0, 2, 3]
    reason = EXPECTED[kind][0]
    assert loaded.report.rows_skipped == 1 and loaded.report.skipped_by_reason == {reason: 1}
    assert "train.jsonl line 2" in loaded.report.issues[0]["message"]


@pytest.mark.parametrize("on_error", ["fail", "skip"])
def test_a_corrupt_parquet_file_is_a_source_error_naming_it(on_error: str, tmp_path: Path) -> None:
    whole = tmp_path / "whole.parquet"
    pq.write_table(pa.Table.from_pylist(GOOD), whole)
    cut = tmp_path / "train.parquet"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2] + data[-8:])  # the footer's length and magic survive, not its body
    with pytest.raises(DataSourceError, match=f"{cut}: not a readable Parquet file"):
        load_examples(_config(cut, on_error), progress=False)
    junk = tmp_path / "junk" / "train.parquet"
    junk.parent.mkdir()
    junk.write_bytes(b"PAR1 this is not a parquet file PAR1")
    with pytest.raises(DataSourceError, match=f"{junk}: not a readable Parquet file"):
        load_examples(_config(junk.parent, on_error), progress=False)
