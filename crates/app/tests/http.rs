//! Handler tests through the real router with `tower::ServiceExt::oneshot`, on temp dirs.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use chrono::{DateTime, Utc};
use serde_json::Value;
use tower::ServiceExt as _;

async fn call(router: Router, method: Method, uri: &str) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// Calls `/create` and returns the path from its JSON reply, asserting a 200.
async fn create(router: Router, method: Method) -> PathBuf {
    let (status, body) = call(router, method, "/create").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let json: Value = serde_json::from_str(&body).unwrap();
    PathBuf::from(json["path"].as_str().unwrap())
}

/// Checks that `path` is a plain file name directly in `dir` and holds the timestamp its name encodes.
fn assert_created_in(dir: &Path, path: &Path) {
    assert_eq!(path.parent(), Some(dir), "{}", path.display());
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(name.ends_with(".txt") && !name.contains(':'), "{name}");
    let contents = std::fs::read_to_string(path).unwrap();
    let stamp: DateTime<Utc> = contents.trim_end().parse().unwrap();
    assert!(contents.ends_with('\n'));
    assert_eq!(name, app::create::file_name(stamp, 0));
}

#[tokio::test]
async fn get_and_post_create_write_a_file_with_its_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let router = app::router(dir.path().to_path_buf());
    let from_get = create(router.clone(), Method::GET).await;
    let from_post = create(router, Method::POST).await;
    assert_ne!(from_get, from_post);
    assert_created_in(dir.path(), &from_get);
    assert_created_in(dir.path(), &from_post);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[tokio::test]
async fn folder_with_and_without_trailing_slash_joins_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().to_str().unwrap().to_owned();
    assert!(!plain.ends_with('/'));
    for folder in [plain.clone(), format!("{plain}/")] {
        let path = create(app::router(PathBuf::from(&folder)), Method::GET).await;
        // The string form has exactly one separator between folder and name, whatever FOLDER was.
        let text = path.to_str().unwrap();
        assert!(text.starts_with(&format!("{plain}/")), "{text}");
        assert!(!text.contains("//"), "{text}");
        assert!(!text[plain.len() + 1..].contains('/'), "{text}");
        assert_created_in(dir.path(), &path);
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[tokio::test]
async fn fifty_concurrent_creates_make_fifty_distinct_files() {
    let dir = tempfile::tempdir().unwrap();
    let router = app::router(dir.path().to_path_buf());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let method = if i % 2 == 0 {
            Method::GET
        } else {
            Method::POST
        };
        tasks.spawn(create(router.clone(), method));
    }
    let mut paths = HashSet::new();
    while let Some(path) = tasks.join_next().await {
        assert!(paths.insert(path.unwrap()));
    }
    assert_eq!(paths.len(), 50);
    let on_disk: HashSet<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(on_disk, paths);
    for path in &paths {
        let contents = std::fs::read_to_string(path).unwrap();
        let stamp: DateTime<Utc> = contents.trim_end().parse().unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        // Same-nanosecond calls get a `-n` suffix; the timestamp part always matches the contents.
        assert!(name.starts_with(app::create::file_name(stamp, 0).trim_end_matches(".txt")));
    }
}

/// Folders that cannot take a file even for root: a regular file, a path under a regular file, and a
/// folder that does not exist.
fn broken_folders(dir: &Path) -> Vec<PathBuf> {
    let file = dir.join("a-file");
    std::fs::write(&file, b"not a folder").unwrap();
    vec![file.clone(), file.join("sub"), dir.join("missing")]
}

#[tokio::test]
async fn create_in_an_unusable_folder_is_a_500_with_the_path_and_cause() {
    let dir = tempfile::tempdir().unwrap();
    for folder in broken_folders(dir.path()) {
        let (status, body) = call(app::router(folder.clone()), Method::POST, "/create").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
        let json: Value = serde_json::from_str(&body).unwrap();
        let error = json["error"].as_str().unwrap();
        let prefix = format!("could not create file {}/", folder.display());
        assert!(error.starts_with(&prefix), "{error}");
        assert!(error.contains("(os error"), "cause missing: {error}");
    }
    // Nothing was written anywhere.
    assert_eq!(
        std::fs::read(dir.path().join("a-file")).unwrap(),
        b"not a folder"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[tokio::test]
async fn healthz_is_ok_for_a_directory_and_503_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let (status, body) = call(app::router(dir.path().into()), Method::GET, "/healthz").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    for folder in broken_folders(dir.path()) {
        let (status, body) = call(app::router(folder.clone()), Method::GET, "/healthz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains(&folder.display().to_string()), "{body}");
    }
}

#[tokio::test]
async fn index_names_the_folder_and_other_routes_and_methods_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let router = app::router(dir.path().into());
    let (status, body) = call(router.clone(), Method::GET, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(dir.path().to_str().unwrap()), "{body}");
    let (status, _) = call(router.clone(), Method::GET, "/create/../../etc/passwd").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(router.clone(), Method::DELETE, "/create").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = call(router, Method::HEAD, "/create").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
