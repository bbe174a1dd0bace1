#!/usr/bin/env bash
# The demo, from a fresh clone: install what is missing, build, start the Cloud Storage emulator
# with a bucket, run `gcsfs run … -- app` (the container's entrypoint, here in the background),
# create a few files through the app's HTTP API, look at them in the bucket, stop it with SIGTERM
# like Cloud Run does, and show the exit status. Leaves nothing running.
#
# Needs root (FUSE mounts; the emulator listens on port 80). Settings:
#   GCSFS_EMULATOR_HOST  emulator address (default 127.0.0.9; any 127.0.0.x)
#   PORT                 the app's port (default 8080; the app listens on all interfaces)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
PATH="$HOME/.cargo/bin:$PATH"

host=${GCSFS_EMULATOR_HOST:-127.0.0.9}
port=${PORT:-8080}
bucket=demo-bucket
step() { echo; echo "==> $*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "demo.sh: run as root (FUSE mounts and the emulator's port 80 need it)" >&2
  exit 1
fi

# shellcheck source=scripts/lib/emulator.sh
. scripts/lib/emulator.sh

work=$(mktemp -d)
mnt="$work/mnt"
log="$work/gcsfs-run.log"
mkdir -p "$mnt"
export EMULATOR_LOG="$work/emulator.log"
gcsfs_pid=

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
  local rc=$?
  if [ -n "$gcsfs_pid" ] && kill -0 "$gcsfs_pid" 2>/dev/null; then
    kill -TERM "$gcsfs_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$gcsfs_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$gcsfs_pid" 2>/dev/null || true
  fi
  if grep -q " $mnt " /proc/self/mounts 2>/dev/null; then
    fusermount3 -u -z "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
  fi
  emulator_stop
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step "Installing what is missing (Debian packages, Rust, fake-gcs-server): scripts/install-deps.sh"
bash scripts/install-deps.sh

# Debug build: several times faster to compile than the release profile (thin LTO), and the
# dependencies are optimised anyway (opt-level 1), which is plenty for a demo.
step "Building gcsfs and app (debug profile: the quickest build)"
cargo build -p gcsfs -p app
target_dir=$(cargo metadata --offline --no-deps --format-version 1 |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
gcsfs="$target_dir/debug/gcsfs"
app="$target_dir/debug/app"

step "Starting the Cloud Storage emulator (fake-gcs-server) on http://$host with bucket $bucket"
emulator_install
emulator_start "$host"
emulator_create_bucket "$bucket"
echo "emulator: pid $EMULATOR_PID, log $EMULATOR_LOG"

if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  echo "demo.sh: port $port is in use; choose another with PORT=..." >&2
  exit 1
fi

step "Starting: PORT=$port gcsfs run --custom-endpoint http://$host --anonymous-access $bucket $mnt -- app"
echo "(gcsfs mounts the bucket, then starts app with MNT_DIR=$mnt; its log: $log)"
PORT=$port "$gcsfs" run --log-format text --custom-endpoint "http://$host" --anonymous-access \
  "$bucket" "$mnt" -- "$app" >"$log" 2>&1 &
gcsfs_pid=$!
for _ in $(seq 300); do
  curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null && break
  if ! kill -0 "$gcsfs_pid" 2>/dev/null; then
    echo "demo.sh: gcsfs run exited early; its log:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/"

step "Calling /create three times (each creates a timestamped file in the mount)"
for _ in 1 2 3; do
  curl -fsS -X POST "http://127.0.0.1:$port/create"
  echo
done

step "Listing the bucket through the emulator's JSON API: GET /storage/v1/b/$bucket/o"
listing=$(curl -fsS "http://$host/storage/v1/b/$bucket/o")
# (Only names and sizes, without jq: the emulator ignores `fields=` and answers at length.)
names=$(grep -o '"name": *"[^"]*"' <<<"$listing" | sed 's/.*: *"\(.*\)"/\1/')
sizes=$(grep -o '"size": *"[^"]*"' <<<"$listing" | sed 's/.*: *"\(.*\)"/\1/')
paste <(echo "$names") <(echo "$sizes") | while read -r name size; do
  echo "    gs://$bucket/$name  ($size bytes)"
done
first=$(head -n 1 <<<"$names")

step "The content of $first, read from the bucket (not the mount)"
curl -fsS "http://$host/download/storage/v1/b/$bucket/o/$first?alt=media"

step "Sending SIGTERM to gcsfs run (pid $gcsfs_pid), as Cloud Run does to stop an instance"
kill -TERM "$gcsfs_pid"
status=0
wait "$gcsfs_pid" || status=$?
gcsfs_pid=
echo "gcsfs run exited with status $status (the app's own status; 0 = clean)"
echo "Its log (gcsfs and app):"
sed 's/^/    /' "$log"
if grep -q " $mnt " /proc/self/mounts; then
  echo "demo.sh: $mnt is still mounted" >&2
  exit 1
fi
echo "$mnt is unmounted."

step "Done: exit status $status"
exit "$status"
