//! Names and directories through a real mount (a file and a directory of one name, names that
//! cannot be paths, symlinks, hard links, mkdir/rmdir, a large directory, finishing an
//! interrupted directory rename), mounts that must fail (missing bucket, missing or busy mount
//! point), and where a background mount's log lines go (`--log-file`, a terminal, a file).
//!
//! Needs `GCSFS_TEST_ENDPOINT`, `/dev/fuse` and root; otherwise each test prints `skipped:`.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::mount::{Bucket, Mount, MountOptions, PATIENCE, fuse_endpoint, is_mounted, output, sh};

macro_rules! endpoint {
    () => {
        match fuse_endpoint() {
            Some(e) => e,
            None => return,
        }
    };
}

/// The names in directory `dir`.
fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Objects `x` and `x/y`: `ls` shows the directory `x` and the file as `x\n`. Keys that cannot
/// be paths are skipped and left untouched.
#[test]
fn directory_wins_and_bad_names_are_skipped() {
    let endpoint = endpoint!();
    let bucket = Bucket::fresh(&endpoint, "fuse-names");
    let long = format!("long/{}", "l".repeat(256));
    let odd = [
        "x",
        "x/y",
        "bad//name",
        "dot/./x",
        "dd/../y",
        long.as_str(),
        "ok/fine",
    ];
    bucket.put_many(
        odd.iter()
            .map(|k| (k.to_string(), format!("data of {k}").into_bytes()))
            .collect(),
    );
    let m = Mount::new(&bucket, MountOptions::default());

    // `ls -b` prints the newline as `\n`.
    let ls = sh(&format!("ls -1b '{}'", m.path().display()));
    assert_eq!(ls, "bad\ndd\ndot\nlong\nok\nx\nx\\n\n");
    assert!(m.join("x").is_dir());
    assert_eq!(std::fs::read(m.join("x\n")).unwrap(), b"data of x");
    assert_eq!(std::fs::read(m.join("x/y")).unwrap(), b"data of x/y");
    assert_eq!(names(&m.join("ok")), set(&["fine"]));
    for dir in ["bad", "dot", "dd", "long"] {
        assert_eq!(names(&m.join(dir)), set(&[]), "{dir} shows nothing");
    }
    let mut all: Vec<String> = odd.iter().map(|s| s.to_string()).collect();
    all.sort();
    assert_eq!(bucket.names(), all, "nothing changed in the bucket");
}

/// symlink/readlink, hard links (EPERM), mkdir/rmdir with EEXIST and ENOTEMPTY.
#[test]
fn links_and_directories() {
    let endpoint = endpoint!();
    let bucket = Bucket::fresh(&endpoint, "fuse-links");
    bucket.put("imp/z", b"implicit");
    let m = Mount::new(&bucket, MountOptions::default());

    std::os::unix::fs::symlink("../some/target", m.join("link")).unwrap();
    assert_eq!(
        std::fs::read_link(m.join("link")).unwrap(),
        Path::new("../some/target")
    );
    assert!(
        std::fs::symlink_metadata(m.join("link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(bucket.get("link").unwrap(), b"../some/target");
    let listed = bucket.list("link");
    assert_eq!(
        listed["link"]
            .metadata
            .get("goog-reserved-file-is-symlink")
            .map(String::as_str),
        Some("true")
    );
    let ls = sh(&format!("ls -l '{}'", m.join("link").display()));
    assert!(ls.trim_end().ends_with("link -> ../some/target"), "{ls}");

    std::fs::write(m.join("file"), b"f").unwrap();
    let err = std::fs::hard_link(m.join("file"), m.join("hard")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    assert!(!m.join("hard").exists());

    std::fs::create_dir(m.join("d")).unwrap();
    assert_eq!(bucket.get("d/").as_deref(), Some(&b""[..]), "marker object");
    let err = std::fs::create_dir(m.join("d")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EEXIST), "{err}");
    std::fs::write(m.join("d/f"), b"x").unwrap();
    let err = std::fs::remove_dir(m.join("d")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTEMPTY), "{err}");
    let err = std::fs::remove_dir(m.join("imp")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTEMPTY), "implicit: {err}");
    std::fs::remove_file(m.join("d/f")).unwrap();
    std::fs::remove_dir(m.join("d")).unwrap();
    assert!(!m.join("d").exists());

    assert_eq!(names(m.path()), set(&["file", "imp", "link"]));
    assert_eq!(bucket.names(), ["file", "imp/z", "link"]);
}

/// 2,000 objects put directly: `ls | wc -l`, `ls -l` (a stat of each) and readdir all see
/// every one, with the right sizes.
#[test]
fn large_directory_is_listed_completely() {
    let endpoint = endpoint!();
    let bucket = Bucket::fresh(&endpoint, "fuse-big-dir");
    const N: usize = 2000;
    let size = |i: usize| i % 97;
    bucket.put_many(
        (0..N)
            .map(|i| (format!("big/f{i:04}"), vec![b'x'; size(i)]))
            .collect(),
    );
    let m = Mount::new(&bucket, MountOptions::default());
    let dir = m.join("big");
    assert_eq!(
        sh(&format!("ls '{}' | wc -l", dir.display())).trim(),
        N.to_string()
    );
    let want: BTreeSet<String> = (0..N).map(|i| format!("f{i:04}")).collect();
    assert_eq!(names(&dir), want);
    let long = sh(&format!("ls -ln '{}' | grep '^-'", dir.display()));
    let mut seen = 0;
    for line in long.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let name = fields[fields.len() - 1];
        let i: usize = name[1..].parse().unwrap();
        assert_eq!(fields[4], size(i).to_string(), "size in {line:?}");
        seen += 1;
    }
    assert_eq!(seen, N);
}

/// `--only-dir sub` shows only what is under `sub/`, and every change lands there.
#[test]
fn only_dir_mounts_a_subtree() {
    let endpoint = endpoint!();
    let bucket = Bucket::fresh(&endpoint, "fuse-only-dir");
    for key in ["outside", "subway", "sub/in", "sub/deeper/x"] {
        bucket.put(key, key.as_bytes());
    }
    let options = MountOptions {
        only_dir: Some("sub".into()),
        ..MountOptions::default()
    };
    let m = Mount::new(&bucket, options);
    assert_eq!(names(m.path()), set(&["deeper", "in"]));
    assert_eq!(std::fs::read(m.join("deeper/x")).unwrap(), b"sub/deeper/x");
    std::fs::write(m.join("new"), b"new").unwrap();
    std::fs::create_dir(m.join("d")).unwrap();
    std::fs::remove_file(m.join("in")).unwrap();
    sh(&format!("cd '{}' && mv deeper moved", m.path().display()));
    assert_eq!(names(m.path()), set(&["d", "moved", "new"]));
    assert_eq!(
        bucket.names(),
        ["outside", "sub/d/", "sub/moved/x", "sub/new", "subway"]
    );
}

/// A directory rename interrupted part-way (the bucket as gcsfs's journal leaves it: marker
/// `B/` naming `A/`, some copies made) is finished by `mv -T A B` on the mount; plain `mv A B`
/// would move A into B. The journal key is cleared (the emulator stores `""` for a removed key).
#[test]
fn interrupted_dir_rename_is_finished_by_mv_t() {
    let endpoint = endpoint!();
    let bucket = Bucket::fresh(&endpoint, "fuse-resume");
    let files = [("A/f1", "one"), ("A/f2", "two"), ("A/sub/x", "x")];
    let mut objects: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    objects.push(("A/".into(), Vec::new()));
    // What the interrupted rename had done: the journal marker and one copy.
    objects.push(("B/".into(), Vec::new()));
    objects.push(("B/f1".into(), b"one".to_vec()));
    bucket.put_many(objects);
    bucket.set_metadata("B/", "gcsfs-rename-from", "A/");
    let m = Mount::new(&bucket, MountOptions::ttl(0));
    assert_eq!(names(&m.join("B")), set(&["f1"]), "the partial copy lists");
    sh(&format!("cd '{}' && mv -T A B", m.path().display()));
    assert_eq!(
        bucket.names(),
        ["B/", "B/f1", "B/f2", "B/sub/x"],
        "every object at B once, nothing at A"
    );
    for (k, v) in files {
        let k = k.replacen("A/", "B/", 1);
        assert_eq!(bucket.get(&k).as_deref(), Some(v.as_bytes()), "{k}");
    }
    let journal = bucket.list("B/")["B/"]
        .metadata
        .get("gcsfs-rename-from")
        .cloned();
    assert!(journal.unwrap_or_default().is_empty(), "journal cleared");
    assert!(!m.join("A").exists());
    assert_eq!(std::fs::read(m.join("B/sub/x")).unwrap(), b"x");
    // The cleared key (`""` on the emulator) does not make B look like a rename of anything.
    std::fs::create_dir(m.join("A")).unwrap();
    std::fs::write(m.join("A/new"), b"new").unwrap();
    let out = output(
        Command::new("mv")
            .arg("-T")
            .arg(m.join("A"))
            .arg(m.join("B")),
    );
    assert!(!out.status.success(), "mv -T onto a non-empty B fails");
    assert_eq!(bucket.get("A/new").as_deref(), Some(&b"new"[..]));
}

/// Runs `gcsfs mount` (in the background mode, or `--foreground`), checks that it fails with
/// one `gcsfs: error: ` line on stderr and nothing on stdout, and returns that line.
fn mount_fails(endpoint: &str, bucket: &str, dir: &Path, fg: bool) -> String {
    mount_fails_with(endpoint, bucket, dir, fg, &[])
}

/// [`mount_fails`] with `extra` flags.
fn mount_fails_with(endpoint: &str, bucket: &str, dir: &Path, fg: bool, extra: &[&str]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gcsfs"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("GCSFS_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(["mount", "--custom-endpoint", endpoint, "--anonymous-access"]);
    if fg {
        cmd.arg("--foreground");
    }
    cmd.args(extra).arg(bucket).arg(dir);
    let out = output(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success() && out.status.code().is_some(),
        "gcsfs mount {bucket} {} (foreground: {fg}) exited with {}; stderr:\n{stderr}",
        dir.display(),
        out.status
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "one line on stderr, got:\n{stderr}"
    );
    assert!(stderr.starts_with("gcsfs: error: "), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout");
    stderr
}

/// Missing bucket, missing mount point, busy mount point, metrics port taken: non-zero exit and one error line,
/// in both the background and the foreground mode; nothing is left mounted.
#[test]
fn mount_failures_exit_non_zero_with_one_line() {
    let endpoint = endpoint!();
    let bucket = Bucket::fresh(&endpoint, "fuse-fail");
    let work = tempfile::tempdir().unwrap();
    let empty = work.path().join("mnt");
    std::fs::create_dir(&empty).unwrap();
    let live = Mount::new(&bucket, MountOptions::default());
    for fg in [false, true] {
        let err = mount_fails(&endpoint, "no-such-bucket-here", &empty, fg);
        assert!(err.contains("no-such-bucket-here"), "{err}");
        assert!(err.contains("does not exist"), "{err}");
        assert!(!is_mounted(&empty));

        let missing = work.path().join("missing");
        let err = mount_fails(&endpoint, &bucket.name, &missing, fg);
        assert!(err.contains("does not exist"), "{err}");
        assert!(err.contains(&missing.display().to_string()), "{err}");

        let err = mount_fails(&endpoint, &bucket.name, live.path(), fg);
        assert!(err.contains("busy"), "{err}");

        // A metrics port that is taken: nothing is mounted.
        let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = taken.local_addr().unwrap().port().to_string();
        let extra = ["--prometheus-port", port.as_str()];
        let err = mount_fails_with(&endpoint, &bucket.name, &empty, fg, &extra);
        assert!(
            err.contains(&format!("--prometheus-port {port}: cannot listen")),
            "{err}"
        );
        assert!(!is_mounted(&empty));
    }
    // The live mount is unharmed.
    std::fs::write(live.join("still"), b"here").unwrap();
    assert_eq!(bucket.get("still").as_deref(), Some(&b"here"[..]));
}

/// A `gcsfs mount` in the background (no `--foreground`) of `bucket` at `<work>/mnt`, staging in
/// `<work>/tmp`, with `global` flags before `mount`. Unmounts it (lazily, if still there) on drop.
struct Background {
    mountpoint: PathBuf,
}

impl Background {
    /// The command line, without how its stdio is set up.
    fn command(endpoint: &str, bucket: &Bucket, work: &Path, global: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gcsfs"));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("GCSFS_") {
                cmd.env_remove(k);
            }
        }
        let mountpoint = work.join("mnt");
        std::fs::create_dir_all(&mountpoint).unwrap();
        std::fs::create_dir_all(work.join("tmp")).unwrap();
        cmd.args(global)
            .args(["mount", "--custom-endpoint", endpoint, "--anonymous-access"])
            .arg("--temp-dir")
            .arg(work.join("tmp"))
            .arg(&bucket.name)
            .arg(&mountpoint)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `cmd` (a `gcsfs mount` in the background, or something running one) to completion
    /// and checks that the mount is up.
    fn start(mut cmd: Command, mountpoint: PathBuf) -> (Self, std::process::Output) {
        let guard = Self { mountpoint };
        let out = output(&mut cmd);
        assert!(
            out.status.success(),
            "{cmd:?}: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            is_mounted(&guard.mountpoint),
            "mounted when the command returns"
        );
        (guard, out)
    }

    /// The daemon serving this mount: the process whose command line has `--foreground` and
    /// the mount point.
    fn daemon_pid(&self) -> u32 {
        let want = self.mountpoint.to_string_lossy().into_owned();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if args.iter().any(|a| a == "--foreground") && args.contains(&want) {
                return pid;
            }
        }
        panic!("no daemon process serves {want}");
    }

    /// Unmounts from outside (`fusermount3 -u`), which ends the daemon, and waits (bounded)
    /// until `pid` has exited.
    fn unmount_and_wait(&self, pid: u32) {
        let out = output(Command::new("fusermount3").arg("-u").arg(&self.mountpoint));
        assert!(out.status.success(), "fusermount3 -u: {out:?}");
        let deadline = Instant::now() + PATIENCE;
        while Path::new(&format!("/proc/{pid}")).exists() {
            assert!(
                Instant::now() < deadline,
                "daemon {pid} still runs after the unmount"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if is_mounted(&self.mountpoint) {
            let _ = nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// The target of the daemon's file descriptor `fd`.
fn fd_target(pid: u32, fd: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap()
}

/// `gcsfs --log-file PATH mount` in the background: it returns once mounted, with nothing on
/// stdout or stderr, and the daemon appends its log lines to PATH, as JSON (`auto` in a file),
/// to the end (here the lines of the unmount from outside, long after the command returned).
#[test]
fn background_mount_appends_its_log_to_the_log_file() {
    let endpoint = endpoint!();
    let bucket = Bucket::fresh(&endpoint, "fuse-logfile");
    let work = tempfile::tempdir().unwrap();
    let log = work.path().join("gcsfs.log");
    std::fs::write(&log, "an earlier line\n").unwrap();
    let log_arg = log.to_str().unwrap();
    let mut cmd = Background::command(&endpoint, &bucket, work.path(), &["--log-file", log_arg]);
    let (out, err) = (work.path().join("stdout"), work.path().join("stderr"));
    cmd.stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    let (m, _) = Background::start(cmd, work.path().join("mnt"));
    std::fs::write(m.mountpoint.join("f"), b"data").unwrap();
    assert_eq!(bucket.get("f").as_deref(), Some(&b"data"[..]));
    let pid = m.daemon_pid();
    m.unmount_and_wait(pid);

    for path in [&out, &err] {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.is_empty(), "{}: {text}", path.display());
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let rest = text.strip_prefix("an earlier line\n").expect("appended to");
    let messages: Vec<String> = rest
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            v["message"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    for want in [
        "mounted",
        "unmounted from outside; uploading dirty files",
        "unmounted",
    ] {
        assert!(
            messages.iter().any(|m| m == want),
            "no {want:?} in {messages:?}"
        );
    }
}

/// Without `--log-file`, a background mount started with stdout and stderr on a terminal (here
/// the pty `script` makes) stops using it once mounted: they are pointed at `/dev/null`, after
/// a line saying so.
#[test]
fn background_mount_lets_go_of_a_terminal_once_mounted() {
    let endpoint = endpoint!();
    let bucket = Bucket::fresh(&endpoint, "fuse-tty");
    let work = tempfile::tempdir().unwrap();
    let inner = Background::command(&endpoint, &bucket, work.path(), &["--log-format", "text"]);
    let line = std::iter::once(inner.get_program())
        .chain(inner.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ");
    let typescript = work.path().join("typescript");
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c", &line])
        .arg(&typescript)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("GCSFS_") {
            cmd.env_remove(k);
        }
    }
    // `script` returns once nothing holds the terminal any more.
    let (m, _) = Background::start(cmd, work.path().join("mnt"));
    let pid = m.daemon_pid();
    for fd in [1, 2] {
        assert_eq!(fd_target(pid, fd), Path::new("/dev/null"), "fd {fd}");
    }
    m.unmount_and_wait(pid);
    let seen = std::fs::read_to_string(&typescript).unwrap_or_default();
    assert!(seen.contains("further log lines are discarded"), "{seen}");
}

/// Without `--log-file`, a background mount whose stderr is a pipe lets go of it once mounted,
/// so that the reader (`gcsfs mount … 2>&1 | tee`, a program capturing the output) sees it end.
#[test]
fn background_mount_lets_go_of_a_pipe_once_mounted() {
    let endpoint = endpoint!();
    let bucket = Bucket::fresh(&endpoint, "fuse-pipe");
    let work = tempfile::tempdir().unwrap();
    let mut cmd = Background::command(&endpoint, &bucket, work.path(), &["--log-format", "text"]);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let guard = Background {
        mountpoint: work.path().join("mnt"),
    };
    let mut child = common::mount::spawn(&mut cmd);
    let mut pipe = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
        let _ = tx.send(text);
    });
    let status = common::mount::wait_bounded(&mut child, PATIENCE).expect("gcsfs mount returns");
    assert!(status.success(), "{status}");
    assert!(is_mounted(&guard.mountpoint));
    let text = rx
        .recv_timeout(PATIENCE)
        .expect("the pipe ends: nothing holds it any more");
    assert!(text.contains("further log lines are discarded"), "{text}");
    let pid = guard.daemon_pid();
    guard.unmount_and_wait(pid);
}

/// Without `--log-file`, a background mount whose stderr is a regular file keeps writing its
/// log lines there after the command returned.
#[test]
fn background_mount_keeps_a_stderr_that_is_a_file() {
    let endpoint = endpoint!();
    let bucket = Bucket::fresh(&endpoint, "fuse-stderr");
    let work = tempfile::tempdir().unwrap();
    let err = work.path().join("stderr");
    let file = std::fs::File::create(&err).unwrap();
    let mut cmd = Background::command(&endpoint, &bucket, work.path(), &["--log-format", "text"]);
    cmd.stdout(Stdio::null()).stderr(file);
    let (m, _) = Background::start(cmd, work.path().join("mnt"));
    let pid = m.daemon_pid();
    assert_eq!(fd_target(pid, 2), err);
    m.unmount_and_wait(pid);
    let text = std::fs::read_to_string(&err).unwrap();
    assert!(text.contains("unmounted from outside"), "{text}");
    assert!(!text.contains("discarded"), "{text}");
}
