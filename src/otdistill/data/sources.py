"""Reading raw rows from where users keep data: local files, S3 (and S3-compatible stores), the HF hub.

Every reader yields `(index, row)` in source order, `index` counting data rows from 0 across the files of a
split. A line that is not UTF-8, not valid JSON (or nested too deeply to parse), or not a JSON object, is
yielded as a `RowIssue` naming the file and line in place of the row, so the caller's fail/skip policy
applies to it like to any other bad row. A Parquet file that cannot be read (corrupt, truncated, not Parquet)
raises `DataSourceError` naming the file in either policy: its rows cannot be told apart, so none can be
skipped one by one, and dropping a whole file silently would change the data far more than a bad row.

Layouts accepted for a directory or an S3 prefix: `{split}.jsonl`, `{split}.json` (JSON Lines),
`{split}.parquet`, or shards `{split}-*.{jsonl,parquet}` / `{split}/*.{jsonl,parquet}`, read in sorted order.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from otdistill.data.errors import DataSourceError, RowIssue
from otdistill.s3 import S3UriError, list_objects, s3_client
from otdistill.s3 import parse_s3_uri as parse_s3_location

log = logging.getLogger(__name__)

Row = dict[str, Any]
JSONL_SUFFIXES = (".jsonl", ".json")
PARQUET_SUFFIXES = (".parquet",)
DATA_SUFFIXES = JSONL_SUFFIXES + PARQUET_SUFFIXES
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def source_kind(source: str) -> str:
    """'s3', 'local' or 'hub' for a `DataConfig.source` string."""
    if source.startswith("s3://"):
        return "s3"
    path = Path(source).expanduser()
    if path.exists() or source.startswith((".", "/", "~")) or path.suffix in DATA_SUFFIXES:
        return "local"
    if _HUB_ID.match(source):
        return "hub"
    return "local"


def select_split_files(names: Sequence[str], split: str) -> list[str]:
    """From relative file names (POSIX), those that hold `split`, sorted; [] if none."""
    single = [n for n in names if PurePosixPath(n).name in {f"{split}{s}" for s in DATA_SUFFIXES}]
    if single:
        # one file per split: prefer JSON Lines over Parquet if both are there (same data, cheaper to read)
        return [sorted(single, key=lambda n: DATA_SUFFIXES.index(PurePosixPath(n).suffix))[0]]
    shards = []
    for n in names:
        p = PurePosixPath(n)
        if p.suffix not in DATA_SUFFIXES:
            continue
        if p.name.startswith(f"{split}-") or (len(p.parts) >= 2 and p.parts[-2] == split):
            shards.append(n)
    return sorted(shards)


def _parse_line(raw: bytes, path: Path, line_no: int, index: int) -> Row | RowIssue:
    """One JSONL line as a row, or the `RowIssue` that says what is wrong with it and where."""

    def issue(field: str, reason: str, message: str) -> RowIssue:
        return RowIssue(index, field, reason, f"{path.name} line {line_no}: {message}")

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return issue("<line>", "invalid_utf8", f"not UTF-8 text (byte {exc.start} of the line)")
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        return issue("<json>", "invalid_json", exc.msg)
    except RecursionError:
        return issue("<json>", "invalid_json", "JSON nested too deeply to parse")
    except ValueError as exc:  # e.g. an integer literal longer than Python's int conversion limit
        return issue("<json>", "invalid_json", str(exc))
    if not isinstance(row, dict):
        return issue("<row>", "wrong_type", "expected a JSON object")
    if "\\u" in text and (problem := _unencodable(row)):
        return issue("<json>", "invalid_text", problem)
    return row


def _unencodable(row: Row) -> str | None:
    """Why `row` cannot be written back as UTF-8 JSON, or None. Only an escape can make that so (an escape
    like \\ud800 alone is valid JSON, but no UTF-8 file, tokenizer or hash can hold the string it gives)."""
    try:
        json.dumps(row, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return "a string holds an unpaired UTF-16 surrogate escape"
    except RecursionError:
        return "JSON nested too deeply"
    return None


def read_jsonl(path: Path, start_index: int = 0) -> Iterator[tuple[int, Row | RowIssue]]:
    """Rows of a JSON Lines file; read as bytes and decoded line by line, so one line that is not UTF-8 is
    one bad row (named by file and line), not an error that ends the whole read."""
    index = start_index
    try:
        with open(path, "rb") as fh:
            for line_no, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                yield index, _parse_line(line, path, line_no, index)
                index += 1
    except OSError as exc:
        raise DataSourceError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def read_parquet(
    path: Path, start_index: int = 0, batch_size: int = 1024
) -> Iterator[tuple[int, Row | RowIssue]]:
    """Rows of a Parquet file, a batch at a time; an unreadable file raises `DataSourceError` naming it
    (and the first row index not read, when it breaks part way through)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    index = start_index
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size):
            for row in batch.to_pylist():
                yield index, row
                index += 1
    except (pa.ArrowException, OSError) as exc:
        after = f" after row {index - 1}" if index > start_index else ""
        raise DataSourceError(f"{path}: not a readable Parquet file{after}: {exc}") from exc


def read_files(paths: Sequence[Path], start_index: int = 0) -> Iterator[tuple[int, Row | RowIssue]]:
    """Rows of the files in order, indices counting on from `start_index` across files."""
    index = start_index
    for path in paths:
        reader = read_parquet if path.suffix in PARQUET_SUFFIXES else read_jsonl
        for item_index, item in reader(path, index):
            yield item_index, item
            index = item_index + 1


def local_files(source: str, split: str) -> list[Path]:
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix not in DATA_SUFFIXES:
            raise DataSourceError(
                f"{path}: unsupported file type {path.suffix!r}; use one of {DATA_SUFFIXES}"
            )
        return [path]
    if path.is_dir():
        names = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
        chosen = select_split_files(names, split)
        if not chosen:
            raise DataSourceError(
                f"{path}: no file for split {split!r} (expected {split}.jsonl, {split}.parquet or shards)"
            )
        return [path / n for n in chosen]
    raise DataSourceError(f"data source {source!r} does not exist (not a local file or directory)")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """(bucket, key or prefix) of an ``s3://`` data source (`otdistill.s3`); a bad one: DataSourceError."""
    try:
        location = parse_s3_location(uri)
    except S3UriError as exc:
        raise DataSourceError(str(exc)) from exc
    return location.bucket, location.prefix


def s3_keys(client: Any, uri: str, split: str) -> tuple[str, list[str]]:
    """(bucket, keys) holding `split` under the URI, which names one object or a prefix."""
    bucket, key = parse_s3_uri(uri)
    if PurePosixPath(key).suffix in DATA_SUFFIXES:
        return bucket, [key]
    prefix = key + "/" if key else ""
    names = [obj.key[len(prefix) :] for obj in list_objects(client, bucket, key)]
    chosen = select_split_files(names, split)
    if not chosen:
        raise DataSourceError(
            f"{uri}: no object for split {split!r} (expected {split}.jsonl, {split}.parquet or shards)"
        )
    return bucket, [prefix + n for n in chosen]


def read_s3(uri: str, split: str, endpoint_url: str | None = None) -> Iterator[tuple[int, Row | RowIssue]]:
    """Download the split's objects one at a time to a temporary directory and read each as a local file.

    One object at a time: a `limit` met in the first shard never downloads the others, and the disk holds
    one shard, not the whole split.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client(endpoint_url)
    try:
        bucket, keys = s3_keys(client, uri, split)
        with tempfile.TemporaryDirectory(prefix="otdistill-s3-") as tmp:
            index = 0
            for i, key in enumerate(keys):
                local = Path(tmp) / f"{i:05d}-{PurePosixPath(key).name}"
                log.info("downloading s3://%s/%s", bucket, key)
                client.download_file(bucket, key, str(local))
                for item_index, item in read_files([local], start_index=index):
                    yield item_index, item
                    index = item_index + 1
                local.unlink()
    except (BotoCoreError, ClientError) as exc:
        raise DataSourceError(f"cannot read {uri} from S3: {exc}") from exc


def read_hub(
    dataset_id: str, revision: str | None, split: str, subset: str | None = None
) -> Iterator[tuple[int, Row | RowIssue]]:
    """Rows of a Hugging Face hub data set at a pinned revision (checked and loaded before the first row)."""
    if not revision:
        raise DataSourceError(
            f"hub data set {dataset_id!r} needs a pinned revision (a commit sha or tag) in "
            "DataConfig.revision, so that a run can say exactly which data it used (if you meant a local "
            f"path: {Path(dataset_id).resolve()} does not exist)"
        )
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, subset, revision=revision, split=split)
    except Exception as exc:  # datasets raises several types for network/offline/not-found
        offline = [
            v for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if os.environ.get(v, "") not in ("", "0")
        ]
        hint = (
            f" ({' and '.join(offline)} set: the hub is off; copy the data to a local path or s3:// "
            "and use that)"
            if offline
            else ""
        )
        raise DataSourceError(
            f"cannot load hub data set {dataset_id!r} at revision {revision!r}, split {split!r}{hint}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return ((index, dict(row)) for index, row in enumerate(ds))


def iter_rows(
    source: str,
    *,
    split: str,
    revision: str | None = None,
    s3_endpoint_url: str | None = None,
    subset: str | None = None,
) -> Iterator[tuple[int, Row | RowIssue]]:
    """`(index, row or RowIssue)` for the split at `source` (see module doc for the layouts)."""
    if not source:
        raise DataSourceError("DataConfig.source is empty: give a local path, an s3:// URI or a hub id")
    kind = source_kind(source)
    if kind == "s3":
        return read_s3(source, split, s3_endpoint_url)
    if kind == "hub":
        return read_hub(source, revision, split, subset)
    return read_files(local_files(source, split))
