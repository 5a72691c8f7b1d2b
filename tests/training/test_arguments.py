"""TrainingArguments from the declared table, and the `trainer_args` passthrough.

`shipped_training_args.json` holds, for every shipped config's three training sections, the fields that
differ from TrainingArguments' defaults as the hand-written mapping built them before the table replaced it
(fp32 on CPU, one process): the table must build the same arguments.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from transformers import TrainingArguments

from otdistill.config import ConfigError, RunConfig
from otdistill.training import TrainConfig
from otdistill.training.arguments import MAPPED, owned_fields, trainer_argument_fields
from otdistill.training.precision import PrecisionChoice
from otdistill.training.runner import training_arguments

REPO = Path(__file__).resolve().parents[2]
SHIPPED = json.loads((Path(__file__).parent / "shipped_training_args.json").read_text(encoding="utf-8"))
FP32_CPU = PrecisionChoice("fp32", "cpu", "test")
SECTIONS = ("teacher_sft", "sft_baseline", "distill")


def _non_default(args: TrainingArguments) -> dict[str, Any]:
    default = TrainingArguments(output_dir="x", use_cpu=True).to_dict()
    return {
        k: v for k, v in json.loads(json.dumps(args.to_dict(), default=str)).items() if default.get(k) != v
    }


def test_the_table_builds_what_the_hand_copy_built_for_every_shipped_config() -> None:
    configs = sorted((REPO / "configs").rglob("*.yaml"))
    built = {}
    for path in configs:
        try:
            cfg = RunConfig.from_yaml(path)
        except ConfigError:
            continue  # not a RunConfig (a paper table's or sweep's own file)
        for section in SECTIONS:
            key = f"{path.relative_to(REPO)}:{section}"
            built[key] = _non_default(training_arguments(getattr(cfg, section), FP32_CPU))
    assert set(built) == set(SHIPPED), "shipped configs changed: recapture shipped_training_args.json"
    for key, expected in SHIPPED.items():
        assert built[key] == expected, key


def test_the_table_names_only_real_fields_and_owned_fields_are_refused() -> None:
    real = trainer_argument_fields()
    ours = {f.name for f in dataclasses.fields(TrainConfig)}
    for row in MAPPED:
        assert row.ours in ours and row.target in real, row
    assert set(owned_fields()) <= real
    args = training_arguments(TrainConfig(max_steps=0, num_epochs=2.5, optimizer="adafactor"), FP32_CPU)
    assert (args.max_steps, args.num_train_epochs, args.optim) == (-1, 2.5, "adafactor")


def test_trainer_args_reach_the_training_arguments() -> None:
    cfg = TrainConfig(trainer_args={"adam_beta2": 0.95, "logging_first_step": True, "ddp_timeout": 60})
    args = training_arguments(cfg, FP32_CPU)
    assert (args.adam_beta2, args.logging_first_step, args.ddp_timeout) == (0.95, True, 60)
    loaded = RunConfig.from_dict({"distill": {"trainer_args": {"adam_beta2": 0.9}}})
    assert training_arguments(loaded.distill, FP32_CPU).adam_beta2 == 0.9


@pytest.mark.parametrize(
    ("trainer_args", "named"),
    [
        ({"adam_beta3": 0.9}, "adam_beta3 is not a transformers TrainingArguments field"),
        ({"learning_rate": 1.0}, "learning_rate: set by learning_rate"),
        ({"per_device_train_batch_size": 8}, "per_device_train_batch_size: set by per_device_batch_size"),
        ({"fp16": True}, "fp16: set by precision"),
        ({"eval_steps": 5}, "eval_steps: set by eval_every_steps"),
        ({"report_to": "mlflow"}, "report_to: set by fixed by otdistill"),
    ],
)
def test_bad_trainer_args_are_refused_by_name(trainer_args: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=f"distill: .*{named}"):
        RunConfig.from_dict({"distill": {"trainer_args": trainer_args}})


def test_a_value_transformers_refuses_names_the_trainer_args() -> None:
    cfg = TrainConfig(trainer_args={"hub_strategy": "bogus"})
    with pytest.raises(ValueError, match=r"trainer_args \['hub_strategy'\]: bogus is not a valid"):
        training_arguments(cfg, FP32_CPU)


def test_validation_settings_are_checked_and_the_baseline_must_match_distill() -> None:
    with pytest.raises(ValueError, match="early_stopping_patience needs the validation loss"):
        TrainConfig(early_stopping_patience=2)
    with pytest.raises(ValueError, match=r"save_steps \(5\) must be a multiple of eval_every_steps \(2\)"):
        TrainConfig(eval_every_steps=2, save_steps=5, keep_best_checkpoint=True)
    args = training_arguments(
        TrainConfig(eval_every_steps=2, save_steps=4, keep_best_checkpoint=True, early_stopping_patience=1),
        FP32_CPU,
    )
    assert (args.eval_strategy, args.eval_steps, args.load_best_model_at_end) == ("steps", 2, True)
    assert (args.metric_for_best_model, args.greater_is_better) == ("loss", False)
    stopping = {"eval_every_steps": 2, "early_stopping_patience": 3}

    def whole(sections: tuple[str, ...], **more: Any) -> RunConfig:
        """A whole config with overrides (what the CLI and open_run build), where the check runs."""
        return RunConfig().with_overrides(
            {f"{s}.{k}": v for s in sections for k, v in stopping.items()} | more
        )

    with pytest.raises(ConfigError, match=r"differs in eval_every_steps \(0 vs 2\), early_stopping_patience"):
        whole(("distill",))
    fair = whole(("distill", "sft_baseline"))
    assert fair.sft_baseline.validation_settings() == fair.distill.validation_settings()
    whole(("distill",), **{"steps.skip_sft_baseline": True})  # no baseline to match
    # a step's sections alone (the others keep defaults) are not checked across sections
    assert RunConfig.from_json(fair.section_json("distill_student")).distill.eval_every_steps == 2
