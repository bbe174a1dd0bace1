//! Object data through Google's official crate: ranged reads. (Uploads go over the JSON API
//! with our own client, `upload.rs`.)

use futures::StreamExt;
use google_cloud_auth::credentials::Credentials;
use google_cloud_gax::retry_policy::RetryPolicyExt;
use google_cloud_storage::client::Storage;
use google_cloud_storage::model_ext::ReadRange;
use google_cloud_storage::read_resume_policy::NeverResume;
use google_cloud_storage::retry_policy::RetryableErrors;

use super::errors::from_sdk;
use crate::store::{
    ByteRange, ByteStream, ErrorKind, Generation, ObjectKey, StoreError, StoreResult,
};

/// The SDK client and the bucket it writes to.
#[derive(Clone, Debug)]
pub(crate) struct DataClient {
    storage: Storage,
    /// `projects/_/buckets/{bucket}`, the SDK's name for the bucket.
    bucket_path: String,
    user_project: Option<String>,
}

impl DataClient {
    /// Builds the SDK client: no retries and no read resumption (the `RetryStore` above does
    /// both).
    pub(crate) async fn new(
        endpoint: Option<&str>,
        bucket: &str,
        creds: Credentials,
        user_project: Option<String>,
    ) -> StoreResult<Self> {
        let mut builder = Storage::builder()
            .with_credentials(creds)
            .with_retry_policy(RetryableErrors.with_attempt_limit(1))
            .with_read_resume_policy(NeverResume);
        if let Some(e) = endpoint {
            builder = builder.with_endpoint(e);
        }
        let storage = builder.build().await.map_err(|e| {
            StoreError::with_source(
                ErrorKind::InvalidArgument,
                "cannot build the Cloud Storage client",
                e,
            )
        })?;
        Ok(Self {
            storage,
            bucket_path: format!("projects/_/buckets/{bucket}"),
            user_project,
        })
    }

    /// Reads a non-empty `range` (the caller handles empty ones). A range starting at or
    /// past the end (HTTP 416) yields an empty stream.
    pub(crate) async fn read(
        &self,
        key: &ObjectKey,
        generation: Option<Generation>,
        range: ByteRange,
    ) -> StoreResult<ByteStream> {
        let what = || format!("read {key:?}");
        let read_range = match range.end {
            Some(end) => ReadRange::segment(range.start, end.saturating_sub(range.start)),
            None if range.start == 0 => ReadRange::all(),
            None => ReadRange::offset(range.start),
        };
        let mut req = self
            .storage
            .read_object(&self.bucket_path, key.as_str())
            .set_read_range(read_range);
        if let Some(g) = generation {
            req = req.set_generation(g.0);
        }
        if let Some(p) = &self.user_project {
            req = req.with_quota_project(p.clone());
        }
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) if e.http_status_code() == Some(416) => {
                return Ok(futures::stream::empty().boxed());
            }
            Err(e) => return Err(from_sdk(e, what())),
        };
        let label = what();
        let stream = futures::stream::unfold(Some(resp), move |state| {
            let label = label.clone();
            async move {
                let mut resp = state?;
                match resp.next().await? {
                    Ok(chunk) => Some((Ok(chunk), Some(resp))),
                    // After an error the stream ends.
                    Err(e) => Some((Err(from_sdk(e, label)), None)),
                }
            }
        });
        Ok(stream.boxed())
    }
}
