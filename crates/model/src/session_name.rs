//! Session ids: the one rule every command and library entry point applies.
//!
//! A session id names store keys (`pstar:<session>:units`), sandbox directories and
//! registry entries, and is typed on command lines. So it is kept to characters that mean
//! nothing to a shell, a path, a terminal or a Redis `SCAN` pattern.

use std::fmt;

/// Longest session id accepted.
pub const MAX_SESSION_ID_LEN: usize = 100;

/// Why a session id was refused. Shows the id with any unprintable character escaped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid session name `{shown}`: {why}")]
pub struct InvalidSessionId {
    shown: String,
    why: &'static str,
}

/// Checks a session id: 1 to [`MAX_SESSION_ID_LEN`] characters among `A-Z a-z 0-9 . _ -`,
/// not starting with `.` or `-`.
///
/// ```
/// use pstar_model::check_session_id;
/// assert!(check_session_id("pstar.20261123.142501.3f2a9c01d4e5b6a7").is_ok());
/// assert!(check_session_id("*").is_err());
/// assert!(check_session_id("../etc").is_err());
/// ```
pub fn check_session_id(id: &str) -> Result<(), InvalidSessionId> {
    let refuse = |why| {
        Err(InvalidSessionId {
            shown: printable(
                id.chars()
                    .take(MAX_SESSION_ID_LEN + 20)
                    .collect::<String>()
                    .as_str(),
            ),
            why,
        })
    };
    if id.is_empty() {
        return refuse("it is empty");
    }
    if id.len() > MAX_SESSION_ID_LEN {
        return refuse("it is longer than 100 characters");
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return refuse("only letters, digits, `.`, `_` and `-` are allowed");
    }
    if id.starts_with(['.', '-']) {
        return refuse("it must not start with `.` or `-`");
    }
    Ok(())
}

/// `text` with every control character (escape sequences, bells, newlines) written as an
/// escape (`\u{1b}`, `\n`), so that printing it cannot drive the terminal.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// A value shown through [`printable`].
pub struct Printable<'a>(pub &'a str);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&printable(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids() {
        let long = "a".repeat(MAX_SESSION_ID_LEN);
        let too_long = "a".repeat(MAX_SESSION_ID_LEN + 1);
        let good = [
            "pstar.20261123.142501.3f2a",
            "s1",
            "my_run-2.b",
            "A",
            long.as_str(),
        ];
        for id in good {
            assert_eq!(check_session_id(id), Ok(()), "{id}");
        }
        let bad = [
            "",
            "*",
            "a*",
            "a?",
            "a[bc]",
            "a\\b",
            "a:b",
            "a/b",
            "../x",
            ".",
            "..",
            ".hidden",
            "-rf",
            "a b",
            "a\tb",
            "\u{1b}[31mred",
            "a\nb",
            "é",
            too_long.as_str(),
        ];
        for id in bad {
            assert!(check_session_id(id).is_err(), "{id:?} was accepted");
        }
    }

    #[test]
    fn refusals_show_no_control_characters() {
        let e = check_session_id("\u{1b}[2Jx\u{7}").unwrap_err().to_string();
        assert!(!e.chars().any(char::is_control), "{e:?}");
        assert!(e.contains("\\u{1b}[2Jx\\u{7}"), "{e}");
    }

    #[test]
    fn printable_escapes_only_control_characters() {
        assert_eq!(printable("été ok"), "été ok");
        assert_eq!(printable("a\u{1b}[0mb\n"), "a\\u{1b}[0mb\\n");
        assert_eq!(format!("{:<4}|", Printable("ab")), "ab  |");
    }
}
