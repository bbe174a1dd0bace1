//! Two mounts of one bucket: what one writes the other sees after the TTL, and two writers of
//! one object never silently overwrite each other.
//!
//! What the emulator cannot check here: fake-gcs-server enforces `ifGenerationMatch` only on
//! multipart uploads, which is the path of a staged file under 16 MiB (an existing object
//! edited in place). A new file written sequentially is streamed through a resumable upload and
//! a staged file of 16 MiB or more is sent as one resumable PUT; the emulator ignores their
//! preconditions, so two mounts racing to create one file, or editing a large one, would both
//! "win" here. Those races are checked on `MemStore` by `tests/fs_ops.rs`
//! (`new_file_racing_a_remote_create_gets_estale`, `streamed_file_losing_a_create_race_is_estale`,
//! `two_writers_one_wins_other_gets_estale_and_data_is_kept`).
//!
//! Needs `GCSFS_TEST_ENDPOINT`, `/dev/fuse` and root; otherwise each test prints `skipped:`.

mod common;

use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use common::mount::{Bucket, Mount, MountOptions, fuse_endpoint, no_spawns};

macro_rules! endpoint {
    () => {
        match fuse_endpoint() {
            Some(e) => e,
            None => return,
        }
    };
}

/// Polls `check` until it holds; panics after a generous bound (this is not a timing test:
/// the TTL is 1 s, the bound is there only so that a bug fails instead of hanging).
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A file closed on mount A is seen on mount B once B's cached entries expire: a new file (B
/// cached its absence), a replaced one, a new directory, a removal.
#[test]
fn changes_on_one_mount_reach_the_other_after_the_ttl() {
    let endpoint = endpoint!();
    let bucket = Bucket::fresh(&endpoint, "fuse-two-ttl");
    let a = Mount::new(&bucket, MountOptions::ttl(1));
    let b = Mount::new(&bucket, MountOptions::ttl(1));

    assert!(!b.join("note.txt").exists());
    std::fs::write(a.join("note.txt"), b"first").unwrap();
    eventually("B reads the new file", || {
        std::fs::read(b.join("note.txt")).is_ok_and(|d| d == b"first")
    });

    std::fs::write(a.join("note.txt"), b"second, longer version").unwrap();
    eventually("B reads the replaced file", || {
        std::fs::read(b.join("note.txt")).is_ok_and(|d| d == b"second, longer version")
    });

    std::fs::create_dir(a.join("dir")).unwrap();
    std::fs::write(a.join("dir/inner"), b"inner").unwrap();
    eventually("B lists the new directory", || {
        std::fs::read_dir(b.path())
            .unwrap()
            .any(|e| e.unwrap().file_name() == "dir")
    });
    assert_eq!(std::fs::read(b.join("dir/inner")).unwrap(), b"inner");

    std::fs::remove_file(a.join("note.txt")).unwrap();
    eventually("B no longer sees the removed file", || {
        !b.join("note.txt").exists()
    });
}

/// Two writers edit one existing object (both staged, both based on its first generation):
/// A closes first and wins; B's close fails with ESTALE, the bucket holds A's data intact, and
/// B's data is kept under B's `<temp-dir>/gcsfs-conflicts/`. B then sees A's version.
#[test]
fn two_writers_one_wins_the_other_gets_estale_and_keeps_its_data() {
    let endpoint = endpoint!();
    let bucket = Bucket::fresh(&endpoint, "fuse-two-race");
    let base = b"base: 0123456789 abcdefghij\n".to_vec();
    bucket.put("d/shared.txt", &base);
    let a = Mount::new(&bucket, MountOptions::ttl(1));
    let b = Mount::new(&bucket, MountOptions::ttl(1));

    let open = |m: &Mount| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(m.join("d/shared.txt"))
            .unwrap()
    };
    // No process may start while the files are open: its inherited copies would be closed at
    // exec, and every close is a flush (an upload).
    let quiet = no_spawns();
    let (fa, fb) = (open(&a), open(&b));
    fa.write_all_at(b"AAAA", 0).unwrap();
    fb.write_all_at(b"BBBBBBBB", 6).unwrap();

    nix::unistd::close(fa).expect("the first close wins");
    let lost = nix::unistd::close(fb).expect_err("the second close must fail");
    drop(quiet);
    assert_eq!(lost as i32, libc::ESTALE, "want ESTALE (116), got {lost}");

    let mut winner = base.clone();
    winner[..4].copy_from_slice(b"AAAA");
    let mut loser = base.clone();
    loser[6..14].copy_from_slice(b"BBBBBBBB");
    assert_eq!(
        bucket.get("d/shared.txt").unwrap(),
        winner,
        "the winner's data"
    );

    let kept: Vec<_> = std::fs::read_dir(b.temp_dir().join("gcsfs-conflicts"))
        .expect("B's conflicts directory")
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1, "one kept file: {kept:?}");
    let name = kept[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.ends_with("-d%shared.txt"), "kept as {name:?}");
    assert_eq!(std::fs::read(&kept[0]).unwrap(), loser, "the loser's data");
    assert!(
        !a.temp_dir().join("gcsfs-conflicts").exists(),
        "the winner kept nothing"
    );

    eventually("B reads the winner's version", || {
        std::fs::read(b.join("d/shared.txt")).is_ok_and(|d| d == winner)
    });
    assert_eq!(bucket.list("").len(), 1, "nothing else was written");
}
