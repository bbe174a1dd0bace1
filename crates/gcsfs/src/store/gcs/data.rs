//! Object data through Google's official crate: ranged reads and uploads.

use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use google_cloud_auth::credentials::Credentials;
use google_cloud_gax::retry_policy::RetryPolicyExt;
use google_cloud_storage::builder::storage::WriteObject;
use google_cloud_storage::client::Storage;
use google_cloud_storage::model::Object;
use google_cloud_storage::model_ext::ReadRange;
use google_cloud_storage::read_resume_policy::NeverResume;
use google_cloud_storage::retry_policy::RetryableErrors;
use google_cloud_storage::streaming_source::StreamingSource;

use super::errors::from_sdk;
use crate::store::{
    ByteRange, ByteStream, ErrorKind, Generation, Metageneration, ObjectKey, ObjectMeta,
    Preconditions, StoreError, StoreResult, WriteAttrs, WriteSource,
};

/// How long the SDK keeps resending the chunks of a resumable [`WriteSource::Stream`]
/// upload after transient failures. Only the SDK can resend them: the stream is consumed.
pub const STREAM_UPLOAD_RETRY_LIMIT: Duration = Duration::from_secs(120);

/// Buffer for reading a staged file to compute its CRC32C.
const CRC_BUFFER: usize = 1 << 20;

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
    /// both), except for stream uploads (see [`STREAM_UPLOAD_RETRY_LIMIT`]).
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

    /// Uploads `source`: `Bytes` and `File` in one request (multipart, or one resumable PUT
    /// at 16 MiB and above) with their CRC32C; `Stream` as a buffered resumable upload.
    pub(crate) async fn write(
        &self,
        key: &ObjectKey,
        source: WriteSource,
        pre: Preconditions,
        attrs: &WriteAttrs,
    ) -> StoreResult<ObjectMeta> {
        let what = || format!("write {key:?}");
        let object = match source {
            WriteSource::Bytes(data) => {
                let crc = crc32c::crc32c(&data);
                self.request(key, data, pre, attrs)
                    .with_known_crc32c(crc)
                    .send_unbuffered()
                    .await
            }
            WriteSource::File { path, crc32c } => {
                let crc = match crc32c {
                    Some(c) => c,
                    None => file_crc32c(&path).await?,
                };
                let file = tokio::fs::File::open(&path)
                    .await
                    .map_err(|e| local_file_error(&path, e))?;
                self.request(key, file, pre, attrs)
                    .with_known_crc32c(crc)
                    .send_unbuffered()
                    .await
            }
            WriteSource::Stream(stream) => {
                let source = StreamSource(Mutex::new(stream));
                self.request(key, source, pre, attrs)
                    .with_retry_policy(RetryableErrors.with_time_limit(STREAM_UPLOAD_RETRY_LIMIT))
                    .send_buffered()
                    .await
            }
        };
        let object = object.map_err(|e| from_sdk(e, what()))?;
        Ok(object_meta(object, key))
    }

    /// A write request with preconditions, attributes and billing project applied.
    fn request<T, P>(
        &self,
        key: &ObjectKey,
        payload: T,
        pre: Preconditions,
        attrs: &WriteAttrs,
    ) -> WriteObject<P>
    where
        T: Into<google_cloud_storage::streaming_source::Payload<P>>,
    {
        let mut w = self
            .storage
            .write_object(&self.bucket_path, key.as_str(), payload);
        if let Some(g) = pre.if_generation_match {
            w = w.set_if_generation_match(g.0);
        }
        if let Some(m) = pre.if_metageneration_match {
            w = w.set_if_metageneration_match(m.0);
        }
        if let Some(ct) = &attrs.content_type {
            w = w.set_content_type(ct.clone());
        }
        if !attrs.metadata.is_empty() {
            w = w.set_metadata(attrs.metadata.clone());
        }
        if let Some(p) = &self.user_project {
            w = w.with_quota_project(p.clone());
        }
        w
    }
}

/// Feeds a [`ByteStream`] to the SDK. The mutex only makes the stream `Sync`, as the SDK
/// requires; it is never locked (`get_mut` needs no lock).
struct StreamSource(Mutex<ByteStream>);

impl StreamingSource for StreamSource {
    type Error = StoreError;

    async fn next(&mut self) -> Option<Result<Bytes, StoreError>> {
        let stream = self.0.get_mut().unwrap_or_else(PoisonError::into_inner);
        stream.next().await
    }
}

/// The CRC32C of a local file, computed off the async threads.
async fn file_crc32c(path: &Path) -> StoreResult<u32> {
    let owned = path.to_path_buf();
    let result = tokio::task::spawn_blocking(move || -> std::io::Result<u32> {
        use std::io::Read;
        let mut file = std::fs::File::open(&owned)?;
        let mut buf = vec![0u8; CRC_BUFFER];
        let mut crc = 0u32;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok(crc);
            }
            crc = crc32c::crc32c_append(crc, &buf[..n]);
        }
    })
    .await
    .map_err(|e| StoreError::with_source(ErrorKind::Other, "checksum task failed", e))?;
    result.map_err(|e| local_file_error(path, e))
}

/// A local staging file could not be read: the caller's problem, not the service's.
fn local_file_error(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::with_source(
        ErrorKind::Other,
        format!("cannot read local file {}", path.display()),
        e,
    )
}

/// The metadata of a newly written object. Fields the service left out fall back to what
/// is known (`key`; `updated`: now).
fn object_meta(o: Object, key: &ObjectKey) -> ObjectMeta {
    ObjectMeta {
        key: ObjectKey::new(o.name).unwrap_or_else(|_| key.clone()),
        size: u64::try_from(o.size).unwrap_or(0),
        generation: Generation(o.generation),
        metageneration: Metageneration(o.metageneration),
        updated: o
            .update_time
            .and_then(|t| SystemTime::try_from(t).ok())
            .unwrap_or_else(SystemTime::now),
        crc32c: o.checksums.and_then(|c| c.crc32c),
        content_type: Some(o.content_type).filter(|c| !c.is_empty()),
        metadata: o.metadata.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use google_cloud_storage::model::ObjectChecksums;

    #[test]
    fn sdk_object_to_meta() {
        let ts = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 5_000);
        let mut o = Object::new()
            .set_name("a/b")
            .set_size(42)
            .set_generation(7)
            .set_metageneration(2)
            .set_content_type("text/plain")
            .set_checksums(ObjectChecksums::new().set_crc32c(0xdead_beef_u32))
            .set_metadata([("k", "v")]);
        o.update_time = Some(TryFrom::try_from(ts).unwrap());
        let m = object_meta(o, &ObjectKey::new("a/b").unwrap());
        assert_eq!(m.key.as_str(), "a/b");
        assert_eq!(m.size, 42);
        assert_eq!(m.generation, Generation(7));
        assert_eq!(m.metageneration, Metageneration(2));
        assert_eq!(m.updated, ts);
        assert_eq!(m.crc32c, Some(0xdead_beef));
        assert_eq!(m.content_type.as_deref(), Some("text/plain"));
        assert_eq!(m.metadata.get("k").map(String::as_str), Some("v"));

        let bare = object_meta(Object::new(), &ObjectKey::new("fallback").unwrap());
        assert_eq!(bare.key.as_str(), "fallback");
        assert_eq!(bare.content_type, None);
        assert_eq!(bare.crc32c, None);
    }
}
