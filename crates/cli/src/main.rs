//! `pstar`: run workloads of compute units on pilots.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use pstar_cli::run::{self, Outcome, RunOptions};
use pstar_cli::workload;

/// Exit status when the workload file is refused.
const EXIT_BAD_WORKLOAD: u8 = 2;

#[derive(Parser)]
#[command(
    name = "pstar",
    version,
    about = "Run thousands of tasks on pilots, after the P* model"
)]
struct Cli {
    /// More log output (repeat for more); or set PSTAR_LOG, e.g. PSTAR_LOG=pstar=debug.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a workload file: create its pilots, run its units, report.
    ///
    /// Exit status: 0 if every unit is done, 1 if any failed or was canceled (or the
    /// report could not be written at the end), 2 if the workload file or the report path
    /// was refused before anything ran, 130 if interrupted (SIGINT or SIGTERM).
    Run {
        /// The workload file (TOML with [[pilot]] and [[unit]] tables).
        workload: PathBuf,
        /// Write a JSON report of every unit and pilot to this file.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// Root directory of the pilot sandboxes.
        #[arg(long, value_name = "DIR", default_value = "pstar.sandbox")]
        sandbox: PathBuf,
        /// No progress display.
        #[arg(short, long)]
        quiet: bool,
        /// How many pilots' worth of cores of units to bind to each pilot beyond what it
        /// runs (default 4, for short units; 0 binds a unit only to a free core, for long
        /// units over many pilots).
        #[arg(long, value_name = "N")]
        prefetch: Option<u32>,
    },
    /// Check a workload file without running anything.
    Check { workload: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PSTAR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let supported = pstar_adaptors::supported_schemes();
    match cli.command {
        Command::Check { workload } => match workload::load(&workload, &supported) {
            Ok(w) => {
                println!(
                    "{}: {} pilots, {} units: ok",
                    workload.display(),
                    w.pilots.len(),
                    w.units.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_BAD_WORKLOAD)
            }
        },
        Command::Run {
            workload,
            report,
            sandbox,
            quiet,
            prefetch,
        } => {
            let workload = match workload::load(&workload, &supported) {
                Ok(w) => w,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EXIT_BAD_WORKLOAD);
                }
            };
            // A report that cannot be written is found out before anything runs.
            if let Some(path) = &report {
                if let Err(e) = std::fs::File::create(path) {
                    eprintln!("pstar: cannot write the report {}: {e}", path.display());
                    return ExitCode::from(EXIT_BAD_WORKLOAD);
                }
            }
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("pstar: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let options = RunOptions {
                report,
                sandbox: Some(sandbox),
                quiet,
                prefetch,
            };
            match runtime.block_on(run::run(workload, &options)) {
                Ok(Outcome::Finished {
                    summary,
                    report_written: true,
                }) if summary.all_done() => ExitCode::SUCCESS,
                Ok(Outcome::Finished { .. }) => ExitCode::FAILURE,
                Ok(Outcome::Interrupted(_)) => ExitCode::from(130),
                Err(e) => {
                    eprintln!("pstar: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
