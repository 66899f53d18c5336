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
        # Ids start over in every session: this one has a unit of the same id.
        theirs = pstar.ComputeUnitService(other).submit(executable="/bin/true")
        mine = cus.submit(executable="/bin/true")
        assert theirs.id == mine.id
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


# ---------------------------------------------------------------------------------------
# Found by trying to break it
# ---------------------------------------------------------------------------------------


def _forks():
    import os

    os.fork()  # the child is not exec'd: it returns here too
    return "forked"


def test_a_function_that_forks_does_not_shift_later_answers(session, pcs):
    pcs.create_pilot(cores=1, walltime=10)
    cus = pstar.ComputeUnitService(session)
    cus.add(pcs)
    assert cus.submit_function(_forks).result(timeout=WAIT) == "forked"
    for i in range(2, 7):
        assert cus.submit_function(pow, i, 2).result(timeout=WAIT) == i * i


def _environment():
    import os

    return {k: v for k, v in os.environ.items() if "REDIS" in k}


def test_workers_do_not_see_the_store_s_password(session, pcs, monkeypatch):
    monkeypatch.setenv("PSTAR_REDIS_PASSWORD", "s3cr3t")
    pcs.create_pilot(cores=1, walltime=10)
    cus = pstar.ComputeUnitService(session)
    cus.add(pcs)
    assert cus.submit_function(_environment).result(timeout=WAIT) == {}


def _chdir_and_close():
    import os

    os.chdir("/")
    os.close(1)
    os.close(2)
    return os.getpid()


def _where():
    import os

    print("still prints")
    return os.getcwd(), os.getpid()


def test_a_call_that_changes_its_worker_does_not_change_the_next(session, pcs, pilot):
    cus = pstar.ComputeUnitService(session)
    cus.add(pcs)
    unit = cus.submit(pstar.ComputeUnitDescription(function=_chdir_and_close, pilot=pilot))
    spoiled = unit.result(timeout=WAIT)
    for _ in range(3):
        cwd, pid = cus.submit(pstar.ComputeUnitDescription(function=_where, pilot=pilot)).result(
            timeout=WAIT
        )
        assert cwd == pilot.sandbox
        assert pid != spoiled  # the worker whose streams were closed was not reused


def test_a_future_canceled_by_its_owner_counts_as_done(cus):
    import concurrent.futures as cf
    import time as _time

    futures = [cus.submit_function(_time.sleep, 0.2).future() for _ in range(3)]
    assert futures[2].cancel()
    done = list(cf.as_completed(futures, timeout=WAIT))
    assert len(done) == 3
    assert futures[2].cancelled()


def test_stdout_a_fifo_nobody_reads_fails_the_unit(cus, tmp_path):
    import os

    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    cu = cus.submit(executable="/bin/echo", arguments=["x"], stdout=str(fifo))
    assert cu.wait(timeout=WAIT) == "failed"
    assert "out.fifo" in cu.detail, cu.detail


def test_an_embedded_session_id_is_used_once(tmp_path):
    with pstar.Session(id="same", sandbox=str(tmp_path)) as first:
        pstar.PilotComputeService(first).create_pilot(cores=1, walltime=10)
        with pytest.raises(pstar.Error, match="exists already"):
            pstar.Session(id="same", sandbox=str(tmp_path))


def test_bad_input_found_when_given():
    class Loud(str):
        def __str__(self):
            return "not-the-value"

    assert pstar.ComputeUnitDescription(executable=Loud("/bin/true")).executable == "/bin/true"
    with pytest.raises(pstar.DescriptionError) as e:
        pstar.ComputeUnitDescription(executable="/bin/\udc80")
    assert e.value.key == "executable"
    with pytest.raises(pstar.DescriptionError) as e:
        pstar.ComputeUnitDescription(function=abs, kwargs={1: 2})
    assert e.value.key == "kwargs"
    with pytest.raises(pstar.Error):
        pstar.Session(sandbox="")


def test_a_callback_that_cannot_be_called_is_refused_at_once(cus):
    cu = cus.submit(executable="/bin/true")
    with pytest.raises(TypeError):
        cu.on_state_change(5)
