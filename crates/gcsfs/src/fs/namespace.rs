//! Namespace changes: `mkdir`, `rmdir`, `unlink`, `rename`, `symlink`, `readlink`.
//!
//! Each is one or a few conditional store calls, so that a concurrent change by another client
//! is detected (ESTALE/EEXIST) rather than overwritten:
//! - `mkdir` creates the marker `dir/` only if it does not exist.
//! - `unlink` deletes the generation it knows.
//! - a file `rename` copies the known generation to the new name (only if that name still holds
//!   what we know of it) and then deletes that generation of the source: a crash in between
//!   leaves both names, never neither.
//! - a directory `rename` copies every object under the prefix, then deletes the sources; repeat
//!   it after a crash to finish.

use std::time::SystemTime;

use bytes::Bytes;
use futures::StreamExt;

use super::attr::{self, Kind, Stat};
use super::error::{FsError, FsResult};
use super::names::{self, BadName};
use super::{Entry, Filesystem, InodeNo};
use crate::store::{
    ByteRange, ErrorKind, Generation, ListRequest, ObjectKey, ObjectMeta, Preconditions,
    WriteAttrs, WriteSource,
};

/// Objects copied or deleted at once by a directory rename.
const RENAME_PARALLELISM: usize = 16;

fn check_new_name(name: &str) -> FsResult<()> {
    match names::check_component(name) {
        Ok(()) => Ok(()),
        Err(BadName::TooLong) => Err(FsError::NameTooLong),
        Err(_) => Err(FsError::InvalidArgument("name")),
    }
}

impl Filesystem {
    fn dir_key(&self, ino: InodeNo) -> FsResult<String> {
        let table = self.inodes.lock().unwrap();
        let inode = table.get(ino).ok_or(FsError::NotFound)?;
        if inode.kind() != Kind::Dir {
            return Err(FsError::NotDir);
        }
        Ok(inode.key.clone())
    }

    /// Creates directory `name` (a marker object `name/`).
    pub async fn mkdir(&self, parent: InodeNo, name: &str, mode: u32) -> FsResult<Entry> {
        self.check_writable()?;
        check_new_name(name)?;
        let _ = mode;
        let prefix = self.dir_key(parent)?;
        if self.resolve(parent, name).await.is_ok() {
            return Err(FsError::Exists);
        }
        let key = names::dir_prefix(&names::join(&prefix, name));
        let marker = ObjectKey::new(key.clone())?;
        match self
            .store
            .write(
                &marker,
                WriteSource::Bytes(Bytes::new()),
                Preconditions::create_only(),
                &WriteAttrs::default(),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::PreconditionFailed => return Err(FsError::Exists),
            Err(e) => return Err(e.into()),
        }
        self.forget_missing(parent, name);
        let valid = self.now() + self.config.metadata_ttl;
        let mut table = self.inodes.lock().unwrap();
        let ino = table.upsert_child(parent, name, key, Stat::dir(SystemTime::now()), None, valid);
        let inode = table.get_mut(ino).expect("just created");
        inode.lookups += 1;
        // A directory made here starts empty: its lookups need not ask the store.
        inode.complete_until = self.complete_until();
        Ok(self.entry(inode.stat.attr(ino, &self.ownership())))
    }

    /// Removes empty directory `name`.
    pub async fn rmdir(&self, parent: InodeNo, name: &str) -> FsResult<()> {
        self.check_writable()?;
        let ino = self.resolve(parent, name).await?;
        let key = {
            let table = self.inodes.lock().unwrap();
            let inode = table.get(ino).ok_or(FsError::NotFound)?;
            if inode.kind() != Kind::Dir {
                return Err(FsError::NotDir);
            }
            // Files created here and not uploaded yet, at any depth, make it non-empty.
            if table.has_local_descendants(ino) {
                return Err(FsError::NotEmpty);
            }
            inode.key.clone()
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
        self.inodes.lock().unwrap().detach(parent, name);
        self.remember_missing(parent, name);
        Ok(())
    }

    /// Removes file or symlink `name`.
    pub async fn unlink(&self, parent: InodeNo, name: &str) -> FsResult<()> {
        self.check_writable()?;
        let ino = self.resolve(parent, name).await?;
        let (key, generation, local, open_cell) = {
            let table = self.inodes.lock().unwrap();
            let inode = table.get(ino).ok_or(FsError::NotFound)?;
            if inode.kind() == Kind::Dir {
                return Err(FsError::IsDir);
            }
            let open_cell = (inode.open_handles > 0)
                .then(|| inode.file.clone())
                .flatten();
            (
                inode.key.clone(),
                inode.stat.generation,
                inode.local,
                open_cell,
            )
        };
        if let Some(cell) = open_cell
            && !local
        {
            // Open descriptors keep working after unlink, as on a local filesystem: they need
            // a local copy once the object is gone.
            let mut st = cell.state.lock().await;
            self.ensure_staged(ino, &mut st, generation, None).await?;
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
        self.inodes.lock().unwrap().detach(parent, name);
        self.remember_missing(parent, name);
        Ok(())
    }

    /// Creates symlink `name` → `target`, stored as gcloud and gcsfuse do: the object's data is
    /// the target and metadata `goog-reserved-file-is-symlink: true` marks it.
    pub async fn symlink(&self, parent: InodeNo, name: &str, target: &str) -> FsResult<Entry> {
        self.check_writable()?;
        check_new_name(name)?;
        let prefix = self.dir_key(parent)?;
        if self.resolve(parent, name).await.is_ok() {
            return Err(FsError::Exists);
        }
        let key = names::join(&prefix, name);
        let mut attrs = WriteAttrs::default();
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
        let mut table = self.inodes.lock().unwrap();
        let stat = Stat::from_object(&meta);
        let ino = table.upsert_child(parent, name, key, stat, Some(meta), valid);
        let inode = table.get_mut(ino).expect("just created");
        inode.lookups += 1;
        Ok(self.entry(inode.stat.attr(ino, &self.ownership())))
    }

    /// The target of symlink `ino`.
    pub async fn readlink(&self, ino: InodeNo) -> FsResult<String> {
        let (key, stat) = {
            let table = self.inodes.lock().unwrap();
            let inode = table.get(ino).ok_or(FsError::NotFound)?;
            if inode.kind() != Kind::Symlink {
                return Err(FsError::InvalidArgument("not a symlink"));
            }
            (inode.key.clone(), inode.stat.clone())
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
        self.check_writable()?;
        check_new_name(new_name)?;
        if flags & libc::RENAME_EXCHANGE != 0 {
            return Err(FsError::NotSupported("RENAME_EXCHANGE"));
        }
        let no_replace = flags & libc::RENAME_NOREPLACE != 0;
        let ino = self.resolve(parent, name).await?;
        let new_prefix = self.dir_key(new_parent)?;
        let dst = match self.resolve(new_parent, new_name).await {
            Ok(d) => Some(d),
            Err(FsError::NotFound) => None,
            Err(e) => return Err(e),
        };
        if dst == Some(ino) {
            return Ok(());
        }
        if no_replace && dst.is_some() {
            return Err(FsError::Exists);
        }
        let (kind, dst_info) = {
            let table = self.inodes.lock().unwrap();
            let kind = table.get(ino).ok_or(FsError::NotFound)?.kind();
            let dst_info = dst.and_then(|d| table.get(d).map(|i| (i.kind(), i.stat.generation)));
            (kind, dst_info)
        };
        match (kind, dst_info) {
            (Kind::Dir, Some((k, _))) if k != Kind::Dir => return Err(FsError::NotDir),
            (k, Some((Kind::Dir, _))) if k != Kind::Dir => return Err(FsError::IsDir),
            _ => {}
        }
        if kind == Kind::Dir {
            let new_key = names::dir_prefix(&names::join(&new_prefix, new_name));
            if dst.is_some() {
                // Renaming onto an existing directory needs it empty.
                if let Err(e) = self.rmdir(new_parent, new_name).await {
                    return Err(match e {
                        FsError::NotEmpty => FsError::NotEmpty,
                        other => other,
                    });
                }
            }
            self.rename_dir(ino, &new_key).await?;
            self.inodes
                .lock()
                .unwrap()
                .rename(ino, new_parent, new_name, new_key);
        } else {
            let new_key = names::join(&new_prefix, new_name);
            let dst_generation = dst_info.and_then(|(_, g)| g);
            self.rename_file(ino, &new_key, dst_generation).await?;
            self.inodes
                .lock()
                .unwrap()
                .rename(ino, new_parent, new_name, new_key);
        }
        self.remember_missing(parent, name);
        self.forget_missing(new_parent, new_name);
        Ok(())
    }

    /// Copies file `ino` to `new_key` and deletes the source generation.
    async fn rename_file(
        &self,
        ino: InodeNo,
        new_key: &str,
        dst_generation: Option<Generation>,
    ) -> FsResult<()> {
        // Publish pending changes first, so the copy carries them.
        let cell = self
            .inodes
            .lock()
            .unwrap()
            .get(ino)
            .and_then(|i| i.file.clone());
        if let Some(cell) = &cell {
            self.upload(ino, cell).await?;
        }
        let (key, generation) = {
            let table = self.inodes.lock().unwrap();
            let inode = table.get(ino).ok_or(FsError::NotFound)?;
            (inode.key.clone(), inode.stat.generation)
        };
        let Some(generation) = generation else {
            return Err(FsError::Stale("file has no uploaded generation"));
        };
        let src = ObjectKey::new(key)?;
        let dst = ObjectKey::new(new_key.to_string())?;
        let pre = Preconditions::generation(dst_generation.unwrap_or(Generation::NONE));
        let copied = match self.store.copy(&src, Some(generation), &dst, pre).await {
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
            let generation = self
                .inodes
                .lock()
                .unwrap()
                .get(ino)
                .and_then(|i| i.stat.generation)
                .unwrap_or(Generation::NONE);
            cell.state.lock().await.base_generation = generation;
        }
        self.repin_handles(ino, Some(generation), new_generation, None);
        Ok(())
    }

    fn set_object(&self, ino: InodeNo, meta: ObjectMeta) {
        let mut table = self.inodes.lock().unwrap();
        if let Some(inode) = table.get_mut(ino) {
            inode.stat = Stat::from_object(&meta);
            inode.cached_generation = Some(meta.generation);
            inode.meta = Some(meta);
            inode.valid_until = self.now() + self.config.metadata_ttl;
        }
    }

    /// Copies `o` from under `old_prefix` to under `new_prefix` (create-only: a copy left by an
    /// interrupted earlier attempt counts as done). Returns the source key, the generation
    /// copied and the copy.
    async fn copy_for_rename(
        &self,
        o: &ObjectMeta,
        old_prefix: &str,
        new_prefix: &str,
    ) -> FsResult<Option<(String, (Generation, ObjectMeta))>> {
        let dst = ObjectKey::new(format!(
            "{new_prefix}{}",
            &o.key.as_str()[old_prefix.len()..]
        ))?;
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
            Ok(new) => Ok(Some((o.key.as_str().to_string(), (o.generation, new)))),
            Err(e) if e.kind() == ErrorKind::PreconditionFailed => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the generation of `o` that was copied.
    async fn delete_for_rename(&self, o: &ObjectMeta) -> FsResult<()> {
        match self
            .store
            .delete(&o.key, Preconditions::generation(o.generation))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Copies every object under directory `ino` to `new_prefix`, then deletes the sources.
    async fn rename_dir(&self, ino: InodeNo, new_prefix: &str) -> FsResult<()> {
        // Publish pending changes below the directory first.
        let old_prefix = {
            let table = self.inodes.lock().unwrap();
            table.get(ino).ok_or(FsError::NotFound)?.key.clone()
        };
        let pending: Vec<_> = {
            let table = self.inodes.lock().unwrap();
            table
                .descendants(&old_prefix, ino)
                .into_iter()
                .filter_map(|d| table.get(d).and_then(|i| i.file.clone().map(|f| (d, f))))
                .collect()
        };
        for (d, cell) in pending {
            self.upload(d, &cell).await?;
        }
        let mut objects = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .store
                .list(&ListRequest {
                    prefix: old_prefix.clone(),
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
                break;
            }
        }
        // Copy phase, then delete phase, a few objects at a time.
        let mut copied = std::collections::HashMap::new();
        for chunk in objects.chunks(RENAME_PARALLELISM) {
            let done = futures::future::try_join_all(
                chunk
                    .iter()
                    .map(|o| self.copy_for_rename(o, &old_prefix, new_prefix)),
            )
            .await?;
            copied.extend(done.into_iter().flatten());
        }
        for chunk in objects.chunks(RENAME_PARALLELISM) {
            futures::future::try_join_all(chunk.iter().map(|o| self.delete_for_rename(o))).await?;
        }
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
            let mut table = self.inodes.lock().unwrap();
            for d in table.descendants(old_prefix, dir) {
                let Some(inode) = table.get_mut(d) else {
                    continue;
                };
                if inode.kind() == Kind::Dir {
                    // A directory's marker object is not the directory's state.
                    continue;
                }
                let Some((source, new)) = copied.remove(&inode.key) else {
                    continue;
                };
                let old = inode.stat.generation;
                inode.stat = Stat::from_object(&new);
                inode.cached_generation = Some(new.generation);
                // Only a copy of the generation this file was at moves it along; a copy of
                // another writer's newer one leaves its changes to fail their upload.
                if let Some(cell) = &inode.file
                    && old == Some(source)
                {
                    cells.push((d, cell.clone(), old, new.generation));
                }
                inode.meta = Some(new);
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
