//! Mounting: checks, the FUSE session and its threads, and the drain-then-unmount shutdown
//! shared by `gcsfs mount` and `gcsfs run`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuser::MountOption;
use tokio::time::Instant;

use crate::fs::{DrainFailure, Filesystem};
use crate::fuse::FuseAdapter;

/// How the kernel mount is set up.
#[derive(Debug, Clone)]
pub struct MountConfig {
    /// Where to mount.
    pub mountpoint: PathBuf,
    /// `fsname` shown in `/proc/mounts` (e.g. `gcsfs:BUCKET`).
    pub fsname: String,
    /// fuser's configuration from the `-o` options and `--fuse-threads`; gcsfs adds its own
    /// defaults (`nodev`, `nosuid`, `noatime`, subtype `gcsfs`, one `/dev/fuse` fd per thread).
    pub fuser: fuser::Config,
    /// The kernel read-ahead to set on the mount, in bytes (`--max-read-ahead-mb`); the
    /// kernel's own default (128 KiB) stays if it cannot be set (no root, read-only `/sys`).
    pub read_ahead: u64,
    /// Where the FUSE adapter records each request's latency and error, if metrics are
    /// served (`--prometheus-port`).
    pub metrics: Option<Arc<crate::metrics::FuseMetrics>>,
}

/// Why a mount could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mount point {0} does not exist")]
    Missing(PathBuf),
    #[error("mount point {0} is not a directory")]
    NotDir(PathBuf),
    #[error("mount point {0} is busy (already a mount point)")]
    Busy(PathBuf),
    #[error("mount point {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mount point {path} holds a dead FUSE mount that could not be removed")]
    DeadMount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("FUSE mount at {path} failed: {source}")]
    Fuse {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Checks that `path` exists, is a directory and is not already a mount point. A dead FUSE
/// mount on it (its daemon is gone: every access fails with `ENOTCONN`, "Transport endpoint is
/// not connected") is unmounted first, with a warning; a live mount point is refused.
pub fn check_mountpoint(path: &Path) -> Result<(), MountError> {
    let meta = metadata_past_dead_mounts(path)?;
    if !meta.is_dir() {
        return Err(MountError::NotDir(path.into()));
    }
    let canonical = std::fs::canonicalize(path).map_err(|e| MountError::Io {
        path: path.into(),
        source: e,
    })?;
    if let Some(parent) = canonical.parent()
        && let Ok(pmeta) = std::fs::metadata(parent)
        && canonical != Path::new("/")
        && (pmeta.dev() != meta.dev() || pmeta.ino() == meta.ino())
    {
        return Err(MountError::Busy(path.into()));
    }
    Ok(())
}

/// The most dead mounts stacked on one mount point that [`check_mountpoint`] removes.
const DEAD_MOUNTS_MAX: usize = 8;

/// The metadata of `path`, after unmounting the dead FUSE mounts on it, if any.
fn metadata_past_dead_mounts(path: &Path) -> Result<std::fs::Metadata, MountError> {
    let mut removed = 0;
    loop {
        let error = match std::fs::metadata(path) {
            Ok(meta) => return Ok(meta),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(MountError::Missing(path.into()));
            }
            Err(e) => e,
        };
        let dead = (error.raw_os_error() == Some(libc::ENOTCONN) && removed < DEAD_MOUNTS_MAX)
            .then(|| top_mount(path))
            .flatten()
            .filter(|m| m.fstype.starts_with("fuse"));
        let Some(dead) = dead else {
            return Err(MountError::Io {
                path: path.into(),
                source: error,
            });
        };
        detach_dead_mount(path).map_err(|source| MountError::DeadMount {
            path: path.into(),
            source,
        })?;
        tracing::warn!(
            mountpoint = %path.display(),
            fstype = dead.fstype,
            source = dead.source,
            "cleaned up a dead FUSE mount (Transport endpoint is not connected) left at the \
             mount point, e.g. by a daemon that crashed"
        );
        removed += 1;
    }
}

/// `umount -l` of a dead FUSE mount; where that is not permitted (not root), `fusermount3 -uz`
/// (or `fusermount -uz`), which may unmount the user's own FUSE mounts.
fn detach_dead_mount(path: &Path) -> std::io::Result<()> {
    match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EPERM) => {
            for helper in ["fusermount3", "fusermount"] {
                let status = std::process::Command::new(helper)
                    .arg("-u")
                    .arg("-z")
                    .arg(path)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
                if status.is_ok_and(|s| s.success()) {
                    return Ok(());
                }
            }
            Err(nix::errno::Errno::EPERM.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// One line of `/proc/self/mountinfo`: the parts gcsfs looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MountEntry {
    /// `major:minor` of the mounted filesystem.
    dev: String,
    /// Where it is mounted (unescaped).
    mountpoint: String,
    /// Its type, e.g. `fuse.gcsfs`, `fuse`, `ext4`.
    fstype: String,
    /// Its source, e.g. `gcsfs:bucket`.
    source: String,
}

/// Parses one line of `/proc/self/mountinfo`:
/// `id parent major:minor root mountpoint options [optional...] - fstype source superoptions`.
fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let (before, after) = line.split_once(" - ")?;
    let mut fields = before.split(' ');
    let dev = fields.nth(2)?;
    let mountpoint = fields.nth(1)?;
    let mut after = after.split(' ');
    let fstype = after.next()?;
    let source = after.next().unwrap_or("");
    Some(MountEntry {
        dev: dev.to_string(),
        mountpoint: unescape_mountinfo(mountpoint),
        fstype: fstype.to_string(),
        source: unescape_mountinfo(source),
    })
}

/// The mount on top at `path` (the last one listed there in `/proc/self/mountinfo`), found
/// without touching `path` itself: its parent is resolved, not the mount point, which may not
/// answer.
fn top_mount(path: &Path) -> Option<MountEntry> {
    let absolute = std::path::absolute(path).ok()?;
    let want = match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent).ok()?.join(name),
        _ => absolute,
    };
    let want = want.to_string_lossy();
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .rev()
        .filter_map(parse_mountinfo_line)
        .find(|m| m.mountpoint == want)
}

/// A live mount: the FUSE session runs on its own threads until [`Mounted::shutdown`] or an
/// external unmount.
#[derive(Debug)]
pub struct Mounted {
    fs: Arc<Filesystem>,
    unmounter: fuser::SessionUnmounter,
    session_thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    ended: tokio::sync::watch::Receiver<bool>,
    mountpoint: PathBuf,
    /// Whether "mounted" was logged (then "unmounted" is too).
    announced: bool,
}

/// Mounts `fs`. Returns once the kernel has completed the FUSE handshake (the mount answers).
/// Call from a blocking context (e.g. `spawn_blocking`): mounting waits for the kernel.
pub fn mount(
    fs: Arc<Filesystem>,
    rt: tokio::runtime::Handle,
    config: &MountConfig,
) -> Result<Mounted, MountError> {
    check_mountpoint(&config.mountpoint)?;
    // Resolved now: once mounted, resolving the path would ask this very filesystem.
    let canonical =
        std::fs::canonicalize(&config.mountpoint).unwrap_or_else(|_| config.mountpoint.clone());
    let mut fuse_config = config.fuser.clone();
    let given = fuse_config.mount_options.clone();
    let defaults = [
        MountOption::FSName(config.fsname.clone()),
        MountOption::Subtype("gcsfs".into()),
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoAtime,
    ];
    for d in defaults {
        let overridden = given.iter().any(|g| {
            std::mem::discriminant(g) == std::mem::discriminant(&d)
                || matches!(
                    (g, &d),
                    (MountOption::Dev, MountOption::NoDev)
                        | (MountOption::Suid, MountOption::NoSuid)
                        | (MountOption::Atime, MountOption::NoAtime)
                )
        });
        if !overridden {
            fuse_config.mount_options.push(d);
        }
    }
    fuse_config.n_threads = Some(fuse_config.n_threads.unwrap_or(4).max(1));
    fuse_config.clone_fd = true;
    let adapter = FuseAdapter::new(fs.clone(), rt).with_metrics(config.metrics.clone());
    let mut session =
        fuser::Session::new(adapter, &config.mountpoint, &fuse_config).map_err(|e| {
            MountError::Fuse {
                path: config.mountpoint.clone(),
                source: e,
            }
        })?;
    // The handshake is done: the kernel's mount settings can be adjusted now.
    if let Err(error) = fs.attach_kernel_cache(Arc::new(KernelPages(session.notifier()))) {
        tracing::warn!(%error, "cannot start the page-cache thread; random reads cache less");
    }
    fs.set_kernel_readahead(set_read_ahead(&canonical, config.read_ahead));
    let unmounter = session.unmount_callable();
    let (tx, ended) = tokio::sync::watch::channel(false);
    let session_thread = std::thread::Builder::new()
        .name("fuse-session".into())
        .spawn(move || {
            let r = session.run();
            let _ = tx.send(true);
            r
        })
        .map_err(|e| MountError::Fuse {
            path: config.mountpoint.clone(),
            source: e,
        })?;
    tracing::debug!(mountpoint = %config.mountpoint.display(), "kernel mount in place");
    Ok(Mounted {
        fs,
        unmounter,
        session_thread: Some(session_thread),
        ended,
        mountpoint: config.mountpoint.clone(),
        announced: false,
    })
}

impl Mounted {
    /// The mounted filesystem.
    pub fn filesystem(&self) -> &Arc<Filesystem> {
        &self.fs
    }

    /// Where it is mounted (as given).
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Logs that the mount is in service (once it is known to work).
    pub fn announce(&mut self) {
        tracing::info!(mountpoint = %self.mountpoint.display(), "mounted");
        self.announced = true;
    }

    /// Resolves when the session ends (e.g. `fusermount -u` from outside).
    pub async fn ended(&self) {
        let mut rx = self.ended.clone();
        let _ = rx.wait_for(|e| *e).await;
    }

    /// Stops taking writes, uploads every dirty file and unmounts, all by `deadline`. Returns
    /// the files that could not be uploaded (each is logged with its path).
    ///
    /// The drain gets everything but the unmount's reserve ([`drain_deadline`]); whatever is
    /// still dirty when it runs out counts as not uploaded. A mount that is busy (a file open
    /// outside gcsfs's control) or whose unmount is not done by `deadline` is detached
    /// (`umount -l`) and its session is not waited for: the caller may exit at once.
    pub async fn shutdown(self, deadline: Instant) -> Vec<DrainFailure> {
        let Mounted {
            fs,
            unmounter,
            session_thread,
            mut ended,
            mountpoint,
            announced,
        } = self;
        let drain_until = drain_deadline(Instant::now(), deadline);
        // The drain keeps to its deadline by itself; this bound is a backstop.
        let failures = match tokio::time::timeout_at(deadline, fs.drain(drain_until)).await {
            Ok(failures) => failures,
            Err(_) => {
                tracing::warn!("the drain ran out of time; files still dirty are not uploaded");
                fs.dirty_paths_timed_out()
            }
        };
        let detached = if *ended.borrow() {
            // Unmounted from outside: nothing to undo.
            false
        } else {
            unmount_by(unmounter, &mountpoint, deadline).await
        };
        if let Some(thread) = session_thread {
            if detached {
                // After a lazy unmount the kernel keeps the connection, and so the session,
                // alive until every file still open on it is closed, which may be never (e.g. a
                // sleeping process). Do not wait: the drain is over and new writes are refused;
                // when this process exits, the holders get ENOTCONN.
                drop(thread);
            } else {
                let over = tokio::time::timeout_at(deadline, ended.wait_for(|e| *e))
                    .await
                    .is_ok();
                if over {
                    // The thread has said it is done: joining it does not wait.
                    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
                } else {
                    tracing::warn!(
                        "the FUSE session still runs after unmounting (the mount is used \
                         elsewhere, e.g. in another mount namespace); not waiting for it"
                    );
                }
            }
        }
        if announced {
            tracing::info!(mountpoint = %mountpoint.display(), detached, "unmounted");
        } else {
            tracing::debug!(mountpoint = %mountpoint.display(), detached, "kernel mount removed");
        }
        failures
    }
}

/// The most time kept back from the drain for unmounting.
pub const UNMOUNT_RESERVE: Duration = Duration::from_secs(1);

/// Until when a shutdown starting at `now` that must be over by `deadline` may drain: all
/// of the time left but a reserve for unmounting, a quarter of it and at most
/// [`UNMOUNT_RESERVE`]. Never before `now`, never after `deadline`.
pub fn drain_deadline(now: Instant, deadline: Instant) -> Instant {
    let left = deadline.saturating_duration_since(now);
    let reserve = UNMOUNT_RESERVE.min(left / 4);
    now + (left - reserve)
}

/// Unmounts on a thread of its own (the unmount call may wait for the kernel, or for
/// `fusermount3`), waiting for it until `deadline`. If it fails (e.g. `EBUSY`: a file is still
/// open) or is not done by then, the mount is detached instead (`umount -l`). Returns whether
/// it was detached.
async fn unmount_by(
    mut unmounter: fuser::SessionUnmounter,
    mountpoint: &Path,
    deadline: Instant,
) -> bool {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("gcsfs-unmount".into())
        .spawn(move || {
            let _ = tx.send(unmounter.unmount());
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start the unmount thread; unmounting lazily");
        lazy_unmount(mountpoint);
        return true;
    }
    match tokio::time::timeout_at(deadline, rx).await {
        Ok(Ok(Ok(()))) => false,
        Ok(Ok(Err(error))) => {
            tracing::warn!(%error, "unmount failed; unmounting lazily");
            lazy_unmount(mountpoint);
            true
        }
        Ok(Err(_)) => {
            tracing::warn!("the unmount thread ended without an answer; unmounting lazily");
            lazy_unmount(mountpoint);
            true
        }
        Err(_) => {
            tracing::warn!("unmounting is not done by the deadline; unmounting lazily");
            lazy_unmount(mountpoint);
            true
        }
    }
}

/// The kernel's page cache of the mount, reached through the FUSE session's notifier.
#[derive(Debug)]
struct KernelPages(fuser::Notifier);

impl crate::fs::KernelCache for KernelPages {
    fn store(&self, ino: crate::fs::InodeNo, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.store(fuser::INodeNo(ino.0), offset, data)
    }
}

/// Sets the read-ahead of the filesystem mounted at `mountpoint` to `bytes` (through
/// `/sys/class/bdi`), and returns the read-ahead in force: the kernel then reads that far ahead
/// of a sequential reader by itself, in many requests at once, into its page cache.
fn set_read_ahead(mountpoint: &Path, bytes: u64) -> u64 {
    const KERNEL_DEFAULT: u64 = 128 << 10;
    let Some(dev) = mount_device(mountpoint) else {
        tracing::debug!("mount not found in /proc/self/mountinfo; read-ahead unchanged");
        return KERNEL_DEFAULT;
    };
    let knob = Path::new("/sys/class/bdi").join(&dev).join("read_ahead_kb");
    match std::fs::write(&knob, format!("{}\n", bytes >> 10)) {
        Ok(()) => bytes,
        Err(error) => {
            tracing::debug!(%error, knob = %knob.display(), "cannot set the kernel read-ahead");
            std::fs::read_to_string(&knob)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map_or(KERNEL_DEFAULT, |kb| kb << 10)
        }
    }
}

/// The device (`major:minor`) of the filesystem mounted last at `path`.
fn mount_device(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = path.to_string_lossy();
    info.lines()
        .rev()
        .filter_map(parse_mountinfo_line)
        .find(|m| m.mountpoint == want)
        .map(|m| m.dev)
}

/// mountinfo escapes space, tab, newline and backslash as octal `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(oct) = s.get(i + 1..i + 4)
            && let Ok(v) = u8::from_str_radix(oct, 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `umount -l`, for a mount whose session is stuck.
fn lazy_unmount(path: &Path) {
    let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(unescape_mountinfo("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/odd\\x"), "/odd\\x");
    }

    #[test]
    fn the_drain_leaves_a_quarter_of_the_time_left_at_most_a_second_for_unmounting() {
        let now = Instant::now();
        let secs = Duration::from_secs;
        let ms = Duration::from_millis;
        // (time left, time the drain gets)
        for (left, drain) in [
            (secs(8), secs(7)),
            (secs(60), secs(59)),
            (secs(4), secs(3)),
            (secs(2), ms(1500)),
            (ms(400), ms(300)),
            (ms(3), ms(3) - ms(3) / 4),
            (Duration::ZERO, Duration::ZERO),
        ] {
            assert_eq!(
                drain_deadline(now, now + left),
                now + drain,
                "{left:?} left"
            );
        }
        // A deadline already passed: no time to drain, and never a time before now.
        assert_eq!(drain_deadline(now + secs(5), now), now + secs(5));
    }

    #[test]
    fn mountinfo_lines() {
        let line = "36 35 0:52 / /tmp/a\\040b rw,nosuid,nodev,relatime shared:1 master:2 - \
                    fuse.gcsfs gcsfs:bkt rw,user_id=0,group_id=0";
        assert_eq!(
            parse_mountinfo_line(line),
            Some(MountEntry {
                dev: "0:52".into(),
                mountpoint: "/tmp/a b".into(),
                fstype: "fuse.gcsfs".into(),
                source: "gcsfs:bkt".into(),
            })
        );
        let plain = "22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw";
        let root = parse_mountinfo_line(plain).unwrap();
        assert_eq!(
            (root.mountpoint.as_str(), root.fstype.as_str()),
            ("/", "ext4")
        );
        assert_eq!(parse_mountinfo_line("garbage"), None);
    }

    #[test]
    fn the_top_mount_of_the_root_is_found_without_resolving_it() {
        let top = top_mount(Path::new("/")).expect("/ is mounted");
        assert!(!top.fstype.is_empty());
        assert_eq!(top_mount(Path::new("/no/such/dir/here")), None);
    }

    #[test]
    fn a_mount_point_that_fails_otherwise_is_an_io_error_and_nothing_is_unmounted() {
        // ENOTDIR, not ENOTCONN: reported as it is.
        let file = tempfile::NamedTempFile::new().unwrap();
        let below = file.path().join("x");
        let err = check_mountpoint(&below).unwrap_err();
        assert!(matches!(err, MountError::Io { .. }), "{err}");
        let err = check_mountpoint(file.path()).unwrap_err();
        assert!(matches!(err, MountError::NotDir(_)), "{err}");
        let dir = tempfile::tempdir().unwrap();
        check_mountpoint(dir.path()).unwrap();
        assert!(matches!(
            check_mountpoint(&dir.path().join("missing")),
            Err(MountError::Missing(_))
        ));
        assert!(matches!(
            check_mountpoint(Path::new("/proc")),
            Err(MountError::Busy(_))
        ));
    }

    #[test]
    fn the_root_filesystem_has_a_device() {
        let dev = mount_device(Path::new("/")).expect("/ is mounted");
        assert!(dev.contains(':'), "{dev}");
    }
}
