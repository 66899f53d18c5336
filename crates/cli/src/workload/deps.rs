//! Dependencies between a workload's units: `after` patterns resolved to units, with the
//! implicit dependency of a unit on the unit whose `output_data` it reads; cycles refused;
//! the order in which units are submitted so that each comes after what it depends on.
//!
//! An `after` entry is a unit name, a glob over names (`prep-*`) or `tag:NAME` (every
//! unit with that tag). One without `{i}` or a sweep parameter stands for the same units
//! for every member of its table; one with them is expanded per member
//! (`after = ["prep-{i}"]`: member 3 runs after `prep-3`).

use std::collections::{BinaryHeap, HashMap};
use std::ops::Range;

use super::{Ensemble, KnownUnit, Source, Template, WorkloadError};

/// The most units a workload with dependencies may hold: each costs a few words of
/// memory while the graph is checked.
pub(super) const MAX_DEP_UNITS: u64 = 10_000_000;

/// The most dependencies (edges) a workload may hold.
pub(super) const MAX_EDGES: u64 = 20_000_000;

/// A workload's dependencies, resolved.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Deps {
    /// Each table's first unit, by its index in file order; the last entry is the total.
    offsets: Vec<u64>,
    /// Per table: what each member runs after (file-order indices).
    after: Vec<After>,
    /// The submission order (position → file-order index), when file order is not one.
    order: Option<Vec<u32>>,
    /// Its inverse (file-order index → position).
    position: Option<Vec<u32>>,
    /// How many `after` dependencies there are.
    pub edges: u64,
    /// Units already in the session (`pstar submit`), by their index less the total.
    session: Vec<pstar::UnitId>,
}

#[derive(Debug, Clone, PartialEq)]
enum After {
    None,
    /// The same units for every member.
    Same(Vec<Range<u64>>),
    /// Member by member.
    Each(Vec<Vec<Range<u64>>>),
}

impl Deps {
    /// The table and member of the unit at file-order index `unit`.
    fn locate(&self, unit: u64) -> (usize, u32) {
        let e = self.offsets.partition_point(|&o| o <= unit) - 1;
        (e, (unit - self.offsets[e]) as u32)
    }

    /// The file-order index of the unit submitted at `position`.
    pub fn at_position(&self, position: u64) -> u64 {
        match &self.order {
            Some(order) => u64::from(order[position as usize]),
            None => position,
        }
    }

    /// The table and member submitted at `position`.
    pub fn member_at(&self, position: u64) -> (usize, u32) {
        self.locate(self.at_position(position))
    }

    fn total(&self) -> u64 {
        *self.offsets.last().unwrap_or(&0)
    }

    /// A unit of the session named by position `p` (one past the file's units).
    pub fn session_unit(&self, p: u64) -> Option<pstar::UnitId> {
        let k = p.checked_sub(self.total())?;
        self.session.get(k as usize).copied()
    }

    fn position_of(&self, unit: u64) -> u64 {
        match &self.position {
            Some(_) if unit >= self.total() => unit,
            Some(p) => u64::from(p[unit as usize]),
            None => unit,
        }
    }

    /// The positions of the units member `i` of table `e` runs after.
    pub fn after(&self, e: usize, i: u32) -> Vec<u64> {
        let ranges: &[Range<u64>] = match &self.after[e] {
            After::None => &[],
            After::Same(r) => r,
            After::Each(each) => &each[i as usize],
        };
        ranges
            .iter()
            .flat_map(|r| r.clone())
            .map(|u| self.position_of(u))
            .collect()
    }
}

/// Each `[[unit]]` table's `after` entries (with where each is written) and where the
/// table is written.
pub(super) type Afters = Vec<(Vec<(Template, Range<usize>)>, Range<usize>)>;

/// How many units of a cycle its message names.
const CYCLE_SHOWN: usize = 8;

/// Why one unit waits for another, to explain a cycle.
enum Why {
    After,
    Reads(String),
}

/// Resolves every table's `after` patterns (each with where it is written) against the
/// units of `ensembles`; `None` if no table has one.
pub(super) fn resolve(
    src: &Source<'_>,
    ensembles: &[Ensemble],
    afters: Afters,
    session: &[KnownUnit],
) -> Result<Option<Deps>, WorkloadError> {
    let Some(first) = afters.iter().find(|(a, _)| !a.is_empty()) else {
        return Ok(None);
    };
    let mut offsets = Vec::with_capacity(ensembles.len() + 1);
    let mut total = 0u64;
    for e in ensembles {
        offsets.push(total);
        total += u64::from(e.count);
    }
    offsets.push(total);
    if total > MAX_DEP_UNITS {
        return Err(src.error(
            first.0[0].1.clone(),
            format!(
                "a workload whose units run `after` others holds at most {MAX_DEP_UNITS} \
                 units; this one holds {total}"
            ),
        ));
    }
    let mut names = Names::of(ensembles, &offsets);
    names.add_session(session, total);
    let mut edges = 0u64;
    let mut after = Vec::with_capacity(ensembles.len());
    let mut cache: HashMap<String, Vec<Range<u64>>> = HashMap::new();
    for (e, ((patterns, _), ens)) in afters.iter().zip(ensembles).enumerate() {
        if patterns.is_empty() {
            after.push(After::None);
            continue;
        }
        let own = offsets[e]..offsets[e + 1];
        let per_member = patterns.iter().any(|(t, _)| !t.is_fixed());
        let mut each: Vec<Vec<Range<u64>>> = Vec::new();
        let members = if per_member { ens.count } else { 1 };
        for i in 0..members {
            let values = ens.sweep.as_ref().map(|s| s.values(i)).unwrap_or_default();
            let mut ranges = Vec::new();
            for (pattern, span) in patterns {
                let text = pattern.expand_member(&i.to_string(), &values);
                let found = match cache.get(&text) {
                    Some(found) => found.clone(),
                    None => {
                        let found = names
                            .find(&text)
                            .map_err(|why| src.error(span.clone(), why))?;
                        cache.insert(text.clone(), found.clone());
                        found
                    }
                };
                let whose = match (per_member, ens.count > 1) {
                    (true, true) => format!(" (member {i})"),
                    _ => String::new(),
                };
                if found.is_empty() {
                    return Err(src.error(
                        span.clone(),
                        format!(
                            "`after` entry \"{}\"{whose} matches no unit{} ({})",
                            text.escape_debug(),
                            match session.is_empty() {
                                true => " of the workload",
                                false => " of the file or the session",
                            },
                            match text.starts_with("tag:") {
                                true => "a tag matches the units whose `tags` hold it exactly",
                                false =>
                                    "names are each unit's `name`, or its executable's \
                                          file name",
                            },
                        ),
                    ));
                }
                let me = match per_member {
                    true => own.start + u64::from(i)..own.start + u64::from(i) + 1,
                    false => own.clone(),
                };
                if found.iter().any(|r| r.start < me.end && me.start < r.end) {
                    let what = match per_member || ens.count == 1 {
                        true => "this unit itself",
                        false => "units of this table, each of which would wait for itself",
                    };
                    return Err(src.error(
                        span.clone(),
                        format!(
                            "`after` entry \"{}\"{whose} matches {what}: a unit cannot run \
                             after itself",
                            text.escape_debug()
                        ),
                    ));
                }
                ranges.extend(found);
            }
            let ranges = merge(ranges);
            let n: u64 = ranges.iter().map(|r| r.end - r.start).sum();
            edges = edges.saturating_add(match per_member {
                true => n,
                false => n.saturating_mul(u64::from(ens.count)),
            });
            if edges > MAX_EDGES {
                return Err(src.error(
                    patterns[0].1.clone(),
                    format!(
                        "`after` makes more than {MAX_EDGES} dependencies: put one unit \
                         between the stages (it runs after the first, the second runs after \
                         it)"
                    ),
                ));
            }
            each.push(ranges);
        }
        after.push(match per_member {
            true => After::Each(each),
            false => After::Same(each.pop().unwrap_or_default()),
        });
    }
    let mut deps = Deps {
        offsets,
        after,
        order: None,
        position: None,
        edges,
        session: session.iter().map(|u| u.id).collect(),
    };
    let made_by = producers(ensembles, &deps.offsets);
    order(src, ensembles, &afters, &mut deps, &made_by)?;
    Ok(Some(deps))
}

/// Sorts and merges overlapping or touching ranges.
fn merge(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// The most names globs of `after` entries are matched against, over a whole file (an
/// entry with `{i}` is a glob per unit): past it the file is refused, not checked for
/// hours.
const MAX_GLOB_MATCHES: u64 = 50_000_000;

/// The units' names and tags, to find what an `after` entry names.
struct Names {
    by_name: HashMap<String, Vec<Range<u64>>>,
    by_tag: HashMap<String, Vec<Range<u64>>>,
    /// Names matched against globs so far.
    matched: std::cell::Cell<u64>,
}

impl Names {
    fn of(ensembles: &[Ensemble], offsets: &[u64]) -> Names {
        let mut by_name: HashMap<String, Vec<Range<u64>>> = HashMap::new();
        let mut by_tag: HashMap<String, Vec<Range<u64>>> = HashMap::new();
        for (e, ens) in ensembles.iter().enumerate() {
            let start = offsets[e];
            for tag in &ens.template.fixed.tags {
                by_tag
                    .entry(tag.clone())
                    .or_default()
                    .push(start..offsets[e + 1]);
            }
            let t = &ens.template;
            let name_of = |i: u32, values: &[String]| -> String {
                match &t.name {
                    Some(name) => name.expand_member(&i.to_string(), values),
                    None => {
                        let exe = t.executable.expand_member(&i.to_string(), values);
                        exe.rsplit('/').next().unwrap_or(&exe).to_owned()
                    }
                }
            };
            let fixed = match &t.name {
                Some(name) => name.is_fixed(),
                None => t.executable.is_fixed(),
            };
            if fixed {
                by_name
                    .entry(name_of(0, &[]))
                    .or_default()
                    .push(start..offsets[e + 1]);
                continue;
            }
            for i in 0..ens.count {
                let values = ens.sweep.as_ref().map(|s| s.values(i)).unwrap_or_default();
                let u = start + u64::from(i);
                let list = by_name.entry(name_of(i, &values)).or_default();
                match list.last_mut() {
                    Some(last) if last.end == u => last.end = u + 1,
                    _ => list.push(u..u + 1),
                }
            }
        }
        Names {
            by_name,
            by_tag,
            matched: std::cell::Cell::new(0),
        }
    }

    /// Units already in the session, numbered from `first` on.
    fn add_session(&mut self, units: &[KnownUnit], first: u64) {
        for (k, u) in units.iter().enumerate() {
            let i = first + k as u64;
            self.by_name
                .entry(u.name.clone())
                .or_default()
                .push(i..i + 1);
            for tag in &u.tags {
                self.by_tag.entry(tag.clone()).or_default().push(i..i + 1);
            }
        }
    }

    /// The units `entry` names (a name, a glob over names, or `tag:NAME`).
    fn find(&self, entry: &str) -> Result<Vec<Range<u64>>, String> {
        if let Some(tag) = entry.strip_prefix("tag:") {
            return Ok(merge(self.by_tag.get(tag).cloned().unwrap_or_default()));
        }
        if !entry.contains(['*', '?', '[']) {
            return Ok(merge(self.by_name.get(entry).cloned().unwrap_or_default()));
        }
        let matched = self.matched.get() + self.by_name.len() as u64;
        self.matched.set(matched);
        if matched > MAX_GLOB_MATCHES {
            return Err(format!(
                "`after` globs are matched against more than {MAX_GLOB_MATCHES} names in this \
                 file (a glob with {{i}} or a parameter is one per unit): name units exactly, \
                 or by `tag:`"
            ));
        }
        let pattern = glob::Pattern::new(entry).map_err(|e| {
            format!(
                "`after` entry \"{}\" is not a valid pattern ({}); a pattern matches names \
                 with `*`, `?` and `[abc]`",
                entry.escape_debug(),
                e.msg
            )
        })?;
        Ok(merge(
            self.by_name
                .iter()
                .filter(|(name, _)| pattern.matches(name))
                .flat_map(|(_, r)| r.iter().cloned())
                .collect(),
        ))
    }
}

/// Which unit (file-order index) makes each data unit that units make.
fn producers(ensembles: &[Ensemble], offsets: &[u64]) -> HashMap<String, u64> {
    let mut made_by = HashMap::new();
    for (e, ens) in ensembles.iter().enumerate() {
        if ens.template.output_data.is_empty() {
            continue;
        }
        for i in 0..ens.count {
            for o in &ens.template.output_data {
                made_by.insert(o.name.expand(&i.to_string()), offsets[e] + u64::from(i));
            }
        }
    }
    made_by
}

/// Finds the order units are submitted in (each after what it depends on: its `after`
/// units and the makers of its inputs), or refuses a cycle, naming its units.
fn order(
    src: &Source<'_>,
    ensembles: &[Ensemble],
    afters: &Afters,
    deps: &mut Deps,
    made_by: &HashMap<String, u64>,
) -> Result<(), WorkloadError> {
    let total = *deps.offsets.last().unwrap_or(&0);
    // What unit `u` waits for, and why.
    let waits_for = |deps: &Deps, u: u64| -> Vec<(u64, Why)> {
        let (e, i) = deps.locate(u);
        let mut out: Vec<(u64, Why)> = Vec::new();
        let ranges: &[Range<u64>] = match &deps.after[e] {
            After::None => &[],
            After::Same(r) => r,
            After::Each(each) => &each[i as usize],
        };
        out.extend(
            ranges
                .iter()
                .flat_map(|r| r.clone())
                // Units already in the session wait for nothing of the file's.
                .filter(|d| *d < total)
                .map(|d| (d, Why::After)),
        );
        for input in &ensembles[e].template.input_data {
            let name = input.expand(&i.to_string());
            if let Some(&maker) = made_by.get(&name) {
                out.push((maker, Why::Reads(name)));
            }
        }
        out
    };
    // File order will do when every unit comes after what it waits for.
    let backwards = (0..total).all(|u| waits_for(deps, u).iter().all(|(d, _)| *d < u));
    if backwards {
        return Ok(());
    }
    // Kahn's algorithm, the earliest unit in the file first among those ready.
    let n = total as usize;
    let mut pending = vec![0u32; n];
    let mut start = vec![0u32; n + 1];
    for u in 0..total {
        for (d, _) in waits_for(deps, u) {
            pending[u as usize] += 1;
            start[d as usize + 1] += 1;
        }
    }
    for k in 0..n {
        start[k + 1] += start[k];
    }
    let mut next = start.clone();
    let mut waiters = vec![0u32; start[n] as usize];
    for u in 0..total {
        for (d, _) in waits_for(deps, u) {
            waiters[next[d as usize] as usize] = u as u32;
            next[d as usize] += 1;
        }
    }
    let mut ready: BinaryHeap<std::cmp::Reverse<u32>> = (0..n as u32)
        .filter(|&u| pending[u as usize] == 0)
        .map(std::cmp::Reverse)
        .collect();
    let mut order = Vec::with_capacity(n);
    while let Some(std::cmp::Reverse(u)) = ready.pop() {
        order.push(u);
        let (a, b) = (start[u as usize] as usize, start[u as usize + 1] as usize);
        for &w in &waiters[a..b] {
            pending[w as usize] -= 1;
            if pending[w as usize] == 0 {
                ready.push(std::cmp::Reverse(w));
            }
        }
    }
    if order.len() < n {
        // Walk back from a unit left waiting until a unit repeats: that is a cycle.
        let stuck = (0..total)
            .find(|&u| pending[u as usize] > 0)
            .unwrap_or_default();
        let mut path: Vec<(u64, Why)> = Vec::new();
        let mut seen: HashMap<u64, usize> = HashMap::new();
        let mut u = stuck;
        loop {
            if let Some(&k) = seen.get(&u) {
                path.drain(..k);
                break;
            }
            seen.insert(u, path.len());
            let Some((d, why)) = waits_for(deps, u)
                .into_iter()
                .find(|(d, _)| pending[*d as usize] > 0)
            else {
                break;
            };
            path.push((u, why));
            u = d;
        }
        let describe = |u: u64| {
            let (e, i) = deps.locate(u);
            let ens = &ensembles[e];
            let values = ens.sweep.as_ref().map(|s| s.values(i)).unwrap_or_default();
            let name = ens.template.member(i, &values).display_name().to_owned();
            let line = src.locate(afters[e].1.clone()).line;
            match ens.count > 1 {
                true => format!("`{name}` (member {i} of the [[unit]] at line {line})"),
                false => format!("`{name}` (the [[unit]] at line {line})"),
            }
        };
        // A long cycle is named by its first units, and how many there are.
        let whole = path.len();
        path.truncate(CYCLE_SHOWN);
        let mut text = String::new();
        for (k, (u, why)) in path.iter().enumerate() {
            let verb = match why {
                Why::After => "runs after".to_owned(),
                Why::Reads(name) => format!("reads `{name}`, made by"),
            };
            if k == 0 {
                text.push_str(&format!("{} {verb}", describe(*u)));
            } else {
                text.push_str(&format!(" {}, which {verb}", describe(*u)));
            }
        }
        if whole > path.len() {
            text.push_str(&format!(
                " ... ({} in the cycle in all)",
                pstar_model::plural(whole as u64, "unit")
            ));
        } else if let Some((first, _)) = path.first() {
            text.push_str(&format!(" {}", describe(*first)));
        }
        let (e, _) = deps.locate(path.first().map_or(stuck, |(u, _)| *u));
        let span = afters[e]
            .0
            .first()
            .map_or(afters[e].1.clone(), |(_, s)| s.clone());
        return Err(src.error(
            span,
            format!("units wait for each other in a cycle: {text}"),
        ));
    }
    let mut position = vec![0u32; n];
    for (k, &u) in order.iter().enumerate() {
        position[u as usize] = k as u32;
    }
    deps.order = Some(order);
    deps.position = Some(position);
    Ok(())
}
