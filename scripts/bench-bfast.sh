#!/usr/bin/env bash
# The seeds' BFAST experiment at small scale: N units, each reading one shared reference
# (REF_MB, default 256 MB) and its own reads file (READS_MB, default 2 MB) from a store
# reached over SFTP, on 2 local pilots, in two modes:
#
#   D1  naive: every unit fetches everything it reads itself, over SFTP (`sftp get` in the
#       unit), as an application without Pilot-Data does;
#   D2  Pilot-Data: the files are data units in an sftp:// pilot store; pstar moves the
#       reference once per pilot (cached there) and each reads file once.
#
#   bash scripts/bench-bfast.sh                 # N = 32 64 128
#   N_LIST="32" REF_MB=64 bash scripts/bench-bfast.sh
#
# Prints, per N and mode: wall time and bytes moved; then the ratio D1/D2 and the
# throughput of pstar's first transfer of the reference against a raw `sftp get` of the
# same file over the same link, measured in the same run. The "compute" of a unit is
# small on purpose (it reads its reads file and 4 MiB of the reference): the experiment
# is about what moves. D2's wall time includes placing the files in the store (an upload
# over the same link); D1's store is filled before its clock starts.
#
# Needs root (a second sshd on 127.0.0.1), openssh-server and openssh-client (installed by
# scripts/test.sh). PSTAR_BENCH_DIR picks the filesystem (default /tmp; /dev/shm is
# quieter).
set -euo pipefail
cd "$(dirname "$0")/.."

N_LIST=${N_LIST:-"32 64 128"}
REF_MB=${REF_MB:-256}
READS_MB=${READS_MB:-2}
PORT=${PORT:-2298}
base=${PSTAR_BENCH_DIR:-/tmp}
work=$(mktemp -d "$base/pstar-bfast.XXXXXX")
cleanup() {
    bash scripts/testbed/sshd-down.sh "$work/sshd" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "== building (release)"
cargo build --release -q -p pstar-cli
pstar=$PWD/target/release/pstar

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
echo "   work in $work ($(df -T "$work" | awk 'NR==2 {print $2}'))"
bash scripts/testbed/sshd-up.sh "$work/sshd" "$PORT" >/dev/null
cfg=$work/sshd/ssh_config
export PSTAR_SSH_CONFIG=$cfg

now() { date +%s.%N; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

max_n=0
for n in $N_LIST; do [ "$n" -gt "$max_n" ] && max_n=$n; done
echo "== data: reference ${REF_MB} MB, ${max_n} reads files of ${READS_MB} MB"
mkdir -p "$work/data/reads" "$work/remote/reads"
head -c "$((REF_MB * 1000000))" /dev/urandom > "$work/data/ref.fa"
for ((i = 0; i < max_n; i++)); do
    head -c "$((READS_MB * 1000000))" /dev/urandom > "$work/data/reads/$i.fq"
done
# D1's store: the same files, already on the SFTP side.
cp "$work/data/ref.fa" "$work/remote/ref.fa"
cp "$work/data/reads/"*.fq "$work/remote/reads/"

echo "== raw link: sftp get of the reference"
t0=$(now)
sftp -q -F "$cfg" -P "$PORT" -b - root@127.0.0.1 >/dev/null <<EOF
get $work/remote/ref.fa $work/raw.fa
EOF
t1=$(now)
rm -f "$work/raw.fa"
raw=$(awk -v b="$((REF_MB * 1000000))" -v t="$(sub "$t0" "$t1")" 'BEGIN { printf "%.0f", b / t / 1e6 }')
echo "   $(sub "$t0" "$t1") s: $raw MB/s"

d1() {
    local n=$1 dir=$work/d1-$n
    mkdir -p "$dir"
    # The unit of an application without Pilot-Data: fetch what it reads, then compute.
    cat > "$dir/unit.sh" <<SH
set -e
sftp -q -F "$cfg" -P $PORT -b - root@127.0.0.1 >/dev/null <<END
get $work/remote/ref.fa ref.fa
get $work/remote/reads/\$1.fq reads.fq
END
head -c 4194304 ref.fa | cat - reads.fq | sha256sum > aligned.txt
rm -f ref.fa reads.fq
SH
    cat > "$dir/w.toml" <<TOML
[[pilot]]
resource = "local://"
cores = 1
count = 2
walltime = "2h"
working_directory = "$dir/sandbox"

[[unit]]
name = "bfast-{i}"
executable = "/bin/sh"
arguments = ["$dir/unit.sh", "{i}"]
count = $n
TOML
    local t0 t1
    t0=$(now)
    "$pstar" run -q "$dir/w.toml" >/dev/null 2>"$dir/err" || { cat "$dir/err" >&2; return 1; }
    t1=$(now)
    echo "$(sub "$t0" "$t1") $((n * (REF_MB + READS_MB) * 1000000))"
    rm -rf "$dir/sandbox"
}

d2() {
    local n=$1 dir=$work/d2-$n
    mkdir -p "$dir"
    cat > "$dir/w.toml" <<TOML
[[pilot_data]]
name = "archive"
url = "sftp://root@127.0.0.1:$PORT$dir/store"

[[pilot]]
resource = "local://"
cores = 1
count = 2
walltime = "2h"
working_directory = "$dir/sandbox"

[[data_unit]]
name = "reference"
files = ["$work/data/ref.fa"]

[[data_unit]]
name = "reads-{i}"
files = ["$work/data/reads/{i}.fq"]
count = $n

[[unit]]
name = "bfast-{i}"
executable = "/bin/sh"
arguments = ["-c", 'head -c 4194304 "\$PSTAR_DATA/reference/ref.fa" | cat - "\$PSTAR_DATA/reads-\$1/\$1.fq" | sha256sum > aligned.txt', "sh", "{i}"]
count = $n
input_data = ["reference", "reads-{i}"]
output_data = [{ name = "aligned-{i}", files = ["aligned.txt"] }]
TOML
    local t0 t1
    t0=$(now)
    "$pstar" run -q "$dir/w.toml" --report "$dir/report.json" >/dev/null 2>"$dir/err" || { cat "$dir/err" >&2; return 1; }
    t1=$(now)
    python3 - "$dir/report.json" "$(sub "$t0" "$t1")" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s = r["summary"]
first = max(r["units"], key=lambda u: u.get("bytes_in", 0))
rate = first["bytes_in"] / first["staging_in_s"] / 1e6 if first.get("staging_in_s") else 0
to = ",".join(f"{k}={v}" for k, v in sorted(s["bytes_to"].items()))
print(sys.argv[2], s["bytes_moved"], f"{rate:.0f}", s["done"], to)
PY
    rm -rf "$dir/sandbox" "$dir/store"
}

echo
printf '%6s  %-14s %10s %14s  %s\n' N mode "wall (s)" "bytes moved" notes
for n in $N_LIST; do
    read -r w1 b1 < <(d1 "$n")
    printf '%6s  %-14s %10s %14s\n' "$n" "D1 naive" "$w1" "$b1"
    read -r w2 b2 r2 done2 to2 < <(d2 "$n")
    # The least that must move: the reference and the reads into the store, the reference
    # to each of the 2 pilots, each reads file to one pilot (outputs are a few bytes).
    min=$(( (3 * REF_MB + 2 * n * READS_MB) * 1000000 ))
    printf '%6s  %-14s %10s %14s  %s\n' "$n" "D2 Pilot-Data" "$w2" "$b2" "($done2 units done; minimum $min; to: $to2)"
    echo "        D1/D2 wall time: $(awk -v a="$w1" -v b="$w2" 'BEGIN { printf "%.1f", a / b }')x; bytes moved: $(awk -v a="$b1" -v b="$b2" 'BEGIN { printf "%.1f", a / b }')x fewer"
    echo "        first stage-in of the reference: $r2 MB/s = $(awk -v a="$r2" -v b="$raw" 'BEGIN { printf "%.2f", a / b }') of a raw sftp get ($raw MB/s)"
done
