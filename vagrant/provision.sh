#!/usr/bin/env bash
# Provisions one Vagrant box (run by the Vagrantfile as root inside it):
# installs containerd on agents, then the binary, certificates, config and
# systemd unit with systemd/install.sh.
#
#   provision.sh coordinator|agent NAME
set -euo pipefail
role="$1"
name="$2"
repo=/zoe                    # the repository, synced by the Vagrantfile
gen="$repo/vagrant/.generated"
[ -x "$gen/zoe" ] || { echo "$gen/zoe missing: run vagrant/prepare.sh on the host first" >&2; exit 1; }
if [ "$role" = agent ]; then
  export DEBIAN_FRONTEND=noninteractive
  if ! command -v containerd >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends containerd runc
  fi
  systemctl enable --now containerd
fi
"$repo/systemd/install.sh" "$role" --binary "$gen/zoe" --certs "$gen/tls" --name "$name" --config "$gen/$name.toml" --force
