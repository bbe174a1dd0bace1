#!/usr/bin/env bash
# Checks docker/Dockerfile without a Docker engine:
#   1. stages: every `--from=` names an earlier stage; the last stage has an ENTRYPOINT;
#   2. every `COPY` source from the build context exists in the repository and is allowed by
#      docker/Dockerfile.dockerignore, and every crates/*/Cargo.toml is copied for the dependency layer;
#   3. the stub sources (docker/stub-sources.sh) give the same lib/bin targets as the real workspace;
#   4. the Dockerfile's cargo build (its CARGO_BUILD_ARGS, extracted, not repeated here) succeeds locally;
#   5. the binaries the builder installs from target/release exist there, are the ones copied into the
#      runtime stage, and the ENTRYPOINT runs them.
# Usage: docker/check.sh   (from anywhere; CHECK_SKIP_BUILD=1 skips step 4 and checks step 5 only if
# the release binaries already exist). Needs cargo and jq.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dockerfile="$repo/docker/Dockerfile"
ignore="$repo/docker/Dockerfile.dockerignore"
cd "$repo"
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
ok() { echo "ok: $*"; }
# Says ok only if nothing failed since the last `mark`.
mark() { marked=$failures; }
okif() { if [ "$failures" -eq "$marked" ]; then ok "$@"; fi; }
marked=0
command -v jq >/dev/null || { echo "check.sh needs jq" >&2; exit 2; }

# The Dockerfile as logical instructions: continuations joined, comments and blank lines dropped.
instructions=$(awk '
    /^[[:space:]]*#/ { next }
    { line = line $0 }
    /\\[[:space:]]*$/ { sub(/\\[[:space:]]*$/, "", line); next }
    { if (line ~ /[^[:space:]]/) print line; line = "" }
' "$dockerfile")

# 1. Stages.
mark
stages=()
while read -r keyword rest; do
    case "${keyword^^}" in
    FROM)
        name=$(sed -n 's/.*[[:space:]][Aa][Ss][[:space:]]\+\([^[:space:]]\+\)$/\1/p' <<<"$rest")
        stages+=("${name:-stage${#stages[@]}}")
        ;;
    COPY | RUN)
        from=$(grep -o -- '--from=[^[:space:]]*' <<<"$rest" | cut -d= -f2 || true)
        if [ -n "$from" ] && [[ " ${stages[*]} " != *" $from "* ]]; then
            fail "--from=$from does not name an earlier stage (${stages[*]})"
        fi
        ;;
    esac
done <<<"$instructions"
[ "${#stages[@]}" -ge 2 ] || fail "expected a multi-stage build, found ${#stages[@]} stage(s)"
last_stage=$(awk 'toupper($1) == "FROM" { n = NR } END { print n }' <<<"$instructions")
entrypoint=$(tail -n +"$last_stage" <<<"$instructions" | grep -i '^ENTRYPOINT' | tail -1 || true)
[ -n "$entrypoint" ] || fail "the last stage has no ENTRYPOINT"
okif "stages: ${stages[*]}"

# 2. COPY sources from the build context.
mark
allowed=$(sed -n 's/^!\(.*\)$/\1/p' "$ignore")
while read -r keyword rest; do
    [ "${keyword^^}" = COPY ] || continue
    grep -q -- '--from=' <<<"$rest" && continue
    read -r -a words <<<"$rest"
    args=()
    for w in "${words[@]}"; do [[ $w == --* ]] || args+=("$w"); done
    for src in "${args[@]:0:${#args[@]}-1}"; do
        [ -e "$src" ] || { fail "COPY source $src does not exist in the repository"; continue; }
        covered=no
        while read -r a; do
            [ -n "$a" ] && { [ "$src" = "$a" ] || [[ $src == "$a"/* ]]; } && covered=yes
        done <<<"$allowed"
        [ "$covered" = yes ] || fail "COPY source $src is excluded by $ignore"
    done
done <<<"$instructions"
# The dependency layer needs every member's manifest (copied one by one, before the sources).
for manifest in crates/*/Cargo.toml; do
    grep -qi "^COPY $manifest " <<<"$instructions" || fail "$manifest is not copied for the dependency layer"
done
# ... and the patched dependencies Cargo.toml points at (vendor/README.md).
[ ! -d vendor ] || grep -qi "^COPY vendor vendor$" <<<"$instructions" || fail "vendor/ is not copied for the dependency layer"
okif "COPY sources exist and are in the build context" "(every crate manifest and vendor/ included)"

# 3. Stub sources: same lib/bin targets as the real workspace.
targets() { cargo metadata --offline --no-deps --format-version 1 --manifest-path "$1" |
    jq -r '.packages[] | .name as $p | .targets[] | select(.kind[0] == "lib" or .kind[0] == "bin")
           | "\($p) \(.kind[0]) \(.name)"' | sort; }
stubdir=$(mktemp -d)
trap 'rm -rf "$stubdir"' EXIT
cp Cargo.toml Cargo.lock "$stubdir/"
[ ! -d vendor ] || cp -r vendor "$stubdir/"
for manifest in crates/*/Cargo.toml; do
    mkdir -p "$stubdir/$(dirname "$manifest")"
    cp "$manifest" "$stubdir/$manifest"
done
(cd "$stubdir" && sh "$repo/docker/stub-sources.sh")
if real=$(targets Cargo.toml) && stubbed=$(targets "$stubdir/Cargo.toml") && [ "$real" = "$stubbed" ]; then
    ok "stub sources give the real targets: $(tr '\n' ';' <<<"$real")"
else
    fail "stub sources give other targets than the workspace:"$'\n'"real:"$'\n'"${real:-?}"$'\n'"stubbed:"$'\n'"${stubbed:-?}"
fi

# 4. The Dockerfile's cargo build, run locally with the same arguments.
build_args=$(sed -n 's/^ARG CARGO_BUILD_ARGS="\(.*\)"$/\1/p' <<<"$instructions")
[ "$(grep -c '^ARG CARGO_BUILD_ARGS=' <<<"$instructions")" = 1 ] || fail "expected one ARG CARGO_BUILD_ARGS"
if ! grep -q -- '--release' <<<"$build_args" || ! grep -q -- '--locked' <<<"$build_args"; then
    fail "CARGO_BUILD_ARGS ($build_args) must contain --release and --locked"
fi
# shellcheck disable=SC2016 # the literal ${CARGO_BUILD_ARGS} as written in the Dockerfile
[ "$(grep -c 'cargo build' <<<"$instructions")" = "$(grep -c 'cargo build ${CARGO_BUILD_ARGS}' <<<"$instructions")" ] ||
    fail "every cargo build in the Dockerfile must use \${CARGO_BUILD_ARGS}"
target_dir=$(cargo metadata --offline --no-deps --format-version 1 | jq -r .target_directory)
if [ "${CHECK_SKIP_BUILD:-0}" = 1 ]; then
    echo "skip: cargo build $build_args (CHECK_SKIP_BUILD=1)"
else
    # shellcheck disable=SC2086 # the arguments are meant to be split, as in the Dockerfile's RUN
    if cargo build $build_args; then ok "cargo build $build_args"; else fail "cargo build $build_args"; fi
fi

# 5. Binaries: installed from target/release, copied into the runtime stage, run by the ENTRYPOINT.
mark
installed=$(grep -o 'target/release/[A-Za-z0-9_-]*' <<<"$instructions" | sort -u)
[ -n "$installed" ] || fail "the builder installs no target/release binary"
copied=$(grep -i '^COPY --from=' <<<"$instructions" | grep -o '/out/[A-Za-z0-9_-]*' | sed 's#/out/##' | sort -u)
for bin in $installed; do
    name=${bin#target/release/}
    if [ "${CHECK_SKIP_BUILD:-0}" = 1 ] && [ ! -e "$target_dir/release/$name" ]; then
        echo "skip: $target_dir/release/$name not built"
    elif [ -x "$target_dir/release/$name" ] && [ -f "$target_dir/release/$name" ]; then
        ok "$bin exists ($(du -h "$target_dir/release/$name" | cut -f1))"
    else
        fail "$bin is not an executable in $target_dir/release"
    fi
    grep -qx "$name" <<<"$copied" || fail "$name is built but not copied into the runtime stage"
done
for name in $copied; do
    grep -qx "target/release/$name" <<<"$installed" || fail "/out/$name is copied but not installed by the builder"
done
for exe in $(grep -o '"/usr/local/bin/[^"]*"' <<<"$entrypoint" | tr -d '"'); do
    grep -qx "${exe#/usr/local/bin/}" <<<"$copied" || fail "ENTRYPOINT runs $exe, which is not copied"
done
okif "binaries copied and run by the entrypoint: ${entrypoint#* }"

sh -n docker/stub-sources.sh || fail "docker/stub-sources.sh has a syntax error"
if [ "$failures" -gt 0 ]; then
    echo "$failures check(s) failed" >&2
    exit 1
fi
echo "all Dockerfile checks passed"
