//! Running units' processes: the executor threads.
//!
//! An agent has one executor thread per unit that runs, started on demand (at most one per
//! core of its pilot: no more units can run at once), and ending when idle for a while.
//! Each takes the unit at the head of the agent's waiting queue when its cores and GPUs are
//! free, forks, execs and waits for it exactly as a plain spawner would, reports it, and
//! takes the next: a slot is refilled the moment its unit ends, without a round through
//! the agent's async tasks. The agent's main loop fills the queue and stops units through
//! their [`UnitControl`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;

use pstar_coordination::{Claimed, Event, PilotRecord, SharedDescription, UnitEvent};
use pstar_model::sandbox::unit_sandbox;
use pstar_model::{PilotId, Timestamp, UnitId, UnitState};

use crate::journal::Reports;
use crate::launch::{Launch, LaunchError};
use crate::layout::Layout;
use crate::python::{Answer, Workers};
use crate::slots::{Placement, Slots};
use crate::stage::Stager;

/// Why a running unit is stopped.
#[derive(Debug, Clone)]
pub(crate) enum Stop {
    /// The application canceled it: it ends `Canceled`.
    Cancel,
    /// Its pilot ends: it goes back to the pool (`New`) to run elsewhere.
    Return(String),
    /// It ran longer than its `timeout`: it ends `Failed`.
    Timeout(Duration),
}

/// How long a unit past its `timeout` gets between SIGTERM and SIGKILL.
const TIMEOUT_GRACE: Duration = Duration::from_secs(5);

/// Shared between a unit's thread and the agent's main loop.
#[derive(Default)]
pub(crate) struct UnitControl {
    process: Mutex<Process>,
}

#[derive(Default)]
struct Process {
    /// The process (and process-group) id, once started.
    pid: Option<i32>,
    /// The process has been reaped: its group id may belong to someone else now.
    reaped: bool,
    stop: Option<Stop>,
}

impl UnitControl {
    /// Sends `sig` to the unit's process group, if it still owns it.
    fn signal(&self, sig: Signal) {
        if let Ok(p) = self.process.lock()
            && let (Some(pid), false) = (p.pid, p.reaped)
        {
            // ESRCH: the group is already gone.
            let _ = killpg(Pid::from_raw(pid), sig);
        }
    }

    /// Stops the unit: SIGTERM to its process group, SIGKILL after `grace`.
    /// The unit's thread reports it `Canceled` or back in the pool, as `stop` says.
    pub(crate) fn stop(self: &Arc<Self>, stop: Stop, grace: Duration) {
        match self.process.lock() {
            Ok(mut p) if !p.reaped => p.stop = Some(stop),
            _ => return,
        }
        // A process still starting is sent SIGTERM by its thread as soon as it exists.
        self.signal(Signal::SIGTERM);
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            me.signal(Signal::SIGKILL);
        });
    }

    /// [`stop`](Self::stop), unless a stop was asked already (a cancel wins over a
    /// timeout that comes after it).
    pub(crate) fn stop_unless_stopped(self: &Arc<Self>, stop: Stop, grace: Duration) {
        let stopped = self.process.lock().map_or(true, |p| p.stop.is_some());
        if !stopped {
            self.stop(stop, grace);
        }
    }

    /// Kills the unit's process group at once (the agent is going away); the unit goes
    /// back to the pool.
    pub(crate) fn kill(&self) {
        if let Ok(mut p) = self.process.lock() {
            p.stop
                .get_or_insert_with(|| Stop::Return("pilot agent stopped".into()));
        }
        self.signal(Signal::SIGKILL);
    }
}

/// One unit to run.
struct UnitJob {
    pub id: UnitId,
    pub record: Arc<PilotRecord>,
    pub desc: SharedDescription,
    pub placement: Placement,
    pub layout: Arc<Layout>,
    pub stager: Arc<Stager>,
    pub runtime: tokio::runtime::Handle,
    pub python: Arc<Workers>,
}

pub(crate) fn unit_event(
    unit: UnitId,
    pilot: PilotId,
    state: UnitState,
    exit_code: Option<i32>,
    detail: Option<String>,
) -> Event {
    Event::Unit(UnitEvent {
        unit,
        pilot: Some(pilot),
        state,
        at: Timestamp::now(),
        exit_code,
        detail,
        lost_run: None,
        failed_run: false,
        result: None,
    })
}

/// How long an executor thread with nothing to run waits before it ends.
const IDLE_END: Duration = Duration::from_secs(5);

/// The queue of claimed units and the slots, shared by the main loop and the executors.
///
/// Executor threads are started on demand, when a unit waits, a core is free and no
/// executor is idle, and end after [`IDLE_END`] without work: there are as many as units
/// run at once (at most one per core), not as many as the pilot declares cores.
pub(crate) struct Executors {
    state: Mutex<Queue>,
    wake: Condvar,
    /// Tells the main loop that the queue ran low or the last unit ended.
    pub(crate) changed: tokio::sync::Notify,
    /// Free cores, readable without the lock.
    free: Arc<AtomicU32>,
    record: Arc<PilotRecord>,
    layout: Arc<Layout>,
    events: Reports,
    /// Stores units' output data (on the agent's runtime).
    stager: Arc<Stager>,
    runtime: tokio::runtime::Handle,
    /// The Python workers of its function units.
    pub(crate) python: Arc<Workers>,
}

pub(crate) struct Queue {
    pub(crate) slots: Slots,
    /// Claimed units waiting for slots, in claim order; started strictly in that order.
    pub(crate) pending: VecDeque<Claimed>,
    pub(crate) pending_cores: u32,
    pub(crate) running: HashMap<UnitId, Arc<UnitControl>>,
    /// The agent is ending: executors exit.
    pub(crate) closed: bool,
    /// The store cannot be reached: units that wait are not started (those that run go
    /// on), so that no unit runs whose end could not be told.
    pub(crate) paused: bool,
    /// When waiting units fall below this many cores, the main loop is told to claim more.
    pub(crate) refill_below: u32,
    /// When the pilot's walltime ends: a unit whose `time_request` does not fit in what
    /// is left is given back, not started.
    pub(crate) ends_at: Option<std::time::Instant>,
    /// Units given back to the pool (for a pilot with idle cores, or for lack of
    /// walltime here): the manager may bind one here again, and that claim is no copy.
    pub(crate) given_back: std::collections::HashSet<UnitId>,
    /// Executor threads alive, and how many of them wait for work.
    threads: u32,
    idle: u32,
}

impl Executors {
    /// The pilot's executors, none started yet.
    /// `free` mirrors how many of the pilot's cores are free.
    pub(crate) fn new(
        record: Arc<PilotRecord>,
        layout: Arc<Layout>,
        events: Reports,
        free: Arc<AtomicU32>,
        stager: Arc<Stager>,
    ) -> Arc<Self> {
        let d = &record.description;
        Arc::new(Self {
            state: Mutex::new(Queue {
                slots: Slots::on_nodes(&layout.cores, &gpus_on_nodes(d.gpus, layout.cores.len())),
                pending: VecDeque::new(),
                pending_cores: 0,
                running: HashMap::new(),
                closed: false,
                paused: false,
                refill_below: d.cores.saturating_mul(2),
                ends_at: None,
                given_back: std::collections::HashSet::new(),
                threads: 0,
                idle: 0,
            }),
            wake: Condvar::new(),
            changed: tokio::sync::Notify::new(),
            free,
            layout,
            events,
            stager,
            python: Arc::new(Workers::new(
                record.clone(),
                tokio::runtime::Handle::current(),
            )),
            record,
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// Works on the queue under its lock; wakes the executors afterwards, starting one if
    /// a unit could start and none is idle.
    pub(crate) fn with<T>(self: &Arc<Self>, f: impl FnOnce(&mut Queue) -> T) -> Option<T> {
        let out = self.state.lock().ok().map(|mut q| {
            let out = f(&mut q);
            self.grow(&mut q);
            out
        });
        self.wake.notify_all();
        out
    }

    /// The sandboxes of the units that run now.
    pub(crate) fn running_sandboxes(&self) -> std::collections::HashSet<std::path::PathBuf> {
        let mut running: std::collections::HashSet<_> = self
            .state
            .lock()
            .map(|q| {
                q.running
                    .keys()
                    .map(|id| unit_sandbox(&self.record.sandbox, *id))
                    .collect()
            })
            .unwrap_or_default();
        if self.python.any_alive() {
            running.insert(self.python.marker());
        }
        running
    }

    /// Starts an executor thread if a unit waits, a core is free and no executor is idle.
    fn grow(self: &Arc<Self>, q: &mut Queue) {
        let wanted = !q.closed
            && !q.paused
            && q.idle == 0
            && !q.pending.is_empty()
            && q.slots.free_cores() > 0
            && q.threads < self.record.description.cores;
        if !wanted {
            return;
        }
        let me = self.clone();
        let started = std::thread::Builder::new()
            .name("pstar-exec".into())
            // Small stacks: a busy pilot of thousands of cores has thousands of executors.
            .stack_size(256 * 1024)
            .spawn(move || me.serve());
        match started {
            Ok(_) => q.threads += 1,
            // The units wait for an executor that ends its unit; tried again at the next
            // change.
            Err(e) => {
                tracing::error!(threads = q.threads, error = %e, "cannot start an executor thread")
            }
        }
    }

    /// One executor: take the head unit when it fits, run it, repeat; end when idle.
    fn serve(self: Arc<Self>) {
        let (record, layout, events) = (&self.record, &self.layout, &self.events);
        loop {
            let Ok(mut q) = self.state.lock() else { return };
            let (job, control) = loop {
                if q.closed {
                    q.threads -= 1;
                    return;
                }
                let head = q.pending.front().map(|(_, d)| (d.cores, d.gpus, d.mpi));
                // A unit bigger than any node (and not MPI) would block the queue forever.
                if let Some((c, g, mpi)) = head
                    && !q.slots.fits_ever(c, g, mpi)
                    && let Some((id, desc)) = q.pending.pop_front()
                {
                    q.pending_cores -= desc.cores;
                    let most = layout.cores.iter().max().copied().unwrap_or(0);
                    let gpus = gpus_on_nodes(record.description.gpus, layout.cores.len());
                    let most_gpus = gpus.iter().max().copied().unwrap_or(0);
                    let n = |k: u32, noun| pstar_model::plural(u64::from(k), noun);
                    let detail = format!(
                        "needs {} and {} on one node; this pilot's nodes have at most {} and \
                         {} (set `ranks` for an MPI unit that may span nodes)",
                        n(c, "core"),
                        n(g, "GPU"),
                        n(most, "core"),
                        n(most_gpus, "GPU")
                    );
                    let _ = events.send(unit_event(
                        id,
                        record.id,
                        UnitState::Failed,
                        None,
                        Some(detail),
                    ));
                    continue;
                }
                // Its inputs changed in the cache since they were staged (a unit that ran
                // meanwhile wrote through its links): back to the pool, to be staged
                // afresh, rather than run on what another unit left.
                let spoiled = q.pending.front().and_then(|(_, d)| {
                    if d.input_data.is_empty() {
                        return None;
                    }
                    self.stager.inputs_intact(d).err()
                });
                if let Some(why) = spoiled
                    && let Some((id, desc)) = q.pending.pop_front()
                {
                    q.pending_cores -= desc.cores;
                    q.given_back.insert(id);
                    let _ = events.send(unit_event(id, record.id, UnitState::New, None, Some(why)));
                    continue;
                }
                // A unit that says it needs more time than the walltime left here would be
                // cut short: it goes back to the pool for a pilot with time.
                let short = q.pending.front().and_then(|(_, d)| {
                    let need = d.time_request?;
                    let left = q
                        .ends_at?
                        .saturating_duration_since(std::time::Instant::now());
                    (need > left).then_some((need, left))
                });
                if let Some((need, left)) = short
                    && let Some((id, desc)) = q.pending.pop_front()
                {
                    q.pending_cores -= desc.cores;
                    q.given_back.insert(id);
                    let detail = format!(
                        "needs {} of run time (time_request) and {} has {} of walltime left",
                        humantime::format_duration(need),
                        record.id,
                        humantime::format_duration(std::time::Duration::from_secs(left.as_secs()))
                    );
                    let _ = events.send(unit_event(
                        id,
                        record.id,
                        UnitState::New,
                        None,
                        Some(detail),
                    ));
                    continue;
                }
                let placed = head
                    .filter(|_| !q.paused)
                    .and_then(|(c, g, mpi)| q.slots.take(c, g, mpi));
                if let Some(placement) = placed {
                    let Some((id, desc)) = q.pending.pop_front() else {
                        continue;
                    };
                    q.pending_cores -= desc.cores;
                    self.free.store(q.slots.free_cores(), Ordering::Relaxed);
                    let control = Arc::new(UnitControl::default());
                    q.running.insert(id, control.clone());
                    break (
                        UnitJob {
                            id,
                            record: record.clone(),
                            desc,
                            placement,
                            layout: layout.clone(),
                            stager: self.stager.clone(),
                            runtime: self.runtime.clone(),
                            python: self.python.clone(),
                        },
                        control,
                    );
                }
                q.idle += 1;
                let waited = self.wake.wait_timeout(q, IDLE_END);
                q = match waited {
                    Ok((mut q, timeout)) => {
                        q.idle -= 1;
                        // Idle for long, with nothing it could start: end.
                        if timeout.timed_out() && !q.closed && (q.pending.is_empty() || q.paused) {
                            q.threads -= 1;
                            return;
                        }
                        q
                    }
                    Err(_) => return,
                };
            };
            // Crossing the mark, not being under it: one wake-up per refill, not per unit.
            let low = q.pending_cores < q.refill_below
                && q.pending_cores + job.desc.cores >= q.refill_below;
            // Others may start too (a freed multi-core head, say).
            self.grow(&mut q);
            drop(q);
            if low {
                self.changed.notify_one();
            }
            self.wake.notify_all();

            let id = job.id;
            let placement = job.placement.clone();
            // A failed run given back to be tried again may come back to this agent.
            let given_back = |unit| {
                if let Ok(mut q) = self.state.lock() {
                    q.given_back.insert(unit);
                }
            };
            run(job, &control, events, &given_back);

            let Ok(mut q) = self.state.lock() else { return };
            q.running.remove(&id);
            q.slots.give_back(placement);
            self.free.store(q.slots.free_cores(), Ordering::Relaxed);
            let idle = q.running.is_empty();
            drop(q);
            self.wake.notify_all();
            if idle {
                self.changed.notify_one();
            }
        }
    }
}

/// Runs the unit to its end; blocking. Reports `Running` and the final state on `events`;
/// calls `given_back` before it reports a failed run given back to be tried again.
fn run(job: UnitJob, control: &Arc<UnitControl>, events: &Reports, given_back: &dyn Fn(UnitId)) {
    let (id, pilot) = (job.id, job.record.id);
    let desc = job.desc.clone();
    // A function unit's answer, carried by its final report.
    let answer: Mutex<Option<Vec<u8>>> = Mutex::new(None);
    let report = |state: UnitState, exit_code, detail| {
        let mut e = unit_event(id, pilot, state, exit_code, detail);
        // (Also on a failed run given back: if it was the last try, its exception is the
        // unit's.)
        if let Event::Unit(u) = &mut e {
            u.result = answer.lock().ok().and_then(|mut a| a.take());
        }
        // A failed run of a unit with retries goes back to be tried again; the manager
        // counts the failed runs and ends the unit when they are used up.
        if state == UnitState::Failed
            && desc.retries_exit(exit_code)
            && let Event::Unit(u) = &mut e
        {
            u.state = UnitState::New;
            u.failed_run = true;
            given_back(id);
        }
        let _ = events.send(e);
    };
    let ran = match &job.desc.function {
        Some(call) => execute_function(&job, control, &report, &call.payload, &answer),
        None => execute(&job, control, &report),
    };
    if let Err(e) = ran {
        let msg = e.to_string();
        // Also where a user looks first.
        let sandbox = unit_sandbox(&job.record.sandbox, id);
        let _ = std::fs::write(job.desc.stderr_path(&sandbox), format!("pstar: {msg}\n"));
        report(UnitState::Failed, None, Some(msg));
    }
}

/// Reports a unit that was stopped (`stop`), as the stop says.
fn report_stopped(stop: Option<Stop>, report: &dyn Fn(UnitState, Option<i32>, Option<String>)) {
    match stop {
        Some(Stop::Cancel) => report(UnitState::Canceled, None, Some("canceled".into())),
        Some(Stop::Return(why)) => report(UnitState::New, None, Some(why)),
        Some(Stop::Timeout(after)) => report(
            UnitState::Failed,
            None,
            Some(format!(
                "timeout after {}",
                humantime::format_duration(after)
            )),
        ),
        None => {}
    }
}

/// Runs a function unit's call on one of the pilot's Python workers; blocking. The
/// worker's answer goes into `answer` for the final report.
fn execute_function(
    job: &UnitJob,
    control: &Arc<UnitControl>,
    report: &dyn Fn(UnitState, Option<i32>, Option<String>),
    payload: &[u8],
    answer: &Mutex<Option<Vec<u8>>>,
) -> Result<(), LaunchError> {
    if let Some(stop) = control.process.lock().ok().and_then(|p| p.stop.clone()) {
        report_stopped(Some(stop), report);
        return Ok(());
    }
    let mut worker = match job.python.take() {
        Ok(w) => w,
        Err(why) => {
            report(UnitState::Failed, None, Some(why));
            return Ok(());
        }
    };
    let stop_pending = match control.process.lock() {
        Ok(mut p) => {
            p.pid = Some(worker.pid());
            p.stop.is_some()
        }
        Err(_) => false,
    };
    if stop_pending {
        // Stopped before the call was sent: the worker did nothing, and is kept.
        let stop = control.process.lock().ok().and_then(|mut p| {
            p.reaped = true;
            p.stop.take()
        });
        job.python.put_back(worker);
        report_stopped(stop, report);
        return Ok(());
    }
    report(UnitState::Running, None, None);
    let watchdog = job.desc.timeout.map(|after| {
        let control = control.clone();
        job.runtime.spawn(async move {
            tokio::time::sleep(after).await;
            control.stop_unless_stopped(Stop::Timeout(after), TIMEOUT_GRACE);
        })
    });
    let called = crate::python::call(&mut worker, payload);
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    // From here on the worker is no longer the unit's: no stop may signal it.
    let stop = control.process.lock().ok().and_then(|mut p| {
        p.reaped = true;
        p.stop.take()
    });
    if stop.is_some() {
        // It may have been signalled: not reused.
        drop(worker);
        report_stopped(stop, report);
        return Ok(());
    }
    let answer_given = match called {
        Ok((given, reusable)) => {
            if reusable {
                job.python.put_back(worker);
            }
            given
        }
        Err(why) => {
            let pid = worker.pid();
            let ended = worker
                .ended()
                .map(|how| format!(" ({how}: the function may have called os._exit, or crashed)"))
                .unwrap_or_default();
            drop(worker);
            report(
                UnitState::Failed,
                None,
                Some(format!(
                    "the Python worker (process {pid}) was lost during the call{ended}: {why}; \
                     see {}",
                    job.python.log().display()
                )),
            );
            return Ok(());
        }
    };
    match answer_given {
        Answer::Returned(value) => {
            if let Ok(mut a) = answer.lock() {
                *a = Some(value);
            }
            report(UnitState::Done, Some(0), None);
        }
        Answer::Raised { summary, pickled } => {
            if let Ok(mut a) = answer.lock() {
                *a = Some(pickled);
            }
            report(
                UnitState::Failed,
                Some(1),
                Some(format!("raised {summary}")),
            );
        }
    }
    Ok(())
}

fn execute(
    job: &UnitJob,
    control: &Arc<UnitControl>,
    report: &dyn Fn(UnitState, Option<i32>, Option<String>),
) -> Result<(), LaunchError> {
    let stopped = |stop: Option<Stop>| report_stopped(stop, report);
    if let Some(stop) = control.process.lock().ok().and_then(|p| p.stop.clone()) {
        stopped(Some(stop));
        return Ok(());
    }

    let sandbox = unit_sandbox(&job.record.sandbox, job.id);
    let launcher = job.layout.prefix(&job.placement, job.desc.mpi);
    let launch = Launch {
        unit: job.id,
        pilot: job.record.id,
        description: &job.desc,
        pilot_environment: &job.record.description.environment,
        pilot_pre_exec: &job.record.description.pre_exec,
        sandbox: &sandbox,
        gpus: &job.placement.gpu_ids(),
        pilot_gpus: job.record.description.gpus,
        launcher: launcher.as_deref(),
    };
    let mut child = launch
        .prepare()?
        .spawn()
        .map_err(|e| launch.spawn_error(e))?;
    let pid = child.id() as i32;
    report(UnitState::Running, None, None);
    // A stop that came while the process was starting is carried out here.
    let stop_pending = match control.process.lock() {
        Ok(mut p) => {
            p.pid = Some(pid);
            p.stop.is_some()
        }
        Err(_) => false,
    };
    if stop_pending {
        control.signal(Signal::SIGTERM);
    }
    // Its `timeout`: a watchdog on the agent's runtime stops the whole process group.
    let watchdog = job.desc.timeout.map(|after| {
        let control = control.clone();
        job.runtime.spawn(async move {
            tokio::time::sleep(after).await;
            control.stop_unless_stopped(Stop::Timeout(after), TIMEOUT_GRACE);
        })
    });

    // Wait for the leader to exit without reaping it, so that its group id stays ours
    // while we kill whatever it left running in the group; mark it reaped (no one may
    // signal the group any more), then reap it.
    let exited = loop {
        match waitid(
            Id::Pid(Pid::from_raw(pid)),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other.is_ok(),
        }
    };
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    let stop = match control.process.lock() {
        Ok(mut p) => {
            // Only while the exited leader still holds the group id.
            if exited {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            p.reaped = true;
            p.stop.take()
        }
        Err(_) => None,
    };
    let status = child.wait();
    if stop.is_some() {
        stopped(stop);
        return Ok(());
    }
    let status = status.map_err(|source| LaunchError::Wait { source })?;
    let stderr = job.desc.stderr_path(&sandbox);
    match (
        status.success(),
        status.code(),
        std::os::unix::process::ExitStatusExt::signal(&status),
    ) {
        (true, _, _) if !job.desc.output_data.is_empty() => {
            report(UnitState::StagingOutput, None, None);
            match job
                .runtime
                .block_on(job.stager.stage_out(job.id, &job.desc))
            {
                Ok(_) => report(UnitState::Done, Some(0), None),
                Err(why) => {
                    let _ = std::fs::OpenOptions::new()
                        .append(true)
                        .create(true)
                        .open(&stderr)
                        .and_then(|mut f| {
                            std::io::Write::write_all(&mut f, format!("pstar: {why}\n").as_bytes())
                        });
                    report(UnitState::Failed, Some(0), Some(why))
                }
            }
        }
        (true, _, _) => report(UnitState::Done, Some(0), None),
        (false, Some(code), _) => report(
            UnitState::Failed,
            Some(code),
            Some(format!("exit code {code}; see {}", stderr.display())),
        ),
        (false, None, Some(sig)) => report(
            UnitState::Failed,
            None,
            Some(format!("killed by signal {sig}; see {}", stderr.display())),
        ),
        (false, None, None) => report(
            UnitState::Failed,
            None,
            Some(format!("ended abnormally; see {}", stderr.display())),
        ),
    }
    Ok(())
}

/// The GPUs of each of a pilot's `nodes` nodes: its `gpus` spread evenly (a description
/// with `nodes` must divide them evenly), or all on the agent's node when they cannot be
/// (the batch system put a pilot that did not ask for nodes on several).
fn gpus_on_nodes(gpus: u32, nodes: usize) -> Vec<u32> {
    let n = u32::try_from(nodes).unwrap_or(u32::MAX).max(1);
    if gpus.is_multiple_of(n) {
        vec![gpus / n; nodes.max(1)]
    } else {
        tracing::warn!(
            gpus,
            nodes,
            "GPUs not a multiple of the nodes: all on the agent's node"
        );
        let mut on = vec![0; nodes];
        on[0] = gpus;
        on
    }
}
