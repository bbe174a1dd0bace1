//! [`MemStore`]: objects in memory, with Cloud Storage's semantics.
//!
//! Meant for tests and benchmarks of the layers above the store: generations, metagenerations,
//! every precondition, delimiter listings with stable page tokens, ranged reads delivered in
//! chunks, streaming writes that create nothing when their source fails, and resumable upload
//! sessions (whole 256 KiB blocks, resent bytes checked against those held, CRC32C and
//! preconditions checked at finalize) — the same contract as the GCS backend, checked by the
//! shared conformance suite.

mod list;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::op::OpCounters;
use super::{
    ByteRange, ByteStream, ChunkData, ErrorKind, Generation, ListPage, ListRequest, MetadataPatch,
    Metageneration, ObjectFacts, ObjectKey, ObjectMeta, ObjectStore, Op, Preconditions, StoreError,
    StoreResult, UploadSession, UploadStatus, WriteAttrs, WriteSource,
};

/// Size of the chunks a read stream yields (256 KiB), so consumers see several chunks.
pub const READ_CHUNK: usize = 256 * 1024;

/// Every request of a resumable upload but the last carries a whole number of these.
pub const UPLOAD_BLOCK: u64 = 256 * 1024;

/// A resumable upload session.
#[derive(Debug)]
struct Session {
    key: ObjectKey,
    preconditions: Preconditions,
    attrs: WriteAttrs,
    facts: ObjectFacts,
    /// The bytes held so far.
    data: BytesMut,
    /// Set once finalized: the object it created.
    done: Option<ObjectMeta>,
}

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
    /// Resumable uploads by id; a session that failed at finalize or was cancelled is removed.
    sessions: HashMap<String, Session>,
    /// The last session id handed out.
    last_session: u64,
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
    /// Every read's key and range, in order.
    reads: Mutex<Vec<(ObjectKey, ByteRange)>>,
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

    /// Every read so far (key and range), in the order they were made.
    pub fn reads(&self) -> Vec<(ObjectKey, ByteRange)> {
        self.reads.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many resumable uploads are started and neither finalized, failed nor cancelled.
    pub fn open_uploads(&self) -> usize {
        self.lock()
            .sessions
            .values()
            .filter(|s| s.done.is_none())
            .count()
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

fn no_session() -> StoreError {
    StoreError::new(ErrorKind::NotFound, "no such upload session")
}

/// The bytes of one upload request.
async fn chunk_bytes(data: ChunkData) -> StoreResult<Bytes> {
    match data {
        ChunkData::Memory(parts) => {
            if parts.len() == 1 {
                return Ok(parts.into_iter().next().expect("one part"));
            }
            let mut buf = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
            for p in &parts {
                buf.extend_from_slice(p);
            }
            Ok(buf.freeze())
        }
        ChunkData::File { path, offset, len } => {
            let read = |e| {
                StoreError::with_source(
                    ErrorKind::InvalidArgument,
                    format!("cannot read upload source {}", path.display()),
                    e,
                )
            };
            let data = tokio::fs::read(&path).await.map_err(read)?;
            let end = offset.saturating_add(len);
            if end > data.len() as u64 {
                return Err(StoreError::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "upload source {} has {} bytes, not {end}",
                        path.display(),
                        data.len()
                    ),
                ));
            }
            // Both bounds are <= data.len(), a usize.
            Ok(Bytes::from(data).slice(offset as usize..end as usize))
        }
    }
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
        self.reads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((key.clone(), range));
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

    async fn start_upload(
        &self,
        key: &ObjectKey,
        preconditions: Preconditions,
        attrs: &WriteAttrs,
        facts: ObjectFacts,
    ) -> StoreResult<UploadSession> {
        self.calls.bump(Op::StartUpload);
        let mut state = self.lock();
        // As GCS does, refuse at once an upload whose preconditions already fail.
        check(&preconditions, key, state.objects.get(key).map(|s| &s.meta))?;
        state.last_session += 1;
        let id = format!("mem-upload-{}", state.last_session);
        state.sessions.insert(
            id.clone(),
            Session {
                key: key.clone(),
                preconditions,
                attrs: attrs.clone(),
                facts,
                data: BytesMut::new(),
                done: None,
            },
        );
        Ok(UploadSession::new(key.clone(), id))
    }

    async fn upload_chunk(
        &self,
        session: &UploadSession,
        offset: u64,
        data: ChunkData,
        last: Option<u32>,
    ) -> StoreResult<UploadStatus> {
        self.calls.bump(Op::UploadChunk);
        let data = chunk_bytes(data).await?;
        let mut state = self.lock();
        let state = &mut *state;
        let s = state
            .sessions
            .get_mut(session.id())
            .ok_or_else(no_session)?;
        if let Some(meta) = &s.done {
            return Ok(UploadStatus::Done(meta.clone()));
        }
        let held = s.data.len() as u64;
        let len = data.len() as u64;
        if offset > held {
            return Err(StoreError::new(
                ErrorKind::InvalidArgument,
                format!(
                    "upload of {}: offset {offset} is past the {held} bytes held",
                    s.key
                ),
            ));
        }
        if last.is_none() && !len.is_multiple_of(UPLOAD_BLOCK) {
            return Err(StoreError::new(
                ErrorKind::InvalidArgument,
                format!(
                    "upload of {}: {len} bytes is not a whole number of 256 KiB blocks",
                    s.key
                ),
            ));
        }
        // Bytes below what is held must be the ones held: a client that resends anything else
        // (as google-cloud-storage 1.21 does after a partial persist) is caught here.
        // `offset` <= held, and both are lengths of in-memory buffers.
        let overlap = (held - offset).min(len) as usize;
        let start = offset as usize;
        if s.data[start..start + overlap] != data[..overlap] {
            return Err(StoreError::new(
                ErrorKind::InvalidArgument,
                format!(
                    "upload of {}: bytes resent from {offset} differ from those held",
                    s.key
                ),
            ));
        }
        s.data.extend_from_slice(&data[overlap..]);
        let Some(crc) = last else {
            return Ok(UploadStatus::Persisted(s.data.len() as u64));
        };
        // Finalize: the checksum and size first, then the preconditions. A failed finalize
        // ends the session, as on GCS.
        let held = s.data.len() as u64;
        let have = crc32c::crc32c(&s.data);
        let bad = if have != crc || s.facts.crc32c.is_some_and(|c| c != have) {
            Some(format!(
                "crc32c mismatch: data has {have:#010x}, declared {crc:#010x}{}",
                s.facts
                    .crc32c
                    .map(|c| format!(" and {c:#010x} at start"))
                    .unwrap_or_default()
            ))
        } else if s.facts.size.is_some_and(|n| n != held) {
            Some(format!(
                "size mismatch: {held} bytes, {} declared at start",
                s.facts.size.unwrap_or_default()
            ))
        } else {
            None
        };
        let key = s.key.clone();
        if let Some(why) = bad {
            state.sessions.remove(session.id());
            return Err(StoreError::new(
                ErrorKind::InvalidArgument,
                format!("upload of {key}: {why}"),
            ));
        }
        if let Err(e) = check(
            &s.preconditions,
            &key,
            state.objects.get(&key).map(|o| &o.meta),
        ) {
            state.sessions.remove(session.id());
            return Err(e);
        }
        let data = std::mem::take(&mut s.data).freeze();
        let (content_type, metadata) = (s.attrs.content_type.clone(), s.attrs.metadata.clone());
        let meta = state.put(&key, data, content_type, metadata);
        if let Some(s) = state.sessions.get_mut(session.id()) {
            s.done = Some(meta.clone());
        }
        Ok(UploadStatus::Done(meta))
    }

    async fn upload_status(&self, session: &UploadSession) -> StoreResult<UploadStatus> {
        self.calls.bump(Op::UploadStatus);
        let state = self.lock();
        let s = state.sessions.get(session.id()).ok_or_else(no_session)?;
        Ok(match &s.done {
            Some(meta) => UploadStatus::Done(meta.clone()),
            None => UploadStatus::Persisted(s.data.len() as u64),
        })
    }

    async fn cancel_upload(&self, session: &UploadSession) -> StoreResult<()> {
        self.calls.bump(Op::CancelUpload);
        let mut state = self.lock();
        match state.sessions.get(session.id()) {
            None => Err(no_session()),
            // A finalized upload has nothing left to cancel.
            Some(s) if s.done.is_some() => Ok(()),
            Some(_) => {
                state.sessions.remove(session.id());
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests;
