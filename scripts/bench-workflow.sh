#!/usr/bin/env bash
# Workflows: what dependencies cost. Figures, not tests. Usage:
#   bash scripts/bench-workflow.sh            (N=10000 null units, ROUNDS=3)
#   N=20000 ROUNDS=5 bash scripts/bench-workflow.sh
#
# (a) A fan-out/fan-in of N null units (/bin/true): one root, N leaves after it, one sink
#     after every leaf; against the same N + 2 units without dependencies, in the same
#     run, alternating, on one local pilot of every core. Units per second from each
#     report's own wall time; the median of ROUNDS rounds, and their ratio.
# (b) A DAG of N units, each after 3 earlier units drawn at random, written in reverse
#     file order (so it must be sorted): `pstar check` loads, resolves, checks for
#     cycles and orders it; wall time of the whole command.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000}
ROUNDS=${ROUNDS:-3}
cargo build --release -q -p pstar-cli
pstar=target/release/pstar
dir=$(mktemp -d "${PSTAR_BENCH_DIR:-${TMPDIR:-/tmp}}/pstar-bench-workflow.XXXXXX")
trap 'rm -rf "$dir"' EXIT
cores=$(nproc)

pilot="[[pilot]]
resource = \"local://\"
cores = $cores
walltime = \"1h\"
"
cat > "$dir/plain.toml" <<TOML
$pilot
[[unit]]
name = "root"
executable = "/bin/true"

[[unit]]
name = "leaf-{i}"
executable = "/bin/true"
count = $N

[[unit]]
name = "sink"
executable = "/bin/true"
TOML
cat > "$dir/deps.toml" <<TOML
$pilot
[[unit]]
name = "root"
executable = "/bin/true"

[[unit]]
name = "leaf-{i}"
executable = "/bin/true"
count = $N
after = ["root"]
tags = ["leaves"]

[[unit]]
name = "sink"
executable = "/bin/true"
after = ["tag:leaves"]
TOML

rate() { # units/s of the report $1
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["summary"]; print("%.1f" % (s["units"] / s["wall_time_s"]))' "$1"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "== (a) fan-out/fan-in of $N null units on 1 pilot x $cores cores, $ROUNDS rounds"
: > "$dir/plain.rates"; : > "$dir/deps.rates"
for r in $(seq "$ROUNDS"); do
  for kind in plain deps; do
    rm -rf "$dir/sb"
    "$pstar" run "$dir/$kind.toml" --sandbox "$dir/sb" --report "$dir/$kind.json" -q 2> /dev/null
    rate "$dir/$kind.json" | tee -a "$dir/$kind.rates" | sed "s/^/round $r $kind: /; s/\$/ units\/s/"
  done
done
plain=$(median < "$dir/plain.rates")
deps=$(median < "$dir/deps.rates")
awk -v p="$plain" -v d="$deps" 'BEGIN {
  printf "median: without dependencies %.1f units/s, with %.1f units/s: ratio %.3f (target >= 0.95)\n", p, d, d / p }'

echo "== (b) a DAG of $N units, 3 random dependencies each, in reverse file order"
python3 - "$N" > "$dir/dag.toml" <<'PY'
import random, sys
n = int(sys.argv[1])
random.seed(1)
print('[[pilot]]\nresource = "local://"\n')
for k in reversed(range(n)):
    print(f'[[unit]]\nname = "n{k}"\nexecutable = "/bin/true"')
    if k >= 3:
        deps = random.sample(range(k), 3)
        print("after = [" + ", ".join(f'"n{d}"' for d in deps) + "]")
    print()
PY
for r in $(seq "$ROUNDS"); do
  start=$(date +%s.%N)
  "$pstar" check "$dir/dag.toml" > /dev/null
  end=$(date +%s.%N)
  awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f\n", e - s }'
done | tee "$dir/dag.times" | sed 's/^/pstar check: /; s/$/ s/'
echo "median $(median < "$dir/dag.times") s for the whole command (target < 1 s)"
