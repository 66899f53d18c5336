#!/usr/bin/env bash
# An S3-compatible server of one's own on 127.0.0.1 (s3s-fs), all of it in one directory:
#
#     bash scripts/testbed/s3-up.sh DIR PORT [BUCKET...]
#
# Makes a random access key and secret, starts s3s-fs on 127.0.0.1:PORT serving
# DIR/data (objects are plain files: DIR/data/BUCKET/KEY), makes the buckets named, and
# returns once it listens. For clients it writes DIR/credentials (mode 0600, the format of
# PSTAR_S3_CREDENTIALS_FILE) and DIR/env, so that
#
#     source DIR/env    # PSTAR_S3_ENDPOINT, PSTAR_S3_REGION, PSTAR_S3_CREDENTIALS_FILE
#
# sets up pstar (and `aws --endpoint-url`). Stop it with scripts/testbed/s3-down.sh DIR.
# Needs s3s-fs (bash scripts/test.sh installs it). The tests use S3Server (crates/testbed),
# which starts the same server itself.
set -euo pipefail

die() {
    echo "s3-up.sh: $*" >&2
    exit 1
}

[ "$#" -ge 2 ] || die "usage: s3-up.sh DIR PORT [BUCKET...]"
D=$1 PORT=$2
shift 2
[[ "$PORT" =~ ^[1-9][0-9]*$ ]] || die "not a port number: $PORT"
S3S_FS=$(command -v s3s-fs || echo "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs")
[ -x "$S3S_FS" ] || die "s3s-fs missing: cargo install s3s-fs --version 0.14.1 --features binary --locked (bash scripts/test.sh does)"

mkdir -p "$D/data"
D=$(cd "$D" && pwd)
chmod 700 "$D"
for bucket in "$@"; do
    [[ "$bucket" =~ ^[a-z0-9][a-z0-9.-]{2,62}$ ]] || die "not a bucket name: $bucket"
    mkdir -p "$D/data/$bucket"
done

if [ ! -s "$D/credentials" ]; then
    umask 077
    key="AKPSTAR$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
    secret=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
    printf 'access_key_id = %s\nsecret_access_key = %s\n' "$key" "$secret" >"$D/credentials"
fi
key=$(sed -n 's/^access_key_id = //p' "$D/credentials")
secret=$(sed -n 's/^secret_access_key = //p' "$D/credentials")
cat >"$D/env" <<ENV
# Written by scripts/testbed/s3-up.sh: source it to use the server at 127.0.0.1:$PORT.
export PSTAR_S3_ENDPOINT=http://127.0.0.1:$PORT
export PSTAR_S3_REGION=us-east-1
export PSTAR_S3_CREDENTIALS_FILE=$D/credentials
ENV

running() {
    [ -s "$D/s3s-fs.pid" ] && kill -0 "$(cat "$D/s3s-fs.pid")" 2>/dev/null
}

if ! running; then
    # The secret goes in as an argument, the only way s3s-fs takes it: a test server's
    # made-up key, which other users of the machine may see in `ps`.
    nohup "$S3S_FS" --host 127.0.0.1 --port "$PORT" --access-key "$key" --secret-key "$secret" \
        "$D/data" >"$D/s3s-fs.log" 2>&1 </dev/null &
    echo $! >"$D/s3s-fs.pid"
fi

for ((i = 0; i < 200; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
        exit 0
    fi
    running || break
    sleep 0.05
done
echo "--- last lines of $D/s3s-fs.log:" >&2
tail -n 20 "$D/s3s-fs.log" >&2 2>/dev/null
die "s3s-fs does not listen on 127.0.0.1:$PORT"
