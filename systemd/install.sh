#!/usr/bin/env bash
# Installs zoe on this host: the binary, the systemd units, a configuration
# and the host's certificates. Run as root. Safe to run again: existing
# configurations and certificates are kept unless --force is given.
#
#   install.sh coordinator --binary target/release/zoe --certs DIR --name NAME [--config FILE]
#   install.sh agent       --binary target/release/zoe --certs DIR --name NAME [--config FILE]
#
# DIR holds ca.pem and NAME.pem / NAME-key.pem, as `zoe certs issue` writes
# them (e.g. zoe certs issue --ca ca/ --role agent --name node1 --out DIR).
set -euo pipefail

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

role="${1:-}"; shift || true
case "$role" in coordinator|agent) ;; *) usage ;; esac
binary="" certs="" config="" name="" force=0
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --certs) certs="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --name) name="$2"; shift 2 ;;
    --force) force=1; shift ;;
    -h|--help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done
[ -n "$binary" ] && [ -x "$binary" ] || { echo "--binary must name the built zoe binary" >&2; exit 2; }
[ -n "$certs" ] && [ -f "$certs/ca.pem" ] || { echo "--certs must be a directory with ca.pem" >&2; exit 2; }
[ -n "$name" ] && [ -f "$certs/$name.pem" ] || { echo "--name must name the certificate NAME.pem in --certs" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
here="$(cd "$(dirname "$0")" && pwd)"

copy() { # copy SRC DST MODE [OWNER]: keeps an existing DST unless --force
  if [ -e "$2" ] && [ "$force" -eq 0 ]; then echo "kept $2"; return; fi
  install -D -m "$3" ${4:+-o "$4"} ${4:+-g "$4"} "$1" "$2"
  echo "installed $2"
}

install -D -m 0755 "$binary" /usr/local/bin/zoe
echo "installed /usr/local/bin/zoe ($(/usr/local/bin/zoe --version))"

owner=""
if [ "$role" = coordinator ]; then
  if ! id zoe >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/zoe --shell /usr/sbin/nologin zoe
    echo "created user zoe"
  fi
  owner=zoe
fi

install -d -m 0755 /etc/zoe
install -d -m 0750 ${owner:+-g "$owner"} /etc/zoe/tls
copy "$certs/ca.pem" /etc/zoe/tls/ca.pem 0644
copy "$certs/$name.pem" "/etc/zoe/tls/$role.pem" 0644
copy "$certs/$name-key.pem" "/etc/zoe/tls/$role-key.pem" 0600 "$owner"
copy "${config:-$here/$role.toml}" "/etc/zoe/$role.toml" 0644
copy "$here/zoe-$role.service" "/etc/systemd/system/zoe-$role.service" 0644

if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable --now "zoe-$role.service"
  systemctl --no-pager status "zoe-$role.service" || true
else
  echo "systemd is not running here: start zoe-$role.service once it is"
fi
