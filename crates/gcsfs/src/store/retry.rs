//! [`RetryStore`]: the one retry layer, for every backend.
//!
//! - Only errors whose kind [is retryable](super::ErrorKind::is_retryable) (`Transient`,
//!   `RateLimited`) are retried, and only on idempotent calls: `stat`, `list`, `read`,
//!   `start_upload`, `upload_status` and `cancel_upload` always; `write`, `delete`, `copy` and
//!   `patch_metadata` only when they carry a precondition. A mutation without a precondition
//!   is tried exactly once. `upload_chunk` is tried once: after a failure only the upload's
//!   status says what to send next.
//! - `write` sends data of known size up to [`SINGLE_REQUEST_MAX`] in one request, checks
//!   the object created against it, and retries the request whole; larger data and streams go
//!   through a resumable upload driven by [`super::upload`], which resumes where a failure
//!   stopped it and keeps a stream's unacknowledged bytes until the service holds them.
//! - Backoff is exponential with full jitter; no attempt starts after the deadline, and no more
//!   than `max_attempts` attempts are made.
//! - An attempt that makes no progress for `stall_timeout` is abandoned as `Transient`.
//! - A read stream that breaks (or stalls) mid-way is resumed from where it broke when the read
//!   is pinned to a generation; without a generation the error is surfaced, since a resumed read
//!   could mix two generations.
//!
//! When retries run out, the caller gets a `Transient` error (even if the last failure was
//! `RateLimited`: from above the store both mean "try again later") whose source is the last
//! failure. Errors that are not retried reach the caller unchanged.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::time::Instant;

use super::op::OpCounters;
use super::upload::{SINGLE_REQUEST_MAX, Source, Upload, file_size, read_file};
use super::{
    ByteRange, ByteStream, ChunkData, ErrorKind, Generation, ListPage, ListRequest, MetadataPatch,
    ObjectFacts, ObjectKey, ObjectMeta, ObjectStore, Op, Preconditions, StoreError, StoreResult,
    UploadSession, UploadStatus, WriteAttrs, WriteSource,
};

/// How [`RetryStore`] retries.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryConfig {
    /// Upper bound of the first backoff (the wait is uniform in `[0, bound]`: full jitter).
    /// Default: 100 ms.
    pub initial_backoff: Duration,
    /// Cap on the backoff bound. Default: 5 s.
    pub max_backoff: Duration,
    /// Growth of the backoff bound after each failed attempt. Default: 2.0.
    pub multiplier: f64,
    /// Time budget of one operation, from its first attempt: no attempt starts after it (nor a
    /// backoff that would end after it). An attempt already running is bounded by
    /// `stall_timeout` instead. For a read stream the budget restarts whenever the stream made
    /// progress since its last failure. Default: 60 s.
    pub deadline: Duration,
    /// An attempt that makes no progress this long is abandoned as `Transient`: the whole call
    /// for `stat`, `list`, `delete`, `copy`, `patch_metadata` and opening a read;
    /// the wait for each chunk of a read stream; for each upload request, the limit is
    /// `stall_timeout + size / min_write_throughput`. A stream's producer is never timed (its
    /// pace is the application's). Default: 30 s.
    pub stall_timeout: Duration,
    /// Most attempts one operation makes, the first included: a guard; the deadline is what
    /// normally ends the retries (with backoff capped at `max_backoff`, 60 s of an outage is
    /// about 25 attempts). Default: 100.
    pub max_attempts: u32,
    /// The slowest upload, in bytes per second, that is still considered progress: it sets the
    /// time limit of writes of known size (see `stall_timeout`). 0 removes the limit.
    /// Default: 1 MiB/s.
    pub min_write_throughput: u64,
}

impl RetryConfig {
    /// One attempt per call, no retries (a backend used bare, as in tests).
    pub fn no_retries() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The longest a streamed upload can take to accept more bytes while it keeps within these
    /// limits: the deadline, a last request of a whole streamed chunk, a status query and a
    /// backoff. The filesystem's backstop for writers waiting on an upload.
    pub fn upload_wait_limit(&self) -> Duration {
        self.deadline
            .saturating_add(self.transfer_limit(super::STREAM_CHUNK))
            .saturating_add(self.stall_timeout)
            .saturating_add(self.max_backoff)
    }

    /// The time limit of one request that sends `len` bytes.
    pub fn transfer_limit(&self, len: u64) -> Duration {
        let rate = self.min_write_throughput;
        if rate == 0 {
            return Duration::MAX;
        }
        let transfer =
            Duration::try_from_secs_f64(len as f64 / rate as f64).unwrap_or(Duration::MAX);
        self.stall_timeout.saturating_add(transfer)
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            multiplier: 2.0,
            deadline: Duration::from_secs(60),
            stall_timeout: Duration::from_secs(30),
            max_attempts: 100,
            min_write_throughput: 1024 * 1024,
        }
    }
}

/// Retries made, by store call: each attempt after a call's first that a backoff let start
/// (for metrics). Resumptions of a read stream count as `read`; a resumable upload's status
/// query after a failed request counts as `upload_chunk`, and a session started over as
/// `start_upload`.
#[derive(Debug, Default)]
pub struct RetryStats(OpCounters);

impl RetryStats {
    /// Retries of `op` so far.
    pub fn retries(&self, op: Op) -> u64 {
        self.0.get(op)
    }
}

/// Retries the calls of an inner store that failed transiently, within limits (see the module
/// documentation for the rules).
#[derive(Debug)]
pub struct RetryStore {
    inner: Arc<dyn ObjectStore>,
    config: RetryConfig,
    stats: Arc<RetryStats>,
}

impl RetryStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn ObjectStore>, config: RetryConfig) -> Self {
        Self {
            inner,
            config,
            stats: Arc::default(),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &RetryConfig {
        &self.config
    }

    /// The retries made so far, by call (shared: it keeps counting).
    pub fn stats(&self) -> Arc<RetryStats> {
        self.stats.clone()
    }

    /// Runs `attempt` with this store's settings and a fresh budget.
    async fn run<T, F, Fut>(
        &self,
        op: Op,
        key: &str,
        idempotent: bool,
        limit: Option<Duration>,
        attempt: F,
    ) -> StoreResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        let call = Call {
            config: &self.config,
            stats: &self.stats,
            op,
            key,
            idempotent,
            limit,
        };
        call.run(&mut Budget::new(), attempt).await
    }
}

/// Attempts made and time spent on one operation.
#[derive(Debug)]
pub(super) struct Budget {
    started: Instant,
    pub(super) attempts: u32,
}

impl Budget {
    pub(super) fn new() -> Self {
        Self {
            started: Instant::now(),
            attempts: 0,
        }
    }

    /// After a failed attempt: how long to wait before the next one, or `None` if no further
    /// attempt may start.
    fn next_wait(&self, config: &RetryConfig) -> Option<Duration> {
        if self.attempts >= config.max_attempts {
            return None;
        }
        let grown = config.initial_backoff.as_secs_f64()
            * config
                .multiplier
                .powi(self.attempts.saturating_sub(1).min(64) as i32);
        let cap = config.max_backoff.as_secs_f64();
        // A NaN (from an odd multiplier) falls back to the cap.
        let bound = if grown.is_nan() {
            cap
        } else {
            grown.min(cap).max(0.0)
        };
        let wait = Duration::from_secs_f64(rand::random_range(0.0..=bound));
        // (A deadline too far away to represent never passes.)
        if let Some(end) = self.started.checked_add(config.deadline)
            && Instant::now() + wait >= end
        {
            return None;
        }
        Some(wait)
    }

    fn give_up(&self, op: Op, key: &str, last: StoreError) -> StoreError {
        tracing::warn!(
            op = op.name(),
            key = %key,
            attempts = self.attempts,
            kind = %last.kind(),
            "giving up on a store call"
        );
        StoreError::with_source(
            ErrorKind::Transient,
            format!(
                "{op} {key}: gave up after {} attempts in {:?}",
                self.attempts,
                self.started.elapsed()
            ),
            last,
        )
    }
}

/// The error for an attempt abandoned after `limit` without progress.
pub(super) fn stalled(op: Op, key: &str, limit: Duration) -> StoreError {
    StoreError::new(
        ErrorKind::Transient,
        format!("{op} {key}: no progress in {limit:?}"),
    )
}

/// One retried operation.
pub(super) struct Call<'a> {
    pub(super) config: &'a RetryConfig,
    /// Where retries are counted.
    pub(super) stats: &'a RetryStats,
    pub(super) op: Op,
    /// The object (or listing prefix) named in logs and errors.
    pub(super) key: &'a str,
    pub(super) idempotent: bool,
    /// Time limit of each attempt.
    pub(super) limit: Option<Duration>,
}

impl Call<'_> {
    /// Calls `attempt` until it succeeds, fails for good, or `budget` runs out.
    pub(super) async fn run<T, F, Fut>(&self, budget: &mut Budget, mut attempt: F) -> StoreResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        loop {
            budget.attempts += 1;
            let result = match self.limit {
                Some(limit) => tokio::time::timeout(limit, attempt())
                    .await
                    .unwrap_or_else(|_| Err(stalled(self.op, self.key, limit))),
                None => attempt().await,
            };
            let err = match result {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            if !self.idempotent || !err.is_retryable() {
                return Err(err);
            }
            self.backoff(budget, err).await?;
        }
    }

    /// Waits before the next attempt after `err`, or returns the final error.
    pub(super) async fn backoff(&self, budget: &Budget, err: StoreError) -> StoreResult<()> {
        let Some(wait) = budget.next_wait(self.config) else {
            return Err(budget.give_up(self.op, self.key, err));
        };
        self.stats.0.bump(self.op);
        tracing::debug!(
            op = self.op.name(),
            key = %self.key,
            attempt = budget.attempts,
            kind = %err.kind(),
            backoff_ms = wait.as_millis() as u64,
            "retrying a store call"
        );
        tokio::time::sleep(wait).await;
        Ok(())
    }
}

/// State of a read stream that resumes after failures.
struct Resuming {
    inner: Arc<dyn ObjectStore>,
    config: RetryConfig,
    stats: Arc<RetryStats>,
    key: ObjectKey,
    generation: Option<Generation>,
    /// Next byte to deliver.
    offset: u64,
    end: Option<u64>,
    stream: Option<ByteStream>,
    budget: Budget,
    /// Whether bytes arrived since the last failure (a fresh budget is then due).
    progressed: bool,
    done: bool,
}

impl Resuming {
    /// The next item of the stream, resuming after retryable failures when allowed.
    async fn next(&mut self) -> Option<StoreResult<Bytes>> {
        if self.done {
            return None;
        }
        loop {
            let Some(stream) = self.stream.as_mut() else {
                self.done = true; // not reached: a stream is open until the reader is done
                return None;
            };
            let limit = self.config.stall_timeout;
            let err = match tokio::time::timeout(limit, stream.next()).await {
                Ok(Some(Ok(chunk))) => {
                    self.offset += chunk.len() as u64;
                    self.progressed |= !chunk.is_empty();
                    return Some(Ok(chunk));
                }
                Ok(None) => {
                    self.done = true;
                    return None;
                }
                Ok(Some(Err(err))) => err,
                Err(_) => stalled(Op::Read, self.key.as_str(), limit),
            };
            self.stream = None;
            match self.resume(err).await {
                Ok(stream) => self.stream = Some(stream),
                Err(err) => {
                    self.done = true;
                    return Some(Err(err));
                }
            }
        }
    }

    /// Reopens the read where it broke with `err`, or returns the error to surface.
    async fn resume(&mut self, err: StoreError) -> StoreResult<ByteStream> {
        let Some(generation) = self.generation else {
            return Err(err); // resuming could mix generations
        };
        if !err.is_retryable() {
            return Err(err);
        }
        if self.progressed {
            self.budget = Budget::new();
            self.budget.attempts = 1; // the attempt that just broke
            self.progressed = false;
        }
        // Borrow fields one by one: the future must not hold `&Resuming` (a stream is not `Sync`).
        let call = Call {
            config: &self.config,
            stats: &self.stats,
            op: Op::Read,
            key: self.key.as_str(),
            idempotent: true,
            limit: Some(self.config.stall_timeout),
        };
        call.backoff(&self.budget, err).await?;
        let range = ByteRange {
            start: self.offset,
            end: self.end,
        };
        let (inner, key) = (&self.inner, &self.key);
        call.run(&mut self.budget, || {
            inner.read(key, Some(generation), range)
        })
        .await
    }
}

#[async_trait]
impl ObjectStore for RetryStore {
    async fn stat(&self, key: &ObjectKey) -> StoreResult<ObjectMeta> {
        let limit = Some(self.config.stall_timeout);
        self.run(Op::Stat, key.as_str(), true, limit, || self.inner.stat(key))
            .await
    }

    async fn list(&self, request: &ListRequest) -> StoreResult<ListPage> {
        let limit = Some(self.config.stall_timeout);
        let prefix = request.prefix.as_str();
        self.run(Op::List, prefix, true, limit, || self.inner.list(request))
            .await
    }

    async fn read(
        &self,
        key: &ObjectKey,
        generation: Option<Generation>,
        range: ByteRange,
    ) -> StoreResult<ByteStream> {
        let mut budget = Budget::new();
        let call = Call {
            config: &self.config,
            stats: &self.stats,
            op: Op::Read,
            key: key.as_str(),
            idempotent: true,
            limit: Some(self.config.stall_timeout),
        };
        let stream = call
            .run(&mut budget, || self.inner.read(key, generation, range))
            .await?;
        let state = Resuming {
            inner: self.inner.clone(),
            config: self.config.clone(),
            stats: self.stats.clone(),
            key: key.clone(),
            generation,
            offset: range.start,
            end: range.end,
            stream: Some(stream),
            budget,
            progressed: false,
            done: false,
        };
        Ok(futures::stream::unfold(state, |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        })
        .boxed())
    }

    async fn write(
        &self,
        key: &ObjectKey,
        source: WriteSource,
        preconditions: Preconditions,
        attrs: &WriteAttrs,
    ) -> StoreResult<ObjectMeta> {
        let upload = Upload {
            store: self.inner.as_ref(),
            config: &self.config,
            stats: &self.stats,
            key,
            attrs,
        };
        match source {
            WriteSource::Bytes(data) if data.len() as u64 <= SINGLE_REQUEST_MAX => {
                return self.write_once(&upload, data, preconditions).await;
            }
            WriteSource::File { path, crc32c } if file_size(&path).await? <= SINGLE_REQUEST_MAX => {
                let data = read_file(&path, crc32c).await?;
                return self.write_once(&upload, data, preconditions).await;
            }
            source => {
                let source = Source::of(source).await?;
                upload.resumable(source, preconditions).await
            }
        }
    }

    async fn delete(&self, key: &ObjectKey, preconditions: Preconditions) -> StoreResult<()> {
        let limit = Some(self.config.stall_timeout);
        let idempotent = preconditions.is_conditional();
        self.run(Op::Delete, key.as_str(), idempotent, limit, || {
            self.inner.delete(key, preconditions)
        })
        .await
    }

    async fn copy(
        &self,
        src: &ObjectKey,
        src_generation: Option<Generation>,
        dst: &ObjectKey,
        preconditions: Preconditions,
    ) -> StoreResult<ObjectMeta> {
        let limit = Some(self.config.stall_timeout);
        let idempotent = preconditions.is_conditional();
        self.run(Op::Copy, dst.as_str(), idempotent, limit, || {
            self.inner.copy(src, src_generation, dst, preconditions)
        })
        .await
    }

    async fn patch_metadata(
        &self,
        key: &ObjectKey,
        patch: &MetadataPatch,
        preconditions: Preconditions,
    ) -> StoreResult<ObjectMeta> {
        let limit = Some(self.config.stall_timeout);
        let idempotent = preconditions.is_conditional();
        self.run(Op::Patch, key.as_str(), idempotent, limit, || {
            self.inner.patch_metadata(key, patch, preconditions)
        })
        .await
    }

    async fn start_upload(
        &self,
        key: &ObjectKey,
        preconditions: Preconditions,
        attrs: &WriteAttrs,
        facts: ObjectFacts,
    ) -> StoreResult<UploadSession> {
        // Starting creates nothing visible: always safe to repeat.
        let limit = Some(self.config.stall_timeout);
        self.run(Op::StartUpload, key.as_str(), true, limit, || {
            self.inner.start_upload(key, preconditions, attrs, facts)
        })
        .await
    }

    async fn upload_chunk(
        &self,
        session: &UploadSession,
        offset: u64,
        data: ChunkData,
        last: Option<u32>,
    ) -> StoreResult<UploadStatus> {
        // Tried once: after a failure, what to send next depends on what the service kept.
        let limit = self.config.transfer_limit(data.len());
        let key = session.key().as_str();
        tokio::time::timeout(limit, self.inner.upload_chunk(session, offset, data, last))
            .await
            .unwrap_or_else(|_| Err(stalled(Op::UploadChunk, key, limit)))
    }

    async fn upload_status(&self, session: &UploadSession) -> StoreResult<UploadStatus> {
        let limit = Some(self.config.stall_timeout);
        let key = session.key().as_str();
        self.run(Op::UploadStatus, key, true, limit, || {
            self.inner.upload_status(session)
        })
        .await
    }

    async fn cancel_upload(&self, session: &UploadSession) -> StoreResult<()> {
        let limit = Some(self.config.stall_timeout);
        let key = session.key().as_str();
        self.run(Op::CancelUpload, key, true, limit, || {
            self.inner.cancel_upload(session)
        })
        .await
    }
}

impl RetryStore {
    /// Uploads `data` in one request (retried whole when conditional), then checks that the
    /// object created holds it; one that does not is deleted, and a conditional write tries
    /// once more (create-only, since the object is gone then). A retry that fails its
    /// precondition may have met the object its own earlier attempt created (that answer was
    /// lost): the live object is taken as ours when it holds exactly `data`.
    async fn write_once(
        &self,
        upload: &Upload<'_>,
        data: Bytes,
        preconditions: Preconditions,
    ) -> StoreResult<ObjectMeta> {
        let expected = (data.len() as u64, crc32c::crc32c(&data));
        let limit = Some(self.config.transfer_limit(expected.0));
        let idempotent = preconditions.is_conditional();
        let mut pre = preconditions;
        let mut tries = 0;
        loop {
            tries += 1;
            let key = upload.key;
            let written = self
                .run(Op::Write, key.as_str(), idempotent, limit, || {
                    self.inner
                        .write(key, WriteSource::Bytes(data.clone()), pre, upload.attrs)
                })
                .await;
            let meta = match written {
                Ok(meta) => meta,
                Err(e) if e.kind() == ErrorKind::PreconditionFailed => {
                    return match upload.ours(expected, pre).await {
                        Some(meta) => Ok(meta),
                        None => Err(e),
                    };
                }
                Err(e) => return Err(e),
            };
            match upload.check_single(meta, expected).await {
                Err(e) if idempotent && tries < 2 && e.kind() == ErrorKind::Transient => {
                    pre = Preconditions::create_only();
                }
                other => return other,
            }
        }
    }
}
