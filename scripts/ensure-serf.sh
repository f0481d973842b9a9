#!/usr/bin/env bash
# Installs Debian's serf (Go memberlist + Serf 0.9.4), the oracle for the gossip wire, if missing.
# Used by the interop tests of crates/gossip and crates/cairn.
set -euo pipefail
command -v serf >/dev/null 2>&1 && exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get install -y serf >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y serf >/dev/null 2>&1; }
command -v serf >/dev/null 2>&1 || { echo "could not install Debian's serf package" >&2; exit 1; }
