"""Type stubs of `pstar._pstar`, the native module of the `pstar` package (python/src/*.rs).

The descriptions (`ComputeUnitDescription`, `PilotComputeDescription`,
`PilotDataDescription`, `DataUnitDescription`) take their keys dynamically; every key,
with the seeds' aliases, is declared here as a property so that editors complete them
and type checkers check them. A property's getter gives what the description holds
(durations as `datetime.timedelta`); its setter takes what the key accepts.
"""

import concurrent.futures
import datetime
import os
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any, Literal, overload

from typing_extensions import Required, Self, TypedDict, Unpack, final

__all__ = [
    "Error",
    "DescriptionError",
    "UnitFailed",
    "FunctionError",
    "run_agent",
    "default_session",
    "close_all",
    "set_defaults",
    "stop_notifier",
    "Session",
    "ComputeUnitDescription",
    "PilotComputeDescription",
    "PilotDataDescription",
    "DataUnitDescription",
    "PilotComputeService",
    "PilotCompute",
    "ComputeUnitService",
    "ComputeUnit",
    "PilotDataService",
    "PilotData",
    "DataUnit",
    "ComputeDataService",
    "Notifier",
]

# ---------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------

_Text = str | os.PathLike[str]
"""A string, or a path (`pathlib.Path`): both are taken as text."""

_Duration = float | int | str | datetime.timedelta
"""A duration: a number (seconds; minutes for a pilot's `walltime`), a text such as
`"30m"` or `"1h 30m"`, or a `datetime.timedelta`."""

_Size = int | str
"""A size: a number of bytes, or a text such as `"100GiB"`, `"500MB"`."""

_UnitStateName = Literal[
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
_PilotStateName = Literal["new", "pending", "running", "done", "failed", "canceled"]

# Lists: a list or a tuple (not a str, not another iterable). Lists are invariant, so a
# `list[Any]` arm lets a `list[pathlib.Path]` variable through; the first arm is the hint.
_TextList = list[str] | list[Any] | tuple[_Text, ...]
_ArgumentList = list[str] | list[Any] | tuple[_Text | int | float, ...]
_Environment = dict[str, str] | dict[str, Any]
_DataUnitList = list[DataUnit] | list[str] | list[Any] | tuple[DataUnit | _Text, ...]
_UnitList = list[ComputeUnit] | list[str] | list[Any] | tuple[ComputeUnit | str, ...]
_OutputDataList = list[_OutputDataSpec] | list[dict[str, Any]] | tuple[_OutputDataSpec, ...]
_ExitCodes = list[int] | tuple[int, ...]

class _OutputDataSpec(TypedDict, total=False):
    """One entry of a compute unit's `output_data`, as given."""

    name: Required[str]
    """The data unit's name."""
    files: Required[list[str] | list[Any] | tuple[str, ...]]
    """Patterns relative to the unit's sandbox (`*.bam`, `out`, `out/**/*.txt`)."""
    store: str | None
    """The pilot store to keep it in (default: the first one)."""
    export: _Text | None
    """A local directory it is copied to when the run ends."""
    allow_empty: bool
    """A pattern that matches nothing makes an empty data unit instead of failing."""

class _OutputData(TypedDict):
    """One entry of a compute unit's `output_data`, as the description holds it."""

    name: str
    files: list[str]
    store: str | None
    export: str | None
    allow_empty: bool

class _AffinitySpec(TypedDict, total=False):
    """Placement labels, as given."""

    datacenter: str | None
    machine: str | None

class _Affinity(TypedDict):
    """Placement labels, as a description holds them."""

    datacenter: str | None
    machine: str | None

class _Attempt(TypedDict):
    """One run of a unit (`ComputeUnit.attempts`)."""

    pilot: str | None
    started: float
    """Seconds since the epoch."""
    ended: float | None
    end: Literal["done", "failed", "canceled", "returned"] | None
    exit_code: int | None
    detail: str | None

class _DataFile(TypedDict):
    """One file of a data unit (`DataUnit.files`)."""

    path: str
    size: int
    sha256: str

class _PilotDetails(TypedDict):
    """`PilotCompute.get_details()`."""

    id: str
    state: _PilotStateName
    detail: str | None
    job_id: str | None
    resource: str
    cores: int
    sandbox: str

# ---------------------------------------------------------------------------------------
# Keys of the descriptions, as keyword arguments
# ---------------------------------------------------------------------------------------

class _UnitKeys(TypedDict, total=False):
    name: _Text | None
    executable: _Text | None
    arguments: _ArgumentList
    environment: _Environment
    working_directory: _Text | None
    cores: int
    total_core_count: int
    number_of_processes: int
    gpus: int
    stdout: _Text | None
    output: _Text | None
    stderr: _Text | None
    error: _Text | None
    pre_exec: _TextList
    post_exec: _TextList
    shell: bool
    mpi: bool
    spmd_variation: Literal["single", "mpi"] | None
    tags: _TextList
    pilot: PilotCompute | str | None
    time_request: _Duration | None
    timeout: _Duration | None
    input_data: _DataUnitList
    output_data: _OutputDataList
    after: _UnitList
    on_dependency_failure: Literal["cancel", "run"]
    retries: int
    retry_on_exit_codes: _ExitCodes
    function: Callable[..., Any] | None
    args: list[Any] | tuple[Any, ...] | None
    kwargs: dict[str, Any] | None

class _PilotKeys(TypedDict, total=False):
    name: _Text | None
    resource: _Text
    service_url: _Text
    cores: int
    number_of_processes: int
    nodes: int | None
    gpus: int
    walltime: _Duration
    queue: _Text | None
    project: _Text | None
    allocation: _Text | None
    reservation: _Text | None
    scheduler_options: _TextList
    tunnel: bool
    working_directory: _Text | None
    environment: _Environment
    affinity: _AffinitySpec | None
    affinity_datacenter_label: _Text | None
    affinity_machine_label: _Text | None
    cache: _Size | None
    pre_exec: _TextList
    python: _Text | None

class _StoreKeys(TypedDict, total=False):
    name: _Text
    url: _Text
    service_url: _Text
    size: _Size | None
    affinity: _AffinitySpec | None
    affinity_datacenter_label: _Text | None
    affinity_machine_label: _Text | None

class _DataUnitKeys(TypedDict, total=False):
    name: _Text
    files: _TextList
    file_urls: _TextList
    store: PilotData | _Text | None

# ---------------------------------------------------------------------------------------
# Exceptions
# ---------------------------------------------------------------------------------------

class Error(Exception):
    """What pstar refuses or could not do; the message says where and why."""

class DescriptionError(Error):
    """A description with an unknown key, a value of the wrong type, or values that can
    never run (`key` names the key)."""

    key: str | None
    """The key at fault (`None` on the class, `""` when pstar names none)."""

class UnitFailed(Error):
    """A unit that ended failed (or canceled) was asked for its result."""

    unit: ComputeUnit
    """The unit (set by `ComputeUnit.result()`)."""
    exit_code: int | None
    """Its exit code, if its process had one."""

class FunctionError(Error):
    """A function unit raised an exception that cannot be rebuilt here; the message and the
    remote traceback say what it was."""

# ---------------------------------------------------------------------------------------
# Session
# ---------------------------------------------------------------------------------------

@final
class Session:
    """A session: its pilots, units and data, coordinated through one store.

    `Session()` keeps everything in this process (the embedded store);
    `Session(coordination="redis://host:6379")` uses Redis, and every pilot's agent is
    then a process of its own. Keyword arguments given `None` are left out.
    """

    def __new__(
        cls,
        *,
        id: _Text | None = None,
        coordination: _Text | None = None,
        coordination_url: _Text | None = None,
        sandbox: _Text | None = None,
        prefetch: int | None = None,
        max_attempts: int | None = None,
        attempts: int | None = None,
        heartbeat_timeout: _Duration | None = None,
        black_hole_failures: int | None = None,
        agent_start_timeout: _Duration | None = None,
        poll_interval: _Duration | None = None,
        locality_wait: _Duration | None = None,
        agent_binary: _Text | None = None,
        keep: _Duration | None = None,
        claim_wait: _Duration | None = None,
        heartbeat_interval: _Duration | None = None,
        kill_grace: _Duration | None = None,
        drain_margin: _Duration | None = None,
    ) -> Self: ...
    @property
    def id(self) -> str:
        """The session's id (`pstar status --session ID`, with Redis)."""
    @property
    def sandbox(self) -> str:
        """The root directory of its pilots' sandboxes (absolute)."""
    @property
    def coordination(self) -> str | None:
        """The coordination store's URL, its password masked (`None`: embedded)."""
    @property
    def closed(self) -> bool:
        """Whether `close()` was called."""
    def close(self) -> None:
        """Cancels the pilots of its services and ends the session in its store."""
    def __enter__(self) -> Self: ...
    def __exit__(self, *_exc: object) -> Literal[False]: ...

def default_session() -> Session:
    """The session of services made without one (made at its first use, with the
    environment's settings: `PSTAR_COORDINATION` makes it a Redis session)."""

def close_all() -> None:
    """Closes every session still open (the package calls it at exit)."""

def set_defaults(python: str | None = None, agent_binary: _Text | None = None) -> None:
    """What the package sets at import: the interpreter local pilots run function units
    with, and the agent program of agents that are processes of their own."""

def stop_notifier() -> None:
    """Ends the `pstar-notify` thread (the package calls it at exit)."""

def run_agent(args: Sequence[str]) -> int:
    """Runs `pstar agent` in this process (`pstar-agent agent --coordination URL
    --session SESSION --pilot PILOT`); returns the exit status."""

# ---------------------------------------------------------------------------------------
# Descriptions
# ---------------------------------------------------------------------------------------

@final
class ComputeUnitDescription:
    """A compute unit to submit: the seeds' `ComputeUnitDescription`.

    `ComputeUnitDescription(executable="/bin/date")`, `ComputeUnitDescription({...})`
    (a dict of keys; keyword arguments given too are set after it), or made empty and
    given attributes. A function unit sets `function` (and `args`, `kwargs`) instead of
    `executable`.
    """

    def __new__(
        cls, description: dict[str, Any] | None = None, **kwargs: Unpack[_UnitKeys]
    ) -> Self: ...
    def as_dict(self) -> dict[str, Any]:
        """Its keys and values, with pstar's names (not `args` and `kwargs`)."""
    def validate(self) -> None:
        """Checks it as submitting it would, without submitting it
        (`DescriptionError`)."""
    @property
    def name(self) -> str | None: ...
    @name.setter
    def name(self, value: _Text | None) -> None: ...
    @property
    def executable(self) -> str:
        """`""` when not set (and for a function unit)."""
    @executable.setter
    def executable(self, value: _Text | None) -> None: ...
    @property
    def arguments(self) -> list[str]:
        """Numbers given are written as Python writes them."""
    @arguments.setter
    def arguments(self, value: _ArgumentList) -> None: ...
    @property
    def environment(self) -> dict[str, str]: ...
    @environment.setter
    def environment(self, value: _Environment) -> None: ...
    @property
    def working_directory(self) -> str | None: ...
    @working_directory.setter
    def working_directory(self, value: _Text | None) -> None: ...
    @property
    def cores(self) -> int: ...
    @cores.setter
    def cores(self, value: int) -> None: ...
    @property
    def total_core_count(self) -> int:
        """`cores`, under the seeds' name."""
    @total_core_count.setter
    def total_core_count(self, value: int) -> None: ...
    @property
    def number_of_processes(self) -> int:
        """`cores`, under the seeds' name."""
    @number_of_processes.setter
    def number_of_processes(self, value: int) -> None: ...
    @property
    def gpus(self) -> int: ...
    @gpus.setter
    def gpus(self, value: int) -> None: ...
    @property
    def stdout(self) -> str | None: ...
    @stdout.setter
    def stdout(self, value: _Text | None) -> None: ...
    @property
    def output(self) -> str | None:
        """`stdout`, under the seeds' name."""
    @output.setter
    def output(self, value: _Text | None) -> None: ...
    @property
    def stderr(self) -> str | None: ...
    @stderr.setter
    def stderr(self, value: _Text | None) -> None: ...
    @property
    def error(self) -> str | None:
        """`stderr`, under the seeds' name."""
    @error.setter
    def error(self, value: _Text | None) -> None: ...
    @property
    def pre_exec(self) -> list[str]: ...
    @pre_exec.setter
    def pre_exec(self, value: _TextList) -> None: ...
    @property
    def post_exec(self) -> list[str]: ...
    @post_exec.setter
    def post_exec(self, value: _TextList) -> None: ...
    @property
    def shell(self) -> bool: ...
    @shell.setter
    def shell(self, value: bool) -> None: ...
    @property
    def mpi(self) -> bool: ...
    @mpi.setter
    def mpi(self, value: bool) -> None: ...
    @property
    def spmd_variation(self) -> Literal["single", "mpi"]:
        """`mpi`, under the seeds' name: `"mpi"` is `mpi=True`."""
    @spmd_variation.setter
    def spmd_variation(self, value: Literal["single", "mpi"] | None) -> None: ...
    @property
    def tags(self) -> list[str]: ...
    @tags.setter
    def tags(self, value: _TextList) -> None: ...
    @property
    def pilot(self) -> str | None:
        """Early binding: the pilot's id."""
    @pilot.setter
    def pilot(self, value: PilotCompute | str | None) -> None: ...
    @property
    def time_request(self) -> datetime.timedelta | None: ...
    @time_request.setter
    def time_request(self, value: _Duration | None) -> None: ...
    @property
    def timeout(self) -> datetime.timedelta | None: ...
    @timeout.setter
    def timeout(self, value: _Duration | None) -> None: ...
    @property
    def input_data(self) -> list[str]:
        """The data units' names."""
    @input_data.setter
    def input_data(self, value: _DataUnitList) -> None: ...
    @property
    def output_data(self) -> list[_OutputData]: ...
    @output_data.setter
    def output_data(self, value: _OutputDataList) -> None: ...
    @property
    def after(self) -> list[str]:
        """The units' ids."""
    @after.setter
    def after(self, value: _UnitList) -> None: ...
    @property
    def on_dependency_failure(self) -> Literal["cancel", "run"]: ...
    @on_dependency_failure.setter
    def on_dependency_failure(self, value: Literal["cancel", "run"]) -> None: ...
    @property
    def retries(self) -> int: ...
    @retries.setter
    def retries(self, value: int) -> None: ...
    @property
    def retry_on_exit_codes(self) -> list[int]: ...
    @retry_on_exit_codes.setter
    def retry_on_exit_codes(self, value: _ExitCodes) -> None: ...
    @property
    def function(self) -> Callable[..., Any] | None: ...
    @function.setter
    def function(self, value: Callable[..., Any] | None) -> None: ...
    @property
    def args(self) -> list[Any] | tuple[Any, ...] | None: ...
    @args.setter
    def args(self, value: list[Any] | tuple[Any, ...] | None) -> None: ...
    @property
    def kwargs(self) -> dict[str, Any] | None: ...
    @kwargs.setter
    def kwargs(self, value: dict[str, Any] | None) -> None: ...

@final
class PilotComputeDescription:
    """A pilot to create: the seeds' `PilotComputeDescription`. `walltime` as a number
    is in minutes, as in the seeds."""

    def __new__(
        cls, description: dict[str, Any] | None = None, **kwargs: Unpack[_PilotKeys]
    ) -> Self: ...
    def as_dict(self) -> dict[str, Any]:
        """Its keys and values, with pstar's names."""
    @property
    def name(self) -> str | None: ...
    @name.setter
    def name(self, value: _Text | None) -> None: ...
    @property
    def resource(self) -> str: ...
    @resource.setter
    def resource(self, value: _Text) -> None: ...
    @property
    def service_url(self) -> str:
        """`resource`, under the seeds' name."""
    @service_url.setter
    def service_url(self, value: _Text) -> None: ...
    @property
    def cores(self) -> int: ...
    @cores.setter
    def cores(self, value: int) -> None: ...
    @property
    def number_of_processes(self) -> int:
        """`cores`, under the seeds' name."""
    @number_of_processes.setter
    def number_of_processes(self, value: int) -> None: ...
    @property
    def nodes(self) -> int | None: ...
    @nodes.setter
    def nodes(self, value: int | None) -> None: ...
    @property
    def gpus(self) -> int: ...
    @gpus.setter
    def gpus(self, value: int) -> None: ...
    @property
    def walltime(self) -> datetime.timedelta: ...
    @walltime.setter
    def walltime(self, value: _Duration) -> None:
        """A number is in minutes."""
    @property
    def queue(self) -> str | None: ...
    @queue.setter
    def queue(self, value: _Text | None) -> None: ...
    @property
    def project(self) -> str | None: ...
    @project.setter
    def project(self, value: _Text | None) -> None: ...
    @property
    def allocation(self) -> str | None:
        """`project`, under the seeds' name."""
    @allocation.setter
    def allocation(self, value: _Text | None) -> None: ...
    @property
    def reservation(self) -> str | None: ...
    @reservation.setter
    def reservation(self, value: _Text | None) -> None: ...
    @property
    def scheduler_options(self) -> list[str]: ...
    @scheduler_options.setter
    def scheduler_options(self, value: _TextList) -> None: ...
    @property
    def tunnel(self) -> bool: ...
    @tunnel.setter
    def tunnel(self, value: bool) -> None: ...
    @property
    def working_directory(self) -> str | None: ...
    @working_directory.setter
    def working_directory(self, value: _Text | None) -> None: ...
    @property
    def environment(self) -> dict[str, str]: ...
    @environment.setter
    def environment(self, value: _Environment) -> None: ...
    @property
    def affinity(self) -> _Affinity: ...
    @affinity.setter
    def affinity(self, value: _AffinitySpec | None) -> None: ...
    @property
    def affinity_datacenter_label(self) -> str | None: ...
    @affinity_datacenter_label.setter
    def affinity_datacenter_label(self, value: _Text | None) -> None: ...
    @property
    def affinity_machine_label(self) -> str | None: ...
    @affinity_machine_label.setter
    def affinity_machine_label(self, value: _Text | None) -> None: ...
    @property
    def cache(self) -> int | None:
        """Bytes; `None`: no limit."""
    @cache.setter
    def cache(self, value: _Size | None) -> None: ...
    @property
    def pre_exec(self) -> list[str]: ...
    @pre_exec.setter
    def pre_exec(self, value: _TextList) -> None: ...
    @property
    def python(self) -> str | None:
        """`None` until set; a local pilot created without it runs this interpreter."""
    @python.setter
    def python(self, value: _Text | None) -> None: ...

@final
class PilotDataDescription:
    """A pilot store to create: the seeds' `PilotDataDescription` (`url` is
    `file:///dir`, `sftp://user@host/path` or `s3://bucket/prefix`; `size` a quota)."""

    def __new__(
        cls, description: dict[str, Any] | None = None, **kwargs: Unpack[_StoreKeys]
    ) -> Self: ...
    @property
    def name(self) -> str: ...
    @name.setter
    def name(self, value: _Text) -> None: ...
    @property
    def url(self) -> str: ...
    @url.setter
    def url(self, value: _Text) -> None: ...
    @property
    def service_url(self) -> str:
        """`url`, under the seeds' name."""
    @service_url.setter
    def service_url(self, value: _Text) -> None: ...
    @property
    def size(self) -> int | None:
        """Bytes; `None`: no quota."""
    @size.setter
    def size(self, value: _Size | None) -> None: ...
    @property
    def affinity(self) -> _Affinity: ...
    @affinity.setter
    def affinity(self, value: _AffinitySpec | None) -> None: ...
    @property
    def affinity_datacenter_label(self) -> str | None: ...
    @affinity_datacenter_label.setter
    def affinity_datacenter_label(self, value: _Text | None) -> None: ...
    @property
    def affinity_machine_label(self) -> str | None: ...
    @affinity_machine_label.setter
    def affinity_machine_label(self, value: _Text | None) -> None: ...

@final
class DataUnitDescription:
    """A data unit to place: the seeds' `DataUnitDescription` (`files`: local files,
    directories or globs)."""

    def __new__(
        cls, description: dict[str, Any] | None = None, **kwargs: Unpack[_DataUnitKeys]
    ) -> Self: ...
    @property
    def name(self) -> str: ...
    @name.setter
    def name(self, value: _Text) -> None: ...
    @property
    def files(self) -> list[str]: ...
    @files.setter
    def files(self, value: _TextList) -> None: ...
    @property
    def file_urls(self) -> list[str]:
        """`files`, under the seeds' name."""
    @file_urls.setter
    def file_urls(self, value: _TextList) -> None: ...
    @property
    def store(self) -> str | None:
        """The pilot store's name."""
    @store.setter
    def store(self, value: PilotData | _Text | None) -> None: ...

# ---------------------------------------------------------------------------------------
# Pilots
# ---------------------------------------------------------------------------------------

@final
class PilotComputeService:
    """Creates pilots on resources: the seeds' `PilotComputeService`.

    `PilotComputeService()` uses the default session; `PilotComputeService(session)`
    that session; `PilotComputeService(coordination_url="redis://...")` a new session
    over that store.
    """

    def __new__(
        cls, session: Session | None = None, coordination_url: str | None = None
    ) -> Self: ...
    @overload
    def create_pilot(
        self, pilot_compute_description: PilotComputeDescription | dict[str, Any] | None
    ) -> PilotCompute:
        """Creates a pilot from a description or a dict of its keys; returns once it is
        submitted to its resource."""
    @overload
    def create_pilot(self, **kwargs: Unpack[_PilotKeys]) -> PilotCompute:
        """Creates a pilot from keyword arguments (`create_pilot(cores=2,
        walltime=10)`)."""
    def list_pilots(self) -> list[PilotCompute]: ...
    @property
    def pilots(self) -> list[PilotCompute]: ...
    @property
    def session(self) -> Session: ...
    def wait(self, timeout: float | None = None) -> None:
        """Waits until every pilot has ended (`TimeoutError` after `timeout` seconds)."""
    def cancel(self) -> None:
        """Cancels every pilot; returns once they have ended."""

@final
class PilotCompute:
    """A pilot: the seeds' `PilotCompute` (made by `PilotComputeService.create_pilot`)."""

    @property
    def id(self) -> str:
        """E.g. `pilot.0000`."""
    @property
    def state(self) -> _PilotStateName: ...
    def get_state(self) -> _PilotStateName: ...
    @property
    def detail(self) -> str | None:
        """Why it is in its state (why it failed, say)."""
    @property
    def job_id(self) -> str | None:
        """Its job's id at the resource (the Slurm job id, say)."""
    @property
    def sandbox(self) -> str:
        """Its sandbox directory (on its host)."""
    @property
    def resource(self) -> str: ...
    @property
    def cores(self) -> int: ...
    @property
    def history(self) -> list[tuple[_PilotStateName, float]]:
        """Its states so far, with when each began (seconds since the epoch)."""
    def get_details(self) -> _PilotDetails: ...
    def wait(
        self, state: str | None = None, timeout: float | None = None
    ) -> _PilotStateName:
        """Waits until it has ended, or is in `state`; returns its state then
        (`TimeoutError` after `timeout` seconds)."""
    def cancel(self) -> None:
        """Cancels it; returns once it has ended."""
    def on_state_change(self, callback: Callable[[PilotCompute, str], object]) -> None:
        """Calls `callback(pilot, state)` on the `pstar-notify` thread at each later
        change."""
    def register_callback(self, callback: Callable[[PilotCompute, str], object]) -> None:
        """`on_state_change`, under the seeds' name."""

# ---------------------------------------------------------------------------------------
# Units
# ---------------------------------------------------------------------------------------

@final
class ComputeUnitService:
    """Runs compute units on the pilots of the services added to it: the seeds'
    `ComputeUnitService`. `ComputeUnitService()` uses the default session."""

    def __new__(cls, session: Session | None = None, prefetch: int | None = None) -> Self: ...
    def add_pilot_compute_service(self, pcs: PilotComputeService) -> None: ...
    def add(self, pcs: PilotComputeService) -> None:
        """`add_pilot_compute_service`, the seeds' short name."""
    def remove_pilot_compute_service(self, pcs: PilotComputeService) -> None: ...
    def remove(self, pcs: PilotComputeService) -> None:
        """`remove_pilot_compute_service`, the seeds' short name."""
    @overload
    def submit_compute_unit(
        self, compute_unit_description: ComputeUnitDescription | dict[str, Any] | None
    ) -> ComputeUnit: ...
    @overload
    def submit_compute_unit(self, **kwargs: Unpack[_UnitKeys]) -> ComputeUnit: ...
    @overload
    def submit(
        self, compute_unit_description: ComputeUnitDescription | dict[str, Any] | None
    ) -> ComputeUnit: ...
    @overload
    def submit(self, **kwargs: Unpack[_UnitKeys]) -> ComputeUnit: ...
    def submit_compute_units(
        self, descriptions: Iterable[ComputeUnitDescription | dict[str, Any]]
    ) -> list[ComputeUnit]:
        """Submits many units at once; nothing is submitted if one of them is refused."""
    def submit_function(
        self, function: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> ComputeUnit:
        """Runs `function(*args, **kwargs)` in one of a pilot's Python workers."""
    def wait(self, timeout: float | None = None) -> None:
        """Waits until every unit submitted here has ended (`TimeoutError` after
        `timeout` seconds)."""
    def cancel(self) -> None:
        """Cancels every unit submitted here that has not ended (returns at once)."""
    def get_compute_units(self) -> list[ComputeUnit]: ...
    @property
    def units(self) -> list[ComputeUnit]: ...
    @property
    def session(self) -> Session: ...

@final
class ComputeUnit:
    """A submitted unit: the seeds' `ComputeUnit`. `await unit` in asyncio, or
    `unit.future()`, gives its result."""

    @property
    def id(self) -> str:
        """E.g. `unit.000003`."""
    @property
    def name(self) -> str:
        """Its name, or its executable's file name, or its function's name."""
    @property
    def state(self) -> _UnitStateName: ...
    def get_state(self) -> _UnitStateName: ...
    @property
    def exit_code(self) -> int | None: ...
    @property
    def detail(self) -> str | None:
        """Why it is in its state (why it failed, say)."""
    @property
    def pilot(self) -> str | None:
        """The id of the pilot it is (or was last) bound to."""
    @property
    def sandbox(self) -> str | None:
        """Its sandbox directory, once bound to a pilot."""
    @property
    def stdout(self) -> str | None:
        """The file of its standard output, once bound to a pilot."""
    @property
    def stderr(self) -> str | None:
        """The file of its standard error, once bound to a pilot."""
    @property
    def is_function(self) -> bool: ...
    def get_details(self) -> dict[str, Any]:
        """The seeds' `get_details()`: id, name, state, exit code, detail, pilot, files."""
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...
    @property
    def history(self) -> list[tuple[_UnitStateName, float]]:
        """Its states so far, with when each began (seconds since the epoch)."""
    @property
    def attempts(self) -> list[_Attempt]: ...
    def _answer(self) -> bytes | None: ...
    def wait(self, timeout: float | None = None) -> _UnitStateName:
        """Waits until it has ended; returns its final state (`TimeoutError` after
        `timeout` seconds)."""
    def cancel(self) -> None:
        """Cancels it (returns at once)."""
    def result(self, timeout: float | None = None) -> Any:
        """What a function unit returned (or raises what it raised); a program's exit
        code, 0. Raises `UnitFailed` if it failed, `concurrent.futures.CancelledError`
        if it was canceled."""
    def future(self) -> concurrent.futures.Future[Any]:
        """A future of its `result()`; canceling the future cancels the unit."""
    def __await__(self) -> Generator[Any, None, Any]: ...
    def on_state_change(self, callback: Callable[[ComputeUnit, str], object]) -> None:
        """Calls `callback(unit, state)` on the `pstar-notify` thread at each later
        change."""
    def register_callback(self, callback: Callable[[ComputeUnit, str], object]) -> None:
        """`on_state_change`, under the seeds' name."""

# ---------------------------------------------------------------------------------------
# Pilot-Data
# ---------------------------------------------------------------------------------------

@final
class PilotDataService:
    """Creates pilot stores: the seeds' `PilotDataService`."""

    def __new__(cls, session: Session | None = None) -> Self: ...
    @overload
    def create_pilot(
        self, pilot_data_description: PilotDataDescription | dict[str, Any] | None
    ) -> PilotData: ...
    @overload
    def create_pilot(self, **kwargs: Unpack[_StoreKeys]) -> PilotData: ...
    @overload
    def create_pilot_data(
        self, pilot_data_description: PilotDataDescription | dict[str, Any] | None
    ) -> PilotData: ...
    @overload
    def create_pilot_data(self, **kwargs: Unpack[_StoreKeys]) -> PilotData: ...
    def list_pilots(self) -> list[PilotData]: ...
    def get(self, name: str) -> PilotData | None: ...

@final
class PilotData:
    """A pilot store: the seeds' `PilotData`."""

    @property
    def name(self) -> str: ...
    @property
    def url(self) -> str:
        """Never with credentials."""
    @property
    def size(self) -> int | None:
        """Its quota in bytes (`None`: none)."""
    @property
    def used(self) -> int:
        """Bytes its data units hold."""
    @overload
    def submit_data_unit(
        self, data_unit_description: DataUnitDescription | dict[str, Any] | None
    ) -> DataUnit: ...
    @overload
    def submit_data_unit(self, **kwargs: Unpack[_DataUnitKeys]) -> DataUnit: ...

@final
class DataUnit:
    """A data unit: a named, immutable set of files in one or more stores."""

    @property
    def name(self) -> str: ...
    @property
    def state(self) -> Literal["done"]: ...
    def get_state(self) -> Literal["done"]: ...
    def wait(self, timeout: float | None = None) -> Literal["done"]:
        """Returns at once."""
    @property
    def files(self) -> list[_DataFile]: ...
    @property
    def size(self) -> int: ...
    @property
    def stores(self) -> list[str]:
        """The stores (or pilot caches) that hold it."""
    def export(self, dir: _Text) -> int:
        """Copies its files into the local directory `dir`; returns the bytes copied."""
    def replicate(self, store: PilotData) -> int:
        """Copies it into `store` too; returns the bytes moved."""

@final
class ComputeDataService:
    """Runs compute units next to their data: the seeds' `ComputeDataService`."""

    def __new__(cls, session: Session | None = None, prefetch: int | None = None) -> Self: ...
    def add_pilot_compute_service(self, pcs: PilotComputeService) -> None: ...
    def add_pilot_data_service(self, pds: PilotDataService) -> None: ...
    @overload
    def submit_data_unit(
        self, data_unit_description: DataUnitDescription | dict[str, Any] | None
    ) -> DataUnit: ...
    @overload
    def submit_data_unit(self, **kwargs: Unpack[_DataUnitKeys]) -> DataUnit: ...
    @overload
    def submit_compute_unit(
        self, compute_unit_description: ComputeUnitDescription | dict[str, Any] | None
    ) -> ComputeUnit: ...
    @overload
    def submit_compute_unit(self, **kwargs: Unpack[_UnitKeys]) -> ComputeUnit: ...
    def submit_compute_units(
        self, descriptions: Iterable[ComputeUnitDescription | dict[str, Any]]
    ) -> list[ComputeUnit]: ...
    def get_data_unit(self, name: str) -> DataUnit | None: ...
    def wait(self, timeout: float | None = None) -> None: ...
    def cancel(self) -> None: ...
    def get_compute_units(self) -> list[ComputeUnit]: ...
    @property
    def units(self) -> ComputeUnitService:
        """Its compute unit service (for `submit_function`, say)."""
    @property
    def session(self) -> Session: ...
    def add(self, pcs: PilotComputeService) -> None:
        """`add_pilot_compute_service`, the seeds' short name."""

# ---------------------------------------------------------------------------------------
# Internal
# ---------------------------------------------------------------------------------------

@final
class Notifier:
    """The body of the `pstar-notify` thread (internal)."""

    def run(self) -> None: ...
