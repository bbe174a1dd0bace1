//! The command line: `gcsfs [GLOBAL FLAGS] <mount|run> ...`.
//!
//! Flag names follow gcsfuse where the meaning is the same. Every flag can also be set through an
//! environment variable `GCSFS_<FLAG_IN_UPPER_SNAKE>` (a flag on the command line wins), and the
//! positional `BUCKET` and `MOUNTPOINT` through `BUCKET` and `MNT_DIR`. Values are parsed into
//! typed values here, so a bad value is a usage error (one line, exit status 2) before anything
//! starts. `docs/CONFIGURATION.md` lists every flag; a test keeps the two in step.

use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, CommandFactory as _, Parser, Subcommand};

use crate::logging::{LogFormat, Severity};

/// `gcsfs`: mount a Cloud Storage bucket with FUSE, or run a command with the bucket mounted.
#[derive(Debug, Parser)]
#[command(name = "gcsfs", version, about, propagate_version = true)]
pub struct Cli {
    /// Logging flags, accepted before or after the subcommand.
    #[command(flatten)]
    pub log: LogArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mount BUCKET at MOUNTPOINT (in the background unless --foreground).
    Mount(MountCommand),
    /// Mount BUCKET at MOUNTPOINT, run COMMAND, and on exit or SIGTERM stop it, upload what it
    /// wrote and unmount: a container entrypoint.
    Run(RunCommand),
}

/// Global logging flags.
#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Logging")]
pub struct LogArgs {
    /// Log line format; `auto` is text on a terminal, Cloud Logging JSON otherwise.
    /// Default: `auto`.
    #[arg(long, global = true, env = "GCSFS_LOG_FORMAT", value_name = "FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    /// Least severe messages logged (for gcsfs's own messages; dependencies log warnings and
    /// errors). A non-empty `RUST_LOG` overrides it. Default: `info`.
    #[arg(
        long,
        global = true,
        env = "GCSFS_LOG_SEVERITY",
        value_name = "LEVEL",
        value_enum,
        ignore_case = true,
        default_value_t = Severity::Info
    )]
    pub log_severity: Severity,
    /// Append log lines to this file instead of writing them to stderr (created if missing).
    /// Fatal errors are still printed to stderr too. Default: stderr; a background `mount`
    /// keeps writing there once mounted only if it is a regular file or a socket (not a
    /// terminal or a pipe).
    #[arg(long, global = true, env = "GCSFS_LOG_FILE", value_name = "PATH", value_parser = parse_log_file)]
    pub log_file: Option<PathBuf>,
}

/// `gcsfs mount`.
#[derive(Clone, Debug, Args)]
pub struct MountCommand {
    /// How to reach Cloud Storage.
    #[command(flatten)]
    pub store: StoreArgs,
    /// What to mount and how.
    #[command(flatten)]
    pub mount: MountArgs,
}

/// `gcsfs run`.
#[derive(Clone, Debug, Args)]
pub struct RunCommand {
    /// How to reach Cloud Storage.
    #[command(flatten)]
    pub store: StoreArgs,
    /// What to mount and how (`run` always stays in the foreground).
    #[command(flatten)]
    pub mount: MountArgs,
    /// How long COMMAND gets to exit after the forwarded signal before it is killed; part of
    /// --drain-timeout (the smaller of the two applies). Default: 5 s.
    #[arg(
        long = "child-stop-timeout",
        help_heading = "Run",
        env = "GCSFS_CHILD_STOP_TIMEOUT",
        value_name = "SECS",
        default_value_t = 5
    )]
    pub child_stop_timeout_secs: u64,
    /// The command to run, and its arguments, after `--`.
    #[arg(
        last = true,
        required = true,
        value_name = "COMMAND",
        display_order = 2,
        help_heading = "Arguments"
    )]
    pub command: Vec<OsString>,
}

impl RunCommand {
    /// `--drain-timeout` as a duration (see [`MountArgs::drain_timeout`]).
    pub fn drain_timeout(&self) -> Duration {
        self.mount.drain_timeout()
    }

    /// `--child-stop-timeout`, capped at `--drain-timeout`.
    pub fn child_stop_timeout(&self) -> Duration {
        Duration::from_secs(
            self.child_stop_timeout_secs
                .min(self.mount.drain_timeout_secs),
        )
    }
}

/// How to reach Cloud Storage.
#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Cloud Storage")]
pub struct StoreArgs {
    /// Cloud Storage endpoint instead of Google's, e.g. an emulator's `http://127.0.0.9`.
    /// Default: Google's production endpoint.
    #[arg(long, env = "GCSFS_CUSTOM_ENDPOINT", value_name = "URL", value_parser = parse_endpoint)]
    pub custom_endpoint: Option<String>,
    /// Send no credentials (public buckets, emulators). Default: off (Application Default
    /// Credentials, or --key-file).
    #[arg(long, env = "GCSFS_ANONYMOUS_ACCESS", value_parser = BoolishValueParser::new())]
    pub anonymous_access: bool,
    /// Service-account JSON key file to authenticate with. Default: Application Default
    /// Credentials.
    #[arg(long, env = "GCSFS_KEY_FILE", value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// Project billed for requests to requester-pays buckets. Default: none.
    #[arg(long, env = "GCSFS_BILLING_PROJECT", value_name = "ID", value_parser = parse_non_empty)]
    pub billing_project: Option<String>,
    /// How long a failing request is retried (with backoff) before the error is returned.
    /// Default: 60 s.
    #[arg(
        long,
        env = "GCSFS_RETRY_DEADLINE_SECS",
        value_name = "SECS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub retry_deadline_secs: u64,
    /// A transfer that moves no bytes for this long is abandoned and retried. Default: 30 s.
    #[arg(
        long,
        env = "GCSFS_STALL_TIMEOUT_SECS",
        value_name = "SECS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub stall_timeout_secs: u64,
}

impl StoreArgs {
    /// `--retry-deadline-secs` as a duration.
    pub fn retry_deadline(&self) -> Duration {
        Duration::from_secs(self.retry_deadline_secs)
    }

    /// `--stall-timeout-secs` as a duration.
    pub fn stall_timeout(&self) -> Duration {
        Duration::from_secs(self.stall_timeout_secs)
    }

    /// Checks up front that `--key-file`, if given, is a readable regular file.
    pub fn check_key_file(&self) -> Result<(), CliError> {
        match &self.key_file {
            Some(path) => check_readable_file(path),
            None => Ok(()),
        }
    }
}

/// What to mount and how.
#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Mount")]
pub struct MountArgs {
    /// The bucket's name (without `gs://`).
    #[arg(env = "BUCKET", value_parser = parse_bucket, display_order = 0, help_heading = "Arguments")]
    pub bucket: String,
    /// The directory to mount on.
    #[arg(env = "MNT_DIR", value_parser = parse_mountpoint, display_order = 1, help_heading = "Arguments")]
    pub mountpoint: PathBuf,
    /// Stay in the foreground instead of detaching (`run` always does). Default: off.
    #[arg(long, env = "GCSFS_FOREGROUND", value_parser = BoolishValueParser::new())]
    pub foreground: bool,
    /// Mount only this directory of the bucket (a key prefix such as `logs/2026`).
    /// Default: the whole bucket.
    #[arg(long, env = "GCSFS_ONLY_DIR", value_name = "PREFIX", value_parser = parse_only_dir)]
    pub only_dir: Option<String>,
    /// Accepted for gcsfuse compatibility; implicit directories are always on.
    #[arg(long, env = "GCSFS_IMPLICIT_DIRS", value_parser = BoolishValueParser::new())]
    pub implicit_dirs: bool,
    /// Where written files are staged before upload. Default: `$TMPDIR`, else `/tmp`.
    #[arg(long, env = "GCSFS_TEMP_DIR", value_name = "PATH")]
    pub temp_dir: Option<PathBuf>,
    /// Permission bits of files, in octal. Default: 0644.
    #[arg(long, env = "GCSFS_FILE_MODE", value_name = "MODE", default_value = "0644", value_parser = parse_mode)]
    pub file_mode: Mode,
    /// Permission bits of directories, in octal. Default: 0755.
    #[arg(long, env = "GCSFS_DIR_MODE", value_name = "MODE", default_value = "0755", value_parser = parse_mode)]
    pub dir_mode: Mode,
    /// Owner of every inode; -1 means the mounting user. Default: -1.
    #[arg(
        long,
        env = "GCSFS_UID",
        value_name = "UID",
        default_value = "-1",
        allow_negative_numbers = true,
        value_parser = parse_owner
    )]
    pub uid: Owner,
    /// Group of every inode; -1 means the mounting user's group. Default: -1.
    #[arg(
        long,
        env = "GCSFS_GID",
        value_name = "GID",
        default_value = "-1",
        allow_negative_numbers = true,
        value_parser = parse_owner
    )]
    pub gid: Owner,
    /// Largest number of objects a directory rename may copy (renaming a directory copies and
    /// deletes each object, not atomically); 0 forbids directory renames. Default: 10000.
    #[arg(
        long,
        env = "GCSFS_RENAME_DIR_LIMIT",
        value_name = "N",
        default_value_t = 10_000
    )]
    pub rename_dir_limit: u64,
    /// How long object and directory metadata is trusted before it is fetched again.
    /// Default: 60 s.
    #[arg(
        long,
        env = "GCSFS_METADATA_CACHE_TTL_SECS",
        value_name = "SECS",
        default_value_t = 60
    )]
    pub metadata_cache_ttl_secs: u64,
    /// How long "no such object" is remembered. Default: 5 s.
    #[arg(
        long,
        env = "GCSFS_METADATA_CACHE_NEGATIVE_TTL_SECS",
        value_name = "SECS",
        default_value_t = 5
    )]
    pub metadata_cache_negative_ttl_secs: u64,
    /// Mount options, comma-separated, repeatable: ro, rw, allow_other, allow_root,
    /// default_permissions, auto_unmount, [no]exec, [no]suid, [no]dev, [no]atime, sync, async,
    /// dirsync, fsname=NAME, subtype=NAME; fstab's defaults, auto, noauto, nofail, _netdev and
    /// x-* are accepted and ignored. Default: none (read-write).
    #[arg(short = 'o', long = "options", env = "GCSFS_OPTIONS", value_name = "OPTIONS", value_parser = parse_option_list)]
    pub options: Vec<MountOptionList>,
    /// How far ahead of a sequential reader data is fetched, in MiB: the kernel read-ahead
    /// gcsfs sets on its mount (into the page cache), or, where that cannot be set, gcsfs's own
    /// read-ahead. Default: 16 (measured faster than 128 for one reader and for four, with a
    /// third less memory: `benches/README.md`).
    #[arg(
        long,
        env = "GCSFS_MAX_READ_AHEAD_MB",
        value_name = "MIB",
        default_value_t = 16
    )]
    pub max_read_ahead_mb: u64,
    /// Memory for data fetched ahead of any read, across all open files, in MiB. Default: 64.
    #[arg(
        long,
        env = "GCSFS_PREFETCH_MEMORY_MB",
        value_name = "MIB",
        default_value_t = 64
    )]
    pub prefetch_memory_mb: u64,
    /// Inodes kept cached (names listed or looked up that the kernel no longer holds): past
    /// this, the least recently used go. About 560 bytes each. Inodes the kernel holds, open
    /// files and unsaved changes are kept whatever the bound. Default: 50000.
    #[arg(
        long,
        env = "GCSFS_MAX_CACHED_INODES",
        value_name = "N",
        default_value_t = 50_000,
        value_parser = clap::value_parser!(u64).range(64..=100_000_000)
    )]
    pub max_cached_inodes: u64,
    /// Memory for the data gcsfs holds (prefetched reads, new files and streamed uploads'
    /// buffers, uploads' copies), in MiB: one budget, in shares (see CONFIGURATION.md). Under
    /// it gcsfs slows down rather than grow. Default: half of the process's cgroup memory
    /// limit (v2 `memory.max`, v1 `memory.limit_in_bytes`), else of physical memory.
    #[arg(
        long,
        env = "GCSFS_MEMORY_LIMIT_MB",
        value_name = "MIB",
        value_parser = clap::value_parser!(u64).range(16..=1_048_576)
    )]
    pub memory_limit_mb: Option<u64>,
    /// Stream new files written sequentially straight into a resumable upload (past 4 MiB)
    /// instead of staging them in --temp-dir; `false` stages every new file. Default: true.
    #[arg(
        long,
        env = "GCSFS_STREAMING_WRITES",
        value_name = "BOOL",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = BoolishValueParser::new()
    )]
    pub streaming_writes: bool,
    /// When `close` returns: `sync`, once the file is in the bucket (as gcsfuse); `async`,
    /// once its data is staged, the upload running in the background (`fsync` still waits
    /// for it). Default: sync.
    #[arg(
        long,
        env = "GCSFS_WRITE_BACK",
        value_name = "MODE",
        value_enum,
        default_value_t = WriteBackMode::Sync
    )]
    pub write_back: WriteBackMode,
    /// With `--write-back async`: the longest a change waits before its file is queued for
    /// upload, even while still open; 0 turns the bound off. Default: 10.
    #[arg(
        long,
        env = "GCSFS_MAX_DIRTY_AGE_SECS",
        value_name = "SECS",
        default_value_t = 10
    )]
    pub max_dirty_age_secs: u64,
    /// Files uploaded at once: by the drain at shutdown, and by the background write-back.
    /// Default: 16.
    #[arg(
        long,
        env = "GCSFS_UPLOAD_CONCURRENCY",
        value_name = "N",
        default_value_t = 16,
        value_parser = clap::value_parser!(u16).range(1..=1024)
    )]
    pub upload_concurrency: u16,
    /// Threads serving FUSE requests. Default: 4.
    #[arg(
        long,
        env = "GCSFS_FUSE_THREADS",
        value_name = "N",
        default_value_t = 4,
        value_parser = clap::value_parser!(u16).range(1..=256)
    )]
    pub fuse_threads: u16,
    /// Total time from SIGTERM/SIGINT (or, for `mount`, an unmount from outside) to exit:
    /// for `run` stopping COMMAND, then uploading what was written and unmounting; files not
    /// uploaded by then are logged and the exit status is non-zero. Default: 8 s (Cloud Run
    /// sends SIGKILL 10 s after SIGTERM).
    #[arg(
        long = "drain-timeout",
        env = "GCSFS_DRAIN_TIMEOUT",
        value_name = "SECS",
        default_value_t = 8
    )]
    pub drain_timeout_secs: u64,
    /// Serve Prometheus metrics (OpenMetrics text) at `http://0.0.0.0:PORT/metrics`; 0 turns
    /// it off. A port that cannot be listened on is an error at start-up. Default: off.
    #[arg(
        long,
        env = "GCSFS_PROMETHEUS_PORT",
        value_name = "PORT",
        help_heading = "Metrics"
    )]
    pub prometheus_port: Option<u16>,
}

impl MountArgs {
    /// `--prometheus-port`, unless absent or 0 (metrics off).
    pub fn prometheus_port(&self) -> Option<u16> {
        self.prometheus_port.filter(|&port| port != 0)
    }

    /// The key prefix of `--only-dir` with its trailing `/` (`"logs/2026/"`), if given.
    pub fn only_dir_prefix(&self) -> Option<String> {
        self.only_dir.as_ref().map(|dir| format!("{dir}/"))
    }

    /// `--temp-dir`, or the system's temporary directory (`$TMPDIR`, else `/tmp`).
    pub fn temp_dir(&self) -> PathBuf {
        self.temp_dir.clone().unwrap_or_else(std::env::temp_dir)
    }

    /// `--metadata-cache-ttl-secs` as a duration.
    pub fn metadata_cache_ttl(&self) -> Duration {
        Duration::from_secs(self.metadata_cache_ttl_secs)
    }

    /// `--metadata-cache-negative-ttl-secs` as a duration.
    pub fn metadata_cache_negative_ttl(&self) -> Duration {
        Duration::from_secs(self.metadata_cache_negative_ttl_secs)
    }

    /// `--drain-timeout` as a duration: from the stop signal to the exit, drain and unmount
    /// included.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_timeout_secs)
    }

    /// Every `-o` option in the order given, fstab-only options left out.
    pub fn mount_options(&self) -> Vec<MountOption> {
        self.options
            .iter()
            .flat_map(|list| list.0.iter())
            .filter(|o| !matches!(o, MountOption::Ignored(_)))
            .cloned()
            .collect()
    }

    /// fuser's mount configuration: the `-o` options, who may use the mount (`allow_other`,
    /// `allow_root`; only the owner otherwise), the kernel's permission checks (see
    /// [`MountArgs::check_permissions`]) and `--fuse-threads`.
    pub fn fuser_config(&self) -> fuser::Config {
        let mut config = fuser::Config::default();
        let mut checks = false;
        for option in self.mount_options() {
            match option {
                MountOption::AllowOther => config.acl = fuser::SessionACL::All,
                MountOption::AllowRoot => config.acl = fuser::SessionACL::RootAndOwner,
                MountOption::DefaultPermissions => checks = true,
                other => config.mount_options.extend(other.to_fuser()),
            }
        }
        if checks || self.check_permissions() {
            config
                .mount_options
                .push(fuser::MountOption::DefaultPermissions);
        }
        config.n_threads = Some(usize::from(self.fuse_threads));
        config
    }

    /// Whether the kernel checks permission bits on the mount (`default_permissions`): when
    /// given, and always when other users can reach the mount (`allow_other`, `allow_root`),
    /// so that one user's files are not another's.
    pub fn check_permissions(&self) -> bool {
        self.mount_options().iter().any(|o| {
            matches!(
                o,
                MountOption::DefaultPermissions | MountOption::AllowOther | MountOption::AllowRoot
            )
        })
    }

    /// Whether the mount is read-only: the last of `-o ro` / `-o rw` wins; read-write if neither.
    pub fn read_only(&self) -> bool {
        self.mount_options()
            .iter()
            .rev()
            .find_map(|o| match o {
                MountOption::ReadOnly => Some(true),
                MountOption::ReadWrite => Some(false),
                _ => None,
            })
            .unwrap_or(false)
    }
}

/// `--write-back`: when `close` returns.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum WriteBackMode {
    /// Once the file is in the bucket.
    Sync,
    /// Once the file's data is staged; uploaded in the background.
    Async,
}

impl From<WriteBackMode> for crate::fs::WriteBack {
    fn from(m: WriteBackMode) -> Self {
        match m {
            WriteBackMode::Sync => crate::fs::WriteBack::Sync,
            WriteBackMode::Async => crate::fs::WriteBack::Async,
        }
    }
}

/// Permission bits (`0o000..=0o777`) for files or directories.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Mode(u32);

impl Mode {
    /// The bits, e.g. `0o644`.
    pub fn bits(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

/// The owner (user or group) given to every inode.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Owner {
    /// The user (or group) that mounted the bucket (`-1`, the default).
    MountingUser,
    /// This numeric id.
    Id(u32),
}

impl Owner {
    /// The id to use, given the mounting user's (or group's) id.
    pub fn resolve(self, mounting: u32) -> u32 {
        match self {
            Owner::MountingUser => mounting,
            Owner::Id(id) => id,
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::MountingUser => f.write_str("-1"),
            Owner::Id(id) => write!(f, "{id}"),
        }
    }
}

/// One `-o` option.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum MountOption {
    /// `ro`: read-only.
    ReadOnly,
    /// `rw`: read-write (the default).
    ReadWrite,
    /// `allow_other`: users other than the mounting one may access the mount.
    AllowOther,
    /// `allow_root`: root may access the mount too.
    AllowRoot,
    /// `default_permissions`: the kernel checks permission bits.
    DefaultPermissions,
    /// `auto_unmount`: unmount when the gcsfs process exits.
    AutoUnmount,
    /// `exec`.
    Exec,
    /// `noexec`.
    NoExec,
    /// `suid`.
    Suid,
    /// `nosuid`.
    NoSuid,
    /// `dev`.
    Dev,
    /// `nodev`.
    NoDev,
    /// `atime`.
    Atime,
    /// `noatime`.
    NoAtime,
    /// `sync`.
    Sync,
    /// `async`.
    Async,
    /// `dirsync`.
    DirSync,
    /// `fsname=NAME`: the source shown in the mount table.
    FsName(String),
    /// `subtype=NAME`: the filesystem subtype shown in the mount table.
    Subtype(String),
    /// An fstab-only option (`defaults`, `auto`, `noauto`, `nofail`, `_netdev`, `x-*`): ignored.
    Ignored(String),
}

impl MountOption {
    /// The option as a fuser mount option; `None` for ignored fstab options and for
    /// `allow_other`/`allow_root`, which fuser takes as [`fuser::Config::acl`] (see
    /// [`MountArgs::fuser_config`]).
    pub fn to_fuser(&self) -> Option<fuser::MountOption> {
        use fuser::MountOption as F;
        Some(match self {
            MountOption::ReadOnly => F::RO,
            MountOption::ReadWrite => F::RW,
            MountOption::DefaultPermissions => F::DefaultPermissions,
            MountOption::AutoUnmount => F::AutoUnmount,
            MountOption::Exec => F::Exec,
            MountOption::NoExec => F::NoExec,
            MountOption::Suid => F::Suid,
            MountOption::NoSuid => F::NoSuid,
            MountOption::Dev => F::Dev,
            MountOption::NoDev => F::NoDev,
            MountOption::Atime => F::Atime,
            MountOption::NoAtime => F::NoAtime,
            MountOption::Sync => F::Sync,
            MountOption::Async => F::Async,
            MountOption::DirSync => F::DirSync,
            MountOption::FsName(name) => F::FSName(name.clone()),
            MountOption::Subtype(name) => F::Subtype(name.clone()),
            MountOption::AllowOther | MountOption::AllowRoot | MountOption::Ignored(_) => {
                return None;
            }
        })
    }
}

/// The options of one `-o` value (a comma-separated list).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MountOptionList(pub Vec<MountOption>);

/// Errors found after parsing, before anything starts.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// `--key-file` cannot be opened for reading.
    #[error("key file {}: cannot be read", path.display())]
    KeyFileUnreadable {
        /// The path given.
        path: PathBuf,
        /// Why it cannot be read.
        #[source]
        source: std::io::Error,
    },
    /// `--key-file` is not a regular file.
    #[error("key file {}: not a regular file", path.display())]
    KeyFileNotRegular {
        /// The path given.
        path: PathBuf,
    },
}

impl Cli {
    /// Parses `args` (the program name first) and applies the rules that span several flags.
    /// A returned error is a usage error: report it with [`usage_error_line`], exit status 2
    /// (help and version requests come back as errors too; see [`clap::Error::use_stderr`]).
    pub fn try_parse_validated<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let cli = Cli::try_parse_from(args)?;
        cli.validate()?;
        Ok(cli)
    }

    fn validate(&self) -> Result<(), clap::Error> {
        let (store, mount) = match &self.command {
            Command::Mount(c) => (&c.store, &c.mount),
            Command::Run(c) => (&c.store, &c.mount),
        };
        let conflict = |message: &str| {
            Err(Cli::command().error(clap::error::ErrorKind::ArgumentConflict, message))
        };
        if store.anonymous_access && store.key_file.is_some() {
            return conflict("--anonymous-access and --key-file cannot be used together");
        }
        let options = mount.mount_options();
        if options.contains(&MountOption::AllowOther) && options.contains(&MountOption::AllowRoot) {
            return conflict("-o allow_other and -o allow_root cannot be used together");
        }
        Ok(())
    }
}

/// A clap error as one line (`error: ` prefix, usage and help hints dropped), for stderr.
pub fn usage_error_line(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    let body = rendered.split("\nUsage:").next().unwrap_or_default();
    let body = body
        .split("\nFor more information")
        .next()
        .unwrap_or_default();
    let words: Vec<&str> = body.split_whitespace().collect();
    let line = words.join(" ");
    line.strip_prefix("error: ").unwrap_or(&line).to_owned()
}

fn check_readable_file(path: &Path) -> Result<(), CliError> {
    let file = File::open(path).map_err(|source| CliError::KeyFileUnreadable {
        path: path.to_owned(),
        source,
    })?;
    let metadata = file
        .metadata()
        .map_err(|source| CliError::KeyFileUnreadable {
            path: path.to_owned(),
            source,
        })?;
    if !metadata.is_file() {
        return Err(CliError::KeyFileNotRegular {
            path: path.to_owned(),
        });
    }
    Ok(())
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(format!("{s:?} is not an octal mode such as 0644"));
    }
    let bits = u32::from_str_radix(digits, 8).unwrap_or(u32::MAX);
    if bits > 0o777 {
        return Err(format!("{s:?} is not a mode between 0000 and 0777"));
    }
    Ok(Mode(bits))
}

fn parse_owner(s: &str) -> Result<Owner, String> {
    match s.trim().parse::<i64>() {
        Ok(-1) => Ok(Owner::MountingUser),
        // u32::MAX is (uid_t)-1, which the kernel treats as "no id".
        Ok(id) if (0..i64::from(u32::MAX)).contains(&id) => Ok(Owner::Id(id as u32)),
        _ => Err(format!(
            "{s:?} is not a numeric id (or -1 for the mounting user)"
        )),
    }
}

fn parse_bucket(s: &str) -> Result<String, String> {
    if s.starts_with("gs://") {
        return Err(format!("give the bucket's name without gs:// (got {s:?})"));
    }
    let valid_chars = s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    let alnum = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !(3..=222).contains(&s.len())
        || !valid_chars
        || !alnum(s.as_bytes().first())
        || !alnum(s.as_bytes().last())
    {
        return Err(format!(
            "{s:?} is not a bucket name (3-222 characters: a-z, 0-9, '-', '_', '.', starting and ending with a letter or digit)"
        ));
    }
    Ok(s.to_owned())
}

fn parse_mountpoint(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("the mount point must not be empty".to_owned());
    }
    Ok(PathBuf::from(s))
}

fn parse_log_file(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("the log file path must not be empty".to_owned());
    }
    Ok(PathBuf::from(s))
}

fn parse_only_dir(s: &str) -> Result<String, String> {
    let trimmed = s.trim_matches('/');
    if trimmed.is_empty() {
        return Err(format!("{s:?} names no directory"));
    }
    if trimmed
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(format!(
            "{s:?} must be a plain path like logs/2026 (no empty, '.' or '..' parts)"
        ));
    }
    Ok(trimmed.to_owned())
}

fn parse_non_empty(s: &str) -> Result<String, String> {
    let trimmed = s.trim();
    if trimmed.is_empty() {
        return Err("must not be empty".to_owned());
    }
    Ok(trimmed.to_owned())
}

fn parse_endpoint(s: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "{s:?} is not an http:// or https:// URL with a host"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{s:?} must not have a query or fragment"));
    }
    Ok(s.to_owned())
}

fn parse_option_list(s: &str) -> Result<MountOptionList, String> {
    s.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(parse_option)
        .collect::<Result<Vec<_>, _>>()
        .map(MountOptionList)
}

fn parse_option(item: &str) -> Result<MountOption, String> {
    let named = |value: &str, make: fn(String) -> MountOption| {
        if value.is_empty() || value.contains(char::is_whitespace) {
            Err(format!("mount option {item:?} needs a name without spaces"))
        } else {
            Ok(make(value.to_owned()))
        }
    };
    if let Some(value) = item.strip_prefix("fsname=") {
        return named(value, MountOption::FsName);
    }
    if let Some(value) = item.strip_prefix("subtype=") {
        return named(value, MountOption::Subtype);
    }
    if item.starts_with("x-") {
        return Ok(MountOption::Ignored(item.to_owned()));
    }
    Ok(match item {
        "ro" => MountOption::ReadOnly,
        "rw" => MountOption::ReadWrite,
        "allow_other" => MountOption::AllowOther,
        "allow_root" => MountOption::AllowRoot,
        "default_permissions" => MountOption::DefaultPermissions,
        "auto_unmount" => MountOption::AutoUnmount,
        "exec" => MountOption::Exec,
        "noexec" => MountOption::NoExec,
        "suid" => MountOption::Suid,
        "nosuid" => MountOption::NoSuid,
        "dev" => MountOption::Dev,
        "nodev" => MountOption::NoDev,
        "atime" => MountOption::Atime,
        "noatime" => MountOption::NoAtime,
        "sync" => MountOption::Sync,
        "async" => MountOption::Async,
        "dirsync" => MountOption::DirSync,
        "defaults" | "auto" | "noauto" | "nofail" | "_netdev" => {
            MountOption::Ignored(item.to_owned())
        }
        _ => return Err(format!("unknown mount option {item:?}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command as Process;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_validated(std::iter::once("gcsfs").chain(args.iter().copied()))
    }

    fn mount(args: &[&str]) -> MountCommand {
        match parse(&[&["mount"], args].concat())
            .unwrap_or_else(|e| panic!("{e}"))
            .command
        {
            Command::Mount(m) => m,
            Command::Run(_) => panic!("parsed as run"),
        }
    }

    fn run(args: &[&str]) -> RunCommand {
        match parse(&[&["run"], args].concat())
            .unwrap_or_else(|e| panic!("{e}"))
            .command
        {
            Command::Run(r) => r,
            Command::Mount(_) => panic!("parsed as mount"),
        }
    }

    fn rejected(args: &[&str]) -> String {
        match parse(args) {
            Ok(cli) => panic!("{args:?} accepted: {cli:?}"),
            Err(e) => {
                assert_eq!(e.exit_code(), 2, "{e}");
                usage_error_line(&e)
            }
        }
    }

    /// Runs the ignored test `name` in a child process with only `env` set; checks it passed.
    fn in_child(name: &str, env: &[(&str, &str)]) {
        let output = Process::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--ignored", "--test-threads=1"])
            .env_clear()
            .env("GCSFS_CLI_TEST_CHILD", "1")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{name} failed:\n{stdout}\n{stderr}"
        );
        assert!(stdout.contains("1 passed"), "{name} did not run:\n{stdout}");
    }

    /// Whether this process is a child started by [`in_child`].
    fn is_child() -> bool {
        std::env::var_os("GCSFS_CLI_TEST_CHILD").is_some()
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_with_an_empty_environment() {
        in_child("cli::tests::child_defaults", &[]);
    }

    #[test]
    #[ignore = "run by defaults_with_an_empty_environment in a child process"]
    fn child_defaults() {
        if !is_child() {
            return;
        }
        let cli = parse(&["mount", "my-bucket", "/mnt/gcs"]).unwrap();
        assert_eq!(cli.log.log_format, LogFormat::Auto);
        assert_eq!(cli.log.log_severity, Severity::Info);
        assert_eq!(cli.log.log_file, None);
        let Command::Mount(MountCommand { store, mount }) = cli.command else {
            panic!("not mount")
        };
        assert_eq!(store.custom_endpoint, None);
        assert!(!store.anonymous_access);
        assert_eq!(store.key_file, None);
        assert_eq!(store.billing_project, None);
        assert_eq!(store.retry_deadline(), Duration::from_secs(60));
        assert_eq!(store.stall_timeout(), Duration::from_secs(30));
        assert_eq!(mount.bucket, "my-bucket");
        assert_eq!(mount.mountpoint, PathBuf::from("/mnt/gcs"));
        assert!(!mount.foreground);
        assert_eq!(mount.only_dir, None);
        assert_eq!(mount.only_dir_prefix(), None);
        assert!(!mount.implicit_dirs);
        assert_eq!(mount.temp_dir(), PathBuf::from("/tmp"));
        assert_eq!(mount.file_mode.bits(), 0o644);
        assert_eq!(mount.dir_mode.bits(), 0o755);
        assert_eq!(mount.uid, Owner::MountingUser);
        assert_eq!(mount.gid, Owner::MountingUser);
        assert_eq!(mount.rename_dir_limit, 10_000);
        assert_eq!(mount.metadata_cache_ttl(), Duration::from_secs(60));
        assert_eq!(mount.metadata_cache_negative_ttl(), Duration::from_secs(5));
        assert!(mount.mount_options().is_empty());
        assert!(!mount.read_only());
        assert_eq!(mount.max_read_ahead_mb, 16);
        assert_eq!(mount.prefetch_memory_mb, 64);
        assert_eq!(mount.max_cached_inodes, 50_000);
        assert_eq!(mount.memory_limit_mb, None);
        assert!(mount.streaming_writes);
        assert_eq!(mount.upload_concurrency, 16);
        assert_eq!(mount.write_back, WriteBackMode::Sync);
        assert_eq!(mount.max_dirty_age_secs, 10);
        assert_eq!(mount.fuse_threads, 4);
        assert_eq!(mount.drain_timeout(), Duration::from_secs(8));

        let r = run(&["b-1", "/m", "--", "app"]);
        assert_eq!(r.drain_timeout(), Duration::from_secs(8));
        assert_eq!(r.child_stop_timeout(), Duration::from_secs(5));
        assert_eq!(r.command, vec![OsString::from("app")]);

        // Without BUCKET/MNT_DIR in the environment the positionals are required.
        let line = rejected(&["mount"]);
        assert!(
            line.contains("<BUCKET>") && line.contains("<MOUNTPOINT>"),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn flags_from_the_environment() {
        in_child(
            "cli::tests::child_env",
            &[
                ("BUCKET", "env-bucket"),
                ("MNT_DIR", "/mnt/env"),
                ("GCSFS_LOG_FORMAT", "json"),
                ("GCSFS_LOG_SEVERITY", "WARNING"),
                ("GCSFS_LOG_FILE", "/var/log/gcsfs.log"),
                ("GCSFS_CUSTOM_ENDPOINT", "http://127.0.0.9"),
                ("GCSFS_ANONYMOUS_ACCESS", "true"),
                ("GCSFS_BILLING_PROJECT", "payer"),
                ("GCSFS_RETRY_DEADLINE_SECS", "7"),
                ("GCSFS_STALL_TIMEOUT_SECS", "3"),
                ("GCSFS_FOREGROUND", "1"),
                ("GCSFS_ONLY_DIR", "/a/b/"),
                ("GCSFS_IMPLICIT_DIRS", "true"),
                ("GCSFS_TEMP_DIR", "/var/tmp/x"),
                ("GCSFS_FILE_MODE", "600"),
                ("GCSFS_DIR_MODE", "0o700"),
                ("GCSFS_UID", "1000"),
                ("GCSFS_GID", "-1"),
                ("GCSFS_RENAME_DIR_LIMIT", "0"),
                ("GCSFS_METADATA_CACHE_TTL_SECS", "0"),
                ("GCSFS_METADATA_CACHE_NEGATIVE_TTL_SECS", "1"),
                ("GCSFS_OPTIONS", "ro,allow_other"),
                ("GCSFS_MAX_READ_AHEAD_MB", "8"),
                ("GCSFS_PREFETCH_MEMORY_MB", "32"),
                ("GCSFS_MAX_CACHED_INODES", "1000"),
                ("GCSFS_STREAMING_WRITES", "false"),
                ("GCSFS_FUSE_THREADS", "2"),
                ("GCSFS_DRAIN_TIMEOUT", "9"),
                ("GCSFS_CHILD_STOP_TIMEOUT", "20"),
                ("TMPDIR", "/ignored/because/of/temp-dir"),
            ],
        );
    }

    #[test]
    #[ignore = "run by flags_from_the_environment in a child process"]
    fn child_env() {
        if !is_child() {
            return;
        }
        // `gcsfs run -- COMMAND` is the container entrypoint: everything else from the env.
        let cli = parse(&["run", "--", "/usr/local/bin/app", "--port", "8080"]).unwrap();
        assert_eq!(cli.log.log_format, LogFormat::Json);
        assert_eq!(cli.log.log_severity, Severity::Warning);
        assert_eq!(
            cli.log.log_file.as_deref(),
            Some(Path::new("/var/log/gcsfs.log"))
        );
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        assert_eq!(
            r.command,
            ["/usr/local/bin/app", "--port", "8080"].map(OsString::from)
        );
        assert_eq!(r.drain_timeout(), Duration::from_secs(9));
        assert_eq!(
            r.child_stop_timeout(),
            Duration::from_secs(9),
            "capped at the drain timeout"
        );
        let (store, m) = (r.store, r.mount);
        assert_eq!(store.custom_endpoint.as_deref(), Some("http://127.0.0.9"));
        assert!(store.anonymous_access);
        assert_eq!(store.billing_project.as_deref(), Some("payer"));
        assert_eq!(store.retry_deadline(), Duration::from_secs(7));
        assert_eq!(store.stall_timeout(), Duration::from_secs(3));
        assert_eq!(m.bucket, "env-bucket");
        assert_eq!(m.mountpoint, PathBuf::from("/mnt/env"));
        assert!(m.foreground);
        assert_eq!(m.only_dir.as_deref(), Some("a/b"));
        assert_eq!(m.only_dir_prefix().as_deref(), Some("a/b/"));
        assert!(m.implicit_dirs);
        assert_eq!(m.temp_dir(), PathBuf::from("/var/tmp/x"));
        assert_eq!(m.file_mode.bits(), 0o600);
        assert_eq!(m.dir_mode.bits(), 0o700);
        assert_eq!(m.uid, Owner::Id(1000));
        assert_eq!(m.gid, Owner::MountingUser);
        assert_eq!(m.rename_dir_limit, 0);
        assert_eq!(m.metadata_cache_ttl(), Duration::ZERO);
        assert_eq!(m.metadata_cache_negative_ttl(), Duration::from_secs(1));
        assert_eq!(
            m.mount_options(),
            [MountOption::ReadOnly, MountOption::AllowOther]
        );
        assert!(m.read_only());
        assert_eq!(m.max_read_ahead_mb, 8);
        assert_eq!(m.prefetch_memory_mb, 32);
        assert_eq!(m.max_cached_inodes, 1000);
        assert!(!m.streaming_writes);
        assert_eq!(m.fuse_threads, 2);
        assert_eq!(m.drain_timeout(), Duration::from_secs(9));

        // A flag on the command line wins over its variable; false-y values turn flags off.
        let m = mount(&["--file-mode", "0640", "other-bucket", "/x"]).mount;
        assert_eq!(m.file_mode.bits(), 0o640);
        assert_eq!(m.bucket, "other-bucket");
    }

    #[test]
    fn false_values_in_the_environment_turn_flags_off() {
        in_child(
            "cli::tests::child_env_false",
            &[
                ("GCSFS_ANONYMOUS_ACCESS", "false"),
                ("GCSFS_FOREGROUND", "0"),
            ],
        );
    }

    #[test]
    #[ignore = "run by false_values_in_the_environment_turn_flags_off in a child process"]
    fn child_env_false() {
        if !is_child() {
            return;
        }
        let m = mount(&["--key-file", "/k.json", "bkt", "/m"]);
        assert!(!m.store.anonymous_access);
        assert!(!m.mount.foreground);
        assert_eq!(m.store.key_file, Some(PathBuf::from("/k.json")));
    }

    #[test]
    fn global_flags_go_before_or_after_the_subcommand() {
        let before = parse(&["--log-format", "text", "mount", "bkt", "/m"]).unwrap();
        let after = parse(&["mount", "bkt", "/m", "--log-severity", "debug"]).unwrap();
        assert_eq!(before.log.log_format, LogFormat::Text);
        assert_eq!(after.log.log_severity, Severity::Debug);
        let warn = parse(&["--log-severity", "warn", "mount", "bkt", "/m"]).unwrap();
        assert_eq!(warn.log.log_severity, Severity::Warning);
        let off = parse(&["--log-severity=OFF", "mount", "bkt", "/m"]).unwrap();
        assert_eq!(off.log.log_severity, Severity::Off);
    }

    #[test]
    fn log_file_goes_before_or_after_the_subcommand() {
        let before = parse(&["--log-file", "/var/log/g.log", "mount", "bkt", "/m"]).unwrap();
        assert_eq!(before.log.log_file, Some(PathBuf::from("/var/log/g.log")));
        let after = parse(&["run", "bkt", "/m", "--log-file=rel.log", "--", "app"]).unwrap();
        assert_eq!(after.log.log_file, Some(PathBuf::from("rel.log")));
        let line = rejected(&["--log-file", "", "mount", "bkt", "/m"]);
        assert!(line.contains("--log-file"), "{line}");
        assert!(line.contains("must not be empty"), "{line}");
    }

    #[test]
    fn octal_modes() {
        for (text, bits) in [
            ("644", 0o644),
            ("0644", 0o644),
            ("0o600", 0o600),
            ("0", 0),
            ("777", 0o777),
        ] {
            assert_eq!(parse_mode(text).unwrap().bits(), bits, "{text}");
        }
        for bad in [
            "",
            "0o",
            "888",
            "1777",
            "0x1ff",
            "rw-r--r--",
            "-644",
            "+644",
            " 644",
        ] {
            assert!(parse_mode(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(Mode(0o644).to_string(), "0644");
        assert_eq!(Mode(0o7).to_string(), "0007");
        let m = mount(&["--file-mode=0600", "--dir-mode", "700", "bkt", "/m"]).mount;
        assert_eq!((m.file_mode.bits(), m.dir_mode.bits()), (0o600, 0o700));
        let line = rejected(&["mount", "--file-mode", "999", "bkt", "/m"]);
        assert!(
            line.contains("--file-mode") && line.contains("octal"),
            "{line}"
        );
    }

    #[test]
    fn owners() {
        let m = mount(&["--uid", "-1", "--gid", "0", "bkt", "/m"]).mount;
        assert_eq!(m.uid, Owner::MountingUser);
        assert_eq!(m.gid, Owner::Id(0));
        assert_eq!(m.uid.resolve(501), 501);
        assert_eq!(m.gid.resolve(501), 0);
        let m = mount(&["--uid=4294967294", "bkt", "/m"]).mount;
        assert_eq!(m.uid, Owner::Id(u32::MAX - 1));
        for bad in ["-2", "4294967295", "root", "1.5", ""] {
            assert!(parse_owner(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(Owner::MountingUser.to_string(), "-1");
    }

    #[test]
    fn mount_option_lists() {
        let m = mount(&[
            "-o",
            "ro,allow_other",
            "-o",
            "default_permissions",
            "-o=rw",
            "bkt",
            "/m",
        ])
        .mount;
        assert_eq!(
            m.mount_options(),
            [
                MountOption::ReadOnly,
                MountOption::AllowOther,
                MountOption::DefaultPermissions,
                MountOption::ReadWrite
            ]
        );
        assert!(!m.read_only(), "the last of ro/rw wins");
        let config = m.fuser_config();
        assert_eq!(config.acl, fuser::SessionACL::All);
        assert_eq!(
            config.mount_options,
            [
                fuser::MountOption::RO,
                fuser::MountOption::RW,
                fuser::MountOption::DefaultPermissions,
            ]
        );
        assert!(m.check_permissions());
        let m = mount(&["-o", "allow_root", "--fuse-threads", "8", "bkt", "/m"]).mount;
        assert_eq!(m.fuser_config().acl, fuser::SessionACL::RootAndOwner);
        assert_eq!(m.fuser_config().n_threads, Some(8));
        // Other users can reach it: the kernel checks permissions, whether asked or not.
        assert!(m.check_permissions());
        assert_eq!(
            m.fuser_config().mount_options,
            [fuser::MountOption::DefaultPermissions]
        );
        let m = mount(&["bkt", "/m"]).mount;
        assert!(!m.check_permissions());
        assert!(m.fuser_config().mount_options.is_empty());

        let m = mount(&[
            "--options",
            " noexec, ,nodev,fsname=gcs,subtype=gcsfs,_netdev,x-systemd.automount,ro ",
            "bkt",
            "/m",
        ])
        .mount;
        let config = m.fuser_config();
        assert_eq!(config.acl, fuser::SessionACL::Owner);
        assert_eq!(config.n_threads, Some(4));
        assert_eq!(
            config.mount_options,
            [
                fuser::MountOption::NoExec,
                fuser::MountOption::NoDev,
                fuser::MountOption::FSName("gcs".into()),
                fuser::MountOption::Subtype("gcsfs".into()),
                fuser::MountOption::RO,
            ]
        );
        assert!(m.read_only());
        assert_eq!(m.options[0].0[4], MountOption::Ignored("_netdev".into()));

        let line = rejected(&["mount", "-o", "ro,bogus", "bkt", "/m"]);
        assert!(line.contains("unknown mount option \"bogus\""), "{line}");
        assert!(!line.contains('\n'));
        assert!(parse_option("fsname=").is_err());
        assert!(parse_option("subtype=a b").is_err());
        assert!(
            parse_option("RO").is_err(),
            "options are case-sensitive like mount(8)"
        );
        let line = rejected(&[
            "mount",
            "-o",
            "allow_other",
            "-o",
            "allow_root",
            "bkt",
            "/m",
        ]);
        assert!(
            line.contains("allow_other") && line.contains("allow_root"),
            "{line}"
        );
    }

    #[test]
    fn bucket_names() {
        for ok in ["abc", "my-bucket_1", "a.b.c", "0ab"] {
            assert_eq!(parse_bucket(ok).unwrap(), ok);
        }
        for bad in [
            "ab",
            "gs://bucket",
            "Bucket",
            "-abc",
            "abc-",
            "a b c",
            "a/b",
            &"a".repeat(223),
        ] {
            assert!(parse_bucket(bad).is_err(), "{bad:?} accepted");
        }
        let line = rejected(&["mount", "gs://b", "/m"]);
        assert!(line.contains("without gs://"), "{line}");
    }

    #[test]
    fn only_dir_prefixes() {
        assert_eq!(parse_only_dir("logs").unwrap(), "logs");
        assert_eq!(parse_only_dir("/logs/2026/").unwrap(), "logs/2026");
        for bad in ["", "/", "//", "a//b", "a/../b", "./a", "a/.."] {
            assert!(parse_only_dir(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn store_flags() {
        let m = mount(&[
            "--custom-endpoint",
            "https://storage.example.com:8443/",
            "--billing-project",
            " payer ",
            "--retry-deadline-secs",
            "5",
            "--stall-timeout-secs=2",
            "bkt",
            "/m",
        ]);
        assert_eq!(
            m.store.custom_endpoint.as_deref(),
            Some("https://storage.example.com:8443/")
        );
        assert_eq!(m.store.billing_project.as_deref(), Some("payer"));
        assert_eq!(m.store.retry_deadline(), Duration::from_secs(5));
        assert_eq!(m.store.stall_timeout(), Duration::from_secs(2));
        for bad in [
            "127.0.0.9",
            "ftp://host",
            "http://",
            "http://h/?a=b",
            "not a url",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad:?} accepted");
        }
        rejected(&["mount", "--retry-deadline-secs", "0", "bkt", "/m"]);
        rejected(&["mount", "--stall-timeout-secs", "-1", "bkt", "/m"]);
        rejected(&["mount", "--billing-project", " ", "bkt", "/m"]);
        let line = rejected(&[
            "mount",
            "--anonymous-access",
            "--key-file",
            "/k",
            "bkt",
            "/m",
        ]);
        assert!(
            line.contains("--anonymous-access") && line.contains("--key-file"),
            "{line}"
        );
    }

    #[test]
    fn numbers_are_validated() {
        rejected(&["mount", "--fuse-threads", "0", "bkt", "/m"]);
        rejected(&["mount", "--fuse-threads", "257", "bkt", "/m"]);
        rejected(&["mount", "--rename-dir-limit", "-5", "bkt", "/m"]);
        rejected(&["mount", "--metadata-cache-ttl-secs", "1m", "bkt", "/m"]);
        rejected(&["run", "--drain-timeout", "x", "bkt", "/m", "--", "app"]);
        rejected(&["mount", "--drain-timeout", "-1", "bkt", "/m"]);
        rejected(&["--log-format", "xml", "mount", "bkt", "/m"]);
        rejected(&["--log-severity", "verbose", "mount", "bkt", "/m"]);
    }

    #[test]
    fn prometheus_port() {
        assert_eq!(mount(&["bkt", "/m"]).mount.prometheus_port(), None);
        assert_eq!(
            mount(&["--prometheus-port", "0", "bkt", "/m"])
                .mount
                .prometheus_port(),
            None
        );
        let m = mount(&["--prometheus-port", "9101", "bkt", "/m"]);
        assert_eq!(m.mount.prometheus_port(), Some(9101));
        let r = run(&["--prometheus-port=9102", "bkt", "/m", "--", "app"]);
        assert_eq!(r.mount.prometheus_port(), Some(9102));
        rejected(&["mount", "--prometheus-port", "-1", "bkt", "/m"]);
        for bad in ["x", "65536", "", "80a"] {
            let line = rejected(&["mount", "--prometheus-port", bad, "bkt", "/m"]);
            assert!(line.contains("--prometheus-port"), "{bad:?}: {line}");
            assert!(!line.contains('\n'), "{line}");
        }
    }

    #[test]
    fn mount_and_run_share_the_drain_timeout() {
        let m = mount(&["--drain-timeout", "2", "bkt", "/m"]);
        assert_eq!(m.mount.drain_timeout(), Duration::from_secs(2));
        let r = run(&["--drain-timeout=0", "bkt", "/m", "--", "app"]);
        assert_eq!(r.drain_timeout(), Duration::ZERO);
        assert_eq!(
            r.child_stop_timeout(),
            Duration::ZERO,
            "capped at the drain"
        );
    }

    #[test]
    fn run_needs_a_command_after_the_separator() {
        let r = run(&[
            "--drain-timeout",
            "3",
            "bkt",
            "/m",
            "--",
            "sh",
            "-c",
            "echo --not-a-flag",
        ]);
        assert_eq!(r.mount.bucket, "bkt");
        assert_eq!(
            r.command,
            ["sh", "-c", "echo --not-a-flag"].map(OsString::from)
        );
        assert_eq!(r.drain_timeout(), Duration::from_secs(3));
        assert_eq!(r.child_stop_timeout(), Duration::from_secs(3));
        let line = rejected(&["run", "bkt", "/m"]);
        assert!(line.contains("<COMMAND>"), "{line}");
        rejected(&["run", "bkt", "/m", "app"]);
    }

    #[test]
    fn help_and_version_are_not_usage_errors() {
        for args in [&["--help"][..], &["mount", "--help"], &["--version"]] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.exit_code(), 0, "{args:?}");
            assert!(!err.use_stderr(), "{args:?}");
        }
    }

    #[test]
    fn usage_errors_become_one_line() {
        let line = rejected(&["mount", "--no-such-flag", "bkt", "/m"]);
        assert!(
            line.starts_with("unexpected argument '--no-such-flag'"),
            "{line}"
        );
        assert!(
            !line.contains('\n') && !line.contains("Usage") && !line.contains("--help"),
            "{line}"
        );
        let line = rejected(&["frobnicate"]);
        assert!(line.contains("frobnicate"), "{line}");
    }

    #[test]
    fn key_file_must_be_a_readable_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.json");
        std::fs::write(&key, "{}").unwrap();
        let args = |path: &Path| StoreArgs {
            key_file: Some(path.to_owned()),
            ..mount(&["bkt", "/m"]).store
        };
        args(&key).check_key_file().unwrap();

        let missing = dir.path().join("missing.json");
        let err = args(&missing).check_key_file().unwrap_err();
        assert!(matches!(err, CliError::KeyFileUnreadable { .. }));
        let chain = format!("{:#}", anyhow::Error::from(err));
        assert!(
            chain.starts_with(&format!("key file {}: cannot be read: ", missing.display())),
            "{chain}"
        );

        let err = args(dir.path()).check_key_file().unwrap_err();
        assert!(matches!(err, CliError::KeyFileNotRegular { .. }), "{err}");
        assert!(err.to_string().contains(&dir.path().display().to_string()));

        let none = StoreArgs {
            key_file: None,
            ..args(&missing)
        };
        none.check_key_file().unwrap();
    }

    /// Every flag of every subcommand, with its env var and default, is in docs/CONFIGURATION.md,
    /// and every env var follows the `GCSFS_<FLAG_IN_UPPER_SNAKE>` rule.
    #[test]
    fn configuration_doc_lists_every_flag() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/CONFIGURATION.md");
        let doc =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let root = Cli::command();
        let mut commands = vec![&root];
        commands.extend(root.get_subcommands());
        let mut checked = 0;
        for command in commands {
            for arg in command.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                if matches!(long, "help" | "version") {
                    continue;
                }
                let expected_env = format!("GCSFS_{}", long.to_uppercase().replace('-', "_"));
                let env = arg.get_env().and_then(|e| e.to_str()).unwrap_or_default();
                assert_eq!(env, expected_env, "--{long}");
                let row = doc
                    .lines()
                    .find(|l| l.starts_with(&format!("| `--{long}")))
                    .unwrap_or_else(|| panic!("--{long} has no row in {}", path.display()));
                assert!(
                    row.contains(&format!("`{env}`")),
                    "--{long}: row lacks {env}: {row}"
                );
                for default in arg.get_default_values() {
                    let default = default.to_str().unwrap();
                    assert!(
                        row.contains(&format!("`{default}`")),
                        "--{long}: row lacks default {default}: {row}"
                    );
                }
                checked += 1;
            }
            for arg in command.get_positionals() {
                if let Some(env) = arg.get_env().and_then(|e| e.to_str()) {
                    assert!(doc.contains(&format!("`{env}`")), "{env} is not documented");
                }
            }
        }
        assert!(checked >= 25, "only {checked} flags checked");
    }
}
