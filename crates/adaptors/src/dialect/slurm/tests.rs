//! Slurm script generation, and output parsing against outputs recorded from a real
//! Slurm 22.05.8 (`fixtures/`, see `fixtures/README.md`).

use std::path::Path;
use std::time::Duration;

use pstar_model::PilotComputeDescription;

use super::Slurm;
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
        resource: "slurm+ssh://alice@login.example.org".parse().unwrap(),
        cores: 8,
        nodes: Some(2),
        gpus: 2,
        walltime: Duration::from_secs(90 * 60),
        queue: Some("gpu".into()),
        project: Some("ABC123".into()),
        reservation: Some("maint_2026".into()),
        scheduler_options: vec!["--constraint=haswell".into(), "--mem=0".into()],
        ..PilotComputeDescription::default()
    }
}

fn render(d: &PilotComputeDescription) -> Result<String, AdaptorError> {
    render_script(&Slurm, d, &[], "pilot.sbatch")
}

/// `scontrol show job -o` (query 0) read for `job`.
fn scontrol(job: &str, out: &Output) -> Option<JobState> {
    Slurm.parse_history(0, job, out)
}

#[test]
fn renders_the_directives() {
    let expected = "\
#!/bin/sh
#SBATCH --job-name=pstar.demo.pilot-0001
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=1
#SBATCH --time=01:30:00
#SBATCH --partition=gpu
#SBATCH --account=ABC123
#SBATCH --reservation=maint_2026
#SBATCH --chdir=/scratch/alice/pstar.sandbox/demo/pilot-0001
#SBATCH --output=/scratch/alice/pstar.sandbox/demo/pilot-0001/pilot.out
#SBATCH --error=/scratch/alice/pstar.sandbox/demo/pilot-0001/pilot.err
#SBATCH --constraint=haswell
#SBATCH --mem=0

cd /scratch/alice/pstar.sandbox/demo/pilot-0001 || exit 1
exec pstar agent
";
    assert_eq!(render(&description()).unwrap(), expected);
}

#[test]
fn renders_a_plain_single_node_pilot() {
    let d = PilotComputeDescription {
        resource: "slurm://".parse().unwrap(),
        cores: 4,
        walltime: Duration::from_millis(45_500),
        ..PilotComputeDescription::default()
    };
    let script = render(&d).unwrap();
    let directives: Vec<&str> = script
        .lines()
        .filter(|l| l.starts_with("#SBATCH"))
        .collect();
    assert_eq!(
        directives,
        [
            "#SBATCH --job-name=pstar.demo.pilot-0001",
            "#SBATCH --nodes=1",
            "#SBATCH --ntasks-per-node=4",
            // Rounded up to whole seconds.
            "#SBATCH --time=00:00:46",
            "#SBATCH --chdir=/scratch/alice/pstar.sandbox/demo/pilot-0001",
            "#SBATCH --output=/scratch/alice/pstar.sandbox/demo/pilot-0001/pilot.out",
            "#SBATCH --error=/scratch/alice/pstar.sandbox/demo/pilot-0001/pilot.err",
        ]
    );
}

#[test]
fn refuses_a_value_with_a_newline() {
    let cases = [
        PilotComputeDescription {
            queue: Some("gpu\n#SBATCH --partition=express".into()),
            ..description()
        },
        PilotComputeDescription {
            queue: Some("gpu\r".into()),
            ..description()
        },
        PilotComputeDescription {
            project: Some("ABC123\nrm -rf ~".into()),
            ..description()
        },
        PilotComputeDescription {
            reservation: Some("maint\0".into()),
            ..description()
        },
        PilotComputeDescription {
            scheduler_options: vec!["--mem=0\necho owned".into()],
            ..description()
        },
    ];
    for d in cases {
        let err = render(&d).unwrap_err();
        assert!(matches!(err, AdaptorError::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("must be one line"), "{err}");
    }
    let err = render(&PilotComputeDescription {
        queue: Some("gpu\n#SBATCH --partition=express".into()),
        ..description()
    })
    .unwrap_err();
    assert!(
        err.to_string().starts_with("`queue` must be one line"),
        "{err}"
    );
}

/// The recordings are of the very commands the adaptor runs.
#[test]
fn fixtures_were_recorded_with_the_adaptors_commands() {
    let argv = |c: crate::transport::Command| c.argv.join(" ");
    assert_eq!(
        argv(Slurm.submit(Path::new("/tmp/pstar-rec/slurm/jobs/running.sbatch"))),
        command_of!("sbatch-parsable")
    );
    let sandbox = Path::new(SANDBOX);
    for (job, recorded) in [
        ("1", command_of!("scontrol-running")),
        ("2", command_of!("scontrol-timeout")),
        ("3", command_of!("scontrol-completed")),
        ("4", command_of!("scontrol-failed")),
        ("5", command_of!("scontrol-cancelled")),
        ("6", command_of!("scontrol-pending")),
        ("7", command_of!("scontrol-held")),
        ("999999", command_of!("scontrol-unknown")),
    ] {
        assert_eq!(
            argv(Slurm.history(JobRef { id: job, sandbox }).remove(0)),
            recorded
        );
    }
    assert_eq!(
        argv(Slurm.history(JobRef { id: "3", sandbox }).remove(1)),
        command_of!("sacct-disabled")
    );
    let jobs = ["1", "2", "3", "999999"].map(|id| JobRef { id, sandbox });
    assert_eq!(
        argv(Slurm.status(&jobs).remove(0)),
        command_of!("squeue-jobs")
    );
    assert_eq!(
        argv(Slurm.status(&jobs[3..]).remove(0)),
        command_of!("squeue-unknown")
    );
    // Alone, a job is asked of the status command first, then of the history ones.
    assert_eq!(
        Slurm
            .queries("3", sandbox)
            .iter()
            .map(|c| argv(c.clone()))
            .collect::<Vec<_>>(),
        [
            "squeue --noheader --states=all --jobs=3 --format=%i|%T|%r",
            "scontrol show job -o 3",
            "sacct -X -n -P -j 3 -o State,ExitCode,Reason"
        ]
    );
    assert_eq!(Slurm.cancel("5").argv, ["scancel", "5"]);
}

#[test]
fn parses_sbatch_parsable() {
    let out = recorded!("sbatch-parsable");
    assert!(out.success());
    assert_eq!(Slurm.parse_submit(&out).unwrap(), "1");
    // With a cluster name (federations, `-M`), as sbatch(1) documents it.
    let federated = Output {
        stdout: "4242;pstartest\n".into(),
        ..out.clone()
    };
    assert_eq!(Slurm.parse_submit(&federated).unwrap(), "4242");
    let nothing = Output {
        stdout: String::new(),
        ..out.clone()
    };
    assert!(Slurm.parse_submit(&nothing).is_err());
    let words = Output {
        stdout: "Submitted batch job 42\n".into(),
        ..out
    };
    assert!(Slurm.parse_submit(&words).is_err());
}

#[test]
fn a_pending_job_is_queued() {
    // Waiting for resources (it wants all 4 CPUs of the cluster, 2 are taken).
    let pending = recorded!("scontrol-pending");
    assert!(
        pending
            .stdout
            .contains(" JobState=PENDING Reason=Resources ")
    );
    assert_eq!(scontrol("6", &pending), Some(JobState::Queued));
    // Held (`scontrol hold` by root: JobHeldAdmin): it may still be released.
    let held = recorded!("scontrol-held");
    assert!(
        held.stdout
            .contains(" JobState=PENDING Reason=JobHeldAdmin ")
    );
    assert_eq!(scontrol("7", &held), Some(JobState::Queued));
}

#[test]
fn a_running_job_is_running() {
    let running = recorded!("scontrol-running");
    assert!(running.stdout.contains(" JobState=RUNNING "));
    assert_eq!(scontrol("1", &running), Some(JobState::Running));
}

#[test]
fn a_completed_job_finished_well() {
    let completed = recorded!("scontrol-completed");
    assert!(completed.stdout.contains(" JobState=COMPLETED "));
    assert_eq!(
        scontrol("3", &completed),
        Some(JobState::Finished {
            ok: true,
            detail: None
        })
    );
}

#[test]
fn a_failed_job_says_its_exit_code() {
    let detail = failed_detail(scontrol("4", &recorded!("scontrol-failed")));
    assert!(detail.starts_with("job 4 "), "{detail}");
    assert!(detail.contains("FAILED"), "{detail}");
    assert!(detail.contains("NonZeroExitCode"), "{detail}");
    assert!(detail.contains("exit code 3:0"), "{detail}");
}

#[test]
fn a_cancelled_job_failed() {
    let detail = failed_detail(scontrol("5", &recorded!("scontrol-cancelled")));
    assert!(detail.starts_with("job 5 "), "{detail}");
    assert!(detail.contains("CANCELLED"), "{detail}");
    // Killed by SIGTERM: exit code 0, signal 15.
    assert!(detail.contains("0:15"), "{detail}");
}

#[test]
fn a_job_out_of_time_failed() {
    let detail = failed_detail(scontrol("2", &recorded!("scontrol-timeout")));
    assert!(detail.starts_with("job 2 "), "{detail}");
    assert!(detail.contains("TIMEOUT"), "{detail}");
    assert!(detail.contains("TimeLimit"), "{detail}");
}

#[test]
fn an_unknown_job_is_none() {
    let unknown = recorded!("scontrol-unknown");
    assert_eq!(unknown.code, Some(1));
    assert!(unknown.stderr.contains("Invalid job id specified"));
    assert_eq!(scontrol("999999", &unknown), None);
}

#[test]
fn sacct_without_accounting_is_none() {
    // The testbed (like many small clusters) has AccountingStorageType=accounting_storage/none.
    let disabled = recorded!("sacct-disabled");
    assert_eq!(disabled.code, Some(1));
    assert!(
        disabled
            .stderr
            .contains("Slurm accounting storage is disabled")
    );
    assert_eq!(Slurm.parse_history(1, "3", &disabled), None);
}

#[test]
fn an_empty_answer_knows_nothing() {
    let empty = Output {
        code: Some(0),
        stdout: String::new(),
        stderr: String::new(),
    };
    assert_eq!(Slurm.parse_query(0, "1", &empty), None);
    assert_eq!(Slurm.parse_query(1, "1", &empty), None);
    assert_eq!(Slurm.parse_query(2, "1", &empty), None);
}

#[test]
fn one_squeue_tells_the_queued_and_running_jobs_of_many() {
    // Jobs 1 (running), 2 (failed with exit 3), 3 (pending) and an unknown one, asked at
    // once: squeue leaves the unknown one out and still succeeds.
    let out = recorded!("squeue-jobs");
    assert!(out.success());
    let sandbox = Path::new(SANDBOX);
    let jobs = ["1", "2", "3", "999999"].map(|id| JobRef { id, sandbox });
    let states = Slurm.parse_status(0, &jobs, &out);
    assert_eq!(states.get("1"), Some(&JobState::Running));
    assert_eq!(states.get("3"), Some(&JobState::Queued));
    // An ended job's exit code is not in squeue's answer: it is asked of `history`
    // (scontrol, then sacct), as is a job squeue does not know.
    assert_eq!(states.get("2"), None);
    assert_eq!(states.get("999999"), None);
    assert_eq!(states.len(), 2, "{states:?}");
    // Jobs asked about are the only ones read.
    let only = Slurm.parse_status(0, &jobs[2..3], &out);
    assert_eq!(only.keys().collect::<Vec<_>>(), ["3"]);
}

#[test]
fn squeue_asked_about_one_unknown_job_knows_nothing() {
    let out = recorded!("squeue-unknown");
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("Invalid job id specified"));
    let sandbox = Path::new(SANDBOX);
    assert!(
        Slurm
            .parse_status(
                0,
                &[JobRef {
                    id: "999999",
                    sandbox
                }],
                &out
            )
            .is_empty()
    );
}
