//! Turning a unit description into a process.
//!
//! Without `shell`, `pre_exec` (the unit's or its pilot's) and `post_exec` the executable is started directly, with its arguments as
//! they are: nothing passes through a shell. When a shell is needed, the unit's arguments
//! travel as the shell's positional parameters (`"$@"`), never pasted into the script.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use pstar_model::{ComputeUnitDescription, PilotId, UnitId};

/// The agent's environment variables that carry the store's secret, looked up once.
pub(crate) static SECRET_VARIABLES: std::sync::LazyLock<Vec<&'static str>> =
    std::sync::LazyLock::new(pstar_coordination::redis::secret_variables);

/// Everything needed to start one unit. Its methods block (file creation, fork and
/// exec): call them off the async runtime.
pub struct Launch<'a> {
    pub unit: UnitId,
    pub pilot: PilotId,
    pub description: &'a ComputeUnitDescription,
    pub pilot_environment: &'a BTreeMap<String, String>,
    /// The pilot's `pre_exec` lines, run before the unit's own.
    pub pilot_pre_exec: &'a [String],
    pub sandbox: &'a Path,
    pub gpus: &'a [u32],
    /// How many GPUs the pilot holds.
    pub pilot_gpus: u32,
    /// Words put before the unit's own command: a launcher that starts it on another node
    /// or as MPI ranks (`srun ...`, `mpirun ...`); see [`crate::layout`].
    pub launcher: Option<&'a [String]>,
}

/// Why a unit could not be started. The message names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot create sandbox {path}: {source}")]
    Sandbox { path: PathBuf, source: io::Error },
    #[error("cannot create {path}: {source}")]
    Output { path: PathBuf, source: io::Error },
    #[error("working directory {path} does not exist")]
    NoWorkingDirectory { path: PathBuf },
    #[error("executable not found: {executable}")]
    ExecutableNotFound { executable: String },
    #[error(
        "cannot start {executable}: its interpreter {interpreter} (on its #! line) does not exist"
    )]
    InterpreterNotFound {
        executable: String,
        interpreter: String,
    },
    #[error(
        "cannot start {executable}: the file exists but a program it needs to start (its \
         dynamic loader) does not"
    )]
    LoaderNotFound { executable: String },
    #[error("launcher not found: {launcher} (needed to start {executable})")]
    LauncherNotFound {
        launcher: String,
        executable: String,
    },
    #[error("executable {executable} cannot be run: permission denied")]
    NotExecutable { executable: String },
    #[error("cannot start {executable}: {source}")]
    Spawn {
        executable: String,
        source: io::Error,
    },
    #[error("lost track of the process: {source}")]
    Wait { source: io::Error },
}

impl Launch<'_> {
    /// Creates the sandbox and output files and builds the command (not yet spawned).
    pub fn prepare(&self) -> Result<std::process::Command, LaunchError> {
        let d = self.description;
        std::fs::create_dir_all(self.sandbox).map_err(|source| LaunchError::Sandbox {
            path: self.sandbox.to_owned(),
            source,
        })?;
        let stdout = create_output(&d.stdout_path(self.sandbox), d.stdout.is_some())?;
        let stderr = create_output(&d.stderr_path(self.sandbox), d.stderr.is_some())?;
        // Two names of one file (a link, `..` through a link): one open file for both, so
        // that neither stream overwrites the other's output.
        let stderr = match same_file(&stdout, &stderr) {
            true => stdout.try_clone().map_err(|source| LaunchError::Output {
                path: d.stderr_path(self.sandbox),
                source,
            })?,
            false => stderr,
        };
        // A relative working directory is taken inside the unit's sandbox, whichever
        // process or host the agent runs as: never against the agent's own directory,
        // which differs between stores. (Workload files make theirs absolute first.)
        let cwd = match &d.working_directory {
            Some(dir) => {
                let dir = self.sandbox.join(dir);
                if !dir.is_dir() {
                    return Err(LaunchError::NoWorkingDirectory { path: dir });
                }
                dir
            }
            None => self.sandbox.to_owned(),
        };

        let pre = self.pilot_pre_exec.iter().chain(&d.pre_exec);
        let mut cmd = if d.shell || pre.clone().next().is_some() || !d.post_exec.is_empty() {
            let post = !d.post_exec.is_empty();
            let mut script = String::from("set -e\n");
            for line in pre {
                script.push_str(line);
                script.push('\n');
            }
            // With post_exec lines, they run whatever the executable's exit code, which
            // stays the unit's unless one of them fails.
            if post {
                script.push_str("set +e\n");
            }
            let zero = if d.shell {
                // The executable is a command line; $0 is the unit's name, $1.. its arguments.
                if post {
                    script.push_str("{\n");
                    script.push_str(&d.executable);
                    script.push_str("\n}\n");
                } else {
                    script.push_str(&d.executable);
                }
                d.display_name().to_owned()
            } else {
                if d.executable.contains('/') {
                    check_executable(&d.executable)?;
                }
                script.push_str(if post {
                    "\"$0\" \"$@\"\n"
                } else {
                    "exec \"$0\" \"$@\""
                });
                d.executable.clone()
            };
            if post {
                script.push_str("pstar_status=$?\nset -e\n");
                for line in &d.post_exec {
                    script.push_str(line);
                    script.push('\n');
                }
                script.push_str("exit $pstar_status\n");
            }
            let mut cmd = self.command("/bin/sh");
            cmd.arg("-c").arg(script).arg(zero);
            cmd.args(&d.arguments);
            cmd
        } else {
            let mut cmd = self.command(&d.executable);
            cmd.args(&d.arguments);
            cmd
        };

        // The store's password is the agent's, not the unit's: in any of its forms.
        for name in SECRET_VARIABLES.iter() {
            cmd.env_remove(name);
        }
        cmd.current_dir(&cwd)
            // What a program that reads `$PWD` instead of asking the kernel finds: where it
            // runs, not where `pstar` was started.
            .env("PWD", &cwd)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .envs(self.pilot_environment)
            .envs(&d.environment)
            .env("PSTAR_UNIT_ID", self.unit.to_string())
            .env("PSTAR_PILOT_ID", self.pilot.to_string())
            .env("PSTAR_SANDBOX", self.sandbox)
            // Where its input data units are, `$PSTAR_DATA/<name>/` (see `stage`).
            .env("PSTAR_DATA", self.sandbox.join("data"))
            .env("PSTAR_CORES", d.cores.to_string())
            .env("PSTAR_GPUS", d.gpus.to_string())
            // Its own process group, so that stopping the unit stops everything it started.
            .process_group(0);
        // A unit sees only its own GPUs, none if it asked for none.
        if !self.gpus.is_empty() || self.pilot_gpus > 0 {
            let ids: Vec<String> = self.gpus.iter().map(u32::to_string).collect();
            cmd.env("CUDA_VISIBLE_DEVICES", ids.join(","));
        }
        Ok(cmd)
    }

    /// A command for `program`, behind the launcher if there is one.
    fn command(&self, program: &str) -> std::process::Command {
        match self.launcher.and_then(|l| l.split_first()) {
            Some((launcher, words)) => {
                let mut cmd = std::process::Command::new(launcher);
                cmd.args(words).arg(program);
                cmd
            }
            None => std::process::Command::new(program),
        }
    }

    /// Turns a spawn error into a message about the unit's executable: which file is
    /// missing, the executable itself, the interpreter on its `#!` line, or the launcher.
    pub fn spawn_error(&self, source: io::Error) -> LaunchError {
        let d = self.description;
        let executable = d.executable.clone();
        match source.kind() {
            io::ErrorKind::NotFound => {
                let path = |name: &str| {
                    d.environment
                        .get("PATH")
                        .or_else(|| self.pilot_environment.get("PATH"))
                        .cloned()
                        .or_else(|| std::env::var("PATH").ok())
                        .and_then(|path| resolve(name, &path, self.cwd()))
                };
                if let Some((launcher, _)) = self.launcher.and_then(|l| l.split_first())
                    && path(launcher).is_none()
                {
                    return LaunchError::LauncherNotFound {
                        launcher: launcher.clone(),
                        executable,
                    };
                }
                match path(&executable) {
                    None => LaunchError::ExecutableNotFound { executable },
                    Some(file) => match interpreter(&file) {
                        Some(interpreter) => LaunchError::InterpreterNotFound {
                            executable,
                            interpreter,
                        },
                        None => LaunchError::LoaderNotFound { executable },
                    },
                }
            }
            io::ErrorKind::PermissionDenied => LaunchError::NotExecutable { executable },
            _ => LaunchError::Spawn { executable, source },
        }
    }

    /// The directory the unit starts in.
    fn cwd(&self) -> &Path {
        self.description
            .working_directory
            .as_deref()
            .unwrap_or(self.sandbox)
    }
}

/// Where `name` is found the way exec finds it: a name with a `/` relative to `cwd`, other
/// names in `path`'s directories.
fn resolve(name: &str, path: &str, cwd: &Path) -> Option<PathBuf> {
    if name.contains('/') {
        let file = cwd.join(name);
        return file.is_file().then_some(file);
    }
    path.split(':')
        .map(|dir| cwd.join(dir).join(name))
        .find(|file| file.is_file())
}

/// The interpreter named on the `#!` line of the script `file`.
fn interpreter(file: &Path) -> Option<String> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = File::open(file).and_then(|mut f| f.read(&mut head)).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = line.split(|b| *b == b'\n').next()?;
    let word = String::from_utf8_lossy(line)
        .split_whitespace()
        .next()?
        .to_owned();
    Some(word)
}

/// Creates an output file; `custom` names may sit in directories of their own.
/// Whether two open files are one (a device such as `/dev/null` is not "one file" in
/// that sense: writing to it twice loses nothing).
fn same_file(a: &File, b: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (a.metadata(), b.metadata()) {
        (Ok(a), Ok(b)) => a.is_file() && a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn create_output(path: &Path, custom: bool) -> Result<File, LaunchError> {
    if let Some(parent) = path.parent().filter(|_| custom) {
        std::fs::create_dir_all(parent).map_err(|source| LaunchError::Output {
            path: path.to_owned(),
            source,
        })?;
    }
    // Non-blocking, so that a FIFO nobody reads fails here (ENXIO) instead of holding the
    // executor for ever; then blocking again, as the unit expects.
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|source| LaunchError::Output {
            path: path.to_owned(),
            source,
        })?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL)
        .map(nix::fcntl::OFlag::from_bits_truncate)
        .and_then(|f| {
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFL(f - nix::fcntl::OFlag::O_NONBLOCK),
            )
        });
    flags.map_err(|e| LaunchError::Output {
        path: path.to_owned(),
        source: e.into(),
    })?;
    Ok(file)
}

fn check_executable(path: &str) -> Result<(), LaunchError> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Err(_) => Err(LaunchError::ExecutableNotFound {
            executable: path.to_owned(),
        }),
        Ok(m) if m.is_dir() || m.permissions().mode() & 0o111 == 0 => {
            Err(LaunchError::NotExecutable {
                executable: path.to_owned(),
            })
        }
        // A script whose interpreter is missing would fail in the shell, with less said.
        Ok(_) => match interpreter(Path::new(path)) {
            Some(interpreter) if !Path::new(&interpreter).is_file() => {
                Err(LaunchError::InterpreterNotFound {
                    executable: path.to_owned(),
                    interpreter,
                })
            }
            _ => Ok(()),
        },
    }
}
