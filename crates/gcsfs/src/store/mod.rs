//! The object-store layer: the only way the filesystem reaches Cloud Storage.
//!
//! - [`ObjectStore`] is the trait every backend implements; the layers above hold an
//!   `Arc<dyn ObjectStore>` and never see SDK or HTTP types.
//! - `gcs` talks to Cloud Storage (object data through Google's official crate, metadata calls
//!   through the JSON API).
//! - `mem::MemStore` keeps objects in memory with GCS's semantics (generations, preconditions,
//!   delimiter listings, pagination); `fault::FaultStore` wraps any store and injects failures.
//! - `retry::RetryStore` retries idempotent calls that failed transiently, under a deadline;
//!   its writes go through `upload`, the one resumable-upload driver (resume exactly where
//!   the service stopped, CRC32C checked at finalize, wrong objects deleted).
//! - `gate::GatedStore` holds every call until a start-up check (the bucket exists) has passed.

mod error;
#[cfg(any(test, feature = "test-util"))]
pub mod fault;
pub mod gate;
pub mod gcs;
#[cfg(any(test, feature = "test-util"))]
pub mod mem;
mod op;
pub mod retry;
mod types;
mod upload;

pub use error::{ErrorKind, StoreError, StoreResult};
#[cfg(any(test, feature = "test-util"))]
pub use fault::{Fault, FaultStore};
pub use gate::{Gate, GateKeeper, GatedStore};
#[cfg(any(test, feature = "test-util"))]
pub use mem::MemStore;
pub use op::Op;
pub use retry::{RetryConfig, RetryStats, RetryStore};
pub use types::{
    ByteRange, ByteStream, ChunkData, Generation, ListPage, ListRequest, MetadataPatch,
    Metageneration, ObjectFacts, ObjectKey, ObjectMeta, Preconditions, UploadSession, UploadStatus,
    WriteAttrs, WriteSource,
};
pub use upload::{MAX_SESSIONS, SINGLE_REQUEST_MAX, STREAM_CHUNK};

use async_trait::async_trait;

/// An object store with GCS's semantics.
///
/// Every method is a single logical GCS call. Implementations must be cheap to share
/// (`Arc<dyn ObjectStore>`) and safe to call concurrently.
#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug + 'static {
    /// The live generation's metadata. `NotFound` if there is no such object.
    async fn stat(&self, key: &ObjectKey) -> StoreResult<ObjectMeta>;

    /// One page of a listing, objects and (with a delimiter) prefixes in key order.
    async fn list(&self, request: &ListRequest) -> StoreResult<ListPage>;

    /// The bytes of `range`, pinned to `generation` when given (a replaced generation gives
    /// `NotFound`). A range that starts at or past the end yields an empty stream.
    async fn read(
        &self,
        key: &ObjectKey,
        generation: Option<Generation>,
        range: ByteRange,
    ) -> StoreResult<ByteStream>;

    /// Replaces (or creates) the object with `source`'s data; returns the new generation's
    /// metadata. Every byte is checked by the service against the CRC32C of what was written
    /// before the object is created; backends may use a resumable upload (below) for it.
    async fn write(
        &self,
        key: &ObjectKey,
        source: WriteSource,
        preconditions: Preconditions,
        attrs: &WriteAttrs,
    ) -> StoreResult<ObjectMeta>;

    /// Deletes the live generation.
    async fn delete(&self, key: &ObjectKey, preconditions: Preconditions) -> StoreResult<()>;

    /// Server-side copy (GCS `rewriteTo`, repeated until done) of `src` (at `src_generation`
    /// when given) to `dst`; `preconditions` apply to `dst`. The copy keeps `src`'s metadata.
    async fn copy(
        &self,
        src: &ObjectKey,
        src_generation: Option<Generation>,
        dst: &ObjectKey,
        preconditions: Preconditions,
    ) -> StoreResult<ObjectMeta>;

    /// Changes user metadata without touching data; bumps the metageneration.
    async fn patch_metadata(
        &self,
        key: &ObjectKey,
        patch: &MetadataPatch,
        preconditions: Preconditions,
    ) -> StoreResult<ObjectMeta>;

    /// Starts a resumable upload of `key`: nothing is visible until [`upload_chunk`] finalizes
    /// it. `preconditions` hold at finalize (a service may also check them now); `facts` are
    /// checked at finalize. Starting creates nothing, so it may be repeated.
    ///
    /// [`upload_chunk`]: ObjectStore::upload_chunk
    async fn start_upload(
        &self,
        key: &ObjectKey,
        preconditions: Preconditions,
        attrs: &WriteAttrs,
        facts: ObjectFacts,
    ) -> StoreResult<UploadSession>;

    /// Sends `data` as the object's bytes from `offset`, which must not be past what the
    /// service holds; bytes below what it holds must be the same as before and are ignored.
    /// A request that is not the last carries a whole number of 256 KiB blocks. The service
    /// may keep only part of a request (then answers with what it holds), or part of it and
    /// then fail: after a failure, [`upload_status`] tells where to go on from.
    ///
    /// `last` (the CRC32C of the whole object) makes this the object's end: the service
    /// checks the checksum and then the preconditions, and creates the object (`Done`). A
    /// finalized session answers every later request with the object it created.
    ///
    /// [`upload_status`]: ObjectStore::upload_status
    async fn upload_chunk(
        &self,
        session: &UploadSession,
        offset: u64,
        data: ChunkData,
        last: Option<u32>,
    ) -> StoreResult<UploadStatus>;

    /// Where an upload stands, without sending data. `NotFound`: the session is gone
    /// (cancelled, failed at finalize, or expired).
    async fn upload_status(&self, session: &UploadSession) -> StoreResult<UploadStatus>;

    /// Abandons an upload: nothing is created. `NotFound` if the session is unknown.
    async fn cancel_upload(&self, session: &UploadSession) -> StoreResult<()>;
}
