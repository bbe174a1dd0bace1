//! The system under test: the real `Filesystem` over a `MemStore`, driven the way the kernel
//! drives it (lookups of every path component, lookup before create, the rename checks the VFS
//! makes itself), TTLs zero.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gcsfs::fs::{
    Filesystem, FsConfig, FsError, InodeNo, Kind, ManualClock, RENAME_FROM_KEY, SetAttr, WriteBack,
};
use gcsfs::store::mem::MemStore;
use gcsfs::store::{ObjectKey, ObjectStore, Preconditions, WriteAttrs, WriteSource};

use super::model::{EEXIST, EINVAL, ENOENT, ENOTDIR, ENOTEMPTY, K, Out, split};
use super::ops::Then;

/// The process the tests act as: root, the mount's default owner.
const ME: gcsfs::fs::Caller = gcsfs::fs::Caller { uid: 0, gid: 0 };

fn errno(e: FsError) -> i32 {
    e.errno()
}

pub struct Sut {
    pub store: Arc<MemStore>,
    pub fs: Arc<Filesystem>,
    pub tmp: tempfile::TempDir,
    /// Open handles, in the same order as the model's.
    pub handles: Vec<(InodeNo, u64)>,
    /// Kernel references taken by lookups (dropped by `forget_all`).
    lookups: Vec<InodeNo>,
}

impl Sut {
    /// With `async_wb`, `--write-back async`: closes queue background uploads. `ttl` is both
    /// the metadata and the negative TTL (the clock never moves: non-zero means caches never
    /// expire, which only a case without other clients can afford).
    pub fn new(streaming: bool, async_wb: bool, ttl: Duration) -> Self {
        let store = Arc::new(MemStore::new());
        let tmp = tempfile::tempdir().unwrap();
        let config = FsConfig {
            temp_dir: tmp.path().to_path_buf(),
            metadata_ttl: ttl,
            negative_ttl: ttl,
            // Small pages, so listings cross page boundaries.
            list_page_size: 2,
            // A tiny inode cache: sweeps run on most lookups and listings, and must be invisible.
            max_cached_inodes: 4,
            streaming_writes: streaming,
            write_back: if async_wb {
                WriteBack::Async
            } else {
                WriteBack::Sync
            },
            ..Default::default()
        };
        let fs = Filesystem::shared(store.clone(), config, Arc::new(ManualClock::default()));
        Self {
            store,
            fs,
            tmp,
            handles: Vec::new(),
            lookups: Vec::new(),
        }
    }

    pub async fn lookup(&mut self, parent: InodeNo, name: &str) -> Result<(InodeNo, K), i32> {
        let e = self.fs.lookup(parent, name).await.map_err(errno)?;
        self.lookups.push(e.attr.ino);
        let kind = match e.attr.kind {
            Kind::Dir => K::Dir,
            _ => K::File,
        };
        Ok((e.attr.ino, kind))
    }

    async fn resolve_dir(&mut self, parts: &[&str]) -> Result<InodeNo, i32> {
        let mut ino = InodeNo::ROOT;
        for part in parts {
            let (child, kind) = self.lookup(ino, part).await?;
            if kind != K::Dir {
                return Err(ENOTDIR);
            }
            ino = child;
        }
        Ok(ino)
    }

    async fn resolve(&mut self, path: &str) -> Result<(InodeNo, K), i32> {
        let (parts, name) = split(path);
        let dir = self.resolve_dir(&parts).await?;
        self.lookup(dir, name).await
    }

    /// The kernel forgets what it can: every reference except those on directories above an
    /// open file (a child's dentry pins its parent's).
    pub fn forget_all(&mut self) {
        let open: Vec<String> = self
            .handles
            .iter()
            .map(|(ino, _)| self.fs.path_of(*ino))
            .collect();
        let fs = &self.fs;
        self.lookups.retain(|&ino| {
            let path = format!("{}/", fs.path_of(ino));
            let pinned = open.iter().any(|o| o.starts_with(&path));
            if !pinned {
                fs.forget(ino, 1);
            }
            pinned
        });
    }

    pub async fn create(&mut self, path: &str, data: &[u8], then: Then) -> Out {
        let (parts, name) = split(path);
        let dir = self.resolve_dir(&parts).await?;
        match self.lookup(dir, name).await {
            Ok(_) => return Err(EEXIST),
            Err(e) if e == ENOENT => {}
            Err(e) => return Err(e),
        }
        let (entry, open) = self
            .fs
            .create(dir, name, 0o644, libc::O_RDWR, ME)
            .await
            .map_err(errno)?;
        let ino = entry.attr.ino;
        self.lookups.push(ino);
        if !data.is_empty() {
            self.fs.write(open.fh, 0, data).await.map_err(errno)?;
        }
        match then {
            Then::Closed => {
                let r = self.fs.flush(open.fh).await;
                let r2 = self.fs.release(ino, open.fh).await;
                r.and(r2).map_err(errno)?;
            }
            Then::Flushed => {
                let r = self.fs.flush(open.fh).await;
                self.handles.push((ino, open.fh));
                r.map_err(errno)?;
            }
            Then::Kept => self.handles.push((ino, open.fh)),
        }
        Ok(Vec::new())
    }

    pub async fn open(&mut self, path: &str) -> Out {
        let (ino, _) = self.resolve(path).await?;
        let open = self.fs.open(ino, libc::O_RDWR).await.map_err(errno)?;
        self.handles.push((ino, open.fh));
        Ok(Vec::new())
    }

    pub async fn write(&mut self, handle: usize, offset: u8, data: &[u8]) -> Out {
        if self.handles.is_empty() {
            return Ok(Vec::new());
        }
        let (_, fh) = self.handles[handle % self.handles.len()];
        if data.is_empty() {
            // The kernel never sends a zero-length write.
            return Ok(Vec::new());
        }
        self.fs
            .write(fh, offset.into(), data)
            .await
            .map_err(errno)?;
        Ok(Vec::new())
    }

    /// `syncfs`: waits for every background upload; an error if they do not finish.
    pub async fn sync(&mut self) -> Result<(), String> {
        if self
            .fs
            .wait_for_uploads(std::time::Duration::from_secs(30))
            .await
        {
            Ok(())
        } else {
            Err("background uploads did not finish within 30 s".into())
        }
    }

    pub async fn close(&mut self, handle: usize) -> Out {
        if self.handles.is_empty() {
            return Ok(Vec::new());
        }
        let (ino, fh) = self.handles.remove(handle % self.handles.len());
        let r = self.fs.flush(fh).await;
        let r2 = self.fs.release(ino, fh).await;
        r.and(r2).map_err(errno)?;
        Ok(Vec::new())
    }

    /// open(O_RDONLY) + read everything + close of inode `ino`.
    pub async fn read_ino(&mut self, ino: InodeNo) -> Out {
        let open = self.fs.open(ino, libc::O_RDONLY).await.map_err(errno)?;
        let mut out = Vec::new();
        let mut result = Ok(());
        loop {
            match self.fs.read(open.fh, out.len() as u64, 4).await {
                Ok(chunk) if chunk.is_empty() => break,
                Ok(chunk) => out.extend_from_slice(&chunk.into_bytes()),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        let flushed = self.fs.flush(open.fh).await;
        let released = self.fs.release(ino, open.fh).await;
        result.and(flushed).and(released).map_err(errno)?;
        Ok(out)
    }

    pub async fn read(&mut self, path: &str) -> Out {
        let (ino, _) = self.resolve(path).await?;
        self.read_ino(ino).await
    }

    pub async fn truncate(&mut self, path: &str, size: u8) -> Out {
        let (ino, _) = self.resolve(path).await?;
        let set = SetAttr {
            size: Some(size.into()),
            ..Default::default()
        };
        self.fs.setattr(ino, set).await.map_err(errno)?;
        Ok(Vec::new())
    }

    pub async fn mkdir(&mut self, path: &str) -> Out {
        let (parts, name) = split(path);
        let dir = self.resolve_dir(&parts).await?;
        let e = self.fs.mkdir(dir, name, 0o755, ME).await.map_err(errno)?;
        self.lookups.push(e.attr.ino);
        Ok(Vec::new())
    }

    pub async fn rmdir(&mut self, path: &str) -> Out {
        let (parts, name) = split(path);
        let dir = self.resolve_dir(&parts).await?;
        self.fs.rmdir(dir, name).await.map_err(errno)?;
        Ok(Vec::new())
    }

    pub async fn unlink(&mut self, path: &str) -> Out {
        let (parts, name) = split(path);
        let dir = self.resolve_dir(&parts).await?;
        self.fs.unlink(dir, name).await.map_err(errno)?;
        Ok(Vec::new())
    }

    pub async fn rename(&mut self, from: &str, to: &str) -> Out {
        let (from_parts, from_name) = split(from);
        let (to_parts, to_name) = split(to);
        let from_dir = self.resolve_dir(&from_parts).await?;
        let to_dir = self.resolve_dir(&to_parts).await?;
        let (_, kind) = self.lookup(from_dir, from_name).await?;
        // The VFS refuses these itself: a directory into its own subtree, and a target that is
        // an ancestor of the source.
        if kind == K::Dir && to.starts_with(&format!("{from}/")) {
            return Err(EINVAL);
        }
        if from.starts_with(&format!("{to}/")) {
            return Err(ENOTEMPTY);
        }
        self.fs
            .rename(from_dir, from_name, to_dir, to_name, 0)
            .await
            .map_err(errno)?;
        Ok(Vec::new())
    }

    pub async fn remote_put(&mut self, path: &str, marker: bool, data: &[u8]) -> Out {
        let (key, data) = if marker {
            (format!("{path}/"), Bytes::new())
        } else {
            (path.to_string(), Bytes::copy_from_slice(data))
        };
        self.store
            .write(
                &ObjectKey::new(key).unwrap(),
                WriteSource::Bytes(data),
                Preconditions::NONE,
                &WriteAttrs::default(),
            )
            .await
            .map_err(|e| FsError::from(e).errno())?;
        Ok(Vec::new())
    }

    pub async fn remote_delete(&mut self, key: Option<&str>) -> Out {
        if let Some(key) = key {
            self.store
                .delete(&ObjectKey::new(key).unwrap(), Preconditions::NONE)
                .await
                .map_err(|e| FsError::from(e).errno())?;
        }
        Ok(Vec::new())
    }

    /// The bucket as another mount's interrupted rename of `from` to `to` leaves it, written
    /// in gcsfs's journal format (`Model::interrupted_rename` says what and when).
    pub async fn interrupted_rename(
        &mut self,
        from: &str,
        to: &str,
        copied: u8,
        deleted: u8,
    ) -> Out {
        let old_prefix = format!("{from}/");
        let new_prefix = format!("{to}/");
        let mut keys: Vec<String> = self
            .store
            .keys()
            .into_iter()
            .map(|k| k.into_string())
            .collect();
        keys.sort();
        let under = |p: &str| keys.iter().filter(|k| k.starts_with(p)).count();
        if from == to
            || new_prefix.starts_with(&old_prefix)
            || old_prefix.starts_with(&new_prefix)
            || under(&old_prefix) == 0
            || under(&new_prefix) > 0
        {
            return Ok(Vec::new());
        }
        let key = |k: &str| ObjectKey::new(k).unwrap();
        let errno = |e: gcsfs::store::StoreError| FsError::from(e).errno();
        let marker = self.store.get(&key(&old_prefix)).map(|(_, data)| data);
        let mut attrs = WriteAttrs::default();
        attrs
            .metadata
            .insert(RENAME_FROM_KEY.to_string(), old_prefix.clone());
        self.store
            .write(
                &key(&new_prefix),
                WriteSource::Bytes(marker.clone().unwrap_or_default()),
                Preconditions::create_only(),
                &attrs,
            )
            .await
            .map_err(errno)?;
        let sources: Vec<&String> = keys
            .iter()
            .filter(|k| k.starts_with(&old_prefix) && **k != old_prefix)
            .collect();
        let n = sources.len();
        let copied = usize::from(copied) % (n + 1);
        for k in &sources[..copied] {
            let dst = format!("{new_prefix}{}", &k[old_prefix.len()..]);
            self.store
                .copy(&key(k), None, &key(&dst), Preconditions::create_only())
                .await
                .map_err(errno)?;
        }
        if copied == n {
            let deleted = usize::from(deleted) % (n + 2);
            for k in &sources[..deleted.min(n)] {
                self.store
                    .delete(&key(k), Preconditions::NONE)
                    .await
                    .map_err(errno)?;
            }
            if deleted > n && marker.is_some() {
                self.store
                    .delete(&key(&old_prefix), Preconditions::NONE)
                    .await
                    .map_err(errno)?;
            }
        }
        Ok(Vec::new())
    }

    /// Names in directory `ino` (without `.` and `..`), with their kinds.
    pub async fn list(&mut self, ino: InodeNo) -> Result<Vec<(String, K)>, i32> {
        let fh = self.fs.opendir(ino).map_err(errno)?;
        let mut out = Vec::new();
        let mut offset = 0;
        let result = loop {
            match self.fs.readdir(fh, offset).await {
                Ok(entries) if entries.is_empty() => break Ok(()),
                Ok(entries) => {
                    for e in entries {
                        offset = e.offset;
                        if e.name != "." && e.name != ".." {
                            let kind = if e.kind == Kind::Dir { K::Dir } else { K::File };
                            out.push((e.name, kind));
                        }
                    }
                }
                Err(e) => break Err(errno(e)),
            }
        };
        self.fs.releasedir(fh).map_err(errno)?;
        result?;
        out.sort();
        Ok(out)
    }

    /// Names in the directory at `parts`.
    pub async fn list_path(&mut self, parts: &[&str]) -> Result<Vec<(String, K)>, i32> {
        let ino = self.resolve_dir(parts).await?;
        self.list(ino).await
    }

    /// Every object in the bucket, with its data.
    pub fn bucket(&self) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<_> = self
            .store
            .keys()
            .into_iter()
            .map(|k| {
                let (_, data) = self.store.get(&k).unwrap();
                (k.into_string(), data.to_vec())
            })
            .collect();
        out.sort();
        out
    }

    /// Data kept from lost upload races, sorted.
    pub fn conflicts(&self) -> Vec<Vec<u8>> {
        let dir = self.tmp.path().join("gcsfs-conflicts");
        let mut out: Vec<Vec<u8>> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .map(|e| std::fs::read(e.unwrap().path()).unwrap())
                .collect(),
            Err(_) => Vec::new(),
        };
        out.sort();
        out
    }
}
