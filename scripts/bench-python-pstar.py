"""pstar's Python API, measured (run by scripts/bench-python.sh, or alone in an
environment where the `pstar` package is installed):

    python scripts/bench-python-pstar.py [--units N] [--tasks N] [--rounds R] [--json FILE]

1. submit: `ComputeUnitService.submit_compute_units` of N units (default 100,000) on the
   embedded store, as a list of ComputeUnitDescription objects and as a list of dicts; the
   call alone is timed (the units then wait for a pilot; none is created).
2. functions: N Python no-op function units (default 20,000) on one local pilot of 2 cores,
   submitted one call at a time with `submit_function` and waited through their futures,
   as a Parsl or Dask user would; timed from the first submission to the last result.
   Also the same units submitted as one batch.

Each figure is the median of R rounds (default 3), each in a fresh session (and, for the
function units, a fresh pilot, warmed up with 200 calls first).
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time


def noop():
    return None


def submit_round(n, as_dicts):
    import pstar

    with tempfile.TemporaryDirectory() as tmp:
        with pstar.Session(sandbox=tmp) as s:
            cus = pstar.ComputeUnitService(s)
            if as_dicts:
                items = [{"executable": "/bin/true", "arguments": [str(i)]} for i in range(n)]
            else:
                items = [
                    pstar.ComputeUnitDescription(executable="/bin/true", arguments=[str(i)])
                    for i in range(n)
                ]
            t0 = time.perf_counter()
            units = cus.submit_compute_units(items)
            took = time.perf_counter() - t0
            assert len(units) == n
            cus.cancel()
    return n / took


def functions_round(n, batch):
    import pstar

    with tempfile.TemporaryDirectory() as tmp:
        with pstar.Session(sandbox=tmp) as s:
            pcs = pstar.PilotComputeService(s)
            pcs.create_pilot(cores=2, walltime=60)
            cus = pstar.ComputeUnitService(s)
            cus.add(pcs)
            warm = [cus.submit_function(noop).future() for _ in range(200)]
            for f in warm:
                f.result(timeout=300)
            t0 = time.perf_counter()
            if batch:
                units = cus.submit_compute_units(
                    [pstar.ComputeUnitDescription(function=noop) for _ in range(n)]
                )
                futures = [u.future() for u in units]
            else:
                futures = [cus.submit_function(noop).future() for _ in range(n)]
            for f in futures:
                f.result(timeout=600)
            took = time.perf_counter() - t0
    return n / took


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=100_000)
    ap.add_argument("--tasks", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args()

    out = {"units": args.units, "tasks": args.tasks, "cpu_count": os.cpu_count()}
    for name, fn in [
        ("submit_descriptions", lambda: submit_round(args.units, as_dicts=False)),
        ("submit_dicts", lambda: submit_round(args.units, as_dicts=True)),
        ("functions_one_by_one", lambda: functions_round(args.tasks, batch=False)),
        ("functions_batch", lambda: functions_round(args.tasks, batch=True)),
    ]:
        rates = [fn() for _ in range(args.rounds)]
        out[name] = {"rate_median": statistics.median(rates), "rates": rates}
        print(
            "pstar %-22s %10s /s (median of %d: %s)"
            % (
                name,
                "{:,.0f}".format(statistics.median(rates)),
                len(rates),
                ", ".join("{:,.0f}".format(r) for r in rates),
            ),
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
