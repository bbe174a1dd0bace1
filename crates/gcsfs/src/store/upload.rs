//! Uploads that cannot finalize wrong bytes: the one resumable-upload driver, over the session
//! calls of any [`ObjectStore`] (GCS's JSON API, or `MemStore`'s model of it).
//!
//! Why gcsfs drives resumable uploads itself instead of leaving it to google-cloud-storage:
//! after a request the service kept only part of, version 1.21 resends the wrong bytes
//! (googleapis/google-cloud-rust #6683, #6684), and its retries sleep without a bound of ours.
//! Here:
//!
//! - The service is told the CRC32C of the whole object before it finalizes: at the start when
//!   the data is at hand ([`ObjectFacts`]), and always with the last request (computed while
//!   the bytes pass, for a stream). A wrong byte makes it refuse the upload.
//! - Bytes the service has not acknowledged are kept until it has: a stream keeps at most the
//!   request in flight and the next one ([`STREAM_CHUNK`] each); data at hand (memory, a
//!   staging file) can be sent again from any offset.
//! - After a failed request the driver asks the service what it holds (the status query) and
//!   goes on from exactly there, dropping exactly the head it holds. A finalized answer is
//!   final. A session the service lost is started over when the data is at hand and the write
//!   is conditional (at most [`MAX_SESSIONS`] sessions, within the deadline).
//! - Every object the service reports created is checked against what was sent (size and
//!   CRC32C, and that the last request was sent at all). One that does not match — which only
//!   a service that finalizes early or skips the checksum can produce, as the emulator does —
//!   is deleted at once with its generation as precondition, and the writer is told.
//! - Every call has a time limit, and retries end at the deadline of [`RetryConfig`], which
//!   starts again whenever the service acknowledges bytes it had not held before (in any
//!   session of the upload: sending the same bytes again into a new session is not progress).
//!   Only waiting for a stream's producer (the application writing) is unbounded.

use std::collections::VecDeque;
use std::path::PathBuf;

use bytes::Bytes;
use futures::StreamExt;

use super::retry::{Budget, Call, RetryStats, stalled};
use super::{
    ByteStream, ChunkData, ErrorKind, ObjectFacts, ObjectKey, ObjectMeta, ObjectStore, Op,
    Preconditions, RetryConfig, StoreError, StoreResult, UploadSession, UploadStatus, WriteAttrs,
    WriteSource,
};

/// Bytes per request of a streamed upload: a whole number of 256 KiB blocks. A streamed upload
/// holds at most two: the request in flight (kept until acknowledged) and the next one.
pub const STREAM_CHUNK: u64 = 8 << 20;

/// Data of known size up to this is sent in one request (a multipart upload, retried whole);
/// larger data goes through a resumable session that resumes where a failure stopped it.
pub const SINGLE_REQUEST_MAX: u64 = 8 << 20;

/// How many sessions one upload may use, the first included: a session the service lost, or
/// whose bytes it refused, is started over (data at hand and a conditional write only) while
/// the deadline allows; this caps it too.
pub const MAX_SESSIONS: u32 = 8;

/// Where an upload's bytes come from.
pub(crate) enum Source {
    /// All of it at hand: any part can be sent again.
    Whole(Whole),
    /// Produced while the upload runs.
    Stream(Streamed),
}

/// Data at hand in full, with its size and CRC32C.
pub(crate) struct Whole {
    data: WholeData,
    size: u64,
    crc32c: u32,
}

enum WholeData {
    Bytes(Bytes),
    File(PathBuf),
}

/// A stream's bytes from the first one the service does not hold yet.
pub(crate) struct Streamed {
    stream: ByteStream,
    /// Bytes from `start` on, in order: the ones not acknowledged yet.
    kept: VecDeque<Bytes>,
    kept_len: u64,
    start: u64,
    /// CRC32C and count of every byte taken from the stream.
    crc32c: u32,
    taken: u64,
    ended: bool,
    /// The producer's failure, until the upload is abandoned with it.
    failed: Option<StoreError>,
    /// Whether the producer failed (its bytes are not the object's, whatever was taken).
    broken: bool,
}

impl Source {
    /// Data in memory.
    pub(crate) fn bytes(data: Bytes) -> Self {
        let crc32c = crc32c::crc32c(&data);
        Source::Whole(Whole {
            size: data.len() as u64,
            data: WholeData::Bytes(data),
            crc32c,
        })
    }

    /// A local file of `size` bytes whose CRC32C is `crc32c`; it must not change meanwhile.
    pub(crate) fn file(path: PathBuf, size: u64, crc32c: u32) -> Self {
        Source::Whole(Whole {
            data: WholeData::File(path),
            size,
            crc32c,
        })
    }

    /// The source of `write`'s data: a file's size is found, and its CRC32C computed unless
    /// given (the service then checks it).
    pub(crate) async fn of(source: WriteSource) -> StoreResult<Self> {
        Ok(match source {
            WriteSource::Bytes(data) => Source::bytes(data),
            WriteSource::File { path, crc32c } => {
                let size = file_size(&path).await?;
                let crc = match crc32c {
                    Some(crc) => crc,
                    None => file_crc32c(&path).await?,
                };
                Source::file(path, size, crc)
            }
            WriteSource::Stream(stream) => Source::stream(stream),
        })
    }

    /// Chunks produced while the upload runs.
    pub(crate) fn stream(stream: ByteStream) -> Self {
        Source::Stream(Streamed {
            stream,
            kept: VecDeque::new(),
            kept_len: 0,
            start: 0,
            crc32c: 0,
            taken: 0,
            ended: false,
            failed: None,
            broken: false,
        })
    }

    /// What the service can check from the start.
    fn facts(&self) -> ObjectFacts {
        match self {
            Source::Whole(w) => ObjectFacts {
                size: Some(w.size),
                crc32c: Some(w.crc32c),
            },
            Source::Stream(_) => ObjectFacts::default(),
        }
    }

    /// The size and CRC32C of the whole object, once known.
    fn expected(&self) -> Option<(u64, u32)> {
        match self {
            Source::Whole(w) => Some((w.size, w.crc32c)),
            Source::Stream(s) => (s.ended && !s.broken).then_some((s.taken, s.crc32c)),
        }
    }

    /// Whether every byte can be sent again, from the start.
    fn replayable(&self) -> bool {
        match self {
            Source::Whole(_) => true,
            // Nothing acknowledged (and so nothing dropped) yet.
            Source::Stream(s) => s.start == 0 && !s.broken,
        }
    }

    /// The next request from `held` (what the service holds): its data, and the whole
    /// object's CRC32C if it is the last. Waits for a stream's producer as long as it takes.
    async fn next_request(&mut self, held: u64) -> StoreResult<(ChunkData, Option<u32>)> {
        match self {
            Source::Whole(w) => {
                let offset = held.min(w.size);
                let data = match &w.data {
                    // `offset` <= size, the length of `b`.
                    WholeData::Bytes(b) => ChunkData::Memory(vec![b.slice(offset as usize..)]),
                    WholeData::File(path) => ChunkData::File {
                        path: path.clone(),
                        offset,
                        len: w.size - offset,
                    },
                };
                Ok((data, Some(w.crc32c)))
            }
            Source::Stream(s) => {
                s.forget_below(held);
                loop {
                    if s.broken {
                        return Err(s.failed.take().unwrap_or_else(|| {
                            StoreError::new(ErrorKind::Other, "the data source failed")
                        }));
                    }
                    if s.ended {
                        return Ok((s.slice(s.kept_len), Some(s.crc32c)));
                    }
                    if s.kept_len >= STREAM_CHUNK {
                        return Ok((s.slice(STREAM_CHUNK), None));
                    }
                    s.take().await;
                }
            }
        }
    }

    /// Runs `send`; meanwhile a stream goes on taking its producer's bytes, up to the request
    /// in flight and one more.
    async fn while_sending<T>(&mut self, send: impl Future<Output = T>) -> T {
        let Source::Stream(s) = self else {
            return send.await;
        };
        tokio::pin!(send);
        loop {
            tokio::select! {
                biased;
                out = &mut send => return out,
                // `StreamExt::next` is cancel-safe: a chunk is taken whole or not at all.
                () = s.take(), if !s.ended && s.kept_len < 2 * STREAM_CHUNK => {}
            }
        }
    }

    /// Lets go of bytes the service holds.
    fn acknowledged(&mut self, held: u64) {
        if let Source::Stream(s) = self {
            s.forget_below(held);
        }
    }
}

impl Streamed {
    /// Takes one chunk from the producer.
    async fn take(&mut self) {
        match self.stream.next().await {
            Some(Ok(chunk)) => {
                self.crc32c = crc32c::crc32c_append(self.crc32c, &chunk);
                self.taken += chunk.len() as u64;
                self.kept_len += chunk.len() as u64;
                if !chunk.is_empty() {
                    self.kept.push_back(chunk);
                }
            }
            Some(Err(e)) => {
                self.failed = Some(e);
                self.broken = true;
                self.ended = true;
            }
            None => self.ended = true,
        }
    }

    /// Drops the bytes below `held`.
    fn forget_below(&mut self, held: u64) {
        while self.start < held {
            let Some(front) = self.kept.front_mut() else {
                break;
            };
            let drop = (held - self.start).min(front.len() as u64);
            // `drop` <= front.len(), a usize.
            let _ = front.split_to(drop as usize);
            self.start += drop;
            self.kept_len -= drop;
            if front.is_empty() {
                self.kept.pop_front();
            }
        }
    }

    /// The first `len` kept bytes, without copying them.
    fn slice(&self, len: u64) -> ChunkData {
        let mut left = len;
        let mut parts = Vec::new();
        for part in &self.kept {
            if left == 0 {
                break;
            }
            let take = (part.len() as u64).min(left);
            // `take` <= part.len(), a usize.
            parts.push(part.slice(..take as usize));
            left -= take;
        }
        ChunkData::Memory(parts)
    }
}

/// How one session ended.
enum Outcome {
    /// The service reports this object created.
    Created(ObjectMeta),
    /// The session is gone, or the service refused its bytes; as far as is known, nothing was
    /// created. Starting over may work.
    Lost(StoreError),
    /// Failed for good (or the deadline passed).
    Failed(StoreError),
}

/// An object the service reports created, once checked.
enum Checked {
    /// It holds what was sent.
    Good(ObjectMeta),
    /// It held something else and was deleted: the object does not exist now.
    Removed(StoreError),
    /// Give up with this error.
    Failed(StoreError),
}

/// One write of `key`, through `store`'s calls (which are not retried themselves).
pub(crate) struct Upload<'a> {
    pub(crate) store: &'a dyn ObjectStore,
    pub(crate) config: &'a RetryConfig,
    /// Where retries are counted.
    pub(crate) stats: &'a RetryStats,
    pub(crate) key: &'a ObjectKey,
    pub(crate) attrs: &'a WriteAttrs,
}

impl Upload<'_> {
    /// Uploads `source` through a resumable session (or several: see [`MAX_SESSIONS`]).
    pub(crate) async fn resumable(
        &self,
        mut source: Source,
        mut preconditions: Preconditions,
    ) -> StoreResult<ObjectMeta> {
        let mut budget = Budget::new();
        let mut sessions = 0;
        // The most bytes any session of this upload had acknowledged: only going past it is
        // progress that earns a fresh deadline.
        let mut high_water = 0u64;
        loop {
            sessions += 1;
            let facts = source.facts();
            let started = self
                .retried(&mut budget, Op::StartUpload, || {
                    self.store
                        .start_upload(self.key, preconditions, self.attrs, facts)
                })
                .await;
            let session = match started {
                Ok(session) => session,
                Err(e) => {
                    return self.unless_ours(e, source.expected(), preconditions).await;
                }
            };
            let sent = self
                .send_all(
                    &session,
                    &mut source,
                    preconditions,
                    &mut budget,
                    &mut high_water,
                )
                .await;
            let error = match sent {
                Outcome::Created(meta) => {
                    match self.check(meta, source.expected(), &mut budget).await {
                        Checked::Good(meta) => return Ok(meta),
                        Checked::Removed(e) => {
                            // The object is gone now (it was ours): a new one must not exist.
                            preconditions = Preconditions::create_only();
                            e
                        }
                        Checked::Failed(e) => return Err(e),
                    }
                }
                Outcome::Lost(e) => {
                    self.cancel(&session).await;
                    e
                }
                Outcome::Failed(e) => {
                    self.cancel(&session).await;
                    return self.unless_ours(e, source.expected(), preconditions).await;
                }
            };
            // Start over only when every byte is at hand, the write is conditional (so a
            // second one cannot overwrite another writer), sessions are left, and the
            // deadline allows.
            if !source.replayable() || !preconditions.is_conditional() || sessions >= MAX_SESSIONS {
                return Err(error);
            }
            tracing::warn!(key = %self.key, error = %error, "starting the upload over");
            budget.attempts += 1;
            self.backoff(&budget, Op::StartUpload, error).await?;
        }
    }

    /// Sends `source` into `session` until the service reports the object created or the
    /// session ends otherwise.
    async fn send_all(
        &self,
        session: &UploadSession,
        source: &mut Source,
        preconditions: Preconditions,
        budget: &mut Budget,
        high_water: &mut u64,
    ) -> Outcome {
        let mut held = 0u64;
        let mut sent_last = false;
        loop {
            let (data, last) = match source.next_request(held).await {
                Ok(request) => request,
                Err(e) => return Outcome::Failed(e),
            };
            let len = data.len();
            let end = held + len;
            sent_last |= last.is_some();
            let limit = self.config.transfer_limit(len);
            let send =
                tokio::time::timeout(limit, self.store.upload_chunk(session, held, data, last));
            let failure = match source.while_sending(send).await {
                Ok(Ok(UploadStatus::Done(meta))) => return Outcome::Created(meta),
                Ok(Ok(UploadStatus::Persisted(n))) if n > held && n <= end => {
                    progress(budget, high_water, n);
                    held = n;
                    source.acknowledged(n);
                    continue;
                }
                Ok(Ok(UploadStatus::Persisted(n))) if n == held => StoreError::new(
                    ErrorKind::Transient,
                    format!(
                        "upload of {}: the service kept none of the bytes sent",
                        self.key
                    ),
                ),
                Ok(Ok(UploadStatus::Persisted(n))) => {
                    return Outcome::Failed(self.out_of_range(n, held, end));
                }
                Ok(Err(e)) => e,
                Err(_) => stalled(Op::UploadChunk, self.key.as_str(), limit),
            };
            match failure.kind() {
                // The session ended: a precondition that no longer holds is final.
                ErrorKind::PreconditionFailed => return Outcome::Failed(failure),
                ErrorKind::NotFound | ErrorKind::InvalidArgument => {
                    return self
                        .gone(sent_last, source.expected(), failure, preconditions, budget)
                        .await;
                }
                kind if kind.is_retryable() => {}
                _ => return Outcome::Failed(failure),
            }
            // Unsure what the service kept: ask it, and go on from there.
            budget.attempts += 1;
            if let Err(e) = self.backoff(budget, Op::UploadChunk, failure).await {
                return Outcome::Failed(e);
            }
            match self
                .retried(budget, Op::UploadStatus, || {
                    self.store.upload_status(session)
                })
                .await
            {
                Ok(UploadStatus::Done(meta)) => return Outcome::Created(meta),
                Ok(UploadStatus::Persisted(n)) if n >= held && n <= end => {
                    progress(budget, high_water, n);
                    held = n;
                    source.acknowledged(n);
                }
                Ok(UploadStatus::Persisted(n)) => {
                    return Outcome::Failed(self.out_of_range(n, held, end));
                }
                Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::InvalidArgument) => {
                    return self
                        .gone(sent_last, source.expected(), e, preconditions, budget)
                        .await;
                }
                Err(e) => return Outcome::Failed(e),
            }
        }
    }

    /// The session is gone (or refused the bytes). If the last request was sent, its answer
    /// may have been lost after the object was created: see [`Upload::ours`].
    async fn gone(
        &self,
        sent_last: bool,
        expected: Option<(u64, u32)>,
        error: StoreError,
        preconditions: Preconditions,
        budget: &mut Budget,
    ) -> Outcome {
        if let (true, Some(expected)) = (sent_last, expected)
            && let Some(live) = self.ours_within(expected, preconditions, budget).await
        {
            return Outcome::Created(live);
        }
        Outcome::Lost(error)
    }

    /// Fails with `error`, unless it is a failed precondition met by the object this very write
    /// created: an earlier attempt's answer was lost (possibly in an earlier call that gave up,
    /// whose object then replaced the generation this one is based on).
    async fn unless_ours(
        &self,
        error: StoreError,
        expected: Option<(u64, u32)>,
        preconditions: Preconditions,
    ) -> StoreResult<ObjectMeta> {
        if error.kind() == ErrorKind::PreconditionFailed
            && let Some(expected) = expected
            && let Some(meta) = self.ours(expected, preconditions).await
        {
            return Ok(meta);
        }
        Err(error)
    }

    /// The live object, if it is the one a write of `expected` (size, CRC32C) under
    /// `preconditions` created although its answer was lost: byte for byte what was sent, and
    /// not the generation the write was based on. (Another writer's identical bytes pass too;
    /// the bucket then holds what was written all the same.)
    pub(crate) async fn ours(
        &self,
        expected: (u64, u32),
        preconditions: Preconditions,
    ) -> Option<ObjectMeta> {
        self.ours_within(expected, preconditions, &mut Budget::new())
            .await
    }

    async fn ours_within(
        &self,
        (size, crc): (u64, u32),
        preconditions: Preconditions,
        budget: &mut Budget,
    ) -> Option<ObjectMeta> {
        let live = self
            .retried(budget, Op::Stat, || self.store.stat(self.key))
            .await
            .ok()?;
        let based_on = preconditions.if_generation_match;
        (live.size == size && live.crc32c == Some(crc) && Some(live.generation) != based_on)
            .then_some(live)
    }

    /// Checks an object the service reports created against `expected` (size and CRC32C;
    /// `None`: the upload had not sent its end). A mismatch is deleted at once.
    async fn check(
        &self,
        meta: ObjectMeta,
        expected: Option<(u64, u32)>,
        budget: &mut Budget,
    ) -> Checked {
        let good = expected.is_some_and(|(size, crc)| {
            meta.size == size && meta.crc32c.is_none_or(|have| have == crc)
        });
        if good {
            return Checked::Good(meta);
        }
        let what = match expected {
            Some((size, crc)) => format!(
                "{} bytes with crc32c {:?}, not the {size} bytes with crc32c {crc:#010x} sent",
                meta.size, meta.crc32c
            ),
            None => format!("{} bytes before the upload had sent its end", meta.size),
        };
        tracing::error!(
            key = %self.key,
            generation = meta.generation.0,
            "the service created an object that does not hold what was sent ({what}); deleting it"
        );
        let pre = Preconditions::generation(meta.generation);
        let deleted = self
            .retried(budget, Op::Delete, || self.store.delete(self.key, pre))
            .await;
        match deleted {
            Ok(()) => Checked::Removed(StoreError::new(
                ErrorKind::Transient,
                format!(
                    "upload of {}: the service created {what}; that object was deleted",
                    self.key
                ),
            )),
            Err(e) if e.kind() == ErrorKind::NotFound => Checked::Removed(e),
            // Another writer replaced it meanwhile: theirs stays, ours is lost.
            Err(e) if e.kind() == ErrorKind::PreconditionFailed => Checked::Failed(e),
            Err(e) => {
                tracing::error!(key = %self.key, generation = meta.generation.0, error = %e,
                    "an object holding wrong data could not be deleted");
                Checked::Failed(StoreError::with_source(
                    ErrorKind::Other,
                    format!(
                        "upload of {}: generation {} holds {what} and could not be deleted",
                        self.key, meta.generation
                    ),
                    e,
                ))
            }
        }
    }

    /// Checks the answer to a single-request upload of `expected` (size, CRC32C): a
    /// mismatching object is deleted and the call fails.
    pub(crate) async fn check_single(
        &self,
        meta: ObjectMeta,
        expected: (u64, u32),
    ) -> StoreResult<ObjectMeta> {
        match self.check(meta, Some(expected), &mut Budget::new()).await {
            Checked::Good(meta) => Ok(meta),
            Checked::Removed(e) | Checked::Failed(e) => Err(e),
        }
    }

    /// Abandons `session`, best effort (it expires by itself otherwise).
    async fn cancel(&self, session: &UploadSession) {
        let limit = self.config.stall_timeout;
        let _ = tokio::time::timeout(limit, self.store.cancel_upload(session)).await;
    }

    /// Calls `attempt` until it succeeds, fails for good or `budget` runs out.
    async fn retried<T, F, Fut>(&self, budget: &mut Budget, op: Op, attempt: F) -> StoreResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        self.call(op).run(budget, attempt).await
    }

    /// Waits before the next attempt after `error`, or returns the error to give up with.
    async fn backoff(&self, budget: &Budget, op: Op, error: StoreError) -> StoreResult<()> {
        self.call(op).backoff(budget, error).await
    }

    fn call(&self, op: Op) -> Call<'_> {
        Call {
            config: self.config,
            stats: self.stats,
            op,
            key: self.key.as_str(),
            idempotent: true,
            limit: Some(self.config.stall_timeout),
        }
    }

    /// The service says it holds `n` bytes, which cannot be: less than it held before, or more
    /// than was sent.
    fn out_of_range(&self, n: u64, held: u64, end: u64) -> StoreError {
        StoreError::new(
            ErrorKind::Other,
            format!(
                "upload of {}: the service reports {n} bytes held, outside {held}..={end}",
                self.key
            ),
        )
    }
}

/// The service holds `n` bytes: past the `high_water` mark, that is progress, and the deadline
/// starts again.
fn progress(budget: &mut Budget, high_water: &mut u64, n: u64) {
    if n > *high_water {
        *high_water = n;
        *budget = Budget::new();
    }
}

/// A local source file could not be read: the caller's problem, not the service's.
fn local_file_error(path: &std::path::Path, e: std::io::Error) -> StoreError {
    StoreError::with_source(
        ErrorKind::Other,
        format!("cannot read local file {}", path.display()),
        e,
    )
}

/// The whole of a small local file; checked against `crc32c` when given.
pub(crate) async fn read_file(path: &std::path::Path, crc32c: Option<u32>) -> StoreResult<Bytes> {
    let data = Bytes::from(
        tokio::fs::read(path)
            .await
            .map_err(|e| local_file_error(path, e))?,
    );
    if let Some(want) = crc32c {
        let have = crc32c::crc32c(&data);
        if have != want {
            return Err(StoreError::new(
                ErrorKind::Other,
                format!(
                    "local file {} changed: crc32c {have:#010x}, {want:#010x} expected",
                    path.display()
                ),
            ));
        }
    }
    Ok(data)
}

/// The CRC32C of a local file, computed off the async threads.
async fn file_crc32c(path: &std::path::Path) -> StoreResult<u32> {
    let owned = path.to_path_buf();
    let result = tokio::task::spawn_blocking(move || -> std::io::Result<u32> {
        use std::io::Read;
        let mut file = std::fs::File::open(&owned)?;
        let mut buf = vec![0u8; 1 << 20];
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

/// The size of a local file.
pub(crate) async fn file_size(path: &std::path::Path) -> StoreResult<u64> {
    tokio::fs::metadata(path)
        .await
        .map(|m| m.len())
        .map_err(|e| local_file_error(path, e))
}
