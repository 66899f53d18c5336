//! HTCondor submit-file generation, and output parsing against recorded outputs
//! (`fixtures/`, see `fixtures/SOURCES.md`).

use std::path::Path;
use std::time::Duration;

use pstar_model::PilotComputeDescription;

use super::Condor;
use crate::dialect::testing::{SANDBOX, failed_detail, output, render_job};
use crate::dialect::{Dialect, JobRef};
use crate::{AdaptorError, JobFile, JobState};

/// The representative pilot: two nodes of 16 cores and 2 GPUs each, 1h30m, every
/// optional field set.
fn description() -> PilotComputeDescription {
    PilotComputeDescription {
        resource: "condor://".parse().unwrap(),
        cores: 32,
        nodes: Some(2),
        gpus: 4,
        walltime: Duration::from_secs(90 * 60),
        queue: Some("gpu".into()),
        project: Some("group_physics".into()),
        reservation: Some("R1234".into()),
        scheduler_options: vec![
            r#"requirements = (OpSysAndVer == "AlmaLinux9")"#.into(),
            "request_memory = 32 GB".into(),
        ],
        ..PilotComputeDescription::default()
    }
}

/// What HTCondor can run of it: one machine, no queue, no reservation.
fn supported() -> PilotComputeDescription {
    PilotComputeDescription {
        cores: 16,
        nodes: None,
        gpus: 2,
        queue: None,
        reservation: None,
        ..description()
    }
}

fn render(d: &PilotComputeDescription) -> Result<Vec<JobFile>, AdaptorError> {
    render_job(&Condor, d, &[])
}

#[test]
fn renders_the_submit_file_first_then_the_script() {
    let files = render(&supported()).unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(files[0].name, "pilot.sub");
    assert_eq!(
        files[0].content,
        r#"# pstar pilot job pstar.demo.pilot-0001
universe = vanilla
executable = /scratch/alice/pstar.sandbox/demo/pilot-0001/pilot.sh
initialdir = /scratch/alice/pstar.sandbox/demo/pilot-0001
output = /scratch/alice/pstar.sandbox/demo/pilot-0001/pilot.out
error = /scratch/alice/pstar.sandbox/demo/pilot-0001/pilot.err
log = /scratch/alice/pstar.sandbox/demo/pilot-0001/pilot.condor.log
batch_name = pstar.demo.pilot-0001
request_cpus = 16
request_gpus = 2
periodic_remove = (JobStatus == 2) && ((time() - EnteredCurrentStatus) > 5400)
accounting_group = group_physics
requirements = (OpSysAndVer == "AlmaLinux9")
request_memory = 32 GB
queue 1
"#
    );
    assert_eq!(files[1].name, "pilot.sh");
    assert_eq!(
        files[1].content,
        "#!/bin/sh\ncd /scratch/alice/pstar.sandbox/demo/pilot-0001 || exit 1\nexec pstar agent\n"
    );
}

#[test]
fn a_minimal_pilot_asks_for_no_gpu_or_group() {
    let d = PilotComputeDescription {
        resource: "condor://".parse().unwrap(),
        walltime: Duration::from_millis(1500),
        ..PilotComputeDescription::default()
    };
    let files = render(&d).unwrap();
    let submit = &files[0].content;
    assert!(submit.contains("\nrequest_cpus = 1\n"), "{submit}");
    assert!(submit.contains("> 2)\n"), "{submit}");
    assert!(!submit.contains("request_gpus") && !submit.contains("accounting_group"));
    assert!(submit.ends_with("\nqueue 1\n"));
}

#[test]
fn refuses_what_the_vanilla_universe_cannot_do() {
    let err = render(&description()).unwrap_err();
    assert!(matches!(err, AdaptorError::Unsupported(_)));
    assert!(err.to_string().contains("cannot span 2 nodes"), "{err}");
    let d = PilotComputeDescription {
        queue: Some("gpu".into()),
        ..supported()
    };
    assert!(
        render(&d)
            .unwrap_err()
            .to_string()
            .contains("HTCondor has no queues")
    );
    let d = PilotComputeDescription {
        reservation: Some("R1234".into()),
        ..supported()
    };
    assert!(
        render(&d)
            .unwrap_err()
            .to_string()
            .contains("no advance reservations")
    );
}

#[test]
fn refuses_a_value_with_a_newline() {
    let cases = [
        PilotComputeDescription {
            project: Some("group_physics\nexecutable = /bin/evil".into()),
            ..supported()
        },
        PilotComputeDescription {
            scheduler_options: vec!["request_memory = 1 GB\nqueue 100".into()],
            ..supported()
        },
    ];
    for d in cases {
        let err = render(&d).unwrap_err();
        assert!(matches!(err, AdaptorError::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("must be one line"), "{err}");
    }
}

#[test]
fn commands() {
    let submit = Path::new(SANDBOX).join("pilot.sub");
    assert_eq!(
        Condor.submit(&submit).argv,
        [
            "condor_submit",
            "-terse",
            "/scratch/alice/pstar.sandbox/demo/pilot-0001/pilot.sub"
        ]
    );
    let queries = Condor.queries("123.0", Path::new(SANDBOX));
    assert_eq!(
        queries[0].argv,
        ["condor_q", "123.0", "-af:j", "JobStatus", "HoldReason"]
    );
    assert_eq!(
        queries[1].argv,
        [
            "condor_history",
            "123.0",
            "-limit",
            "1",
            "-af",
            "JobStatus",
            "ExitCode",
            "RemoveReason"
        ]
    );
    assert_eq!(Condor.cancel("123.0").argv, ["condor_rm", "123.0"]);
}

#[test]
fn parses_condor_submit_terse_output() {
    let dirac = include_str!("fixtures/condor-submit-terse-dirac.txt");
    assert_eq!(Condor.parse_submit(&output(0, dirac, "")).unwrap(), "123.0");
    let nextflow = include_str!("fixtures/condor-submit-terse-nextflow.txt");
    assert_eq!(
        Condor.parse_submit(&output(0, nextflow, "")).unwrap(),
        "15.0"
    );
    assert!(Condor.parse_submit(&output(0, "", "")).is_err());
    assert!(
        Condor
            .parse_submit(&output(0, "Submitting job(s).\n", ""))
            .is_err()
    );
}

#[test]
fn condor_q_states() {
    let q = |text: &str| Condor.parse_query(0, "123.0", &output(0, text, ""));
    assert_eq!(
        q(include_str!("fixtures/condor-q-idle.DOC.txt")),
        Some(JobState::Queued)
    );
    assert_eq!(
        q(include_str!("fixtures/condor-q-running.DOC.txt")),
        Some(JobState::Running)
    );
    assert_eq!(
        q(include_str!("fixtures/condor-q-transferring.DOC.txt")),
        Some(JobState::Running)
    );
    assert_eq!(
        q(include_str!("fixtures/condor-q-suspended.DOC.txt")),
        Some(JobState::Running)
    );
    let held = failed_detail(q(include_str!("fixtures/condor-q-held.DOC.txt")));
    assert!(
        held.starts_with(
            "job 123.0 is held: Error from slot1@ep: Job has gone over cgroup memory limit of \
             20096 megabytes"
        ),
        "{held}"
    );
    // Left the queue: condor_history is asked next.
    assert_eq!(q(include_str!("fixtures/condor-q-gone.DOC.txt")), None);
    // The schedd could not be asked.
    assert_eq!(
        Condor.parse_query(0, "123.0", &output(1, "123.0 1 undefined\n", "")),
        None
    );
}

#[test]
fn condor_history_states() {
    let h = |text: &str| Condor.parse_query(1, "123.0", &output(0, text, ""));
    assert_eq!(
        h(include_str!("fixtures/condor-history-ok.DOC.txt")),
        Some(JobState::Finished {
            ok: true,
            detail: None
        })
    );
    assert_eq!(
        failed_detail(h(include_str!("fixtures/condor-history-exit1.DOC.txt"))),
        "job 123.0 completed with exit code 1"
    );
    assert_eq!(
        failed_detail(h(include_str!("fixtures/condor-history-removed.DOC.txt"))),
        "job 123.0 was removed: via condor_rm (by user alice)"
    );
    assert!(
        failed_detail(h(include_str!("fixtures/condor-history-signal.DOC.txt")))
            .contains("without an exit code")
    );
    // An unknown job: nothing in the queue, nothing in the history.
    assert_eq!(h(""), None);
}

#[test]
fn one_condor_q_tells_many_jobs() {
    // No HTCondor pool here: the answer is written from the `condor_q -af:j` manual.
    let sandbox = Path::new(SANDBOX);
    let jobs = ["123.0", "124.0", "125.0", "126.0"].map(|id| JobRef { id, sandbox });
    let commands = Condor.status(&jobs);
    assert_eq!(commands.len(), 1);
    assert_eq!(
        commands[0].argv,
        [
            "condor_q",
            "123.0",
            "124.0",
            "125.0",
            "126.0",
            "-af:j",
            "JobStatus",
            "HoldReason"
        ]
    );
    let out = output(0, include_str!("fixtures/condor-q-many.DOC.txt"), "");
    let states = Condor.parse_status(0, &jobs, &out);
    assert_eq!(states.get("123.0"), Some(&JobState::Queued));
    assert_eq!(states.get("124.0"), Some(&JobState::Running));
    assert!(
        failed_detail(states.get("125.0").cloned()).starts_with("job 125.0 is held: Error"),
        "{states:?}"
    );
    // Left the queue: asked of condor_history alone.
    assert_eq!(states.get("126.0"), None);
    assert_eq!(
        Condor.history(jobs[3])[0].argv[..2],
        ["condor_history", "126.0"]
    );
}
