//! Identifiers of pilots and units.
//!
//! Ids are small integers handed out by the coordination store (so that several managers of
//! one session never hand out the same id) and shown as `pilot.0003` / `unit.000042`.
//! They are `Copy`: a queued unit costs eight bytes of id, not a heap string.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An id string that is not `pilot.N` / `unit.N`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a {kind} id (expected `{kind}.<number>`)")]
pub struct IdParseError {
    kind: &'static str,
    input: String,
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $width:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(u64);

        impl $name {
            /// The id with this sequence number.
            pub const fn new(n: u64) -> Self {
                Self(n)
            }
            /// The sequence number inside the session.
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, ".{:0", $width, "}"), self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.strip_prefix(concat!($prefix, "."))
                    .and_then(|n| n.parse().ok())
                    .map(Self)
                    .ok_or_else(|| IdParseError { kind: $prefix, input: s.to_owned() })
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = std::borrow::Cow::<str>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// Names one pilot of a session: `pilot.0000`.
    PilotId, "pilot", 4
);
id_type!(
    /// Names one compute unit of a session: `unit.000000`.
    UnitId, "unit", 6
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text() {
        assert_eq!(UnitId::new(42).to_string(), "unit.000042");
        assert_eq!(PilotId::new(3).to_string(), "pilot.0003");
        assert_eq!(
            "unit.1234567".parse::<UnitId>().unwrap(),
            UnitId::new(1_234_567)
        );
        assert!("pilot.x".parse::<PilotId>().is_err());
        assert!("unit.3".parse::<PilotId>().is_err());
        let json = serde_json::to_string(&UnitId::new(7)).unwrap();
        assert_eq!(json, "\"unit.000007\"");
        assert_eq!(
            serde_json::from_str::<UnitId>(&json).unwrap(),
            UnitId::new(7)
        );
    }
}
