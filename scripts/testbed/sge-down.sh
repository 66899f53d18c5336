#!/usr/bin/env bash
# Stops a cell started by scripts/testbed/sge-up.sh DIR:
#
#     bash scripts/testbed/sge-down.sh DIR
#
# Deletes every job of that cell (qdel), kills its sge_execd and sge_qmaster (SIGKILL:
# sge_qmaster takes ~8 s to exit on SIGTERM, and the cell is thrown away anyway), then kills
# whatever is left of its jobs (any process whose environment names DIR/root as SGE_ROOT:
# sge_shepherd and the jobs' own processes). Other cells are not touched. DIR itself stays
# (the caller removes it). Safe to run on a cell that is already down.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ "$#" -eq 1 ] || {
    echo "usage: sge-down.sh DIR" >&2
    exit 1
}
[ -d "$1" ] || exit 0
D=$(cd "$1" && pwd)
R=$D/root

# The PID in this file, when that process is still running (not a zombie).
live_pid() {
    local pid stat
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    stat=$(ps -o stat= -p "$pid" 2>/dev/null) || return 1
    [[ "$stat" != Z* ]] || return 1
    echo "$pid"
}

QPID=$(live_pid "$D/spool/qmaster/qmaster.pid") || QPID=
if [ -n "$QPID" ] && [ -f "$D/env.sh" ]; then
    # Delete every job (forced: no waiting for the execd's answer), give the shepherds a
    # moment (up to 2 s) to end them.
    (
        # shellcheck source=/dev/null
        . "$D/env.sh"
        PATH=/usr/lib/gridengine:$PATH
        if [ -n "$(timeout 5 qstat -u '*' 2>/dev/null)" ]; then
            timeout 5 qdel -f -u '*' >/dev/null 2>&1
            for ((i = 0; i < 20; i++)); do
                [ -z "$(timeout 5 qstat -u '*' 2>/dev/null)" ] && break
                sleep 0.1
            done
        fi
    )
fi

pids=()
[ -z "$QPID" ] || pids+=("$QPID")
for f in "$D"/spool/execd/*/execd.pid; do
    pid=$(live_pid "$f") && pids+=("$pid")
done

# Whatever is left of this cell (the daemons included): every process that has
# SGE_ROOT=DIR/root in its environment.
mapfile -t -O "${#pids[@]}" pids < <(processes_with_env "SGE_ROOT=$R")
[ "${#pids[@]}" -eq 0 ] || kill -KILL "${pids[@]}" 2>/dev/null

# Wait (up to 2 s) until the daemons are gone, so their ports are free again.
for ((i = 0; i < 40; i++)); do
    alive=0
    for pid in ${pids[@]+"${pids[@]}"}; do
        stat=$(ps -o stat= -p "$pid" 2>/dev/null) && [[ "$stat" != Z* ]] && alive=1
    done
    [ "$alive" = 0 ] && break
    sleep 0.05
done
exit 0
