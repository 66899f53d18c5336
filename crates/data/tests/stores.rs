//! The three kinds of pilot store against real servers: a directory, the testbed's sshd
//! (SFTP) and its S3 server (s3s-fs).
//!
//! Each test sets its process's environment (nextest runs every test in a process of its
//! own) before any runtime thread starts.

use std::future::Future;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pstar_data::{DataError, Store, StoreUrl};
use pstar_model::DataFile;
use pstar_testbed::{S3Server, SshServer};

/// A file of `size` pseudo-random bytes (`seed` makes different contents).
fn make_file(path: &Path, size: usize, seed: u64) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("create file"));
    let mut x = seed | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for b in buf.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let n = left.min(buf.len());
        out.write_all(&buf[..n]).expect("write file");
        left -= n;
    }
    out.flush().expect("flush file");
}

fn set_env(vars: &[(&str, String)]) {
    // SAFETY: called before the runtime (and any other thread) starts.
    unsafe {
        for (k, v) in vars {
            std::env::set_var(k, v);
        }
    }
}

fn run<F: Future>(f: F) -> F::Output {
    tokio::runtime::Runtime::new()
        .expect("a tokio runtime")
        .block_on(f)
}

/// The servers and one store URL of each kind, each in a directory of the test's own.
struct Stores {
    scratch: tempfile::TempDir,
    ssh: SshServer,
    s3: S3Server,
}

impl Stores {
    fn start() -> Self {
        let ssh = SshServer::start();
        let s3 = S3Server::start();
        s3.create_bucket("pstar-test");
        let mut env = s3.env();
        env.push(("PSTAR_SSH_CONFIG", ssh.config_file().display().to_string()));
        set_env(&env);
        Stores {
            scratch: tempfile::tempdir().expect("scratch directory"),
            ssh,
            s3,
        }
    }

    fn file_root(&self) -> PathBuf {
        self.scratch.path().join("file-store")
    }

    /// The SFTP store's directory (the sshd runs on this machine).
    fn sftp_root(&self) -> PathBuf {
        self.scratch.path().join("sftp-store")
    }

    fn urls(&self) -> Vec<StoreUrl> {
        [
            format!("file://{}", self.file_root().display()),
            format!(
                "sftp://root@127.0.0.1:{}{}",
                self.ssh.port(),
                self.sftp_root().display()
            ),
            self.s3.url("pstar-test", "pilot/store-1"),
        ]
        .iter()
        .map(|u| u.parse().unwrap_or_else(|e| panic!("{u}: {e}")))
        .collect()
    }

    /// Where a key of the store of `kind` (0 file, 1 sftp, 2 s3) is on disk.
    fn on_disk(&self, kind: usize, key: &str) -> PathBuf {
        match kind {
            0 => self.file_root().join(key),
            1 => self.sftp_root().join(key),
            _ => self
                .s3
                .data_dir()
                .join("pstar-test/pilot/store-1")
                .join(key),
        }
    }
}

fn local_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn round_trip_between_all_three_kinds_of_store() {
    let stores = Stores::start();
    let src = stores.scratch.path().join("src");
    std::fs::create_dir_all(&src).expect("src");
    // Larger than a chunk and not a multiple of one; a small one; an empty one.
    make_file(&src.join("big.bin"), 20 * 1024 * 1024 + 12345, 1);
    make_file(&src.join("small.txt"), 1000, 2);
    make_file(&src.join("empty"), 0, 3);
    let names = ["big.bin", "small.txt", "empty"];
    run(async {
        let mut opened = Vec::new();
        for url in stores.urls() {
            opened.push(
                Store::open(&url)
                    .await
                    .unwrap_or_else(|e| panic!("{url}: {e}")),
            );
        }
        for (i, store) in opened.iter().enumerate() {
            let mut files: Vec<DataFile> = Vec::new();
            for name in names {
                let key = format!("unit-{i}/dir/{name}");
                let file = store
                    .put_file(&src.join(name), &key)
                    .await
                    .unwrap_or_else(|e| panic!("put to {}: {e}", store.url()));
                let digest = pstar_data::hash_file(&src.join(name)).expect("hash");
                assert_eq!((file.size, &file.sha256), (digest.size, &digest.sha256));
                assert_eq!(file.path, key);
                files.push(file);
            }
            let listed = store.list(&format!("unit-{i}")).await.expect("list");
            let mut want: Vec<(String, u64)> =
                files.iter().map(|f| (f.path.clone(), f.size)).collect();
            want.sort();
            assert_eq!(listed, want, "list of {}", store.url());
            let total: u64 = files.iter().map(|f| f.size).sum();
            let usage = store.usage(&format!("unit-{i}")).await.expect("usage");
            assert_eq!(usage, total);

            // Down again, and to every store (this one too).
            for file in &files {
                let back = stores
                    .scratch
                    .path()
                    .join(format!("back-{i}"))
                    .join(&file.path);
                let got = store.get_file(&file.path, &back, file).await.expect("get");
                assert_eq!(got, file.size);
                let name = Path::new(&file.path).file_name().expect("name");
                assert_eq!(
                    std::fs::read(&back).expect("read back"),
                    std::fs::read(src.join(name)).expect("read src"),
                    "{} from {}",
                    file.path,
                    store.url()
                );
                for (j, dest) in opened.iter().enumerate() {
                    let dest_key = format!("copied-from-{i}/{}", file.path);
                    let moved = store
                        .copy_to(&file.path, dest, &dest_key, file)
                        .await
                        .unwrap_or_else(|e| panic!("copy {i} -> {j}: {e}"));
                    assert_eq!(moved, file.size);
                    let again = stores
                        .scratch
                        .path()
                        .join(format!("copy-{i}-{j}"))
                        .join(&file.path);
                    let expect = DataFile {
                        path: dest_key.clone(),
                        ..file.clone()
                    };
                    dest.get_file(&dest_key, &again, &expect)
                        .await
                        .unwrap_or_else(|e| panic!("get copy {i} -> {j}: {e}"));
                }
            }
        }
        // Only what was put and copied is there, and deleting a prefix takes all of it.
        for store in &opened {
            let keys = store.list("").await.expect("list all");
            assert_eq!(keys.len(), 3 + 3 * 3, "{}: {keys:?}", store.url());
            // A prefix that is a key deletes that key.
            store
                .delete_prefix("copied-from-1/unit-1/dir/small.txt")
                .await
                .expect("delete a key");
            assert_eq!(
                store.list("copied-from-1").await.expect("list").len(),
                2,
                "{}",
                store.url()
            );
            store.delete_prefix("copied-from-0").await.expect("delete");
            assert!(store.list("copied-from-0").await.expect("list").is_empty());
            assert_eq!(store.list("").await.expect("list").len(), 3 + 2 * 3 - 1);
            store.delete_prefix("").await.expect("delete all");
            assert!(store.list("").await.expect("list").is_empty());
            assert_eq!(store.usage("").await.expect("usage"), 0);
            // Deleting what is not there is not an error.
            store
                .delete_prefix("nothing/here")
                .await
                .expect("delete nothing");
        }
    });
    // The file store's keys are plain files: a sandbox can link to them.
    let url = &stores.urls()[0];
    run(async {
        let store = Store::open(url).await.expect("open");
        let file = store
            .put_file(&src.join("small.txt"), "u/small.txt")
            .await
            .expect("put");
        let path = store.local_path(&file.path).expect("a local path");
        assert_eq!(path, stores.file_root().join("u/small.txt"));
        assert_eq!(
            std::fs::read(path).expect("read"),
            std::fs::read(src.join("small.txt")).expect("read")
        );
        assert!(store.local_path("../etc/passwd").is_none());
    });
}

#[test]
fn a_file_changed_in_the_store_fails_its_checksum_and_leaves_nothing() {
    let stores = Stores::start();
    let src = stores.scratch.path().join("src.bin");
    make_file(&src, 3 * 1024 * 1024, 7);
    run(async {
        let mut opened = Vec::new();
        for url in stores.urls() {
            opened.push(Store::open(&url).await.expect("open"));
        }
        for (i, store) in opened.iter().enumerate() {
            let key = "unit/data.bin";
            let file = store.put_file(&src, key).await.expect("put");
            // Behind pstar's back: one byte changed, the size kept.
            let on_disk = stores.on_disk(i, key);
            let mut bytes =
                std::fs::read(&on_disk).unwrap_or_else(|e| panic!("{}: {e}", on_disk.display()));
            bytes[1_000_000] ^= 0xff;
            std::fs::write(&on_disk, &bytes).expect("change the file");

            let dir = stores.scratch.path().join(format!("down-{i}"));
            let local = dir.join("data.bin");
            let err = store
                .get_file(key, &local, &file)
                .await
                .expect_err("a changed file must not pass");
            let DataError::Checksum {
                store: ref name,
                key: ref k,
                ref expected,
                ref found,
                ..
            } = err
            else {
                panic!("expected a checksum error from {}, got {err}", store.url());
            };
            // Named by its URL (an S3 store also by the server it went to).
            assert!(name.starts_with(&store.url().to_string()), "{name}");
            assert_eq!(k, key);
            assert_eq!(expected, &file.sha256);
            assert_ne!(found, &file.sha256);
            let text = err.to_string();
            eprintln!("changed behind pstar's back: {text}");
            assert!(text.contains(&file.sha256) && text.contains(key), "{text}");
            assert!(
                local_files(&dir).is_empty(),
                "left behind: {:?}",
                local_files(&dir)
            );

            // Nor does a copy of it arrive anywhere.
            for dest in &opened {
                let err = store
                    .copy_to(key, dest, "copy/data.bin", &file)
                    .await
                    .expect_err("a changed file must not be copied");
                assert!(matches!(err, DataError::Checksum { .. }), "{err}");
                assert!(
                    dest.list("copy").await.expect("list").is_empty(),
                    "{} holds a copy",
                    dest.url()
                );
            }

            // A file that grew is caught too, without fetching all of it.
            bytes.extend_from_slice(&[0u8; 4096]);
            std::fs::write(&on_disk, &bytes).expect("grow the file");
            let err = store
                .get_file(key, &local, &file)
                .await
                .expect_err("a longer file must not pass");
            assert!(matches!(err, DataError::Checksum { .. }), "{err}");
            assert!(local_files(&dir).is_empty());
        }
        // Only the changed files, no partial uploads, are in the stores.
        for store in &opened {
            assert_eq!(
                store.list("").await.expect("list"),
                [("unit/data.bin".to_owned(), 3 * 1024 * 1024 + 4096)]
            );
        }
    });
}

#[test]
fn a_missing_key_is_not_found() {
    let stores = Stores::start();
    run(async {
        let mut opened = Vec::new();
        for url in stores.urls() {
            opened.push(Store::open(&url).await.expect("open"));
        }
        let expect = DataFile {
            path: "no/such.file".into(),
            size: 1,
            sha256: "00".repeat(32),
        };
        for store in &opened {
            let local = stores.scratch.path().join("down/such.file");
            let err = store
                .get_file("no/such.file", &local, &expect)
                .await
                .expect_err("nothing to get");
            assert!(
                matches!(&err, DataError::NotFound { key, .. } if key == "no/such.file"),
                "{}: {err}",
                store.url()
            );
            assert!(err.to_string().contains(&store.url().to_string()), "{err}");
            assert!(!local.exists());
            let err = store
                .copy_to("no/such.file", &opened[0], "x", &expect)
                .await
                .expect_err("nothing to copy");
            assert!(matches!(err, DataError::NotFound { .. }), "{err}");
            assert!(store.list("no").await.expect("list").is_empty());
            // Keys that climb out of the store are refused before anything is asked.
            let err = store
                .get_file("../etc/passwd", &local, &expect)
                .await
                .expect_err("bad key");
            assert!(matches!(err, DataError::Key { .. }), "{err}");
        }
        let local = stores.scratch.path().join("src");
        make_file(&local, 10, 1);
        let err = opened[0]
            .put_file(&stores.scratch.path().join("no-such-local"), "k")
            .await
            .expect_err("no local file");
        assert!(matches!(err, DataError::Local { .. }), "{err}");
    });
}

/// The processes of an sshd started by the testbed: its listener and all below it.
fn sshd_processes(server: &SshServer) -> Vec<u32> {
    let pid_text = std::fs::read_to_string(server.dir().join("sshd.pid")).expect("sshd.pid");
    let listener: u32 = pid_text.trim().parse().expect("a pid");
    let mut all = vec![listener];
    let mut i = 0;
    while i < all.len() {
        let parent = all[i];
        let out = Command::new("ps")
            .args(["-o", "pid=", "--ppid", &parent.to_string()])
            .output()
            .expect("ps");
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Ok(pid) = line.trim().parse() {
                all.push(pid);
            }
        }
        i += 1;
    }
    all
}

fn signal(pids: &[u32], sig: &str) {
    for pid in pids {
        let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
    }
}

/// Waits until `cond` holds; panics after `limit`.
fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Bytes in files whose name holds `part` under `dir` (an upload under way).
fn partial_bytes(dir: &Path, part: &str) -> u64 {
    let mut total = 0;
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if e.file_name().to_string_lossy().contains(part) {
                total += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}

#[test]
fn an_sftp_store_that_goes_away_mid_upload_ends_in_an_error() {
    let stores = Stores::start();
    let src = stores.scratch.path().join("big.bin");
    make_file(&src, 200 * 1024 * 1024, 5);
    let url = stores.urls()[1].clone();
    let sftp_root = stores.sftp_root();
    let Stores { ssh, scratch, s3 } = stores;
    drop(s3);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let store = runtime
        .block_on(Store::open_with_timeout(&url, Duration::from_secs(5)))
        .expect("open");
    let upload = runtime.spawn(async move {
        let result = store.put_file(&src, "unit/big.bin").await;
        (result, store)
    });
    // Once bytes arrive, the host freezes, then goes away.
    wait_for("upload started", Duration::from_secs(60), || {
        partial_bytes(&sftp_root, ".pstar-part.") > 0 || upload.is_finished()
    });
    assert!(
        !upload.is_finished(),
        "the upload ended before it could be cut"
    );
    let processes = sshd_processes(&ssh);
    signal(&processes, "-STOP");
    drop(ssh); // sshd-down.sh: TERM, then KILL, every process of the server
    signal(&processes, "-CONT");
    let (result, store) = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(120), upload).await })
        .expect("the upload must end, not hang")
        .expect("upload task");
    let err = result.expect_err("the store went away");
    let text = err.to_string();
    eprintln!("sftp store gone: {text}");
    assert!(
        matches!(err, DataError::Store { .. } | DataError::Timeout { .. }),
        "{text}"
    );
    assert!(text.contains(&url.to_string()), "{text}");
    assert!(!text.contains(".pstar-part"), "{text}");
    // The key never appeared.
    assert!(!sftp_root.join("unit/big.bin").exists());
    drop(store);
    drop(scratch);
}

#[test]
fn an_s3_store_that_goes_away_mid_download_ends_in_an_error_and_leaves_nothing() {
    let stores = Stores::start();
    let src = stores.scratch.path().join("big.bin");
    make_file(&src, 200 * 1024 * 1024, 6);
    let url = stores.urls()[2].clone();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let store = runtime
        .block_on(Store::open_with_timeout(&url, Duration::from_secs(5)))
        .expect("open");
    let file = runtime
        .block_on(store.put_file(&src, "unit/big.bin"))
        .expect("put");
    let down = stores.scratch.path().join("down");
    let local = down.join("big.bin");
    let target = local.clone();
    let download = runtime.spawn(async move {
        let result = store.get_file("unit/big.bin", &target, &file).await;
        (result, store)
    });
    wait_for("download started", Duration::from_secs(60), || {
        partial_bytes(&down, ".pstar-part.") > 0 || download.is_finished()
    });
    assert!(
        !download.is_finished(),
        "the download ended before it could be cut"
    );
    // Frozen: the client's time limit ends the transfer.
    let mut s3 = stores.s3;
    let pid = s3.pid().expect("s3s-fs runs");
    signal(&[pid], "-STOP");
    let (result, store) = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(120), download).await })
        .expect("the download must end, not hang")
        .expect("download task");
    let err = result.expect_err("the store froze");
    let text = err.to_string();
    eprintln!("s3 store frozen: {text}");
    assert!(
        matches!(err, DataError::Timeout { .. } | DataError::Store { .. }),
        "{text}"
    );
    assert!(text.contains(&url.to_string()), "{text}");
    assert!(local_files(&down).is_empty(), "{:?}", local_files(&down));

    // Gone: a refused connection is told at once.
    s3.kill();
    signal(&[pid], "-CONT");
    let expect = DataFile {
        path: "unit/big.bin".into(),
        size: 1,
        sha256: String::new(),
    };
    let err = runtime
        .block_on(async {
            tokio::time::timeout(
                Duration::from_secs(120),
                store.get_file("unit/big.bin", &local, &expect),
            )
            .await
        })
        .expect("must end, not hang")
        .expect_err("the store is gone");
    eprintln!("s3 store gone: {err}");
    assert!(matches!(err, DataError::Store { .. }), "{err}");
    assert!(err.to_string().contains(&url.to_string()), "{err}");
    assert!(local_files(&down).is_empty());
}

#[test]
fn s3_credentials_come_only_from_a_private_file_or_the_environment() {
    let s3 = S3Server::start();
    s3.create_bucket("pstar-test");
    let dir = tempfile::tempdir().expect("dir");
    let creds = dir.path().join("s3-credentials");
    std::fs::write(
        &creds,
        format!(
            "# for the test server\naccess_key_id = {}\nsecret_access_key = {}\n",
            s3.access_key(),
            s3.secret_key()
        ),
    )
    .expect("write credentials");
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    set_env(&[
        ("PSTAR_S3_ENDPOINT", s3.endpoint()),
        ("AWS_ACCESS_KEY_ID", "wrong".into()),
        ("AWS_SECRET_ACCESS_KEY", "wrong".into()),
        ("PSTAR_S3_CREDENTIALS_FILE", creds.display().to_string()),
    ]);
    let url: StoreUrl = s3.url("pstar-test", "p").parse().expect("url");
    run(async {
        // Readable by others: refused, before any request.
        let err = Store::open(&url).await.expect_err("a 0644 file is refused");
        assert!(matches!(err, DataError::Credentials(_)), "{err}");
        let text = err.to_string();
        assert!(text.contains("chmod 600"), "{text}");
        assert!(!text.contains(s3.secret_key()), "{text}");

        // Private: used (and it wins over the wrong keys in the environment).
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let store = Store::open(&url).await.expect("a 0600 file is taken");
        let src = dir.path().join("x");
        make_file(&src, 100, 1);
        store
            .put_file(&src, "x")
            .await
            .expect("put with the file's keys");

        // A directory is not a credentials file.
        set_env(&[(
            "PSTAR_S3_CREDENTIALS_FILE",
            dir.path().display().to_string(),
        )]);
        let err = Store::open(&url).await.expect_err("a directory is refused");
        assert!(err.to_string().contains("not a regular file"), "{err}");
    });
    // The environment's keys, when wrong, are refused by the server with a clear error.
    unsafe { std::env::remove_var("PSTAR_S3_CREDENTIALS_FILE") };
    run(async {
        let store = Store::open(&url).await.expect("open");
        let err = store.list("").await.expect_err("wrong keys");
        assert!(matches!(err, DataError::Store { .. }), "{err}");
        assert!(!err.to_string().contains("wrong"), "{err}");
        assert!(
            err.to_string().contains("check the S3 credentials"),
            "{err}"
        );
    });
}

#[test]
fn urls_with_credentials_are_refused_without_showing_them() {
    for text in [
        "sftp://alice:hunter2@127.0.0.1/data",
        "s3://AKIA:hunter2@bucket/prefix",
        "s3://bucket/prefix?X-Amz-Security-Token=hunter2",
    ] {
        let err = text.parse::<StoreUrl>().expect_err(text);
        assert!(matches!(err, DataError::Url { .. }), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
    let s3 = S3Server::start();
    set_env(&[
        (
            "PSTAR_S3_ENDPOINT",
            "http://AKIA:hunter2@127.0.0.1:1".into(),
        ),
        ("AWS_ACCESS_KEY_ID", "a".into()),
        ("AWS_SECRET_ACCESS_KEY", "b".into()),
    ]);
    let url: StoreUrl = s3.url("pstar-test", "p").parse().expect("url");
    let err = run(Store::open(&url)).expect_err("an endpoint with credentials");
    assert!(matches!(err, DataError::Credentials(_)), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[test]
fn check_tells_whether_a_store_is_there() {
    let stores = Stores::start();
    let port_nobody_listens_on = pstar_testbed::free_port();
    run(async {
        // There (the directories are made).
        for url in stores.urls() {
            let store = Store::open(&url).await.expect("open");
            store.check().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        assert!(stores.sftp_root().is_dir());
        // Not there: each says so, naming the store.
        let missing: Vec<StoreUrl> = [
            format!("sftp://root@127.0.0.1:{port_nobody_listens_on}/tmp/x"),
            stores.s3.url("no-such-bucket", "p"),
        ]
        .iter()
        .map(|u| u.parse().expect("url"))
        .collect();
        for url in &missing {
            let store = Store::open_with_timeout(url, Duration::from_secs(10))
                .await
                .expect("open");
            let err = store.check().await.expect_err("not there");
            eprintln!("not there: {err}");
            assert!(matches!(err, DataError::Store { .. }), "{err}");
            assert!(err.to_string().contains(&url.to_string()), "{err}");
        }
        // A file store whose directory cannot be made is refused at open.
        let url: StoreUrl = "file:///proc/pstar-store".parse().expect("url");
        let err = Store::open(&url).await.expect_err("no such directory");
        assert!(
            err.to_string().contains("file:///proc/pstar-store"),
            "{err}"
        );
    });
}

/// Every file under `dir`, recursively.
fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn a_cancelled_transfer_leaves_nothing_behind() {
    let stores = Stores::start();
    let src = stores.scratch.path().join("big.bin");
    make_file(&src, 200 * 1024 * 1024, 8);
    let urls = stores.urls();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    for (url, root) in [
        (&urls[0], stores.file_root()),
        (&urls[1], stores.sftp_root()),
    ] {
        let store = std::sync::Arc::new(runtime.block_on(Store::open(url)).expect("open"));
        runtime.block_on(store.check()).expect("check");
        let (s, path) = (store.clone(), src.clone());
        let upload = runtime.spawn(async move { s.put_file(&path, "unit/big.bin").await });
        // Its temporary file is there from the start.
        wait_for("upload started", Duration::from_secs(60), || {
            !all_files(&root).is_empty() || upload.is_finished()
        });
        assert!(
            !upload.is_finished(),
            "{url}: the upload ended before it was cancelled"
        );
        upload.abort();
        wait_for(
            &format!("nothing left in {url}"),
            Duration::from_secs(30),
            || all_files(&root).is_empty(),
        );
        assert!(runtime.block_on(store.list("")).expect("list").is_empty());

        // The same for a download.
        let file = runtime
            .block_on(store.put_file(&src, "unit/big.bin"))
            .expect("put");
        let down = stores.scratch.path().join("down");
        let (s, local) = (store.clone(), down.join("big.bin"));
        let download =
            runtime.spawn(async move { s.get_file("unit/big.bin", &local, &file).await });
        wait_for("download started", Duration::from_secs(60), || {
            !all_files(&down).is_empty() || download.is_finished()
        });
        assert!(
            !download.is_finished(),
            "{url}: the download ended before it was cancelled"
        );
        download.abort();
        wait_for(
            &format!("nothing left from {url}"),
            Duration::from_secs(30),
            || all_files(&down).is_empty(),
        );
        runtime
            .block_on(store.delete_prefix(""))
            .expect("delete all");
    }
}

#[test]
fn a_store_directory_that_cannot_be_made_says_why() {
    let stores = Stores::start();
    // A file where the store's directory would be: nothing can be made below it.
    let blocker = stores.scratch.path().join("blocker");
    std::fs::write(&blocker, "not a directory").expect("blocker");
    let src = stores.scratch.path().join("x.txt");
    std::fs::write(&src, "x").expect("src");
    for url in [
        format!("file://{}/store", blocker.display()),
        format!(
            "sftp://root@127.0.0.1:{}{}/store",
            stores.ssh.port(),
            blocker.display()
        ),
    ] {
        let url: StoreUrl = url.parse().expect("url");
        let err = run(async {
            match Store::open(&url).await {
                Err(e) => e,
                Ok(store) => store
                    .put_file(&src, "d/x.txt")
                    .await
                    .expect_err("cannot be stored"),
            }
        })
        .to_string();
        assert!(
            err.contains("cannot make the directory") || err.contains("Not a directory"),
            "{url}: {err}"
        );
        assert!(!err.contains("no `"), "{url}: not a missing key: {err}");
    }
}

#[test]
fn a_fifo_as_the_credentials_file_is_refused_without_waiting_on_it() {
    let dir = tempfile::tempdir().expect("dir");
    let fifo = dir.path().join("creds");
    let made = std::process::Command::new("mkfifo")
        .args(["-m", "600"])
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    set_env(&[
        ("PSTAR_S3_ENDPOINT", "http://127.0.0.1:9".into()),
        ("PSTAR_S3_CREDENTIALS_FILE", fifo.display().to_string()),
    ]);
    let url: StoreUrl = "s3://bucket/p".parse().expect("url");
    let err = run(async {
        tokio::time::timeout(std::time::Duration::from_secs(10), Store::open(&url))
            .await
            .expect("no wait on the FIFO")
            .map(|_| ())
            .expect_err("refused")
    });
    assert!(err.to_string().contains("not a regular file"), "{err}");
}
