"""Descriptions: bad input is refused with pstar.DescriptionError naming the key, the
seeds' names read back pstar's values, durations take numbers, texts and timedeltas."""

import datetime

import pytest

import pstar

CUD = pstar.ComputeUnitDescription
PCD = pstar.PilotComputeDescription

WAIT = 60


def refused(fn, key):
    """The DescriptionError `fn()` raises, checked to name `key`."""
    with pytest.raises(pstar.DescriptionError) as e:
        fn()
    assert e.value.key == key, (e.value.key, str(e.value))
    assert "`%s`" % key in str(e.value), str(e.value)
    assert isinstance(e.value, pstar.Error)
    return e.value


# ---------------------------------------------------------------------------------------
# Unknown keys
# ---------------------------------------------------------------------------------------


def test_unknown_key_in_kwargs():
    err = refused(lambda: CUD(executable="/bin/true", core=2), "core")
    assert "did you mean `cores`?" in str(err)


def test_unknown_key_in_a_dict():
    err = refused(lambda: CUD({"executable": "/bin/true", "core": 2}), "core")
    assert "did you mean `cores`?" in str(err)


def test_unknown_attribute_set():
    cud = CUD()

    def set_it():
        cud.core = 2

    err = refused(set_it, "core")
    assert "did you mean `cores`?" in str(err)
    # Reading a key that is not one: AttributeError, as Python's own.
    with pytest.raises(AttributeError, match="core"):
        cud.core


def test_unknown_key_far_from_any_has_no_suggestion():
    err = refused(lambda: CUD(frobnicate=1), "frobnicate")
    assert "did you mean" not in str(err)
    assert "cores" in str(err)  # the keys it has are listed


@pytest.mark.parametrize(
    "typo, near",
    [("exectuable", "executable"), ("argument", "arguments"), ("enviroment", "environment"),
     ("retires", "retries"), ("wallclock", None)],
)
def test_suggestions(typo, near):
    err = refused(lambda: CUD(**{typo: "x"}), typo)
    if near:
        assert "did you mean `%s`?" % near in str(err)


def test_unknown_keys_at_submit(cus):
    refused(lambda: cus.submit(executable="/bin/true", core=2), "core")
    refused(lambda: cus.submit_compute_unit({"executable": "/bin/true", "core": 2}), "core")
    err = refused(
        lambda: cus.submit_compute_units([{"executable": "/bin/true"}, {"exectuable": "x"}]),
        "exectuable",
    )
    assert "unit 1 of the batch" in str(err)
    assert cus.get_compute_units() == []


def test_unknown_keys_of_the_other_descriptions(pcs):
    err = refused(lambda: PCD(core=2), "core")
    assert "did you mean `cores`?" in str(err)
    refused(lambda: pcs.create_pilot(cores=1, wall_time=10), "wall_time")
    err = refused(lambda: pstar.DataUnitDescription(nme="x"), "nme")
    assert "did you mean `name`?" in str(err)
    err = refused(lambda: pstar.PilotDataDescription(ulr="file:///tmp/x"), "ulr")
    assert "did you mean `url`?" in str(err)


def test_description_and_kwargs_together_are_refused(cus):
    with pytest.raises(pstar.DescriptionError, match="not both"):
        cus.submit(CUD(executable="/bin/true"), name="x")


def test_not_a_description():
    with pytest.raises(pstar.DescriptionError, match="dict"):
        CUD(5)
    with pytest.raises(pstar.DescriptionError, match="not a string"):
        CUD({1: 2})


# ---------------------------------------------------------------------------------------
# Wrong types
# ---------------------------------------------------------------------------------------


def test_seed_name_with_a_wrong_type():
    cud = CUD()

    def set_it():
        cud.total_core_count = "four"

    err = refused(set_it, "total_core_count")
    assert "'four'" in str(err) and "whole number" in str(err)
    assert cud.cores == 1  # unchanged


def test_string_where_a_list_is_expected():
    err = refused(lambda: CUD(executable="/bin/echo", arguments="x"), "arguments")
    assert "write ['x']" in str(err)
    refused(lambda: CUD(tags="gpu"), "tags")
    refused(lambda: CUD(after="unit.000001"), "after")
    refused(lambda: CUD(input_data="input"), "input_data")
    refused(lambda: CUD(pre_exec="module load x"), "pre_exec")


def test_bool_where_an_int_is_expected():
    err = refused(lambda: CUD(cores=True), "cores")
    assert "bool" in str(err)
    refused(lambda: CUD(retries=False), "retries")
    refused(lambda: PCD(cores=True), "cores")
    refused(lambda: CUD(timeout=True), "timeout")


def test_int_where_a_bool_is_expected():
    refused(lambda: CUD(shell=1), "shell")


def test_other_wrong_types():
    refused(lambda: CUD(executable=42), "executable")
    refused(lambda: CUD(environment=["A=1"]), "environment")
    refused(lambda: CUD(environment={"A": None}), "environment")
    refused(lambda: CUD(arguments=[None]), "arguments")
    refused(lambda: CUD(retry_on_exit_codes=[0]), "retry_on_exit_codes")
    refused(lambda: CUD(on_dependency_failure="ignore"), "on_dependency_failure")
    refused(lambda: CUD(spmd_variation="openmp"), "spmd_variation")
    refused(lambda: CUD(pilot=3), "pilot")
    refused(lambda: CUD(output_data=[{"files": ["x"]}]), "output_data")
    refused(lambda: PCD(service_url="nope://x"), "service_url")


@pytest.mark.parametrize("cores", [0, -1, -4])
def test_zero_or_negative_cores_at_submit(cus, cores):
    err = refused(lambda: cus.submit(executable="/bin/true", cores=cores), "cores")
    assert str(cores) in str(err)
    refused(lambda: cus.submit({"executable": "/bin/true", "cores": cores}), "cores")
    refused(lambda: cus.submit(CUD(executable="/bin/true", total_core_count=cores)), "total_core_count")
    assert cus.get_compute_units() == []


def test_zero_cores_pilot(pcs):
    refused(lambda: pcs.create_pilot(cores=0), "cores")
    refused(lambda: pcs.create_pilot(number_of_processes=-2), "number_of_processes")


def test_function_not_callable(cus):
    refused(lambda: CUD(function=42), "function")
    refused(lambda: CUD(function="print"), "function")
    with pytest.raises(pstar.DescriptionError, match="not callable"):
        cus.submit_function("print", 1)


def test_function_arguments_of_the_wrong_type():
    refused(lambda: CUD(function=print, args="ab"), "args")
    refused(lambda: CUD(function=print, kwargs=[("a", 1)]), "kwargs")


def test_args_without_a_function(cus):
    refused(lambda: cus.submit(CUD(executable="/bin/true", args=(1,))), "args")


def test_program_keys_refused_on_a_function_unit(cus):
    refused(lambda: cus.submit(CUD(function=print, executable="/bin/true")), "executable")
    refused(lambda: cus.submit(CUD(function=print, arguments=["x"])), "arguments")
    refused(lambda: CUD(function=print, shell=True).validate(), "shell")


def test_empty_executable(cus):
    err = refused(lambda: cus.submit(CUD()), "executable")
    assert "empty" in str(err)
    refused(lambda: CUD().validate(), "executable")
    CUD(executable="/bin/true").validate()


def test_too_many_retries(cus):
    refused(lambda: cus.submit(executable="/bin/true", retries=1000), "retries")


def test_a_call_too_big_to_send(cus):
    big = bytes(65 << 20)
    with pytest.raises(pstar.DescriptionError) as e:
        cus.submit_function(len, big)
    del big
    assert e.value.key == "function", (e.value.key, str(e.value))
    assert "the function and its arguments pickle to" in str(e.value)
    assert cus.get_compute_units() == []


# ---------------------------------------------------------------------------------------
# Reading back
# ---------------------------------------------------------------------------------------


def full_description(**more):
    return CUD(
        name="align",
        executable="/bin/bfast",
        arguments=["match", "-t4", 7],
        environment={"A": "1", "N": 2},
        cores=4,
        stdout="out.txt",
        stderr="err.txt",
        pre_exec=["echo pre"],
        post_exec=["echo post"],
        tags=["big"],
        pilot="pilot.0003",
        timeout="30m",
        time_request=90,
        input_data=["reads"],
        after=["unit.000001"],
        on_dependency_failure="run",
        retries=2,
        retry_on_exit_codes=[3, 4],
        **more
    )


def test_as_dict_round_trip():
    cud = full_description()
    d = cud.as_dict()
    assert d["arguments"] == ["match", "-t4", "7"]
    assert d["environment"] == {"A": "1", "N": "2"}
    assert d["cores"] == 4
    assert d["timeout"] == datetime.timedelta(minutes=30)
    assert d["time_request"] == datetime.timedelta(seconds=90)
    assert d["pilot"] == "pilot.0003"
    assert d["after"] == ["unit.000001"]
    assert d["function"] is None
    again = CUD(d)
    assert again.as_dict() == d
    assert CUD(**d).as_dict() == d
    # Only pstar's names: no seed alias among the keys.
    assert not {"total_core_count", "number_of_processes", "output", "error"} & set(d)


def test_as_dict_round_trip_with_output_data():
    cud = full_description(output_data=[{"name": "aligned", "files": ["*.bam"]}])
    d = cud.as_dict()
    assert d["output_data"][0]["name"] == "aligned"
    assert CUD(d).as_dict() == d


def test_as_dict_round_trip_of_a_function_description():
    cud = CUD(function=divmod, args=(17, 5), kwargs={}, retries=1)
    d = cud.as_dict()
    assert d["function"] is divmod
    again = CUD(d)
    assert again.function is divmod
    assert again.args == (17, 5), "as_dict() lost the function's args: %r" % (d,)


def test_pilot_description_as_dict_round_trip():
    pcd = PCD(service_url="local://", number_of_processes=4, walltime=10, environment={"X": "y"})
    d = pcd.as_dict()
    assert d["resource"] == "local://"
    assert d["cores"] == 4
    assert d["walltime"] == datetime.timedelta(minutes=10)
    assert PCD(d).as_dict() == d


def test_seed_aliases_read_back():
    cud = CUD(output="o.txt", error="e.txt", total_core_count=3)
    assert cud.output == cud.stdout == "o.txt"
    assert cud.error == cud.stderr == "e.txt"
    assert cud.total_core_count == cud.cores == cud.number_of_processes == 3
    cud.stdout = "other.txt"
    assert cud.output == "other.txt"
    cud.number_of_processes = 5
    assert cud.total_core_count == 5
    cud.spmd_variation = "mpi"
    assert cud.mpi is True
    assert cud.spmd_variation == "mpi"

    pcd = PCD()
    pcd.service_url = "local://"
    pcd.number_of_processes = 4
    assert pcd.resource == pcd.service_url == "local://"
    assert pcd.cores == 4
    pcd.allocation = "proj-1"
    assert pcd.project == "proj-1"
    pcd.affinity_machine_label = "node7"
    assert pcd.affinity == {"datacenter": None, "machine": "node7"}

    pdd = pstar.PilotDataDescription(service_url="file:///tmp/x", name="s")
    assert pdd.url == pdd.service_url == "file:///tmp/x"
    dud = pstar.DataUnitDescription(name="d", file_urls=["/tmp/a"])
    assert dud.files == dud.file_urls == ["/tmp/a"]


def test_defaults():
    cud = CUD()
    assert cud.cores == 1
    assert cud.arguments == []
    assert cud.shell is False
    assert cud.timeout is None
    assert cud.retries == 0
    assert cud.function is None
    pcd = PCD()
    assert pcd.cores == 1
    assert pcd.resource.startswith("local:")
    assert isinstance(pcd.walltime, datetime.timedelta)


def test_paths_are_strings(tmp_path):
    cud = CUD(executable=tmp_path / "prog", working_directory=tmp_path)
    assert cud.executable == str(tmp_path / "prog")
    assert cud.working_directory == str(tmp_path)


# ---------------------------------------------------------------------------------------
# Durations
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, seconds",
    [
        (30, 30),
        (2.5, 2.5),
        ("30m", 1800),
        ("1h 30m", 5400),
        ("45s", 45),
        (datetime.timedelta(minutes=2), 120),
        (0, 0),
    ],
)
def test_unit_durations_are_seconds(value, seconds):
    cud = CUD(timeout=value, time_request=value)
    assert cud.timeout == datetime.timedelta(seconds=seconds)
    assert cud.time_request == datetime.timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "value, seconds",
    [
        (10, 600),
        (1.5, 90),
        ("2h", 7200),
        ("90s", 90),
        (datetime.timedelta(hours=1), 3600),
    ],
)
def test_walltime_numbers_are_minutes(value, seconds):
    pcd = PCD(walltime=value)
    assert pcd.walltime == datetime.timedelta(seconds=seconds)
    pcd = PCD()
    pcd.walltime = value
    assert pcd.walltime == datetime.timedelta(seconds=seconds)


@pytest.mark.parametrize("value", ["soon", -1, float("nan"), float("inf"), True, [30]])
def test_bad_durations(value):
    err = refused(lambda: CUD(timeout=value), "timeout")
    assert "duration" in str(err)
    refused(lambda: PCD(walltime=value), "walltime")


def test_no_timeout():
    assert CUD(timeout=None).timeout is None


def test_session_settings():
    with pytest.raises(pstar.Error, match="heartbeat_timeout") as e:
        pstar.Session(heartbeat_timeot=3)
    assert "its keys" in str(e.value)
    with pytest.raises(pstar.Error, match="duration"):
        pstar.Session(heartbeat_timeout="soon")
    with pytest.raises(pstar.Error, match="whole number"):
        pstar.Session(max_attempts="3")


def test_walltime_of_a_created_pilot(pcs):
    pilot = pcs.create_pilot(cores=1, walltime="2m")
    assert pilot.wait(state="running", timeout=WAIT) == "running"
    pilot.cancel()
