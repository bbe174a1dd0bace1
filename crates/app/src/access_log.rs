//! One log line per request: `info` when served, `error` (with the error and the path) when failed.

use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

use crate::error::Failure;

/// Middleware logging each request once, after the response is built.
pub async fn access_log(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let uri = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let status = response.status().as_u16();
    match response.extensions().get::<Failure>() {
        Some(failure) => {
            let path = failure.path.as_ref().map(|p| p.display().to_string());
            tracing::error!(
                %method, %uri, status, latency_ms, error = %failure.error, path,
                "{method} {uri} -> {status}: {}", failure.error
            );
        }
        None if response.status().is_server_error() => {
            tracing::error!(%method, %uri, status, latency_ms, "{method} {uri} -> {status}");
        }
        None => tracing::info!(%method, %uri, status, latency_ms, "{method} {uri} -> {status}"),
    }
    response
}
