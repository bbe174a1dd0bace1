//! The [`ObjectStore`] conformance suite: one set of cases, run against every backend.
//!
//! Each case is an `async fn(Arc<dyn ObjectStore>)` that gets a fresh, empty bucket and panics
//! on a violation. [`conformance_tests!`](crate::conformance_tests) expands to one
//! `#[tokio::test]` per case:
//!
//! ```ignore
//! mod common;
//! conformance_tests!(make_store(), gaps = [Gap::DeletePrecondition]);
//! ```
//!
//! `make_store()` is any expression giving a future whose output is an `Arc<dyn ObjectStore>`
//! or an `Option<Arc<dyn ObjectStore>>`; `None` skips the test (the factory prints why, e.g.
//! `skipped: GCSFS_TEST_ENDPOINT unset`). It is evaluated once per test, so each case gets its
//! own bucket.
//!
//! Some cases need semantics an emulator lacks. Each such case names the [`Gap`]s it needs in
//! the table inside the macro; on a backend that declares one of them the test prints
//! `skipped: emulator gap <name>` and returns. Assertions are never weakened for a gap.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use gcsfs::store::{
    ByteRange, ChunkData, ErrorKind, Generation, ListRequest, MetadataPatch, Metageneration,
    ObjectFacts, ObjectKey, ObjectMeta, ObjectStore, Preconditions, StoreError, StoreResult,
    UploadSession, UploadStatus, WriteAttrs, WriteSource,
};

/// A semantic of Cloud Storage that a backend (an emulator) does not reproduce.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Gap {
    /// `ifMetagenerationMatch` is ignored on uploads.
    MetagenerationMatchOnUpload,
    /// Preconditions are ignored on delete.
    DeletePrecondition,
    /// Preconditions on the destination of a copy (rewrite) are ignored.
    CopyPrecondition,
    /// Preconditions are ignored on metadata patches.
    PatchPrecondition,
    /// The metageneration does not change on a metadata patch.
    MetagenerationOnPatch,
    /// Replaced generations stay readable (and copyable) instead of being `NotFound`.
    OldGenerationsKept,
    /// `max_results` bounds objects only and every prefix is repeated on every page.
    PrefixPagination,
    /// A metadata patch with `null` stores `""` instead of removing the key.
    PatchNullRemoves,
    /// A resumable upload's status query (`Content-Range: bytes */*`) finalizes the upload
    /// with the bytes held, instead of answering how many are held.
    StatusQueryFinalizes,
    /// Requests of a resumable upload that are not the last may carry any number of bytes,
    /// not only whole 256 KiB blocks.
    UploadBlockSize,
    /// A request's offset is not checked: its bytes are appended to those held, even when they
    /// start below (resent) or past them.
    UploadOffsetIgnored,
    /// The CRC32C declared when an upload starts is forgotten once a request was answered
    /// 308, and the one sent with the last request (`X-Goog-Hash`) is not checked.
    UploadChecksumForgotten,
    /// A finalized session is forgotten (404) instead of answering with its object.
    FinalizedSessionForgotten,
    /// Cancelling answers 499 but leaves the session usable.
    CancelKeepsSession,
}

/// What a store factory may give the macro: a store, or `None` to skip.
pub trait MaybeStore {
    /// The store, or `None` when the test must be skipped.
    fn into_store(self) -> Option<Arc<dyn ObjectStore>>;
}

impl MaybeStore for Arc<dyn ObjectStore> {
    fn into_store(self) -> Option<Arc<dyn ObjectStore>> {
        Some(self)
    }
}

impl MaybeStore for Option<Arc<dyn ObjectStore>> {
    fn into_store(self) -> Option<Arc<dyn ObjectStore>> {
        self
    }
}

/// Whether a case that needs `needs` must be skipped on a backend with the `declared` gaps;
/// prints `skipped: emulator gap <name>` when it must.
pub fn skip_for_gap(needs: &[Gap], declared: &[Gap]) -> bool {
    match needs.iter().find(|g| declared.contains(g)) {
        Some(gap) => {
            println!("skipped: emulator gap {gap:?}");
            true
        }
        None => false,
    }
}

/// Expands to one `#[tokio::test]` per conformance case; see the [module](self) docs.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr $(,)?) => {
        $crate::conformance_tests!($make, gaps = []);
    };
    ($make:expr, gaps = $gaps:tt $(,)?) => {
        $crate::__conformance_cases! { ($make) $gaps
            stat_missing_is_not_found: [],
            round_trip_keeps_data_metadata_and_content_type: [],
            crc32c_matches_data: [],
            ranged_reads: [],
            read_pinned_to_live_generation: [],
            read_pinned_to_replaced_generation_is_not_found: [OldGenerationsKept],
            overwrite_replaces_data_and_attributes: [],
            generations_strictly_increase: [],
            write_create_only_when_missing_succeeds: [],
            write_create_only_on_existing_fails: [],
            write_generation_match_succeeds: [],
            write_generation_mismatch_fails: [],
            write_metageneration_precondition: [MetagenerationMatchOnUpload],
            delete_then_stat_is_not_found: [],
            delete_missing_is_not_found: [],
            delete_generation_match_succeeds: [],
            delete_precondition_mismatch_fails: [DeletePrecondition],
            copy_keeps_data_and_metadata: [],
            copy_pinned_source_generation: [OldGenerationsKept],
            copy_missing_source_is_not_found: [],
            copy_destination_preconditions: [CopyPrecondition],
            patch_sets_and_removes_metadata: [PatchNullRemoves],
            patch_bumps_metageneration: [MetagenerationOnPatch],
            patch_precondition_mismatch_fails: [PatchPrecondition],
            patch_missing_is_not_found: [],
            list_empty_bucket: [],
            list_without_delimiter_is_recursive: [],
            list_with_delimiter_groups_prefixes: [],
            list_marker_objects: [],
            list_pagination_returns_everything_once: [PrefixPagination],
            list_start_offset: [],
            write_from_file: [],
            write_from_stream: [],
            failing_stream_creates_nothing: [],
            upload_session_round_trip: [],
            upload_status_reports_bytes_held: [StatusQueryFinalizes],
            upload_requests_are_whole_blocks: [UploadBlockSize],
            upload_ignores_resent_bytes_it_holds: [UploadOffsetIgnored],
            upload_refuses_resent_bytes_that_differ: [UploadOffsetIgnored],
            upload_refuses_an_offset_past_what_it_holds: [UploadOffsetIgnored],
            upload_checks_the_declared_crc32c: [],
            upload_checks_the_last_crc32c: [UploadChecksumForgotten],
            upload_checks_preconditions_at_finalize: [],
            finalized_upload_answers_with_its_object: [FinalizedSessionForgotten],
            cancelled_upload_creates_nothing: [CancelKeepsSession],
        }
    };
}

/// Implementation detail of [`conformance_tests!`](crate::conformance_tests).
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    (($make:expr) $gaps:tt $($case:ident : [$($need:ident),*]),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                use $crate::common::conformance::{Gap, MaybeStore};
                let declared: &[Gap] = &$gaps;
                if $crate::common::conformance::skip_for_gap(&[$(Gap::$need),*], declared) {
                    return;
                }
                let Some(store) = MaybeStore::into_store($make.await) else {
                    return;
                };
                $crate::common::conformance::$case(store).await;
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// An object key.
pub fn k(name: &str) -> ObjectKey {
    ObjectKey::new(name).unwrap()
}

/// `len` bytes of a repeatable pseudo-random pattern.
pub fn pattern(len: usize, seed: u8) -> Bytes {
    let mut x = u32::from(seed) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// Writes `data` without attributes.
pub async fn write_if(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    data: &[u8],
    pre: Preconditions,
) -> StoreResult<ObjectMeta> {
    store
        .write(
            &k(key),
            WriteSource::Bytes(Bytes::copy_from_slice(data)),
            pre,
            &WriteAttrs::default(),
        )
        .await
}

/// Writes `data` without attributes or preconditions; panics on failure.
pub async fn put(store: &Arc<dyn ObjectStore>, key: &str, data: &[u8]) -> ObjectMeta {
    write_if(store, key, data, Preconditions::NONE)
        .await
        .unwrap_or_else(|e| panic!("writing {key}: {e}"))
}

/// Reads `range` of `key` fully.
pub async fn read_range(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    generation: Option<Generation>,
    range: ByteRange,
) -> StoreResult<Vec<u8>> {
    let mut stream = store.read(&k(key), generation, range).await?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// Reads all of `key`; panics on failure.
pub async fn read_all(store: &Arc<dyn ObjectStore>, key: &str) -> Vec<u8> {
    read_range(store, key, None, ByteRange::ALL)
        .await
        .unwrap_or_else(|e| panic!("reading {key}: {e}"))
}

/// The kind of the error `result` must be.
pub fn err_kind<T: std::fmt::Debug>(result: StoreResult<T>) -> ErrorKind {
    match result {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.kind(),
    }
}

/// Everything a listing returns over all its pages: object names, prefixes, and page count.
#[derive(Debug, Default)]
pub struct Listing {
    /// Object names, in the order the pages gave them.
    pub objects: Vec<String>,
    /// Prefixes, in the order the pages gave them.
    pub prefixes: Vec<String>,
    /// How many pages the listing took.
    pub pages: usize,
}

/// Follows the page tokens of `request` to the end.
pub async fn list_all(store: &Arc<dyn ObjectStore>, request: ListRequest) -> Listing {
    let mut request = request;
    let mut out = Listing::default();
    loop {
        let page = store.list(&request).await.unwrap();
        out.pages += 1;
        if let Some(max) = request.max_results {
            let n = page.objects.len() + page.prefixes.len();
            assert!(
                n <= max as usize,
                "page of {n} entries exceeds max_results {max}"
            );
        }
        out.objects
            .extend(page.objects.iter().map(|m| m.key.as_str().to_owned()));
        out.prefixes.extend(page.prefixes);
        match page.next_page_token {
            Some(token) => request.page_token = Some(token),
            None => return out,
        }
        assert!(out.pages < 1000, "listing does not end");
    }
}

fn attrs(content_type: &str, pairs: &[(&str, &str)]) -> WriteAttrs {
    WriteAttrs {
        content_type: Some(content_type.to_owned()),
        metadata: pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect(),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

async fn seed(store: &Arc<dyn ObjectStore>, keys: &[&str]) {
    for key in keys {
        put(store, key, key.as_bytes()).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Cases

/// `stat` of a missing object is `NotFound`.
pub async fn stat_missing_is_not_found(store: Arc<dyn ObjectStore>) {
    assert_eq!(
        err_kind(store.stat(&k("missing")).await),
        ErrorKind::NotFound
    );
}

/// Data, size, content type and user metadata survive a write, a stat and a read.
pub async fn round_trip_keeps_data_metadata_and_content_type(store: Arc<dyn ObjectStore>) {
    let key = "dir/sub dir/file ü+%.txt";
    let data = pattern(700 * 1024 + 3, 1);
    let attrs = attrs("text/plain", &[("mode", "644"), ("x", "y z")]);
    let written = store
        .write(
            &k(key),
            WriteSource::Bytes(data.clone()),
            Preconditions::NONE,
            &attrs,
        )
        .await
        .unwrap();
    assert_eq!(written.key, k(key));
    assert_eq!(written.size, data.len() as u64);
    assert!(written.generation.0 > 0);
    assert_eq!(written.metageneration, Metageneration(1));
    assert_eq!(written.content_type.as_deref(), Some("text/plain"));
    assert_eq!(written.metadata, attrs.metadata);

    let stat = store.stat(&k(key)).await.unwrap();
    assert_eq!(stat.key, written.key);
    assert_eq!(stat.size, written.size);
    assert_eq!(stat.generation, written.generation);
    assert_eq!(stat.metageneration, written.metageneration);
    assert_eq!(stat.crc32c, written.crc32c);
    assert_eq!(stat.content_type, written.content_type);
    assert_eq!(stat.metadata, written.metadata);

    assert!(read_all(&store, key).await == data, "data differs");
}

/// The reported CRC32C is the Castagnoli CRC of the data.
pub async fn crc32c_matches_data(store: Arc<dyn ObjectStore>) {
    let data = pattern(100_000, 2);
    let meta = put(&store, "c", &data).await;
    assert_eq!(meta.crc32c, Some(crc32c::crc32c(&data)));
    assert_eq!(
        store.stat(&k("c")).await.unwrap().crc32c,
        Some(crc32c::crc32c(&data))
    );
    let empty = put(&store, "empty", b"").await;
    assert_eq!(empty.size, 0);
    assert_eq!(empty.crc32c, Some(0));
}

/// Ranges: the middle, a tail clamped at the end, from the start, at and past the end.
pub async fn ranged_reads(store: Arc<dyn ObjectStore>) {
    let data = pattern(1000, 3);
    put(&store, "r", &data).await;
    let read = |range| read_range(&store, "r", None, range);
    assert_eq!(
        read(ByteRange::segment(100, 200)).await.unwrap(),
        &data[100..300]
    );
    assert_eq!(
        read(ByteRange::segment(900, 500)).await.unwrap(),
        &data[900..]
    );
    assert_eq!(read(ByteRange::from(999)).await.unwrap(), &data[999..]);
    assert_eq!(read(ByteRange::segment(0, 1)).await.unwrap(), &data[..1]);
    assert_eq!(read(ByteRange::ALL).await.unwrap(), &data[..]);
    assert_eq!(read(ByteRange::from(1000)).await.unwrap(), b"");
    assert_eq!(read(ByteRange::segment(1000, 10)).await.unwrap(), b"");
    assert_eq!(read(ByteRange::from(5000)).await.unwrap(), b"");
    assert_eq!(read(ByteRange::segment(5000, 10)).await.unwrap(), b"");

    put(&store, "empty", b"").await;
    assert_eq!(
        read_range(&store, "empty", None, ByteRange::ALL)
            .await
            .unwrap(),
        b""
    );
    assert_eq!(
        err_kind(read_range(&store, "nope", None, ByteRange::ALL).await),
        ErrorKind::NotFound
    );
}

/// A read pinned to the live generation returns its data.
pub async fn read_pinned_to_live_generation(store: Arc<dyn ObjectStore>) {
    let meta = put(&store, "p", b"pinned").await;
    let got = read_range(&store, "p", Some(meta.generation), ByteRange::segment(1, 3)).await;
    assert_eq!(got.unwrap(), b"inn");
}

/// Once an object is replaced, a read pinned to the old generation is `NotFound`.
pub async fn read_pinned_to_replaced_generation_is_not_found(store: Arc<dyn ObjectStore>) {
    let old = put(&store, "p", b"one").await;
    let new = put(&store, "p", b"two").await;
    assert_ne!(old.generation, new.generation);
    let got = read_range(&store, "p", Some(old.generation), ByteRange::ALL).await;
    assert_eq!(err_kind(got), ErrorKind::NotFound);
    store.delete(&k("p"), Preconditions::NONE).await.unwrap();
    let got = read_range(&store, "p", Some(new.generation), ByteRange::ALL).await;
    assert_eq!(err_kind(got), ErrorKind::NotFound);
}

/// Overwriting replaces data, content type and metadata and starts a new generation.
pub async fn overwrite_replaces_data_and_attributes(store: Arc<dyn ObjectStore>) {
    let first = store
        .write(
            &k("o"),
            WriteSource::Bytes(Bytes::from_static(b"first")),
            Preconditions::NONE,
            &attrs("text/plain", &[("a", "1")]),
        )
        .await
        .unwrap();
    let second = store
        .write(
            &k("o"),
            WriteSource::Bytes(Bytes::from_static(b"second!")),
            Preconditions::NONE,
            &attrs("application/json", &[("b", "2")]),
        )
        .await
        .unwrap();
    assert!(second.generation > first.generation);
    let stat = store.stat(&k("o")).await.unwrap();
    assert_eq!(stat.generation, second.generation);
    assert_eq!(stat.metageneration, Metageneration(1));
    assert_eq!(stat.size, 7);
    assert_eq!(stat.content_type.as_deref(), Some("application/json"));
    assert_eq!(stat.metadata, attrs("", &[("b", "2")]).metadata);
    assert_eq!(read_all(&store, "o").await, b"second!");
}

/// Every new generation of an object is larger than the previous one, also across a delete.
pub async fn generations_strictly_increase(store: Arc<dyn ObjectStore>) {
    let mut last = Generation(0);
    for round in 0..5u8 {
        let meta = put(&store, "g", &[round]).await;
        assert!(meta.generation > last, "{:?} !> {last:?}", meta.generation);
        last = meta.generation;
    }
    store.delete(&k("g"), Preconditions::NONE).await.unwrap();
    let meta = put(&store, "g", b"again").await;
    assert!(meta.generation > last);
}

/// `ifGenerationMatch=0` creates a missing object.
pub async fn write_create_only_when_missing_succeeds(store: Arc<dyn ObjectStore>) {
    let meta = write_if(&store, "new", b"x", Preconditions::create_only())
        .await
        .unwrap();
    assert_eq!(
        store.stat(&k("new")).await.unwrap().generation,
        meta.generation
    );
}

/// `ifGenerationMatch=0` on an existing object fails and leaves it alone.
pub async fn write_create_only_on_existing_fails(store: Arc<dyn ObjectStore>) {
    let meta = put(&store, "e", b"original").await;
    let got = write_if(&store, "e", b"intruder", Preconditions::create_only()).await;
    assert_eq!(err_kind(got), ErrorKind::PreconditionFailed);
    assert_eq!(
        store.stat(&k("e")).await.unwrap().generation,
        meta.generation
    );
    assert_eq!(read_all(&store, "e").await, b"original");
}

/// `ifGenerationMatch` with the live generation replaces the object.
pub async fn write_generation_match_succeeds(store: Arc<dyn ObjectStore>) {
    let meta = put(&store, "m", b"one").await;
    let next = write_if(
        &store,
        "m",
        b"two",
        Preconditions::generation(meta.generation),
    )
    .await
    .unwrap();
    assert!(next.generation > meta.generation);
    assert_eq!(read_all(&store, "m").await, b"two");
}

/// `ifGenerationMatch` with another generation fails, for an existing and a missing object.
pub async fn write_generation_mismatch_fails(store: Arc<dyn ObjectStore>) {
    let old = put(&store, "m", b"one").await;
    let live = put(&store, "m", b"two").await;
    let got = write_if(
        &store,
        "m",
        b"three",
        Preconditions::generation(old.generation),
    )
    .await;
    assert_eq!(err_kind(got), ErrorKind::PreconditionFailed);
    assert_eq!(
        store.stat(&k("m")).await.unwrap().generation,
        live.generation
    );
    assert_eq!(read_all(&store, "m").await, b"two");

    let got = write_if(
        &store,
        "absent",
        b"x",
        Preconditions::generation(live.generation),
    )
    .await;
    assert_eq!(err_kind(got), ErrorKind::PreconditionFailed);
    assert_eq!(
        err_kind(store.stat(&k("absent")).await),
        ErrorKind::NotFound
    );
}

/// `ifMetagenerationMatch` on a write: the live metageneration passes, another one fails.
pub async fn write_metageneration_precondition(store: Arc<dyn ObjectStore>) {
    let meta = put(&store, "mg", b"one").await;
    let wrong = Preconditions {
        if_generation_match: None,
        if_metageneration_match: Some(Metageneration(meta.metageneration.0 + 5)),
    };
    assert_eq!(
        err_kind(write_if(&store, "mg", b"two", wrong).await),
        ErrorKind::PreconditionFailed
    );
    assert_eq!(read_all(&store, "mg").await, b"one");
    let right = Preconditions {
        if_generation_match: Some(meta.generation),
        if_metageneration_match: Some(meta.metageneration),
    };
    write_if(&store, "mg", b"two", right).await.unwrap();
    assert_eq!(read_all(&store, "mg").await, b"two");
}

/// A deleted object is gone.
pub async fn delete_then_stat_is_not_found(store: Arc<dyn ObjectStore>) {
    put(&store, "d", b"x").await;
    store.delete(&k("d"), Preconditions::NONE).await.unwrap();
    assert_eq!(err_kind(store.stat(&k("d")).await), ErrorKind::NotFound);
    assert_eq!(
        err_kind(read_range(&store, "d", None, ByteRange::ALL).await),
        ErrorKind::NotFound
    );
}

/// Deleting a missing object is `NotFound`.
pub async fn delete_missing_is_not_found(store: Arc<dyn ObjectStore>) {
    assert_eq!(
        err_kind(store.delete(&k("missing"), Preconditions::NONE).await),
        ErrorKind::NotFound
    );
}

/// A delete with the live generation as precondition deletes.
pub async fn delete_generation_match_succeeds(store: Arc<dyn ObjectStore>) {
    let meta = put(&store, "d", b"x").await;
    store
        .delete(&k("d"), Preconditions::generation(meta.generation))
        .await
        .unwrap();
    assert_eq!(err_kind(store.stat(&k("d")).await), ErrorKind::NotFound);
}

/// A delete whose generation or metageneration precondition does not hold keeps the object.
pub async fn delete_precondition_mismatch_fails(store: Arc<dyn ObjectStore>) {
    let old = put(&store, "d", b"one").await;
    let live = put(&store, "d", b"two").await;
    let got = store
        .delete(&k("d"), Preconditions::generation(old.generation))
        .await;
    assert_eq!(err_kind(got), ErrorKind::PreconditionFailed);
    let wrong_meta = Preconditions {
        if_generation_match: None,
        if_metageneration_match: Some(Metageneration(live.metageneration.0 + 1)),
    };
    let got = store.delete(&k("d"), wrong_meta).await;
    assert_eq!(err_kind(got), ErrorKind::PreconditionFailed);
    assert_eq!(
        store.stat(&k("d")).await.unwrap().generation,
        live.generation
    );
}

/// A copy has the source's data, CRC, content type and metadata, in a new generation.
pub async fn copy_keeps_data_and_metadata(store: Arc<dyn ObjectStore>) {
    let data = pattern(300 * 1024, 4);
    let src = store
        .write(
            &k("src"),
            WriteSource::Bytes(data.clone()),
            Preconditions::NONE,
            &attrs("image/png", &[("owner", "me")]),
        )
        .await
        .unwrap();
    let dst = store
        .copy(&k("src"), None, &k("dir/dst"), Preconditions::NONE)
        .await
        .unwrap();
    assert_eq!(dst.key, k("dir/dst"));
    assert_eq!(dst.size, src.size);
    assert_eq!(dst.crc32c, src.crc32c);
    assert_eq!(dst.content_type.as_deref(), Some("image/png"));
    assert_eq!(dst.metadata, src.metadata);
    assert_eq!(dst.metageneration, Metageneration(1));
    assert!(
        read_all(&store, "dir/dst").await == data,
        "copied data differs"
    );
    assert!(read_all(&store, "src").await == data, "the source is kept");
    // Copying over an existing object replaces it.
    put(&store, "other", b"old").await;
    store
        .copy(
            &k("src"),
            Some(src.generation),
            &k("other"),
            Preconditions::NONE,
        )
        .await
        .unwrap();
    assert!(read_all(&store, "other").await == data);
}

/// A copy pinned to a replaced source generation is `NotFound`.
pub async fn copy_pinned_source_generation(store: Arc<dyn ObjectStore>) {
    let old = put(&store, "src", b"one").await;
    put(&store, "src", b"two").await;
    let got = store
        .copy(
            &k("src"),
            Some(old.generation),
            &k("dst"),
            Preconditions::NONE,
        )
        .await;
    assert_eq!(err_kind(got), ErrorKind::NotFound);
    assert_eq!(err_kind(store.stat(&k("dst")).await), ErrorKind::NotFound);
}

/// Copying a missing object is `NotFound` and creates nothing.
pub async fn copy_missing_source_is_not_found(store: Arc<dyn ObjectStore>) {
    let got = store
        .copy(&k("missing"), None, &k("dst"), Preconditions::NONE)
        .await;
    assert_eq!(err_kind(got), ErrorKind::NotFound);
    assert_eq!(err_kind(store.stat(&k("dst")).await), ErrorKind::NotFound);
}

/// Preconditions of a copy apply to the destination.
pub async fn copy_destination_preconditions(store: Arc<dyn ObjectStore>) {
    put(&store, "src", b"source").await;
    let dst = put(&store, "dst", b"existing").await;
    let got = store
        .copy(&k("src"), None, &k("dst"), Preconditions::create_only())
        .await;
    assert_eq!(err_kind(got), ErrorKind::PreconditionFailed);
    let got = store
        .copy(
            &k("src"),
            None,
            &k("dst"),
            Preconditions::generation(Generation(dst.generation.0 + 1)),
        )
        .await;
    assert_eq!(err_kind(got), ErrorKind::PreconditionFailed);
    assert_eq!(read_all(&store, "dst").await, b"existing");
    store
        .copy(
            &k("src"),
            None,
            &k("dst"),
            Preconditions::generation(dst.generation),
        )
        .await
        .unwrap();
    assert_eq!(read_all(&store, "dst").await, b"source");
    store
        .copy(&k("src"), None, &k("fresh"), Preconditions::create_only())
        .await
        .unwrap();
    assert_eq!(read_all(&store, "fresh").await, b"source");
}

/// A patch sets and removes user metadata and leaves data and generation alone.
pub async fn patch_sets_and_removes_metadata(store: Arc<dyn ObjectStore>) {
    let meta = store
        .write(
            &k("p"),
            WriteSource::Bytes(Bytes::from_static(b"data")),
            Preconditions::NONE,
            &attrs(
                "text/plain",
                &[("keep", "1"), ("drop", "2"), ("change", "3")],
            ),
        )
        .await
        .unwrap();
    let patch: MetadataPatch = [
        ("drop".to_owned(), None),
        ("change".to_owned(), Some("33".to_owned())),
        ("add".to_owned(), Some("4".to_owned())),
    ]
    .into_iter()
    .collect();
    let patched = store
        .patch_metadata(&k("p"), &patch, Preconditions::NONE)
        .await
        .unwrap();
    let expected: BTreeMap<String, String> = [("keep", "1"), ("change", "33"), ("add", "4")]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
    assert_eq!(patched.metadata, expected);
    assert_eq!(patched.generation, meta.generation);
    assert_eq!(patched.size, 4);
    assert_eq!(patched.content_type.as_deref(), Some("text/plain"));
    let stat = store.stat(&k("p")).await.unwrap();
    assert_eq!(stat.metadata, expected);
    assert_eq!(stat.generation, meta.generation);
    assert_eq!(read_all(&store, "p").await, b"data");
}

/// Each patch bumps the metageneration by one; a new generation starts again at 1.
pub async fn patch_bumps_metageneration(store: Arc<dyn ObjectStore>) {
    let meta = put(&store, "p", b"x").await;
    assert_eq!(meta.metageneration, Metageneration(1));
    let patch: MetadataPatch = [("a".to_owned(), Some("1".to_owned()))].into();
    let once = store
        .patch_metadata(&k("p"), &patch, Preconditions::NONE)
        .await
        .unwrap();
    assert_eq!(once.metageneration, Metageneration(2));
    let twice = store
        .patch_metadata(&k("p"), &patch, Preconditions::NONE)
        .await
        .unwrap();
    assert_eq!(twice.metageneration, Metageneration(3));
    assert_eq!(
        store.stat(&k("p")).await.unwrap().metageneration,
        Metageneration(3)
    );
    let rewritten = put(&store, "p", b"y").await;
    assert_eq!(rewritten.metageneration, Metageneration(1));
}

/// A patch whose precondition does not hold changes nothing; one that holds applies.
pub async fn patch_precondition_mismatch_fails(store: Arc<dyn ObjectStore>) {
    let meta = put(&store, "p", b"x").await;
    let patch: MetadataPatch = [("a".to_owned(), Some("1".to_owned()))].into();
    let wrong_gen = Preconditions::generation(Generation(meta.generation.0 + 1));
    let got = store.patch_metadata(&k("p"), &patch, wrong_gen).await;
    assert_eq!(err_kind(got), ErrorKind::PreconditionFailed);
    let wrong_meta = Preconditions {
        if_generation_match: None,
        if_metageneration_match: Some(Metageneration(meta.metageneration.0 + 1)),
    };
    let got = store.patch_metadata(&k("p"), &patch, wrong_meta).await;
    assert_eq!(err_kind(got), ErrorKind::PreconditionFailed);
    assert!(store.stat(&k("p")).await.unwrap().metadata.is_empty());
    let right = Preconditions {
        if_generation_match: Some(meta.generation),
        if_metageneration_match: Some(meta.metageneration),
    };
    let patched = store.patch_metadata(&k("p"), &patch, right).await.unwrap();
    assert_eq!(patched.metadata.get("a").map(String::as_str), Some("1"));
}

/// Patching a missing object is `NotFound`.
pub async fn patch_missing_is_not_found(store: Arc<dyn ObjectStore>) {
    let patch: MetadataPatch = [("a".to_owned(), Some("1".to_owned()))].into();
    let got = store
        .patch_metadata(&k("missing"), &patch, Preconditions::NONE)
        .await;
    assert_eq!(err_kind(got), ErrorKind::NotFound);
}

/// An empty bucket lists nothing, in one page.
pub async fn list_empty_bucket(store: Arc<dyn ObjectStore>) {
    for delimiter in [None, Some("/".to_owned())] {
        let page = store
            .list(&ListRequest {
                delimiter,
                ..ListRequest::default()
            })
            .await
            .unwrap();
        assert!(page.objects.is_empty() && page.prefixes.is_empty());
        assert_eq!(page.next_page_token, None);
    }
}

const TREE: &[&str] = &[
    "a/", "a/1", "a/b/", "a/b/2", "a/b/c/3", "a/bb", "a0", "ab/4", "z",
];

/// Without a delimiter a listing is every key under the prefix, in order, with full metadata.
pub async fn list_without_delimiter_is_recursive(store: Arc<dyn ObjectStore>) {
    seed(&store, TREE).await;
    let all = list_all(&store, ListRequest::default()).await;
    assert_eq!(all.objects, strings(TREE));
    assert!(all.prefixes.is_empty());
    let under_a = list_all(
        &store,
        ListRequest {
            prefix: "a/".into(),
            ..ListRequest::default()
        },
    )
    .await;
    assert_eq!(
        under_a.objects,
        strings(&["a/", "a/1", "a/b/", "a/b/2", "a/b/c/3", "a/bb"])
    );
    // Prefixes are plain string prefixes, not directories.
    let a = list_all(
        &store,
        ListRequest {
            prefix: "a".into(),
            ..ListRequest::default()
        },
    )
    .await;
    assert_eq!(a.objects.len(), 8);
    let page = store.list(&ListRequest::default()).await.unwrap();
    let meta = page
        .objects
        .iter()
        .find(|m| m.key.as_str() == "a/b/2")
        .unwrap();
    assert_eq!(meta.size, 5);
    assert_eq!(meta.crc32c, Some(crc32c::crc32c(b"a/b/2")));
}

/// With a delimiter, deeper keys fold into distinct prefixes; keys directly under stay objects.
pub async fn list_with_delimiter_groups_prefixes(store: Arc<dyn ObjectStore>) {
    seed(&store, TREE).await;
    let request = |prefix: &str| ListRequest {
        prefix: prefix.to_owned(),
        delimiter: Some("/".into()),
        ..ListRequest::default()
    };
    let root = list_all(&store, request("")).await;
    assert_eq!(root.objects, strings(&["a0", "z"]));
    assert_eq!(root.prefixes, strings(&["a/", "ab/"]));
    let a = list_all(&store, request("a/")).await;
    assert_eq!(a.objects, strings(&["a/", "a/1", "a/bb"]));
    assert_eq!(a.prefixes, strings(&["a/b/"]));
    let ab = list_all(&store, request("a/b/")).await;
    assert_eq!(ab.objects, strings(&["a/b/", "a/b/2"]));
    assert_eq!(ab.prefixes, strings(&["a/b/c/"]));
    let none = list_all(&store, request("nothing/")).await;
    assert!(none.objects.is_empty() && none.prefixes.is_empty());
}

/// A marker object `d/` shows up as the prefix `d/` from above and as an object from inside.
pub async fn list_marker_objects(store: Arc<dyn ObjectStore>) {
    seed(&store, &["d/", "e/", "e/f"]).await;
    let request = |prefix: &str| ListRequest {
        prefix: prefix.to_owned(),
        delimiter: Some("/".into()),
        ..ListRequest::default()
    };
    let root = list_all(&store, request("")).await;
    assert!(root.objects.is_empty());
    assert_eq!(root.prefixes, strings(&["d/", "e/"]));
    let d = list_all(&store, request("d/")).await;
    assert_eq!(d.objects, strings(&["d/"]));
    assert!(d.prefixes.is_empty());
    let e = list_all(&store, request("e/")).await;
    assert_eq!(e.objects, strings(&["e/", "e/f"]));
}

/// Small pages, with and without a delimiter, return every entry exactly once, in order.
pub async fn list_pagination_returns_everything_once(store: Arc<dyn ObjectStore>) {
    let mut keys: Vec<String> = (0..7).map(|i| format!("f{i}")).collect();
    for dir in ["d0", "d1", "d2"] {
        for i in 0..4 {
            keys.push(format!("{dir}/x{i}"));
        }
    }
    keys.sort();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    seed(&store, &refs).await;
    for max in [1u32, 2, 3, 1000] {
        let flat = list_all(
            &store,
            ListRequest {
                max_results: Some(max),
                ..ListRequest::default()
            },
        )
        .await;
        assert_eq!(flat.objects, keys, "max_results {max}");
        if max < 1000 {
            assert!(
                flat.pages >= keys.len().div_ceil(max as usize),
                "max_results {max}"
            );
        }
        let grouped = list_all(
            &store,
            ListRequest {
                delimiter: Some("/".into()),
                max_results: Some(max),
                ..ListRequest::default()
            },
        )
        .await;
        let files: Vec<String> = (0..7).map(|i| format!("f{i}")).collect();
        assert_eq!(grouped.objects, files, "max_results {max}");
        assert_eq!(
            grouped.prefixes,
            strings(&["d0/", "d1/", "d2/"]),
            "max_results {max}"
        );
    }
}

/// `start_offset` skips keys before it (inclusive bound), alone and with a prefix.
pub async fn list_start_offset(store: Arc<dyn ObjectStore>) {
    seed(&store, &["a", "b", "c/1", "c/2", "d"]).await;
    let from_b = list_all(
        &store,
        ListRequest {
            start_offset: Some("b".into()),
            ..ListRequest::default()
        },
    )
    .await;
    assert_eq!(from_b.objects, strings(&["b", "c/1", "c/2", "d"]));
    let between = list_all(
        &store,
        ListRequest {
            start_offset: Some("bb".into()),
            max_results: Some(1),
            ..ListRequest::default()
        },
    )
    .await;
    assert_eq!(between.objects, strings(&["c/1", "c/2", "d"]));
    let in_prefix = list_all(
        &store,
        ListRequest {
            prefix: "c/".into(),
            start_offset: Some("c/2".into()),
            ..ListRequest::default()
        },
    )
    .await;
    assert_eq!(in_prefix.objects, strings(&["c/2"]));
    let delimited = list_all(
        &store,
        ListRequest {
            delimiter: Some("/".into()),
            start_offset: Some("b".into()),
            ..ListRequest::default()
        },
    )
    .await;
    assert_eq!(delimited.objects, strings(&["b", "d"]));
    assert_eq!(delimited.prefixes, strings(&["c/"]));
}

/// A write from a local file uploads its content, with or without a precomputed CRC.
pub async fn write_from_file(store: Arc<dyn ObjectStore>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("staged");
    let data = pattern(600 * 1024 + 11, 8);
    std::fs::write(&path, &data).unwrap();
    for (key, crc) in [("f1", None), ("f2", Some(crc32c::crc32c(&data)))] {
        let meta = store
            .write(
                &k(key),
                WriteSource::File {
                    path: path.clone(),
                    crc32c: crc,
                },
                Preconditions::create_only(),
                &attrs("text/plain", &[("from", "file")]),
            )
            .await
            .unwrap();
        assert_eq!(meta.size, data.len() as u64);
        assert_eq!(meta.crc32c, Some(crc32c::crc32c(&data)));
        assert_eq!(meta.metadata.get("from").map(String::as_str), Some("file"));
        assert!(read_all(&store, key).await == data, "{key}: data differs");
    }
}

/// A write from a stream uploads the concatenation of its chunks.
pub async fn write_from_stream(store: Arc<dyn ObjectStore>) {
    let data = pattern(1024 * 1024 + 5, 9);
    let chunks: Vec<StoreResult<Bytes>> = data
        .chunks(100_000)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let meta = store
        .write(
            &k("s"),
            WriteSource::Stream(futures::stream::iter(chunks).boxed()),
            Preconditions::create_only(),
            &attrs("application/octet-stream", &[]),
        )
        .await
        .unwrap();
    assert_eq!(meta.size, data.len() as u64);
    assert_eq!(meta.crc32c, Some(crc32c::crc32c(&data)));
    assert!(read_all(&store, "s").await == data, "streamed data differs");
}

/// A stream that fails part-way aborts the write: nothing is created and nothing replaced.
pub async fn failing_stream_creates_nothing(store: Arc<dyn ObjectStore>) {
    let failing = || {
        let items: Vec<StoreResult<Bytes>> = vec![
            Ok(pattern(64 * 1024, 10)),
            Err(StoreError::new(ErrorKind::Other, "the producer failed")),
            Ok(pattern(10, 11)),
        ];
        WriteSource::Stream(futures::stream::iter(items).boxed())
    };
    let none = WriteAttrs::default();
    let got = store
        .write(&k("new"), failing(), Preconditions::NONE, &none)
        .await;
    assert!(got.is_err(), "the write must fail");
    assert_eq!(err_kind(store.stat(&k("new")).await), ErrorKind::NotFound);

    let old = put(&store, "old", b"keep me").await;
    let got = store
        .write(&k("old"), failing(), Preconditions::NONE, &none)
        .await;
    assert!(got.is_err(), "the write must fail");
    assert_eq!(
        store.stat(&k("old")).await.unwrap().generation,
        old.generation
    );
    assert_eq!(read_all(&store, "old").await, b"keep me");
}

// ---------------------------------------------------------------------------------------------
// Resumable upload sessions

/// 256 KiB: every request of an upload but the last carries a whole number of these.
const BLOCK: usize = 256 * 1024;

/// Starts an upload of `key`.
async fn start(
    store: &Arc<dyn ObjectStore>,
    key: &str,
    pre: Preconditions,
    facts: ObjectFacts,
) -> UploadSession {
    store
        .start_upload(
            &k(key),
            pre,
            &attrs("text/plain", &[("via", "session")]),
            facts,
        )
        .await
        .unwrap_or_else(|e| panic!("start upload of {key}: {e}"))
}

/// Sends `data` from `offset`; `last` is the whole object's CRC32C when this is its end.
async fn send(
    store: &Arc<dyn ObjectStore>,
    session: &UploadSession,
    offset: usize,
    data: &[u8],
    last: Option<u32>,
) -> StoreResult<UploadStatus> {
    let data = ChunkData::Memory(vec![Bytes::copy_from_slice(data)]);
    store.upload_chunk(session, offset as u64, data, last).await
}

fn done(status: UploadStatus) -> ObjectMeta {
    match status {
        UploadStatus::Done(meta) => meta,
        other => panic!("expected the upload to be finalized, got {other:?}"),
    }
}

/// Requests of whole blocks, then a last one with the object's CRC32C: the object is
/// created only then, with the data, content type and metadata given at the start.
pub async fn upload_session_round_trip(store: Arc<dyn ObjectStore>) {
    let data = pattern(2 * BLOCK + 1000, 20);
    let crc = crc32c::crc32c(&data);
    let session = start(
        &store,
        "up",
        Preconditions::create_only(),
        ObjectFacts::default(),
    )
    .await;
    assert_eq!(session.key().as_str(), "up");
    assert!(
        !format!("{session:?}").contains(session.id()),
        "the session URI is a credential: never in Debug"
    );
    let held = send(&store, &session, 0, &data[..BLOCK], None)
        .await
        .unwrap();
    assert_eq!(held, UploadStatus::Persisted(BLOCK as u64));
    assert_eq!(err_kind(store.stat(&k("up")).await), ErrorKind::NotFound);
    let held = send(&store, &session, BLOCK, &data[BLOCK..2 * BLOCK], None)
        .await
        .unwrap();
    assert_eq!(held, UploadStatus::Persisted(2 * BLOCK as u64));
    let meta = done(
        send(&store, &session, 2 * BLOCK, &data[2 * BLOCK..], Some(crc))
            .await
            .unwrap(),
    );
    assert_eq!(meta.size, data.len() as u64);
    assert_eq!(meta.crc32c, Some(crc));
    assert_eq!(meta.content_type.as_deref(), Some("text/plain"));
    assert_eq!(
        meta.metadata.get("via").map(String::as_str),
        Some("session")
    );
    assert!(
        read_all(&store, "up").await == data,
        "uploaded data differs"
    );
    // An empty last request ends an upload whose bytes were all sent.
    let session = start(
        &store,
        "up2",
        Preconditions::create_only(),
        ObjectFacts::default(),
    )
    .await;
    send(&store, &session, 0, &data[..BLOCK], None)
        .await
        .unwrap();
    let meta = done(
        send(
            &store,
            &session,
            BLOCK,
            b"",
            Some(crc32c::crc32c(&data[..BLOCK])),
        )
        .await
        .unwrap(),
    );
    assert_eq!(meta.size, BLOCK as u64);
}

/// A status query says how many bytes are held, and changes nothing.
pub async fn upload_status_reports_bytes_held(store: Arc<dyn ObjectStore>) {
    let data = pattern(BLOCK + 10, 21);
    let session = start(&store, "st", Preconditions::NONE, ObjectFacts::default()).await;
    assert_eq!(
        store.upload_status(&session).await.unwrap(),
        UploadStatus::Persisted(0)
    );
    send(&store, &session, 0, &data[..BLOCK], None)
        .await
        .unwrap();
    assert_eq!(
        store.upload_status(&session).await.unwrap(),
        UploadStatus::Persisted(BLOCK as u64)
    );
    assert_eq!(err_kind(store.stat(&k("st")).await), ErrorKind::NotFound);
    let meta = done(
        send(
            &store,
            &session,
            BLOCK,
            &data[BLOCK..],
            Some(crc32c::crc32c(&data)),
        )
        .await
        .unwrap(),
    );
    assert_eq!(meta.size, data.len() as u64);
}

/// A request that is not the last must carry whole 256 KiB blocks.
pub async fn upload_requests_are_whole_blocks(store: Arc<dyn ObjectStore>) {
    let session = start(&store, "bl", Preconditions::NONE, ObjectFacts::default()).await;
    let got = send(&store, &session, 0, &pattern(1000, 22), None).await;
    assert_eq!(err_kind(got), ErrorKind::InvalidArgument);
}

/// Bytes resent below what the service holds (the same ones) are ignored: the upload goes on
/// from its end.
pub async fn upload_ignores_resent_bytes_it_holds(store: Arc<dyn ObjectStore>) {
    let data = pattern(3 * BLOCK, 23);
    let session = start(&store, "rs", Preconditions::NONE, ObjectFacts::default()).await;
    send(&store, &session, 0, &data[..2 * BLOCK], None)
        .await
        .unwrap();
    let held = send(&store, &session, BLOCK, &data[BLOCK..3 * BLOCK], None)
        .await
        .unwrap();
    assert_eq!(held, UploadStatus::Persisted(3 * BLOCK as u64));
    let meta = done(
        send(
            &store,
            &session,
            3 * BLOCK,
            b"",
            Some(crc32c::crc32c(&data)),
        )
        .await
        .unwrap(),
    );
    assert_eq!(meta.size, data.len() as u64);
    assert!(read_all(&store, "rs").await == data);
}

/// Resent bytes that differ from the ones held are refused (what google-cloud-storage 1.21
/// sends after a partial persist, #6683).
pub async fn upload_refuses_resent_bytes_that_differ(store: Arc<dyn ObjectStore>) {
    let data = pattern(2 * BLOCK, 24);
    let session = start(&store, "rd", Preconditions::NONE, ObjectFacts::default()).await;
    send(&store, &session, 0, &data[..BLOCK], None)
        .await
        .unwrap();
    // The chunk's tail sent as if it were the bytes from 0.
    let got = send(&store, &session, 0, &data[BLOCK..], None).await;
    assert_eq!(err_kind(got), ErrorKind::InvalidArgument);
    assert_eq!(err_kind(store.stat(&k("rd")).await), ErrorKind::NotFound);
}

/// A request may not start past the bytes the service holds.
pub async fn upload_refuses_an_offset_past_what_it_holds(store: Arc<dyn ObjectStore>) {
    let data = pattern(2 * BLOCK, 25);
    let session = start(&store, "gap", Preconditions::NONE, ObjectFacts::default()).await;
    let got = send(&store, &session, BLOCK, &data[..BLOCK], None).await;
    assert_eq!(err_kind(got), ErrorKind::InvalidArgument);
}

/// The CRC32C declared at the start is checked at finalize: an upload whose data does not
/// match creates nothing and replaces nothing.
pub async fn upload_checks_the_declared_crc32c(store: Arc<dyn ObjectStore>) {
    let data = pattern(BLOCK + 3, 26);
    let old = put(&store, "cs", b"old").await;
    let facts = ObjectFacts {
        size: Some(data.len() as u64),
        crc32c: Some(crc32c::crc32c(b"other data")),
    };
    let session = start(
        &store,
        "cs",
        Preconditions::generation(old.generation),
        facts,
    )
    .await;
    let got = send(&store, &session, 0, &data, Some(crc32c::crc32c(&data))).await;
    assert_eq!(err_kind(got), ErrorKind::InvalidArgument);
    assert_eq!(read_all(&store, "cs").await, b"old");
}

/// The CRC32C sent with the last request is checked too (the one that covers a stream).
pub async fn upload_checks_the_last_crc32c(store: Arc<dyn ObjectStore>) {
    let data = pattern(BLOCK + 3, 27);
    let session = start(&store, "cl", Preconditions::NONE, ObjectFacts::default()).await;
    send(&store, &session, 0, &data[..BLOCK], None)
        .await
        .unwrap();
    let wrong = crc32c::crc32c(&data) ^ 1;
    let got = send(&store, &session, BLOCK, &data[BLOCK..], Some(wrong)).await;
    assert_eq!(err_kind(got), ErrorKind::InvalidArgument);
    assert_eq!(err_kind(store.stat(&k("cl")).await), ErrorKind::NotFound);
}

/// Preconditions hold at finalize: an object created meanwhile by someone else stays.
pub async fn upload_checks_preconditions_at_finalize(store: Arc<dyn ObjectStore>) {
    let data = pattern(BLOCK + 3, 28);
    let session = start(
        &store,
        "pc",
        Preconditions::create_only(),
        ObjectFacts::default(),
    )
    .await;
    send(&store, &session, 0, &data[..BLOCK], None)
        .await
        .unwrap();
    put(&store, "pc", b"theirs").await;
    let got = send(
        &store,
        &session,
        BLOCK,
        &data[BLOCK..],
        Some(crc32c::crc32c(&data)),
    )
    .await;
    assert_eq!(err_kind(got), ErrorKind::PreconditionFailed);
    assert_eq!(read_all(&store, "pc").await, b"theirs");
}

/// A finalized session answers a status query, and a repeated last request, with the object
/// it created (what recovers a lost answer).
pub async fn finalized_upload_answers_with_its_object(store: Arc<dyn ObjectStore>) {
    let data = pattern(1000, 29);
    let crc = crc32c::crc32c(&data);
    let session = start(
        &store,
        "fin",
        Preconditions::create_only(),
        ObjectFacts::default(),
    )
    .await;
    let meta = done(send(&store, &session, 0, &data, Some(crc)).await.unwrap());
    let again = done(store.upload_status(&session).await.unwrap());
    assert_eq!(again.generation, meta.generation);
    let again = done(send(&store, &session, 0, &data, Some(crc)).await.unwrap());
    assert_eq!(again.generation, meta.generation);
}

/// A cancelled upload creates nothing and its session is gone.
pub async fn cancelled_upload_creates_nothing(store: Arc<dyn ObjectStore>) {
    let data = pattern(BLOCK, 30);
    let session = start(&store, "cx", Preconditions::NONE, ObjectFacts::default()).await;
    send(&store, &session, 0, &data, None).await.unwrap();
    store.cancel_upload(&session).await.unwrap();
    assert_eq!(
        err_kind(store.upload_status(&session).await),
        ErrorKind::NotFound
    );
    let got = send(&store, &session, BLOCK, b"", Some(crc32c::crc32c(&data))).await;
    assert_eq!(err_kind(got), ErrorKind::NotFound);
    assert_eq!(err_kind(store.stat(&k("cx")).await), ErrorKind::NotFound);
}
