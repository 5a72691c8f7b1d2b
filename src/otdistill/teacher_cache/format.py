"""The on-disk format of a teacher cache: safetensors shards, one JSON sidecar per shard, one manifest.

Layout (local directory or S3 prefix)::

    manifest.json              written last: its presence means the cache is complete
    build.json                 the build settings, written first; a resumed build must match them
    shard-00000.safetensors    examples [0, shard_size), concatenated along positions
    shard-00000.json           that shard's sha256, example ids and count (written after the shard)

A shard holds, for its N examples with response lengths n_0..n_{N-1} (total T positions):

    indices   (N, k)  int64    per-sequence top-k teacher vocabulary ids (MultiLevelOT ranking)
    probs     (T, k)  float32  softmax(logits / temperature) at those ids
    probs_sd  (T, k)  float32  softmax(logits / sinkhorn_temperature) at those ids
    sorted    (T, K)  float32  the K largest softmax(logits) values, descending (ULD)
    offsets   (N+1,)  int64    example i's rows are [offsets[i], offsets[i+1])

The example ids are in the shard's safetensors metadata and its sidecar.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

FORMAT = "otdistill-teacher-cache/1"
# What converting a manifest field can raise: a missing key, a wrong JSON type, an unparsable string, a
# float that is inf or nan where an int belongs.
_FIELD_ERRORS = (KeyError, TypeError, ValueError, AttributeError, OverflowError)
MANIFEST = "manifest.json"
BUILD = "build.json"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def sidecar_name(index: int) -> str:
    return f"shard-{index:05d}.json"


class TeacherCacheError(ValueError):
    """A teacher cache is corrupt, incomplete, or does not fit the loss / data it is used with."""


@dataclass(frozen=True)
class CacheSettings:
    """What a cache was built with; a loss may only use a cache whose settings fit it."""

    k: int
    top_uld: int
    temperature: float
    sinkhorn_temperature: float
    shard_size: int
    teacher: dict[str, str] = field(default_factory=dict)  # source, revision...: what built the cache
    # What the cached rows belong to (teacher_cache.identity.CacheIdentity); "" when the build was not told.
    data_sha256: str = ""  # DataReport.content_sha256 of the tokenised split
    teacher_tokenizer_sha256: str = ""
    student_tokenizer_sha256: str = ""

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **asdict(self)}, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> CacheSettings:
        return cls.from_dict(_load(text, where), where)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> CacheSettings:
        try:
            return cls(
                k=int(data["k"]),
                top_uld=int(data["top_uld"]),
                temperature=float(data["temperature"]),
                sinkhorn_temperature=float(data["sinkhorn_temperature"]),
                shard_size=int(data["shard_size"]),
                teacher={str(a): str(b) for a, b in data.get("teacher", {}).items()},
                data_sha256=str(data.get("data_sha256", "")),
                teacher_tokenizer_sha256=str(data.get("teacher_tokenizer_sha256", "")),
                student_tokenizer_sha256=str(data.get("student_tokenizer_sha256", "")),
            )
        except _FIELD_ERRORS as err:
            raise TeacherCacheError(f"{where}: bad or missing field {err}") from err

    def differences(self, other: CacheSettings) -> list[str]:
        """One "field: this value vs other value" line per field that differs (for clear refusals)."""
        mine, theirs = asdict(self), asdict(other)
        return [f"{name}: {mine[name]!r} vs {theirs[name]!r}" for name in mine if mine[name] != theirs[name]]


@dataclass(frozen=True)
class ShardInfo:
    """One shard: its file, checksum and the ids of the examples it holds, in order."""

    file: str
    sha256: str
    example_ids: list[str]
    positions: int

    @property
    def count(self) -> int:
        return len(self.example_ids)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str, *, index: int) -> ShardInfo:
        """Shard `index` as a manifest or sidecar records it. Its file must be exactly `shard_name(index)`:
        the name is joined to a local directory, and a cache holds no other shard files, so any other name
        (``../x``, an absolute path, another shard's) is refused before anything is read."""
        try:
            info = cls(
                file=str(data["file"]),
                sha256=str(data["sha256"]),
                example_ids=[str(x) for x in data["example_ids"]],
                positions=int(data["positions"]),
            )
        except _FIELD_ERRORS as err:
            raise TeacherCacheError(f"{where}: bad or missing field {err}") from err
        if info.file != shard_name(index):
            raise TeacherCacheError(
                f"{where}: shard {index} names the file {info.file!r}; the format names it "
                f"{shard_name(index)!r} and reads no other"
            )
        return info


@dataclass(frozen=True)
class Manifest:
    """The complete cache: settings, teacher vocabulary size, and every shard."""

    settings: CacheSettings
    vocab_size: int
    shards: list[ShardInfo]

    @property
    def count(self) -> int:
        return sum(s.count for s in self.shards)

    def to_json(self) -> str:
        data = {
            "format": FORMAT,
            "settings": asdict(self.settings),
            "vocab_size": self.vocab_size,
            "count": self.count,
            "shards": [asdict(s) for s in self.shards],
        }
        return json.dumps(data, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> Manifest:
        data = _load(text, where)
        try:
            settings = CacheSettings.from_dict(data["settings"], where)
            shards = [
                ShardInfo.from_dict(s, f"{where} shard {n}", index=n) for n, s in enumerate(data["shards"])
            ]
            manifest = cls(settings, int(data["vocab_size"]), shards)
            declared = int(data["count"])
        except TeacherCacheError:
            raise
        except _FIELD_ERRORS as err:
            raise TeacherCacheError(f"{where}: bad or missing field {err}") from err
        if declared != manifest.count:
            raise TeacherCacheError(
                f"{where}: declares {declared} examples but its shards hold {manifest.count}"
            )
        _check_manifest(manifest, where)
        return manifest


def json_object(text: str, where: str) -> dict[str, Any]:
    """`text` parsed as a JSON object; anything else (not JSON, truncated, nested too deeply, another JSON
    type) is a `TeacherCacheError` naming `where`."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise TeacherCacheError(f"{where} is not valid JSON (truncated or overwritten?): {err}") from err
    except RecursionError:
        raise TeacherCacheError(f"{where} is not valid JSON: nested too deeply") from None
    except ValueError as err:  # an integer literal beyond Python's conversion limit
        raise TeacherCacheError(f"{where} is not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise TeacherCacheError(f"{where}: expected a JSON object, got {type(data).__name__}")
    return data


def _load(text: str, where: str) -> dict[str, Any]:
    data = json_object(text, where)
    if data.get("format") != FORMAT:
        raise TeacherCacheError(f"{where}: not a teacher cache of format {FORMAT!r}")
    return data


def _check_manifest(manifest: Manifest, where: str) -> None:
    """What a reader relies on and a well-formed JSON manifest can still get wrong: positive sizes, finite
    temperatures, and each example id in one place only (a duplicate would make two rows one: the reader
    maps ids to rows, so the second would silently serve the first's teacher probabilities)."""
    s = manifest.settings
    sizes = {"k": s.k, "top_uld": s.top_uld, "shard_size": s.shard_size, "vocab_size": manifest.vocab_size}
    for name, value in sizes.items():
        if value < 1:
            raise TeacherCacheError(f"{where}: {name} must be >= 1, got {value}")
    for name, temperature in (
        ("temperature", s.temperature),
        ("sinkhorn_temperature", s.sinkhorn_temperature),
    ):
        if not (math.isfinite(temperature) and temperature > 0):
            raise TeacherCacheError(f"{where}: {name} must be finite and > 0, got {temperature}")
    seen: dict[str, int] = {}
    for n, shard in enumerate(manifest.shards):
        if shard.count > s.shard_size:
            raise TeacherCacheError(
                f"{where}: shard {n} ({shard.file}) holds {shard.count} examples, "
                f"shard_size is {s.shard_size}"
            )
        if shard.positions < 0:
            raise TeacherCacheError(f"{where}: shard {n} ({shard.file}) has {shard.positions} positions")
        for example_id in shard.example_ids:
            if example_id in seen:
                first = seen[example_id]
                place = "twice in that shard" if first == n else f"already in shard {first}"
                raise TeacherCacheError(
                    f"{where}: shard {n} ({shard.file}) holds example id {example_id!r} {place}"
                )
            seen[example_id] = n


def check_shard_tensors(tensors: Mapping[str, Any], manifest: Manifest, index: int, where: str) -> None:
    """Refuse shard `index` unless its tensors have the layout the module doc gives for the manifest's k,
    K (`top_uld`) and vocabulary: N examples, T positions, rows [offsets[i], offsets[i+1]) in order, and
    teacher vocabulary ids in range. A shard that passes its checksum was still written by whoever wrote
    the manifest; a wrong width would otherwise surface as a broadcast error deep in a training step, or
    as an out-of-range gather."""
    info = manifest.shards[index]
    s, vocab = manifest.settings, manifest.vocab_size
    n, t = info.count, info.positions
    k, big_k = min(s.k, vocab), min(s.top_uld, vocab)
    expected = {
        "indices": ((n, k), torch.int64),
        "probs": ((t, k), torch.float32),
        "probs_sd": ((t, k), torch.float32),
        "sorted": ((t, big_k), torch.float32),
        "offsets": ((n + 1,), torch.int64),
    }
    for name, (shape, dtype) in expected.items():
        tensor = tensors.get(name)
        if tensor is None:
            raise TeacherCacheError(f"{where}: shard {info.file} has no {name!r} tensor")
        if tuple(tensor.shape) != shape or tensor.dtype != dtype:
            raise TeacherCacheError(
                f"{where}: shard {info.file}: {name} is {tuple(tensor.shape)} {tensor.dtype}, the manifest "
                f"(k={s.k}, top_uld={s.top_uld}, vocab_size={vocab}, {n} examples, {t} positions) needs "
                f"{shape} {dtype}"
            )
    offsets, indices = tensors["offsets"], tensors["indices"]
    if int(offsets[0]) != 0 or int(offsets[-1]) != t or bool((offsets[1:] < offsets[:-1]).any()):
        raise TeacherCacheError(
            f"{where}: shard {info.file}: offsets must rise from 0 to its {t} positions, got "
            f"{offsets.tolist()[:8]}..."
        )
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= vocab):
        raise TeacherCacheError(f"{where}: shard {info.file}: teacher vocabulary ids outside [0, {vocab})")
