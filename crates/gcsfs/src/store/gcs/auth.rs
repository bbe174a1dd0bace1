//! Building the one credentials object shared by the SDK client and the JSON client.

use std::path::Path;

use google_cloud_auth::credentials::{
    self, CacheableResource, Credentials, anonymous, service_account, user_account,
};
use http::HeaderMap;

use super::config::GcsAuth;
use crate::store::{ErrorKind, StoreError, StoreResult};

/// Builds credentials for `auth`. A key file is read, parsed and (for service accounts,
/// whose tokens are signed locally) used to sign a token now, so a bad file fails here.
pub(crate) async fn credentials(auth: &GcsAuth) -> StoreResult<Credentials> {
    match auth {
        GcsAuth::Anonymous => Ok(anonymous::Builder::new().build()),
        GcsAuth::Default => credentials::Builder::default().build().map_err(|e| {
            StoreError::with_source(
                ErrorKind::Unauthenticated,
                "cannot load Application Default Credentials",
                e,
            )
        }),
        GcsAuth::KeyFile(path) => key_file(path).await,
    }
}

async fn key_file(path: &Path) -> StoreResult<Credentials> {
    let shown = path.display();
    let bad = |what: &str, e: Box<dyn std::error::Error + Send + Sync>| {
        StoreError::with_source(
            ErrorKind::Unauthenticated,
            format!("key file {shown}: {what}"),
            e,
        )
    };
    let text = tokio::fs::read(path)
        .await
        .map_err(|e| bad("cannot read it", e.into()))?;
    let json: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| bad("not valid JSON", e.into()))?;
    let kind = json
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or("")
        .to_owned();
    let creds = match kind.as_str() {
        "service_account" => service_account::Builder::new(json)
            .build()
            .map_err(|e| bad("not a valid service-account key", e.into()))?,
        "authorized_user" => user_account::Builder::new(json)
            .build()
            .map_err(|e| bad("not valid user credentials", e.into()))?,
        other => {
            return Err(StoreError::new(
                ErrorKind::Unauthenticated,
                format!(
                    "key file {shown}: unsupported credential type {other:?} \
                     (expected \"service_account\" or \"authorized_user\")"
                ),
            ));
        }
    };
    if kind == "service_account" {
        // Self-signed JWTs need no network: this checks the private key now.
        auth_headers(&creds)
            .await
            .map_err(|e| bad("cannot sign a token with it", e.into()))?;
    }
    Ok(creds)
}

/// The authorization headers for one request (cached and refreshed by the credentials).
pub(crate) async fn auth_headers(creds: &Credentials) -> StoreResult<HeaderMap> {
    match creds.headers(http::Extensions::new()).await {
        Ok(CacheableResource::New { data, .. }) => Ok(data),
        // Only returned when the request carries an entity tag, which ours never does; never
        // fall back to sending a request without credentials.
        Ok(CacheableResource::NotModified) => Err(StoreError::new(
            ErrorKind::Other,
            "credentials answered `not modified` to a request without an entity tag",
        )),
        Err(e) => {
            let kind = if e.is_transient() {
                ErrorKind::Transient
            } else {
                ErrorKind::Unauthenticated
            };
            Err(StoreError::with_source(
                kind,
                "cannot obtain credentials",
                e,
            ))
        }
    }
}
