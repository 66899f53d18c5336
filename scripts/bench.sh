#!/usr/bin/env bash
# pstar's benchmarks. They print figures; they never fail on speed.
#
#   bash scripts/bench.sh            # all of them
#   N=2000 ROUNDS=1 bash scripts/bench.sh
#
# PSTAR_BENCH_DIR picks the filesystem for sandboxes (default: a fresh directory under
# /tmp). Every figure comes with its baseline measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-10000}
ROUNDS=${ROUNDS:-3}
QUEUED=${QUEUED:-100000}
base=${PSTAR_BENCH_DIR:-/tmp}
work=$(mktemp -d "$base/pstar-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "== building (release)"
cargo build --release -q -p pstar-cli -p pstar-bench
bin=target/release

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
echo "   sandboxes in $work ($(df -T "$work" | awk 'NR==2 {print $2}'))"

now() { date +%s.%N; }
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.0f", n / (b - a) }'; }
median() { tr ' ' '\n' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

cat > "$work/null.toml" <<TOML
[[pilot]]
resource = "local://"
cores = 2
walltime = "1h"

[[unit]]
name = "null-{i}"
executable = "/bin/true"
count = $N
TOML

echo
echo "== (a) null-unit throughput: $N units of /bin/true, one local pilot of 2 cores"
echo "   rounds interleave pstar with the raw spawners so they share the machine's mood"
echo "   baselines: a raw Rust spawner (2 threads, spawn + wait, nothing else), the same with"
echo "   each child in a sandbox of its own as pstar makes (directory, stdout/stderr files,"
echo "   process group), and xargs -P2"
pstar_rates=() rust_rates=() boxed_rates=() xargs_rates=()
spawner_rate() { sed -E 's/.*: ([0-9]+) \/s.*/\1/'; }
for r in $(seq "$ROUNDS"); do
    rust_rates+=("$("$bin/spawn-baseline" "$N" 2 | spawner_rate)")
    mkdir "$work/boxed-$r"
    boxed_rates+=("$("$bin/spawn-baseline" "$N" 2 "$work/boxed-$r" | spawner_rate)")

    t0=$(now); seq "$N" | xargs -P2 -n1 /bin/true; t1=$(now)
    xargs_rates+=("$(rate "$N" "$t0" "$t1")")

    t0=$(now)
    "$bin/pstar" run "$work/null.toml" --sandbox "$work/sandbox-$r" --quiet --report "$work/report-$r.json" 2>"$work/pstar-$r.log"
    t1=$(now)
    pstar_rates+=("$(rate "$N" "$t0" "$t1")")
    echo "   round $r: pstar ${pstar_rates[-1]}/s (whole command, start to exit)" \
         "| raw Rust spawner ${rust_rates[-1]}/s | sandboxed ${boxed_rates[-1]}/s | xargs -P2 ${xargs_rates[-1]}/s"
    grep -E '^[0-9]+ units:|^mean time' "$work/pstar-$r.log" | sed 's/^/      pstar: /'
done
p=$(echo "${pstar_rates[@]}" | median)
rr=$(echo "${rust_rates[@]}" | median)
br=$(echo "${boxed_rates[@]}" | median)
xr=$(echo "${xargs_rates[@]}" | median)
echo "   median: pstar $p/s; raw Rust spawner $rr/s; sandboxed Rust spawner $br/s; xargs -P2 $xr/s"
awk -v p="$p" -v r="$rr" -v b="$br" -v x="$xr" 'BEGIN {
    printf "   ratio pstar / raw Rust spawner       = %.2f   (target >= 0.80)\n", p / r
    printf "   ratio pstar / sandboxed Rust spawner = %.2f\n", p / b
    printf "   ratio pstar / xargs -P2              = %.2f\n", p / x }'

echo "   for reference, the agent alone (units already queued in the store, no manager):"
"$bin/agent-throughput" "$N" "$work" | sed 's/^/   /'

echo
echo "== (b) submit-to-done latency of one unit on an idle pilot (target < 5 ms)"
"$bin/latency" 100 | sed 's/^/   /'

echo
echo "== (c) manager memory with $QUEUED queued units (target < 1 KiB per unit)"
"$bin/queue-memory" "$QUEUED" | sed 's/^/   /'
