//! LSF script generation, and output parsing against recorded outputs (`fixtures/`, see
//! `fixtures/SOURCES.md`).

use std::path::Path;
use std::time::Duration;

use pstar_model::PilotComputeDescription;

use super::{BJOBS_FORMAT, Lsf};
use crate::dialect::testing::{SANDBOX, failed_detail, output, render_script};
use crate::dialect::{Dialect, JobRef};
use crate::{AdaptorError, JobState};

/// Two nodes of 16 cores and 2 GPUs each, 1h30m, every optional field set.
fn description() -> PilotComputeDescription {
    PilotComputeDescription {
        resource: "lsf://".parse().unwrap(),
        cores: 32,
        nodes: Some(2),
        gpus: 4,
        walltime: Duration::from_secs(90 * 60),
        queue: Some("gpu".into()),
        project: Some("ABC123".into()),
        reservation: Some("alice#0".into()),
        scheduler_options: vec!["-x".into(), "-app pilot_app".into()],
        ..PilotComputeDescription::default()
    }
}

fn render(d: &PilotComputeDescription) -> Result<String, AdaptorError> {
    render_script(&Lsf, d, &[], "pilot.lsf")
}

#[test]
fn renders_a_script() {
    let expected = "\
#!/bin/sh
#BSUB -J pstar.demo.pilot-0001
#BSUB -n 32
#BSUB -R \"span[ptile=16]\"
#BSUB -gpu \"num=2\"
#BSUB -W 1:30
#BSUB -q gpu
#BSUB -P ABC123
#BSUB -U alice#0
#BSUB -cwd /scratch/alice/pstar.sandbox/demo/pilot-0001
#BSUB -o /scratch/alice/pstar.sandbox/demo/pilot-0001/pilot.out
#BSUB -e /scratch/alice/pstar.sandbox/demo/pilot-0001/pilot.err
#BSUB -x
#BSUB -app pilot_app

cd /scratch/alice/pstar.sandbox/demo/pilot-0001 || exit 1
exec pstar agent
";
    assert_eq!(render(&description()).unwrap(), expected);
}

#[test]
fn renders_a_single_node_pilot() {
    let d = PilotComputeDescription {
        resource: "lsf://".parse().unwrap(),
        cores: 4,
        walltime: Duration::from_secs(45),
        ..PilotComputeDescription::default()
    };
    let script = render(&d).unwrap();
    assert!(
        script.contains("\n#BSUB -n 4\n#BSUB -R \"span[hosts=1]\"\n#BSUB -W 0:01\n"),
        "{script}"
    );
    assert!(!script.contains("-gpu") && !script.contains("-q ") && !script.contains("-U "));
}

#[test]
fn refuses_a_value_with_a_newline() {
    let cases = [
        PilotComputeDescription {
            project: Some("ABC123\n#BSUB -q priority".into()),
            ..description()
        },
        PilotComputeDescription {
            queue: Some("gpu\r".into()),
            ..description()
        },
        PilotComputeDescription {
            reservation: Some("r\0".into()),
            ..description()
        },
        PilotComputeDescription {
            scheduler_options: vec!["-x\necho owned".into()],
            ..description()
        },
    ];
    for d in cases {
        let err = render(&d).unwrap_err();
        assert!(matches!(err, AdaptorError::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("must be one line"), "{err}");
    }
    let d = PilotComputeDescription {
        gpus: 1,
        ..description()
    };
    assert!(
        render(&d)
            .unwrap_err()
            .to_string()
            .contains("cannot be spread evenly")
    );
}

#[test]
fn commands() {
    let script = Path::new(SANDBOX).join("pilot.lsf");
    // `#BSUB` lines count in a script read from standard input.
    assert_eq!(
        Lsf.submit(&script).argv,
        [
            "sh",
            "-c",
            r#"exec bsub < "$1""#,
            "sh",
            "/scratch/alice/pstar.sandbox/demo/pilot-0001/pilot.lsf"
        ]
    );
    let queries = Lsf.queries("4242", Path::new(SANDBOX));
    assert_eq!(
        queries[0].argv,
        ["bjobs", "-a", "-noheader", "-o", BJOBS_FORMAT, "4242"]
    );
    assert_eq!(
        BJOBS_FORMAT,
        "jobid stat exit_reason exit_code delimiter='|'"
    );
    assert_eq!(queries[1].argv, ["bjobs", "-a", "-w", "4242"]);
    assert_eq!(Lsf.cancel("4242").argv, ["bkill", "4242"]);
}

#[test]
fn parses_bsub_output() {
    let aiida = include_str!("fixtures/bsub-aiida.txt");
    assert_eq!(
        Lsf.parse_submit(&output(0, aiida, "")).unwrap(),
        "764254593"
    );
    let nextflow = include_str!("fixtures/bsub-nextflow.txt");
    assert_eq!(
        Lsf.parse_submit(&output(0, nextflow, "")).unwrap(),
        "2329803"
    );
    assert!(Lsf.parse_submit(&output(0, "", "")).is_err());
    assert!(
        Lsf.parse_submit(&output(0, "Job <fuzz> is submitted to default queue", ""))
            .is_err()
    );
}

#[test]
fn bjobs_o_states() {
    let out = output(0, include_str!("fixtures/bjobs-o-aiida.txt"), "");
    let state = |job: &str| Lsf.parse_query(0, job, &out);
    assert_eq!(state("764220165"), Some(JobState::Queued));
    assert_eq!(state("764220167"), Some(JobState::Queued));
    assert_eq!(state("764254593"), Some(JobState::Running));
    assert_eq!(state("764245175"), Some(JobState::Running));
    // A line that starts with a space.
    assert_eq!(
        state("764399747"),
        Some(JobState::Finished {
            ok: true,
            detail: None
        })
    );
    let detail = failed_detail(state("764213236"));
    assert_eq!(
        detail,
        "job 764213236 ended EXIT (TERM_RUNLIMIT: job killed after reaching LSF run time limit)"
    );
    assert_eq!(state("764213"), None);
}

#[test]
fn bjobs_o_exit_codes() {
    let done = output(0, include_str!("fixtures/bjobs-o-done.DOC.txt"), "");
    assert_eq!(
        Lsf.parse_query(0, "4242", &done),
        Some(JobState::Finished {
            ok: true,
            detail: None
        })
    );
    let exit = output(0, include_str!("fixtures/bjobs-o-exit.DOC.txt"), "");
    assert_eq!(
        failed_detail(Lsf.parse_query(0, "4243", &exit)),
        "job 4243 ended EXIT with exit code 127"
    );
    let killed = output(0, include_str!("fixtures/bjobs-o-killed.DOC.txt"), "");
    assert_eq!(
        failed_detail(Lsf.parse_query(0, "4244", &killed)),
        "job 4244 ended EXIT (TERM_OWNER: job killed by owner)"
    );
}

#[test]
fn classic_bjobs_table_states() {
    let out = output(0, include_str!("fixtures/bjobs-w-nextflow.txt"), "");
    let state = |job: &str| Lsf.parse_query(1, job, &out);
    assert_eq!(state("5085109"), Some(JobState::Running));
    assert_eq!(state("5085604"), Some(JobState::Queued));
    assert_eq!(state("5085611"), Some(JobState::Queued));
    assert_eq!(
        state("5085606"),
        Some(JobState::Finished {
            ok: true,
            detail: None
        })
    );
    assert_eq!(failed_detail(state("5085107")), "job 5085107 ended EXIT");
    assert!(failed_detail(state("5085607")).contains("UNKWN"));
    assert!(failed_detail(state("5085608")).contains("ZOMBI"));
    assert_eq!(state("5085704"), Some(JobState::Running));
    assert_eq!(state("5085"), None);

    let doc = output(0, include_str!("fixtures/bjobs-ibm-doc.txt"), "");
    assert_eq!(Lsf.parse_query(1, "111", &doc), Some(JobState::Running));
}

#[test]
fn an_unknown_job_is_none() {
    let aiida = include_str!("fixtures/bjobs-not-found-aiida.txt");
    let doc = include_str!("fixtures/bjobs-not-found-ibm-doc.txt");
    for index in [0, 1] {
        // With LSB_BJOBS_CONSISTENT_EXIT_CODE=Y bjobs exits 255, else 0.
        assert_eq!(
            Lsf.parse_query(index, "864220165", &output(255, "", aiida)),
            None
        );
        assert_eq!(Lsf.parse_query(index, "123", &output(0, "", doc)), None);
    }
}

#[test]
fn one_bjobs_tells_many_jobs() {
    // No LSF runs here: the answer is the aiida-core test data of `bjobs -o` over several
    // jobs, and an unknown job's line as IBM documents it, on standard error.
    let sandbox = Path::new(SANDBOX);
    let ids = ["764220165", "764254593", "764213236", "123"];
    let jobs = ids.map(|id| JobRef { id, sandbox });
    let commands = Lsf.status(&jobs);
    assert_eq!(
        commands[0].argv,
        [
            "bjobs",
            "-a",
            "-noheader",
            "-o",
            BJOBS_FORMAT,
            "764220165",
            "764254593",
            "764213236",
            "123"
        ]
    );
    assert_eq!(
        commands[1].argv,
        [
            "bjobs",
            "-a",
            "-w",
            "764220165",
            "764254593",
            "764213236",
            "123"
        ]
    );
    let out = output(
        255,
        include_str!("fixtures/bjobs-o-aiida.txt"),
        include_str!("fixtures/bjobs-not-found-ibm-doc.txt"),
    );
    let states = Lsf.parse_status(0, &jobs, &out);
    assert_eq!(states.get("764220165"), Some(&JobState::Queued));
    assert_eq!(states.get("764254593"), Some(&JobState::Running));
    assert!(
        failed_detail(states.get("764213236").cloned()).contains("TERM_RUNLIMIT"),
        "{states:?}"
    );
    // The unknown job, and the listed jobs not asked about, are not in the answer.
    assert_eq!(states.len(), 3, "{states:?}");
    // The classic table, for the jobs the first command did not list.
    let table = output(0, include_str!("fixtures/bjobs-w-nextflow.txt"), "");
    let jobs = ["5085585", "5085604", "123"].map(|id| JobRef { id, sandbox });
    let states = Lsf.parse_status(1, &jobs, &table);
    assert_eq!(states.get("5085585"), Some(&JobState::Running));
    assert_eq!(states.get("5085604"), Some(&JobState::Queued));
    assert_eq!(states.len(), 2, "{states:?}");
}
