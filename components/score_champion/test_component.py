"""score_champion: with no champion yet it scores nothing and says so; the key names rows and settings.

Scoring a registered champion and reusing its recorded score are tested with a real registry, through
the gate, in tests/steps/test_register_and_promote.py.
"""

import json
from pathlib import Path

from kfp import dsl

from otdistill.components.conftest import Env, Upstream
from otdistill.components.score_champion.component import score_champion


def test_no_champion_yet(env: Env, upstream: Upstream) -> None:
    out = env.artifact(dsl.Artifact, "champion-scores")
    source = score_champion.python_func(
        config=env.section("score_champion"),
        validation_data=upstream.validation,
        champion="",
        champion_scores=out,
    )
    data = json.loads(Path(out.path).read_text())
    assert source == "none" and data["metrics"] == {} and data["version"] == ""
    assert data["score_key"].startswith("otdistill.scores." + upstream.validation.metadata["sha256"][:16])
