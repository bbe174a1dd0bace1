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

#[cfg(test)]
mod tests {
    use crate::test_support::lines_of;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    /// Sends one GET through the router on a current-thread runtime (so the log lines are captured).
    fn get(folder: &std::path::Path, uri: &str) {
        let router = crate::router(folder.to_path_buf());
        let request = Request::get(uri).body(Body::empty()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(router.oneshot(request)).unwrap();
    }

    #[test]
    fn a_served_request_is_one_info_line() {
        let dir = tempfile::tempdir().unwrap();
        let lines = lines_of(|| get(dir.path(), "/create"));
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["severity"], "INFO");
        assert_eq!(lines[0]["message"], "GET /create -> 200");
        assert_eq!(lines[0]["status"], 200);
        assert!(lines[0]["latency_ms"].is_f64());
        assert!(lines[0].get("path").is_none());
    }

    #[test]
    fn a_failed_create_is_one_error_line_with_the_error_and_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("missing");
        let lines = lines_of(|| get(&folder, "/create"));
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert_eq!(line["severity"], "ERROR");
        assert_eq!(line["status"], 500);
        let path = line["path"].as_str().unwrap();
        assert_eq!(std::path::Path::new(path).parent(), Some(folder.as_path()));
        let error = line["error"].as_str().unwrap();
        assert!(error.starts_with(&format!("could not create file {path}: ")));
        assert!(line["message"].as_str().unwrap().contains(error));
    }
}
