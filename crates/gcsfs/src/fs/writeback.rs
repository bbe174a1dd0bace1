//! The write-back: with `--write-back async`, files are uploaded in the background, apart from
//! the requests that changed them.
//!
//! - `close` queues the file and returns once its data is staged (in memory or a staging
//!   file); an upload task, `upload_concurrency` at most at once, publishes it. Closes of a file
//!   already queued (not yet started) are merged into that one upload.
//! - `fsync` uploads the file itself (after an upload in progress) and returns its result.
//! - A background upload that fails keeps the data (the file stays dirty), is logged with its
//!   path, and is reported by the file's next `close` or `fsync`; the age bound retries it.
//! - The age bound (`max_dirty_age`): every second, a file whose oldest pending change is older
//!   than that is queued too — an open file being written included, unless its upload is
//!   streamed (which cannot be published part-way). A crash loses at most that window of
//!   changes not yet queued, plus the uploads queued or running.
//! - Renames and unlinks of pending files take the file's publish lock first, so they never
//!   race an upload in progress: a rename publishes the file first and moves the object, an
//!   unlink of a file uploaded meanwhile deletes the object it made. Reads and writes of the
//!   file never wait for an upload (see `write.rs`).
//!
//! With `--write-back sync` (the default) `close` and a setattr of a file upload inline, as
//! before; the queue carries only directories' attributes (mode, owner, times on the marker),
//! which are written in the background in both modes, under the same age bound, and waited
//! for by an `fsync` of the directory and by the drain.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::lifecycle::Phase;
use super::write::FileCell;
use super::{Filesystem, InodeNo};

/// When `close` returns (`--write-back`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WriteBack {
    /// Once the file is in the bucket (or with the reason it is not). The default.
    #[default]
    Sync,
    /// Once the file's data is staged; the upload runs in the background.
    Async,
}

/// How often the age bound is checked.
const AGE_TICK: Duration = Duration::from_secs(1);

/// The queue of files to upload in the background.
#[derive(Debug)]
pub(super) struct Uploader {
    /// The filesystem, for the upload tasks (set by [`Filesystem::shared`]).
    fs: Weak<Filesystem>,
    /// Upload tasks queued and not started yet (which files have one is in their state
    /// machine: a close of a file that has one adds nothing, see `lifecycle.rs`).
    queued: AtomicUsize,
    /// Uploads running at once.
    slots: Arc<Semaphore>,
}

impl Uploader {
    pub(super) fn new(fs: Weak<Filesystem>, concurrency: usize) -> Self {
        Self {
            fs,
            queued: AtomicUsize::new(0),
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
        }
    }

    /// Whether uploads can run in the background (the filesystem is shared and a runtime runs).
    fn available(&self) -> bool {
        self.fs.strong_count() > 0 && tokio::runtime::Handle::try_current().is_ok()
    }

    /// How many files are queued and not started.
    pub(super) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

impl Filesystem {
    /// Whether uploads can be left to the background at all: directories' attributes always
    /// are (in both modes, see [`Filesystem::queue_aged`]), files' data with `--write-back
    /// async`.
    pub(super) fn uploader_available(&self) -> bool {
        self.uploader.available()
    }

    /// Where `ino`'s changes stand, if it has write-back state (see `lifecycle.rs`).
    pub fn phase_of(&self, ino: InodeNo) -> Option<Phase> {
        self.cell_of(ino).map(|cell| cell.phase())
    }

    /// Whether `close` leaves the upload to the background.
    pub(super) fn writes_back_async(&self) -> bool {
        self.config.write_back == WriteBack::Async && self.uploader.available()
    }

    /// Queues `ino` for a background upload, unless an upload task of it is queued already
    /// (or it has nothing to upload: its state machine tells, see `lifecycle.rs`).
    pub(super) fn queue_upload(&self, ino: InodeNo, cell: Arc<FileCell>) {
        let Some(fs) = self.uploader.fs.upgrade() else {
            return;
        };
        if !cell.queue() {
            return;
        }
        self.uploader.queued.fetch_add(1, Ordering::AcqRel);
        let slots = self.uploader.slots.clone();
        tokio::spawn(async move {
            let slot = slots.acquire_owned().await;
            fs.uploader.queued.fetch_sub(1, Ordering::AcqRel);
            // From here a new close queues another upload (this one may miss its changes).
            cell.dequeued();
            let Ok(_slot) = slot else {
                return;
            };
            // (A file being streamed is left to the close of the handle writing it: see
            // `upload_unless_streaming`.)
            fs.upload_in_background(ino, &cell).await;
        });
    }

    /// One background upload: its failure is logged and kept for the file's next close or
    /// fsync; a file nobody holds any more lets go of its local copy.
    async fn upload_in_background(&self, ino: InodeNo, cell: &Arc<FileCell>) {
        match self.upload_unless_streaming(ino, cell).await {
            Ok(()) => {
                cell.set_background_error(None);
                // Changed while it was uploading (a chmod or utimes after its close, say) and
                // held by no file handle whose close would queue it (a directory's never
                // does): upload it again now.
                let held =
                    self.inodes.lock().get(ino).is_some_and(|i| {
                        i.open_handles() > 0 && i.kind() != super::attr::Kind::Dir
                    });
                if cell.is_dirty() && !held {
                    self.queue_upload(ino, cell.clone());
                }
            }
            // Removed meanwhile (unlinked, forgotten): nothing to upload.
            Err(super::FsError::NotFound) => {}
            Err(e) => {
                let path = self.path_of(ino);
                tracing::error!(path, error = %e, "background upload failed; the data is kept");
                cell.set_background_error(Some(Arc::new(e)));
            }
        }
        let idle = self
            .inodes
            .lock()
            .get(ino)
            .is_none_or(|i| i.open_handles() == 0);
        if idle && !cell.is_dirty() {
            let mut st = cell.state.lock().await;
            if !cell.is_dirty() {
                st.staged = None;
            }
        }
        self.inodes.lock().maybe_evict(ino);
    }

    /// Queues every file whose oldest pending change is older than the age bound. With
    /// `--write-back sync` only directories are pending here (their attributes are written in
    /// the background in both modes: `tar x` sets the mode and times of every directory it
    /// made, one after the other, and each would cost the application a round trip or two);
    /// a file's data there is uploaded by its close, never part-way.
    fn queue_aged(&self) {
        let max = self.config.max_dirty_age;
        let files_too = self.config.write_back == WriteBack::Async;
        let cells = self.inodes.lock().with_file_state();
        for (ino, cell) in cells {
            if cell.due(max) && cell.may_upload_part_way() && (files_too || self.is_dir(ino)) {
                self.queue_upload(ino, cell);
            }
        }
    }

    pub(super) fn is_dir(&self, ino: InodeNo) -> bool {
        self.inodes
            .lock()
            .get(ino)
            .is_some_and(|i| i.kind() == super::attr::Kind::Dir)
    }

    /// Starts the age bound's ticker; it ends with the filesystem.
    pub(super) fn start_age_bound(fs: &Arc<Filesystem>) {
        if fs.config.max_dirty_age.is_zero() {
            return;
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let weak = Arc::downgrade(fs);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(AGE_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(fs) = weak.upgrade() else {
                    return;
                };
                if fs.is_shutting_down() {
                    return;
                }
                fs.queue_aged();
            }
        });
    }

    /// Waits until no background upload is queued or running (for tests and `sync`-like
    /// callers); returns whether that happened within `limit`.
    pub async fn wait_for_uploads(&self, limit: Duration) -> bool {
        let slots = self.config.upload_concurrency.max(1);
        let all = u32::try_from(slots).unwrap_or(u32::MAX);
        tokio::time::timeout(limit, async {
            loop {
                if self.uploader.queued() == 0
                    && let Ok(permits) = self.uploader.slots.try_acquire_many(all)
                {
                    drop(permits);
                    if self.uploader.queued() == 0 {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .is_ok()
    }
}
