"""KFP component `reference_model`: a Model artifact that points at a model used as is (no training)."""

from kfp import dsl

from otdistill.steps.runtime import COMPONENT_IMAGE


@dsl.component(base_image=COMPONENT_IMAGE, packages_to_install=[], install_kfp_package=False)
def reference_model(config: str, role: str, model: dsl.Output[dsl.Model]) -> None:
    """Resolve the configured `role` model ("teacher" or "student") and record it as a Model artifact.

    Used when teacher SFT or the SFT baseline is switched off, so downstream steps always get a Model.
    """
    from otdistill.steps.reference_model import reference_model as run_step

    model.metadata.update(run_step(config_json=config, role=role, model_dir=model.path))
