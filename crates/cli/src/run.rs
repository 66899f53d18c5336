//! `pstar run WORKLOAD.toml`: create the workload's pilots, submit its units, wait, report.

use std::path::PathBuf;
use std::time::Instant;

use pstar::{ComputeUnitService, PilotComputeService, Session, State};

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
    let mut builder = Session::builder();
    if let Some(root) = &options.sandbox {
        builder = builder.sandbox_root(root);
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
    let cus = match options.prefetch {
        Some(p) => ComputeUnitService::with_prefetch(&session, p),
        None => ComputeUnitService::new(&session),
    };
    cus.add_pilot_service(&pcs);

    let start = Instant::now();
    let total = workload.units.len();
    let descriptions = workload.units.into_iter().map(|u| {
        let mut d = u.description;
        d.pilot = u.pilot.and_then(|i| pilots.get(i)).map(|p| p.id());
        d
    });
    let units = cus.submit_batch(descriptions).await?;
    let progress = tokio::spawn(progress::show(cus.watch_counts(), total, options.quiet));

    let mut interrupted = false;
    tokio::select! {
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
async fn interruption() -> &'static str {
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
