"""Compute units on local pilots: submitting, waiting, failing, dependencies, retries,
callbacks, futures and asyncio, and sessions as context managers."""

import asyncio
import concurrent.futures
import os
import sys
import threading
import time

import pytest

import pstar

WAIT = 60

# The order unit states go through (a unit may skip some).
ORDER = [
    "new",
    "waiting",
    "scheduled",
    "staging_input",
    "pending",
    "running",
    "staging_output",
    "done",
    "failed",
    "canceled",
]


def in_order(states):
    idx = [ORDER.index(s) for s in states]
    return idx == sorted(idx)


# ---------------------------------------------------------------------------------------
# Submitting
# ---------------------------------------------------------------------------------------


def test_submit_kwargs_dict_and_object(cus):
    by_kwargs = cus.submit_compute_unit(executable="/bin/echo", arguments=["kwargs"])
    by_dict = cus.submit_compute_unit({"executable": "/bin/echo", "arguments": ["dict"]})
    cud = pstar.ComputeUnitDescription()
    cud.executable = "/bin/echo"
    cud.arguments = ["object"]
    by_object = cus.submit_compute_unit(cud)
    by_seed_name = cus.submit(pstar.ComputeUnitDescription(executable="/bin/echo", arguments=[42]))
    for cu, text in [
        (by_kwargs, "kwargs"),
        (by_dict, "dict"),
        (by_object, "object"),
        (by_seed_name, "42"),
    ]:
        assert cu.wait(timeout=WAIT) == "done", cu.detail
        assert cu.exit_code == 0
        assert cu.name == "echo" or cu.name.endswith("echo"), cu.name
        with open(cu.stdout) as f:
            assert f.read() == text + "\n"
    ids = [u.id for u in cus.get_compute_units()]
    assert ids == [by_kwargs.id, by_dict.id, by_object.id, by_seed_name.id]
    assert len(set(ids)) == 4
    assert [u.id for u in cus.units] == ids


def test_description_is_copied_at_submit(cus, tmp_path):
    cud = pstar.ComputeUnitDescription(executable="/bin/echo", arguments=["first"])
    first = cus.submit(cud)
    cud.arguments = ["second"]
    second = cus.submit(cud)
    for cu, text in [(first, "first"), (second, "second")]:
        assert cu.wait(timeout=WAIT) == "done"
        with open(cu.stdout) as f:
            assert f.read() == text + "\n"


def test_batch_of_200_dicts(cus, tmp_path):
    out = tmp_path / "batch"
    out.mkdir()
    descriptions = [
        {"executable": "/bin/sh", "arguments": ["-c", "echo %d > %s/%d" % (i, out, i)]}
        for i in range(200)
    ]
    units = cus.submit_compute_units(descriptions)
    assert len(units) == 200
    assert len({u.id for u in units}) == 200
    cus.wait(timeout=WAIT)
    states = [u.state for u in units]
    assert states == ["done"] * 200, {s: states.count(s) for s in set(states)}
    assert sorted(int(p) for p in os.listdir(out)) == list(range(200))
    for i in (0, 99, 199):
        assert (out / str(i)).read_text() == "%d\n" % i


def test_batch_refused_whole(cus):
    with pytest.raises(pstar.DescriptionError) as e:
        cus.submit_compute_units(
            [{"executable": "/bin/true"}, {"executable": "/bin/true", "cores": "two"}]
        )
    assert e.value.key == "cores"
    assert "unit 1 of the batch" in str(e.value)
    assert cus.get_compute_units() == []


# ---------------------------------------------------------------------------------------
# Waiting, canceling, failing
# ---------------------------------------------------------------------------------------


def test_wait_timeout_then_cancel(cus):
    cu = cus.submit(executable="/bin/sleep", arguments=["30"])
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        cu.wait(timeout=0.5)
    assert time.monotonic() - t0 < 10
    with pytest.raises(TimeoutError):
        cu.result(timeout=0.2)
    with pytest.raises(TimeoutError):
        cus.wait(timeout=0.2)
    assert cu.state not in pstar.State.FINAL
    cu.cancel()
    assert cu.wait(timeout=WAIT) == "canceled"
    assert cu.get_state() == "canceled"
    with pytest.raises(concurrent.futures.CancelledError):
        cu.result(timeout=WAIT)
    # Canceled well before its sleep would have ended.
    assert time.monotonic() - t0 < 25


def test_cancel_waiting_on_the_pool(session, cus):
    """A unit that has not started yet (the pilot's 2 cores are busy) is canceled too."""
    busy = [cus.submit(executable="/bin/sleep", arguments=["30"]) for _ in range(2)]
    queued = cus.submit(executable="/bin/true")
    time.sleep(0.3)
    queued.cancel()
    assert queued.wait(timeout=WAIT) == "canceled"
    assert queued.exit_code is None
    cus.cancel()
    for cu in busy:
        assert cu.wait(timeout=WAIT) == "canceled"
    cus.wait(timeout=WAIT)


def test_wait_rejects_bad_timeouts(cus):
    cu = cus.submit(executable="/bin/sleep", arguments=["30"])
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="timeout"):
            cu.wait(timeout=bad)
        with pytest.raises(ValueError, match="timeout"):
            cus.wait(timeout=bad)
    cu.cancel()
    assert cu.wait(timeout=WAIT) == "canceled"


def test_missing_executable_fails_alone(cus):
    good = [cus.submit(executable="/bin/echo", arguments=[i]) for i in range(5)]
    bad = cus.submit(executable="/no/such/program", arguments=["x"])
    more = [cus.submit(executable="/bin/echo", arguments=[i]) for i in range(5, 10)]
    assert bad.wait(timeout=WAIT) == "failed"
    assert "/no/such/program" in bad.detail
    with pytest.raises(pstar.UnitFailed, match="/no/such/program"):
        bad.result(timeout=WAIT)
    for i, cu in enumerate(good + more):
        assert cu.wait(timeout=WAIT) == "done", cu.detail
        with open(cu.stdout) as f:
            assert f.read() == "%d\n" % i


def test_nonzero_exit_fails_with_exit_code(cus):
    cu = cus.submit(executable="/bin/sh", arguments=["-c", "echo oops >&2; exit 3"])
    assert cu.wait(timeout=WAIT) == "failed"
    assert cu.exit_code == 3
    assert "3" in cu.detail
    with open(cu.stderr) as f:
        assert f.read() == "oops\n"
    with pytest.raises(pstar.UnitFailed) as e:
        cu.result(timeout=WAIT)
    assert isinstance(e.value, pstar.Error)
    assert e.value.exit_code == 3
    assert e.value.unit.id == cu.id
    assert cu.id in str(e.value)
    # No retries by default: one attempt.
    assert len(cu.attempts) == 1
    assert cu.attempts[0]["exit_code"] == 3
    assert cu.attempts[0]["end"] == "failed"


def test_shell_unit(cus, tmp_path):
    cu = cus.submit(
        executable="echo $GREETING | tr a-z A-Z",
        shell=True,
        environment={"GREETING": "hello"},
    )
    assert cu.wait(timeout=WAIT) == "done", cu.detail
    with open(cu.stdout) as f:
        assert f.read() == "HELLO\n"


def test_result_of_program_is_exit_code_zero(cus):
    cu = cus.submit(executable="/bin/true")
    assert cu.result(timeout=WAIT) == 0


def test_unit_details(cus, pilot):
    cu = cus.submit(executable="/bin/true", name="mine")
    assert cu.wait(timeout=WAIT) == "done"
    assert cu.name == "mine"
    assert cu.pilot == pilot.id
    assert cu.is_function is False
    assert os.path.isdir(cu.sandbox)
    assert cu.stdout.startswith(cu.sandbox)
    states = [s for s, _ in cu.history]
    assert states[0] == "new" and states[-1] == "done"
    assert in_order(states), states
    times = [t for _, t in cu.history]
    assert times == sorted(times)
    assert "mine" in repr(cu)


# ---------------------------------------------------------------------------------------
# Dependencies and retries
# ---------------------------------------------------------------------------------------


def test_after_dependencies_order(cus, tmp_path):
    log = tmp_path / "order.log"
    a = cus.submit(shell=True, executable="sleep 1; echo a >> %s" % log)
    b = cus.submit(shell=True, executable="echo b >> %s" % log, after=[a])
    c = cus.submit(shell=True, executable="echo c >> %s" % log, after=[b.id])
    # Independent of them: runs at once, next to `a` (the pilot has 2 cores).
    free = cus.submit(shell=True, executable="echo free >> %s" % log)
    for cu in (a, b, c, free):
        assert cu.wait(timeout=WAIT) == "done", cu.detail
    lines = log.read_text().split()
    assert sorted(lines) == ["a", "b", "c", "free"]
    assert lines.index("a") < lines.index("b") < lines.index("c")
    assert lines[0] == "free"
    assert "waiting" in [s for s, _ in b.history]


def test_after_a_failed_unit_is_canceled(cus, tmp_path):
    a = cus.submit(executable="/bin/false")
    b = cus.submit(executable="/bin/true", after=[a])
    c = cus.submit(executable="/bin/true", after=[a], on_dependency_failure="run")
    assert a.wait(timeout=WAIT) == "failed"
    assert b.wait(timeout=WAIT) == "canceled"
    assert a.id in (b.detail or ""), b.detail
    assert c.wait(timeout=WAIT) == "done"


def test_retries_until_success(cus, tmp_path):
    counter = tmp_path / "counter"
    # Fails on its first two runs, succeeds on its third.
    script = (
        'n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; '
        '[ "$n" -ge 3 ]'
    ).format(c=counter)
    cu = cus.submit(shell=True, executable=script, retries=2)
    assert cu.wait(timeout=WAIT) == "done", cu.detail
    assert counter.read_text() == "3\n"
    ends = [a["end"] for a in cu.attempts]
    assert ends == ["failed", "failed", "done"], cu.attempts


def test_retries_exhausted(cus, tmp_path):
    counter = tmp_path / "counter"
    cu = cus.submit(shell=True, executable="echo x >> %s; exit 4" % counter, retries=1)
    assert cu.wait(timeout=WAIT) == "failed"
    assert cu.exit_code == 4
    assert counter.read_text() == "x\nx\n"
    assert [a["exit_code"] for a in cu.attempts] == [4, 4]


def test_retry_only_on_listed_exit_codes(cus, tmp_path):
    counter = tmp_path / "counter"
    cu = cus.submit(
        shell=True,
        executable="echo x >> %s; exit 5" % counter,
        retries=3,
        retry_on_exit_codes=[7],
    )
    assert cu.wait(timeout=WAIT) == "failed"
    assert counter.read_text() == "x\n"


# ---------------------------------------------------------------------------------------
# Callbacks
# ---------------------------------------------------------------------------------------


def test_state_callbacks_see_every_state_to_done(cus):
    blocker = cus.submit(executable="/bin/sleep", arguments=["0.5"])
    cu = cus.submit(executable="/bin/true", after=[blocker])
    seen = []
    ended = threading.Event()
    threads = set()

    def callback(unit, state):
        threads.add(threading.current_thread().name)
        assert unit.id == cu.id
        seen.append(state)
        if state in pstar.State.FINAL:
            ended.set()

    # Registered while it waits for `blocker`: it sees every change from there on.
    assert cu.state in ("new", "waiting")
    cu.on_state_change(callback)
    assert cu.wait(timeout=WAIT) == "done"
    assert ended.wait(timeout=WAIT)
    assert seen[-1] == "done"
    assert "running" in seen
    assert in_order(seen), seen
    assert len(seen) == len(set(seen)), seen
    assert threads == {"pstar-notify"}


def test_register_callback_seed_name(cus):
    blocker = cus.submit(executable="/bin/sleep", arguments=["0.3"])
    cu = cus.submit(executable="/bin/false", after=[blocker], on_dependency_failure="run")
    got = []
    ended = threading.Event()

    def callback(unit, state):
        got.append(state)
        if state in pstar.State.FINAL:
            ended.set()

    cu.register_callback(callback)
    assert cu.wait(timeout=WAIT) == "failed"
    assert ended.wait(timeout=WAIT)
    assert got[-1] == "failed"


def test_raising_callback_is_reported_and_others_go_on(cus, monkeypatch):
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: reported.append(u))
    blocker = cus.submit(executable="/bin/sleep", arguments=["0.3"])
    cu = cus.submit(executable="/bin/echo", arguments=["still here"], after=[blocker])
    good_seen = []
    ended = threading.Event()

    def bad(unit, state):
        raise RuntimeError("callback trouble at %s" % state)

    def good(unit, state):
        good_seen.append(state)
        if state in pstar.State.FINAL:
            ended.set()

    cu.on_state_change(bad)
    cu.on_state_change(good)
    assert cu.wait(timeout=WAIT) == "done"
    assert ended.wait(timeout=WAIT)
    assert good_seen[-1] == "done"
    with open(cu.stdout) as f:
        assert f.read() == "still here\n"
    errors = [u.exc_value for u in reported]
    assert errors, "the raising callback was not reported"
    assert all(isinstance(e, RuntimeError) for e in errors), errors
    assert "callback trouble at done" in [str(e) for e in errors]
    # Once per state the callback saw.
    assert len(errors) == len(good_seen)
    # The pilot goes on with other units.
    assert cus.submit(executable="/bin/true").wait(timeout=WAIT) == "done"


def test_pilot_callbacks(session, pcs):
    """`on_state_change` and the seeds' `register_callback` on a pilot: registered while
    it is pending they see it running; both see its end. (A local pilot may already be
    running when create_pilot returns; then only later changes are told. test_redis.py
    checks "running" on a pilot whose agent is a process, pending for longer.)"""
    pilot = pcs.create_pilot(cores=1, walltime=10)
    seen, seen2 = [], []
    ended = threading.Event()

    def callback(p, state):
        assert p.id == pilot.id
        seen.append(state)
        if state in ("done", "failed", "canceled"):
            ended.set()

    pilot.on_state_change(callback)
    pilot.register_callback(lambda p, state: seen2.append(state))
    state_at_registration = pilot.state
    assert pilot.wait(state="running", timeout=WAIT) == "running"
    pilot.cancel()
    assert pilot.wait(timeout=WAIT) == "canceled"
    assert ended.wait(timeout=WAIT)
    deadline = time.monotonic() + WAIT
    while seen2[-1:] != ["canceled"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen[-1] == "canceled"
    assert seen2 == seen
    # Every change after the registration, in order: a suffix of the pilot's path (its
    # state may have moved on between the registration and the read of its state).
    path = ["pending", "running", "canceled"]
    assert seen in [path[i:] for i in range(len(path))], (state_at_registration, seen)
    if state_at_registration == "pending":
        assert seen[-2:] == ["running", "canceled"], seen
    # Its history has it all the same.
    assert [s for s, _ in pilot.history][-2:] == ["running", "canceled"]


# ---------------------------------------------------------------------------------------
# Futures and asyncio
# ---------------------------------------------------------------------------------------


def test_future_result(cus):
    cu = cus.submit(executable="/bin/true")
    fut = cu.future()
    assert isinstance(fut, concurrent.futures.Future)
    assert fut.result(timeout=WAIT) == 0
    # A future asked for after the end is settled too.
    assert cu.future().result(timeout=WAIT) == 0


def test_future_of_failed_unit(cus):
    cu = cus.submit(executable="/bin/false")
    fut = cu.future()
    with pytest.raises(pstar.UnitFailed):
        fut.result(timeout=WAIT)
    assert isinstance(fut.exception(timeout=WAIT), pstar.UnitFailed)


def test_canceling_the_future_cancels_the_unit(cus):
    cu = cus.submit(executable="/bin/sleep", arguments=["30"])
    fut = cu.future()
    assert fut.cancel()
    assert cu.wait(timeout=WAIT) == "canceled"


def test_many_futures(cus, tmp_path):
    units = [
        cus.submit(executable="/bin/sh", arguments=["-c", "exit %d" % (i % 3 == 0)])
        for i in range(60)
    ]
    futures = {u.future(): i for i, u in enumerate(units)}
    done, not_done = concurrent.futures.wait(futures, timeout=WAIT)
    assert not not_done
    for fut, i in futures.items():
        if i % 3 == 0:
            assert isinstance(fut.exception(timeout=0), pstar.UnitFailed)
        else:
            assert fut.result(timeout=0) == 0
    finished = [futures[f] for f in concurrent.futures.as_completed(futures, timeout=WAIT)]
    assert sorted(finished) == list(range(60))


def test_asyncio_await_and_gather(cus):
    async def main():
        one = await asyncio.wait_for(cus.submit(executable="/bin/true"), timeout=WAIT)
        units = [cus.submit_function(pow, 2, i) for i in range(10)]
        many = await asyncio.wait_for(asyncio.gather(*units), timeout=WAIT)
        failing = cus.submit(executable="/bin/false")
        with pytest.raises(pstar.UnitFailed):
            await asyncio.wait_for(failing, timeout=WAIT)
        return one, many

    one, many = asyncio.run(main())
    assert one == 0
    assert many == [2**i for i in range(10)]


def test_asyncio_gather_return_exceptions(cus):
    async def main():
        units = [
            cus.submit(executable="/bin/true"),
            cus.submit(executable="/bin/false"),
            cus.submit(executable="/no/such"),
        ]
        return await asyncio.wait_for(
            asyncio.gather(*units, return_exceptions=True), timeout=WAIT
        )

    ok, bad, missing = asyncio.run(main())
    assert ok == 0
    assert isinstance(bad, pstar.UnitFailed) and bad.exit_code == 1
    assert isinstance(missing, pstar.UnitFailed) and "/no/such" in str(missing)


# ---------------------------------------------------------------------------------------
# Sessions and pilots
# ---------------------------------------------------------------------------------------


def running_unit(cus):
    """A unit of `sleep 30`, once it runs."""
    cu = cus.submit(executable="/bin/sleep", arguments=["30"])
    deadline = time.monotonic() + WAIT
    while cu.state != "running" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cu.state == "running", cu.detail
    return cu


def test_session_context_manager_cancels_its_pilots(tmp_path):
    with pstar.Session(sandbox=str(tmp_path / "sb")) as s:
        assert not s.closed
        pcs = pstar.PilotComputeService(s)
        pilot = pcs.create_pilot(cores=2, walltime=10)
        cus = pstar.ComputeUnitService(s)
        cus.add(pcs)
        quick = cus.submit(executable="/bin/true")
        assert quick.wait(timeout=WAIT) == "done"
        running_unit(cus)
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 20
    assert s.closed
    assert pilot.state in ("canceled", "done")
    assert quick.state == "done"
    # A closed session refuses new work, saying so.
    with pytest.raises(pstar.Error, match="closed"):
        cus.submit(executable="/bin/true")
    with pytest.raises(pstar.Error, match="closed"):
        pcs.create_pilot(cores=1)
    with pytest.raises(pstar.Error, match="closed"):
        pstar.PilotComputeService(s)
    s.close()  # twice: nothing more


def test_session_close_cancels_running_units(tmp_path):
    """Session.close()'s docstring: "its units that still run are canceled with them"."""
    with pstar.Session(sandbox=str(tmp_path / "sb")) as s:
        pcs = pstar.PilotComputeService(s)
        pcs.create_pilot(cores=2, walltime=10)
        cus = pstar.ComputeUnitService(s)
        cus.add(pcs)
        long = running_unit(cus)
    try:
        final = long.wait(timeout=10)
    except TimeoutError:
        final = "still %s after 10 s; history %s" % (long.state, [h for h, _ in long.history])
    assert final == "canceled"
    assert "closed" in (long.detail or ""), long.detail
    with pytest.raises(concurrent.futures.CancelledError):
        long.result(timeout=WAIT)


def test_session_context_manager_on_exception(tmp_path):
    with pytest.raises(KeyError):
        with pstar.Session(sandbox=str(tmp_path / "sb")) as s:
            pcs = pstar.PilotComputeService(s)
            pilot = pcs.create_pilot(cores=1, walltime=10)
            assert pilot.wait(state="running", timeout=WAIT) == "running"
            raise KeyError("out")
    assert s.closed
    assert pilot.state in ("canceled", "done")


def test_pilot_details(session, pcs, pilot):
    assert pilot.wait(state="running", timeout=WAIT) == "running"
    assert pilot.get_state() == "running"
    assert pilot.cores == 2
    assert pilot.resource.startswith("local:")
    assert pilot.id in [p.id for p in pcs.list_pilots()]
    assert [p.id for p in pcs.pilots] == [p.id for p in pcs.list_pilots()]
    d = pilot.get_details()
    assert d["id"] == pilot.id and d["state"] == "running" and d["cores"] == 2
    assert os.path.realpath(pilot.sandbox).startswith(os.path.realpath(session.sandbox))
    with pytest.raises(TimeoutError):
        pcs.wait(timeout=0.2)
    with pytest.raises(pstar.Error, match="no pilot state"):
        pilot.wait(state="sleeping", timeout=1)


def test_units_pinned_to_a_pilot(session, pcs, cus, pilot):
    other = pcs.create_pilot(cores=1, walltime=10)
    units = [cus.submit(executable="/bin/true", pilot=other) for _ in range(4)]
    units += [cus.submit(executable="/bin/true", pilot=pilot.id) for _ in range(4)]
    for cu in units:
        assert cu.wait(timeout=WAIT) == "done", cu.detail
    assert [cu.pilot for cu in units] == [other.id] * 4 + [pilot.id] * 4


def test_unit_needing_more_cores_than_any_pilot(cus):
    cu = cus.submit(executable="/bin/true", cores=64)
    assert cu.wait(timeout=WAIT) == "failed"
    assert "64 cores" in cu.detail and "2 cores" in cu.detail, cu.detail


# ---------------------------------------------------------------------------------------
# Several sessions in one process
# ---------------------------------------------------------------------------------------


def _one_session_of_futures(tmp_path, n):
    """In a session of its own: a unit's future and callback, a pilot's callback. What
    did not come within 10 s."""
    missing = []
    with pstar.Session(sandbox=str(tmp_path / ("sb%d" % n))) as s:
        pcs = pstar.PilotComputeService(s)
        pilot = pcs.create_pilot(cores=1, walltime=10)
        pilot_ended = threading.Event()
        pilot.on_state_change(
            lambda p, state: state == "canceled" and pilot_ended.set()
        )
        cus = pstar.ComputeUnitService(s)
        cus.add(pcs)
        unit_ended = threading.Event()
        cu = cus.submit(executable="/bin/sleep", arguments=["0.2"])
        cu.on_state_change(lambda u, state: state == "done" and unit_ended.set())
        fut = cu.future()
        try:
            fut.result(timeout=10)
        except concurrent.futures.TimeoutError:
            missing.append("future of %s (state %s)" % (cu.id, cu.state))
        if not unit_ended.wait(timeout=10):
            missing.append("callback of %s" % cu.id)
        pilot.cancel()
        if not pilot_ended.wait(timeout=10):
            missing.append("callback of %s" % pilot.id)
    return missing


def test_futures_and_callbacks_of_a_second_session(tmp_path):
    first = _one_session_of_futures(tmp_path, 1)
    second = _one_session_of_futures(tmp_path, 2)
    assert (first, second) == ([], [])


def test_services_of_another_session_are_refused(session, cus, tmp_path):
    with pstar.Session(sandbox=str(tmp_path / "other")) as other:
        foreign = pstar.PilotComputeService(other)
        with pytest.raises(pstar.Error, match="session") as e:
            cus.add(foreign)
        assert other.id in str(e.value) and session.id in str(e.value)
    assert cus.submit(executable="/bin/true").wait(timeout=WAIT) == "done"


def test_wait_ends_when_every_pilot_has_ended(session, pcs, cus, pilot):
    """Units left when all the pilots have ended can never run: cus.wait() cancels them
    (saying why) rather than waiting for ever."""
    busy = [cus.submit(executable="/bin/sleep", arguments=["30"]) for _ in range(2)]
    queued = [cus.submit(executable="/bin/true") for _ in range(3)]
    for cu in busy:
        deadline = time.monotonic() + WAIT
        while cu.state != "running" and time.monotonic() < deadline:
            time.sleep(0.02)
    pcs.cancel()
    assert pilot.state == "canceled"
    cus.wait(timeout=WAIT)
    for cu in busy + queued:
        assert cu.state == "canceled", (cu.id, cu.state, cu.detail)
        assert cu.detail, cu.id
