"""KFP component `register_and_promote`: register the distilled student and run the promotion gate."""

from typing import NamedTuple

from kfp import dsl

from otdistill.steps.runtime import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, packages_to_install=[], install_kfp_package=False)
def register_and_promote(
    config: str,
    parent_run_id: str,
    data_hash: str,
    validation_data: dsl.Input[dsl.Dataset],
    student_model: dsl.Input[dsl.Model],
    scores: dsl.Input[dsl.Artifact],
    champion_scores: dsl.Input[dsl.Artifact],
    decision: dsl.Output[dsl.Artifact],
    decision_report: dsl.Output[dsl.Markdown],
) -> NamedTuple(  # type: ignore[valid-type]  # KFP needs the inline form
    "Registration", [("model_uri", str), ("version", str), ("promoted", bool)]
):
    """Register the student (alias challenger); it becomes champion only if it beats the SFT baseline of
    this run and the current champion scored on the same rows (`score_champion`), both by the margin.

    decision: the outcome as JSON; decision_report: the same, as Markdown the KFP UI shows."""
    from otdistill.steps.gate_report import decision_markdown
    from otdistill.steps.kfp_outputs import write_text
    from otdistill.steps.register_and_promote import register_and_promote as run_step

    result = run_step(
        config_json=config,
        parent_run_id=parent_run_id,
        data_hash=data_hash,
        validation_dir=validation_data.path,
        student_dir=student_model.path,
        scores_path=scores.path,
        decision_path=decision.path,
        champion_scores_path=champion_scores.path,
    )
    decision.metadata.update(result.tags)
    write_text(decision_report, decision_markdown(result))
    return (result.model_uri, result.version, result.promoted)  # by position, as declared
