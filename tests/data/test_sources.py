"""Sources: local layouts, S3 through a real (moto) S3 server over HTTP, and the hub's refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from otdistill.data import DataConfig, DataSourceError, config_rows, load_examples
from otdistill.data.sources import iter_rows, select_split_files, source_kind
from tests.data.rows import write_jsonl


def test_source_kind() -> None:
    assert source_kind("s3://bucket/data") == "s3"
    assert source_kind("knkarthick/dialogsum") == "hub"
    assert source_kind("./data/dialogsum") == "local"
    assert source_kind("missing/train.jsonl") == "local"


def test_select_split_files() -> None:
    names = ["train.jsonl", "validation.jsonl", "validation.parquet", "README.md", "test/x.jsonl"]
    assert select_split_files(names, "validation") == ["validation.jsonl"]
    shards = ["train-00001.parquet", "train-00000.parquet", "validation-00000.parquet"]
    assert select_split_files(shards, "train") == ["train-00000.parquet", "train-00001.parquet"]
    assert select_split_files(["train/b.jsonl", "train/a.jsonl", "dev/a.jsonl"], "train") == [
        "train/a.jsonl",
        "train/b.jsonl",
    ]
    assert select_split_files(names, "nope") == []


def test_sharded_directory_indices_run_across_files(shared_data: Path, tmp_path: Path) -> None:
    with open(shared_data / "dialogsum" / "train.jsonl", encoding="utf-8") as fh:
        rows = [json.loads(next(fh)) for _ in range(6)]
    (tmp_path / "train").mkdir()
    write_jsonl(tmp_path / "train" / "part-0.jsonl", rows[:4])
    pq.write_table(pa.Table.from_pylist(rows[4:]), tmp_path / "train" / "part-1.parquet")
    items = list(iter_rows(str(tmp_path), split="train"))
    assert [i for i, _ in items] == list(range(6))
    assert [row["fname"] for _, row in items] == [r["fname"] for r in rows]  # type: ignore[index]


def test_missing_local_source_and_split_are_clear(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="does not exist"):
        load_examples(DataConfig(source=str(tmp_path / "nothing")), progress=False)
    with pytest.raises(DataSourceError, match="no file for split 'train'"):
        load_examples(DataConfig(source=str(tmp_path)), progress=False)


def test_hub_id_without_revision_is_refused() -> None:
    with pytest.raises(DataSourceError, match="needs a pinned revision"):
        load_examples(DataConfig(task="dialogsum", source="knkarthick/dialogsum"), progress=False)


def test_hub_offline_failure_message_is_clear(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: nothing to fall back on
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    cfg = DataConfig(task="dialogsum", source="knkarthick/dialogsum", revision="main", split="validation")
    with pytest.raises(DataSourceError) as err:
        load_examples(cfg, progress=False)
    message = str(err.value)
    assert "'knkarthick/dialogsum'" in message and "revision 'main'" in message
    assert "HF_HUB_OFFLINE" in message and "local path or s3://" in message


def test_config_rows_reads_every_setting_of_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation, the training-data snapshot and the serving example read a DataConfig's rows through
    `config_rows`; a hub source gets its revision and subset (the snapshot once dropped the subset). The
    hub itself cannot be reached here, so its reader is replaced by a recorder."""
    import otdistill.data.sources as sources

    seen: list[tuple[object, ...]] = []

    def read_hub(source: str, revision: str | None, split: str, subset: str | None = None) -> object:
        seen.append((source, revision, split, subset))
        return iter([(0, {"dialogue": "d", "summary": "s"})])

    monkeypatch.setattr(sources, "read_hub", read_hub)
    cfg = DataConfig(task="dialogsum", source="org/data", revision="abc123", split="train", subset="sub")
    assert list(config_rows(cfg)) == [(0, {"dialogue": "d", "summary": "s"})]
    assert seen == [("org/data", "abc123", "train", "sub")]


@pytest.mark.servers
def test_s3_round_trip_on_a_real_s3_server(
    shared_data: Path, s3_endpoint: str, s3_credentials: None, tmp_path: Path
) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket="otdistill-data")
    for task in ("dialogsum", "qed"):
        client.upload_file(
            str(shared_data / task / "validation.jsonl"), "otdistill-data", f"tasks/{task}/validation.jsonl"
        )
    with open(shared_data / "fairytaleqa" / "validation.jsonl", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "validation.parquet")
    client.upload_file(
        str(tmp_path / "validation.parquet"), "otdistill-data", "tasks/fairytaleqa/validation.parquet"
    )

    for task in ("dialogsum", "qed", "fairytaleqa"):
        local = load_examples(
            DataConfig(task=task, source=str(shared_data / task), split="validation"), progress=False
        )
        # endpoint from the config (MinIO style) ...
        cfg = DataConfig(
            task=task,
            source=f"s3://otdistill-data/tasks/{task}",
            split="validation",
            s3_endpoint_url=s3_endpoint,
        )
        remote = load_examples(cfg, progress=False)
        assert remote.examples == local.examples
        assert remote.report.content_sha256 == local.report.content_sha256
        assert remote.report.source == f"s3://otdistill-data/tasks/{task}"


@pytest.mark.servers
def test_s3_endpoint_from_environment_and_single_object(
    shared_data: Path, s3_endpoint: str, s3_credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket="env-bucket")
    client.upload_file(str(shared_data / "qed" / "train.jsonl"), "env-bucket", "qed-train.jsonl")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    split = load_examples(
        DataConfig(task="qed", source="s3://env-bucket/qed-train.jsonl", limit=30), progress=False
    )
    assert split.report.rows_read == 30 and len(split.examples) == 30
    with pytest.raises(DataSourceError, match="no object for split 'train'"):
        load_examples(DataConfig(task="qed", source="s3://env-bucket/elsewhere"), progress=False)
    with pytest.raises(DataSourceError, match="cannot read s3://no-such-bucket/x"):
        load_examples(DataConfig(task="qed", source="s3://no-such-bucket/x"), progress=False)


@pytest.mark.parametrize("task", ["dialogsum", "fairytaleqa", "qed"])
def test_hub_reader_through_the_real_datasets_library(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, task: str
) -> None:
    """`datasets.load_dataset` also reads a data-set directory: the hub reader's own code (revision check,
    row conversion, indices) runs for real, and gives the same examples and hash as the local reader."""
    from otdistill.data.sources import read_hub
    from otdistill.data.tasks import get_task

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf" / "datasets"))
    local = load_examples(
        DataConfig(task=task, source=str(shared_data / task), split="validation"), progress=False
    )
    # only the one split: `datasets` builds every split of a directory, and DialogSum's two splits have
    # different columns (summary vs summary1..3), which it refuses to put in one schema
    (tmp_path / "ds").mkdir()
    shutil.copy(shared_data / task / "validation.jsonl", tmp_path / "ds" / "validation.jsonl")
    rows = list(read_hub(str(tmp_path / "ds"), "main", "validation"))
    assert [i for i, _ in rows] == list(range(len(local.examples)))
    examples = [get_task(task).to_example(row, i) for i, row in rows]  # type: ignore[arg-type]
    assert examples == local.examples


@pytest.mark.servers
def test_s3_sharded_split_reads_in_order_across_formats(
    shared_data: Path, s3_endpoint: str, s3_credentials: None, tmp_path: Path
) -> None:
    import boto3

    with open(shared_data / "fairytaleqa" / "train.jsonl", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh][:900]
    write_jsonl(tmp_path / "train-00000.jsonl", rows[:400])
    pq.write_table(pa.Table.from_pylist(rows[400:700]), tmp_path / "train-00001.parquet")
    write_jsonl(tmp_path / "train-00002.jsonl", rows[700:])
    write_jsonl(tmp_path / "train.jsonl", rows)
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket="shards")
    for name in ("train-00002.jsonl", "train-00000.jsonl", "train-00001.parquet"):
        client.upload_file(str(tmp_path / name), "shards", f"fairytaleqa/{name}")

    whole = load_examples(
        DataConfig(task="fairytaleqa", source=str(tmp_path / "train.jsonl")), progress=False
    )
    cfg = DataConfig(task="fairytaleqa", source="s3://shards/fairytaleqa/", s3_endpoint_url=s3_endpoint)
    sharded = load_examples(cfg, progress=False)
    assert sharded.source_indices == list(range(900))
    assert sharded.examples == whole.examples
    assert sharded.report.content_sha256 == whole.report.content_sha256
    first = load_examples(DataConfig(**{**cfg.to_dict(), "limit": 10}), progress=False)
    assert first.examples == whole.examples[:10]
