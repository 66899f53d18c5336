#!/usr/bin/env bash
# Pilot-Data transfer throughput: pstar-data against the raw tool of the same link, in the
# same run (cp for file://, OpenSSH's sftp for sftp:// over the testbed's sshd on loopback,
# curl for s3:// on the testbed's s3s-fs). Prints figures; never fails on speed.
#
#   bash scripts/bench-data.sh            # a 256 MiB file, 3 rounds
#   SIZE_MIB=1024 ROUNDS=5 bash scripts/bench-data.sh
#
# PSTAR_BENCH_DIR picks the filesystem (default /tmp). Needs sshd, sftp, curl and s3s-fs
# (bash scripts/test.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE_MIB=${SIZE_MIB:-256}
ROUNDS=${ROUNDS:-3}
base=${PSTAR_BENCH_DIR:-/tmp}

echo "== building (release)"
cargo build --release -q -p pstar-bench --bin data-throughput
echo "== machine: $(nproc) cores, $(uname -sr); files in $base ($(df -T "$base" | awk 'NR==2 {print $2}'))"
target/release/data-throughput "$SIZE_MIB" "$ROUNDS" "$base"
