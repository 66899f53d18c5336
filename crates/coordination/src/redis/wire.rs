//! The store format: how every value pstar keeps in Redis is written, and which version of
//! that format it is in.
//!
//! Every stored value (a unit description, a batch of events, a pilot record, a control
//! message) is `v<N>:` followed by its encoding in format `N`; the session's `format` key
//! holds `N` for the whole session, and its registry entry carries it too (as `format`).
//! A pstar reads only its own [`WIRE_VERSION`]: a session or a value of another format
//! (older, newer, or from before values carried one) fails with
//! [`CoordinationError::Incompatible`], naming both formats, never with a decoding error
//! and never skipped. The header and the `format` key stay as they are in every version,
//! so that any pstar can tell which format it meets.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{CoordinationError, Result};

/// The version of the store format this pstar writes and reads. Raise it whenever what a
/// stored value holds, or how it is encoded, changes.
///
/// * 0: values were the JSON of the in-memory types, with no version (before this one);
/// * 1: every value is `v1:` and its JSON.
pub const WIRE_VERSION: u32 = 1;

/// A format version as messages show it.
pub fn show_version(version: u32) -> String {
    if version == 0 {
        "v0 (unversioned)".into()
    } else {
        format!("v{version}")
    }
}

/// `value` in the current format: its header, then its encoding.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut out = format!("v{WIRE_VERSION}:").into_bytes();
    serde_json::to_writer(&mut out, value)
        .map_err(|e| CoordinationError::Backend(format!("cannot encode a record: {e}")))?;
    Ok(out)
}

/// Reads a stored value; `what` names it for messages (e.g. "unit.000004's description
/// in session `s`"), and is only called on a failure.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], what: impl FnOnce() -> String) -> Result<T> {
    match split(bytes) {
        Some((WIRE_VERSION, payload)) => serde_json::from_slice(payload)
            .map_err(|e| CoordinationError::Backend(format!("malformed {} in Redis: {e}", what()))),
        Some((found, _)) => Err(incompatible(what(), found)),
        None => Err(CoordinationError::Backend(format!(
            "malformed {} in Redis: neither a pstar record nor one from before records \
             carried a format",
            what()
        ))),
    }
}

/// The error for `what`, found in format `found`.
pub fn incompatible(what: String, found: u32) -> CoordinationError {
    CoordinationError::Incompatible {
        what,
        found,
        reads: WIRE_VERSION,
    }
}

/// The format of a stored value and its payload: `v<N>:` then the payload; a value with
/// no header that is JSON (an object, an array or a string) is from before values carried
/// a format (version 0). `None` for anything else.
fn split(bytes: &[u8]) -> Option<(u32, &[u8])> {
    if let Some(rest) = bytes.strip_prefix(b"v") {
        let colon = rest.iter().position(|b| *b == b':')?;
        let digits = std::str::from_utf8(&rest[..colon]).ok()?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        return Some((digits.parse().ok()?, &rest[colon + 1..]));
    }
    match bytes.first() {
        Some(b'{' | b'[' | b'"') => Some((0, bytes)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_name_their_format() {
        assert_eq!(split(b"v1:{}"), Some((1, &b"{}"[..])));
        assert_eq!(split(b"v12:\x00\x01"), Some((12, &b"\x00\x01"[..])));
        assert_eq!(split(b"{\"a\":1}"), Some((0, &b"{\"a\":1}"[..])));
        assert_eq!(split(b"[1]"), Some((0, &b"[1]"[..])));
        assert_eq!(
            split(b"\"CancelPilot\""),
            Some((0, &b"\"CancelPilot\""[..]))
        );
        for bad in [&b""[..], b"v", b"v:", b"vx:1", b"v1", b"12", b"\xff"] {
            assert_eq!(split(bad), None, "{bad:?}");
        }
        let bytes = encode(&vec![1, 2]).unwrap();
        assert_eq!(bytes, b"v1:[1,2]");
        assert_eq!(decode::<Vec<u32>>(&bytes, String::new).unwrap(), [1, 2]);
        let old = decode::<Vec<u32>>(b"[1,2]", || "a list".into()).unwrap_err();
        assert_eq!(
            old.to_string(),
            "a list was written in pstar store format v0 (unversioned); this pstar reads v1"
        );
    }
}
