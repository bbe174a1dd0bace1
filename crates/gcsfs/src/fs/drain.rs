//! The drain: on SIGTERM/SIGINT or unmount, every file with unsaved changes is uploaded, in
//! parallel, without losing a write the application was told succeeded.
//!
//! - While the drain's first passes run, writes are still taken (an application may be
//!   finishing its requests); each pass uploads what is dirty then, up to `upload_concurrency`
//!   files at once, until nothing is dirty or half of the time is used (uploads started by then
//!   are let finish).
//! - Then the [`WriteGate`] closes: new changes get `EROFS`, and the drain waits for the changes
//!   already in progress to end, so that none can land after the final pass has looked.
//! - The final pass uploads everything still dirty. Every file that could not be uploaded (or
//!   lost a race: its data is under `gcsfs-conflicts/`) is named, with its last error, and so is
//!   every file still dirty when the time is up. Results are kept as they come, so running out
//!   of time loses none of them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures::StreamExt;
use tokio::time::Instant;

use super::error::{FsError, FsResult};
use super::{DrainFailure, Filesystem, InodeNo};

/// Whether changes are taken, and how many are in progress.
///
/// A change enters with [`WriteGate::enter`] and holds the [`WriteTicket`] until it is done;
/// [`WriteGate::close`] refuses new ones and waits for those in progress. (Both sides use
/// sequentially consistent operations: a change either sees the gate closed, or the closer sees
/// it in progress and waits for it.)
#[derive(Debug, Default)]
pub(super) struct WriteGate {
    closed: AtomicBool,
    active: AtomicUsize,
    idle: tokio::sync::Notify,
}

/// A change in progress (see [`WriteGate`]).
#[derive(Debug)]
#[must_use = "the change is in progress only while the ticket is held"]
pub(super) struct WriteTicket<'a>(&'a WriteGate);

impl Drop for WriteTicket<'_> {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl WriteGate {
    /// Lets a change in, unless the gate is closed.
    pub(super) fn enter(&self) -> FsResult<WriteTicket<'_>> {
        self.active.fetch_add(1, Ordering::SeqCst);
        let ticket = WriteTicket(self);
        if self.closed.load(Ordering::SeqCst) {
            return Err(FsError::ShuttingDown);
        }
        Ok(ticket)
    }

    /// Whether the gate is closed.
    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Refuses new changes and waits until none is in progress.
    pub(super) async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            // Registered before the check: a change ending right after it still wakes us.
            idle.as_mut().enable();
            if self.active.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}

/// What the drain learnt of each file it tried, by inode.
type Outcomes = BTreeMap<InodeNo, Result<(), FsError>>;

impl Filesystem {
    /// Stops taking changes and uploads every file with unsaved changes, by `deadline` (see the
    /// module documentation). Returns the files that could not be uploaded, each logged.
    pub async fn drain(&self, deadline: Instant) -> Vec<DrainFailure> {
        let started = Instant::now();
        let gate_by = started + deadline.saturating_duration_since(started) / 2;
        let mut outcomes = Outcomes::new();
        // Passes while changes are still taken.
        loop {
            let dirty = self.dirty_files();
            if dirty.is_empty() || Instant::now() >= gate_by {
                break;
            }
            if !self
                .upload_all(dirty, gate_by, deadline, &mut outcomes)
                .await
            {
                break;
            }
        }
        // The final pass, once no change can slip in behind it.
        let closed = tokio::time::timeout_at(deadline, self.writes.close()).await;
        if closed.is_err() {
            tracing::warn!("changes still in progress at the drain deadline");
        }
        let dirty = self.dirty_files();
        self.upload_all(dirty, deadline, deadline, &mut outcomes)
            .await;
        self.failures(outcomes)
    }

    /// Uploads `files`, up to `upload_concurrency` at once, recording each outcome: starts
    /// uploads until `start_by`, and lets those started finish until `deadline` (an upload is
    /// never cut short before then: cut, a streamed one would end in an unknown state). Returns
    /// whether every file was uploaded, or tried, in time.
    async fn upload_all(
        &self,
        files: Vec<(InodeNo, std::sync::Arc<super::write::FileCell>)>,
        start_by: Instant,
        deadline: Instant,
        outcomes: &mut Outcomes,
    ) -> bool {
        let mut waiting = files.into_iter();
        let mut running = futures::stream::FuturesUnordered::new();
        let most = self.config.upload_concurrency.max(1);
        loop {
            while running.len() < most && Instant::now() < start_by {
                let Some((ino, cell)) = waiting.next() else {
                    break;
                };
                running.push(async move { (ino, self.upload(ino, &cell).await) });
            }
            if running.is_empty() {
                return waiting.len() == 0;
            }
            match tokio::time::timeout_at(deadline, running.next()).await {
                Ok(Some((ino, result))) => {
                    outcomes.insert(ino, result);
                }
                Ok(None) => {}
                Err(_) => return false,
            }
        }
    }

    /// Every file the drain could not save: those whose last upload failed, and those still
    /// dirty (never tried, or tried and changed again, when time ran out).
    fn failures(&self, outcomes: Outcomes) -> Vec<DrainFailure> {
        let mut failures = BTreeMap::new();
        for (ino, result) in outcomes {
            if let Err(error) = result {
                failures.insert(ino, error);
            }
        }
        for (ino, _) in self.dirty_files() {
            failures.entry(ino).or_insert(FsError::TimedOut);
        }
        failures
            .into_iter()
            .map(|(ino, error)| {
                let path = self.path_of(ino);
                tracing::error!(path, %error, "could not upload file at shutdown");
                DrainFailure { path, error }
            })
            .collect()
    }

    /// The files with unsaved changes.
    fn dirty_files(&self) -> Vec<(InodeNo, std::sync::Arc<super::write::FileCell>)> {
        let mut cells = self.inodes.lock().with_file_state();
        cells.retain(|(_, cell)| cell.is_dirty());
        cells
    }

    /// Whether the drain has closed the gate to new changes.
    pub fn is_shutting_down(&self) -> bool {
        self.writes.is_closed()
    }
}
