"""Step `open_run`: the run's final config (base config + pipeline parameters) and its parent MLflow run."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otdistill.config import STEP_SECTIONS, RunConfig, parameter_overrides
from otdistill.steps.common import RUN_ID_ENV, setup_logging
from otdistill.steps.resume import prune_stale_checkpoints
from otdistill.tracking.runs import open_pipeline_run
from otdistill.tracking.scores import champion_version, version_uri


@dataclass(frozen=True)
class OpenRunResult:
    config: RunConfig
    step_configs: dict[str, str]
    parent_run_id: str
    champion: str  # models:/<name>/<version> holding the champion alias now; "" when none


def open_run(
    base_config: str,
    params: dict[str, Any],
    pipeline_run_id: str,
    pipeline_run_name: str,
    config_path: str | Path | None = None,
) -> OpenRunResult:
    """Merge `params` (pipeline parameters) into `base_config`, validate, record, and split per step.

    The parent run is keyed by the pipeline run id, so a retried `open_run` reuses it. The run id comes
    from the environment when set (the same value every step sees), else from KFP's placeholder.
    """
    setup_logging()
    cfg = RunConfig.from_json(base_config).with_overrides(parameter_overrides(params))
    run_id = os.environ.get(RUN_ID_ENV, "").strip() or pipeline_run_id
    parent = open_pipeline_run(
        cfg.tracking,
        pipeline_run_name or cfg.name,
        pipeline_run_id=run_id,
        tags={"otdistill.pipeline": cfg.name, "otdistill.kfp_run_name": pipeline_run_name},
    )
    parent.log_config(cfg.to_dict(), "config.yaml")
    # what failed runs that were never retried left on the model cache (the PVC on a cluster)
    prune_stale_checkpoints(cfg.steps.stale_checkpoint_days, keep=run_id)
    if config_path is not None:
        Path(config_path).parent.mkdir(parents=True, exist_ok=True)
        Path(config_path).write_text(cfg.to_yaml(), encoding="utf-8")
    steps = {step: cfg.section_json(step) for step in STEP_SECTIONS if step != "open_run"}
    # Which champion this run's candidate must beat: `score_champion` scores it (or reuses a comparable
    # score), so that step's cache key moves when, and only when, the champion does.
    name = cfg.tracking.registered_model_name
    version = champion_version(parent.client, name, cfg.tracking.champion_alias)
    champion = version_uri(name, version) if version is not None else ""
    return OpenRunResult(config=cfg, step_configs=steps, parent_run_id=parent.run_id, champion=champion)
