"""Seeding and deterministic settings, applied before the model is built and recorded with the run.

Two runs of one config on CPU give the same loss curve when every RNG is seeded the same way (python,
numpy, torch, the data order) and the thread count is fixed; `deterministic=True` additionally makes torch
refuse nondeterministic kernels (and sets the cuBLAS workspace on GPUs), which matters on GPUs.
"""

from __future__ import annotations

import os
import platform
from typing import Any

import torch
import transformers
from transformers.trainer_utils import enable_full_determinism, set_seed

# The fields of `determinism_record` that describe the platform rather than the run: two runs of one config
# and seed that differ in one of these need not give the same bits (another CPU sums in another order).
PLATFORM_KEYS = (
    "cpu.model",
    "torch.cpu_capability",
    "torch.num_threads",
    "torch.version",
    "transformers.version",
    "cuda.version",
    "python.version",
)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices); with `deterministic`, also force deterministic kernels."""
    if deterministic:
        enable_full_determinism(seed)  # seeds too; sets CUBLAS_WORKSPACE_CONFIG and cudnn flags
    else:
        set_seed(seed)


def determinism_record(seed: int, deterministic: bool) -> dict[str, Any]:
    """What decides whether a run can be reproduced bit for bit, as flat run parameters."""
    return {
        "seed": seed,
        "deterministic": deterministic,
        "torch.deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "torch.num_threads": torch.get_num_threads(),
        # the CPU kernels torch dispatches to (AVX2, AVX512, ...): two machines with another answer may
        # not sum in the same order, so the same seed need not give the same weights there
        "torch.cpu_capability": torch.backends.cpu.get_cpu_capability(),
        # the same capability on two vendors' CPUs can still sum differently (the BLAS picks its own kernels)
        "cpu.model": cpu_model(),
        "torch.version": torch.__version__,
        "transformers.version": transformers.__version__,
        "cuda.version": str(torch.version.cuda),
        "cudnn.deterministic": bool(torch.backends.cudnn.deterministic),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG", ""),
        "python.version": platform.python_version(),
    }


def cpu_model() -> str:
    """The CPU's model name (`/proc/cpuinfo`, else `platform.processor()`; "" when neither says)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
