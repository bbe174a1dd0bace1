//! Metadata calls over the Cloud Storage JSON API (the SDK offers them only over gRPC).

use std::time::Duration;

use bytes::Bytes;
use google_cloud_auth::credentials::Credentials;
use reqwest::{RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;

use super::auth::auth_headers;
use super::errors::from_reqwest;
use super::resource::{ListResponse, ObjectResource, RewriteResponse};
use super::url::{encode_key, encode_segment};
use crate::store::{
    ErrorKind, Generation, ListPage, ListRequest, MetadataPatch, ObjectKey, ObjectMeta,
    Preconditions, StoreError, StoreResult,
};

/// The object fields a listing asks for (a partial response keeps pages small).
const LIST_FIELDS: &str = "items(name,size,generation,metageneration,updated,timeCreated,\
                           crc32c,contentType,metadata),prefixes,nextPageToken";

/// How much of an error body goes into an error message.
const ERROR_BODY_LIMIT: usize = 300;

/// A small JSON API client bound to one bucket.
#[derive(Clone, Debug)]
pub(crate) struct JsonClient {
    http: reqwest::Client,
    creds: Credentials,
    /// `{endpoint}/storage/v1/b/{bucket}`, bucket percent-encoded.
    bucket_url: String,
    /// The bucket's name, unencoded (rewrite names it in the path).
    bucket: String,
    user_project: Option<String>,
}

type Query = Vec<(&'static str, String)>;

impl JsonClient {
    /// A client for `bucket` at `endpoint`, each HTTP attempt limited to `timeout`.
    pub(crate) fn new(
        endpoint: &str,
        bucket: &str,
        creds: Credentials,
        user_project: Option<String>,
        timeout: Duration,
    ) -> StoreResult<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| from_reqwest(e, "cannot build the HTTP client".into()))?;
        Ok(Self {
            http,
            creds,
            bucket_url: format!("{endpoint}/storage/v1/b/{}", encode_segment(bucket)),
            bucket: bucket.to_owned(),
            user_project,
        })
    }

    fn object_url(&self, key: &ObjectKey) -> StoreResult<String> {
        Ok(format!("{}/o/{}", self.bucket_url, encode_key(key)?))
    }

    /// GET o/{name}: the live generation's (or `generation`'s) metadata.
    pub(crate) async fn get(
        &self,
        key: &ObjectKey,
        generation: Option<Generation>,
    ) -> StoreResult<ObjectMeta> {
        let mut query = Query::new();
        if let Some(g) = generation {
            query.push(("generation", g.0.to_string()));
        }
        let rb = self.http.get(self.object_url(key)?);
        let r: ObjectResource = self
            .call_json(rb, query, || format!("stat {key:?}"))
            .await?;
        r.into_meta()
    }

    /// GET o: one listing page.
    pub(crate) async fn list(&self, req: &ListRequest) -> StoreResult<ListPage> {
        let mut query: Query = vec![("fields", LIST_FIELDS.to_owned())];
        if !req.prefix.is_empty() {
            query.push(("prefix", req.prefix.clone()));
        }
        if let Some(d) = &req.delimiter {
            query.push(("delimiter", d.clone()));
        }
        if let Some(t) = &req.page_token {
            query.push(("pageToken", t.clone()));
        }
        if let Some(n) = req.max_results {
            query.push(("maxResults", n.to_string()));
        }
        if let Some(s) = &req.start_offset {
            query.push(("startOffset", s.clone()));
        }
        let rb = self.http.get(format!("{}/o", self.bucket_url));
        let r: ListResponse = self
            .call_json(rb, query, || format!("list {:?}", req.prefix))
            .await?;
        let page = r.into_page()?;
        check_listing(req, &page)?;
        Ok(page)
    }

    /// DELETE o/{name}.
    pub(crate) async fn delete(&self, key: &ObjectKey, pre: Preconditions) -> StoreResult<()> {
        let rb = self.http.delete(self.object_url(key)?);
        self.call(rb, preconditions(pre), || format!("delete {key:?}"))
            .await
            .map(drop)
    }

    /// POST o/{src}/rewriteTo/b/{bucket}/o/{dst}, repeated with the rewrite token until done.
    pub(crate) async fn rewrite(
        &self,
        src: &ObjectKey,
        src_generation: Option<Generation>,
        dst: &ObjectKey,
        pre: Preconditions,
    ) -> StoreResult<ObjectMeta> {
        let url = format!(
            "{}/rewriteTo/b/{}/o/{}",
            self.object_url(src)?,
            encode_segment(&self.bucket),
            encode_key(dst)?
        );
        let mut token: Option<String> = None;
        loop {
            let mut query = preconditions(pre);
            if let Some(g) = src_generation {
                query.push(("sourceGeneration", g.0.to_string()));
            }
            if let Some(t) = &token {
                query.push(("rewriteToken", t.clone()));
            }
            // No body: the destination takes the source's metadata and content type.
            let rb = self
                .http
                .post(&url)
                .header(reqwest::header::CONTENT_LENGTH, 0);
            let r: RewriteResponse = self
                .call_json(rb, query, || format!("copy {src:?} to {dst:?}"))
                .await?;
            match (r.done, r.resource, r.rewrite_token) {
                (true, Some(resource), _) => return resource.into_meta(),
                (false, _, Some(t)) if !t.is_empty() => token = Some(t),
                _ => {
                    return Err(StoreError::new(
                        ErrorKind::Other,
                        format!(
                            "copy {src:?} to {dst:?}: rewrite answer has no object and no token"
                        ),
                    ));
                }
            }
        }
    }

    /// PATCH o/{name} with `{"metadata": {k: v or null}}`.
    pub(crate) async fn patch_metadata(
        &self,
        key: &ObjectKey,
        patch: &MetadataPatch,
        pre: Preconditions,
    ) -> StoreResult<ObjectMeta> {
        let body = serde_json::json!({ "metadata": patch });
        let rb = self.http.patch(self.object_url(key)?).json(&body);
        let r: ObjectResource = self
            .call_json(rb, preconditions(pre), || {
                format!("patch metadata of {key:?}")
            })
            .await?;
        if !r.is_complete() {
            // The patch is applied, but the answer is not a full object resource (as from
            // fake-gcs-server, never from Cloud Storage): read the metadata back.
            return self.get(key, None).await;
        }
        r.into_meta()
    }

    async fn call_json<T: DeserializeOwned>(
        &self,
        rb: RequestBuilder,
        query: Query,
        what: impl Fn() -> String,
    ) -> StoreResult<T> {
        let body = self.call(rb, query, &what).await?;
        serde_json::from_slice(&body).map_err(|e| {
            StoreError::with_source(
                ErrorKind::Other,
                format!("{}: unexpected answer from the service", what()),
                e,
            )
        })
    }

    /// Sends one request with credentials and `userProject`; a non-2xx answer becomes the
    /// error its status says.
    async fn call(
        &self,
        rb: RequestBuilder,
        mut query: Query,
        what: impl Fn() -> String,
    ) -> StoreResult<Bytes> {
        if let Some(p) = &self.user_project {
            query.push(("userProject", p.clone()));
        }
        let headers = auth_headers(&self.creds).await?;
        let resp = rb
            .query(&query)
            .headers(headers)
            .send()
            .await
            .map_err(|e| from_reqwest(e, what()))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| from_reqwest(e, what()))?;
        if status.is_success() {
            return Ok(body);
        }
        Err(status_error(status, &body, &what()))
    }
}

/// Refuses a listing page that names something outside what was asked: an object whose key
/// does not start with the prefix, or a prefix that is not longer than it or does not end with
/// the delimiter. The layers above cut names out of keys by the prefix's length, and trust
/// this.
fn check_listing(req: &ListRequest, page: &ListPage) -> StoreResult<()> {
    let outside = |name: &str| {
        StoreError::new(
            ErrorKind::Other,
            format!(
                "list {:?}: the answer names {name:?}, outside the prefix",
                req.prefix
            ),
        )
    };
    for o in &page.objects {
        if !o.key.as_str().starts_with(&req.prefix) {
            return Err(outside(o.key.as_str()));
        }
    }
    for p in &page.prefixes {
        let delimited = req.delimiter.as_deref().is_none_or(|d| p.ends_with(d));
        if !p.starts_with(&req.prefix) || p.len() <= req.prefix.len() || !delimited {
            return Err(outside(p));
        }
    }
    Ok(())
}

/// Preconditions as JSON API query parameters.
pub(super) fn preconditions(pre: Preconditions) -> Query {
    let mut q = Query::new();
    if let Some(g) = pre.if_generation_match {
        q.push(("ifGenerationMatch", g.0.to_string()));
    }
    if let Some(m) = pre.if_metageneration_match {
        q.push(("ifMetagenerationMatch", m.0.to_string()));
    }
    q
}

/// The error for a non-2xx answer, with the service's own message when it sent one.
pub(super) fn status_error(status: StatusCode, body: &[u8], what: &str) -> StoreError {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: Detail,
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        message: String,
    }
    let detail = match serde_json::from_slice::<Envelope>(body) {
        Ok(e) => e.error.message,
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    let detail: String = detail.trim().chars().take(ERROR_BODY_LIMIT).collect();
    let message = if detail.is_empty() {
        format!("{what}: HTTP {}", status.as_u16())
    } else {
        format!("{what}: HTTP {}: {detail}", status.as_u16())
    };
    StoreError::from_http_status(status.as_u16(), message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-connection HTTP server on loopback that answers every request with `answer` and
    /// then closes the connection; returns its endpoint.
    async fn serve_once(answer: &'static [u8]) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = conn.write_all(answer).await;
                let _ = conn.shutdown().await;
            }
        });
        endpoint
    }

    async fn client(endpoint: &str) -> JsonClient {
        let creds = google_cloud_auth::credentials::anonymous::Builder::new().build();
        JsonClient::new(endpoint, "b", creds, None, Duration::from_secs(5)).unwrap()
    }

    #[tokio::test]
    async fn an_answer_cut_short_is_transient() {
        // The connection closes 480 bytes before the announced end of the body: a new attempt
        // may well work, so it is retried (an idempotent stat or list was failing at once).
        let endpoint = serve_once(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n\
              {\"name\":\"k\",\"generation\":\"1\"",
        )
        .await;
        let key = ObjectKey::new("k").unwrap();
        let e = client(&endpoint).await.get(&key, None).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Transient, "{e:?}");
    }

    #[tokio::test]
    async fn a_whole_answer_that_is_not_json_is_other() {
        let endpoint = serve_once(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\nnot json!",
        )
        .await;
        let key = ObjectKey::new("k").unwrap();
        let e = client(&endpoint).await.get(&key, None).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Other, "{e:?}");
    }

    #[test]
    fn a_listing_naming_something_outside_the_prefix_is_refused() {
        let req = ListRequest {
            prefix: "d/".into(),
            delimiter: Some("/".into()),
            ..ListRequest::default()
        };
        let meta = |k: &str| {
            serde_json::from_value::<super::super::resource::ObjectResource>(serde_json::json!({
                "name": k, "generation": "1", "metageneration": "1",
                "updated": "2026-01-01T00:00:00Z"
            }))
            .unwrap()
            .into_meta()
            .unwrap()
        };
        let page = |objects: Vec<ObjectMeta>, prefixes: &[&str]| ListPage {
            objects,
            prefixes: prefixes.iter().map(|p| (*p).to_owned()).collect(),
            next_page_token: None,
        };
        assert!(check_listing(&req, &page(vec![meta("d/a")], &["d/x/"])).is_ok());
        for bad in [
            page(vec![meta("e/a")], &[]),
            page(vec![], &["d/"]),
            page(vec![], &["e/x/"]),
            page(vec![], &["d/x"]),
        ] {
            let e = check_listing(&req, &bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Other, "{bad:?}");
        }
    }

    #[test]
    fn precondition_parameters() {
        assert!(preconditions(Preconditions::NONE).is_empty());
        let q = preconditions(Preconditions::create_only());
        assert_eq!(q, vec![("ifGenerationMatch", "0".to_owned())]);
        let q = preconditions(Preconditions {
            if_generation_match: Some(Generation(5)),
            if_metageneration_match: Some(crate::store::Metageneration(2)),
        });
        assert_eq!(
            q,
            vec![
                ("ifGenerationMatch", "5".to_owned()),
                ("ifMetagenerationMatch", "2".to_owned())
            ]
        );
    }

    #[test]
    fn status_errors_use_the_table_and_the_service_message() {
        let e = status_error(
            StatusCode::PRECONDITION_FAILED,
            br#"{"error":{"code":412,"message":"Precondition Failed"}}"#,
            "delete \"k\"",
        );
        assert_eq!(e.kind(), ErrorKind::PreconditionFailed);
        assert_eq!(e.message(), "delete \"k\": HTTP 412: Precondition Failed");
        let e = status_error(StatusCode::NOT_FOUND, b"", "stat \"k\"");
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(e.message(), "stat \"k\": HTTP 404");
        let long = vec![b'x'; 10_000];
        let e = status_error(StatusCode::BAD_GATEWAY, &long, "list");
        assert_eq!(e.kind(), ErrorKind::Transient);
        assert!(e.message().len() < ERROR_BODY_LIMIT + 30);
    }
}
