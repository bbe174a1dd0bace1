//! Every upload path of `RetryStore::write` through every fault a GCS upload meets, on
//! `MemStore`'s model of resumable sessions: the write succeeds and the bucket holds exactly
//! the bytes written, or it fails (within the deadline) and the bucket holds no bytes nobody
//! wrote.
//!
//! Paths: a small object (one multipart request), large data at hand (a resumable session
//! resumed from any offset: memory or a staging file), and a stream (a resumable session that
//! keeps only the bytes the service has not acknowledged). Faults: a 503 or a reset on a
//! request, a request the service kept only part of, a stall, the answer to the last request
//! lost after the object was created, a 412 at finalize, another writer winning the race, a
//! session the service lost, an outage longer than the deadline, and a service that finalizes
//! too early (as the emulator does on a status query).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use gcsfs::store::{
    ByteRange, ByteStream, ChunkData, ErrorKind, Fault, FaultStore, Generation, ListPage,
    ListRequest, MemStore, MetadataPatch, ObjectFacts, ObjectKey, ObjectMeta, ObjectStore, Op,
    Preconditions, RetryConfig, RetryStore, STREAM_CHUNK, StoreError, StoreResult, UploadSession,
    UploadStatus, WriteAttrs, WriteSource,
};

const MIB: usize = 1 << 20;

/// Deterministic bytes, different for each `seed`.
fn data(seed: u8, len: usize) -> Bytes {
    let mut x = u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out.into()
}

fn key() -> ObjectKey {
    ObjectKey::new("dir/file").unwrap()
}

/// How the data reaches `write`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path_ {
    /// 100 KiB in memory: one multipart request.
    Small,
    /// 20 MiB in memory: a resumable session, one request from any offset.
    Large,
    /// 20 MiB produced in 128 KiB pieces: a resumable session in 8 MiB requests.
    Stream,
}

use Path_::*;

const ALL_PATHS: [Path_; 3] = [Small, Large, Stream];

impl Path_ {
    fn len(self) -> usize {
        match self {
            Small => 100 * 1024,
            Large | Stream => 20 * MIB,
        }
    }

    fn source(self, bytes: &Bytes) -> WriteSource {
        match self {
            Small | Large => WriteSource::Bytes(bytes.clone()),
            Stream => {
                let pieces: Vec<StoreResult<Bytes>> = (0..bytes.len())
                    .step_by(128 * 1024)
                    .map(|at| Ok(bytes.slice(at..(at + 128 * 1024).min(bytes.len()))))
                    .collect();
                WriteSource::Stream(futures::stream::iter(pieces).boxed())
            }
        }
    }

    /// The operation that carries the data.
    fn data_op(self) -> Op {
        match self {
            Small => Op::Write,
            Large | Stream => Op::UploadChunk,
        }
    }

    /// How many data requests a fault-free upload makes (the last one finalizes).
    fn requests(self) -> usize {
        match self {
            Small | Large => 1,
            // 8 + 8 + 4 MiB.
            Stream => 3,
        }
    }
}

struct Rig {
    mem: Arc<MemStore>,
    faults: Arc<FaultStore>,
    store: RetryStore,
}

fn rig() -> Rig {
    rig_over(|mem| mem)
}

/// A rig whose `FaultStore` wraps `wrap(mem)`.
fn rig_over(wrap: impl FnOnce(Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore>) -> Rig {
    let mem = Arc::new(MemStore::new());
    let faults = Arc::new(FaultStore::new(wrap(mem.clone())));
    let store = RetryStore::new(faults.clone(), RetryConfig::default());
    Rig { mem, faults, store }
}

impl Rig {
    async fn write(
        &self,
        path: Path_,
        bytes: &Bytes,
        pre: Preconditions,
    ) -> StoreResult<ObjectMeta> {
        self.store
            .write(&key(), path.source(bytes), pre, &WriteAttrs::default())
            .await
    }

    /// The object's bytes in the bucket, if any.
    fn stored(&self) -> Option<Bytes> {
        self.mem.get(&key()).map(|(_, b)| b)
    }

    /// Queues `fault` for the `n`-th (0-based) data request from now.
    fn fault_data_request(&self, path: Path_, n: usize, fault: Fault) {
        self.faults.push_n(path.data_op(), Fault::Pass, n);
        self.faults.push(path.data_op(), fault);
    }
}

/// A successful write: the bucket holds exactly `bytes`, as the answer says.
fn assert_written(rig: &Rig, result: StoreResult<ObjectMeta>, bytes: &Bytes, what: &str) {
    let meta = result.unwrap_or_else(|e| panic!("{what}: write failed: {e:?}"));
    let stored = rig.stored().unwrap_or_else(|| panic!("{what}: no object"));
    assert!(stored == *bytes, "{what}: the object holds other bytes");
    assert_eq!(meta.size, bytes.len() as u64, "{what}");
    assert_eq!(meta.crc32c, Some(crc32c::crc32c(bytes)), "{what}");
    assert_eq!(rig.mem.open_uploads(), 0, "{what}: a session was left open");
}

#[tokio::test(start_paused = true)]
async fn a_503_on_a_data_request_is_resumed() {
    for path in ALL_PATHS {
        for n in 0..path.requests() {
            let rig = rig();
            let bytes = data(1, path.len());
            rig.fault_data_request(path, n, Fault::Status(503));
            let r = rig.write(path, &bytes, Preconditions::create_only()).await;
            assert_written(&rig, r, &bytes, &format!("{path:?}, request {n}"));
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_request_kept_in_part_resumes_from_what_the_service_holds() {
    // The service keeps 256 KiB (or 3 MiB) of a request, then the connection breaks. The next
    // request must start at exactly that offset with exactly those bytes: MemStore refuses
    // resent bytes that differ from the ones it holds, and the CRC32C at finalize covers all.
    for path in [Large, Stream] {
        for n in 0..path.requests() {
            for persist in [256 * 1024, 3 * MIB as u64 + 1] {
                let rig = rig();
                let bytes = data(2, path.len());
                rig.fault_data_request(path, n, Fault::PartialChunk { persist });
                let r = rig.write(path, &bytes, Preconditions::create_only()).await;
                let what = format!("{path:?}, request {n}, {persist} bytes kept");
                assert_written(&rig, r, &bytes, &what);
                assert!(
                    rig.faults.calls(Op::UploadStatus) >= 1,
                    "{what}: after a broken request the status must be asked"
                );
            }
        }
    }
    // A small upload is one request: a reset mid-way is retried whole.
    let rig = rig();
    let bytes = data(2, Small.len());
    rig.faults
        .push(Op::Write, Fault::ResetMidStream { after_bytes: 10 });
    let r = rig.write(Small, &bytes, Preconditions::create_only()).await;
    assert_written(&rig, r, &bytes, "Small, reset");
}

#[tokio::test(start_paused = true)]
async fn a_stalled_request_is_abandoned_and_resumed() {
    for path in ALL_PATHS {
        let rig = rig();
        let bytes = data(3, path.len());
        rig.fault_data_request(path, path.requests() - 1, Fault::Stall);
        let r = rig.write(path, &bytes, Preconditions::create_only()).await;
        assert_written(&rig, r, &bytes, &format!("{path:?}"));
    }
}

#[tokio::test(start_paused = true)]
async fn the_lost_answer_to_the_last_request_is_recovered() {
    // The service created the object, the answer never came back: the status says it is
    // done, or (one request, retried whole) the retry meets its own object, recognised by size
    // and CRC32C.
    for path in ALL_PATHS {
        for pre in [
            Preconditions::create_only(),
            Preconditions::generation(Generation(0)),
        ] {
            let rig = rig();
            let bytes = data(4, path.len());
            rig.fault_data_request(path, path.requests() - 1, Fault::StatusAfterCommit(503));
            let r = rig.write(path, &bytes, pre).await;
            assert_written(&rig, r, &bytes, &format!("{path:?}"));
        }
    }
    // Over an existing generation: a retry's 412 with the old generation still live (the
    // first attempt did not land after all) is a real conflict.
    let rig = rig();
    let old = data(40, 10);
    let meta = rig.write(Small, &old, Preconditions::NONE).await.unwrap();
    let bytes = data(4, Small.len());
    rig.faults.push(Op::Write, Fault::Status(503));
    rig.faults.push(Op::Write, Fault::Status(412));
    let err = rig
        .write(Small, &bytes, Preconditions::generation(meta.generation))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PreconditionFailed);
    assert!(rig.stored().unwrap() == old);
}

#[tokio::test(start_paused = true)]
async fn a_write_that_gave_up_after_its_object_was_created_is_recognised_when_repeated() {
    // The last request created the object, its answer was lost, and every status query failed
    // until the deadline: the call fails. The filesystem keeps the data and writes it again
    // later, still based on the old generation: that second call fails its precondition on
    // the object the first one created, which holds exactly these bytes — it is ours. (A
    // stream is never written twice: its bytes are gone with its failed upload.)
    for path in [Small, Large] {
        let rig = rig();
        let old = data(41, 1000);
        let base = rig.write(Small, &old, Preconditions::NONE).await.unwrap();
        let bytes = data(14, path.len());
        let pre = Preconditions::generation(base.generation);
        rig.fault_data_request(path, path.requests() - 1, Fault::StatusAfterCommit(503));
        rig.faults
            .push_n(Op::UploadStatus, Fault::Status(503), 1000);
        rig.faults.push_n(Op::Write, Fault::Status(503), 1000);
        let first = rig.write(path, &bytes, pre).await;
        assert_eq!(first.unwrap_err().kind(), ErrorKind::Transient, "{path:?}");
        assert!(
            rig.stored().unwrap() == bytes,
            "{path:?}: the first call's object"
        );
        rig.faults.clear();
        let again = rig.write(path, &bytes, pre).await;
        assert_written(&rig, again, &bytes, &format!("{path:?}, repeated"));
    }
}

#[tokio::test(start_paused = true)]
async fn a_412_at_finalize_fails_and_creates_nothing() {
    for path in ALL_PATHS {
        let rig = rig();
        let bytes = data(5, path.len());
        rig.fault_data_request(path, path.requests() - 1, Fault::Status(412));
        let err = rig
            .write(path, &bytes, Preconditions::create_only())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PreconditionFailed, "{path:?}");
        assert!(rig.stored().is_none(), "{path:?}");
        assert_eq!(rig.mem.open_uploads(), 0, "{path:?}");
    }
}

/// A store whose first data request lets another writer create the object first.
#[derive(Debug)]
struct Racer {
    inner: Arc<dyn ObjectStore>,
    theirs: Bytes,
    raced: Mutex<bool>,
}

impl Racer {
    async fn race(&self) {
        let first = std::mem::replace(&mut *self.raced.lock().unwrap(), true);
        if !first {
            self.inner
                .write(
                    &key(),
                    WriteSource::Bytes(self.theirs.clone()),
                    Preconditions::NONE,
                    &WriteAttrs::default(),
                )
                .await
                .unwrap();
        }
    }
}

#[tokio::test(start_paused = true)]
async fn another_writer_winning_the_race_is_never_overwritten() {
    for path in ALL_PATHS {
        let theirs = data(60, 1000);
        let theirs2 = theirs.clone();
        let rig = rig_over(move |mem| {
            Arc::new(Delegate {
                inner: mem.clone(),
                hook: Hook::Race(Racer {
                    inner: mem,
                    theirs: theirs2,
                    raced: Mutex::new(false),
                }),
            })
        });
        let bytes = data(6, path.len());
        let err = rig
            .write(path, &bytes, Preconditions::create_only())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PreconditionFailed, "{path:?}");
        assert!(
            rig.stored().unwrap() == theirs,
            "{path:?}: theirs must stay"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_lost_session_starts_over_when_every_byte_is_at_hand() {
    // Large: the data is at hand, the write is conditional: a new session, and success.
    let rig1 = rig();
    let bytes = data(7, Large.len());
    rig1.faults.push(Op::UploadChunk, Fault::Status(404));
    let r = rig1
        .write(Large, &bytes, Preconditions::create_only())
        .await;
    assert_written(&rig1, r, &bytes, "Large");
    assert_eq!(rig1.faults.calls(Op::StartUpload), 2);

    // Stream, lost before the service acknowledged anything: every byte is still kept.
    let rig1 = rig();
    let bytes = data(7, Stream.len());
    rig1.faults.push(Op::UploadChunk, Fault::Status(404));
    let r = rig1
        .write(Stream, &bytes, Preconditions::create_only())
        .await;
    assert_written(&rig1, r, &bytes, "Stream, first request");

    // Stream, lost after the first 8 MiB were acknowledged and dropped: it cannot start over.
    let rig2 = rig();
    rig2.fault_data_request(Stream, 1, Fault::Status(404));
    let err = rig2
        .write(Stream, &bytes, Preconditions::create_only())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(rig2.stored().is_none());

    // An unconditional write never starts over (a second write could overwrite another's).
    let rig3 = rig();
    let bytes = data(7, Large.len());
    rig3.faults.push(Op::UploadChunk, Fault::Status(404));
    let err = rig3
        .write(Large, &bytes, Preconditions::NONE)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(rig3.faults.calls(Op::StartUpload), 1);
    assert!(rig3.stored().is_none());
}

#[tokio::test(start_paused = true)]
async fn sessions_lost_again_and_again_end_at_the_deadline() {
    // Each session takes the first 4 MiB (progress, the first time only) and is then lost:
    // starting over re-sends bytes already sent once, which earns no fresh deadline, so the
    // upload gives up by the deadline (or the session cap) instead of looping.
    let rig = rig();
    let bytes = data(15, Large.len());
    for _ in 0..1000 {
        rig.faults.push(
            Op::UploadChunk,
            Fault::PartialChunk {
                persist: 4 * MIB as u64,
            },
        );
        rig.faults.push(Op::UploadStatus, Fault::Status(404));
    }
    let started = tokio::time::Instant::now();
    let err = rig
        .write(Large, &bytes, Preconditions::create_only())
        .await
        .unwrap_err();
    // Given up (attempts or deadline), or out of sessions with the session's own error.
    assert!(
        matches!(err.kind(), ErrorKind::Transient | ErrorKind::NotFound),
        "{err:?}"
    );
    assert!(
        started.elapsed() <= Duration::from_secs(60 + 5),
        "{:?}",
        started.elapsed()
    );
    assert!(rig.faults.calls(Op::StartUpload) <= u64::from(gcsfs::store::MAX_SESSIONS));
    assert!(rig.stored().is_none());
    assert_eq!(rig.mem.open_uploads(), 0);
}

#[tokio::test(start_paused = true)]
async fn status_queries_are_retried_too() {
    for path in [Large, Stream] {
        let rig = rig();
        let bytes = data(8, path.len());
        rig.fault_data_request(
            path,
            0,
            Fault::PartialChunk {
                persist: MIB as u64,
            },
        );
        rig.faults.push_n(Op::UploadStatus, Fault::Status(503), 3);
        let r = rig.write(path, &bytes, Preconditions::create_only()).await;
        assert_written(&rig, r, &bytes, &format!("{path:?}"));
        assert_eq!(rig.faults.calls(Op::UploadStatus), 4, "{path:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_outage_fails_within_the_deadline_and_creates_nothing() {
    // Every call fails (503 or a stall) for longer than the 60 s deadline.
    for path in ALL_PATHS {
        for fault in [Fault::Status(503), Fault::Stall] {
            let rig = rig();
            let bytes = data(9, path.len());
            for op in Op::ALL {
                rig.faults.push_n(op, fault, 1000);
            }
            let started = tokio::time::Instant::now();
            let err = rig
                .write(path, &bytes, Preconditions::create_only())
                .await
                .unwrap_err();
            let took = started.elapsed();
            assert_eq!(err.kind(), ErrorKind::Transient, "{path:?} {fault:?}");
            assert!(rig.stored().is_none(), "{path:?} {fault:?}");
            // Deadline 60 s; no attempt starts after it, and one already running is cut at
            // its limit (30 s stall timeout + 20 s for 20 MiB at 1 MiB/s).
            let bound = Duration::from_secs(60 + 30 + 20 + 5);
            assert!(took <= bound, "{path:?} {fault:?}: took {took:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_outage_after_progress_gets_a_fresh_deadline_only_from_acknowledged_bytes() {
    // The first 8 MiB go through, then the service fails for 10 minutes: the upload gives up
    // about a deadline after the last acknowledged byte, not after 10 minutes.
    let rig = rig();
    let bytes = data(10, Stream.len());
    rig.faults.push(Op::UploadChunk, Fault::Pass);
    for op in [Op::UploadChunk, Op::UploadStatus] {
        rig.faults.push_n(op, Fault::Status(503), 10_000);
    }
    let started = tokio::time::Instant::now();
    let err = rig
        .write(Stream, &bytes, Preconditions::create_only())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert!(
        started.elapsed() <= Duration::from_secs(70),
        "{:?}",
        started.elapsed()
    );
    assert!(rig.stored().is_none());
}

/// Delegates to `inner`, with one twist (`hook`).
#[derive(Debug)]
struct Delegate {
    inner: Arc<dyn ObjectStore>,
    hook: Hook,
}

#[derive(Debug)]
enum Hook {
    /// Another writer creates the object when the first data request arrives.
    Race(Racer),
    /// A status query finalizes the upload with the bytes held, as fake-gcs-server does.
    FinalizeEarly(Mutex<HashMap<String, BytesMut>>),
}

async fn chunk_bytes(data: &ChunkData) -> Bytes {
    match data {
        ChunkData::Memory(parts) => {
            let mut b = BytesMut::new();
            for p in parts {
                b.extend_from_slice(p);
            }
            b.freeze()
        }
        ChunkData::File { path, offset, len } => {
            let all = tokio::fs::read(path).await.unwrap();
            Bytes::from(all).slice(*offset as usize..(*offset + *len) as usize)
        }
    }
}

fn copy(data: &ChunkData) -> ChunkData {
    match data {
        ChunkData::Memory(parts) => ChunkData::Memory(parts.clone()),
        ChunkData::File { path, offset, len } => ChunkData::File {
            path: path.clone(),
            offset: *offset,
            len: *len,
        },
    }
}

#[async_trait]
impl ObjectStore for Delegate {
    async fn stat(&self, key: &ObjectKey) -> StoreResult<ObjectMeta> {
        self.inner.stat(key).await
    }
    async fn list(&self, request: &ListRequest) -> StoreResult<ListPage> {
        self.inner.list(request).await
    }
    async fn read(
        &self,
        key: &ObjectKey,
        generation: Option<Generation>,
        range: ByteRange,
    ) -> StoreResult<ByteStream> {
        self.inner.read(key, generation, range).await
    }
    async fn write(
        &self,
        key: &ObjectKey,
        source: WriteSource,
        preconditions: Preconditions,
        attrs: &WriteAttrs,
    ) -> StoreResult<ObjectMeta> {
        if let Hook::Race(r) = &self.hook {
            r.race().await;
        }
        self.inner.write(key, source, preconditions, attrs).await
    }
    async fn delete(&self, key: &ObjectKey, preconditions: Preconditions) -> StoreResult<()> {
        self.inner.delete(key, preconditions).await
    }
    async fn copy(
        &self,
        src: &ObjectKey,
        src_generation: Option<Generation>,
        dst: &ObjectKey,
        preconditions: Preconditions,
    ) -> StoreResult<ObjectMeta> {
        self.inner
            .copy(src, src_generation, dst, preconditions)
            .await
    }
    async fn patch_metadata(
        &self,
        key: &ObjectKey,
        patch: &MetadataPatch,
        preconditions: Preconditions,
    ) -> StoreResult<ObjectMeta> {
        self.inner.patch_metadata(key, patch, preconditions).await
    }
    async fn start_upload(
        &self,
        key: &ObjectKey,
        preconditions: Preconditions,
        attrs: &WriteAttrs,
        facts: ObjectFacts,
    ) -> StoreResult<UploadSession> {
        self.inner
            .start_upload(key, preconditions, attrs, facts)
            .await
    }
    async fn upload_chunk(
        &self,
        session: &UploadSession,
        offset: u64,
        data: ChunkData,
        last: Option<u32>,
    ) -> StoreResult<UploadStatus> {
        match &self.hook {
            Hook::Race(r) => r.race().await,
            Hook::FinalizeEarly(held) => {
                let bytes = chunk_bytes(&data).await;
                let answer = self
                    .inner
                    .upload_chunk(session, offset, copy(&data), last)
                    .await;
                if let Ok(UploadStatus::Persisted(n)) = &answer {
                    let mut held = held.lock().unwrap();
                    let buf = held.entry(session.id().to_owned()).or_default();
                    let have = buf.len() as u64;
                    if *n > have {
                        let from = (have - offset) as usize;
                        buf.extend_from_slice(&bytes[from..from + (*n - have) as usize]);
                    }
                }
                return answer;
            }
        }
        self.inner.upload_chunk(session, offset, data, last).await
    }
    async fn upload_status(&self, session: &UploadSession) -> StoreResult<UploadStatus> {
        if let Hook::FinalizeEarly(held) = &self.hook {
            // Create the object from the bytes held, checking nothing (fake-gcs-server forgets
            // the checksum declared at the start once a request was answered 308).
            let data = held
                .lock()
                .unwrap()
                .remove(session.id())
                .unwrap_or_default()
                .freeze();
            self.inner.cancel_upload(session).await?;
            let meta = self
                .inner
                .write(
                    session.key(),
                    WriteSource::Bytes(data),
                    Preconditions::NONE,
                    &WriteAttrs::default(),
                )
                .await?;
            return Ok(UploadStatus::Done(meta));
        }
        self.inner.upload_status(session).await
    }
    async fn cancel_upload(&self, session: &UploadSession) -> StoreResult<()> {
        self.inner.cancel_upload(session).await
    }
}

fn early_rig() -> Rig {
    rig_over(|mem| {
        Arc::new(Delegate {
            inner: mem,
            hook: Hook::FinalizeEarly(Mutex::new(HashMap::new())),
        })
    })
}

#[tokio::test(start_paused = true)]
async fn an_object_finalized_too_early_is_deleted_and_never_left_behind() {
    // Data at hand: the short object is deleted (generation precondition), the upload starts
    // over (create-only now, the object being gone) and succeeds.
    let rig = early_rig();
    let bytes = data(11, Large.len());
    rig.faults.push(
        Op::UploadChunk,
        Fault::PartialChunk {
            persist: 2 * MIB as u64,
        },
    );
    let r = rig.write(Large, &bytes, Preconditions::create_only()).await;
    assert_written(&rig, r, &bytes, "Large");
    assert_eq!(
        rig.faults.calls(Op::Delete),
        1,
        "the short object was deleted"
    );

    // A stream whose early bytes are gone: the short object is deleted and the write fails.
    let rig = early_rig();
    let bytes = data(11, Stream.len());
    rig.fault_data_request(Stream, 1, Fault::Status(503));
    let err = rig
        .write(Stream, &bytes, Preconditions::create_only())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient);
    assert!(rig.stored().is_none(), "the short object must not stay");
    assert_eq!(rig.faults.calls(Op::Delete), 1);
}

#[tokio::test(start_paused = true)]
async fn a_stream_whose_producer_fails_creates_nothing() {
    for fail_at in [0usize, 3 * MIB, 9 * MIB, 20 * MIB] {
        let rig = rig();
        let bytes = data(12, 20 * MIB);
        let mut pieces: Vec<StoreResult<Bytes>> = (0..fail_at)
            .step_by(MIB)
            .map(|at| Ok(bytes.slice(at..at + MIB)))
            .collect();
        pieces.push(Err(StoreError::new(ErrorKind::Other, "producer failed")));
        let source = WriteSource::Stream(futures::stream::iter(pieces).boxed());
        let err = rig
            .store
            .write(
                &key(),
                source,
                Preconditions::create_only(),
                &WriteAttrs::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Other, "at {fail_at}");
        assert!(rig.stored().is_none(), "at {fail_at}");
        assert_eq!(
            rig.mem.open_uploads(),
            0,
            "at {fail_at}: the session is cancelled"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_stream_holds_at_most_two_requests_of_unacknowledged_bytes() {
    // The producer is polled only while fewer than two requests' worth are kept: with the
    // service stalled on the first request, the producer is never asked for more than
    // 2 × STREAM_CHUNK bytes.
    let rig = rig();
    rig.faults.push(Op::UploadChunk, Fault::Stall);
    let taken = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = taken.clone();
    let source = futures::stream::repeat_with(move || {
        counter.fetch_add(MIB as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(Bytes::from(vec![7u8; MIB]))
    })
    .take(64)
    .boxed();
    let (k, attrs) = (key(), WriteAttrs::default());
    let write = rig.store.write(
        &k,
        WriteSource::Stream(source),
        Preconditions::create_only(),
        &attrs,
    );
    // Long enough for the producer to have run ahead if nothing held it back, shorter than
    // the stall limit.
    let _ = tokio::time::timeout(Duration::from_secs(5), write).await;
    let taken = taken.load(std::sync::atomic::Ordering::Relaxed);
    assert!(taken <= 2 * STREAM_CHUNK, "{taken} bytes taken");
    assert!(taken >= STREAM_CHUNK, "{taken} bytes taken");
}

#[tokio::test]
async fn a_large_staging_file_resumes_where_the_service_stopped() {
    // Real time (file I/O runs on blocking threads, which a paused clock would skip past), with
    // short backoffs.
    let config = RetryConfig {
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        ..RetryConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("staged");
    let bytes = data(13, 20 * MIB);
    std::fs::write(&file, &bytes).unwrap();
    for fault in [
        Fault::Status(503),
        Fault::PartialChunk {
            persist: 5 * MIB as u64,
        },
        Fault::StatusAfterCommit(503),
    ] {
        let mem = Arc::new(MemStore::new());
        let faults = Arc::new(FaultStore::new(mem.clone()));
        let store = RetryStore::new(faults.clone(), config.clone());
        faults.push(Op::UploadChunk, fault);
        let meta = write_file(&store, &file, None).await.unwrap();
        assert_eq!(meta.size, bytes.len() as u64, "{fault:?}");
        assert!(mem.get(&key()).unwrap().1 == bytes, "{fault:?}");
    }
    // A staging file that does not match the CRC32C given for it: the service refuses it.
    let mem = Arc::new(MemStore::new());
    let store = RetryStore::new(mem.clone(), config.clone());
    let wrong = crc32c::crc32c(b"something else");
    assert!(write_file(&store, &file, Some(wrong)).await.is_err());
    assert!(mem.get(&key()).is_none());
}

async fn write_file(
    store: &RetryStore,
    file: &Path,
    crc32c: Option<u32>,
) -> StoreResult<ObjectMeta> {
    store
        .write(
            &key(),
            WriteSource::File {
                path: file.to_path_buf(),
                crc32c,
            },
            Preconditions::create_only(),
            &WriteAttrs::default(),
        )
        .await
}
