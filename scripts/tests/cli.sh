#!/usr/bin/env bash
# The gcsfs binary's command-line contract: exit statuses and one-line errors on stderr.
# Exit status 0 if every check passed. Run by scripts/test.sh; needs only cargo.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

# All targets of the workspace, as the cargo test step builds them: the same dependency
# features, so nothing is compiled again (`-p gcsfs` alone unifies them differently).
cargo build -q --workspace --all-targets
bin="${CARGO_TARGET_DIR:-target}/debug/gcsfs"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
checks=0

# expect WANT_STATUS STDERR_PATTERN ENV... -- ARGS...: runs gcsfs with only ENV set and checks
# its exit status, that stderr is empty (pattern "") or one line matching the pattern, and
# that nothing panicked.
expect() {
  local want=$1 pattern=$2
  shift 2
  local env=()
  while [ "$1" != "--" ]; do
    env+=("$1")
    shift
  done
  shift
  local rc=0
  env -i "${env[@]}" "$bin" "$@" >"$work/out" 2>"$work/err" || rc=$?
  local lines
  lines=$(wc -l <"$work/err")
  local problem=""
  if [ "$rc" -ne "$want" ]; then
    problem="exit status $rc, want $want"
  elif grep -q panicked "$work/err"; then
    problem="panicked"
  elif [ -z "$pattern" ] && [ "$lines" -ne 0 ]; then
    problem="stderr not empty"
  elif [ -n "$pattern" ] && { [ "$lines" -ne 1 ] || ! grep -Eq "$pattern" "$work/err"; }; then
    problem="stderr is not one line matching /$pattern/"
  fi
  checks=$((checks + 1))
  if [ -n "$problem" ]; then
    failures=$((failures + 1))
    echo "FAIL: gcsfs $*: $problem"
    sed 's/^/    stderr: /' "$work/err"
  else
    echo "ok: gcsfs $* -> $rc"
  fi
}

expect 0 "" -- --version
grep -q '^gcsfs ' "$work/out" || { echo "FAIL: --version printed $(cat "$work/out")"; failures=$((failures + 1)); }
expect 0 "" -- --help
grep -q 'run' "$work/out" || { echo "FAIL: --help does not list run"; failures=$((failures + 1)); }
expect 0 "" -- run --help

# Usage errors: exit 2, one line.
expect 2 "^gcsfs: error: .*--file-mode.*octal" -- mount --file-mode 999 bkt /mnt
expect 2 "^gcsfs: error: .*--options.*unknown mount option \"bogus\"" -- mount -o ro,bogus bkt /mnt
expect 2 "^gcsfs: error: .*<BUCKET>.*<MOUNTPOINT>" -- mount
expect 2 "^gcsfs: error: .*<COMMAND>" -- run bkt /mnt
expect 2 "^gcsfs: error: .*--no-such-flag" -- mount --no-such-flag bkt /mnt
expect 2 "^gcsfs: error: .*--uid" -- mount --uid root bkt /mnt
expect 2 "^gcsfs: error: .*'x9'.*--fuse-threads" GCSFS_FUSE_THREADS=x9 -- mount bkt /mnt
expect 2 "^gcsfs: error: .*--anonymous-access.*--key-file" -- mount --anonymous-access --key-file /k bkt /mnt
expect 2 "^gcsfs: error: .*without gs://" BUCKET=gs://bkt MNT_DIR=/mnt -- run -- true
expect 2 "^gcsfs: error: .*--log-file.*must not be empty" -- --log-file "" mount bkt /mnt
expect 2 "^gcsfs: error: .*'abc'.*--prometheus-port" -- mount --prometheus-port abc bkt /mnt
expect 2 "^gcsfs: error: .*'70000'.*--prometheus-port" GCSFS_PROMETHEUS_PORT=70000 -- run bkt /mnt -- true

# Errors before anything starts: exit 1, one line naming the path.
expect 1 "^gcsfs: error: key file $work/missing.json: cannot be read: " -- \
  mount --key-file "$work/missing.json" bkt /mnt
expect 1 "^gcsfs: error: key file $work: not a regular file" GCSFS_KEY_FILE="$work" -- \
  run bkt /mnt -- true
expect 1 "^gcsfs: error: .*RUST_LOG" RUST_LOG='gcsfs=loud' -- mount bkt /mnt
expect 1 "^gcsfs: error: log file $work/no-dir/gcsfs.log: " -- \
  --log-file "$work/no-dir/gcsfs.log" mount bkt /mnt

echo "$checks checks, $failures failed"
[ "$failures" -eq 0 ]
