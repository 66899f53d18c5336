#!/usr/bin/env bash
# Python tasks: pstar against Parsl and Dask. Figures, not tests: never fails on speed,
# only when a system errs, hangs or leaves processes behind. Usage:
#
#   bash scripts/bench-python.sh                            (20,000 tasks, 3 rounds)
#   bash scripts/bench-python.sh --tasks 5000 --rounds 5 --only parsl --json /tmp/b.json
#
# Arguments go to scripts/bench-python-baselines.py (see its --help): the rate of no-op
# Python function tasks in Parsl's HighThroughputExecutor and in Dask's LocalCluster, with
# 2 workers, each system in a fresh process of its own, median of the rounds.
#
# The baselines run in a virtualenv of their own, made on first use with the versions
# pinned below, at ${PSTAR_BENCH_VENV:-$HOME/.cache/pstar-bench-venv} (PYTHON picks the
# interpreter that makes it; default python3). It is reinstalled when the pins change.
# Nothing here needs the network once the virtualenv exists.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
venv=${PSTAR_BENCH_VENV:-$HOME/.cache/pstar-bench-venv}

# Exact versions, so that figures from different days compare. All install on
# CPython 3.11; dask and distributed are released together and move together.
requirements=(
    "parsl==2026.10.26"
    "dask[distributed]==2026.8.0"
    "distributed==2026.8.0"
    "cloudpickle==3.1.3"
)

# Makes the virtualenv if missing, and installs the pins unless the stamp in it says
# these very pins are there already.
ensure_venv() {
    local stamp=$venv/pstar-bench-requirements.txt want
    want=$(printf '%s\n' "${requirements[@]}")
    if [[ ! -x $venv/bin/python ]]; then
        echo "== making the virtualenv $venv ($("$PYTHON" --version 2>&1))"
        mkdir -p "$(dirname "$venv")"
        "$PYTHON" -m venv "$venv"
    fi
    if [[ ! -f $stamp || $(<"$stamp") != "$want" ]]; then
        echo "== installing ${requirements[*]}"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            "${requirements[@]}"
        printf '%s\n' "$want" >"$stamp"
    fi
}

# The baselines: Parsl and Dask, each in a fresh child process (the script sees to
# clean-up, time bounds and leftover processes itself).
bench_baselines() {
    "$venv/bin/python" scripts/bench-python-baselines.py "$@"
}

# pstar's own Python tasks, the same no-op workload through pstar's Python API.
bench_pstar() {
    # filled in when the pstar wheel exists
    :
}

ensure_venv
echo "== machine: $(nproc) cores, $(uname -sr); $(uptime | sed 's/.*load average/load average/')"
bench_baselines "$@"
bench_pstar "$@"
