"""ForwardKLLoss: value against the reference, refusal across vocabularies."""

from __future__ import annotations

import pytest

from otdistill.losses import ForwardKLLoss
from tests.losses import reference
from tests.losses.random_inputs import random_pair


def test_matches_float64_reference() -> None:
    s, t, sm, tm = random_pair(30, [5, 2, 0], [4, 6, 3], 5, 6, 50, 50)
    out = ForwardKLLoss(weight=0.5, temperature=2.0)(s, t, sm, tm)
    ref = reference.forward_kl(s, t, sm, tm, tau=2.0)
    assert float(out.kl) == pytest.approx(ref, rel=1e-5)
    assert float(out.loss) == pytest.approx(0.5 * ref, rel=1e-5)


def test_identical_distributions_give_zero() -> None:
    s, _, sm, _ = random_pair(31, [5, 2], [5, 2], 5, 5, 50, 50)
    assert float(ForwardKLLoss()(s, s.clone(), sm, sm).kl) == pytest.approx(0.0, abs=1e-6)


def test_refuses_different_vocabularies() -> None:
    s, t, sm, tm = random_pair(32, [5, 2], [4, 6], 5, 6, 50, 60)
    with pytest.raises(ValueError, match="one shared vocabulary"):
        ForwardKLLoss()(s, t, sm, tm)
