"""What a submission checks against its session, found by trying pstar as a new user
would: dependencies and pilots that do not exist, handles of another session, data units
named twice; and how states and exits from functions come back."""

import pytest

import pstar

WAIT = 60


def test_after_a_unit_the_session_does_not_have_is_refused(cus):
    with pytest.raises(pstar.DescriptionError) as e:
        cus.submit(executable="/bin/true", after=["unit.009999"])
    assert e.value.key == "after"
    assert "unit.009999" in str(e.value)
    assert "does not have" in str(e.value)
    assert cus.units == []


def test_after_a_unit_of_another_session_is_refused(cus, tmp_path):
    with pstar.Session(sandbox=str(tmp_path / "other")) as other:
        theirs = pstar.ComputeUnitService(other).submit(executable="/bin/true")
        mine = cus.submit(executable="/bin/true")
        assert theirs.id == mine.id or True  # ids start over in every session
        with pytest.raises(pstar.DescriptionError) as e:
            cus.submit(executable="/bin/true", after=[theirs])
        assert e.value.key == "after"
        assert "session" in str(e.value)


def test_after_a_known_unit_runs_after_it(cus):
    first = cus.submit(executable="/bin/sleep", arguments=["0.3"])
    second = cus.submit(executable="/bin/true", after=[first.id])
    assert second.wait(timeout=WAIT) == "done"
    started = dict(second.history)["running"]
    assert started >= dict(first.history)["done"]


def test_a_pilot_the_session_does_not_have_is_refused(cus, pilot):
    with pytest.raises(pstar.DescriptionError) as e:
        cus.submit(executable="/bin/true", pilot="pilot.0042")
    assert e.value.key == "pilot"
    assert "no such pilot" in str(e.value)
    assert pilot.id in str(e.value)


def test_a_pilot_by_name(session, pcs, cus):
    named = pcs.create_pilot(name="big", cores=1, walltime=10)
    cu = cus.submit(executable="/bin/true", pilot="big")
    assert cu.wait(timeout=WAIT) == "done"
    assert cu.pilot == named.id
    with pytest.raises(pstar.DescriptionError) as e:
        cus.submit(executable="/bin/true", pilot="small")
    assert "no pilot of this session has that id or name" in str(e.value)


def test_a_data_unit_name_is_placed_once(session, pcs, tmp_path):
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "b.txt").write_text("b")
    pds = pstar.PilotDataService(session)
    pds.create_pilot(name="store", url="file://" + str(tmp_path / "store"))
    cds = pstar.ComputeDataService(session)
    cds.add_pilot_data_service(pds)
    first = cds.submit_data_unit(name="reads", files=[str(tmp_path / "a.txt")])
    with pytest.raises(pstar.Error) as e:
        cds.submit_data_unit(name="reads", files=[str(tmp_path / "b.txt")])
    assert "already" in str(e.value)
    again = cds.get_data_unit("reads")
    assert [f["path"] for f in again.files] == [f["path"] for f in first.files] == ["a.txt"]


def test_get_state_equals_the_seeds_capitalised_states(cus):
    cu = cus.submit(executable="/bin/true")
    cu.wait(timeout=WAIT)
    assert cu.get_state() == "Done"
    assert cu.get_state() == "done"
    assert cu.get_state() != "Failed"
    assert cu.state == "done"
    assert cu.get_state() in ("Running", "Done")


def test_system_exit_in_a_function_does_not_end_the_program(cus):
    import sys

    cu = cus.submit_function(sys.exit, 3)
    with pytest.raises(pstar.FunctionError) as e:
        cu.result(timeout=WAIT)
    assert "SystemExit" in str(e.value)
    assert "would end this program" in str(e.value)


def test_a_worker_that_exits_says_how(cus):
    import os

    cu = cus.submit_function(os._exit, 7)
    with pytest.raises(pstar.UnitFailed):
        cu.result(timeout=WAIT)
    assert "exited with code 7" in cu.detail, cu.detail
    # The pilot goes on with a new worker.
    assert cus.submit_function(abs, -2).result(timeout=WAIT) == 2


def test_waiting_without_pilots_says_so(session):
    cus = pstar.ComputeUnitService(session)
    cus.submit(executable="/bin/true")
    with pytest.raises(TimeoutError) as e:
        cus.wait(timeout=0.3)
    assert "no pilots" in str(e.value)


def test_cpus_suggests_cores():
    with pytest.raises(pstar.DescriptionError) as e:
        pstar.ComputeUnitDescription(cpus=2)
    assert "did you mean `cores`" in str(e.value)


def test_a_cluster_pilot_on_the_embedded_store_names_the_python_remedy(pcs):
    with pytest.raises(pstar.Error) as e:
        pcs.create_pilot(resource="slurm://", cores=1, walltime=10)
    assert "pstar.Session(coordination=" in str(e.value)
