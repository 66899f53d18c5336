#!/usr/bin/env bash
# Stops a cluster started by scripts/testbed/slurm-up.sh DIR:
#
#     bash scripts/testbed/slurm-down.sh DIR
#
# Cancels every job of that cluster, stops its slurmd, slurmctld and munged, and kills
# whatever is left of its jobs (any process whose environment names DIR/slurm.conf as
# SLURM_CONF: slurmstepd and the job's own processes). Other clusters are not touched.
# DIR itself stays (the caller removes it). Safe to run on a cluster that is already down.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ "$#" -eq 1 ] || {
    echo "usage: slurm-down.sh DIR" >&2
    exit 1
}
[ -d "$1" ] || exit 0
D=$(cd "$1" && pwd)
PATH=$PATH:/usr/sbin

# The PID in this file, when that process is still running (not a zombie).
live_pid() {
    local pid stat
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    stat=$(ps -o stat= -p "$pid" 2>/dev/null) || return 1
    [[ "$stat" != Z* ]] || return 1
    echo "$pid"
}

# Stops the daemons of these PID files: SIGTERM, then SIGKILL after 2 s.
stop_daemons() {
    local f pid pids=() i
    for f in "$@"; do
        pid=$(live_pid "$f") && pids+=("$pid")
    done
    [ "${#pids[@]}" -gt 0 ] || return 0
    kill -TERM "${pids[@]}" 2>/dev/null
    for ((i = 0; i < 40; i++)); do
        local alive=0
        for pid in "${pids[@]}"; do
            stat=$(ps -o stat= -p "$pid" 2>/dev/null) && [[ "$stat" != Z* ]] && alive=1
        done
        [ "$alive" = 0 ] && return 0
        sleep 0.05
    done
    kill -KILL "${pids[@]}" 2>/dev/null
    return 0
}

if [ -f "$D/slurm.conf" ] && live_pid "$D/slurmctld.pid" >/dev/null; then
    # Cancel every job (of any user); wait (up to 3 s) until none is running any more.
    jobs=$(SLURM_CONF=$D/slurm.conf timeout 5 squeue -h -o %i 2>/dev/null)
    if [ -n "$jobs" ]; then
        # shellcheck disable=SC2086 # one argument per job id
        SLURM_CONF=$D/slurm.conf timeout 5 scancel $jobs >/dev/null 2>&1
    fi
    for ((i = 0; i < 30; i++)); do
        left=$(SLURM_CONF=$D/slurm.conf timeout 5 squeue -h -t running,completing,configuring -o %i 2>/dev/null) || break
        [ -z "$left" ] && break
        sleep 0.1
    done
fi

slurmd_pids=("$D"/slurmd-*.pid)
stop_daemons "${slurmd_pids[@]}" "$D/slurmctld.pid"
stop_daemons "$D/munge/munged.pid"

# Whatever is left of this cluster's jobs: every process that has SLURM_CONF=DIR/slurm.conf
# in its environment.
mapfile -t leftovers < <(processes_with_env "SLURM_CONF=$D/slurm.conf")
[ "${#leftovers[@]}" -eq 0 ] || kill -KILL "${leftovers[@]}" 2>/dev/null
exit 0
