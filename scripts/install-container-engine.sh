#!/usr/bin/env bash
# Installs the container engine the `containers` test stage uses: Debian's docker.io (dockerd, containerd,
# runc) and debootstrap (the local base image: there is no image registry to pull from). Idempotent; it
# starts nothing (docker/engine.sh starts and stops dockerd for the stage). See ../shared/docs/containers.md.
set -euo pipefail

if [ -x /usr/sbin/dockerd ] && command -v debootstrap >/dev/null 2>&1; then
  echo "docker.io and debootstrap already installed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: the container stage needs Debian's docker.io and debootstrap (apt-get); on another system" \
       "install a Docker engine and debootstrap, or skip the stage with OTDISTILL_SKIP_CONTAINERS=1" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "error: installing docker.io needs root (or sudo)" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends docker.io debootstrap
echo "installed: $(/usr/sbin/dockerd --version)"
