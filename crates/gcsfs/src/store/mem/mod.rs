//! [`MemStore`]: objects in memory, with Cloud Storage's semantics.
//!
//! Meant for tests and benchmarks of the layers above the store: generations, metagenerations,
//! every precondition, delimiter listings with stable page tokens, ranged reads delivered in
//! chunks, and streaming writes that create nothing when their source fails — the same contract
//! as the GCS backend, checked by the shared conformance suite.

mod list;

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::op::OpCounters;
use super::{
    ByteRange, ByteStream, ErrorKind, Generation, ListPage, ListRequest, MetadataPatch,
    Metageneration, ObjectKey, ObjectMeta, ObjectStore, Op, Preconditions, StoreError, StoreResult,
    WriteAttrs, WriteSource,
};

/// Size of the chunks a read stream yields (256 KiB), so consumers see several chunks.
pub const READ_CHUNK: usize = 256 * 1024;

/// GCS's limit on the number of sources of one compose request.
pub const MAX_COMPOSE_SOURCES: usize = 32;

/// One live object generation.
#[derive(Clone, Debug)]
struct Stored {
    meta: ObjectMeta,
    data: Bytes,
}

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<ObjectKey, Stored>,
    /// The last generation handed out; store-wide, so generations strictly increase.
    last_generation: i64,
}

impl State {
    fn next_generation(&mut self) -> Generation {
        self.last_generation += 1;
        Generation(self.last_generation)
    }

    /// Creates a new live generation of `key`, replacing any previous one.
    fn put(
        &mut self,
        key: &ObjectKey,
        data: Bytes,
        content_type: Option<String>,
        metadata: BTreeMap<String, String>,
    ) -> ObjectMeta {
        let meta = ObjectMeta {
            key: key.clone(),
            size: data.len() as u64,
            generation: self.next_generation(),
            metageneration: Metageneration(1),
            updated: SystemTime::now(),
            crc32c: Some(crc32c::crc32c(&data)),
            content_type,
            metadata,
        };
        let stored = Stored {
            meta: meta.clone(),
            data,
        };
        self.objects.insert(key.clone(), stored);
        meta
    }
}

/// An in-memory [`ObjectStore`] with Cloud Storage's semantics (a bucket without versioning).
///
/// - Generations come from one store-wide counter, so they strictly increase across all
///   objects; the metageneration starts at 1 and grows by one with each metadata patch.
/// - Only the live generation is kept: a read pinned to any other generation is `NotFound`.
/// - Every precondition of every call is checked atomically with the change.
/// - One `std::sync::Mutex` guards the map; it is never held across an `.await`.
#[derive(Debug, Default)]
pub struct MemStore {
    state: Mutex<State>,
    calls: OpCounters,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The keys of every live object, in order.
    pub fn keys(&self) -> Vec<ObjectKey> {
        self.lock().objects.keys().cloned().collect()
    }

    /// The live generation of `key`: its metadata and data.
    pub fn get(&self, key: &ObjectKey) -> Option<(ObjectMeta, Bytes)> {
        self.lock()
            .objects
            .get(key)
            .map(|s| (s.meta.clone(), s.data.clone()))
    }

    /// How many times `op` was called on this store (failed calls included).
    pub fn calls(&self, op: Op) -> u64 {
        self.calls.get(op)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-changed (every change is a
        // single insert or remove), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn not_found(key: &ObjectKey) -> StoreError {
    StoreError::new(ErrorKind::NotFound, format!("no such object: {key}"))
}

/// Checks `pre` against the live generation `live` (None: the object does not exist).
fn check(pre: &Preconditions, key: &ObjectKey, live: Option<&ObjectMeta>) -> StoreResult<()> {
    if let Some(want) = pre.if_generation_match {
        let have = live.map_or(Generation::NONE, |m| m.generation);
        if have != want {
            return Err(StoreError::new(
                ErrorKind::PreconditionFailed,
                format!("{key}: ifGenerationMatch={want}, live generation is {have}"),
            ));
        }
    }
    if let Some(want) = pre.if_metageneration_match
        && live.map(|m| m.metageneration) != Some(want)
    {
        return Err(StoreError::new(
            ErrorKind::PreconditionFailed,
            format!("{key}: ifMetagenerationMatch={want} does not hold"),
        ));
    }
    Ok(())
}

/// Reads a write's whole source into memory.
async fn collect(source: WriteSource) -> StoreResult<Bytes> {
    match source {
        WriteSource::Bytes(b) => Ok(b),
        WriteSource::File { path, crc32c } => {
            let data = tokio::fs::read(&path).await.map_err(|e| {
                StoreError::with_source(
                    ErrorKind::InvalidArgument,
                    format!("cannot read upload source {}", path.display()),
                    e,
                )
            })?;
            if let Some(want) = crc32c {
                let have = crc32c::crc32c(&data);
                if have != want {
                    // What GCS answers (400) when the declared checksum does not match the data.
                    return Err(StoreError::new(
                        ErrorKind::InvalidArgument,
                        format!("crc32c mismatch: declared {want:#010x}, data has {have:#010x}"),
                    ));
                }
            }
            Ok(Bytes::from(data))
        }
        WriteSource::Stream(mut stream) => {
            let mut buf = BytesMut::new();
            while let Some(chunk) = stream.next().await {
                buf.extend_from_slice(&chunk?);
            }
            Ok(buf.freeze())
        }
    }
}

/// The part of `data` that `range` covers, clamped to the end.
fn slice(data: &Bytes, range: ByteRange) -> Bytes {
    let len = data.len() as u64;
    let start = range.start.min(len);
    let end = range.end.map_or(len, |e| e.min(len)).max(start);
    // Both bounds are <= len, which is a usize.
    data.slice(start as usize..end as usize)
}

#[async_trait]
impl ObjectStore for MemStore {
    async fn stat(&self, key: &ObjectKey) -> StoreResult<ObjectMeta> {
        self.calls.bump(Op::Stat);
        self.lock()
            .objects
            .get(key)
            .map(|s| s.meta.clone())
            .ok_or_else(|| not_found(key))
    }

    async fn list(&self, request: &ListRequest) -> StoreResult<ListPage> {
        self.calls.bump(Op::List);
        list::list_page(&self.lock().objects, request)
    }

    async fn read(
        &self,
        key: &ObjectKey,
        generation: Option<Generation>,
        range: ByteRange,
    ) -> StoreResult<ByteStream> {
        self.calls.bump(Op::Read);
        let data = {
            let state = self.lock();
            let stored = state.objects.get(key).ok_or_else(|| not_found(key))?;
            if let Some(g) = generation
                && g != stored.meta.generation
            {
                return Err(StoreError::new(
                    ErrorKind::NotFound,
                    format!("{key}: generation {g} is not live"),
                ));
            }
            slice(&stored.data, range)
        };
        let chunks: Vec<StoreResult<Bytes>> = (0..data.len())
            .step_by(READ_CHUNK)
            .map(|at| Ok(data.slice(at..(at + READ_CHUNK).min(data.len()))))
            .collect();
        Ok(futures::stream::iter(chunks).boxed())
    }

    async fn write(
        &self,
        key: &ObjectKey,
        source: WriteSource,
        preconditions: Preconditions,
        attrs: &WriteAttrs,
    ) -> StoreResult<ObjectMeta> {
        self.calls.bump(Op::Write);
        // Like a resumable upload, preconditions are checked when the upload is finalized.
        let data = collect(source).await?;
        let mut state = self.lock();
        check(&preconditions, key, state.objects.get(key).map(|s| &s.meta))?;
        Ok(state.put(
            key,
            data,
            attrs.content_type.clone(),
            attrs.metadata.clone(),
        ))
    }

    async fn delete(&self, key: &ObjectKey, preconditions: Preconditions) -> StoreResult<()> {
        self.calls.bump(Op::Delete);
        let mut state = self.lock();
        let live = state.objects.get(key).ok_or_else(|| not_found(key))?;
        check(&preconditions, key, Some(&live.meta))?;
        state.objects.remove(key);
        Ok(())
    }

    async fn copy(
        &self,
        src: &ObjectKey,
        src_generation: Option<Generation>,
        dst: &ObjectKey,
        preconditions: Preconditions,
    ) -> StoreResult<ObjectMeta> {
        self.calls.bump(Op::Copy);
        let mut state = self.lock();
        let source = state.objects.get(src).ok_or_else(|| not_found(src))?;
        if let Some(g) = src_generation
            && g != source.meta.generation
        {
            return Err(StoreError::new(
                ErrorKind::NotFound,
                format!("{src}: generation {g} is not live"),
            ));
        }
        let (data, content_type, metadata) = (
            source.data.clone(),
            source.meta.content_type.clone(),
            source.meta.metadata.clone(),
        );
        check(&preconditions, dst, state.objects.get(dst).map(|s| &s.meta))?;
        Ok(state.put(dst, data, content_type, metadata))
    }

    async fn compose(
        &self,
        sources: &[ObjectKey],
        dst: &ObjectKey,
        preconditions: Preconditions,
        attrs: &WriteAttrs,
    ) -> StoreResult<ObjectMeta> {
        self.calls.bump(Op::Compose);
        if sources.is_empty() || sources.len() > MAX_COMPOSE_SOURCES {
            return Err(StoreError::new(
                ErrorKind::InvalidArgument,
                format!(
                    "compose takes 1 to {MAX_COMPOSE_SOURCES} sources, got {}",
                    sources.len()
                ),
            ));
        }
        let mut state = self.lock();
        let mut parts = Vec::with_capacity(sources.len());
        for key in sources {
            let stored = state.objects.get(key).ok_or_else(|| not_found(key))?;
            parts.push(stored.data.clone());
        }
        check(&preconditions, dst, state.objects.get(dst).map(|s| &s.meta))?;
        let mut data = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
        for part in &parts {
            data.extend_from_slice(part);
        }
        Ok(state.put(
            dst,
            data.freeze(),
            attrs.content_type.clone(),
            attrs.metadata.clone(),
        ))
    }

    async fn patch_metadata(
        &self,
        key: &ObjectKey,
        patch: &MetadataPatch,
        preconditions: Preconditions,
    ) -> StoreResult<ObjectMeta> {
        self.calls.bump(Op::Patch);
        let mut state = self.lock();
        let stored = state.objects.get_mut(key).ok_or_else(|| not_found(key))?;
        check(&preconditions, key, Some(&stored.meta))?;
        let meta = &mut stored.meta;
        for (name, value) in patch {
            match value {
                Some(v) => meta.metadata.insert(name.clone(), v.clone()),
                None => meta.metadata.remove(name),
            };
        }
        meta.metageneration = Metageneration(meta.metageneration.0 + 1);
        meta.updated = SystemTime::now();
        Ok(meta.clone())
    }
}

#[cfg(test)]
mod tests;
