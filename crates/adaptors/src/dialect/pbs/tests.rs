//! PBS script generation, and output parsing against recorded outputs (`fixtures/`, see
//! `fixtures/SOURCES.md`).

use std::path::Path;
use std::time::Duration;

use pstar_model::PilotComputeDescription;

use super::{Flavor, Pbs};
use crate::dialect::testing::{SANDBOX, failed_detail, output, render_job, render_script};
use crate::dialect::{Dialect, JobRef};
use crate::{AdaptorError, JobState};

const PBS: Pbs = Pbs { flavor: None };

/// Two nodes of 16 cores and 2 GPUs each, 1h30m, every optional field set.
fn description() -> PilotComputeDescription {
    PilotComputeDescription {
        resource: "pbs+ssh://alice@login.example.org".parse().unwrap(),
        cores: 32,
        nodes: Some(2),
        gpus: 4,
        walltime: Duration::from_secs(90 * 60),
        queue: Some("gpu".into()),
        project: Some("ABC123".into()),
        reservation: Some("R1234.pbs-server".into()),
        scheduler_options: vec!["-m n".into(), "-W umask=027".into()],
        ..PilotComputeDescription::default()
    }
}

fn render(d: &PilotComputeDescription, options: &[(&str, &str)]) -> Result<String, AdaptorError> {
    render_script(&PBS, d, options, "pilot.pbs")
}

/// The state `qstat -f -x` (query 0) and `qstat -f` (query 1) give for `job` in `stdout`.
fn state(job: &str, stdout: &str) -> Option<JobState> {
    let first = PBS.parse_query(0, job, &output(0, stdout, ""));
    assert_eq!(first, PBS.parse_query(1, job, &output(0, stdout, "")));
    first
}

#[test]
fn renders_a_pbs_pro_script() {
    let d = PilotComputeDescription {
        queue: None,
        ..description()
    };
    let expected = "\
#!/bin/sh
#PBS -N pstar.demo.pilot-0001
#PBS -l select=2:ncpus=16:ngpus=2
#PBS -l place=scatter
#PBS -l walltime=01:30:00
#PBS -q R1234
#PBS -A ABC123
#PBS -o /scratch/alice/pstar.sandbox/demo/pilot-0001/pilot.out
#PBS -e /scratch/alice/pstar.sandbox/demo/pilot-0001/pilot.err
#PBS -m n
#PBS -W umask=027

cd /scratch/alice/pstar.sandbox/demo/pilot-0001 || exit 1
exec pstar agent
";
    assert_eq!(render(&d, &[]).unwrap(), expected);
    assert_eq!(render(&d, &[("flavor", "pbspro")]).unwrap(), expected);
}

#[test]
fn renders_a_torque_script() {
    let expected = "\
#!/bin/sh
#PBS -N pstar.demo.pilot-0001
#PBS -l nodes=2:ppn=16:gpus=2
#PBS -l walltime=01:30:00
#PBS -q gpu
#PBS -l advres=R1234.pbs-server
#PBS -A ABC123
#PBS -d /scratch/alice/pstar.sandbox/demo/pilot-0001
#PBS -o /scratch/alice/pstar.sandbox/demo/pilot-0001/pilot.out
#PBS -e /scratch/alice/pstar.sandbox/demo/pilot-0001/pilot.err
#PBS -m n
#PBS -W umask=027

cd /scratch/alice/pstar.sandbox/demo/pilot-0001 || exit 1
exec pstar agent
";
    assert_eq!(
        render(&description(), &[("flavor", "torque")]).unwrap(),
        expected
    );
}

#[test]
fn renders_a_single_node_pilot_without_gpus_or_options() {
    let d = PilotComputeDescription {
        resource: "pbs://".parse().unwrap(),
        cores: 4,
        walltime: Duration::from_secs(45),
        ..PilotComputeDescription::default()
    };
    let script = render(&d, &[]).unwrap();
    assert!(script.contains("\n#PBS -l select=1:ncpus=4\n"), "{script}");
    assert!(script.contains("\n#PBS -l walltime=00:00:45\n"), "{script}");
    assert!(
        !script.contains("place=scatter") && !script.contains("-q ") && !script.contains("-A ")
    );
    let torque = render(&d, &[("flavor", "torque")]).unwrap();
    assert!(torque.contains("\n#PBS -l nodes=1:ppn=4\n"), "{torque}");
}

#[test]
fn pbs_pro_wants_a_queue_or_a_reservation_not_both() {
    let err = render(&description(), &[]).unwrap_err();
    assert!(matches!(err, AdaptorError::Unsupported(_)));
    assert!(err.to_string().contains("not both"), "{err}");
    // The reservation's own queue is no conflict.
    let d = PilotComputeDescription {
        queue: Some("R1234".into()),
        ..description()
    };
    assert!(render(&d, &[]).unwrap().contains("\n#PBS -q R1234\n"));
}

#[test]
fn refuses_a_value_with_a_newline() {
    let cases = [
        PilotComputeDescription {
            project: Some("ABC123\n#PBS -q express".into()),
            ..description()
        },
        PilotComputeDescription {
            queue: Some("gpu\nrm -rf ~".into()),
            ..description()
        },
        PilotComputeDescription {
            reservation: Some("R1\r".into()),
            ..description()
        },
        PilotComputeDescription {
            scheduler_options: vec!["-m n\necho owned".into()],
            ..description()
        },
    ];
    for d in cases {
        let err = render(&d, &[("flavor", "torque")]).unwrap_err();
        assert!(matches!(err, AdaptorError::Unsupported(_)), "{err}");
        assert!(err.to_string().contains("must be one line"), "{err}");
    }
}

#[test]
fn refuses_an_unknown_flavor_and_uneven_gpus() {
    let err = render(&description(), &[("flavor", "slurm")]).unwrap_err();
    assert!(err.to_string().contains("unknown PBS flavor"), "{err}");
    let d = PilotComputeDescription {
        gpus: 3,
        ..description()
    };
    let err = render(&d, &[("flavor", "torque")]).unwrap_err();
    assert!(
        err.to_string()
            .contains("3 GPUs cannot be spread evenly over 2 nodes"),
        "{err}"
    );
}

#[test]
fn commands() {
    let script = Path::new(SANDBOX).join("pilot.pbs");
    assert_eq!(
        PBS.submit(&script).argv,
        [
            "qsub",
            "/scratch/alice/pstar.sandbox/demo/pilot-0001/pilot.pbs"
        ]
    );
    let queries = PBS.queries("4242.pbs-server", Path::new(SANDBOX));
    assert_eq!(queries[0].argv, ["qstat", "-f", "-x", "4242.pbs-server"]);
    assert_eq!(queries[1].argv, ["qstat", "-f", "4242.pbs-server"]);
    assert_eq!(
        PBS.cancel("4242.pbs-server").argv,
        ["qdel", "4242.pbs-server"]
    );
}

#[test]
fn parses_qsub_output() {
    let torque = include_str!("fixtures/torque-qsub.txt");
    assert_eq!(
        PBS.parse_submit(&output(0, torque, "")).unwrap(),
        "3481331.egeon2"
    );
    let other = include_str!("fixtures/qsub-biocluster.txt");
    assert_eq!(
        PBS.parse_submit(&output(0, other, "")).unwrap(),
        "1584288.biocluster.igb.illinois.edu"
    );
    assert!(PBS.parse_submit(&output(0, "", "")).is_err());
    assert!(
        PBS.parse_submit(&output(0, "qsub: job rejected\n", ""))
            .is_err()
    );
}

#[test]
fn torque_jobs() {
    let job = "515916.barnacle.ucsd.edu";
    let queued = include_str!("fixtures/torque-qstat-f-queued.txt");
    assert_eq!(state(job, queued), Some(JobState::Queued));

    let running = include_str!("fixtures/torque-qstat-f-running.txt");
    assert_eq!(
        state("522059.barnacle.ucsd.edu", running),
        Some(JobState::Running)
    );

    let ok = include_str!("fixtures/torque-qstat-f-completed-ok.txt");
    assert_eq!(
        state("522081.barnacle.ucsd.edu", ok),
        Some(JobState::Finished {
            ok: true,
            detail: None
        })
    );

    let failed = include_str!("fixtures/torque-qstat-f-completed-failed.txt");
    let detail = failed_detail(state("522083.barnacle.ucsd.edu", failed));
    assert!(
        detail.starts_with("job 522083.barnacle.ucsd.edu finished with exit status -11"),
        "{detail}"
    );
    assert!(
        detail.contains("PBS could not run the job or ended it"),
        "{detail}"
    );
}

#[test]
fn pbs_pro_jobs() {
    let queued = include_str!("fixtures/pbspro-qstat-f-queued.txt");
    assert_eq!(state("171390152.mycluster", queued), Some(JobState::Queued));

    let running = include_str!("fixtures/pbspro-qstat-f-running.txt");
    assert_eq!(
        state("171390152.mycluster", running),
        Some(JobState::Running)
    );

    // Held (here by a dependency): it may still be released, so it waits as queued.
    let held = include_str!("fixtures/pbspro-qstat-f-held.txt");
    assert_eq!(state("69302.mycluster", held), Some(JobState::Queued));

    let finished = include_str!("fixtures/pbspro-qstat-fx-finished.txt");
    assert_eq!(
        state("0.e5a207891675", finished),
        Some(JobState::Finished {
            ok: true,
            detail: None
        })
    );

    let failed = include_str!("fixtures/pbspro-qstat-fx-failed.DOC.txt");
    let detail = failed_detail(state("4242.pbs-server", failed));
    assert!(
        detail
            .starts_with("job 4242.pbs-server finished with exit status 271: killed by signal 15"),
        "{detail}"
    );
    assert!(detail.contains("(PBS: Job run at Mon Jan 06"), "{detail}");
}

#[test]
fn reads_long_values_continued_over_lines() {
    let jobs = super::parse_qstat_f(include_str!("fixtures/pbspro-qstat-fx-finished.txt"));
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        jobs[0].get("comment"),
        Some("Job run at Thu May 14 at 07:04 on (e5a207891675:ncpus=1) and finished")
    );
    assert_eq!(jobs[0].get("Exit_status"), Some("0"));
    let torque = super::parse_qstat_f(include_str!("fixtures/torque-qstat-f-queued.txt"));
    assert_eq!(
        torque[0].get("Error_Path"),
        Some("barnacle.ucsd.edu:/home/amam7564/data/mice-quinoa/pita.deblur.error")
    );
    assert_eq!(torque[0].get("submit_host"), Some("barnacle.ucsd.edu"));
}

#[test]
fn matches_the_job_by_its_number() {
    let running = include_str!("fixtures/torque-qstat-f-running.txt");
    assert_eq!(state("522059.barnacle", running), Some(JobState::Running));
    assert_eq!(state("522059", running), Some(JobState::Running));
    // Another job's answer is not this job's.
    assert_eq!(state("522060.barnacle.ucsd.edu", running), None);
}

#[test]
fn an_unknown_job_is_none() {
    let pro = include_str!("fixtures/pbspro-unknown-job.txt");
    let job = "412635.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov";
    for index in [0, 1] {
        assert_eq!(PBS.parse_query(index, job, &output(153, "", pro)), None);
    }
    let torque = include_str!("fixtures/torque-unknown-job.txt");
    for index in [0, 1] {
        assert_eq!(
            PBS.parse_query(index, "3481331.egeon2", &output(153, "", torque)),
            None
        );
    }
    assert_eq!(PBS.parse_query(0, "1.x", &output(0, "", "")), None);
}

#[test]
fn torque_xml_for_qstat_x_is_passed_over() {
    // Torque reads `qstat -f -x` as "XML": query 0 gives way to query 1.
    let xml = include_str!("fixtures/torque-qstat-f-x.TEMPLATE.xml");
    assert_eq!(PBS.parse_query(0, "42.torque", &output(0, xml, "")), None);
}

#[test]
fn a_fixed_flavor_wins_over_the_url() {
    let files = render_job(&Pbs::with_flavor(Flavor::Torque), &description(), &[]).unwrap();
    assert!(
        files[0]
            .content
            .contains("\n#PBS -l nodes=2:ppn=16:gpus=2\n")
    );
    assert_eq!(Pbs::default().flavor, None);
}

#[test]
fn one_qstat_tells_many_jobs() {
    // No PBS runs here: `qstat -f ID...` prints one block per job, one after the other;
    // the answer is the recorded blocks of single jobs put together, and an unknown job's
    // line (a capture) on standard error.
    let sandbox = Path::new(SANDBOX);
    let ids = [
        "515916.barnacle.ucsd.edu",
        "522059.barnacle.ucsd.edu",
        "522083.barnacle.ucsd.edu",
        "412635.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov",
    ];
    let jobs = ids.map(|id| JobRef { id, sandbox });
    let commands = PBS.status(&jobs);
    assert_eq!(commands[0].argv[..3], ["qstat", "-f", "-x"]);
    assert_eq!(commands[0].argv[3..], ids);
    assert_eq!(commands[1].argv[..2], ["qstat", "-f"]);
    assert_eq!(commands[1].argv[2..], ids);
    let stdout = [
        include_str!("fixtures/torque-qstat-f-queued.txt"),
        include_str!("fixtures/torque-qstat-f-running.txt"),
        include_str!("fixtures/torque-qstat-f-completed-failed.txt"),
    ]
    .join("\n");
    let out = output(
        153,
        &stdout,
        include_str!("fixtures/pbspro-unknown-job.txt"),
    );
    let states = PBS.parse_status(1, &jobs, &out);
    assert_eq!(states.get(ids[0]), Some(&JobState::Queued));
    assert_eq!(states.get(ids[1]), Some(&JobState::Running));
    assert!(
        failed_detail(states.get(ids[2]).cloned()).contains("exit status -11"),
        "{states:?}"
    );
    assert_eq!(states.get(ids[3]), None);
    // Torque's XML answer to `-x` knows none of them: all go to the next command.
    let xml = output(
        0,
        include_str!("fixtures/torque-qstat-f-x.TEMPLATE.xml"),
        "",
    );
    assert!(PBS.parse_status(0, &jobs, &xml).is_empty());
}
