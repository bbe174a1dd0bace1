//! `GcsStore` against fake-gcs-server.
//!
//! Set `GCSFS_TEST_ENDPOINT` (e.g. `http://127.0.0.21`, port 80: the SDK drops other ports
//! from resumable-upload URLs) to run the emulator tests; without it they print why they are
//! skipped. Each test creates its own bucket, so tests are independent. The key-file tests
//! need no emulator and always run.
//!
//! Assertions fake-gcs-server (v1.55.1) cannot support are left out here and checked on
//! `MemStore` by the shared conformance suite instead:
//! - the content type given on an SDK upload (multipart: taken from the media part, which
//!   the SDK leaves untyped; resumable: overwritten by the chunk PUT's
//!   `application/octet-stream`); copy content types are checked here;
//! - `max_results` bounding objects *and* prefixes (it bounds objects only and repeats every
//!   prefix on every page), so prefixes are collected as a set;
//! - PATCH with `null` removing a metadata key (it stores `""`), and PATCH bumping the
//!   metageneration;
//! - preconditions on delete, copy (rewrite), PATCH and media/resumable uploads (ignored).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use gcsfs::store::gcs::{GcsAuth, GcsConfig, GcsStore};
use gcsfs::store::{
    ByteRange, ErrorKind, Generation, ListPage, ListRequest, MetadataPatch, ObjectKey, ObjectMeta,
    ObjectStore, Preconditions, StoreError, StoreResult, WriteAttrs, WriteSource,
};
use rand::{Rng, RngCore, SeedableRng, rngs::StdRng};

mod common;

use common::emulator::{endpoint, fresh_gcs_store as fresh_store};

const MIB: usize = 1 << 20;

/// The emulator endpoint, or return from the test after saying why.
macro_rules! emulator {
    () => {
        match endpoint() {
            Some(e) => e,
            None => {
                common::required::cannot_run(
                    "GCSFS_TEST_ENDPOINT is unset (scripts/test.sh sets it)",
                );
                return;
            }
        }
    };
}

fn key(k: &str) -> ObjectKey {
    ObjectKey::new(k).unwrap()
}

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

/// Uploads `data` with `content_type` through the emulator's JSON API, not the store.
async fn upload_media(
    endpoint: &str,
    store: &GcsStore,
    name: &str,
    content_type: &str,
    data: &[u8],
) {
    let resp = reqwest::Client::new()
        .post(format!(
            "{endpoint}/upload/storage/v1/b/{}/o",
            store.bucket()
        ))
        .query(&[("uploadType", "media"), ("name", name)])
        .header("content-type", content_type)
        .body(data.to_vec())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "upload: {}", resp.status());
}

async fn put(store: &GcsStore, k: &str, data: &[u8]) -> ObjectMeta {
    store
        .write(
            &key(k),
            WriteSource::Bytes(Bytes::copy_from_slice(data)),
            Preconditions::NONE,
            &WriteAttrs::default(),
        )
        .await
        .unwrap()
}

async fn read_all(
    store: &GcsStore,
    k: &str,
    generation: Option<Generation>,
    range: ByteRange,
) -> StoreResult<Vec<u8>> {
    let chunks: Vec<Bytes> = store
        .read(&key(k), generation, range)
        .await?
        .try_collect()
        .await?;
    Ok(chunks.concat())
}

/// Asserts equality without printing megabytes on failure.
fn assert_same(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: first difference at byte {i}");
    }
}

/// Every page of a listing, checking the per-page bound on the way.
/// Prefixes are collected as a set: the emulator repeats every prefix on every page.
async fn list_all(store: &GcsStore, mut req: ListRequest) -> (Vec<String>, Vec<String>, usize) {
    let (mut objects, mut prefixes, mut pages) = (Vec::new(), BTreeSet::new(), 0);
    loop {
        let ListPage {
            objects: o,
            prefixes: p,
            next_page_token,
        } = store.list(&req).await.unwrap();
        pages += 1;
        if let Some(max) = req.max_results {
            // The emulator bounds objects only (Cloud Storage bounds objects + prefixes).
            assert!(o.len() <= max as usize, "page over max_results");
        }
        objects.extend(o.into_iter().map(|m| m.key.into_string()));
        prefixes.extend(p);
        match next_page_token {
            Some(t) => req.page_token = Some(t),
            None => return (objects, prefixes.into_iter().collect(), pages),
        }
        assert!(pages < 10_000, "listing does not end");
    }
}

// 1. Resumable stream upload of 64 MiB, read back in full and by random ranges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_upload_64mib_reads_back_identical() {
    let ep = emulator!();
    let store = fresh_store(&ep, "stream").await;
    let data = Bytes::from(random_bytes(1, 64 * MIB));
    // Chunks of about 1 MiB, deliberately not aligned to the SDK's buffer.
    let chunk = MIB + 4099;
    let chunks: Vec<StoreResult<Bytes>> = (0..data.len())
        .step_by(chunk)
        .map(|at| Ok(data.slice(at..(at + chunk).min(data.len()))))
        .collect();
    let attrs = WriteAttrs {
        content_type: Some("application/x-test".into()),
        metadata: BTreeMap::from([("origin".to_owned(), "stream".to_owned())]),
    };
    let meta = store
        .write(
            &key("big/object"),
            WriteSource::Stream(futures::stream::iter(chunks).boxed()),
            Preconditions::create_only(),
            &attrs,
        )
        .await
        .unwrap();
    assert_eq!(meta.size, data.len() as u64);
    assert_eq!(meta.crc32c, Some(crc32c::crc32c(&data)));
    let stat = store.stat(&key("big/object")).await.unwrap();
    assert_eq!(stat.generation, meta.generation);
    assert_eq!(stat.size, meta.size);
    assert_eq!(stat.metadata, attrs.metadata);

    let all = read_all(&store, "big/object", Some(meta.generation), ByteRange::ALL)
        .await
        .unwrap();
    assert_same(&all, &data, "full read");

    let mut rng = StdRng::seed_from_u64(2);
    let len = data.len() as u64;
    for i in 0..100 {
        let start = rng.random_range(0..len);
        let size = rng.random_range(1..=2 * MIB as u64);
        let range = if i % 10 == 9 {
            ByteRange::from(start)
        } else {
            ByteRange::segment(start, size)
        };
        let end = range.end.unwrap_or(len).min(len);
        let got = read_all(&store, "big/object", Some(meta.generation), range)
            .await
            .unwrap();
        assert_same(
            &got,
            &data[start as usize..end as usize],
            &format!("range {range:?}"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_stream_creates_nothing_and_keeps_the_old_object() {
    let ep = emulator!();
    let store = fresh_store(&ep, "streamfail").await;
    let failing = |n: usize| {
        let mut items: Vec<StoreResult<Bytes>> = (0..n)
            .map(|i| Ok(Bytes::from(random_bytes(i as u64, MIB))))
            .collect();
        items.push(Err(StoreError::new(
            ErrorKind::PermissionDenied,
            "source gave up",
        )));
        WriteSource::Stream(futures::stream::iter(items).boxed())
    };
    // Fails before and after the SDK's first 8 MiB chunk has been sent.
    for n in [3, 12] {
        let e = store
            .write(
                &key("new"),
                failing(n),
                Preconditions::NONE,
                &WriteAttrs::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
        let e = store.stat(&key("new")).await.unwrap_err();
        assert_eq!(
            e.kind(),
            ErrorKind::NotFound,
            "{n} MiB: a partial object was created"
        );

        let old = put(&store, "old", b"keep me").await;
        let e = store
            .write(
                &key("old"),
                failing(n),
                Preconditions::NONE,
                &WriteAttrs::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
        let stat = store.stat(&key("old")).await.unwrap();
        assert_eq!(
            stat.generation, old.generation,
            "{n} MiB: old object replaced"
        );
        let got = read_all(&store, "old", None, ByteRange::ALL).await.unwrap();
        assert_eq!(got, b"keep me");
    }
}

// 2. A create-only write over an existing object fails (multipart path).
#[tokio::test]
async fn create_only_over_existing_object_fails() {
    let ep = emulator!();
    let store = fresh_store(&ep, "create").await;
    let k = key("file.txt");
    let first = store
        .write(
            &k,
            WriteSource::Bytes(Bytes::from_static(b"first")),
            Preconditions::create_only(),
            &WriteAttrs::default(),
        )
        .await
        .unwrap();
    let err = store
        .write(
            &k,
            WriteSource::Bytes(Bytes::from_static(b"second")),
            Preconditions::create_only(),
            &WriteAttrs::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PreconditionFailed, "{err}");
    // A write conditioned on a generation that is not the live one fails too.
    let err = store
        .write(
            &k,
            WriteSource::Bytes(Bytes::from_static(b"third")),
            Preconditions::generation(Generation(first.generation.0 + 1)),
            &WriteAttrs::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PreconditionFailed, "{err}");
    let got = read_all(&store, "file.txt", None, ByteRange::ALL)
        .await
        .unwrap();
    assert_eq!(got, b"first");
    // The right generation wins.
    let second = store
        .write(
            &k,
            WriteSource::Bytes(Bytes::from_static(b"second")),
            Preconditions::generation(first.generation),
            &WriteAttrs::default(),
        )
        .await
        .unwrap();
    assert_ne!(second.generation, first.generation);
    let got = read_all(&store, "file.txt", None, ByteRange::ALL)
        .await
        .unwrap();
    assert_eq!(got, b"second");
}

// 3. A 2,500-key nested listing, paged, at each level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_listing_pages_at_every_level() {
    let ep = emulator!();
    let store = fresh_store(&ep, "list").await;
    let mut keys = Vec::new();
    for d in 0..5 {
        for s in 0..10 {
            for f in 0..50 {
                keys.push(format!("d{d}/s{s}/f{f}"));
            }
        }
    }
    futures::stream::iter(keys.iter())
        .for_each_concurrent(16, |k| {
            let store = &store;
            async move {
                put(store, k, k.as_bytes()).await;
            }
        })
        .await;
    let slash = Some("/".to_owned());
    let sorted = |v: Vec<String>| {
        let mut v = v;
        v.sort();
        v
    };

    // Root: five prefixes, no objects.
    let (objects, prefixes, _) = list_all(
        &store,
        ListRequest {
            delimiter: slash.clone(),
            max_results: Some(2),
            ..Default::default()
        },
    )
    .await;
    assert!(objects.is_empty(), "{objects:?}");
    assert_eq!(
        prefixes,
        (0..5).map(|d| format!("d{d}/")).collect::<Vec<_>>()
    );

    // Second level: ten prefixes per directory.
    for d in 0..5 {
        let (objects, prefixes, _) = list_all(
            &store,
            ListRequest {
                prefix: format!("d{d}/"),
                delimiter: slash.clone(),
                max_results: Some(3),
                ..Default::default()
            },
        )
        .await;
        assert!(objects.is_empty());
        let want: Vec<_> = (0..10).map(|s| format!("d{d}/s{s}/")).collect();
        assert_eq!(sorted(prefixes), want);
    }

    // Leaves: 50 objects each, no prefixes.
    for (d, s) in [(0, 0), (2, 7), (4, 9)] {
        let (objects, prefixes, pages) = list_all(
            &store,
            ListRequest {
                prefix: format!("d{d}/s{s}/"),
                delimiter: slash.clone(),
                max_results: Some(7),
                ..Default::default()
            },
        )
        .await;
        assert!(prefixes.is_empty());
        let want: Vec<_> = sorted((0..50).map(|f| format!("d{d}/s{s}/f{f}")).collect());
        assert_eq!(objects, want, "objects come back in key order");
        assert!(pages >= 8, "50 objects in pages of 7: {pages} pages");
    }

    // No delimiter: everything under a prefix, recursively, in key order.
    let (objects, prefixes, _) = list_all(
        &store,
        ListRequest {
            prefix: "d3/".into(),
            max_results: Some(97),
            ..Default::default()
        },
    )
    .await;
    assert!(prefixes.is_empty());
    let want: Vec<_> = sorted(
        keys.iter()
            .filter(|k| k.starts_with("d3/"))
            .cloned()
            .collect(),
    );
    assert_eq!(objects, want);

    // The whole bucket at the service's default page size.
    let (objects, _, _) = list_all(&store, ListRequest::default()).await;
    assert_eq!(objects, sorted(keys.clone()));

    // start_offset skips keys before it.
    let (objects, _, _) = list_all(
        &store,
        ListRequest {
            prefix: "d1/s2/".into(),
            start_offset: Some("d1/s2/f40".into()),
            max_results: Some(4),
            ..Default::default()
        },
    )
    .await;
    let want: Vec<_> = sorted(
        (0..50)
            .map(|f| format!("d1/s2/f{f}"))
            .filter(|k| k.as_str() >= "d1/s2/f40")
            .collect(),
    );
    assert_eq!(objects, want);
}

#[tokio::test]
async fn listing_a_prefix_returns_its_marker_object() {
    let ep = emulator!();
    let store = fresh_store(&ep, "marker").await;
    for k in ["a/", "a/x", "a/b/", "a/b/y", "ab"] {
        put(&store, k, b"").await;
    }
    let (objects, prefixes, _) = list_all(
        &store,
        ListRequest {
            prefix: "a/".into(),
            delimiter: Some("/".into()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(objects, ["a/", "a/x"]);
    assert_eq!(prefixes, ["a/b/"]);
}

// 4. Round trips and NotFound cases.
#[tokio::test]
async fn stat_write_attrs_and_not_found() {
    let ep = emulator!();
    let store = fresh_store(&ep, "stat").await;
    let attrs = WriteAttrs {
        content_type: Some("text/plain".into()),
        metadata: BTreeMap::from([
            ("mode".to_owned(), "100644".to_owned()),
            ("uid".to_owned(), "1000".to_owned()),
        ]),
    };
    let written = store
        .write(
            &key("dir/hello.txt"),
            WriteSource::Bytes(Bytes::from_static(b"hello")),
            Preconditions::NONE,
            &attrs,
        )
        .await
        .unwrap();
    let stat = store.stat(&key("dir/hello.txt")).await.unwrap();
    assert_eq!(stat.key.as_str(), "dir/hello.txt");
    assert_eq!(stat.size, 5);
    assert_eq!(stat.generation, written.generation);
    assert_eq!(stat.metageneration, written.metageneration);
    assert_eq!(stat.crc32c, Some(crc32c::crc32c(b"hello")));
    assert_eq!(written.crc32c, stat.crc32c);
    assert_eq!(stat.metadata, attrs.metadata);
    assert_eq!(written.metadata, attrs.metadata);
    let age = std::time::SystemTime::now()
        .duration_since(stat.updated)
        .unwrap_or_default();
    assert!(age.as_secs() < 3600, "updated is recent");

    for missing in ["dir/nope", "dir", "dir/hello.txt/x"] {
        let e = store.stat(&key(missing)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{missing}: {e}");
        let e = read_all(&store, missing, None, ByteRange::ALL)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{missing}: {e}");
    }
    let e = store
        .read(&key("dir/nope"), None, ByteRange::segment(0, 0))
        .await
        .err()
        .expect("empty read of a missing object fails");
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn names_with_reserved_characters_round_trip() {
    let ep = emulator!();
    let store = fresh_store(&ep, "names").await;
    let names = [
        "sp ace/pl+us",
        "q?mark#hash",
        "per%cent&amp=eq",
        "uni/é日本",
        "semi;colon:at@",
        "tilde~dot.dash-under_",
        "...",
    ];
    for (i, name) in names.iter().enumerate() {
        let data = format!("data {i}");
        let meta = put(&store, name, data.as_bytes()).await;
        assert_eq!(meta.key.as_str(), *name);
        assert_eq!(store.stat(&key(name)).await.unwrap().key.as_str(), *name);
        let got = read_all(&store, name, None, ByteRange::ALL).await.unwrap();
        assert_eq!(got, data.as_bytes(), "{name}");
    }
    let (objects, _, _) = list_all(&store, ListRequest::default()).await;
    let mut want: Vec<_> = names.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(objects, want);
    for name in names {
        store.delete(&key(name), Preconditions::NONE).await.unwrap();
        let e = store.stat(&key(name)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{name}");
    }
    let e = store.stat(&key("..")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
}

#[tokio::test]
async fn ranges_are_clamped_and_past_the_end_is_empty() {
    let ep = emulator!();
    let store = fresh_store(&ep, "ranges").await;
    let data = random_bytes(3, 1000);
    let m = put(&store, "r", &data).await;
    let g = Some(m.generation);
    let read = |range| read_all(&store, "r", g, range);
    assert_eq!(
        read(ByteRange::segment(10, 20)).await.unwrap(),
        &data[10..30]
    );
    assert_eq!(
        read(ByteRange::segment(990, 100)).await.unwrap(),
        &data[990..]
    );
    assert_eq!(read(ByteRange::from(500)).await.unwrap(), &data[500..]);
    assert_eq!(read(ByteRange::from(999)).await.unwrap(), &data[999..]);
    assert!(read(ByteRange::from(1000)).await.unwrap().is_empty());
    assert!(read(ByteRange::segment(1000, 5)).await.unwrap().is_empty());
    assert!(read(ByteRange::segment(5000, 5)).await.unwrap().is_empty());
    assert!(read(ByteRange::segment(10, 0)).await.unwrap().is_empty());

    let empty = put(&store, "empty", b"").await;
    assert_eq!(empty.size, 0);
    for range in [
        ByteRange::ALL,
        ByteRange::from(0),
        ByteRange::segment(0, 10),
    ] {
        let got = read_all(&store, "empty", None, range).await.unwrap();
        assert!(got.is_empty(), "{range:?}");
    }
}

#[tokio::test]
async fn read_pinned_to_a_replaced_generation_is_not_found() {
    let ep = emulator!();
    let store = fresh_store(&ep, "pinned").await;
    let old = put(&store, "k", b"old data").await;
    let got = read_all(&store, "k", Some(old.generation), ByteRange::ALL)
        .await
        .unwrap();
    assert_eq!(got, b"old data");
    let new = put(&store, "k", b"new data").await;
    assert_ne!(new.generation, old.generation);
    for range in [
        ByteRange::ALL,
        ByteRange::segment(2, 3),
        ByteRange::segment(2, 0),
    ] {
        let e = read_all(&store, "k", Some(old.generation), range)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{range:?}: {e}");
    }
    let got = read_all(
        &store,
        "k",
        Some(new.generation),
        ByteRange::segment(4, 100),
    )
    .await
    .unwrap();
    assert_eq!(got, b"data");
}

#[tokio::test]
async fn file_sources_with_and_without_a_checksum() {
    let ep = emulator!();
    let store = fresh_store(&ep, "files").await;
    let dir = tempfile::tempdir().unwrap();
    // Small (multipart) and above the SDK's 16 MiB resumable threshold (one streaming PUT).
    for (i, len) in [(0u64, 3 * 1024 + 7), (1, 17 * MIB + 3)] {
        let data = random_bytes(10 + i, len);
        let path = dir.path().join(format!("staged{i}"));
        std::fs::write(&path, &data).unwrap();
        let crc = crc32c::crc32c(&data);
        for given in [None, Some(crc)] {
            let k = format!("file{i}-{}", given.is_some());
            let meta = store
                .write(
                    &key(&k),
                    WriteSource::File {
                        path: path.clone(),
                        crc32c: given,
                    },
                    Preconditions::create_only(),
                    &WriteAttrs::default(),
                )
                .await
                .unwrap();
            assert_eq!(meta.size, len as u64);
            assert_eq!(meta.crc32c, Some(crc));
            let got = read_all(&store, &k, None, ByteRange::ALL).await.unwrap();
            assert_same(&got, &data, &k);
        }
    }
    let e = store
        .write(
            &key("nofile"),
            WriteSource::File {
                path: dir.path().join("missing"),
                crc32c: None,
            },
            Preconditions::NONE,
            &WriteAttrs::default(),
        )
        .await
        .unwrap_err();
    assert_ne!(
        e.kind(),
        ErrorKind::NotFound,
        "a missing local file is not a missing object"
    );
    assert!(e.message().contains("missing"), "{e}");
}

#[tokio::test]
async fn delete_and_its_not_found_case() {
    let ep = emulator!();
    let store = fresh_store(&ep, "delete").await;
    let m = put(&store, "gone", b"x").await;
    store
        .delete(&key("gone"), Preconditions::generation(m.generation))
        .await
        .unwrap();
    let e = store.stat(&key("gone")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let e = store
        .delete(&key("gone"), Preconditions::NONE)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

#[tokio::test]
async fn copy_keeps_data_metadata_and_content_type() {
    let ep = emulator!();
    let store = fresh_store(&ep, "copy").await;
    let attrs = WriteAttrs {
        content_type: Some("image/png".into()),
        metadata: BTreeMap::from([("mode".to_owned(), "100600".to_owned())]),
    };
    let data = random_bytes(4, 300_000);
    // Uploaded directly so the source has a content type (see the module docs), then
    // given metadata through the store.
    upload_media(&ep, &store, "src/a", "image/png", &data).await;
    let patch = attrs
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    let src = store
        .patch_metadata(&key("src/a"), &patch, Preconditions::NONE)
        .await
        .unwrap();
    assert_eq!(src.content_type.as_deref(), Some("image/png"));
    let dst = store
        .copy(
            &key("src/a"),
            Some(src.generation),
            &key("dst/b"),
            Preconditions::create_only(),
        )
        .await
        .unwrap();
    assert_eq!(dst.key.as_str(), "dst/b");
    assert_eq!(dst.size, data.len() as u64);
    assert_eq!(dst.crc32c, Some(crc32c::crc32c(&data)));
    let stat = store.stat(&key("dst/b")).await.unwrap();
    assert_eq!(stat.content_type.as_deref(), Some("image/png"));
    assert_eq!(stat.metadata, attrs.metadata);
    assert_eq!(stat.generation, dst.generation);
    let got = read_all(&store, "dst/b", None, ByteRange::ALL)
        .await
        .unwrap();
    assert_same(&got, &data, "copy");
    // Unpinned copy of the live generation works too.
    store
        .copy(&key("src/a"), None, &key("dst/c"), Preconditions::NONE)
        .await
        .unwrap();
    assert_eq!(
        store.stat(&key("dst/c")).await.unwrap().size,
        data.len() as u64
    );

    let e = store
        .copy(
            &key("src/missing"),
            None,
            &key("dst/x"),
            Preconditions::NONE,
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    put(&store, "src/a", b"replaced").await;
    let e = store
        .copy(
            &key("src/a"),
            Some(src.generation),
            &key("dst/y"),
            Preconditions::NONE,
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::NotFound,
        "copy of a replaced generation: {e}"
    );
    assert_eq!(
        store.stat(&key("dst/y")).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn patch_metadata_sets_and_changes_keys() {
    let ep = emulator!();
    let store = fresh_store(&ep, "patch").await;
    let attrs = WriteAttrs {
        content_type: Some("text/plain".into()),
        metadata: BTreeMap::from([
            ("keep".to_owned(), "1".to_owned()),
            ("drop".to_owned(), "2".to_owned()),
            ("change".to_owned(), "3".to_owned()),
        ]),
    };
    let m = store
        .write(
            &key("p"),
            WriteSource::Bytes(Bytes::from_static(b"body")),
            Preconditions::NONE,
            &attrs,
        )
        .await
        .unwrap();
    let patch: MetadataPatch = BTreeMap::from([
        ("drop".to_owned(), None),
        ("change".to_owned(), Some("33".to_owned())),
        ("new".to_owned(), Some("4".to_owned())),
    ]);
    let patched = store
        .patch_metadata(&key("p"), &patch, Preconditions::generation(m.generation))
        .await
        .unwrap();
    // (Removal of "drop" is not checked: the emulator stores "" instead.)
    for meta in [patched.clone(), store.stat(&key("p")).await.unwrap()] {
        assert_eq!(meta.metadata.get("keep").map(String::as_str), Some("1"));
        assert_eq!(meta.metadata.get("change").map(String::as_str), Some("33"));
        assert_eq!(meta.metadata.get("new").map(String::as_str), Some("4"));
        assert_eq!(meta.generation, m.generation, "data untouched");
        assert_eq!(meta.size, 4);
    }
    assert_eq!(
        read_all(&store, "p", None, ByteRange::ALL).await.unwrap(),
        b"body"
    );

    let e = store
        .patch_metadata(&key("missing"), &patch, Preconditions::NONE)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

// Bad key files: clean errors at connect time (no emulator needed).

async fn connect_with_key_file(contents: Option<&[u8]>) -> (String, StoreError) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.json");
    if let Some(c) = contents {
        std::fs::write(&path, c).unwrap();
    }
    let err = GcsStore::connect(GcsConfig {
        bucket: "b".into(),
        endpoint: Some("http://127.0.0.1:9".into()),
        auth: GcsAuth::KeyFile(path.clone()),
        ..GcsConfig::default()
    })
    .await
    .expect_err("connect must fail");
    (path.display().to_string(), err)
}

#[tokio::test]
async fn missing_key_file_is_a_clean_error() {
    let (path, e) = connect_with_key_file(None).await;
    assert_eq!(e.kind(), ErrorKind::Unauthenticated);
    assert!(e.to_string().contains(&path), "{e}");
    assert!(std::error::Error::source(&e).is_some());
}

#[tokio::test]
async fn malformed_key_files_are_clean_errors() {
    let bad_key = serde_json::json!({
        "type": "service_account",
        "client_email": "x@y.iam.gserviceaccount.com",
        "private_key_id": "abc",
        "private_key": "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
        "project_id": "p",
        "token_uri": "http://127.0.0.1:9/token"
    })
    .to_string();
    let cases: [&[u8]; 5] = [
        b"not json at all",
        b"{\"no\": \"type\"}",
        b"{\"type\": \"external_magic\"}",
        b"{\"type\": \"service_account\"}",
        bad_key.as_bytes(),
    ];
    for contents in cases {
        let (path, e) = connect_with_key_file(Some(contents)).await;
        let shown = String::from_utf8_lossy(contents);
        assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{shown}: {e}");
        assert!(e.to_string().contains(&path), "{shown}: {e}");
    }
}
