//! A real FUSE mount of an emulator bucket, made by the `gcsfs` binary, for the `fuse_*` tests.
//!
//! [`fuse_endpoint`] says whether the tests can run (emulator endpoint, `/dev/fuse`, root) and
//! prints `skipped: <reason>` when not. [`Bucket`] talks to the emulator's JSON API directly (to
//! put objects and to check what the mount wrote). [`Mount`] runs `gcsfs mount --foreground` as
//! a child process with its logs in a file, waits until the mount is in `/proc/self/mountinfo`,
//! and on drop stops the daemon (SIGTERM, then `umount -l` and SIGKILL as a last resort) and
//! removes its directories. The daemon's log is printed when a test panics.
//!
//! Everything here is synchronous: the tests use `std::fs` and shell tools, and the few HTTP
//! calls run on a small runtime owned by [`Bucket`] (tests are plain `#[test]`s, so no runtime
//! is running when it blocks).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{PoisonError, RwLock, RwLockWriteGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use super::emulator;

/// How long a mount may take to appear, or a daemon to exit after SIGTERM, before the test
/// fails. Generous: these bound a hang, they do not measure speed.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Every close of a file descriptor on a FUSE mount is a flush, which uploads the file, and
/// that includes the copies a child process inherits at fork and closes at exec. So a test that
/// needs files to stay dirty while it holds them open takes [`no_spawns`] meanwhile, and every
/// process this harness starts (see [`spawn`]) waits for it.
static SPAWN: RwLock<()> = RwLock::new(());

/// Holds off every [`spawn`] of this test binary until dropped.
pub fn no_spawns() -> RwLockWriteGuard<'static, ()> {
    SPAWN.write().unwrap_or_else(PoisonError::into_inner)
}

/// Starts `cmd` (unless a test holds [`no_spawns`]).
pub fn spawn(cmd: &mut Command) -> Child {
    let _shared = SPAWN.read().unwrap_or_else(PoisonError::into_inner);
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()))
}

/// Runs `cmd` to completion (unless a test holds [`no_spawns`]) and returns its output.
pub fn output(cmd: &mut Command) -> std::process::Output {
    let _shared = SPAWN.read().unwrap_or_else(PoisonError::into_inner);
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()))
}

/// The emulator endpoint if FUSE tests can run here; otherwise prints why they are skipped.
pub fn fuse_endpoint() -> Option<String> {
    let Some(endpoint) = emulator::endpoint() else {
        super::required::cannot_run("GCSFS_TEST_ENDPOINT is unset (scripts/test.sh sets it)");
        return None;
    };
    if !Path::new("/dev/fuse").exists() {
        super::required::cannot_run("/dev/fuse is missing");
        return None;
    }
    if !nix::unistd::geteuid().is_root() {
        super::required::cannot_run("FUSE mount tests need root");
        return None;
    }
    Some(endpoint)
}

/// One object as listed by the emulator.
#[derive(Debug, Clone)]
pub struct Listed {
    pub size: u64,
    pub generation: i64,
    pub metadata: BTreeMap<String, String>,
}

/// A bucket on the emulator, reached through its JSON API.
#[derive(Debug)]
pub struct Bucket {
    pub endpoint: String,
    pub name: String,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
}

fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

impl Bucket {
    /// Creates a new, empty bucket named after `label`.
    pub fn fresh(endpoint: &str, label: &str) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let name = rt.block_on(emulator::fresh_bucket(endpoint, label));
        Self {
            endpoint: endpoint.to_owned(),
            name,
            rt,
            http: reqwest::Client::new(),
        }
    }

    /// The same bucket reached at `endpoint` (e.g. a proxy in front of the emulator).
    pub fn via(&self, endpoint: &str) -> Self {
        Self {
            endpoint: endpoint.to_owned(),
            name: self.name.clone(),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            http: reqwest::Client::new(),
        }
    }

    /// Every object whose name starts with `prefix`, by name (all pages).
    pub fn list(&self, prefix: &str) -> BTreeMap<String, Listed> {
        self.rt.block_on(async {
            let mut out = BTreeMap::new();
            let mut token: Option<String> = None;
            loop {
                let mut url = format!(
                    "{}/storage/v1/b/{}/o?maxResults=1000&prefix={}",
                    self.endpoint,
                    self.name,
                    enc(prefix)
                );
                if let Some(t) = &token {
                    url.push_str(&format!("&pageToken={}", enc(t)));
                }
                let resp = self.http.get(&url).send().await.expect("list objects");
                assert!(resp.status().is_success(), "list: {}", resp.status());
                let page: serde_json::Value = resp.json().await.expect("list json");
                for item in page["items"].as_array().into_iter().flatten() {
                    let name = item["name"].as_str().expect("object name").to_owned();
                    let num = |v: &serde_json::Value| {
                        v.as_str()
                            .and_then(|s| s.parse::<i64>().ok())
                            .or_else(|| v.as_i64())
                            .unwrap_or(-1)
                    };
                    let metadata = item["metadata"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                                .collect()
                        })
                        .unwrap_or_default();
                    let listed = Listed {
                        size: num(&item["size"]) as u64,
                        generation: num(&item["generation"]),
                        metadata,
                    };
                    out.insert(name, listed);
                }
                match page["nextPageToken"].as_str() {
                    Some(t) if !t.is_empty() => token = Some(t.to_owned()),
                    _ => return out,
                }
            }
        })
    }

    /// The names of every object.
    pub fn names(&self) -> Vec<String> {
        self.list("").into_keys().collect()
    }

    /// The data of object `name`, or `None` if it does not exist.
    pub fn get(&self, name: &str) -> Option<Vec<u8>> {
        self.rt.block_on(async {
            let url = format!(
                "{}/storage/v1/b/{}/o/{}?alt=media",
                self.endpoint,
                self.name,
                enc(name)
            );
            let resp = self.http.get(&url).send().await.expect("get object");
            if resp.status() == reqwest::StatusCode::NOT_FOUND {
                return None;
            }
            assert!(
                resp.status().is_success(),
                "get {name:?}: {}",
                resp.status()
            );
            Some(resp.bytes().await.expect("object data").to_vec())
        })
    }

    /// Writes object `name` directly (not through a mount).
    pub fn put(&self, name: &str, data: &[u8]) {
        self.put_many(vec![(name.to_owned(), data.to_vec())]);
    }

    /// Sets custom-metadata `key` of object `name` to `value` (a JSON API PATCH).
    pub fn set_metadata(&self, name: &str, key: &str, value: &str) {
        self.rt.block_on(async {
            let url = format!(
                "{}/storage/v1/b/{}/o/{}",
                self.endpoint,
                self.name,
                enc(name)
            );
            let body = serde_json::json!({ "metadata": { key: value } });
            let resp = self
                .http
                .patch(&url)
                .json(&body)
                .send()
                .await
                .expect("patch");
            assert!(
                resp.status().is_success(),
                "patch {name:?}: {}",
                resp.status()
            );
        })
    }

    /// Writes many objects directly, a few at a time.
    pub fn put_many(&self, objects: Vec<(String, Vec<u8>)>) {
        self.rt.block_on(async {
            let results: Vec<()> = futures::stream::iter(objects)
                .map(|(name, data)| async move {
                    let url = format!(
                        "{}/upload/storage/v1/b/{}/o?uploadType=media&name={}",
                        self.endpoint,
                        self.name,
                        enc(&name)
                    );
                    let resp = self.http.post(&url).body(data).send().await.expect("put");
                    assert!(
                        resp.status().is_success(),
                        "put {name:?}: {}",
                        resp.status()
                    );
                })
                .buffer_unordered(16)
                .collect()
                .await;
            drop(results);
        })
    }
}

/// Flags for one mount. Defaults: the TTLs of the binary, nothing else.
#[derive(Debug, Clone, Default)]
pub struct MountOptions {
    /// `--metadata-cache-ttl-secs`.
    pub ttl_secs: Option<u64>,
    /// `--metadata-cache-negative-ttl-secs`.
    pub negative_ttl_secs: Option<u64>,
    /// `--only-dir`.
    pub only_dir: Option<String>,
    /// More flags, as given.
    pub extra: Vec<String>,
    /// Mount a tmpfs of this size (`mount -o size=`) on the `--temp-dir` (as /tmp is on Cloud
    /// Run: staging files are memory); unmounted when the mount is dropped.
    pub tmpfs_temp_dir: Option<String>,
}

impl MountOptions {
    /// Both TTLs set to `secs`.
    pub fn ttl(secs: u64) -> Self {
        Self {
            ttl_secs: Some(secs),
            negative_ttl_secs: Some(secs),
            ..Self::default()
        }
    }
}

/// A live `gcsfs mount --foreground` of a bucket, in its own temporary directory:
/// `<root>/mnt` is the mount point, `<root>/tmp` the `--temp-dir`, `<root>/daemon.log` its log.
#[derive(Debug)]
pub struct Mount {
    child: Option<Child>,
    root: Option<tempfile::TempDir>,
    mountpoint: PathBuf,
    temp_dir: PathBuf,
    log: PathBuf,
    endpoint: String,
    bucket: String,
    options: MountOptions,
}

impl Mount {
    /// Mounts `bucket` with `options`; panics (with the daemon's log) if it does not come up.
    pub fn new(bucket: &Bucket, options: MountOptions) -> Self {
        let root = tempfile::Builder::new()
            .prefix("gcsfs-fuse-test-")
            .tempdir()
            .expect("temp dir");
        let mountpoint = root.path().join("mnt");
        let temp_dir = root.path().join("tmp");
        std::fs::create_dir(&mountpoint).expect("mount point");
        std::fs::create_dir(&temp_dir).expect("staging dir");
        if let Some(size) = &options.tmpfs_temp_dir {
            let ok = Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size}"),
                    "gcsfs-test-tmp",
                ])
                .arg(&temp_dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "mount -t tmpfs on {}", temp_dir.display());
        }
        let mut m = Self {
            child: None,
            log: root.path().join("daemon.log"),
            root: Some(root),
            mountpoint,
            temp_dir,
            endpoint: bucket.endpoint.clone(),
            bucket: bucket.name.clone(),
            options,
        };
        m.start();
        m
    }

    /// The command line that mounts this bucket here (without `--foreground`).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gcsfs"));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("GCSFS_") {
                cmd.env_remove(k);
            }
        }
        cmd.args(["--log-format", "text", "mount"])
            .args(["--custom-endpoint", &self.endpoint, "--anonymous-access"])
            .arg("--temp-dir")
            .arg(&self.temp_dir);
        let o = &self.options;
        if let Some(t) = o.ttl_secs {
            cmd.args(["--metadata-cache-ttl-secs", &t.to_string()]);
        }
        if let Some(t) = o.negative_ttl_secs {
            cmd.args(["--metadata-cache-negative-ttl-secs", &t.to_string()]);
        }
        if let Some(d) = &o.only_dir {
            cmd.args(["--only-dir", d]);
        }
        cmd.args(&o.extra);
        cmd
    }

    fn start(&mut self) {
        self.start_until(is_mounted);
    }

    /// Starts the daemon and waits until `ready(mount point)`.
    fn start_until(&mut self, ready: impl Fn(&Path) -> bool) {
        assert!(self.child.is_none(), "already mounted");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("daemon log");
        let mut cmd = self.command();
        cmd.arg("--foreground")
            .arg(&self.bucket)
            .arg(&self.mountpoint)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log);
        let mut child = spawn(&mut cmd);
        let deadline = Instant::now() + PATIENCE;
        loop {
            if ready(&self.mountpoint) {
                break;
            }
            if let Some(status) = child.try_wait().expect("wait") {
                panic!(
                    "gcsfs mount exited with {status} before mounting; its log:\n{}",
                    self.log()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no mount after {PATIENCE:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// `rel` inside the mount.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.mountpoint.join(rel)
    }

    /// The daemon's `--temp-dir`.
    pub fn temp_dir(&self) -> &Path {
        &self.temp_dir
    }

    /// The daemon's process id (while mounted).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("mounted").id()
    }

    /// Everything the daemon logged so far (all its runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM to the daemon and waits for it to exit; returns its status. Panics if it
    /// does not exit within [`PATIENCE`] or the mount is still there afterwards.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("mounted");
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let status = wait_bounded(&mut child, PATIENCE);
        let Some(status) = status else {
            let _ = child.kill();
            let _ = child.wait();
            lazy_unmount(&self.mountpoint);
            panic!(
                "gcsfs did not exit within {PATIENCE:?} of SIGTERM; log:\n{}",
                self.log()
            );
        };
        assert!(
            !is_mounted(&self.mountpoint),
            "still mounted after the daemon exited; log:\n{}",
            self.log()
        );
        status
    }

    /// Stops the daemon (asserting a clean exit) and mounts the same bucket again, with the
    /// same options and directories.
    pub fn remount(&mut self) {
        let status = self.stop();
        assert!(
            status.success(),
            "daemon exit: {status}; log:\n{}",
            self.log()
        );
        self.start();
    }
}

impl Mount {
    /// Kills the daemon with SIGKILL and reaps it, leaving its mount behind, dead: every access
    /// to the mount point fails with `ENOTCONN` ("Transport endpoint is not connected").
    pub fn crash(&mut self) {
        let mut child = self.child.take().expect("mounted");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts the daemon again, with the same options and directories, whatever is left on the
    /// mount point (e.g. a dead mount after [`Mount::crash`]), and waits until a live mount
    /// there answers.
    pub fn start_again(&mut self) {
        self.start_until(|path| is_mounted(path) && answers(path));
    }
}

/// Whether `path` is a mount point that answers: its `stat` succeeds and shows another device
/// than its parent's. Only for a mount that is live or dead, never hung (`stat` would hang).
pub fn answers(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let parent = path.parent().expect("a mount point has a parent");
    match (std::fs::metadata(path), std::fs::metadata(parent)) {
        (Ok(m), Ok(p)) => m.dev() != p.dev(),
        _ => false,
    }
}

/// How many FUSE file systems are mounted at `path` (per `/proc/self/mountinfo`).
pub fn fuse_mounts_at(path: &Path) -> usize {
    let want = std::fs::canonicalize(path.parent().expect("parent"))
        .expect("parent resolves")
        .join(path.file_name().expect("file name"));
    let want = want.to_string_lossy();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter(|line| {
            let mountpoint = line.split(' ').nth(4).unwrap_or("");
            let fstype = line.split(" - ").nth(1).unwrap_or("").split(' ').next();
            mountpoint == want && fstype.is_some_and(|t| t.starts_with("fuse"))
        })
        .count()
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            if wait_bounded(&mut child, PATIENCE).is_none() {
                eprintln!("gcsfs did not exit after SIGTERM: unmounting lazily, killing it");
                lazy_unmount(&self.mountpoint);
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if is_mounted(&self.mountpoint) {
            lazy_unmount(&self.mountpoint);
        }
        if std::thread::panicking() {
            eprintln!(
                "---- gcsfs log ({}) ----\n{}",
                self.mountpoint.display(),
                self.log()
            );
        }
        if self.options.tmpfs_temp_dir.is_some() {
            let _ = Command::new("umount").arg(&self.temp_dir).status();
        }
        if let Some(root) = self.root.take() {
            if is_mounted(&self.mountpoint) {
                // Never delete through a mount: that would delete the bucket's objects.
                eprintln!("{} is still mounted; leaving it", self.mountpoint.display());
                let _ = root.keep();
            } else {
                drop(root);
            }
        }
    }
}

/// Waits up to `bound` for `child` to exit.
pub fn wait_bounded(child: &mut Child, bound: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `umount -l`.
fn lazy_unmount(path: &Path) {
    let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
}

/// Whether a FUSE file system is mounted at `path` (per `/proc/self/mountinfo`).
pub fn is_mounted(path: &Path) -> bool {
    // Canonicalise the parent only: stat of a mount point whose daemon hangs would hang too.
    let want = match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent)
            .map(|p| p.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    };
    let want = want.to_string_lossy();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines().any(|line| {
        let mountpoint = line.split(' ').nth(4).unwrap_or("");
        let fstype = line.split(" - ").nth(1).unwrap_or("").split(' ').next();
        mountpoint == want && fstype.is_some_and(|t| t.starts_with("fuse"))
    })
}

/// Runs a shell command line (`sh -c`), panicking with its output unless it succeeds; returns
/// its stdout.
pub fn sh(script: &str) -> String {
    let out = output(Command::new("sh").args(["-c", script]));
    assert!(
        out.status.success(),
        "`{script}` failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Deterministic pseudo-random bytes (an xorshift stream seeded by `seed`).
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A local directory tree: files with their data and directories, by path relative to its root
/// (`a/b`, no leading or trailing slash).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tree {
    pub files: BTreeMap<String, Vec<u8>>,
    pub dirs: std::collections::BTreeSet<String>,
}

impl Tree {
    /// Reads the tree under `root` (symlinks are not followed and not recorded).
    pub fn read(root: &Path) -> Self {
        let mut tree = Self::default();
        let mut stack = vec![(root.to_path_buf(), String::new())];
        while let Some((dir, rel)) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read_dir") {
                let entry = entry.expect("dir entry");
                let name = entry.file_name().into_string().expect("utf-8 name");
                let rel = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let ty = entry.file_type().expect("file type");
                if ty.is_dir() {
                    tree.dirs.insert(rel.clone());
                    stack.push((entry.path(), rel));
                } else if ty.is_file() {
                    tree.files
                        .insert(rel, std::fs::read(entry.path()).expect("read file"));
                }
            }
        }
        tree
    }

    /// Writes the files of `files` (creating their directories) and the extra empty `dirs`
    /// under `root`, returning the whole tree.
    pub fn create(root: &Path, files: BTreeMap<String, Vec<u8>>, dirs: &[&str]) -> Self {
        for (rel, bytes) in &files {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, bytes).expect("write");
        }
        for d in dirs {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        Self::read(root)
    }

    /// The objects this tree becomes under `prefix` (e.g. `t/`) when every directory was made
    /// with mkdir: one per file, and a marker `dir/` per directory (also `prefix` itself, if
    /// `prefix` is not empty).
    pub fn objects(&self, prefix: &str) -> BTreeMap<String, Vec<u8>> {
        let mut out: BTreeMap<String, Vec<u8>> = self
            .files
            .iter()
            .map(|(k, v)| (format!("{prefix}{k}"), v.clone()))
            .collect();
        for d in &self.dirs {
            out.insert(format!("{prefix}{d}/"), Vec::new());
        }
        if !prefix.is_empty() {
            out.insert(prefix.to_owned(), Vec::new());
        }
        out
    }
}

/// Asserts that the objects of `bucket` under `prefix` are exactly `want` (names and data).
pub fn assert_objects(bucket: &Bucket, prefix: &str, want: &BTreeMap<String, Vec<u8>>) {
    let listed = bucket.list(prefix);
    let got: Vec<&String> = listed.keys().collect();
    let expected: Vec<&String> = want.keys().collect();
    assert_eq!(got, expected, "object names under {prefix:?}");
    for (name, data) in want {
        assert_eq!(listed[name].size, data.len() as u64, "size of {name:?}");
        let stored = bucket.get(name).expect("listed object readable");
        assert!(stored == *data, "data of {name:?} differs");
    }
}
