//! `RetryStore` over `FaultStore` over `MemStore`, on Tokio's paused clock.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use gcsfs::store::{
    ByteRange, ErrorKind, Fault, FaultStore, Generation, MemStore, MetadataPatch, ObjectKey,
    ObjectStore, Op, Preconditions, RetryConfig, RetryStore, StoreError, StoreResult, WriteAttrs,
    WriteSource,
};

struct Rig {
    mem: Arc<MemStore>,
    faults: Arc<FaultStore>,
    store: RetryStore,
}

fn rig() -> Rig {
    rig_with(RetryConfig::default())
}

fn rig_with(config: RetryConfig) -> Rig {
    let mem = Arc::new(MemStore::new());
    let faults = Arc::new(FaultStore::new(mem.clone()));
    let store = RetryStore::new(faults.clone(), config);
    Rig { mem, faults, store }
}

fn k(name: &str) -> ObjectKey {
    ObjectKey::new(name).unwrap()
}

fn data(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i * 7 % 253) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// Writes straight to the MemStore (no faults, no retries).
async fn put(rig: &Rig, key: &str, bytes: Bytes) -> gcsfs::store::ObjectMeta {
    rig.mem
        .write(
            &k(key),
            WriteSource::Bytes(bytes),
            Preconditions::NONE,
            &WriteAttrs::default(),
        )
        .await
        .unwrap()
}

async fn write(rig: &Rig, key: &str, bytes: &'static [u8], pre: Preconditions) -> StoreResult<()> {
    let source = WriteSource::Bytes(Bytes::from_static(bytes));
    rig.store
        .write(&k(key), source, pre, &WriteAttrs::default())
        .await
        .map(|_| ())
}

async fn read(
    rig: &Rig,
    key: &str,
    generation: Option<Generation>,
    range: ByteRange,
) -> StoreResult<Vec<u8>> {
    let mut stream = rig.store.read(&k(key), generation, range).await?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

/// The `StoreError` an exhausted retry keeps as its source.
fn source_kind(err: &StoreError) -> ErrorKind {
    std::error::Error::source(err)
        .and_then(|s| s.downcast_ref::<StoreError>())
        .map(StoreError::kind)
        .expect("the last failure is kept as the source")
}

#[tokio::test(start_paused = true)]
async fn transient_503_is_retried_until_success() {
    let rig = rig();
    put(&rig, "a", data(10)).await;
    rig.faults.push_n(Op::Stat, Fault::Status(503), 2);
    let meta = rig.store.stat(&k("a")).await.unwrap();
    assert_eq!(meta.size, 10);
    assert_eq!(rig.faults.calls(Op::Stat), 3);
    assert_eq!(rig.mem.calls(Op::Stat), 1);
}

#[tokio::test(start_paused = true)]
async fn rate_limited_429_is_retried_until_success() {
    let rig = rig();
    put(&rig, "a", data(10)).await;
    rig.faults.push_n(Op::List, Fault::Status(429), 3);
    let page = rig.store.list(&Default::default()).await.unwrap();
    assert_eq!(page.objects.len(), 1);
    assert_eq!(rig.faults.calls(Op::List), 4);
}

#[tokio::test(start_paused = true)]
async fn not_found_is_not_retried() {
    let rig = rig();
    let err = rig.store.stat(&k("missing")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(rig.faults.calls(Op::Stat), 1);

    put(&rig, "a", data(10)).await;
    rig.faults.push(Op::Read, Fault::Status(404));
    let err = read(&rig, "a", None, ByteRange::ALL).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(rig.faults.calls(Op::Read), 1);
}

#[tokio::test(start_paused = true)]
async fn precondition_failed_is_not_retried() {
    let rig = rig();
    rig.faults.push(Op::Write, Fault::Status(412));
    let err = write(&rig, "a", b"x", Preconditions::create_only())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PreconditionFailed);
    assert_eq!(rig.faults.calls(Op::Write), 1);
    assert!(rig.mem.keys().is_empty());
}

#[tokio::test(start_paused = true)]
async fn mutations_without_precondition_are_never_retried() {
    let rig = rig();
    put(&rig, "a", data(3)).await;
    let none = Preconditions::NONE;
    let patch: MetadataPatch = [("x".to_owned(), Some("y".to_owned()))].into();
    for op in [Op::Write, Op::Delete, Op::Copy, Op::Patch] {
        rig.faults.push(op, Fault::Status(503));
    }
    let results: Vec<(Op, StoreResult<()>)> = vec![
        (Op::Write, write(&rig, "b", b"x", none).await),
        (Op::Delete, rig.store.delete(&k("a"), none).await),
        (
            Op::Copy,
            rig.store
                .copy(&k("a"), None, &k("c"), none)
                .await
                .map(|_| ()),
        ),
        (
            Op::Patch,
            rig.store
                .patch_metadata(&k("a"), &patch, none)
                .await
                .map(|_| ()),
        ),
    ];
    for (op, result) in results {
        let err = result.expect_err("the injected 503 must surface");
        assert_eq!(err.kind(), ErrorKind::Transient, "{op}");
        assert_eq!(rig.faults.calls(op), 1, "{op} must not be retried");
    }
    assert_eq!(rig.mem.keys(), vec![k("a")], "nothing was changed");
    assert!(rig.mem.get(&k("a")).unwrap().0.metadata.is_empty());
}

#[tokio::test(start_paused = true)]
async fn conditional_write_is_retried() {
    let rig = rig();
    rig.faults.push(Op::Write, Fault::Status(503));
    rig.faults.push(Op::Write, Fault::Status(429));
    write(&rig, "a", b"hello", Preconditions::create_only())
        .await
        .unwrap();
    assert_eq!(rig.faults.calls(Op::Write), 3);
    assert_eq!(&rig.mem.get(&k("a")).unwrap().1[..], b"hello");

    // From a file too: the file is read again for the new attempt.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("staged");
    std::fs::write(&path, b"from a file").unwrap();
    let live = rig.mem.get(&k("a")).unwrap().0.generation;
    rig.faults.push(Op::Write, Fault::Status(503));
    let source = WriteSource::File { path, crc32c: None };
    let meta = rig
        .store
        .write(
            &k("a"),
            source,
            Preconditions::generation(live),
            &WriteAttrs::default(),
        )
        .await
        .unwrap();
    assert_eq!(rig.faults.calls(Op::Write), 5);
    assert_eq!(meta.size, 11);
    assert_eq!(&rig.mem.get(&k("a")).unwrap().1[..], b"from a file");
}

#[tokio::test(start_paused = true)]
async fn a_stream_write_resumes_after_a_failed_request() {
    // (Every path and fault: tests/upload_faults.rs.)
    let rig = rig();
    rig.faults.push(Op::UploadChunk, Fault::Status(503));
    let chunks: Vec<StoreResult<Bytes>> = vec![Ok(Bytes::from_static(b"abc"))];
    let source = WriteSource::Stream(futures::stream::iter(chunks).boxed());
    let meta = rig
        .store
        .write(
            &k("a"),
            source,
            Preconditions::create_only(),
            &WriteAttrs::default(),
        )
        .await
        .unwrap();
    assert_eq!(meta.size, 3);
    assert_eq!(rig.faults.calls(Op::UploadChunk), 2);
    assert_eq!(rig.faults.calls(Op::UploadStatus), 1);
    assert_eq!(
        rig.faults.calls(Op::Write),
        0,
        "streams use a resumable session"
    );
    assert_eq!(&rig.mem.get(&k("a")).unwrap().1[..], b"abc");
}

#[tokio::test(start_paused = true)]
async fn conditional_mutations_are_retried() {
    let rig = rig();
    let a = put(&rig, "a", data(3)).await;
    for op in [Op::Copy, Op::Patch, Op::Delete] {
        rig.faults.push(op, Fault::Status(503));
    }
    let create = Preconditions::create_only();
    let copied = rig
        .store
        .copy(&k("a"), None, &k("c"), create)
        .await
        .unwrap();
    assert_eq!(copied.size, 3);
    let patch: MetadataPatch = [("x".to_owned(), Some("y".to_owned()))].into();
    let meta_match = Preconditions {
        if_generation_match: None,
        if_metageneration_match: Some(a.metageneration),
    };
    rig.store
        .patch_metadata(&k("a"), &patch, meta_match)
        .await
        .unwrap();
    rig.store
        .delete(&k("c"), Preconditions::generation(copied.generation))
        .await
        .unwrap();
    for op in [Op::Copy, Op::Patch, Op::Delete] {
        assert_eq!(rig.faults.calls(op), 2, "{op}");
    }
    assert_eq!(rig.mem.keys(), vec![k("a")]);
}

#[tokio::test(start_paused = true)]
async fn a_stall_past_the_deadline_ends_in_transient() {
    let rig = rig();
    put(&rig, "a", data(3)).await;
    rig.faults.push_n(Op::Stat, Fault::Stall, 100);
    let started = tokio::time::Instant::now();
    let err = rig.store.stat(&k("a")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert_eq!(source_kind(&err), ErrorKind::Transient);
    // 30 s stall timeout, a backoff of at most 100 ms, a second 30 s stall: the 60 s deadline
    // has passed, so no third attempt starts.
    assert_eq!(rig.faults.calls(Op::Stat), 2);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(60), "{elapsed:?}");
    assert!(elapsed <= Duration::from_secs(61), "{elapsed:?}");
}

#[tokio::test(start_paused = true)]
async fn exhausted_attempts_end_in_transient_with_the_last_error() {
    let rig = rig_with(RetryConfig {
        max_attempts: 10,
        ..RetryConfig::default()
    });
    put(&rig, "a", data(3)).await;
    rig.faults.push_n(Op::Stat, Fault::Status(429), 50);
    let err = rig.store.stat(&k("a")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert_eq!(source_kind(&err), ErrorKind::RateLimited);
    // Backoff bounds 0.1+0.2+…+5 s stay well inside the deadline: max_attempts is the limit.
    // (By default it is 100, and the deadline ends retries first.)
    assert_eq!(rig.faults.calls(Op::Stat), 10);
}

#[tokio::test(start_paused = true)]
async fn write_time_limit_grows_with_size() {
    let rig = rig();
    rig.faults
        .push(Op::Write, Fault::Latency(Duration::from_secs(40)));
    // 10 bytes: limit 30 s + ~0 s, so the 40 s write is abandoned (and not retried).
    let err = write(&rig, "small", b"0123456789", Preconditions::NONE)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert_eq!(rig.faults.calls(Op::Write), 1);
    assert!(rig.mem.keys().is_empty());
    // 20 MiB at the 1 MiB/s floor: limit 30 s + 20 s, so the 40 s request completes (data
    // that large goes in a resumable session).
    rig.faults
        .push(Op::UploadChunk, Fault::Latency(Duration::from_secs(40)));
    let big = data(20 * 1024 * 1024);
    rig.store
        .write(
            &k("big"),
            WriteSource::Bytes(big),
            Preconditions::NONE,
            &WriteAttrs::default(),
        )
        .await
        .unwrap();
    assert_eq!(rig.faults.calls(Op::UploadChunk), 1);
}

#[tokio::test(start_paused = true)]
async fn read_open_is_retried() {
    let rig = rig();
    put(&rig, "a", data(100)).await;
    rig.faults.push(Op::Read, Fault::Status(503));
    rig.faults.push(Op::Read, Fault::Stall);
    let got = read(&rig, "a", None, ByteRange::ALL).await.unwrap();
    assert_eq!(got, &data(100)[..]);
    assert_eq!(rig.faults.calls(Op::Read), 3);
}

#[tokio::test(start_paused = true)]
async fn pinned_read_reset_mid_stream_resumes_byte_identical() {
    let rig = rig();
    let content = data(1024 * 1024 + 17);
    let meta = put(&rig, "a", content.clone()).await;
    rig.faults.push(
        Op::Read,
        Fault::ResetMidStream {
            after_bytes: 300_000,
        },
    );
    rig.faults
        .push(Op::Read, Fault::ResetMidStream { after_bytes: 1 });
    rig.faults.push(Op::Read, Fault::Status(503));
    rig.faults.push(
        Op::Read,
        Fault::StallMidStream {
            after_bytes: 100_000,
        },
    );
    let got = read(&rig, "a", Some(meta.generation), ByteRange::ALL)
        .await
        .unwrap();
    assert!(got == content, "resumed data differs");
    assert_eq!(rig.faults.calls(Op::Read), 5);

    // A ranged read resumes inside its range.
    rig.faults
        .push(Op::Read, Fault::ResetMidStream { after_bytes: 1000 });
    let range = ByteRange::segment(100, 500_000);
    let got = read(&rig, "a", Some(meta.generation), range).await.unwrap();
    assert!(got == content[100..500_100], "resumed range differs");
    assert_eq!(rig.faults.calls(Op::Read), 7);
}

#[tokio::test(start_paused = true)]
async fn unpinned_read_reset_mid_stream_surfaces_the_error() {
    let rig = rig();
    put(&rig, "a", data(1000)).await;
    rig.faults
        .push(Op::Read, Fault::ResetMidStream { after_bytes: 4 });
    let mut stream = rig.store.read(&k("a"), None, ByteRange::ALL).await.unwrap();
    assert_eq!(&stream.next().await.unwrap().unwrap()[..], &data(4)[..]);
    let err = stream.next().await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert!(
        stream.next().await.is_none(),
        "the stream ends after its error"
    );
    assert_eq!(rig.faults.calls(Op::Read), 1);
}

#[tokio::test(start_paused = true)]
async fn a_pinned_read_that_never_progresses_gives_up() {
    let rig = rig_with(RetryConfig {
        max_attempts: 10,
        ..RetryConfig::default()
    });
    let meta = put(&rig, "a", data(1000)).await;
    rig.faults
        .push_n(Op::Read, Fault::ResetMidStream { after_bytes: 0 }, 100);
    let err = read(&rig, "a", Some(meta.generation), ByteRange::ALL)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert_eq!(
        rig.faults.calls(Op::Read),
        10,
        "max_attempts bounds the resumes"
    );
}

#[tokio::test(start_paused = true)]
async fn a_pinned_read_of_a_replaced_generation_stops_resuming() {
    let rig = rig();
    let meta = put(&rig, "a", data(1000)).await;
    rig.faults
        .push(Op::Read, Fault::ResetMidStream { after_bytes: 10 });
    let mut stream = rig
        .store
        .read(&k("a"), Some(meta.generation), ByteRange::ALL)
        .await
        .unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap().len(), 10);
    put(&rig, "a", data(5)).await; // replaced while the reader was between attempts
    let err = stream.next().await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(rig.faults.calls(Op::Read), 2);
}

#[tokio::test(start_paused = true)]
async fn a_lost_answer_to_a_create_only_write_is_recognised() {
    // The first attempt committed, its answer was lost; the retry fails its precondition on
    // the object the first attempt created, which holds exactly what was written: success.
    let rig = rig();
    rig.faults.push(Op::Write, Fault::StatusAfterCommit(503));
    write(&rig, "a", b"mine", Preconditions::create_only())
        .await
        .unwrap();
    assert_eq!(rig.faults.calls(Op::Write), 2);
    assert_eq!(rig.faults.calls(Op::Stat), 1);
    assert_eq!(&rig.mem.get(&k("a")).unwrap().1[..], b"mine");
    // Someone else's object (other bytes) is a real conflict.
    put(&rig, "b", data(4)).await;
    let err = write(&rig, "b", b"mine", Preconditions::create_only())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PreconditionFailed);
    assert_eq!(&rig.mem.get(&k("b")).unwrap().1[..], &data(4)[..]);
}
