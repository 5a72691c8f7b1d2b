# Sourced by docker/build-images.sh: start Debian's dockerd when no engine answers, stop it on exit.
# There is no systemd on the machines this runs on (../shared/docs/containers.md): dockerd runs as a
# child of the script, its log in $ENGINE_LOG, and is stopped (TERM, then waited for) by the EXIT trap.
# An engine that was already running is used and left running.

ENGINE_LOG=${ENGINE_LOG:-/tmp/otdistill-dockerd.log}
ENGINE_PID=""

engine_stop() {
  if [ -n "$ENGINE_PID" ] && kill -0 "$ENGINE_PID" 2>/dev/null; then
    kill -TERM "$ENGINE_PID"
    for _ in $(seq 1 60); do kill -0 "$ENGINE_PID" 2>/dev/null || break; sleep 0.5; done
  fi
  ENGINE_PID=""
}

engine_up() {
  if docker info >/dev/null 2>&1; then
    return 0
  fi
  if [ ! -x /usr/sbin/dockerd ] && ! command -v dockerd >/dev/null 2>&1; then
    echo "error: no Docker engine: run scripts/install-test-servers.sh (Debian docker.io)" >&2
    return 1
  fi
  dockerd >"$ENGINE_LOG" 2>&1 &
  ENGINE_PID=$!
  if [ -n "${OTDISTILL_TEST_SERVER_PIDFILE:-}" ]; then
    echo "$ENGINE_PID dockerd" >>"$OTDISTILL_TEST_SERVER_PIDFILE"
  fi
  trap engine_stop EXIT
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && return 0
    kill -0 "$ENGINE_PID" 2>/dev/null || break
    sleep 0.5
  done
  echo "error: dockerd did not start; its log ($ENGINE_LOG):" >&2
  tail -n 30 "$ENGINE_LOG" >&2
  return 1
}
