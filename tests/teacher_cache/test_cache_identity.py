"""A cache is tied to its run: data hash, both tokenizers, k and temperatures; anything else is refused.

On the tiny pair and real DialogSum rows. The refusals matter most where nothing else would notice: a cache
built from a subset of the run's rows, or with a tokenizer that differs only in a special token, has the
right example ids and response lengths, so `for_batch` would serve it without complaint.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest

from otdistill.data import DataConfig, load_paired
from otdistill.models import ModelSpec, resolve_model
from otdistill.teacher_cache import (
    BuildResult,
    CacheIdentity,
    TeacherCache,
    TeacherCacheError,
    build_teacher_cache,
    cache_teacher_for_run,
    tokenizer_sha256,
)
from otdistill.training import TrainConfig, distill_student
from tests.teacher_cache.conftest import SHARED_DATA, TinySetup

K, TEMPERATURES = 8, (1.0, 2.0)


def _identity(setup: TinySetup) -> CacheIdentity:
    return CacheIdentity.of(setup.data_sha256, setup.teacher_tokenizer, setup.student_tokenizer)


def _build(setup: TinySetup, out: Path, identity: CacheIdentity | None, **kw: Any) -> BuildResult:
    settings: dict[str, Any] = {"k": K, "K_uld": 8, "shard_size": 6, "temperatures": TEMPERATURES, **kw}
    return build_teacher_cache(
        setup.teacher, setup.batches(4), out, identity=identity, progress=False, **settings
    )


def _with_extra_special_token(tokenizer: Any) -> Any:
    other = copy.deepcopy(tokenizer)
    added = other.add_special_tokens({"additional_special_tokens": ["<|otdistill_extra|>"]})
    assert added == 1
    return other


@pytest.fixture(scope="module")
def built(tiny_setup: TinySetup, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("identity") / "cache"
    _build(tiny_setup, out, _identity(tiny_setup))
    return out


def test_tokenizer_digest_is_stable_and_sees_one_special_token(tiny_setup: TinySetup) -> None:
    t_tok, s_tok = tiny_setup.teacher_tokenizer, tiny_setup.student_tokenizer
    digest = tokenizer_sha256(t_tok)
    assert len(digest) == 64 and digest == tokenizer_sha256(copy.deepcopy(t_tok))
    # Truncating/padding calls change the backend's state; they must not change the identity.
    t_tok("a b c " * 50, truncation=True, max_length=8, padding="max_length")
    assert tokenizer_sha256(t_tok) == digest
    assert tokenizer_sha256(_with_extra_special_token(t_tok)) != digest
    assert tokenizer_sha256(s_tok) != digest
    other_template = copy.deepcopy(s_tok)
    other_template.chat_template = "{{ messages[0]['content'] }}"
    assert tokenizer_sha256(other_template) != tokenizer_sha256(s_tok)


def test_manifest_records_the_identity(tiny_setup: TinySetup, built: Path) -> None:
    cache = TeacherCache(built)
    assert cache.identity == _identity(tiny_setup)
    assert cache.identity.data_sha256 == tiny_setup.data_sha256 and len(tiny_setup.data_sha256) == 64


def test_the_matching_cache_is_accepted(tiny_setup: TinySetup, built: Path) -> None:
    cache = TeacherCache(built)
    cache.check_matches(k=K, temperatures=TEMPERATURES, identity=_identity(tiny_setup))
    for batch in tiny_setup.batches(4):
        cache.for_batch(batch)


def test_other_data_hash_is_refused(tiny_setup: TinySetup, built: Path) -> None:
    """The run's split lacks one row of the cache's: ids and lengths still fit, only the hash tells."""
    fewer = dataclasses.replace(tiny_setup.data_config, limit=10)
    split = load_paired(fewer, tiny_setup.teacher_tokenizer, tiny_setup.student_tokenizer, progress=False)
    run = dataclasses.replace(_identity(tiny_setup), data_sha256=split.report.content_sha256)
    cache = TeacherCache(built)
    cache.for_batch(tiny_setup.collator(split.features[:4]))  # what the length checks alone let through
    with pytest.raises(TeacherCacheError) as err:
        cache.check_matches(k=K, temperatures=TEMPERATURES, identity=run)
    message = str(err.value)
    assert "was not built for this run" in message and "training data content hash" in message
    assert f"cache {tiny_setup.data_sha256}, run {split.report.content_sha256}" in message
    assert "tokenizer" not in message.split("Rebuild")[0]  # only what differs is named


@pytest.mark.parametrize("side", ["teacher", "student"])
def test_other_tokenizer_is_refused(tiny_setup: TinySetup, built: Path, side: str) -> None:
    t_tok, s_tok = tiny_setup.teacher_tokenizer, tiny_setup.student_tokenizer
    if side == "teacher":
        t_tok = _with_extra_special_token(t_tok)
    else:
        s_tok = _with_extra_special_token(s_tok)
    run = CacheIdentity.of(tiny_setup.data_sha256, t_tok, s_tok)
    cached = getattr(_identity(tiny_setup), f"{side}_tokenizer_sha256")
    wanted = getattr(run, f"{side}_tokenizer_sha256")
    with pytest.raises(TeacherCacheError) as err:
        TeacherCache(built).check_matches(k=K, temperatures=TEMPERATURES, identity=run)
    assert f"{side} tokenizer ({side}_tokenizer_sha256): cache {cached}, run {wanted}" in str(err.value)


def test_other_k_or_temperatures_are_refused_all_named(tiny_setup: TinySetup, built: Path) -> None:
    cache = TeacherCache(built)
    with pytest.raises(TeacherCacheError, match=r"k \(top-k stored\): cache 8, run 16"):
        cache.check_matches(k=16, temperatures=TEMPERATURES, identity=_identity(tiny_setup))
    with pytest.raises(TeacherCacheError, match=r"k \(top-k stored\): cache 8, run 4"):
        cache.check_matches(k=4)  # a smaller k belongs to another configuration too
    with pytest.raises(TeacherCacheError) as err:
        cache.check_matches(
            k=16,
            temperatures=(1.0, 3.0),
            identity=CacheIdentity.of("0" * 64, tiny_setup.teacher_tokenizer, tiny_setup.student_tokenizer),
        )
    message = str(err.value)
    assert "cache 8, run 16" in message
    assert "(temperature, sinkhorn_temperature): cache (1.0, 2.0), run (1.0, 3.0)" in message
    assert f"cache {tiny_setup.data_sha256}, run {'0' * 64}" in message


def test_corrupted_cache_is_refused(tiny_setup: TinySetup, tmp_path: Path) -> None:
    _build(tiny_setup, tmp_path, _identity(tiny_setup))
    shard = tmp_path / "shard-00000.safetensors"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, in the probabilities
    shard.write_bytes(bytes(data))
    with pytest.raises(TeacherCacheError, match=r"shard shard-00000\.safetensors is corrupt \(sha256 "):
        TeacherCache(tmp_path)
    manifest = tmp_path / "manifest.json"
    manifest.write_text(manifest.read_text()[:-20])
    with pytest.raises(TeacherCacheError, match="manifest.json is not valid JSON"):
        TeacherCache(tmp_path)


def test_resumed_build_with_another_identity_is_refused(tiny_setup: TinySetup, tmp_path: Path) -> None:
    _build(tiny_setup, tmp_path, _identity(tiny_setup))
    other = dataclasses.replace(_identity(tiny_setup), data_sha256="f" * 64)
    with pytest.raises(TeacherCacheError, match=rf"data_sha256: '{tiny_setup.data_sha256}' vs '{'f' * 64}'"):
        _build(tiny_setup, tmp_path, other)


def test_cache_without_identity_is_accepted_with_a_warning(
    tiny_setup: TinySetup, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A bare library build records no identity; it cannot be checked, and says so."""
    _build(tiny_setup, tmp_path, None)
    cache = TeacherCache(tmp_path)
    assert cache.identity == CacheIdentity()
    with caplog.at_level(logging.WARNING, logger="otdistill.teacher_cache.reader"):
        cache.check_matches(k=K, temperatures=TEMPERATURES, identity=_identity(tiny_setup))
    assert "cannot be checked against this run's data and tokenizers" in caplog.text


def test_training_checks_the_cache_before_its_first_step(
    tiny_pair: tuple[Path, Path], tmp_path: Path
) -> None:
    """The real call sites: the cache step records the identity, distill_student's cache path checks it."""
    teacher, student = ModelSpec(source=str(tiny_pair[0])), ModelSpec(source=str(tiny_pair[1]))
    data = DataConfig(
        task="dialogsum", source=str(SHARED_DATA / "dialogsum"), split="validation", limit=6, max_length=192
    )
    models = str(tmp_path / "models")
    result = cache_teacher_for_run(
        teacher, student, data, tmp_path / "cache", k=50, batch_size=3, device="cpu", cache_dir=models,
        progress=False,
    )  # fmt: skip
    assert result.manifest.settings.data_sha256 and result.manifest.settings.student_tokenizer_sha256

    def config(name: str, **kw: Any) -> TrainConfig:
        values: dict[str, Any] = {
            "output_dir": str(tmp_path / name),
            "max_steps": 1,
            "per_device_batch_size": 2,
            "save_steps": 10,
            "progress_bar": False,
            "resume": False,
            "teacher_source": "cache",
            "teacher_cache_uri": str(tmp_path / "cache"),
            **kw,
        }
        return TrainConfig(**values)

    t_res = resolve_model(teacher, cache_dir=models)
    s_res = resolve_model(student, cache_dir=models)
    trained = distill_student(config("ok"), s_res, t_res, data)
    assert trained.global_step == 1 and trained.record["teacher_source"] == "cache"

    with pytest.raises(TeacherCacheError, match=r"training data content hash \(data_sha256\): cache "):
        distill_student(config("fewer"), s_res, t_res, dataclasses.replace(data, limit=5))
    with pytest.raises(TeacherCacheError, match=r"k \(top-k stored\): cache 50, run 20"):
        distill_student(config("k20", top_k=20), s_res, t_res, data)
