"""What a step process needs before any ML import: the environment the pipeline sets, and its log setup.

Kept apart from `otdistill.steps.common` (which imports the data, model and tracking code, and so torch,
transformers and mlflow) so that a light step, the exit handler `close_run`, starts in seconds, and so that
the components (their image) and the pipeline compile with the light client alone (`otdistill[client]`).
"""

from __future__ import annotations

import logging
import sys

from otdistill import images

# Where models are resolved / converted (a PVC on clusters); read by otdistill.models.
CACHE_ENV = "OTDISTILL_CACHE"
# The KFP run id, from the pod label on clusters and from `otdistill run` locally (see pipelines/cluster.py).
RUN_ID_ENV = "OTDISTILL_PIPELINE_RUN_ID"
IMAGE_ENV = "OTDISTILL_CONTAINER_IMAGE"
# The image components are built with (the CPU image of docker/); `cluster.image` / `cluster.gpu_image`
# override it per task at compile time.
COMPONENT_IMAGE = images.CPU


def setup_logging() -> None:
    """INFO logs to stdout for a step process (KFP shows a pod's stdout as the step's log)."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.INFO)
