//! The machine's own limit: spawn and reap `/bin/true` N times with C concurrent children,
//! from C plain threads, nothing else.
//!
//! Usage: `spawn-baseline [N] [C] [SANDBOX_DIR]` (default 10000 2). With a sandbox
//! directory, each child also gets what a pstar unit gets: a directory of its own as its
//! working directory, stdout and stderr files in it, and its own process group; that is the
//! cost of the sandbox itself, without any of pstar's machinery.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use std::os::unix::process::CommandExt;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let c: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let sandbox: Option<PathBuf> = args.next().map(PathBuf::from);
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..c {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let mut cmd = Command::new("/bin/true");
                    cmd.stdin(Stdio::null());
                    match &sandbox {
                        None => {
                            cmd.stdout(Stdio::null()).stderr(Stdio::null());
                        }
                        Some(root) => {
                            let dir = root.join(format!("unit.{i:06}"));
                            let files = std::fs::create_dir(&dir).and_then(|_| {
                                Ok((
                                    std::fs::File::create(dir.join("stdout"))?,
                                    std::fs::File::create(dir.join("stderr"))?,
                                ))
                            });
                            let (out, err) = match files {
                                Ok(f) => f,
                                Err(e) => {
                                    eprintln!("sandbox {}: {e}", dir.display());
                                    std::process::exit(1);
                                }
                            };
                            cmd.current_dir(&dir)
                                .stdout(out)
                                .stderr(err)
                                .process_group(0)
                                .env("PSTAR_UNIT_ID", i.to_string());
                        }
                    }
                    let status = cmd.status();
                    if !matches!(status, Ok(s) if s.success()) {
                        eprintln!("spawn failed: {status:?}");
                        std::process::exit(1);
                    }
                }
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let own = pstar_bench::self_cpu().map(|(u, s)| {
        format!(
            "; spawner's own CPU {:.0} us/unit",
            (u + s).as_secs_f64() * 1e6 / n as f64
        )
    });
    let what = if sandbox.is_some() {
        " in per-unit sandboxes"
    } else {
        ""
    };
    println!(
        "spawned {n} /bin/true{what} with {c} concurrent children in {secs:.3} s: {:.0} /s{}",
        n as f64 / secs,
        own.unwrap_or_default()
    );
}
