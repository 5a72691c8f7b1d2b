"""The bootstrap promotion gate on constructed per-row scores whose outcome is known.

`otdistill.stats.compare_rows` is the one "is A better than B on these rows" (the gate's and the reports');
`check_gate` applies the one rule (`clears_margin`) to its interval, or to the means (method "point").
"""

from __future__ import annotations

import numpy as np
import pytest

from otdistill.evaluation.results import PredictionRecord
from otdistill.stats import (
    RowMismatchError,
    clears_margin,
    compare_rows,
    metric_column,
    point_comparison,
    row_table,
)
from otdistill.steps.gate_report import decision_markdown
from otdistill.steps.register_and_promote import RegisterResult, check_gate


def _rows(values: list[float] | np.ndarray, prefix: str = "row") -> dict[str, float]:
    return {f"{prefix}{i}": float(v) for i, v in enumerate(values)}


def _noisy_gain() -> tuple[dict[str, float], dict[str, float]]:
    """40 rows where the candidate wins on the mean (+0.05) but loses half the rows by almost as much:
    the 95% interval of the gain reaches well below 0."""
    baseline = np.full(40, 0.5)
    candidate = baseline + np.where(np.arange(40) % 2 == 0, 0.5, -0.4)
    return _rows(candidate), _rows(baseline)


def test_clear_win_above_the_margin_promotes() -> None:
    rng = np.random.default_rng(7)
    baseline = rng.uniform(0.2, 0.4, size=200)
    candidate = baseline + 0.1 + rng.uniform(-0.01, 0.01, size=200)
    gate = check_gate(
        float(candidate.mean()),
        float(baseline.mean()),
        None,
        margin=0.05,
        candidate_rows=_rows(candidate),
        baseline_rows=_rows(baseline),
    )
    test = gate.baseline_test
    assert test is not None and test.method == "bootstrap" and test.rows == 200
    assert 0.09 < test.low <= test.mean_diff <= test.high < 0.11
    assert gate.passed and gate.beats_baseline


def test_win_on_the_mean_with_the_interval_crossing_the_margin_is_not_promoted() -> None:
    candidate, baseline = _noisy_gain()
    mean_c, mean_b = np.mean(list(candidate.values())), np.mean(list(baseline.values()))
    gate = check_gate(
        float(mean_c), float(mean_b), None, margin=0.0, candidate_rows=candidate, baseline_rows=baseline
    )
    test = gate.baseline_test
    assert test is not None and test.mean_diff == pytest.approx(0.05)
    assert test.low < 0.0 < test.high
    assert not gate.beats_baseline and not gate.passed
    assert "does not beat the SFT baseline" in gate.reason and "interval over 40 rows" in gate.reason
    # the point method, as the gate was before: the mean gain above the margin promotes
    point = check_gate(float(mean_c), float(mean_b), None, margin=0.0, method="point")
    assert point.passed and point.baseline_test is not None and point.baseline_test.rows == 0


def test_champion_condition_uses_the_champion_rows() -> None:
    candidate, baseline = _rows([0.6] * 30), _rows([0.2] * 30)
    noisy_candidate, champion = _noisy_gain()
    # beats the baseline clearly; against the champion only within noise
    gate = check_gate(
        0.55,
        0.2,
        0.5,
        margin=0.0,
        champion_version="4",
        candidate_rows=noisy_candidate,
        baseline_rows=_rows([0.2] * 40),
        champion_rows=champion,
    )
    assert gate.beats_baseline and not gate.beats_champion and "does not beat champion v4" in gate.reason
    clear = check_gate(
        0.6, 0.2, 0.2, margin=0.1, champion_version="4", candidate_rows=candidate,
        baseline_rows=baseline, champion_rows=baseline,
    )  # fmt: skip
    assert clear.passed and clear.champion_test is not None and clear.champion_test.low == pytest.approx(0.4)


def test_seeds_are_averaged_per_row_before_resampling() -> None:
    seeds = [{"a": 0.2, "b": 0.4}, {"a": 0.4, "b": 0.8}, {"a": 0.3, "b": 0.6}]  # per row: a 0.3, b 0.6
    test = compare_rows(seeds, {"a": 0.3, "b": 0.6})
    assert (test.mean_diff, test.low, test.high, test.rows) == (pytest.approx(0.0), 0.0, 0.0, 2)
    assert test.a_mean == pytest.approx(0.45)
    with pytest.raises(RowMismatchError, match="seed 2 was scored on other rows"):
        compare_rows([{"a": 0.1}, {"b": 0.1}], {"a": 0.0})


def test_rows_are_matched_by_id_not_by_position() -> None:
    a = {"x": 1.0, "y": 0.0}
    b = {"y": 0.0, "x": 0.5}  # another order: by position the gains would be +1.0 and -0.5
    test = compare_rows(a, b)
    assert test.mean_diff == pytest.approx(0.25) and 0.0 <= test.low <= test.high <= 0.5


def test_mismatched_row_sets_are_a_named_error() -> None:
    with pytest.raises(RowMismatchError, match=r"candidate and SFT baseline .*\['r2'\].*\['r9'\]"):
        check_gate(
            0.5, 0.4, None, margin=0.0,
            candidate_rows={"r1": 0.5, "r2": 0.5}, baseline_rows={"r1": 0.4, "r9": 0.4},
        )  # fmt: skip
    with pytest.raises(ValueError, match="per-row scores of the SFT baseline.*gate_method=point"):
        check_gate(0.5, 0.4, None, margin=0.0, candidate_rows={"r1": 0.5})


def test_bootstrap_is_deterministic_per_seed_and_follows_the_metric_direction() -> None:
    rng = np.random.default_rng(0)
    candidate, baseline = _rows(rng.uniform(0, 1, 50)), _rows(rng.uniform(0, 1, 50))
    first, again = compare_rows(candidate, baseline, seed=3), compare_rows(candidate, baseline, seed=3)
    assert first == again
    assert compare_rows(candidate, baseline, seed=4) != first
    # lower is better (a loss): the gain is B - A, the interval mirrored
    flipped = compare_rows(candidate, baseline, seed=3, greater_is_better=False)
    assert flipped.mean_diff == pytest.approx(-first.mean_diff)
    assert flipped.low == pytest.approx(-first.high) and flipped.high == pytest.approx(-first.low)
    wide = compare_rows(candidate, baseline, seed=3, confidence=0.99)
    assert wide.low < first.low and wide.high > first.high


def test_the_one_margin_rule() -> None:
    assert not clears_margin(point_comparison(0.55, 0.5), 0.05)  # equal to the margin up to rounding
    assert clears_margin(point_comparison(0.56, 0.5), 0.05)
    assert not clears_margin(point_comparison(0.3, 0.3), 0.0)  # a tie never promotes
    assert clears_margin(point_comparison(1.0, 1.5, greater_is_better=False), 0.4)


def test_row_table_from_prediction_records() -> None:
    records = [
        PredictionRecord("q1", "p", "a", ["a"], {"f1": 1.0, "exact_match": 1.0}),
        PredictionRecord("q2", "p", "b", ["c"], {"f1": 0.0, "exact_match": 0.0}),
    ]
    table = row_table(records, where="preds.jsonl")
    assert metric_column(table, "f1") == {"q1": 1.0, "q2": 0.0}
    with pytest.raises(KeyError, match="preds: row 'q1' has no 'rougeLsum' score"):
        metric_column(table, "rougeLsum", where="preds")
    with pytest.raises(RowMismatchError, match="preds.jsonl: example id 'q1' occurs twice"):
        row_table([*records, records[0]], where="preds.jsonl")


def test_decision_tags_and_report_show_the_interval_and_rows() -> None:
    candidate, baseline = _noisy_gain()
    gate = check_gate(0.55, 0.5, None, margin=0.0, candidate_rows=candidate, baseline_rows=baseline)
    tags = gate.tags()
    test = gate.baseline_test
    assert test is not None
    assert tags["otdistill.gate.method"] == "bootstrap" and tags["otdistill.gate.baseline_rows"] == "40"
    assert float(tags["otdistill.gate.baseline_low"]) == test.low
    assert tags["otdistill.gate.confidence"] == "0.95" and tags["otdistill.gate.champion_low"] == ""
    result = RegisterResult(
        "models:/m/2",
        "2",
        False,
        "rejected",
        gate.reason,
        tags,
        metric="rougeLsum",
        champion_alias="champion",
    )
    text = decision_markdown(result)
    assert "95% paired bootstrap interval" in text
    assert f"| +0.05 [{test.low:+.6g}, {test.high:+.6g}] (40) | no |" in text
