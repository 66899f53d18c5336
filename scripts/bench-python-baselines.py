#!/usr/bin/env python3
"""Python baselines for pstar: the rate of no-op Python function tasks in Parsl and Dask.

Figures, not tests: it never fails on speed, only when a system errs or hangs. Run it
through scripts/bench-python.sh, which makes the virtualenv with the pinned versions:

    bash scripts/bench-python.sh                          # 20,000 tasks, 3 rounds, both
    bash scripts/bench-python.sh --tasks 5000 --rounds 5 --only dask --json /tmp/b.json

Each system runs in a fresh child process of this script (`--child SYSTEM`), one after
the other, so that one system's leftovers cannot slow the other:

  parsl  HighThroughputExecutor, LocalProvider, one block of 2 workers (one per core of
         this 2-core machine: max_workers_per_node=2, cores_per_worker=1), loopback only,
         no usage tracking, no scaling (strategy none, 1 block fixed); the run_dir
         (runinfo, parsl.log, worker logs) is in a temporary directory that is removed.
         Parsl's own logging stays on (its default: a DEBUG parsl.log, several lines per
         task); --parsl-no-log turns it off (Config(initialize_logging=False)).
  dask   distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True),
         loopback only, no dashboard, scratch space in a temporary directory;
         client.submit(noop, pure=False) once per task (as Parsl submits: one call per
         task); --dask-map submits each round with one client.map(..., pure=False).

In each child: start the system, run a warm-up (--warmup tasks, which also waits until
every worker is up), then --rounds rounds of --tasks no-op tasks. A round's time runs from
just before the first submit to when the last future is done; its rate is tasks / time.
The figure printed is the median of the rounds.

Every wait is bounded: start-up and warm-up by --timeout, each round by --timeout, clean-up
by 120 s; a child that overruns is killed. Every process a child starts carries a marker
in its environment (PSTAR_BENCH_TAG; SPT_NOENV=1 keeps setproctitle, which Parsl's
interchange and Dask's workers use, from overwriting it), and this script is a child
subreaper (Linux), so what they leave orphaned stays its descendant. After each child ends,
any process still carrying the marker or descending from this script 10 s later is
reported and killed, and the script then fails.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

SYSTEMS = {
    # name on the command line: (key in the JSON, label printed)
    "parsl": ("parsl_htex", "parsl HTEX python_app no-op"),
    "dask": ("dask_localcluster", "dask LocalCluster submit no-op"),
}
WORKERS = 2  # one per core of the benchmark machine; the figures are for that shape
TAG_VAR = "PSTAR_BENCH_TAG"
CLEANUP_TIMEOUT = 120.0


def noop():
    return None


def noop_arg(_i):
    """noop for client.map, which passes each item of the range."""
    return None


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Deadline:
    """A point in time that a wait must not pass."""

    def __init__(self, seconds: float, what: str):
        self.at = time.monotonic() + seconds
        self.seconds = seconds
        self.what = what

    def left(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{self.what}: not done within {self.seconds:.0f} s")
        return left


# ---------------------------------------------------------------------------------------
# The children: one system each


def child_parsl(args, tmp: str, result: dict) -> None:
    import concurrent.futures

    import parsl
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider

    result["versions"] = {"parsl": parsl.__version__}
    config = Config(
        executors=[
            HighThroughputExecutor(
                label="htex_local",
                address="127.0.0.1",
                max_workers_per_node=WORKERS,
                cores_per_worker=1,
                provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1),
            )
        ],
        strategy="none",
        usage_tracking=0,
        run_dir=os.path.join(tmp, "runinfo"),
        initialize_logging=not args.parsl_no_log,
    )
    result["config"] = (
        "HighThroughputExecutor(address=127.0.0.1, max_workers_per_node=2, "
        "cores_per_worker=1, LocalProvider(init/min/max_blocks=1)), strategy=none, "
        f"initialize_logging={not args.parsl_no_log}, other settings parsl's defaults"
    )
    app = parsl.python_app(noop, executors=["htex_local"])

    def batch(n: int, deadline: Deadline) -> None:
        futs = []
        for i in range(n):
            futs.append(app())
            if i % 1000 == 999:
                deadline.left()
        done, not_done = concurrent.futures.wait(futs, timeout=deadline.left())
        if not_done:
            raise TimeoutError(f"{deadline.what}: {len(not_done)} of {n} tasks not done "
                               f"within {deadline.seconds:.0f} s")
        for f in futs:
            if f.result() is not None:
                raise RuntimeError(f"noop returned {f.result()!r}")

    dfk = parsl.load(config)
    try:
        run_rounds(args, result, batch)
    finally:
        bounded("parsl cleanup", lambda: (dfk.cleanup(), parsl.clear()))


def child_dask(args, tmp: str, result: dict) -> None:
    import cloudpickle
    import dask
    import distributed
    from distributed import Client, LocalCluster

    result["versions"] = {"dask": dask.__version__, "distributed": distributed.__version__,
                          "cloudpickle": cloudpickle.__version__}
    result["config"] = (
        "LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host=127.0.0.1, "
        "dashboard_address=None), "
        + ("client.map(noop, range(N), pure=False) per round, " if args.dask_map
           else "client.submit(noop, pure=False) per task, ")
        + "other settings dask's defaults"
    )
    start = Deadline(args.timeout, "dask start-up")
    cluster = LocalCluster(
        n_workers=WORKERS,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        local_directory=os.path.join(tmp, "dask-scratch"),
    )
    client = None
    try:
        client = Client(cluster, timeout=start.left())
        client.wait_for_workers(WORKERS, timeout=start.left())

        def batch(n: int, deadline: Deadline) -> None:
            if args.dask_map:
                futs = client.map(noop_arg, range(n), pure=False)
            else:
                futs = []
                for i in range(n):
                    futs.append(client.submit(noop, pure=False))
                    if i % 1000 == 999:
                        deadline.left()
            try:
                distributed.wait(futs, timeout=deadline.left())
            except TimeoutError:
                raise TimeoutError(f"{deadline.what}: tasks not done within "
                                   f"{deadline.seconds:.0f} s") from None
            bad = [f for f in futs if f.status != "finished"]
            if bad:
                raise RuntimeError(f"{len(bad)} tasks ended {bad[0].status}: {bad[0].exception()}")

        run_rounds(args, result, batch)
    finally:
        def close():
            if client is not None:
                client.close()
            cluster.close()
        bounded("dask cleanup", close)


def run_rounds(args, result: dict, batch) -> None:
    """Warm up, then time --rounds batches of --tasks no-op tasks."""
    t0 = time.perf_counter()
    batch(args.warmup, Deadline(args.timeout, "warm-up (and start-up)"))
    log(f"   warm-up: {args.warmup} tasks in {time.perf_counter() - t0:.1f} s")
    result["rates"] = []
    for r in range(1, args.rounds + 1):
        deadline = Deadline(args.timeout, f"round {r}")
        t0 = time.perf_counter()
        batch(args.tasks, deadline)
        elapsed = time.perf_counter() - t0
        rate = args.tasks / elapsed
        result["rates"].append(round(rate, 1))
        log(f"   round {r}: {args.tasks} tasks in {elapsed:.2f} s = {rate:,.0f} tasks/s")


def bounded(what: str, fn) -> None:
    """Run fn in a thread; if it has not returned within CLEANUP_TIMEOUT, exit hard (the
    parent then kills what is left)."""
    err = []

    def run():
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - reported below
            err.append(e)

    t = threading.Thread(target=run, daemon=True, name=what)
    t.start()
    t.join(CLEANUP_TIMEOUT)
    if t.is_alive():
        log(f"error: {what} did not finish within {CLEANUP_TIMEOUT:.0f} s")
        sys.stderr.flush()
        os._exit(3)
    if err:
        log(f"error: {what}: {err[0]!r}")


def child_main(args) -> int:
    """Runs one system in args.workdir, which the parent made and removes."""
    child = {"parsl": child_parsl, "dask": child_dask}[args.child]
    result: dict = {}
    try:
        child(args, args.workdir, result)
    finally:
        with open(os.path.join(args.workdir, "result.json"), "w") as f:
            json.dump(result, f)
    return 0


# ---------------------------------------------------------------------------------------
# The parent: one child per system, then the report


def become_subreaper() -> None:
    """Orphans of our descendants are re-parented to us rather than to init (Linux), so
    that leftovers can be found by ancestry as well as by their marker."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_CHILD_SUBREAPER = 36
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            log(f"note: prctl(PR_SET_CHILD_SUBREAPER): errno {ctypes.get_errno()}")
    except (OSError, AttributeError) as e:
        log(f"note: cannot become a child subreaper ({e}); leftovers found by marker only")


def reap() -> None:
    """Collects the exit status of any re-parented orphan that has ended."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def descendants(root: int) -> list[int]:
    """Live (non-zombie) processes below root."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(name))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def tagged_pids(tag: str) -> list[int]:
    """Processes whose environment carries our marker (the child and all it started,
    even those that left its process group or were re-parented)."""
    needle = f"{TAG_VAR}={tag}".encode()
    me = os.getpid()
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    pids.append(int(name))
        except OSError:
            pass  # gone, or a kernel thread
    return pids


def describe(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:120]
    except OSError:
        return "?"


def leftovers(tag: str) -> list[int]:
    reap()
    return sorted(set(tagged_pids(tag)) | set(descendants(os.getpid())))


def kill_leftovers(tag: str, grace: float = 10.0) -> list[str]:
    """Ends every process still carrying the marker, or below this script, once `grace`
    seconds have passed (some helpers, like multiprocessing's resource tracker, leave by
    themselves just after their parent): TERM, up to 5 s, then KILL."""
    end = time.monotonic() + grace
    left = leftovers(tag)
    while left and time.monotonic() < end:
        time.sleep(0.2)
        left = leftovers(tag)
    if not left:
        return []
    found = [f"{pid} {describe(pid)}" for pid in left]
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
        for pid in left:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        end = time.monotonic() + wait
        while left and time.monotonic() < end:
            time.sleep(0.1)
            left = leftovers(tag)
        if not left:
            break
    return found


def run_child(system: str, args) -> dict:
    tag = uuid.uuid4().hex
    env = dict(os.environ, **{TAG_VAR: tag, "SPT_NOENV": "1"})
    # Parsl starts interchange.py and process_worker_pool.py by name: the venv's bin first
    # on PATH, whether or not the venv is activated.
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = os.pathsep.join([bindir, env.get("PATH", "")])
    # Start-up and warm-up, the rounds, clean-up; and some slack.
    budget = args.timeout * (args.rounds + 1) + CLEANUP_TIMEOUT + 60
    # The child's working directory (Parsl's run_dir, Dask's scratch space, the result):
    # removed here, after the child and all it started are gone, however it ended.
    with tempfile.TemporaryDirectory(prefix=f"pstar-bench-{system}.") as workdir:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", system,
               "--workdir", workdir, "--tasks", str(args.tasks),
               "--rounds", str(args.rounds), "--warmup", str(args.warmup),
               "--timeout", str(args.timeout)]
        cmd += ["--parsl-no-log"] if args.parsl_no_log else []
        cmd += ["--dask-map"] if args.dask_map else []
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)
        failure = None
        try:
            rc = proc.wait(timeout=budget)
            if rc != 0:
                failure = f"child exited with status {rc}"
        except subprocess.TimeoutExpired:
            failure = f"child still running after {budget:.0f} s; killed"
        except KeyboardInterrupt:
            failure = "interrupted"
        finally:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
            left = kill_leftovers(tag)
        if left:
            log(f"error: {system}: {len(left)} processes left behind, killed:")
            for line in left:
                log(f"   {line}")
            failure = failure or "processes left behind"
        if failure:
            raise SystemExit(f"error: {system}: {failure}")
        with open(os.path.join(workdir, "result.json")) as f:
            return json.load(f)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def parent_main(args) -> int:
    systems = [args.only] if args.only else list(SYSTEMS)
    become_subreaper()
    report: dict = {
        "tasks": args.tasks,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "loadavg_before": loadavg(),
        "parsl_no_log": args.parsl_no_log,
        "dask_map": args.dask_map,
    }
    log(f"== {args.tasks:,} no-op Python tasks, {args.rounds} rounds (after a warm-up of "
        f"{args.warmup}), {WORKERS} workers; {os.cpu_count()} cores, "
        f"load average {' '.join(map(str, report['loadavg_before']))}")
    lines = []
    for i, system in enumerate(systems):
        if i:
            time.sleep(2)  # let the last system's exit settle
        key, label = SYSTEMS[system]
        if system == "parsl" and args.parsl_no_log:
            label += " (no parsl.log)"
        if system == "dask" and args.dask_map:
            label = label.replace("submit", "map")
        log(f"== {label}")
        res = run_child(system, args)
        rates = res["rates"]
        res["rate_median"] = round(statistics.median(rates), 1)
        report[key] = res
        lines.append(f"{label}: {res['rate_median']:,.0f} tasks/s (median of {len(rates)}: "
                     f"{', '.join(f'{r:,.0f}' for r in rates)})")
    report["loadavg_after"] = loadavg()
    for line in lines:
        print(line, flush=True)
    print(f"(load average before {' '.join(map(str, report['loadavg_before']))}, "
          f"after {' '.join(map(str, report['loadavg_after']))})", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    return 0


def positive(s: str) -> int:
    n = int(s)
    if n < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return n


def main() -> int:
    p = argparse.ArgumentParser(
        description="Rate of no-op Python function tasks in Parsl HTEX and Dask LocalCluster.")
    p.add_argument("--tasks", type=positive, default=20_000, help="tasks per round (20000)")
    p.add_argument("--rounds", type=positive, default=3, help="rounds; the median is reported (3)")
    p.add_argument("--only", choices=sorted(SYSTEMS), help="run one system only")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    p.add_argument("--warmup", type=positive, default=500, help="warm-up tasks (500)")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="bound in seconds on start-up with warm-up, and on each round (600)")
    p.add_argument("--parsl-no-log", action="store_true",
                   help="Parsl: Config(initialize_logging=False) instead of its DEBUG parsl.log")
    p.add_argument("--dask-map", action="store_true",
                   help="Dask: one client.map per round instead of client.submit per task")
    p.add_argument("--child", choices=sorted(SYSTEMS), help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child_main(args)
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
