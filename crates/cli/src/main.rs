//! `pstar`: run workloads of compute units on pilots.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use std::time::Duration;

use pstar::{Origin, PilotId, SettingsLayer, UnitState};
use pstar_cli::agent::{self, AgentOptions};
use pstar_cli::inspect;
use pstar_cli::run::{self, Outcome, RunOptions};
use pstar_cli::workload;
use pstar_cli::{say, show};

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
        /// The workload file (TOML with [[pilot]] and [[unit]] tables, and for Pilot-Data
        /// [[pilot_data]] and [[data_unit]] tables).
        #[arg(required_unless_present = "resume", conflicts_with = "resume")]
        workload: Option<PathBuf>,
        /// Pick up SESSION from its Redis (--coordination) after its manager died, and carry
        /// it to the end; finished units are not run again.
        #[arg(long, value_name = "SESSION", value_parser = SessionName)]
        resume: Option<String>,
        /// With --resume: units of the session that ended this way (failed, canceled; may
        /// be given twice) run again, keeping their ids and history. The session may have
        /// finished.
        #[arg(long, value_name = "STATE", requires = "resume", value_parser = parse_rerun)]
        rerun: Vec<UnitState>,
        /// Write a JSON report of every unit and pilot to this file.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// Root directory of the pilot sandboxes [default: pstar.sandbox].
        #[arg(long, value_name = "DIR")]
        sandbox: Option<PathBuf>,
        /// No progress display.
        #[arg(short, long)]
        quiet: bool,
        /// How many pilots' worth of cores of units to bind to each pilot beyond what it
        /// runs (default 4, for short units; 0 binds a unit only to a free core, for long
        /// units over many pilots).
        #[arg(long, value_name = "N")]
        prefetch: Option<u32>,
        #[command(flatten)]
        store: StoreArgs,
        /// Declare a pilot lost when its agent sends no heartbeat for this long; its units
        /// go back to the pool [default: 30s, or the workload's [session]].
        #[arg(long, value_name = "TIME", value_parser = pstar_cli::settings::duration_flag("heartbeat_timeout"))]
        heartbeat_timeout: Option<Duration>,
        /// Runs a unit gets when the pilots running it are lost; then it fails
        /// [default: 3, or the workload's [session]].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        max_attempts: Option<u32>,
        /// Take a pilot out of rotation after this many units in a row fail on it within
        /// 10 s of starting while other pilots finish theirs (0: never) [default: 5, or the
        /// workload's [session]].
        #[arg(long, value_name = "N")]
        black_hole_failures: Option<u32>,
        /// How long Redis keeps a finished session's data [default: 7days].
        #[arg(long, value_name = "TIME", value_parser = pstar_cli::settings::duration_flag("keep"))]
        keep: Option<Duration>,
        /// Fail a batch pilot whose agent has not reached the store this long after its
        /// job started running [default: 2m, or the workload's [session]].
        #[arg(long, value_name = "TIME", value_parser = pstar_cli::settings::duration_flag("agent_start_timeout"))]
        agent_start_timeout: Option<Duration>,
        /// How often batch pilot jobs' states are asked from their schedulers
        /// [default: 2s, or the workload's [session]].
        #[arg(long, value_name = "TIME", value_parser = pstar_cli::settings::duration_flag("poll_interval"))]
        poll_interval: Option<Duration>,
        /// How long a unit that reads input data waits for a busy pilot nearer its data
        /// before its data is moved to a free one; 0s never waits [default: 3s, or the
        /// workload's [session]].
        #[arg(long, value_name = "TIME", value_parser = pstar_cli::settings::duration_flag("locality_wait"))]
        locality_wait: Option<Duration>,
        /// The pstar program agents run: started here for local pilots, copied to remote
        /// hosts for the others; build a static one with scripts/build-static.sh
        /// [default: $PSTAR_AGENT_BIN, else the workload's [session], else this program].
        #[arg(long, value_name = "PATH")]
        agent_binary: Option<PathBuf>,
    },
    /// Play a workload through pstar's scheduler on a virtual clock: no processes, no
    /// store, no batch system. Each unit takes its `time_request`; the workload's
    /// [simulation] table sets queue waits, pilot failures and agent losses. Prints the
    /// summary `run` would, in virtual seconds, plus pilot utilisation.
    ///
    /// Exit status: 0 if every unit would be done, 1 otherwise, 2 if the workload file or
    /// the report path was refused.
    Simulate {
        /// The workload file (TOML with [[pilot]], [[unit]] and [simulation] tables).
        workload: PathBuf,
        /// Write the JSON report `run` would write (timestamps on the virtual clock).
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// As for `run`: how many pilots' worth of cores of units to bind to each pilot
        /// beyond what it runs [default: 4].
        #[arg(long, value_name = "N")]
        prefetch: Option<u32>,
        /// As for `run`: runs a unit gets when the pilots running it are lost [default: 3].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        max_attempts: Option<u32>,
    },
    /// Run one pilot's agent (started by pstar's resource adaptors inside the pilot job).
    ///
    /// The Redis password comes from PSTAR_REDIS_PASSWORD or PSTAR_REDIS_PASSWORD_FILE.
    Agent {
        #[command(flatten)]
        store: StoreArgs,
        /// The session the pilot belongs to.
        #[arg(long, value_parser = SessionName)]
        session: String,
        /// The pilot to run (`pilot.0003`). Its settings come from its record in the store.
        #[arg(long)]
        pilot: PilotId,
        // Overrides of the record's settings, for older job scripts and for debugging.
        #[arg(long, hide = true, value_parser = pstar_cli::settings::duration_flag("claim_wait"))]
        claim_wait: Option<Duration>,
        #[arg(long, hide = true, value_parser = pstar_cli::settings::duration_flag("heartbeat_interval"))]
        heartbeat_interval: Option<Duration>,
        #[arg(long, hide = true, value_parser = pstar_cli::settings::duration_flag("kill_grace"))]
        kill_grace: Option<Duration>,
        #[arg(long, hide = true, value_parser = pstar_cli::settings::duration_flag("drain_margin"))]
        drain_margin: Option<Duration>,
        #[arg(long, hide = true, value_parser = pstar_cli::settings::duration_flag("report_window"))]
        report_window: Option<Duration>,
        #[arg(long, hide = true, value_parser = pstar_cli::settings::duration_flag("remote_report_window"))]
        remote_report_window: Option<Duration>,
    },
    /// Check a workload file without running anything: every check `pstar run` makes
    /// before it starts. Exit status 2 if the file is refused.
    Check {
        workload: PathBuf,
        /// The store `run` would use (not contacted): pilots outside `local://` need one.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Show a session's pilots (state, slots, heartbeats), unit counts and throughput.
    Status {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, value_parser = SessionName)]
        session: String,
    },
    /// List a session's units, optionally only those in one state or on one pilot.
    Units {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, value_parser = SessionName)]
        session: String,
        /// Only units in this state (new, scheduled, pending, running, done, failed,
        /// canceled).
        #[arg(long, value_parser = parse_unit_state)]
        state: Option<UnitState>,
        /// Only units bound to this pilot (`pilot.0001`).
        #[arg(long)]
        pilot: Option<PilotId>,
    },
    /// Add the units (and pilots) of WORKLOAD to a session a manager is running (over
    /// Redis). Their `after` may name the session's units too; they run on its pilots.
    Submit {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, value_parser = SessionName)]
        session: String,
        /// A workload file: `[[unit]]` tables, and `[[pilot]]` tables if more pilots are
        /// wanted.
        workload: PathBuf,
    },
    /// Cancel units or pilots of a running session (unit.N, pilot.N), or all of it.
    Cancel {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, value_parser = SessionName)]
        session: String,
        /// Units and pilots to cancel; none with --all.
        #[arg(required_unless_present = "all")]
        targets: Vec<String>,
        /// Cancel every unit and pilot of the session.
        #[arg(long, conflicts_with = "targets")]
        all: bool,
    },
    /// List or remove the sessions kept in a Redis.
    Session {
        #[command(subcommand)]
        command: SessionCommand,
    },
    /// Look at pilot jobs: the scripts a workload would submit.
    Pilot {
        #[command(subcommand)]
        command: PilotCommand,
    },
}

#[derive(Subcommand)]
enum PilotCommand {
    /// Print the job script (and any submit file) each pilot of WORKLOAD would be
    /// submitted with, without submitting anything. Paths on remote hosts are shown
    /// relative to the home directory; they are resolved at submission.
    Script {
        workload: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
        /// Root directory of the pilot sandboxes (for pilots on this host)
        /// [default: pstar.sandbox].
        #[arg(long, value_name = "DIR")]
        sandbox: Option<PathBuf>,
    },
    /// Print what a pilot's resource kept of its job: the job's output and the agent's
    /// log (fetched over SSH for remote pilots).
    Logs {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, value_parser = SessionName)]
        session: String,
        /// The pilot (`pilot.0001`).
        pilot: PilotId,
    },
}

#[derive(Subcommand)]
enum SessionCommand {
    /// Sessions in the Redis, oldest first (yours only, unless --all).
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Show every user's sessions.
        #[arg(long)]
        all: bool,
    },
    /// Delete sessions' data from the Redis.
    Rm {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(required = true, value_parser = SessionName)]
        sessions: Vec<String>,
        /// Remove sessions that have not finished (their manager, if alive, will fail), or
        /// that another user started.
        #[arg(long)]
        force: bool,
    },
}

/// Where the coordination store is.
#[derive(clap::Args, Debug, Clone)]
struct StoreArgs {
    /// The coordination store: `redis://[user@]host:port[/db]` (default for `run`: the
    /// embedded store, in-process). The password comes from PSTAR_REDIS_PASSWORD or
    /// PSTAR_REDIS_PASSWORD_FILE, not from this URL, which `ps` shows to everyone.
    #[arg(long, value_name = "URL", env = "PSTAR_COORDINATION")]
    coordination: Option<String>,
}

/// One runtime thread, for the manager and for an agent alike. Their async work (the
/// store, the scheduler, reports) is light; units run on executor threads of their own,
/// and every extra runtime thread only adds wake-ups between threads on a busy machine
/// (measured: 7% more null units per second on 2 cores).
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            say!("pstar: cannot start the runtime: {e}");
            ExitCode::FAILURE
        })
}

/// `--rerun`: `failed` or `canceled`.
fn parse_rerun(text: &str) -> Result<UnitState, String> {
    match text {
        "failed" => Ok(UnitState::Failed),
        "canceled" | "cancelled" => Ok(UnitState::Canceled),
        other => Err(format!(
            "`{other}`: --rerun takes `failed` or `canceled` (the units that ended so run again)"
        )),
    }
}

fn parse_unit_state(text: &str) -> Result<UnitState, String> {
    use pstar::State;
    UnitState::ALL
        .iter()
        .copied()
        .find(|s| s.as_str() == text.to_ascii_lowercase())
        .ok_or_else(|| {
            let names: Vec<&str> = UnitState::ALL.iter().map(|s| s.as_str()).collect();
            format!("expected one of {}", names.join(", "))
        })
}

/// Whether the store named by `--coordination` / `PSTAR_COORDINATION`, if any, is a URL
/// pstar can use; says why not, naming the URL (its password masked) and where it came
/// from.
fn store_url_ok(store: &StoreArgs) -> bool {
    let Some(url) = &store.coordination else {
        return true;
    };
    match pstar_cli::store::check_url(url, &pstar_cli::store::origin_of_flag(url)) {
        Ok(()) => true,
        Err(e) => {
            say!("pstar: {e}");
            false
        }
    }
}

/// A session name on the command line, checked by the one rule for session ids
/// ([`pstar_model::check_session_id`]). A refusal exits 2 like any bad argument, and
/// shows the name with its control characters escaped.
#[derive(Clone)]
struct SessionName;

impl clap::builder::TypedValueParser for SessionName {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        let text = value.to_string_lossy();
        pstar_model::check_session_id(&text).map_err(|e| {
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{e}\n"))
                .with_cmd(cmd)
        })?;
        Ok(text.into_owned())
    }
}

/// Which part of a Redis a command opens.
enum Open<'a> {
    /// One existing session (never recorded in the registry).
    Session(&'a str),
    /// The registry of sessions.
    Registry,
}

/// Runs `f` on the Redis named by `store`, prints its text.
fn with_store<F, Fut>(store: StoreArgs, open: Open<'_>, f: F) -> ExitCode
where
    F: FnOnce(std::sync::Arc<pstar_coordination::RedisStore>) -> Fut,
    Fut: std::future::Future<Output = Result<String, String>>,
{
    if !store_url_ok(&store) {
        return ExitCode::from(EXIT_BAD_WORKLOAD);
    }
    let Some(url) = store.coordination else {
        say!("pstar: --coordination (or PSTAR_COORDINATION) is required: the session's Redis");
        return ExitCode::from(EXIT_BAD_WORKLOAD);
    };
    pstar_cli::store::warn_if_password_in_url(&url, &pstar_cli::store::origin_of_flag(&url));
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let out = runtime.block_on(async {
        let store = match open {
            Open::Session(session) => pstar_cli::store::open_to_look(&url, session).await,
            Open::Registry => pstar_cli::store::open_registry(&url).await,
        }
        .map_err(|e| e.to_string())?;
        f(store).await
    });
    match out {
        Ok(text) => {
            show!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            say!("pstar: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Loads `session` and prints what `f` makes of it.
fn inspect_session(
    store: StoreArgs,
    session: &str,
    f: impl FnOnce(&inspect::SessionView) -> Result<String, String>,
) -> ExitCode {
    with_store(store, Open::Session(session), |store| async move {
        let view = inspect::SessionView::load(&store)
            .await
            .map_err(|e| e.to_string())?;
        f(&view)
    })
}

/// A log directive written here (always valid).
fn quiet(directive: &str) -> tracing_subscriber::filter::Directive {
    directive
        .parse()
        .unwrap_or_else(|_| tracing_subscriber::filter::LevelFilter::WARN.into())
}

fn main() -> ExitCode {
    // `PSTAR_COORDINATION=` (set, but empty) names no store: as if it were not set.
    if std::env::var_os(pstar_cli::store::COORDINATION_ENV).is_some_and(|v| v.is_empty()) {
        // SAFETY: nothing else runs yet: no thread has been started to read the environment.
        unsafe { std::env::remove_var(pstar_cli::store::COORDINATION_ENV) };
    }
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // `--coordination` said on the command line, rather than read from PSTAR_COORDINATION
    // (which is the environment's layer of a run's settings).
    let coordination_flag = matches
        .subcommand_matches("run")
        .and_then(|m| m.value_source("coordination"))
        == Some(clap::parser::ValueSource::CommandLine);
    let default = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PSTAR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default))
        // The S3 signing library logs its credentials at debug level: never shown.
        .add_directive(quiet("reqsign_core=info"))
        .add_directive(quiet("reqsign=info"));
    // Colour codes only for a person at a terminal: not in a file or a pipe (an agent's
    // log is its redirected stderr), and never with NO_COLOR set (https://no-color.org).
    let colour = {
        use std::io::IsTerminal;
        std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();

    let supported = pstar_adaptors::supported_schemes();
    match cli.command {
        Command::Status { store, session } => inspect_session(store, &session, |view| {
            Ok(view.render_status(pstar_model::Timestamp::now()))
        }),
        Command::Units {
            store,
            session,
            state,
            pilot,
        } => inspect_session(store, &session, |view| Ok(view.render_units(state, pilot))),
        Command::Submit {
            store,
            session,
            workload,
        } => {
            if !store_url_ok(&store) {
                return ExitCode::from(EXIT_BAD_WORKLOAD);
            }
            let Some(url) = store.coordination else {
                say!(
                    "pstar: --coordination (or PSTAR_COORDINATION) is required: the session's \
                     Redis"
                );
                return ExitCode::from(EXIT_BAD_WORKLOAD);
            };
            pstar_cli::store::warn_if_password_in_url(
                &url,
                &pstar_cli::store::origin_of_flag(&url),
            );
            let runtime = match runtime() {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            let out = runtime.block_on(async {
                let store = pstar_cli::store::open_existing(&url, &session)
                    .await
                    .map_err(|e| pstar_cli::submit::SubmitError::Session(e.to_string()))?;
                pstar_cli::submit::submit(store, &session, &workload, &supported).await
            });
            match out {
                Ok(text) => {
                    show!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e @ pstar_cli::submit::SubmitError::Workload(_)) => {
                    say!("{e}");
                    ExitCode::from(EXIT_BAD_WORKLOAD)
                }
                Err(e) => {
                    say!("pstar: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Cancel {
            store,
            session,
            targets,
            all: _,
        } => with_store(store, Open::Session(&session), |store| async move {
            inspect::cancel(&store, &targets).await
        }),
        Command::Session { command } => match command {
            SessionCommand::List { store, all } => {
                with_store(store, Open::Registry, |store| async move {
                    let sessions = store.sessions().await.map_err(|e| e.to_string())?;
                    Ok(inspect::render_sessions(&sessions, all))
                })
            }
            SessionCommand::Rm {
                store,
                sessions,
                force,
            } => with_store(store, Open::Registry, |store| async move {
                inspect::remove_sessions(&store, &sessions, force).await
            }),
        },
        Command::Pilot {
            command:
                PilotCommand::Logs {
                    store,
                    session,
                    pilot,
                },
        } => with_store(store, Open::Session(&session), |store| async move {
            use pstar::Coordination;
            let record = store.pilot(pilot).await.map_err(|e| e.to_string())?;
            let scheme = record.description.resource.scheme();
            let adaptors = pstar_adaptors::available(Default::default());
            let adaptor = adaptors
                .iter()
                .find(|a| a.scheme() == scheme)
                .ok_or_else(|| format!("no adaptor for `{scheme}://`"))?;
            adaptor.logs(&record).await.map_err(|e| e.to_string())
        }),
        Command::Pilot {
            command: PilotCommand::Script { ref store, .. },
        } if !store_url_ok(store) => ExitCode::from(EXIT_BAD_WORKLOAD),
        Command::Pilot {
            command:
                PilotCommand::Script {
                    workload,
                    store,
                    sandbox,
                },
        } => match workload::load(&workload, &supported, true) {
            Ok(w) => {
                // What `run` would use: its settings from the same layers.
                let command_line = SettingsLayer {
                    sandbox,
                    coordination: store.coordination,
                    ..SettingsLayer::from(Origin::CommandLine)
                };
                let settings = pstar_cli::settings::layered(
                    Some(&w.session),
                    &pstar_cli::settings::from_environment(),
                    &command_line,
                );
                match pstar_cli::script::render(&w, &settings) {
                    Ok(text) => {
                        show!("{text}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        say!("pstar: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            Err(e) => {
                say!("{e}");
                ExitCode::from(EXIT_BAD_WORKLOAD)
            }
        },
        Command::Simulate {
            workload,
            report,
            prefetch,
            max_attempts,
        } => simulate(&workload, report, prefetch, max_attempts),
        Command::Check { workload, store } => {
            if !store_url_ok(&store) {
                return ExitCode::from(EXIT_BAD_WORKLOAD);
            }
            match workload::load(&workload, &supported, store.coordination.is_some()) {
                Ok(w) => {
                    for warning in w.warnings() {
                        say!("{}: warning: {warning}", workload.display());
                    }
                    let deps = match w.dependencies() {
                        0 => String::new(),
                        n => format!(", {}", pstar_cli::count(n as usize, "dependency")),
                    };
                    show!(
                        "{}: {}, {}{deps}: ok\n",
                        workload.display(),
                        pstar_cli::count(w.pilots.len(), "pilot"),
                        pstar_cli::count(w.unit_count(), "unit"),
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    say!("{e}");
                    ExitCode::from(EXIT_BAD_WORKLOAD)
                }
            }
        }
        Command::Agent {
            store,
            session,
            pilot,
            claim_wait,
            heartbeat_interval,
            kill_grace,
            drain_margin,
            report_window,
            remote_report_window,
        } => {
            if !store_url_ok(&store) {
                return ExitCode::from(EXIT_BAD_WORKLOAD);
            }
            let Some(coordination) = store.coordination else {
                say!("pstar agent: --coordination (or PSTAR_COORDINATION) is required");
                return ExitCode::from(EXIT_BAD_WORKLOAD);
            };
            let runtime = match runtime() {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            let options = AgentOptions {
                coordination,
                session,
                pilot,
                overrides: SettingsLayer {
                    claim_wait,
                    heartbeat_interval,
                    kill_grace,
                    drain_margin,
                    report_window,
                    remote_report_window,
                    ..SettingsLayer::from(Origin::CommandLine)
                },
            };
            match runtime.block_on(agent::run(options)) {
                Ok(state) => {
                    tracing::info!(%pilot, %state, "agent finished");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    say!("pstar agent: {pilot}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run {
            workload,
            resume,
            rerun,
            report,
            sandbox,
            quiet,
            prefetch,
            store,
            heartbeat_timeout,
            max_attempts,
            black_hole_failures,
            keep,
            agent_start_timeout,
            poll_interval,
            locality_wait,
            agent_binary,
        } => {
            let workload_path = workload.clone();
            if !store_url_ok(&store) {
                return ExitCode::from(EXIT_BAD_WORKLOAD);
            }
            if !rerun.is_empty() && resume.is_none() {
                say!(
                    "pstar: --rerun runs again units of a session: give it with --resume \
                     SESSION (a workload file runs every unit anyway)"
                );
                return ExitCode::from(EXIT_BAD_WORKLOAD);
            }
            let networked = store.coordination.is_some();
            let workload = match workload.map(|w| workload::load(&w, &supported, networked)) {
                Some(Ok(w)) => Some(w),
                Some(Err(e)) => {
                    say!("{e}");
                    return ExitCode::from(EXIT_BAD_WORKLOAD);
                }
                None => None,
            };
            if resume.is_some() && store.coordination.is_none() {
                say!("pstar: --resume needs the session's --coordination URL");
                return ExitCode::from(EXIT_BAD_WORKLOAD);
            }
            let command_line = SettingsLayer {
                coordination: store.coordination.clone().filter(|_| coordination_flag),
                sandbox,
                heartbeat_timeout,
                max_attempts,
                black_hole_failures,
                prefetch,
                agent_start_timeout,
                poll_interval,
                locality_wait,
                agent_binary: agent_binary.clone(),
                keep,
                ..SettingsLayer::from(Origin::CommandLine)
            };
            let settings = pstar_cli::settings::layered(
                workload.as_ref().map(|w| &w.session),
                &pstar_cli::settings::from_environment(),
                &command_line,
            );
            if let Some(url) = &settings.coordination {
                let origin = settings.origin("coordination");
                if let Err(e) = pstar_cli::store::check_store_source(url, origin) {
                    say!("pstar: {e}");
                    return ExitCode::from(EXIT_BAD_WORKLOAD);
                }
                pstar_cli::store::warn_if_password_in_url(url, origin);
            }
            // A report that cannot be written, or would overwrite an input, is found out
            // before anything runs (and nothing is created or truncated).
            let report = match report {
                None => None,
                Some(path) => {
                    // Every program and file this run reads: none may become the report.
                    let mut inputs: Vec<std::path::PathBuf> =
                        workload_path.iter().cloned().collect();
                    inputs.extend(agent_binary.clone());
                    inputs.extend(
                        workload
                            .as_ref()
                            .and_then(|w| w.session.agent_binary.clone()),
                    );
                    inputs.extend(settings.agent_binary.clone());
                    inputs.extend(std::env::current_exe().ok());
                    match pstar_cli::report::check_path(&path, &inputs) {
                        Ok(resolved) => Some(resolved),
                        Err(e) => {
                            say!("pstar: {e}");
                            return ExitCode::from(EXIT_BAD_WORKLOAD);
                        }
                    }
                }
            };
            let runtime = match runtime() {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            let options = RunOptions {
                report,
                quiet,
                settings,
            };
            let outcome = runtime.block_on(async {
                match (workload, &resume) {
                    (Some(w), _) => run::run(w, &options).await,
                    (None, Some(session)) => run::resume(session, &rerun, &options).await,
                    (None, None) => unreachable!("clap requires a workload or --resume"),
                }
            });
            match outcome {
                Ok(Outcome::Finished {
                    summary,
                    report_written: true,
                }) if summary.all_done() => ExitCode::SUCCESS,
                Ok(Outcome::Finished { .. }) => ExitCode::FAILURE,
                Ok(Outcome::Interrupted(_)) => ExitCode::from(130),
                Ok(Outcome::StoreLost { reason, .. }) => {
                    say!("pstar: {reason}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    say!("pstar: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `pstar simulate`.
fn simulate(
    path: &std::path::Path,
    report: Option<PathBuf>,
    prefetch: Option<u32>,
    max_attempts: Option<u32>,
) -> ExitCode {
    // Every resource is simulated: none needs an adaptor or a store here.
    let every: Vec<pstar_model::Scheme> =
        pstar_model::Scheme::ALL.iter().map(|(s, _)| *s).collect();
    let workload = match workload::load(path, &every, true) {
        Ok(w) => w,
        Err(e) => {
            say!("{e}");
            return ExitCode::from(EXIT_BAD_WORKLOAD);
        }
    };
    let report = match report {
        Some(r) => {
            let inputs = [path.to_path_buf()];
            let file = pstar_cli::report::check_path(&r, &inputs)
                .map_err(|e| format!("pstar: {e}"))
                .and_then(|r| {
                    pstar_cli::report::ReportFile::create(&r)
                        .map_err(|e| format!("pstar: cannot write the report {}: {e}", r.display()))
                });
            match file {
                Ok(f) => Some(f),
                Err(e) => {
                    say!("{e}");
                    return ExitCode::from(EXIT_BAD_WORKLOAD);
                }
            }
        }
        None => None,
    };
    let command_line = SettingsLayer {
        prefetch,
        max_attempts,
        ..SettingsLayer::from(Origin::CommandLine)
    };
    let settings = pstar_cli::settings::layered(
        Some(&workload.session),
        &pstar_cli::settings::from_environment(),
        &command_line,
    );
    let policy = pstar::UnitPolicy::from(&settings);
    let tally = pstar_cli::report::Tally::new("simulation", report);
    let begun = std::time::Instant::now();
    let sim = pstar_cli::simulate::simulate(&workload, policy, settings.agent.drain_margin, tally);
    let unit_time = workload
        .simulation
        .as_ref()
        .map(|s| s.unit_time)
        .unwrap_or_default();
    if sim.untimed > 0 && unit_time.is_zero() {
        say!(
            "pstar: note: {} {} no `time_request` and [simulation] `unit_time` is 0s: each \
             of them takes no time here (give units a `time_request`, or set `unit_time`)",
            pstar_cli::count(sim.untimed, "unit"),
            if sim.untimed == 1 { "has" } else { "have" }
        );
    }
    if workload.uses_data() {
        say!(
            "pstar: note: the simulation leaves Pilot-Data aside: data units are not \
             placed or moved, and units do not wait for their inputs"
        );
    }
    show!("{}", sim.text);
    say!(
        "simulated in {:.2} s of wall time ({} scheduling rounds, {:.2} s in the core)",
        begun.elapsed().as_secs_f64(),
        sim.rounds,
        sim.core_time.as_secs_f64()
    );
    if sim.summary.all_done() && sim.report_written {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every long flag of every `pstar` command.
    fn flags(command: &clap::Command, into: &mut std::collections::BTreeSet<String>) {
        for arg in command.get_arguments() {
            if let Some(long) = arg.get_long() {
                into.insert(format!("--{long}"));
            }
        }
        for sub in command.get_subcommands() {
            flags(sub, into);
        }
    }

    /// `pstar agent` needs only the store, the session and the pilot; the flags older job
    /// scripts pass are still taken as overrides of the record's settings, and not shown.
    #[test]
    fn an_agent_needs_only_store_session_and_pilot() {
        let base = [
            "pstar",
            "agent",
            "--coordination",
            "redis://h:6379/0",
            "--session",
            "s",
            "--pilot",
            "pilot.0001",
        ];
        let Ok(Cli {
            command: Command::Agent { drain_margin, .. },
            ..
        }) = Cli::try_parse_from(base)
        else {
            panic!("`pstar agent` with store, session and pilot is refused");
        };
        assert_eq!(drain_margin, None);
        let old = base
            .iter()
            .copied()
            .chain(["--drain-margin", "5m", "--claim-wait=2s"]);
        let Ok(Cli {
            command:
                Command::Agent {
                    drain_margin,
                    claim_wait,
                    ..
                },
            ..
        }) = Cli::try_parse_from(old)
        else {
            panic!("the old flags are refused");
        };
        assert_eq!(drain_margin, Some(Duration::from_secs(300)));
        assert_eq!(claim_wait, Some(Duration::from_secs(2)));
        let mut cli = Cli::command();
        let help = cli
            .find_subcommand_mut("agent")
            .map(|a| a.render_long_help().to_string())
            .unwrap_or_default();
        assert!(help.contains("--pilot"), "{help}");
        assert!(!help.contains("--claim-wait"), "{help}");
    }

    /// A duration flag outside its setting's range is refused by the command line, naming
    /// the setting and its range; at the ends of the range it is taken.
    #[test]
    fn duration_flags_out_of_range_are_refused() {
        let run = ["pstar", "run", "w.toml"];
        let agent = [
            "pstar",
            "agent",
            "--coordination",
            "redis://h:6379/0",
            "--session",
            "s",
            "--pilot",
            "pilot.0001",
        ];
        let cases: &[(&[&str], &str, &str, &str)] = &[
            (
                &run,
                "--heartbeat-timeout",
                "0s",
                "`heartbeat_timeout` must be from 100ms",
            ),
            (
                &run,
                "--poll-interval",
                "1year",
                "`poll_interval` must be from 100ms to 10m",
            ),
            (&run, "--keep", "0s", "`keep` must be from 1s"),
            (
                &run,
                "--agent-start-timeout",
                "0s",
                "`agent_start_timeout` must be from 1s",
            ),
            (
                &agent,
                "--heartbeat-interval",
                "0s",
                "`heartbeat_interval` must be from 10ms",
            ),
            (
                &agent,
                "--claim-wait",
                "0s",
                "`claim_wait` must be from 1ms",
            ),
            (
                &agent,
                "--report-window",
                "1h",
                "`report_window` must be from 0s to 1s",
            ),
            (
                &agent,
                "--drain-margin",
                "1000years",
                "`drain_margin` must be from 0s to 1year",
            ),
        ];
        for (base, flag, value, message) in cases {
            let args = base.iter().copied().chain([*flag, *value]);
            match Cli::try_parse_from(args) {
                Ok(_) => panic!("{flag} {value} was taken"),
                Err(e) => assert!(e.to_string().contains(message), "{flag} {value}: {e}"),
            }
        }
        let fine = run
            .iter()
            .copied()
            .chain(["--heartbeat-timeout", "100ms", "--keep", "1year"]);
        assert!(Cli::try_parse_from(fine).is_ok());
    }

    /// The `.rs` files under `dir`.
    fn sources(dir: &std::path::Path, into: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                sources(&path, into);
            } else if path.extension().is_some_and(|e| e == "rs") {
                into.push(path);
            }
        }
    }

    /// The libraries' messages name settings and API calls; only the CLI names its flags,
    /// which a program using the Pilot-API does not have. Comments may name them; an
    /// argument list may hold them (`"--pilot"`, to start `pstar agent`); a message may not.
    #[test]
    fn no_library_message_names_a_pstar_flag() {
        let mut pstar_flags = std::collections::BTreeSet::new();
        flags(&Cli::command(), &mut pstar_flags);
        assert!(pstar_flags.contains("--coordination"), "{pstar_flags:?}");
        let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = Vec::new();
        for library in ["model", "coordination", "agent", "adaptors", "manager"] {
            sources(&crates.join(library).join("src"), &mut files);
        }
        assert!(files.len() > 20, "found the libraries' sources: {files:?}");
        let mut found = Vec::new();
        for file in &files {
            // Tests of a library may mention what they like.
            if file.ends_with("tests.rs") {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(file) else {
                continue;
            };
            let code = text
                .split("#[cfg(test)]\nmod tests")
                .next()
                .unwrap_or_default();
            for (n, line) in code.lines().enumerate() {
                let trimmed = line.trim_start();
                if trimmed.starts_with("//") {
                    continue;
                }
                for flag in &pstar_flags {
                    let named = line.match_indices(flag.as_str()).any(|(at, _)| {
                        let after = line[at + flag.len()..].chars().next();
                        let whole = !after.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-');
                        // `"--pilot"` alone is an argument, not a message.
                        let argument = line[..at].ends_with('"') && after == Some('"');
                        whole && !argument
                    });
                    if named {
                        found.push(format!("{}:{}: {flag}: {}", file.display(), n + 1, trimmed));
                    }
                }
            }
        }
        assert!(
            found.is_empty(),
            "library messages name pstar's flags:\n{}",
            found.join("\n")
        );
    }
}
