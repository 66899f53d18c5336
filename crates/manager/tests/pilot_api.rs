//! End-to-end runs of real processes through the Pilot-API, on local pilots with the
//! embedded coordination store.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pstar::{
    AgentConfig, ComputeUnit, ComputeUnitDescription, ComputeUnitService, PilotComputeDescription,
    PilotComputeService, PilotState, Session, State, Timestamp, UnitState,
};

/// Generous bound for anything that should take well under a second.
const DEADLINE: Duration = Duration::from_secs(30);

struct Fixture {
    _dir: tempfile::TempDir,
    session: Session,
    pcs: PilotComputeService,
    cus: ComputeUnitService,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = AgentConfig {
        kill_grace: Duration::from_millis(500),
        ..AgentConfig::default()
    };
    let session = Session::builder()
        .sandbox_root(dir.path())
        .agent_config(config)
        .build()
        .await
        .unwrap();
    let pcs = PilotComputeService::new(&session);
    let cus = ComputeUnitService::new(&session);
    cus.add_pilot_service(&pcs);
    Fixture {
        _dir: dir,
        session,
        pcs,
        cus,
    }
}

fn pilot(cores: u32) -> PilotComputeDescription {
    PilotComputeDescription {
        cores,
        ..Default::default()
    }
}

fn sh(script: &str) -> ComputeUnitDescription {
    ComputeUnitDescription::new("/bin/sh").with_arguments(["-c", script])
}

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(DEADLINE, f).await.expect("timed out")
}

/// Polls `cond` until it holds or the deadline passes.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A running one-core pilot of `f.pcs` and `n` units of `script`, one of them running on it.
async fn busy_pilot(
    f: &Fixture,
    n: usize,
    script: &str,
) -> (pstar::PilotCompute, Vec<ComputeUnit>) {
    let a = f.pcs.create_pilot(pilot(1)).await.unwrap();
    assert_eq!(
        within(a.wait_for(PilotState::Running)).await,
        PilotState::Running
    );
    let units = f
        .cus
        .submit_batch((0..n).map(|_| sh(script)))
        .await
        .unwrap();
    eventually("a unit running on the first pilot", || {
        units.iter().any(|u| u.state() == UnitState::Running)
    })
    .await;
    (a, units)
}

fn read(path: Option<std::path::PathBuf>) -> String {
    std::fs::read_to_string(path.expect("unit has a sandbox")).unwrap()
}

/// `(start, end)` of each stay of the unit in `Running`.
fn running_spans(unit: &ComputeUnit) -> Vec<(Timestamp, Timestamp)> {
    let h = unit.history();
    h.windows(2)
        .filter(|w| w[0].0 == UnitState::Running)
        .map(|w| (w[0].1, w[1].1))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ensemble_runs_to_the_end_with_its_output_in_each_sandbox() {
    let f = fixture().await;
    f.pcs.create_pilot(pilot(2)).await.unwrap();
    let units = f
        .cus
        .submit_batch((0..20).map(|i| {
            ComputeUnitDescription::new("/bin/echo").with_arguments(["member", &i.to_string()])
        }))
        .await
        .unwrap();
    within(f.cus.wait()).await;
    for (i, u) in units.iter().enumerate() {
        assert_eq!(u.state(), UnitState::Done, "{u:?}: {:?}", u.detail());
        assert_eq!(u.exit_code(), Some(0));
        assert_eq!(read(u.stdout()), format!("member {i}\n"));
        assert!(u.stdout().unwrap().starts_with(f.session.sandbox_root()));
        // Every transition is timestamped, in order.
        let h = u.history();
        let states: Vec<UnitState> = h.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            states,
            [
                UnitState::New,
                UnitState::Scheduled,
                UnitState::Pending,
                UnitState::Running,
                UnitState::Done
            ]
        );
        assert!(h.windows(2).all(|w| w[0].1 <= w[1].1));
    }
    assert_eq!(f.cus.counts().get(UnitState::Done), 20);
    f.pcs.cancel().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_never_pass_through_a_shell_and_the_environment_is_layered() {
    let f = fixture().await;
    let mut p = pilot(1);
    p.environment.insert("FROM_PILOT".into(), "p".into());
    p.environment.insert("OVERRIDDEN".into(), "pilot".into());
    f.pcs.create_pilot(p).await.unwrap();
    let literal = "$(touch injected); * `id` ; 'quoted'";
    let echo = f
        .cus
        .submit(ComputeUnitDescription::new("/bin/echo").with_arguments([literal]))
        .await
        .unwrap();
    let mut env = ComputeUnitDescription::new("/usr/bin/env");
    env.environment.insert("OVERRIDDEN".into(), "unit".into());
    env.pre_exec = vec!["export FROM_PRE_EXEC=yes".into()];
    let env = f.cus.submit(env).await.unwrap();
    within(f.cus.wait()).await;

    assert_eq!(read(echo.stdout()), format!("{literal}\n"));
    assert!(!echo.sandbox().unwrap().join("injected").exists());
    let out = read(env.stdout());
    for line in [
        "FROM_PILOT=p",
        "OVERRIDDEN=unit",
        "FROM_PRE_EXEC=yes",
        "PSTAR_CORES=1",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "{line} missing from:\n{out}"
        );
    }
    assert!(
        out.lines()
            .any(|l| l == format!("PSTAR_UNIT_ID={}", env.id()))
    );
    f.pcs.cancel().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_unit_and_a_missing_executable_fail_alone() {
    let f = fixture().await;
    f.pcs.create_pilot(pilot(2)).await.unwrap();
    let ok = f
        .cus
        .submit_batch((0..4).map(|_| ComputeUnitDescription::new("/bin/true")))
        .await
        .unwrap();
    let failing = f.cus.submit(sh("echo oops >&2; exit 3")).await.unwrap();
    let missing = f
        .cus
        .submit(ComputeUnitDescription::new("/no/such/program"))
        .await
        .unwrap();
    within(f.cus.wait()).await;

    assert!(ok.iter().all(|u| u.state() == UnitState::Done));
    assert_eq!(failing.state(), UnitState::Failed);
    assert_eq!(failing.exit_code(), Some(3));
    assert!(failing.detail().unwrap().contains("exit code 3"));
    assert_eq!(read(failing.stderr()), "oops\n");

    assert_eq!(missing.state(), UnitState::Failed);
    assert_eq!(missing.exit_code(), None);
    assert_eq!(
        missing.detail().unwrap(),
        "executable not found: /no/such/program"
    );
    assert!(read(missing.stderr()).contains("/no/such/program"));
    f.pcs.cancel().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_core_unit_gets_its_cores_despite_a_stream_of_small_units() {
    let f = fixture().await;
    f.pcs.create_pilot(pilot(2)).await.unwrap();
    let mut first = Vec::new();
    for _ in 0..3 {
        first.push(sh("sleep 0.2"));
    }
    let small = f.cus.submit_batch(first).await.unwrap();
    let wide = f.cus.submit(sh("sleep 0.2").with_cores(2)).await.unwrap();
    let later = f
        .cus
        .submit_batch((0..6).map(|_| sh("sleep 0.1")))
        .await
        .unwrap();
    within(f.cus.wait()).await;

    let all: Vec<&ComputeUnit> = small.iter().chain(&later).collect();
    assert!(all.iter().all(|u| u.state() == UnitState::Done));
    assert_eq!(wide.state(), UnitState::Done);
    let (ws, we) = running_spans(&wide)[0];
    for u in &all {
        for (s, e) in running_spans(u) {
            assert!(
                e <= ws || s >= we,
                "{} ran alongside the 2-core unit",
                u.id()
            );
        }
    }
    // No unit submitted after it started before it.
    for u in &later {
        assert!(
            running_spans(u)[0].0 >= ws,
            "{} overtook the 2-core unit",
            u.id()
        );
    }
    f.pcs.cancel().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_no_pilot_can_fit_fails_at_once_with_the_reason() {
    let f = fixture().await;
    f.pcs.create_pilot(pilot(2)).await.unwrap();
    // The pilot is busy with long units: the big one must still fail at once.
    let busy = f
        .cus
        .submit_batch((0..2).map(|_| sh("sleep 30")))
        .await
        .unwrap();
    let big = f
        .cus
        .submit(ComputeUnitDescription::new("/bin/true").with_cores(4))
        .await
        .unwrap();
    assert_eq!(within(big.wait()).await, UnitState::Failed);
    assert_eq!(
        big.detail().unwrap(),
        "unit needs 4 cores but the largest pilot has 2 cores"
    );
    assert!(busy.iter().all(|u| !u.state().is_final()));
    f.cus.cancel();
    within(f.cus.wait()).await;
    assert!(busy.iter().all(|u| u.state() == UnitState::Canceled));
    f.pcs.cancel().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_wait_in_the_pool_until_a_pilot_comes() {
    let f = fixture().await;
    let units = f
        .cus
        .submit_batch((0..3).map(|_| ComputeUnitDescription::new("/bin/true")))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(units.iter().all(|u| u.state() == UnitState::New));
    f.pcs.create_pilot(pilot(1)).await.unwrap();
    within(f.cus.wait()).await;
    assert!(units.iter().all(|u| u.state() == UnitState::Done));
    f.pcs.cancel().await;
}

fn pid_alive(pid: i32) -> bool {
    // A zombie waiting for its (re-)parent to reap it is dead for our purpose.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canceling_a_running_unit_kills_its_whole_process_tree() {
    let f = fixture().await;
    f.pcs.create_pilot(pilot(1)).await.unwrap();
    let unit = f
        .cus
        .submit(sh("sleep 300 & echo $! > child.pid; wait"))
        .await
        .unwrap();
    assert_eq!(
        within(unit.wait_for(UnitState::Running)).await,
        UnitState::Running
    );
    let pid_file = unit.sandbox().unwrap().join("child.pid");
    eventually("the child's pid", || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n'))
    })
    .await;
    let child: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pid_alive(child));

    unit.cancel();
    assert_eq!(within(unit.wait()).await, UnitState::Canceled);
    eventually("the grandchild to die", || !pid_alive(child)).await;
    f.pcs.cancel().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pilot_canceled_mid_run_returns_its_units_to_finish_on_another() {
    let f = fixture().await;
    let (a, units) = busy_pilot(&f, 4, "sleep 0.5").await;
    let was_running: Vec<ComputeUnit> = units
        .iter()
        .filter(|u| u.state() == UnitState::Running)
        .cloned()
        .collect();

    let b = f.pcs.create_pilot(pilot(2)).await.unwrap();
    within(a.cancel()).await;
    assert_eq!(a.state(), PilotState::Canceled);
    within(f.cus.wait()).await;

    assert!(
        units.iter().all(|u| u.state() == UnitState::Done),
        "{units:?}"
    );
    for u in &was_running {
        assert_eq!(
            u.pilot(),
            Some(b.id()),
            "{} should have finished on the second pilot",
            u.id()
        );
        let states: Vec<UnitState> = u.history().iter().map(|(s, _)| *s).collect();
        let back = states
            .windows(2)
            .any(|w| w == [UnitState::Running, UnitState::New]);
        assert!(back, "{} did not go back to the pool: {states:?}", u.id());
    }
    f.pcs.cancel().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_its_walltime_a_pilot_stops_and_its_units_run_elsewhere() {
    let f = fixture().await;
    let short = PilotComputeDescription {
        walltime: Duration::from_secs(2),
        ..pilot(1)
    };
    let a = f.pcs.create_pilot(short).await.unwrap();
    let unit = f.cus.submit(sh("sleep 3")).await.unwrap();
    assert_eq!(
        within(unit.wait_for(UnitState::Running)).await,
        UnitState::Running
    );
    // A unit submitted now arrives after the drain point: pilot `a` must not take it.
    let b = f
        .pcs
        .create_pilot(PilotComputeDescription {
            environment: Default::default(),
            ..pilot(1)
        })
        .await
        .unwrap();
    assert_eq!(within(a.wait()).await, PilotState::Done);
    assert_eq!(a.detail().as_deref(), Some("pilot reached its walltime"));
    assert_eq!(within(unit.wait()).await, UnitState::Done);
    assert_eq!(unit.pilot(), Some(b.id()));
    let returned = unit
        .history()
        .iter()
        .filter(|(s, _)| *s == UnitState::New)
        .count();
    assert_eq!(
        returned, 2,
        "entered the pool at submission and once more at the walltime"
    );
    f.pcs.cancel().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_binding_runs_a_unit_on_the_pilot_it_names() {
    let f = fixture().await;
    let _big = f.pcs.create_pilot(pilot(4)).await.unwrap();
    let small = f.pcs.create_pilot(pilot(1)).await.unwrap();
    let units = f
        .cus
        .submit_batch(
            (0..3).map(|_| ComputeUnitDescription::new("/bin/true").with_pilot(small.id())),
        )
        .await
        .unwrap();
    let too_big = f
        .cus
        .submit(
            ComputeUnitDescription::new("/bin/true")
                .with_pilot(small.id())
                .with_cores(2),
        )
        .await
        .unwrap();
    within(f.cus.wait()).await;
    assert!(
        units
            .iter()
            .all(|u| u.state() == UnitState::Done && u.pilot() == Some(small.id()))
    );
    assert_eq!(too_big.state(), UnitState::Failed);
    assert!(
        too_big
            .detail()
            .unwrap()
            .contains("its pilot pilot.0001 has 1 core"),
        "{:?}",
        too_big.detail()
    );
    f.pcs.cancel().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_units_get_their_own_devices_and_callbacks_see_every_change() {
    let f = fixture().await;
    f.pcs
        .create_pilot(PilotComputeDescription {
            gpus: 2,
            ..pilot(2)
        })
        .await
        .unwrap();
    let mut d = ComputeUnitDescription::new("/bin/sh")
        .with_arguments(["-c", "echo $CUDA_VISIBLE_DEVICES; sleep 0.3"]);
    d.gpus = 1;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let units = f.cus.submit_batch([d.clone(), d]).await.unwrap();
    let log = seen.clone();
    units[0].on_state_change(move |u, s| log.lock().unwrap().push((u.id(), s)));
    within(f.cus.wait()).await;
    let mut devices: Vec<String> = units
        .iter()
        .map(|u| read(u.stdout()).trim().to_owned())
        .collect();
    devices.sort();
    assert_eq!(devices, ["0", "1"]);
    let seen = seen.lock().unwrap().clone();
    let states: Vec<UnitState> = seen.iter().map(|(_, s)| *s).collect();
    assert_eq!(
        states,
        [
            UnitState::Scheduled,
            UnitState::Pending,
            UnitState::Running,
            UnitState::Done
        ]
    );
    assert!(seen.iter().all(|(id, _)| *id == units[0].id()));
    f.pcs.cancel().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_resources_and_impossible_descriptions_are_refused() {
    let f = fixture().await;
    let slurm = PilotComputeDescription {
        resource: "slurm://".parse().unwrap(),
        ..pilot(1)
    };
    let err = f.pcs.create_pilot(slurm).await.unwrap_err().to_string();
    assert!(
        err.contains("`slurm://` pilots need a coordination store their agents can reach"),
        "{err}"
    );
    let err = f.pcs.create_pilot(pilot(0)).await.unwrap_err().to_string();
    assert!(err.contains("`cores` must be at least 1"), "{err}");
    let err = f
        .cus
        .submit(ComputeUnitDescription::new(""))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("`executable` is empty"), "{err}");
    assert!(f.pcs.pilots().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pilot_whose_sandbox_cannot_be_made_fails_and_its_units_wait_for_another() {
    let f = fixture().await;
    let bad = PilotComputeDescription {
        working_directory: Some("/proc/no-such-place".into()),
        ..pilot(1)
    };
    let a = f.pcs.create_pilot(bad).await.unwrap();
    assert_eq!(within(a.wait()).await, PilotState::Failed);
    assert!(
        a.detail().unwrap().contains("cannot create pilot sandbox"),
        "{:?}",
        a.detail()
    );
    let unit = f
        .cus
        .submit(ComputeUnitDescription::new("/bin/true"))
        .await
        .unwrap();
    f.pcs.create_pilot(pilot(1)).await.unwrap();
    assert_eq!(within(unit.wait()).await, UnitState::Done);
    assert!(Path::new(&unit.stdout().unwrap()).exists());
    f.pcs.cancel().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_pilot_service_gets_no_more_units_and_its_queue_goes_back_to_the_pool() {
    let f = fixture().await;
    let other = PilotComputeService::new(&f.session);
    let (a, units) = busy_pilot(&f, 6, "sleep 0.2").await;

    f.cus.remove_pilot_service(&f.pcs).await;
    let removed_at = Timestamp::now();
    let b = other.create_pilot(pilot(2)).await.unwrap();
    f.cus.add_pilot_service(&other);
    within(f.cus.wait()).await;

    assert!(
        units.iter().all(|u| u.state() == UnitState::Done),
        "{units:?}"
    );
    for u in &units {
        let bound_late = u
            .history()
            .iter()
            .any(|(s, t)| *s == UnitState::Scheduled && *t > removed_at);
        if bound_late {
            assert_eq!(
                u.pilot(),
                Some(b.id()),
                "{} was bound to the removed pilot",
                u.id()
            );
        }
    }
    // The pilot itself is not canceled by leaving the service.
    assert_eq!(a.state(), PilotState::Running);
    f.pcs.cancel().await;
    other.cancel().await;
}

/// M:N: two unit services share one pilot service. The session's one core accounts for
/// what both bind to a pilot, so a 2-core pilot without prefetch never holds more than 2
/// cores' worth of units at once (each service counting its own would bind 2 each).
#[tokio::test]
async fn two_unit_services_share_a_pilot_without_over_binding_it() {
    let f = fixture().await;
    let a = ComputeUnitService::with_prefetch(&f.session, 0);
    let b = ComputeUnitService::with_prefetch(&f.session, 0);
    a.add_pilot_service(&f.pcs);
    b.add_pilot_service(&f.pcs);
    f.pcs.create_pilot(pilot(2)).await.unwrap();
    // Units between `Scheduled` and their end, over both services, at every change.
    let bound = Arc::new(Mutex::new((0usize, 0usize)));
    let mut all = Vec::new();
    for cus in [&a, &b] {
        let units = cus
            .submit_batch((0..4).map(|_| sh("sleep 0.2")))
            .await
            .unwrap();
        for unit in &units {
            let bound = bound.clone();
            unit.on_state_change(move |_, state| {
                let mut b = bound.lock().unwrap();
                match state {
                    UnitState::Scheduled => b.0 += 1,
                    s if s.is_final() || s == UnitState::New => b.0 -= 1,
                    _ => {}
                }
                b.1 = b.1.max(b.0);
            });
        }
        all.extend(units);
    }
    within(async {
        a.wait().await;
        b.wait().await;
    })
    .await;
    assert!(all.iter().all(|u| u.state() == UnitState::Done));
    let most = bound.lock().unwrap().1;
    assert!(
        most <= 2,
        "{most} units were bound to a 2-core pilot at once"
    );
    assert_eq!(a.counts().get(UnitState::Done), 4);
    assert_eq!(b.counts().get(UnitState::Done), 4);
    f.pcs.cancel().await;
}

/// Walltime-aware binding through the API: a unit whose `time_request` exceeds every
/// pilot's walltime fails at once, naming both; one that fits runs.
#[tokio::test]
async fn a_unit_longer_than_every_pilot_s_walltime_fails_at_once_naming_both() {
    let f = fixture().await;
    f.pcs
        .create_pilot(PilotComputeDescription {
            walltime: Duration::from_secs(600),
            ..pilot(1)
        })
        .await
        .unwrap();
    let long = f
        .cus
        .submit(
            ComputeUnitDescription::new("/bin/true").with_time_request(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let short = f
        .cus
        .submit(ComputeUnitDescription::new("/bin/true").with_time_request(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(within(long.wait()).await, UnitState::Failed);
    assert_eq!(
        long.detail().as_deref(),
        Some("unit asks for 1h of run time (time_request) but the longest pilot walltime is 10m")
    );
    assert_eq!(within(short.wait()).await, UnitState::Done);
    f.pcs.cancel().await;
}

/// Work stealing: a 1-core pilot up first takes a small workload (prefetch, and its agent
/// claims ahead); a 4-core pilot that comes up next gets the units still waiting there
/// instead of idling.
#[tokio::test]
async fn a_pilot_that_comes_up_later_takes_units_waiting_on_a_busy_one() {
    let f = fixture().await;
    let small = f.pcs.create_pilot(pilot(1)).await.unwrap();
    within(small.wait_for(PilotState::Running)).await;
    let units = f
        .cus
        .submit_batch((0..12).map(|_| sh("sleep 0.3")))
        .await
        .unwrap();
    // The small pilot holds them all before the big one exists.
    within(async {
        while units
            .iter()
            .filter(|u| u.state() == UnitState::Pending)
            .count()
            < 11
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let big = f.pcs.create_pilot(pilot(4)).await.unwrap();
    within(f.cus.wait()).await;
    assert!(units.iter().all(|u| u.state() == UnitState::Done));
    let on_big = units.iter().filter(|u| u.pilot() == Some(big.id())).count();
    // Without stealing the big pilot would get none: all 12 were bound to the small one.
    assert!(
        on_big >= 4,
        "only {on_big} of 12 units ran on the 4-core pilot"
    );
    f.pcs.cancel().await;
}

/// Settings no agent or manager can work with are refused when the session is built,
/// naming the setting, its range and where it was set; a drain margin that is not
/// shorter than a pilot's walltime is refused by `create_pilot`, before anything is
/// submitted.
#[tokio::test]
async fn settings_out_of_range_and_a_drain_margin_as_long_as_the_walltime_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let refused = Session::builder()
        .sandbox_root(dir.path())
        .heartbeat_timeout(Duration::ZERO)
        .build()
        .await
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        refused.as_deref(),
        Some("`heartbeat_timeout` must be from 100ms to 1day, not 0s (set by the program)")
    );
    let spinning = AgentConfig {
        claim_wait: Duration::ZERO,
        ..AgentConfig::default()
    };
    let refused = Session::builder()
        .sandbox_root(dir.path())
        .agent_config(spinning)
        .build()
        .await
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        refused.as_deref(),
        Some("`claim_wait` must be from 1ms to 1m, not 0s (set by the program)")
    );

    let hour = Duration::from_secs(3600);
    let session = Session::builder()
        .sandbox_root(dir.path())
        .agent_config(AgentConfig {
            drain_margin: Some(hour),
            ..AgentConfig::default()
        })
        .build()
        .await
        .unwrap();
    let pcs = PilotComputeService::new(&session);
    let refused = pcs
        .create_pilot(PilotComputeDescription {
            name: Some("short".into()),
            walltime: hour,
            ..Default::default()
        })
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        refused
            .starts_with("`drain_margin` 1h is not shorter than the walltime 1h of pilot `short`"),
        "{refused}"
    );
    assert!(pcs.pilots().is_empty());
    let long = within(pcs.create_pilot(PilotComputeDescription {
        walltime: 2 * hour,
        ..Default::default()
    }))
    .await
    .unwrap();
    assert_eq!(
        within(long.wait_for(PilotState::Running)).await,
        PilotState::Running
    );
    pcs.cancel().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_past_its_timeout_fails_and_its_process_tree_is_killed() {
    let f = fixture().await;
    f.pcs.create_pilot(pilot(1)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let child = dir.path().join("child");
    let mut d = sh(&format!("sleep 30 & echo $! > {}; wait", child.display()));
    d.timeout = Some(Duration::from_secs(1));
    let unit = f.cus.submit(d).await.unwrap();
    assert_eq!(within(unit.wait()).await, UnitState::Failed);
    assert_eq!(unit.detail().as_deref(), Some("timeout after 1s"));
    let pid: i32 = std::fs::read_to_string(&child)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the unit's child {pid} still runs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A unit that ends in time is not touched.
    let mut quick = sh("true");
    quick.timeout = Some(Duration::from_secs(30));
    let quick = f.cus.submit(quick).await.unwrap();
    assert_eq!(within(quick.wait()).await, UnitState::Done);
    f.pcs.cancel().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_exec_lines_run_after_the_executable_and_keep_its_exit_code() {
    let f = fixture().await;
    f.pcs.create_pilot(pilot(2)).await.unwrap();
    let mut ok = ComputeUnitDescription::new("/bin/echo").with_arguments(["main", "$HOME"]);
    ok.post_exec = vec!["echo post".into()];
    let mut failing = sh("echo main; exit 3");
    failing.post_exec = vec!["echo post".into()];
    let mut post_fails = ComputeUnitDescription::new("/bin/true");
    post_fails.post_exec = vec!["false".into(), "echo never".into()];
    let units = f.cus.submit_batch([ok, failing, post_fails]).await.unwrap();
    for u in &units {
        within(u.wait()).await;
    }
    let out = |u: &ComputeUnit| std::fs::read_to_string(u.stdout().unwrap()).unwrap();
    assert_eq!(units[0].state(), UnitState::Done);
    assert_eq!(
        out(&units[0]),
        "main $HOME\npost\n",
        "arguments stay as they are"
    );
    assert_eq!(units[1].state(), UnitState::Failed);
    assert_eq!(units[1].exit_code(), Some(3));
    assert_eq!(out(&units[1]), "main\npost\n");
    assert_eq!(units[2].state(), UnitState::Failed);
    assert_eq!(out(&units[2]), "");
    f.pcs.cancel().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_run_after_others_through_the_api_and_a_failure_cancels_what_follows() {
    let f = fixture().await;
    f.pcs.create_pilot(pilot(2)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("order");
    let step = |name: &str| sh(&format!("sleep 0.1; echo {name} >> {}", log.display()));
    let first = f.cus.submit(step("first")).await.unwrap();
    let second = f
        .cus
        .submit(step("second").after([first.id()]))
        .await
        .unwrap();
    let broken = f.cus.submit(sh("exit 3")).await.unwrap();
    let never = f
        .cus
        .submit(step("never").after([second.id(), broken.id()]))
        .await
        .unwrap();
    let anyway = f
        .cus
        .submit(ComputeUnitDescription {
            on_dependency_failure: pstar::OnDependencyFailure::Run,
            ..step("anyway").after([broken.id()])
        })
        .await
        .unwrap();
    assert_eq!(within(never.wait()).await, UnitState::Canceled);
    assert!(
        never.detail().is_some_and(|d| d.contains(&format!(
            "{}, which it runs after, ended failed",
            broken.id()
        ))),
        "{:?}",
        never.detail()
    );
    assert_eq!(within(second.wait()).await, UnitState::Done);
    assert_eq!(within(anyway.wait()).await, UnitState::Done);
    let order = std::fs::read_to_string(&log).unwrap();
    let order: Vec<&str> = order.lines().collect();
    let at = |n: &str| order.iter().position(|l| *l == n).unwrap();
    assert!(at("first") < at("second"), "{order:?}");
    assert!(!order.contains(&"never"));
    assert!(
        second
            .history()
            .iter()
            .any(|(s, _)| *s == UnitState::Waiting),
        "it waited in a state of its own"
    );
    f.pcs.cancel().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_with_retries_runs_again_and_keeps_each_attempt() {
    let f = fixture().await;
    f.pcs.create_pilot(pilot(1)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("seen");
    let flaky = sh(&format!(
        "test -e {0} && exit 0; touch {0}; exit 75",
        flag.display()
    ))
    .with_retries(2);
    let unit = f.cus.submit(flaky).await.unwrap();
    assert_eq!(within(unit.wait()).await, UnitState::Done);
    let attempts = unit.attempts();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0].exit_code, Some(75));
    assert_eq!(attempts[0].end, Some(pstar::RunEnd::Failed));
    assert_eq!(attempts[1].end, Some(pstar::RunEnd::Done));
    f.pcs.cancel().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pilot_s_pre_exec_runs_before_each_unit_s_own() {
    let f = fixture().await;
    f.pcs
        .create_pilot(PilotComputeDescription {
            pre_exec: vec!["export FROM_PILOT=pilot-says".into()],
            ..pilot(1)
        })
        .await
        .unwrap();
    let unit = f
        .cus
        .submit(ComputeUnitDescription {
            pre_exec: vec!["export FROM_UNIT=\"$FROM_PILOT and unit\"".into()],
            ..ComputeUnitDescription::new("/bin/sh").with_arguments(["-c", "echo $FROM_UNIT"])
        })
        .await
        .unwrap();
    assert_eq!(within(unit.wait()).await, UnitState::Done);
    assert_eq!(read(unit.stdout()), "pilot-says and unit\n");
    f.pcs.cancel().await;
}
