//! The GCS emulator the tests run against (`GCSFS_TEST_ENDPOINT`, set by `scripts/test.sh`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use gcsfs::store::ObjectStore;
use gcsfs::store::gcs::{GcsAuth, GcsConfig, GcsStore};

/// The emulator's endpoint (e.g. `http://127.0.0.9`), if tests should use one.
pub fn endpoint() -> Option<String> {
    std::env::var("GCSFS_TEST_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .map(|e| e.trim_end_matches('/').to_owned())
}

/// Creates a new, empty bucket named after `label` on the emulator and returns its name.
pub async fn fresh_bucket(endpoint: &str, label: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let bucket = format!("{label}-{}-{n}", std::process::id());
    let resp = reqwest::Client::new()
        .post(format!("{endpoint}/storage/v1/b?project=test"))
        .json(&serde_json::json!({ "name": bucket }))
        .send()
        .await
        .expect("emulator reachable");
    assert!(
        resp.status().is_success(),
        "create bucket: {}",
        resp.status()
    );
    bucket
}

/// A `GcsStore` on a new, empty bucket of the emulator.
pub async fn fresh_gcs_store(endpoint: &str, label: &str) -> GcsStore {
    let bucket = fresh_bucket(endpoint, label).await;
    GcsStore::connect(GcsConfig {
        bucket,
        endpoint: Some(endpoint.to_owned()),
        auth: GcsAuth::Anonymous,
        ..GcsConfig::default()
    })
    .await
    .expect("connect")
}

/// For the conformance macro: a store on a fresh bucket, or `None` (skip) without an emulator.
pub async fn maybe_gcs_store() -> Option<Arc<dyn ObjectStore>> {
    match endpoint() {
        Some(e) => Some(Arc::new(fresh_gcs_store(&e, "conf").await)),
        None => {
            super::required::cannot_run("GCSFS_TEST_ENDPOINT is unset (scripts/test.sh sets it)");
            None
        }
    }
}
