//! `pstar run WORKLOAD.toml`: create the workload's pilots, submit its units, wait, report.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pstar::{ComputeUnitService, PilotComputeService, Session, State, UnitPolicy};

use crate::progress;
use crate::report::{self, Summary};
use crate::workload::Workload;

/// Options of one run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Write the JSON report here.
    pub report: Option<PathBuf>,
    /// Root of the pilot sandboxes (default `./pstar.sandbox`).
    pub sandbox: Option<PathBuf>,
    /// No progress display.
    pub quiet: bool,
    /// Units bound to a pilot beyond its cores, in pilots' worth (default 4).
    pub prefetch: Option<u32>,
    /// The coordination store's URL (`redis://...`); the embedded store if `None`.
    pub coordination: Option<String>,
    /// Declare an agent lost after this long without a heartbeat (default 30 s).
    pub heartbeat_timeout: Option<Duration>,
    /// Runs a unit gets when the pilots running it are lost (default 3).
    pub max_attempts: Option<u32>,
    /// Quick failures in a row that make a pilot a black hole (default 5; 0: off).
    pub black_hole_failures: Option<u32>,
    /// How long a Redis keeps a finished session's data (default 7 days).
    pub keep: Option<Duration>,
    /// How long a batch pilot's agent may take to reach the store once its job runs.
    pub agent_start_timeout: Option<Duration>,
    /// How often batch pilot jobs' states are asked.
    pub poll_interval: Option<Duration>,
    /// The `pstar` program agents run (started here, copied to remote hosts).
    pub agent_binary: Option<PathBuf>,
}

/// How long a Redis keeps a finished session's data unless told otherwise.
pub const DEFAULT_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

impl RunOptions {
    /// These options, with what they leave open taken from a workload's `[session]`.
    pub fn or_from(&self, settings: &crate::workload::SessionSettings) -> RunOptions {
        RunOptions {
            coordination: self.coordination.clone().or(settings.coordination.clone()),
            heartbeat_timeout: self.heartbeat_timeout.or(settings.heartbeat_timeout),
            max_attempts: self.max_attempts.or(settings.max_attempts),
            black_hole_failures: self.black_hole_failures.or(settings.black_hole_failures),
            agent_start_timeout: self.agent_start_timeout.or(settings.agent_start_timeout),
            poll_interval: self.poll_interval.or(settings.poll_interval),
            agent_binary: self.agent_binary.clone().or(settings.agent_binary.clone()),
            ..self.clone()
        }
    }

    /// The session builder with these options' settings.
    fn configure(&self, mut builder: pstar::SessionBuilder) -> pstar::SessionBuilder {
        if let Some(root) = &self.sandbox {
            builder = builder.sandbox_root(root);
        }
        if let Some(timeout) = self.heartbeat_timeout {
            builder = builder.heartbeat_timeout(timeout);
        }
        if let Some(timeout) = self.agent_start_timeout {
            builder = builder.bootstrap_timeouts(pstar::BootstrapTimeouts {
                agent_start: timeout,
                ..Default::default()
            });
        }
        if let Some(every) = self.poll_interval {
            builder = builder.poll_interval(every);
        }
        if let Some(path) = &self.agent_binary {
            builder = builder.agent_binary(path);
        }
        builder
    }

    fn policy(&self) -> UnitPolicy {
        let d = UnitPolicy::default();
        UnitPolicy {
            prefetch: self.prefetch.unwrap_or(d.prefetch),
            max_attempts: self.max_attempts.unwrap_or(d.max_attempts),
            black_hole_failures: self.black_hole_failures.unwrap_or(d.black_hole_failures),
            ..d
        }
    }
}

/// How a run ended.
#[derive(Debug)]
pub enum Outcome {
    /// Every unit ran; the summary says how each ended. `report_written` is false when
    /// a report was asked for and could not be written.
    Finished {
        summary: Summary,
        report_written: bool,
    },
    /// Interrupted (Ctrl-C): units were canceled.
    Interrupted(Summary),
}

/// Runs `workload` to the end and reports on it.
pub async fn run(workload: Workload, options: &RunOptions) -> Result<Outcome, pstar::Error> {
    let options = &options.or_from(&workload.session);
    let id = pstar::new_session_id();
    let mut builder = options.configure(Session::builder().id(&id));
    if let Some(url) = &options.coordination {
        builder = builder.coordination(crate::store::connect(url, &id).await?);
    } else {
        // The agents are tasks of this process, which starts no child of its own.
        pstar_agent::descendants::adopt_all_orphans();
    }
    let session = builder.build().await?;
    let count = |n: usize, what: &str| {
        if n == 1 {
            format!("1 {what}")
        } else {
            format!("{n} {what}s")
        }
    };
    eprintln!(
        "pstar: session {} ({}, {}); sandboxes in {}",
        session.id(),
        count(workload.pilots.len(), "pilot"),
        count(workload.units.len(), "unit"),
        session.sandbox_root().join(session.id()).display(),
    );

    let pcs = PilotComputeService::new(&session);
    let mut pilots = Vec::with_capacity(workload.pilots.len());
    for description in workload.pilots {
        pilots.push(pcs.create_pilot(description).await?);
    }
    let cus = ComputeUnitService::with_policy(&session, options.policy());
    cus.add_pilot_service(&pcs);

    let start = Instant::now();
    let total = workload.units.len();
    let descriptions = workload.units.into_iter().map(|u| {
        let mut d = u.description;
        d.pilot = u.pilot.and_then(|i| pilots.get(i)).map(|p| p.id());
        d
    });
    let units = cus.submit_batch(descriptions).await?;
    drive(session, pcs, cus, units, total, start, options).await
}

/// Picks up session `id` from the store at `options.coordination` after its manager died,
/// and carries it to the end like [`run`]. Units already finished are not run again. If no
/// pilot of the session is alive any more, pilots like the session's first ones are
/// started.
pub async fn resume(id: &str, options: &RunOptions) -> Result<Outcome, pstar::Error> {
    let Some(url) = &options.coordination else {
        return Err(pstar_coordination::CoordinationError::Unsupported(
            "resuming a session needs its --coordination URL (a Redis)".into(),
        )
        .into());
    };
    let builder = options.configure(
        Session::builder()
            .id(id)
            .coordination(crate::store::connect(url, id).await?),
    );
    let resumed = pstar::resume(builder, options.policy()).await?;
    let (session, pcs, cus) = (resumed.session, resumed.pilots, resumed.units);
    let counts = cus.counts();
    let alive = pcs
        .pilots()
        .iter()
        .filter(|p| !p.state().is_final())
        .count();
    eprintln!(
        "pstar: resumed session {}: {} units ({} finished), {} of {} pilots alive",
        session.id(),
        counts.total(),
        counts.finished(),
        alive,
        pcs.pilots().len(),
    );
    if alive == 0 && counts.finished() < counts.total() {
        eprintln!(
            "pstar: starting {} new pilots like the session's first ones",
            resumed.records.len()
        );
        for record in resumed.records {
            pcs.create_pilot(record.description).await?;
        }
    }
    let units = cus.units();
    let total = units.len();
    drive(session, pcs, cus, units, total, Instant::now(), options).await
}

/// Waits until every unit has ended (or the run is interrupted, or every pilot is gone),
/// then ends the pilots and reports.
async fn drive(
    session: Session,
    pcs: PilotComputeService,
    cus: ComputeUnitService,
    units: Vec<pstar::ComputeUnit>,
    total: usize,
    start: Instant,
    options: &RunOptions,
) -> Result<Outcome, pstar::Error> {
    let progress = tokio::spawn(progress::show(cus.watch_counts(), total, options.quiet));

    let mut interrupted = false;
    tokio::select! {
        reason = session.lost() => {
            // Nothing can move any more: say so instead of waiting forever.
            return Err(pstar::Error::StoreLost(reason));
        }
        _ = cus.wait() => {}
        _ = pcs.wait() => {
            // Every pilot has ended (walltime, failure) with units left: nothing will run them.
            cus.cancel_because("every pilot ended before this unit could run");
            cus.wait().await;
        }
        signal = interruption() => {
            interrupted = true;
            eprintln!("pstar: interrupted by {signal}; canceling units");
            cus.cancel_because(format!("interrupted by {signal}"));
            cus.wait().await;
        }
    }
    let wall = start.elapsed();
    let _ = progress.await;
    pcs.cancel().await;

    let pilots = pcs.pilots();
    for p in &pilots {
        if p.state() == pstar::PilotState::Failed {
            eprintln!(
                "pstar: {} failed: {}",
                p.id(),
                p.detail().unwrap_or_default()
            );
        }
    }
    let summary = Summary::new(session.id(), &units, wall);
    eprint!("{}", summary.render(&units));
    let mut report_written = true;
    if let Some(path) = &options.report {
        match report::write(path, &summary, &units, &pilots) {
            Ok(()) => eprintln!("report: {}", path.display()),
            Err(e) => {
                eprintln!("pstar: cannot write the report {}: {e}", path.display());
                report_written = false;
            }
        }
    }
    if let Err(e) = session
        .coordination()
        .finish(options.keep.unwrap_or(DEFAULT_KEEP))
        .await
    {
        eprintln!("pstar: cannot mark the session finished in the store: {e}");
    }
    debug_assert!(units.iter().all(|u| u.state().is_final()));
    Ok(if interrupted {
        Outcome::Interrupted(summary)
    } else {
        Outcome::Finished {
            summary,
            report_written,
        }
    })
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM (what batch systems and `kill` send); names it.
pub(crate) async fn interruption() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        _ => {
            // Without signal handling, never interrupted: the run goes to its end.
            std::future::pending::<()>().await;
            "never"
        }
    }
}
