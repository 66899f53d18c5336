#!/usr/bin/env bash
# pstar simulate at scale, and the manager core's cost per decision as pilots grow.
# Figures, not tests. Usage: bash scripts/bench-simulate.sh
#   UNITS=1000000 PILOTS="1000 10000" bash scripts/bench-simulate.sh
set -euo pipefail
cd "$(dirname "$0")/.."
UNITS=${UNITS:-1000000}
PILOTS=${PILOTS:-"1000 10000"}
cargo build --release -q -p pstar-cli -p pstar-bench
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
for p in $PILOTS; do
  cat > "$dir/w.toml" <<TOML
[simulation]
queue_wait = "0s"

[[pilot]]
count = $p
resource = "local://"
cores = 16
walltime = "10h"

[[unit]]
executable = "/bin/true"
time_request = "60s"
count = $UNITS
TOML
  echo "== $p pilots x 16 cores, $UNITS units of 60 s, queue_wait 0s"
  /usr/bin/time -f "wall %e s, peak RSS %M KiB" target/release/pstar simulate "$dir/w.toml" 2>&1 \
    | grep -E "units:|utilisation|simulated|wall"
  awk -v u="$UNITS" -v p="$p" 'BEGIN {
    ideal = u * 60 / (p * 16); waves = int((u + p * 16 - 1) / (p * 16)) * 60;
    printf "ideal makespan %.0f s (units x 60 s / cores); whole waves %d s\n", ideal, waves }'
done
echo "== core cost per bound unit as pilots grow"
target/release/core-scaling 10 100 1000 10000
