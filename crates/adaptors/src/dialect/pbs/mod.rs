//! `pbs://` and `pbs+ssh://`: PBS Professional / OpenPBS, and Torque with
//! `?flavor=torque`. See `docs.md` beside this file.

use std::collections::HashMap;
use std::path::Path;

use crate::dialect::{Dialect, JobRef, ScriptJob, path_line, single_line};
use crate::transport::{Command, Output};
use crate::{AdaptorError, JobFile, JobState};

/// Which PBS a resource runs: its directives differ, its `qstat -f` output is read alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// PBS Professional and OpenPBS (`-l select=...`), the default.
    Pro,
    /// Torque (`-l nodes=...:ppn=...`), chosen with `?flavor=torque`.
    Torque,
}

impl Flavor {
    /// The flavor named by the resource URL's `flavor` option.
    pub fn of(job: &ScriptJob<'_>) -> Result<Self, AdaptorError> {
        match job.options.get("flavor").map(String::as_str) {
            None | Some("pbspro" | "pro" | "openpbs") => Ok(Flavor::Pro),
            Some("torque") => Ok(Flavor::Torque),
            Some(other) => Err(AdaptorError::Unsupported(format!(
                "unknown PBS flavor `{}`: use `?flavor=pbspro` (the default) or `?flavor=torque`",
                other.escape_debug()
            ))),
        }
    }
}

#[doc = include_str!("docs.md")]
#[derive(Debug, Default, Clone, Copy)]
pub struct Pbs {
    /// The flavor of every pilot; `None` (the default): each pilot's URL option.
    flavor: Option<Flavor>,
}

impl Pbs {
    /// A PBS whose pilots all get `flavor`, whatever their URLs say.
    pub fn with_flavor(flavor: Flavor) -> Self {
        Self {
            flavor: Some(flavor),
        }
    }
}

impl Dialect for Pbs {
    fn name(&self) -> &'static str {
        "PBS"
    }

    fn render(&self, job: &ScriptJob<'_>) -> Result<Vec<JobFile>, AdaptorError> {
        let d = job.description;
        let flavor = match self.flavor {
            Some(flavor) => flavor,
            None => Flavor::of(job)?,
        };
        let nodes = d.node_count();
        let gpus_per_node = gpus_per_node(d.gpus, nodes)?;
        let mut lines = vec!["#!/bin/sh".to_owned()];
        let mut directive = |option: String| lines.push(format!("#PBS {option}"));
        directive(format!("-N {}", job.name));
        let gpus = |key: &str| {
            if gpus_per_node > 0 {
                format!(":{key}={gpus_per_node}")
            } else {
                String::new()
            }
        };
        match flavor {
            Flavor::Pro => {
                directive(format!(
                    "-l select={nodes}:ncpus={}{}",
                    d.cores_per_node(),
                    gpus("ngpus")
                ));
                if nodes > 1 {
                    // One chunk per host, as the pilot's nodes are meant.
                    directive("-l place=scatter".into());
                }
            }
            Flavor::Torque => directive(format!(
                "-l nodes={nodes}:ppn={}{}",
                d.cores_per_node(),
                gpus("gpus")
            )),
        }
        directive(format!("-l walltime={}", job.walltime_hms()));
        let queue = d
            .queue
            .as_deref()
            .map(|q| single_line("queue", q))
            .transpose()?;
        let reservation = d
            .reservation
            .as_deref()
            .map(|r| single_line("reservation", r))
            .transpose()?;
        match (flavor, queue, reservation) {
            // PBS Pro runs an advance reservation as a queue named after it (`R123`).
            (Flavor::Pro, Some(q), Some(r)) if q != reservation_queue(r) => {
                return Err(AdaptorError::Unsupported(format!(
                    "PBS Professional runs a reservation as a queue of its own: give `queue` \
                     (`{q}`) or `reservation` (`{r}`), not both"
                )));
            }
            (Flavor::Pro, _, Some(r)) => directive(format!("-q {}", reservation_queue(r))),
            (Flavor::Pro, Some(q), None) => directive(format!("-q {q}")),
            (Flavor::Torque, q, r) => {
                if let Some(q) = q {
                    directive(format!("-q {q}"));
                }
                if let Some(r) = r {
                    // Reservations are Moab's on Torque.
                    directive(format!("-l advres={r}"));
                }
            }
            (Flavor::Pro, None, None) => {}
        }
        if let Some(p) = &d.project {
            directive(format!("-A {}", single_line("project", p)?));
        }
        if flavor == Flavor::Torque {
            directive(format!("-d {}", path_line(job.sandbox)?));
        }
        directive(format!("-o {}", path_line(&job.stdout)?));
        directive(format!("-e {}", path_line(&job.stderr)?));
        for option in &d.scheduler_options {
            directive(single_line("scheduler_options", option)?.to_owned());
        }
        lines.push(String::new());
        lines.push(job.body.clone());
        Ok(vec![JobFile {
            name: "pilot.pbs".into(),
            content: lines.join("\n"),
        }])
    }

    fn submit(&self, script: &Path) -> Command {
        Command::new("qsub", [script.display().to_string()])
    }

    fn parse_submit(&self, out: &Output) -> Result<String, AdaptorError> {
        // `qsub` prints the full job id, `<number>.<server>`.
        out.stdout
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .filter(|id| {
                !id.contains(char::is_whitespace)
                    && id
                        .split('.')
                        .next()
                        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
            })
            .map(str::to_owned)
            .ok_or_else(|| {
                AdaptorError::Resource(format!("qsub printed no job id: {}", out.stdout.trim()))
            })
    }

    fn multi_node(&self) -> bool {
        true
    }

    fn status(&self, jobs: &[JobRef<'_>]) -> Vec<Command> {
        let ids = jobs.iter().map(|j| j.id.to_owned());
        vec![
            // PBS Pro: queued, running and finished (history) jobs. Torque reads `-x` as
            // "XML" and answers in XML, which is passed over for the next query.
            Command::new(
                "qstat",
                ["-f".to_owned(), "-x".to_owned()]
                    .into_iter()
                    .chain(ids.clone()),
            ),
            // Torque: queued, running and recently completed jobs (`keep_completed`).
            Command::new("qstat", std::iter::once("-f".to_owned()).chain(ids)),
        ]
    }

    fn parse_status(
        &self,
        _index: usize,
        jobs: &[JobRef<'_>],
        out: &Output,
    ) -> HashMap<String, JobState> {
        // Unknown ids are told on standard error (`Unknown Job Id`), the others still
        // listed: each job is looked for in the listing.
        let listed = parse_qstat_f(&out.stdout);
        jobs.iter()
            .filter_map(|j| {
                let found = find_job(&listed, j.id)?;
                let state = found.get("job_state")?;
                Some((
                    j.id.to_owned(),
                    map_state(j.id, state, found.get("exit_status"), found.get("comment")),
                ))
            })
            .collect()
    }

    fn cancel(&self, job: &str) -> Command {
        Command::new("qdel", [job])
    }
}

/// GPUs on each node: PBS asks for them per chunk (Pro) or per node (Torque).
pub(crate) fn gpus_per_node(gpus: u32, nodes: u32) -> Result<u32, AdaptorError> {
    if !gpus.is_multiple_of(nodes) {
        return Err(AdaptorError::Unsupported(format!(
            "{} cannot be spread evenly over {nodes} nodes: this scheduler asks for GPUs per \
             node",
            pstar_model::plural(u64::from(gpus), "GPU")
        )));
    }
    Ok(gpus / nodes)
}

/// The queue of a PBS Pro reservation: its id up to the server name (`R123.server` → `R123`).
fn reservation_queue(reservation: &str) -> &str {
    reservation.split('.').next().unwrap_or(reservation)
}

/// One job of `qstat -f` output.
#[derive(Debug, Default)]
pub(crate) struct QstatJob {
    pub id: String,
    attributes: Vec<(String, String)>,
}

impl QstatJob {
    /// The value of attribute `name`, its case ignored (`Exit_status`, `exit_status`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }
}

/// The jobs in `qstat -f` output: `Job Id: <id>`, then `    <name> = <value>` lines whose
/// long values go on over lines indented further (a tab); the pieces join without a space,
/// as PBS cut them.
pub(crate) fn parse_qstat_f(text: &str) -> Vec<QstatJob> {
    let mut jobs: Vec<QstatJob> = Vec::new();
    for line in text.lines() {
        if let Some(id) = line.strip_prefix("Job Id:") {
            jobs.push(QstatJob {
                id: id.trim().to_owned(),
                attributes: Vec::new(),
            });
            continue;
        }
        let Some(job) = jobs.last_mut() else { continue };
        if line.trim().is_empty() {
            continue;
        }
        let attribute = line
            .strip_prefix("    ")
            .filter(|rest| !rest.starts_with(char::is_whitespace))
            .and_then(|rest| rest.split_once(" = "))
            .filter(|(k, _)| !k.contains(char::is_whitespace));
        match attribute {
            Some((k, v)) => job.attributes.push((k.to_owned(), v.to_owned())),
            None => {
                if let Some((_, v)) = job.attributes.last_mut() {
                    v.push_str(line.trim_start());
                }
            }
        }
    }
    jobs
}

/// The job named `job` (`123.server`), matched in full or by its number.
pub(crate) fn find_job<'a>(jobs: &'a [QstatJob], job: &str) -> Option<&'a QstatJob> {
    let number = |id: &str| id.split('.').next().unwrap_or(id).to_owned();
    jobs.iter()
        .find(|j| j.id == job)
        .or_else(|| jobs.iter().find(|j| number(&j.id) == number(job)))
}

/// A PBS job state letter as a pilot job state.
fn map_state(job: &str, state: &str, exit: Option<&str>, comment: Option<&str>) -> JobState {
    let with_comment = |text: String| match comment.filter(|c| !c.is_empty()) {
        Some(c) => format!("{text} (PBS: {c})"),
        None => text,
    };
    match state {
        // Queued, held, waiting for its start time, being moved, moved to another server.
        "Q" | "H" | "W" | "T" | "M" => JobState::Queued,
        // Running, exiting after having run, suspended, array with subjobs running.
        "R" | "E" | "S" | "U" | "B" => JobState::Running,
        // Finished (Pro), completed (Torque), finished subjob.
        "F" | "C" | "X" => match exit.map(|e| (e, e.parse::<i64>())) {
            Some((_, Ok(0))) => JobState::Finished {
                ok: true,
                detail: None,
            },
            Some((_, Ok(code))) => JobState::Finished {
                ok: false,
                detail: Some(with_comment(format!(
                    "job {job} finished with exit status {code}{}",
                    explain_exit(code)
                ))),
            },
            Some((e, Err(_))) => JobState::Finished {
                ok: false,
                detail: Some(with_comment(format!(
                    "job {job} finished with exit status `{e}`"
                ))),
            },
            None => JobState::Finished {
                ok: false,
                detail: Some(with_comment(format!(
                    "job {job} finished without an exit status (deleted before it ran?)"
                ))),
            },
        },
        other => JobState::Finished {
            ok: false,
            detail: Some(with_comment(format!(
                "job {job} is in a state pstar does not know: `{other}`"
            ))),
        },
    }
}

/// What a PBS exit status means beyond the number.
fn explain_exit(code: i64) -> String {
    if code > 256 {
        format!(": killed by signal {}", code - 256)
    } else if code < 0 {
        ": PBS could not run the job or ended it (a negative status is PBS's own code, \
         e.g. a walltime or resource limit)"
            .into()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests;
