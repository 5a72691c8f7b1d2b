"""Step `reference_model`: a Model artifact for a model used as is (teacher without SFT, untuned student)."""

from __future__ import annotations

import logging
from pathlib import Path

from otdistill.models import resolve_model
from otdistill.steps.common import model_spec, write_model_reference
from otdistill.steps.prologue import start_step

log = logging.getLogger(__name__)


def reference_model(config_json: str, role: str, model_dir: str | Path) -> dict[str, str]:
    """Resolve the `role` model now (download / convert into the model cache, fail early on a bad source)
    and record it as a reference; returns the artifact metadata (source, revision, role)."""
    cfg = start_step(config_json, "reference_model").cfg
    spec = model_spec(cfg, role)
    resolved = resolve_model(spec)
    log.info("%s used as is: %s @ %s", role, resolved.source, resolved.revision)
    return write_model_reference(model_dir, spec, resolved, role)
