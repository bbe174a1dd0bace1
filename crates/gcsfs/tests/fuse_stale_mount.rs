//! A crash leaves nothing stuck: a mount point left dead by a killed daemon (every access fails
//! with `ENOTCONN`, "Transport endpoint is not connected") is cleaned up by the next
//! `gcsfs mount` there, in the foreground and in the background, which then mounts and serves.
//!
//! Needs `GCSFS_TEST_ENDPOINT`, `/dev/fuse` and root; otherwise each test prints
//! `skipped: <reason>`. (That a live mount point is refused as busy is checked in
//! `fuse_namespace.rs`.)

mod common;

use std::process::Command;

use common::mount::{
    Bucket, Mount, MountOptions, answers, fuse_endpoint, fuse_mounts_at, is_mounted, output,
};

macro_rules! endpoint {
    () => {
        match fuse_endpoint() {
            Some(e) => e,
            None => return,
        }
    };
}

/// The message `gcsfs` logs when it removed a dead mount.
const CLEANED: &str = "cleaned up a dead FUSE mount";

/// Kills the daemon of `m` and checks that it left its mount point dead.
fn crash(m: &mut Mount) {
    m.crash();
    let err = std::fs::metadata(m.path()).expect_err("a dead mount point cannot be stat'ed");
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
    assert!(is_mounted(m.path()), "the dead mount is still listed");
}

#[test]
fn a_dead_mount_point_is_cleaned_up_and_mounted_again_in_the_foreground() {
    let endpoint = endpoint!();
    let bucket = Bucket::fresh(&endpoint, "fuse-stale");
    bucket.put("hello.txt", b"hello\n");
    let mut m = Mount::new(&bucket, MountOptions::default());
    assert_eq!(std::fs::read(m.join("hello.txt")).unwrap(), b"hello\n");
    crash(&mut m);
    assert!(!m.log().contains(CLEANED), "{}", m.log());

    m.start_again();
    assert_eq!(std::fs::read(m.join("hello.txt")).unwrap(), b"hello\n");
    std::fs::write(m.join("after.txt"), b"after\n").unwrap();
    assert_eq!(bucket.get("after.txt").as_deref(), Some(&b"after\n"[..]));
    assert_eq!(fuse_mounts_at(m.path()), 1, "the dead mount is gone");
    let log = m.log();
    let line = log
        .lines()
        .find(|l| l.contains(CLEANED))
        .unwrap_or_else(|| panic!("no warning about the dead mount:\n{log}"));
    assert!(line.contains("WARN"), "{line}");
    let status = m.stop();
    assert!(status.success(), "daemon exit: {status}; log:\n{}", m.log());
}

#[test]
fn a_dead_mount_point_is_cleaned_up_by_a_background_mount() {
    let endpoint = endpoint!();
    let bucket = Bucket::fresh(&endpoint, "fuse-stale-bg");
    bucket.put("hello.txt", b"hello\n");
    let mut m = Mount::new(&bucket, MountOptions::default());
    crash(&mut m);

    let work = tempfile::tempdir().unwrap();
    let log_file = work.path().join("background.log");
    let mut cmd: Command = m.command();
    cmd.arg("--log-file")
        .arg(&log_file)
        .arg(&bucket.name)
        .arg(m.path());
    let out = output(&mut cmd);
    let log = std::fs::read_to_string(&log_file).unwrap_or_default();
    assert!(
        out.status.success(),
        "gcsfs mount: {}; stderr: {}; log:\n{log}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // `gcsfs mount` returns once the mount is up.
    assert!(answers(m.path()), "log:\n{log}");
    assert_eq!(fuse_mounts_at(m.path()), 1, "the dead mount is gone");
    assert_eq!(std::fs::read(m.join("hello.txt")).unwrap(), b"hello\n");
    assert!(log.contains(CLEANED), "log:\n{log}");
    // Unmounting from outside ends the background daemon.
    nix::mount::umount(m.path()).expect("unmount the background mount");
    assert!(!is_mounted(m.path()));
}
