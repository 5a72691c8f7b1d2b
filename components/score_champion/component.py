"""KFP component `score_champion`: the current champion's scores on this run's validation rows."""

from kfp import dsl

from otdistill.steps.runtime import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, packages_to_install=[], install_kfp_package=False)
def score_champion(
    config: str,
    validation_data: dsl.Input[dsl.Dataset],
    champion: str,
    champion_scores: dsl.Output[dsl.Artifact],
) -> str:
    """Score `champion` (`models:/<name>/<version>` from `open_run`, "" for none) on the validation rows,
    or reuse its score recorded for the same rows and scoring settings; returns how ("scored",
    "recorded", "none")."""
    from otdistill.steps.score_champion import score_champion as run_step

    result = run_step(
        config_json=config,
        validation_dir=validation_data.path,
        champion=champion,
        scores_path=champion_scores.path,
    )
    champion_scores.metadata.update({"version": result.version, "source": result.source})
    return result.source
