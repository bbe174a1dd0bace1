//! POSIX details on a real mount, checked with the tools a program would use: ctime follows
//! every change, mtime keeps its nanoseconds (across mounts too), an unlinked open file has no
//! links, a directory counts its subdirectories, a directory's times follow its entries,
//! `mknod` of a regular file works and of a FIFO is refused, `fallocate` extends, and none of it
//! fills the log with warnings.
//!
//! Needs `GCSFS_TEST_ENDPOINT`, `/dev/fuse` and root; otherwise it prints `skipped: <reason>`.

mod common;

use std::process::Command;

use common::mount::{Bucket, Mount, MountOptions, fuse_endpoint, output, sh};

/// Runs `script` in `sh`; returns (success, stderr).
fn try_sh(script: &str) -> (bool, String) {
    let out = output(Command::new("sh").args(["-c", script]));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `stat -c FORMAT path`, trimmed.
fn stat(format: &str, path: &str) -> String {
    sh(&format!("stat -c '{format}' '{path}'"))
        .trim()
        .to_owned()
}

#[test]
fn posix_details_hold_on_a_real_mount() {
    let Some(endpoint) = fuse_endpoint() else {
        return;
    };
    let bucket = Bucket::fresh(&endpoint, "posix");
    let mut m = Mount::new(&bucket, MountOptions::ttl(60));
    let mnt = m.path().display().to_string();
    let f = format!("{mnt}/f");
    sh(&format!("echo data > {f}"));

    // ctime moves with every change: chmod, chown, utimens, write, truncate.
    for change in [
        format!("chmod 600 {f}"),
        format!("chown 1:1 {f}"),
        format!("touch -m -d '2021-02-03 04:05:06' {f}"),
        format!("echo more >> {f}"),
        format!("truncate -s 2 {f}"),
    ] {
        let before = stat("%Z.%z", &f);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        sh(&change);
        let after = stat("%Z.%z", &f);
        assert_ne!(before, after, "ctime did not change with `{change}`");
    }

    // mtime keeps its nanoseconds, here and after a remount.
    sh(&format!(
        "touch -m -d '2020-01-02 03:04:05.123456789 UTC' {f}"
    ));
    assert_eq!(stat("%.9Y", &f), "1577934245.123456789");
    let g = format!("{mnt}/g");
    sh(&format!("echo x > {g}"));
    let fresh = stat("%.9Y", &g);
    m.remount();
    assert_eq!(stat("%.9Y", &f), "1577934245.123456789");
    assert_eq!(stat("%.9Y", &g), fresh, "a new file's mtime survives whole");

    // An open file that was unlinked has no links left.
    sh(&format!("echo keep > {mnt}/gone"));
    let links = sh(&format!(
        "exec 3< {mnt}/gone; rm {mnt}/gone; stat -L -c %h /proc/self/fd/3"
    ));
    assert_eq!(links.trim(), "0");

    // A directory: 2 links plus one per subdirectory, once known; its times follow its entries.
    sh(&format!(
        "mkdir -p {mnt}/d/x {mnt}/d/y && touch {mnt}/d/file"
    ));
    assert_eq!(stat("%h", &format!("{mnt}/d")), "4");
    let before = stat("%.9Y %.9Z", &format!("{mnt}/d"));
    std::thread::sleep(std::time::Duration::from_millis(20));
    sh(&format!("touch {mnt}/d/new"));
    let after = stat("%.9Y %.9Z", &format!("{mnt}/d"));
    assert_ne!(
        before, after,
        "creating an entry changes the directory's times"
    );
    sh(&format!("rmdir {mnt}/d/y"));
    assert_eq!(stat("%h", &format!("{mnt}/d")), "3");

    // mknod: a regular file is made; a FIFO cannot be an object.
    sh(&format!(
        "python3 -c \"import os; os.mknod('{mnt}/plain')\" && test -f {mnt}/plain"
    ));
    let (ok, err) = try_sh(&format!("mkfifo {mnt}/fifo"));
    assert!(!ok, "mkfifo succeeded");
    assert!(err.contains("Operation not permitted"), "{err}");

    let (ok, err) = try_sh(&format!(
        "python3 -c \"import socket; s = socket.socket(socket.AF_UNIX); s.bind('{mnt}/sock')\""
    ));
    assert!(!ok, "a socket was bound");
    assert!(err.contains("Operation not permitted"), "{err}");

    // A size the staging file cannot have: the caller's error (EFBIG), not one of gcsfs.
    let (ok, err) = try_sh(&format!("truncate -s 17T {mnt}/huge"));
    assert!(!ok, "a 17 TiB staging file was made");
    assert!(err.contains("too large"), "{err}");

    // fallocate: extending works (zeros), other modes are not supported.
    sh(&format!(
        "echo ab > {mnt}/alloc && fallocate -l 1048576 {mnt}/alloc"
    ));
    assert_eq!(stat("%s", &format!("{mnt}/alloc")), "1048576");
    let (ok, err) = try_sh(&format!("fallocate -p -o 0 -l 2 {mnt}/alloc"));
    assert!(!ok, "punching a hole succeeded");
    assert!(
        err.contains("not supported") || err.contains("unsupported"),
        "{err}"
    );

    m.remount();
    assert_eq!(bucket.get("alloc").map(|d| d.len()), Some(1_048_576));
    assert_eq!(&bucket.get("alloc").unwrap()[..3], b"ab\n");
    assert!(bucket.get("plain").is_some());
    let log = m.log();
    assert!(!log.contains("Not Implemented"), "{log}");
    assert!(!log.contains("ERROR"), "{log}");
}
