//! Mounting: checks, the FUSE session and its threads, and the drain-then-unmount shutdown
//! shared by `gcsfs mount` and `gcsfs run`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::MountOption;

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
    #[error("FUSE mount at {path} failed: {source}")]
    Fuse {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Checks that `path` exists, is a directory and is not already a mount point.
pub fn check_mountpoint(path: &Path) -> Result<(), MountError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(MountError::Missing(path.into()));
        }
        Err(e) => {
            return Err(MountError::Io {
                path: path.into(),
                source: e,
            });
        }
    };
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
    let adapter = FuseAdapter::new(fs.clone(), rt);
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
    pub fn filesystem(&self) -> &Arc<Filesystem> {
        &self.fs
    }

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

    /// Stops taking writes, uploads every dirty file (bounded by `deadline` if given), unmounts.
    /// Returns the files that could not be uploaded.
    pub async fn shutdown(mut self, deadline: Option<std::time::Duration>) -> Vec<DrainFailure> {
        let fs = self.fs.clone();
        let drain = fs.drain();
        let failures = match deadline {
            Some(d) => match tokio::time::timeout(d, drain).await {
                Ok(f) => f,
                Err(_) => fs.dirty_paths_timed_out(),
            },
            None => drain.await,
        };
        let detached = if *self.ended.borrow() {
            // Unmounted from outside: nothing to undo.
            false
        } else {
            match self.unmounter.unmount() {
                Ok(()) => false,
                Err(e) => {
                    tracing::warn!(error = %e, "unmount failed; trying a lazy unmount");
                    lazy_unmount(&self.mountpoint);
                    true
                }
            }
        };
        if let Some(t) = self.session_thread.take() {
            if detached {
                // After a lazy unmount the kernel keeps the connection, and so the session,
                // alive until every file still open on it is closed, which may be never (e.g. a
                // sleeping process). Do not wait: every dirty file was drained and new writes
                // are refused; when this process exits, the holders get ENOTCONN.
                drop(t);
            } else {
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
        }
        if self.announced {
            tracing::info!(mountpoint = %self.mountpoint.display(), "unmounted");
        } else {
            tracing::debug!(mountpoint = %self.mountpoint.display(), "kernel mount removed");
        }
        failures
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
    info.lines().rev().find_map(|line| {
        // id parent major:minor root mountpoint options ...
        let mut fields = line.split(' ');
        let dev = fields.nth(2)?;
        let mountpoint = fields.nth(1)?;
        (unescape_mountinfo(mountpoint) == want).then(|| dev.to_string())
    })
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
    fn the_root_filesystem_has_a_device() {
        let dev = mount_device(Path::new("/")).expect("/ is mounted");
        assert!(dev.contains(':'), "{dev}");
    }
}
