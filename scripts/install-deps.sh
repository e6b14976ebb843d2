#!/usr/bin/env bash
# Installs the Debian packages zoe's build, tests and demo need, skipping
# what is already installed. Safe to run again.
set -euo pipefail

PACKAGES=(
  containerd runc             # the container runtime the agent drives over gRPC
  protobuf-compiler           # containerd-client's build needs protoc
  busybox-static              # test and demo images are built from it
  docker-registry             # local OCI registry for pull tests
  containernetworking-plugins # CNI plugins for container networking
  iproute2 iptables           # network namespaces and partitions in cluster tests
  systemd                     # systemd-analyze verifies the unit files
  chromium chromium-driver    # the web UI's browser test (headless, over WebDriver)
  ca-certificates
)

# `install-deps.sh demo`: only what ./demo.sh needs.
if [ "${1:-}" = demo ]; then
  PACKAGES=(containerd runc protobuf-compiler busybox-static ca-certificates)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "installing: ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
