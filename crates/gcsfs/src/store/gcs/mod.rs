//! [`ObjectStore`] on Cloud Storage.
//!
//! - Reads of object data go through Google's official `google-cloud-storage` crate
//!   ([`data`]).
//! - Uploads go over the JSON API with our own client ([`upload`]): multipart requests and the
//!   calls of the resumable protocol, driven by `store::upload` (google-cloud-storage 1.21
//!   resends wrong bytes when it resumes; see `store/upload.rs`).
//! - Metadata calls (stat, list, delete, copy, patch) go over the JSON API with our
//!   own small client ([`json`]): the official crate offers them only over gRPC, which no
//!   emulator speaks.
//! - All share one credentials object ([`auth`]); failures become [`StoreError`]s through
//!   the one status table ([`errors`]).
//! - Nothing here retries: the `RetryStore` above does. Used bare, `write` of a file or a
//!   stream runs the resumable driver with one attempt per call.

mod auth;
mod config;
mod data;
mod errors;
mod json;
mod resource;
mod upload;
mod url;

pub use config::{DEFAULT_ENDPOINT, GcsAuth, GcsConfig};

use std::sync::Arc;

use async_trait::async_trait;
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt};

use super::upload::{Source, Upload};
use super::{
    ByteRange, ByteStream, ChunkData, ErrorKind, Generation, ListPage, ListRequest, MetadataPatch,
    ObjectFacts, ObjectKey, ObjectMeta, ObjectStore, Preconditions, RetryConfig, RetryStats,
    StoreError, StoreResult, UploadSession, UploadStatus, WriteAttrs, WriteSource,
};
use data::DataClient;
use json::JsonClient;
use upload::UploadClient;

/// A Cloud Storage bucket as an [`ObjectStore`].
#[derive(Clone, Debug)]
pub struct GcsStore {
    bucket: String,
    data: LazyData,
    json: JsonClient,
    uploads: UploadClient,
}

/// The SDK client, being built in the background: building it loads the system's root
/// certificates (tens of milliseconds), which need not delay the first metadata call.
#[derive(Clone)]
struct LazyData(Shared<BoxFuture<'static, Result<DataClient, Arc<StoreError>>>>);

impl LazyData {
    fn spawn(build: impl Future<Output = StoreResult<DataClient>> + Send + 'static) -> Self {
        let task = tokio::spawn(build);
        let ready = async move {
            match task.await {
                Ok(built) => built.map_err(Arc::new),
                Err(e) => Err(Arc::new(StoreError::with_source(
                    ErrorKind::Other,
                    "building the Cloud Storage client failed",
                    e,
                ))),
            }
        };
        Self(ready.boxed().shared())
    }

    async fn get(&self) -> StoreResult<DataClient> {
        self.0.clone().await.map_err(|e| {
            StoreError::with_source(e.kind(), "the Cloud Storage client is not available", e)
        })
    }
}

impl std::fmt::Debug for LazyData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LazyData").finish_non_exhaustive()
    }
}

impl GcsStore {
    /// Builds the clients for `config.bucket`. Credentials are loaded now: a bad key file
    /// fails here with `Unauthenticated`. The SDK client (object data) is built in the
    /// background on the current runtime; data calls wait for it. No request is sent.
    pub async fn connect(config: GcsConfig) -> StoreResult<GcsStore> {
        let bucket = config
            .bucket
            .trim_start_matches("gs://")
            .trim_end_matches('/');
        if bucket.is_empty() || bucket.contains('/') {
            return Err(StoreError::new(
                ErrorKind::InvalidArgument,
                format!("invalid bucket name {:?}", config.bucket),
            ));
        }
        let creds = auth::credentials(&config.auth).await?;
        let data = {
            let endpoint = config
                .endpoint
                .as_deref()
                .map(|e| e.trim_end_matches('/').to_string());
            let (bucket, creds, project) = (
                bucket.to_string(),
                creds.clone(),
                config.billing_project.clone(),
            );
            LazyData::spawn(async move {
                DataClient::new(endpoint.as_deref(), &bucket, creds, project).await
            })
        };
        let json = JsonClient::new(
            config.endpoint(),
            bucket,
            creds.clone(),
            config.billing_project.clone(),
            config.request_timeout,
        )?;
        let uploads = UploadClient::new(
            config.endpoint(),
            bucket,
            creds,
            config.billing_project.clone(),
            config.request_timeout,
        )?;
        Ok(GcsStore {
            bucket: bucket.to_owned(),
            data,
            json,
            uploads,
        })
    }

    /// The bucket this store reads and writes.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }
}

#[async_trait]
impl ObjectStore for GcsStore {
    #[tracing::instrument(level = "debug", skip_all, fields(key = %key))]
    async fn stat(&self, key: &ObjectKey) -> StoreResult<ObjectMeta> {
        self.json.get(key, None).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(prefix = %request.prefix))]
    async fn list(&self, request: &ListRequest) -> StoreResult<ListPage> {
        self.json.list(request).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(key = %key, start = range.start, end = ?range.end))]
    async fn read(
        &self,
        key: &ObjectKey,
        generation: Option<Generation>,
        range: ByteRange,
    ) -> StoreResult<ByteStream> {
        tracing::debug!("ranged read");
        if range.end.is_some_and(|end| end <= range.start) {
            // Nothing to read, but the object (generation) must still exist.
            self.json.get(key, generation).await?;
            return Ok(futures::stream::empty().boxed());
        }
        self.data.get().await?.read(key, generation, range).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(key = %key, source = ?source))]
    async fn write(
        &self,
        key: &ObjectKey,
        source: WriteSource,
        preconditions: Preconditions,
        attrs: &WriteAttrs,
    ) -> StoreResult<ObjectMeta> {
        let source = match source {
            WriteSource::Bytes(data) => {
                return self
                    .uploads
                    .multipart(key, data, preconditions, attrs)
                    .await;
            }
            other => Source::of(other).await?,
        };
        let config = RetryConfig::no_retries();
        let stats = RetryStats::default();
        let upload = Upload {
            store: self,
            config: &config,
            stats: &stats,
            key,
            attrs,
        };
        upload.resumable(source, preconditions).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(key = %key))]
    async fn delete(&self, key: &ObjectKey, preconditions: Preconditions) -> StoreResult<()> {
        self.json.delete(key, preconditions).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(src = %src, dst = %dst))]
    async fn copy(
        &self,
        src: &ObjectKey,
        src_generation: Option<Generation>,
        dst: &ObjectKey,
        preconditions: Preconditions,
    ) -> StoreResult<ObjectMeta> {
        self.json
            .rewrite(src, src_generation, dst, preconditions)
            .await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(key = %key))]
    async fn patch_metadata(
        &self,
        key: &ObjectKey,
        patch: &MetadataPatch,
        preconditions: Preconditions,
    ) -> StoreResult<ObjectMeta> {
        self.json.patch_metadata(key, patch, preconditions).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(key = %key))]
    async fn start_upload(
        &self,
        key: &ObjectKey,
        preconditions: Preconditions,
        attrs: &WriteAttrs,
        facts: ObjectFacts,
    ) -> StoreResult<UploadSession> {
        self.uploads.start(key, preconditions, attrs, facts).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(key = %session.key(), offset, len = data.len(), last = last.is_some()))]
    async fn upload_chunk(
        &self,
        session: &UploadSession,
        offset: u64,
        data: ChunkData,
        last: Option<u32>,
    ) -> StoreResult<UploadStatus> {
        self.uploads.chunk(session, offset, data, last).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(key = %session.key()))]
    async fn upload_status(&self, session: &UploadSession) -> StoreResult<UploadStatus> {
        self.uploads.status(session).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(key = %session.key()))]
    async fn cancel_upload(&self, session: &UploadSession) -> StoreResult<()> {
        self.uploads.cancel(session).await
    }
}
