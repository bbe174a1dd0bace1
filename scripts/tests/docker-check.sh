#!/usr/bin/env bash
# The container image's build, exercised without a Docker engine:
#   1. docker/check.sh: the Dockerfile's stages, COPY sources and stub sources, and its cargo build
#      (the same CARGO_BUILD_ARGS: the release gcsfs and app the image ships);
#   2. `gcsfs run` as PID 1 (tests/run_pid1.rs) with that release gcsfs, on the emulator.
# Run by scripts/test.sh (which sets GCSFS_TEST_ENDPOINT); CHECK_SKIP_BUILD=1 is passed through
# to docker/check.sh. Exit status 0 if both passed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

echo "--- docker/check.sh"
bash docker/check.sh

echo "--- gcsfs run as PID 1 with the release binary"
target_dir=$(cargo metadata --offline --no-deps --format-version 1 | jq -r .target_directory)
release="$target_dir/release/gcsfs"
if [ ! -x "$release" ]; then
  echo "skipped: $release was not built (CHECK_SKIP_BUILD=1?)"
  exit 0
fi
if [ -z "${GCSFS_TEST_ENDPOINT:-}" ]; then
  echo "skipped: GCSFS_TEST_ENDPOINT is unset (scripts/test.sh sets it)"
  exit 0
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
rc=0
# --workspace, as the cargo test step builds: the same dependency features, so nothing is
# rebuilt (with -p gcsfs, features unify differently and every dependency is compiled again).
GCSFS_RUN_TEST_RELEASE_BIN="$release" \
  cargo test --workspace --test run_pid1 -- --exact pid1_release_binary --show-output >"$out" 2>&1 || rc=$?
cat "$out"
if [ "$rc" -ne 0 ]; then
  echo "FAIL: the PID-1 test failed with $release" >&2
  exit "$rc"
fi
if grep -q '^skipped:' "$out"; then
  echo "note: the PID-1 test skipped itself (see above)"
else
  echo "ok: gcsfs run as PID 1 with $release"
fi
