#!/usr/bin/env bash
# The Raft fault simulation over many seeds (crates/sim/src/raft_sim.rs): 3 and 5 servers under
# partitions, loss, delay, crashes and restarts (losing unsynced log writes, tearing the batch being
# synced) and clocks drifting by up to 8%, every invariant checked after every step and the history
# checked for linearizability. A failing seed prints the command that replays it.
#
#   scripts/raft-sim-sweep.sh [SEEDS] [FIRST_SEED] [SECONDS]     (defaults: 1000 1 20)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seeds="${1:-1000}"
first="${2:-1}"
secs="${3:-20}"
cargo build --release --locked -p cairn-sim --bin raft-sim
status=0
for n in 3 5; do
    ./target/release/raft-sim --servers "$n" --first-seed "$first" --seeds "$seeds" --seconds "$secs" \
        | grep -v ': ok (' || status=$?
done
exit "$status"
