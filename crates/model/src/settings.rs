//! The settings of a run, in one type, with their built-in defaults written once.
//!
//! [`Settings`] holds every tunable of a session: the manager's (store, heartbeat timeout,
//! attempts, black holes, prefetch, bootstrap, polling, how long a store keeps a finished
//! session) and its agents' ([`AgentSettings`]: claim wait, heartbeat interval, kill
//! grace, drain margin, report windows). Each setting has one name, the same everywhere:
//! the field here, the key of a workload file's `[session]` table, and (with `-` for `_`)
//! the `pstar run` flag.
//!
//! Settings come in layers, each a [`SettingsLayer`] that sets some of them; a later layer
//! wins. `pstar` stacks the built-in defaults, the workload's `[session]`, the environment
//! (`PSTAR_COORDINATION`, `PSTAR_AGENT_BIN`) and the command line. Every value remembers
//! the layer it came from ([`Settings::origin`]), so a message can say where a value was set.
//!
//! ```
//! use std::time::Duration;
//! use pstar_model::{Origin, Settings, SettingsLayer};
//!
//! let file = SettingsLayer {
//!     heartbeat_timeout: Some(Duration::from_secs(45)),
//!     max_attempts: Some(5),
//!     ..SettingsLayer::from(Origin::Workload { path: "run.toml".into(), line: 2 })
//! };
//! let flags = SettingsLayer {
//!     max_attempts: Some(2),
//!     ..SettingsLayer::from(Origin::CommandLine)
//! };
//! let s = Settings::layered([&file, &flags]);
//! assert_eq!(s.heartbeat_timeout, Duration::from_secs(45));
//! assert_eq!(s.max_attempts, 2);
//! assert_eq!(s.prefetch, 4); // built in
//! assert_eq!(s.origin("heartbeat_timeout").to_string(), "[session] at run.toml:2");
//! ```
//!
//! The agents' part travels to them in their pilot's record in the coordination store;
//! never on a command line. No setting holds a secret: the store's password stays in the
//! environment of the processes that need it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::description::{humantime_serde, opt_humantime_serde};

/// How long an agent may go without a heartbeat before its pilot is declared lost, by
/// default ([`Settings::heartbeat_timeout`]).
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a setting's value came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Origin {
    /// pstar's built-in default.
    #[default]
    Default,
    /// A workload file's `[session]` table: the file, and the line of the key.
    Workload { path: PathBuf, line: usize },
    /// An environment variable (`PSTAR_AGENT_BIN`).
    Environment(String),
    /// The command line.
    CommandLine,
    /// A program, through the Pilot-API (`SessionBuilder`).
    Api,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => f.write_str("the built-in default"),
            Origin::Workload { path, line } => write!(f, "[session] at {}:{line}", path.display()),
            Origin::Environment(var) => write!(f, "${var}"),
            Origin::CommandLine => f.write_str("the command line"),
            Origin::Api => f.write_str("the program"),
        }
    }
}

/// The range (both ends included) each duration setting must lie in, written once.
///
/// | setting | from | to |
/// |---|---|---|
/// | `heartbeat_timeout` | 100ms | 1day |
/// | `agent_start_timeout` | 1s | 1day |
/// | `poll_interval` | 100ms | 10m |
/// | `locality_wait` | 0s | 1h |
/// | `keep` | 1s | 1year |
/// | `claim_wait` | 1ms | 1m |
/// | `heartbeat_interval` | 10ms | 10m |
/// | `kill_grace` | 0s | 1h |
/// | `drain_margin` | 0s | 1year, and shorter than each pilot's walltime |
/// | `report_window` | 0s | 1s |
/// | `remote_report_window` | 0s | 1s |
///
/// A value outside is a mistake, not a preference: a zero heartbeat interval or claim
/// wait makes an agent spin, a drain margin as long as the walltime makes it take no
/// unit, a report window of hours holds every unit's end back that long.
pub const DURATION_RANGES: &[(&str, Duration, Duration)] = &[
    ("heartbeat_timeout", Duration::from_millis(100), DAY),
    ("agent_start_timeout", Duration::from_secs(1), DAY),
    (
        "poll_interval",
        Duration::from_millis(100),
        Duration::from_secs(600),
    ),
    ("locality_wait", Duration::ZERO, Duration::from_secs(3600)),
    ("keep", Duration::from_secs(1), YEAR),
    (
        "claim_wait",
        Duration::from_millis(1),
        Duration::from_secs(60),
    ),
    (
        "heartbeat_interval",
        Duration::from_millis(10),
        Duration::from_secs(600),
    ),
    ("kill_grace", Duration::ZERO, Duration::from_secs(3600)),
    ("drain_margin", Duration::ZERO, YEAR),
    ("report_window", Duration::ZERO, Duration::from_secs(1)),
    (
        "remote_report_window",
        Duration::ZERO,
        Duration::from_secs(1),
    ),
];

const DAY: Duration = Duration::from_secs(24 * 3600);
/// A year as `humantime` counts it (365.25 days), so that it is written `1year`.
const YEAR: Duration = Duration::from_secs(31_557_600);

/// The range duration setting `name` must lie in ([`DURATION_RANGES`]); `None` for a
/// setting that is not a duration.
pub fn duration_range(name: &str) -> Option<(Duration, Duration)> {
    DURATION_RANGES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, min, max)| (*min, *max))
}

/// A setting pstar refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    /// A duration outside its range ([`DURATION_RANGES`]).
    #[error(
        "`{name}` must be from {} to {}, not {}",
        humantime::format_duration(*.min),
        humantime::format_duration(*.max),
        humantime::format_duration(*.value)
    )]
    OutOfRange {
        name: &'static str,
        value: Duration,
        min: Duration,
        max: Duration,
    },
    /// A drain margin that leaves a pilot no time to take units.
    #[error(
        "`drain_margin` {} is not shorter than the walltime {} of {pilot}: its agent would \
         never take a unit; make it shorter than every pilot's walltime",
        humantime::format_duration(*.margin),
        humantime::format_duration(*.walltime)
    )]
    DrainMarginTooLong {
        margin: Duration,
        walltime: Duration,
        /// The pilot, as a message names it (`pilot.0001`, `pilot \`big\``).
        pilot: String,
    },
    /// `max_attempts` of 0: a unit would never run.
    #[error("`max_attempts` must be at least 1")]
    NoAttempts,
}

impl SettingError {
    /// The setting at fault.
    pub fn name(&self) -> &'static str {
        match self {
            SettingError::OutOfRange { name, .. } => name,
            SettingError::DrainMarginTooLong { .. } => "drain_margin",
            SettingError::NoAttempts => "max_attempts",
        }
    }
}

/// Whether duration setting `name` may be `value` ([`DURATION_RANGES`]; a name that is not
/// a duration setting is not checked).
pub fn check_duration(name: &str, value: Duration) -> Result<(), SettingError> {
    let Some((n, min, max)) = DURATION_RANGES.iter().find(|(n, _, _)| *n == name) else {
        return Ok(());
    };
    if (*min..=*max).contains(&value) {
        Ok(())
    } else {
        Err(SettingError::OutOfRange {
            name: n,
            value,
            min: *min,
            max: *max,
        })
    }
}

/// Whether a pilot whose walltime is `walltime` can run with drain margin `margin`: the
/// margin must be shorter, or the agent never takes a unit. `pilot` names the pilot.
pub fn check_drain_margin(
    margin: Duration,
    walltime: Duration,
    pilot: impl std::fmt::Display,
) -> Result<(), SettingError> {
    if margin < walltime {
        Ok(())
    } else {
        Err(SettingError::DrainMarginTooLong {
            margin,
            walltime,
            pilot: pilot.to_string(),
        })
    }
}

/// The settings of a pilot's agent. They reach an agent in its pilot's record in the
/// coordination store; a record without them (written by an older pstar) gives the
/// defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentSettings {
    /// How long one claim waits for units before asking again (default 1 s).
    #[serde(with = "humantime_serde")]
    pub claim_wait: Duration,
    /// How often the agent reports that it is alive (default 5 s; a session lowers it to a
    /// third of its heartbeat timeout).
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// How long a stopped unit's processes get between SIGTERM and SIGKILL (default 2 s).
    #[serde(with = "humantime_serde")]
    pub kill_grace: Duration,
    /// How long before the walltime ends the agent stops taking units; by default the
    /// smaller of 60 s and a tenth of the walltime.
    #[serde(with = "opt_humantime_serde")]
    pub drain_margin: Option<Duration>,
    /// How long a busy agent (every core taken) gathers state changes before it publishes
    /// them as one batch; an agent with a free core reports at once (default 1 ms).
    #[serde(with = "humantime_serde")]
    pub report_window: Duration,
    /// Over a networked store (one with a URL) the agent gathers `Pending` and `Running`
    /// reports for this long even when a core is free: every publication wakes three
    /// processes (Redis, the manager, the agent). A unit's end is never held back
    /// (default 3 ms).
    #[serde(with = "humantime_serde")]
    pub remote_report_window: Duration,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            claim_wait: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(5),
            kill_grace: Duration::from_secs(2),
            drain_margin: None,
            report_window: Duration::from_millis(1),
            remote_report_window: Duration::from_millis(3),
        }
    }
}

impl AgentSettings {
    /// Checks every setting against its range ([`DURATION_RANGES`]), and the drain margin
    /// against the walltime of `pilot` when given (`(walltime, name)`): the first one
    /// refused.
    pub fn check(&self, pilot: Option<(Duration, &str)>) -> Result<(), SettingError> {
        for (name, value) in [
            ("claim_wait", self.claim_wait),
            ("heartbeat_interval", self.heartbeat_interval),
            ("kill_grace", self.kill_grace),
            ("report_window", self.report_window),
            ("remote_report_window", self.remote_report_window),
        ]
        .into_iter()
        .chain(self.drain_margin.map(|d| ("drain_margin", d)))
        {
            check_duration(name, value)?;
        }
        if let (Some(margin), Some((walltime, name))) = (self.drain_margin, pilot) {
            check_drain_margin(margin, walltime, name)?;
        }
        Ok(())
    }
}

/// Every setting of a session, each with its value and where it came from. Build it from
/// the defaults with [`Settings::default`], then stack layers with [`Settings::apply`] (or
/// all at once with [`Settings::layered`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The coordination store's URL (`redis://...`, without a password); `None`: the
    /// embedded store, in-process (default).
    pub coordination: Option<String>,
    /// Root of the pilot sandboxes on this machine (default `pstar.sandbox`).
    pub sandbox: PathBuf,
    /// Declare a pilot lost when its agent sends no heartbeat for this long (default 30 s).
    pub heartbeat_timeout: Duration,
    /// Runs a unit gets when the pilots running it are lost (default 3).
    pub max_attempts: u32,
    /// Quick failures in a row that make a pilot a black hole (default 5; 0: never).
    pub black_hole_failures: u32,
    /// Units bound to a pilot beyond its cores, in pilots' worth (default 4).
    pub prefetch: u32,
    /// How long a batch pilot's agent may take to reach the store once its job runs
    /// (default 2 min).
    pub agent_start_timeout: Duration,
    /// How often batch pilot jobs' states are asked from their schedulers (default 2 s).
    pub poll_interval: Duration,
    /// How long a unit that reads input data may wait for a busy pilot nearer its data
    /// before it moves the data to a free one (default 3 s; 0: never waits).
    pub locality_wait: Duration,
    /// The `pstar` program agents run; `None` (default): `$PSTAR_AGENT_BIN`, else this
    /// program, else the `pstar` beside it or on the `PATH`.
    pub agent_binary: Option<PathBuf>,
    /// How long a networked store keeps a finished session's data (default 7 days).
    pub keep: Duration,
    /// The agents' settings, handed to each agent in its pilot's record.
    pub agent: AgentSettings,
    /// Where each setting that is not a built-in default came from, by name.
    pub origins: BTreeMap<&'static str, Origin>,
}

impl Default for Settings {
    /// pstar's built-in defaults: the one place they are written.
    fn default() -> Self {
        Self {
            coordination: None,
            sandbox: PathBuf::from(crate::sandbox::DEFAULT_SANDBOX_ROOT),
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            max_attempts: 3,
            black_hole_failures: 5,
            prefetch: 4,
            agent_start_timeout: Duration::from_secs(120),
            poll_interval: Duration::from_secs(2),
            locality_wait: Duration::from_secs(3),
            agent_binary: None,
            keep: Duration::from_secs(7 * 24 * 3600),
            agent: AgentSettings::default(),
            origins: BTreeMap::new(),
        }
    }
}

/// One layer of settings: the ones it sets (each field as in [`Settings`], or in
/// [`AgentSettings`] for an agent's), and where they come from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SettingsLayer {
    pub coordination: Option<String>,
    pub sandbox: Option<PathBuf>,
    pub heartbeat_timeout: Option<Duration>,
    pub max_attempts: Option<u32>,
    pub black_hole_failures: Option<u32>,
    pub prefetch: Option<u32>,
    pub agent_start_timeout: Option<Duration>,
    pub poll_interval: Option<Duration>,
    pub locality_wait: Option<Duration>,
    pub agent_binary: Option<PathBuf>,
    pub keep: Option<Duration>,
    pub claim_wait: Option<Duration>,
    pub heartbeat_interval: Option<Duration>,
    pub kill_grace: Option<Duration>,
    pub drain_margin: Option<Duration>,
    pub report_window: Option<Duration>,
    pub remote_report_window: Option<Duration>,
    /// Where this layer's values come from.
    pub origin: Origin,
    /// Where single settings come from, when that is more precise than `origin` (the line
    /// of each key of a workload file).
    pub at: BTreeMap<&'static str, Origin>,
}

impl From<Origin> for SettingsLayer {
    /// An empty layer whose values will come from `origin`.
    fn from(origin: Origin) -> Self {
        Self {
            origin,
            ..Default::default()
        }
    }
}

impl SettingsLayer {
    /// Where this layer's setting `name` comes from.
    pub fn origin_of(&self, name: &str) -> Origin {
        self.at.get(name).unwrap_or(&self.origin).clone()
    }
}

impl Settings {
    /// The names of every setting, as in a workload's `[session]` table.
    pub const NAMES: &'static [&'static str] = &[
        "coordination",
        "sandbox",
        "heartbeat_timeout",
        "max_attempts",
        "black_hole_failures",
        "prefetch",
        "agent_start_timeout",
        "poll_interval",
        "locality_wait",
        "agent_binary",
        "keep",
        "claim_wait",
        "heartbeat_interval",
        "kill_grace",
        "drain_margin",
        "report_window",
        "remote_report_window",
    ];

    /// The built-in defaults with `layers` applied in order (a later one wins).
    pub fn layered<'a>(layers: impl IntoIterator<Item = &'a SettingsLayer>) -> Settings {
        let mut settings = Settings::default();
        for layer in layers {
            settings.apply(layer);
        }
        settings
    }

    /// Takes every setting `layer` sets, remembering where it came from.
    pub fn apply(&mut self, layer: &SettingsLayer) {
        macro_rules! take {
            ($($name:ident => $target:expr, $wrap:expr;)*) => {$(
                if let Some(value) = &layer.$name {
                    $target = $wrap(value.clone());
                    let name = stringify!($name);
                    self.origins.insert(name, layer.origin_of(name));
                }
            )*};
        }
        fn same<T>(value: T) -> T {
            value
        }
        take! {
            coordination => self.coordination, Some;
            sandbox => self.sandbox, same;
            heartbeat_timeout => self.heartbeat_timeout, same;
            max_attempts => self.max_attempts, same;
            black_hole_failures => self.black_hole_failures, same;
            prefetch => self.prefetch, same;
            agent_start_timeout => self.agent_start_timeout, same;
            poll_interval => self.poll_interval, same;
            locality_wait => self.locality_wait, same;
            agent_binary => self.agent_binary, Some;
            keep => self.keep, same;
            claim_wait => self.agent.claim_wait, same;
            heartbeat_interval => self.agent.heartbeat_interval, same;
            kill_grace => self.agent.kill_grace, same;
            drain_margin => self.agent.drain_margin, Some;
            report_window => self.agent.report_window, same;
            remote_report_window => self.agent.remote_report_window, same;
        }
    }

    /// These settings with `layer` applied.
    pub fn with(mut self, layer: &SettingsLayer) -> Settings {
        self.apply(layer);
        self
    }

    /// Where setting `name` came from (the built-in default if no layer set it).
    pub fn origin(&self, name: &str) -> &Origin {
        static DEFAULT: Origin = Origin::Default;
        self.origins.get(name).unwrap_or(&DEFAULT)
    }

    /// Sets setting `name` as coming from `origin` (for a value changed in place).
    pub fn set_origin(&mut self, name: &'static str, origin: Origin) {
        self.origins.insert(name, origin);
    }

    /// Checks every setting pstar would refuse: each duration against its range
    /// ([`DURATION_RANGES`]), `max_attempts` at least 1. The error names the setting; its
    /// origin is [`Settings::origin`].
    pub fn check(&self) -> Result<(), SettingError> {
        for (name, value) in [
            ("heartbeat_timeout", self.heartbeat_timeout),
            ("agent_start_timeout", self.agent_start_timeout),
            ("poll_interval", self.poll_interval),
            ("locality_wait", self.locality_wait),
            ("keep", self.keep),
        ] {
            check_duration(name, value)?;
        }
        if self.max_attempts == 0 {
            return Err(SettingError::NoAttempts);
        }
        self.agent.check(None)
    }

    /// What the session's agents are given: [`Settings::agent`], with the heartbeat
    /// interval at most a third of the heartbeat timeout, so that an agent beats at least
    /// three times before the manager gives up on it.
    pub fn agent_settings(&self) -> AgentSettings {
        let mut agent = self.agent.clone();
        agent.heartbeat_interval = agent.heartbeat_interval.min(self.heartbeat_timeout / 3);
        agent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(line: usize) -> Origin {
        Origin::Workload {
            path: "w.toml".into(),
            line,
        }
    }

    /// Each layer overrides the one below, setting by setting, and the winner's origin is
    /// remembered.
    #[test]
    fn each_layer_overrides_the_one_below() {
        let workload = SettingsLayer {
            heartbeat_timeout: Some(Duration::from_secs(45)),
            max_attempts: Some(5),
            agent_binary: Some("/file/pstar".into()),
            coordination: Some("redis://file:6379".into()),
            at: [("heartbeat_timeout", file(3)), ("max_attempts", file(4))].into(),
            ..SettingsLayer::from(file(1))
        };
        let env = SettingsLayer {
            agent_binary: Some("/env/pstar".into()),
            coordination: Some("redis://env:6379".into()),
            ..SettingsLayer::from(Origin::Environment("PSTAR_AGENT_BIN".into()))
        };
        let flags = SettingsLayer {
            coordination: Some("redis://flag:6379".into()),
            max_attempts: Some(2),
            report_window: Some(Duration::from_millis(7)),
            ..SettingsLayer::from(Origin::CommandLine)
        };
        let s = Settings::layered([&workload, &env, &flags]);
        let d = Settings::default();
        let table: Vec<(&str, String, String, Origin)> = vec![
            // name, value, expected, origin
            (
                "prefetch",
                s.prefetch.to_string(),
                d.prefetch.to_string(),
                Origin::Default,
            ),
            (
                "heartbeat_timeout",
                format!("{:?}", s.heartbeat_timeout),
                "45s".into(),
                file(3),
            ),
            (
                "max_attempts",
                s.max_attempts.to_string(),
                "2".into(),
                Origin::CommandLine,
            ),
            (
                "agent_binary",
                format!("{:?}", s.agent_binary),
                "Some(\"/env/pstar\")".into(),
                Origin::Environment("PSTAR_AGENT_BIN".into()),
            ),
            (
                "coordination",
                format!("{:?}", s.coordination),
                "Some(\"redis://flag:6379\")".into(),
                Origin::CommandLine,
            ),
            (
                "report_window",
                format!("{:?}", s.agent.report_window),
                "7ms".into(),
                Origin::CommandLine,
            ),
            (
                "claim_wait",
                format!("{:?}", s.agent.claim_wait),
                format!("{:?}", d.agent.claim_wait),
                Origin::Default,
            ),
        ];
        for (name, got, want, origin) in table {
            assert_eq!(got, want, "{name}");
            assert_eq!(s.origin(name), &origin, "origin of {name}");
        }
        // Without the layers above it, a lower layer's value stands.
        let s = Settings::layered([&workload]);
        assert_eq!(s.max_attempts, 5);
        assert_eq!(
            s.origin("max_attempts").to_string(),
            "[session] at w.toml:4"
        );
        assert_eq!(s.coordination.as_deref(), Some("redis://file:6379"));
        assert_eq!(s.origin("coordination"), &file(1));
    }

    #[test]
    fn every_setting_of_a_layer_is_taken_and_named() {
        let every = SettingsLayer {
            coordination: Some("redis://h:1".into()),
            sandbox: Some("/s".into()),
            heartbeat_timeout: Some(Duration::from_secs(9)),
            max_attempts: Some(9),
            black_hole_failures: Some(9),
            prefetch: Some(9),
            agent_start_timeout: Some(Duration::from_secs(9)),
            poll_interval: Some(Duration::from_secs(9)),
            locality_wait: Some(Duration::from_secs(9)),
            agent_binary: Some("/p".into()),
            keep: Some(Duration::from_secs(9)),
            claim_wait: Some(Duration::from_secs(9)),
            heartbeat_interval: Some(Duration::from_secs(9)),
            kill_grace: Some(Duration::from_secs(9)),
            drain_margin: Some(Duration::from_secs(9)),
            report_window: Some(Duration::from_secs(9)),
            remote_report_window: Some(Duration::from_secs(9)),
            ..SettingsLayer::from(Origin::Api)
        };
        let s = Settings::layered([&every]);
        let named: Vec<&str> = s.origins.keys().copied().collect();
        let mut all = Settings::NAMES.to_vec();
        all.sort_unstable();
        assert_eq!(named, all);
        assert_ne!(s.agent, AgentSettings::default());
    }

    #[test]
    fn agents_beat_three_times_per_heartbeat_timeout() {
        let s = Settings {
            heartbeat_timeout: Duration::from_secs(3),
            ..Settings::default()
        };
        assert_eq!(
            s.agent_settings().heartbeat_interval,
            Duration::from_secs(1)
        );
        assert_eq!(
            Settings::default().agent_settings().heartbeat_interval,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn agent_settings_round_trip_and_default_when_absent() {
        let a = AgentSettings {
            drain_margin: Some(Duration::from_secs(90)),
            report_window: Duration::from_millis(20),
            ..AgentSettings::default()
        };
        let json = serde_json::to_string(&a).expect("serialize");
        assert_eq!(serde_json::from_str::<AgentSettings>(&json).ok(), Some(a));
        let old: AgentSettings = serde_json::from_str("{}").expect("empty");
        assert_eq!(old, AgentSettings::default());
    }

    /// Each duration setting is refused below and above its range, and taken at both
    /// ends; a drain margin must be shorter than the pilot's walltime.
    #[test]
    fn settings_out_of_range_are_refused_naming_the_setting() {
        for (name, min, max) in DURATION_RANGES {
            assert_eq!(check_duration(name, *min), Ok(()), "{name} at its least");
            assert_eq!(check_duration(name, *max), Ok(()), "{name} at its most");
            let above = check_duration(name, *max + Duration::from_millis(1));
            assert_eq!(above.map_err(|e| e.name()), Err(*name), "{name} above");
            if let Some(below) = min.checked_sub(Duration::from_nanos(1)) {
                let e = check_duration(name, below).expect_err(name);
                assert!(
                    e.to_string().starts_with(&format!("`{name}` must be from")),
                    "{e}"
                );
            }
        }
        let zero_beat = AgentSettings {
            heartbeat_interval: Duration::ZERO,
            ..AgentSettings::default()
        };
        assert_eq!(
            zero_beat.check(None).map_err(|e| e.to_string()),
            Err("`heartbeat_interval` must be from 10ms to 10m, not 0s".to_owned())
        );
        let margin = AgentSettings {
            drain_margin: Some(Duration::from_secs(3600)),
            ..AgentSettings::default()
        };
        assert_eq!(margin.check(None), Ok(()));
        assert_eq!(
            margin.check(Some((Duration::from_secs(3601), "pilot.0001"))),
            Ok(())
        );
        let e = margin
            .check(Some((Duration::from_secs(3600), "pilot.0001")))
            .expect_err("as long as the walltime");
        assert_eq!(e.name(), "drain_margin");
        assert!(
            e.to_string()
                .contains("1h is not shorter than the walltime 1h of pilot.0001"),
            "{e}"
        );
        let s = Settings {
            keep: Duration::ZERO,
            ..Settings::default()
        };
        assert_eq!(s.check().map_err(|e| e.name()), Err("keep"));
        assert_eq!(Settings::default().check(), Ok(()));
        assert_eq!(AgentSettings::default().check(None), Ok(()));
    }
}
