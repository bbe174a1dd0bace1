//! Open handles: what `open`, `create` and `opendir` handed the kernel, by handle number.
//!
//! One `parking_lot::Mutex` (lock 5 in `fs/mod.rs`), held only to add, take, clone or visit
//! handles: never across `.await`, never together with the inode table's.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::InodeNo;
use super::dir::DirStream;
use super::error::{FsError, FsResult};
use super::file::FileHandle;

/// An open handle.
#[derive(Debug)]
pub(super) enum Handle {
    File(FileHandle),
    /// A directory stream and its directory (kept outside the stream's lock, so `releasedir`
    /// always knows which directory to count closed, even while a readdir holds the stream).
    Dir(InodeNo, Arc<tokio::sync::Mutex<DirStream>>),
}

/// The open handles.
#[derive(Debug)]
pub(super) struct Handles {
    open: Mutex<HashMap<u64, Handle>>,
    /// The next handle number (never reused while the mount lives).
    next: AtomicU64,
}

impl Handles {
    pub(super) fn new() -> Self {
        Self {
            open: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }

    /// Keeps `handle`; returns its number.
    pub(super) fn add(&self, handle: Handle) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        self.open.lock().insert(fh, handle);
        fh
    }

    /// Takes handle `fh` out (at `release` or `releasedir`).
    pub(super) fn take(&self, fh: u64) -> Option<Handle> {
        self.open.lock().remove(&fh)
    }

    /// The open file `fh` (a clone: its shared parts are `Arc`s).
    pub(super) fn file(&self, fh: u64) -> FsResult<FileHandle> {
        match self.open.lock().get(&fh) {
            Some(Handle::File(h)) => Ok(h.clone()),
            _ => Err(FsError::BadHandle),
        }
    }

    /// The open directory `fh`.
    pub(super) fn dir(&self, fh: u64) -> FsResult<Arc<tokio::sync::Mutex<DirStream>>> {
        match self.open.lock().get(&fh) {
            Some(Handle::Dir(_, s)) => Ok(s.clone()),
            _ => Err(FsError::BadHandle),
        }
    }

    /// Calls `visit` on every open file handle (under the lock: keep it short).
    pub(super) fn each_file(&self, mut visit: impl FnMut(&mut FileHandle)) {
        for h in self.open.lock().values_mut() {
            if let Handle::File(f) = h {
                visit(f);
            }
        }
    }
}
