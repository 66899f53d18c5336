//! Pilot-Data end to end: real processes on local pilots, real files in a directory store,
//! through the Pilot-API (`PilotDataService`, `ComputeDataService`). The SFTP and S3 stores
//! are exercised against a real sshd and S3 server by the CLI tests.

use std::path::PathBuf;
use std::time::Duration;

use pstar::{
    ComputeDataService, ComputeUnitDescription, ComputeUnitService, DataUnitDescription,
    DataUnitState, OutputData, PilotComputeDescription, PilotComputeService, PilotDataDescription,
    PilotDataService, Session, UnitState,
};

const DEADLINE: Duration = Duration::from_secs(60);

struct Fixture {
    dir: tempfile::TempDir,
    session: Session,
    pcs: PilotComputeService,
    pds: PilotDataService,
    cds: ComputeDataService,
}

async fn fixture(pilots: u32, quota: Option<u64>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let session = Session::builder()
        .sandbox_root(dir.path().join("sandbox"))
        .build()
        .await
        .unwrap();
    let pcs = PilotComputeService::new(&session);
    for _ in 0..pilots {
        pcs.create_pilot(PilotComputeDescription {
            cores: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let pds = PilotDataService::new(&session);
    pds.create_pilot_data(PilotDataDescription {
        name: "archive".into(),
        url: format!("file://{}/store", dir.path().display()),
        size: quota,
        affinity: Default::default(),
    })
    .await
    .unwrap();
    let cus = ComputeUnitService::new(&session);
    cus.add_pilot_service(&pcs);
    let cds = ComputeDataService::new(&cus, &pds);
    Fixture {
        dir,
        session,
        pcs,
        pds,
        cds,
    }
}

impl Fixture {
    fn file(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.dir.path().join("in").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        path
    }

    fn store_file(&self, du: &str, path: &str) -> PathBuf {
        self.dir
            .path()
            .join("store")
            .join(self.session.id())
            .join(du)
            .join(path)
    }
}

fn sh(script: &str) -> ComputeUnitDescription {
    ComputeUnitDescription::new("/bin/sh").with_arguments(["-c", script])
}

fn du(name: &str, files: Vec<PathBuf>) -> DataUnitDescription {
    DataUnitDescription {
        name: name.into(),
        files,
        store: None,
    }
}

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(DEADLINE, f).await.expect("timed out")
}

#[tokio::test]
async fn a_shared_input_moves_once_per_pilot_and_outputs_feed_later_units() {
    let f = fixture(1, None).await;
    let reference = f.file("ref.fa", &vec![b'A'; 100_000]);
    f.cds
        .submit_data_unit(du("reference", vec![reference]))
        .await
        .unwrap();
    // Four readers of the reference, each making an output; one unit reads all outputs.
    let mut units = Vec::new();
    for i in 0..4 {
        let mut d = sh(&format!(
            "wc -c < \"$PSTAR_DATA/reference/ref.fa\" > out-{i}.txt"
        ));
        d.input_data = vec!["reference".into()];
        d.output_data = vec![OutputData::new(format!("counted-{i}"), ["out-*.txt"])];
        units.push(d);
    }
    let mut last = sh("cat \"$PSTAR_DATA\"/counted-*/out-*.txt > all.txt");
    last.input_data = (0..4).map(|i| format!("counted-{i}")).collect();
    last.output_data = vec![OutputData::new("all", ["all.txt"])];
    units.push(last);
    let handles = f.cds.submit_compute_units(units).await.unwrap();
    for h in &handles {
        assert_eq!(within(h.wait()).await, UnitState::Done, "{:?}", h.detail());
    }
    // Readers went through StagingInput, writers through StagingOutput.
    let states: Vec<UnitState> = handles[0].history().iter().map(|(s, _)| *s).collect();
    assert!(states.contains(&UnitState::StagingInput), "{states:?}");
    assert!(states.contains(&UnitState::StagingOutput), "{states:?}");

    let all = f
        .cds
        .data_unit("all")
        .await
        .unwrap()
        .expect("the output is recorded");
    let out = f.dir.path().join("results");
    all.export(&out).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join("all.txt")).unwrap(),
        "100000\n".repeat(4)
    );
    let ledger = f.session.data_ledger();
    // The reference moved into the store once and to the pilot once.
    let to_pilot: u64 = ledger
        .by_unit
        .iter()
        .filter(|(u, _)| handles[..4].iter().any(|h| h.id() == **u))
        .map(|(_, (i, _))| *i)
        .sum();
    assert_eq!(to_pilot, 100_000, "{ledger:?}");
    assert_eq!(
        ledger.units["reference"].state,
        Some(DataUnitState::Running)
    );
    assert_eq!(ledger.units["all"].state, Some(DataUnitState::Running));
    f.pcs.cancel().await;
}

#[tokio::test]
async fn an_output_pattern_that_matches_nothing_fails_the_unit_and_cancels_its_readers() {
    let f = fixture(1, None).await;
    let mut maker = sh("true");
    maker.output_data = vec![OutputData::new("nothing", ["*.bam"])];
    let mut reader = sh("true");
    reader.input_data = vec!["nothing".into()];
    let handles = f
        .cds
        .submit_compute_units(vec![maker, reader])
        .await
        .unwrap();
    assert_eq!(within(handles[0].wait()).await, UnitState::Failed);
    let detail = handles[0].detail().unwrap_or_default();
    assert!(
        detail.contains("output data unit nothing: pattern \"*.bam\" matched no file"),
        "{detail}"
    );
    // Its reader depends on it: canceled, naming what failed.
    assert_eq!(within(handles[1].wait()).await, UnitState::Canceled);
    let detail = handles[1].detail().unwrap_or_default();
    assert!(
        detail.starts_with("input data unit nothing failed"),
        "{detail}"
    );
    f.pcs.cancel().await;
}

#[tokio::test]
async fn a_file_changed_in_the_store_fails_the_unit_that_stages_it_naming_the_mismatch() {
    let f = fixture(1, None).await;
    let input = f.file("x.txt", b"original");
    f.cds.submit_data_unit(du("x", vec![input])).await.unwrap();
    std::fs::write(f.store_file("x", "x.txt"), b"tampered").unwrap();
    let mut d = sh("cat \"$PSTAR_DATA/x/x.txt\"");
    d.input_data = vec!["x".into()];
    let h = f.cds.submit_compute_units(vec![d]).await.unwrap().remove(0);
    assert_eq!(within(h.wait()).await, UnitState::Failed);
    let detail = h.detail().unwrap_or_default();
    assert!(detail.contains("does not match its checksum"), "{detail}");
    f.pcs.cancel().await;
}

#[tokio::test]
async fn a_data_unit_beyond_the_quota_is_refused_before_anything_is_stored() {
    let f = fixture(0, Some(1000)).await;
    let small = f.file("small", &[1; 600]);
    let big = f.file("big", &[2; 600]);
    f.cds
        .submit_data_unit(du("small", vec![small]))
        .await
        .unwrap();
    let err = f
        .cds
        .submit_data_unit(du("big", vec![big]))
        .await
        .map(|_| ())
        .expect_err("over the quota");
    assert_eq!(
        err.to_string(),
        "data unit big: needs 600 B but pilot store archive has 400 B left of its 1000 B quota"
    );
    assert!(!f.store_file("big", "big").exists());
    assert_eq!(f.pds.get("archive").unwrap().used(), 600);
    // A unit that reads it fails naming why, rather than wait for it.
    f.pcs
        .create_pilot(PilotComputeDescription {
            cores: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut reader = sh("true");
    reader.input_data = vec!["big".into()];
    let h = f
        .cds
        .submit_compute_units(vec![reader])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(within(h.wait()).await, UnitState::Failed);
    assert_eq!(
        h.detail().as_deref(),
        Some(
            "input data unit big failed: needs 600 B but pilot store archive has 400 B left of \
             its 1000 B quota"
        )
    );
    f.pcs.cancel().await;
}

#[tokio::test]
async fn a_missing_file_or_an_unknown_input_is_refused_and_nothing_is_registered() {
    let f = fixture(0, None).await;
    let missing = f.dir.path().join("in/absent.fq");
    let err = f
        .cds
        .submit_data_unit(du("reads", vec![missing]))
        .await
        .map(|_| ())
        .expect_err("no such file");
    assert!(err.to_string().starts_with("data unit reads: "), "{err}");
    assert!(err.to_string().contains("absent.fq"), "{err}");
    assert!(f.cds.data_unit("reads").await.unwrap().is_none());

    let mut d = sh("true");
    d.input_data = vec!["nowhere".into()];
    let err = f
        .cds
        .submit_compute_units(vec![d])
        .await
        .map(|_| ())
        .expect_err("unknown input");
    assert!(
        err.to_string()
            .contains("no data unit or unit's output_data of this service has that name"),
        "{err}"
    );
}

#[tokio::test]
async fn a_data_unit_replicates_to_another_store_and_exports_from_it() {
    let f = fixture(0, None).await;
    let other = f
        .pds
        .create_pilot_data(PilotDataDescription {
            name: "mirror".into(),
            url: format!("file://{}/mirror", f.dir.path().display()),
            size: None,
            affinity: Default::default(),
        })
        .await
        .unwrap();
    let input = f.file("dir/a.txt", b"alpha");
    let mut unit = f
        .cds
        .submit_data_unit(du("set", vec![input.parent().unwrap().to_owned()]))
        .await
        .unwrap();
    assert_eq!(unit.files()[0].path, "dir/a.txt");
    assert_eq!(unit.replicate(&other).await.unwrap(), 5);
    assert_eq!(unit.replicas().len(), 2);
    // The first store loses it: the export comes from the mirror.
    std::fs::remove_dir_all(f.dir.path().join("store")).unwrap();
    let out = f.dir.path().join("out");
    unit.export(&out).await.unwrap();
    assert_eq!(std::fs::read(out.join("dir/a.txt")).unwrap(), b"alpha");
    // Deleted: gone from the mirror, its quota given back, no store listed.
    unit.delete(&f.pds).await.unwrap();
    assert!(unit.replicas().is_empty());
    assert_eq!(other.used(), 0);
    let mirrored = f
        .dir
        .path()
        .join("mirror")
        .join(f.session.id())
        .join("set/dir/a.txt");
    assert!(!mirrored.exists());
    let stored = f
        .cds
        .data_unit("set")
        .await
        .unwrap()
        .expect("still recorded");
    assert!(stored.replicas().is_empty());
}

#[tokio::test]
async fn a_pilot_takes_a_data_unit_from_a_peer_s_cache_on_its_machine() {
    let f = fixture(2, None).await;
    let pilots = f.pcs.pilots();
    let reference = f.file("ref.fa", &[7; 50_000]);
    f.cds
        .submit_data_unit(du("reference", vec![reference]))
        .await
        .unwrap();
    let reader = |pilot: pstar::PilotId| {
        let mut d = sh("test -s \"$PSTAR_DATA/reference/ref.fa\"").with_pilot(pilot);
        d.input_data = vec!["reference".into()];
        d
    };
    let first = f
        .cds
        .submit_compute_units(vec![reader(pilots[0].id())])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(within(first.wait()).await, UnitState::Done);
    // The store goes away: the second pilot can only have it from the first's cache.
    std::fs::remove_dir_all(f.dir.path().join("store")).unwrap();
    let second = f
        .cds
        .submit_compute_units(vec![reader(pilots[1].id())])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        within(second.wait()).await,
        UnitState::Done,
        "{:?}",
        second.detail()
    );
    let ledger = f.session.data_ledger();
    assert_eq!(
        ledger.moved_from.get("pilot.0000"),
        Some(&50_000),
        "{ledger:?}"
    );
    assert_eq!(f.session.data_moved_for(second.id()), (50_000, 0));
    f.pcs.cancel().await;
}

#[tokio::test]
async fn a_pilot_s_cache_keeps_to_its_limit_evicting_what_was_used_least_recently() {
    let f = fixture(0, None).await;
    let pilot = f
        .pcs
        .create_pilot(PilotComputeDescription {
            cache_size: Some(150_000),
            ..Default::default()
        })
        .await
        .unwrap();
    for name in ["a", "b"] {
        let file = f.file(name, &[1; 100_000]);
        f.cds.submit_data_unit(du(name, vec![file])).await.unwrap();
    }
    let big = f.file("big", &[1; 200_000]);
    f.cds.submit_data_unit(du("big", vec![big])).await.unwrap();
    let read = |name: &str| {
        let mut d = sh("true").with_pilot(pilot.id());
        d.input_data = vec![name.into()];
        d
    };
    let mut moved = Vec::new();
    for name in ["a", "a", "b", "a"] {
        let h = f
            .cds
            .submit_compute_units(vec![read(name)])
            .await
            .unwrap()
            .remove(0);
        assert_eq!(within(h.wait()).await, UnitState::Done, "{:?}", h.detail());
        moved.push(f.session.data_moved_for(h.id()).0);
    }
    // a arrives, is found in the cache, is evicted when b arrives, and comes back.
    assert_eq!(moved, [100_000, 0, 100_000, 100_000]);
    let h = f
        .cds
        .submit_compute_units(vec![read("big")])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(within(h.wait()).await, UnitState::Failed);
    let detail = h.detail().unwrap_or_default();
    assert!(
        detail.contains("is larger than pilot.0000's cache (150000 bytes"),
        "{detail}"
    );
    f.pcs.cancel().await;
}

#[tokio::test]
async fn an_output_that_links_outside_the_sandbox_is_refused_and_one_inside_is_taken() {
    let f = fixture(1, None).await;
    let mut outside = sh("ln -s /etc/hostname out.txt");
    outside.output_data = vec![OutputData::new("leak", ["out.txt"])];
    let mut inside = sh(
        "echo x > real.txt && ln -s real.txt out.txt && mkdir d && echo y > d/y && ln -s .. d/up",
    );
    inside.output_data = vec![OutputData::new("fine", ["out.txt", "d"])];
    let handles = f
        .cds
        .submit_compute_units(vec![outside, inside])
        .await
        .unwrap();
    assert_eq!(within(handles[0].wait()).await, UnitState::Failed);
    let detail = handles[0].detail().unwrap_or_default();
    assert!(
        detail.contains("/etc/hostname, not a file of the unit's sandbox")
            || detail.contains("is a link to /etc/hostname, not to a file of the unit's sandbox"),
        "{detail}"
    );
    assert_eq!(
        within(handles[1].wait()).await,
        UnitState::Done,
        "{:?}",
        handles[1].detail()
    );
    let fine = f.cds.data_unit("fine").await.unwrap().expect("made");
    let paths: Vec<&str> = fine.files().iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        ["d/y", "out.txt"],
        "the link to a directory is not followed"
    );
    f.pcs.cancel().await;
}

#[tokio::test]
async fn a_unit_that_writes_through_its_input_does_not_corrupt_the_next_one_s() {
    let f = fixture(1, None).await;
    let input = f.file("x.txt", b"original\n");
    f.cds.submit_data_unit(du("x", vec![input])).await.unwrap();
    let mut vandal =
        sh("chmod u+w \"$PSTAR_DATA/x/x.txt\" && echo spoiled > \"$PSTAR_DATA/x/x.txt\"");
    vandal.input_data = vec!["x".into()];
    let h = f
        .cds
        .submit_compute_units(vec![vandal])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(within(h.wait()).await, UnitState::Done, "{:?}", h.detail());
    let mut reader = sh("grep -qx original \"$PSTAR_DATA/x/x.txt\"");
    reader.input_data = vec!["x".into()];
    let h = f
        .cds
        .submit_compute_units(vec![reader])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(within(h.wait()).await, UnitState::Done, "{:?}", h.detail());
    assert_eq!(f.session.data_moved_for(h.id()).0, 9, "fetched again");
    f.pcs.cancel().await;
}

#[tokio::test]
async fn outputs_count_against_their_store_s_quota() {
    let f = fixture(1, Some(1000)).await;
    let write = |i: u32| {
        let mut d = sh("head -c 600 /dev/zero > big.out");
        d.output_data = vec![OutputData::new(format!("big-{i}"), ["big.out"])];
        d
    };
    let first = f
        .cds
        .submit_compute_units(vec![write(0)])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        within(first.wait()).await,
        UnitState::Done,
        "{:?}",
        first.detail()
    );
    let second = f
        .cds
        .submit_compute_units(vec![write(1)])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(within(second.wait()).await, UnitState::Failed);
    assert_eq!(
        second.detail().as_deref(),
        Some(
            "output data unit big-1 needs 600 B but pilot store archive has 400 B left of its \
             1000 B quota"
        )
    );
    // Nothing of it was stored, and what was refused is not counted.
    assert!(!f.store_file("big-1", "big.out").exists());
    let mut small = sh("head -c 400 /dev/zero > small.out");
    small.output_data = vec![OutputData::new("small", ["small.out"])];
    let third = f
        .cds
        .submit_compute_units(vec![small])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        within(third.wait()).await,
        UnitState::Done,
        "{:?}",
        third.detail()
    );
    f.pcs.cancel().await;
}

#[tokio::test]
async fn an_empty_output_is_a_data_unit_of_no_files_when_allowed() {
    let f = fixture(1, None).await;
    let mut maker = sh("true");
    maker.output_data = vec![OutputData {
        allow_empty: true,
        ..OutputData::new("empty", ["*.bam"])
    }];
    let mut reader = sh("test -d \"$PSTAR_DATA\" || true");
    reader.input_data = vec!["empty".into()];
    let handles = f
        .cds
        .submit_compute_units(vec![maker, reader])
        .await
        .unwrap();
    for h in &handles {
        assert_eq!(within(h.wait()).await, UnitState::Done, "{:?}", h.detail());
    }
    let empty = f.cds.data_unit("empty").await.unwrap().expect("made");
    assert!(empty.files().is_empty());
    f.pcs.cancel().await;
}

#[tokio::test]
async fn a_unit_reading_more_than_its_pilot_s_cache_holds_leaves_only_what_fits() {
    let f = fixture(0, None).await;
    let pilot = f
        .pcs
        .create_pilot(PilotComputeDescription {
            cache_size: Some(150_000),
            ..Default::default()
        })
        .await
        .unwrap();
    for name in ["a", "b"] {
        let file = f.file(name, &[1; 100_000]);
        f.cds.submit_data_unit(du(name, vec![file])).await.unwrap();
    }
    let mut both = sh("cat \"$PSTAR_DATA/a/a\" \"$PSTAR_DATA/b/b\" | wc -c | grep -qx 200000")
        .with_pilot(pilot.id());
    both.input_data = vec!["a".into(), "b".into()];
    let h = f
        .cds
        .submit_compute_units(vec![both])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(within(h.wait()).await, UnitState::Done, "{:?}", h.detail());
    let cache = f
        .dir
        .path()
        .join("sandbox")
        .join(f.session.id())
        .join("pilot.0000/data");
    let mut held: Vec<String> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    held.sort();
    assert_eq!(held, ["b"], "a was evicted to make room for b");
    f.pcs.cancel().await;
}

#[tokio::test]
async fn an_output_that_is_a_hard_link_to_a_file_outside_is_copied_not_shared() {
    let f = fixture(1, None).await;
    let outside = f.file("outside.txt", b"mine\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut maker = sh(&format!("ln {} h.txt", outside.display()));
    maker.output_data = vec![OutputData::new("h", ["h.txt"])];
    let mut writer =
        sh("chmod u+w \"$PSTAR_DATA/h/h.txt\"; echo changed > \"$PSTAR_DATA/h/h.txt\"");
    writer.input_data = vec!["h".into()];
    let handles = f
        .cds
        .submit_compute_units(vec![maker, writer])
        .await
        .unwrap();
    for h in &handles {
        assert_eq!(within(h.wait()).await, UnitState::Done, "{:?}", h.detail());
    }
    assert_eq!(
        std::fs::read(&outside).unwrap(),
        b"mine\n",
        "the outside file is untouched"
    );
    let mode = std::fs::metadata(&outside).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "and so is its mode");
    f.pcs.cancel().await;
}

#[tokio::test]
async fn a_pattern_through_a_linked_directory_cannot_reach_outside() {
    let f = fixture(1, None).await;
    let outside = f.file("vdir/secret.txt", b"TOPSECRET\n");
    let mut maker = sh(&format!(
        "mkdir a && ln -s {} a/b",
        outside.parent().unwrap().display()
    ));
    maker.output_data = vec![OutputData::new("leak", ["a/b/*"])];
    let h = f
        .cds
        .submit_compute_units(vec![maker])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(within(h.wait()).await, UnitState::Failed);
    let detail = h.detail().unwrap_or_default();
    assert!(
        detail.contains("not a file of the unit's sandbox (through a link)"),
        "{detail}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&outside).unwrap().permissions().mode() & 0o777;
    assert_ne!(mode, 0o444, "the outside file was not made read-only");
    f.pcs.cancel().await;
}

#[tokio::test]
async fn readers_staged_before_a_unit_spoils_their_input_run_on_a_fresh_copy() {
    let f = fixture(0, None).await;
    let pilot = f
        .pcs
        .create_pilot(PilotComputeDescription::default())
        .await
        .unwrap();
    let input = f.file("in.txt", b"original\n");
    f.cds.submit_data_unit(du("in", vec![input])).await.unwrap();
    let on_pilot = |script: &str| {
        let mut d = sh(script).with_pilot(pilot.id());
        d.input_data = vec!["in".into()];
        d
    };
    let units = vec![
        on_pilot("chmod u+w \"$PSTAR_DATA/in/in.txt\"; echo TAMPERED > \"$PSTAR_DATA/in/in.txt\""),
        on_pilot("grep -qx original \"$PSTAR_DATA/in/in.txt\""),
        on_pilot("grep -qx original \"$PSTAR_DATA/in/in.txt\""),
    ];
    let handles = f.cds.submit_compute_units(units).await.unwrap();
    for h in &handles {
        assert_eq!(
            within(h.wait()).await,
            UnitState::Done,
            "{} {:?}",
            h.id(),
            h.detail()
        );
    }
    f.pcs.cancel().await;
}
