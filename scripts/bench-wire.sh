#!/usr/bin/env bash
# The store format: JSON against MessagePack. Prints figures; never fails on speed.
#
#   bash scripts/bench-wire.sh                          # this build
#   bash scripts/bench-wire.sh json=/tmp/pstar-json msgpack=/tmp/pstar-msgpack
#   ROUNDS=3 N=10000 bash scripts/bench-wire.sh ...
#
# (a) wire-formats: size and encode/decode time of every kind of stored value, per format
# (b) end to end: N null units over a private Redis with 2 agents (two pilots of 1 core),
#     with each given `pstar` binary (LABEL=PATH; default: this build's), rounds
#     interleaved (every other round in the opposite order) so that the builds share the
#     machine's mood: the rate of the whole `pstar run`, and what each session takes in
#     Redis (MEMORY USAGE of its unit records and of its event stream).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
N=${N:-10000}
base=${PSTAR_BENCH_DIR:-/tmp}
work=$(mktemp -d "$base/pstar-bench-wire.XXXXXX")
unset PSTAR_COORDINATION

cleanup() {
    if [[ -s $work/redis.pid ]]; then
        local rpid
        rpid=$(<"$work/redis.pid")
        kill "$rpid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$rpid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -rf "$work"
}
trap cleanup EXIT

echo "== building (release)"
cargo build --release -q -p pstar-cli -p pstar-bench
bin=target/release
builds=("$@")
((${#builds[@]})) || builds=("this-build=$bin/pstar")

echo "== machine: $(nproc) cores, $(uname -sr)"
echo
echo "== (a) stored values, one per format"
"$bin/wire-formats"

now() { date +%s.%N; }
median() {
    tr ' ' '\n' | sort -g | awk '$1 ~ /^[0-9.]+$/ { v[++n] = $1 }
        END { if (n) print v[int((n + 1) / 2)]; else print "n/a" }'
}

PW=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
export PSTAR_REDIS_PASSWORD=$PW
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
redis-server --bind 127.0.0.1 --port "$PORT" --requirepass "$PW" --save '' --appendonly no \
    --databases 64 --dir "$work" --logfile "$work/redis.log" --daemonize yes \
    --pidfile "$work/redis.pid" >/dev/null
cli() { redis-cli --no-auth-warning -p "$PORT" -a "$PW" "$@"; }
for _ in $(seq 100); do [[ $(cli ping 2>/dev/null) == PONG ]] && break; sleep 0.1; done

cat >"$work/b.toml" <<TOML
[[pilot]]
resource = "local://"
cores = 1
walltime = "1h"

[[pilot]]
resource = "local://"
cores = 1
walltime = "1h"

[[unit]]
name = "null-{i}"
executable = "/bin/true"
count = $N
TOML

echo
echo "== (b) $N null units over Redis, 2 agents (two pilots of 1 core), $ROUNDS rounds"
declare -A rates=() units_bytes=() events_bytes=()
db=0
for r in $(seq "$ROUNDS"); do
    # Every other round in the opposite order, so that no build always goes first.
    order=("${builds[@]}")
    if ((r % 2 == 0)); then
        order=()
        for ((i = ${#builds[@]} - 1; i >= 0; i--)); do order+=("${builds[$i]}"); done
    fi
    for b in "${order[@]}"; do
        label=${b%%=*} pstar=${b#*=}
        db=$((db + 1))
        t0=$(now)
        if PSTAR_AGENT_BIN=$pstar "$pstar" run "$work/b.toml" --sandbox "$work/sb-$label-$r" \
            --quiet --coordination "redis://127.0.0.1:$PORT/$db" >"$work/$label-$r.log" 2>&1; then
            t1=$(now)
            rates[$label]+="$(awk -v n="$N" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", n / (b - a) }') "
        else
            echo "   ($label round $r failed: $(tail -n 2 "$work/$label-$r.log" | tr '\n' ' '))"
        fi
        key=$(cli -n "$db" --scan --pattern 'pstar:*:units' | head -n 1)
        units_bytes[$label]=$(cli -n "$db" MEMORY USAGE "$key" SAMPLES 0)
        events_bytes[$label]=$(cli -n "$db" MEMORY USAGE "${key%units}events" SAMPLES 0)
        rm -rf "$work/sb-$label-$r"
    done
done
for b in "${builds[@]}"; do
    label=${b%%=*}
    echo "   $label: $(echo "${rates[$label]:-}" | median) units/s (rounds: ${rates[$label]:-n/a});" \
        "in Redis: unit records $(awk -v b="${units_bytes[$label]:-0}" -v n="$N" 'BEGIN { printf "%.0f", b / n }') B/unit," \
        "event stream $(awk -v b="${events_bytes[$label]:-0}" -v n="$N" 'BEGIN { printf "%.0f", b / n }') B/unit"
done
