#!/usr/bin/env bash
# A Slurm 22.05 cluster of one's own on loopback, all of it in one directory:
#
#     bash scripts/testbed/slurm-up.sh DIR NODES CPUS_PER_NODE CTLD_PORT SLURMD_BASE_PORT
#
# Starts a munged (own key and socket in DIR/munge), a slurmctld on CTLD_PORT, and NODES
# slurmd on this host, one per fake node n1..nNODES, node i on port SLURMD_BASE_PORT+i-1
# (so SLURMD_BASE_PORT .. SLURMD_BASE_PORT+NODES-1 must be free). Each node has
# CPUS_PER_NODE CPUs whatever the hardware has (SlurmdParameters=config_overrides).
# Returns once every node is idle. No accounting database: `sacct -c` reads the job
# completion file (JobCompType=jobcomp/filetxt); `scontrol show job` keeps finished jobs
# for 300 s (MinJobAge).
#
# EVERY Slurm client command must run with SLURM_CONF=DIR/slurm.conf: without it
# Slurm 22.05 goes "configless" and sends a DNS query off this machine.
#
# Running it again on a running cluster starts only what is not running. Stop it with
# scripts/testbed/slurm-down.sh DIR. Needs root and the Debian packages slurm-wlm, munge.
set -euo pipefail

die() {
    echo "slurm-up.sh: $*" >&2
    exit 1
}

# The last lines of each log named, for an error message.
log_tails() {
    local f
    for f in "$@"; do
        [ -f "$f" ] || continue
        echo "--- last lines of $f:" >&2
        tail -n 20 "$f" >&2
    done
}

[ "$#" -eq 5 ] || die "usage: slurm-up.sh DIR NODES CPUS_PER_NODE CTLD_PORT SLURMD_BASE_PORT"
D=$1 NODES=$2 CPN=$3 CTLD_PORT=$4 BASE=$5
for n in "$NODES" "$CPN" "$CTLD_PORT" "$BASE"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "not a positive number: $n"
done
for prog in munged slurmctld slurmd sinfo; do
    command -v "$prog" >/dev/null 2>&1 ||
        PATH=$PATH:/usr/sbin command -v "$prog" >/dev/null 2>&1 ||
        die "$prog not found: install the Debian packages slurm-wlm and munge (bash scripts/test.sh does)"
done
PATH=$PATH:/usr/sbin

mkdir -p "$D"
D=$(cd "$D" && pwd)
H=$(hostname -s)
export SLURM_CONF=$D/slurm.conf

# Is the daemon whose PID file this is running (not a zombie)?
running() {
    local pid stat
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    stat=$(ps -o stat= -p "$pid" 2>/dev/null) || return 1
    [[ "$stat" != Z* ]]
}

# Does something listen on 127.0.0.1:$1 already?
port_taken() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Waits up to $2 tenths of a second for 127.0.0.1:$1 to accept connections.
wait_port() {
    local i
    for ((i = 0; i < $2; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

mkdir -p "$D"/{munge,state,log}
chmod 755 "$D" "$D/munge" # munged: "socket is inaccessible" unless all may traverse it
for ((i = 1; i <= NODES; i++)); do
    mkdir -p "$D/spool/n$i"
done

# --- munged: its own key and socket ----------------------------------------------------
if [ ! -f "$D/munge/munge.key" ]; then
    (umask 077 && head -c 1024 /dev/urandom >"$D/munge/munge.key")
    chmod 400 "$D/munge/munge.key"
fi
if ! running "$D/munge/munged.pid"; then
    rm -f "$D/munge/munged.pid"
    munged --key-file="$D/munge/munge.key" --socket="$D/munge/munge.sock" \
        --pid-file="$D/munge/munged.pid" --log-file="$D/munge/munged.log" \
        --seed-file="$D/munge/munged.seed" ||
        { log_tails "$D/munge/munged.log"; die "munged did not start"; }
fi

# --- slurm.conf -----------------------------------------------------------------------
cat >"$D/slurm.conf.new" <<EOF
# Written by scripts/testbed/slurm-up.sh: a test cluster on loopback, all state in $D.
ClusterName=pstartest
SlurmctldHost=$H(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$BASE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$D/munge/munge.sock
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool/%n
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd-%n.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$D/log/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
MinJobAge=300
KillWait=5
InactiveLimit=0
NodeName=n[1-$NODES] NodeHostname=$H NodeAddr=127.0.0.1 Port=[$BASE-$((BASE + NODES - 1))] CPUs=$CPN RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
mv "$D/slurm.conf.new" "$D/slurm.conf"

# --- slurmctld ------------------------------------------------------------------------
if ! running "$D/slurmctld.pid"; then
    rm -f "$D/slurmctld.pid"
    ! port_taken "$CTLD_PORT" || die "port $CTLD_PORT (for slurmctld) is taken"
    slurmctld -f "$D/slurm.conf" ||
        { log_tails "$D/log/slurmctld.log"; die "slurmctld did not start"; }
fi
# (It dies at once if its port is taken: "slurm_init_msg_engine_port error". Check that it
# still runs once it, or someone else, listens there.)
if ! wait_port "$CTLD_PORT" 100 || ! { sleep 0.05 && running "$D/slurmctld.pid"; }; then
    log_tails "$D/log/slurmctld.log"
    die "slurmctld does not listen on 127.0.0.1:$CTLD_PORT"
fi

# --- one slurmd per fake node ---------------------------------------------------------
for ((i = 1; i <= NODES; i++)); do
    if ! running "$D/slurmd-n$i.pid"; then
        rm -f "$D/slurmd-n$i.pid"
        ! port_taken "$((BASE + i - 1))" || die "port $((BASE + i - 1)) (for the slurmd of n$i) is taken"
        slurmd -f "$D/slurm.conf" -N "n$i" ||
            { log_tails "$D/log/slurmd-n$i.log"; die "slurmd for node n$i did not start"; }
    fi
done

# --- wait (up to 30 s) until every node is idle ---------------------------------------
states=
deadline=$((SECONDS + 30))
while [ "$SECONDS" -lt "$deadline" ]; do
    running "$D/slurmctld.pid" || break
    # (A slurmd dies at once if its port is taken.)
    for ((i = 1; i <= NODES; i++)); do
        if { [ -s "$D/slurmd-n$i.pid" ] && ! running "$D/slurmd-n$i.pid"; } ||
            grep -q 'Unable to bind listen port' "$D/log/slurmd-n$i.log" 2>/dev/null; then
            log_tails "$D/log/slurmd-n$i.log"
            die "slurmd for node n$i failed (port $((BASE + i - 1)) taken?)"
        fi
    done
    states=$(timeout 5 sinfo -h -N -o '%N %t' 2>&1) || true
    if [ "$(grep -c ' idle$' <<<"$states")" -ge "$NODES" ]; then
        exit 0
    fi
    sleep 0.1
done
running "$D/slurmctld.pid" || states="(slurmctld is not running)"
logs=("$D/log/slurmctld.log")
for ((i = 1; i <= NODES; i++)); do
    logs+=("$D/log/slurmd-n$i.log")
done
log_tails "${logs[@]}"
die "not all $NODES nodes idle; sinfo says:
$states"
