//! The fork dialect's one status command, run for real on this host (the local transport)
//! over several processes at once, and its answers read back.

use std::path::Path;
use std::time::Duration;

use super::Fork;
use crate::JobState;
use crate::dialect::testing::{failed_detail, output};
use crate::dialect::{Dialect, JobRef};
use crate::transport::Transport;

#[test]
fn reads_the_answer_about_several_processes() {
    let sandbox = Path::new("/s");
    let jobs = ["11", "12", "13", "14"].map(|id| JobRef { id, sandbox });
    let out = output(
        0,
        "11 running\n12 exit 0\n13 exit 3\n14 gone\n99 running\n",
        "",
    );
    let states = Fork.parse_status(0, &jobs, &out);
    assert_eq!(states.len(), 4, "{states:?}");
    assert_eq!(states["11"], JobState::Running);
    assert_eq!(
        states["12"],
        JobState::Finished {
            ok: true,
            detail: None
        }
    );
    assert_eq!(
        failed_detail(states.get("13").cloned()),
        "process 13 exited with status 3"
    );
    assert!(failed_detail(states.get("14").cloned()).contains("gone without an exit status"));
    // A shell that failed says nothing of any process.
    assert!(
        Fork.parse_status(0, &jobs, &output(1, "11 running\n", ""))
            .is_empty()
    );
}

#[tokio::test]
async fn one_command_tells_the_states_of_every_process() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let sandbox = |name: &str| {
        let path = dir.path().join(name);
        std::fs::create_dir_all(&path).expect("a sandbox");
        path
    };
    let (running, ok, failed, gone) = (sandbox("a"), sandbox("b"), sandbox("c"), sandbox("d"));
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("sleep");
    // Processes that ended: two left their exit status, one did not.
    let ended = |status: Option<&str>, dir: &Path| {
        let mut c = std::process::Command::new("true").spawn().expect("true");
        c.wait().expect("wait");
        if let Some(s) = status {
            std::fs::write(dir.join("pilot.exit"), format!("{s}\n")).expect("pilot.exit");
        }
        c.id().to_string()
    };
    let ids = [
        child.id().to_string(),
        ended(Some("0"), &ok),
        ended(Some("3"), &failed),
        ended(None, &gone),
    ];
    let jobs = [
        JobRef {
            id: &ids[0],
            sandbox: &running,
        },
        JobRef {
            id: &ids[1],
            sandbox: &ok,
        },
        JobRef {
            id: &ids[2],
            sandbox: &failed,
        },
        JobRef {
            id: &ids[3],
            sandbox: &gone,
        },
    ];
    let commands = Fork.status(&jobs);
    assert_eq!(commands.len(), 1, "one command for every process");
    let out = Transport::Local
        .run(&commands[0], Duration::from_secs(10))
        .await
        .expect("sh runs");
    let _ = child.kill();
    let _ = child.wait();
    let states = Fork.parse_status(0, &jobs, &out);
    assert_eq!(states[&ids[0]], JobState::Running, "{out:?}");
    assert_eq!(
        states[&ids[1]],
        JobState::Finished {
            ok: true,
            detail: None
        }
    );
    assert_eq!(
        failed_detail(states.get(&ids[2]).cloned()),
        format!("process {} exited with status 3", ids[2])
    );
    assert!(
        failed_detail(states.get(&ids[3]).cloned()).contains("gone without an exit status"),
        "{states:?}"
    );
}
