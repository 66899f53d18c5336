//! A run's settings from their layers: pstar's built-in defaults, below the workload's
//! `[session]`, below the environment, below the command line ([`pstar::Settings`]).

use std::path::PathBuf;

use pstar::{Origin, Settings, SettingsLayer};

/// The store's URL, when `--coordination` is not given.
pub const COORDINATION_VAR: &str = "PSTAR_COORDINATION";
/// The `pstar` program agents run, when `--agent-binary` is not given.
pub const AGENT_BIN_VAR: &str = "PSTAR_AGENT_BIN";

/// The environment's layer: `PSTAR_COORDINATION` and `PSTAR_AGENT_BIN`, as `var` reads
/// them (`std::env::var`, or a table in tests). An empty variable is not set.
pub fn environment(var: impl Fn(&str) -> Option<String>) -> SettingsLayer {
    let var = |name: &str| var(name).filter(|v| !v.is_empty());
    let mut layer = SettingsLayer::from(Origin::Environment(String::new()));
    if let Some(url) = var(COORDINATION_VAR) {
        layer.coordination = Some(url);
        layer
            .at
            .insert("coordination", Origin::Environment(COORDINATION_VAR.into()));
    }
    if let Some(path) = var(AGENT_BIN_VAR) {
        layer.agent_binary = Some(PathBuf::from(path));
        layer
            .at
            .insert("agent_binary", Origin::Environment(AGENT_BIN_VAR.into()));
    }
    layer
}

/// This process's environment's layer.
pub fn from_environment() -> SettingsLayer {
    environment(|name| std::env::var(name).ok())
}

/// The settings of a run: the built-in defaults, then the workload's `[session]` (none for
/// a resumed session), the environment, the command line.
pub fn layered(
    workload: Option<&SettingsLayer>,
    environment: &SettingsLayer,
    command_line: &SettingsLayer,
) -> Settings {
    Settings::layered(workload.into_iter().chain([environment, command_line]))
}

/// The command line's parser for duration setting `name` (`--heartbeat-timeout 30s`): a
/// duration within the setting's range ([`pstar_model::settings::DURATION_RANGES`]).
pub fn duration_flag(
    name: &'static str,
) -> impl Fn(&str) -> Result<std::time::Duration, String> + Clone + Send + Sync + 'static {
    move |text| {
        let d = humantime::parse_duration(text)
            .map_err(|e| format!("not a duration such as \"30s\": {e}"))?;
        pstar_model::settings::check_duration(name, d).map_err(|e| e.to_string())?;
        Ok(d)
    }
}

/// Checks the settings an agent is about to run `record`'s pilot with (its record's, under
/// any flags). Refused, the pilot fails on the event stream with the reason (the manager
/// shows it), and the reason is returned for the agent to exit with: nothing runs.
pub async fn check_agent_settings(
    store: &dyn pstar::Coordination,
    record: &pstar_coordination::PilotRecord,
    config: &pstar::AgentSettings,
) -> Result<(), String> {
    let pilot = record.id.to_string();
    let Err(e) = config.check(Some((record.description.walltime, pilot.as_str()))) else {
        return Ok(());
    };
    let reason = format!("the agent refused the settings in its pilot record: {e}");
    let failed = pstar_coordination::Event::Pilot(pstar_coordination::PilotEvent {
        pilot: record.id,
        state: pstar::PilotState::Failed,
        at: pstar_model::Timestamp::now(),
        detail: Some(reason.clone()),
    });
    if let Err(e) = store.publish(vec![failed]).await {
        tracing::warn!(error = %e, "cannot report the pilot failed");
    }
    Err(reason)
}

/// How to give a run a store its agents can reach, in the CLI's words (the libraries'
/// errors name no flag).
pub const STORE_ADVICE: &str = "run with `--coordination redis://HOST:PORT` (or \
     `PSTAR_COORDINATION`, or `[session] coordination`)";

/// `e` as the CLI says it: a library's error, with the flags or keys that fix it.
pub fn explain(e: &pstar::Error) -> String {
    match e {
        pstar::Error::NeedsNetworkedStore { .. }
        | pstar::Error::Adaptor(pstar::AdaptorError::NeedsNetworkedStore { .. }) => {
            format!("{e}: {STORE_ADVICE}")
        }
        pstar::Error::NoSuchSession(_) => format!("{e} (see `pstar session list`)"),
        e => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;
    use std::time::Duration;

    use super::*;

    /// Each layer overrides the one below it, for settings from every layer: a workload
    /// file's `[session]`, variables of the environment, flags.
    #[test]
    fn defaults_then_session_then_environment_then_command_line() {
        let file = "[session]\ncoordination = \"redis://file:1/0\"\n\
                    heartbeat_timeout = \"45s\"\nmax_attempts = 5\nagent_binary = \"/file/pstar\"\n\
                    poll_interval = \"9s\"\n\
                    [[pilot]]\nresource = \"local://\"\n[[unit]]\nexecutable = \"/bin/true\"\n";
        let workload =
            crate::workload::parse(Path::new("w.toml"), file, &[pstar::Scheme::Local], false)
                .unwrap_or_else(|e| panic!("{e}"));
        let vars: HashMap<&str, &str> = [
            ("PSTAR_COORDINATION", "redis://env:1/0"),
            ("PSTAR_AGENT_BIN", "/env/pstar"),
        ]
        .into();
        let env = environment(|name| vars.get(name).map(|v| v.to_string()));
        let flags = SettingsLayer {
            coordination: Some("redis://flag:1/0".into()),
            max_attempts: Some(2),
            prefetch: Some(0),
            ..SettingsLayer::from(Origin::CommandLine)
        };
        let at = |line| Origin::Workload {
            path: "w.toml".into(),
            line,
        };
        let env_var = |v: &str| Origin::Environment(v.into());
        let defaults = Settings::default();

        let none = SettingsLayer::default();
        // (layers, setting, value, origin)
        type Case<'a> = (&'a str, &'a str, String, Origin);
        let mut cases: Vec<(Settings, Vec<Case>)> = Vec::new();
        let only_defaults = layered(None, &none, &none);
        cases.push((
            only_defaults,
            vec![
                ("defaults", "coordination", "None".into(), Origin::Default),
                (
                    "defaults",
                    "heartbeat_timeout",
                    format!("{:?}", defaults.heartbeat_timeout),
                    Origin::Default,
                ),
            ],
        ));
        let with_file = layered(Some(&workload.session), &none, &none);
        cases.push((
            with_file,
            vec![
                (
                    "file",
                    "coordination",
                    "Some(\"redis://file:1/0\")".into(),
                    at(2),
                ),
                ("file", "heartbeat_timeout", "45s".into(), at(3)),
                ("file", "max_attempts", "5".into(), at(4)),
                (
                    "file",
                    "agent_binary",
                    "Some(\"/file/pstar\")".into(),
                    at(5),
                ),
            ],
        ));
        let with_env = layered(Some(&workload.session), &env, &none);
        cases.push((
            with_env,
            vec![
                (
                    "env",
                    "coordination",
                    "Some(\"redis://env:1/0\")".into(),
                    env_var("PSTAR_COORDINATION"),
                ),
                (
                    "env",
                    "agent_binary",
                    "Some(\"/env/pstar\")".into(),
                    env_var("PSTAR_AGENT_BIN"),
                ),
                ("env", "max_attempts", "5".into(), at(4)),
            ],
        ));
        let all = layered(Some(&workload.session), &env, &flags);
        cases.push((
            all,
            vec![
                (
                    "flags",
                    "coordination",
                    "Some(\"redis://flag:1/0\")".into(),
                    Origin::CommandLine,
                ),
                ("flags", "max_attempts", "2".into(), Origin::CommandLine),
                ("flags", "prefetch", "0".into(), Origin::CommandLine),
                (
                    "flags",
                    "agent_binary",
                    "Some(\"/env/pstar\")".into(),
                    env_var("PSTAR_AGENT_BIN"),
                ),
                ("flags", "heartbeat_timeout", "45s".into(), at(3)),
                ("flags", "poll_interval", "9s".into(), at(6)),
                (
                    "flags",
                    "keep",
                    format!("{:?}", defaults.keep),
                    Origin::Default,
                ),
            ],
        ));
        for (settings, expected) in cases {
            for (layers, name, value, origin) in expected {
                let got = match name {
                    "coordination" => format!("{:?}", settings.coordination),
                    "heartbeat_timeout" => format!("{:?}", settings.heartbeat_timeout),
                    "max_attempts" => settings.max_attempts.to_string(),
                    "prefetch" => settings.prefetch.to_string(),
                    "agent_binary" => format!("{:?}", settings.agent_binary),
                    "poll_interval" => format!("{:?}", settings.poll_interval),
                    "keep" => format!("{:?}", settings.keep),
                    other => panic!("no case for {other}"),
                };
                assert_eq!(got, value, "{name} up to the {layers} layer");
                assert_eq!(
                    settings.origin(name),
                    &origin,
                    "origin of {name} up to the {layers} layer"
                );
            }
        }
        assert_eq!(
            layered(None, &none, &none).heartbeat_timeout,
            Duration::from_secs(30)
        );
    }

    #[test]
    fn an_empty_variable_sets_nothing() {
        let env = environment(|_| Some(String::new()));
        assert_eq!(env.coordination, None);
        assert_eq!(env.agent_binary, None);
    }
}
