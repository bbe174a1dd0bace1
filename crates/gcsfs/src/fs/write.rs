//! Write-back state of one file: a local staging file holding the file's full contents while it
//! is being changed, and the generation the changes are based on.
//!
//! Every open handle of an inode shares one [`FileCell`]. It has two tokio mutexes:
//!
//! - `publish` serialises what changes the file's object: uploads, and the unlink or rename of
//!   the file. It is held across the network calls of an upload. Reads, writes, `stat` and
//!   `open` never take it, so none of them waits for an upload.
//! - `state` guards the local data ([`WriteState`]). An upload holds it only to take a
//!   snapshot of the data and, after the network call, to record the result; a write made in
//!   between goes to a copy of the staging file (copy on write, see [`Staged`]) and leaves the
//!   file dirty, to be uploaded next on top of the generation the upload made. It is held
//!   across network I/O only where the data itself is not local yet: staging an existing
//!   object for its first change, and settling a streamed upload.
//!
//! Where the file's changes stand (staged, queued, uploading, failed, ...) is the cell's state
//! machine, [`Lifecycle`] (`lifecycle.rs`), changed only through the cell's event methods.
//!
//! Lock order: `publish`, then `state`, then the inode-table lock (a `parking_lot` mutex,
//! never held across `.await`). Nothing takes `publish` while holding `state`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tempfile::NamedTempFile;
use tokio::sync::mpsc;

use super::error::{FsError, FsResult};
use super::lifecycle::{Lifecycle, Phase};
use super::memory::{Charge, MemoryBudget, Room, StagedCharge};
use super::page_cache::PageGate;
use super::stats::InFlight;
use crate::store::{
    ByteRange, ErrorKind, Generation, ObjectKey, ObjectMeta, ObjectStore, Preconditions,
    StoreError, StoreResult, WriteAttrs, WriteSource,
};

/// Shared write-back state of one inode.
#[derive(Debug)]
pub struct FileCell {
    /// Held by whatever changes the file's object (an upload, an unlink, a rename).
    pub publish: tokio::sync::Mutex<()>,
    pub state: tokio::sync::Mutex<WriteState>,
    /// Which generation the kernel's page cache may be fed (see `page_cache.rs`).
    pub page_gate: Arc<PageGate>,
    /// Where the file's changes stand (see `lifecycle.rs`); changed only through the methods
    /// below, with `state` held (but for `queue` and `dequeued`).
    life: parking_lot::Mutex<Lifecycle>,
    /// Mirrors `life`'s phase being dirty, so the inode table can see it without a lock.
    dirty: AtomicBool,
    /// Why the last upload made in the background failed, until a `close` or `fsync` of the
    /// file reports it.
    background_error: parking_lot::Mutex<Option<Arc<FsError>>>,
}

impl FileCell {
    pub fn new(base_generation: Generation) -> Self {
        Self {
            publish: tokio::sync::Mutex::new(()),
            state: tokio::sync::Mutex::new(WriteState {
                staged: None,
                stream: None,
                head: None,
                base_generation,
            }),
            page_gate: Arc::default(),
            life: parking_lot::Mutex::new(Lifecycle::default()),
            dirty: AtomicBool::new(false),
            background_error: parking_lot::Mutex::new(None),
        }
    }

    /// Whether there are changes not yet uploaded.
    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }

    /// Where the file's changes stand.
    pub fn phase(&self) -> Phase {
        self.life.lock().phase()
    }

    /// Takes a transition of the file's state machine (and mirrors whether it is dirty).
    fn life<R>(&self, f: impl FnOnce(&mut Lifecycle) -> R) -> R {
        let mut life = self.life.lock();
        let r = f(&mut life);
        self.dirty.store(life.phase().is_dirty(), Ordering::Release);
        r
    }

    /// One more change of the local data (a write, a truncate, an attribute).
    pub fn changed(&self) {
        self.life(Lifecycle::changed);
    }

    /// A new file's bytes start going into a streamed upload.
    pub fn stream_started(&self) {
        self.life(Lifecycle::stream_started);
    }

    /// The streamed upload made its object.
    pub fn stream_done(&self) {
        self.life(Lifecycle::stream_done);
    }

    /// The streamed upload failed: its bytes are gone.
    pub fn stream_lost(&self) {
        self.life(Lifecycle::stream_lost);
    }

    /// Queued for a background upload: whether a new upload task is needed.
    pub fn queue(&self) -> bool {
        self.life(Lifecycle::queue)
    }

    /// Its queued upload task starts.
    pub fn dequeued(&self) {
        self.life(Lifecycle::dequeued);
    }

    /// An upload takes its snapshot (with `state` held): the change count it stands for.
    pub fn upload_started(&self) -> u64 {
        self.life(Lifecycle::upload_started)
    }

    /// After an upload of the snapshot taken at change count `seen`: the file is clean if no
    /// change was made since (returns whether it is). Called with `state` held, as every
    /// change is made, so no change can slip between the check and the result.
    pub fn uploaded(&self, seen: u64) -> bool {
        self.life(|l| l.uploaded(seen))
    }

    /// The upload failed; its changes are kept.
    pub fn upload_failed(&self) {
        self.life(Lifecycle::upload_failed);
    }

    /// The upload lost its precondition race; the changes went to the conflicts directory.
    pub fn conflicted(&self) {
        self.life(Lifecycle::conflicted);
    }

    /// Dirty, but there was nothing to send.
    pub fn nothing_to_upload(&self) {
        self.life(Lifecycle::nothing_to_upload);
    }

    /// The file is gone: its changes go nowhere.
    pub fn unlinked(&self) {
        self.life(Lifecycle::unlinked);
    }

    /// How long the oldest pending change has waited, if any.
    pub fn dirty_age(&self) -> Option<std::time::Duration> {
        self.life.lock().dirty_age()
    }

    /// Whether the age bound should queue the file now (see [`Lifecycle::due`]).
    pub fn due(&self, max_age: std::time::Duration) -> bool {
        self.life.lock().due(max_age)
    }

    /// Whether the file's pending changes may be uploaded now while it may still be written:
    /// not while a streamed upload runs (that would end the object where it stands), and not
    /// while anything holds the state (an upload, a write: the next look will tell).
    pub fn may_upload_part_way(&self) -> bool {
        self.state.try_lock().is_ok_and(|st| st.stream.is_none())
    }

    /// Keeps the failure of an upload made in the background for the next close or fsync.
    pub fn set_background_error(&self, e: Option<Arc<FsError>>) {
        *self.background_error.lock() = e;
    }

    /// The failure of the last background upload, once (it is then forgotten).
    pub fn take_background_error(&self) -> Option<Arc<FsError>> {
        self.background_error.lock().take()
    }
}

/// The mutable part of a [`FileCell`].
///
/// A file's changes live either in `stream` (a new file written sequentially from offset 0: its
/// bytes go straight into a resumable upload, no local copy) or in `staged` (a full local copy),
/// never both.
#[derive(Debug)]
pub struct WriteState {
    /// The local copy, present while the file is being changed (and until the last handle closes).
    pub staged: Option<Staged>,
    /// The upload a new file's sequential writes are streamed into.
    pub stream: Option<Streaming>,
    /// A new file written only sequentially so far, and less than [`STREAM_THRESHOLD`]: its
    /// bytes are held in memory; closed like that it is uploaded in one request. Past the
    /// threshold they start a stream.
    pub head: Option<Head>,
    /// The generation the local copy is based on: the upload's `ifGenerationMatch` (0 = new).
    pub base_generation: Generation,
}

/// A new file's bytes held in memory, charged to the memory budget's writes share.
#[derive(Debug, Default)]
pub struct Head {
    bytes: Vec<u8>,
    charge: Option<Charge>,
}

impl Head {
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Appends `data` if the budget has room for it; `false` (nothing appended) if not.
    pub fn append(&mut self, data: &[u8], budget: &MemoryBudget) -> bool {
        let Some(charge) = budget.try_write(data.len() as u64) else {
            return false;
        };
        match &mut self.charge {
            Some(held) => held.merge(charge),
            None => self.charge = Some(charge),
        }
        self.bytes.extend_from_slice(data);
        true
    }

    /// Bytes of the budget the head holds.
    pub fn charged(&self) -> u64 {
        self.charge.as_ref().map_or(0, |c| c.num_permits() as u64)
    }

    /// The bytes and their charge (for a stream, whose buffers they join).
    pub fn into_parts(self) -> (Vec<u8>, Option<Charge>) {
        (self.bytes, self.charge)
    }
}

/// A resumable upload fed while a new file is written.
///
/// The upload runs as a task of its own (the store's resumable driver keeps every byte the
/// service has not acknowledged, and gives up at its deadline). Its result is taken in exactly
/// one place, [`UploadTask::outcome`], and kept for every later call. No call here waits
/// longer than `wait_limit` for the upload.
#[derive(Debug)]
pub struct Streaming {
    tx: Option<mpsc::Sender<StoreResult<Bytes>>>,
    upload: UploadTask,
    /// Bytes sent so far: the only offset the next write may start at to keep streaming.
    pub written: u64,
    /// Longest a write waits for the upload to take its bytes, or `finish` for it to end.
    wait_limit: Duration,
}

/// The task running a streamed upload, then its result.
#[derive(Debug)]
enum UploadTask {
    Running(tokio::task::JoinHandle<StoreResult<ObjectMeta>>),
    Ended(Result<ObjectMeta, Arc<StoreError>>),
}

impl UploadTask {
    /// Waits for the task to end (the only place its handle is awaited) and returns its
    /// result, the same on every call. Cancel-safe: a wait cut short leaves the task running.
    async fn outcome(&mut self) -> Result<ObjectMeta, Arc<StoreError>> {
        if let UploadTask::Running(handle) = self {
            let result = match handle.await {
                Ok(result) => result.map_err(Arc::new),
                Err(e) => Err(Arc::new(StoreError::with_source(
                    ErrorKind::Other,
                    "the upload task ended without a result",
                    e,
                ))),
            };
            *self = UploadTask::Ended(result);
        }
        match self {
            UploadTask::Ended(result) => result.clone(),
            UploadTask::Running(_) => unreachable!("replaced above"),
        }
    }

    /// Stops the task, if it runs, and records `error` as its result.
    fn stop(&mut self, error: StoreError) {
        if let UploadTask::Running(handle) = self {
            handle.abort();
            *self = UploadTask::Ended(Err(Arc::new(error)));
        }
    }
}

/// Bytes of a new file held in memory before its upload is streamed (small files are uploaded
/// in one request at close instead).
pub const STREAM_THRESHOLD: usize = 4 << 20;

/// Chunks queued between writes and the upload (the upload itself holds up to two requests'
/// worth, `store::STREAM_CHUNK` each).
const STREAM_QUEUE: usize = 8;

/// The error a streamed file's calls return once its upload failed.
fn upload_failed(e: Arc<StoreError>) -> FsError {
    FsError::Store(StoreError::with_source(
        e.kind(),
        "the streamed upload failed",
        e,
    ))
}

impl Streaming {
    /// Starts a create-only upload of `key` fed by [`Streaming::send`].
    /// The upload holds `memory` (its share of the budget) and counts as `in_flight` until it
    /// ends.
    pub fn start(
        store: Arc<dyn ObjectStore>,
        key: ObjectKey,
        attrs: WriteAttrs,
        wait_limit: Duration,
        memory: Charge,
        in_flight: InFlight,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<StoreResult<Bytes>>(STREAM_QUEUE);
        let source = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
        .boxed();
        let task = tokio::spawn(async move {
            let _memory = memory;
            let _in_flight = in_flight;
            store
                .write(
                    &key,
                    WriteSource::Stream(source),
                    Preconditions::create_only(),
                    &attrs,
                )
                .await
        });
        Self {
            tx: Some(tx),
            upload: UploadTask::Running(task),
            written: 0,
            wait_limit,
        }
    }

    /// Appends `data`. If the upload has failed (or does not take the bytes within the wait
    /// limit), returns its error, as every later call does.
    pub async fn send(&mut self, data: Bytes) -> FsResult<()> {
        let len = data.len() as u64;
        if let Some(tx) = &self.tx {
            match tokio::time::timeout(self.wait_limit, tx.send(Ok(data))).await {
                Ok(Ok(())) => {
                    self.written += len;
                    return Ok(());
                }
                // The upload ended early: its result says why.
                Ok(Err(_closed)) => {}
                Err(_) => self.upload.stop(StoreError::new(
                    ErrorKind::Transient,
                    format!(
                        "the upload did not take the written bytes within {:?}",
                        self.wait_limit
                    ),
                )),
            }
            self.tx = None;
        }
        match self.upload.outcome().await {
            Err(e) => Err(upload_failed(e)),
            Ok(_) => Err(FsError::Stale("upload finished before the file was")),
        }
    }

    /// Ends the upload with what was sent and returns the new object.
    pub async fn finish(mut self) -> FsResult<ObjectMeta> {
        self.tx = None;
        // The upload still has the request in flight and the last one to send.
        let limit = self.wait_limit.saturating_mul(2);
        match tokio::time::timeout(limit, self.upload.outcome()).await {
            Ok(Ok(meta)) => Ok(meta),
            Ok(Err(e)) => Err(upload_failed(e)),
            Err(_) => {
                let e = StoreError::new(
                    ErrorKind::Transient,
                    format!("the upload did not end within {limit:?}"),
                );
                self.upload.stop(e);
                Err(FsError::TimedOut)
            }
        }
    }

    /// Abandons the upload: nothing is created.
    pub async fn abort(mut self) {
        // The producer's error makes the upload cancel its session without finishing it. Its
        // channel must never just close here: that would end the object where it stands.
        let queued = self.tx.take().is_some_and(|tx| {
            tx.try_send(Err(StoreError::new(
                ErrorKind::Other,
                "file removed while written",
            )))
            .is_ok()
        });
        let abandoned = || StoreError::new(ErrorKind::Other, "abandoned");
        if !queued {
            self.upload.stop(abandoned());
            return;
        }
        if tokio::time::timeout(self.wait_limit, self.upload.outcome())
            .await
            .is_err()
        {
            self.upload.stop(abandoned());
        }
    }
}

/// A local staging file holding the whole contents of the file.
///
/// An upload reads it through a [`Snapshot`] without holding the file's state lock. A write or
/// truncate while a snapshot is held copies the file first (copy on write), so what the upload
/// sends is exactly what it took — and no reader or writer waits for the network.
///
/// When the temp dir is in memory every byte of it is charged to the memory budget's writes
/// share (see `memory.rs`): each change first takes what it needs — the copy, if an upload
/// holds the file, and the growth — from a [`Room`] and what is free, else fails with
/// [`FsError::NoMemory`] having changed nothing (the caller waits for room with no lock held
/// and tries again). A copy an upload holds keeps its bytes until the upload lets go of it.
#[derive(Debug)]
pub struct Staged {
    file: Arc<Backing>,
    pub size: u64,
    /// The budget its bytes are charged to; `None` when the temp dir is on disk.
    memory: Option<Arc<MemoryBudget>>,
}

/// One staging file on disk, and the memory it holds.
#[derive(Debug)]
struct Backing {
    file: NamedTempFile,
    /// Its bytes, when the temp dir is in memory.
    charge: Option<StagedCharge>,
}

/// The staging file as it was when an upload took it (it stays on disk while held).
#[derive(Debug, Clone)]
pub struct Snapshot {
    file: Arc<Backing>,
}

impl Snapshot {
    pub fn path(&self) -> &Path {
        self.file.file.path()
    }
}

/// A new staging file next to `src` with its first `limit` bytes (all of them, if fewer).
fn copy_of(src: &NamedTempFile, limit: u64) -> std::io::Result<NamedTempFile> {
    use std::io::Read;
    let dir = src.path().parent().unwrap_or(Path::new("."));
    let copy = tempfile::Builder::new().prefix("gcsfs-").tempfile_in(dir)?;
    if limit > 0 {
        let mut from = src.reopen()?.take(limit);
        std::io::copy(&mut from, &mut copy.as_file())?;
    }
    Ok(copy)
}

impl Staged {
    /// An empty staging file in `dir`, its bytes charged to `memory` if given (the temp dir is
    /// in memory).
    pub fn empty(dir: &Path, memory: Option<Arc<MemoryBudget>>) -> FsResult<Self> {
        let file = tempfile::Builder::new().prefix("gcsfs-").tempfile_in(dir)?;
        let charge = memory.as_ref().map(|m| m.staged_charge());
        Ok(Self {
            file: Arc::new(Backing { file, charge }),
            size: 0,
            memory,
        })
    }

    /// A staging file holding `head`'s bytes; the head's charge moves to it (a file spilled
    /// from memory to a temp dir in memory takes no more room than it had).
    pub fn from_head(
        dir: &Path,
        memory: Option<Arc<MemoryBudget>>,
        head: &mut Head,
        room: &mut Room,
    ) -> FsResult<Self> {
        let mut staged = Self::empty(dir, memory)?;
        if staged.memory.is_some()
            && let Some(charge) = head.charge.take()
        {
            staged.add_charge(charge);
        }
        staged.write_at(0, head.bytes(), room)?;
        Ok(staged)
    }

    /// A staging file holding `key` at `generation`, truncated or extended to `len` bytes if given.
    /// `expected`: the object's size as known (the room taken first when `len` is not given).
    #[allow(clippy::too_many_arguments)]
    pub async fn download(
        dir: &Path,
        memory: Option<Arc<MemoryBudget>>,
        store: &dyn ObjectStore,
        key: &ObjectKey,
        generation: Generation,
        len: Option<u64>,
        expected: u64,
        room: &mut Room,
    ) -> FsResult<Self> {
        let mut staged = Self::empty(dir, memory)?;
        let range = match len {
            Some(len) => ByteRange::segment(0, len),
            None => ByteRange::ALL,
        };
        // The room for what is expected, before a byte is fetched.
        staged.prepare(len.unwrap_or(expected), room)?;
        if len != Some(0) {
            let mut stream = match store.read(key, Some(generation), range).await {
                Ok(s) => s,
                Err(e) if e.kind() == crate::store::ErrorKind::NotFound => {
                    return Err(FsError::Stale("object changed before it could be staged"));
                }
                Err(e) => return Err(e.into()),
            };
            // Written on a blocking thread, chunk by chunk (the disk may be slow; the async
            // threads serve other requests meanwhile).
            let mut off = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                let len = chunk.len() as u64;
                if staged.memory.is_some() && off + len > staged.charged() {
                    // Larger than known: more room, or the whole of it is asked for again
                    // (this partial copy is dropped).
                    staged
                        .prepare(off + len, room)
                        .map_err(|_| FsError::NoMemory {
                            need: off + len,
                            size: off + len,
                        })?;
                }
                let file = staged.file.clone();
                tokio::task::spawn_blocking(move || file.file.as_file().write_all_at(&chunk, off))
                    .await
                    .map_err(|e| FsError::Io(std::io::Error::other(e)))??;
                off += len;
            }
            staged.size = off;
        }
        if let Some(len) = len
            && len != staged.size
        {
            staged.set_len(len, room)?;
        }
        staged.settle();
        Ok(staged)
    }

    fn file(&self) -> &File {
        self.file.file.as_file()
    }

    /// The file as it is now, for an upload.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            file: self.file.clone(),
        }
    }

    /// Whether an upload holds a snapshot of the file.
    fn shared(&self) -> bool {
        Arc::strong_count(&self.file) > 1
    }

    /// Bytes of the budget the file (this copy's own) holds.
    pub fn charged(&self) -> u64 {
        self.file.charge.as_ref().map_or(0, |c| c.bytes())
    }

    fn add_charge(&mut self, charge: Charge) {
        let backing = Arc::get_mut(&mut self.file).expect("not shared");
        if let Some(held) = &mut backing.charge {
            held.add(charge);
        }
    }

    /// A backing for `file`, holding `charge`.
    fn backing(&self, file: NamedTempFile, charge: Option<Charge>) -> Backing {
        let mut held = self.memory.as_ref().map(|m| m.staged_charge());
        if let (Some(held), Some(charge)) = (&mut held, charge) {
            held.add(charge);
        }
        Backing { file, charge: held }
    }

    /// Takes what a change leaving the file `end` bytes long needs from `room` and the budget:
    /// a copy of the file if an upload holds it, and the growth. Nothing without a budget.
    fn room_for(&self, end: u64, room: &mut Room) -> FsResult<Option<Charge>> {
        let Some(memory) = &self.memory else {
            return Ok(None);
        };
        let need = if self.shared() {
            // A copy of the file's first `end` bytes, grown to `end`.
            end
        } else {
            end.saturating_sub(self.charged())
        };
        if need == 0 {
            return Ok(None);
        }
        memory
            .take_write(need, room)
            .map(Some)
            .map_err(|need| FsError::NoMemory { need, size: end })
    }

    /// Makes the staging file this copy's own before a change that leaves it `end` bytes long:
    /// if an upload holds a snapshot of it, takes the room for it and copies it (its first
    /// `end` bytes), on a blocking thread (the copy is as large as the file).
    pub async fn unshare(&mut self, end: u64, room: &mut Room) -> FsResult<()> {
        if !self.shared() {
            return Ok(());
        }
        let charge = self.room_for(end, room)?;
        let src = self.file.clone();
        let copy = tokio::task::spawn_blocking(move || copy_of(&src.file, end))
            .await
            .map_err(|e| FsError::Io(std::io::Error::other(e)))??;
        self.file = Arc::new(self.backing(copy, charge));
        Ok(())
    }

    /// The file, to be changed to `end` bytes: the room for it taken, and copied first if an
    /// upload holds a snapshot of it (inline, for callers that did not [`Staged::unshare`]
    /// first: a file new to them, nothing to copy).
    fn prepare(&mut self, end: u64, room: &mut Room) -> FsResult<&File> {
        let charge = self.room_for(end, room)?;
        if self.shared() {
            let copy = copy_of(&self.file.file, end)?;
            self.file = Arc::new(self.backing(copy, charge));
        } else if let Some(charge) = charge {
            self.add_charge(charge);
        }
        Ok(self.file.file.as_file())
    }

    /// Gives back what the file holds beyond its size.
    fn settle(&mut self) {
        let size = self.size;
        if let Some(backing) = Arc::get_mut(&mut self.file)
            && let Some(held) = &mut backing.charge
        {
            held.shrink_to(size);
        }
    }

    /// Writes `data` at `offset` (local disk; short, so done inline).
    /// A write that fails part-way (ENOSPC: the temp dir is full) leaves the file at its
    /// size before it, so an upload never sends bytes of a write that was refused; one that
    /// finds no room in the budget changes nothing.
    pub fn write_at(&mut self, offset: u64, data: &[u8], room: &mut Room) -> FsResult<()> {
        let size = self.size;
        let end = size.max(offset + data.len() as u64);
        let file = self.prepare(end, room)?;
        if let Err(e) = file.write_all_at(data, offset) {
            if end > size {
                let _ = file.set_len(size);
            }
            self.settle();
            return Err(e.into());
        }
        self.size = end;
        Ok(())
    }

    /// Reads up to `len` bytes at `offset`.
    pub fn read_at(&self, offset: u64, len: u32) -> FsResult<Vec<u8>> {
        if offset >= self.size {
            return Ok(Vec::new());
        }
        let len = (len as u64).min(self.size - offset) as usize;
        let mut buf = vec![0u8; len];
        let mut done = 0;
        while done < len {
            let n = self
                .file()
                .read_at(&mut buf[done..], offset + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        buf.truncate(done);
        Ok(buf)
    }

    pub fn set_len(&mut self, len: u64, room: &mut Room) -> FsResult<()> {
        let set = self.prepare(len, room)?.set_len(len);
        if set.is_ok() {
            self.size = len;
        }
        self.settle();
        Ok(set?)
    }

    /// Keeps the staging file at `dest` (used to preserve data that lost an upload race).
    pub fn persist(self, dest: &Path) -> FsResult<PathBuf> {
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match Arc::try_unwrap(self.file) {
            Ok(backing) => {
                backing
                    .file
                    .persist(dest)
                    .map_err(|e| FsError::Io(e.error))?;
            }
            // An upload still reads it: keep a copy.
            Err(backing) => {
                std::fs::copy(backing.file.path(), dest)?;
            }
        }
        Ok(dest.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_reads_and_writes() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Staged::empty(dir.path(), None).unwrap();
        let room = &mut Room::default();
        s.write_at(0, b"hello", room).unwrap();
        s.write_at(10, b"x", room).unwrap();
        assert_eq!(s.size, 11);
        assert_eq!(s.read_at(0, 100).unwrap(), b"hello\0\0\0\0\0x");
        assert_eq!(s.read_at(3, 2).unwrap(), b"lo");
        assert!(s.read_at(11, 5).unwrap().is_empty());
        s.set_len(2, room).unwrap();
        assert_eq!(s.read_at(0, 100).unwrap(), b"he");
        let kept = s.persist(&dir.path().join("c/kept")).unwrap();
        assert_eq!(std::fs::read(kept).unwrap(), b"he");
    }

    #[tokio::test]
    async fn staged_bytes_in_memory_are_charged_copied_and_given_back() {
        let dir = tempfile::tempdir().unwrap();
        // Writes share: 3/8 of 64 KiB = 24 KiB.
        let budget = Arc::new(MemoryBudget::new(64 << 10, u64::MAX));
        let room = &mut Room::default();
        let mut s = Staged::empty(dir.path(), Some(budget.clone())).unwrap();
        s.write_at(0, &[1u8; 4096], room).unwrap();
        s.write_at(8192, &[2u8; 4096], room).unwrap();
        assert_eq!((s.charged(), budget.staged()), (12288, 12288));
        // An upload holds the file: a change copies it, and both copies are charged.
        let snap = s.snapshot();
        s.unshare(12288, room).await.unwrap();
        s.write_at(0, b"x", room).unwrap();
        assert_eq!(budget.staged(), 2 * 12288);
        drop(snap);
        assert_eq!(budget.staged(), 12288, "the upload's copy is given back");
        // No room: nothing changes, and the error says how much is missing.
        let e = s.write_at(12288, &[3u8; 16384], room).unwrap_err();
        assert!(
            matches!(
                e,
                FsError::NoMemory {
                    need: 16384,
                    size: 28672
                }
            ),
            "{e}"
        );
        assert_eq!((s.size, s.charged()), (12288, 12288));
        // Room set aside for it is used first.
        assert!(
            budget
                .wait_write(
                    4096,
                    room,
                    tokio::time::Instant::now() + Duration::from_secs(5)
                )
                .await
        );
        s.write_at(12288, &[3u8; 4096], room).unwrap();
        assert_eq!(budget.staged(), 16384);
        s.set_len(100, room).unwrap();
        assert_eq!((budget.staged(), budget.in_use()), (100, 100));
        assert_eq!(s.read_at(0, 2).unwrap(), b"x\x01");
        drop(s);
        assert_eq!((budget.staged(), budget.in_use()), (0, 0));
    }

    #[test]
    fn a_staging_file_on_disk_is_not_charged() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Staged::empty(dir.path(), None).unwrap();
        s.write_at(0, &[1u8; 100_000], &mut Room::default())
            .unwrap();
        assert_eq!(s.charged(), 0);
    }
}
