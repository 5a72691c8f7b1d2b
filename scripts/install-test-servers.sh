#!/usr/bin/env bash
# Installs the server software the `servers` tests start on 127.0.0.1: PostgreSQL from the Debian
# packages. (The S3 store is moto's server mode from the venv; mlflow server comes from the venv too.)
# Idempotent, and it leaves no server running: Debian's postinst would create and start a cluster on
# port 5432, which createcluster.conf is set to skip; the tests run their own throwaway cluster instead.
set -euo pipefail

if command -v initdb >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  echo "PostgreSQL server binaries already installed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: PostgreSQL is missing and this is not a Debian/Ubuntu system; install the PostgreSQL" \
       "server (initdb, postgres, pg_isready, psql) and set PG_BINDIR to its bin directory" >&2
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
# postgresql-common first: its createcluster.conf decides whether the server package's postinst creates
# (and starts) a "main" cluster. Turn that off, then install the server.
$SUDO apt-get install -y -q --no-install-recommends postgresql-common
$SUDO sed -ri 's/^[#[:space:]]*create_main_cluster[[:space:]]*=.*/create_main_cluster = false/' \
  /etc/postgresql-common/createcluster.conf
grep -q '^create_main_cluster = false' /etc/postgresql-common/createcluster.conf \
  || echo 'create_main_cluster = false' | $SUDO tee -a /etc/postgresql-common/createcluster.conf >/dev/null
$SUDO apt-get install -y -q --no-install-recommends postgresql
echo "installed: $(compgen -G '/usr/lib/postgresql/*/bin/initdb' | head -n1)"
