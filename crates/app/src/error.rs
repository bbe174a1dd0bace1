//! The crate's errors and how a failed request is answered.

use std::path::PathBuf;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Why a file could not be created. Every variant names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// Opening (creating) the file failed: the folder is missing, not a directory, not writable, …
    #[error("could not create file {}", path.display())]
    Open {
        /// The file that was being created.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Writing the contents failed.
    #[error("could not write file {}", path.display())]
    Write {
        /// The file being written.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `fsync` failed: the data may not be stored.
    #[error("could not flush file {} to storage", path.display())]
    Sync {
        /// The file being flushed.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `close` failed (a FUSE write-back mount reports upload failures here).
    #[error("could not close file {} (its data may not be stored)", path.display())]
    Close {
        /// The file being closed.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Every candidate name was already taken.
    #[error("no free file name in {} after {attempts} attempts", folder.display())]
    NoFreeName {
        /// The folder files are created in.
        folder: PathBuf,
        /// How many names were tried.
        attempts: u32,
    },
    /// The blocking task doing the work panicked or was cancelled.
    #[error("the file creation task did not finish")]
    Task(#[source] tokio::task::JoinError),
}

impl CreateError {
    /// The path the failure is about (the folder for [`CreateError::NoFreeName`], none for a task failure).
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            Self::Open { path, .. }
            | Self::Write { path, .. }
            | Self::Sync { path, .. }
            | Self::Close { path, .. } => Some(path),
            Self::NoFreeName { folder, .. } => Some(folder),
            Self::Task(_) => None,
        }
    }
}

/// A failed request, as recorded for the access log (attached to the response as an extension).
#[derive(Debug, Clone)]
pub struct Failure {
    /// The error and its causes, joined with `": "`.
    pub error: String,
    /// The path involved, if any.
    pub path: Option<PathBuf>,
}

/// Renders `err` and its chain of sources as one line: `outer: inner: innermost`.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut next = err.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

impl IntoResponse for CreateError {
    /// `500` with `{"error": "<message and causes>"}`; the access log line picks up the [`Failure`].
    fn into_response(self) -> Response {
        let failure = Failure {
            error: error_chain(&self),
            path: self.path().map(PathBuf::from),
        };
        let body = Json(serde_json::json!({ "error": failure.error }));
        let mut response = (StatusCode::INTERNAL_SERVER_ERROR, body).into_response();
        response.extensions_mut().insert(failure);
        response
    }
}
