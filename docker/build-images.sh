#!/usr/bin/env bash
# Builds the project's images on this machine, with the tags of otdistill.images (`make images`):
#   CPU image     docker/Dockerfile.cpu     (pipeline steps, `otdistill`, `mlflow models serve`)
#   MLflow image  docker/Dockerfile.mlflow  (the tracking + registry server of manifests/)
# from a local base: there is no image registry here, so local/debian:bookworm is made once with
# debootstrap (mirror and CA certificates taken from this machine) and local/python:3.11-bookworm on it
# (docker/Dockerfile.python-base). torch comes from a wheelhouse (the CPU wheel pip resolves on this
# machine), everything else from the package index. Prints each build's time and each image's size.
# The CUDA image needs a CUDA torch build and is not built here (docker/README.md).
#
# Environment: PYTHON (default .venv/bin/python, must import otdistill), BASE_IMAGE (skip the local base
# and build on this image instead), DOCKER (default: Debian's BuildKit-capable /usr/bin/docker).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
DOCKER=${DOCKER:-/usr/bin/docker}
[ -x "$DOCKER" ] || DOCKER=docker
DEBIAN_IMAGE=local/debian:bookworm
LOCAL_PYTHON_IMAGE=local/python:3.11-bookworm
CPU_IMAGE=$("$PYTHON" -m otdistill.images --tags cpu)
MLFLOW_IMAGE=$("$PYTHON" -m otdistill.images --tags mlflow)
GIT_SHA=$(git rev-parse HEAD 2>/dev/null || echo unknown)

# shellcheck source=docker/engine.sh
source docker/engine.sh
engine_up

seconds() { echo $(( $(date +%s) - $1 )); }

local_debian_base() {
  "$DOCKER" image inspect "$DEBIAN_IMAGE" >/dev/null 2>&1 && return 0
  local mirror rootfs t0
  t0=$(date +%s)
  mirror=$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n1)
  [ -n "$mirror" ] || mirror=$(sed -n 's/^deb[[:space:]]\+\(http[^[:space:]]*\).*/\1/p' /etc/apt/sources.list 2>/dev/null | head -n1)
  [ -n "$mirror" ] || { echo "error: no Debian mirror in this machine's apt sources" >&2; return 1; }
  rootfs=$(mktemp -d /tmp/otdistill-rootfs.XXXXXX)
  echo "base: debootstrap bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
    || { tail -n 30 "$rootfs.log" >&2; return 1; }
  echo "deb $mirror bookworm main" >"$rootfs/etc/apt/sources.list"
  # The package index is reached through a re-signing proxy on some machines: the base trusts the same CAs.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    mkdir -p "$rootfs/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
  fi
  chroot "$rootfs" sh -c 'apt-get update -q && apt-get install -y -q --no-install-recommends ca-certificates && apt-get clean' \
    >>"$rootfs.log" 2>&1 || { tail -n 30 "$rootfs.log" >&2; return 1; }
  tar -C "$rootfs" -c . | "$DOCKER" import - "$DEBIAN_IMAGE" >/dev/null
  rm -rf "$rootfs" "$rootfs.log"
  echo "base: $DEBIAN_IMAGE in $(seconds "$t0") s"
}

build() {  # build NAME DOCKERFILE [docker build args...]
  local name=$1 dockerfile=$2 t0
  shift 2
  t0=$(date +%s)
  echo "build: $name ($dockerfile)"
  DOCKER_BUILDKIT=1 "$DOCKER" build --network=host --progress=plain -f "$dockerfile" \
    --build-arg GIT_SHA="$GIT_SHA" -t "$name" "$@" . >"/tmp/otdistill-build-$(basename "$dockerfile").log" 2>&1 \
    || { tail -n 40 "/tmp/otdistill-build-$(basename "$dockerfile").log" >&2; return 1; }
  echo "build: $name in $(seconds "$t0") s, $("$DOCKER" image inspect -f '{{.Size}}' "$name" | awk '{printf "%.0f MB", $1/1e6}')"
}

if [ -z "${BASE_IMAGE:-}" ]; then
  local_debian_base
  t0=$(date +%s)
  DOCKER_BUILDKIT=1 "$DOCKER" build --network=host -q --build-arg DEBIAN_IMAGE="$DEBIAN_IMAGE" \
    -t "$LOCAL_PYTHON_IMAGE" - <docker/Dockerfile.python-base >/dev/null
  echo "base: $LOCAL_PYTHON_IMAGE in $(seconds "$t0") s"
  BASE_IMAGE=$LOCAL_PYTHON_IMAGE
fi

# torch: the CPU wheel, as this machine's pip finds it (a local wheel folder here; elsewhere set
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu). Asked for as +cpu, so that the multi-GB CUDA
# build that PyPI serves for `torch==2.13.0` can never end up in the image.
if ! compgen -G "docker/wheelhouse/torch-2.13.0+cpu-*.whl" >/dev/null; then
  "$PYTHON" -m pip download -q --no-deps "torch==2.13.0+cpu" -d docker/wheelhouse
fi

build "$CPU_IMAGE" docker/Dockerfile.cpu --build-arg BASE_IMAGE="$BASE_IMAGE" \
  --build-arg IMAGE_REF="$CPU_IMAGE" \
  --build-arg TORCH_PIP_ARGS="--find-links /src/docker/wheelhouse"
build "$MLFLOW_IMAGE" docker/Dockerfile.mlflow --build-arg BASE_IMAGE="$BASE_IMAGE"

# The local digests, for pinning (otdistill.images, OTDISTILL_IMAGE_DIGEST_<ROLE>). `.Id` is the digest of
# the image's config, which identifies these bytes here; a registry digest (RepoDigests, what
# `name@sha256:...` pulls) exists only after `docker push`, and is the one to pin on a cluster.
for image in "$CPU_IMAGE" "$MLFLOW_IMAGE"; do
  echo "digest: $image id $("$DOCKER" image inspect --format '{{.Id}}' "$image")" \
    "repo digest $("$DOCKER" image inspect --format '{{if .RepoDigests}}{{index .RepoDigests 0}}{{else}}none (not pushed){{end}}' "$image")"
done
