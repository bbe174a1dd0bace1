# shellcheck shell=bash
# Helpers to run fake-gcs-server (the Cloud Storage emulator); source this file.
#
#   emulator_install             install fake-gcs-server if missing; put Go's bin dir on PATH
#   emulator_start HOST          serve http://HOST:80 from memory in the background; wait until
#                                it answers. Fails if something already listens on HOST:80.
#   emulator_stop                stop the emulator this shell started (safe to call twice)
#   emulator_create_bucket NAME  create a bucket on the running emulator
#
# The emulator must listen on port 80: the official Rust client sends Host without the port and
# the emulator builds resumable-upload URLs from it. Binding port 80 needs root (or
# CAP_NET_BIND_SERVICE). Any 127.0.0.x is loopback, so parallel runs use different addresses.
#
# Variables: GCSFS_FAKE_GCS_VERSION (default v1.55.1); set by emulator_start: EMULATOR_HOST,
# EMULATOR_PID, EMULATOR_LOG (default ${TMPDIR:-/tmp}/gcsfs-emulator-HOST.log).

GCSFS_FAKE_GCS_VERSION=${GCSFS_FAKE_GCS_VERSION:-v1.55.1}

# Puts Go's binary directories on PATH (once each).
_emulator_path_add() {
  case ":$PATH:" in
    *":$1:"*) ;;
    *) [ -d "$1" ] && PATH="$1:$PATH" ;;
  esac
  export PATH
}

emulator_install() {
  _emulator_path_add /usr/local/go/bin
  if command -v go >/dev/null 2>&1; then
    local gobin
    gobin=$(go env GOBIN)
    [ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
    mkdir -p "$gobin"
    _emulator_path_add "$gobin"
  fi
  if command -v fake-gcs-server >/dev/null 2>&1; then
    return 0
  fi
  if ! command -v go >/dev/null 2>&1; then
    echo "emulator: Go is needed to install fake-gcs-server; run scripts/install-deps.sh" >&2
    return 1
  fi
  echo "emulator: installing fake-gcs-server $GCSFS_FAKE_GCS_VERSION" >&2
  go install "github.com/fsouza/fake-gcs-server@$GCSFS_FAKE_GCS_VERSION"
}

# True if something accepts TCP connections on $1:$2.
_emulator_listening() {
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

emulator_start() {
  local host=${1:?usage: emulator_start HOST}
  if [ -n "${EMULATOR_PID:-}" ] && kill -0 "$EMULATOR_PID" 2>/dev/null; then
    echo "emulator: already running (pid $EMULATOR_PID on $EMULATOR_HOST)" >&2
    return 1
  fi
  if _emulator_listening "$host" 80; then
    echo "emulator: $host:80 is already in use (a stale emulator?). Find it with" \
      "\`ss -ltnp 'sport = :80'\` and stop it, or choose another loopback address with" \
      "GCSFS_EMULATOR_HOST=127.0.0.x" >&2
    return 1
  fi
  EMULATOR_HOST=$host
  EMULATOR_LOG=${EMULATOR_LOG:-${TMPDIR:-/tmp}/gcsfs-emulator-$host.log}
  fake-gcs-server -scheme http -host "$host" -port 80 -backend memory \
    -external-url "http://$host:80" -public-host "$host" >"$EMULATOR_LOG" 2>&1 &
  EMULATOR_PID=$!
  local tries
  for ((tries = 0; tries < 100; tries++)); do
    if ! kill -0 "$EMULATOR_PID" 2>/dev/null; then
      echo "emulator: fake-gcs-server exited at start; its log ($EMULATOR_LOG):" >&2
      tail -n 20 "$EMULATOR_LOG" >&2 || true
      EMULATOR_PID=
      return 1
    fi
    if curl -fsS -o /dev/null --max-time 1 "http://$host/storage/v1/b?project=test" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "emulator: no answer from http://$host after 10 s; its log ($EMULATOR_LOG):" >&2
  tail -n 20 "$EMULATOR_LOG" >&2 || true
  emulator_stop
  return 1
}

emulator_stop() {
  local pid=${EMULATOR_PID:-}
  EMULATOR_PID=
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  local tries
  for ((tries = 0; tries < 50; tries++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

emulator_create_bucket() {
  local name=${1:?usage: emulator_create_bucket NAME}
  : "${EMULATOR_HOST:?emulator_start first}"
  curl -fsS -o /dev/null -X POST -H 'Content-Type: application/json' \
    --data "{\"name\":\"$name\"}" "http://$EMULATOR_HOST/storage/v1/b?project=test"
}
