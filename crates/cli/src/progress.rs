//! Live progress of a run: a bar on a terminal, plain lines otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;

use pstar::{UnitCounts, UnitState};

/// How often plain-line progress is printed when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);

fn describe(c: &UnitCounts) -> String {
    format!(
        "{} done, {} failed, {} canceled, {} running, {} waiting",
        c.get(UnitState::Done),
        c.get(UnitState::Failed),
        c.get(UnitState::Canceled),
        c.get(UnitState::Running),
        c.get(UnitState::New)
            + c.get(UnitState::Waiting)
            + c.get(UnitState::Scheduled)
            + c.get(UnitState::Pending),
    )
}

/// Shows progress until `counts` closes or every one of `total` units has finished (the
/// total may grow: `pstar submit`). `quiet` shows nothing.
pub async fn show(
    mut counts: watch::Receiver<UnitCounts>,
    total: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    quiet: bool,
) {
    if quiet {
        return;
    }
    let total = move || total.load(std::sync::atomic::Ordering::Relaxed);
    let start = Instant::now();
    if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(total() as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} {per_sec} | {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        loop {
            let c = counts.borrow_and_update().clone();
            bar.set_length(total() as u64);
            bar.set_position(c.finished() as u64);
            bar.set_message(describe(&c));
            if c.finished() >= total() || counts.changed().await.is_err() {
                break;
            }
            // Redraw at most 20 times a second, however fast units end.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bar.finish_and_clear();
    } else {
        let mut last = Instant::now();
        loop {
            let c = counts.borrow_and_update().clone();
            if c.finished() >= total() {
                break;
            }
            if last.elapsed() >= LINE_EVERY {
                say!(
                    "[{:>7.1}s] {}/{} finished: {}",
                    start.elapsed().as_secs_f64(),
                    c.finished(),
                    total(),
                    describe(&c)
                );
                last = Instant::now();
            }
            tokio::select! {
                changed = counts.changed() => if changed.is_err() { break },
                _ = tokio::time::sleep(LINE_EVERY) => {}
            }
        }
    }
}
