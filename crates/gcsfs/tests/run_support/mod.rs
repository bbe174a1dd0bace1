//! Helpers shared by the `gcsfs run` tests (`tests/run_*.rs`): the emulator, the binaries, a
//! guard that never leaves a process or a mount behind, and the JSON log lines.
#![allow(dead_code)] // each test file uses a different part

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};

#[path = "../common/required.rs"]
pub mod required;
use nix::unistd::Pid;

/// The emulator's endpoint (`GCSFS_TEST_ENDPOINT`), if set.
pub fn endpoint() -> Option<String> {
    std::env::var("GCSFS_TEST_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .map(|e| e.trim_end_matches('/').to_owned())
}

/// The emulator endpoint, or return from the test after saying why.
#[macro_export]
macro_rules! emulator_or_skip {
    () => {
        match run_support::endpoint() {
            Some(e) => e,
            None => {
                run_support::required::cannot_run(
                    "GCSFS_TEST_ENDPOINT is unset (scripts/test.sh sets it)",
                );
                return;
            }
        }
    };
}

/// Return from the test (saying why) unless it runs as root with `/dev/fuse`: mounting needs both.
#[macro_export]
macro_rules! fuse_or_skip {
    () => {
        if let Some(reason) = run_support::no_fuse_reason() {
            run_support::required::cannot_run(&reason);
            return;
        }
    };
}

/// Why FUSE mounts cannot be made here, if they cannot.
pub fn no_fuse_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root to mount FUSE".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing".into());
    }
    None
}

/// The debug `gcsfs` binary cargo built for these tests.
pub fn gcsfs_debug() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gcsfs"))
}

/// The profile directory this test binary was built into (`target/debug`): the test executable
/// lives in `<profile>/deps/`. `CARGO_TARGET_DIR` is honoured by the same rule.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable in <profile>/deps")
        .to_path_buf()
}

/// A binary of the workspace in the debug profile (e.g. `app`), if it was built.
pub fn workspace_binary(name: &str) -> Option<PathBuf> {
    let path = profile_dir().join(name);
    path.is_file().then_some(path)
}

/// The release `gcsfs` (what the container image ships): `GCSFS_RUN_TEST_RELEASE_BIN` if set,
/// else `target/release/gcsfs` next to the debug profile, if it exists.
pub fn gcsfs_release() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("GCSFS_RUN_TEST_RELEASE_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "GCSFS_RUN_TEST_RELEASE_BIN={} is not a file",
            p.display()
        );
        return Some(p);
    }
    let path = profile_dir().parent()?.join("release").join("gcsfs");
    path.is_file().then_some(path)
}

/// A new, empty bucket on the emulator; returns its name.
pub fn new_bucket(endpoint: &str, label: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let bucket = format!("run-{label}-{}-{n}", std::process::id());
    let url = format!("{endpoint}/storage/v1/b?project=test");
    let body = serde_json::json!({ "name": bucket });
    block_on(async {
        let resp = reqwest::Client::new()
            .post(&url)
            .json(&body)
            .send()
            .await
            .expect("create bucket");
        assert!(
            resp.status().is_success(),
            "create bucket: {}",
            resp.status()
        );
    });
    bucket
}

/// Every object of `bucket`: name → content.
pub fn bucket_objects(endpoint: &str, bucket: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
    block_on(async {
        let client = reqwest::Client::new();
        let mut out = std::collections::BTreeMap::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = format!("{endpoint}/storage/v1/b/{bucket}/o?maxResults=1000");
            if let Some(t) = &token {
                url.push_str(&format!("&pageToken={t}"));
            }
            let page: serde_json::Value = client
                .get(&url)
                .send()
                .await
                .expect("list objects")
                .error_for_status()
                .expect("list objects status")
                .json()
                .await
                .expect("list objects json");
            for item in page["items"].as_array().into_iter().flatten() {
                let name = item["name"].as_str().expect("object name").to_owned();
                let media = format!(
                    "{endpoint}/download/storage/v1/b/{bucket}/o/{}?alt=media",
                    percent_encoding::utf8_percent_encode(
                        &name,
                        percent_encoding::NON_ALPHANUMERIC
                    )
                );
                let data = client
                    .get(&media)
                    .send()
                    .await
                    .expect("download")
                    .error_for_status()
                    .expect("download status")
                    .bytes()
                    .await
                    .expect("download body");
                out.insert(name, data.to_vec());
            }
            match page["nextPageToken"].as_str() {
                Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                _ => return out,
            }
        }
    })
}

/// Runs `fut` on a small runtime of its own (the tests themselves are synchronous).
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(fut)
}

/// A started `gcsfs run` (or `unshare … gcsfs run`). On drop, if it is still running: its
/// descendants' process groups and itself get SIGKILL, and the mount point is lazily unmounted.
#[derive(Debug)]
pub struct Running {
    pub child: Child,
    pub mountpoint: PathBuf,
    /// Extra process groups to kill on drop (e.g. the command's, recorded by a test).
    pub extra_groups: Vec<Pid>,
    stderr_reader: Option<std::thread::JoinHandle<String>>,
    stdout_reader: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    /// Starts `command` with stdout and stderr captured (read on threads, so pipes never fill).
    pub fn start(mut command: Command, mountpoint: &Path) -> Running {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start gcsfs");
        let mut err = child.stderr.take().expect("stderr");
        let mut out = child.stdout.take().expect("stdout");
        let stderr_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let stdout_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        Running {
            child,
            mountpoint: mountpoint.to_path_buf(),
            extra_groups: Vec::new(),
            stderr_reader: Some(stderr_reader),
            stdout_reader: Some(stdout_reader),
        }
    }

    /// The pid of the started process.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Sends `sig` to the started process.
    pub fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).expect("send signal");
    }

    /// Waits for the exit (at most `limit`, a failure bound, not a speed assertion) and returns
    /// its status, stdout and stderr.
    pub fn wait(mut self, limit: Duration) -> (ExitStatus, String, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if start.elapsed() > limit {
                let err = self.kill_everything();
                panic!("gcsfs did not exit within {limit:?}; stderr:\n{err}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = self.stdout_reader.take().unwrap().join().unwrap();
        let err = self.stderr_reader.take().unwrap().join().unwrap();
        (status, out, err)
    }

    /// Kills what is left and returns the stderr captured so far.
    fn kill_everything(&mut self) -> String {
        for pid in descendants(self.pid()) {
            let _ = killpg(pid, Signal::SIGKILL);
            let _ = kill(pid, Signal::SIGKILL);
        }
        for pgid in &self.extra_groups {
            let _ = killpg(*pgid, Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH);
        self.stderr_reader
            .take()
            .map(|r| r.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.stderr_reader.is_some() {
            self.kill_everything();
        }
        for pgid in &self.extra_groups {
            let _ = killpg(*pgid, Signal::SIGKILL);
        }
    }
}

/// SIGKILLs the process group with this id when dropped (for processes a test's command leaves).
#[derive(Debug)]
pub struct KillGroupOnDrop(pub i32);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.0), Signal::SIGKILL);
    }
}

/// Every descendant of `pid` (children first), from `/proc/*/task/*/children`.
pub fn descendants(pid: Pid) -> Vec<Pid> {
    let mut out = Vec::new();
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        for c in children(p) {
            out.push(c);
            queue.push(c);
        }
    }
    out
}

/// The direct children of `pid`.
pub fn children(pid: Pid) -> Vec<Pid> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(
                s.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .map(Pid::from_raw),
            );
        }
    }
    out
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after `limit` (a bound for a hung
/// test, not a speed assertion).
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The JSON log lines of `stderr` (other lines, like the final `gcsfs: error:` line, skipped).
pub fn json_lines(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.is_object())
        .collect()
}

/// The paths gcsfs logged as not uploaded (ERROR lines with a `path` field).
pub fn not_uploaded_paths(stderr: &str) -> std::collections::BTreeSet<String> {
    json_lines(stderr)
        .into_iter()
        .filter(|l| {
            l["severity"] == "ERROR" && l["target"].as_str().unwrap_or("").starts_with("gcsfs")
        })
        .filter_map(|l| l["path"].as_str().map(str::to_owned))
        .collect()
}

/// Whether `path` is currently a mount point (in this mount namespace).
pub fn is_mounted(path: &Path) -> bool {
    let want = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.to_str().unwrap_or("")))
}

/// A `gcsfs run` command line against the emulator, JSON logs, before `--`.
pub fn gcsfs_run(bin: &Path, endpoint: &str, bucket: &str, mountpoint: &Path) -> Command {
    let mut c = Command::new(bin);
    c.env_remove("RUST_LOG")
        .env_remove("FOLDER")
        .env_remove("MNT_DIR")
        .env_remove("BUCKET")
        .args(["run", "--log-format", "json", "--custom-endpoint", endpoint])
        .arg("--anonymous-access")
        .arg(bucket)
        .arg(mountpoint);
    c
}
