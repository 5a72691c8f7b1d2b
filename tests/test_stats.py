"""`otdistill.stats.compare_rows(..., resample_seeds=True)`: the interval over seeds and rows, on
constructed scores whose outcome is known. (The gate's comparison is tested in tests/steps/test_gate.py.)"""

from __future__ import annotations

import pytest

from otdistill.stats import RowMismatchError, compare_rows

IDS = [f"r{i}" for i in range(60)]
BASE = {r: 0.2 + 0.01 * (n % 9) for n, r in enumerate(IDS)}


def shifted(by: dict[str, float] | float) -> dict[str, float]:
    return {r: v + (by[r] if isinstance(by, dict) else by) for r, v in BASE.items()}


def test_one_seed_is_the_row_bootstrap() -> None:
    a = shifted({r: 0.05 * (n % 3) for n, r in enumerate(IDS)})
    one, rows = compare_rows([a], [BASE], resample_seeds=True), compare_rows(a, BASE)
    assert (one.mean_diff, one.low, one.high, one.rows) == (rows.mean_diff, rows.low, rows.high, rows.rows)
    assert one.method == "bootstrap-seeds" and rows.method == "bootstrap"


def test_a_gain_from_one_seed_is_not_a_gain_once_seeds_are_resampled() -> None:
    """Seed 0 is +0.3 on every row, seeds 1 and 2 are +/-0.05 (mean 0): averaged per row first, the rows
    are all about +0.1 and the row bootstrap is sure; a third of the seed draws hold no seed 0 (8 of 27),
    so the interval over seeds and rows reaches below 0."""
    swing = {r: 0.05 if n % 2 else -0.05 for n, r in enumerate(IDS)}
    a = [shifted(0.3), shifted(swing), shifted({r: -v for r, v in swing.items()})]
    b = [BASE, BASE, BASE]
    rows, seeds = compare_rows(a, b), compare_rows(a, b, resample_seeds=True)
    assert rows.mean_diff == pytest.approx(0.1) and seeds.mean_diff == pytest.approx(0.1)
    assert rows.low > 0.09
    assert seeds.low < 0 < seeds.high and seeds.high == pytest.approx(0.3, abs=0.02)


def test_a_gain_at_every_seed_stays_a_gain() -> None:
    a = [shifted({r: g + 0.02 * (n % 2) for n, r in enumerate(IDS)}) for g in (0.08, 0.1, 0.12)]
    seeds = compare_rows(a, [BASE, BASE, BASE], seed=1, resample_seeds=True)
    assert seeds.low > 0.05 and seeds.mean_diff == pytest.approx(0.11)
    lower = compare_rows(a, [BASE, BASE, BASE], seed=1, greater_is_better=False, resample_seeds=True)
    assert lower.mean_diff == pytest.approx(-0.11) and lower.high < -0.05


def test_seeds_must_pair_and_rows_must_match() -> None:
    with pytest.raises(ValueError, match="same number of paired seeds"):
        compare_rows([BASE, BASE], [BASE], resample_seeds=True)
    with pytest.raises(RowMismatchError, match="not scored on the same rows"):
        compare_rows([BASE], [{**BASE, "extra": 0.1}], names=("uld", "sft"), resample_seeds=True)
    with pytest.raises(ValueError, match="confidence"):
        compare_rows([BASE], [BASE], confidence=1.0, resample_seeds=True)
