"""The model cache's building blocks: hash memo, atomic publish under a lock, part assembly check."""

from __future__ import annotations

import hashlib
import multiprocessing
import time
from pathlib import Path

import pytest

from otdistill.models.cache import publish_once, read_marker, sha256_files_memo
from otdistill.models.gguf_convert import _assemble
from otdistill.models.spec import ModelSourceError


def _slow_build(target: str, counter: str) -> None:
    def build(tmp: Path) -> None:
        with open(counter, "a") as fh:
            fh.write("built\n")
        time.sleep(0.5)
        (tmp / "weights.safetensors").write_bytes(b"x" * 10)

    publish_once(Path(target), build, {"source": "test"})


def test_two_processes_build_an_entry_once(tmp_path: Path) -> None:
    target, counter = tmp_path / "models" / "entry", tmp_path / "counter"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_slow_build, args=(str(target), str(counter))) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert counter.read_text().count("built") == 1
    assert read_marker(target) == {"source": "test"}
    assert (target / "weights.safetensors").read_bytes() == b"x" * 10
    assert [p.name for p in target.parent.iterdir() if p.name.startswith(".entry.")] == []


def test_failed_build_leaves_nothing_and_can_be_retried(tmp_path: Path) -> None:
    target = tmp_path / "entry"

    def broken(tmp: Path) -> None:
        (tmp / "half.safetensors").write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        publish_once(target, broken, {})
    assert not target.exists()
    assert [p for p in tmp_path.iterdir() if p.is_dir()] == []
    publish_once(target, lambda tmp: (tmp / "ok").write_text("ok"), {"n": "2"})
    assert (target / "ok").read_text() == "ok"


def test_hash_memo_recomputes_when_file_changes(tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    assert sha256_files_memo([f], tmp_path / "c") == hashlib.sha256(b"abc").hexdigest()
    f.write_bytes(b"abcd")  # size changes, so the memo key does
    assert sha256_files_memo([f], tmp_path / "c") == hashlib.sha256(b"abcd").hexdigest()


def test_assembling_parts_verifies_the_whole_checksum(tmp_path: Path) -> None:
    parts = []
    for n, chunk in enumerate([b"GGUF", b"part-two", b"end"]):
        parts.append(tmp_path / f"m.gguf.part{n:02d}")
        parts[-1].write_bytes(chunk)
    good = hashlib.sha256(b"GGUFpart-twoend").hexdigest()
    _assemble(tuple(parts), tmp_path / "m.gguf", good)
    assert (tmp_path / "m.gguf").read_bytes() == b"GGUFpart-twoend"
    with pytest.raises(ModelSourceError, match="from 3 parts has sha256"):
        _assemble(tuple(reversed(parts)), tmp_path / "m2.gguf", good)
