#!/usr/bin/env bash
# Runs zoe's whole test suite against real daemons: installs what is missing,
# starts a private containerd (own root, state and socket under a temp dir),
# runs every test with nextest, and stops containerd whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
if [ -d "$HOME/.cargo/bin" ]; then export PATH="$HOME/.cargo/bin:$PATH"; fi

echo "==> building" >&2
cargo build --workspace --all-targets --locked 2>&1 | tail -n 3 >&2
# Cluster tests run this binary as coordinator and agent processes.
export ZOE_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/zoe"

work=$(mktemp -d /tmp/zoe-test.XXXXXX)
# Containers run in user namespaces: their rootfs, under containerd's state
# in here, must be reachable by the owner's uid (mktemp -d makes 0700).
chmod 0711 "$work"
cleanup() {
  scripts/private-containerd.sh stop "$work/containerd" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "==> starting a private containerd under $work/containerd" >&2
ZOE_TEST_CONTAINERD=$(scripts/private-containerd.sh start "$work/containerd")
export ZOE_TEST_CONTAINERD

echo "==> running the tests" >&2
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  cargo test --workspace --locked --no-fail-fast "$@"
fi
