//! Filesystem configuration.

use std::path::PathBuf;
use std::time::Duration;

use super::attr::Ownership;
use super::read::ReadConfig;
use super::writeback::WriteBack;

/// How the filesystem behaves. Every field has a default suited to a container mount.
#[derive(Debug, Clone)]
pub struct FsConfig {
    /// Owner and modes for objects without POSIX metadata. Default: uid/gid 0, 0644 files, 0755 dirs.
    pub ownership: Ownership,
    /// Mount only this sub-tree of the bucket (`--only-dir`). Default: "" (the whole bucket).
    pub only_dir: String,
    /// Where staging files of files being written live (`--temp-dir`). Default: the system temp dir.
    pub temp_dir: PathBuf,
    /// Whether `temp_dir` is in memory (a tmpfs or ramfs, as /tmp is on Cloud Run): staging
    /// files are then charged to the memory budget's writes share, and a change that finds no
    /// room waits for uploads to free some (up to `write_wait_limit`), else fails with ENOSPC
    /// (see `memory.rs`). Default false; `gcsfs mount` finds it out with `statfs`.
    pub temp_dir_in_memory: bool,
    /// How long attributes and names are cached, here and in the kernel
    /// (`--metadata-cache-ttl-secs`). Default 60 s; zero disables.
    pub metadata_ttl: Duration,
    /// How long a name known not to exist is cached (`--metadata-cache-negative-ttl-secs`).
    /// Default 5 s; zero disables.
    pub negative_ttl: Duration,
    /// Most objects a directory rename may copy (`--rename-dir-limit`); above it rename fails
    /// with EMFILE. Default 10 000.
    pub rename_dir_limit: u64,
    /// Refuse every change (`-o ro`). Default false.
    pub read_only: bool,
    /// The kernel checks permissions against the attributes gcsfs reports (the mount has
    /// `default_permissions`, which `allow_other` and `allow_root` imply): attributes that are
    /// not the store's (a directory seen only in a listing) are then never handed out to be
    /// cached. Default false.
    pub check_permissions: bool,
    /// Stream a new file written sequentially from offset 0 straight into a resumable upload
    /// instead of staging it locally (`--streaming-writes`). Default true.
    pub streaming_writes: bool,
    /// Objects per listing page. Default 1000 (GCS's maximum).
    pub list_page_size: u32,
    /// Files uploaded at once by the drain and by the background write-back
    /// (`--upload-concurrency`). Default 16.
    pub upload_concurrency: usize,
    /// When `close` returns: once the file is in the bucket, or once its data is staged and
    /// its upload queued (`--write-back`). Default [`WriteBack::Sync`].
    pub write_back: WriteBack,
    /// With `--write-back async`: the longest a change may wait before its file is queued for
    /// upload, even while still open (`--max-dirty-age-secs`). Default 10 s; zero turns the
    /// bound off.
    pub max_dirty_age: Duration,
    /// Longest a write of a streamed new file waits for its upload to take the bytes (and a
    /// close, twice that for the upload to end) before it fails with EIO. The upload itself
    /// gives up at the store's retry deadline; this is the backstop. Also the longest a change
    /// to a staging file in memory (`temp_dir_in_memory`) waits for room in the memory budget
    /// before it fails with ENOSPC. Default 120 s; `gcsfs mount` sets it from
    /// `--retry-deadline-secs` and `--stall-timeout-secs`.
    pub write_wait_limit: Duration,
    /// Read-path tuning.
    pub read: ReadConfig,
    /// The memory budget, bytes (`--memory-limit-mb`; see `memory.rs`). Default 1 GiB; `gcsfs
    /// mount` derives it from the cgroup's limit unless told.
    pub memory_budget: u64,
    /// Inodes kept in memory before the ones nothing refers to are dropped (those whose
    /// attributes expired first). Default 50,000.
    pub max_cached_inodes: usize,
}

impl Default for FsConfig {
    fn default() -> Self {
        Self {
            ownership: Ownership {
                uid: 0,
                gid: 0,
                file_mode: 0o644,
                dir_mode: 0o755,
            },
            only_dir: String::new(),
            temp_dir: std::env::temp_dir(),
            temp_dir_in_memory: false,
            metadata_ttl: Duration::from_secs(60),
            negative_ttl: Duration::from_secs(5),
            rename_dir_limit: 10_000,
            read_only: false,
            check_permissions: false,
            streaming_writes: true,
            list_page_size: 1000,
            write_wait_limit: Duration::from_secs(120),
            upload_concurrency: 16,
            write_back: WriteBack::Sync,
            max_dirty_age: Duration::from_secs(10),
            read: ReadConfig::default(),
            memory_budget: 1 << 30,
            max_cached_inodes: 50_000,
        }
    }
}
