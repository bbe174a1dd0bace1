//! The filesystem: POSIX operations over an [`ObjectStore`], without any FUSE types.
//!
//! Every operation is an `async fn` returning [`FsResult`]; the FUSE adapter (`crate::fuse`) is
//! a thin translation on top, so this layer is tested directly (see `tests/fs_ops.rs`).
//!
//! # Lock order
//! 0. a `PageGate` (`tokio::sync::Mutex`, per inode; held by the page-cache thread across a
//!    kernel call that may wait for a read in progress), then
//! 1. a `FileCell::publish` (`tokio::sync::Mutex`, per inode; held across an upload's, an
//!    unlink's or a rename's network calls; no read, write or `stat` takes it), then
//! 2. a `FileCell::state` (`tokio::sync::Mutex`, per inode; held across network I/O only to
//!    stage an object for its first change or to settle a streamed upload), then
//! 3. a `Reader` (`tokio::sync::Mutex`, per handle; held only while planning a read), then
//! 4. `Filesystem::inodes` (`parking_lot::Mutex`; never held across `.await`),
//! 5. `Filesystem::handles` (`handles.rs`, a `parking_lot::Mutex`; never held across `.await`).
//!
//! Leaves, which may be taken under any of the above and take nothing themselves: a
//! `FileCell`'s state machine (`life`, see `lifecycle.rs`) and its kept background error
//! (`parking_lot` mutexes, held for a transition or a swap).
//!
//! The synchronous locks are `parking_lot`'s, which a panic does not poison: a request that
//! panics (a bug) fails alone, instead of leaving every later request to fail on a poisoned
//! lock while the mount lives on. No critical section calls anything that can panic on input.
//!
//! A lock of a lower number is never taken while one of a higher number is held; two `FileCell`
//! locks are never held at once, but for the two `publish` locks of a rename (a file over a
//! file, or a directory and the empty directory it replaces), taken in inode-number order; a
//! directory rename then takes its descendants' one at a time while it publishes them. A page gate is only ever awaited holding nothing else (a read
//! the page-cache thread waits for may need any of the others).

mod attr;
mod clock;
mod config;
mod dir;
mod drain;
mod error;
mod file;
mod handles;
mod ino;
mod inode;
mod lifecycle;
mod lookup;
mod memory;
mod names;
mod namespace;
mod page_cache;
mod read;
mod read_data;
mod refresh;
mod stats;
mod write;
mod writeback;

pub use attr::{Attr, Caller, Kind, Ownership};
#[cfg(any(test, feature = "test-util"))]
pub use clock::ManualClock;
pub use clock::{Clock, SystemClock};
pub use config::FsConfig;
pub use dir::DirEntry;
pub use error::{FsError, FsResult};
pub use file::{OpenReply, SetAttr};
pub use inode::InodeNo;
pub use lifecycle::{Phase, unexpected_events};
pub use lookup::PROBE_KEYS;
pub use memory::{LimitSource, MemoryBudget, is_in_memory, memory_limit};
pub use names::normalize_only_dir;
pub use namespace::RENAME_FROM_KEY;
pub use page_cache::KernelCache;
pub use read::ReadConfig;
pub use read_data::ReadData;
pub use stats::{DirtySummary, FsStats};
pub use writeback::WriteBack;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Semaphore;

use crate::store::ObjectStore;
use attr::Stat;
use inode::InodeTable;

/// Most names remembered as missing.
const NEGATIVE_CACHE_ENTRIES: usize = 100_000;

/// An entry returned by `lookup`, `create`, `mkdir`…: attributes and how long the kernel may keep them.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub attr: Attr,
    pub ttl: Duration,
}

/// Filesystem-wide numbers for `statfs` (GCS has no limits worth reporting; large constants).
#[derive(Debug, Clone, Copy)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

/// A file that could not be uploaded when draining.
#[derive(Debug)]
pub struct DrainFailure {
    pub path: String,
    pub error: FsError,
}

/// The filesystem.
#[derive(Debug)]
pub struct Filesystem {
    store: Arc<dyn ObjectStore>,
    config: FsConfig,
    clock: Arc<dyn Clock>,
    inodes: Mutex<InodeTable>,
    handles: handles::Handles,
    /// Names known not to exist, until when (`negative_ttl`).
    negative: Mutex<lru::LruCache<(InodeNo, String), Instant>>,
    prefetch_budget: Arc<Semaphore>,
    /// Readers alive (for each one's fair share of `prefetch_budget`, see `read.rs`).
    prefetch_readers: Arc<std::sync::atomic::AtomicUsize>,
    /// The bytes held in memory: prefetch (`prefetch_budget` is its reads share), new files,
    /// stream buffers and staging files in memory, and uploads' copies.
    memory: Arc<MemoryBudget>,
    /// Changes in progress, and whether new ones are taken (closed by the drain).
    writes: drain::WriteGate,
    /// Files to upload in the background (`--write-back async`).
    uploader: writeback::Uploader,
    /// Stores random reads' blocks into the kernel's page cache, once attached.
    page_feeder: OnceLock<page_cache::PageFeeder>,
    /// The kernel's read-ahead on the mount, in bytes (0: not known).
    kernel_readahead: AtomicU64,
    /// Upload counters (for metrics).
    stats: Arc<FsStats>,
}

impl Filesystem {
    /// A filesystem over `store` (already wrapped in retries as wanted), shared: what a mount
    /// uses. Only a shared filesystem uploads in the background (`--write-back async`; a plain
    /// [`Filesystem::new`] uploads at close whatever its configuration says).
    pub fn shared(
        store: Arc<dyn ObjectStore>,
        config: FsConfig,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        let fs = Arc::new_cyclic(|me| {
            let mut fs = Self::new(store, config, clock);
            fs.uploader = writeback::Uploader::new(me.clone(), fs.config.upload_concurrency);
            fs
        });
        Self::start_age_bound(&fs);
        fs
    }

    /// A filesystem over `store` (already wrapped in retries as wanted).
    pub fn new(store: Arc<dyn ObjectStore>, config: FsConfig, clock: Arc<dyn Clock>) -> Self {
        let root_prefix = names::normalize_only_dir(&config.only_dir);
        let now = clock.now();
        let inodes = InodeTable::new(root_prefix, Stat::dir(SystemTime::now()), now);
        let memory = Arc::new(MemoryBudget::new(
            config.memory_budget,
            config.read.prefetch_memory,
        ));
        let prefetch_budget = memory.reads();
        Self {
            store,
            config,
            clock,
            inodes: Mutex::new(inodes),
            handles: handles::Handles::new(),
            negative: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(NEGATIVE_CACHE_ENTRIES).expect("non-zero"),
            )),
            prefetch_budget,
            prefetch_readers: Arc::default(),
            memory,
            writes: drain::WriteGate::default(),
            uploader: writeback::Uploader::new(std::sync::Weak::new(), 1),
            page_feeder: OnceLock::new(),
            kernel_readahead: AtomicU64::new(0),
            stats: Arc::default(),
        }
    }

    /// Lets reads put data into the kernel's page cache through `cache` (the FUSE session's
    /// notifier). Only the first call counts.
    pub fn attach_kernel_cache(&self, cache: Arc<dyn KernelCache>) -> std::io::Result<()> {
        if self.page_feeder.get().is_none() {
            let feeder = page_cache::PageFeeder::start(cache)?;
            let _ = self.page_feeder.set(feeder);
        }
        Ok(())
    }

    /// Tells the filesystem how far the kernel reads ahead on the mount (bytes): with a large
    /// read-ahead the kernel asks far ahead by itself, and readers fetch little speculatively.
    pub fn set_kernel_readahead(&self, bytes: u64) {
        self.kernel_readahead.store(bytes, Ordering::Relaxed);
    }

    pub fn config(&self) -> &FsConfig {
        &self.config
    }

    /// Checks the inode table's indexes against its inodes (tests run it after every step);
    /// the first broken rule, if any.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.inodes.lock().check()
    }

    /// The memory budget (for metrics and tests).
    pub fn memory(&self) -> &MemoryBudget {
        &self.memory
    }

    fn now(&self) -> Instant {
        self.clock.now()
    }

    fn ownership(&self) -> Ownership {
        self.config.ownership
    }

    fn entry(&self, attr: Attr) -> Entry {
        Entry {
            attr,
            ttl: self.config.metadata_ttl,
        }
    }

    /// Until when a directory listed (or made) now may answer "no such name" by itself: the
    /// negative TTL; `None` when negative caching is off.
    fn complete_until(&self) -> Option<Instant> {
        (!self.config.negative_ttl.is_zero()).then(|| self.now() + self.config.negative_ttl)
    }

    /// Lets a change in: refused on a read-only mount, and once the drain has closed the gate
    /// (see `drain.rs`). The change is in progress while the ticket is held.
    fn check_writable(&self) -> FsResult<drain::WriteTicket<'_>> {
        if self.config.read_only {
            return Err(FsError::ReadOnly);
        }
        self.writes.enter()
    }

    /// The path of `ino` relative to the mount, for log lines.
    pub fn path_of(&self, ino: InodeNo) -> String {
        self.inodes.lock().path(ino)
    }

    /// Number of inodes currently held (for tests and metrics).
    pub fn inode_count(&self) -> usize {
        self.inodes.lock().len()
    }

    /// `statfs`: large constant figures (a bucket has no fixed size).
    pub fn statfs(&self) -> StatFs {
        const BLOCKS: u64 = 1 << 40;
        StatFs {
            blocks: BLOCKS,
            bfree: BLOCKS,
            bavail: BLOCKS,
            files: 1 << 32,
            ffree: 1 << 32,
            bsize: 4096,
            namelen: names::NAME_MAX as u32,
            frsize: 4096,
        }
    }

    /// Whether any file has changes not yet uploaded.
    pub fn has_dirty(&self) -> bool {
        self.inodes
            .lock()
            .with_file_state()
            .iter()
            .any(|(_, c)| c.is_dirty())
    }
}

impl Filesystem {
    /// The files still dirty (after a drain ran out of time), as drain failures.
    pub fn dirty_paths_timed_out(&self) -> Vec<DrainFailure> {
        let cells = self.inodes.lock().with_file_state();
        let mut out = Vec::new();
        for (ino, cell) in cells {
            if cell.is_dirty() {
                let path = self.path_of(ino);
                tracing::error!(path, "not uploaded before the drain deadline");
                out.push(DrainFailure {
                    path,
                    error: FsError::TimedOut,
                });
            }
        }
        out
    }
}
