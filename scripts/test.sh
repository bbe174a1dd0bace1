#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run):
#   install missing dependencies, start the GCS emulator on $GCSFS_EMULATOR_HOST:80
#   (default 127.0.0.9) with GCSFS_TEST_ENDPOINT pointing at it, then
#   cargo fmt --check, cargo clippy -D warnings, cargo test (all targets, then doc tests),
#   every scripts/tests/*.sh, and benches/quick.sh (the comparison harness at tiny sizes).
# A failing check does not stop the later ones; the exit status is that of the first failure.
# The emulator is always stopped on exit.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

host=${GCSFS_EMULATOR_HOST:-127.0.0.9}
log_dir=${GCSFS_TEST_LOG_DIR:-$repo/target/test-logs}
mkdir -p "$log_dir"
export EMULATOR_LOG="$log_dir/emulator.log"
PATH="$HOME/.cargo/bin:$PATH"

# shellcheck source=scripts/lib/emulator.sh
. scripts/lib/emulator.sh

trap emulator_stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

status=0
summary=()

# step NAME COMMAND...: runs COMMAND, prints its time, remembers the first failure.
step() {
  local name=$1
  shift
  echo "==> $name"
  local start=$SECONDS rc=0
  "$@" || rc=$?
  local took=$((SECONDS - start)) result=ok
  if [ "$rc" -ne 0 ]; then
    result="FAILED (exit $rc)"
    [ "$status" -ne 0 ] || status=$rc
  fi
  echo "<== $name: $result in ${took}s"
  summary+=("$(printf '%-34s %5ss  %s' "$name" "$took" "$result")")
}

# Like step, but a failure ends the run: nothing after it can work.
required_step() {
  step "$@"
  if [ "$status" -ne 0 ]; then
    echo "test.sh: '$1' failed; stopping" >&2
    exit "$status"
  fi
}

# cargo test with its output kept, then the per-target result lines, so CI logs show at a
# glance which suites ran (including the emulator-backed ones), and which tests skipped.
# shellcheck disable=SC2317 # invoked through step
cargo_test() {
  local out="$log_dir/$1.log"
  shift
  local rc=0
  cargo test "$@" 2>&1 | tee "$out" || rc=$?
  echo "--- cargo test $* summary"
  awk '/^ *Running |^ *Doc-tests /{target=$0; sub(/^ +/, "", target)}
       /^test result:/{print "    " target " -> " $0}' "$out"
  # Tests that skip print "skipped: <reason>" (shown by --show-output); list them by name.
  awk '/^---- .* std(out|err) ----$/{name=$2} tolower($0) ~ /^skipped:/{print "    " name ": " $0}' \
    "$out" >"$out.skipped"
  if [ -s "$out.skipped" ]; then
    echo "--- tests that skipped (in part):"
    cat "$out.skipped"
  fi
  return "$rc"
}

# (Steps run in an `||` context, where `set -e` does not apply: check each command.)
# shellcheck disable=SC2317 # invoked through step
start_emulator() {
  emulator_install || return
  emulator_start "$host" || return
  echo "emulator: fake-gcs-server on http://$host (pid $EMULATOR_PID, log $EMULATOR_LOG)"
}

# A clean clone gains nothing from incremental compilation, which would add gigabytes of
# target/ (the suite builds debug, test and release profiles): off in CI unless asked for.
if [ -n "${CI:-}" ]; then
  export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
fi
# The build needs about 6 GiB of target/; a full disk shows up later as every cargo step
# failing at once, so say it first.
free_kib=$(df -Pk "$repo" | awk 'NR==2 {print $4}')
echo "test.sh: $((free_kib / 1024 / 1024)) GiB free for $repo/target"
if [ "${free_kib:-0}" -lt $((8 * 1024 * 1024)) ]; then
  echo "test.sh: warning: under 8 GiB free; the build may fail with 'No space left on device'" >&2
fi

required_step "install dependencies" bash scripts/install-deps.sh
required_step "start emulator" start_emulator
export GCSFS_TEST_ENDPOINT="http://$host"

step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
# Every test binary runs even when one fails (--no-fail-fast), and a test whose prerequisite
# (emulator, FUSE, root, a tool) is missing fails instead of skipping.
export GCSFS_TESTS_REQUIRED=1
step "cargo test" cargo_test cargo-test --workspace --all-targets --no-fail-fast -- --show-output
step "cargo test --doc" cargo_test cargo-test-doc --workspace --doc
for script in scripts/tests/*.sh; do
  [ -e "$script" ] || continue
  step "$script" bash "$script"
done
# The benchmark harness at tiny sizes: every mount must produce a number for every workload.
step "benches/quick.sh" bash benches/quick.sh

echo
echo "=== test.sh summary (emulator http://$host)"
printf '    %s\n' "${summary[@]}"
if [ "$status" -eq 0 ]; then
  echo "=== all passed in ${SECONDS}s"
else
  echo "=== FAILED (exit $status) after ${SECONDS}s"
fi
exit "$status"
