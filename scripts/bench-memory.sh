#!/usr/bin/env bash
# Memory of `pstar run` against the size of the workload: peak resident memory for a
# small and a ten times larger ensemble of null units, on one local pilot, with and
# without a report. pstar expands and submits units as earlier ones end and folds each
# ended unit into the summary (and the report file), so memory follows the units in
# flight, not the units declared: the ratio of the two peaks is the figure to watch
# (1.0 = flat; 10 = growing with the workload). It prints figures; it never fails on them.
#
#   bash scripts/bench-memory.sh                 # N=20000, then 10 x N
#   N=5000 bash scripts/bench-memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-20000}
BIG=$((N * 10))
base=${PSTAR_BENCH_DIR:-/tmp}
work=$(mktemp -d "$base/pstar-bench-memory.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "== building (release)"
cargo build --release -q -p pstar-cli
bin=target/release/pstar
echo "== machine: $(nproc) cores, $(uname -sr)"

workload() {
    cat > "$work/null-$1.toml" <<TOML
[[pilot]]
resource = "local://"
cores = 2
walltime = "1h"

[[unit]]
name = "null-{i}"
executable = "/bin/true"
count = $1
TOML
}

# peak_kib N [--report FILE]: the peak resident set of one run, in KiB.
peak_kib() {
    local n=$1
    shift
    /usr/bin/time -f '%M' -o "$work/rss" "$bin" run "$work/null-$n.toml" \
        --sandbox "$work/sandbox-$n" --quiet "$@" 2>"$work/run-$n.log" || {
        echo "pstar run failed:" >&2
        cat "$work/run-$n.log" >&2
        exit 1
    }
    rm -rf "$work/sandbox-$n"
    cat "$work/rss"
}

workload "$N"
workload "$BIG"
t0=$(date +%s.%N)
"$bin" check "$work/null-$BIG.toml" >/dev/null
t1=$(date +%s.%N)
echo "== pstar check of $BIG units: $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }') s"

for report in no yes; do
    args=()
    [ "$report" = yes ] && args=(--report "$work/report.json")
    small=$(peak_kib "$N" "${args[@]}")
    big=$(peak_kib "$BIG" "${args[@]}")
    printf '== report %-3s  peak RSS: %6d units %7.1f MiB | %7d units %7.1f MiB | ratio %.2f (units ratio 10)\n' \
        "$report" "$N" "$(awk -v k="$small" 'BEGIN { print k / 1024 }')" \
        "$BIG" "$(awk -v k="$big" 'BEGIN { print k / 1024 }')" \
        "$(awk -v a="$small" -v b="$big" 'BEGIN { print b / a }')"
done
