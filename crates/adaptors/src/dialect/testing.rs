//! What the dialects' tests share: a pilot's job rendered in a fixed sandbox, a command's
//! output, and the detail of a failed job.

use std::collections::HashMap;
use std::path::Path;

use pstar_model::PilotComputeDescription;

use super::{Dialect, ScriptJob};
use crate::transport::Output;
use crate::{AdaptorError, JobFile, JobState};

/// The sandbox of pilot-0001 of session `demo` on the cluster.
pub(crate) const SANDBOX: &str = "/scratch/alice/pstar.sandbox/demo/pilot-0001";

/// The lines that start the agent, as the job files must carry them.
pub(crate) const BODY: &str =
    "cd /scratch/alice/pstar.sandbox/demo/pilot-0001 || exit 1\nexec pstar agent\n";

/// `system`'s job files for `description`, with `options` as the resource URL's query.
pub(crate) fn render_job(
    system: &dyn Dialect,
    description: &PilotComputeDescription,
    options: &[(&str, &str)],
) -> Result<Vec<JobFile>, AdaptorError> {
    let options: HashMap<String, String> = options
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let sandbox = Path::new(SANDBOX);
    system.render(&ScriptJob {
        name: "pstar.demo.pilot-0001".into(),
        description,
        sandbox,
        stdout: sandbox.join("pilot.out"),
        stderr: sandbox.join("pilot.err"),
        body: BODY.into(),
        options: &options,
    })
}

/// The one job file `system` renders for `description`, which must be called `name`.
pub(crate) fn render_script(
    system: &dyn Dialect,
    description: &PilotComputeDescription,
    options: &[(&str, &str)],
    name: &str,
) -> Result<String, AdaptorError> {
    let files = render_job(system, description, options)?;
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].name, name);
    Ok(files[0].content.clone())
}

/// What a command said.
pub(crate) fn output(code: i32, stdout: &str, stderr: &str) -> Output {
    Output {
        code: Some(code),
        stdout: stdout.into(),
        stderr: stderr.into(),
    }
}

/// The detail of a job that ended badly; panics on any other state.
pub(crate) fn failed_detail(state: Option<JobState>) -> String {
    match state {
        Some(JobState::Finished {
            ok: false,
            detail: Some(d),
        }) => d,
        other => panic!("expected a failed job, got {other:?}"),
    }
}
