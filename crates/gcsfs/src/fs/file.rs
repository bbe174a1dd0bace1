//! File data operations: `open`, `create`, `read`, `write`, `flush`, `fsync`, `release`,
//! `setattr`, and the upload that publishes a file's changes.
//!
//! Clean files are read through a [`Reader`] pinned to the generation seen at open. The first
//! change to a file stages its whole contents in a local file ([`Staged`]); reads of a file with
//! a staging file come from it, whatever handle they use. `flush`, `fsync` and `release` upload
//! the staging file with `ifGenerationMatch` = the generation the changes are based on (0 for a
//! new file), so a concurrent change by another writer is detected and never overwritten: the
//! writer gets ESTALE and its data is kept under `<temp-dir>/gcsfs-conflicts/`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use bytes::Bytes;

use super::attr::{self, Caller, Kind, Stat};
use super::error::{FsError, FsResult};
use super::handles::Handle;
use super::lifecycle::Phase;
use super::memory::{MemoryBudget, Room, STREAM_MEMORY};
use super::names::{self, BadName};
use super::read::{Offer, ReadContext, Reader, read_planned};
use super::read_data::ReadData;
use super::write::{FileCell, Head, STREAM_THRESHOLD, Staged, Streaming, WriteState};
use super::{Entry, Filesystem, InodeNo};
use crate::store::{
    ErrorKind, Generation, ObjectKey, Preconditions, SINGLE_REQUEST_MAX, WriteAttrs, WriteSource,
};

/// An open file.
#[derive(Debug, Clone)]
pub(super) struct FileHandle {
    ino: InodeNo,
    cell: Arc<FileCell>,
    writable: bool,
    /// Whether this handle changed the file's data (a write, or a truncate to a non-zero
    /// size). Its flushes upload only then: a descriptor that changed nothing (a copy closed
    /// by `dup2`, as a shell's `>` does, or an `O_TRUNC` open before the first write) leaves
    /// the upload to a later flush or the release.
    wrote: Arc<AtomicBool>,
    /// Set when the file's streamed upload failed while this handle was open: the data it
    /// wrote is gone, and every later write, flush and fsync through it says so (a write at
    /// another offset must not quietly start a file of zeros where the lost bytes were).
    lost: Arc<OnceLock<Arc<FsError>>>,
    /// Generation and size seen at open (reads of clean data are pinned to it).
    generation: Option<Generation>,
    size: u64,
    reader: Arc<tokio::sync::Mutex<Option<Reader>>>,
}

/// The result of `open`/`create`.
#[derive(Debug, Clone, Copy)]
pub struct OpenReply {
    pub fh: u64,
    /// The kernel may keep the pages it cached for this file (the generation did not change).
    pub keep_cache: bool,
}

/// Attribute changes requested by `setattr`; `None` leaves a field alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetAttr {
    pub size: Option<u64>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mtime: Option<SystemTime>,
    pub atime: Option<SystemTime>,
    pub fh: Option<u64>,
}

const ACCMODE: i32 = libc::O_ACCMODE;

impl Filesystem {
    /// Opens file `ino` with open(2) `flags`.
    pub async fn open(&self, ino: InodeNo, flags: i32) -> FsResult<OpenReply> {
        let writable = flags & ACCMODE != libc::O_RDONLY;
        let _change = if writable {
            Some(self.check_writable()?)
        } else {
            None
        };
        // Make sure the attributes (and so the generation we pin) are fresh.
        self.getattr(ino).await?;
        let (cell, read_generation, size, keep_cache) = {
            let mut table = self.inodes.lock();
            let inode = table.get_mut(ino).ok_or(FsError::NotFound)?;
            match inode.kind() {
                Kind::Dir => return Err(FsError::IsDir),
                Kind::Symlink => return Err(FsError::InvalidArgument("open of a symlink")),
                Kind::File => {}
            }
            let generation = inode.stat().generation;
            let cell = table
                .file_cell(ino, generation.unwrap_or(Generation::NONE))
                .expect("checked above");
            let inode = table.get_mut(ino).expect("checked above");
            // The kernel may now hold pages of this generation; it may keep what it holds
            // if that was of the same one and nothing here changed since.
            let cached_before = inode.cache_generation(generation);
            let keep_cache =
                !cell.is_dirty() && generation.is_some() && cached_before == generation;
            let size = inode.stat().size;
            table.open_handle(ino);
            (cell, generation, size, keep_cache)
        };
        // What the kernel's page cache may be fed from now on (holding no other lock).
        cell.page_gate
            .opened(read_generation, writable, cell.is_dirty())
            .await;
        let (fh, keep_cache) = {
            let mut st = cell.state.lock().await;
            // An upload of this file (in the background, say) may have published a newer
            // generation since the attributes were read: the handle works on that one, as the
            // handles open during the upload were moved to it (`published`). Read under the
            // state lock, which a publish holds, and the handle is registered before it is let
            // go, so a publish either came before (and is seen here) or will move this handle.
            let generation = self
                .inodes
                .lock()
                .get(ino)
                .map_or(read_generation, |i| i.stat().generation);
            let moved = generation != read_generation;
            if moved {
                cell.page_gate.try_close();
            }
            if let Some(seen) = generation
                && !cell.is_dirty()
                && st.base_generation != seen
            {
                // A newer generation than the clean local copy: changes are based on it now,
                // and the old copy must not answer this handle's reads.
                st.staged = None;
                st.base_generation = seen;
            }
            let fh = self.handles.add(Handle::File(FileHandle {
                ino,
                cell: cell.clone(),
                writable,
                wrote: Arc::default(),
                lost: Arc::default(),
                generation,
                size,
                reader: Arc::new(tokio::sync::Mutex::new(None)),
            }));
            (fh, keep_cache && !moved)
        };
        if writable && flags & libc::O_TRUNC != 0 {
            let r = self
                .setattr(
                    ino,
                    SetAttr {
                        size: Some(0),
                        fh: Some(fh),
                        ..Default::default()
                    },
                )
                .await;
            if let Err(e) = r {
                let _ = self.release(ino, fh).await;
                return Err(e);
            }
        }
        Ok(OpenReply { fh, keep_cache })
    }

    /// Creates and opens a new file `name` in `parent`, owned by `caller`. Nothing reaches the
    /// bucket until the file is flushed (the upload then requires that no object of that name
    /// appeared meanwhile).
    pub async fn create(
        &self,
        parent: InodeNo,
        name: &str,
        mode: u32,
        flags: i32,
        caller: Caller,
    ) -> FsResult<(Entry, OpenReply)> {
        let _change = self.check_writable()?;
        match names::check_component(name) {
            Ok(()) => {}
            Err(BadName::TooLong) => return Err(FsError::NameTooLong),
            Err(_) => return Err(FsError::InvalidArgument("file name")),
        }
        let perm = (mode & 0o7777) as u16;
        let now = self.now();
        let (ino, cell, attr) = {
            let mut table = self.inodes.lock();
            let p = table.get(parent).ok_or(FsError::NotFound)?;
            if p.kind() != Kind::Dir {
                return Err(FsError::NotDir);
            }
            if let Some(existing) = table.child(parent, name)
                && (table
                    .get(existing)
                    .is_some_and(|i| i.local() || i.valid_until() > now)
                    || table.is_pending_dir(existing))
            {
                return Err(FsError::Exists);
            }
            let key = names::join(p.key(), name);
            let stored_perm = (perm != self.config.ownership.file_mode).then_some(perm);
            let (uid, gid) = self.config.ownership.stored_owner(caller);
            let new_stat = || Stat::new_file(SystemTime::now(), stored_perm, uid, gid);
            let ino = table.upsert_child(
                parent,
                name,
                key,
                new_stat(),
                None,
                now + self.config.metadata_ttl,
            );
            let cell = Arc::new(FileCell::new(Generation::NONE));
            table.created(ino, cell.clone());
            let inode = table.get_mut(ino).expect("just created");
            inode.created_here(new_stat());
            table.add_lookups(ino, 1);
            table.open_handle(ino);
            let attr = table
                .get(ino)
                .expect("just created")
                .attr(&self.ownership());
            table.entries_changed(parent, 0);
            (ino, cell, attr)
        };
        self.forget_missing(parent, name);
        let writable = flags & ACCMODE != libc::O_RDONLY;
        cell.page_gate.opened(None, writable, true).await;
        {
            let mut st = cell.state.lock().await;
            if self.config.streaming_writes {
                st.head = Some(Head::default());
            } else {
                st.staged = Some(self.new_staged()?);
            }
            st.base_generation = Generation::NONE;
            cell.changed();
        }
        let fh = self.handles.add(Handle::File(FileHandle {
            ino,
            cell,
            writable,
            wrote: Arc::default(),
            lost: Arc::default(),
            generation: None,
            size: 0,
            reader: Arc::new(tokio::sync::Mutex::new(None)),
        }));
        Ok((
            self.entry(attr),
            OpenReply {
                fh,
                keep_cache: false,
            },
        ))
    }

    /// `mknod` of a regular file: made (owned by `caller`) and closed, as `create` + `close`.
    pub async fn mknod_file(
        &self,
        parent: InodeNo,
        name: &str,
        mode: u32,
        caller: Caller,
    ) -> FsResult<Entry> {
        let (entry, open) = self
            .create(parent, name, mode, libc::O_WRONLY, caller)
            .await?;
        self.release(entry.attr.ino, open.fh).await?;
        let table = self.inodes.lock();
        let inode = table.get(entry.attr.ino).ok_or(FsError::NotFound)?;
        Ok(self.entry(inode.attr(&self.ownership())))
    }

    /// `fallocate`: mode 0 makes the file at least `offset + length` long (its new bytes read
    /// as zeros; nothing is reserved, as an object store has no blocks to reserve). Other modes
    /// (punching holes, keeping the size, zeroing ranges) are `EOPNOTSUPP`.
    pub async fn fallocate(
        &self,
        ino: InodeNo,
        fh: u64,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> FsResult<()> {
        if mode != 0 {
            return Err(FsError::NotSupported("fallocate mode"));
        }
        let end = offset
            .checked_add(length)
            .ok_or(FsError::InvalidArgument("fallocate range"))?;
        let size = {
            let table = self.inodes.lock();
            table.get(ino).ok_or(FsError::NotFound)?.stat().size
        };
        if end > size {
            let set = SetAttr {
                size: Some(end),
                fh: Some(fh),
                ..SetAttr::default()
            };
            self.setattr(ino, set).await?;
        }
        Ok(())
    }

    /// This mount moved file `ino` from generation `old` to `new` (an upload, or a copy at a new
    /// key): handles that opened `old` (`None`: handles of a file created here, pinned to
    /// nothing yet) now work on `new`, with a fresh reader and, if given, the new size.
    pub(super) fn repin_handles(
        &self,
        ino: InodeNo,
        old: Option<Generation>,
        new: Generation,
        size: Option<u64>,
    ) {
        self.handles.each_file(|f| {
            if f.ino == ino && (f.generation == old || f.generation.is_none()) {
                f.cell.page_gate.try_close();
                f.generation = Some(new);
                f.reader = Arc::new(tokio::sync::Mutex::new(None));
                if let Some(size) = size {
                    f.size = size;
                }
            }
        });
    }

    fn file_handle(&self, fh: u64) -> FsResult<FileHandle> {
        self.handles.file(fh)
    }

    /// Reads up to `size` bytes at `offset`.
    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<ReadData> {
        // A read of a generation that this mount's own upload replaced meanwhile (the upload
        // moved the handle to its new generation) is read again from where the handle is now;
        // another writer's replacement stays ESTALE.
        let mut tries = 0;
        loop {
            let mut used = None;
            match self.read_once(fh, offset, size, &mut used).await {
                Err(FsError::Stale(_)) if tries < 3 && self.file_handle(fh)?.generation != used => {
                    tries += 1;
                }
                r => return r,
            }
        }
    }

    /// One attempt of [`Filesystem::read`]; `used` is set to the generation it read from the
    /// store (left `None` for local data).
    async fn read_once(
        &self,
        fh: u64,
        offset: u64,
        size: u32,
        used: &mut Option<Generation>,
    ) -> FsResult<ReadData> {
        let cell = self.file_handle(fh)?.cell;
        let (ino, generation, fsize, reader) = {
            let mut st = cell.state.lock().await;
            if let Some(head) = &st.head {
                let start = (offset as usize).min(head.len());
                let end = (start + size as usize).min(head.len());
                return Ok(Bytes::copy_from_slice(&head.bytes()[start..end]).into());
            }
            if st.stream.is_some() {
                // Reading a file being streamed: publish what was written (the file's handles
                // move to the object it made), then read that object like any other. Nothing
                // is staged for the read (a writer going on stages the file for itself).
                let ino = self.file_handle(fh)?.ino;
                self.settle_stream(ino, &mut st).await?;
            }
            // The handle as it is now, under the state lock a publish holds while it moves the
            // file's handles to its new generation.
            let FileHandle {
                ino,
                generation,
                size: fsize,
                reader,
                ..
            } = self.file_handle(fh)?;
            // Pending changes are seen by every handle; a clean local copy only by handles of
            // the generation it holds.
            let shares_copy =
                cell.is_dirty() || generation.is_none() || generation == Some(st.base_generation);
            if let Some(staged) = &st.staged
                && shares_copy
            {
                return Ok(staged.read_at(offset, size)?.into());
            }
            (ino, generation, fsize, reader)
        };
        let Some(generation) = generation else {
            // A local file whose staging file is gone (uploaded and released elsewhere).
            return Err(FsError::Stale("file has no readable generation"));
        };
        *used = Some(generation);
        let plan = {
            let mut r = reader.lock().await;
            if r.is_none() {
                let key = self.key_of(ino)?;
                let offer = self.page_feeder.get().map(|feeder| Offer {
                    feeder: feeder.clone(),
                    gate: cell.page_gate.clone(),
                    ino,
                });
                let ctx = ReadContext {
                    config: self.config.read.clone(),
                    budget: self.prefetch_budget.clone(),
                    budget_size: self.memory.reads_size(),
                    readers: self.prefetch_readers.clone(),
                    kernel_readahead: self
                        .kernel_readahead
                        .load(std::sync::atomic::Ordering::Relaxed),
                    offer,
                };
                *r = Some(Reader::new(self.store.clone(), key, generation, fsize, ctx));
            }
            r.as_mut().expect("set above").plan(offset, size)
        };
        read_planned(plan).await
    }

    /// Writes `data` at `offset` into the file's staging copy.
    pub async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let _change = self.check_writable()?;
        let FileHandle {
            ino,
            cell,
            writable,
            wrote,
            lost,
            generation,
            ..
        } = self.file_handle(fh)?;
        if !writable {
            return Err(FsError::BadHandle);
        }
        if let Some(e) = lost.get() {
            return Err(FsError::Lost(e.clone()));
        }
        wrote.store(true, Ordering::Release);
        let mut st = cell.state.lock().await;
        // A new file written sequentially: in memory, then (past the threshold) streamed — or
        // staged, if part of it was published already (a stream can only create the object).
        // Either takes memory from the budget's writes share; without room, the file is
        // staged in the temp dir instead.
        // Only from Staged: not while an upload of the head runs (it would make the object the
        // stream must create), nor after one failed or while one is queued (the head goes on
        // in a staging file, uploaded as any staged file).
        let may_stream = |st: &WriteState| {
            st.base_generation == Generation::NONE && cell.phase() == Phase::Staged
        };
        // If this write starts a stream (a new file written in order reaching the threshold):
        // the memory it takes from the share, its buffers less what the head holds already
        // (the head's bytes go into them).
        let stream_need = |st: &WriteState| match &st.head {
            Some(head)
                if may_stream(st)
                    && head.len() as u64 == offset
                    && head.len() + data.len() >= STREAM_THRESHOLD =>
            {
                Some(STREAM_MEMORY.saturating_sub(head.charged()))
            }
            _ => None,
        };
        // With the temp dir in memory, a staging file is no better than a stream's buffers: a
        // write that would start a stream and finds no room for them waits (holding no lock,
        // up to the deadline) for uploads to give some back, instead of staging the file in
        // memory (where a large file would fail with ENOSPC once past the writes share).
        let mut stream_room = Room::default();
        if self.config.temp_dir_in_memory {
            let deadline = self.room_deadline();
            while let Some(need) = stream_need(&st) {
                match self.memory.take_write(need, &mut stream_room) {
                    Ok(charge) => {
                        stream_room = Room::holding(charge);
                        break;
                    }
                    Err(_) if self.writes.is_closed() => break,
                    Err(_) => {}
                }
                drop(st);
                let waited = self
                    .memory
                    .wait_write(need, &mut stream_room, deadline)
                    .await;
                st = cell.state.lock().await;
                if !waited {
                    // No room by the deadline: the file is staged below (and its writes then
                    // fail with ENOSPC past the share, as a full disk would say).
                    break;
                }
            }
        }
        let mut appended = None;
        let stream_memory =
            stream_need(&st).and_then(|need| self.memory.take_write(need, &mut stream_room).ok());
        if let Some(mut memory) = stream_memory {
            // A new file written in order passes the threshold: its bytes start a stream.
            let (mut bytes, charge) = st.head.take().expect("matched above").into_parts();
            if let Some(charge) = charge {
                memory.merge(charge);
            }
            bytes.extend_from_slice(data);
            appended = Some(bytes.len() as u64);
            let key = self.key_of(ino)?;
            let stream = st.stream.insert(Streaming::start(
                self.store.clone(),
                key,
                self.new_object_attrs(ino, false),
                self.config.write_wait_limit,
                memory,
                self.stats.in_flight(),
            ));
            cell.stream_started();
            if stream.send(Bytes::from(bytes)).await.is_err() {
                return Err(self.settle_failed_stream(ino, &mut st).await);
            }
        } else if let Some(head) = st.head.as_mut()
            && head.len() as u64 == offset
        {
            if !head.append(data, &self.memory) {
                // No room in memory: the file moves to a staging file, written below (when
                // the temp dir is in memory too, the write then waits for room there).
            } else if head.len() >= STREAM_THRESHOLD {
                // Past the threshold with no stream (no room for its buffers, or part of the
                // file was published already: a stream can only create the object): staged.
                appended = Some(head.len() as u64);
                let mut room = Room::default();
                self.ensure_staged(ino, &mut st, None, None, &mut room)
                    .await?;
            } else {
                appended = Some(head.len() as u64);
            }
        } else if let Some(stream) = st.stream.as_mut()
            && stream.written == offset
        {
            if stream.send(Bytes::copy_from_slice(data)).await.is_err() {
                return Err(self.settle_failed_stream(ino, &mut st).await);
            }
            appended = Some(stream.written);
        }
        let size = match appended {
            Some(size) => size,
            None => {
                let mut room = Room::default();
                let deadline = self.room_deadline();
                let mut pinned = generation;
                loop {
                    match self
                        .write_staged(ino, &mut st, pinned, offset, data, &mut room)
                        .await
                    {
                        Err(e @ FsError::NoMemory { .. }) => {
                            // Waits for room holding nothing (see `memory.rs`), then looks
                            // again: the handle may have been moved to a newer generation.
                            drop(st);
                            self.wait_for_room(e, &mut room, deadline).await?;
                            st = cell.state.lock().await;
                            pinned = self.file_handle(fh)?.generation;
                        }
                        r => break r?,
                    }
                }
            }
        };
        cell.changed();
        drop(st);
        let mut table = self.inodes.lock();
        if let Some(inode) = table.get_mut(ino) {
            let now = SystemTime::now();
            inode.changed_here(now, |stat| {
                stat.size = size;
                stat.mtime = now;
            });
        }
        Ok(data.len() as u32)
    }

    /// Writes `data` at `offset` into the file's staging copy (made first if need be); the
    /// file's new size. [`FsError::NoMemory`]: nothing written, wait for room and try again.
    async fn write_staged(
        &self,
        ino: InodeNo,
        st: &mut WriteState,
        pinned: Option<Generation>,
        offset: u64,
        data: &[u8],
        room: &mut Room,
    ) -> FsResult<u64> {
        self.ensure_staged(ino, st, pinned, None, room).await?;
        let staged = st.staged.as_mut().expect("staged above");
        let end = staged.size.max(offset + data.len() as u64);
        staged.unshare(end, room).await?;
        staged.write_at(offset, data, room)?;
        Ok(staged.size)
    }

    /// The budget staging files are charged to: the memory budget when the temp dir is in
    /// memory, none otherwise.
    fn staging_memory(&self) -> Option<Arc<MemoryBudget>> {
        self.config.temp_dir_in_memory.then(|| self.memory.clone())
    }

    /// A new, empty staging file.
    fn new_staged(&self) -> FsResult<Staged> {
        Staged::empty(&self.config.temp_dir, self.staging_memory())
    }

    /// Until when a change to a staging file in memory may wait for room.
    fn room_deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.config.write_wait_limit
    }

    /// After a change to a staging file failed with `e`: if that is [`FsError::NoMemory`] and
    /// the room may still come, waits for it, holding no lock (the caller let go of the file's
    /// state), and sets it aside in `room` for the next try. Any other error, a file larger
    /// than the whole writes share (it would wait for ever: its own bytes are part of what it
    /// waits for), or no room by `deadline`: the error.
    pub(super) async fn wait_for_room(
        &self,
        e: FsError,
        room: &mut Room,
        deadline: tokio::time::Instant,
    ) -> FsResult<()> {
        let FsError::NoMemory { need, size } = e else {
            return Err(e);
        };
        let share = self.memory.writes_size();
        if size > share || need > share {
            return Err(e);
        }
        if self.writes.is_closed() {
            // The drain waits for changes in progress: this one is refused as a new one.
            return Err(FsError::ShuttingDown);
        }
        if !self.memory.wait_write(need, room, deadline).await {
            tracing::debug!(
                need,
                size,
                "no room in the memory budget for a staging file"
            );
            return Err(e);
        }
        Ok(())
    }

    /// Makes sure `st` holds a staging copy of the file, optionally truncated to `len`, taking
    /// the memory it needs (when the temp dir is in memory) from `room` and what is free.
    /// [`FsError::NoMemory`]: the copy, if made, is not changed; wait for room and try again.
    pub(super) async fn ensure_staged(
        &self,
        ino: InodeNo,
        st: &mut WriteState,
        pinned: Option<Generation>,
        len: Option<u64>,
        room: &mut Room,
    ) -> FsResult<()> {
        if st.stream.is_some() {
            // Random access to a streamed file: publish what was streamed, then stage that
            // generation like any existing object.
            self.settle_stream(ino, st).await?;
        }
        if let Some(head) = st.head.as_mut() {
            // A new file held in memory: move it to a staging file (dropped only once its
            // bytes are there).
            let s = Staged::from_head(&self.config.temp_dir, self.staging_memory(), head, room)?;
            st.head = None;
            let s = st.staged.insert(s);
            if let Some(len) = len {
                s.set_len(len, room)?;
            }
            return Ok(());
        }
        if let Some(staged) = st.staged.as_mut() {
            if let Some(len) = len {
                staged.unshare(len, room).await?;
                staged.set_len(len, room)?;
            }
            return Ok(());
        }
        let (key, current, local, known_size) = {
            let table = self.inodes.lock();
            let inode = table.get(ino).ok_or(FsError::NotFound)?;
            (
                inode.key().to_string(),
                inode.stat().generation,
                inode.local(),
                inode.stat().size,
            )
        };
        // Base the changes on the generation this handle opened, else the one this file was
        // last published or opened at, else the latest known.
        let last = (st.base_generation != Generation::NONE).then_some(st.base_generation);
        let base = pinned.or(last).or(current);
        let staged = match base {
            None => {
                let mut s = self.new_staged()?;
                if let Some(len) = len {
                    s.set_len(len, room)?;
                }
                s
            }
            Some(_) if local => self.new_staged()?,
            Some(g) if len == Some(0) => {
                st.base_generation = g;
                self.new_staged()?
            }
            Some(g) => {
                st.base_generation = g;
                let key = ObjectKey::new(key)?;
                Staged::download(
                    &self.config.temp_dir,
                    self.staging_memory(),
                    self.store.as_ref(),
                    &key,
                    g,
                    len,
                    known_size,
                    room,
                )
                .await?
            }
        };
        st.staged = Some(staged);
        Ok(())
    }

    /// Before the object of a file open here is deleted: gives the open handles a local copy
    /// of `generation`. The download runs without the state lock, so reads and writes of the
    /// file go on meanwhile; a local copy made by a write in between is kept instead.
    pub(super) async fn keep_local_copy(
        &self,
        ino: InodeNo,
        cell: &FileCell,
        generation: Generation,
    ) -> FsResult<()> {
        let has_local =
            |st: &WriteState| st.staged.is_some() || st.head.is_some() || st.stream.is_some();
        if has_local(&*cell.state.lock().await) {
            return Ok(());
        }
        let key = self.key_of(ino)?;
        let size = self.inodes.lock().get(ino).map_or(0, |i| i.stat().size);
        // Holding no state lock: a download that finds no room in memory waits for it here.
        let mut room = Room::default();
        let deadline = self.room_deadline();
        let staged = loop {
            let downloaded = Staged::download(
                &self.config.temp_dir,
                self.staging_memory(),
                self.store.as_ref(),
                &key,
                generation,
                None,
                size,
                &mut room,
            )
            .await;
            match downloaded {
                Err(e @ FsError::NoMemory { .. }) => {
                    self.wait_for_room(e, &mut room, deadline).await?;
                }
                r => break r?,
            }
        };
        let mut st = cell.state.lock().await;
        if !has_local(&st) {
            st.staged = Some(staged);
            st.base_generation = generation;
        }
        Ok(())
    }

    /// `flush` (each close of a file descriptor): uploads pending changes, if this handle made
    /// any. A handle that changed nothing — read-only, or a writable one before its first write
    /// (a descriptor copy closed after `dup2`) — neither uploads nor reports another handle's
    /// upload error; the release of the last handle uploads what is still pending.
    pub async fn flush(&self, fh: u64) -> FsResult<()> {
        let FileHandle {
            ino,
            cell,
            writable,
            wrote,
            lost,
            ..
        } = self.file_handle(fh)?;
        if let Some(e) = lost.get() {
            return Err(FsError::Lost(e.clone()));
        }
        if !writable || !wrote.load(Ordering::Acquire) {
            return Ok(());
        }
        // A streamed file's bytes are staged nowhere but in its upload: its close waits for
        // the upload to end, whatever the write-back, so that a failure is reported to it.
        let streamed = cell.state.lock().await.stream.is_some();
        if let Some(e) = cell.take_background_error() {
            if streamed {
                // An earlier upload of the file's first bytes failed, and the stream that
                // followed holds them all: its result is the answer.
                return self.upload(ino, &cell).await;
            }
            if cell.is_dirty() {
                self.queue_upload_or_not(ino, &cell);
            }
            return Err(FsError::Background(e));
        }
        if self.writes_back_async() && !streamed {
            self.queue_upload_or_not(ino, &cell);
            return Ok(());
        }
        self.upload(ino, &cell).await
    }

    /// Queues `ino` for a background upload if it has pending changes.
    fn queue_upload_or_not(&self, ino: InodeNo, cell: &Arc<FileCell>) {
        if cell.is_dirty() {
            self.queue_upload(ino, cell.clone());
        }
    }

    /// `fsync`/`fdatasync`: uploads the file's pending changes, whoever made them, and
    /// returns once they are in the bucket (or with the reason they are not).
    pub async fn fsync(&self, fh: u64) -> FsResult<()> {
        let FileHandle {
            ino, cell, lost, ..
        } = self.file_handle(fh)?;
        if let Some(e) = lost.get() {
            return Err(FsError::Lost(e.clone()));
        }
        // A failure reported here is not reported again at close.
        let earlier = cell.take_background_error();
        self.upload(ino, &cell).await?;
        match earlier {
            // The data is in the bucket now: the earlier failure cost nothing.
            Some(_) if !cell.is_dirty() => Ok(()),
            Some(e) => Err(FsError::Background(e)),
            None => Ok(()),
        }
    }

    /// `fsync` of a directory: returns once its attributes, written in the background (see
    /// [`Filesystem::setattr_dir`]), are on its marker, or with why they are not. Entries are
    /// made and removed in the bucket as they happen: nothing else to wait for.
    pub async fn fsyncdir(&self, ino: InodeNo) -> FsResult<()> {
        let cell = {
            let table = self.inodes.lock();
            let inode = table.get(ino).ok_or(FsError::NotFound)?;
            if inode.kind() != Kind::Dir {
                return Err(FsError::NotDir);
            }
            inode.file().cloned()
        };
        let Some(cell) = cell else {
            return Ok(());
        };
        let earlier = cell.take_background_error();
        self.upload(ino, &cell).await?;
        match earlier {
            Some(e) if cell.is_dirty() => Err(FsError::Background(e)),
            _ => Ok(()),
        }
    }

    /// Closes a handle. Changes still pending are uploaded; if that fails the file stays dirty
    /// and is retried at unmount.
    pub async fn release(&self, ino: InodeNo, fh: u64) -> FsResult<()> {
        let handle = self.handles.take(fh);
        let Some(Handle::File(h)) = handle else {
            return Err(FsError::BadHandle);
        };
        if h.writable {
            h.cell.page_gate.writer_closed();
        }
        let result = if self.writes_back_async() {
            self.queue_upload_or_not(ino, &h.cell);
            Ok(())
        } else {
            self.upload(ino, &h.cell).await
        };
        let last = self.inodes.lock().close_handle(ino) == 0;
        if last {
            // (The phase is read under the state lock: an unlink marks it there.)
            let mut st = h.cell.state.lock().await;
            if h.cell.phase() == Phase::Unlinked {
                // The last descriptor of a removed file: its data goes with it.
                Self::drop_unlinked_data(&mut st).await;
            } else if !h.cell.is_dirty() {
                st.staged = None;
            }
        }
        self.inodes.lock().maybe_evict(ino);
        result
    }

    /// Publishes the file's pending changes, if any, after an upload already in progress.
    pub(super) async fn upload(&self, ino: InodeNo, cell: &FileCell) -> FsResult<()> {
        let publishing = cell.publish.lock().await;
        self.upload_holding(ino, cell, &publishing).await
    }

    /// [`Filesystem::upload`] for a background task: a file whose bytes are going into a
    /// streamed upload is left alone (the close of the handle writing it finishes the stream;
    /// finished part-way, its next write would start the file over from a staged copy).
    pub(super) async fn upload_unless_streaming(
        &self,
        ino: InodeNo,
        cell: &FileCell,
    ) -> FsResult<()> {
        let _publishing = cell.publish.lock().await;
        self.upload_locked(ino, cell, false).await
    }

    /// [`Filesystem::upload`] for a caller that holds the file's publish lock (a rename, which
    /// must move exactly what it published).
    ///
    /// The state lock is held only to take a snapshot of the data and to record the result:
    /// readers, writers and `stat` of the file go on during the network call. A change made
    /// meanwhile leaves the file dirty, based on the generation this upload made.
    pub(super) async fn upload_holding(
        &self,
        ino: InodeNo,
        cell: &FileCell,
        _publishing: &tokio::sync::MutexGuard<'_, ()>,
    ) -> FsResult<()> {
        self.upload_locked(ino, cell, true).await
    }

    /// The upload, for a caller holding the publish lock; `settle_streams`: a streamed upload
    /// in progress is finished (else the file is left as it is).
    async fn upload_locked(
        &self,
        ino: InodeNo,
        cell: &FileCell,
        settle_streams: bool,
    ) -> FsResult<()> {
        if !cell.is_dirty() {
            return Ok(());
        }
        if self.is_dir(ino) {
            return self.publish_dir_attrs(ino, cell).await;
        }
        // The bytes the upload will hold in memory (one request's worth at most), from the
        // budget's transfers share: waited for before the state lock is taken.
        let size = self.inodes.lock().get(ino).map_or(0, |i| i.stat().size);
        let _memory = self.memory.transfer(size.min(SINGLE_REQUEST_MAX)).await;
        let mut st = cell.state.lock().await;
        if !cell.is_dirty() {
            return Ok(());
        }
        let (key, unlinked, open) = {
            let table = self.inodes.lock();
            let inode = table.get(ino).ok_or(FsError::NotFound)?;
            (
                inode.key().to_string(),
                inode.unlinked(),
                inode.open_handles() > 0,
            )
        };
        if unlinked {
            // Removed (or renamed over) since it changed: its changes go nowhere. While a
            // descriptor is open it keeps reading and writing them, as on a local filesystem
            // (the release of the last one drops them); a queued upload that runs after the
            // unlink must not take them away from it.
            if !open {
                Self::drop_unlinked_data(&mut st).await;
            }
            cell.unlinked();
            return Ok(());
        }
        if st.stream.is_some() {
            if !settle_streams {
                return Ok(());
            }
            // The stream's bytes are in its upload only: readers wait for it either way.
            return self.settle_stream(ino, &mut st).await;
        }
        let base = st.base_generation;
        let (source, attrs, snapshot) = if let Some(head) = &st.head {
            let data = Bytes::copy_from_slice(head.bytes());
            let attrs = self.new_object_attrs(ino, true);
            (WriteSource::Bytes(data), attrs, None)
        } else if let Some(staged) = &st.staged {
            let snapshot = staged.snapshot();
            let source = WriteSource::File {
                path: snapshot.path().to_path_buf(),
                crc32c: None,
            };
            (source, self.object_attrs(ino), Some(snapshot))
        } else {
            cell.nothing_to_upload();
            return Ok(());
        };
        let object_key = ObjectKey::new(key.clone())?;
        let seen = cell.upload_started();
        drop(st);
        let in_flight = self.stats.in_flight();
        let result = self
            .store
            .write(&object_key, source, Preconditions::generation(base), &attrs)
            .await;
        self.stats.upload_ended(&result);
        drop(in_flight);
        drop(snapshot);
        let mut st = cell.state.lock().await;
        match result {
            Ok(new) => {
                st.base_generation = new.generation;
                let clean = cell.uploaded(seen);
                if clean {
                    st.head = None;
                }
                self.published(ino, base, new, clean);
                Ok(())
            }
            // (An upload whose answer was lost, met again by its own retry, is recognised by
            // the store and never ends here.)
            Err(e) if e.kind() == ErrorKind::PreconditionFailed => {
                cell.conflicted();
                let staged = match (st.staged.take(), st.head.take()) {
                    (Some(staged), _) => Some(staged),
                    (None, Some(mut head)) => Some(Staged::from_head(
                        &self.config.temp_dir,
                        self.staging_memory(),
                        &mut head,
                        &mut Room::default(),
                    )?),
                    (None, None) => None,
                };
                let kept = staged.map(|staged| self.keep_conflict(&key, staged));
                let why = if base == Generation::NONE {
                    "another writer created this file first"
                } else {
                    "object changed by another writer"
                };
                tracing::error!(
                    key,
                    kept = ?kept.as_ref().and_then(|k| k.as_ref().ok()),
                    "{why}; this writer's data was not uploaded"
                );
                self.mark_not_local(ino);
                Err(FsError::Stale(why))
            }
            // The data stays staged (or in memory) for a later attempt (a close, the drain).
            Err(e) => {
                cell.upload_failed();
                Err(e.into())
            }
        }
    }

    /// Drops what a removed file held: its staging copy, its bytes in memory, and a streamed
    /// upload (aborted: it must not create the object of a removed file).
    pub(super) async fn drop_unlinked_data(st: &mut WriteState) {
        st.staged = None;
        st.head = None;
        if let Some(stream) = st.stream.take() {
            stream.abort().await;
        }
    }

    /// The attributes an upload of `ino`'s changes carries: the object's content type and
    /// custom metadata as known, and the POSIX attributes of the inode.
    fn object_attrs(&self, ino: InodeNo) -> WriteAttrs {
        let mut attrs = WriteAttrs::default();
        if let Some(inode) = self.inodes.lock().get(ino) {
            if let Some(meta) = &inode.meta() {
                attrs.content_type = meta.content_type.clone();
                attrs.metadata = meta.metadata.clone();
            }
            attrs.metadata.extend(attr::posix_metadata(inode.stat()));
        }
        attrs
    }

    fn mark_not_local(&self, ino: InodeNo) {
        let mut table = self.inodes.lock();
        if let Some(inode) = table.get_mut(ino) {
            inode.valid_for(self.now());
        }
        table.set_local(ino, false);
    }

    /// Records that this mount replaced generation `old` of `ino` (`Generation::NONE`: created
    /// it) with `new`. Handles of `old`, and handles of a file created here, now work on `new`:
    /// what they read and write was ours. If the file is not `clean` (changed during the
    /// upload), its size, times, mode and owner stay the local ones.
    fn published(&self, ino: InodeNo, old: Generation, new: crate::store::ObjectMeta, clean: bool) {
        let (generation, size) = (new.generation, new.size);
        {
            let mut table = self.inodes.lock();
            if let Some(inode) = table.get_mut(ino) {
                let local = inode.stat();
                let mut stat = Stat::from_object(&new);
                if !clean {
                    stat.size = local.size;
                    stat.mtime = local.mtime;
                    stat.ctime = local.ctime;
                    stat.perm = local.perm;
                    stat.uid = local.uid;
                    stat.gid = local.gid;
                }
                inode.cache_generation(Some(new.generation));
                inode.object_seen(new, stat);
                inode.valid_for(self.now() + self.config.metadata_ttl);
            }
            table.set_local(ino, false);
        }
        let from = (old != Generation::NONE).then_some(old);
        self.repin_handles(ino, from, generation, Some(size));
    }

    /// Completes the streaming upload of a new file (its changes are then published).
    pub(super) async fn settle_stream(&self, ino: InodeNo, st: &mut WriteState) -> FsResult<()> {
        let Some(stream) = st.stream.take() else {
            return Ok(());
        };
        let finished = stream.finish().await;
        self.stats.upload_ended(&finished);
        match finished {
            Ok(new) => {
                let old = std::mem::replace(&mut st.base_generation, new.generation);
                if let Some(cell) = self.cell_of(ino) {
                    cell.stream_done();
                }
                self.published(ino, old, new, true);
                Ok(())
            }
            Err(e) => Err(self.stream_lost(ino, e)),
        }
    }

    /// Settles a streamed upload that failed (a send was refused): the error, as every handle
    /// open on the file will report it from now on.
    async fn settle_failed_stream(&self, ino: InodeNo, st: &mut WriteState) -> FsError {
        match self.settle_stream(ino, st).await {
            Err(e) => e,
            // Not reached: a refused send means the upload ended without an object.
            Ok(()) => FsError::Stale("the streamed upload ended before the file did"),
        }
    }

    /// A streamed upload failed with `e`: its bytes were only in the upload, so they are gone.
    /// Says so loudly, leaves nothing dirty, and makes every handle open on the file report it
    /// (see `FileHandle::lost`).
    fn stream_lost(&self, ino: InodeNo, e: FsError) -> FsError {
        let path = self.path_of(ino);
        tracing::error!(path, error = %e, "streaming upload of a new file failed; its data was not saved");
        if let Some(cell) = self.cell_of(ino) {
            cell.stream_lost();
        }
        self.mark_not_local(ino);
        let e = Arc::new(match e.store_kind() {
            Some(ErrorKind::PreconditionFailed) => {
                FsError::Stale("another writer created this file first")
            }
            _ => e,
        });
        self.handles.each_file(|f| {
            if f.ino == ino && f.writable {
                let _ = f.lost.set(e.clone());
            }
        });
        FsError::Lost(e)
    }

    /// `ino`'s write-back state, if it has any.
    pub(super) fn cell_of(&self, ino: InodeNo) -> Option<Arc<FileCell>> {
        self.inodes.lock().get(ino).and_then(|i| i.file().cloned())
    }

    /// Attributes for a new object: its POSIX attributes. `with_mtime` is false for a stream,
    /// whose attributes are fixed when it starts (its mtime is then the object's update time).
    fn new_object_attrs(&self, ino: InodeNo, with_mtime: bool) -> WriteAttrs {
        let mut attrs = WriteAttrs::default();
        if let Some(inode) = self.inodes.lock().get(ino) {
            let mut md = attr::posix_metadata(inode.stat());
            if !with_mtime {
                md.remove(attr::MTIME_KEY);
                md.remove(attr::MTIME_NANOS_KEY);
            }
            attrs.metadata = md;
        }
        attrs
    }

    /// Moves a staging file that lost an upload race to `<temp-dir>/gcsfs-conflicts/`.
    fn keep_conflict(&self, key: &str, staged: Staged) -> FsResult<std::path::PathBuf> {
        let stamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let flat: String = key
            .chars()
            .map(|c| if c == '/' { '%' } else { c })
            .collect();
        let dest = self
            .config
            .temp_dir
            .join("gcsfs-conflicts")
            .join(format!("{stamp}-{flat}"));
        staged.persist(&dest)
    }

    fn key_of(&self, ino: InodeNo) -> FsResult<ObjectKey> {
        let table = self.inodes.lock();
        let inode = table.get(ino).ok_or(FsError::NotFound)?;
        Ok(ObjectKey::new(inode.key().to_string())?)
    }

    /// Changes size, mode, owner or times.
    pub async fn setattr(&self, ino: InodeNo, set: SetAttr) -> FsResult<Entry> {
        let kind = {
            let table = self.inodes.lock();
            table.get(ino).ok_or(FsError::NotFound)?.kind()
        };
        let changes_meta =
            set.mode.is_some() || set.uid.is_some() || set.gid.is_some() || set.mtime.is_some();
        let _change = if set.size.is_some() || changes_meta {
            Some(self.check_writable()?)
        } else {
            None
        };
        if set.size.is_none()
            && let Some(entry) = self.setattr_in_place(ino, set)
        {
            return Ok(entry);
        }
        if kind == Kind::Dir {
            if set.size.is_some() {
                return Err(FsError::IsDir);
            }
            return self.setattr_dir(ino, set).await;
        }
        if kind == Kind::Symlink && set.size.is_some() {
            return Err(FsError::InvalidArgument("truncate of a symlink"));
        }
        let cell = {
            let mut table = self.inodes.lock();
            let inode = table.get(ino).ok_or(FsError::NotFound)?;
            let generation = inode.stat().generation.unwrap_or(Generation::NONE);
            table.file_cell(ino, generation).expect("checked above")
        };
        let handle = set.fh.and_then(|fh| self.file_handle(fh).ok());
        if let Some(h) = &handle
            && set.size.is_some_and(|size| size > 0)
        {
            // A truncate to 0 through a handle is what an `O_TRUNC` open sends: not yet a
            // change worth a flush of its own (see `FileHandle::wrote`).
            h.wrote.store(true, Ordering::Release);
        }
        if set.size.is_some() {
            // Pages the kernel caches no longer stand for a generation in the bucket.
            cell.page_gate.close().await;
        }
        let mut st = cell.state.lock().await;
        // Read under the state lock, which a publish holds while it records its generation and
        // moves the handles: an upload that finished meanwhile is seen here. Nobody has the file
        // open: a change is based on the generation just looked up; through a handle, on the
        // one the handle works on.
        let idle_generation = {
            let table = self.inodes.lock();
            let inode = table.get(ino).ok_or(FsError::NotFound)?;
            (inode.open_handles() == 0)
                .then_some(inode.stat().generation)
                .flatten()
        };
        // The generation the handle works on, as it is now.
        let handle_generation = || {
            set.fh
                .and_then(|fh| self.file_handle(fh).ok())
                .and_then(|h| h.generation)
        };
        let pinned = handle_generation();
        if changes_meta && st.stream.is_some() {
            // A streaming upload's object metadata was fixed at its first write: publish what
            // was streamed, so the new attributes are patched onto it below.
            self.settle_stream(ino, &mut st).await?;
        }
        if let Some(seen) = idle_generation
            && !cell.is_dirty()
            && st.base_generation != seen
        {
            // Write-back state left by an earlier open of an older generation (as in `open`).
            st.staged = None;
            st.base_generation = seen;
        }
        if let Some(size) = set.size {
            let mut room = Room::default();
            let deadline = self.room_deadline();
            let mut pinned = pinned;
            while let Err(e) = self
                .ensure_staged(ino, &mut st, pinned, Some(size), &mut room)
                .await
            {
                // Waits for room holding nothing (see `memory.rs`).
                drop(st);
                self.wait_for_room(e, &mut room, deadline).await?;
                st = cell.state.lock().await;
                // The handle may have moved meanwhile (an upload, a rename): as it is now.
                pinned = handle_generation();
            }
            cell.changed();
        }
        let (open, local) = {
            let mut table = self.inodes.lock();
            let inode = table.get_mut(ino).ok_or(FsError::NotFound)?;
            let now = SystemTime::now();
            inode.changed_here(now, |stat| {
                if let Some(size) = set.size {
                    stat.size = size;
                    stat.mtime = now;
                }
                apply_attrs(stat, &set);
            });
            (inode.open_handles() > 0, inode.local())
        };
        if changes_meta && !cell.is_dirty() && !local {
            // A clean object: change its metadata in place.
            drop(st);
            self.patch_posix(ino).await?;
        } else {
            if changes_meta {
                // The new attributes go with the file's next upload; one in flight now took the
                // old ones, so the change leaves the file dirty after it (`uploaded`).
                cell.changed();
            }
            drop(st);
            if !open {
                if self.writes_back_async() {
                    // As a close with `--write-back async` (`tar x` sets each file's times
                    // right after closing it): queued, merged with an upload still queued.
                    self.queue_upload_or_not(ino, &cell);
                } else {
                    // truncate(2) or chmod on a file nobody has open: persist now, and keep no
                    // local copy (no handle will use it).
                    self.upload(ino, &cell).await?;
                    let mut st = cell.state.lock().await;
                    if !cell.is_dirty() {
                        st.staged = None;
                    }
                }
            }
        }
        let table = self.inodes.lock();
        let inode = table.get(ino).ok_or(FsError::NotFound)?;
        Ok(self.entry(inode.attr(&self.ownership())))
    }

    /// A `setattr` that sets each attribute to what it already is (`tar x` and `cp -p` chown
    /// every entry to the owner it already has, and chmod it to the mode it was made with):
    /// nothing to write, so no request. Only where this mount's view is current (within the
    /// metadata TTL, or changed here and not yet uploaded): a stale view may hide another
    /// client's change, which the full path's preconditions would see. The change time moves
    /// as POSIX asks. `None`: the full path applies.
    fn setattr_in_place(&self, ino: InodeNo, set: SetAttr) -> Option<Entry> {
        let now = self.now();
        let own = self.ownership();
        let mut table = self.inodes.lock();
        let inode = table.get_mut(ino)?;
        if !inode.answers_from_memory(now) {
            return None;
        }
        let attr = inode.attr(&own);
        let same = set.mode.is_none_or(|m| (m & 0o7777) as u16 == attr.perm)
            && set.uid.is_none_or(|u| u == attr.uid)
            && set.gid.is_none_or(|g| g == attr.gid)
            && set.mtime.is_none_or(|t| t == attr.mtime);
        if !same {
            return None;
        }
        inode.changed_here(SystemTime::now(), |_| {});
        Some(self.entry(inode.attr(&own)))
    }

    /// Changes a directory's mode, owner or times: kept on its marker object (made for an
    /// implicit directory). The bucket's root has no object: there they last as long as the
    /// mount. With `--write-back async` the change is made here at once and written to the
    /// marker in the background, as a file's data is (see [`Filesystem::publish_dir_attrs`]).
    async fn setattr_dir(&self, ino: InodeNo, set: SetAttr) -> FsResult<Entry> {
        // In the background only for a directory with a marker known here: an implicit one
        // needs its marker made, which must not happen after a rename or rmdir of it.
        let marked = self
            .inodes
            .lock()
            .get(ino)
            .is_some_and(|i| !i.key().is_empty() && i.object().is_some());
        if self.uploader_available() && marked {
            return self.setattr_dir_async(ino, set).await;
        }
        let (key, mut stat, known) = {
            let table = self.inodes.lock();
            let inode = table.get(ino).ok_or(FsError::NotFound)?;
            let known = inode.object().cloned();
            (inode.key().to_string(), inode.stat().clone(), known)
        };
        apply_attrs(&mut stat, &set);
        stat.ctime = SystemTime::now();
        let meta = match key.is_empty() {
            true => None,
            false => Some(
                self.write_dir_attrs(&ObjectKey::new(key)?, &stat, known, true)
                    .await?,
            ),
        };
        let mut table = self.inodes.lock();
        let inode = table.get_mut(ino).ok_or(FsError::NotFound)?;
        match meta {
            Some(meta) => {
                inode.object_seen(meta.clone(), Stat::from_marker(&meta));
                inode.valid_for(self.now() + self.config.metadata_ttl);
            }
            None => inode.changed_here(stat.ctime, |s| *s = stat),
        }
        Ok(self.entry(inode.attr(&self.ownership())))
    }

    /// [`Filesystem::setattr_dir`] with `--write-back async`: the attributes change in the table
    /// now; the directory gets write-back state of its own (a `FileCell`, dirty) and is queued,
    /// so the drain, `fsync`-like waits and the age bound treat it as they treat a file.
    async fn setattr_dir_async(&self, ino: InodeNo, set: SetAttr) -> FsResult<Entry> {
        let cell = {
            let mut table = self.inodes.lock();
            table
                .file_cell(ino, Generation::NONE)
                .ok_or(FsError::NotFound)?
        };
        // Every change is made with the state lock held (see `FileCell::uploaded`).
        let st = cell.state.lock().await;
        let entry = {
            let mut table = self.inodes.lock();
            let inode = table.get_mut(ino).ok_or(FsError::NotFound)?;
            inode.changed_here(SystemTime::now(), |stat| apply_attrs(stat, &set));
            self.entry(inode.attr(&self.ownership()))
        };
        cell.changed();
        drop(st);
        self.queue_upload(ino, cell);
        Ok(entry)
    }

    /// Writes a directory's pending attributes (`--write-back async`) to its marker; the
    /// caller holds the directory's publish lock, which `rmdir` and a rename of it take too, so
    /// a removed directory's marker is never written again.
    pub(super) async fn publish_dir_attrs(&self, ino: InodeNo, cell: &FileCell) -> FsResult<()> {
        let st = cell.state.lock().await;
        if !cell.is_dirty() {
            return Ok(());
        }
        let (key, stat, known, unlinked) = {
            let table = self.inodes.lock();
            let inode = table.get(ino).ok_or(FsError::NotFound)?;
            let known = inode.object().cloned();
            (
                inode.key().to_string(),
                inode.stat().clone(),
                known,
                inode.unlinked(),
            )
        };
        if unlinked {
            cell.unlinked();
            return Ok(());
        }
        if key.is_empty() {
            // The bucket's root: its attributes live in memory only.
            cell.nothing_to_upload();
            return Ok(());
        }
        let marker = ObjectKey::new(key)?;
        let seen = cell.upload_started();
        drop(st);
        let written = self.write_dir_attrs(&marker, &stat, known, false).await;
        let _st = cell.state.lock().await;
        let meta = match written {
            Ok(meta) => meta,
            Err(FsError::NotFound) => {
                // Its marker is gone (the directory was renamed or removed, here or by
                // another client): the attributes go with it.
                tracing::warn!(
                    path = self.path_of(ino),
                    "directory gone before its attributes were saved; they are dropped"
                );
                // Another client's doing (a rename here holds the publish lock): its state
                // wins, as an upload's lost race does.
                cell.conflicted();
                return Ok(());
            }
            Err(e) => {
                cell.upload_failed();
                return Err(e);
            }
        };
        let clean = cell.uploaded(seen);
        let mut table = self.inodes.lock();
        if let Some(inode) = table.get_mut(ino) {
            if clean {
                inode.object_seen(meta.clone(), Stat::from_marker(&meta));
            } else {
                inode.meta_seen(meta);
            }
        }
        Ok(())
    }

    /// live marker (conditional on its generation and metageneration), or, for a directory
    /// without one, a new marker (create-only). Tried again if another writer changes the
    /// marker in between. The first try patches the marker as this mount last saw it (`known`:
    /// made by `mkdir` here, or by the previous change), without asking for it first: one
    /// round trip where nobody else touched it (`tar x` sets each directory's mode and times).
    ///
    /// Without `create` a marker found missing is not made: `NotFound` (the background write
    /// of a directory renamed or removed meanwhile must not bring its old name back).
    async fn write_dir_attrs(
        &self,
        marker: &ObjectKey,
        stat: &Stat,
        known: Option<crate::store::ObjectMeta>,
        create: bool,
    ) -> FsResult<crate::store::ObjectMeta> {
        let md = attr::posix_metadata(stat);
        let mut known = known;
        for _ in 0..4 {
            let guessed = known.is_some();
            let live = match known.take() {
                Some(meta) => Ok(meta),
                None => self.store.stat(marker).await,
            };
            let written = match live {
                Ok(live) => {
                    let patch = md
                        .iter()
                        .map(|(k, v)| (k.clone(), Some(v.clone())))
                        .collect();
                    let pre = Preconditions {
                        if_generation_match: Some(live.generation),
                        if_metageneration_match: Some(live.metageneration),
                    };
                    self.store.patch_metadata(marker, &patch, pre).await
                }
                Err(e) if e.kind() == ErrorKind::NotFound && !create => {
                    return Err(FsError::NotFound);
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    let attrs = WriteAttrs {
                        content_type: None,
                        metadata: md.clone(),
                    };
                    let empty = WriteSource::Bytes(Bytes::new());
                    self.store
                        .write(marker, empty, Preconditions::create_only(), &attrs)
                        .await
                }
                Err(e) => return Err(e.into()),
            };
            match written {
                Ok(meta) => return Ok(meta),
                Err(e) if e.kind() == ErrorKind::PreconditionFailed => continue,
                // The marker as last seen here is gone: ask what there is now.
                Err(e) if guessed && e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(FsError::Stale("directory marker changed by another writer"))
    }

    /// Writes the inode's POSIX attributes into its object's metadata.
    async fn patch_posix(&self, ino: InodeNo) -> FsResult<()> {
        let (key, stat) = {
            let table = self.inodes.lock();
            let inode = table.get(ino).ok_or(FsError::NotFound)?;
            (inode.key().to_string(), inode.stat().clone())
        };
        let patch = attr::posix_metadata(&stat)
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect();
        let pre = Preconditions {
            if_generation_match: stat.generation,
            if_metageneration_match: stat.metageneration,
        };
        let key = ObjectKey::new(key)?;
        match self.store.patch_metadata(&key, &patch, pre).await {
            Ok(meta) => {
                let mut table = self.inodes.lock();
                if let Some(inode) = table.get_mut(ino) {
                    // The change's own time, if the service's `updated` is older (the
                    // emulator leaves it alone on a patch).
                    let mut stat = Stat::from_object(&meta);
                    stat.ctime = stat.ctime.max(inode.stat().ctime);
                    inode.object_seen(meta, stat);
                    inode.valid_for(self.now() + self.config.metadata_ttl);
                }
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::PreconditionFailed => {
                Err(FsError::Stale("object changed by another writer"))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// `set`'s mode, owner and mtime applied to `stat` (a size is the file's business, and the
/// caller moves the ctime: see `Inode::changed_here`).
fn apply_attrs(stat: &mut Stat, set: &SetAttr) {
    if let Some(mode) = set.mode {
        stat.perm = Some((mode & 0o7777) as u16);
    }
    if let Some(uid) = set.uid {
        stat.uid = Some(uid);
    }
    if let Some(gid) = set.gid {
        stat.gid = Some(gid);
    }
    if let Some(mtime) = set.mtime {
        stat.mtime = mtime;
    }
}
