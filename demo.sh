#!/usr/bin/env bash
# The README's first command. On a fresh Debian 12 machine (root, or a user
# with sudo; cargo is the one prerequisite) it installs what is missing,
# builds zoe, starts a one-node cluster (`zoe dev`) in the background, loads
# a sample image built from busybox-static (no registry, no internet),
# runs the example ZApps, and leaves the cluster up. Running it again
# reuses the running cluster and the long-running example.
#
#   ZOE_DEMO_DIR  where the cluster keeps its state, log and pid file [.demo]
#   ZOE_DEMO_API  the API address [127.0.0.1:5001]
#   ZOE_BIN       use this zoe binary instead of building one
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
DIR=${ZOE_DEMO_DIR:-$ROOT/.demo}
API=${ZOE_DEMO_API:-127.0.0.1:5001}
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

step() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }

step "installing what is missing (containerd, runc, protobuf-compiler, busybox-static)"
scripts/install-deps.sh demo
if [ -d "$HOME/.cargo/bin" ]; then export PATH="$HOME/.cargo/bin:$PATH"; fi
command -v cargo >/dev/null || { echo "cargo is needed: see https://rustup.rs" >&2; exit 1; }

if [ -n "${ZOE_BIN:-}" ]; then
  ZOE=$(cd "$(dirname "$ZOE_BIN")" && pwd)/$(basename "$ZOE_BIN")
else
  step "building zoe (release)"
  cargo build --release --locked -p zoe-cli
  ZOE="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release/zoe"
fi

mkdir -p "$DIR"
PIDFILE="$DIR/zoe-dev.pid"
LOG="$DIR/zoe-dev.log"
running() { [ -f "$PIDFILE" ] && $SUDO kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
if running; then
  step "zoe dev is already running (pid $(cat "$PIDFILE")); reusing it"
else
  step "starting zoe dev in the background (log: $LOG)"
  # Its own session, so it outlives this script and the terminal's Ctrl-C;
  # the inner shell writes its pid and becomes zoe.
  $SUDO setsid sh -c 'echo $$ > "$1"; shift; exec "$@"' _ "$PIDFILE" \
    "$ZOE" dev --data-dir "$DIR/data" --api "$API" >"$LOG" 2>&1 </dev/null &
  for _ in $(seq 1 120); do
    if grep -q "zoe dev is up" "$LOG" 2>/dev/null; then break; fi
    if ! running && [ -f "$PIDFILE" ]; then
      echo "zoe dev exited; its log:" >&2; tail -30 "$LOG" >&2; exit 1
    fi
    sleep 0.5
  done
  grep -q "zoe dev is up" "$LOG" || { echo "zoe dev did not come up in 60 s; its log:" >&2; tail -30 "$LOG" >&2; exit 1; }
fi
TOKEN_FILE="$DIR/data/admin.token"
export ZOE_ADDR="http://$API"
ZOE_TOKEN=$($SUDO cat "$TOKEN_FILE")
export ZOE_TOKEN
"$ZOE" node ls

step "building the sample image (busybox from busybox-static) and loading it"
"$ZOE" image build-sample --out "$DIR/busybox-oci.tar"
"$ZOE" image load "$DIR/busybox-oci.tar"

step "running the batch example (examples/zapps/hello-batch.json) to its end"
"$ZOE" exec start demo-hello examples/zapps/hello-batch.json --wait done --follow

step "running the long-running example (examples/zapps/web-service.json)"
active=$("$ZOE" exec ls --name demo-web --status submitted,queued,starting,running | awk 'NR == 2 { print $1 }')
if [ -n "$active" ]; then
  echo "demo-web is already active as execution $active" >&2
  WEB=$active
else
  "$ZOE" exec start demo-web examples/zapps/web-service.json --wait running 2> >(tee "$DIR/start.err" >&2)
  WEB=$(sed -n 's/^execution \([0-9]*\) submitted$/\1/p' "$DIR/start.err" | head -1)
fi
"$ZOE" exec get "$WEB"
"$ZOE" exec endpoints "$WEB"
URL=$("$ZOE" exec endpoints "$WEB" | awk 'NR == 2 { print $NF }')
PROXIED=$("$ZOE" exec endpoints "$WEB" | awk 'NR == 2 { print $(NF - 1) }')
if [ -n "$URL" ]; then
  for _ in $(seq 1 20); do
    if page=$(busybox wget -qO- "$URL" 2>/dev/null); then echo "GET $URL: $page"; break; fi
    sleep 0.5
  done
fi
case "$PROXIED" in
  http*) # through the service proxy, as a script does: with the token
    page=$(busybox wget -qO- --header "Authorization: Bearer $ZOE_TOKEN" "$PROXIED" 2>/dev/null) &&
      echo "GET $PROXIED (service proxy): $page" ;;
esac

cat >&2 <<MSG

==> the cluster is up: API $ZOE_ADDR, state in $DIR/data, log $LOG

    export PATH="$(dirname "$ZOE"):\$PATH" ZOE_ADDR=$ZOE_ADDR ZOE_TOKEN=\$(${SUDO:+sudo }cat $TOKEN_FILE)
    web UI: $ZOE_ADDR/ui/ (log in with the admin token); a service's page: its execution's "Open" link
    zoe exec ls                      # executions (demo-web keeps running)
    zoe node ls; zoe stats           # the node and the scheduler
    zoe exec terminate $WEB --wait     # stop the web example
    ${SUDO:+sudo }kill \$(cat $PIDFILE)    # stop the cluster (./demo.sh starts it again, same state)
MSG
