"""How much of the training objective each weighted term is: the question "does SD matter at the paper's
weights?" answered from what training logged, without re-running anything.

A training log holds each term's unweighted mean (`loss_ce`, `loss_had`, ...; `otdistill.training.trainer`)
and the training result records each term's weight (`DistillationObjective.weights`). A term's share at a
logged step is ``w_t * loss_t / sum_u w_u * loss_u``; the shares reported are their mean over the logged
steps. Kept free of torch, so that reports and the sweep's aggregation can use it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping


def objective_shares(
    history: Iterable[Mapping[str, float]], weights: Mapping[str, float]
) -> dict[str, float]:
    """Term -> its mean share of the objective over the logged steps of `history` (entries holding every
    weighted term's `loss_<term>`); {} when no step logged them all (or no weights were recorded)."""
    per_step: list[dict[str, float]] = []
    for entry in history:
        if not weights or any(f"loss_{t}" not in entry for t in weights):
            continue
        parts = {t: w * float(entry[f"loss_{t}"]) for t, w in weights.items()}
        total = math.fsum(parts.values())
        if total > 0:
            per_step.append({t: v / total for t, v in parts.items()})
    if not per_step:
        return {}
    return {t: statistics.fmean(step[t] for step in per_step) for t in weights}
