"""Constructed sweep row records (what `otdistill.sweep.steps.register_student` writes and the aggregation
reads), for tests whose outcome must be known: per-example scores chosen by the test, no model run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def row_record(
    variant: str, seed: int, scores: Mapping[str, float], metric: str = "f1", *, sft: bool | None = None
) -> dict[str, Any]:
    """One row (`<variant>-s<seed>`) scored `scores` (example id -> score) on the validation split,
    registered as `models:/m-<variant>/<seed + 1>`; `sft` defaults to the variant being named "sft"."""
    row = f"{variant}-s{seed}"
    split = {
        "models": {row: {metric: sum(scores.values()) / len(scores)}},
        "row_scores": {row: {i: {metric: v} for i, v in scores.items()}},
    }
    return {
        "row": row,
        "variant": variant,
        "seed": seed,
        "sft": variant == "sft" if sft is None else sft,
        "splits": {"validation": split},
        "registered": {"uri": f"models:/m-{variant}/{seed + 1}"},
    }
