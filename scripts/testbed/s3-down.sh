#!/usr/bin/env bash
# Stops the s3s-fs started by scripts/testbed/s3-up.sh DIR:
#
#     bash scripts/testbed/s3-down.sh DIR
#
# SIGTERM, SIGKILL after 2 s. DIR itself (the objects, credentials) stays. Safe to run when
# the server is already down.
set -uo pipefail

[ "$#" -eq 1 ] || {
    echo "usage: s3-down.sh DIR" >&2
    exit 1
}
[ -s "$1/s3s-fs.pid" ] || exit 0
pid=$(cat "$1/s3s-fs.pid")
kill -TERM "$pid" 2>/dev/null || exit 0
for ((i = 0; i < 40; i++)); do
    kill -0 "$pid" 2>/dev/null || exit 0
    sleep 0.05
done
kill -KILL "$pid" 2>/dev/null
exit 0
