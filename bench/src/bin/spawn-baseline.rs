//! The machine's own limit: spawn and reap `/bin/true` N times with C concurrent children,
//! from C plain threads, nothing else. Usage: `spawn-baseline [N] [C]` (default 10000 2).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let c: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..c {
            s.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let status = Command::new("/bin/true")
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
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
    println!(
        "spawned {n} /bin/true with {c} concurrent children in {secs:.3} s: {:.0} /s{}",
        n as f64 / secs,
        own.unwrap_or_default()
    );
}
