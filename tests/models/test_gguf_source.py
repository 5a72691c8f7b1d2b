"""GGUF sources on a tiny GGUF written from the tiny student: exact conversion, cache hit, lock, parts."""

from __future__ import annotations

import hashlib
import multiprocessing
import shutil
from pathlib import Path

import boto3
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from otdistill.models import ModelSourceError, ModelSpec, load_model, load_tokenizer, resolve_model
from otdistill.models.cache import COMPLETE_MARKER, read_marker
from otdistill.models.gguf_convert import convert_gguf
from tests.models.tiny_gguf import write_tiny_llama_gguf

TEXT = "#Person1#: Hello, how are you doing today?\n#Person2#: Fine, thanks. <|im_end|>"


@pytest.fixture(scope="module")
def tiny_gguf(tiny_pair: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama_gguf(tiny_pair[1], tmp_path_factory.mktemp("gguf") / "tiny-student.f32.gguf")


def test_gguf_file_converts_exactly_and_once(
    tiny_pair: tuple[Path, Path], tiny_gguf: Path, tmp_path: Path
) -> None:
    student_dir = tiny_pair[1]
    resolved = resolve_model(ModelSpec(source=str(tiny_gguf)), cache_dir=tmp_path)
    sha = hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    assert resolved.kind == "gguf" and resolved.revision == f"sha256:{sha}"
    assert resolved.gguf_file == tiny_gguf.name
    assert resolved.path.parent == tmp_path / "models"
    assert (resolved.path / "model.safetensors").is_file() and not list(resolved.path.rglob("*.gguf"))
    assert read_marker(resolved.path) is not None

    original = AutoModelForCausalLM.from_pretrained(student_dir).eval()
    original_tok = AutoTokenizer.from_pretrained(student_dir)
    converted, tok = load_model(resolved).eval(), load_tokenizer(resolved)
    assert getattr(converted.config, "quantization_config", None) is None
    assert tok(TEXT).input_ids == original_tok(TEXT).input_ids
    assert tok.chat_template == original_tok.chat_template and tok.eos_token == "<|im_end|>"
    ids = torch.tensor([original_tok(TEXT).input_ids])
    with torch.no_grad():
        assert torch.equal(converted(ids).logits, original(ids).logits)  # F32 GGUF: lossless round trip

    mtime = (resolved.path / COMPLETE_MARKER).stat().st_mtime_ns
    # A second resolve, also as "directory + gguf_file", is a cache hit on the same content.
    by_dir = ModelSpec(source=str(tiny_gguf.parent), gguf_file=tiny_gguf.name)
    again = resolve_model(by_dir, cache_dir=tmp_path)
    assert again.path == resolved.path and again.revision == resolved.revision
    assert (resolved.path / COMPLETE_MARKER).stat().st_mtime_ns == mtime


def _resolve_in_child(source: str, cache: str, log: str) -> None:
    """Resolve in a fresh process, appending a line to `log` whenever this process really converts."""
    from otdistill.models import gguf_convert

    real = gguf_convert._convert_into

    def counted(gguf_dir: Path, file_name: str, out_dir: Path) -> None:
        with open(log, "a") as fh:
            fh.write("converted\n")
        real(gguf_dir, file_name, out_dir)

    gguf_convert._convert_into = counted
    resolve_model(ModelSpec(source=source), cache_dir=cache)


def test_concurrent_resolves_convert_once(tiny_gguf: Path, tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters, as two pods or two workers would be
    log = tmp_path / "conversions.log"
    args = (str(tiny_gguf), str(tmp_path / "cache"), str(log))
    procs = [ctx.Process(target=_resolve_in_child, args=args) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
        assert p.exitcode == 0
    assert log.read_text().count("converted") == 1
    entries = [p.name for p in (tmp_path / "cache" / "models").iterdir() if p.is_dir()]
    assert len(entries) == 1 and entries[0].startswith("gguf-")  # no leftover temp dirs
    assert read_marker(tmp_path / "cache" / "models" / entries[0]) is not None


def test_gguf_parts_concatenate_and_are_verified(tiny_gguf: Path, tmp_path: Path) -> None:
    data = tiny_gguf.read_bytes()
    cut = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    parts = []
    for n in range(3):
        parts.append(tmp_path / f"tiny.gguf.part{n:02d}")
        parts[-1].write_bytes(data[cut[n] : cut[n + 1]])
    sha = hashlib.sha256(data).hexdigest()
    with pytest.raises(ModelSourceError, match="a part is corrupt"):
        convert_gguf((parts[1], parts[0], parts[2]), "tiny.gguf", sha, tmp_path / "c1", "test:parts")
    assert [p for p in (tmp_path / "c1" / "models").iterdir() if p.is_dir()] == []  # nothing half-built
    out = convert_gguf(tuple(parts), "tiny.gguf", sha, tmp_path / "c2", "test:parts")
    single = resolve_model(ModelSpec(source=str(tiny_gguf)), cache_dir=tmp_path / "c3")
    a = load_model(single)
    b = AutoModelForCausalLM.from_pretrained(out)
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    assert all(torch.equal(x, y) for x, y in pairs)


@pytest.mark.servers
def test_gguf_inside_an_s3_prefix(tiny_gguf: Path, tmp_path: Path, s3_env: str) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_env)
    s3.create_bucket(Bucket="gguf")
    s3.upload_file(str(tiny_gguf), "gguf", "tiny/model.gguf")
    resolved = resolve_model(ModelSpec(source="s3://gguf/tiny", gguf_file="model.gguf"), cache_dir=tmp_path)
    assert resolved.kind == "s3" and resolved.gguf_file == "model.gguf"
    assert resolved.revision == "sha256:" + hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    assert (resolved.path / "model.safetensors").is_file()
    with pytest.raises(ModelSourceError, match="has no GGUF file 'other.gguf'"):
        resolve_model(ModelSpec(source="s3://gguf/tiny", gguf_file="other.gguf"), cache_dir=tmp_path)


def test_gguf_copy_elsewhere_shares_the_cache_entry(tiny_gguf: Path, tmp_path: Path) -> None:
    copy = tmp_path / "renamed.gguf"
    shutil.copyfile(tiny_gguf, copy)
    a = resolve_model(ModelSpec(source=str(tiny_gguf)), cache_dir=tmp_path / "c")
    b = resolve_model(ModelSpec(source=str(copy)), cache_dir=tmp_path / "c")
    assert a.path == b.path and a.revision == b.revision  # keyed by content, not by name
