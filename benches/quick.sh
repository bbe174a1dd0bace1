#!/usr/bin/env bash
# Keeps the comparison harness alive: benches/compare --quick mounts gcsfs, gcsfuse and rclone
# on one emulated bucket behind a latency proxy, runs every workload once at tiny sizes, and
# fails unless every mount produced a number for every workload (how fast is not checked).
# Needs root and /dev/fuse (skips with a reason otherwise); installs the pinned tools if missing.
# Addresses: GCSFS_BENCH_EMULATOR_HOST (default 127.0.0.71), GCSFS_BENCH_PROXY_HOST (127.0.0.72),
# GCSFS_BENCH_TOXIPROXY_PORT (toxiproxy API on 127.0.0.1, 8474): set them to run beside a full run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "skipped: benches/compare needs root (FUSE mounts, port 80)"
  exit 0
fi
if [ ! -e /dev/fuse ]; then
  echo "skipped: no /dev/fuse"
  exit 0
fi
PATH="$HOME/.cargo/bin:$PATH"
exec python3 benches/compare --quick \
  --emulator-host "${GCSFS_BENCH_EMULATOR_HOST:-127.0.0.71}" \
  --proxy-host "${GCSFS_BENCH_PROXY_HOST:-127.0.0.72}" \
  --toxiproxy-port "${GCSFS_BENCH_TOXIPROXY_PORT:-8474}"
