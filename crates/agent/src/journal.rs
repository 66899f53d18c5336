//! What an agent reports, and its journal of units' ends.
//!
//! Over a networked store every unit's end is appended to the journal ([`JOURNAL`] in the
//! pilot sandbox, one JSON [`UnitEvent`] a line) *before* it is handed to the reporter, in
//! the same critical section, so the journal's order is the reporter's. The reporter
//! counts the ends it has published; once it has published as many as were written, it
//! empties the journal. So the journal holds every end that may not be on the stream yet:
//! kept on disk while the store is away, and read by a resumed manager
//! ([`read_journal`]) if the agent dies before it can publish them.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use pstar_coordination::{Event, UnitEvent};
use pstar_model::{State, UnitState};

/// The journal's file name in the pilot sandbox.
pub const JOURNAL: &str = "unit-ends.jsonl";

/// The units' ends in the journal of the pilot whose sandbox is `pilot_sandbox` (none if
/// there is no journal; a line cut short by a crash is skipped).
pub fn read_journal(pilot_sandbox: &Path) -> Vec<UnitEvent> {
    std::fs::read_to_string(pilot_sandbox.join(JOURNAL))
        .map(|text| {
            text.lines()
                .filter_map(|line| serde_json::from_str(line).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// What the journal of the pilot whose sandbox is `pilot_sandbox` tells, as the agent's
/// reports: each end behind the `Pending` (and, for a unit that ran, `Running`) it
/// implies, since the reports of a unit that started while the store was away may never
/// have reached the stream. Reports the stream already has are refused by the state table
/// as second reports, so publishing these repeats nothing.
pub fn journal_reports(pilot_sandbox: &Path) -> Vec<Event> {
    let mut events = Vec::new();
    for end in read_journal(pilot_sandbox) {
        let before = |state| {
            Event::Unit(UnitEvent {
                state,
                exit_code: None,
                detail: None,
                ..end.clone()
            })
        };
        events.push(before(UnitState::Pending));
        let ran = end.state == UnitState::Done
            || (end.state == UnitState::Failed && end.exit_code.is_some());
        if ran {
            events.push(before(UnitState::Running));
        }
        events.push(Event::Unit(end));
    }
    events
}

/// The journal of one agent.
pub(crate) struct Journal {
    path: PathBuf,
    state: Mutex<Counts>,
}

struct Counts {
    file: Option<File>,
    /// Ends written since the journal was last emptied, and how many of them are published.
    written: u64,
    published: u64,
}

impl Journal {
    pub(crate) fn new(pilot_sandbox: &Path) -> Self {
        Self {
            path: pilot_sandbox.join(JOURNAL),
            state: Mutex::new(Counts {
                file: None,
                written: 0,
                published: 0,
            }),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// `n` more journaled ends are on the stream; empties the journal once all are.
    pub(crate) fn published(&self, n: u64) {
        if n == 0 {
            return;
        }
        let Ok(mut c) = self.state.lock() else { return };
        c.published += n;
        if c.published >= c.written {
            if let Some(file) = &c.file
                && let Err(e) = file.set_len(0)
            {
                tracing::warn!(journal = %self.path.display(), error = %e, "cannot empty the journal");
                return;
            }
            c.written = 0;
            c.published = 0;
        }
    }
}

/// Where an agent's events go: to the reporter, units' ends through the journal first.
#[derive(Clone)]
pub(crate) struct Reports {
    tx: mpsc::UnboundedSender<Event>,
    journal: Option<Arc<Journal>>,
}

impl Reports {
    pub(crate) fn new(tx: mpsc::UnboundedSender<Event>, journal: Option<Arc<Journal>>) -> Self {
        Self { tx, journal }
    }

    /// Hands `event` to the reporter; a unit's end is journaled first. Fails only when the
    /// reporter is gone.
    pub(crate) fn send(&self, event: Event) -> Result<(), ()> {
        let Some(journal) = self
            .journal
            .as_ref()
            .filter(|_| matches!(&event, Event::Unit(u) if u.state.is_final()))
        else {
            return self.tx.send(event).map_err(|_| ());
        };
        let Ok(mut c) = journal.state.lock() else {
            return self.tx.send(event).map_err(|_| ());
        };
        if let Event::Unit(u) = &event {
            let mut line = serde_json::to_vec(u).unwrap_or_default();
            line.push(b'\n');
            if c.file.is_none() {
                c.file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&journal.path)
                    .map_err(|e| {
                        tracing::error!(journal = %journal.path.display(), error = %e, "cannot open the journal");
                    })
                    .ok();
            }
            match c.file.as_mut().map(|f| f.write_all(&line)) {
                Some(Ok(())) => c.written += 1,
                Some(Err(e)) => {
                    tracing::error!(journal = %journal.path.display(), error = %e, "cannot write the journal");
                }
                None => {}
            }
        }
        // Under the journal's lock: the reporter receives ends in the journal's order.
        self.tx.send(event).map_err(|_| ())
    }
}
