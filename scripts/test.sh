#!/usr/bin/env bash
# Runs every test: Rust unit and end-to-end tests (real agents on loopback), then the py-consul
# compatibility suite against the freshly built binary. Installs what the tests need if missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

need_apt=()
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v dig >/dev/null 2>&1 || need_apt+=(bind9-dnsutils)
# Debian's serf (Go memberlist + Serf 0.9.4) is the oracle for the gossip wire.
command -v serf >/dev/null 2>&1 || need_apt+=(serf)
# One-way partitions in the network-namespace tests.
command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || need_apt+=(nftables)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> installing ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

echo "==> cargo test"
cargo test --workspace --locked

echo "==> py-consul compatibility suite"
# `cargo test --workspace` has just built target/debug/cairn for the end-to-end tests; building
# `-p cairn` alone would unify features differently and rebuild much of the tree (3 min on 2 cores).
[ -x target/debug/cairn ] || cargo build --locked -p cairn --bin cairn
bash tests/py/run.sh
