#!/usr/bin/env bash
# Cairn KV vs etcd (driven through its native gRPC API). Installs etcd (Debian's etcd-server) if
# missing, builds Cairn and the benchmark in release mode, and runs it. Extra arguments go to
# cairn-bench, e.g.:
#   bench/run.sh --quick
#   bench/run.sh --cluster          # 3 Cairn servers vs a 3-member etcd, with watcher fan-out
#   bench/run.sh --failover --rounds 5
#   bench/run.sh --duration-secs 10 --rounds 5 --etcd-bin /opt/etcd/etcd
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v etcd >/dev/null 2>&1; then
    echo "==> etcd not on PATH; installing etcd-server" >&2
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        SUDO="sudo"
    fi
    $SUDO apt-get update -qq
    # `env` because a leading variable assignment isn't one after an empty $SUDO expansion.
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server
fi

cargo build --release -p cairn -p cairn-bench

exec target/release/cairn-bench --cairn-bin target/release/cairn "$@"
