//! MemStore behaviour that the shared conformance suite does not cover (test helpers, chunking,
//! page tokens under concurrent changes).

use super::*;
use crate::store::ObjectStore;

fn key(s: &str) -> ObjectKey {
    ObjectKey::new(s).unwrap()
}

async fn put(store: &MemStore, k: &str, data: &'static [u8]) -> ObjectMeta {
    store
        .write(
            &key(k),
            WriteSource::Bytes(Bytes::from_static(data)),
            Preconditions::NONE,
            &WriteAttrs::default(),
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn helpers_show_live_objects_and_count_calls() {
    let store = MemStore::new();
    put(&store, "b", b"2").await;
    let meta = put(&store, "a", b"1").await;
    assert_eq!(store.keys(), vec![key("a"), key("b")]);
    let (got, data) = store.get(&key("a")).unwrap();
    assert_eq!(got, meta);
    assert_eq!(&data[..], b"1");
    assert!(store.get(&key("c")).is_none());
    assert_eq!(store.calls(Op::Write), 2);
    assert!(store.stat(&key("c")).await.is_err());
    assert_eq!(store.calls(Op::Stat), 1);
    assert_eq!(store.calls(Op::Read), 0);
}

#[tokio::test]
async fn reads_come_in_chunks() {
    let store = MemStore::new();
    let data: Vec<u8> = (0..READ_CHUNK * 2 + 10).map(|i| (i % 251) as u8).collect();
    store
        .write(
            &key("big"),
            WriteSource::Bytes(Bytes::from(data.clone())),
            Preconditions::NONE,
            &WriteAttrs::default(),
        )
        .await
        .unwrap();
    let chunks: Vec<Bytes> = store
        .read(&key("big"), None, ByteRange::ALL)
        .await
        .unwrap()
        .map(|c| c.unwrap())
        .collect()
        .await;
    let sizes: Vec<usize> = chunks.iter().map(Bytes::len).collect();
    assert_eq!(sizes, vec![READ_CHUNK, READ_CHUNK, 10]);
    assert_eq!(chunks.concat(), data);
}

#[tokio::test]
async fn page_tokens_survive_changes_between_pages() {
    let store = MemStore::new();
    for k in ["a", "c", "e", "g"] {
        put(&store, k, b"x").await;
    }
    let mut request = ListRequest {
        max_results: Some(2),
        ..ListRequest::default()
    };
    let first = store.list(&request).await.unwrap();
    let names = |p: &ListPage| -> Vec<String> {
        p.objects
            .iter()
            .map(|m| m.key.as_str().to_owned())
            .collect()
    };
    assert_eq!(names(&first), ["a", "c"]);
    // Changes before and after the resume point.
    put(&store, "b", b"x").await; // before: not returned again
    put(&store, "d", b"x").await; // after: shows up
    store.delete(&key("e"), Preconditions::NONE).await.unwrap();
    request.page_token = first.next_page_token;
    let second = store.list(&request).await.unwrap();
    assert_eq!(names(&second), ["d", "g"]);
    assert_eq!(second.next_page_token, None);
}

#[tokio::test]
async fn a_prefix_ending_a_page_is_not_repeated() {
    let store = MemStore::new();
    for k in ["d/1", "d/2", "d/3", "e"] {
        put(&store, k, b"x").await;
    }
    let mut request = ListRequest {
        delimiter: Some("/".into()),
        max_results: Some(1),
        ..ListRequest::default()
    };
    let first = store.list(&request).await.unwrap();
    assert_eq!(first.prefixes, ["d/"]);
    assert!(first.objects.is_empty());
    put(&store, "d/0", b"x").await; // under the prefix already returned
    request.page_token = first.next_page_token;
    let second = store.list(&request).await.unwrap();
    assert!(second.prefixes.is_empty());
    assert_eq!(second.objects.len(), 1);
    assert_eq!(second.objects[0].key, key("e"));
    assert_eq!(second.next_page_token, None);
}

#[tokio::test]
async fn a_bad_page_token_is_invalid_argument() {
    let store = MemStore::new();
    let request = ListRequest {
        page_token: Some("garbage".into()),
        ..ListRequest::default()
    };
    let err = store.list(&request).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[tokio::test]
async fn a_file_whose_declared_crc_is_wrong_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, b"hello").unwrap();
    let store = MemStore::new();
    let source = WriteSource::File {
        path,
        crc32c: Some(crc32c::crc32c(b"hellO")),
    };
    let err = store
        .write(
            &key("f"),
            source,
            Preconditions::NONE,
            &WriteAttrs::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(store.keys().is_empty());
}
