//! Namespace changes: `mkdir`, `rmdir`, `unlink`, `rename`, `symlink`, `readlink`.
//!
//! Each is one or a few conditional store calls, so that a concurrent change by another client
//! is detected (ESTALE/EEXIST) rather than overwritten:
//! - `mkdir` creates the marker `dir/` only if it does not exist.
//! - `unlink` deletes the generation it knows.
//! - a file `rename` copies the known generation to the new name (only if that name still holds
//!   what we know of it) and then deletes that generation of the source: a crash in between
//!   leaves both names, never neither.
//! - a directory `rename` keeps a journal: it first creates the destination's marker `B/`
//!   (create-only) carrying [`RENAME_FROM_KEY`] = the source prefix, then copies every object
//!   under the source (create-only), deletes the sources (each at the generation copied, the
//!   source's marker last) and clears the key. A repeat of the rename after a crash finds the
//!   journal on the non-empty destination and resumes instead of failing with ENOTEMPTY.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::StreamExt;

use super::attr::{self, Caller, Kind, Stat};
use super::error::{FsError, FsResult};
use super::inode::InodeTable;
use super::names::{self, BadName};
use super::write::FileCell;
use super::{Entry, Filesystem, InodeNo};
use crate::store::{
    ByteRange, ErrorKind, Generation, ListRequest, ObjectKey, ObjectMeta, Preconditions,
    WriteAttrs, WriteSource,
};

/// Objects copied or deleted at once by a directory rename.
const RENAME_PARALLELISM: usize = 16;

/// Custom-metadata key of a directory rename's journal. A rename of `A/` to `B/` creates the
/// marker `B/` (create-only) with this key set to the source prefix `A/` (the full object-key
/// prefix) before it copies anything, and clears it when the sources are deleted. A rename of
/// `A` onto a non-empty `B` whose marker names `A/` here resumes that rename. An empty value
/// counts as absent (the emulator stores `""` for a PATCH that removes a key).
pub const RENAME_FROM_KEY: &str = "gcsfs-rename-from";

/// The source prefix named by a rename journal on directory marker `marker`, if any.
fn journal_source(marker: &ObjectMeta) -> Option<&str> {
    marker
        .metadata
        .get(RENAME_FROM_KEY)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// Whether `a` and `b` hold the same data: same size and same CRC32C (both known).
fn same_content(a: &ObjectMeta, b: &ObjectMeta) -> bool {
    a.size == b.size && a.crc32c.is_some() && a.crc32c == b.crc32c
}

/// `o`'s key relative to directory prefix `prefix` (which it starts with).
fn relative<'a>(o: &'a ObjectMeta, prefix: &str) -> &'a str {
    &o.key.as_str()[prefix.len()..]
}

fn check_new_name(name: &str) -> FsResult<()> {
    match names::check_component(name) {
        Ok(()) => Ok(()),
        Err(BadName::TooLong) => Err(FsError::NameTooLong),
        Err(_) => Err(FsError::InvalidArgument("name")),
    }
}

impl Filesystem {
    fn dir_key(&self, ino: InodeNo) -> FsResult<String> {
        let table = self.inodes.lock();
        let inode = table.get(ino).ok_or(FsError::NotFound)?;
        if inode.kind() != Kind::Dir {
            return Err(FsError::NotDir);
        }
        Ok(inode.key().to_string())
    }

    /// Creates directory `name` (a marker object `name/`), owned by `caller`, with `mode`
    /// (stored on the marker, as files store theirs, where it differs from the defaults).
    pub async fn mkdir(
        &self,
        parent: InodeNo,
        name: &str,
        mode: u32,
        caller: Caller,
    ) -> FsResult<Entry> {
        let _change = self.check_writable()?;
        check_new_name(name)?;
        let prefix = self.dir_key(parent)?;
        if self.resolve(parent, name).await.is_ok() {
            return Err(FsError::Exists);
        }
        let key = names::dir_prefix(&names::join(&prefix, name));
        let marker = ObjectKey::new(key.clone())?;
        let own = self.ownership();
        let perm = (mode & 0o7777) as u16;
        let (uid, gid) = own.stored_owner(caller);
        let wanted = Stat {
            perm: (perm != own.dir_mode).then_some(perm),
            uid,
            gid,
            ..Stat::dir(SystemTime::now())
        };
        let attrs = WriteAttrs {
            content_type: None,
            metadata: attr::posix_metadata(&wanted),
        };
        let meta = match self
            .store
            .write(
                &marker,
                WriteSource::Bytes(Bytes::new()),
                Preconditions::create_only(),
                &attrs,
            )
            .await
        {
            Ok(meta) => meta,
            Err(e) if e.kind() == ErrorKind::PreconditionFailed => return Err(FsError::Exists),
            Err(e) => return Err(e.into()),
        };
        self.forget_missing(parent, name);
        let valid = self.now() + self.config.metadata_ttl;
        let mut table = self.inodes.lock();
        let stat = Stat::from_marker(&meta);
        let ino = table.upsert_child(parent, name, key, stat, Some(meta), valid);
        table.add_lookups(ino, 1);
        let inode = table.get_mut(ino).expect("just created");
        // A directory made here starts empty: its lookups need not ask the store.
        inode.listed_in_full(self.complete_until(), 0, 0);
        let entry = self.entry(inode.attr(&self.ownership()));
        table.entries_changed(parent, 1);
        Ok(entry)
    }

    /// Removes empty directory `name`. Holds the directory's publish lock (if it has
    /// write-back state: attributes pending with `--write-back async`), so a background write
    /// of its attributes either ends before or finds it removed.
    pub async fn rmdir(&self, parent: InodeNo, name: &str) -> FsResult<()> {
        let _change = self.check_writable()?;
        let resolved = self.resolve(parent, name).await?;
        let cell = self
            .inodes
            .lock()
            .get(resolved.ino)
            .and_then(|i| i.file().cloned());
        let _publishing = match &cell {
            Some(cell) => Some(cell.publish.lock().await),
            None => None,
        };
        self.rmdir_holding(parent, name, resolved.ino).await
    }

    /// [`Filesystem::rmdir`] of `ino` (`parent/name`) for a caller holding its publish lock.
    async fn rmdir_holding(&self, parent: InodeNo, name: &str, ino: InodeNo) -> FsResult<()> {
        let key = {
            let table = self.inodes.lock();
            let inode = table.get(ino).ok_or(FsError::NotFound)?;
            if inode.kind() != Kind::Dir {
                return Err(FsError::NotDir);
            }
            // Files created here and not uploaded yet, at any depth, make it non-empty.
            if table.has_local_descendants(ino) {
                return Err(FsError::NotEmpty);
            }
            inode.key().to_string()
        };
        let page = self
            .store
            .list(&ListRequest {
                prefix: key.clone(),
                delimiter: None,
                max_results: Some(2),
                ..Default::default()
            })
            .await?;
        if page.objects.iter().any(|o| o.key.as_str() != key) || !page.prefixes.is_empty() {
            return Err(FsError::NotEmpty);
        }
        if let Some(marker) = page.objects.first() {
            let pre = Preconditions::generation(marker.generation);
            match self.store.delete(&marker.key, pre).await {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) if e.kind() == ErrorKind::PreconditionFailed => {
                    return Err(FsError::Stale("directory marker changed"));
                }
                Err(e) => return Err(e.into()),
            }
        }
        {
            let mut table = self.inodes.lock();
            table.detach(parent, name);
            table.entries_changed(parent, -1);
        }
        self.remember_missing(parent, name);
        Ok(())
    }

    /// Removes file or symlink `name`.
    pub async fn unlink(&self, parent: InodeNo, name: &str) -> FsResult<()> {
        let _change = self.check_writable()?;
        let resolved = self.resolve(parent, name).await?;
        let ino = resolved.ino;
        let cell = {
            let table = self.inodes.lock();
            let inode = table.get(ino).ok_or(FsError::NotFound)?;
            if inode.kind() == Kind::Dir {
                return Err(FsError::IsDir);
            }
            inode.file().cloned()
        };
        // An upload of the file in progress (a close elsewhere, or the write-back's) ends first:
        // what it made is then known, and none starts until this is done.
        let _publishing = match &cell {
            Some(cell) => Some(cell.publish.lock().await),
            None => None,
        };
        if let Some(cell) = &cell {
            let mut st = cell.state.lock().await;
            let open = self
                .inodes
                .lock()
                .get(ino)
                .is_some_and(|i| i.open_handles() > 0);
            if open && st.stream.is_some() {
                // A new file whose bytes went into a streamed upload, still open: they are
                // nowhere else, so the upload is finished and the file kept locally below like
                // any other (aborting it would take the bytes from the open descriptors).
                // A failed one lost them already (every handle says so): the unlink goes on.
                let _ = self.settle_stream(ino, &mut st).await;
            }
        }
        let (key, generation, local, open) = {
            let table = self.inodes.lock();
            let inode = table.get(ino).ok_or(FsError::NotFound)?;
            (
                inode.key().to_string(),
                inode.stat().generation,
                inode.local(),
                inode.open_handles() > 0,
            )
        };
        if let Some(cell) = &cell
            && open
            && !local
            && let Some(generation) = generation
        {
            // Open descriptors keep working after unlink, as on a local filesystem: they need
            // a local copy once the object is gone.
            self.keep_local_copy(ino, cell, generation).await?;
        }
        if !local && let Some(generation) = generation {
            let key = ObjectKey::new(key)?;
            match self
                .store
                .delete(&key, Preconditions::generation(generation))
                .await
            {
                Ok(()) => {}
                // Already gone: the end state is the one asked for.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) if e.kind() == ErrorKind::PreconditionFailed => {
                    return Err(FsError::Stale("file was replaced by another writer"));
                }
                Err(e) => return Err(e.into()),
            }
        }
        {
            let mut table = self.inodes.lock();
            table.detach(parent, name);
            table.entries_changed(parent, 0);
        }
        if let Some(cell) = &cell {
            // Its changes go nowhere from now on (no upload, no stream starts); open
            // descriptors keep them until the last is released.
            let mut st = cell.state.lock().await;
            if self
                .inodes
                .lock()
                .get(ino)
                .is_none_or(|i| i.open_handles() == 0)
            {
                Self::drop_unlinked_data(&mut st).await;
            }
            cell.unlinked();
        }
        self.remember_missing(parent, name);
        Ok(())
    }

    /// Creates symlink `name` → `target`, stored as gcloud and gcsfuse do: the object's data is
    /// the target and metadata `goog-reserved-file-is-symlink: true` marks it.
    pub async fn symlink(
        &self,
        parent: InodeNo,
        name: &str,
        target: &str,
        caller: Caller,
    ) -> FsResult<Entry> {
        let _change = self.check_writable()?;
        check_new_name(name)?;
        let prefix = self.dir_key(parent)?;
        if self.resolve(parent, name).await.is_ok() {
            return Err(FsError::Exists);
        }
        let key = names::join(&prefix, name);
        let (uid, gid) = self.ownership().stored_owner(caller);
        let owner = Stat {
            uid,
            gid,
            ..Stat::dir(SystemTime::now())
        };
        let mut attrs = WriteAttrs {
            content_type: None,
            metadata: attr::posix_metadata(&owner),
        };
        attrs
            .metadata
            .insert(attr::SYMLINK_KEY.to_string(), "true".to_string());
        let meta = match self
            .store
            .write(
                &ObjectKey::new(key.clone())?,
                WriteSource::Bytes(Bytes::copy_from_slice(target.as_bytes())),
                Preconditions::create_only(),
                &attrs,
            )
            .await
        {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::PreconditionFailed => return Err(FsError::Exists),
            Err(e) => return Err(e.into()),
        };
        self.forget_missing(parent, name);
        let valid = self.now() + self.config.metadata_ttl;
        let mut table = self.inodes.lock();
        let stat = Stat::from_object(&meta);
        let ino = table.upsert_child(parent, name, key, stat, Some(meta), valid);
        table.add_lookups(ino, 1);
        let inode = table.get_mut(ino).expect("just created");
        let entry = self.entry(inode.attr(&self.ownership()));
        table.entries_changed(parent, 0);
        Ok(entry)
    }

    /// The target of symlink `ino`.
    pub async fn readlink(&self, ino: InodeNo) -> FsResult<String> {
        let (key, stat) = {
            let table = self.inodes.lock();
            let inode = table.get(ino).ok_or(FsError::NotFound)?;
            if inode.kind() != Kind::Symlink {
                return Err(FsError::InvalidArgument("not a symlink"));
            }
            (inode.key().to_string(), inode.stat().clone())
        };
        if let Some(target) = stat.legacy_symlink_target {
            return Ok(target);
        }
        let key = ObjectKey::new(key)?;
        let mut stream = match self.store.read(&key, stat.generation, ByteRange::ALL).await {
            Ok(s) => s,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(FsError::Stale("symlink replaced"));
            }
            Err(e) => return Err(e.into()),
        };
        let mut data = Vec::new();
        while let Some(chunk) = stream.next().await {
            data.extend_from_slice(&chunk?);
        }
        String::from_utf8(data).map_err(|_| FsError::InvalidArgument("symlink target is not UTF-8"))
    }

    /// Renames `parent/name` to `new_parent/new_name`.
    pub async fn rename(
        &self,
        parent: InodeNo,
        name: &str,
        new_parent: InodeNo,
        new_name: &str,
        flags: u32,
    ) -> FsResult<()> {
        let _change = self.check_writable()?;
        check_new_name(new_name)?;
        if flags & libc::RENAME_EXCHANGE != 0 {
            return Err(FsError::NotSupported("RENAME_EXCHANGE"));
        }
        let no_replace = flags & libc::RENAME_NOREPLACE != 0;
        let resolved = self.resolve(parent, name).await?;
        let ino = resolved.ino;
        let new_prefix = self.dir_key(new_parent)?;
        let dst_resolved = match self.resolve(new_parent, new_name).await {
            Ok(d) => Some(d),
            Err(FsError::NotFound) => None,
            Err(e) => return Err(e),
        };
        let dst = dst_resolved.as_ref().map(|d| d.ino);
        if dst == Some(ino) {
            return Ok(());
        }
        if no_replace && dst.is_some() {
            return Err(FsError::Exists);
        }
        let (kind, dst_info) = {
            let table = self.inodes.lock();
            let kind = table.get(ino).ok_or(FsError::NotFound)?.kind();
            let dst_info = dst.and_then(|d| table.get(d).map(|i| (i.kind(), i.stat().generation)));
            (kind, dst_info)
        };
        match (kind, dst_info) {
            (Kind::Dir, Some((k, _))) if k != Kind::Dir => return Err(FsError::NotDir),
            (k, Some((Kind::Dir, _))) if k != Kind::Dir => return Err(FsError::IsDir),
            _ => {}
        }
        if kind == Kind::Dir {
            let new_key = names::dir_prefix(&names::join(&new_prefix, new_name));
            let existing = dst.map(|_| (new_parent, new_name));
            // Directories with attributes pending (written in the background) have publish locks:
            // both are held, taken in inode order, so no background write of their
            // attributes runs during the move (it then writes to the new name, or finds the
            // replaced directory removed).
            let cells = {
                let mut table = self.inodes.lock();
                if self.uploader_available() {
                    // So that a chmod arriving during the move waits for it (and then writes
                    // to the new name), the source always has a publish lock to hold.
                    let _ = table.file_cell(ino, Generation::NONE);
                }
                cells_in_lock_order(&table, ino, dst)
            };
            let _publishing = lock_publish(&cells).await;
            self.rename_dir(ino, &new_key, existing).await?;
            let mut table = self.inodes.lock();
            table.rename(ino, new_parent, new_name, new_key);
            // A resumed rename may have found more under the destination than the source's
            // last listing showed.
            if let Some(inode) = table.get_mut(ino) {
                inode.not_complete();
            }
        } else {
            self.rename_file(ino, dst, new_parent, new_name).await?;
        }
        {
            // A directory moved takes its link along; over an (empty) directory of the same
            // name it replaces that one's.
            let (from, to) = match (kind == Kind::Dir, dst.is_some()) {
                (false, _) => (0, 0),
                (true, false) => (-1, 1),
                (true, true) => (-1, 0),
            };
            let mut table = self.inodes.lock();
            table.entries_changed(parent, from);
            table.entries_changed(new_parent, to);
        }
        self.remember_missing(parent, name);
        self.forget_missing(new_parent, new_name);
        Ok(())
    }

    /// Moves file `ino` to `new_parent/new_name`, over file `dst` if there is one: copies it to
    /// the new key and deletes the source generation.
    ///
    /// Holds both files' publish locks (in inode order) until the table says where they are:
    /// the source's, so the copy carries exactly what was published; the destination's, so an
    /// upload of it (queued in the background, say) either finished before — and the copy is
    /// conditional on the generation it made — or comes after and finds it replaced (unlinked),
    /// never re-creating the old file over the renamed one.
    async fn rename_file(
        &self,
        ino: InodeNo,
        dst: Option<InodeNo>,
        new_parent: InodeNo,
        new_name: &str,
    ) -> FsResult<()> {
        let new_key = names::join(&self.dir_key(new_parent)?, new_name);
        let cells = cells_in_lock_order(&self.inodes.lock(), ino, dst);
        let guards = lock_publish(&cells).await;
        let source = cells.iter().position(|(i, _)| *i == ino);
        let cell = source.map(|k| cells[k].1.clone());
        // Publish pending changes first, so the copy carries them; no other upload starts
        // until the object has moved.
        if let Some(k) = source {
            self.upload_holding(ino, &cells[k].1, &guards[k]).await?;
        }
        let (key, generation, dst_generation) = {
            let table = self.inodes.lock();
            let inode = table.get(ino).ok_or(FsError::NotFound)?;
            // Read under the destination's publish lock: what its last upload made.
            let dst_generation = dst.and_then(|d| table.get(d)?.stat().generation);
            (
                inode.key().to_string(),
                inode.stat().generation,
                dst_generation,
            )
        };
        let Some(generation) = generation else {
            return Err(FsError::Stale("file has no uploaded generation"));
        };
        let src = ObjectKey::new(key)?;
        let dst_key = ObjectKey::new(new_key.clone())?;
        let pre = Preconditions::generation(dst_generation.unwrap_or(Generation::NONE));
        let copied = match self.store.copy(&src, Some(generation), &dst_key, pre).await {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::PreconditionFailed => {
                return Err(FsError::Stale("destination changed by another writer"));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(FsError::Stale("source changed by another writer"));
            }
            Err(e) => return Err(e.into()),
        };
        match self
            .store
            .delete(&src, Preconditions::generation(generation))
            .await
        {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) if e.kind() == ErrorKind::PreconditionFailed => {
                // Someone replaced the source meanwhile: both names now exist; keep theirs.
                tracing::warn!(src = %src, "source replaced during rename; left in place");
            }
            Err(e) => return Err(e.into()),
        }
        let new_generation = copied.generation;
        self.set_object(ino, copied);
        if let Some(cell) = &cell {
            let now_at = self
                .inodes
                .lock()
                .get(ino)
                .and_then(|i| i.stat().generation)
                .unwrap_or(Generation::NONE);
            let mut st = cell.state.lock().await;
            if st.base_generation == generation {
                // The local data is based on the generation copied: now on the copy.
                st.base_generation = now_at;
            } else if !cell.is_dirty() {
                // A clean local copy of an older generation (this mount's own upload, since
                // replaced by another writer whose object was the one moved) does not
                // describe the moved file: changes made on top of it must not be taken for
                // changes of the copy.
                st.staged = None;
                st.base_generation = now_at;
            }
            // Else changes made (during the copy) on top of an older generation stay based on
            // it: their upload fails its precondition and they go to the conflicts directory,
            // never over the other writer's data.
        }
        self.repin_handles(ino, Some(generation), new_generation, None);
        self.inodes
            .lock()
            .rename(ino, new_parent, new_name, new_key);
        if let Some(dst) = dst.filter(|&d| d != ino)
            && let Some((_, dst_cell)) = cells.iter().find(|(i, _)| *i == dst)
        {
            // The file renamed over is unlinked: its changes go nowhere (as `unlink`).
            let mut st = dst_cell.state.lock().await;
            if self
                .inodes
                .lock()
                .get(dst)
                .is_none_or(|i| i.open_handles() == 0)
            {
                Self::drop_unlinked_data(&mut st).await;
            }
            dst_cell.unlinked();
        }
        drop(guards);
        Ok(())
    }

    fn set_object(&self, ino: InodeNo, meta: ObjectMeta) {
        let mut table = self.inodes.lock();
        if let Some(inode) = table.get_mut(ino) {
            inode.cache_generation(Some(meta.generation));
            inode.object_seen(meta.clone(), Stat::from_object(&meta));
            inode.valid_for(self.now() + self.config.metadata_ttl);
        }
    }

    /// Copies `o` from under `old_prefix` to under `new_prefix`, create-only. A copy that is
    /// already there (an earlier attempt's, whose answer was lost) counts as done only if it
    /// holds the same data; anything else there is another writer's: ESTALE. Returns the
    /// source key, the generation copied and the copy.
    async fn copy_for_rename(
        &self,
        o: &ObjectMeta,
        old_prefix: &str,
        new_prefix: &str,
    ) -> FsResult<(String, (Generation, ObjectMeta))> {
        let dst = ObjectKey::new(format!("{new_prefix}{}", relative(o, old_prefix)))?;
        let done = |copy: ObjectMeta| (o.key.as_str().to_string(), (o.generation, copy));
        match self
            .store
            .copy(
                &o.key,
                Some(o.generation),
                &dst,
                Preconditions::create_only(),
            )
            .await
        {
            Ok(copy) => Ok(done(copy)),
            Err(e) if e.kind() == ErrorKind::PreconditionFailed => {
                match self.store.stat(&dst).await {
                    Ok(there) if same_content(o, &there) => Ok(done(there)),
                    Ok(_) => Err(FsError::Stale(
                        "rename destination holds another object of the same name",
                    )),
                    Err(e) if e.kind() == ErrorKind::NotFound => Err(FsError::Stale(
                        "rename destination changed by another writer",
                    )),
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                Err(FsError::Stale("rename source changed by another writer"))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the generation of `o` that was copied (already gone counts as done).
    async fn delete_for_rename(&self, o: &ObjectMeta) -> FsResult<()> {
        match self
            .store
            .delete(&o.key, Preconditions::generation(o.generation))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) if e.kind() == ErrorKind::PreconditionFailed => {
                tracing::warn!(key = %o.key, "rename source replaced after it was copied; left in place");
                Err(FsError::Stale("rename source replaced after it was copied"))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Every object under `prefix`, at most `rename_dir_limit` of them (EMFILE otherwise).
    async fn list_for_rename(&self, prefix: &str) -> FsResult<Vec<ObjectMeta>> {
        let mut objects = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .store
                .list(&ListRequest {
                    prefix: prefix.to_string(),
                    delimiter: None,
                    page_token: token,
                    max_results: Some(self.config.list_page_size),
                    start_offset: None,
                })
                .await?;
            objects.extend(page.objects);
            if objects.len() as u64 > self.config.rename_dir_limit {
                return Err(FsError::TooManyObjects {
                    limit: self.config.rename_dir_limit,
                });
            }
            token = page.next_page_token;
            if token.is_none() {
                return Ok(objects);
            }
        }
    }

    /// The marker `new_prefix` if it carries a rename journal naming `old_prefix`.
    async fn journal_naming(
        &self,
        new_prefix: &str,
        old_prefix: &str,
    ) -> FsResult<Option<ObjectMeta>> {
        match self.store.stat(&ObjectKey::new(new_prefix)?).await {
            Ok(marker) if journal_source(&marker) == Some(old_prefix) => Ok(Some(marker)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Starts the journal of renaming `old_prefix` to `new_prefix`: creates the marker
    /// `new_prefix` (create-only) naming the source. It takes the place of the source's own
    /// marker `src_marker`, so it carries that marker's data, content type and metadata.
    /// Returns whether this call created it (a marker already naming the source is an earlier
    /// attempt's: its answer was lost, or it crashed).
    async fn start_journal(
        &self,
        new_prefix: &str,
        old_prefix: &str,
        src_marker: Option<&ObjectMeta>,
    ) -> FsResult<bool> {
        let mut attrs = WriteAttrs::default();
        let mut data = Bytes::new();
        if let Some(m) = src_marker {
            attrs.content_type = m.content_type.clone();
            attrs.metadata = m.metadata.clone();
            if m.size > 0 {
                // A marker holding data (rare): keep its data, pinned to the generation listed.
                let mut stream = match self
                    .store
                    .read(&m.key, Some(m.generation), ByteRange::ALL)
                    .await
                {
                    Ok(s) => s,
                    Err(e) if e.kind() == ErrorKind::NotFound => {
                        return Err(FsError::Stale("source directory marker replaced"));
                    }
                    Err(e) => return Err(e.into()),
                };
                let mut buf = Vec::new();
                while let Some(chunk) = stream.next().await {
                    buf.extend_from_slice(&chunk?);
                }
                data = Bytes::from(buf);
            }
        }
        attrs
            .metadata
            .insert(RENAME_FROM_KEY.to_string(), old_prefix.to_string());
        let key = ObjectKey::new(new_prefix)?;
        match self
            .store
            .write(
                &key,
                WriteSource::Bytes(data),
                Preconditions::create_only(),
                &attrs,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::PreconditionFailed => {
                match self.journal_naming(new_prefix, old_prefix).await? {
                    Some(_) => Ok(false),
                    None => Err(FsError::Stale(
                        "rename destination created by another writer",
                    )),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Ends the journal on `marker` once every source is deleted: clears the key, or deletes
    /// the marker when the source had no marker of its own (an implicit directory stays
    /// implicit). A failure is only logged: the rename is complete, and a journal left behind
    /// is harmless (a later rename of a new `A` onto `B` still needs `B` to be `A`'s partial
    /// copy, see [`Filesystem::rename_dir`]).
    async fn finish_journal(&self, marker: &ObjectMeta, keep_marker: bool) {
        let pre = Preconditions::generation(marker.generation);
        let result = if keep_marker {
            let patch = [(RENAME_FROM_KEY.to_string(), None)].into_iter().collect();
            self.store
                .patch_metadata(&marker.key, &patch, pre)
                .await
                .map(drop)
        } else {
            self.store.delete(&marker.key, pre).await
        };
        match result {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(marker = %marker.key, %error, "directory renamed; its journal key was not cleared (harmless)");
            }
        }
    }

    /// Renames directory `ino` to `new_prefix`: publishes pending changes below it, starts or
    /// resumes the journal, copies what is missing, deletes the sources, ends the journal.
    ///
    /// `existing` is the destination's (parent, name) when it already exists. It must be empty
    /// (it is removed first), unless its marker's journal names this source: then this resumes
    /// an interrupted rename. A resume requires the destination to be a partial copy of the
    /// source: either everything under it has a source of the same name (the copy phase was
    /// interrupted) or every source has a copy (the delete phase was), and no file under it has
    /// changes made here not uploaded yet; otherwise ENOTEMPTY, as without a journal. An existing copy counts as done only if it holds the source's data
    /// (size and CRC32C); a mismatch means another writer changed something: ESTALE, before
    /// anything is copied or deleted.
    async fn rename_dir(
        &self,
        ino: InodeNo,
        new_prefix: &str,
        existing: Option<(InodeNo, &str)>,
    ) -> FsResult<()> {
        let old_prefix = {
            let table = self.inodes.lock();
            table.get(ino).ok_or(FsError::NotFound)?.key().to_string()
        };
        // An interrupted attempt's journal, or else the destination must be empty.
        let resumed = match existing {
            Some(_) => self.journal_naming(new_prefix, &old_prefix).await?,
            None => None,
        };
        if let Some((parent, name)) = existing {
            if resumed.is_none() {
                // The caller holds the destination's publish lock.
                let dst = self.resolve(parent, name).await?;
                self.rmdir_holding(parent, name, dst.ino).await?;
            } else {
                // A partial copy holds only copies: changes made here under it (new or
                // dirty files) are not the source's.
                let table = self.inodes.lock();
                if table
                    .child(parent, name)
                    .is_some_and(|d| table.has_unsaved_descendants(d))
                {
                    return Err(FsError::NotEmpty);
                }
            }
        }
        // Publish pending changes below the directory first.
        let pending: Vec<_> = {
            let table = self.inodes.lock();
            table
                .descendants(&old_prefix, ino)
                .into_iter()
                .filter_map(|d| table.get(d).and_then(|i| i.file().cloned().map(|f| (d, f))))
                .collect()
        };
        for (d, cell) in pending {
            self.upload(d, &cell).await?;
        }
        let sources = self.list_for_rename(&old_prefix).await?;
        let src_marker = sources
            .iter()
            .find(|o| o.key.as_str() == old_prefix)
            .cloned();

        // The journal: left by an interrupted attempt, or started now.
        let created = match resumed {
            Some(_) => false,
            None => {
                self.start_journal(new_prefix, &old_prefix, src_marker.as_ref())
                    .await?
            }
        };

        // What the destination holds now.
        let there = self.list_for_rename(new_prefix).await?;
        let Some(journal) = there
            .iter()
            .find(|o| o.key.as_str() == new_prefix)
            .filter(|m| journal_source(m) == Some(old_prefix.as_str()))
            .cloned()
        else {
            return Err(FsError::Stale("rename journal changed by another writer"));
        };
        let src: std::collections::BTreeMap<&str, &ObjectMeta> = sources
            .iter()
            .filter(|o| o.key.as_str() != old_prefix)
            .map(|o| (relative(o, &old_prefix), o))
            .collect();
        let dst: std::collections::BTreeMap<&str, &ObjectMeta> = there
            .iter()
            .filter(|o| o.key.as_str() != new_prefix)
            .map(|o| (relative(o, new_prefix), o))
            .collect();
        let partial_copy =
            dst.keys().all(|k| src.contains_key(k)) || src.keys().all(|k| dst.contains_key(k));
        if !partial_copy {
            if created {
                // Not ours to fill (a cached "no such directory" was out of date): take the
                // marker back.
                self.finish_journal(&journal, false).await;
            }
            return Err(FsError::NotEmpty);
        }
        if let Some(m) = &src_marker
            && !same_content(m, &journal)
        {
            return Err(FsError::Stale("source directory marker replaced"));
        }
        let mut copied = std::collections::HashMap::new();
        let mut missing = Vec::new();
        for (rel, o) in &src {
            match dst.get(rel) {
                Some(copy) if same_content(o, copy) => {
                    copied.insert(o.key.as_str().to_string(), (o.generation, (*copy).clone()));
                }
                Some(_) => {
                    return Err(FsError::Stale(
                        "rename destination holds another object of the same name",
                    ));
                }
                None => missing.push(*o),
            }
        }

        // Copy phase, then delete phase (the source's marker last, so it stays a directory
        // until the end), a few objects at a time.
        for chunk in missing.chunks(RENAME_PARALLELISM) {
            let done = futures::future::try_join_all(
                chunk
                    .iter()
                    .map(|o| self.copy_for_rename(o, &old_prefix, new_prefix)),
            )
            .await?;
            copied.extend(done);
        }
        let objects: Vec<&ObjectMeta> = src.values().copied().collect();
        for chunk in objects.chunks(RENAME_PARALLELISM) {
            futures::future::try_join_all(chunk.iter().map(|o| self.delete_for_rename(o))).await?;
        }
        if let Some(m) = &src_marker {
            self.delete_for_rename(m).await?;
        }
        self.finish_journal(&journal, src_marker.is_some()).await;
        self.rebase_moved(&old_prefix, ino, copied).await;
        Ok(())
    }

    /// Loaded files below a renamed directory now live at the copies: take their generations,
    /// so later changes through open handles are based on them (not on the deleted sources).
    async fn rebase_moved(
        &self,
        old_prefix: &str,
        dir: InodeNo,
        mut copied: std::collections::HashMap<String, (Generation, ObjectMeta)>,
    ) {
        let mut cells = Vec::new();
        {
            let mut table = self.inodes.lock();
            for d in table.descendants(old_prefix, dir) {
                let Some(inode) = table.get_mut(d) else {
                    continue;
                };
                if inode.kind() == Kind::Dir {
                    // A directory's marker object is not the directory's state.
                    continue;
                }
                let Some((source, new)) = copied.remove(inode.key()) else {
                    continue;
                };
                let old = inode.stat().generation;
                inode.cache_generation(Some(new.generation));
                // Only a copy of the generation this file was at moves it along; a copy of
                // another writer's newer one leaves its changes to fail their upload.
                if let Some(cell) = inode.file()
                    && old == Some(source)
                {
                    cells.push((d, cell.clone(), old, new.generation));
                }
                inode.object_seen(new.clone(), Stat::from_object(&new));
            }
        }
        for (ino, cell, old, new) in cells {
            {
                let mut st = cell.state.lock().await;
                if Some(st.base_generation) == old {
                    st.base_generation = new;
                }
            }
            if let Some(old) = old {
                self.repin_handles(ino, Some(old), new, None);
            }
        }
    }
}

/// The write-back state of `ino` and of `dst` (what a rename replaces), those that have one,
/// in inode order: the order in which a rename takes their two publish locks (the lock order
/// in `mod.rs`).
fn cells_in_lock_order(
    table: &InodeTable,
    ino: InodeNo,
    dst: Option<InodeNo>,
) -> Vec<(InodeNo, Arc<FileCell>)> {
    let mut cells: Vec<_> = [Some(ino), dst.filter(|&d| d != ino)]
        .into_iter()
        .flatten()
        .filter_map(|i| Some((i, table.get(i)?.file()?.clone())))
        .collect();
    cells.sort_by_key(|(i, _)| *i);
    cells
}

/// Takes the publish locks of `cells`, in their order (see `cells_in_lock_order`).
async fn lock_publish(cells: &[(InodeNo, Arc<FileCell>)]) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
    let mut guards = Vec::with_capacity(cells.len());
    for (_, cell) in cells {
        guards.push(cell.publish.lock().await);
    }
    guards
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Metageneration;

    fn marker(metadata: &[(&str, &str)], crc32c: Option<u32>) -> ObjectMeta {
        ObjectMeta {
            key: ObjectKey::new("B/").unwrap(),
            size: 0,
            generation: Generation(1),
            metageneration: Metageneration(1),
            updated: SystemTime::UNIX_EPOCH,
            crc32c,
            content_type: None,
            metadata: metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn an_empty_journal_value_counts_as_absent() {
        assert_eq!(
            journal_source(&marker(&[(RENAME_FROM_KEY, "A/")], None)),
            Some("A/")
        );
        // The emulator stores "" for a PATCH that removes the key.
        assert_eq!(
            journal_source(&marker(&[(RENAME_FROM_KEY, "")], None)),
            None
        );
        assert_eq!(journal_source(&marker(&[("other", "A/")], None)), None);
    }

    #[test]
    fn same_content_needs_equal_size_and_known_equal_crc() {
        let a = marker(&[], Some(7));
        assert!(same_content(&a, &marker(&[("x", "y")], Some(7))));
        assert!(!same_content(&a, &marker(&[], Some(8))));
        assert!(!same_content(&marker(&[], None), &marker(&[], None)));
        let bigger = ObjectMeta {
            size: 1,
            ..a.clone()
        };
        assert!(!same_content(&a, &bigger));
    }
}
