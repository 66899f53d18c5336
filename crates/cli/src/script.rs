//! `pstar pilot script WORKLOAD`: the job files each pilot would be submitted with.

use std::fmt::Write;

use pstar_adaptors::{AdaptorConfig, available, local_root};
use pstar_coordination::PilotRecord;
use pstar_model::sandbox::pilot_sandbox;
use pstar_model::{PilotId, Settings};

use crate::workload::Workload;

/// The store URL shown when none is given.
const PLACEHOLDER_URL: &str = "redis://STORE-HOST:6379";

/// Every pilot's job files, under a header naming the pilot and the file, for a run with
/// `settings` (the store the agents would reach, the local sandbox root, the agents'
/// program and settings).
pub fn render(workload: &Workload, settings: &Settings) -> Result<String, String> {
    let adaptors = available(AdaptorConfig {
        agent_binary: settings.agent_binary.clone(),
        poll_interval: settings.poll_interval,
        timeouts: pstar_adaptors::BootstrapTimeouts {
            agent_start: settings.agent_start_timeout,
            ..Default::default()
        },
    });
    let (url, sandbox) = (settings.coordination.as_ref(), settings.sandbox.as_path());
    let session = "SESSION";
    // What a real submission gives agents: the URL without its password.
    let url = url.map_or_else(
        || PLACEHOLDER_URL.to_owned(),
        |u| pstar_coordination::redis::without_password(u),
    );
    let url = url.as_str();
    let root = std::path::absolute(sandbox).unwrap_or_else(|_| sandbox.to_owned());
    let mut out = String::new();
    for (i, description) in workload.pilots.iter().enumerate() {
        let scheme = description.resource.scheme();
        let adaptor = adaptors
            .iter()
            .find(|a| a.scheme() == scheme)
            .ok_or_else(|| format!("no adaptor for `{scheme}://`"))?;
        let over_ssh = pstar_adaptors::Capabilities::of(scheme).remote_paths;
        let pilot_root = if over_ssh {
            description
                .working_directory
                .clone()
                .unwrap_or_else(|| "pstar.sandbox".into())
        } else {
            local_root(description, &root)
        };
        let id = PilotId::new(i as u64);
        let record = PilotRecord {
            id,
            description: description.clone(),
            sandbox: pilot_sandbox(&pilot_root, session, id),
            job: None,
            agent: settings.agent_settings(),
            restart_of: None,
        };
        let name = description.name.as_deref().unwrap_or("(unnamed)");
        let _ = writeln!(out, "### {id} {name} on {}", description.resource);
        match adaptor.script(&record, session, url) {
            Ok(files) => {
                for file in files {
                    let _ = writeln!(
                        out,
                        "### file {}",
                        record.sandbox.join(&file.name).display()
                    );
                    out.push_str(&file.content);
                    if !file.content.ends_with('\n') {
                        out.push('\n');
                    }
                }
            }
            Err(e) => {
                let _ = writeln!(out, "### no job script: {e}");
            }
        }
        out.push('\n');
    }
    Ok(out)
}
