"""Fixtures of pstar's Python tests: real sessions, real local pilots, a real Redis.

Nothing is mocked: pilots are pstar's own local pilots (agents in this process, or
`pstar-agent` processes with Redis), units are real processes, function units run in the
pilots' Python workers. Every wait is bounded (`timeout=`): the machine is small and busy.
"""

import os
import shutil
import socket
import subprocess
import time

import pytest

import pstar

REDIS_SERVER = "/usr/bin/redis-server"

# Generous bounds for waits that normally end in well under a second: a busy machine of
# 2 cores must not fail a test, a hang must not stall the suite.
WAIT = 60


@pytest.fixture(autouse=True)
def _no_environment_settings(monkeypatch):
    """Sessions here are made with their settings, not the environment's (a
    `PSTAR_COORDINATION` in the shell would turn every session into a Redis one)."""
    for name in list(os.environ):
        if name.startswith("PSTAR_") and name != "PSTAR_LOG":
            monkeypatch.delenv(name)


@pytest.fixture
def session(tmp_path):
    """A session (embedded coordination) whose sandboxes are under tmp_path; closed at
    teardown (its pilots canceled)."""
    s = pstar.Session(sandbox=str(tmp_path / "sandbox"))
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def pcs(session):
    """A PilotComputeService of `session`."""
    return pstar.PilotComputeService(session)


@pytest.fixture
def pilot(pcs):
    """A local pilot of 2 cores and a walltime of 10 minutes, on `session`."""
    return pcs.create_pilot(resource="local://", cores=2, walltime=10)


@pytest.fixture
def cus(session, pcs, pilot):
    """A ComputeUnitService of `session` whose units run on `pilot`."""
    s = pstar.ComputeUnitService(session)
    s.add_pilot_compute_service(pcs)
    return s


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ping(port, timeout=0.5):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture
def redis_url(tmp_path):
    """A redis-server of this test's own (no persistence, loopback only):
    `redis://127.0.0.1:PORT`; killed at teardown."""
    if not (os.path.exists(REDIS_SERVER) and os.access(REDIS_SERVER, os.X_OK)):
        pytest.skip("redis-server is not installed (%s)" % REDIS_SERVER)
    workdir = tmp_path / "redis"
    workdir.mkdir()
    for _ in range(5):
        port = _free_port()
        log = open(workdir / ("redis.%d.log" % port), "wb")
        proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(workdir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            if _ping(port):
                break
            time.sleep(0.05)
        if proc.poll() is None and _ping(port):
            break
        # Lost the port to another process (or redis did not start): try another.
        proc.kill()
        proc.wait(timeout=10)
    else:
        pytest.fail("redis-server did not start; see %s" % workdir)
    url = "redis://127.0.0.1:%d" % port
    try:
        yield url
    finally:
        # The agents of this Redis finish after their pilot ends (they release their lease
        # in Redis): wait for them, else one would retry for a minute against a dead
        # Redis. Any still there after 15 s is killed (by pid: an agent of this test).
        deadline = time.monotonic() + 15
        while _agents_of(url) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in _agents_of(url):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        proc.kill()
        proc.wait(timeout=10)


def _agents_of(url):
    """The pids of the `pstar-agent` processes coordinated through `url` (zombies left
    out)."""
    pids = []
    needle = url.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                argv = f.read().split(b"\0")
            with open("/proc/%s/stat" % entry, "rb") as f:
                zombie = f.read().rsplit(b")", 1)[-1].split()[0] == b"Z"
        except OSError:
            continue
        if not zombie and needle in argv and any(a.endswith(b"pstar-agent") for a in argv):
            pids.append(int(entry))
    return pids


@pytest.fixture
def agent_program():
    """The `pstar-agent` console script of the package, as installed."""
    import pstar as p

    path = p._agent_program()
    assert path is not None and os.access(path, os.X_OK), "pstar-agent is not installed"
    assert shutil.which("pstar-agent", path=os.path.dirname(path)) == path
    return path

