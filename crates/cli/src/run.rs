//! `pstar run WORKLOAD.toml`: create the workload's pilots, submit its units, wait, report.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use pstar::{
    ComputeDataService, ComputeUnit, ComputeUnitService, PilotComputeService, PilotDataService,
    Session, Settings, State, UnitPolicy,
};

use crate::count;
use crate::progress;
use crate::report::{DataSummary, DataUnitReport, ReportFile, Summary, Tally};
use crate::workload::Workload;

/// Options of one run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Write the JSON report here.
    pub report: Option<PathBuf>,
    /// No progress display.
    pub quiet: bool,
    /// The run's settings, every layer applied ([`crate::settings::layered`]): the store's
    /// URL (the embedded store if `None`), the sandbox root, the policy of its units, its
    /// agents' settings...
    pub settings: Settings,
}

impl RunOptions {
    /// The session builder with these options' settings.
    fn configure(&self, builder: pstar::SessionBuilder) -> pstar::SessionBuilder {
        builder.settings(self.settings.clone())
    }

    fn policy(&self) -> UnitPolicy {
        UnitPolicy::from(&self.settings)
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
    /// Interrupted (Ctrl-C, SIGTERM): units were canceled, or killed with their pilots.
    Interrupted(Summary),
    /// The coordination store was lost for good (unreachable past its retries, or it no
    /// longer holds the session): the reason, and what was known then.
    StoreLost { reason: String, summary: Summary },
}

/// Units submitted at once, and the fewest units allowed in flight (submitted and not
/// ended): a workload of millions of units is expanded and submitted as the earlier ones
/// end, so memory grows with the units in flight, not with the size of the workload. The
/// window is twice what the pilots can hold with their prefetch, and at least this.
const SUBMIT_BATCH: usize = 5_000;
const MIN_IN_FLIGHT: usize = 20_000;

/// The pilot store of data units in a workload that declares none, and its directory
/// under the sandbox root.
pub const DEFAULT_STORE: &str = "sandbox";
pub const DEFAULT_STORE_DIR: &str = "pstar.data";

/// After a first Ctrl-C, how long the units get to be canceled through their agents
/// before their pilots are killed.
const CANCEL_GRACE: Duration = Duration::from_secs(60);

/// How long marking the session finished in the store may take.
const FINISH_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `workload` to the end and reports on it.
pub async fn run(workload: Workload, options: &RunOptions) -> Result<Outcome, RunError> {
    let id = pstar::new_session_id();
    let mut builder = options.configure(Session::builder().id(&id));
    if let Some(url) = &options.settings.coordination {
        builder = builder.coordination(crate::store::connect(url, &id).await?);
    } else {
        // The agents are tasks of this process, which starts no child of its own.
        pstar_agent::descendants::adopt_all_orphans();
    }
    let report = open_report(options)?;
    let session = builder.build().await?;
    let total = workload.unit_count();
    // Where the sandboxes go: under the sandbox root, or a pilot's own working directory
    // (on its host, for pilots elsewhere).
    let mut places: Vec<String> = Vec::new();
    for p in &workload.pilots {
        let place = match p.resource.host() {
            Some(host) if pstar_adaptors::Capabilities::of(p.resource.scheme()).remote_paths => {
                // Relative to the home directory there, unless absolute.
                let dir = p
                    .working_directory
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("pstar.sandbox"));
                format!("{host}:{}", dir.join(session.id()).display())
            }
            _ => pstar_adaptors::local_root(p, session.sandbox_root())
                .join(session.id())
                .display()
                .to_string(),
        };
        if !places.contains(&place) {
            places.push(place);
        }
    }
    say!(
        "pstar: session {} ({}, {}); sandboxes in {}",
        session.id(),
        count(workload.pilots.len(), "pilot"),
        count(total, "unit"),
        places.join(", "),
    );

    let pcs = PilotComputeService::new(&session);
    let cus = ComputeUnitService::with_policy(&session, options.policy());
    cus.add_pilot_service(&pcs);
    let ended = cus.hand_over_finished();
    let submissions = cus.accept_submissions();
    let uses_data = workload.uses_data();
    let mut tally = Tally::new(session.id(), report);
    if uses_data {
        tally = tally.with_data(&session);
    }
    let mut pilots = Vec::with_capacity(workload.pilots.len());
    // The pilot stores first: a store that cannot be reached ends the run before any
    // pilot is submitted.
    let pds = PilotDataService::new(&session);
    let mut stores = workload.pilot_data.clone();
    if stores.is_empty() && !workload.data_units.is_empty() {
        // Data units without a pilot store go to a directory under the sandbox root.
        stores.push(pstar::PilotDataDescription {
            name: DEFAULT_STORE.into(),
            url: format!(
                "file://{}",
                std::path::absolute(session.sandbox_root())
                    .unwrap_or_else(|_| session.sandbox_root().to_owned())
                    .join(DEFAULT_STORE_DIR)
                    .display()
            ),
            size: None,
            affinity: Default::default(),
        });
    }
    for description in &stores {
        if let Err(e) = pds.create_pilot_data(description.clone()).await {
            let summary = tally.summary(total, None);
            tally.finish_report(&summary, &pcs.pilots());
            return Err(e.into());
        }
    }
    for description in &workload.pilots {
        match pcs.create_pilot(description.clone()).await {
            Ok(p) => pilots.push(p),
            Err(e) => {
                // What was made is ended, and the report says so.
                pcs.cancel().await;
                let summary = tally.summary(total, None);
                tally.finish_report(&summary, &pcs.pilots());
                return Err(e.into());
            }
        }
    }
    let pilot_ids: Vec<pstar::PilotId> = pilots.iter().map(|p| p.id()).collect();
    let held: usize = pcs
        .pilots()
        .iter()
        .map(|p| p.description().cores as usize)
        .sum();
    let prefetch = options.policy().prefetch as usize;
    let in_flight = held
        .saturating_mul(prefetch.saturating_add(1))
        .saturating_mul(2)
        .max(MIN_IN_FLIGHT);
    // The workload's units are made one by one as they are submitted.
    let pds_kept = pds.clone();
    let target = if uses_data {
        Target::Data(ComputeDataService::new(&cus, &pds))
    } else {
        Target::Units(cus.clone())
    };
    let exports: Exports = Default::default();
    let exporting = exports.clone();
    let protected: Vec<PathBuf> = [Some(workload.path.clone()), options.report.clone()]
        .into_iter()
        .flatten()
        .collect();
    let stops = MaxFails::new(&workload);
    let submit_stops = stops.clone();
    let submitter = tokio::spawn(async move {
        if let Target::Data(cds) = &target {
            // Placed one after the other; units that read one that fails, fail naming it.
            for d in &workload.data_units {
                if let Err(e) = cds.submit_data_unit(d.clone()).await {
                    say!("pstar: {e}");
                }
            }
        }
        // Every unit's id is known before any is submitted, so that a unit can name the
        // units it runs after (each submitted before it) whichever batch they are in.
        let ids = match target.units().reserve_unit_ids(total as u64).await {
            Ok(ids) => ids,
            Err(e) => return (0, Some(e)),
        };
        let first = ids.next().map_or(0, |id| id.get());
        let descriptions = workload.units().map(|u| {
            let table = u.ensemble;
            let mut d = u.description;
            d.pilot = u.pilot.and_then(|i| pilot_ids.get(i)).copied();
            d.after = u
                .after
                .iter()
                .map(|p| pstar::UnitId::new(first + p))
                .collect();
            for o in &d.output_data {
                if let Some(dir) = &o.export
                    && let Ok(mut e) = exporting.lock()
                {
                    e.push((o.name.clone(), dir.clone()));
                }
            }
            (d, table)
        });
        submit_all(target, ids, descriptions, in_flight, submit_stops).await
    });
    let run = Run {
        session,
        pcs,
        cus,
        total,
        tally,
        resumed: None,
        killed: false,
        exports: uses_data.then_some(exports),
        pds: Some(pds_kept),
        protected,
        stops,
        submissions: Some(submissions),
    };
    run.drive(ended, Some(submitter), options).await
}

/// Whether `a` and `b` name one existing file.
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Output data units to export when the run ends, and where to.
type Exports = std::sync::Arc<std::sync::Mutex<Vec<(String, PathBuf)>>>;

/// Where a run's units go: a plain compute unit service, or one that also takes data.
enum Target {
    Units(ComputeUnitService),
    Data(ComputeDataService),
}

impl Target {
    fn units(&self) -> &ComputeUnitService {
        match self {
            Target::Units(cus) => cus,
            Target::Data(cds) => cds.units(),
        }
    }

    async fn submit(
        &self,
        ids: &mut pstar::ReservedIds,
        batch: Vec<pstar::ComputeUnitDescription>,
    ) -> pstar::Result<Vec<ComputeUnit>> {
        match self {
            Target::Units(cus) => cus.submit_reserved(ids, batch).await,
            Target::Data(cds) => cds.submit_reserved(ids, batch).await,
        }
    }
}

/// The `[[unit]]` tables with `max_fails`: which units are theirs, and how many of them
/// have failed. Once a table's count is reached, its other units are canceled, those
/// submitted later as soon as they are.
struct MaxFails {
    /// Per table: its `max_fails`, if it has one.
    limit: Vec<Option<u32>>,
    /// Per table: its units submitted so far, and how many failed.
    units: Vec<Vec<pstar::UnitId>>,
    failed: Vec<u32>,
    of: std::collections::HashMap<pstar::UnitId, usize>,
}

type Stops = std::sync::Arc<std::sync::Mutex<MaxFails>>;

impl MaxFails {
    fn new(workload: &Workload) -> Option<Stops> {
        let limit: Vec<Option<u32>> = workload.ensembles.iter().map(|e| e.max_fails).collect();
        limit.iter().any(Option::is_some).then(|| {
            std::sync::Arc::new(std::sync::Mutex::new(MaxFails {
                units: vec![Vec::new(); limit.len()],
                failed: vec![0; limit.len()],
                limit,
                of: Default::default(),
            }))
        })
    }

    fn reason(&self, table: usize) -> String {
        let n = self.limit[table].unwrap_or_default();
        format!(
            "{} of its [[unit]] table failed (max_fails = {n})",
            crate::count(n as usize, "unit")
        )
    }

    fn stopped(&self, table: usize) -> bool {
        self.limit[table].is_some_and(|n| self.failed[table] >= n)
    }

    /// Unit `id` of `table` was submitted: whether its table has stopped.
    fn submitted(&mut self, id: pstar::UnitId, table: usize) -> Option<String> {
        self.limit[table]?;
        self.units[table].push(id);
        self.of.insert(id, table);
        self.stopped(table).then(|| self.reason(table))
    }

    /// A unit ended: the units to cancel, and why, if its table just stopped.
    fn ended(&mut self, unit: &ComputeUnit) -> Option<(Vec<pstar::UnitId>, String)> {
        let table = self.of.remove(&unit.id())?;
        if unit.state() != pstar::UnitState::Failed || self.stopped(table) {
            return None;
        }
        self.failed[table] += 1;
        self.stopped(table)
            .then(|| (std::mem::take(&mut self.units[table]), self.reason(table)))
    }
}

/// Submits `descriptions` (each with its `[[unit]]` table) in batches with the ids of
/// `ids`, in order, keeping at most `in_flight` units not ended; returns how many it
/// submitted (or the error that stopped it, with that count).
async fn submit_all(
    target: Target,
    mut ids: pstar::ReservedIds,
    descriptions: impl Iterator<Item = (pstar::ComputeUnitDescription, usize)>,
    in_flight: usize,
    stops: Option<Stops>,
) -> (usize, Option<pstar::Error>) {
    let cus = target.units();
    let mut descriptions = descriptions.peekable();
    let mut submitted = 0usize;
    let mut counts = cus.watch_counts();
    while descriptions.peek().is_some() {
        let room = in_flight.saturating_sub(SUBMIT_BATCH);
        let closed = counts
            .wait_for(|c| submitted.saturating_sub(c.finished()) <= room)
            .await
            .is_err();
        if closed {
            return (submitted, Some(pstar::Error::ServiceClosed));
        }
        let (batch, tables): (Vec<_>, Vec<usize>) =
            descriptions.by_ref().take(SUBMIT_BATCH).unzip();
        let n = batch.len();
        let units = match target.submit(&mut ids, batch).await {
            Ok(units) => units,
            Err(e) => return (submitted, Some(e)),
        };
        submitted += n;
        // Units of a table that already stopped (max_fails) are canceled at once.
        if let Some(stops) = &stops
            && let Ok(mut stops) = stops.lock()
        {
            let mut cancel: Vec<(pstar::UnitId, String)> = Vec::new();
            for (u, table) in units.iter().zip(tables) {
                if let Some(why) = stops.submitted(u.id(), table) {
                    cancel.push((u.id(), why));
                }
            }
            for (id, why) in cancel {
                cus.cancel_units(vec![id], why);
            }
        }
    }
    (submitted, None)
}

/// Opens the report's temporary file, if one is asked for.
fn open_report(options: &RunOptions) -> Result<Option<ReportFile>, RunError> {
    match &options.report {
        None => Ok(None),
        Some(path) => ReportFile::create(path)
            .map(Some)
            .map_err(|source| RunError::Report {
                path: path.clone(),
                source,
            }),
    }
}

/// Why a run could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{}", crate::settings::explain(.0))]
    Pstar(#[from] pstar::Error),
    #[error("cannot write the report {}: {source}", path.display())]
    Report {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "session {0} has a live manager (it recorded itself alive moments ago): \
         `--resume` is for a session whose manager has died; see it with \
         `pstar status --session {0}`, stop it with `pstar cancel --session {0} --all`"
    )]
    LiveManager(String),
    #[error("session {session} belongs to {owner}, not to {me}: only its owner can resume it")]
    NotOwner {
        session: String,
        owner: String,
        me: String,
    },
}

impl From<pstar_coordination::CoordinationError> for RunError {
    fn from(e: pstar_coordination::CoordinationError) -> Self {
        RunError::Pstar(e.into())
    }
}

/// Picks up session `id` from the store at `options.settings.coordination` after its manager died,
/// and carries it to the end like [`run`]. Units already finished are not run again. If no
/// pilot of the session is alive any more, pilots like the session's first ones are
/// started.
pub async fn resume(
    id: &str,
    rerun: &[pstar::UnitState],
    options: &RunOptions,
) -> Result<Outcome, RunError> {
    let Some(url) = &options.settings.coordination else {
        return Err(pstar_coordination::CoordinationError::Unsupported(
            "resuming a session needs its --coordination URL (a Redis)".into(),
        )
        .into());
    };
    let report = open_report(options)?;
    let store = crate::store::open_existing(url, id).await?;
    // Only its owner carries a session on (its units run as whoever resumes it).
    let owner = store.session_entry().await?.owner;
    let me = pstar_coordination::redis::current_user();
    if owner != me {
        return Err(RunError::NotOwner {
            session: id.to_owned(),
            owner,
            me,
        });
    }
    // One manager per session: a live one's record lasts a few seconds after it dies.
    let deadline = tokio::time::Instant::now() + pstar::MANAGER_ALIVE_FOR + Duration::from_secs(1);
    // Nothing is written for a session that is not there (the claim below writes).
    if !store.exists().await? {
        return Err(pstar::Error::NoSuchSession(id.to_owned()).into());
    }
    // Taken in one step: of two resumes started at once, one manages the session.
    while !store.claim_manager(pstar::MANAGER_ALIVE_FOR).await? {
        if tokio::time::Instant::now() >= deadline {
            return Err(RunError::LiveManager(id.to_owned()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut builder = options.configure(Session::builder().id(id).coordination(store.clone()));
    // New pilots go where the session's first ones went, unless --sandbox says otherwise.
    if options.settings.origin("sandbox") == &pstar::Origin::Default
        && let Some(root) = pstar_coordination::Coordination::all_pilots(&*store)
            .await?
            .iter()
            .filter(|r| r.description.working_directory.is_none())
            .filter(|r| r.description.resource.scheme() == pstar::Scheme::Local)
            .find_map(|r| Some(r.sandbox.parent()?.parent()?.to_owned()))
    {
        builder = builder.sandbox_root(root);
    }
    let resumed = pstar::resume_rerunning(builder, options.policy(), rerun).await?;
    let (session, pcs, cus) = (resumed.session, resumed.pilots, resumed.units);
    let resumed_submissions = resumed.submissions;
    let counts = cus.counts();
    let alive = pcs
        .pilots()
        .iter()
        .filter(|p| !p.state().is_final())
        .count();
    say!(
        "pstar: resumed session {}: {} ({} finished), {} of {} alive",
        session.id(),
        count(counts.total(), "unit"),
        counts.finished(),
        alive,
        count(pcs.pilots().len(), "pilot"),
    );
    if alive == 0 && counts.finished() < counts.total() {
        // Like the session's own pilots: not like those an earlier resume started too.
        let own: Vec<&pstar_coordination::PilotRecord> = resumed
            .records
            .iter()
            .filter(|r| r.restart_of.is_none())
            .collect();
        say!(
            "pstar: starting {} like the session's first ones",
            count(own.len(), "new pilot")
        );
        for record in own {
            pcs.restart_pilot(record).await?;
        }
    }
    // Units that ended before are folded in now; the rest as they end.
    let ended = cus.hand_over_finished();
    let units = cus.units();
    let total = units.len();
    // A session with Pilot-Data carries on with its exports and data summary.
    let mut exported: Vec<(String, PathBuf)> = Vec::new();
    let mut uses_data = false;
    for u in &units {
        let d = u.description();
        uses_data |= !d.input_data.is_empty() || !d.output_data.is_empty();
        exported.extend(
            d.output_data
                .iter()
                .filter_map(|o| o.export.clone().map(|dir| (o.name.clone(), dir))),
        );
    }
    let mut tally = Tally::new(session.id(), report);
    if uses_data {
        tally = tally.with_data(&session);
    }
    let before = units.iter().filter(|u| u.state().is_final()).count();
    for u in units.iter().filter(|u| u.state().is_final()) {
        tally.add(u);
    }
    drop(units);
    let run = Run {
        session,
        pcs,
        cus,
        total,
        tally,
        resumed: Some((Instant::now(), before)),
        killed: false,
        exports: uses_data.then(|| std::sync::Arc::new(std::sync::Mutex::new(exported))),
        pds: None,
        protected: options.report.iter().cloned().collect(),
        stops: None,
        submissions: Some(resumed_submissions),
    };
    run.drive(ended, None, options).await
}

/// A run under way: what [`Run::drive`] needs to carry it to its end.
struct Run {
    session: Session,
    pcs: PilotComputeService,
    cus: ComputeUnitService,
    /// Units of the workload (or of the resumed session).
    total: usize,
    tally: Tally,
    /// For a resumed session: when this run started, and how many units had ended then.
    resumed: Option<(Instant, usize)>,
    /// The pilots were killed (a second signal, a lost store): what is left to ask the
    /// store is asked briefly.
    killed: bool,
    /// A run with Pilot-Data: the output data units to export at its end.
    exports: Option<Exports>,
    /// Its pilot stores (open: exports read through them).
    pds: Option<PilotDataService>,
    /// Files no export may replace: the workload file, the report.
    protected: Vec<PathBuf>,
    /// The `[[unit]]` tables with `max_fails`.
    stops: Option<Stops>,
    /// Units (and pilots) `pstar submit` adds to the session while it runs.
    submissions: Option<mpsc::UnboundedReceiver<pstar::Submission>>,
}

impl Run {
    /// Counts what `pstar submit` added (in the total, and the one shown), says so, and
    /// creates the pilots it asked for; returns how many units it added.
    async fn take_submission(
        &mut self,
        request: pstar::Submission,
        shown_total: &std::sync::atomic::AtomicUsize,
    ) -> usize {
        let n = request.units.len();
        self.total += n;
        shown_total.store(self.total, std::sync::atomic::Ordering::Relaxed);
        say!(
            "pstar: {} added {} and {} to the session",
            request.by,
            count(request.units.len(), "unit"),
            count(request.pilots.len(), "pilot"),
        );
        for (id, why) in &request.refused {
            say!("pstar: {id} from {} was left out: {why}", request.by);
        }
        for description in request.pilots {
            if let Err(e) = self.pcs.create_pilot(description).await {
                say!(
                    "pstar: a pilot {} asked for was not created: {e}",
                    request.by
                );
            }
        }
        n
    }
}

/// What ended the wait for the units.
enum End {
    AllEnded,
    Interrupted,
    Lost(String),
}

type Submitter = tokio::task::JoinHandle<(usize, Option<pstar::Error>)>;

impl Run {
    /// Waits until every unit has ended (or the run is interrupted, or every pilot is
    /// gone, or the store is lost), then ends the pilots and reports. Every wait here is
    /// bounded: a second Ctrl-C kills the pilots and their units at once.
    async fn drive(
        mut self,
        mut ended: mpsc::UnboundedReceiver<ComputeUnit>,
        mut submitter: Option<Submitter>,
        options: &RunOptions,
    ) -> Result<Outcome, RunError> {
        let shown_total = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(self.total));
        let progress = tokio::spawn(progress::show(
            self.cus.watch_counts(),
            shown_total.clone(),
            options.quiet,
        ));
        let mut signals = Signals::new();
        // Units submitted so far, once the submitter has finished.
        let mut submitted: Option<usize> = if submitter.is_none() {
            Some(self.total)
        } else {
            None
        };
        let mut submit_error = None;
        let mut pilots_ended = false;
        // Units `pstar submit` added to the session while it ran.
        let mut added = 0usize;
        let mut submissions = self.submissions.take();
        // Made once, not once a unit: each looks at every pilot.
        let (pcs, session) = (self.pcs.clone(), self.session.clone());
        let every_pilot_ended = pcs.wait();
        let store_lost = session.lost();
        tokio::pin!(every_pilot_ended, store_lost);
        let end = loop {
            if submitted.is_some_and(|n| self.tally.len() >= n + added) {
                // Not while units someone added are on their way in.
                let late = submissions.as_mut().and_then(|s| s.try_recv().ok());
                match late {
                    None => break End::AllEnded,
                    Some(request) => {
                        added += self.take_submission(request, &shown_total).await;
                        continue;
                    }
                }
            }
            tokio::select! {
                request = async { submissions.as_mut().expect("guarded").recv().await },
                    if submissions.is_some() =>
                {
                    let Some(request) = request else {
                        submissions = None;
                        continue;
                    };
                    added += self.take_submission(request, &shown_total).await;
                }
                unit = ended.recv() => match unit {
                    Some(u) => {
                        self.tally.add(&u);
                        let stop = self.stops.as_ref().and_then(|s| s.lock().ok()?.ended(&u));
                        if let Some((units, why)) = stop {
                            say!("pstar: max_fails reached ({why}): canceling the table's other units");
                            self.cus.cancel_units(units, why);
                        }
                    }
                    None => break End::Lost("the compute unit service has shut down".into()),
                },
                done = async { submitter.as_mut().expect("guarded").await }, if submitter.is_some() => {
                    submitter = None;
                    let (n, error) = done.unwrap_or((0, Some(pstar::Error::ServiceClosed)));
                    submitted = Some(n);
                    if let Some(e) = error {
                        say!("pstar: cannot submit more units: {e}");
                        submit_error = Some(e);
                        self.cus.cancel_because("the run could not submit every unit");
                    }
                }
                reason = &mut store_lost => break End::Lost(reason),
                _ = &mut every_pilot_ended, if !pilots_ended => {
                    // Every pilot has ended (walltime, failure) with units left: nothing
                    // will run them. (Or the agents ended because the session is gone.)
                    pilots_ended = true;
                    if !session.confirm_session().await {
                        break End::Lost(session.lost().await);
                    }
                    if let Some(s) = submitter.take() {
                        s.abort();
                        submitted = Some(self.cus.units_submitted().saturating_sub(added));
                    }
                    self.cus.cancel_stranded();
                }
                signal = signals.recv() => {
                    say!(
                        "pstar: interrupted by {signal}; canceling units (again to kill them at once)"
                    );
                    if let Some(s) = submitter.take() {
                        s.abort();
                        submitted = Some(self.cus.units_submitted().saturating_sub(added));
                    }
                    self.cus.cancel_because(format!("interrupted by {signal}"));
                    break End::Interrupted;
                }
            }
        };
        let end = match end {
            End::Interrupted => {
                // Bounded: the units' cancels come back, or the store is lost, or a second
                // signal or the grace period has the pilots killed.
                let n = submitted.unwrap_or(0) + added;
                let deadline = tokio::time::Instant::now() + CANCEL_GRACE;
                let lost = loop {
                    if self.tally.len() >= n {
                        break None;
                    }
                    tokio::select! {
                        unit = ended.recv() => match unit {
                            Some(u) => self.tally.add(&u),
                            None => break None,
                        },
                        reason = &mut store_lost => break Some(reason),
                        signal = signals.recv() => {
                            say!("pstar: {signal} again: killing every pilot and its units now");
                            self.abort_pilots(&mut signals, &format!("killed after a second {signal}")).await;
                            break None;
                        }
                        _ = tokio::time::sleep_until(deadline) => {
                            say!(
                                "pstar: units not canceled after {}: killing every pilot and its units",
                                humantime::format_duration(CANCEL_GRACE)
                            );
                            self.abort_pilots(&mut signals, "killed: its units were not canceled in time").await;
                            break None;
                        }
                    }
                };
                if let Some(reason) = lost {
                    say!("pstar: {reason}");
                    self.abort_pilots(&mut signals, "killed: the coordination store was lost")
                        .await;
                }
                End::Interrupted
            }
            End::Lost(reason) => {
                if self.session.session_gone() {
                    // Nothing of the session is left to resume: its pilots would run on
                    // for nothing.
                    self.abort_pilots(&mut signals, "killed: the session is gone from the store")
                        .await;
                } else if self.session.stream_unreadable() {
                    // Nothing can follow the session past that value, a resumed manager
                    // neither: its pilots would run on unseen.
                    self.abort_pilots(
                        &mut signals,
                        "killed: the session's event stream holds a value this pstar cannot read",
                    )
                    .await;
                } else {
                    say!(
                        "pstar: the pilots' agents keep what their units did until the store \
                         is back; pick the session up with `pstar run --resume {}`",
                        self.session.id()
                    );
                }
                End::Lost(reason)
            }
            End::AllEnded => End::AllEnded,
        };
        progress.abort();
        let _ = progress.await;
        // After a kill, the store gets a moment, not a retry window.
        let store_wait = if self.killed {
            Duration::from_secs(2)
        } else {
            FINISH_TIMEOUT
        };
        let confirmed = tokio::time::timeout(store_wait, self.session.confirm_session()).await;
        let lost = matches!(end, End::Lost(_))
            || self.session.session_gone()
            || confirmed.is_ok_and(|held| !held);
        if lost && !matches!(end, End::Lost(_)) {
            say!("pstar: {}", self.session.lost().await);
        }
        if self.session.session_gone() {
            // Again, now that its pilots are gone: what they wrote meanwhile expires too.
            let abandon = self.session.coordination().abandon();
            if let Ok(Err(e)) = tokio::time::timeout(FINISH_TIMEOUT, abandon).await {
                say!("pstar: cannot clear the lost session from the store: {e}");
            }
        }
        if !lost {
            tokio::select! {
                _ = self.pcs.cancel() => {}
                signal = signals.recv() => {
                    say!("pstar: {signal} while canceling the pilots: killing them now");
                    self.abort_pilots(&mut signals, &format!("killed after {signal}")).await;
                }
            }
        }

        for p in self.pcs.pilots() {
            if p.state() == pstar::PilotState::Failed {
                say!(
                    "pstar: {} failed: {}",
                    p.id(),
                    p.detail().unwrap_or_default()
                );
            }
        }
        // Units that had not ended (a lost store) are reported as they were.
        while let Ok(u) = ended.try_recv() {
            self.tally.add(&u);
        }
        for u in self.cus.units() {
            if !u.state().is_final() {
                self.tally.add(&u);
            }
        }
        let not_submitted = self
            .total
            .saturating_sub(submitted.map_or_else(|| self.cus.units_submitted(), |n| n + added));
        let this_run = self
            .resumed
            .map(|(start, before)| (start.elapsed(), self.tally.len().saturating_sub(before)));
        let mut summary = self.tally.summary(not_submitted, this_run);
        if let Some(exports) = &self.exports {
            let exports = exports.lock().map(|e| e.clone()).unwrap_or_default();
            summary.data = Some(self.data_summary(exports, store_wait).await);
        }
        say_part!("{}", self.tally.render(&summary));
        let report_written = self.tally.finish_report(&summary, &self.pcs.pilots());
        if !lost {
            // Bounded: a store that does not answer is not waited for.
            let keep = options.settings.keep;
            let finish = self.session.coordination().finish(keep);
            tokio::select! {
                done = tokio::time::timeout(store_wait, finish) => match done {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        say!("pstar: cannot mark the session finished in the store: {e}")
                    }
                    Err(_) => say!(
                        "pstar: cannot mark the session finished in the store: no answer in {}",
                        humantime::format_duration(store_wait)
                    ),
                },
                signal = signals.recv() => {
                    say!("pstar: {signal}: not marking the session finished in the store");
                }
            }
        }
        if let Some(e) = submit_error {
            return Err(e.into());
        }
        Ok(match end {
            End::Interrupted => Outcome::Interrupted(summary),
            End::Lost(reason) => Outcome::StoreLost { reason, summary },
            End::AllEnded => Outcome::Finished {
                summary,
                report_written,
            },
        })
    }

    /// Exports what was asked for, then sums up the session's data units and what moved.
    /// Every call to a store is bounded; an export that fails, or would overwrite what
    /// another export of this run wrote, is said and counted (the run does not succeed).
    async fn data_summary(&self, exports: Vec<(String, PathBuf)>, wait: Duration) -> DataSummary {
        let pds = self
            .pds
            .clone()
            .unwrap_or_else(|| PilotDataService::new(&self.session));
        let mut exported: std::collections::HashMap<String, String> = Default::default();
        let mut written: std::collections::HashMap<PathBuf, String> = Default::default();
        let mut bytes_from = std::collections::BTreeMap::<String, u64>::new();
        let (mut export_bytes, mut export_failures) = (0, 0);
        if !exports.is_empty() {
            say!("pstar: exporting {}", count(exports.len(), "data unit"));
        }
        for (name, dir) in exports {
            let unit = match tokio::time::timeout(wait, pstar::DataUnit::get(&self.session, &name))
                .await
            {
                Ok(Ok(Some(u))) => u,
                Ok(Ok(None)) => {
                    say!(
                        "pstar: data unit {name} was not made: nothing exported to {}",
                        dir.display()
                    );
                    export_failures += 1;
                    continue;
                }
                Ok(Err(e)) => {
                    say!("pstar: cannot export data unit {name}: {e}");
                    export_failures += 1;
                    continue;
                }
                Err(_) => {
                    say!("pstar: cannot export data unit {name}: the store did not answer");
                    export_failures += 1;
                    continue;
                }
            };
            let clash = unit.files().iter().find_map(|f| {
                let to = dir.join(&f.path);
                written.get(&to).map(|other| (to, other.clone()))
            });
            let protected = unit.files().iter().find_map(|f| {
                let to = dir.join(&f.path);
                self.protected
                    .iter()
                    .find(|p| same_file(p, &to))
                    .map(|p| (to, p))
            });
            if let Some((to, input)) = protected {
                say!(
                    "pstar: data unit {name} not exported to {}: its {} is {}, an input or the \
                     report of this run",
                    dir.display(),
                    to.display(),
                    input.display()
                );
                export_failures += 1;
                continue;
            }
            if let Some((to, other)) = clash {
                say!(
                    "pstar: data unit {name} not exported to {}: its {} would overwrite what \
                     data unit {other} exported there (give each output its own `export` \
                     directory, such as \"results/{{i}}/\")",
                    dir.display(),
                    to.display()
                );
                export_failures += 1;
                continue;
            }
            match pds.export(&unit, &dir).await {
                Ok((bytes, from)) => {
                    export_bytes += bytes;
                    *bytes_from.entry(from).or_default() += bytes;
                    for f in unit.files() {
                        written.insert(dir.join(&f.path), name.clone());
                    }
                    exported.insert(name, dir.display().to_string());
                }
                Err(e) => {
                    say!("pstar: {e}");
                    export_failures += 1;
                }
            }
        }
        let ledger = self.session.data_ledger();
        let names: Vec<String> = ledger.units.keys().cloned().collect();
        let records = tokio::time::timeout(wait, self.session.coordination().data_units(&names))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let mut files: std::collections::HashMap<String, Vec<pstar::DataFile>> = records
            .into_iter()
            .flatten()
            .map(|r| (r.name, r.files))
            .collect();
        let data_units = ledger
            .units
            .iter()
            .map(|(name, d)| DataUnitReport {
                name: name.clone(),
                // Available when the session ends: its life in the session is done.
                state: match d.state {
                    Some(pstar::DataUnitState::Running) => "done",
                    Some(s) => s.as_str(),
                    None => "new",
                }
                .to_owned(),
                size: d.size,
                files: files.remove(name).unwrap_or_default(),
                stores: d.stores.iter().cloned().collect(),
                pilots: d.pilots.iter().map(|p| p.to_string()).collect(),
                detail: d.detail.clone(),
                exported_to: exported.remove(name),
            })
            .collect();
        // Exports are counted from what they said here, not from the ledger (which may
        // not have seen their events yet).
        for (from, bytes) in &ledger.moved_from {
            *bytes_from.entry(from.clone()).or_default() += bytes;
        }
        let mut bytes_to = ledger.moved_to.clone();
        if export_bytes > 0 {
            bytes_to.insert("export".into(), export_bytes);
        }
        bytes_from.retain(|_, v| *v > 0);
        DataSummary {
            bytes_moved: ledger.moved + export_bytes,
            bytes_from,
            bytes_to,
            data_units,
            export_failures,
        }
    }

    /// Kills every pilot through its resource (bounded); a further signal ends the process
    /// at once.
    async fn abort_pilots(&mut self, signals: &mut Signals, reason: &str) {
        self.killed = true;
        tokio::select! {
            _ = self.pcs.abort(reason) => {}
            signal = signals.recv() => {
                say!("pstar: {signal} again: exiting now");
                std::process::exit(130);
            }
        }
    }
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM; names it.
pub(crate) async fn interruption() -> &'static str {
    Signals::new().recv().await
}

/// SIGINT (Ctrl-C), SIGTERM (what batch systems and `kill` send) and SIGHUP (the
/// terminal closed, the SSH connection dropped), listened to for the whole run, so that
/// every one of them is heard.
struct Signals {
    streams: Option<[tokio::signal::unix::Signal; 3]>,
}

impl Signals {
    fn new() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let streams = (|| {
            Some([
                signal(SignalKind::interrupt()).ok()?,
                signal(SignalKind::terminate()).ok()?,
                signal(SignalKind::hangup()).ok()?,
            ])
        })();
        Self { streams }
    }

    /// The next signal, by name; never, without signal handling.
    async fn recv(&mut self) -> &'static str {
        match &mut self.streams {
            Some([int, term, hup]) => tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
                _ = hup.recv() => "SIGHUP",
            },
            None => std::future::pending().await,
        }
    }
}
