"""KFP component `sweep_row`: one sweep row's step configs (its variant's overrides and its seed)."""

from typing import NamedTuple

from kfp import dsl

from otdistill.steps.runtime import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, packages_to_install=[], install_kfp_package=False)
def sweep_row(run_config: dsl.Input[dsl.Artifact], row: dict) -> NamedTuple(  # type: ignore[valid-type]  # KFP needs the inline form
    "RowConfigs", [("train", str), ("evaluate", str), ("register", str)]
):
    """From the run's resolved config (`open_run`'s `run_config`) and the loop item `row`
    (`otdistill.sweep.rows.Row.item`): the row's training config (`train_sft_baseline`'s section for the
    SFT row: `distill` with loss "none"; else `distill_student`'s) and the `evaluate` and
    `register_and_promote` sections. Through an artifact: kfp.local 2.17 hands a loop's steps the loop item
    in place of any string output of a step outside the loop."""
    from otdistill.sweep.rows import row_configs

    configs = row_configs(run_config.path, row)
    return (configs["train"], configs["evaluate"], configs["register"])
