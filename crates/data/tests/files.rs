//! A data unit's file specs against a real directory tree.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use pstar_data::{DataError, expand_files, hash_file};

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// base/data/ref/{chr1.fa,chr2.fa,sub/notes.txt}, base/data/reads/{1.fq,2.fq}, base/top.txt
fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = dir.path();
    write(&b.join("data/ref/chr1.fa"), ">1\nACGT\n");
    write(&b.join("data/ref/chr2.fa"), ">2\nTTGA\n");
    write(&b.join("data/ref/sub/notes.txt"), "notes");
    write(&b.join("data/reads/1.fq"), "@1");
    write(&b.join("data/reads/2.fq"), "@2");
    write(&b.join("top.txt"), "top");
    dir
}

fn paths(files: &[(PathBuf, String)]) -> Vec<&str> {
    files.iter().map(|(_, p)| p.as_str()).collect()
}

fn specs(list: &[&str]) -> Vec<PathBuf> {
    list.iter().map(PathBuf::from).collect()
}

#[test]
fn files_directories_and_globs_take_their_paths() {
    let dir = tree();
    let b = dir.path();
    for (given, want) in [
        (&["top.txt"][..], &["top.txt"][..]),
        (&["data/reads/1.fq"], &["1.fq"]),
        (
            &["data/ref"],
            &["ref/chr1.fa", "ref/chr2.fa", "ref/sub/notes.txt"],
        ),
        (
            &["data/ref/"],
            &["ref/chr1.fa", "ref/chr2.fa", "ref/sub/notes.txt"],
        ),
        (&["data/ref/*.fa"], &["chr1.fa", "chr2.fa"]),
        (
            &["data/reads/?.fq", "top.txt"],
            &["1.fq", "2.fq", "top.txt"],
        ),
        // A glob matching a directory takes it whole.
        (&["data/re*s"], &["reads/1.fq", "reads/2.fq"]),
        (&["data/**/*.txt"], &["notes.txt"]),
        // The same file named twice is one file.
        (
            &["data/ref/chr1.fa", "data/ref/*.fa"],
            &["chr1.fa", "chr2.fa"],
        ),
    ] {
        let files = expand_files(b, &specs(given)).unwrap_or_else(|e| panic!("{given:?}: {e}"));
        assert_eq!(paths(&files), want, "{given:?}");
        for (local, path) in &files {
            assert!(local.is_file(), "{}", local.display());
            assert!(local.ends_with(Path::new(path).file_name().expect("name")));
        }
    }
    // Absolute specs are taken as they are.
    let abs = b.join("data/reads/2.fq");
    let files =
        expand_files(Path::new("/nonexistent"), std::slice::from_ref(&abs)).expect("absolute");
    assert_eq!(files, [(abs, "2.fq".to_owned())]);
}

#[test]
fn a_spec_that_matches_nothing_is_named() {
    let dir = tree();
    for spec in ["missing.txt", "data/ref/*.bam", "data/nothing/**"] {
        let err = expand_files(dir.path(), &specs(&["top.txt", spec])).expect_err(spec);
        assert!(matches!(err, DataError::Files(_)), "{err}");
        assert!(err.to_string().contains(spec), "{spec}: {err}");
    }
    // An empty directory holds no file either.
    std::fs::create_dir_all(dir.path().join("empty")).expect("mkdir");
    let err = expand_files(dir.path(), &specs(&["empty"])).expect_err("empty dir");
    assert!(err.to_string().contains("matches no file"), "{err}");
}

#[test]
fn two_files_with_the_same_path_in_the_data_unit_are_refused() {
    let dir = tree();
    write(&dir.path().join("other/chr1.fa"), ">other\n");
    let err = expand_files(dir.path(), &specs(&["data/ref/*.fa", "other/chr1.fa"]))
        .expect_err("two chr1.fa");
    let text = err.to_string();
    assert!(text.contains("chr1.fa") && text.contains("other"), "{text}");
}

#[test]
fn links_are_followed_only_to_regular_files() {
    let dir = tree();
    let b = dir.path();
    symlink(b.join("top.txt"), b.join("data/ref/link.txt")).expect("symlink");
    let files = expand_files(b, &specs(&["data/ref"])).expect("a link to a file");
    assert!(
        paths(&files).contains(&"ref/link.txt"),
        "{:?}",
        paths(&files)
    );
    let (local, _) = files
        .iter()
        .find(|(_, p)| p == "ref/link.txt")
        .expect("the link");
    assert_eq!(std::fs::read_to_string(local).expect("read"), "top");

    symlink(b.join("data/reads"), b.join("data/ref/reads-link")).expect("symlink");
    let err = expand_files(b, &specs(&["data/ref"])).expect_err("a link to a directory");
    assert!(err.to_string().contains("link to a directory"), "{err}");

    std::fs::remove_file(b.join("data/ref/reads-link")).expect("rm");
    symlink(b.join("nowhere"), b.join("data/ref/dangling")).expect("symlink");
    let err = expand_files(b, &specs(&["data/ref"])).expect_err("a dangling link");
    assert!(err.to_string().contains("dangling"), "{err}");
}

#[test]
fn hash_file_gives_size_and_sha256() {
    let dir = tree();
    let digest = hash_file(&dir.path().join("top.txt")).expect("hash");
    assert_eq!(digest.size, 3);
    // printf top | sha256sum
    assert_eq!(
        digest.sha256,
        "28720365c5e7476a011e4f43ac003ee5f16247a263b9d623aa85ed311d73bf39"
    );
    let empty = dir.path().join("empty.bin");
    std::fs::write(&empty, "").expect("write");
    assert_eq!(
        hash_file(&empty).expect("hash").sha256,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert!(hash_file(&dir.path().join("missing")).is_err());
}
