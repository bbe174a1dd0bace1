//! The HTTP handlers: `/`, `/create`, `/healthz`.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Serialize;

use crate::create::create_file;
use crate::error::{CreateError, Failure, error_chain};

/// Shared state of the handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The folder files are created in (see [`crate::Config::folder`]).
    pub folder: Arc<PathBuf>,
}

/// The body of a successful `/create`.
#[derive(Debug, Serialize)]
pub struct Created {
    /// The path of the file created: the folder joined with the new file's name.
    pub path: String,
}

/// `GET /`: a plain-text hello naming the folder.
pub async fn index(State(state): State<AppState>) -> String {
    format!(
        "Hello from the gcsfs demo app.\nFiles are created in {}.\nGET or POST /create to create one.\n",
        state.folder.display()
    )
}

/// `GET|POST /create`: creates one timestamped file and answers `200 {"path": "..."}`,
/// or `500 {"error": "..."}` on any failure (after the file was synced and closed, never before).
pub async fn create(State(state): State<AppState>) -> Result<Json<Created>, CreateError> {
    let folder = Arc::clone(&state.folder);
    let now = Utc::now();
    let path = tokio::task::spawn_blocking(move || create_file(&folder, now))
        .await
        .map_err(CreateError::Task)??;
    Ok(Json(Created {
        path: path.display().to_string(),
    }))
}

/// `HEAD /create`: `405`, because axum would otherwise answer HEAD with the GET handler and a HEAD
/// (link checkers, monitors) must not create a file.
pub async fn create_head() -> impl IntoResponse {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(axum::http::header::ALLOW, "GET, POST")],
    )
}

/// `GET /healthz`: `200 ok` when the folder is a directory, `503` with the reason otherwise.
///
/// It checks the folder (one `stat`, no write) so a probe notices a mount that is gone or broken
/// (`ENOTCONN` after a FUSE daemon died) and the instance gets replaced; it never creates files.
pub async fn healthz(State(state): State<AppState>) -> Response {
    let folder = Arc::clone(&state.folder);
    let checked = tokio::task::spawn_blocking(move || std::fs::metadata(&*folder)).await;
    let error = match checked {
        Ok(Ok(meta)) if meta.is_dir() => return (StatusCode::OK, "ok").into_response(),
        Ok(Ok(_)) => format!("folder {} is not a directory", state.folder.display()),
        Ok(Err(e)) => format!("folder {} is unavailable: {e}", state.folder.display()),
        Err(e) => format!("folder check did not finish: {}", error_chain(&e)),
    };
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, error.clone()).into_response();
    response.extensions_mut().insert(Failure {
        error,
        path: Some(state.folder.to_path_buf()),
    });
    response
}
