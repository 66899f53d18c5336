"""What is Python's own in pstar: pickling calls, results and futures.

Everything else is the Rust module `pstar._pstar`.
"""

import concurrent.futures
import pickle

import cloudpickle

from ._pstar import FunctionError, UnitFailed


class State:
    """The states of units and pilots, as `ComputeUnit.state` gives them."""

    New = "new"
    Waiting = "waiting"
    Scheduled = "scheduled"
    StagingInput = "staging_input"
    Pending = "pending"
    Running = "running"
    StagingOutput = "staging_output"
    Done = "done"
    Failed = "failed"
    Canceled = "canceled"
    FINAL = frozenset({"done", "failed", "canceled"})


class StateName(str):
    """A state as `get_state()` gives it: `"done"`, equal to the seeds' `"Done"` too (case
    does not matter)."""

    __slots__ = ()

    def __eq__(self, other):
        if isinstance(other, str):
            return self.lower() == other.lower()
        return NotImplemented

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self):
        return hash(self.lower())


class RemoteTraceback(Exception):
    """The traceback of an exception raised on a pilot (the `__cause__` of what
    `result()` raises)."""

    def __init__(self, tb):
        super().__init__(tb)
        self.tb = tb

    def __str__(self):
        return "\n\"\"\"\n%s\"\"\"" % self.tb


def dumps_call(fn, args, kwargs):
    """A function unit's call, pickled: (name, bytes)."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__
    module = getattr(fn, "__module__", None)
    if module and module != "__main__":
        name = "%s.%s" % (module, name)
    payload = cloudpickle.dumps(
        (fn, tuple(args or ()), dict(kwargs or {})), protocol=pickle.HIGHEST_PROTOCOL
    )
    return name, payload


def _raise_remote(answer):
    try:
        pickled, tb, name, message = pickle.loads(answer)
    except BaseException as e:
        raise FunctionError("the function raised an exception pstar cannot read: %s" % e) from None
    exc, why = None, "it could not be pickled on the pilot"
    if pickled is not None:
        try:
            exc = pickle.loads(pickled)
        except BaseException as e:
            why = "it cannot be unpickled here (%s: %s)" % (type(e).__name__, e)
    if isinstance(exc, Exception):
        raise exc from RemoteTraceback(tb)
    if isinstance(exc, BaseException):
        # SystemExit or KeyboardInterrupt raised on the pilot must not end this program.
        why = "it would end this program"
    err = FunctionError("%s: %s (the exception itself is not raised here: %s)" % (name, message, why))
    err.remote_type = name
    err.remote_message = message
    raise err from RemoteTraceback(tb)


def outcome(unit):
    """A unit's result, once it has ended (`ComputeUnit.result`)."""
    state = unit.state
    if state == State.Done:
        if unit.is_function:
            answer = unit._answer()
            if answer is None:
                return None
            try:
                return pickle.loads(answer)
            except BaseException as e:
                raise FunctionError(
                    "unit %s returned a value that cannot be unpickled here: %s: %s"
                    % (unit.id, type(e).__name__, e)
                ) from e
        return unit.exit_code
    if state == State.Canceled:
        raise concurrent.futures.CancelledError(
            "unit %s was canceled: %s" % (unit.id, unit.detail or "canceled")
        )
    if unit.is_function:
        answer = unit._answer()
        if answer:
            _raise_remote(answer)
    err = UnitFailed("unit %s (%s) failed: %s" % (unit.id, unit.name, unit.detail))
    err.unit = unit
    err.exit_code = unit.exit_code
    raise err


def new_future(unit):
    """A future of `unit`'s result; canceling it cancels the unit."""
    fut = concurrent.futures.Future()

    def cancel_unit(f):
        if f.cancelled():
            unit.cancel()
            # As executors do: waiters (as_completed, wait) see it done.
            try:
                f.set_running_or_notify_cancel()
            except RuntimeError:
                pass

    fut.add_done_callback(cancel_unit)
    return fut


def settle(fut, unit):
    """Settles `fut` with the result of `unit`, which has ended."""
    if fut.done():
        return
    try:
        value = outcome(unit)
    except concurrent.futures.CancelledError:
        fut.cancel()  # (its done-callback notifies the waiters)
        return
    except BaseException as e:
        fut.set_exception(e)
        return
    fut.set_result(value)
