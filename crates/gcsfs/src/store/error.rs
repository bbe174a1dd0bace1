//! The store's error type and the one table that maps HTTP statuses to it.

use std::fmt;

/// What went wrong, as far as callers need to decide what to do next.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ErrorKind {
    /// The object (or bucket, or generation) does not exist.
    NotFound,
    /// A precondition (`ifGenerationMatch`, `ifMetagenerationMatch`) did not hold.
    PreconditionFailed,
    /// Authenticated, but not allowed (HTTP 403).
    PermissionDenied,
    /// No valid credentials (HTTP 401, or no token could be obtained).
    Unauthenticated,
    /// Too many requests (HTTP 429); retryable.
    RateLimited,
    /// A failure that may pass: 408, 5xx, transport errors, timeouts. Once the retry layer has
    /// given up, this is what reaches the caller.
    Transient,
    /// The request itself was wrong (HTTP 400, 416, a bad key).
    InvalidArgument,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// The one table from an HTTP status to a kind.
    pub fn from_http_status(status: u16) -> ErrorKind {
        match status {
            400 | 411 | 413 | 414 | 416 => ErrorKind::InvalidArgument,
            401 => ErrorKind::Unauthenticated,
            403 => ErrorKind::PermissionDenied,
            404 | 410 => ErrorKind::NotFound,
            // GCS answers 409 when a concurrent request on the same object won a race
            // (e.g. a conflicting upload); for us that is the same as a failed precondition.
            409 | 412 => ErrorKind::PreconditionFailed,
            408 => ErrorKind::Transient,
            429 => ErrorKind::RateLimited,
            500..=599 => ErrorKind::Transient,
            _ => ErrorKind::Other,
        }
    }

    /// Whether an operation that failed with this kind may succeed if tried again.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Transient | ErrorKind::RateLimited)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::PreconditionFailed => "precondition failed",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::RateLimited => "rate limited",
            ErrorKind::Transient => "transient failure",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::Other => "storage error",
        };
        f.write_str(s)
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error from the object store: a kind to branch on, a message for people, and the cause.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct StoreError {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<BoxError>,
}

impl StoreError {
    /// A new error of `kind` without an underlying cause.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// A new error of `kind` caused by `source`.
    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self {
            kind,
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// An error for an HTTP status, classified by [`ErrorKind::from_http_status`].
    pub fn from_http_status(status: u16, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::from_http_status(status), message)
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }

    /// The same error re-classified (e.g. `Transient` once retries are exhausted), keeping its source.
    pub fn into_kind(self, kind: ErrorKind) -> Self {
        Self { kind, ..self }
    }
}

/// Shorthand for results of store calls.
pub type StoreResult<T> = Result<T, StoreError>;

#[cfg(test)]
mod tests {
    use super::ErrorKind::*;
    use super::*;

    #[test]
    fn http_status_table() {
        let table: &[(u16, ErrorKind, bool)] = &[
            (400, InvalidArgument, false),
            (401, Unauthenticated, false),
            (403, PermissionDenied, false),
            (404, NotFound, false),
            (408, Transient, true),
            (409, PreconditionFailed, false),
            (410, NotFound, false),
            (412, PreconditionFailed, false),
            (416, InvalidArgument, false),
            (429, RateLimited, true),
            (500, Transient, true),
            (502, Transient, true),
            (503, Transient, true),
            (504, Transient, true),
            (599, Transient, true),
            (302, Other, false),
            (418, Other, false),
        ];
        for &(status, kind, retry) in table {
            assert_eq!(ErrorKind::from_http_status(status), kind, "status {status}");
            assert_eq!(kind.is_retryable(), retry, "status {status}");
        }
    }

    #[test]
    fn source_is_kept() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let e = StoreError::with_source(Transient, "read", io);
        let src = std::error::Error::source(&e).expect("source kept");
        assert!(src.to_string().contains("reset"));
        let e = e.into_kind(Other);
        assert_eq!(e.kind(), Other);
        assert!(std::error::Error::source(&e).is_some());
    }
}
