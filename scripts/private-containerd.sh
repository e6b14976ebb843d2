#!/usr/bin/env bash
# A private containerd for tests and benchmarks: its own root, state, sockets,
# pidfile and log under DIR, so it never touches (or needs) a system daemon.
#
#   scripts/private-containerd.sh start DIR   # prints the gRPC socket path
#   scripts/private-containerd.sh stop DIR    # idempotent
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
dir=$2

# Whether process $1 runs. A daemon killed with -9 whose parent has not
# reaped it yet is a zombie that `kill -0` still finds: not running.
alive() {
    # /proc/PID/stat: "pid (comm) state ..."; containerd's comm has no space.
    local state
    state=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

start() {
    command -v containerd >/dev/null || { echo "containerd not found on PATH (apt-get install containerd)" >&2; exit 1; }
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    local sock="$dir/containerd.sock"
    # A unix socket path is limited to 107 bytes; fail early and clearly.
    if [ ${#sock} -gt 100 ]; then
        echo "socket path too long for a unix socket: $sock" >&2; exit 1
    fi
    if [ -f "$dir/containerd.pid" ] && alive "$(cat "$dir/containerd.pid")"; then
        echo "$sock"; return 0
    fi
    mkdir -p "$dir/root" "$dir/state"
    # runc bind-mounts a rootfs from inside the container's user namespace,
    # as the owner's uid: every directory above a bundle must let others
    # through, as those above /run/containerd do (mktemp -d makes 0700).
    chmod 0711 "$dir" "$dir/state"
    local p=$dir
    while [ "$p" != / ]; do
        p=$(dirname "$p")
        if [ $(( 0$(stat -c %a "$p") & 1 )) -eq 0 ]; then
            echo "$p is not searchable by others (chmod o+x), so user-namespaced containers cannot reach $dir/state" >&2
            exit 1
        fi
    done
    cat > "$dir/config.toml" <<CONF
version = 2
root = "$dir/root"
state = "$dir/state"
# Tests need only the core services; CRI would start its own machinery.
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$sock"

[ttrpc]
  address = "$sock.ttrpc"

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
CONF
    rm -f "$sock" "$sock.ttrpc"
    # setsid: the daemon must not die with the shell (or the test) that started it.
    setsid containerd --config "$dir/config.toml" >>"$dir/containerd.log" 2>&1 < /dev/null &
    echo $! > "$dir/containerd.pid"
    for _ in $(seq 1 200); do
        # The socket appears once the gRPC server listens; when ctr is around
        # (it ships with containerd) also check that the API answers.
        if [ -S "$sock" ] && { ! command -v ctr >/dev/null || ctr --address "$sock" version >/dev/null 2>&1; }; then
            echo "$sock"; return 0
        fi
        if ! alive "$(cat "$dir/containerd.pid")"; then
            echo "containerd exited during start; log:" >&2; tail -20 "$dir/containerd.log" >&2; exit 1
        fi
        sleep 0.05
    done
    echo "containerd did not open $sock within 10 s; log:" >&2; tail -20 "$dir/containerd.log" >&2
    exit 1
}

stop() {
    [ -d "$dir" ] || return 0
    dir=$(cd "$dir" && pwd)
    local pidfile="$dir/containerd.pid"
    [ -f "$pidfile" ] || return 0
    local pid; pid=$(cat "$pidfile")
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            alive "$pid" || break
            sleep 0.1
        done
        alive "$pid" && kill -KILL "$pid" 2>/dev/null || true
    fi
    # Shims outlive containerd by design; kill this instance's shims by the
    # pids they recorded in its state dir, so nothing is left running.
    find "$dir/state" -name shim.pid 2>/dev/null | while read -r f; do
        kill -KILL "$(cat "$f")" 2>/dev/null || true
    done
    # Shims whose bundle is already gone: find them by the exact socket path
    # of this instance in their arguments (unique to this DIR), and kill
    # them and their containers' processes by pid.
    for c in /proc/[0-9]*/cmdline; do
        pid=${c#/proc/}; pid=${pid%/cmdline}
        if tr '\0' '\n' < "$c" 2>/dev/null | grep -qx -- "$dir/containerd.sock"; then
            for child in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
                kill -KILL "$child" 2>/dev/null || true
            done
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    rm -f "$pidfile"
    # Overlay mounts of leftover containers would keep the root busy.
    { grep " $dir/" /proc/mounts || true; } | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
