//! [`Op`]: names for the calls of [`ObjectStore`](super::ObjectStore), shared by the store
//! wrappers (fault injection, retries, call counters).

use std::fmt;

/// One of the [`ObjectStore`](super::ObjectStore) methods.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Op {
    /// [`ObjectStore::stat`](super::ObjectStore::stat).
    Stat,
    /// [`ObjectStore::list`](super::ObjectStore::list).
    List,
    /// [`ObjectStore::read`](super::ObjectStore::read).
    Read,
    /// [`ObjectStore::write`](super::ObjectStore::write).
    Write,
    /// [`ObjectStore::delete`](super::ObjectStore::delete).
    Delete,
    /// [`ObjectStore::copy`](super::ObjectStore::copy).
    Copy,
    /// [`ObjectStore::patch_metadata`](super::ObjectStore::patch_metadata).
    Patch,
    /// [`ObjectStore::start_upload`](super::ObjectStore::start_upload).
    StartUpload,
    /// [`ObjectStore::upload_chunk`](super::ObjectStore::upload_chunk).
    UploadChunk,
    /// [`ObjectStore::upload_status`](super::ObjectStore::upload_status).
    UploadStatus,
    /// [`ObjectStore::cancel_upload`](super::ObjectStore::cancel_upload).
    CancelUpload,
}

/// How many operations there are.
pub(crate) const COUNT: usize = 11;

impl Op {
    /// Every operation, in declaration order.
    pub const ALL: [Op; COUNT] = [
        Op::Stat,
        Op::List,
        Op::Read,
        Op::Write,
        Op::Delete,
        Op::Copy,
        Op::Patch,
        Op::StartUpload,
        Op::UploadChunk,
        Op::UploadStatus,
        Op::CancelUpload,
    ];

    /// A dense index (0..11) for per-operation tables.
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The lower-case name used in logs.
    pub fn name(self) -> &'static str {
        match self {
            Op::Stat => "stat",
            Op::List => "list",
            Op::Read => "read",
            Op::Write => "write",
            Op::Delete => "delete",
            Op::Copy => "copy",
            Op::Patch => "patch",
            Op::StartUpload => "start_upload",
            Op::UploadChunk => "upload_chunk",
            Op::UploadStatus => "upload_status",
            Op::CancelUpload => "cancel_upload",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Per-operation call counters (lock-free): the retry layer's retries, the test doubles' calls.
#[derive(Debug, Default)]
pub(crate) struct OpCounters([std::sync::atomic::AtomicU64; COUNT]);

impl OpCounters {
    /// Counts one call of `op`.
    pub(crate) fn bump(&self, op: Op) {
        self.0[op.index()].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// How many calls of `op` were counted.
    pub(crate) fn get(&self, op: Op) -> u64 {
        self.0[op.index()].load(std::sync::atomic::Ordering::Relaxed)
    }
}
