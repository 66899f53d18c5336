//! The nodes and cores a pilot's batch job holds.
//!
//! An agent started inside a batch job reads its allocation from what the batch system
//! sets in its environment: Slurm, Grid Engine, PBS/Torque and LSF, checked in that order
//! (see [`Allocation::from_env`]). Outside a batch job the pilot's declared cores on this
//! one host are its allocation ([`Allocation::single`]).
//!
//! A variable set to empty (or blank) text counts as unset. A host named more than once
//! (a PE_HOSTFILE line per queue, a PBS_NODEFILE line per core) is one [`Node`] holding
//! all of its cores, at the place it was first named.

use std::path::{Path, PathBuf};

/// The most hosts one Slurm hostlist (or cores-per-node list) may expand to: far more than
/// any machine has, and a guard against texts like `n[0-4000000000]`.
const MAX_HOSTS: u64 = 1 << 20;

/// One node of a pilot's allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The node's hostname, as the batch system names it.
    pub name: String,
    /// How many of the node's cores the job holds.
    pub cores: u32,
}

/// The nodes a batch job holds, and where that was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The nodes, in the order the batch system lists them.
    pub nodes: Vec<Node>,
    /// Where the allocation was read from.
    pub source: Source,
}

/// Where an [`Allocation`] was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `SLURM_JOB_NODELIST` and `SLURM_JOB_CPUS_PER_NODE` (or their fallbacks).
    Slurm,
    /// `PE_HOSTFILE`, or `JOB_ID`, `NSLOTS` and `HOSTNAME`.
    GridEngine,
    /// `PBS_NODEFILE` (PBS Pro, OpenPBS, Torque).
    Pbs,
    /// `LSB_MCPU_HOSTS` or `LSB_HOSTS`.
    Lsf,
    /// No batch system: the cores the pilot declared, on this one host.
    Declared,
}

/// Why a batch job's allocation could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AllocationError {
    /// A variable's value does not parse.
    #[error("{var} `{text}` is malformed")]
    Malformed {
        /// The variable.
        var: &'static str,
        /// Its value.
        text: String,
    },
    /// A line of a host file (named by `var`) does not parse.
    #[error("line {line} `{text}` of {var} file `{path}` is malformed")]
    MalformedLine {
        /// The variable that names the file.
        var: &'static str,
        /// The file.
        path: PathBuf,
        /// The line's number, from 1.
        line: usize,
        /// The line.
        text: String,
    },
    /// A host file (named by `var`) names no host.
    #[error("{var} file `{path}` names no hosts")]
    Empty {
        /// The variable that names the file.
        var: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// A host file (named by `var`) cannot be read.
    #[error("cannot read {var} file `{path}`: {source}")]
    Read {
        /// The variable that names the file.
        var: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A cores-per-node list does not have one count per node.
    #[error(
        "{var} `{text}` gives {} for the {} of {list}",
        pstar_model::plural(*.counts as u64, "core count"),
        pstar_model::plural(*.nodes as u64, "node")
    )]
    CountMismatch {
        /// The variable with the core counts.
        var: &'static str,
        /// Its value.
        text: String,
        /// How many counts it gives.
        counts: usize,
        /// How many nodes the node list names.
        nodes: usize,
        /// The variable with the node list.
        list: &'static str,
    },
    /// A variable is set but another one it needs is not.
    #[error("{var} is set but not {needs}")]
    Missing {
        /// The variable that is set.
        var: &'static str,
        /// What is missing.
        needs: &'static str,
    },
}

impl Allocation {
    /// Reads the allocation from a batch job's environment: `env` looks a variable up
    /// (`std::env::var` in production, a map in tests); `read` reads a file (for
    /// `PE_HOSTFILE` / `PBS_NODEFILE`).
    ///
    /// Checks Slurm, Grid Engine, PBS/Torque and LSF in that order; the first batch system
    /// whose variables are set decides, and an error in them is an error (no fall-through).
    /// Returns `None` when no batch allocation is visible (a plain process).
    pub fn from_env(
        env: impl Fn(&str) -> Option<String>,
        read: impl Fn(&Path) -> std::io::Result<String>,
    ) -> Result<Option<Allocation>, AllocationError> {
        let get = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        if let Some(found) = slurm(&get)? {
            return Ok(Some(found));
        }
        if let Some(found) = grid_engine(&get, &read)? {
            return Ok(Some(found));
        }
        if let Some(found) = pbs(&get, &read)? {
            return Ok(Some(found));
        }
        lsf(&get)
    }

    /// `cores` declared cores on this one host (no batch system): a single node named
    /// `name` (the hostname).
    pub fn single(name: String, cores: u32) -> Allocation {
        Allocation {
            nodes: vec![Node { name, cores }],
            source: Source::Declared,
        }
    }

    /// The cores of all nodes together (saturating at `u32::MAX`).
    pub fn total_cores(&self) -> u32 {
        self.nodes
            .iter()
            .fold(0u32, |sum, node| sum.saturating_add(node.cores))
    }
}

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;
type Read<'a> = &'a dyn Fn(&Path) -> std::io::Result<String>;

fn malformed(var: &'static str, text: &str) -> AllocationError {
    AllocationError::Malformed {
        var,
        text: text.to_owned(),
    }
}

/// Slurm: `SLURM_JOB_NODELIST` (or `SLURM_NODELIST`) with `SLURM_JOB_CPUS_PER_NODE` (or
/// `SLURM_CPUS_ON_NODE` for every node).
fn slurm(get: Env) -> Result<Option<Allocation>, AllocationError> {
    let Some((list_var, list)) = ["SLURM_JOB_NODELIST", "SLURM_NODELIST"]
        .into_iter()
        .find_map(|var| get(var).map(|value| (var, value)))
    else {
        return Ok(None);
    };
    let hosts = expand_hostlist(list.trim()).ok_or_else(|| malformed(list_var, &list))?;
    let cores = if let Some(text) = get("SLURM_JOB_CPUS_PER_NODE") {
        let var = "SLURM_JOB_CPUS_PER_NODE";
        let counts = cpus_per_node(text.trim()).ok_or_else(|| malformed(var, &text))?;
        if counts.len() != hosts.len() {
            return Err(AllocationError::CountMismatch {
                var,
                text,
                counts: counts.len(),
                nodes: hosts.len(),
                list: list_var,
            });
        }
        counts
    } else if let Some(text) = get("SLURM_CPUS_ON_NODE") {
        let count = count(text.trim()).ok_or_else(|| malformed("SLURM_CPUS_ON_NODE", &text))?;
        vec![count; hosts.len()]
    } else {
        return Err(AllocationError::Missing {
            var: list_var,
            needs: "SLURM_JOB_CPUS_PER_NODE or SLURM_CPUS_ON_NODE",
        });
    };
    Ok(Some(Allocation {
        nodes: tally(hosts.into_iter().zip(cores)),
        source: Source::Slurm,
    }))
}

/// Grid Engine: the `PE_HOSTFILE`, else `JOB_ID`, `NSLOTS` and `HOSTNAME` for one node.
fn grid_engine(get: Env, read: Read) -> Result<Option<Allocation>, AllocationError> {
    let var = "PE_HOSTFILE";
    if let Some(file) = get(var) {
        let (path, text) = read_file(var, &file, read)?;
        let mut hosts = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let mut fields = line.split_whitespace();
            let Some(host) = fields.next() else {
                continue;
            };
            let slots = fields
                .next()
                .and_then(count)
                .ok_or_else(|| bad_line(var, &path, i, line))?;
            hosts.push((host.to_owned(), slots));
        }
        if hosts.is_empty() {
            return Err(AllocationError::Empty { var, path });
        }
        return Ok(Some(Allocation {
            nodes: tally(hosts),
            source: Source::GridEngine,
        }));
    }
    let (Some(_), Some(slots), Some(host)) = (get("JOB_ID"), get("NSLOTS"), get("HOSTNAME")) else {
        return Ok(None);
    };
    let cores = count(slots.trim()).ok_or_else(|| malformed("NSLOTS", &slots))?;
    let name = host.trim();
    if name.contains(char::is_whitespace) {
        return Err(malformed("HOSTNAME", &host));
    }
    Ok(Some(Allocation {
        nodes: vec![Node {
            name: name.to_owned(),
            cores,
        }],
        source: Source::GridEngine,
    }))
}

/// PBS/Torque: the `PBS_NODEFILE`, one hostname a line, once per core.
fn pbs(get: Env, read: Read) -> Result<Option<Allocation>, AllocationError> {
    let var = "PBS_NODEFILE";
    let Some(file) = get(var) else {
        return Ok(None);
    };
    let (path, text) = read_file(var, &file, read)?;
    let mut hosts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let host = line.trim();
        if host.is_empty() {
            continue;
        }
        if host.contains(char::is_whitespace) {
            return Err(bad_line(var, &path, i, line));
        }
        hosts.push((host.to_owned(), 1));
    }
    if hosts.is_empty() {
        return Err(AllocationError::Empty { var, path });
    }
    Ok(Some(Allocation {
        nodes: tally(hosts),
        source: Source::Pbs,
    }))
}

/// LSF: `LSB_MCPU_HOSTS` (`host count` pairs), else `LSB_HOSTS` (a host once per core).
fn lsf(get: Env) -> Result<Option<Allocation>, AllocationError> {
    let hosts = if let Some(text) = get("LSB_MCPU_HOSTS") {
        let var = "LSB_MCPU_HOSTS";
        let fields: Vec<&str> = text.split_whitespace().collect();
        let pairs = fields.chunks(2).map(|pair| match *pair {
            [host, cores] => count(cores).map(|cores| (host.to_owned(), cores)),
            _ => None,
        });
        pairs
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| malformed(var, &text))?
    } else if let Some(text) = get("LSB_HOSTS") {
        text.split_whitespace().map(|h| (h.to_owned(), 1)).collect()
    } else {
        return Ok(None);
    };
    Ok(Some(Allocation {
        nodes: tally(hosts),
        source: Source::Lsf,
    }))
}

fn read_file(
    var: &'static str,
    file: &str,
    read: Read,
) -> Result<(PathBuf, String), AllocationError> {
    let path = PathBuf::from(file.trim());
    match read(&path) {
        Ok(text) => Ok((path, text)),
        Err(source) => Err(AllocationError::Read { var, path, source }),
    }
}

fn bad_line(var: &'static str, path: &Path, index: usize, line: &str) -> AllocationError {
    AllocationError::MalformedLine {
        var,
        path: path.to_owned(),
        line: index + 1,
        text: line.trim().to_owned(),
    }
}

/// Merges `(host, cores)` pairs into nodes: a host named again adds its cores to the node
/// where it was first named.
fn tally(hosts: impl IntoIterator<Item = (String, u32)>) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for (name, cores) in hosts {
        match index.get(&name) {
            Some(&i) => {
                let node: &mut Node = &mut nodes[i];
                node.cores = node.cores.saturating_add(cores);
            }
            None => {
                index.insert(name.clone(), nodes.len());
                nodes.push(Node { name, cores });
            }
        }
    }
    nodes
}

/// A positive core count in plain decimal digits.
fn count(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|&n| n > 0)
}

/// Slurm's cores-per-node list: `16(x2),8` is 16, 16, 8.
fn cpus_per_node(text: &str) -> Option<Vec<u32>> {
    let mut counts = Vec::new();
    for item in text.split(',') {
        let (cores, times) = match item.split_once('(') {
            None => (count(item)?, 1),
            Some((cores, rest)) => {
                let times = rest.strip_prefix('x')?.strip_suffix(')')?;
                (count(cores)?, count(times)?)
            }
        };
        if counts.len() as u64 + u64::from(times) > MAX_HOSTS {
            return None;
        }
        counts.extend(std::iter::repeat_n(cores, times as usize));
    }
    Some(counts)
}

/// Expands a Slurm hostlist (`n[1-3,5]`, `n[01-03]`, `rack[1-2]-n[1-2]`, `a,b`) to its
/// hosts, in order; `None` if it is malformed or too large.
fn expand_hostlist(text: &str) -> Option<Vec<String>> {
    let mut hosts = Vec::new();
    for pattern in split_hostlist(text)? {
        expand_pattern(pattern, &mut hosts)?;
    }
    Some(hosts)
}

/// Splits a hostlist at the commas outside brackets; checks that brackets pair up and do
/// not nest.
fn split_hostlist(text: &str) -> Option<Vec<&str>> {
    let mut patterns = Vec::new();
    let mut open = false;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '[' if open => return None,
            ']' if !open => return None,
            '[' | ']' => open = !open,
            ',' if !open => {
                patterns.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if open {
        return None;
    }
    patterns.push(&text[start..]);
    Some(patterns)
}

/// Appends the hosts of one pattern without top-level commas (`rack[1-2]-n[01-02]`):
/// the cartesian product of its bracket groups, the leftmost group varying slowest.
fn expand_pattern(pattern: &str, hosts: &mut Vec<String>) -> Option<()> {
    if pattern.is_empty() || pattern.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return None;
    }
    // Split into literal text and bracket groups, each group parsed into its ranges.
    let mut parts: Vec<Part> = Vec::new();
    let mut rest = pattern;
    let mut size: u64 = 1;
    while let Some(open) = rest.find('[') {
        let close = rest.find(']')?;
        if open > 0 {
            parts.push(Part::Text(&rest[..open]));
        }
        let ranges = group(&rest[open + 1..close])?;
        let group_size = ranges.iter().map(Range::len).sum::<u64>();
        size = size.checked_mul(group_size)?;
        if hosts.len() as u64 + size > MAX_HOSTS {
            return None;
        }
        parts.push(Part::Group(ranges));
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest));
    }
    let mut names = vec![String::new()];
    for part in &parts {
        names = match part {
            Part::Text(text) => names.into_iter().map(|n| n + text).collect(),
            Part::Group(ranges) => names
                .iter()
                .flat_map(|prefix| {
                    ranges.iter().flat_map(move |r| {
                        (r.lo..=r.hi).map(move |n| format!("{prefix}{n:0width$}", width = r.width))
                    })
                })
                .collect(),
        };
    }
    hosts.extend(names);
    Some(())
}

/// A piece of a hostlist pattern.
enum Part<'a> {
    Text(&'a str),
    Group(Vec<Range>),
}

/// Numbers `lo..=hi` of a bracket group, printed at least `width` digits wide.
struct Range {
    lo: u64,
    hi: u64,
    width: usize,
}

impl Range {
    fn len(&self) -> u64 {
        self.hi - self.lo + 1
    }
}

/// Parses a bracket group's contents (`1-3,5`, `01-03`); zero padding follows the lower
/// bound's width.
fn group(text: &str) -> Option<Vec<Range>> {
    let number = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    text.split(',')
        .map(|item| {
            let (lo_text, hi_text) = item.split_once('-').unwrap_or((item, item));
            let (lo, hi) = (number(lo_text)?, number(hi_text)?);
            (lo <= hi).then_some(Range {
                lo,
                hi,
                width: lo_text.len(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io;

    /// An environment holding exactly `vars`.
    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    /// A file system holding exactly `files`.
    fn fs(files: &[(&str, &str)]) -> impl Fn(&Path) -> io::Result<String> + use<> {
        let map: HashMap<PathBuf, String> = files
            .iter()
            .map(|(k, v)| (PathBuf::from(k), v.to_string()))
            .collect();
        move |path| {
            map.get(path)
                .cloned()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
        }
    }

    fn load(
        vars: &[(&str, &str)],
        files: &[(&str, &str)],
    ) -> Result<Option<Allocation>, AllocationError> {
        Allocation::from_env(env(vars), fs(files))
    }

    fn found(vars: &[(&str, &str)], files: &[(&str, &str)]) -> Allocation {
        match load(vars, files) {
            Ok(Some(a)) => a,
            other => panic!("expected an allocation from {vars:?}, got {other:?}"),
        }
    }

    fn error(vars: &[(&str, &str)], files: &[(&str, &str)]) -> AllocationError {
        match load(vars, files) {
            Err(e) => e,
            other => panic!("expected an error from {vars:?}, got {other:?}"),
        }
    }

    fn nodes(list: &[(&str, u32)]) -> Vec<Node> {
        list.iter()
            .map(|&(name, cores)| Node {
                name: name.to_owned(),
                cores,
            })
            .collect()
    }

    fn expand(text: &str) -> Option<Vec<String>> {
        expand_hostlist(text)
    }

    fn hosts(list: &[&str]) -> Option<Vec<String>> {
        Some(list.iter().map(|h| h.to_string()).collect())
    }

    // ---- Slurm hostlists ----

    #[test]
    fn hostlist_ranges_and_single_numbers() {
        assert_eq!(expand("n[1-3,5]"), hosts(&["n1", "n2", "n3", "n5"]));
        assert_eq!(expand("n[7]"), hosts(&["n7"]));
        assert_eq!(expand("n[5,1]"), hosts(&["n5", "n1"]), "order is kept");
        assert_eq!(expand("n1"), hosts(&["n1"]));
    }

    #[test]
    fn hostlist_keeps_zero_padding() {
        assert_eq!(expand("n[01-03]"), hosts(&["n01", "n02", "n03"]));
        assert_eq!(expand("n[08-11]"), hosts(&["n08", "n09", "n10", "n11"]));
        assert_eq!(expand("n[007]"), hosts(&["n007"]));
        assert_eq!(
            expand("n[098-101]"),
            hosts(&["n098", "n099", "n100", "n101"])
        );
        assert_eq!(
            expand("n[9-10]"),
            hosts(&["n9", "n10"]),
            "no padding without a zero"
        );
        assert_eq!(expand("n[0-1]"), hosts(&["n0", "n1"]));
    }

    #[test]
    fn hostlist_splits_at_commas_outside_brackets_only() {
        assert_eq!(expand("a,b"), hosts(&["a", "b"]));
        assert_eq!(expand("n1,gpu[1-2]"), hosts(&["n1", "gpu1", "gpu2"]));
        assert_eq!(
            expand("n[1,3],m[2-3],x"),
            hosts(&["n1", "n3", "m2", "m3", "x"])
        );
        assert_eq!(
            expand("node-[1-2].cluster.org,login.cluster.org"),
            hosts(&[
                "node-1.cluster.org",
                "node-2.cluster.org",
                "login.cluster.org"
            ])
        );
    }

    #[test]
    fn hostlist_bracket_groups_multiply() {
        assert_eq!(
            expand("rack[1-2]-n[1-2]"),
            hosts(&["rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"])
        );
        assert_eq!(
            expand("r[1,3]n[01-02]-ib,x"),
            hosts(&["r1n01-ib", "r1n02-ib", "r3n01-ib", "r3n02-ib", "x"])
        );
        assert_eq!(expand("[1-2]x"), hosts(&["1x", "2x"]));
    }

    #[test]
    fn malformed_hostlists_are_refused() {
        for bad in [
            "",
            "n[1-3",
            "n1-3]",
            "n[[1]]",
            "n[1]]",
            "n[]",
            "n[3-1]",
            "n[a-b]",
            "n[1-]",
            "n[-2]",
            "n[1-2-3]",
            "n[1,,2]",
            "n[,1]",
            "n[+1]",
            "a,,b",
            "a,",
            ",a",
            "a b",
            "n[1 -2]",
            "n[0-99999999999999999999]",
        ] {
            assert_eq!(expand(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn huge_hostlists_are_refused() {
        assert_eq!(expand("n[0-4000000000]"), None);
        assert_eq!(expand("a[1-2000]b[1-2000]"), None, "the product counts");
        assert_eq!(
            expand("a[1-1000]b[1-1000]").map(|h| h.len()),
            Some(1_000_000)
        );
    }

    // ---- Slurm ----

    #[test]
    fn slurm_cpus_per_node_repeat_counts() {
        let a = found(
            &[
                ("SLURM_JOB_NODELIST", "n[1-3]"),
                ("SLURM_JOB_CPUS_PER_NODE", "16(x2),8"),
            ],
            &[],
        );
        assert_eq!(a.source, Source::Slurm);
        assert_eq!(a.nodes, nodes(&[("n1", 16), ("n2", 16), ("n3", 8)]));
        assert_eq!(a.total_cores(), 40);
    }

    #[test]
    fn slurm_real_world_lists() {
        let a = found(
            &[
                ("SLURM_JOB_NODELIST", "c[01-02],gpu[1,3]"),
                ("SLURM_JOB_CPUS_PER_NODE", "48(x2),32(x2)"),
            ],
            &[],
        );
        let expect = [("c01", 48), ("c02", 48), ("gpu1", 32), ("gpu3", 32)];
        assert_eq!(a.nodes, nodes(&expect));
        assert_eq!(a.total_cores(), 160);

        let a = found(
            &[
                ("SLURM_JOB_NODELIST", "rack[1-2]-n[1-2]"),
                ("SLURM_JOB_CPUS_PER_NODE", "4(x4)"),
            ],
            &[],
        );
        assert_eq!(a.nodes.len(), 4);
        assert_eq!(a.nodes[1], nodes(&[("rack1-n2", 4)])[0]);

        let one = [
            ("SLURM_JOB_NODELIST", "vm"),
            ("SLURM_JOB_CPUS_PER_NODE", "2"),
        ];
        assert_eq!(found(&one, &[]).nodes, nodes(&[("vm", 2)]));
    }

    #[test]
    fn slurm_falls_back_to_slurm_nodelist_and_cpus_on_node() {
        let a = found(
            &[("SLURM_NODELIST", "n[1-2]"), ("SLURM_CPUS_ON_NODE", "12")],
            &[],
        );
        assert_eq!(a.nodes, nodes(&[("n1", 12), ("n2", 12)]));

        let a = found(
            &[
                ("SLURM_JOB_NODELIST", "a"),
                ("SLURM_NODELIST", "b"),
                ("SLURM_JOB_CPUS_PER_NODE", "3"),
                ("SLURM_CPUS_ON_NODE", "99"),
            ],
            &[],
        );
        assert_eq!(
            a.nodes,
            nodes(&[("a", 3)]),
            "the SLURM_JOB_ variables come first"
        );

        let a = found(
            &[
                ("SLURM_JOB_NODELIST", ""),
                ("SLURM_NODELIST", "b"),
                ("SLURM_JOB_CPUS_PER_NODE", " "),
                ("SLURM_CPUS_ON_NODE", "5\n"),
            ],
            &[],
        );
        assert_eq!(a.nodes, nodes(&[("b", 5)]), "empty counts as unset");
    }

    #[test]
    fn slurm_malformed_cpus_per_node_names_variable_and_text() {
        let e = error(
            &[
                ("SLURM_JOB_NODELIST", "n[1-2]"),
                ("SLURM_JOB_CPUS_PER_NODE", "2(x"),
            ],
            &[],
        );
        assert_eq!(e.to_string(), "SLURM_JOB_CPUS_PER_NODE `2(x` is malformed");
        for bad in [
            "x",
            "2(x0)",
            "0",
            "2(2)",
            "2(x2",
            "2x2)",
            "(x2)",
            "+4",
            "-4",
            "4,",
            ",4",
            "4 ,4",
            "2(x2)(x2)",
            "2(x4294967295)",
            "99999999999",
        ] {
            let e = error(
                &[
                    ("SLURM_JOB_NODELIST", "n1"),
                    ("SLURM_JOB_CPUS_PER_NODE", bad),
                ],
                &[],
            );
            assert!(
                matches!(&e, AllocationError::Malformed { var: "SLURM_JOB_CPUS_PER_NODE", text } if text == bad),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn slurm_malformed_nodelist_and_cpus_on_node() {
        let e = error(
            &[("SLURM_JOB_NODELIST", "n[1-3"), ("SLURM_CPUS_ON_NODE", "4")],
            &[],
        );
        assert_eq!(e.to_string(), "SLURM_JOB_NODELIST `n[1-3` is malformed");
        let e = error(
            &[("SLURM_NODELIST", "n[3-1]"), ("SLURM_CPUS_ON_NODE", "4")],
            &[],
        );
        assert_eq!(e.to_string(), "SLURM_NODELIST `n[3-1]` is malformed");
        let e = error(
            &[("SLURM_JOB_NODELIST", "n1"), ("SLURM_CPUS_ON_NODE", "four")],
            &[],
        );
        assert_eq!(e.to_string(), "SLURM_CPUS_ON_NODE `four` is malformed");
    }

    #[test]
    fn slurm_count_mismatch_and_missing_counts_are_errors() {
        let e = error(
            &[
                ("SLURM_JOB_NODELIST", "n[1-3]"),
                ("SLURM_JOB_CPUS_PER_NODE", "16(x2)"),
            ],
            &[],
        );
        assert!(matches!(
            e,
            AllocationError::CountMismatch {
                counts: 2,
                nodes: 3,
                ..
            }
        ));
        assert_eq!(
            e.to_string(),
            "SLURM_JOB_CPUS_PER_NODE `16(x2)` gives 2 core counts for the 3 nodes of SLURM_JOB_NODELIST"
        );
        let e = error(
            &[
                ("SLURM_JOB_NODELIST", "n1"),
                ("SLURM_JOB_CPUS_PER_NODE", "4,4"),
            ],
            &[],
        );
        assert!(matches!(
            e,
            AllocationError::CountMismatch {
                counts: 2,
                nodes: 1,
                ..
            }
        ));

        let e = error(&[("SLURM_JOB_NODELIST", "n1"), ("SLURM_JOB_ID", "7")], &[]);
        assert!(matches!(
            e,
            AllocationError::Missing {
                var: "SLURM_JOB_NODELIST",
                ..
            }
        ));
        assert_eq!(
            e.to_string(),
            "SLURM_JOB_NODELIST is set but not SLURM_JOB_CPUS_PER_NODE or SLURM_CPUS_ON_NODE"
        );
    }

    #[test]
    fn slurm_comes_first() {
        let a = found(
            &[
                ("SLURM_JOB_NODELIST", "s1"),
                ("SLURM_CPUS_ON_NODE", "2"),
                ("PE_HOSTFILE", "/pe"),
                ("PBS_NODEFILE", "/pbs"),
                ("LSB_HOSTS", "l1"),
            ],
            &[("/pe", "g1 4 all.q@g1 UNDEFINED\n"), ("/pbs", "p1\n")],
        );
        assert_eq!(a.source, Source::Slurm);
        assert_eq!(a.nodes, nodes(&[("s1", 2)]));
    }

    // ---- Grid Engine ----

    #[test]
    fn grid_engine_pe_hostfile() {
        let a = found(
            &[("PE_HOSTFILE", "/tmp/pe_hostfile")],
            &[("/tmp/pe_hostfile", "vm 8 all.q@vm UNDEFINED\n")],
        );
        assert_eq!(a.source, Source::GridEngine);
        assert_eq!(a.nodes, nodes(&[("vm", 8)]));

        let file = "node2.cluster 4 all.q@node2.cluster UNDEFINED\r\n\
                    \r\n\
                    node1.cluster 2 all.q@node1.cluster 0,1:0,2\r\n\
                    node2.cluster 2 long.q@node2.cluster UNDEFINED\r\n";
        let a = found(&[("PE_HOSTFILE", "/pe")], &[("/pe", file)]);
        assert_eq!(
            a.nodes,
            nodes(&[("node2.cluster", 6), ("node1.cluster", 2)]),
            "a host in two queues is one node"
        );
        assert_eq!(a.total_cores(), 8);

        let a = found(&[("PE_HOSTFILE", "/pe")], &[("/pe", "bare 3")]);
        assert_eq!(
            a.nodes,
            nodes(&[("bare", 3)]),
            "queue and processors are optional"
        );
    }

    #[test]
    fn grid_engine_malformed_pe_hostfile() {
        for bad in [
            "vm",
            "vm eight all.q@vm UNDEFINED",
            "vm 0 all.q@vm UNDEFINED",
            "vm -1 q x",
        ] {
            let file = format!("ok 2 all.q@ok UNDEFINED\n{bad}\n");
            let e = error(&[("PE_HOSTFILE", "/pe")], &[("/pe", &file)]);
            assert!(
                matches!(&e, AllocationError::MalformedLine { var: "PE_HOSTFILE", line: 2, text, .. } if text == bad),
                "{bad:?}: {e}"
            );
        }
        let e = error(
            &[("PE_HOSTFILE", "/pe")],
            &[("/pe", "vm x all.q@vm UNDEFINED\n")],
        );
        assert_eq!(
            e.to_string(),
            "line 1 `vm x all.q@vm UNDEFINED` of PE_HOSTFILE file `/pe` is malformed"
        );

        let e = error(&[("PE_HOSTFILE", "/pe")], &[("/pe", "\n  \n")]);
        assert!(matches!(
            e,
            AllocationError::Empty {
                var: "PE_HOSTFILE",
                ..
            }
        ));
        assert_eq!(e.to_string(), "PE_HOSTFILE file `/pe` names no hosts");

        let e = error(&[("PE_HOSTFILE", "/gone")], &[]);
        assert!(matches!(
            &e,
            AllocationError::Read { var: "PE_HOSTFILE", path, source }
                if path == Path::new("/gone") && source.kind() == io::ErrorKind::NotFound
        ));
        assert_eq!(
            e.to_string(),
            "cannot read PE_HOSTFILE file `/gone`: no such file"
        );
    }

    #[test]
    fn grid_engine_without_hostfile_is_one_node() {
        let vars = [("JOB_ID", "4711"), ("NSLOTS", "6"), ("HOSTNAME", "exec1")];
        let a = found(&vars, &[]);
        assert_eq!(a.source, Source::GridEngine);
        assert_eq!(a.nodes, nodes(&[("exec1", 6)]));

        for i in 0..vars.len() {
            let mut partial = vars.to_vec();
            partial.remove(i);
            assert!(
                matches!(load(&partial, &[]), Ok(None)),
                "without {}",
                vars[i].0
            );
        }

        let e = error(&[("JOB_ID", "1"), ("NSLOTS", "6x"), ("HOSTNAME", "h")], &[]);
        assert_eq!(e.to_string(), "NSLOTS `6x` is malformed");
        let e = error(
            &[("JOB_ID", "1"), ("NSLOTS", "6"), ("HOSTNAME", "a b")],
            &[],
        );
        assert_eq!(e.to_string(), "HOSTNAME `a b` is malformed");
    }

    #[test]
    fn grid_engine_hostfile_wins_over_pbs_and_lsf() {
        let a = found(
            &[
                ("PE_HOSTFILE", "/pe"),
                ("JOB_ID", "1"),
                ("NSLOTS", "99"),
                ("HOSTNAME", "other"),
                ("PBS_NODEFILE", "/pbs"),
                ("LSB_HOSTS", "l1"),
            ],
            &[("/pe", "g1 4 all.q@g1 UNDEFINED\n"), ("/pbs", "p1\n")],
        );
        assert_eq!(a.source, Source::GridEngine);
        assert_eq!(a.nodes, nodes(&[("g1", 4)]));
    }

    // ---- PBS/Torque ----

    #[test]
    fn pbs_nodefile_counts_repeats_in_first_seen_order() {
        let a = found(
            &[("PBS_NODEFILE", "/var/spool/pbs/aux/42.server")],
            &[("/var/spool/pbs/aux/42.server", "nb\nna\nnb\nna\nnb\n")],
        );
        assert_eq!(a.source, Source::Pbs);
        assert_eq!(a.nodes, nodes(&[("nb", 3), ("na", 2)]));
        assert_eq!(a.total_cores(), 5);

        let a = found(
            &[("PBS_NODEFILE", "/n")],
            &[("/n", "  x1 \r\n\r\nx1\r\nx2")],
        );
        assert_eq!(a.nodes, nodes(&[("x1", 2), ("x2", 1)]));
    }

    #[test]
    fn pbs_malformed_nodefile() {
        let e = error(&[("PBS_NODEFILE", "/n")], &[("/n", "a\nb c\n")]);
        assert!(matches!(
            &e,
            AllocationError::MalformedLine {
                var: "PBS_NODEFILE",
                line: 2,
                ..
            }
        ));
        assert_eq!(
            e.to_string(),
            "line 2 `b c` of PBS_NODEFILE file `/n` is malformed"
        );

        let e = error(&[("PBS_NODEFILE", "/n")], &[("/n", "")]);
        assert!(matches!(
            e,
            AllocationError::Empty {
                var: "PBS_NODEFILE",
                ..
            }
        ));

        let e = error(&[("PBS_NODEFILE", "/missing")], &[]);
        assert!(matches!(
            e,
            AllocationError::Read {
                var: "PBS_NODEFILE",
                ..
            }
        ));
    }

    #[test]
    fn pbs_wins_over_lsf() {
        let a = found(
            &[("PBS_NODEFILE", "/n"), ("LSB_MCPU_HOSTS", "l1 4")],
            &[("/n", "p1\n")],
        );
        assert_eq!(a.source, Source::Pbs);
    }

    // ---- LSF ----

    #[test]
    fn lsf_mcpu_hosts() {
        let a = found(&[("LSB_MCPU_HOSTS", "hostA 4 hostB 2")], &[]);
        assert_eq!(a.source, Source::Lsf);
        assert_eq!(a.nodes, nodes(&[("hostA", 4), ("hostB", 2)]));
        assert_eq!(a.total_cores(), 6);

        let a = found(
            &[
                ("LSB_MCPU_HOSTS", "hostA 4 hostB 2 "),
                ("LSB_HOSTS", "hostA hostC"),
            ],
            &[],
        );
        assert_eq!(
            a.nodes,
            nodes(&[("hostA", 4), ("hostB", 2)]),
            "LSB_MCPU_HOSTS is preferred"
        );
    }

    #[test]
    fn lsf_hosts_counts_repeats() {
        let a = found(&[("LSB_HOSTS", "hostA hostA hostB")], &[]);
        assert_eq!(a.source, Source::Lsf);
        assert_eq!(a.nodes, nodes(&[("hostA", 2), ("hostB", 1)]));

        let a = found(&[("LSB_MCPU_HOSTS", ""), ("LSB_HOSTS", "b a b")], &[]);
        assert_eq!(a.nodes, nodes(&[("b", 2), ("a", 1)]));
    }

    #[test]
    fn lsf_malformed_mcpu_hosts() {
        for bad in [
            "hostA",
            "hostA 4 hostB",
            "hostA four",
            "hostA 0",
            "4 hostA",
            "hostA -2",
        ] {
            let e = error(&[("LSB_MCPU_HOSTS", bad)], &[]);
            assert!(
                matches!(&e, AllocationError::Malformed { var: "LSB_MCPU_HOSTS", text } if text == bad),
                "{bad:?}: {e}"
            );
        }
        let e = error(&[("LSB_MCPU_HOSTS", "hostA 4 hostB")], &[]);
        assert_eq!(e.to_string(), "LSB_MCPU_HOSTS `hostA 4 hostB` is malformed");
    }

    // ---- nothing visible, declared ----

    #[test]
    fn nothing_visible_is_none() {
        assert!(matches!(load(&[], &[]), Ok(None)));
        let unrelated = [
            ("HOSTNAME", "laptop"),
            ("HOME", "/home/me"),
            ("SLURM_JOB_ID", "12"),
            ("NSLOTS", "4"),
        ];
        assert!(matches!(load(&unrelated, &[]), Ok(None)));
        let blank = [
            ("SLURM_JOB_NODELIST", ""),
            ("SLURM_NODELIST", "  "),
            ("PE_HOSTFILE", ""),
            ("PBS_NODEFILE", "\n"),
            ("LSB_MCPU_HOSTS", ""),
            ("LSB_HOSTS", " "),
        ];
        assert!(
            matches!(load(&blank, &[]), Ok(None)),
            "blank variables count as unset"
        );
    }

    #[test]
    fn from_env_does_not_read_files_without_a_batch_system() {
        let read = |path: &Path| -> io::Result<String> { panic!("read {}", path.display()) };
        assert!(matches!(Allocation::from_env(env(&[]), read), Ok(None)));
        let slurm = env(&[("SLURM_JOB_NODELIST", "n1"), ("SLURM_CPUS_ON_NODE", "1")]);
        assert!(matches!(Allocation::from_env(slurm, read), Ok(Some(_))));
    }

    #[test]
    fn single_is_one_declared_node() {
        let a = Allocation::single("laptop".into(), 8);
        assert_eq!(a.source, Source::Declared);
        assert_eq!(a.nodes, nodes(&[("laptop", 8)]));
        assert_eq!(a.total_cores(), 8);
    }

    #[test]
    fn total_cores_saturates() {
        let a = Allocation {
            nodes: nodes(&[("a", u32::MAX), ("b", 1)]),
            source: Source::Lsf,
        };
        assert_eq!(a.total_cores(), u32::MAX);
        let none = Allocation {
            nodes: Vec::new(),
            source: Source::Declared,
        };
        assert_eq!(none.total_cores(), 0);
    }
}
