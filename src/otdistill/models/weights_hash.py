"""A model's identity by content: one sha256 over its safetensors tensors; the distance between two models.

Two students are the same model when their tensors are the same, whatever the files look like: one
`model.safetensors` or shards, tensors in any order inside a file, any `__metadata__` (transformers writes
its version and format there). `weights_sha256` therefore reads the safetensors headers itself and hashes,
for each tensor in sorted name order, its name, dtype, shape and raw little-endian bytes, and nothing else.
Registration records it on every model version (`WEIGHTS_SHA256_TAG`); `otdistill reproduce` compares a
rebuild's with the original's, and when they differ reports `max_abs_difference` instead.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otdistill.models.spec import ModelSourceError

#: The model-version tag (and run tag) holding `weights_sha256` of the registered student.
WEIGHTS_SHA256_TAG = "otdistill.weights_sha256"
HASH_FORMAT = b"otdistill-weights-v1\n"
_CHUNK = 1 << 22
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


@dataclass(frozen=True)
class _Tensor:
    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset in `file`
    end: int


def _header(path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise ModelSourceError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
        (size,) = struct.unpack("<Q", raw)
        if size > _MAX_HEADER:
            raise ModelSourceError(f"{path}: safetensors header of {size} bytes is over the format's limit")
        try:
            header = json.loads(fh.read(size).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelSourceError(f"{path}: the safetensors header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ModelSourceError(f"{path}: the safetensors header is not a JSON object")
    header["__data_start__"] = 8 + size
    return header


def _tensors(model_dir: Path) -> dict[str, _Tensor]:
    """Every tensor of every `*.safetensors` file of `model_dir`, by name; a name in two files is an error."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise ModelSourceError(f"no *.safetensors weights in {model_dir}")
    out: dict[str, _Tensor] = {}
    for path in files:
        header = _header(path)
        data_start = int(header.pop("__data_start__"))
        header.pop("__metadata__", None)
        for name, entry in header.items():
            if name in out:
                raise ModelSourceError(f"tensor {name!r} is in both {out[name].file.name} and {path.name}")
            try:
                begin, end = (int(x) for x in entry["data_offsets"])
                dtype, shape = str(entry["dtype"]), tuple(int(d) for d in entry["shape"])
            except (KeyError, TypeError, ValueError):
                raise ModelSourceError(f"{path}: tensor {name!r} has a malformed header entry") from None
            out[name] = _Tensor(path, dtype, shape, data_start + begin, data_start + end)
    return out


def _chunks(tensor: _Tensor) -> Iterator[bytes]:
    with tensor.file.open("rb") as fh:
        fh.seek(tensor.start)
        left = tensor.end - tensor.start
        while left > 0:
            chunk = fh.read(min(_CHUNK, left))
            if not chunk:
                raise ModelSourceError(f"{tensor.file}: truncated (a tensor ends past the end of the file)")
            left -= len(chunk)
            yield chunk


def weights_sha256(model_dir: str | Path) -> str:
    """sha256 hex of the model's tensors (sorted names; each: name, dtype, shape, raw bytes).

    Independent of file layout (sharding, order within a file, metadata); changed by any bit of any
    tensor, a renamed tensor, a new dtype or shape.
    """
    digest = hashlib.sha256(HASH_FORMAT)
    for name, tensor in sorted(_tensors(Path(model_dir)).items()):
        meta = json.dumps([name, tensor.dtype, list(tensor.shape), tensor.end - tensor.start])
        digest.update(meta.encode("utf-8") + b"\n")
        for chunk in _chunks(tensor):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class WeightsDiff:
    """How far apart two models are: the largest absolute difference over the tensors both have with the
    same shape (in float64), the tensor it is in, and the tensors that cannot be compared."""

    max_abs_difference: float
    worst_tensor: str
    compared: int
    only_in_first: list[str] = field(default_factory=list)
    only_in_second: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)

    @property
    def comparable(self) -> bool:
        return not (self.only_in_first or self.only_in_second or self.shape_mismatch)

    def describe(self) -> str:
        where = self.worst_tensor or "-"
        text = f"largest absolute weight difference {self.max_abs_difference:.3g} (in {where})"
        for label, names in (
            ("only in the original", self.only_in_first),
            ("only in the rebuild", self.only_in_second),
            ("shapes differ", self.shape_mismatch),
        ):
            if names:
                text += f"; {label}: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
        return text


def max_abs_difference(first_dir: str | Path, second_dir: str | Path) -> WeightsDiff:
    """Compare two models tensor by tensor (loaded one at a time, so memory stays at two tensors)."""
    from safetensors import safe_open

    first, second = _tensors(Path(first_dir)), _tensors(Path(second_dir))
    worst, worst_name, compared, mismatched = 0.0, "", 0, []
    for name in sorted(set(first) & set(second)):
        a, b = first[name], second[name]
        if a.shape != b.shape:
            mismatched.append(name)
            continue
        with safe_open(str(a.file), framework="pt") as fa, safe_open(str(b.file), framework="pt") as fb:
            ta, tb = fa.get_tensor(name).double(), fb.get_tensor(name).double()
        diff = float((ta - tb).abs().max()) if ta.numel() else 0.0
        diff = math.inf if math.isnan(diff) else diff  # a NaN on one side only is as far as it gets
        compared += 1
        if diff > worst or not worst_name:
            worst, worst_name = diff, name
    return WeightsDiff(
        max_abs_difference=worst,
        worst_tensor=worst_name,
        compared=compared,
        only_in_first=sorted(set(first) - set(second)),
        only_in_second=sorted(set(second) - set(first)),
        shape_mismatch=mismatched,
    )
