"""Is model A better than model B on these evaluation rows? The one answer the gate and the reports share.

A difference of a few tenths of a ROUGE point on a few dozen rows is noise; a point estimate cannot say so.
`compare_rows` answers with a paired bootstrap over evaluation rows: the rows of A and B are matched by
example id (both models answered the same prompt, so their per-row difference removes the rows' own
difficulty), several seeds of one model are averaged per row first (the row, not the seed, is the unit that
is resampled), and the mean difference is resampled `resamples` times with a seeded generator, giving a
percentile interval. `clears_margin` is the only promotion rule in the codebase: the promotion gate of the
`register_and_promote` step and the registry's champion comparison (`otdistill.tracking.registry`) both ask
it, with a bootstrap comparison (interval's lower bound against the margin) or a point one (the difference
of means against the margin, the bound being the difference itself).

Only numpy, and only when a bootstrap runs: the light registration step and the sweep's aggregation import
it without torch, and the run config (`TrackingConfig.gate_method`) reads `GATE_METHODS` from here in the
light client, which has no numpy (`otdistill[client]`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

GateMethod = Literal["bootstrap", "point"]
GATE_METHODS: tuple[str, ...] = ("bootstrap", "point")

# Row scores of one model: example id -> score; or one such mapping per seed (averaged per row).
RowScores = Mapping[str, float]
SeedRowScores = RowScores | Sequence[RowScores]

# Resampled means are computed in blocks of at most this many drawn indices (memory stays ~32 MiB).
_BLOCK_ELEMENTS = 4_000_000


class RowMismatchError(ValueError):
    """The two sides (or two seeds of one side) were not scored on the same rows."""


class _Scored(Protocol):
    """A scored example (`otdistill.evaluation.PredictionRecord`): its id and its metrics' scores."""

    @property
    def id(self) -> str: ...

    @property
    def scores(self) -> Mapping[str, float]: ...


@dataclass(frozen=True)
class Comparison:
    """A minus B in the metric's better direction (positive: A is better), over `rows` matched rows.

    low / high: the `confidence` interval of the mean difference (bootstrap), or the difference itself
    (point). a_mean / b_mean: each side's mean over the matched rows (seeds averaged).
    """

    method: str
    mean_diff: float
    low: float
    high: float
    rows: int
    confidence: float
    a_mean: float
    b_mean: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def describe(self) -> str:
        """`+0.012 [+0.004, +0.020] over 300 rows` (bootstrap), or `+0.012` (point)."""
        if self.method == "point":
            return f"{self.mean_diff:+.6g}"
        return (
            f"{self.mean_diff:+.6g} [{self.low:+.6g}, {self.high:+.6g}] "
            f"({self.confidence:.0%} interval over {self.rows} rows)"
        )


def clears_margin(comparison: Comparison, margin: float) -> bool:
    """The promotion rule: A beats B when the comparison's lower bound is strictly above `margin`.

    Bootstrap: the interval's lower bound; point: the mean difference. A bound equal to the margin up to
    float rounding (0.55 - 0.5 against 0.05) does not win, so ties never promote.
    """
    return strictly_above(comparison.low, margin)


def strictly_above(value: float, margin: float) -> bool:
    """`value > margin`, where equal up to float rounding is not above: averaging seeds leaves residue
    (a difference that is 0 exactly comes out as 5.6e-17), and a tie is never a win. The gate
    (`clears_margin`) and the sweep's verdicts (`otdistill.sweep.aggregate.verdict`) decide with it."""
    return value > margin and not math.isclose(value, margin, rel_tol=1e-9, abs_tol=1e-12)


def better_by(a: Any, b: Any, *, greater_is_better: bool = True) -> Any:
    """How much better A is than B (floats or arrays): `a - b`, or `b - a` for a metric where lower is
    better; positive is better. Every comparison here, and the sweep's per-row differences, use it."""
    return a - b if greater_is_better else b - a


def point_comparison(a: float, b: float, *, greater_is_better: bool = True, rows: int = 0) -> Comparison:
    """The point comparison of two means: the difference, with no interval (`rows`: what they average)."""
    for name, value in (("A", a), ("B", b)):
        if not math.isfinite(value):
            raise ValueError(f"score of {name} must be finite, got {value}")
    diff = better_by(a, b, greater_is_better=greater_is_better)
    return Comparison("point", diff, diff, diff, rows, 1.0, float(a), float(b))


def _seeds(scores: SeedRowScores) -> list[RowScores]:
    """The per-seed row scores: one mapping is one seed."""
    return [scores] if isinstance(scores, Mapping) else list(scores)


def _per_row(scores: SeedRowScores, side: str) -> dict[str, float]:
    """One score per row id: the mapping itself, or the mean over seeds (which must share their rows)."""
    seeds = _seeds(scores)
    if not seeds:
        raise ValueError(f"{side}: no row scores (no seed given)")
    ids = set(seeds[0])
    for n, seed in enumerate(seeds[1:], start=2):
        if set(seed) != ids:
            raise RowMismatchError(
                f"{side}: seed {n} was scored on other rows than seed 1 ({_diff(ids, set(seed))})"
            )
    out = {}
    for row in ids:
        values = [float(seed[row]) for seed in seeds]
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"{side}: row {row!r} has a non-finite score {values}")
        out[row] = math.fsum(values) / len(values)
    return out


def _diff(a: set[str], b: set[str], show: int = 5) -> str:
    only_a, only_b = sorted(a - b), sorted(b - a)
    return (
        f"{len(only_a)} row(s) only in the first, e.g. {only_a[:show]}; "
        f"{len(only_b)} only in the second, e.g. {only_b[:show]}"
    )


def compare_rows(
    a: SeedRowScores,
    b: SeedRowScores,
    *,
    greater_is_better: bool = True,
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
    names: tuple[str, str] = ("A", "B"),
    resample_seeds: bool = False,
) -> Comparison:
    """Paired bootstrap of mean(A - B) over rows matched by id (seeds averaged per row first).

    a, b: ``{example id: score}``, or a list of those, one per seed. The rows of A and B must be the same
    set (`RowMismatchError` names the difference: a comparison on other rows compares other things).
    Deterministic for a given `seed`. The interval is the percentile interval of the resampled means.

    `resample_seeds`: training randomness in the interval too. `a[i]` and `b[i]` are then the two models
    trained with the same seed (in a sweep: the same data order), so each seed gives a paired per-row
    difference; a resample draws seeds with replacement as well as rows and averages the drawn seeds'
    differences on the drawn rows. Averaged first, the seeds leave an interval that says how sure the rows
    make us, not how another set of training runs would come out; this one says both. With few seeds it is
    coarse (3 seeds: 10 distinct seed draws), which is the honest state of knowledge. Method
    "bootstrap-seeds"; the mean difference is the same.
    """
    if resample_seeds and len(_seeds(a)) != len(_seeds(b)):
        raise ValueError(f"{names[0]} and {names[1]}: resample_seeds needs the same number of paired seeds")
    rows_a, rows_b = _per_row(a, names[0]), _per_row(b, names[1])  # validates each side's seeds
    if set(rows_a) != set(rows_b):
        raise RowMismatchError(
            f"{names[0]} and {names[1]} were not scored on the same rows: {_diff(set(rows_a), set(rows_b))}"
        )
    if not rows_a:
        raise ValueError(f"{names[0]} and {names[1]}: no rows to compare")
    import numpy as np  # here, not at import: the light client reads GATE_METHODS without numpy

    ids = sorted(rows_a)
    # seeds x rows: one row of seed-averaged differences, or one per paired seed
    if resample_seeds:
        va = np.array([[seed_rows[i] for i in ids] for seed_rows in _seeds(a)], dtype=np.float64)
        vb = np.array([[seed_rows[i] for i in ids] for seed_rows in _seeds(b)], dtype=np.float64)
    else:
        va = np.array([[rows_a[i] for i in ids]], dtype=np.float64)
        vb = np.array([[rows_b[i] for i in ids]], dtype=np.float64)
    diffs = better_by(va, vb, greater_is_better=greater_is_better)
    low, high = _percentile_interval(diffs, resamples, seed, confidence, over_seeds=resample_seeds)
    return Comparison(
        "bootstrap-seeds" if resample_seeds else "bootstrap",
        float(diffs.mean()),
        low,
        high,
        len(ids),
        confidence,
        float(va.mean()),
        float(vb.mean()),
    )


def _percentile_interval(
    diffs: Any, resamples: int, seed: int, confidence: float, *, over_seeds: bool
) -> tuple[float, float]:
    """The percentile interval of the bootstrap mean of `diffs` (seeds x rows): rows resampled (the same
    draw for every seed, keeping them paired), and the seeds too when `over_seeds`. One seeded generator,
    so a comparison is deterministic."""
    import numpy as np

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    k, n = diffs.shape
    rng = np.random.default_rng(seed)
    means = np.empty(resamples, dtype=np.float64)
    block = max(1, _BLOCK_ELEMENTS // (n * k))
    for start in range(0, resamples, block):
        stop = min(resamples, start + block)
        idx = rng.integers(0, n, size=(stop - start, n))
        per_seed = diffs[:, idx].mean(axis=2)  # seeds x resamples: each seed's mean on the drawn rows
        if over_seeds:
            drawn = rng.integers(0, k, size=(stop - start, k))
            means[start:stop] = per_seed[drawn, np.arange(stop - start)[:, np.newaxis]].mean(axis=1)
        else:
            means[start:stop] = per_seed[0]
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def row_table(records: Iterable[_Scored], *, where: str = "records") -> dict[str, dict[str, float]]:
    """``{example id: {metric: score}}`` from prediction records (`PredictionRecord`s or the like); an id
    that occurs twice is an error naming `where` (the file or model the records came from)."""
    out: dict[str, dict[str, float]] = {}
    for record in records:
        if record.id in out:
            raise RowMismatchError(f"{where}: example id {record.id!r} occurs twice")
        out[record.id] = {str(k): float(v) for k, v in record.scores.items()}
    return out


def metric_column(
    table: Mapping[str, Mapping[str, float]], metric: str, *, where: str = "rows"
) -> dict[str, float]:
    """One metric of a `row_table`: ``{example id: score}``, what `compare_rows` takes; a row without the
    metric is an error naming `where` and the metrics it has."""
    out = {}
    for row, scores in table.items():
        if metric not in scores:
            raise KeyError(
                f"{where}: row {row!r} has no {metric!r} score (it has: {', '.join(sorted(scores))})"
            )
        out[row] = float(scores[metric])
    return out
