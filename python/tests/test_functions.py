"""Function units: Python calls run by the pilots' Python workers.

The functions of this module are pickled by reference (cloudpickle pickles a function of
an importable module by its name): the workers import this module, so the pilot here
has this directory on its PYTHONPATH, as python/README.md says to do ("To make your own
modules importable there, set PYTHONPATH in the pilot's environment").
"""

import concurrent.futures
import hashlib
import os
import threading
import time

import pytest

import pstar

WAIT = 60
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def pilot(pcs):
    """A local pilot of 2 cores, 10 minutes, whose workers can import this module."""
    return pcs.create_pilot(
        resource="local://", cores=2, walltime=10, environment={"PYTHONPATH": TESTS_DIR}
    )


# ---------------------------------------------------------------------------------------
# Functions of this module
# ---------------------------------------------------------------------------------------


def add(a, b, *, scale=1):
    return (a + b) * scale


def describe(**kwargs):
    return {"keys": sorted(kwargs), "pid": os.getpid(), "pilot": os.environ.get("PSTAR_PILOT_ID")}


def fail_with(exc_type, message):
    raise exc_type(message)


def nested_failure(depth):
    if depth == 0:
        raise KeyError("deep down")
    return nested_failure(depth - 1)


class NotPicklable(Exception):
    """An exception that cannot be pickled on the pilot: it holds a lock."""

    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


def raise_not_picklable(message):
    raise NotPicklable(message)


class NotRebuildable(Exception):
    """An exception that pickles on the pilot but cannot be unpickled (its __init__ wants
    two arguments; pickling gives it one)."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


def raise_not_rebuildable():
    raise NotRebuildable("cannot come back", 7)


def length_and_hash(data):
    return len(data), hashlib.sha256(data).hexdigest()


def big_result(n):
    return bytes(range(256)) * (n // 256)


def chatty(n):
    import sys

    for i in range(n):
        print("line %d on stdout" % i)
        print("line %d on stderr" % i, file=sys.stderr)
    sys.stdout.flush()
    return n


def sleep_then(seconds, value):
    time.sleep(seconds)
    return value


def fail_first_time(counter, value, *, bonus=0):
    """Fails on its first run (the counter file says how many runs there were)."""
    runs = int(open(counter).read()) if os.path.exists(counter) else 0
    with open(counter, "w") as f:
        f.write(str(runs + 1))
    if runs == 0:
        raise RuntimeError("first run fails")
    return value + bonus


# ---------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------


def test_returns_ints_and_builtins(cus):
    assert cus.submit_function(pow, 2, 10).result(timeout=WAIT) == 1024
    assert cus.submit_function(sum, [1, 2, 3]).result(timeout=WAIT) == 6
    assert cus.submit_function(divmod, 17, 5).result(timeout=WAIT) == (3, 2)
    assert cus.submit_function(len, "abc").result(timeout=WAIT) == 3


def test_returns_none(cus):
    cu = cus.submit_function(print, "printed on the pilot")
    assert cu.result(timeout=WAIT) is None
    assert cu.state == "done"


def test_module_function_with_args_and_kwargs(cus):
    cu = cus.submit_function(add, 2, 3, scale=10)
    assert cu.result(timeout=WAIT) == 50
    assert cu.is_function
    assert cu.exit_code in (0, None)
    assert "add" in cu.name


def test_returns_dicts(cus, pilot):
    value = cus.submit_function(describe, x=1, y=2).result(timeout=WAIT)
    assert value["keys"] == ["x", "y"]
    assert value["pid"] != os.getpid()
    assert value["pilot"] == pilot.id
    nested = {"a": [1, 2, {"b": (3, 4)}], "c": None, "d": {1: "x"}}
    assert cus.submit_function(dict, nested).result(timeout=WAIT) == nested


def test_lambda(cus):
    assert cus.submit_function(lambda x, y=1: x * y, 6, y=7).result(timeout=WAIT) == 42


def test_closure_over_a_local_variable(cus):
    factor = 3
    offsets = {"a": 100}

    def scaled(x):
        return x * factor + offsets["a"]

    assert cus.submit_function(scaled, 5).result(timeout=WAIT) == 115
    # The closure is pickled at submission: a later change here is not seen there.
    cu1 = cus.submit_function(scaled, 1)
    factor = 1000
    assert cu1.result(timeout=WAIT) == 103


def test_a_keyword_named_like_a_key(cus):
    """Keyword arguments all go to the function, even those named like unit keys."""
    value = cus.submit_function(describe, cores=4, timeout=1, name="x").result(timeout=WAIT)
    assert value["keys"] == ["cores", "name", "timeout"]


def test_module_function_imports_on_a_local_pilot_through_the_program_s_path(session, pcs):
    """A local pilot's workers get this program's sys.path (PSTAR_PYTHONPATH): functions
    of the program's own modules (pickled by reference) import there."""
    plain = pcs.create_pilot(cores=1, walltime=10)
    cus = pstar.ComputeUnitService(session)
    cus.add(pcs)
    cu = cus.submit(pstar.ComputeUnitDescription(function=add, args=(1, 2), pilot=plain))
    assert cu.result(timeout=WAIT) == 3


def test_module_function_needs_the_module_on_the_pilot(session, pcs):
    """Without the program's path (PSTAR_PYTHONPATH emptied), the workers cannot import
    this module: the call fails there, saying which module."""
    bare = pcs.create_pilot(cores=1, walltime=10, environment={"PSTAR_PYTHONPATH": ""})
    cus = pstar.ComputeUnitService(session)
    cus.add(pcs)
    cu = cus.submit(pstar.ComputeUnitDescription(function=add, args=(1, 2), pilot=bare))
    with pytest.raises(Exception) as e:
        cu.result(timeout=WAIT)
    assert "test_functions" in str(e.value), repr(e.value)
    assert isinstance(e.value, (ModuleNotFoundError, pstar.FunctionError)), repr(e.value)
    assert cu.state == "failed"


# ---------------------------------------------------------------------------------------
# Exceptions
# ---------------------------------------------------------------------------------------


def test_raising_gives_the_same_exception_with_the_remote_traceback(cus):
    cu = cus.submit_function(fail_with, ValueError, "bad value 42")
    with pytest.raises(ValueError, match="bad value 42") as e:
        cu.result(timeout=WAIT)
    cause = e.value.__cause__
    assert isinstance(cause, pstar.RemoteTraceback)
    assert "fail_with" in cause.tb
    assert "ValueError: bad value 42" in cause.tb
    assert "Traceback (most recent call last)" in cause.tb
    assert "fail_with" in str(cause)
    assert cu.state == "failed"
    assert "ValueError" in (cu.detail or ""), cu.detail
    with pytest.raises(pstar.UnitFailed):
        raise pstar.UnitFailed("only checks the class exists")


def test_remote_traceback_names_every_frame(cus):
    with pytest.raises(KeyError) as e:
        cus.submit_function(nested_failure, 3).result(timeout=WAIT)
    tb = e.value.__cause__.tb
    assert tb.count("nested_failure") >= 4, tb
    assert "deep down" in tb


def test_raising_from_a_lambda(cus):
    with pytest.raises(ZeroDivisionError) as e:
        cus.submit_function(lambda: 1 / 0).result(timeout=WAIT)
    assert isinstance(e.value.__cause__, pstar.RemoteTraceback)
    assert "ZeroDivisionError" in e.value.__cause__.tb


def test_exception_that_cannot_be_pickled(cus):
    cu = cus.submit_function(raise_not_picklable, "the lock stays there")
    with pytest.raises(pstar.FunctionError) as e:
        cu.result(timeout=WAIT)
    assert "the lock stays there" in str(e.value)
    assert "NotPicklable" in str(e.value)
    assert isinstance(e.value, pstar.Error)
    assert isinstance(e.value.__cause__, pstar.RemoteTraceback)
    assert "raise_not_picklable" in e.value.__cause__.tb
    assert cu.state == "failed"


def test_exception_that_cannot_be_unpickled_here(cus):
    cu = cus.submit_function(raise_not_rebuildable)
    with pytest.raises(pstar.FunctionError) as e:
        cu.result(timeout=WAIT)
    assert "NotRebuildable" in str(e.value), str(e.value)
    assert "cannot come back" in str(e.value), str(e.value)


def test_future_raises_the_exception(cus):
    fut = cus.submit_function(fail_with, TypeError, "through a future").future()
    with pytest.raises(TypeError, match="through a future"):
        fut.result(timeout=WAIT)


def test_a_worker_goes_on_after_an_exception(cus):
    with pytest.raises(ValueError):
        cus.submit_function(fail_with, ValueError, "x").result(timeout=WAIT)
    assert cus.submit_function(add, 1, 1).result(timeout=WAIT) == 2


# ---------------------------------------------------------------------------------------
# Sizes and output
# ---------------------------------------------------------------------------------------


def test_ten_megabyte_argument(cus):
    data = os.urandom(10 << 20)
    length, digest = cus.submit_function(length_and_hash, data).result(timeout=WAIT)
    assert length == len(data) == 10 << 20
    assert digest == hashlib.sha256(data).hexdigest()


def test_ten_megabyte_result(cus):
    n = 10 << 20
    value = cus.submit_function(big_result, n).result(timeout=WAIT)
    assert isinstance(value, bytes)
    assert len(value) == n
    assert value == bytes(range(256)) * (n // 256)


def test_print_inside_a_function(cus, pilot):
    assert cus.submit_function(chatty, 50).result(timeout=WAIT) == 50
    assert cus.submit_function(print, "x" * 100000).result(timeout=WAIT) is None
    assert cus.submit_function(add, 2, 2).result(timeout=WAIT) == 4
    log = os.path.join(pilot.sandbox, "python-workers.log")
    with open(log) as f:
        text = f.read()
    assert "line 49 on stdout" in text and "line 49 on stderr" in text


# ---------------------------------------------------------------------------------------
# Many calls, cancel, retries, timeout
# ---------------------------------------------------------------------------------------


def test_500_small_calls_through_futures(cus):
    t0 = time.monotonic()
    futures = {cus.submit_function(add, i, 1).future(): i for i in range(500)}
    done, not_done = concurrent.futures.wait(futures, timeout=WAIT)
    assert not not_done, "%d of 500 calls not done" % len(not_done)
    assert all(f.result(timeout=0) == futures[f] + 1 for f in done)
    assert time.monotonic() - t0 < WAIT


def test_many_small_calls_through_result(cus):
    units = [cus.submit_function(add, i, i) for i in range(200)]
    assert [u.result(timeout=WAIT) for u in units] == [2 * i for i in range(200)]


def test_cancel_a_sleeping_function(cus):
    cu = cus.submit_function(sleep_then, 30, "never")
    deadline = time.monotonic() + WAIT
    while cu.state != "running" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cu.state == "running"
    time.sleep(0.2)
    t0 = time.monotonic()
    cu.cancel()
    assert cu.wait(timeout=WAIT) == "canceled"
    assert time.monotonic() - t0 < 20
    with pytest.raises(concurrent.futures.CancelledError):
        cu.result(timeout=WAIT)
    # The pilot goes on: the next call (a new worker) works.
    assert cus.submit_function(sleep_then, 0, "after").result(timeout=WAIT) == "after"
    assert cus.submit_function(add, 40, 2).result(timeout=WAIT) == 42


def test_function_description_with_retries(cus, tmp_path):
    counter = str(tmp_path / "runs")
    cud = pstar.ComputeUnitDescription(
        function=fail_first_time,
        args=(counter, 40),
        kwargs={"bonus": 2},
        cores=1,
        retries=1,
    )
    assert cud.function is fail_first_time
    assert cud.args == (counter, 40)
    assert cud.kwargs == {"bonus": 2}
    cu = cus.submit(cud)
    assert cu.result(timeout=WAIT) == 42
    with open(counter) as f:
        assert f.read() == "2"
    assert [a["end"] for a in cu.attempts] == ["failed", "done"], cu.attempts


def test_function_without_retries_fails_on_first_run(cus, tmp_path):
    counter = str(tmp_path / "runs")
    cu = cus.submit(pstar.ComputeUnitDescription(function=fail_first_time, args=(counter, 1)))
    with pytest.raises(RuntimeError, match="first run fails"):
        cu.result(timeout=WAIT)
    assert len(cu.attempts) == 1


def test_function_timeout(cus):
    t0 = time.monotonic()
    cu = cus.submit(pstar.ComputeUnitDescription(function=sleep_then, args=(30, "late"), timeout=1))
    assert cu.wait(timeout=WAIT) == "failed"
    assert time.monotonic() - t0 < 20
    assert "timeout" in (cu.detail or ""), cu.detail
    with pytest.raises(pstar.UnitFailed, match="timeout"):
        cu.result(timeout=WAIT)
    # A new worker serves the next call.
    assert cus.submit_function(add, 1, 2).result(timeout=WAIT) == 3


def test_submit_function_refuses_what_is_not_callable(cus):
    with pytest.raises(pstar.DescriptionError, match="not callable"):
        cus.submit_function(42)
    assert cus.get_compute_units() == []
