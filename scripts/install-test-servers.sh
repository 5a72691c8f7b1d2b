#!/usr/bin/env bash
# Installs the server software the `servers` and `containers` test stages start: PostgreSQL, and the
# container engine (docker.io: dockerd, containerd, runc) with debootstrap for the local base image (there
# is no image registry to pull from; ../shared/docs/containers.md), all from the Debian packages. (The S3
# store is moto's server mode from the venv; mlflow server comes from the venv or the MLflow image.)
# Idempotent, and it leaves no server running: Debian's postinst would create and start a cluster on
# port 5432, which createcluster.conf is set to skip; the tests run their own throwaway cluster instead;
# dockerd is started and stopped by docker/build-images.sh and tests/containers (no systemd here).
set -euo pipefail

have_postgres() { command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; }
have_engine() { [ -x /usr/sbin/dockerd ] && command -v debootstrap >/dev/null 2>&1; }

if have_postgres && have_engine; then
  echo "PostgreSQL, docker.io and debootstrap already installed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: this is not a Debian/Ubuntu system; install the PostgreSQL server (initdb, postgres," \
       "pg_isready, psql; set PG_BINDIR to its bin directory), a Docker engine and debootstrap" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "error: installing PostgreSQL needs root (or sudo)" >&2
    exit 1
  fi
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
if ! have_engine; then
  $SUDO apt-get install -y -q --no-install-recommends docker.io debootstrap
  echo "installed: $(/usr/sbin/dockerd --version)"
fi
if have_postgres; then
  exit 0
fi
# postgresql-common first: its createcluster.conf decides whether the server package's postinst creates
# (and starts) a "main" cluster. Turn that off, then install the server.
$SUDO apt-get install -y -q --no-install-recommends postgresql-common
$SUDO sed -ri 's/^[#[:space:]]*create_main_cluster[[:space:]]*=.*/create_main_cluster = false/' \
  /etc/postgresql-common/createcluster.conf
grep -q '^create_main_cluster = false' /etc/postgresql-common/createcluster.conf \
  || echo 'create_main_cluster = false' | $SUDO tee -a /etc/postgresql-common/createcluster.conf >/dev/null
$SUDO apt-get install -y -q --no-install-recommends postgresql
echo "installed: $(compgen -G '/usr/lib/postgresql/*/bin/initdb' | head -n1)"
