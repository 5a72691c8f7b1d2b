"""The project's container images: one name per role, the one place those names are written.

`docker/build-images.sh` builds exactly these tags (it reads them with `python -m otdistill.images`), the
pipeline's components default to `CPU` (`ClusterConfig.image`) and `CUDA` (`ClusterConfig.gpu_image`),
and the manifests' overlays point the MLflow server at `MLFLOW` (checked by tests/infra). To push
elsewhere, override per run config (`cluster.image`, `cluster.gpu_image`) or pin a digest there.
"""

from __future__ import annotations

import sys

REGISTRY = "ghcr.io/otdistill"
TAG = "0.1.0"

# CPU pipeline steps (data, registration, control) and `otdistill run` in a container; docker/Dockerfile.cpu.
CPU = f"{REGISTRY}/otdistill-cpu:{TAG}"
# GPU pipeline steps (teacher SFT, cache, distillation, evaluation); docker/Dockerfile.cuda.
CUDA = f"{REGISTRY}/otdistill-cuda:{TAG}"
# The MLflow tracking + registry server that manifests/ deploys; docker/Dockerfile.mlflow.
MLFLOW = f"{REGISTRY}/otdistill-mlflow:{TAG}"

IMAGES: dict[str, str] = {"cpu": CPU, "cuda": CUDA, "mlflow": MLFLOW}


def main(argv: list[str] | None = None) -> int:
    """`python -m otdistill.images [ROLE]`: print one image (or `role image` lines for all)."""
    args = sys.argv[1:] if argv is None else argv
    if args:
        if args[0] not in IMAGES:
            print(f"unknown image role {args[0]!r}; roles: {', '.join(IMAGES)}", file=sys.stderr)
            return 2
        print(IMAGES[args[0]])
        return 0
    for role, image in IMAGES.items():
        print(role, image)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
