//! [`FaultStore`]: wraps any store and injects scripted failures, stalls and latency.
//!
//! Used by the retry tests, by filesystem tests that need a flaky backend, and by benchmarks
//! that need a slow one.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;

use super::op::{COUNT, OpCounters};
use super::{
    ByteRange, ByteStream, ChunkData, ErrorKind, Generation, ListPage, ListRequest, MetadataPatch,
    ObjectFacts, ObjectKey, ObjectMeta, ObjectStore, Op, Preconditions, StoreError, StoreResult,
    UploadSession, UploadStatus, WriteAttrs, WriteSource,
};

/// A failure to inject into one call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fault {
    /// Let the call through untouched. Queued before another fault, it aims that fault at a
    /// later call: `push_n(op, Fault::Pass, 3)` then `push(op, Fault::Status(503))` fails the
    /// fourth call.
    Pass,
    /// Fail the call with this HTTP status (classified by [`StoreError::from_http_status`])
    /// without reaching the inner store.
    Status(u16),
    /// Perform the call on the inner store, then fail with this status anyway: the request
    /// took effect but its answer was lost (what a timeout after a committed write looks like).
    StatusAfterCommit(u16),
    /// Perform the call on the inner store at once, then hold its answer this long (on the
    /// Tokio clock): the answer arrives as old as the call, as a slow response does (a listing
    /// that shows what was there when it was served, not when it is read).
    LateAnswer(Duration),
    /// Reads only: the stream yields `after_bytes` bytes, then a `Transient` error, then ends.
    /// On any other operation the call fails with `Transient` before reaching the inner store.
    ResetMidStream {
        /// Bytes delivered before the reset.
        after_bytes: u64,
    },
    /// The call never completes (it stays pending until dropped).
    Stall,
    /// Reads only: the stream yields `after_bytes` bytes, then never yields again. On any
    /// other operation this is the same as [`Fault::Stall`].
    StallMidStream {
        /// Bytes delivered before the stall.
        after_bytes: u64,
    },
    /// Not queued: from now on every call of the operation waits this long (on the Tokio
    /// clock) before it proceeds. `Duration::ZERO` removes the delay.
    Latency(Duration),
    /// [`Op::UploadChunk`] only: the service keeps the first `persist` bytes of the request
    /// (rounded down to whole 256 KiB blocks, as GCS keeps them; never finalizing), then the
    /// connection is reset (`Transient`). On any other operation the call fails with
    /// `Transient` before reaching the inner store.
    PartialChunk {
        /// Bytes of the request the service keeps.
        persist: u64,
    },
}

#[derive(Debug, Default)]
struct Script {
    queues: [VecDeque<Fault>; COUNT],
    latency: [Duration; COUNT],
}

/// A store wrapper that fails calls as scripted.
///
/// Faults are queued per operation, first in first out, and each call takes at most one (a
/// call that finds its queue empty goes straight to the inner store). [`Fault::Latency`] is
/// the exception: it sets a standing delay for every later call of that operation.
/// [`FaultStore::calls`] counts every call, faulted or not, which is how tests count the
/// attempts a retry layer made.
#[derive(Debug)]
pub struct FaultStore {
    inner: Arc<dyn ObjectStore>,
    script: Mutex<Script>,
    calls: OpCounters,
}

impl FaultStore {
    /// Wraps `inner`, initially without faults.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            script: Mutex::new(Script::default()),
            calls: OpCounters::default(),
        }
    }

    /// Appends `fault` to `op`'s queue (for [`Fault::Latency`]: sets `op`'s standing delay).
    pub fn push(&self, op: Op, fault: Fault) {
        let mut script = self.script();
        match fault {
            Fault::Latency(d) => script.latency[op.index()] = d,
            other => script.queues[op.index()].push_back(other),
        }
    }

    /// Queues `fault` `times` times for `op`.
    pub fn push_n(&self, op: Op, fault: Fault, times: usize) {
        for _ in 0..times {
            self.push(op, fault);
        }
    }

    /// How many times `op` was called on this wrapper (faulted calls included).
    pub fn calls(&self, op: Op) -> u64 {
        self.calls.get(op)
    }

    /// How many faults are still queued for `op`.
    pub fn pending(&self, op: Op) -> usize {
        self.script().queues[op.index()].len()
    }

    /// Drops every queued fault and standing delay.
    pub fn clear(&self) {
        *self.script() = Script::default();
    }

    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        // Every change to the script is a single push/pop/assignment: consistent even if poisoned.
        self.script.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts the call, applies the standing delay, and takes the call's fault, if any.
    async fn enter(&self, op: Op) -> Option<Fault> {
        self.calls.bump(op);
        let (delay, fault) = {
            let mut script = self.script();
            let delay = script.latency[op.index()];
            (delay, script.queues[op.index()].pop_front())
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        fault
    }

    /// Runs a non-streaming call under `fault`.
    async fn run<T>(
        &self,
        op: Op,
        call: impl Future<Output = StoreResult<T>> + Send,
    ) -> StoreResult<T> {
        match self.enter(op).await {
            None => call.await,
            Some(fault) => faulted(op, fault, call).await,
        }
    }
}

fn injected(op: Op, status: u16) -> StoreError {
    StoreError::from_http_status(status, format!("injected fault: {op} answered {status}"))
}

fn reset(op: Op) -> StoreError {
    StoreError::new(
        ErrorKind::Transient,
        format!("injected fault: {op} connection reset"),
    )
}

/// Applies `fault` to a call that is not a read stream.
async fn faulted<T>(
    op: Op,
    fault: Fault,
    call: impl Future<Output = StoreResult<T>> + Send,
) -> StoreResult<T> {
    match fault {
        Fault::Pass => call.await,
        Fault::Status(status) => Err(injected(op, status)),
        Fault::StatusAfterCommit(status) => {
            // The inner call's own result is dropped with the "lost" answer.
            let _ = call.await;
            Err(injected(op, status))
        }
        Fault::LateAnswer(delay) => {
            let answer = call.await;
            tokio::time::sleep(delay).await;
            answer
        }
        Fault::ResetMidStream { .. } | Fault::PartialChunk { .. } => Err(reset(op)),
        Fault::Stall | Fault::StallMidStream { .. } => std::future::pending().await,
        Fault::Latency(_) => call.await, // never queued
    }
}

/// The first `n` bytes of `data`.
fn head_of(data: ChunkData, n: u64) -> ChunkData {
    match data {
        ChunkData::File { path, offset, len } => ChunkData::File {
            path,
            offset,
            len: len.min(n),
        },
        ChunkData::Memory(parts) => {
            let mut left = n;
            let mut kept = Vec::new();
            for p in parts {
                if left == 0 {
                    break;
                }
                // `take` <= p.len(), a usize.
                let take = (p.len() as u64).min(left);
                kept.push(p.slice(..take as usize));
                left -= take;
            }
            ChunkData::Memory(kept)
        }
    }
}

/// Passes the first `after_bytes` bytes of `stream` through, then ends it with `tail`.
fn cut(stream: ByteStream, after_bytes: u64, stall: bool) -> ByteStream {
    struct Cut {
        stream: ByteStream,
        left: u64,
        done: bool,
    }
    let state = Cut {
        stream,
        left: after_bytes,
        done: false,
    };
    futures::stream::unfold(state, move |mut s| async move {
        if s.done {
            return None;
        }
        if s.left > 0 {
            match s.stream.next().await {
                Some(Ok(chunk)) => {
                    let take = (chunk.len() as u64).min(s.left);
                    s.left -= take;
                    // `take` <= chunk.len(), a usize.
                    let part: Bytes = chunk.slice(..take as usize);
                    return Some((Ok(part), s));
                }
                // The real stream ended or failed before the cut: pass that through.
                Some(Err(e)) => return Some((Err(e), s)),
                None => return None,
            }
        }
        if stall {
            std::future::pending::<()>().await;
        }
        s.done = true;
        Some((Err(reset(Op::Read)), s))
    })
    .boxed()
}

#[async_trait]
impl ObjectStore for FaultStore {
    async fn stat(&self, key: &ObjectKey) -> StoreResult<ObjectMeta> {
        self.run(Op::Stat, self.inner.stat(key)).await
    }

    async fn list(&self, request: &ListRequest) -> StoreResult<ListPage> {
        self.run(Op::List, self.inner.list(request)).await
    }

    async fn read(
        &self,
        key: &ObjectKey,
        generation: Option<Generation>,
        range: ByteRange,
    ) -> StoreResult<ByteStream> {
        let open = self.inner.read(key, generation, range);
        match self.enter(Op::Read).await {
            Some(Fault::ResetMidStream { after_bytes }) => Ok(cut(open.await?, after_bytes, false)),
            Some(Fault::StallMidStream { after_bytes }) => Ok(cut(open.await?, after_bytes, true)),
            Some(fault) => faulted(Op::Read, fault, open).await,
            None => open.await,
        }
    }

    async fn write(
        &self,
        key: &ObjectKey,
        source: WriteSource,
        preconditions: Preconditions,
        attrs: &WriteAttrs,
    ) -> StoreResult<ObjectMeta> {
        let call = self.inner.write(key, source, preconditions, attrs);
        self.run(Op::Write, call).await
    }

    async fn delete(&self, key: &ObjectKey, preconditions: Preconditions) -> StoreResult<()> {
        self.run(Op::Delete, self.inner.delete(key, preconditions))
            .await
    }

    async fn copy(
        &self,
        src: &ObjectKey,
        src_generation: Option<Generation>,
        dst: &ObjectKey,
        preconditions: Preconditions,
    ) -> StoreResult<ObjectMeta> {
        let call = self.inner.copy(src, src_generation, dst, preconditions);
        self.run(Op::Copy, call).await
    }

    async fn patch_metadata(
        &self,
        key: &ObjectKey,
        patch: &MetadataPatch,
        preconditions: Preconditions,
    ) -> StoreResult<ObjectMeta> {
        let call = self.inner.patch_metadata(key, patch, preconditions);
        self.run(Op::Patch, call).await
    }

    async fn start_upload(
        &self,
        key: &ObjectKey,
        preconditions: Preconditions,
        attrs: &WriteAttrs,
        facts: ObjectFacts,
    ) -> StoreResult<UploadSession> {
        let call = self.inner.start_upload(key, preconditions, attrs, facts);
        self.run(Op::StartUpload, call).await
    }

    async fn upload_chunk(
        &self,
        session: &UploadSession,
        offset: u64,
        data: ChunkData,
        last: Option<u32>,
    ) -> StoreResult<UploadStatus> {
        match self.enter(Op::UploadChunk).await {
            None => self.inner.upload_chunk(session, offset, data, last).await,
            Some(Fault::PartialChunk { persist }) => {
                let block = crate::store::mem::UPLOAD_BLOCK;
                let keep = persist.min(data.len()) / block * block;
                if keep > 0 {
                    // What the service kept before the connection broke; its answer is lost.
                    let _ = self
                        .inner
                        .upload_chunk(session, offset, head_of(data, keep), None)
                        .await;
                }
                Err(reset(Op::UploadChunk))
            }
            Some(fault) => {
                let call = self.inner.upload_chunk(session, offset, data, last);
                faulted(Op::UploadChunk, fault, call).await
            }
        }
    }

    async fn upload_status(&self, session: &UploadSession) -> StoreResult<UploadStatus> {
        let call = self.inner.upload_status(session);
        self.run(Op::UploadStatus, call).await
    }

    async fn cancel_upload(&self, session: &UploadSession) -> StoreResult<()> {
        let call = self.inner.cancel_upload(session);
        self.run(Op::CancelUpload, call).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;

    fn key() -> ObjectKey {
        ObjectKey::new("k").unwrap()
    }

    async fn setup(data: &'static [u8]) -> (Arc<MemStore>, FaultStore) {
        let mem = Arc::new(MemStore::new());
        mem.write(
            &key(),
            WriteSource::Bytes(Bytes::from_static(data)),
            Preconditions::NONE,
            &WriteAttrs::default(),
        )
        .await
        .unwrap();
        let faults = FaultStore::new(mem.clone());
        (mem, faults)
    }

    #[tokio::test]
    async fn faults_are_consumed_in_order_one_per_call() {
        let (mem, faults) = setup(b"x").await;
        faults.push(Op::Stat, Fault::Status(503));
        faults.push(Op::Stat, Fault::Status(429));
        faults.push(Op::Delete, Fault::Status(412));
        let kinds: Vec<_> = [
            faults.stat(&key()).await.map(|_| ()),
            faults.stat(&key()).await.map(|_| ()),
            faults.stat(&key()).await.map(|_| ()),
        ]
        .into_iter()
        .map(|r| r.err().map(|e| e.kind()))
        .collect();
        assert_eq!(
            kinds,
            [
                Some(ErrorKind::Transient),
                Some(ErrorKind::RateLimited),
                None
            ]
        );
        assert_eq!(faults.calls(Op::Stat), 3);
        assert_eq!(
            mem.calls(Op::Stat),
            1,
            "faulted calls never reach the inner store"
        );
        assert_eq!(faults.pending(Op::Delete), 1);
    }

    #[tokio::test]
    async fn pass_aims_the_next_fault_at_a_later_call() {
        let (mem, faults) = setup(b"x").await;
        faults.push_n(Op::Stat, Fault::Pass, 2);
        faults.push(Op::Stat, Fault::Status(503));
        let mut failed = Vec::new();
        for _ in 0..4 {
            failed.push(faults.stat(&key()).await.is_err());
        }
        assert_eq!(failed, [false, false, true, false]);
        assert_eq!(mem.calls(Op::Stat), 3, "passed calls reach the inner store");
    }

    #[tokio::test]
    async fn status_after_commit_applies_the_change() {
        let (mem, faults) = setup(b"x").await;
        faults.push(Op::Delete, Fault::StatusAfterCommit(503));
        let err = faults
            .delete(&key(), Preconditions::NONE)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Transient);
        assert!(mem.keys().is_empty());
    }

    #[tokio::test]
    async fn reset_mid_stream_cuts_after_the_given_bytes() {
        let (_mem, faults) = setup(b"0123456789").await;
        faults.push(Op::Read, Fault::ResetMidStream { after_bytes: 4 });
        let items: Vec<_> = faults
            .read(&key(), None, ByteRange::ALL)
            .await
            .unwrap()
            .collect()
            .await;
        assert_eq!(items.len(), 2);
        assert_eq!(&items[0].as_ref().unwrap()[..], b"0123");
        assert_eq!(items[1].as_ref().unwrap_err().kind(), ErrorKind::Transient);
    }

    #[tokio::test(start_paused = true)]
    async fn stall_never_completes_and_latency_delays() {
        let (_mem, faults) = setup(b"x").await;
        faults.push(Op::Stat, Fault::Stall);
        let stalled = tokio::time::timeout(Duration::from_secs(3600), faults.stat(&key())).await;
        assert!(stalled.is_err(), "a stalled call must stay pending");

        faults.push(Op::Stat, Fault::Latency(Duration::from_secs(5)));
        let early = tokio::time::timeout(Duration::from_secs(4), faults.stat(&key())).await;
        assert!(early.is_err(), "the delay applies");
        let late = tokio::time::timeout(Duration::from_secs(6), faults.stat(&key())).await;
        assert!(
            late.unwrap().is_ok(),
            "the delay applies to every call and then proceeds"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stall_mid_stream_delivers_then_hangs() {
        let (_mem, faults) = setup(b"0123456789").await;
        faults.push(Op::Read, Fault::StallMidStream { after_bytes: 3 });
        let mut stream = faults.read(&key(), None, ByteRange::ALL).await.unwrap();
        assert_eq!(&stream.next().await.unwrap().unwrap()[..], b"012");
        let next = tokio::time::timeout(Duration::from_secs(3600), stream.next()).await;
        assert!(next.is_err());
    }
}
