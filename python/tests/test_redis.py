"""Sessions coordinated through a real Redis: every pilot's agent is a `pstar-agent`
process of its own. Killing one (kill -9) while units run loses none of them."""

import os
import signal
import sys
import threading
import time

import pytest

import pstar

WAIT = 60


def agent_pid(pilot):
    """The pid of a pilot's agent process (a local pilot's job id is `local:<pid>`)."""
    job = pilot.job_id
    assert job and job.startswith("local:"), job
    return int(job.split(":", 1)[1])


def cmdline(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return f.read().split(b"\0")


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is not alive.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until(cond, timeout=WAIT, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


@pytest.fixture
def redis_session(redis_url, tmp_path):
    """A Redis session whose agents beat often (a dead one is found within ~2 s)."""
    s = pstar.Session(
        coordination=redis_url, sandbox=str(tmp_path / "sandbox"), heartbeat_timeout=2
    )
    try:
        yield s
    finally:
        s.close()


def test_agents_are_pstar_agent_processes(redis_session, redis_url, agent_program):
    assert redis_session.coordination == redis_url
    # The package's console script, next to this interpreter (in the virtualenv's bin).
    assert agent_program == os.path.join(os.path.dirname(sys.executable), "pstar-agent")
    pcs = pstar.PilotComputeService(redis_session)
    pilots = [pcs.create_pilot(cores=2, walltime=10) for _ in range(2)]
    pids = []
    for p in pilots:
        assert p.wait(state="running", timeout=WAIT) == "running", p.detail
        pid = agent_pid(p)
        assert pid != os.getpid()
        argv = cmdline(pid)
        assert agent_program.encode() in argv, argv
        assert p.id.encode() in argv
        assert redis_session.id.encode() in argv
        pids.append(pid)
    assert len(set(pids)) == 2
    pcs.cancel()
    for p, pid in zip(pilots, pids):
        assert p.state == "canceled"
        assert wait_until(lambda: not alive(pid), timeout=20), "agent %d still runs" % pid


def test_kill_an_agent_while_units_run(redis_session, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    pcs = pstar.PilotComputeService(redis_session)
    victim, survivor = [pcs.create_pilot(cores=2, walltime=10) for _ in range(2)]
    for p in (victim, survivor):
        assert p.wait(state="running", timeout=WAIT) == "running", p.detail
    cus = pstar.ComputeUnitService(redis_session)
    cus.add(pcs)
    n = 40
    # Each run appends a line when it starts and one when it ends, with its pilot.
    units = cus.submit_compute_units(
        [
            {
                "executable": 'echo "start $PSTAR_PILOT_ID" >> {f}; sleep 0.5; '
                'echo "end $PSTAR_PILOT_ID" >> {f}'.format(f=runs / str(i)),
                "shell": True,
                "name": "u%d" % i,
            }
            for i in range(n)
        ]
    )

    # Kill the victim's agent once it runs units, well before all have run.
    assert wait_until(
        lambda: sum(u.state == "running" and u.pilot == victim.id for u in units) >= 2
    ), [(u.state, u.pilot) for u in units]
    on_victim = {u.id for u in units if u.pilot == victim.id and u.state not in pstar.State.FINAL}
    done_before = sum(u.state == "done" for u in units)
    assert done_before < n // 2, done_before
    pid = agent_pid(victim)
    os.kill(pid, signal.SIGKILL)
    t_kill = time.monotonic()

    cus.wait(timeout=WAIT)
    elapsed = time.monotonic() - t_kill

    states = {u.id: u.state for u in units}
    assert list(states.values()) == ["done"] * n, {
        u.id: (u.state, u.detail, u.attempts) for u in units if u.state != "done"
    }
    assert victim.state == "failed", (victim.state, victim.detail)
    assert survivor.state == "running"
    assert elapsed < WAIT

    # Every unit ran to its end at least once; none that the killed agent was not running
    # ran to its end twice.
    rerun_ok = set(on_victim)
    for i, u in enumerate(units):
        lines = (runs / str(i)).read_text().splitlines()
        ends = [l for l in lines if l.startswith("end ")]
        starts = [l for l in lines if l.startswith("start ")]
        assert len(ends) >= 1, (u.id, lines)
        assert len(starts) >= len(ends)
        if len(ends) > 1 or len(u.attempts) > 1:
            assert u.id in rerun_ok, (u.id, lines, u.attempts)
        # Its last attempt is the one that counts: done, on a live pilot.
        last = u.attempts[-1]
        assert last["end"] == "done", u.attempts
        if len(u.attempts) > 1:
            assert u.attempts[0]["pilot"] == victim.id
            assert last["pilot"] == survivor.id
        # Units that ran on the victim and were done before the kill are not run again.
        if u.id not in rerun_ok:
            assert len(starts) == 1, (u.id, lines)
    # The survivor took over what the victim was running.
    rerun = [u for u in units if len(u.attempts) > 1]
    assert {u.id for u in rerun} <= rerun_ok
    assert all(u.pilot == survivor.id for u in rerun)


def test_function_units_over_redis(redis_session):
    pcs = pstar.PilotComputeService(redis_session)
    pilots = [pcs.create_pilot(cores=2, walltime=10) for _ in range(2)]
    cus = pstar.ComputeUnitService(redis_session)
    cus.add(pcs)
    factor = 7

    def slow_times(x):
        time.sleep(0.3)
        return x * factor, os.environ.get("PSTAR_PILOT_ID"), os.getpid()

    units = [cus.submit_function(slow_times, i) for i in range(16)]
    results = [u.result(timeout=WAIT) for u in units]
    assert [r[0] for r in results] == [7 * i for i in range(16)]
    assert {r[1] for r in results} <= {p.id for p in pilots}
    assert [u.pilot for u in units] == [r[1] for r in results]
    # Both pilots served calls (4 cores, 16 calls of 0.3 s).
    assert {r[1] for r in results} == {p.id for p in pilots}
    assert os.getpid() not in {r[2] for r in results}
    assert cus.submit_function(pow, 2, 20).result(timeout=WAIT) == 1 << 20
    with pytest.raises(ValueError, match="over redis") as e:
        cus.submit_function(int, "over redis").result(timeout=WAIT)
    assert isinstance(e.value.__cause__, pstar.RemoteTraceback)


def test_pilot_callbacks_over_redis(redis_session):
    """An agent that is a process takes a moment to start: registered while the pilot is
    pending, the callback sees it running."""
    pcs = pstar.PilotComputeService(redis_session)
    pilot = pcs.create_pilot(cores=1, walltime=10)
    seen = []
    ended = threading.Event()

    def callback(p, state):
        seen.append(state)
        if state in ("done", "failed", "canceled"):
            ended.set()

    pilot.on_state_change(callback)
    at_registration = pilot.state
    assert pilot.wait(state="running", timeout=WAIT) == "running"
    pilot.cancel()
    assert ended.wait(timeout=WAIT)
    assert seen[-1] == "canceled"
    if at_registration == "pending":
        assert "running" in seen, seen


def test_program_units_over_redis(redis_session):
    pcs = pstar.PilotComputeService(redis_session)
    pcs.create_pilot(cores=2, walltime=10)
    cus = pstar.ComputeUnitService(redis_session)
    cus.add(pcs)
    ok = cus.submit(executable="/bin/echo", arguments=["over", "redis"])
    bad = cus.submit(executable="/no/such/program")
    fut = cus.submit(executable="/bin/true").future()
    assert ok.wait(timeout=WAIT) == "done", ok.detail
    with open(ok.stdout) as f:
        assert f.read() == "over redis\n"
    assert bad.wait(timeout=WAIT) == "failed"
    assert "/no/such/program" in bad.detail
    assert fut.result(timeout=WAIT) == 0


def test_a_session_whose_keys_vanish_ends_its_waits_with_an_error(redis_session, redis_url):
    """The session's keys deleted from Redis (by hand, an eviction): a wait on its units
    ends with pstar.Error saying the store was lost, not never."""
    import subprocess

    pcs = pstar.PilotComputeService(redis_session)
    pcs.create_pilot(cores=1, walltime=10)
    cus = pstar.ComputeUnitService(redis_session)
    cus.add(pcs)
    cu = cus.submit(executable="/bin/sleep", arguments=["30"])
    port = redis_url.rsplit(":", 1)[1]
    keys = subprocess.run(
        ["redis-cli", "-p", port, "--scan", "--pattern", "pstar:%s:*" % redis_session.id],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout.split()
    assert keys
    subprocess.run(["redis-cli", "-p", port, "del", *keys], capture_output=True, timeout=30, check=True)
    with pytest.raises(pstar.Error) as e:
        cu.result(timeout=60)
    assert "lost" in str(e.value), str(e.value)
    with pytest.raises(pstar.Error):
        cus.wait(timeout=60)


def test_a_redis_that_stops_ends_the_waits_and_close_is_prompt(tmp_path, monkeypatch):
    """Redis gone for longer than the retry window: a wait raises pstar.Error naming the
    store, and close() ends the pilots through their adaptor at once, leaving no agent."""
    import subprocess

    from conftest import REDIS_SERVER, _free_port, _ping

    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.skip("redis-server is not installed")
    port = _free_port()
    redis = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not _ping(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        monkeypatch.setenv("PSTAR_REDIS_RETRY", "3s")
        s = pstar.Session(coordination="redis://127.0.0.1:%d" % port,
                          sandbox=str(tmp_path / "sandbox"), heartbeat_timeout=2)
        pcs = pstar.PilotComputeService(s)
        pilot = pcs.create_pilot(cores=1, walltime=10)
        cus = pstar.ComputeUnitService(s)
        cus.add(pcs)
        cu = cus.submit(executable="/bin/sleep", arguments=["30"])
        assert pilot.wait(state="running", timeout=WAIT) == "running"
        redis.kill()
        redis.wait(timeout=10)
        with pytest.raises(pstar.Error, match="lost"):
            cu.result(timeout=60)
        s.close()
        agent = int(pilot.job_id.split(":")[1])
        deadline = time.monotonic() + 10
        while os.path.exists("/proc/%d" % agent) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not os.path.exists("/proc/%d" % agent) or open("/proc/%d/stat" % agent).read().split()[2] == "Z"
    finally:
        redis.kill()
        redis.wait(timeout=10)
