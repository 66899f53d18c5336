"""The seeds' Pilot-API listings, running as written with only their import line added.

Each listing is kept as text, verbatim, and run with `exec` after the one added line
`from pstar import *`, against the default session (the services are made without one).
The tests chdir to tmp_path first: the default session's sandbox is ./pstar.sandbox.
"""

import os

import pytest

import pstar

WAIT = 60

IMPORT = "from pstar import *\n"

# Listing 1's text is missing from the seed paper's text: this is a reconstruction in the
# BigJob Pilot-API style, with the seeds' attribute names (service_url,
# number_of_processes, walltime in minutes, create_pilot(pilot_compute_description=...)).
LISTING_1 = """\
pcs = PilotComputeService()
pcd = PilotComputeDescription()
pcd.service_url = "local://"
pcd.number_of_processes = 4
pcd.walltime = 10
pc = pcs.create_pilot(pilot_compute_description=pcd)
"""

# Listing 2, verbatim.
LISTING_2 = """\
cus = ComputeUnitService()
cus.add(pcs)
"""

# Listing 3, verbatim.
LISTING_3 = """\
cud = ComputeUnitDescription()
cud.executable = '/bin/bfast'
cud.arguments = ['match', '-t4', '/data/file1']
cud.total_core_count = 4
cu = cus.submit(cud)
"""


@pytest.fixture
def default_session_here(tmp_path, monkeypatch):
    """Runs the test in tmp_path, with a default session made there, closed at the end
    (so the next test's default session is a new one, in its own tmp_path)."""
    monkeypatch.chdir(tmp_path)
    s = pstar.default_session()
    assert not s.closed
    try:
        yield s
    finally:
        s.close()
        assert s.closed


def run_listings(*listings):
    namespace = {}
    exec(compile(IMPORT + "".join(listings), "<seed listings>", "exec"), namespace)
    return namespace


def test_default_session_sandbox_is_relative_to_cwd(default_session_here, tmp_path):
    assert os.path.realpath(default_session_here.sandbox) == os.path.realpath(
        tmp_path / "pstar.sandbox"
    )
    assert default_session_here.coordination is None


def test_listings_1_2_3_as_written(default_session_here, tmp_path):
    ns = run_listings(LISTING_1, LISTING_2, LISTING_3)
    pc, cu = ns["pc"], ns["cu"]
    assert pc.cores == 4
    assert pc.resource.startswith("local:")
    # Services made without a session use the default one.
    assert ns["pcs"].session.id == default_session_here.id
    assert ns["cus"].session.id == default_session_here.id

    # /bin/bfast does not exist here: the unit fails, saying which executable is missing.
    assert cu.wait(timeout=WAIT) == "failed"
    assert cu.get_state() == "failed"
    assert cu.state == pstar.State.Failed
    assert "/bin/bfast" in (cu.detail or ""), cu.detail
    with pytest.raises(pstar.UnitFailed, match="/bin/bfast"):
        cu.result(timeout=WAIT)
    # The pilot does not fail with its unit.
    assert pc.get_state() in ("pending", "running")
    # Everything is under the test's directory.
    assert os.path.realpath(pc.sandbox).startswith(os.path.realpath(tmp_path))


def test_listing_3_with_an_executable_that_exists(default_session_here, tmp_path):
    ns = run_listings(LISTING_1, LISTING_2, LISTING_3.replace("/bin/bfast", "/bin/echo"))
    cu = ns["cu"]
    assert cu.wait(timeout=WAIT) == "done"
    assert cu.get_state() == "done"
    assert cu.exit_code == 0
    assert cu.result(timeout=WAIT) == 0
    with open(cu.stdout) as f:
        assert f.read() == "match -t4 /data/file1\n"
    assert os.path.realpath(cu.stdout).startswith(os.path.realpath(tmp_path / "pstar.sandbox"))
    # The seeds' alias reads back pstar's value.
    assert ns["cud"].total_core_count == 4 and ns["cud"].cores == 4


def test_data_listing(default_session_here, tmp_path):
    """Pilot-Data in the seeds' spirit: a store, a data unit, a compute unit reading it."""
    (tmp_path / "input").mkdir()
    (tmp_path / "input" / "a.txt").write_text("hello from a data unit\n")
    store = tmp_path / "store"
    listing = """\
pcs = PilotComputeService()
pcd = PilotComputeDescription()
pcd.service_url = "local://"
pcd.number_of_processes = 2
pcd.walltime = 10
pc = pcs.create_pilot(pilot_compute_description=pcd)

pds = PilotDataService()
pdd = PilotDataDescription(name="store", service_url="file://%(store)s")
pd = pds.create_pilot(pilot_data_description=pdd)

cds = ComputeDataService()
cds.add_pilot_compute_service(pcs)
cds.add_pilot_data_service(pds)

du = cds.submit_data_unit(DataUnitDescription(name="input", file_urls=["%(file)s"]))

cud = ComputeUnitDescription()
cud.executable = "cat $PSTAR_DATA/input/a.txt"
cud.shell = True
cud.input_data = [du]
cu = cds.submit_compute_unit(cud)
""" % {"store": store, "file": tmp_path / "input" / "a.txt"}
    ns = run_listings(listing)
    du, cu, pd = ns["du"], ns["cu"], ns["pd"]
    assert du.name == "input"
    assert du.get_state() == "done"
    assert [f["path"] for f in du.files] == ["a.txt"]
    assert du.size == len("hello from a data unit\n")
    assert du.stores == ["store"]
    assert pd.url == "file://%s" % store
    assert cu.wait(timeout=WAIT) == "done", cu.detail
    with open(cu.stdout) as f:
        assert f.read() == "hello from a data unit\n"
    assert [u.id for u in ns["cds"].get_compute_units()] == [cu.id]
    assert ns["cds"].get_data_unit("input").name == "input"


def test_pilot_data_description_needs_a_name(default_session_here, tmp_path):
    """The seeds' PilotDataDescription has only a service_url; pstar's stores need a
    name. Refused when the store is created, saying so."""
    pds = pstar.PilotDataService()
    pdd = pstar.PilotDataDescription(service_url="file://%s" % (tmp_path / "store"))
    with pytest.raises(pstar.Error, match="name"):
        pds.create_pilot(pdd)
