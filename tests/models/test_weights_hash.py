"""The weights content hash: the same tensors give the same hash whatever the file layout (one file or
shards, order in the file, metadata), any changed bit / name / dtype / shape changes it; and the largest
absolute difference between two models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from otdistill.models import ModelSourceError
from otdistill.models.weights_hash import max_abs_difference, weights_sha256

TENSORS = {
    "model.embed.weight": torch.arange(12, dtype=torch.float32).reshape(3, 4) / 7,
    "model.norm.weight": torch.ones(4, dtype=torch.bfloat16),
    "lm_head.bias": torch.tensor([1.5, -2.0, 0.25]),
}


def _save(
    directory: Path, shards: list[dict[str, torch.Tensor]], metadata: dict[str, str] | None = None
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for i, shard in enumerate(shards):
        save_file(shard, str(directory / f"model-{i:05d}.safetensors"), metadata=metadata)
    return directory


def test_the_hash_is_independent_of_the_file_layout(tmp_path: Path) -> None:
    whole = _save(tmp_path / "whole", [TENSORS], {"format": "pt"})
    names = sorted(TENSORS)
    sharded = _save(
        tmp_path / "sharded",
        [{names[2]: TENSORS[names[2]]}, {n: TENSORS[n] for n in names[:2]}],
        {"format": "pt", "written_by": "another version"},
    )
    assert weights_sha256(whole) == weights_sha256(sharded)
    assert len(weights_sha256(whole)) == 64
    (sharded / "config.json").write_text("{}")  # other files are not weights
    assert weights_sha256(whole) == weights_sha256(sharded)


@pytest.mark.parametrize(
    "change",
    [
        lambda t: {**t, "lm_head.bias": t["lm_head.bias"] + torch.tensor([0.0, 0.0, 2.0**-20])},
        lambda t: {**{k: v for k, v in t.items() if k != "lm_head.bias"}, "lm_head.b": t["lm_head.bias"]},
        lambda t: {**t, "model.norm.weight": t["model.norm.weight"].float()},  # same values, other dtype
        lambda t: {**t, "model.embed.weight": t["model.embed.weight"].reshape(4, 3)},  # same bytes, shape
    ],
    ids=["value", "name", "dtype", "shape"],
)
def test_any_change_of_a_tensor_changes_the_hash(tmp_path: Path, change) -> None:  # type: ignore[no-untyped-def]
    base = _save(tmp_path / "a", [TENSORS])
    changed = _save(tmp_path / "b", [change(TENSORS)])
    assert weights_sha256(base) != weights_sha256(changed)


def test_broken_or_missing_weights_are_named(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match="no \\*.safetensors"):
        weights_sha256(tmp_path)
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x05\x00")
    with pytest.raises(ModelSourceError, match="model.safetensors"):
        weights_sha256(tmp_path)
    both = _save(tmp_path / "twice", [TENSORS, {"lm_head.bias": TENSORS["lm_head.bias"]}])
    with pytest.raises(ModelSourceError, match="'lm_head.bias' is in both"):
        weights_sha256(both)
    whole = _save(tmp_path / "cut", [TENSORS])
    path = whole / "model-00000.safetensors"
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(ModelSourceError, match="truncated"):
        weights_sha256(whole)


def test_max_abs_difference_names_the_worst_tensor(tmp_path: Path) -> None:
    base = _save(tmp_path / "a", [TENSORS])
    assert max_abs_difference(base, base).max_abs_difference == 0.0
    moved = dict(TENSORS, **{"lm_head.bias": TENSORS["lm_head.bias"] + torch.tensor([0.0, 1e-3, 0.0])})
    moved["extra"] = torch.zeros(1)
    diff = max_abs_difference(base, _save(tmp_path / "b", [moved]))
    assert diff.worst_tensor == "lm_head.bias"
    assert diff.max_abs_difference == pytest.approx(1e-3, rel=1e-4)
    assert diff.only_in_second == ["extra"] and not diff.comparable
    assert "only in the rebuild: extra" in diff.describe()
