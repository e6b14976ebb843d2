#!/usr/bin/env bash
# The README's first command. Sets up a fresh Debian 12 machine and shows zoe.
# Today it builds zoe and checks the example ZApps; it grows into the full demo
# (a dev cluster running a sample ZApp) as the cluster pieces land.
set -euo pipefail
cd "$(dirname "$0")"

scripts/install-deps.sh
if [ -d "$HOME/.cargo/bin" ]; then export PATH="$HOME/.cargo/bin:$PATH"; fi

echo "==> building zoe (release)" >&2
cargo build --release --locked -p zoe-cli
ZOE=target/release/zoe

echo "==> validating the example ZApps" >&2
$ZOE zapp validate examples/zapps/*.json

echo "==> and the invalid ones, each rejected with a JSON pointer:" >&2
for f in examples/zapps/invalid/*.json; do
  $ZOE zapp validate "$f" || true
done
