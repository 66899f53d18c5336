#!/usr/bin/env bash
# Stops the sshd started by scripts/testbed/sshd-up.sh DIR:
#
#     bash scripts/testbed/sshd-down.sh DIR
#
# Kills the listening sshd (SIGTERM, SIGKILL after 2 s) and waits until it is gone.
# Sessions still open keep their own sshd processes until they end. DIR itself stays (the
# caller removes it). Safe to run when the server is already down.
set -uo pipefail

[ "$#" -eq 1 ] || {
    echo "usage: sshd-down.sh DIR" >&2
    exit 1
}
F=$1/sshd.pid
[ -s "$F" ] || exit 0
pid=$(cat "$F")
gone() {
    local stat
    stat=$(ps -o stat= -p "$pid" 2>/dev/null) || return 0
    [[ "$stat" == Z* ]]
}
gone && exit 0
kill -TERM "$pid" 2>/dev/null
for ((i = 0; i < 40; i++)); do
    gone && exit 0
    sleep 0.05
done
kill -KILL "$pid" 2>/dev/null
exit 0
