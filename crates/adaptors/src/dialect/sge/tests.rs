//! Grid Engine script generation, and output parsing against outputs recorded from a real
//! Grid Engine 8.1.9 (`fixtures/`, see `fixtures/README.md`).

use std::path::Path;
use std::time::Duration;

use pstar_model::PilotComputeDescription;

use super::GridEngine;
use crate::dialect::testing::{SANDBOX, failed_detail, render_script};
use crate::dialect::{Dialect, JobRef};
use crate::transport::Output;
use crate::{AdaptorError, JobState};

/// What a recorded command said: `fixtures/NAME.out` (stdout), `NAME.err` (stderr) and
/// `NAME.code` (exit code); `NAME.cmd` is the command line.
macro_rules! recorded {
    ($name:literal) => {
        Output {
            code: Some(
                include_str!(concat!("fixtures/", $name, ".code"))
                    .trim()
                    .parse()
                    .unwrap(),
            ),
            stdout: include_str!(concat!("fixtures/", $name, ".out")).to_owned(),
            stderr: include_str!(concat!("fixtures/", $name, ".err")).to_owned(),
        }
    };
}

/// The command line a recording was made with.
macro_rules! command_of {
    ($name:literal) => {
        include_str!(concat!("fixtures/", $name, ".cmd")).trim_end()
    };
}

/// The representative pilot: two nodes of 4 cores, 2 GPUs, 1h30m, every optional field set.
fn description() -> PilotComputeDescription {
    PilotComputeDescription {
        resource: "sge+ssh://alice@login.example.org".parse().unwrap(),
        cores: 8,
        nodes: Some(2),
        gpus: 2,
        walltime: Duration::from_secs(90 * 60),
        queue: Some("gpu.q".into()),
        project: Some("ABC123".into()),
        reservation: Some("1234".into()),
        scheduler_options: vec!["-l h_vmem=2G".into(), "-m n".into()],
        ..PilotComputeDescription::default()
    }
}

fn render(d: &PilotComputeDescription, options: &[(&str, &str)]) -> Result<String, AdaptorError> {
    render_script(&GridEngine, d, options, "pilot.sge")
}

/// `qstat` (query 0) read for `job`.
fn qstat(job: &str, out: &Output) -> Option<JobState> {
    GridEngine.parse_query(0, job, out)
}

/// `qacct -j` (query 1) read for `job`.
fn qacct(job: &str, out: &Output) -> Option<JobState> {
    GridEngine.parse_query(1, job, out)
}

#[test]
fn renders_the_directives() {
    let expected = "\
#!/bin/sh
#$ -N pstar.demo.pilot-0001
#$ -S /bin/sh
#$ -wd /scratch/alice/pstar.sandbox/demo/pilot-0001
#$ -o /scratch/alice/pstar.sandbox/demo/pilot-0001/pilot.out
#$ -e /scratch/alice/pstar.sandbox/demo/pilot-0001/pilot.err
#$ -pe smp 8
#$ -l h_rt=01:30:00
#$ -l gpu=2
#$ -q gpu.q
#$ -P ABC123
#$ -ar 1234
#$ -l h_vmem=2G
#$ -m n

cd /scratch/alice/pstar.sandbox/demo/pilot-0001 || exit 1
exec pstar agent
";
    assert_eq!(render(&description(), &[]).unwrap(), expected);
    // The resource URL names another parallel environment.
    let mpi = render(&description(), &[("pe", "mpi")]).unwrap();
    assert_eq!(mpi, expected.replace("#$ -pe smp 8\n", "#$ -pe mpi 8\n"));
}

#[test]
fn renders_a_one_core_pilot_without_a_parallel_environment() {
    let d = PilotComputeDescription {
        resource: "sge://".parse().unwrap(),
        cores: 1,
        walltime: Duration::from_millis(45_500),
        ..PilotComputeDescription::default()
    };
    let script = render(&d, &[]).unwrap();
    let directives: Vec<&str> = script.lines().filter(|l| l.starts_with("#$")).collect();
    assert_eq!(
        directives,
        [
            "#$ -N pstar.demo.pilot-0001",
            "#$ -S /bin/sh",
            "#$ -wd /scratch/alice/pstar.sandbox/demo/pilot-0001",
            "#$ -o /scratch/alice/pstar.sandbox/demo/pilot-0001/pilot.out",
            "#$ -e /scratch/alice/pstar.sandbox/demo/pilot-0001/pilot.err",
            // Rounded up to whole seconds.
            "#$ -l h_rt=00:00:46",
        ]
    );
}

#[test]
fn refuses_a_value_with_a_newline() {
    let cases = [
        PilotComputeDescription {
            queue: Some("gpu.q\n#$ -q express.q".into()),
            ..description()
        },
        PilotComputeDescription {
            queue: Some("gpu.q\r".into()),
            ..description()
        },
        PilotComputeDescription {
            project: Some("ABC123\nrm -rf ~".into()),
            ..description()
        },
        PilotComputeDescription {
            reservation: Some("1234\0".into()),
            ..description()
        },
        PilotComputeDescription {
            scheduler_options: vec!["-m n\necho owned".into()],
            ..description()
        },
    ];
    for d in cases {
        let err = render(&d, &[]).unwrap_err();
        assert!(matches!(err, AdaptorError::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("must be one line"), "{err}");
    }
    let err = render(
        &PilotComputeDescription {
            queue: Some("gpu.q\n#$ -q express.q".into()),
            ..description()
        },
        &[],
    )
    .unwrap_err();
    assert!(
        err.to_string().starts_with("`queue` must be one line"),
        "{err}"
    );
    // The parallel environment comes from the resource URL: the same rule.
    let err = render(&description(), &[("pe", "smp 8\n#$ -q express.q")]).unwrap_err();
    assert!(
        err.to_string().starts_with("`pe` must be one line"),
        "{err}"
    );
}

/// The recordings are of the very commands the adaptor runs.
#[test]
fn fixtures_were_recorded_with_the_adaptors_commands() {
    let argv = |c: crate::transport::Command| c.argv.join(" ");
    assert_eq!(
        argv(GridEngine.submit(Path::new("/tmp/pstar-rec/sge/jobs/running.sge"))),
        command_of!("qsub-terse")
    );
    let sandbox = Path::new(SANDBOX);
    for recorded in [
        command_of!("qstat-jobs"),
        command_of!("qstat-error"),
        command_of!("qstat-empty"),
    ] {
        assert_eq!(argv(GridEngine.queries("1", sandbox).remove(0)), recorded);
    }
    for (job, recorded) in [
        ("6", command_of!("qacct-ok")),
        ("7", command_of!("qacct-exit3")),
        ("8", command_of!("qacct-deleted")),
        ("999999", command_of!("qacct-unknown")),
    ] {
        assert_eq!(argv(GridEngine.queries(job, sandbox).remove(1)), recorded);
    }
    assert_eq!(GridEngine.cancel("8").argv, ["qdel", "8"]);
}

#[test]
fn parses_qsub_terse() {
    let out = recorded!("qsub-terse");
    assert!(out.success());
    assert_eq!(GridEngine.parse_submit(&out).unwrap(), "1");
    // An array job: `2.1-3:1`.
    let array = recorded!("qsub-terse-array");
    assert_eq!(array.stdout, "2.1-3:1\n");
    assert_eq!(GridEngine.parse_submit(&array).unwrap(), "2");
    let nothing = Output {
        stdout: String::new(),
        ..out.clone()
    };
    assert!(GridEngine.parse_submit(&nothing).is_err());
    let words = Output {
        stdout: "Your job 42 (\"pilot.sge\") has been submitted\n".into(),
        ..out
    };
    assert!(GridEngine.parse_submit(&words).is_err());
}

#[test]
fn qstat_tells_queued_and_running_jobs() {
    let jobs = recorded!("qstat-jobs");
    // Running (`r`).
    assert_eq!(qstat("1", &jobs), Some(JobState::Running));
    // Waiting for slots (`qw`: it wants 2, 1 is free).
    assert_eq!(qstat("3", &jobs), Some(JobState::Queued));
    // Held (`hqw`: `qsub -h`), a plain job and an array job.
    assert_eq!(qstat("4", &jobs), Some(JobState::Queued));
    assert_eq!(qstat("2", &jobs), Some(JobState::Queued));
    // Not listed: this query does not know it (qacct is asked next).
    assert_eq!(qstat("5", &jobs), None);
    assert_eq!(qstat("11", &jobs), None);
}

#[test]
fn a_job_in_error_state_failed() {
    // `Eqw`: its working directory does not exist; it stays so until deleted.
    let error = recorded!("qstat-error");
    let detail = failed_detail(qstat("5", &error));
    assert!(detail.starts_with("job 5 "), "{detail}");
    assert!(detail.contains("`Eqw`"), "{detail}");
    assert_eq!(qstat("1", &error), Some(JobState::Running));
}

#[test]
fn an_empty_qstat_knows_nothing() {
    let empty = recorded!("qstat-empty");
    assert!(empty.success() && empty.stdout.is_empty());
    assert_eq!(qstat("1", &empty), None);
}

#[test]
fn qacct_of_a_job_that_exited_0() {
    assert_eq!(
        qacct("6", &recorded!("qacct-ok")),
        Some(JobState::Finished {
            ok: true,
            detail: None
        })
    );
}

#[test]
fn qacct_of_a_job_that_exited_3() {
    let detail = failed_detail(qacct("7", &recorded!("qacct-exit3")));
    assert!(detail.starts_with("job 7 "), "{detail}");
    assert!(detail.contains("exit status 3"), "{detail}");
}

#[test]
fn qacct_of_a_job_deleted_while_running() {
    // `failed 100 : assumedly after job`, `exit_status 137 (Killed)`.
    let detail = failed_detail(qacct("8", &recorded!("qacct-deleted")));
    assert!(detail.starts_with("job 8 "), "{detail}");
    assert!(detail.contains("100 : assumedly after job"), "{detail}");
    assert!(detail.contains("exit status 137"), "{detail}");
}

#[test]
fn qacct_of_an_unknown_job_is_none() {
    let unknown = recorded!("qacct-unknown");
    assert_eq!(unknown.code, Some(1));
    assert!(unknown.stderr.contains("job id 999999 not found"));
    assert_eq!(qacct("999999", &unknown), None);
}

#[test]
fn each_answer_is_read_by_its_own_reader() {
    // qacct's record is no qstat listing, and a qstat listing no accounting record.
    assert_eq!(qstat("6", &recorded!("qacct-ok")), None);
    assert_eq!(qacct("1", &recorded!("qstat-jobs")), None);
}

#[test]
fn one_qstat_tells_every_job_at_once() {
    // `qstat` lists every job of the user: the same command for one job or many.
    let sandbox = Path::new(SANDBOX);
    let jobs = ["1", "2", "3", "4", "5"].map(|id| JobRef { id, sandbox });
    let commands = GridEngine.status(&jobs);
    assert_eq!(commands.len(), 1);
    assert_eq!(commands[0].argv.join(" "), command_of!("qstat-jobs"));
    let states = GridEngine.parse_status(0, &jobs, &recorded!("qstat-jobs"));
    assert_eq!(states.get("1"), Some(&JobState::Running));
    assert_eq!(states.get("2"), Some(&JobState::Queued));
    assert_eq!(states.get("3"), Some(&JobState::Queued));
    assert_eq!(states.get("4"), Some(&JobState::Queued));
    // Not listed: asked of `qacct` alone.
    assert_eq!(states.get("5"), None);
    assert_eq!(states.len(), 4, "{states:?}");
    assert_eq!(GridEngine.history(jobs[4])[0].argv, ["qacct", "-j", "5"]);
    // Jobs listed but not asked about are not read.
    assert_eq!(
        GridEngine
            .parse_status(0, &jobs[..1], &recorded!("qstat-jobs"))
            .len(),
        1
    );
}
