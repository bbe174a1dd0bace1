#!/bin/sh
# Creates placeholder sources for the workspace members so that `cargo build` can compile every
# dependency from the manifests and Cargo.lock alone: the Dockerfile's cached dependency layer.
# The real sources overwrite these in the next layer. Run from the repository root.
# docker/check.sh verifies that the stubbed workspace has the same lib/bin targets as the real one.
set -eu

stub() {
    [ -e "$1" ] && return 0
    mkdir -p "$(dirname "$1")"
    echo 'fn main() {}' >"$1"
}

for manifest in crates/*/Cargo.toml; do
    dir=$(dirname "$manifest")
    # Targets declared with an explicit `path = "..."` ([lib], [[bin]], [[bench]], build = ... aside).
    sed -n 's/^[[:space:]]*path[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$manifest" |
        while read -r path; do stub "$dir/$path"; done
    # The conventional library, and the conventional binary unless binaries are declared.
    stub "$dir/src/lib.rs"
    grep -q '^\[\[bin\]\]' "$manifest" || stub "$dir/src/main.rs"
done
