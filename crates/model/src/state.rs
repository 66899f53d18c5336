//! States of pilots and compute units, and the one table of legal transitions.
//!
//! Agents and the manager *report* state changes as events; the manager applies every one
//! of them through [`Lifecycle::transition`], which checks it against
//! [`State::TRANSITIONS`] and records when it happened. Nothing else compares states to
//! decide whether a change is allowed.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// A state of a pilot or a unit: a finite set with an initial state and a transition table.
pub trait State: Copy + Eq + fmt::Debug + fmt::Display + 'static {
    /// The state every object starts in.
    const INITIAL: Self;
    /// Every state, in lifecycle order.
    const ALL: &'static [Self];
    /// The legal transitions `(from, to)`: the one table.
    const TRANSITIONS: &'static [(Self, Self)];

    /// Lower-case name, as written in reports (`done`, `failed`, `canceled`).
    fn as_str(self) -> &'static str;

    /// Whether `self -> to` is in the table.
    fn can_transition_to(self, to: Self) -> bool {
        Self::TRANSITIONS.iter().any(|&(f, t)| f == self && t == to)
    }

    /// A state with no way out.
    fn is_final(self) -> bool {
        !Self::TRANSITIONS.iter().any(|&(f, _)| f == self)
    }
}

/// The state of a pilot.
///
/// ```text
/// New -> Pending -> Running -> Done | Failed | Canceled
/// ```
/// `Pending`: submitted to its resource, waiting there (a batch queue, or an agent starting).
/// `Running`: its agent is up and holds its slots. `Done`: it ended by itself (walltime).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PilotState {
    New,
    Pending,
    Running,
    Done,
    Failed,
    Canceled,
}

impl State for PilotState {
    const INITIAL: Self = PilotState::New;
    const ALL: &'static [Self] = &[
        PilotState::New,
        PilotState::Pending,
        PilotState::Running,
        PilotState::Done,
        PilotState::Failed,
        PilotState::Canceled,
    ];
    const TRANSITIONS: &'static [(Self, Self)] = {
        use PilotState::*;
        &[
            (New, Pending),
            (New, Failed),   // the resource refused the submission
            (New, Canceled), // canceled before it was submitted
            (Pending, Running),
            (Pending, Done), // the resource ended it before its agent came up
            (Pending, Failed),
            (Pending, Canceled),
            (Running, Done), // walltime reached
            (Running, Failed),
            (Running, Canceled),
        ]
    };

    fn as_str(self) -> &'static str {
        match self {
            PilotState::New => "new",
            PilotState::Pending => "pending",
            PilotState::Running => "running",
            PilotState::Done => "done",
            PilotState::Failed => "failed",
            PilotState::Canceled => "canceled",
        }
    }
}

/// The state of a compute unit.
///
/// ```text
/// New -> [Waiting ->] Scheduled -> [StagingInput ->] Pending -> Running -> [StagingOutput ->] Done | Failed | Canceled
///  ^                      |              |               |          |              |
///  +----------------------+--------------+---------------+----------+--------------+  back to the pool
/// ```
/// `New`: in the central pool, bound to no pilot. `Waiting`: held out of the pool until
/// the units it runs after are done and its input data units exist. `Scheduled`: bound to a pilot by the
/// scheduler, in that pilot's queue in the coordination store. `StagingInput`: claimed by
/// the pilot's agent, which makes its input data units present at the pilot (only a unit
/// with `input_data` goes through it). `Pending`: claimed, waiting at the agent for slots.
/// `Running`: its process runs. `StagingOutput`: its process ended well and the agent
/// stores its output data units (only a unit with `output_data`). Back to the pool: the
/// pilot ended, drained or was canceled.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitState {
    New,
    Waiting,
    Scheduled,
    StagingInput,
    Pending,
    Running,
    StagingOutput,
    Done,
    Failed,
    Canceled,
}

impl UnitState {
    /// Bound to no pilot and not ended: in the pool (`New`) or held out of it until what it
    /// needs is there (`Waiting`).
    pub fn is_held(self) -> bool {
        matches!(self, UnitState::New | UnitState::Waiting)
    }
}

impl State for UnitState {
    const INITIAL: Self = UnitState::New;
    const ALL: &'static [Self] = &[
        UnitState::New,
        UnitState::Waiting,
        UnitState::Scheduled,
        UnitState::StagingInput,
        UnitState::Pending,
        UnitState::Running,
        UnitState::StagingOutput,
        UnitState::Done,
        UnitState::Failed,
        UnitState::Canceled,
    ];
    const TRANSITIONS: &'static [(Self, Self)] = {
        use UnitState::*;
        &[
            (New, Scheduled),
            (New, Failed), // no pilot can ever fit it, or its early-bound pilot is gone
            (New, Canceled),
            (New, Waiting), // it runs after units not done, or reads data not there
            (Waiting, Scheduled), // what it waited for is there: it was bound from the pool
            (Waiting, Failed), // an input data unit failed, or no pilot fits it
            (Waiting, Canceled), // a unit it runs after did not end done, or a cancel
            (Scheduled, Pending),
            (Scheduled, New), // withdrawn from a pilot's queue before its agent claimed it
            (Scheduled, Failed),
            (Scheduled, Canceled),
            (Scheduled, StagingInput),
            (StagingInput, Pending),
            (StagingInput, New),    // returned by a draining or stopping agent
            (StagingInput, Failed), // an input could not be made present (missing, corrupt)
            (StagingInput, Canceled),
            (Pending, Running),
            (Pending, New),    // returned unstarted by a draining or stopping agent
            (Pending, Failed), // could not be started (missing executable, sandbox error)
            (Pending, Canceled),
            (Running, Done),
            (Running, Failed),
            (Running, Canceled),
            (Running, New), // stopped by its pilot's end (walltime, cancel): runs again elsewhere
            (Running, StagingOutput),
            (StagingOutput, Done),
            (StagingOutput, Failed), // an output pattern matched nothing, or the store failed
            (StagingOutput, Canceled),
            (StagingOutput, New), // its pilot ended before the outputs were stored
        ]
    };

    fn as_str(self) -> &'static str {
        match self {
            UnitState::New => "new",
            UnitState::Waiting => "waiting",
            UnitState::Scheduled => "scheduled",
            UnitState::StagingInput => "staging_input",
            UnitState::Pending => "pending",
            UnitState::Running => "running",
            UnitState::StagingOutput => "staging_output",
            UnitState::Done => "done",
            UnitState::Failed => "failed",
            UnitState::Canceled => "canceled",
        }
    }
}

/// The state of a data unit.
///
/// ```text
/// New -> Pending -> Running -> Done | Failed
/// ```
/// `New`: described, not yet being made. `Pending`: its files are on their way into a store
/// (placed from the application's files, or being made by the compute unit that outputs
/// it). `Running`: available in at least one store; units that read it may start.
/// `Done`: its session ended with it available (and exported, if asked). `Failed`: it
/// could not be made (a missing file, a quota, a store error, its producer failed).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataUnitState {
    New,
    Pending,
    Running,
    Done,
    Failed,
}

impl State for DataUnitState {
    const INITIAL: Self = DataUnitState::New;
    const ALL: &'static [Self] = &[
        DataUnitState::New,
        DataUnitState::Pending,
        DataUnitState::Running,
        DataUnitState::Done,
        DataUnitState::Failed,
    ];
    const TRANSITIONS: &'static [(Self, Self)] = {
        use DataUnitState::*;
        &[
            (New, Pending),
            (New, Running), // found whole in one step (stored by its producer's agent)
            (New, Failed),  // its producer failed or was canceled before it started
            (Pending, Running),
            (Pending, Failed),
            (Pending, New), // its producer goes back to the pool: it will be made again
            (Running, Done),
            (Running, Failed), // lost from every store that held it
        ]
    };

    fn as_str(self) -> &'static str {
        match self {
            DataUnitState::New => "new",
            DataUnitState::Pending => "pending",
            DataUnitState::Running => "running",
            DataUnitState::Done => "done",
            DataUnitState::Failed => "failed",
        }
    }
}

macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
display_as_str!(PilotState, UnitState, DataUnitState);

/// A transition the table does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal transition {from} -> {to}")]
pub struct IllegalTransition<S: State> {
    pub from: S,
    pub to: S,
}

/// The current state of one object and when it entered each state it went through.
///
/// ```
/// use pstar_model::{Lifecycle, PilotState, Timestamp};
///
/// let t0 = Timestamp::from_micros(1_000_000);
/// let mut pilot = Lifecycle::<PilotState>::new(t0);
/// pilot.transition(PilotState::Pending, Timestamp::from_micros(2_000_000)).unwrap();
/// assert_eq!(pilot.state(), PilotState::Pending);
/// assert_eq!(pilot.entered(PilotState::New), Some(t0));
/// assert!(pilot.transition(PilotState::New, Timestamp::now()).is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle<S: State> {
    history: Vec<(S, Timestamp)>,
}

impl<S: State> fmt::Debug for Lifecycle<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.history.iter()).finish()
    }
}

impl<S: State> Lifecycle<S> {
    /// A lifecycle that entered [`State::INITIAL`] at `at`.
    pub fn new(at: Timestamp) -> Self {
        Self {
            history: vec![(S::INITIAL, at)],
        }
    }

    /// For a lifecycle rebuilt from a log that does not record its start: moves the entry
    /// into the initial state back to `at`, if nothing else happened yet and `at` is
    /// earlier.
    pub fn backdate_start(&mut self, at: Timestamp) {
        if let [(_, start)] = self.history.as_mut_slice()
            && at < *start
        {
            *start = at;
        }
    }

    /// The current state.
    pub fn state(&self) -> S {
        // `history` is never empty: `new` puts the initial state in, nothing removes it.
        self.history.last().map_or(S::INITIAL, |&(s, _)| s)
    }

    /// Starts over in [`State::INITIAL`] at `at`, from a final state: the one way out of
    /// one, for a unit asked to run again (`pstar run --resume S --rerun failed`). The
    /// history keeps what came before. Refused from a state that is not final.
    pub fn restart(&mut self, at: Timestamp) -> Result<(), IllegalTransition<S>> {
        let from = self.state();
        if !from.is_final() {
            return Err(IllegalTransition {
                from,
                to: S::INITIAL,
            });
        }
        self.history.push((S::INITIAL, at));
        Ok(())
    }

    /// Moves to `to` at `at` if the table allows it; otherwise changes nothing.
    pub fn transition(&mut self, to: S, at: Timestamp) -> Result<(), IllegalTransition<S>> {
        let from = self.state();
        if !from.can_transition_to(to) {
            return Err(IllegalTransition { from, to });
        }
        self.history.push((to, at));
        Ok(())
    }

    /// Every state entered, in order, with the time it was entered.
    pub fn history(&self) -> &[(S, Timestamp)] {
        &self.history
    }

    /// When the object last entered `state`, if it ever did.
    pub fn entered(&self, state: S) -> Option<Timestamp> {
        self.history
            .iter()
            .rev()
            .find(|(s, _)| *s == state)
            .map(|&(_, t)| t)
    }

    /// How long the object spent in each state it has left (or, for the current state,
    /// until `now`), summed over repeated visits.
    pub fn time_in_states(&self, now: Timestamp) -> Vec<(S, Duration)> {
        let mut out: Vec<(S, Duration)> = Vec::new();
        for (i, &(state, start)) in self.history.iter().enumerate() {
            if state.is_final() {
                continue;
            }
            let end = self.history.get(i + 1).map_or(now, |&(_, t)| t);
            let d = end.since(start);
            match out.iter_mut().find(|(s, _)| *s == state) {
                Some((_, total)) => *total += d,
                None => out.push((state, d)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legal<S: State>(from: S, to: S) -> bool {
        let mut l = Lifecycle::<S>::new(Timestamp::from_micros(0));
        l.history.push((from, Timestamp::from_micros(1)));
        l.transition(to, Timestamp::from_micros(2)).is_ok()
    }

    #[test]
    fn unit_transition_table() {
        use UnitState::*;
        // (from, to, allowed)
        let cases = [
            (New, Scheduled, true),
            (New, Waiting, true),
            (Waiting, Scheduled, true),
            (Waiting, Canceled, true),
            (Waiting, Running, false),
            (Waiting, New, false),
            (New, Running, false),
            (New, Done, false),
            (New, Failed, true),
            (New, Canceled, true),
            (Scheduled, Pending, true),
            (Scheduled, Running, false),
            (Scheduled, New, true),
            (Pending, Running, true),
            (Pending, Done, false),
            (Pending, New, true),
            (Pending, Failed, true),
            (Running, Done, true),
            (Running, Failed, true),
            (Running, Canceled, true),
            (Running, New, true),
            (Running, Scheduled, false),
            (Done, New, false),
            (Done, Failed, false),
            (Failed, Done, false),
            (Canceled, Running, false),
            (Done, Done, false),
        ];
        for (from, to, allowed) in cases {
            assert_eq!(legal(from, to), allowed, "{from} -> {to}");
        }
        let finals: Vec<_> = UnitState::ALL.iter().filter(|s| s.is_final()).collect();
        assert_eq!(finals, [&Done, &Failed, &Canceled]);
    }

    #[test]
    fn pilot_transition_table() {
        use PilotState::*;
        let cases = [
            (New, Pending, true),
            (New, Running, false),
            (Pending, Running, true),
            (Running, Done, true),
            (Running, Pending, false),
            (Running, Canceled, true),
            (Canceled, Running, false),
            (Done, Failed, false),
            (Failed, Canceled, false),
        ];
        for (from, to, allowed) in cases {
            assert_eq!(legal(from, to), allowed, "{from} -> {to}");
        }
        let finals: Vec<_> = PilotState::ALL.iter().filter(|s| s.is_final()).collect();
        assert_eq!(finals, [&Done, &Failed, &Canceled]);
    }

    #[test]
    fn every_transition_is_timestamped_and_illegal_ones_change_nothing() {
        let mut l = Lifecycle::<UnitState>::new(Timestamp::from_micros(10));
        l.transition(UnitState::Scheduled, Timestamp::from_micros(20))
            .unwrap();
        l.transition(UnitState::Pending, Timestamp::from_micros(30))
            .unwrap();
        let err = l
            .transition(UnitState::Done, Timestamp::from_micros(35))
            .unwrap_err();
        assert_eq!(
            err,
            IllegalTransition {
                from: UnitState::Pending,
                to: UnitState::Done
            }
        );
        l.transition(UnitState::New, Timestamp::from_micros(40))
            .unwrap(); // returned to the pool
        l.transition(UnitState::Scheduled, Timestamp::from_micros(50))
            .unwrap();
        assert_eq!(l.state(), UnitState::Scheduled);
        assert_eq!(l.history().len(), 5);
        assert_eq!(
            l.entered(UnitState::Scheduled),
            Some(Timestamp::from_micros(50))
        );
        assert_eq!(l.entered(UnitState::Running), None);
        let times = l.time_in_states(Timestamp::from_micros(60));
        assert_eq!(
            times,
            vec![
                (UnitState::New, Duration::from_micros(20)),
                (UnitState::Scheduled, Duration::from_micros(20)),
                (UnitState::Pending, Duration::from_micros(10)),
            ]
        );
    }

    #[test]
    fn states_serialize_in_lower_case() {
        assert_eq!(
            serde_json::to_string(&UnitState::Canceled).unwrap(),
            "\"canceled\""
        );
        assert_eq!(
            serde_json::to_string(&PilotState::Running).unwrap(),
            "\"running\""
        );
        for s in UnitState::ALL {
            assert_eq!(
                serde_json::to_string(s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
    }
}
