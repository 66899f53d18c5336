#!/usr/bin/env bash
# A key-only OpenSSH server of one's own on 127.0.0.1, all of it in one directory:
#
#     bash scripts/testbed/sshd-up.sh DIR PORT
#
# Makes a host key and a client key (DIR/client_key, allowed to log in as root), starts
# sshd on 127.0.0.1:PORT (public keys only, sftp, up to 100 sessions per connection and
# 100 unauthenticated connections at once) and returns once it listens. For clients it
# writes DIR/known_hosts (this server's host key for [127.0.0.1]:PORT) and DIR/ssh_config,
# so that
#
#     ssh -F DIR/ssh_config -p PORT root@127.0.0.1 true
#
# needs nothing else. Running it again on a running server changes nothing. Stop it with
# scripts/testbed/sshd-down.sh DIR. Needs root and the Debian package openssh-server.
set -euo pipefail

die() {
    echo "sshd-up.sh: $*" >&2
    exit 1
}

[ "$#" -eq 2 ] || die "usage: sshd-up.sh DIR PORT"
D=$1 PORT=$2
[[ "$PORT" =~ ^[1-9][0-9]*$ ]] || die "not a port number: $PORT"
SSHD=/usr/sbin/sshd # sshd insists on being started by its absolute path
[ -x "$SSHD" ] || die "$SSHD missing: install the Debian package openssh-server (bash scripts/test.sh does)"
command -v ssh-keygen >/dev/null 2>&1 || die "ssh-keygen missing: install openssh-client"

mkdir -p "$D"
D=$(cd "$D" && pwd)
chmod 700 "$D"

# Is the sshd of DIR/sshd.pid running (not a zombie)?
running() {
    local pid stat
    [ -s "$D/sshd.pid" ] || return 1
    pid=$(cat "$D/sshd.pid")
    stat=$(ps -o stat= -p "$pid" 2>/dev/null) || return 1
    [[ "$stat" != Z* ]]
}

[ -f "$D/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C pstar-test-host -f "$D/host_ed25519"
[ -f "$D/client_key" ] || ssh-keygen -q -t ed25519 -N '' -C pstar-test-client -f "$D/client_key"
cp "$D/client_key.pub" "$D/authorized_keys"
chmod 600 "$D/authorized_keys" "$D/client_key"
host_name="[127.0.0.1]:$PORT"
[ "$PORT" != 22 ] || host_name=127.0.0.1
echo "$host_name $(cut -d' ' -f1,2 "$D/host_ed25519.pub")" >"$D/known_hosts"

cat >"$D/sshd_config" <<EOF
# Written by scripts/testbed/sshd-up.sh: a test sshd on loopback, all state in $D.
ListenAddress 127.0.0.1
Port $PORT
HostKey $D/host_ed25519
PidFile $D/sshd.pid
AuthorizedKeysFile $D/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
MaxStartups 100:30:200
MaxSessions 100
UseDNS no
# Marks every process started through this server (sshd-down.sh ends them).
SetEnv PSTAR_TESTBED_SSHD=$D
EOF

cat >"$D/ssh_config" <<EOF
# Written by scripts/testbed/sshd-up.sh: use with ssh -F $D/ssh_config -p $PORT root@127.0.0.1
Host *
    IdentityFile $D/client_key
    UserKnownHostsFile $D/known_hosts
    StrictHostKeyChecking accept-new
    BatchMode yes
    IdentitiesOnly yes
EOF

mkdir -p /run/sshd # the privilege separation directory sshd needs (also for -t)
"$SSHD" -t -f "$D/sshd_config" 2>"$D/sshd-check.log" || {
    cat "$D/sshd-check.log" >&2
    die "sshd rejects $D/sshd_config"
}

if ! running; then
    rm -f "$D/sshd.pid"
    # Without -D it daemonizes once it listens; -E: its log.
    "$SSHD" -f "$D/sshd_config" -E "$D/sshd.log" || {
        tail -n 20 "$D/sshd.log" >&2 2>/dev/null
        die "sshd did not start"
    }
fi

# Up = its PID file names a running sshd (written once it listens) and the port answers.
# (A taken port makes it log "Cannot bind any address" and exit, after daemonizing.)
for ((i = 0; i < 100; i++)); do
    if running && (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
        exit 0
    fi
    grep -q 'Cannot bind any address' "$D/sshd.log" 2>/dev/null && break
    sleep 0.05
done
echo "--- last lines of $D/sshd.log:" >&2
tail -n 20 "$D/sshd.log" >&2 2>/dev/null
die "sshd does not listen on 127.0.0.1:$PORT"
