#!/usr/bin/env bash
# A Grid Engine (SGE 8.1.9) cell of one's own on loopback, all of it in one directory:
#
#     bash scripts/testbed/sge-up.sh DIR SLOTS QMASTER_PORT EXECD_PORT
#
# Makes the cell "pstar" under SGE_ROOT=DIR/root (spool in DIR/spool), starts its
# sge_qmaster on QMASTER_PORT and an sge_execd for this host on EXECD_PORT, and sets up:
# this host as submit host, a queue all.q with SLOTS slots (no load thresholds, so it
# oversubscribes the CPUs), a parallel environment smp (allocation_rule $pe_slots), root may
# run jobs (min_uid 0), the scheduler runs every second, accounting is flushed every second
# (qacct). Returns once the queue instance is up.
#
# Clients need SGE_ROOT=DIR/root SGE_CELL=pstar SGE_QMASTER_PORT=QMASTER_PORT
# SGE_EXECD_PORT=EXECD_PORT in their environment (DIR/env.sh sets them): without the ports
# they would talk to the machine's default cell (6444/6445).
#
# Running it again on a running cell starts only what is not running. Stop it with
# scripts/testbed/sge-down.sh DIR. Needs root and the Debian packages gridengine-master,
# gridengine-exec, gridengine-client (whose install made /var/lib/gridengine and the
# sgeadmin user; its default cell is never used).
set -euo pipefail

die() {
    echo "sge-up.sh: $*" >&2
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

[ "$#" -eq 4 ] || die "usage: sge-up.sh DIR SLOTS QMASTER_PORT EXECD_PORT"
D=$1 SLOTS=$2 QPORT=$3 EPORT=$4
for n in "$SLOTS" "$QPORT" "$EPORT"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "not a positive number: $n"
done
SGE_LIB=/usr/lib/gridengine
SGE_SHARE=/usr/share/gridengine
for f in "$SGE_LIB/sge_qmaster" "$SGE_LIB/sge_execd" "$SGE_LIB/qconf" "$SGE_LIB/spoolinit"; do
    [ -x "$f" ] || die "$f missing: install the Debian packages gridengine-master gridengine-exec gridengine-client (bash scripts/test.sh does)"
done
id sgeadmin >/dev/null 2>&1 || die "no user sgeadmin (made by the gridengine-common package)"

mkdir -p "$D"
D=$(cd "$D" && pwd)
R=$D/root
C=pstar
H=$(hostname)
export SGE_ROOT=$R SGE_CELL=$C SGE_QMASTER_PORT=$QPORT SGE_EXECD_PORT=$EPORT
PATH=$SGE_LIB:$PATH

# Is the daemon whose PID file this is running (not a zombie)?
running() {
    local pid stat
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    stat=$(ps -o stat= -p "$pid" 2>/dev/null) || return 1
    [[ "$stat" != Z* ]]
}

# Does something listen on 127.0.0.1:$1 already? (A daemon of the cell whose port is taken
# does not say so quickly: it retries for a long while.)
port_taken() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

cat >"$D/env.sh" <<EOF
# The environment of Grid Engine clients for the cell in $D (source it).
export SGE_ROOT=$R SGE_CELL=$C SGE_QMASTER_PORT=$QPORT SGE_EXECD_PORT=$EPORT
EOF

# --- the cell: SGE_ROOT=$D/root, its spool in $D/spool ----------------------------------
if [ ! -f "$D/spool/spooldb/.initialised" ]; then
    mkdir -p "$R/$C/common" "$D"/spool/{qmaster,execd,spooldb} "$D/tmp"
    for x in bin lib util utilbin; do
        ln -sfn "/var/lib/gridengine/$x" "$R/$x"
    done
    sed -e "s#^spooling_params .*#spooling_params         $D/spool/spooldb#" \
        -e "s#^qmaster_spool_dir .*#qmaster_spool_dir       $D/spool/qmaster#" \
        "$SGE_SHARE/default-bootstrap" >"$R/$C/common/bootstrap"
    echo "$H" >"$R/$C/common/act_qmaster"
    # This host's name resolves to 127.0.0.1, whose first name in /etc/hosts is
    # "localhost": without this alias every client is refused ("client IP resolved to host
    # name localhost. This is not identical to clients host name").
    [ "$H" = localhost ] || echo "$H localhost" >"$R/$C/common/host_aliases"
    sed -e "s#^execd_spool_dir .*#execd_spool_dir        $D/spool/execd#" \
        -e 's/^min_uid .*/min_uid                0/' \
        -e 's/^min_gid .*/min_gid                0/' \
        -e 's/^load_report_time .*/load_report_time       00:00:05/' \
        -e 's#^mailer .*#mailer                 /bin/true#' \
        -e 's/flush_time=[0-9:]*/flush_time=00:00:01/' \
        "$SGE_SHARE/default-configuration" >"$D/global.conf"
    chown -R sgeadmin:sgeadmin "$D"
    chmod 755 "$D"
    if ! su -s /bin/sh sgeadmin -c "
        export SGE_ROOT=$R SGE_CELL=$C
        $SGE_LIB/spoolinit berkeleydb libspoolb $D/spool/spooldb init &&
        $SGE_LIB/spooldefaults configuration $D/global.conf &&
        $SGE_LIB/spooldefaults complexes $SGE_SHARE/util/resources/centry &&
        $SGE_LIB/spooldefaults usersets $SGE_SHARE/util/resources/usersets &&
        $SGE_LIB/spooldefaults managers sgeadmin" >"$D/init.log" 2>&1; then
        log_tails "$D/init.log"
        die "could not initialise the cell's spool in $D/spool/spooldb"
    fi
    touch "$D/spool/spooldb/.initialised"
fi

# --- sge_qmaster ----------------------------------------------------------------------
QPID=$D/spool/qmaster/qmaster.pid
if ! running "$QPID"; then
    rm -f "$QPID"
    ! port_taken "$QPORT" || die "port $QPORT (for sge_qmaster) is taken"
    sge_qmaster >"$D/qmaster.out" 2>&1 ||
        { log_tails "$D/qmaster.out" "$D/spool/qmaster/messages"; die "sge_qmaster did not start"; }
fi
up=0
deadline=$((SECONDS + 15))
while [ "$SECONDS" -lt "$deadline" ]; do
    # (It dies at once if its port is taken, after writing its PID file.)
    [ -s "$QPID" ] && ! running "$QPID" && break
    if timeout 5 qconf -sh >/dev/null 2>&1; then
        up=1
        break
    fi
    sleep 0.1
done
[ "$up" = 1 ] || {
    log_tails "$D/qmaster.out" "$D/spool/qmaster/messages"
    [ -s "$QPID" ] && ! running "$QPID" && die "sge_qmaster died (port $QPORT taken?)"
    die "sge_qmaster does not answer on port $QPORT after 15 s"
}

# --- configuration: submit host, scheduler, PE smp ------------------------------------
# (qconf says what it did on stderr: keep it, show it only when something fails.)
qconf -ss 2>/dev/null | grep -qxF "$H" || qconf -as "$H" >"$D/qconf.out" 2>&1 ||
    { log_tails "$D/qconf.out"; die "qconf -as $H failed"; }
qconf -ssconf >"$D/sched.default" 2>"$D/qconf.out" ||
    { log_tails "$D/qconf.out"; die "qconf -ssconf failed"; }
sed -e 's/^schedule_interval .*/schedule_interval                 0:0:1/' \
    -e 's/^flush_submit_sec .*/flush_submit_sec                  1/' \
    -e 's/^flush_finish_sec .*/flush_finish_sec                  1/' \
    -e 's/^job_load_adjustments .*/job_load_adjustments              NONE/' \
    -e 's/^load_adjustment_decay_time .*/load_adjustment_decay_time        0:0:0/' \
    "$D/sched.default" >"$D/sched.conf"
qconf -Msconf "$D/sched.conf" >"$D/qconf.out" 2>&1 ||
    { log_tails "$D/qconf.out"; die "qconf -Msconf failed"; }
if ! qconf -sp smp >/dev/null 2>&1; then
    cat >"$D/smp.pe" <<'EOF'
pe_name            smp
slots              99999
user_lists         NONE
xuser_lists        NONE
start_proc_args    NONE
stop_proc_args     NONE
allocation_rule    $pe_slots
control_slaves     TRUE
job_is_first_task  TRUE
urgency_slots      min
accounting_summary TRUE
qsort_args         NONE
EOF
    qconf -Ap "$D/smp.pe" >"$D/qconf.out" 2>&1 ||
        { log_tails "$D/qconf.out"; die "qconf -Ap smp failed"; }
fi

# --- sge_execd (registers this host as execution host) --------------------------------
execd_running() {
    local f
    for f in "$D"/spool/execd/*/execd.pid; do
        running "$f" && return 0
    done
    return 1
}
# (Its start takes a second before it daemonizes: the queue is set up meanwhile.)
EXECD_STARTER=
if ! execd_running; then
    rm -f "$D"/spool/execd/*/execd.pid
    ! port_taken "$EPORT" || die "port $EPORT (for sge_execd) is taken"
    sge_execd >"$D/execd.out" 2>&1 &
    EXECD_STARTER=$!
fi

# --- queue all.q: SLOTS slots on this host ---------------------------------------------
if ! qconf -sq all.q >/dev/null 2>&1; then
    cat >"$D/all.q" <<EOF
qname                 all.q
hostlist              $H
seq_no                0
load_thresholds       NONE
suspend_thresholds    NONE
nsuspend              1
suspend_interval      00:05:00
priority              0
min_cpu_interval      00:05:00
processors            UNDEFINED
qtype                 BATCH INTERACTIVE
ckpt_list             NONE
pe_list               smp
rerun                 FALSE
slots                 $SLOTS
tmpdir                $D/tmp
shell                 /bin/sh
prolog                NONE
epilog                NONE
shell_start_mode      unix_behavior
starter_method        NONE
suspend_method        NONE
resume_method         NONE
terminate_method      NONE
notify                00:00:60
owner_list            NONE
user_lists            NONE
xuser_lists           NONE
subordinate_list      NONE
complex_values        NONE
projects              NONE
xprojects             NONE
calendar              NONE
initial_state         default
s_rt                  INFINITY
h_rt                  INFINITY
s_cpu                 INFINITY
h_cpu                 INFINITY
s_fsize               INFINITY
h_fsize               INFINITY
s_data                INFINITY
h_data                INFINITY
s_stack               INFINITY
h_stack               INFINITY
s_core                INFINITY
h_core                INFINITY
s_rss                 INFINITY
h_rss                 INFINITY
s_vmem                INFINITY
h_vmem                INFINITY
EOF
    qconf -Aq "$D/all.q" >"$D/queue.out" 2>&1 ||
        { log_tails "$D/queue.out"; die "could not add queue all.q"; }
fi
if [ -n "$EXECD_STARTER" ] && ! wait "$EXECD_STARTER"; then
    log_tails "$D/execd.out" "$D"/spool/execd/*/messages
    die "sge_execd did not start"
fi

# --- wait until the queue instance takes jobs (execd known and reporting) ---------------
# `qstat -f` lists all.q@HOST with a states column once something is wrong with it
# (u = execd unknown): wait for a line without one.
out=
deadline=$((SECONDS + 20))
while [ "$SECONDS" -lt "$deadline" ]; do
    out=$(timeout 5 qstat -f -q all.q 2>&1) || true
    if awk -v q="all.q@$H" '$1 == q && NF == 5 { ok = 1 } END { exit !ok }' <<<"$out"; then
        exit 0
    fi
    sleep 0.1
done
log_tails "$D/execd.out" "$D/spool/qmaster/messages" "$D"/spool/execd/*/messages
execd_running || out="(sge_execd is not running: port $EPORT taken?)
$out"
die "queue instance all.q@$H not up after 20 s; qstat -f says:
$out"
