//! Configuration of the Cloud Storage backend.

use std::path::PathBuf;
use std::time::Duration;

/// The public Cloud Storage endpoint, used when [`GcsConfig::endpoint`] is `None`.
pub const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";

/// How [`GcsStore`](super::GcsStore) authenticates.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub enum GcsAuth {
    /// Application Default Credentials: `GOOGLE_APPLICATION_CREDENTIALS`, then gcloud's
    /// user credentials, then the metadata server. The default.
    #[default]
    Default,
    /// A JSON key file: a service-account key (`"type": "service_account"`) or gcloud user
    /// credentials (`"type": "authorized_user"`). Read and checked at connect time.
    KeyFile(PathBuf),
    /// No credentials at all (public buckets, emulators).
    Anonymous,
}

/// Settings of the Cloud Storage backend.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct GcsConfig {
    /// The bucket name, without `gs://`. Default: empty (must be set).
    pub bucket: String,
    /// Base URL of the service (`--custom-endpoint`), e.g. `http://127.0.0.9`, without a path.
    /// Default: `None`, meaning [`DEFAULT_ENDPOINT`].
    pub endpoint: Option<String>,
    /// Credentials to use. Default: [`GcsAuth::Default`] (Application Default Credentials).
    pub auth: GcsAuth,
    /// Requester pays: the project billed for every call (`userProject`). Default: `None`.
    pub billing_project: Option<String>,
    /// Limit on one HTTP attempt of a metadata call (stat, list, delete, copy, patch),
    /// connect plus full response. Default: 30 s.
    pub request_timeout: Duration,
}

impl Default for GcsConfig {
    fn default() -> Self {
        Self {
            bucket: String::new(),
            endpoint: None,
            auth: GcsAuth::Default,
            billing_project: None,
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl GcsConfig {
    /// The endpoint in use, without a trailing `/`.
    pub fn endpoint(&self) -> &str {
        self.endpoint
            .as_deref()
            .unwrap_or(DEFAULT_ENDPOINT)
            .trim_end_matches('/')
    }
}
