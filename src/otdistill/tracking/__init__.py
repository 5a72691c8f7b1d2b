"""MLflow tracking and model registry for distillation runs.

One parent run per pipeline run with a nested run per step, lineage tags on both, the student logged as an
MLflow pyfunc that answers its task's raw inputs (`otdistill.tracking.serving`), and registry promotion to a
champion alias only when the student is better.
"""

from typing import TYPE_CHECKING

from otdistill.lazy import lazy_exports

if TYPE_CHECKING:
    from otdistill.tracking.config import TrackingConfig
    from otdistill.tracking.connection import (
        TrackingError,
        TrackingServerUnavailableError,
        configure_client,
        preflight,
        redact_uri,
    )
    from otdistill.tracking.lineage import Lineage, code_version, container_image, log_lineage, read_lineage
    from otdistill.tracking.model_logging import (
        STUDENT_ARTIFACT_NAME,
        log_student_model,
        student_pip_requirements,
    )
    from otdistill.tracking.registry import PromotionDecision, register_and_promote, resolve_alias
    from otdistill.tracking.runs import (
        ClosedPipelineRun,
        PipelineRun,
        StepRun,
        StepTerminated,
        TrackedRun,
        attach_pipeline_run,
        close_pipeline_run,
        finish_pipeline_run,
        flatten_params,
        open_pipeline_run,
        start_pipeline_run,
        step_run,
    )

__all__ = [
    "STUDENT_ARTIFACT_NAME",
    "ClosedPipelineRun",
    "Lineage",
    "PipelineRun",
    "PromotionDecision",
    "StepRun",
    "StepTerminated",
    "TrackedRun",
    "TrackingConfig",
    "TrackingError",
    "TrackingServerUnavailableError",
    "attach_pipeline_run",
    "close_pipeline_run",
    "code_version",
    "configure_client",
    "container_image",
    "finish_pipeline_run",
    "flatten_params",
    "log_lineage",
    "log_student_model",
    "open_pipeline_run",
    "preflight",
    "read_lineage",
    "redact_uri",
    "register_and_promote",
    "resolve_alias",
    "start_pipeline_run",
    "step_run",
    "student_pip_requirements",
]

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(__name__, __file__, __all__)
