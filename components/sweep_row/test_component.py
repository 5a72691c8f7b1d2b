"""sweep_row: one row's step configs from the run's resolved config; the SFT row trains `sft_baseline`
with loss "none", a distilled row its variant's overrides, both with the row's seed."""

import json
from pathlib import Path

from kfp import dsl

from otdistill.components.conftest import Env
from otdistill.components.sweep_row.component import sweep_row
from otdistill.sweep.config import Variant
from otdistill.sweep.rows import Row


def test_sweep_row_applies_the_variant_and_seed_to_the_run_config(env: Env) -> None:
    run_config = env.artifact(dsl.Artifact, "sweep-row-config")
    Path(run_config.path).parent.mkdir(parents=True, exist_ok=True)
    Path(run_config.path).write_text(env.cfg.to_yaml(), encoding="utf-8")

    sft = sweep_row.python_func(run_config=run_config, row=Row(Variant("sft", sft=True), 3).item())
    train = json.loads(sft[0])["sft_baseline"]
    assert train["loss"] == "none" and train["seed"] == 3
    # the SFT row trains like the distilled rows: the run's `distill` settings, not `sft_baseline`'s
    assert train["max_steps"] == env.cfg.distill.max_steps

    variant = Variant("uld_fast", {"distill.loss": "uld", "distill.learning_rate": 0.5})
    configs = sweep_row.python_func(run_config=run_config, row=Row(variant, 1).item())
    distill = json.loads(configs[0])["distill"]
    assert (distill["loss"], distill["learning_rate"], distill["seed"]) == ("uld", 0.5, 1)
    assert json.loads(configs[1])["eval"]["max_new_tokens"] == env.cfg.eval.max_new_tokens
    register = json.loads(configs[2])
    assert register["tracking"]["registered_model_name"] == env.cfg.tracking.registered_model_name
