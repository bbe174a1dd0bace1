//! Counters of the filesystem's uploads, and the state figures read at scrape time, as plain
//! numbers: `crate::metrics` turns them into Prometheus metrics (no metrics types here).
//!
//! An *upload* is one publication of a file's data to the bucket: the store call that sends a
//! file's pending changes (at `close`/`flush`/`fsync` with `--write-back sync`, in the
//! background with `async`, at a rename of a dirty file, by the drain), or a streamed new
//! file's upload. A call that finds nothing to send is not one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Filesystem;

/// Upload counters, bumped where uploads happen.
#[derive(Debug, Default)]
pub struct FsStats {
    uploads_completed: AtomicU64,
    uploads_failed: AtomicU64,
    uploads_in_flight: AtomicU64,
}

impl FsStats {
    /// Uploads that put the file's data in the bucket.
    pub fn uploads_completed(&self) -> u64 {
        self.uploads_completed.load(Ordering::Relaxed)
    }

    /// Uploads that ended in an error (the data kept, or lost for a failed stream, or kept
    /// under `gcsfs-conflicts/` when another writer won).
    pub fn uploads_failed(&self) -> u64 {
        self.uploads_failed.load(Ordering::Relaxed)
    }

    /// Uploads whose store call is running now.
    pub fn uploads_in_flight(&self) -> u64 {
        self.uploads_in_flight.load(Ordering::Relaxed)
    }

    /// Counts the end of one upload.
    pub(super) fn upload_ended<T, E>(&self, result: &Result<T, E>) {
        let counter = match result {
            Ok(_) => &self.uploads_completed,
            Err(_) => &self.uploads_failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an upload in flight until the returned guard is dropped.
    pub(super) fn in_flight(self: &Arc<Self>) -> InFlight {
        self.uploads_in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// An upload in flight (see [`FsStats::in_flight`]).
#[derive(Debug)]
pub(super) struct InFlight(Arc<FsStats>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.uploads_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The files with unsaved changes, at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DirtySummary {
    /// Files with changes not yet in the bucket.
    pub files: u64,
    /// Their sizes, summed (the whole file counts, not only the changed bytes).
    pub bytes: u64,
    /// How long the oldest of those changes has waited; zero if there is none.
    pub oldest_age: Duration,
}

impl Filesystem {
    /// The upload counters.
    pub fn stats(&self) -> &FsStats {
        &self.stats
    }

    /// The files with unsaved changes now: how many, their bytes, the oldest change's age.
    /// Costs what the set of files with local state holds (one short inode-table lock).
    pub fn dirty_summary(&self) -> DirtySummary {
        let cells = self.inodes.lock().with_file_state();
        let mut summary = DirtySummary::default();
        let mut dirty = Vec::new();
        for (ino, cell) in cells {
            if cell.is_dirty() {
                summary.files += 1;
                summary.oldest_age = summary.oldest_age.max(cell.dirty_age().unwrap_or_default());
                dirty.push(ino);
            }
        }
        let table = self.inodes.lock();
        summary.bytes = dirty
            .iter()
            .filter_map(|ino| table.get(*ino))
            .map(|i| i.stat().size)
            .sum();
        summary
    }

    /// Files queued for a background upload and not started yet (`--write-back async`).
    pub fn uploads_queued(&self) -> u64 {
        self.uploader.queued() as u64
    }
}
