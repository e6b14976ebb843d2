#!/usr/bin/env bash
# Prepares what the Vagrant cluster is provisioned from, on the host:
# the zoe binary, a CA and every host's certificate (made with `zoe certs`),
# and each host's configuration (shaped like systemd/*.toml).
#
#   vagrant/prepare.sh [OUT]     # OUT defaults to vagrant/.generated
#
# ZOE=/path/to/zoe uses that binary instead of building the release one.
# Run again after a rebuild: certificates and configs are kept, the
# binary is replaced.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/.generated}"
mkdir -p "$out/tls"
out="$(cd "$out" && pwd)"

if [ -z "${ZOE:-}" ]; then
  (cd "$here/.." && cargo build --release --locked -p zoe-cli)
  ZOE="$(cd "$here/.." && cd "${CARGO_TARGET_DIR:-target}" && pwd)/release/zoe"
fi
install -m 0755 "$ZOE" "$out/zoe.tmp" && mv -f "$out/zoe.tmp" "$out/zoe"
zoe="$out/zoe"

# The private network of the Vagrantfile: keep the two in step.
COORDINATORS=("c1 192.168.56.11" "c2 192.168.56.12" "c3 192.168.56.13")
AGENTS=("node1 192.168.56.21" "node2 192.168.56.22")

if [ ! -f "$out/tls/ca.pem" ]; then
  "$zoe" certs ca --out "$out/ca" --cluster zoe-vagrant
  cp "$out/ca/ca.pem" "$out/tls/ca.pem"
fi
issue() { # issue ROLE NAME [IP]
  [ -f "$out/tls/$2.pem" ] && return 0
  "$zoe" certs issue --ca "$out/ca" --role "$1" --name "$2" ${3:+--ip "$3"} --out "$out/tls"
}
for c in "${COORDINATORS[@]}"; do set -- $c; issue coordinator "$1" "$2"; done
for a in "${AGENTS[@]}"; do set -- $a; issue agent "$1" "$2"; done
issue client admin

peers=""
agent_addrs=""
i=0
for c in "${COORDINATORS[@]}"; do
  set -- $c; i=$((i + 1))
  peers+=$'\n'"[[peers]]"$'\n'"id = $i"$'\n'"addr = \"$2:4647\""$'\n'"name = \"$1\""$'\n'
  agent_addrs+="${agent_addrs:+, }\"$1@$2:4648\""
done

i=0
for c in "${COORDINATORS[@]}"; do
  set -- $c; i=$((i + 1))
  cat > "$out/$1.toml" <<TOML
# /etc/zoe/coordinator.toml on $1 (written by vagrant/prepare.sh; compare systemd/coordinator.toml)
id = $i
name = "$1"
listen = "0.0.0.0:4647"
advertise = "$2:4647"
data_dir = "/var/lib/zoe/coordinator"

[tls]
ca = "/etc/zoe/tls/ca.pem"
cert = "/etc/zoe/tls/coordinator.pem"
key = "/etc/zoe/tls/coordinator-key.pem"
$peers
[api]
listen = "0.0.0.0:5001"
tls_cert = "/etc/zoe/tls/coordinator.pem"
tls_key = "/etc/zoe/tls/coordinator-key.pem"

[agents]
listen = "0.0.0.0:4648"
advertise = "$2:4648"

# The boxes share one private L2 network: host-gateway routing works.
[agents.network]
bridge = true

[leader]
deployment = "vagrant"
TOML
done

for a in "${AGENTS[@]}"; do
  set -- $a
  cat > "$out/$1.toml" <<TOML
# /etc/zoe/agent.toml on $1 (written by vagrant/prepare.sh; compare systemd/agent.toml)
coordinators = [$agent_addrs]
data_dir = "/var/lib/zoe/agent"
addresses = ["$2"]

[containerd]
socket = "/run/containerd/containerd.sock"
namespace = "zoe"
parent_cgroup = "zoe"

[tls]
ca = "/etc/zoe/tls/ca.pem"
cert = "/etc/zoe/tls/agent.pem"
key = "/etc/zoe/tls/agent-key.pem"

[reserve]
cores = 0.25
memory_bytes = 268435456

[security]                  # the cluster is bridged: no container on the host's network
host_network = false
TOML
done
echo "prepared $out: zoe, tls/, and c1..c3.toml, node1..node2.toml; now: cd vagrant && vagrant up" >&2
