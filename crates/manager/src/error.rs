//! Errors of the Pilot-API.

use pstar_coordination::CoordinationError;
use pstar_model::{DescriptionError, Origin, Scheme, SettingError};

/// What can go wrong calling the Pilot-API. A unit that fails is *not* an error: it is a
/// normal outcome, reported through its state, exit code and detail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A description that can never be satisfied.
    #[error("invalid {what}: {source}")]
    InvalidDescription {
        /// Which description.
        what: String,
        /// What is wrong with it.
        source: DescriptionError,
    },
    /// No adaptor of this build serves the resource's scheme.
    #[error(
        "resource scheme `{scheme}` is not supported by this pstar yet (supported: {supported})"
    )]
    UnsupportedResource {
        /// The scheme asked for.
        scheme: Scheme,
        /// The schemes this build serves, as `local://, ...`.
        supported: String,
    },
    /// A pilot whose agent runs elsewhere, with a store only this process can reach.
    #[error(
        "`{scheme}://` pilots need a coordination store their agents can reach (a Redis), \
         not the in-process one: give the session one (`SessionBuilder::coordination`)"
    )]
    NeedsNetworkedStore {
        /// The scheme asked for.
        scheme: Scheme,
    },
    /// A setting pstar refuses: a duration outside its range
    /// ([`pstar_model::settings::DURATION_RANGES`]), or a drain margin not shorter than a
    /// pilot's walltime.
    #[error("{source} (set by {origin})")]
    InvalidSetting {
        /// What is wrong, naming the setting.
        source: SettingError,
        /// Where the setting came from.
        origin: Origin,
    },
    /// The coordination store failed.
    #[error(transparent)]
    Coordination(#[from] CoordinationError),
    /// The coordination store was lost for good while units ran (the reason says how).
    #[error("{0}")]
    StoreLost(String),
    /// A session id that is not allowed (see [`pstar_model::check_session_id`]).
    #[error(transparent)]
    InvalidSessionId(#[from] pstar_model::InvalidSessionId),
    /// `resume` found nothing of this session in the store.
    #[error("no session `{0}` in the coordination store")]
    NoSuchSession(String),
    /// A resource adaptor could not do what was asked (the message is the resource's).
    #[error(transparent)]
    Adaptor(#[from] pstar_adaptors::AdaptorError),
    /// A pilot store that cannot be created (a bad name or URL, a store that cannot be
    /// reached).
    #[error("pilot store {name}: {reason}")]
    PilotData {
        /// Its name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A data unit that cannot be placed, replicated, exported or read.
    #[error("data unit {name}: {reason}")]
    DataUnit {
        /// Its name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The service's manager task has ended (its session is gone).
    #[error("the compute unit service has shut down")]
    ServiceClosed,
}

/// The Pilot-API's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
