//! JSON API resources (object, listing, rewrite) and their conversion to store types.

use std::collections::BTreeMap;
use std::time::SystemTime;

use base64::Engine as _;
use serde::Deserialize;

use crate::store::{ErrorKind, Generation, ListPage, Metageneration, ObjectKey, ObjectMeta};
use crate::store::{StoreError, StoreResult};

/// An int64 field: the JSON API sends them as strings; numbers are accepted too.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
enum Int64 {
    Text(String),
    Number(i64),
}

impl Int64 {
    fn parse(&self, field: &str) -> StoreResult<i64> {
        match self {
            Int64::Number(n) => Ok(*n),
            Int64::Text(s) => s.parse().map_err(|e| {
                StoreError::with_source(
                    ErrorKind::Other,
                    format!("object resource: bad `{field}` {s:?}"),
                    e,
                )
            }),
        }
    }
}

/// The parts of a JSON API `storage#object` resource the store uses.
#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ObjectResource {
    name: String,
    size: Option<Int64>,
    generation: Int64,
    metageneration: Option<Int64>,
    updated: Option<String>,
    time_created: Option<String>,
    crc32c: Option<String>,
    content_type: Option<String>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

impl ObjectResource {
    /// Whether every field [`ObjectMeta`] needs is present. (fake-gcs-server's PATCH answer
    /// is a different structure without `metageneration`.)
    pub(crate) fn is_complete(&self) -> bool {
        self.metageneration.is_some() && (self.updated.is_some() || self.time_created.is_some())
    }

    /// Converts to [`ObjectMeta`]; a malformed field is an `Other` error.
    pub(crate) fn into_meta(self) -> StoreResult<ObjectMeta> {
        let size = match &self.size {
            Some(s) => s.parse("size")?,
            None => 0,
        };
        let size = u64::try_from(size).map_err(|e| {
            StoreError::with_source(ErrorKind::Other, "object resource: negative size", e)
        })?;
        let updated = self
            .updated
            .as_deref()
            .or(self.time_created.as_deref())
            .ok_or_else(|| StoreError::new(ErrorKind::Other, "object resource: no `updated`"))?;
        Ok(ObjectMeta {
            key: ObjectKey::new(self.name)?,
            size,
            generation: Generation(self.generation.parse("generation")?),
            metageneration: Metageneration(
                self.metageneration
                    .as_ref()
                    .ok_or_else(|| {
                        StoreError::new(ErrorKind::Other, "object resource: no `metageneration`")
                    })?
                    .parse("metageneration")?,
            ),
            updated: parse_rfc3339(updated)?,
            crc32c: self.crc32c.as_deref().map(parse_crc32c).transpose()?,
            content_type: self.content_type.filter(|c| !c.is_empty()),
            metadata: self.metadata.unwrap_or_default(),
        })
    }
}

/// A JSON API `storage#objects` listing page.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListResponse {
    #[serde(default)]
    items: Vec<ObjectResource>,
    #[serde(default)]
    prefixes: Vec<String>,
    next_page_token: Option<String>,
}

impl ListResponse {
    /// Converts to a [`ListPage`], objects and prefixes each in key order.
    pub(crate) fn into_page(self) -> StoreResult<ListPage> {
        let mut objects = self
            .items
            .into_iter()
            .map(ObjectResource::into_meta)
            .collect::<StoreResult<Vec<_>>>()?;
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        let mut prefixes = self.prefixes;
        prefixes.sort();
        Ok(ListPage {
            objects,
            prefixes,
            next_page_token: self.next_page_token.filter(|t| !t.is_empty()),
        })
    }
}

/// A JSON API `storage#rewriteResponse`.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RewriteResponse {
    /// Whether the copy is complete (then `resource` is set).
    pub(crate) done: bool,
    /// Pass back to continue an incomplete copy.
    pub(crate) rewrite_token: Option<String>,
    /// The new object, once done.
    pub(crate) resource: Option<ObjectResource>,
}

/// Parses an RFC 3339 timestamp (`updated`).
fn parse_rfc3339(text: &str) -> StoreResult<SystemTime> {
    let t = chrono::DateTime::parse_from_rfc3339(text).map_err(|e| {
        StoreError::with_source(
            ErrorKind::Other,
            format!("object resource: bad timestamp {text:?}"),
            e,
        )
    })?;
    Ok(SystemTime::from(t.with_timezone(&chrono::Utc)))
}

/// Decodes a `crc32c` field: base64 of the big-endian u32.
pub(crate) fn parse_crc32c(text: &str) -> StoreResult<u32> {
    let bad = || {
        StoreError::new(
            ErrorKind::Other,
            format!("object resource: bad crc32c {text:?}"),
        )
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| StoreError::with_source(ErrorKind::Other, bad().message().to_owned(), e))?;
    let bytes: [u8; 4] = bytes.try_into().map_err(|_| bad())?;
    Ok(u32::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const FULL: &str = r#"{
        "kind": "storage#object", "name": "dir/a b.txt", "bucket": "b",
        "size": "5", "generation": "1795857584429394", "metageneration": "3",
        "contentType": "text/plain", "crc32c": "mnG7TA==",
        "updated": "2026-11-28T09:19:44.429312Z", "timeCreated": "2026-11-28T09:00:00Z",
        "metadata": {"mode": "644", "uid": "0"}
    }"#;

    #[test]
    fn full_object_resource() {
        let r: ObjectResource = serde_json::from_str(FULL).unwrap();
        assert!(r.is_complete());
        let m = r.into_meta().unwrap();
        assert_eq!(m.key.as_str(), "dir/a b.txt");
        assert_eq!(m.size, 5);
        assert_eq!(m.generation, Generation(1_795_857_584_429_394));
        assert_eq!(m.metageneration, Metageneration(3));
        assert_eq!(m.content_type.as_deref(), Some("text/plain"));
        // crc32c("hello") = 0x9a71bb4c
        assert_eq!(m.crc32c, Some(0x9a71_bb4c));
        assert_eq!(m.crc32c, Some(crc32c::crc32c(b"hello")));
        let want = SystemTime::UNIX_EPOCH + Duration::new(1_795_857_584, 429_312_000);
        assert_eq!(m.updated, want);
        assert_eq!(m.metadata.get("mode").map(String::as_str), Some("644"));
        assert_eq!(m.metadata.len(), 2);
    }

    #[test]
    fn minimal_object_resource() {
        let r: ObjectResource = serde_json::from_str(
            r#"{"name":"k","generation":7,"metageneration":"1","updated":"1970-01-01T00:00:01+01:00"}"#,
        )
        .unwrap();
        let m = r.into_meta().unwrap();
        assert_eq!(m.size, 0);
        assert_eq!(m.generation, Generation(7));
        assert_eq!(m.crc32c, None);
        assert_eq!(m.content_type, None);
        assert!(m.metadata.is_empty());
        // 00:00:01 at +01:00 is one hour before the epoch.
        assert_eq!(
            m.updated,
            SystemTime::UNIX_EPOCH - Duration::from_secs(3599)
        );
    }

    #[test]
    fn malformed_fields_are_errors() {
        // (resource, whether it has every needed field)
        for (bad, complete) in [
            (
                r#"{"name":"k","generation":"x","metageneration":"1","updated":"2026-01-01T00:00:00Z"}"#,
                true,
            ),
            (
                r#"{"name":"k","generation":"1","metageneration":"1","updated":"yesterday"}"#,
                true,
            ),
            (
                r#"{"name":"k","generation":"1","metageneration":"1"}"#,
                false,
            ),
            (
                r#"{"name":"k","generation":"1","updated":"2026-01-01T00:00:00Z"}"#,
                false,
            ),
            (
                r#"{"name":"k","size":"-1","generation":"1","metageneration":"1","updated":"2026-01-01T00:00:00Z"}"#,
                true,
            ),
            (
                r#"{"name":"k","crc32c":"AAAA","generation":"1","metageneration":"1","updated":"2026-01-01T00:00:00Z"}"#,
                true,
            ),
            (
                r#"{"name":"","generation":"1","metageneration":"1","updated":"2026-01-01T00:00:00Z"}"#,
                true,
            ),
        ] {
            let r: ObjectResource = serde_json::from_str(bad).unwrap();
            assert_eq!(r.is_complete(), complete, "{bad}");
            let e = r.into_meta().unwrap_err();
            assert!(
                matches!(e.kind(), ErrorKind::Other | ErrorKind::InvalidArgument),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn crc32c_is_big_endian_base64() {
        assert_eq!(parse_crc32c("AAAAAQ==").unwrap(), 1);
        assert_eq!(parse_crc32c("AQAAAA==").unwrap(), 1 << 24);
        assert!(parse_crc32c("not base64!").is_err());
        assert!(parse_crc32c("AAAAAAA=").is_err()); // five bytes
    }

    #[test]
    fn list_response_to_page() {
        let json = r#"{
            "kind": "storage#objects",
            "prefixes": ["a/z/", "a/b/"],
            "items": [
                {"name":"a/y","generation":"2","metageneration":"1","updated":"2026-01-01T00:00:00Z"},
                {"name":"a/","generation":"1","metageneration":"1","updated":"2026-01-01T00:00:00Z"}
            ],
            "nextPageToken": "tok"
        }"#;
        let page = serde_json::from_str::<ListResponse>(json)
            .unwrap()
            .into_page()
            .unwrap();
        let keys: Vec<_> = page.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["a/", "a/y"]);
        assert_eq!(page.prefixes, ["a/b/", "a/z/"]);
        assert_eq!(page.next_page_token.as_deref(), Some("tok"));

        let empty = serde_json::from_str::<ListResponse>(r#"{"kind":"storage#objects"}"#)
            .unwrap()
            .into_page()
            .unwrap();
        assert_eq!(empty, ListPage::default());
    }

    #[test]
    fn rewrite_response() {
        let r: RewriteResponse = serde_json::from_str(
            r#"{"kind":"storage#rewriteResponse","done":false,"rewriteToken":"t","totalBytesRewritten":"1"}"#,
        )
        .unwrap();
        assert!(!r.done);
        assert_eq!(r.rewrite_token.as_deref(), Some("t"));
        assert!(r.resource.is_none());
    }
}
