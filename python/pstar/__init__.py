"""pstar: pilot jobs and pilot data after the P* model, driven from Python.

The Pilot-API of the seeds, over pstar's Rust manager and agents::

    import pstar

    pcs = pstar.PilotComputeService()
    pcs.create_pilot(cores=2, walltime=10)          # a local pilot of 2 cores, 10 minutes
    cus = pstar.ComputeUnitService()
    cus.add(pcs)
    cu = cus.submit(pstar.ComputeUnitDescription(executable="/bin/date"))
    print(cu.wait(), open(cu.stdout).read())
    print(cus.submit_function(pow, 2, 10).result())  # 1024, computed on the pilot

Services made without a session share a default one, closed (its pilots canceled) at
exit. See python/README.md.
"""

import atexit as _atexit
import os as _os
import sys as _sys
import sysconfig as _sysconfig

from . import _pstar
from ._pstar import (
    ComputeDataService,
    ComputeUnit,
    ComputeUnitDescription,
    ComputeUnitService,
    DataUnit,
    DataUnitDescription,
    DescriptionError,
    Error,
    FunctionError,
    PilotCompute,
    PilotComputeDescription,
    PilotComputeService,
    PilotData,
    PilotDataDescription,
    PilotDataService,
    Session,
    UnitFailed,
)
from ._glue import RemoteTraceback, State

# The key a DescriptionError is about (None where pstar names none).
DescriptionError.key = None

__all__ = [
    "ComputeDataService",
    "ComputeUnit",
    "ComputeUnitDescription",
    "ComputeUnitService",
    "DataUnit",
    "DataUnitDescription",
    "DescriptionError",
    "Error",
    "FunctionError",
    "PilotCompute",
    "PilotComputeDescription",
    "PilotComputeService",
    "PilotData",
    "PilotDataDescription",
    "PilotDataService",
    "RemoteTraceback",
    "Session",
    "State",
    "UnitFailed",
    "default_session",
]


def default_session():
    """The session of services made without one (made at its first use)."""
    return _pstar.default_session()


def _agent_program():
    """The `pstar-agent` program installed with this package, if it is."""
    for scripts in (_os.path.dirname(_sys.executable), _sysconfig.get_path("scripts")):
        if scripts:
            path = _os.path.join(scripts, "pstar-agent")
            if _os.access(path, _os.X_OK):
                return path
    return None


# Local pilots run function units with this interpreter (it has cloudpickle and the
# program's modules); agents that are processes of their own are `pstar-agent`.
_pstar.set_defaults(python=_sys.executable, agent_binary=_agent_program())


def _at_exit():
    _pstar.close_all()
    _pstar.stop_notifier()
    from . import _glue

    thread = getattr(_glue, "_notify_thread", None)
    if thread is not None:
        thread.join(timeout=2)


# Before the interpreter waits for its other threads (as concurrent.futures' executors
# do): a thread blocked in a wait on a unit is released by the close, not waited for.
try:
    import threading as _threading

    _threading._register_atexit(_at_exit)
except (AttributeError, RuntimeError):
    _atexit.register(_at_exit)
