#!/usr/bin/env bash
# pstar on real resources: pilot start-up per adaptor, and a Slurm pilot against one Slurm
# job per unit. Prints figures; never fails on speed.
#
#   bash scripts/bench-resources.sh
#   ROUNDS=5 UNITS=1000 CORES=4 bash scripts/bench-resources.sh
#
# A Redis, a single-node Slurm (CORES CPUs, at least 4), a Grid Engine cell and a key-only
# sshd are started on loopback for the length of the run (crates/testbed) and stopped at
# the end. Needs the packages scripts/test.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p pstar-cli -p pstar-bench
export PSTAR_AGENT_BIN=$PWD/target/release/pstar
exec target/release/resources
