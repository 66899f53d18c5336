#!/usr/bin/env bash
# The static (musl) pstar against the normal (glibc) build, as the agent: null-unit
# throughput over Redis, one local pilot of 2 cores whose `pstar agent` process is one
# build or the other (the manager is the normal build in both). Prints figures; never
# fails on speed.
#
#   bash scripts/bench-static.sh
#   ROUNDS=5 UNITS=20000 bash scripts/bench-static.sh
#
# Builds both (cargo build --release; scripts/build-static.sh) and runs a private
# redis-server on a free loopback port for the length of the script. Rounds alternate the
# two builds so that drift on a noisy machine hits both alike.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
UNITS=${UNITS:-10000}
work=$(mktemp -d /tmp/pstar-bench-static.XXXXXX)
redis_pid=
cleanup() {
    if [[ -n $redis_pid ]]; then kill "$redis_pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

echo "==> building" >&2
cargo build --release -p pstar-cli >&2
glibc=$(pwd)/${CARGO_TARGET_DIR:-target}/release/pstar
musl=$(bash scripts/build-static.sh | tail -n 1)

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
password=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
redis-server --port "$port" --bind 127.0.0.1 --requirepass "$password" --save '' \
    --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 50); do
    REDISCLI_AUTH=$password redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break
    sleep 0.1
done

cat >"$work/null.toml" <<EOF
[[pilot]]
resource = "local://"
cores = 2

[[unit]]
executable = "/bin/true"
count = $UNITS
EOF

# run AGENT: units/s of one whole `pstar run`. Sandboxes stay until the end, so that no
# run pays for the deletion (and writeback) of another's.
runs=0
run() {
    local start end
    runs=$((runs + 1))
    sync
    start=$(date +%s.%N)
    PSTAR_REDIS_PASSWORD=$password "$glibc" run "$work/null.toml" -q \
        --coordination "redis://127.0.0.1:$port/0" --keep 1s \
        --agent-binary "$1" --sandbox "$work/sandbox.$runs" >/dev/null 2>&1
    end=$(date +%s.%N)
    python3 -c "print(f'{$UNITS / ($end - $start):.0f}')"
}

# One run of each first, not counted: the first runs after a build pay for loading it.
run "$glibc" >/dev/null
run "$musl" >/dev/null
g=()
m=()
for ((i = 1; i <= ROUNDS; i++)); do
    g+=("$(run "$glibc")")
    m+=("$(run "$musl")")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
gm=$(median "${g[@]}")
mm=$(median "${m[@]}")
echo
echo "null-unit throughput over Redis, $UNITS × /bin/true, one local pilot of 2 cores, median of $ROUNDS"
echo "   agent glibc (target/release/pstar, $(du -h "$glibc" | cut -f1)): $gm units/s   rounds: ${g[*]}"
echo "   agent musl  (static, $(du -h "$musl" | cut -f1)): $mm units/s   rounds: ${m[*]}"
python3 -c "print(f'   musl / glibc: {$mm / $gm:.2f}')"
