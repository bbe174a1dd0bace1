//! Permissions on a real mount shared with other users (`-o allow_other`): the kernel checks
//! the modes and owners gcsfs reports, new entries belong to their creator, and directories
//! keep their mode, owner and sticky bit across mounts. The other users are `nobody` (65534)
//! and 65533, switched to with `setpriv`.
//!
//! Needs `GCSFS_TEST_ENDPOINT`, `/dev/fuse`, root and `setpriv` (util-linux); otherwise it
//! prints `skipped: <reason>`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::mount::{Bucket, Mount, MountOptions, fuse_endpoint, output, sh};

const NOBODY: u32 = 65534;
const OTHER: u32 = 65533;

/// Runs `script` as `uid` (group the same, no supplementary groups); returns (success, stderr).
fn as_user(uid: u32, script: &str) -> (bool, String) {
    let out = output(Command::new("setpriv").args([
        &format!("--reuid={uid}"),
        &format!("--regid={uid}"),
        "--clear-groups",
        "--",
        "sh",
        "-c",
        script,
    ]));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts that `script` fails as `uid` with `reason` (e.g. "Permission denied").
fn refused(uid: u32, script: &str, reason: &str) {
    let (ok, err) = as_user(uid, script);
    assert!(!ok, "uid {uid} could `{script}`");
    assert!(err.contains(reason), "`{script}` as {uid}: {err}");
}

/// Asserts that `script` succeeds as `uid`.
fn allowed(uid: u32, script: &str) {
    let (ok, err) = as_user(uid, script);
    assert!(ok, "uid {uid} could not `{script}`: {err}");
}

fn shared_mount(bucket: &Bucket) -> Mount {
    let m = Mount::new(
        bucket,
        MountOptions {
            extra: vec!["-o".into(), "allow_other".into()],
            ..MountOptions::ttl(60)
        },
    );
    // The test's own directory around the mount point is private to root by default.
    let around = m.path().parent().expect("mount point has a parent");
    std::fs::set_permissions(around, std::fs::Permissions::from_mode(0o755)).unwrap();
    m
}

#[test]
fn users_are_kept_apart_on_a_shared_mount() {
    if fuse_endpoint().is_none() {
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        common::required::cannot_run("setpriv (util-linux) is missing");
        return;
    }
    let endpoint = fuse_endpoint().expect("checked");
    let bucket = Bucket::fresh(&endpoint, "perms");
    let mut m = shared_mount(&bucket);
    let mnt = m.path().display().to_string();

    // Root's private file: nobody may read, write, truncate, chmod, chown or set its times.
    sh(&format!(
        "cd {mnt} && umask 077 && echo secret > secret && mkdir private && chmod 700 private \
         && mkdir shared && chmod 1777 shared && mkdir open && chmod 777 open"
    ));
    refused(NOBODY, &format!("cat {mnt}/secret"), "Permission denied");
    refused(
        NOBODY,
        &format!("echo x > {mnt}/secret"),
        "Permission denied",
    );
    refused(
        NOBODY,
        &format!("truncate -s 0 {mnt}/secret"),
        "Permission denied",
    );
    refused(
        NOBODY,
        &format!("chmod 666 {mnt}/secret"),
        "Operation not permitted",
    );
    refused(
        NOBODY,
        &format!("chown {NOBODY} {mnt}/secret"),
        "Operation not permitted",
    );
    refused(
        NOBODY,
        &format!("touch -c -d 2020-01-01 {mnt}/secret"),
        "Operation not permitted",
    );
    refused(NOBODY, &format!("ls {mnt}/private"), "Permission denied");
    refused(
        NOBODY,
        &format!("touch {mnt}/private/x"),
        "Permission denied",
    );
    refused(
        NOBODY,
        &format!("touch {mnt}/new-at-root"),
        "Permission denied",
    );
    assert_eq!(bucket.get("secret").as_deref(), Some(&b"secret\n"[..]));

    // What nobody makes is nobody's, in the bucket too.
    allowed(
        NOBODY,
        &format!("echo mine > {mnt}/shared/mine && mkdir {mnt}/open/sub"),
    );
    assert_eq!(
        sh(&format!(
            "stat -c '%u %g %a' {mnt}/shared/mine {mnt}/open/sub"
        )),
        format!("{NOBODY} {NOBODY} 644\n{NOBODY} {NOBODY} 755\n")
    );
    let listed = bucket.list("");
    assert_eq!(
        listed["shared/mine"].metadata["goog-reserved-posix-uid"],
        NOBODY.to_string()
    );
    assert_eq!(
        listed["open/sub/"].metadata["goog-reserved-posix-uid"],
        NOBODY.to_string()
    );
    assert_eq!(
        listed["shared/"].metadata["goog-reserved-posix-mode"],
        "1777"
    );
    // The sticky bit keeps another user from removing or renaming it; its owner may.
    refused(
        OTHER,
        &format!("rm -f {mnt}/shared/mine"),
        "Operation not permitted",
    );
    refused(
        OTHER,
        &format!("mv {mnt}/shared/mine {mnt}/shared/theirs"),
        "Operation not permitted",
    );
    allowed(NOBODY, &format!("chmod 600 {mnt}/shared/mine"));
    refused(
        OTHER,
        &format!("cat {mnt}/shared/mine"),
        "Permission denied",
    );

    // A new mount (no caches) enforces the same, from what the bucket keeps.
    m.remount();
    std::fs::set_permissions(
        m.path().parent().expect("parent"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    // A listing first (readdirplus) must not hand the kernel the default 0755 of a directory
    // whose marker says 0700.
    sh(&format!("ls -la {mnt} > /dev/null"));
    refused(NOBODY, &format!("ls {mnt}/private"), "Permission denied");
    refused(NOBODY, &format!("cat {mnt}/secret"), "Permission denied");
    refused(
        OTHER,
        &format!("rm -f {mnt}/shared/mine"),
        "Operation not permitted",
    );
    assert_eq!(
        sh(&format!(
            "stat -c '%u %a' {mnt}/shared/mine {mnt}/shared {mnt}/private"
        )),
        format!("{NOBODY} 600\n0 1777\n0 700\n")
    );
    allowed(
        NOBODY,
        &format!("cat {mnt}/shared/mine && rm {mnt}/shared/mine"),
    );
    assert!(bucket.get("shared/mine").is_none());
}
