//! Parameter sweeps: a `[[unit]]` table that makes one unit per combination of values.
//!
//! * `[unit.parameters]` gives each parameter a list of values; the units are their
//!   Cartesian product (`a = [1, 2, 3]` and `b = ["x", "y"]` make 6 units), the parameter
//!   written last varying fastest;
//! * `parameters_from = "params.csv"` makes one unit per row of a CSV file (`.tsv`: tab
//!   separated), whose header names the parameters; any other file makes one unit per
//!   non-empty line, its text in `{line}`.
//!
//! A unit's `{name}` stands for its value of parameter `name`, wherever `{i}` (its index
//! in the table) may be written.

use std::ops::Range;
use std::path::Path;

use toml::Spanned;

use super::{MAX_UNITS, Source, WorkloadError};

/// The largest parameters file read.
const MAX_PARAMETERS_FILE: u64 = 256 << 20;

/// The values of a sweep's parameters, member by member.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Sweep {
    /// The parameters' names, in the order of each member's values.
    pub names: Vec<String>,
    rows: Rows,
}

#[derive(Debug, Clone, PartialEq)]
enum Rows {
    /// One list of values per parameter: member `i` takes the digits of `i` in the mixed
    /// radix of the lists' lengths, the last list's the least significant.
    Product(Vec<Vec<String>>),
    /// One row of values per member.
    Table(Vec<Vec<String>>),
}

/// What a sweep's `[unit.parameters]` table is, as written.
pub(super) type RawParameters = Spanned<toml::Table>;

impl Sweep {
    /// How many units the sweep makes.
    pub fn count(&self) -> u64 {
        match &self.rows {
            Rows::Product(lists) => lists
                .iter()
                .map(|l| l.len() as u64)
                .fold(1u64, u64::saturating_mul),
            Rows::Table(rows) => rows.len() as u64,
        }
    }

    /// Member `i`'s values, in the order of [`Sweep::names`].
    pub fn values(&self, i: u32) -> Vec<String> {
        match &self.rows {
            Rows::Product(lists) => {
                let mut rest = u64::from(i);
                let mut values = vec![String::new(); lists.len()];
                for (k, list) in lists.iter().enumerate().rev() {
                    let n = list.len().max(1) as u64;
                    values[k] = list[(rest % n) as usize].clone();
                    rest /= n;
                }
                values
            }
            Rows::Table(rows) => rows.get(i as usize).cloned().unwrap_or_default(),
        }
    }

    /// The sweep of a `[unit.parameters]` table: each key a list of values (texts,
    /// numbers or booleans).
    pub fn from_lists(src: &Source<'_>, table: RawParameters) -> Result<Sweep, WorkloadError> {
        let span = table.span();
        let table = table.into_inner();
        if table.is_empty() {
            return Err(src.error(
                span,
                "`parameters` is empty: give each parameter a list, such as a = [1, 2, 3]",
            ));
        }
        // Keys in the order they are written (the table keeps it): the last one varies
        // fastest.
        let keys: Vec<(usize, String, toml::Value)> = table
            .into_iter()
            .map(|(k, v)| (position(src.text, span.clone(), &k), k, v))
            .collect();
        let mut names = Vec::with_capacity(keys.len());
        let mut lists = Vec::with_capacity(keys.len());
        for (at, name, value) in keys {
            let key_span = at..at + name.len();
            check_name(&name).map_err(|why| src.error(key_span.clone(), why))?;
            let toml::Value::Array(items) = value else {
                return Err(src.error(
                    key_span,
                    format!(
                        "parameter `{name}` takes a list of values, such as {name} = [1, 2, 3]"
                    ),
                ));
            };
            if items.is_empty() {
                return Err(src.error(key_span, format!("parameter `{name}` has no values")));
            }
            let mut values = Vec::with_capacity(items.len());
            for item in items {
                values.push(text_of(&item).ok_or_else(|| {
                    src.error(
                        key_span.clone(),
                        format!(
                            "parameter `{name}`: each value is a text, a number or true/false, \
                             not {}",
                            item.type_str()
                        ),
                    )
                })?);
            }
            names.push(name);
            lists.push(values);
        }
        let sweep = Sweep {
            names,
            rows: Rows::Product(lists),
        };
        sweep.within_limit(src, span)?;
        Ok(sweep)
    }

    /// The sweep of `parameters_from`: a CSV (or `.tsv`) file with a header, or a file of
    /// one value per line, relative to the workload file's directory `base`.
    pub fn from_file(
        src: &Source<'_>,
        base: &Path,
        file: &Spanned<String>,
    ) -> Result<Sweep, WorkloadError> {
        let span = file.span();
        let path = base.join(file.get_ref());
        let shown = file.get_ref();
        let refuse = |why: String| {
            src.error(
                span.clone(),
                format!(
                    "cannot read the parameters file {shown} ({}): {why}",
                    path.display()
                ),
            )
        };
        // Only a regular file (not a FIFO, a device, a directory), and not a huge one:
        // read at most one byte past the limit.
        let meta = std::fs::metadata(&path).map_err(|e| refuse(e.to_string()))?;
        if !meta.is_file() {
            return Err(refuse("not a regular file".into()));
        }
        let mut text = String::new();
        let file = std::fs::File::open(&path).map_err(|e| refuse(e.to_string()))?;
        std::io::Read::read_to_string(
            &mut std::io::Read::take(file, MAX_PARAMETERS_FILE + 1),
            &mut text,
        )
        .map_err(|e| refuse(e.to_string()))?;
        if text.len() as u64 > MAX_PARAMETERS_FILE {
            return Err(refuse(format!(
                "larger than {} MiB",
                MAX_PARAMETERS_FILE >> 20
            )));
        }
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let sweep = match extension.as_deref() {
            Some("csv") => Self::from_csv(src, span.clone(), shown, &text, b',')?,
            Some("tsv") => Self::from_csv(src, span.clone(), shown, &text, b'\t')?,
            _ => {
                let rows: Vec<Vec<String>> = text
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| vec![l.to_owned()])
                    .collect();
                if rows.is_empty() {
                    return Err(
                        src.error(span, format!("the parameters file {shown} has no lines"))
                    );
                }
                Sweep {
                    names: vec!["line".to_owned()],
                    rows: Rows::Table(rows),
                }
            }
        };
        sweep.within_limit(src, span)?;
        Ok(sweep)
    }

    fn from_csv(
        src: &Source<'_>,
        span: Range<usize>,
        shown: &str,
        text: &str,
        delimiter: u8,
    ) -> Result<Sweep, WorkloadError> {
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(true)
            .from_reader(text.as_bytes());
        let at = |line: Option<u64>, why: String| {
            let line = line.map_or_else(String::new, |l| format!(" line {l}"));
            src.error(span.clone(), format!("{shown}{line}: {why}"))
        };
        let header = reader
            .headers()
            .map_err(|e| at(e.position().map(|p| p.line()), csv_reason(&e)))?
            .clone();
        if header.is_empty() || header.iter().all(str::is_empty) {
            return Err(at(
                Some(1),
                "no header: its first line names the parameters".into(),
            ));
        }
        let mut names: Vec<String> = Vec::with_capacity(header.len());
        for name in header.iter() {
            let name = name.trim().to_owned();
            check_name(&name).map_err(|why| at(Some(1), why))?;
            if names.contains(&name) {
                return Err(at(Some(1), format!("column `{name}` is named twice")));
            }
            names.push(name);
        }
        let mut rows = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| at(e.position().map(|p| p.line()), csv_reason(&e)))?;
            if record.iter().all(str::is_empty) {
                continue;
            }
            rows.push(record.iter().map(str::to_owned).collect());
            if rows.len() > MAX_UNITS {
                break;
            }
        }
        if rows.is_empty() {
            return Err(at(None, "no rows under the header".into()));
        }
        Ok(Sweep {
            names,
            rows: Rows::Table(rows),
        })
    }

    fn within_limit(&self, src: &Source<'_>, span: Range<usize>) -> Result<(), WorkloadError> {
        let n = self.count();
        if n > MAX_UNITS as u64 || n > u64::from(u32::MAX) {
            return Err(src.error(
                span,
                format!("the sweep makes {n} units; a workload holds at most {MAX_UNITS}"),
            ));
        }
        Ok(())
    }
}

/// Why a CSV file could not be read, without the position (given apart).
fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("this row has {len} fields, the header {expected_len}"),
        csv::ErrorKind::Utf8 { .. } => "not UTF-8 text".to_owned(),
        _ => e.to_string(),
    }
}

/// A parameter's name: letters, digits and `_`, not starting with a digit, and not `i`
/// (a member's index).
fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let good = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !good {
        return Err(format!(
            "parameter name `{}` is not allowed: use letters, digits and _, starting with a \
             letter",
            name.escape_debug()
        ));
    }
    if name == "i" {
        return Err(
            "`i` is each unit's index in its table: give the parameter another name".into(),
        );
    }
    Ok(())
}

/// A value as it is written into a unit's fields.
fn text_of(value: &toml::Value) -> Option<String> {
    Some(match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(x) => x.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(_) | toml::Value::Table(_) => return None,
    })
}

/// Where key `key` of the table at `span` is written, to point at it (the table's start
/// if not found).
fn position(text: &str, span: Range<usize>, key: &str) -> usize {
    let body = text.get(span.clone()).unwrap_or_default();
    let mut from = 0;
    while let Some(k) = body[from..].find(key) {
        let at = from + k;
        let before = body[..at].chars().next_back();
        let after = body[at + key.len()..].trim_start().chars().next();
        let starts = before.is_none_or(|c| c.is_whitespace() || c == '{' || c == ',');
        if starts && after == Some('=') {
            return span.start + at;
        }
        from = at + key.len();
    }
    span.start
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists(lists: &[&[&str]]) -> Sweep {
        Sweep {
            names: (0..lists.len()).map(|k| format!("p{k}")).collect(),
            rows: Rows::Product(
                lists
                    .iter()
                    .map(|l| l.iter().map(|v| (*v).to_owned()).collect())
                    .collect(),
            ),
        }
    }

    #[test]
    fn a_product_makes_every_combination_the_last_list_fastest() {
        let s = lists(&[&["1", "2", "3"], &["x", "y"]]);
        assert_eq!(s.count(), 6);
        let all: Vec<Vec<String>> = (0..6).map(|i| s.values(i)).collect();
        let expected = [
            ["1", "x"],
            ["1", "y"],
            ["2", "x"],
            ["2", "y"],
            ["3", "x"],
            ["3", "y"],
        ];
        for (got, want) in all.iter().zip(expected) {
            assert_eq!(got, &want);
        }
    }

    #[test]
    fn parameter_names_are_words_and_not_i() {
        assert!(check_name("alpha_2").is_ok());
        assert!(check_name("_x").is_ok());
        for bad in ["", "2a", "a-b", "a b", "i", "{a}"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keys_are_found_where_they_are_written() {
        let text = "[unit.parameters]\nbeta = [1]\nalpha = [2]\n";
        let span = 0..text.len();
        assert_eq!(position(text, span.clone(), "beta"), 18);
        assert_eq!(position(text, span.clone(), "alpha"), 29);
        assert_eq!(position(text, span, "gamma"), 0);
    }
}
