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

pids=()
if [ -s "$D/sshd.pid" ]; then
    listener=$(cat "$D/sshd.pid")
    if alive "$listener"; then
        pids+=("$listener")
        # Its children: one sshd per connection (the privilege separation monitor).
        for child in $(ps -o pid= --ppid "$listener" 2>/dev/null); do
            pids+=("$child")
        done
    fi
fi
# Everything started through it (except this script and its callers).
declare -A mine=()
p=$$
while [ -n "$p" ] && [ "$p" -gt 1 ]; do
    mine[$p]=1
    p=$(ps -o ppid= -p "$p" 2>/dev/null | tr -d ' ')
done
for f in $(grep -lzxF "PSTAR_TESTBED_SSHD=$D" /proc/[0-9]*/environ 2>/dev/null); do
    p=${f#/proc/}
    p=${p%/environ}
    [ -n "${mine[$p]:-}" ] || [ "$p" = "$BASHPID" ] || pids+=("$p")
done
[ "${#pids[@]}" -gt 0 ] || exit 0

kill -TERM "${pids[@]}" 2>/dev/null
for ((i = 0; i < 40; i++)); do
    left=0
    for pid in "${pids[@]}"; do
        alive "$pid" && left=1
    done
    [ "$left" = 0 ] && exit 0
    sleep 0.05
done
kill -KILL "${pids[@]}" 2>/dev/null
exit 0
