//! What `gcsfs mount` (and `gcsfs run`) do between parsing flags and serving the mount: open the
//! bucket (credentials, retries, a fail-fast access check), configure the filesystem, mount,
//! wait for a signal or an external unmount, drain and unmount.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

use crate::cli::{MountArgs, MountCommand, StoreArgs};
use crate::fs::{DrainFailure, Filesystem, FsConfig, Ownership, ReadConfig, SystemClock};
use crate::metrics::{self, FuseMetrics, Metrics};
use crate::mount::{self, MountError, Mounted};
use crate::store::gcs::{GcsAuth, GcsConfig, GcsStore};
use crate::store::{
    ErrorKind, GatedStore, ListRequest, ObjectStore, RetryConfig, RetryStats, RetryStore,
    StoreError,
};

/// Why the bucket could not be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("bucket {bucket:?} does not exist")]
    NoBucket {
        bucket: String,
        #[source]
        source: StoreError,
    },
    #[error("access to bucket {bucket:?} denied")]
    Denied {
        bucket: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot reach bucket {bucket:?}")]
    Other {
        bucket: String,
        #[source]
        source: StoreError,
    },
}

impl OpenError {
    /// The error for `source`, met while opening `bucket`, by its kind.
    fn new(bucket: &str, source: StoreError) -> Self {
        let bucket = bucket.to_string();
        match source.kind() {
            ErrorKind::NotFound => OpenError::NoBucket { bucket, source },
            ErrorKind::PermissionDenied | ErrorKind::Unauthenticated => {
                OpenError::Denied { bucket, source }
            }
            _ => OpenError::Other { bucket, source },
        }
    }
}

/// An opened bucket: its store, and the start-up check running against it.
#[derive(Debug)]
pub struct OpenedBucket {
    /// The store, with retries; its calls wait for `check` to pass.
    pub store: Arc<dyn ObjectStore>,
    /// One listing call checking that the bucket exists and that the credentials may list it.
    pub check: tokio::task::JoinHandle<Result<(), OpenError>>,
    /// The retries the store's retry layer makes, by call (for metrics).
    pub retries: Arc<RetryStats>,
}

/// Builds the clients for the bucket (with retries) and starts checking, with one listing call,
/// that it exists and that the credentials may list it. The check runs in the background so
/// that the caller can mount meanwhile; calls of the returned store wait for it.
pub async fn open_bucket(
    store_args: &StoreArgs,
    bucket: &str,
    only_dir: &str,
) -> Result<OpenedBucket, OpenError> {
    let auth = if store_args.anonymous_access {
        GcsAuth::Anonymous
    } else if let Some(key) = &store_args.key_file {
        GcsAuth::KeyFile(key.clone())
    } else {
        GcsAuth::Default
    };
    let config = GcsConfig {
        bucket: bucket.to_string(),
        endpoint: store_args.custom_endpoint.clone(),
        auth,
        billing_project: store_args.billing_project.clone(),
        ..Default::default()
    };
    let gcs = GcsStore::connect(config)
        .await
        .map_err(|e| OpenError::new(bucket, e))?;
    let retry = retry_config(store_args);
    let retrying = RetryStore::new(Arc::new(gcs), retry);
    let retries = retrying.stats();
    let store: Arc<dyn ObjectStore> = Arc::new(retrying);
    let (gated, keeper) = GatedStore::new(store.clone());
    let (bucket, prefix) = (bucket.to_string(), only_dir.to_string());
    let check = tokio::spawn(async move {
        let outcome = store
            .list(&ListRequest {
                prefix,
                delimiter: Some("/".into()),
                max_results: Some(1),
                ..Default::default()
            })
            .await
            .map(|_| ());
        keeper.decide(&outcome);
        outcome.map_err(|e| OpenError::new(&bucket, e))
    });
    Ok(OpenedBucket {
        store: Arc::new(gated),
        check,
        retries,
    })
}

/// How store calls are retried, from `--retry-deadline-secs` and `--stall-timeout-secs`.
pub fn retry_config(store_args: &StoreArgs) -> RetryConfig {
    RetryConfig {
        deadline: store_args.retry_deadline(),
        stall_timeout: store_args.stall_timeout(),
        ..Default::default()
    }
}

/// The filesystem configuration `args` ask for.
pub fn fs_config(args: &MountArgs) -> FsConfig {
    let defaults = FsConfig::default();
    FsConfig {
        ownership: Ownership {
            uid: args.uid.resolve(nix::unistd::getuid().as_raw()),
            gid: args.gid.resolve(nix::unistd::getgid().as_raw()),
            file_mode: args.file_mode.bits() as u16,
            dir_mode: args.dir_mode.bits() as u16,
        },
        only_dir: args.only_dir.clone().unwrap_or_default(),
        temp_dir: args.temp_dir(),
        metadata_ttl: args.metadata_cache_ttl(),
        negative_ttl: args.metadata_cache_negative_ttl(),
        rename_dir_limit: args.rename_dir_limit,
        upload_concurrency: usize::from(args.upload_concurrency),
        write_back: args.write_back.into(),
        max_dirty_age: std::time::Duration::from_secs(args.max_dirty_age_secs),
        read_only: args.read_only(),
        check_permissions: args.check_permissions(),
        streaming_writes: args.streaming_writes,
        read: ReadConfig {
            max_window: args.max_read_ahead_mb << 20,
            prefetch_memory: args.prefetch_memory_mb << 20,
            ..defaults.read.clone()
        },
        memory_budget: memory_budget(args).0,
        max_cached_inodes: usize::try_from(args.max_cached_inodes).unwrap_or(usize::MAX),
        ..defaults
    }
}

/// The memory budget `args` ask for, or the one derived from the process's memory limit and
/// where that limit came from. Logged by `open_and_mount` once the mount is up, so that a mount
/// that fails prints its one error line and nothing else.
fn memory_budget(args: &MountArgs) -> (u64, Option<crate::fs::LimitSource>) {
    match args.memory_limit_mb {
        Some(mb) => (mb << 20, None),
        None => {
            let (budget, source) = crate::fs::MemoryBudget::derive();
            (budget, Some(source))
        }
    }
}

/// The kernel mount configuration `args` ask for.
pub fn mount_config(args: &MountArgs) -> mount::MountConfig {
    mount::MountConfig {
        mountpoint: args.mountpoint.clone(),
        fsname: format!("gcsfs:{}", args.bucket),
        fuser: args.fuser_config(),
        read_ahead: args.max_read_ahead_mb << 20,
        metrics: None,
    }
}

/// Opens the bucket and mounts it, checking the bucket while the kernel mount is set up.
/// Returns once the mount answers and the bucket passed its check; if the check fails, the
/// mount (which answered nothing but its root meanwhile) is taken down again.
pub async fn open_and_mount(
    store_args: &StoreArgs,
    args: &MountArgs,
) -> anyhow_free::Result<Mounted> {
    mount::check_mountpoint(&args.mountpoint)?;
    // Bound first: a port that is taken fails the start before anything is mounted.
    let listener = args.prometheus_port().map(metrics::bind).transpose()?;
    let only_dir = crate::fs::normalize_only_dir(args.only_dir.as_deref().unwrap_or(""));
    let OpenedBucket {
        store,
        check,
        retries,
    } = open_bucket(store_args, &args.bucket, &only_dir).await?;
    let (budget, budget_source) = memory_budget(args);
    let mut config = FsConfig {
        write_wait_limit: retry_config(store_args).upload_wait_limit(),
        memory_budget: budget,
        ..fs_config(args)
    };
    std::fs::create_dir_all(&config.temp_dir).map_err(|source| ServeError::TempDir {
        path: config.temp_dir.clone(),
        source,
    })?;
    // Staging files on a tmpfs are memory: they are then charged to the budget. (Logged once
    // the mount is up, with the budget.)
    let temp_dir_check = crate::fs::is_in_memory(&config.temp_dir);
    config.temp_dir_in_memory = matches!(temp_dir_check, Ok(true));
    let config_temp_dir = config.temp_dir.clone();
    let fs = Filesystem::shared(store, config, Arc::new(SystemClock));
    let rt = tokio::runtime::Handle::current();
    let fuse_metrics = listener.as_ref().map(|_| Arc::new(FuseMetrics::default()));
    let mcfg = mount::MountConfig {
        metrics: fuse_metrics.clone(),
        ..mount_config(args)
    };
    let mounting = tokio::task::spawn_blocking(move || mount::mount(fs, rt, &mcfg));
    let (mounted, checked) = futures::join!(mounting, check);
    let mounted = mounted.map_err(|e| ServeError::Join(e.to_string()))?;
    match checked.map_err(|e| ServeError::Join(e.to_string()))? {
        Ok(()) => {
            let mut mounted = mounted?;
            mounted.announce();
            if let (Some(listener), Some(fuse)) = (listener, fuse_metrics) {
                let metrics =
                    Metrics::for_mount(Arc::downgrade(mounted.filesystem()), Some(retries), &fuse);
                let port = args.prometheus_port().unwrap_or_default();
                tracing::info!(port, "serving metrics at http://0.0.0.0:{port}/metrics");
                tokio::spawn(metrics::serve(listener, Arc::new(metrics)));
            }
            let staging = match &temp_dir_check {
                Ok(true) => "in memory (tmpfs or ramfs): staged files count against the budget",
                Ok(false) => "on disk: staged files do not count against the budget",
                Err(_) => "not known (statfs failed): staged files do not count against the budget",
            };
            let temp_dir = config_temp_dir.display();
            match budget_source {
                Some(source) => tracing::info!(
                    budget_mib = budget >> 20,
                    %temp_dir,
                    "memory budget: half of {source} (set --memory-limit-mb to change it); --temp-dir {staging}"
                ),
                None => tracing::info!(
                    budget_mib = budget >> 20,
                    %temp_dir,
                    "memory budget: --memory-limit-mb; --temp-dir {staging}"
                ),
            }
            Ok(mounted)
        }
        Err(e) => {
            if let Ok(m) = mounted {
                // Nothing was written: the store's calls waited for the check.
                m.shutdown(Instant::now() + args.drain_timeout()).await;
            }
            Err(e.into())
        }
    }
}

/// Errors of the mount/serve glue.
pub mod anyhow_free {
    /// Result of the serve glue.
    pub type Result<T> = std::result::Result<T, super::ServeError>;
}

/// Why serving a mount failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    Metrics(#[from] metrics::BindError),
    #[error("temporary directory {path}: {source}")]
    TempDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mount task failed: {0}")]
    Join(String),
    #[error("{count} file(s) could not be uploaded before unmounting")]
    NotDrained { count: usize },
    #[error("signal handling: {0}")]
    Signal(#[source] std::io::Error),
    #[error("starting the background mount: {0}")]
    Spawn(#[source] std::io::Error),
}

/// Serves `mounted` until SIGINT/SIGTERM or an external unmount, then drains and unmounts
/// within `drain_timeout` (`--drain-timeout`) of it.
pub async fn serve_until_stopped(
    mounted: Mounted,
    drain_timeout: Duration,
) -> anyhow_free::Result<()> {
    let mut term = signal(SignalKind::terminate()).map_err(ServeError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServeError::Signal)?;
    let message = tokio::select! {
        _ = term.recv() => "SIGTERM: uploading dirty files and unmounting",
        _ = int.recv() => "SIGINT: uploading dirty files and unmounting",
        _ = mounted.ended() => "unmounted from outside; uploading dirty files",
    };
    let deadline = Instant::now() + drain_timeout;
    tracing::info!(timeout_ms = drain_timeout.as_millis() as u64, "{message}");
    check_drained(mounted.shutdown(deadline).await)
}

/// Turns drain failures into the exit error (each failure was already logged with its path).
pub fn check_drained(failures: Vec<DrainFailure>) -> anyhow_free::Result<()> {
    if failures.is_empty() {
        Ok(())
    } else {
        Err(ServeError::NotDrained {
            count: failures.len(),
        })
    }
}

/// Set by a background `gcsfs mount` for its foreground copy: the number of an inherited pipe
/// on which the copy writes one byte once the mount is ready (mounted, bucket checked). Its
/// presence also tells the copy that it serves a detached mount. Not a flag: users never set it.
const READY_FD_ENV: &str = "GCSFS_INTERNAL_READY_FD";

/// `gcsfs mount`: in the foreground, serve until stopped; otherwise start a copy of this process
/// in the foreground and return once the mount is ready (or with the copy's failure).
/// `log_file` is `--log-file` (where log lines go instead of stderr).
pub fn mount_main(cmd: MountCommand, log_file: Option<&Path>) -> anyhow_free::Result<()> {
    if !cmd.mount.foreground {
        mount::check_mountpoint(&cmd.mount.mountpoint)?;
        return spawn_background();
    }
    let detached = std::env::var_os(READY_FD_ENV).is_some();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("gcsfs-worker")
        .build()
        .map_err(ServeError::Spawn)?;
    let served = rt.block_on(async move {
        let mounted = open_and_mount(&cmd.store, &cmd.mount).await?;
        if detached {
            let_go_of_stdio(log_file.is_none());
        }
        report_ready();
        serve_until_stopped(mounted, cmd.mount.drain_timeout()).await
    });
    // The mount is gone (or detached): nothing is left to wait for, so a blocking task that is
    // stuck (a staging file on a hung disk) does not hold up the exit.
    rt.shutdown_timeout(RUNTIME_SHUTDOWN);
    served
}

/// How long the runtime may take to wind down once the mount is gone.
pub const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(500);

/// In a detached mount, once the mount is up: a stdout or stderr that is a terminal or a pipe
/// is pointed at `/dev/null`. The `gcsfs mount` that started this process has returned: the
/// terminal belongs to whatever runs there next (and may go away), and whoever reads the pipe
/// (`$(gcsfs mount …)`, `| tee`, a program capturing the output) waits for it to end, which it
/// never would while the daemon holds it. Until now they were kept, so that a failure to mount
/// reached the caller through the starting command. A regular file or a socket (systemd's
/// journal) is kept: someone set it up to collect the log. `logs_on_stderr`: log lines go to
/// stderr (no `--log-file`); a last one says that they are discarded from now on.
fn let_go_of_stdio(logs_on_stderr: bool) {
    let stdout = lets_go(std::io::stdout().as_fd());
    let stderr = lets_go(std::io::stderr().as_fd());
    if !stdout && !stderr {
        return;
    }
    if stderr && logs_on_stderr {
        tracing::info!(
            "mounted in the background: further log lines are discarded (--log-file PATH keeps them)"
        );
    }
    let null = match std::fs::OpenOptions::new().write(true).open("/dev/null") {
        Ok(f) => f,
        Err(error) => {
            tracing::warn!(%error, "cannot open /dev/null; keeping stdout and stderr");
            return;
        }
    };
    if stdout && let Err(error) = nix::unistd::dup2_stdout(&null) {
        tracing::warn!(%error, "cannot point stdout at /dev/null");
    }
    if stderr && let Err(error) = nix::unistd::dup2_stderr(&null) {
        tracing::warn!(%error, "cannot point stderr at /dev/null");
    }
}

/// Whether a detached daemon lets go of `fd` (stdout or stderr) once mounted: unless it is a
/// regular file or a socket.
fn lets_go(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    use nix::sys::stat::{SFlag, fstat};
    match fstat(fd) {
        Ok(st) => {
            let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
            kind != SFlag::S_IFREG && kind != SFlag::S_IFSOCK
        }
        // Not open (std keeps 0-2 open, so this is unexpected): nothing to let go of.
        Err(_) => false,
    }
}

/// Tells the background `gcsfs mount` that started this process that the mount is ready.
fn report_ready() {
    let Some(fd) = std::env::var_os(READY_FD_ENV) else {
        return;
    };
    let path = std::path::Path::new("/proc/self/fd").join(fd);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"1"));
    if let Err(error) = written {
        tracing::warn!(%error, "could not tell the starting process that the mount is ready");
    }
}

/// Re-runs this command with `--foreground` as a detached child and waits until it reports
/// the mount ready on a pipe (success), or the pipe closes without a word: the child failed
/// (its error line went to the inherited stderr) and its exit status is ours.
fn spawn_background() -> anyhow_free::Result<()> {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(ServeError::Spawn)?;
    let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
    args.push("--foreground".into());
    let (mut ready, ready_tx) = std::io::pipe().map_err(ServeError::Spawn)?;
    // The child inherits the pipe's write end (and only it: the read end stays close-on-exec).
    nix::fcntl::fcntl(
        &ready_tx,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .map_err(|e| ServeError::Spawn(e.into()))?;
    let mut child = std::process::Command::new(exe)
        .args(args)
        .env(READY_FD_ENV, ready_tx.as_raw_fd().to_string())
        .stdin(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(ServeError::Spawn)?;
    drop(ready_tx);
    let mut byte = [0u8; 1];
    if matches!(ready.read(&mut byte), Ok(1)) {
        return Ok(());
    }
    // The child already printed its one error line; exit with its status.
    let status = child.wait().map_err(ServeError::Spawn)?;
    std::process::exit(status.code().unwrap_or(1).max(1));
}
