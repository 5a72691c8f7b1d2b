"""The sweep DAG: loss variants x seeds as one pipeline, sharing one teacher SFT and one teacher cache.

    open_run ─> prepare_data ─> train_sft(teacher) ─> cache_teacher ─┐
       ├──────> prepare_validation_data, prepare_test_data ──────────┤
       │   evaluate_student(teacher): the pilot, the teacher's lead over the SFT student
       │   ParallelFor (SFT row x seeds):   sweep_row ─> train_sft(student) ─> evaluate_student ─> register
       │   ParallelFor (distilled x seeds): sweep_row ─> distill_student ──> evaluate_student ─> register
       └────────────────────────────────────> aggregate_sweep (dsl.Collected rows of both loops)
    then, also after a failure: close_run

The trunk and its parameters are the main pipeline's (`otdistill_pipeline.build_dag`), plus `test_data`,
`test_split` and `test_rows` (held-out rows given at run time; "" : none). Each loop's items are the
sweep config's rows (compile-time); inside the loop `sweep_row` applies the row's overrides to the
config `open_run` resolved (its `run_config` artifact), so run parameters reach every row. Into and out of
the loops only artifacts travel: kfp.local 2.17 hands a loop's steps the loop item in place of any string
output of a step outside the loop, and collects a loop's string outputs wrongly.

The loops run one row at a time (`parallelism=1`): the training steps of one pipeline run keep their
resumable state in one directory per step name (`otdistill.steps.resume`), which rows running at the same
time would share.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kfp import dsl

from otdistill.components.aggregate_sweep.component import aggregate_sweep
from otdistill.components.distill_student.component import distill_student
from otdistill.components.evaluate_student.component import evaluate_student
from otdistill.components.prepare_test_data.component import prepare_test_data
from otdistill.components.register_student.component import register_student
from otdistill.components.sweep_row.component import sweep_row
from otdistill.components.train_sft.component import train_sft
from otdistill.config import RunConfig
from otdistill.pipelines.otdistill_pipeline import (
    Configure,
    Trunk,
    build_dag,
    teacher_model_input,
    validation_input,
)
from otdistill.sweep.config import SweepConfig
from otdistill.sweep.rows import distilled_losses, loop_items, teacher_item

# Display names inside a loop; a local run appends the row (`distill-uld-s0`, otdistill.run_console).
ROW_STEPS = ("row", "train", "distill", "evaluate", "register")


def sweep_parameters(sweep: SweepConfig) -> dict[str, Any]:
    """The sweep's own run parameters and their defaults (the config's `sweep.test_data`)."""
    test = sweep.test_data
    return {"test_data": test.source, "test_split": test.split, "test_rows": test.limit or 0}


def build_sweep_pipeline(cfg: RunConfig, sweep: SweepConfig) -> Any:
    """The KFP pipeline (a GraphComponent) of the sweep `sweep` over the run config `cfg`."""

    def body(trunk: Trunk, params: Mapping[str, Any], configure: Configure) -> None:
        opened = trunk.opened
        test = configure(
            prepare_test_data(
                config=opened.outputs["prepare_validation_data"],
                source=params["test_data"],
                split=params["test_split"],
                rows=params["test_rows"],
            ),
            "prepare_test_data",
        )
        # The pilot: the teacher after SFT on the same rows (a teacher no stronger than the SFT student has
        # nothing to teach; the aggregation says whether it leads by the 5 points issue 17 asks).
        teacher_scored = configure(
            evaluate_student(
                config=opened.outputs["evaluate"],
                validation_data=trunk.validation_data,
                train_data=trunk.train_data,
                test_data=test.outputs["data"],
                student_model=trunk.teacher,
                row=teacher_item(cfg),
            ),
            "evaluate",
            display="evaluate-teacher",
        )
        collected = []
        for sft in (True, False):
            with dsl.ParallelFor(loop_items(sweep, sft=sft), parallelism=1) as item:
                row = configure(
                    sweep_row(run_config=opened.outputs["run_config"], row=item), "sweep_row", display="row"
                )
                if sft:
                    trained = configure(
                        train_sft(
                            config=row.outputs["train"],
                            role="student",
                            train_data=trunk.train_data,
                            # every row trains with the distill section (the SFT row with loss "none")
                            **validation_input(cfg.distill, trunk.validation_data),
                        ),
                        "train_sft_baseline",
                        display="train",
                    )
                    model = trained.outputs["model"]
                else:
                    trained = configure(
                        distill_student(
                            config=row.outputs["train"],
                            teacher_cache=trunk.teacher_cache,
                            train_data=trunk.train_data,
                            **validation_input(cfg.distill, trunk.validation_data),
                            **teacher_model_input(distilled_losses(cfg, sweep), trunk.teacher),
                        ),
                        "distill_student",
                        display="distill",
                    )
                    model = trained.outputs["student_model"]
                scored = configure(
                    evaluate_student(
                        config=row.outputs["evaluate"],
                        validation_data=trunk.validation_data,
                        train_data=trunk.train_data,
                        test_data=test.outputs["data"],
                        student_model=model,
                        row=item,
                    ),
                    "evaluate",
                    display="evaluate",
                )
                # Writes the registry: never cached (a cache hit would register nothing for this run).
                registered = configure(
                    register_student(
                        config=row.outputs["register"],
                        train_data=trunk.train_data,
                        validation_data=trunk.validation_data,
                        student_model=model,
                        record=scored.outputs["record"],
                    ),
                    "register_student",
                    cache=False,
                    display="register",
                )
            collected.append(dsl.Collected(registered.outputs["row"]))
        configure(
            aggregate_sweep(
                config=opened.outputs["register_and_promote"],
                parent_run_id=opened.outputs["parent_run_id"],
                sft_rows=collected[0],
                distill_rows=collected[1],
                teacher_row=teacher_scored.outputs["record"],
            ),
            "aggregate_sweep",
            cache=False,
        )

    sizes = f"{len(sweep.variants)} loss variants x {len(sweep.seeds)} seeds"
    description = f"Sweep of {sizes} over one teacher and its cache."
    return build_dag(cfg, description, body, sweep_parameters(sweep))


def sweep_summary(result: Any) -> str:
    """What `otdistill sweep` prints after a local run (`result`: `local.LocalRunResult`): the table the
    aggregation wrote to the parent MLflow run, where that run is, and how to see it."""
    from otdistill.sweep.aggregate import ARTIFACT_DIR
    from otdistill.sweep.records import RECORDS_DIR
    from otdistill.sweep.steps import ROW_TAG_PREFIX
    from otdistill.tracking.config import TrackingConfig
    from otdistill.tracking.connection import tracking_client

    client = tracking_client(TrackingConfig(tracking_uri=result.tracking_uri), connect=False)
    run = client.get_run(result.mlflow_run_id)
    table = run.data.tags.get(ROW_TAG_PREFIX + "table", "(no table)")
    records = f"{run.info.artifact_uri}/{ARTIFACT_DIR}/{RECORDS_DIR}"
    lines = result.summary().splitlines()
    keep = [line for line in lines if not line.strip().startswith(("registered model:", "champion:"))]
    at = next((i + 1 for i, line in enumerate(keep) if line.strip().startswith("MLflow run:")), len(keep))
    keep.insert(at, f"  row records:       {records} (`otdistill sweep --records` tables them with others)")
    return "\n".join([keep[0], "", table.rstrip(), *keep[1:]]).replace(
        "otdistill run finished", "otdistill sweep finished"
    )
