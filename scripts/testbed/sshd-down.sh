#!/usr/bin/env bash
# Stops the sshd started by scripts/testbed/sshd-up.sh DIR:
#
#     bash scripts/testbed/sshd-down.sh DIR
#
# Kills the listening sshd, the sshd processes of its connections and every process started
# through it (they have PSTAR_TESTBED_SSHD=DIR in their environment), as if the host went
# away: clients see their connections close (a multiplexing master `ssh -M` exits). SIGTERM,
# SIGKILL after 2 s. DIR itself stays (the caller removes it). Safe to run when the server
# is already down.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ "$#" -eq 1 ] || {
    echo "usage: sshd-down.sh DIR" >&2
    exit 1
}
[ -d "$1" ] || exit 0
D=$(cd "$1" && pwd)

alive() {
    local stat
    stat=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ "$stat" != Z* ]]
}

# TERM, then KILL after 2 s, the processes named; returns when all are gone.
stop() {
    kill -TERM "$@" 2>/dev/null
    for ((i = 0; i < 40; i++)); do
        local left=0 pid
        for pid in "$@"; do
            alive "$pid" && left=1
        done
        [ "$left" = 0 ] && return 0
        sleep 0.05
    done
    kill -KILL "$@" 2>/dev/null
}

# The listener first, with the sshd of each connection (the privilege separation monitor),
# so that nothing new starts through it.
if [ -s "$D/sshd.pid" ]; then
    listener=$(cat "$D/sshd.pid")
    if alive "$listener"; then
        pids=("$listener" $(ps -o pid= --ppid "$listener" 2>/dev/null))
        stop "${pids[@]}"
    fi
fi

# Then everything started through it, in rounds: a shell killed while it was starting a
# child can leave that child behind, so look again until a round finds nothing.
for ((round = 0; round < 10; round++)); do
    pids=()
    for p in $(processes_with_env "PSTAR_TESTBED_SSHD=$D"); do
        alive "$p" && pids+=("$p")
    done
    [ "${#pids[@]}" -gt 0 ] || exit 0
    stop "${pids[@]}"
done
exit 0
