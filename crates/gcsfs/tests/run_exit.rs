//! `gcsfs run` (not as PID 1): a failed mount never starts the command and says why in one line;
//! the exit status is the command's (128 + signal when it died of one); SIGTERM is forwarded and
//! what the command left dirty is uploaded before the exit.

mod private_emulator;
mod run_support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use private_emulator::PrivateEmulator;
use run_support::{
    KillGroupOnDrop, Running, gcsfs_debug, gcsfs_run, is_mounted, new_bucket, not_uploaded_paths,
    wait_for,
};

const LIMIT: Duration = Duration::from_secs(60);

/// The lines of `stderr` that are not JSON log lines.
fn plain_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_err())
        .collect()
}

/// Checks a failed start: non-zero, one `gcsfs: error:` line containing `want`, no marker.
fn assert_failed_before_start(code: i32, stderr: &str, want: &str, marker: &Path) {
    assert_ne!(code, 0, "stderr: {stderr}");
    let plain = plain_lines(stderr);
    assert_eq!(plain.len(), 1, "want one error line, got {plain:?}");
    assert!(plain[0].starts_with("gcsfs: error: "), "{plain:?}");
    assert!(
        plain[0].contains(want),
        "{:?} does not say {want:?}",
        plain[0]
    );
    assert!(
        !marker.exists(),
        "the command ran although the mount failed"
    );
}

#[test]
fn a_missing_mount_point_does_not_start_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let missing = dir.path().join("no-such-dir");
    let mut c = gcsfs_run(&gcsfs_debug(), "http://127.0.0.1:9", "bucket", &missing);
    c.arg("--")
        .args(["sh", "-c", "touch \"$1\"", "sh"])
        .arg(&marker);
    let (status, _, err) = Running::start(c, &missing).wait(LIMIT);
    assert_failed_before_start(status.code().unwrap(), &err, "does not exist", &marker);
}

#[test]
fn a_missing_bucket_does_not_start_the_command() {
    let endpoint = emulator_or_skip!();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mut c = gcsfs_run(&gcsfs_debug(), &endpoint, "no-such-bucket-here", &mnt);
    c.arg("--")
        .args(["sh", "-c", "touch \"$1\"", "sh"])
        .arg(&marker);
    let (status, _, err) = Running::start(c, &mnt).wait(LIMIT);
    assert_failed_before_start(status.code().unwrap(), &err, "does not exist", &marker);
    assert!(!is_mounted(&mnt));
}

#[test]
fn an_unreachable_endpoint_does_not_start_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    // Port 9 (discard) on loopback: nothing listens there in a test environment.
    let mut c = gcsfs_run(&gcsfs_debug(), "http://127.0.0.1:9", "bucket", &mnt);
    c.args(["--retry-deadline-secs", "1"]);
    c.arg("--")
        .args(["sh", "-c", "touch \"$1\"", "sh"])
        .arg(&marker);
    let (status, _, err) = Running::start(c, &mnt).wait(LIMIT);
    assert_failed_before_start(status.code().unwrap(), &err, "cannot reach", &marker);
}

#[test]
fn exit_status_is_the_commands_and_the_mount_is_gone_after() {
    let endpoint = emulator_or_skip!();
    fuse_or_skip!();
    let bucket = new_bucket(&endpoint, "exit");
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    // Writes a file, leaves it to the drain (it is closed, so already uploaded) and exits 42;
    // MNT_DIR is the mount point.
    let script =
        r#"test "$MNT_DIR" = "$1" || exit 99; echo data > "$MNT_DIR/f.txt" || exit 98; exit 42"#;
    let mut c = gcsfs_run(&gcsfs_debug(), &endpoint, &bucket, &mnt);
    c.args(["--", "sh", "-c", script, "sh"]).arg(&mnt);
    let (code, err) = {
        let (status, _, err) = Running::start(c, &mnt).wait(LIMIT);
        (status.code().unwrap(), err)
    };
    assert_eq!(code, 42, "stderr: {err}");
    assert!(!is_mounted(&mnt));
    let objects = run_support::bucket_objects(&endpoint, &bucket);
    assert_eq!(
        objects.get("f.txt").map(Vec::as_slice),
        Some(&b"data\n"[..])
    );
}

#[test]
fn a_command_killed_by_a_signal_gives_128_plus_the_signal() {
    let endpoint = emulator_or_skip!();
    fuse_or_skip!();
    let bucket = new_bucket(&endpoint, "killed");
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mut c = gcsfs_run(&gcsfs_debug(), &endpoint, &bucket, &mnt);
    c.args(["--", "sh", "-c", "kill -USR1 $$; sleep 5"]);
    let (status, _, err) = Running::start(c, &mnt).wait(LIMIT);
    assert_eq!(status.code(), Some(128 + Signal::SIGUSR1 as i32), "{err}");
}

#[test]
fn a_command_that_cannot_start_is_one_error_line_and_the_mount_is_undone() {
    let endpoint = emulator_or_skip!();
    fuse_or_skip!();
    let bucket = new_bucket(&endpoint, "nocmd");
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mut c = gcsfs_run(&gcsfs_debug(), &endpoint, &bucket, &mnt);
    c.args(["--", "/no/such/command"]);
    let (code, err) = run_to_end(c, &mnt);
    assert_ne!(code, 0);
    let plain = plain_lines(&err);
    assert_eq!(plain.len(), 1, "{plain:?}");
    assert!(
        plain[0].contains("cannot start \"/no/such/command\""),
        "{plain:?}"
    );
    assert!(!is_mounted(&mnt));
}

/// Runs `command` to its end: exit code and stderr.
fn run_to_end(command: Command, mountpoint: &Path) -> (i32, String) {
    let (status, _out, err) = Running::start(command, mountpoint).wait(LIMIT);
    (status.code().expect("exited"), err)
}

#[test]
fn sigterm_is_forwarded_and_an_open_dirty_file_is_uploaded_before_the_exit() {
    let endpoint = emulator_or_skip!();
    fuse_or_skip!();
    let bucket = new_bucket(&endpoint, "term");
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let ready = dir.path().join("ready");
    let got = dir.path().join("got");
    // A background holder in the command's process group opens a file in the mount as its
    // stdout, writes to it and keeps it open past the command's exit (never closing a descriptor
    // of it, so no flush: only the drain can upload it). The command records SIGTERM and exits 0.
    let script = r#"
        trap 'echo TERM > "$2"; exit 0' TERM
        echo $$ > "$1"
        (exec >"$MNT_DIR/open.txt"; printf 'unclosed data\n'; exec sleep 30) &
        while :; do sleep 0.05; done
    "#;
    let mut c = gcsfs_run(&gcsfs_debug(), &endpoint, &bucket, &mnt);
    c.args(["--", "sh", "-c", script, "sh"])
        .arg(&ready)
        .arg(&got);
    let running = Running::start(c, &mnt);
    wait_for("the command to be ready", LIMIT, || {
        std::fs::read_to_string(&ready).is_ok_and(|s| s.ends_with('\n'))
    });
    let _holder = KillGroupOnDrop(
        std::fs::read_to_string(&ready)
            .unwrap()
            .trim()
            .parse()
            .unwrap(),
    );
    // (A shell redirection of its own would close a duplicate of the file, which flushes it: so
    // the holder says nothing, and the size seen through the mount tells that it has written.)
    let open_file = mnt.join("open.txt");
    wait_for("the holder to write", LIMIT, || {
        std::fs::metadata(&open_file).is_ok_and(|m| m.len() == 14)
    });
    let before = run_support::bucket_objects(&endpoint, &bucket);
    assert_ne!(
        before.get("open.txt").map(Vec::as_slice),
        Some(&b"unclosed data\n"[..]),
        "the data was uploaded before the file was closed or drained"
    );
    running.signal(Signal::SIGTERM);
    let (status, _, err) = running.wait(LIMIT);
    assert_eq!(status.code(), Some(0), "{err}");
    assert_eq!(std::fs::read_to_string(&got).unwrap(), "TERM\n");
    let objects = run_support::bucket_objects(&endpoint, &bucket);
    assert_eq!(
        objects.get("open.txt").map(Vec::as_slice),
        Some(&b"unclosed data\n"[..]),
        "{err}"
    );
}

/// SIGTERM when uploads cannot succeed (the store is gone, and each upload would retry for a
/// minute) and a process outside the command's group keeps a dirty file open: `gcsfs run`
/// still exits by `--drain-timeout` (drain, unmount and all: the busy mount is detached), names
/// the file, and exits 1 although the command exited 0.
#[test]
fn sigterm_with_the_store_gone_exits_by_the_drain_timeout() {
    let _shared = emulator_or_skip!();
    fuse_or_skip!();
    const DRAIN_TIMEOUT: u64 = 3;
    // Generous: it bounds a shutdown that waits for the retries, it does not measure speed.
    const MARGIN: Duration = Duration::from_secs(5);
    let mut emulator = PrivateEmulator::start();
    let bucket = new_bucket(&emulator.endpoint, "deadline");
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let ready = dir.path().join("ready");
    // The holder has a session (and process group) of its own, so it outlives the command's
    // group; it writes to its stdout in the mount and never closes it (and lets go of the
    // stderr pipe, which the test reads to its end). The command exits 0 on SIGTERM.
    let script = r#"
        trap 'exit 0' TERM
        setsid sh -c 'exec >"$MNT_DIR/held.txt" 2>/dev/null; printf "unsaved data\n"; exec sleep 1000' &
        echo $! > "$1"
        sleep 1000 & wait
    "#;
    let mut c = gcsfs_run(&gcsfs_debug(), &emulator.endpoint, &bucket, &mnt);
    c.args(["--retry-deadline-secs", "60", "--drain-timeout"])
        .arg(DRAIN_TIMEOUT.to_string())
        .args(["--", "sh", "-c", script, "sh"])
        .arg(&ready);
    let running = Running::start(c, &mnt);
    wait_for("the command to be ready", LIMIT, || {
        std::fs::read_to_string(&ready).is_ok_and(|s| s.ends_with('\n'))
    });
    let _holder = KillGroupOnDrop(
        std::fs::read_to_string(&ready)
            .unwrap()
            .trim()
            .parse()
            .unwrap(),
    );
    let held = mnt.join("held.txt");
    wait_for("the holder to write", LIMIT, || {
        std::fs::metadata(&held).is_ok_and(|m| m.len() == 13)
    });
    // (The shell's `exec >file` closes a duplicate of the new file, which uploads it empty.)
    let before = run_support::bucket_objects(&emulator.endpoint, &bucket);
    assert!(
        before.get("held.txt").is_none_or(Vec::is_empty),
        "held.txt was uploaded before the store went away"
    );
    emulator.kill();

    let start = Instant::now();
    running.signal(Signal::SIGTERM);
    let (status, _, err) = running.wait(LIMIT);
    let took = start.elapsed();
    eprintln!("gcsfs run exited {took:?} after SIGTERM with {status}");
    assert!(
        took < Duration::from_secs(DRAIN_TIMEOUT) + MARGIN,
        "exit took {took:?}; stderr:\n{err}"
    );
    assert_eq!(status.code(), Some(1), "stderr:\n{err}");
    assert!(
        not_uploaded_paths(&err).contains("/held.txt"),
        "held.txt is not named as not uploaded; stderr:\n{err}"
    );
    assert!(!is_mounted(&mnt), "the mount is left behind");
}

/// A copy of the mount in another mount namespace (a process started with `unshare -m` after
/// mounting, as a sandboxed service would be) keeps the FUSE session alive after gcsfs has
/// unmounted its own: `gcsfs run` does not wait for that session past `--drain-timeout`.
#[test]
fn a_mount_kept_alive_in_another_namespace_does_not_hold_up_the_exit() {
    let endpoint = emulator_or_skip!();
    fuse_or_skip!();
    if Command::new("unshare").arg("--version").output().is_err() {
        run_support::required::cannot_run("unshare (util-linux) is not installed");
        return;
    }
    const DRAIN_TIMEOUT: u64 = 2;
    // Generous: it bounds a shutdown that waits for the session, it does not measure speed.
    const MARGIN: Duration = Duration::from_secs(5);
    let bucket = new_bucket(&endpoint, "namespace");
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let ready = dir.path().join("ready");
    let script = r#"
        trap 'exit 0' TERM
        echo $$ > "$1"
        sleep 1000 & wait
    "#;
    let mut c = gcsfs_run(&gcsfs_debug(), &endpoint, &bucket, &mnt);
    c.args(["--drain-timeout", &DRAIN_TIMEOUT.to_string()])
        .args(["--", "sh", "-c", script, "sh"])
        .arg(&ready);
    let running = Running::start(c, &mnt);
    wait_for("the command to be ready", LIMIT, || {
        std::fs::read_to_string(&ready).is_ok_and(|s| s.ends_with('\n'))
    });
    // A private copy of this mount namespace, mount included, held by a process of its own.
    let mut other = KillOnDrop(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sleep", "1000"])
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("start unshare"),
    );
    let info = format!("/proc/{}/mountinfo", other.0.id());
    let want = mnt.to_string_lossy().into_owned();
    wait_for("the other namespace to hold the mount", LIMIT, || {
        assert!(
            other.0.try_wait().unwrap().is_none(),
            "unshare exited early"
        );
        let holds = |info: String| info.lines().any(|l| l.split(' ').nth(4) == Some(&want));
        let ours = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        // Its own namespace: another mount namespace id, and the mount in it.
        std::fs::read_link(format!("/proc/{}/ns/mnt", other.0.id())).ok()
            != std::fs::read_link("/proc/self/ns/mnt").ok()
            && holds(ours)
            && std::fs::read_to_string(&info).is_ok_and(holds)
    });

    let start = Instant::now();
    running.signal(Signal::SIGTERM);
    let (status, _, err) = running.wait(LIMIT);
    let took = start.elapsed();
    drop(other);
    eprintln!("gcsfs run exited {took:?} after SIGTERM with {status}");
    assert!(
        took < Duration::from_secs(DRAIN_TIMEOUT) + MARGIN,
        "exit took {took:?}; stderr:\n{err}"
    );
    assert_eq!(status.code(), Some(0), "stderr:\n{err}");
    assert!(
        err.contains("the FUSE session still runs after unmounting"),
        "stderr:\n{err}"
    );
    assert!(!is_mounted(&mnt), "the mount is left behind");
}

/// Kills (SIGKILL) and reaps a child process when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
