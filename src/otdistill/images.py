"""The project's container images: one name per role, the one place those names are written.

`docker/build-images.sh` builds exactly these tags (it reads them with `python -m otdistill.images --tags`),
the pipeline's components default to `CPU` (`ClusterConfig.image`) and `CUDA` (`ClusterConfig.gpu_image`),
and the manifests' overlays point the MLflow server at `MLFLOW` (checked by tests/infra). To push
elsewhere, override per run config (`cluster.image`, `cluster.gpu_image`).

Pinning by digest: a tag can be moved to other content, a digest cannot. Set `OTDISTILL_IMAGE_DIGEST_CPU`,
`_CUDA` or `_MLFLOW` to `sha256:<64 hex>` (the digest the registry reports for the pushed image; `docker
image inspect --format '{{index .RepoDigests 0}}'` after the push) and that role's name becomes
`<repository>@sha256:...`, so compiled pipelines run exactly that image; or write `name@sha256:...` in
`cluster.image` / `cluster.gpu_image`, or `digest:` in an overlay's kustomize `images:`. Every reference is
checked by `check_reference` (compile time for run configs, tests/infra for the overlays).
"""

from __future__ import annotations

import os
import re
import sys

REGISTRY = "ghcr.io/otdistill"
TAG = "0.1.0"
# The non-root user and group of every project image (`USER 10001:10001` in docker/Dockerfile.*): step pods
# run as it (pipelines/cluster.py), and the pipeline namespace enforces Pod Security `restricted`.
IMAGE_UID = 10001
DIGEST_ENV_PREFIX = "OTDISTILL_IMAGE_DIGEST_"

# Docker's reference grammar (distribution/reference): [host[:port]/]path[:tag][@algorithm:hex].
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = rf"(?:{_LABEL}(?:\.{_LABEL})*(?::[0-9]+)?/)"
_NAME = rf"(?P<name>{_HOST}?{_COMPONENT}(?:/{_COMPONENT})*)"
_TAG = r"(?::(?P<tag>[\w][\w.-]{0,127}))"
_DIGEST = r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,}))"
REFERENCE_RE = re.compile(rf"^{_NAME}{_TAG}?{_DIGEST}?$")
# The only digest the project pins by: sha256, lower-case, 64 hex digits.
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


class ImageReferenceError(ValueError):
    """An image reference that is malformed, unpinned or pinned by a malformed digest; names where."""


def check_reference(reference: str, where: str) -> str:
    """`reference` if it is a well-formed image reference pinned by a tag or a sha256 digest; else raise an
    ImageReferenceError naming `where` (the config field, variable or manifest it came from)."""
    match = REFERENCE_RE.match(reference)
    if match is None:
        raise ImageReferenceError(f"{where}: {reference!r} is not a valid image reference")
    digest = match.group("digest")
    if digest is not None and not DIGEST_RE.match(digest):
        raise ImageReferenceError(
            f"{where}: {reference!r} has the digest {digest!r}; expected sha256: and 64 lower-case hex digits"
        )
    tag = match.group("tag")
    if digest is None and (tag is None or tag == "latest"):
        raise ImageReferenceError(
            f"{where}: {reference!r} is not pinned: give a version tag or a digest (@sha256:...)"
        )
    return reference


def repository(reference: str) -> str:
    """The name without tag or digest (`ghcr.io/otdistill/otdistill-cpu:0.1.0` -> `...otdistill-cpu`)."""
    match = REFERENCE_RE.match(reference)
    if match is None:
        raise ImageReferenceError(f"{reference!r} is not a valid image reference")
    return match.group("name")


def digest_of(reference: str) -> str | None:
    """The `sha256:...` a reference is pinned by, None for a tag-only reference."""
    match = REFERENCE_RE.match(reference)
    return match.group("digest") if match else None


def is_role_image(reference: str, role_image: str) -> bool:
    """True when `reference` is `role_image` itself or the same repository pinned by a digest."""
    if reference == role_image:
        return True
    digest = digest_of(reference)
    return digest is not None and repository(reference) == repository(role_image)


def _pinned(role: str, tagged: str) -> str:
    variable = DIGEST_ENV_PREFIX + role.upper()
    digest = os.environ.get(variable, "").strip()
    if not digest:
        return tagged
    if not DIGEST_RE.match(digest):
        raise ImageReferenceError(f"{variable}={digest!r}: expected sha256: and 64 lower-case hex digits")
    return f"{repository(tagged)}@{digest}"


# The names `docker/build-images.sh` tags its builds with.
TAGGED: dict[str, str] = {
    # CPU pipeline steps (data, registration, control), `otdistill run` in a container; docker/Dockerfile.cpu.
    "cpu": f"{REGISTRY}/otdistill-cpu:{TAG}",
    # GPU pipeline steps (teacher SFT, cache, distillation, evaluation); docker/Dockerfile.cuda.
    "cuda": f"{REGISTRY}/otdistill-cuda:{TAG}",
    # The MLflow tracking + registry server that manifests/ deploys; docker/Dockerfile.mlflow.
    "mlflow": f"{REGISTRY}/otdistill-mlflow:{TAG}",
}
# What runs: the tagged names, or `<repository>@sha256:...` where OTDISTILL_IMAGE_DIGEST_<ROLE> is set.
IMAGES: dict[str, str] = {role: _pinned(role, tagged) for role, tagged in TAGGED.items()}
CPU = IMAGES["cpu"]
CUDA = IMAGES["cuda"]
MLFLOW = IMAGES["mlflow"]


def main(argv: list[str] | None = None) -> int:
    """`python -m otdistill.images [--tags] [ROLE]`: print one image (or `role image` lines for all);
    `--tags` prints the names to build and tag, ignoring digest pins."""
    args = sys.argv[1:] if argv is None else list(argv)
    names = IMAGES
    if args and args[0] == "--tags":
        names, args = TAGGED, args[1:]
    if args:
        if args[0] not in names:
            print(f"unknown image role {args[0]!r}; roles: {', '.join(names)}", file=sys.stderr)
            return 2
        print(names[args[0]])
        return 0
    for role, image in names.items():
        print(role, image)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
