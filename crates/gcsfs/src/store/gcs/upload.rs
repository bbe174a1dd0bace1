//! Object uploads over the Cloud Storage JSON API, with our own HTTP client rather than the
//! SDK's (see `store::upload` for why): a multipart upload (one request, the object's CRC32C
//! in its metadata, both parts typed) and the four calls of the resumable protocol — start a
//! session (`POST …?uploadType=resumable`, preconditions and known facts in it), send bytes
//! (`PUT` with `Content-Range`; the last one names the total and carries `X-Goog-Hash`), ask
//! where it stands (`PUT` with `Content-Range: bytes */*`), and cancel (`DELETE`).
//!
//! Answers: `200`/`201` with an object resource (finalized), `308` with `Range: bytes=0-N`
//! (the first `N + 1` bytes are held; no `Range`: none), anything else through the one status
//! table. A body cut short is `Transient`, like any transport failure.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use google_cloud_auth::credentials::Credentials;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, HeaderMap, LOCATION, RANGE};
use reqwest::{RequestBuilder, Response};

use super::auth::auth_headers;
use super::errors::from_reqwest;
use super::json::{preconditions, status_error};
use super::resource::ObjectResource;
use super::url::encode_segment;
use crate::store::{
    ChunkData, ErrorKind, ObjectFacts, ObjectKey, ObjectMeta, Preconditions, StoreError,
    StoreResult, UploadSession, UploadStatus, WriteAttrs,
};

/// Content type of object data when none is given.
const OCTET_STREAM: &str = "application/octet-stream";

/// What GCS answers to a resumable upload request that did not finalize it.
const RESUME_INCOMPLETE: u16 = 308;

/// What GCS answers to a cancelled upload session.
const CLIENT_CLOSED: u16 = 499;

/// Buffer size when sending a part of a local file.
const FILE_READ_BUFFER: usize = 256 * 1024;

/// Uploads to one bucket.
#[derive(Clone, Debug)]
pub(crate) struct UploadClient {
    /// No overall request timeout (a request's time limit is set by its caller, from its
    /// size) and no redirects (a `308` is an answer here, not a redirect).
    http: reqwest::Client,
    creds: Credentials,
    /// `{endpoint}/upload/storage/v1/b/{bucket}/o`.
    url: String,
    user_project: Option<String>,
}

impl UploadClient {
    /// A client for `bucket` at `endpoint`; connecting is limited to `connect_timeout`.
    pub(crate) fn new(
        endpoint: &str,
        bucket: &str,
        creds: Credentials,
        user_project: Option<String>,
        connect_timeout: Duration,
    ) -> StoreResult<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| from_reqwest(e, "cannot build the HTTP client".into()))?;
        Ok(Self {
            http,
            creds,
            url: format!(
                "{endpoint}/upload/storage/v1/b/{}/o",
                encode_segment(bucket)
            ),
            user_project,
        })
    }

    /// Uploads `data` as `key` in one multipart request; the service checks its CRC32C.
    pub(crate) async fn multipart(
        &self,
        key: &ObjectKey,
        data: Bytes,
        pre: Preconditions,
        attrs: &WriteAttrs,
    ) -> StoreResult<ObjectMeta> {
        let what = || format!("write {key:?}");
        let facts = ObjectFacts {
            size: Some(data.len() as u64),
            crc32c: Some(crc32c::crc32c(&data)),
        };
        let metadata = object_json(key, attrs, facts);
        let boundary = format!("gcsfs-{:032x}", rand::random::<u128>());
        let media_type = attrs.content_type.as_deref().unwrap_or(OCTET_STREAM);
        let parts = multipart_body(&boundary, &metadata, media_type, data);
        let len: usize = parts.iter().map(Bytes::len).sum();
        let body = futures::stream::iter(parts.map(Ok::<_, std::io::Error>));
        let mut query = preconditions(pre);
        query.push(("uploadType", "multipart".into()));
        let rb = self
            .http
            .post(&self.url)
            .query(&query)
            .header(
                CONTENT_TYPE,
                format!("multipart/related; boundary={boundary}"),
            )
            .header(CONTENT_LENGTH, len)
            .body(reqwest::Body::wrap_stream(body));
        let resp = self.send(rb, &what).await?;
        match answer(resp, &what).await? {
            UploadStatus::Done(meta) => Ok(meta),
            UploadStatus::Persisted(_) => Err(StoreError::new(
                ErrorKind::Other,
                format!("{}: a one-request upload was answered 308", what()),
            )),
        }
    }

    /// Starts a resumable upload session of `key`.
    pub(crate) async fn start(
        &self,
        key: &ObjectKey,
        pre: Preconditions,
        attrs: &WriteAttrs,
        facts: ObjectFacts,
    ) -> StoreResult<UploadSession> {
        let what = || format!("start upload of {key:?}");
        let mut query = preconditions(pre);
        query.push(("uploadType", "resumable".into()));
        query.push(("name", key.as_str().to_owned()));
        let body = object_json(key, attrs, facts);
        let mut rb = self
            .http
            .post(&self.url)
            .query(&query)
            .header(CONTENT_TYPE, "application/json; charset=UTF-8")
            .header(
                "X-Upload-Content-Type",
                attrs.content_type.as_deref().unwrap_or(OCTET_STREAM),
            )
            .body(body);
        if let Some(size) = facts.size {
            rb = rb.header("X-Upload-Content-Length", size);
        }
        let resp = self.send(rb, &what).await?;
        let status = resp.status();
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(str::to_owned);
        let body = resp.bytes().await.map_err(|e| from_reqwest(e, what()))?;
        if !status.is_success() {
            return Err(status_error(status, &body, &what()));
        }
        let location = location.ok_or_else(|| {
            StoreError::new(
                ErrorKind::Other,
                format!("{}: the answer has no session URI", what()),
            )
        })?;
        Ok(UploadSession::new(key.clone(), location))
    }

    /// Sends `data` as the bytes from `offset`; `last` (the whole object's CRC32C) ends the
    /// upload.
    pub(crate) async fn chunk(
        &self,
        session: &UploadSession,
        offset: u64,
        data: ChunkData,
        last: Option<u32>,
    ) -> StoreResult<UploadStatus> {
        let key = session.key();
        let what = || format!("upload of {key:?} from byte {offset}");
        let len = data.len();
        let total = match last {
            Some(_) => (offset + len).to_string(),
            None => "*".to_owned(),
        };
        let range = if len == 0 {
            format!("bytes */{total}")
        } else {
            format!("bytes {offset}-{}/{total}", offset + len - 1)
        };
        let mut rb = self
            .http
            .put(session.id())
            .header(CONTENT_RANGE, range)
            .header(CONTENT_LENGTH, len)
            .body(body(data).await?);
        if let Some(crc) = last {
            rb = rb.header("X-Goog-Hash", format!("crc32c={}", encode_crc32c(crc)));
        }
        let resp = self.send(rb, &what).await?;
        answer(resp, &what).await
    }

    /// Asks where an upload stands.
    pub(crate) async fn status(&self, session: &UploadSession) -> StoreResult<UploadStatus> {
        let key = session.key();
        let what = || format!("status of the upload of {key:?}");
        let rb = self
            .http
            .put(session.id())
            .header(CONTENT_RANGE, "bytes */*")
            .header(CONTENT_LENGTH, 0);
        let resp = self.send(rb, &what).await?;
        answer(resp, &what).await
    }

    /// Cancels an upload session.
    pub(crate) async fn cancel(&self, session: &UploadSession) -> StoreResult<()> {
        let key = session.key();
        let what = || format!("cancel the upload of {key:?}");
        let rb = self.http.delete(session.id()).header(CONTENT_LENGTH, 0);
        let resp = self.send(rb, &what).await?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| from_reqwest(e, what()))?;
        if status.is_success() || status.as_u16() == CLIENT_CLOSED {
            return Ok(());
        }
        Err(status_error(status, &body, &what()))
    }

    /// Sends a request with credentials (and `userProject` on requests to the bucket's URL;
    /// a session URI already carries everything).
    async fn send(&self, rb: RequestBuilder, what: &impl Fn() -> String) -> StoreResult<Response> {
        let mut rb = rb.headers(auth_headers(&self.creds).await?);
        if let Some(p) = &self.user_project {
            rb = rb.query(&[("userProject", p.as_str())]);
        }
        rb.send().await.map_err(|e| from_reqwest(e, what()))
    }
}

/// What an upload request's answer says.
async fn answer(resp: Response, what: &impl Fn() -> String) -> StoreResult<UploadStatus> {
    let status = resp.status();
    if status.as_u16() == RESUME_INCOMPLETE {
        return held(resp.headers(), what).map(UploadStatus::Persisted);
    }
    let body = resp.bytes().await.map_err(|e| from_reqwest(e, what()))?;
    if !status.is_success() {
        return Err(status_error(status, &body, &what()));
    }
    let resource: ObjectResource = serde_json::from_slice(&body).map_err(|e| {
        StoreError::with_source(
            ErrorKind::Other,
            format!("{}: unexpected answer from the service", what()),
            e,
        )
    })?;
    resource.into_meta().map(UploadStatus::Done)
}

/// How many bytes a `308` says are held: `Range: bytes=0-N` is `N + 1`; no `Range` is none.
fn held(headers: &HeaderMap, what: &impl Fn() -> String) -> StoreResult<u64> {
    let Some(range) = headers.get(RANGE) else {
        return Ok(0);
    };
    let bad = || {
        StoreError::new(
            ErrorKind::Other,
            format!("{}: malformed Range {range:?} in a 308 answer", what()),
        )
    };
    let text = range.to_str().map_err(|_| bad())?;
    let last = text
        .strip_prefix("bytes=0-")
        .and_then(|n| n.trim().parse::<u64>().ok())
        .ok_or_else(bad)?;
    Ok(last + 1)
}

/// The body of an upload request: buffers in memory one after the other, or a part of a file
/// read as it is sent.
async fn body(data: ChunkData) -> StoreResult<reqwest::Body> {
    match data {
        ChunkData::Memory(parts) => Ok(reqwest::Body::wrap_stream(futures::stream::iter(
            parts.into_iter().map(Ok::<_, std::io::Error>),
        ))),
        ChunkData::File { path, offset, len } => {
            use tokio::io::{AsyncReadExt, AsyncSeekExt};
            let opened = async {
                let mut file = tokio::fs::File::open(&path).await?;
                file.seek(std::io::SeekFrom::Start(offset)).await?;
                Ok::<_, std::io::Error>(file)
            };
            let file = opened.await.map_err(|e| {
                StoreError::with_source(
                    ErrorKind::Other,
                    format!("cannot read local file {}", path.display()),
                    e,
                )
            })?;
            let stream =
                tokio_util::io::ReaderStream::with_capacity(file.take(len), FILE_READ_BUFFER);
            Ok(reqwest::Body::wrap_stream(stream))
        }
    }
}

/// A `multipart/related` body: the object resource as JSON, then the data, each part typed
/// (Google's own testbench refuses an untyped media part). `boundary` must not occur in
/// either; a random one does not.
fn multipart_body(boundary: &str, metadata: &str, media_type: &str, data: Bytes) -> [Bytes; 3] {
    let head = Bytes::from(format!(
        "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{metadata}\r\n\
         --{boundary}\r\nContent-Type: {media_type}\r\n\r\n"
    ));
    let tail = Bytes::from(format!("\r\n--{boundary}--\r\n"));
    [head, data, tail]
}

/// The object resource sent with an upload: name, content type, custom metadata, and the
/// facts the service checks at finalize.
fn object_json(key: &ObjectKey, attrs: &WriteAttrs, facts: ObjectFacts) -> String {
    let mut o = serde_json::Map::new();
    o.insert("name".into(), key.as_str().into());
    if let Some(ct) = &attrs.content_type {
        o.insert("contentType".into(), ct.clone().into());
    }
    if !attrs.metadata.is_empty() {
        o.insert("metadata".into(), serde_json::json!(attrs.metadata));
    }
    if let Some(crc) = facts.crc32c {
        o.insert("crc32c".into(), encode_crc32c(crc).into());
    }
    serde_json::Value::Object(o).to_string()
}

/// A CRC32C as the JSON API writes it: base64 of the big-endian bytes.
fn encode_crc32c(crc: u32) -> String {
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn held_bytes_from_a_308() {
        let what = || "upload".to_owned();
        let mut h = HeaderMap::new();
        assert_eq!(held(&h, &what).unwrap(), 0, "no Range: nothing held");
        h.insert(RANGE, HeaderValue::from_static("bytes=0-262143"));
        assert_eq!(held(&h, &what).unwrap(), 262_144);
        h.insert(RANGE, HeaderValue::from_static("bytes=5-9"));
        assert_eq!(held(&h, &what).unwrap_err().kind(), ErrorKind::Other);
        h.insert(RANGE, HeaderValue::from_static("bytes=0-x"));
        assert_eq!(held(&h, &what).unwrap_err().kind(), ErrorKind::Other);
    }

    #[test]
    fn crc32c_is_big_endian_base64_and_round_trips() {
        let crc = crc32c::crc32c(b"hello");
        assert_eq!(encode_crc32c(crc), "mnG7TA==");
        assert_eq!(
            super::super::resource::parse_crc32c("mnG7TA==").unwrap(),
            crc
        );
    }

    #[test]
    fn object_json_names_the_facts() {
        let key = ObjectKey::new("a/b").unwrap();
        let mut attrs = WriteAttrs {
            content_type: Some("text/plain".into()),
            ..Default::default()
        };
        attrs.metadata.insert("k".into(), "v".into());
        let facts = ObjectFacts {
            size: Some(5),
            crc32c: Some(crc32c::crc32c(b"hello")),
        };
        let v: serde_json::Value = serde_json::from_str(&object_json(&key, &attrs, facts)).unwrap();
        assert_eq!(v["name"], "a/b");
        assert_eq!(v["contentType"], "text/plain");
        assert_eq!(v["metadata"]["k"], "v");
        assert_eq!(v["crc32c"], "mnG7TA==");
        let bare: serde_json::Value = serde_json::from_str(&object_json(
            &key,
            &WriteAttrs::default(),
            ObjectFacts::default(),
        ))
        .unwrap();
        assert_eq!(bare, serde_json::json!({"name": "a/b"}));
    }

    #[test]
    fn multipart_parts_are_typed() {
        let parts = multipart_body(
            "B",
            r#"{"name":"k"}"#,
            "text/plain",
            Bytes::from_static(b"DATA"),
        );
        let body: Vec<u8> = parts.concat();
        let text = String::from_utf8(body).unwrap();
        assert_eq!(
            text,
            "--B\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{\"name\":\"k\"}\r\n\
             --B\r\nContent-Type: text/plain\r\n\r\nDATA\r\n--B--\r\n"
        );
    }

    #[test]
    fn statuses_of_answers() {
        assert_eq!(
            reqwest::StatusCode::PERMANENT_REDIRECT.as_u16(),
            RESUME_INCOMPLETE
        );
    }
}
