//! Shared bits of pstar's benchmark programs.

/// A field of `/proc/self/status` in bytes (`VmRSS`, `VmHWM`), if the kernel reports it.
pub fn proc_status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU time (user, system) this process has used so far, its children not included.
pub fn self_cpu() -> Option<(std::time::Duration, std::time::Duration)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); here 0-based after the comm field.
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    let hz = 100; // USER_HZ, fixed at 100 on Linux
    let t = |n: u64| std::time::Duration::from_millis(n * 1000 / hz);
    Some((t(ticks(11)?), t(ticks(12)?)))
}

/// Submits `n` null units (`/bin/true`, each with its own name and argument, as a workload
/// file gives them) as one batch; returns how long `submit_batch` took, then waits (up to a
/// minute) until the manager task has taken them all into its pool.
pub async fn submit_nulls(
    cus: &pstar::ComputeUnitService,
    n: usize,
) -> pstar::Result<(Vec<pstar::ComputeUnit>, std::time::Duration)> {
    let start = std::time::Instant::now();
    let units = cus
        .submit_batch((0..n).map(|i| {
            let mut d =
                pstar::ComputeUnitDescription::new("/bin/true").with_arguments([i.to_string()]);
            d.name = Some(format!("null-{i}"));
            d
        }))
        .await?;
    let submit = start.elapsed();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while cus.counts().get(pstar::UnitState::New) < n && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Ok((units, submit))
}
