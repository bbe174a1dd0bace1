#!/usr/bin/env bash
# Mounts a bucket of a local fake-gcs-server with gcsfs from the command line, writes a file through
# the mount, lists the bucket with curl, reads the object back, and unmounts.
#
#   examples/emulator.sh            # as root (or with fusermount3 installed)
#
# Environment (defaults): GCS_HOST (127.0.0.9; the emulator listens on port 80 because the GCS client
# sends Host without a port), BUCKET (demo), GCSFS (target/release/gcsfs if built, else gcsfs on PATH),
# FAKE_GCS (~/go/bin/fake-gcs-server; `go install github.com/fsouza/fake-gcs-server@v1.55.1`).
# Interface used: gcsfs mount [--foreground] [--custom-endpoint URL] [--anonymous-access] BUCKET DIR
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
host=${GCS_HOST:-127.0.0.9}
bucket=${BUCKET:-demo}
fake_gcs=${FAKE_GCS:-$HOME/go/bin/fake-gcs-server}
if [ -n "${GCSFS:-}" ]; then
    gcsfs=$GCSFS
elif [ -x "$repo/target/release/gcsfs" ]; then
    gcsfs=$repo/target/release/gcsfs
else
    gcsfs=gcsfs
fi
endpoint=http://$host

work=$(mktemp -d)
mnt=$work/mnt
mkdir -p "$mnt"
emulator_pid=
gcsfs_pid=
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    if mountpoint -q "$mnt" 2>/dev/null; then
        fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt" || true
    fi
    if [ -n "$gcsfs_pid" ]; then kill "$gcsfs_pid" 2>/dev/null || true; fi
    if [ -n "$emulator_pid" ]; then kill "$emulator_pid" 2>/dev/null || true; fi
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Polls `$@` every 0.1 s, up to 10 s.
wait_for() {
    for _ in $(seq 100); do
        "$@" && return 0
        sleep 0.1
    done
    return 1
}

echo "== starting fake-gcs-server on $endpoint"
"$fake_gcs" -scheme http -host "$host" -port 80 -backend memory \
    -external-url "$endpoint:80" -public-host "$host" >"$work/emulator.log" 2>&1 &
emulator_pid=$!
wait_for curl -fs -o /dev/null "$endpoint/storage/v1/b?project=test" ||
    { cat "$work/emulator.log" >&2; echo "emulator did not start" >&2; exit 1; }

echo "== creating bucket $bucket"
curl -fsS -X POST "$endpoint/storage/v1/b?project=test" \
    -H 'Content-Type: application/json' -d "{\"name\":\"$bucket\"}" >/dev/null

echo "== mounting gs://$bucket at $mnt with $gcsfs"
"$gcsfs" mount --foreground --custom-endpoint "$endpoint" --anonymous-access "$bucket" "$mnt" &
gcsfs_pid=$!
for _ in $(seq 100); do
    mountpoint -q "$mnt" && break
    if ! kill -0 "$gcsfs_pid" 2>/dev/null; then
        status=0
        wait "$gcsfs_pid" || status=$?
        gcsfs_pid=
        echo "gcsfs exited with status $status before mounting" >&2
        exit 1
    fi
    sleep 0.1
done
mountpoint -q "$mnt" || { echo "gcsfs did not mount $mnt within 10 s" >&2; exit 1; }

echo "== writing hello.txt through the mount (uploaded on close)"
message="hello from gcsfs at $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "$message" >"$mnt/hello.txt"
ls -l "$mnt"

echo "== objects in gs://$bucket (JSON API)"
curl -fsS "$endpoint/storage/v1/b/$bucket/o" | tee "$work/list.json"
echo
grep -q '"name": *"hello.txt"' "$work/list.json" || { echo "hello.txt is not in the bucket" >&2; exit 1; }
stored=$(curl -fsS "$endpoint/download/storage/v1/b/$bucket/o/hello.txt?alt=media")
[ "$stored" = "$message" ] || { echo "object holds '$stored', expected '$message'" >&2; exit 1; }
echo "hello.txt in the bucket holds: $stored"

echo "== unmounting"
fusermount3 -u "$mnt" 2>/dev/null || umount "$mnt"
status=0
wait "$gcsfs_pid" || status=$?
gcsfs_pid=
echo "gcsfs exited with status $status"
exit "$status"
