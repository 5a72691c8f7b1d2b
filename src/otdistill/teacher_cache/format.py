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
from dataclasses import asdict, dataclass, field
from typing import Any

FORMAT = "otdistill-teacher-cache/1"
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
        except (KeyError, TypeError, ValueError) as err:
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
        except (KeyError, TypeError, ValueError) as err:
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
        except (KeyError, TypeError, ValueError) as err:
            raise TeacherCacheError(f"{where}: bad or missing field {err}") from err
        if declared != manifest.count:
            raise TeacherCacheError(
                f"{where}: declares {declared} examples but its shards hold {manifest.count}"
            )
        return manifest


def _load(text: str, where: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise TeacherCacheError(f"{where} is not valid JSON: {err}") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise TeacherCacheError(f"{where}: not a teacher cache of format {FORMAT!r}")
    return data
