#!/usr/bin/env bash
# Installs what building and testing gcsfs needs, and only what is missing: Debian packages
# (fuse3, curl, ca-certificates, pkg-config, build tools, jq for docker/check.sh, Go), the Rust toolchain with rustfmt
# and clippy, fake-gcs-server and toxiproxy. Idempotent and quiet; run as root (or with sudo available)
# on Debian or Ubuntu.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

sudo=()
if [ "$(id -u)" -ne 0 ]; then
  sudo=(sudo)
fi

PATH="/usr/local/go/bin:$HOME/.cargo/bin:$PATH"

missing=()
for pkg in fuse3 curl ca-certificates pkg-config build-essential jq; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done
if ! command -v go >/dev/null 2>&1; then
  # Debian's Go fetches the newer toolchain fake-gcs-server asks for (GOTOOLCHAIN=auto) as
  # long as it is Go 1.21 or later.
  missing+=(golang-go)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: installing the Rust toolchain with rustup"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
    sh -s -- -y -q --profile minimal --component rustfmt,clippy
fi
if ! cargo fmt --version >/dev/null 2>&1; then
  rustup component add rustfmt
fi
if ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add clippy
fi

# shellcheck source=scripts/lib/emulator.sh
. scripts/lib/emulator.sh
emulator_install

# toxiproxy, for the network-fault tests (tests/fuse_faults.rs): Go's `server` binary.
toxiproxy_version=v2.12.0
gobin=$(go env GOBIN)
[ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
if [ ! -x "$gobin/server" ]; then
  echo "install-deps: installing toxiproxy $toxiproxy_version"
  go install "github.com/Shopify/toxiproxy/v2/cmd/server@$toxiproxy_version"
fi
