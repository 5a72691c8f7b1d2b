"""Fuzzing the three readers of outside input: data rows, the teacher-cache manifest, the run config.

With hypothesis rather than atheris: atheris needs a libFuzzer-enabled clang to build, which this project's
machines and CI image do not have; hypothesis is pure Python and shrinks what it finds to a small input.
Each target gets a fixed budget (`max_examples`, no deadline: the machine may be loaded) that runs in a few
seconds in `make test`, and no example database, so every run is the same kind of search and writes
nothing into the checkout. The property: whatever the bytes, only the project's named errors come out
(`DataValidationError` / a counted row issue, `DataSourceError`, `TeacherCacheError`, `ConfigError`).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otdistill.config import ConfigError, load_config
from otdistill.data import DataConfig, DataSourceError, DataValidationError, load_examples
from otdistill.teacher_cache import TeacherCache, TeacherCacheError
from otdistill.teacher_cache.format import CacheSettings, Manifest, ShardInfo, shard_name

ROOT = Path(__file__).resolve().parents[2]
# OTDISTILL_FUZZ_EXAMPLES raises the budget for a longer search by hand; `make test` runs the default.
BUDGET = settings(
    max_examples=int(os.environ.get("OTDISTILL_FUZZ_EXAMPLES", "150")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Any JSON value: what a line, a manifest field or a config value may hold.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def mutated(draw: st.DrawFn, base: Any, depth: int = 0) -> Any:
    """`base` with one value somewhere replaced by any JSON value, or one key dropped: well-formed enough
    to get past the first checks, wrong somewhere deeper."""
    if isinstance(base, dict) and base and depth < 4:
        key = draw(st.sampled_from(sorted(base)))
        action = draw(st.sampled_from(["replace", "descend", "drop"]))
        out = dict(base)
        if action == "drop":
            del out[key]
        elif action == "descend":
            out[key] = draw(mutated(base[key], depth + 1))
        else:
            out[key] = draw(json_values)
        return out
    if isinstance(base, list) and base and depth < 4:
        index = draw(st.integers(0, len(base) - 1))
        out_list = list(base)
        out_list[index] = draw(mutated(base[index], depth + 1))
        return out_list
    return draw(json_values)


# -- data rows -------------------------------------------------------------------------------------------

ROW = {"id": "r0", "dialogue": "#Person1#: hi", "summary": "a greeting"}
lines = st.one_of(
    st.binary(max_size=80),  # anything at all, invalid UTF-8 included
    st.builds(lambda v: json.dumps(v, allow_nan=True), json_values),
    mutated(ROW).map(lambda v: json.dumps(v, allow_nan=True)),
    st.sampled_from(['{"id": "x", "dialogue": "\\udc80", "summary": "s"}', "[" * 5000, "{" * 5000 + "}"]),
)


@BUDGET
@given(rows=st.lists(lines, min_size=1, max_size=6), parquet=st.binary(max_size=64))
def test_data_rows_give_only_named_errors(rows: list[str | bytes], parquet: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.jsonl"
        path.write_bytes(
            b"\n".join(r if isinstance(r, bytes) else r.encode("utf-8", "surrogatepass") for r in rows)
        )
        config = DataConfig(task="dialogsum", source=str(path), on_error="skip")
        loaded = load_examples(config, progress=False)  # skip: nothing may escape, every bad row counted
        assert loaded.report.rows_kept + loaded.report.rows_skipped == loaded.report.rows_read
        try:
            load_examples(DataConfig(task="dialogsum", source=str(path), on_error="fail"), progress=False)
        except DataValidationError as err:
            assert "train.jsonl line " in str(err) or err.issue.field in str(err)
        bad = Path(tmp) / "p" / "train.parquet"
        bad.parent.mkdir()
        bad.write_bytes(parquet)
        try:
            load_examples(
                DataConfig(task="dialogsum", source=str(bad.parent), on_error="skip"), progress=False
            )
        except DataSourceError as err:
            assert str(bad) in str(err)


# -- teacher-cache manifest ------------------------------------------------------------------------------

MANIFEST = json.loads(
    Manifest(
        CacheSettings(k=4, top_uld=4, temperature=1.0, sinkhorn_temperature=2.0, shard_size=2),
        vocab_size=32,
        shards=[
            ShardInfo(shard_name(0), "0" * 64, ["a", "b"], 5),
            ShardInfo(shard_name(1), "1" * 64, ["c"], 3),
        ],
    ).to_json()
)
manifests = st.one_of(
    mutated(MANIFEST).map(lambda v: json.dumps(v, allow_nan=True).encode("utf-8", "surrogatepass")),
    st.binary(max_size=120),
    st.builds(lambda v: json.dumps(v, allow_nan=True).encode("utf-8", "surrogatepass"), json_values),
)


@BUDGET
@given(text=manifests)
def test_teacher_cache_manifests_give_only_named_errors(text: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "manifest.json").write_bytes(text)
        try:
            TeacherCache(tmp)  # the shards are absent: a manifest that parses ends in "shard ... missing"
        except TeacherCacheError as err:
            assert "manifest.json" in str(err) or "shard" in str(err)
        else:
            raise AssertionError("a cache without shard files opened")


# -- run config ------------------------------------------------------------------------------------------

TINY = yaml.safe_load((ROOT / "configs" / "tiny.yaml").read_text(encoding="utf-8"))
configs = st.one_of(
    mutated(TINY).map(lambda v: yaml.safe_dump(v).encode("utf-8", "surrogatepass")),
    st.binary(max_size=120),
    st.text(max_size=120).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


@BUDGET
@given(text=configs)
def test_config_files_give_only_config_errors(text: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.yaml"
        path.write_bytes(text)
        try:
            load_config(path)
        except ConfigError as err:
            assert str(path) in str(err)
