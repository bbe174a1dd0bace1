//! The filesystem's error type and the one errno table.

use crate::store::{ErrorKind, StoreError};

/// Why a filesystem operation failed. Each variant maps to exactly one errno in [`FsError::errno`].
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    #[error("name too long")]
    NameTooLong,
    #[error("operation not permitted: {0}")]
    NotPermitted(&'static str),
    #[error("read-only file system")]
    ReadOnly,
    #[error("not supported: {0}")]
    NotSupported(&'static str),
    #[error("bad file handle")]
    BadHandle,
    /// The object changed remotely (another writer won), or a pinned generation is gone.
    #[error("stale: {0}")]
    Stale(&'static str),
    /// A directory rename would copy more objects than `--rename-dir-limit` allows.
    #[error("directory has more than {limit} objects, over --rename-dir-limit")]
    TooManyObjects { limit: u64 },
    /// The filesystem is shutting down and takes no new writes.
    #[error("file system is shutting down")]
    ShuttingDown,
    /// The operation ran out of time (e.g. the drain deadline at shutdown).
    #[error("timed out")]
    TimedOut,
    /// An upload made in the background failed (the reason inside); the data is kept, and the
    /// file's next `close` or `fsync` says so.
    #[error("an earlier upload of this file failed: {0}")]
    Background(#[source] std::sync::Arc<FsError>),
    /// Data written through this handle was lost with a failed streamed upload (the reason
    /// inside); every later write, flush and fsync through the handle returns it.
    #[error("written data lost: {0}")]
    Lost(#[source] std::sync::Arc<FsError>),
    /// A staging file in memory (`--temp-dir` on a tmpfs) needs `need` bytes of the memory
    /// budget's writes share that did not come free in time, or it would be `size` bytes, more
    /// than the whole share: ENOSPC, as a full disk would say.
    #[error(
        "no room in the memory budget for {need} bytes of a {size}-byte staging file (--temp-dir is in memory)"
    )]
    NoMemory { need: u64, size: u64 },
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("local staging file: {0}")]
    Io(#[from] std::io::Error),
}

/// Shorthand for filesystem results.
pub type FsResult<T> = Result<T, FsError>;

impl FsError {
    /// The one errno table.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::InvalidArgument(_) => libc::EINVAL,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::NotPermitted(_) => libc::EPERM,
            FsError::ReadOnly => libc::EROFS,
            FsError::NotSupported(_) => libc::ENOTSUP,
            FsError::BadHandle => libc::EBADF,
            FsError::Stale(_) => libc::ESTALE,
            FsError::TooManyObjects { .. } => libc::EMFILE,
            FsError::ShuttingDown => libc::EROFS,
            FsError::TimedOut => libc::ETIMEDOUT,
            FsError::NoMemory { .. } => libc::ENOSPC,
            FsError::Store(e) => match e.kind() {
                ErrorKind::NotFound => libc::ENOENT,
                ErrorKind::PreconditionFailed => libc::ESTALE,
                ErrorKind::PermissionDenied => libc::EACCES,
                ErrorKind::Unauthenticated => libc::EACCES,
                ErrorKind::RateLimited => libc::EAGAIN,
                ErrorKind::Transient => libc::EIO,
                ErrorKind::InvalidArgument => libc::EINVAL,
                ErrorKind::Other => libc::EIO,
            },
            FsError::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
            FsError::Lost(e) | FsError::Background(e) => e.errno(),
        }
    }

    /// Whether this is an expected outcome (ENOENT on lookup, EEXIST…) rather than a failure worth
    /// a warning; used to pick the log level once, at the adapter.
    pub fn is_expected(&self) -> bool {
        matches!(
            self,
            FsError::NotFound
                | FsError::Exists
                | FsError::NotDir
                | FsError::IsDir
                | FsError::NotEmpty
                | FsError::NameTooLong
                | FsError::NotSupported(_)
        ) || matches!(self, FsError::Store(e) if e.kind() == ErrorKind::NotFound)
            // A size past what the local staging file may hold: the caller's request, not a
            // failure of gcsfs.
            || matches!(self, FsError::Io(e) if e.raw_os_error() == Some(libc::EFBIG))
            || matches!(self, FsError::Lost(e) if e.is_expected())
    }

    /// The store error kind, when this came from the store.
    pub fn store_kind(&self) -> Option<ErrorKind> {
        match self {
            FsError::Store(e) => Some(e.kind()),
            FsError::Lost(e) | FsError::Background(e) => e.store_kind(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_table() {
        let store = |k| FsError::Store(StoreError::new(k, "x"));
        let table: Vec<(FsError, i32)> = vec![
            (FsError::NotFound, libc::ENOENT),
            (FsError::Exists, libc::EEXIST),
            (FsError::NotDir, libc::ENOTDIR),
            (FsError::IsDir, libc::EISDIR),
            (FsError::NotEmpty, libc::ENOTEMPTY),
            (FsError::InvalidArgument("x"), libc::EINVAL),
            (FsError::NameTooLong, libc::ENAMETOOLONG),
            (FsError::NotPermitted("x"), libc::EPERM),
            (FsError::ReadOnly, libc::EROFS),
            (FsError::NotSupported("x"), libc::ENOTSUP),
            (FsError::BadHandle, libc::EBADF),
            (FsError::Stale("x"), libc::ESTALE),
            (FsError::TooManyObjects { limit: 1 }, libc::EMFILE),
            (FsError::ShuttingDown, libc::EROFS),
            (FsError::TimedOut, libc::ETIMEDOUT),
            (store(ErrorKind::NotFound), libc::ENOENT),
            (store(ErrorKind::PreconditionFailed), libc::ESTALE),
            (store(ErrorKind::PermissionDenied), libc::EACCES),
            (store(ErrorKind::Unauthenticated), libc::EACCES),
            (store(ErrorKind::RateLimited), libc::EAGAIN),
            (store(ErrorKind::Transient), libc::EIO),
            (store(ErrorKind::InvalidArgument), libc::EINVAL),
            (store(ErrorKind::Other), libc::EIO),
            (
                FsError::Io(std::io::Error::from_raw_os_error(libc::ENOSPC)),
                libc::ENOSPC,
            ),
            (FsError::Io(std::io::Error::other("x")), libc::EIO),
            (
                FsError::Lost(std::sync::Arc::new(FsError::Stale("x"))),
                libc::ESTALE,
            ),
            (
                FsError::Lost(std::sync::Arc::new(store(ErrorKind::Transient))),
                libc::EIO,
            ),
        ];
        for (err, errno) in table {
            assert_eq!(err.errno(), errno, "{err:?}");
        }
    }
}
