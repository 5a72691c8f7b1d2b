"""A manifest that parses but cannot be right is refused by name: an example id in two places (the reader
would serve one row's teacher probabilities for both), shard tensors whose widths disagree with the
manifest's k / K; and a torn shard sidecar met on resume is rebuilt, not a raw JSON error."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from otdistill.data import PairedBatch
from otdistill.teacher_cache import BuildResult, TeacherCache, TeacherCacheError, build_teacher_cache
from tests.teacher_cache.conftest import TinySetup


class PreemptedError(RuntimeError):
    pass


def _build(setup: TinySetup, out: Path, batches: Any = None) -> BuildResult:
    """11 examples in shards of 4 (shard-00000..00002), k = K = 8."""
    return build_teacher_cache(
        setup.teacher,
        setup.batches(2) if batches is None else batches,
        out,
        k=8,
        K_uld=8,
        shard_size=4,
        progress=False,
    )


def _edit_manifest(root: Path, change: Any) -> None:
    path = root / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")


@pytest.fixture(scope="module")
def built(tiny_setup: TinySetup, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cache")
    _build(tiny_setup, root)
    return root


def _copy(built: Path, tmp_path: Path) -> Path:
    out = tmp_path / "cache"
    out.mkdir()
    for path in built.iterdir():
        (out / path.name).write_bytes(path.read_bytes())
    return out


def test_an_example_id_in_two_shards_is_refused(built: Path, tmp_path: Path) -> None:
    root = _copy(built, tmp_path)
    TeacherCache(root)  # intact: opens
    first = json.loads((root / "manifest.json").read_text(encoding="utf-8"))["shards"][0]["example_ids"][0]

    def duplicate(data: dict[str, Any]) -> None:
        data["shards"][2]["example_ids"][-1] = first  # same count, the ids no longer unique

    _edit_manifest(root, duplicate)
    with pytest.raises(TeacherCacheError, match=rf"manifest.json: shard 2 .*{first!r} already in shard 0"):
        TeacherCache(root)


def test_an_example_id_twice_in_one_shard_is_refused(built: Path, tmp_path: Path) -> None:
    root = _copy(built, tmp_path)

    def duplicate(data: dict[str, Any]) -> None:
        ids = data["shards"][1]["example_ids"]
        ids[1] = ids[0]

    _edit_manifest(root, duplicate)
    with pytest.raises(
        TeacherCacheError, match=r"shard 1 \(shard-00001.safetensors\) .* twice in that shard"
    ):
        TeacherCache(root)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("k", 6, r"indices is \(4, 8\) torch.int64, the manifest \(k=6,"),
        ("top_uld", 5, r"sorted is \(\d+, 8\) torch.float32, the manifest \(k=8, top_uld=5,"),
    ],
)
def test_shard_widths_that_disagree_with_k_or_top_uld_are_refused(
    field: str, value: int, message: str, built: Path, tmp_path: Path
) -> None:
    root = _copy(built, tmp_path)
    _edit_manifest(root, lambda data: data["settings"].__setitem__(field, value))
    cache = TeacherCache(root)  # the checksums still verify: only the declared shapes are wrong
    some_id = cache.manifest.shards[0].example_ids[0]
    with pytest.raises(TeacherCacheError, match=rf"shard shard-00000.safetensors: .*{message}"):
        cache.example(some_id)


def test_settings_that_cannot_hold_are_refused(built: Path, tmp_path: Path) -> None:
    root = _copy(built, tmp_path)
    _edit_manifest(root, lambda data: data["settings"].__setitem__("k", 0))
    with pytest.raises(TeacherCacheError, match="manifest.json: k must be >= 1, got 0"):
        TeacherCache(root)
    _edit_manifest(root, lambda data: data["settings"].__setitem__("k", 1e400))  # JSON Infinity
    with pytest.raises(TeacherCacheError, match="manifest.json: bad or missing field"):
        TeacherCache(root)


def test_a_manifest_that_is_not_utf8_is_named(built: Path, tmp_path: Path) -> None:
    root = _copy(built, tmp_path)
    (root / "manifest.json").write_bytes(b'{"format": "\xff"}')
    with pytest.raises(TeacherCacheError, match=r"manifest.json is not UTF-8 text \(byte 12\)"):
        TeacherCache(root)


def _crashing(batches: list[PairedBatch], after: int) -> Iterator[PairedBatch]:
    for n, batch in enumerate(batches):
        if n == after:
            raise PreemptedError("preempted")
        yield batch


def test_a_torn_sidecar_on_resume_is_named_and_its_shard_rebuilt(
    tiny_setup: TinySetup, built: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "resumed"
    with pytest.raises(PreemptedError):
        _build(tiny_setup, out, _crashing(tiny_setup.batches(2), 5))  # shards 0 and 1 finished
    sidecar = out / "shard-00001.json"
    text = sidecar.read_text(encoding="utf-8")
    sidecar.write_text(text[: len(text) // 2], encoding="utf-8")  # a write the disk did not keep whole
    with caplog.at_level(logging.WARNING, logger="otdistill.teacher_cache.builder"):
        result = _build(tiny_setup, out)
    assert (result.shards_skipped, result.shards_written) == (1, 2)
    assert (
        f"{out}/shard-00001.json is not valid JSON" in caplog.text
        and "shard 1 will be rebuilt" in caplog.text
    )
    reference = json.loads((built / "manifest.json").read_text(encoding="utf-8"))
    assert [s.sha256 for s in result.manifest.shards] == [s["sha256"] for s in reference["shards"]]
    TeacherCache(out)
