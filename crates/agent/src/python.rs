//! Function units: Python calls run by workers the pilot keeps.
//!
//! A function unit ([`pstar_model::FunctionCall`]) carries a pickled
//! `(function, args, kwargs)` instead of a program. The agent hands it to one of its
//! pilot's Python workers (`worker.py`, started with the pilot's `python`), which calls it
//! and answers with what it returned or raised, pickled. A worker runs one call at a time
//! and is kept for the next: the executor thread that runs a function unit takes an idle
//! worker (or starts one), so there are at most as many workers as units run at once, one
//! per core, and a call costs no interpreter start.
//!
//! A worker is a process group of its own, so a cancel or a `timeout` stops the call the
//! way it stops a program (the worker is then dropped, not reused). Workers carry the
//! marker `<pilot sandbox>/python-workers` (see [`crate::descendants`]): they are killed
//! with the agent, and they end by themselves at the end of their input when the agent
//! dies. What functions print goes to `<pilot sandbox>/python-workers.log`. The pilot's
//! `pre_exec` lines run before each worker starts (not before each call); the pilot's
//! `environment` is the workers'.

use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use pstar_coordination::PilotRecord;
use pstar_model::MAX_FUNCTION_BYTES;

/// The worker program, written into the pilot's sandbox at the first function unit.
const WORKER: &str = include_str!("worker.py");

/// How long a new worker may take to say it is ready (import cloudpickle).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What a call came to.
pub(crate) enum Answer {
    /// The function returned: the pickled value.
    Returned(Vec<u8>),
    /// The function raised: `type: message`, and the pickled exception and traceback.
    Raised { summary: String, pickled: Vec<u8> },
}

/// The pilot's Python workers.
pub(crate) struct Workers {
    python: String,
    sandbox: PathBuf,
    record: Arc<PilotRecord>,
    idle: Mutex<Vec<Worker>>,
    /// Workers alive, idle or busy.
    live: Arc<AtomicUsize>,
    script: OnceLock<Result<PathBuf, String>>,
    runtime: tokio::runtime::Handle,
}

/// One worker process, ready for a call.
pub(crate) struct Worker {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    live: Arc<AtomicUsize>,
}

impl Worker {
    /// The worker's process (and process group) id.
    pub(crate) fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// How the worker ended, once it has (waiting up to a second for it).
    pub(crate) fn ended(&mut self) -> Option<String> {
        for _ in 0..20 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(
                    match (
                        status.code(),
                        std::os::unix::process::ExitStatusExt::signal(&status),
                    ) {
                        (Some(code), _) => format!("it exited with code {code}"),
                        (None, Some(sig)) => format!("it was killed by signal {sig}"),
                        _ => format!("it ended ({status})"),
                    },
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.pid()), Signal::SIGKILL);
        let _ = self.child.wait();
        self.live.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    pub(crate) fn new(record: Arc<PilotRecord>, runtime: tokio::runtime::Handle) -> Self {
        Self {
            python: record.description.python().to_owned(),
            sandbox: record.sandbox.clone(),
            record,
            idle: Mutex::new(Vec::new()),
            live: Arc::new(AtomicUsize::new(0)),
            script: OnceLock::new(),
            runtime,
        }
    }

    /// The marker the workers carry (their `PSTAR_SANDBOX`).
    pub(crate) fn marker(&self) -> PathBuf {
        self.sandbox.join("python-workers")
    }

    /// Whether any worker is alive (so the orphan sweeper leaves them be).
    pub(crate) fn any_alive(&self) -> bool {
        self.live.load(Ordering::Relaxed) > 0
    }

    /// Where the workers' output goes.
    pub(crate) fn log(&self) -> PathBuf {
        self.sandbox.join("python-workers.log")
    }

    /// Ends the idle workers (the agent is ending).
    pub(crate) fn close(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    /// An idle worker that is still alive (one ends after a call that left it unfit:
    /// its standard streams closed, say), or a new one.
    pub(crate) fn take(&self) -> Result<Worker, String> {
        while let Some(mut w) = self.idle.lock().ok().and_then(|mut idle| idle.pop()) {
            if matches!(w.child.try_wait(), Ok(None)) {
                return Ok(w);
            }
        }
        self.start()
    }

    /// A worker whose call ended normally, kept for the next.
    pub(crate) fn put_back(&self, worker: Worker) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(worker);
        }
    }

    fn script(&self) -> Result<PathBuf, String> {
        self.script
            .get_or_init(|| {
                let path = self.sandbox.join("pstar_worker.py");
                std::fs::create_dir_all(&self.sandbox)
                    .and_then(|()| std::fs::write(&path, WORKER))
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                Ok(path)
            })
            .clone()
    }

    fn start(&self) -> Result<Worker, String> {
        let script = self.script()?;
        let log_path = self.log();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        // The pilot's `pre_exec` lines (module loads, a conda activation) run first, in
        // the shell that then becomes the worker; the interpreter and the worker program
        // are that shell's `$0` and `$1`, never pasted into its line.
        let pre_exec = &self.record.description.pre_exec;
        let mut command = if pre_exec.is_empty() {
            let mut c = Command::new(&self.python);
            c.arg(&script);
            c
        } else {
            let mut c = Command::new("/bin/sh");
            c.arg("-c")
                .arg(format!("{}\nexec \"$0\" \"$1\"", pre_exec.join("\n")))
                .arg(&self.python)
                .arg(&script);
            c
        };
        // No more than a program unit does, a function sees the store's secret.
        for name in crate::launch::SECRET_VARIABLES.iter() {
            command.env_remove(name);
        }
        command
            .current_dir(&self.sandbox)
            .envs(&self.record.description.environment)
            .env("PSTAR_PILOT_ID", self.record.id.to_string())
            .env(crate::descendants::MARKER, self.marker())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command.spawn().map_err(|e| {
            format!(
                "cannot start the pilot's Python `{}` for function units: {e} (set the \
                 pilot's `python`)",
                self.python
            )
        })?;
        self.live.fetch_add(1, Ordering::Relaxed);
        let (Some(input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            self.live.fetch_sub(1, Ordering::Relaxed);
            return Err("the Python worker has no pipes".into());
        };
        let mut worker = Worker {
            child,
            input,
            output: BufReader::with_capacity(1 << 16, output),
            live: self.live.clone(),
        };
        // A worker that hangs while starting is killed; its hello then never comes.
        let pid = worker.pid();
        let deadline = self.runtime.spawn(async move {
            tokio::time::sleep(START_TIMEOUT).await;
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        });
        let mut hello = [0u8; 4];
        let said = worker.output.read_exact(&mut hello);
        deadline.abort();
        if said.is_err() || &hello != b"PSW1" {
            let ended = worker.ended();
            drop(worker);
            let why = last_line(&log_path)
                .or(ended)
                .unwrap_or_else(|| format!("it did not start within {}s", START_TIMEOUT.as_secs()));
            return Err(format!(
                "the pilot's Python `{}` could not run function units: {why} (see {})",
                self.python,
                log_path.display()
            ));
        }
        Ok(worker)
    }
}

/// Sends one call to `worker` and reads its answer (blocking), and whether the worker may
/// take another call (it ends after a call that closed its standard streams, say). An
/// error: the worker died or was killed meanwhile, or answered nonsense; it must not be
/// reused.
pub(crate) fn call(worker: &mut Worker, payload: &[u8]) -> Result<(Answer, bool), String> {
    let n = u32::try_from(payload.len()).map_err(|_| "the call is too big".to_owned())?;
    let sent = worker
        .input
        .write_all(&n.to_le_bytes())
        .and_then(|()| worker.input.write_all(payload))
        .and_then(|()| worker.input.flush());
    if let Err(e) = sent {
        return Err(format!("cannot send the call to the Python worker: {e}"));
    }
    let mut head = [0u8; 5];
    worker
        .output
        .read_exact(&mut head)
        .map_err(|e| format!("no answer from the Python worker: {e}"))?;
    let kind = head[0] & 0x7f;
    let reusable = head[0] & 0x80 == 0;
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FUNCTION_BYTES {
        // The worker still has those bytes to write: it is not reused.
        return Err(format!(
            "what the function returned pickles to {len} bytes: at most {MAX_FUNCTION_BYTES} \
             come back (write large results to files, or through Pilot-Data)"
        ));
    }
    let mut body = vec![0u8; len];
    worker
        .output
        .read_exact(&mut body)
        .map_err(|e| format!("the Python worker's answer was cut short: {e}"))?;
    let answer = match kind {
        0 => Answer::Returned(body),
        1 => {
            // The summary first: `u32 length, text`, then the pickled exception.
            if body.len() < 4 {
                return Err("the Python worker answered nonsense".into());
            }
            let s = u32::from_le_bytes([body[0], body[1], body[2], body[3]]) as usize;
            let end = 4usize.saturating_add(s).min(body.len());
            let summary = String::from_utf8_lossy(&body[4..end]).into_owned();
            let pickled = body[end..].to_vec();
            Answer::Raised { summary, pickled }
        }
        _ => return Err("the Python worker answered nonsense".into()),
    };
    Ok((answer, reusable))
}

/// The last non-empty line of a log, for a message.
fn last_line(path: &Path) -> Option<String> {
    let text = std::fs::read(path).ok()?;
    let tail = &text[text.len().saturating_sub(4096)..];
    String::from_utf8_lossy(tail)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
}
