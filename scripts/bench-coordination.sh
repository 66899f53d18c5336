#!/usr/bin/env bash
# pstar's coordination benchmarks: the embedded store against Redis. They print figures;
# they never fail on speed.
#
#   bash scripts/bench-coordination.sh
#   ROUNDS=3 AGENT_N=10000 SUBMIT_N=100000 bash scripts/bench-coordination.sh
#
# (a) coordination overhead per unit: null units, 4 per declared core, one pilot of
#     8..128 cores, embedded store and Redis, against the raw spawner and pstar's start-up
# (b) null-unit throughput over Redis with 1, 2 and 4 agents, against the raw spawner and
#     the embedded store
# (c) submission of SUBMIT_N units over Redis, and the memory of manager and agent
#
# PSTAR_BENCH_DIR picks the filesystem for sandboxes (default: a fresh directory under
# /tmp). A private redis-server runs on a free loopback port for the length of the script.
# Every figure comes with its baseline measured in the same run; a figure that cannot be
# measured is printed as n/a.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-1}
AGENT_N=${AGENT_N:-10000}
SUBMIT_N=${SUBMIT_N:-100000}
CORES=${CORES:-"8 16 32 64 128"}
base=${PSTAR_BENCH_DIR:-/tmp}
work=$(mktemp -d "$base/pstar-bench-coord.XXXXXX")
unset PSTAR_COORDINATION

poller=
cleanup() {
    if [[ -n $poller ]]; then kill "$poller" 2>/dev/null || true; fi
    if [[ -s $work/redis.pid ]]; then
        local rpid
        rpid=$(<"$work/redis.pid")
        kill "$rpid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$rpid" 2>/dev/null || break; sleep 0.1; done
    fi
    # Sandboxes of every run go only now, so no run pays for the deletion of another's.
    rm -rf "$work"
}
trap cleanup EXIT

echo "== building (release)"
cargo build --release -q -p pstar-cli -p pstar-bench
bin=target/release

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
echo "   sandboxes in $work ($(df -T "$work" | awk 'NR==2 {print $2}')); rounds: $ROUNDS (figures are medians)"

now() { date +%s.%N; }
rate() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.0f", n / (b - a) }'; }
# Median of the numbers on stdin; n/a when there are none.
median() {
    tr ' ' '\n' | sort -g | awk '$1 ~ /^[0-9.]+$/ { v[++n] = $1 }
        END { if (n) print v[int((n + 1) / 2)]; else print "n/a" }'
}
# calc FORMAT EXPR NAME=VALUE...: EXPR (awk) printed with FORMAT, or n/a when a value is
# not a number.
calc() {
    local fmt=$1 expr=$2 a
    shift 2
    local args=()
    for a in "$@"; do
        [[ ${a#*=} =~ ^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$ ]] || { echo n/a; return; }
        args+=(-v "$a")
    done
    awk "${args[@]}" "BEGIN { printf \"$fmt\", $expr }" 2>/dev/null || echo n/a
}
spawner_rate() { sed -nE 's/.*: ([0-9]+) \/s.*/\1/p' | grep . || echo n/a; }
raw_rate() { "$bin/spawn-baseline" "$1" 2 2>/dev/null | spawner_rate; }

# workload FILE UNITS CORES...: one local pilot per CORES value, UNITS null units.
workload() {
    local file=$1 units=$2 c
    shift 2
    : >"$file"
    for c in "$@"; do
        printf '[[pilot]]\nresource = "local://"\ncores = %s\nwalltime = "1h"\n\n' "$c" >>"$file"
    done
    printf '[[unit]]\nname = "null-{i}"\nexecutable = "/bin/true"\ncount = %s\n' "$units" >>"$file"
}

# Peak memory (VmHWM, KiB) of process $1 into HWM (0 when gone).
HWM=0
vmhwm() {
    local k v rest
    HWM=0
    { while read -r k v rest; do
        if [[ $k == VmHWM: ]]; then HWM=$v; break; fi
    done <"/proc/$1/status"; } 2>/dev/null || true
}
# Polls a pstar run (pid $1) and its `pstar agent` children until all have exited;
# prints "MANAGER_KIB AGENT_KIB" (the largest agent), 0 for one never seen.
watch_memory() {
    local pid=$1 mgr=0 agent=0 alive c a f gone_since=
    local -A agents=()
    local args=() kids=()
    while :; do
        alive=0
        if [[ -r /proc/$pid/status ]]; then
            alive=1
            vmhwm "$pid"
            ((HWM > mgr)) && mgr=$HWM
            for f in /proc/"$pid"/task/*/children; do
                kids=()
                read -r -a kids 2>/dev/null <"$f" || true
                for c in "${kids[@]}"; do
                    [[ -n ${agents[$c]:-} ]] && continue
                    mapfile -d '' args 2>/dev/null <"/proc/$c/cmdline" || continue
                    for a in "${args[@]}"; do
                        if [[ $a == agent ]]; then agents[$c]=1; break; fi
                    done
                done
            done
        elif [[ -z $gone_since ]]; then
            gone_since=$SECONDS
        fi
        for c in "${!agents[@]}"; do
            if [[ -r /proc/$c/status ]]; then
                alive=1
                vmhwm "$c"
                ((HWM > agent)) && agent=$HWM
            fi
        done
        ((alive)) || break
        # An agent that outlives its manager by long is not waited for.
        [[ -n $gone_since ]] && ((SECONDS - gone_since > 30)) && break
        sleep 0.1
    done
    echo "$mgr $agent"
}
kib_to_mib() { calc "%.1f MiB" "k / 1024" "k=$1" | sed 's/^0\.0 MiB$/n\/a/'; }

# run_pstar NAME WORKLOAD [ARGS...]: one `pstar run` with sandboxes of its own; ELAPSED
# is its wall time (start to exit) in seconds, or n/a; MEM is "MANAGER_KIB AGENT_KIB".
ELAPSED=n/a MEM="0 0"
run_pstar() {
    local name=$1 wl=$2 t0 t1 rc=0 pid
    shift 2
    t0=$(now)
    "$bin/pstar" run "$wl" --sandbox "$work/sb-$name" --quiet \
        --report "$work/report-$name.json" "$@" >"$work/$name.log" 2>&1 &
    pid=$!
    watch_memory "$pid" >"$work/$name.mem" &
    poller=$!
    wait "$pid" || rc=$?
    t1=$(now)
    wait "$poller" || true
    poller=
    MEM=$(<"$work/$name.mem")
    if ((rc == 0)); then
        ELAPSED=$(calc "%.3f" "b - a" "a=$t0" "b=$t1")
    else
        ELAPSED=n/a
        echo "   ($name: pstar run exited with status $rc:" \
            "$(tail -n 3 "$work/$name.log" | tr '\n' ' '))" >&2
    fi
}

# A private Redis on a free loopback port.
redis_ok=0
PW=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
export PSTAR_REDIS_PASSWORD=$PW
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])' 2>/dev/null ||
    echo $((20000 + RANDOM % 20000)))
URL="redis://127.0.0.1:$PORT/0"
if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
    redis-server --bind 127.0.0.1 --port "$PORT" --requirepass "$PW" --save '' --appendonly no \
        --dir "$work" --logfile "$work/redis.log" --daemonize yes --pidfile "$work/redis.pid" \
        >/dev/null 2>&1 || true
    for _ in $(seq 100); do
        if [[ $(redis-cli --no-auth-warning -p "$PORT" -a "$PW" ping 2>/dev/null) == PONG ]]; then
            redis_ok=1
            break
        fi
        sleep 0.1
    done
fi
if ((redis_ok)); then
    echo "   Redis $(redis-server --version | sed -nE 's/.*v=([^ ]+).*/\1/p') at $URL" \
        "(private to this run, no persistence)"
else
    echo "   Redis could not be started: every Redis figure below is n/a"
fi
# run_redis NAME WORKLOAD: run_pstar over the private Redis (n/a without one).
run_redis() {
    if ((redis_ok)); then
        run_pstar "$1" "$2" --coordination "$URL"
    else
        ELAPSED=n/a MEM="0 0"
    fi
}

# ---------------------------------------------------------------------------------------
echo
echo "== (a) coordination overhead: /bin/true units, 4 per declared core, one pilot"
echo "   runtime = wall time of the whole \`pstar run\` (start to exit); raw = units / rate of"
echo "   spawn-baseline UNITS 2 (spawn + wait, nothing else); overhead/unit = (runtime - raw) / units;"
echo "   net = the same with pstar's start-up + teardown (\`pstar run\` of 1 unit, one 1-core"
echo "   pilot, same store) subtracted as well. Small runs are dominated by that start-up."
workload "$work/one.toml" 1 1
declare -A t_emb=() t_red=() t_raw=()
s_emb=() s_red=()
for r in $(seq "$ROUNDS"); do
    run_pstar "a-start-emb-$r" "$work/one.toml"
    s_emb+=("$ELAPSED")
    run_redis "a-start-redis-$r" "$work/one.toml"
    s_red+=("$ELAPSED")
    for c in $CORES; do
        units=$((4 * c))
        workload "$work/a-$c.toml" "$units" "$c"
        t_raw[$c]+=" $(calc "%.4f" "n / r" "n=$units" "r=$(raw_rate "$units")")"
        run_pstar "a-$c-emb-$r" "$work/a-$c.toml"
        t_emb[$c]+=" $ELAPSED"
        run_redis "a-$c-redis-$r" "$work/a-$c.toml"
        t_red[$c]+=" $ELAPSED"
    done
done
start_emb=$(echo "${s_emb[@]}" | median)
start_red=$(echo "${s_red[@]}" | median)
echo "   pstar start-up + teardown (1 unit): embedded $start_emb s, Redis $start_red s"
echo
printf '   %5s %5s %8s | %-29s | %-29s\n' "" "" "raw" "embedded store" "Redis"
printf '   %5s %5s %8s | %8s %9s %10s | %8s %9s %10s\n' cores units "spawn s" \
    "run s" "ovh ms/u" "net ms/u" "run s" "ovh ms/u" "net ms/u"
for c in $CORES; do
    units=$((4 * c))
    raw=$(echo "${t_raw[$c]}" | median)
    emb=$(echo "${t_emb[$c]}" | median)
    red=$(echo "${t_red[$c]}" | median)
    oe=$(calc "%.3f" "(t - raw) * 1000 / n" "n=$units" "raw=$raw" "t=$emb")
    ne=$(calc "%.3f" "(t - s - raw) * 1000 / n" "n=$units" "raw=$raw" "t=$emb" "s=$start_emb")
    orr=$(calc "%.3f" "(t - raw) * 1000 / n" "n=$units" "raw=$raw" "t=$red")
    nr=$(calc "%.3f" "(t - s - raw) * 1000 / n" "n=$units" "raw=$raw" "t=$red" "s=$start_red")
    printf '   %5s %5s %8s | %8s %9s %10s | %8s %9s %10s\n' "$c" "$units" "$raw" \
        "$emb" "$oe" "$ne" "$red" "$orr" "$nr"
    last_c=$c last_gross=$orr last_net=$nr
done

# ---------------------------------------------------------------------------------------
echo
echo "== (b) null-unit throughput over Redis: $AGENT_N units of /bin/true per run"
echo "   layouts: 1 agent = one pilot of 2 cores; 2 agents = two pilots of 1 core each (2 declared"
echo "   cores); 4 agents = four pilots of 1 core each (4 declared cores: a pilot declares at"
echo "   least one). Baselines: spawn-baseline $AGENT_N 2, and the embedded store with one pilot"
echo "   of 2 cores. Rates are of the whole \`pstar run\` command, start to exit."
workload "$work/b-emb.toml" "$AGENT_N" 2
workload "$work/b-1.toml" "$AGENT_N" 2
workload "$work/b-2.toml" "$AGENT_N" 1 1
workload "$work/b-4.toml" "$AGENT_N" 1 1 1 1
raw_b=() emb_b=() red1=() red2=() red4=()
declare -A mem_b=()
rate_of() { calc "%.0f" "n / t" "n=$AGENT_N" "t=$1"; }
for r in $(seq "$ROUNDS"); do
    raw_b+=("$(raw_rate "$AGENT_N")")
    run_pstar "b-emb-$r" "$work/b-emb.toml"
    emb_b+=("$(rate_of "$ELAPSED")")
    mem_b[emb]=$MEM
    for a in 1 2 4; do
        run_redis "b-redis$a-$r" "$work/b-$a.toml"
        eval "red$a+=(\"\$(rate_of \"\$ELAPSED\")\")"
        mem_b[$a]=$MEM
    done
    echo "   round $r: raw ${raw_b[-1]}/s | embedded ${emb_b[-1]}/s | Redis 1 agent ${red1[-1]}/s," \
        "2 agents ${red2[-1]}/s, 4 agents ${red4[-1]}/s"
done
raw=$(echo "${raw_b[@]}" | median)
emb=$(echo "${emb_b[@]}" | median)
r1=$(echo "${red1[@]}" | median)
r2=$(echo "${red2[@]}" | median)
r4=$(echo "${red4[@]}" | median)
ratio() { calc "%.2f" "p / r" "p=$1" "r=$raw"; }
printf '   %-34s %8s/s\n' "raw spawner (2 threads)" "$raw"
printf '   %-34s %8s/s   ratio to raw %s\n' "embedded store, 1 pilot x 2 cores" "$emb" "$(ratio "$emb")"
printf '   %-34s %8s/s   ratio to raw %s\n' "Redis, 1 agent  (1 pilot x 2 cores)" "$r1" "$(ratio "$r1")"
printf '   %-34s %8s/s   ratio to raw %s\n' "Redis, 2 agents (2 pilots x 1 core)" "$r2" "$(ratio "$r2")"
printf '   %-34s %8s/s   ratio to raw %s\n' "Redis, 4 agents (4 pilots x 1 core)" "$r4" "$(ratio "$r4")"
ratio2=$(ratio "$r2")

# ---------------------------------------------------------------------------------------
echo
echo "== (c) submission of $SUBMIT_N units over Redis (redis-submit: one submit_batch, timed),"
echo "   with the embedded store as the baseline; each store in a process of its own"
sub=()
for r in $(seq "$ROUNDS"); do
    if ((redis_ok)); then
        out=$("$bin/redis-submit" "$URL" "bench-submit-$r-$$" "$SUBMIT_N" 2>&1) || true
    else
        out="over Redis: n/a (no Redis)"$'\n'
        out+=$(PSTAR_BENCH_SUBMIT_ONLY=embedded "$bin/redis-submit" "$URL" x "$SUBMIT_N" 2>&1) || true
    fi
    echo "$out" | sed "s/^/   round $r: /"
    sub+=("$(echo "$out" | sed -nE 's/^submitted [0-9]+ units over Redis in [0-9.]+ s: ([0-9]+) units\/s.*/\1/p' | grep . || echo n/a)")
done
submit_rate=$(echo "${sub[@]}" | median)
echo "   median submission rate over Redis: $submit_rate units/s"
echo "   memory during (b) (VmHWM, polled from /proc every 0.1 s while each \`pstar run\` went on):"
read -r m a <<<"${mem_b[emb]:-0 0}"
echo "      embedded store, 1 pilot: manager and agent in one process, peak $(kib_to_mib "$m")"
for n in 1 2 4; do
    read -r m a <<<"${mem_b[$n]:-0 0}"
    echo "      Redis, $n agent(s): manager peak $(kib_to_mib "$m"); \`pstar agent\` peak $(kib_to_mib "$a") (largest agent)"
done

# ---------------------------------------------------------------------------------------
verdict() { # verdict VALUE OP LIMIT
    [[ $1 == n/a ]] && { echo "n/a"; return; }
    awk -v v="$1" -v l="$3" -v op="$2" 'BEGIN {
        ok = (op == ">=") ? (v >= l) : (v < l); print ok ? "MET" : "NOT MET" }'
}
echo
echo "== summary (targets; computed from this run)"
printf '   %-60s %-8s (%s)\n' "Redis, 2 agents: throughput >= 0.75 of the raw spawner" \
    "$(verdict "$ratio2" ">=" 0.75)" "ratio $ratio2"
printf '   %-60s %-8s (%s)\n' "Redis: submission >= 50,000 units/s" \
    "$(verdict "$submit_rate" ">=" 50000)" "$submit_rate units/s"
printf '   %-60s %-8s (%s)\n' "Redis: coordination overhead per unit < 0.5 ms" \
    "$(verdict "$last_net" "<" 0.5)" \
    "$last_net ms net of start-up at $last_c cores / $((4 * last_c)) units; $last_gross ms gross"
