#!/usr/bin/env bash
# Python tasks: pstar against Parsl and Dask. Figures, not tests: never fails on speed,
# only when a system errs, hangs or leaves processes behind. Usage:
#
#   bash scripts/bench-python.sh                            (20,000 tasks, 3 rounds)
#   bash scripts/bench-python.sh --tasks 5000 --rounds 5 --parsl-no-log --dask-map
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

# pstar's own Python tasks: the package built from this checkout (`pip install ./python`,
# a release build) into the same virtualenv, then scripts/bench-python-pstar.py with the
# same number of tasks and rounds: submission of 100,000 units, and the no-op function
# units on one local 2-core pilot.
bench_pstar() {
    echo "== pip install ./python (release build of the extension)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --force-reinstall --no-deps ./python
    "$venv/bin/python" scripts/bench-python-pstar.py --tasks "$tasks" --rounds "$rounds" \
        --json "$pstar_json"
}

# The ratios of pstar's one-call-at-a-time rate to each baseline, from the same run.
ratios() {
    "$venv/bin/python" - "$base_json" "$pstar_json" <<'PY'
import json, sys
base, mine = (json.load(open(p)) for p in sys.argv[1:])
rate = mine["functions_one_by_one"]["rate_median"]
print("== pstar function units, one call at a time: %s /s" % format(round(rate), ","))
for key, name in (("parsl_htex", "Parsl HTEX python_app"), ("dask_localcluster", "Dask LocalCluster")):
    if key in base:
        b = base[key]["rate_median"]
        print("   %.2fx %s (%s /s)" % (rate / b, name, format(round(b), ",")))
PY
}

tasks=20000
rounds=3
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case ${args[i]} in
        --tasks) tasks=${args[i + 1]} ;;
        --rounds) rounds=${args[i + 1]} ;;
    esac
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
base_json=$work/baselines.json
pstar_json=$work/pstar.json

ensure_venv
echo "== machine: $(nproc) cores, $(uname -sr); $(uptime | sed 's/.*load average/load average/')"
bench_baselines "$@" --json "$base_json"
bench_pstar
ratios
