"""objective_shares: each weighted term's mean share of the objective, on logs whose answer is known."""

import pytest

from otdistill.training.shares import objective_shares


def test_shares_are_weighted_parts_over_their_sum_averaged_over_steps() -> None:
    history = [
        {"loss_ce": 1.0, "loss_had": 2.0, "loss_sd": 0.0},  # ce 1, had 1, sd 0 -> 1/2, 1/2, 0
        {"loss_ce": 3.0, "loss_had": 0.0, "loss_sd": 10.0},  # ce 3, had 0, sd 1 -> 3/4, 0, 1/4
        {"loss_ce": 1.0, "learning_rate": 0.1},  # a log without every term: not a step of the objective
    ]
    shares = objective_shares(history, {"ce": 1.0, "had": 0.5, "sd": 0.1})
    assert shares == pytest.approx({"ce": 0.625, "had": 0.25, "sd": 0.125})
    assert sum(shares.values()) == pytest.approx(1.0)


def test_no_weights_or_no_complete_step_gives_nothing() -> None:
    assert objective_shares([{"loss_ce": 1.0}], {}) == {}
    assert objective_shares([{"loss_ce": 1.0}], {"ce": 1.0, "uld": 0.15}) == {}
    assert objective_shares([], {"ce": 1.0}) == {}
