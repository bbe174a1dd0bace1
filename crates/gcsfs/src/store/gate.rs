//! [`GatedStore`]: a store whose calls wait until a start-up check has passed.
//!
//! `gcsfs mount` checks that the bucket exists and may be listed (one round trip) while the
//! kernel mount is being set up, instead of before: the mount answers as soon as it is in place,
//! and every call that needs the bucket waits for the check. If the check fails, those calls
//! fail with its kind of error (the mount is then taken down by its owner).

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

use super::{
    ByteRange, ByteStream, ChunkData, ErrorKind, Generation, ListPage, ListRequest, MetadataPatch,
    ObjectFacts, ObjectKey, ObjectMeta, ObjectStore, Preconditions, StoreError, StoreResult,
    UploadSession, UploadStatus, WriteAttrs, WriteSource,
};

/// The outcome of the start-up check, as calls see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Not known yet: calls wait.
    Closed,
    /// Passed: calls go through.
    Open,
    /// Failed with this kind of error: calls fail with it.
    Failed(ErrorKind),
}

/// Opens or fails a [`GatedStore`]'s gate.
#[derive(Debug)]
pub struct GateKeeper(watch::Sender<Gate>);

impl GateKeeper {
    /// Lets calls through (`Ok`) or fails them with the error's kind.
    pub fn decide(self, outcome: &StoreResult<()>) {
        let gate = match outcome {
            Ok(()) => Gate::Open,
            Err(e) => Gate::Failed(e.kind()),
        };
        let _ = self.0.send(gate);
    }
}

/// Wraps a store so that every call first waits for its [`GateKeeper`]'s decision. A keeper
/// dropped without deciding fails the calls.
#[derive(Debug)]
pub struct GatedStore {
    inner: Arc<dyn ObjectStore>,
    gate: watch::Receiver<Gate>,
}

impl GatedStore {
    /// `inner` behind a closed gate, and the keeper that opens it.
    pub fn new(inner: Arc<dyn ObjectStore>) -> (Self, GateKeeper) {
        let (tx, rx) = watch::channel(Gate::Closed);
        (Self { inner, gate: rx }, GateKeeper(tx))
    }

    async fn pass(&self) -> StoreResult<()> {
        let mut gate = self.gate.clone();
        let decided = gate.wait_for(|g| *g != Gate::Closed).await.map(|g| *g);
        match decided {
            Ok(Gate::Open) => Ok(()),
            Ok(Gate::Failed(kind)) => Err(StoreError::new(kind, "the bucket check failed")),
            Ok(Gate::Closed) | Err(_) => Err(StoreError::new(
                ErrorKind::Other,
                "the bucket check ended without an answer",
            )),
        }
    }
}

#[async_trait]
impl ObjectStore for GatedStore {
    async fn stat(&self, key: &ObjectKey) -> StoreResult<ObjectMeta> {
        self.pass().await?;
        self.inner.stat(key).await
    }

    async fn list(&self, request: &ListRequest) -> StoreResult<ListPage> {
        self.pass().await?;
        self.inner.list(request).await
    }

    async fn read(
        &self,
        key: &ObjectKey,
        generation: Option<Generation>,
        range: ByteRange,
    ) -> StoreResult<ByteStream> {
        self.pass().await?;
        self.inner.read(key, generation, range).await
    }

    async fn write(
        &self,
        key: &ObjectKey,
        source: WriteSource,
        preconditions: Preconditions,
        attrs: &WriteAttrs,
    ) -> StoreResult<ObjectMeta> {
        self.pass().await?;
        self.inner.write(key, source, preconditions, attrs).await
    }

    async fn delete(&self, key: &ObjectKey, preconditions: Preconditions) -> StoreResult<()> {
        self.pass().await?;
        self.inner.delete(key, preconditions).await
    }

    async fn copy(
        &self,
        src: &ObjectKey,
        src_generation: Option<Generation>,
        dst: &ObjectKey,
        preconditions: Preconditions,
    ) -> StoreResult<ObjectMeta> {
        self.pass().await?;
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
        self.pass().await?;
        self.inner.patch_metadata(key, patch, preconditions).await
    }

    async fn start_upload(
        &self,
        key: &ObjectKey,
        preconditions: Preconditions,
        attrs: &WriteAttrs,
        facts: ObjectFacts,
    ) -> StoreResult<UploadSession> {
        self.pass().await?;
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
        self.pass().await?;
        self.inner.upload_chunk(session, offset, data, last).await
    }

    async fn upload_status(&self, session: &UploadSession) -> StoreResult<UploadStatus> {
        self.pass().await?;
        self.inner.upload_status(session).await
    }

    async fn cancel_upload(&self, session: &UploadSession) -> StoreResult<()> {
        self.pass().await?;
        self.inner.cancel_upload(session).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MemStore, Op};

    #[tokio::test]
    async fn calls_wait_for_the_gate_then_pass_or_fail() {
        let mem = Arc::new(MemStore::new());
        let key = ObjectKey::new("k").unwrap();
        let (store, keeper) = GatedStore::new(mem.clone());
        let store = Arc::new(store);
        let waiting = tokio::spawn({
            let (store, key) = (store.clone(), key.clone());
            async move { store.stat(&key).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert_eq!(
            mem.calls(Op::Stat),
            0,
            "nothing reaches the store before the gate opens"
        );
        keeper.decide(&Ok(()));
        let r = waiting.await.unwrap();
        assert_eq!(r.unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(mem.calls(Op::Stat), 1);

        let (store, keeper) = GatedStore::new(mem.clone());
        keeper.decide(&Err(StoreError::new(ErrorKind::PermissionDenied, "no")));
        let e = store.stat(&key).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        assert_eq!(mem.calls(Op::Stat), 1, "a failed gate stops every call");

        let (store, keeper) = GatedStore::new(mem.clone());
        drop(keeper);
        assert_eq!(store.stat(&key).await.unwrap_err().kind(), ErrorKind::Other);
    }
}
