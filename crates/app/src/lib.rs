//! The gcsfs demo app: a small HTTP service that writes timestamped files into a folder (usually a
//! gcsfs mount), the Rust replacement of the Flask app people run next to gcsfuse on Cloud Run.
//!
//! Routes (see [`router`]):
//! - `GET /` → `200` plain text naming the folder.
//! - `GET /create`, `POST /create` → creates `FOLDER/<UTC timestamp>.txt` holding that timestamp,
//!   synced and closed before replying; `200 {"path": "..."}` or `500 {"error": "..."}`.
//!   `HEAD /create` is `405`: it must not create a file.
//! - `GET /healthz` → `200 ok` when the folder is a directory, else `503` with the reason.
//!
//! No request chooses a path: names come from the clock only, so nothing is written outside the folder.

pub mod access_log;
pub mod config;
pub mod create;
pub mod error;
pub mod handlers;
pub mod logging;
#[cfg(test)]
mod test_support;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;

pub use config::{Config, ConfigError};
pub use error::CreateError;
pub use handlers::AppState;

/// The service's routes, with the access log on every request (unknown routes included).
pub fn router(folder: PathBuf) -> Router {
    let state = AppState {
        folder: Arc::new(folder),
    };
    Router::new()
        .route("/", get(handlers::index))
        .route(
            "/create",
            get(handlers::create)
                .post(handlers::create)
                .head(handlers::create_head),
        )
        .route("/healthz", get(handlers::healthz))
        .with_state(state)
        .layer(axum::middleware::from_fn(access_log::access_log))
}

/// Serves [`router`] on `listener` until `shutdown` completes, then finishes the requests in flight
/// (axum's graceful shutdown) and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    folder: PathBuf,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(folder))
        .with_graceful_shutdown(shutdown)
        .await
}
