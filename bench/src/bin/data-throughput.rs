//! Pilot-Data transfer throughput against the raw tool of the same link, in the same run:
//! `cp` for a `file://` store, OpenSSH's `sftp` for an `sftp://` store (the testbed's sshd
//! on loopback), `curl` (one signed PUT / GET) for an `s3://` store (the testbed's s3s-fs).
//!
//! ```text
//! data-throughput [SIZE_MIB] [ROUNDS] [DIR]
//! ```
//!
//! Each round moves the same SIZE_MIB file (default 256) up and down with each, rounds
//! interleaved; prints the median MB/s of each and the ratio pstar / raw. The file is
//! in the page cache for all of them. Figures, not a test: it never fails on speed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use pstar_data::{Store, StoreUrl};
use pstar_testbed::{S3Server, SshServer};

fn main() {
    let mut args = std::env::args().skip(1);
    let size_mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(256);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let base = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let work = tempfile::Builder::new()
        .prefix("pstar-bench-data.")
        .tempdir_in(&base)
        .expect("work directory");
    let w = work.path();
    let src = w.join("src.bin");
    make_file(&src, size_mib << 20);
    let bytes = (size_mib << 20) as f64;

    let ssh = SshServer::start();
    let s3 = S3Server::start();
    s3.create_bucket("bench");
    // SAFETY: no other thread runs yet.
    unsafe {
        for (k, v) in s3.env() {
            std::env::set_var(k, v);
        }
        std::env::set_var("PSTAR_SSH_CONFIG", ssh.config_file());
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let url = |u: String| -> StoreUrl { u.parse().expect("store url") };
    let file_url = url(format!("file://{}", w.join("file-store").display()));
    let sftp_url = url(format!(
        "sftp://root@127.0.0.1:{}{}",
        ssh.port(),
        w.join("sftp-store").display()
    ));
    let s3_url = url(s3.url("bench", "store"));
    let (file_store, sftp_store, s3_store) = runtime.block_on(async {
        (
            Store::open(&file_url).await.expect("file store"),
            Store::open(&sftp_url).await.expect("sftp store"),
            Store::open(&s3_url).await.expect("s3 store"),
        )
    });
    // Warm up: the connections, the page cache.
    let digest = runtime
        .block_on(sftp_store.put_file(&src, "warm/src.bin"))
        .expect("warm-up put");
    let _ = runtime.block_on(s3_store.put_file(&src, "warm/src.bin"));

    let names = [
        "file put: pstar",
        "file put: cp",
        "file get: pstar",
        "file get: cp",
        "sftp put: pstar",
        "sftp put: sftp",
        "sftp get: pstar",
        "sftp get: sftp",
        "s3 put: pstar",
        "s3 put: curl",
        "s3 get: pstar",
        "s3 get: curl",
    ];
    let mut secs: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let sftp_batch = |batch: &str| {
        let mut child = Command::new("sftp")
            .arg("-F")
            .arg(ssh.config_file())
            .args(["-q", "-P", &ssh.port().to_string(), "-b", "-"])
            .arg(ssh.destination())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("sftp");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(batch.as_bytes())
            .expect("batch");
        assert!(child.wait().expect("sftp").success(), "sftp {batch}");
    };
    let curl = |args: &[&str]| {
        let status = Command::new("curl")
            .args([
                "-sS",
                "--fail",
                "--aws-sigv4",
                "aws:amz:us-east-1:s3",
                "--user",
            ])
            .arg(format!("{}:{}", s3.access_key(), s3.secret_key()))
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
            .args(args)
            .status()
            .expect("curl");
        assert!(status.success(), "curl {args:?}");
    };
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64()
    };
    let p = |path: &Path| path.display().to_string();
    for round in 0..rounds {
        let r = w.join(format!("r{round}"));
        std::fs::create_dir_all(&r).expect("round dir");
        let key = format!("r{round}/src.bin");
        let mut file = digest.clone();
        file.path = key.clone();
        let mut i = 0;
        let mut record = |s: f64| {
            secs[i].push(s);
            i += 1;
        };
        // file://
        record(time(&mut || {
            runtime
                .block_on(file_store.put_file(&src, &key))
                .expect("file put");
        }));
        let cp_dst = w.join("file-store").join(format!("cp-{round}.bin"));
        record(time(&mut || {
            assert!(
                Command::new("cp")
                    .arg(&src)
                    .arg(&cp_dst)
                    .status()
                    .expect("cp")
                    .success()
            )
        }));
        record(time(&mut || {
            runtime
                .block_on(file_store.get_file(&key, &r.join("file-get.bin"), &file))
                .expect("file get");
        }));
        record(time(&mut || {
            assert!(
                Command::new("cp")
                    .arg(&cp_dst)
                    .arg(r.join("cp-get.bin"))
                    .status()
                    .expect("cp")
                    .success()
            )
        }));
        // sftp://
        record(time(&mut || {
            runtime
                .block_on(sftp_store.put_file(&src, &key))
                .expect("sftp put");
        }));
        let remote = w.join("sftp-store").join(format!("sftp-{round}.bin"));
        record(time(&mut || {
            sftp_batch(&format!("put {} {}\n", p(&src), p(&remote)))
        }));
        record(time(&mut || {
            runtime
                .block_on(sftp_store.get_file(&key, &r.join("sftp-get.bin"), &file))
                .expect("sftp get");
        }));
        record(time(&mut || {
            sftp_batch(&format!(
                "get {} {}\n",
                p(&remote),
                p(&r.join("sftp-raw.bin"))
            ))
        }));
        // s3://
        record(time(&mut || {
            runtime
                .block_on(s3_store.put_file(&src, &key))
                .expect("s3 put");
        }));
        let object = format!("{}/bench/raw/{round}.bin", s3.endpoint());
        record(time(&mut || curl(&["-T", &p(&src), &object])));
        record(time(&mut || {
            runtime
                .block_on(s3_store.get_file(&key, &r.join("s3-get.bin"), &file))
                .expect("s3 get");
        }));
        record(time(&mut || {
            curl(&["-o", &p(&r.join("curl-get.bin")), &object])
        }));
        let _ = std::fs::remove_dir_all(&r);
        let _ = std::fs::remove_file(&cp_dst);
        let _ = std::fs::remove_file(&remote);
    }
    let t = Instant::now();
    pstar_data::hash_file(&src).expect("hash");
    let hash_mbs = bytes / 1e6 / t.elapsed().as_secs_f64();
    println!(
        "{size_mib} MiB file, {rounds} rounds, median MB/s (1 MB = 10^6 bytes), in {}",
        base.display()
    );
    let mbs: Vec<f64> = secs.iter().map(|s| bytes / 1e6 / median(s)).collect();
    println!("  sha256 alone (hash_file): {hash_mbs:.0} MB/s");
    if std::env::var_os("PSTAR_BENCH_VERBOSE").is_some() {
        for (name, s) in names.iter().zip(&secs) {
            println!("  {name:<18} seconds per round: {s:.3?}");
        }
    }
    for pair in 0..names.len() / 2 {
        let (a, b) = (2 * pair, 2 * pair + 1);
        println!(
            "  {:<18} {:>8.0} MB/s   {:<18} {:>8.0} MB/s   ratio {:.2}",
            names[a],
            mbs[a],
            names[b],
            mbs[b],
            mbs[a] / mbs[b]
        );
    }
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn make_file(path: &Path, size: usize) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(buf.len());
        out.write_all(&buf[..n]).expect("write");
        left -= n;
    }
    out.flush().expect("flush");
}
