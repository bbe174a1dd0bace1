//! The reference model: what `docs/SEMANTICS.md` says a mount shows, as plain data.
//!
//! The bucket is a map from key to (generation, bytes); every write by anyone makes a new,
//! unique generation. Files opened through the mount are [`MFile`]s: the generation their
//! changes are based on, and their unsaved data. Everything else (directories, listings,
//! lookups) is derived from the bucket by the rules of SEMANTICS.md:
//! - `a/b/c` is file `c` in directory `a/b`; `a/b/` is an explicit directory; any key under `a/b/`
//!   makes `a/b` an (implicit) directory;
//! - a directory wins over a file of the same name, which is listed as `name\n`;
//! - uploads are conditional on the generation the changes are based on (0: must not exist);
//!   a lost race is ESTALE and the losing data is kept in the conflicts directory;
//! - unlink/rename delete or copy only the generation they know (ESTALE otherwise);
//! - a directory rename journals itself on the destination's marker, and a rename onto a
//!   directory whose marker names the source resumes it (see `Model::rename_dir`);
//! - a name the store stops showing (deleted remotely, or now a directory) is *unbound* from the
//!   open file, which keeps its changes: its conditional upload at close decides (Ok, or ESTALE
//!   with the data kept); a write needing a generation that is gone fails with ESTALE;
//! - new files (tiny here) are held in memory in streaming mode and uploaded create-only at
//!   close, leaving no local copy; non-streaming, they are staged like any change.
//!
//! Where the model has to choose something SEMANTICS.md leaves open, the choice is commented.

use std::collections::{BTreeMap, BTreeSet};

use super::ops::Then;

pub const ENOENT: i32 = libc::ENOENT;
pub const ENOTDIR: i32 = libc::ENOTDIR;
pub const EISDIR: i32 = libc::EISDIR;
pub const EEXIST: i32 = libc::EEXIST;
pub const ENOTEMPTY: i32 = libc::ENOTEMPTY;
pub const ESTALE: i32 = libc::ESTALE;
pub const EINVAL: i32 = libc::EINVAL;

/// Result of an op: data for reads (empty otherwise) or an errno.
pub type Out = Result<Vec<u8>, i32>;

/// What a name is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum K {
    File,
    Dir,
}

#[derive(Clone, Debug)]
pub struct Obj {
    pub generation: u64,
    pub data: Vec<u8>,
    /// A directory rename's journal on a marker: the source prefix it names
    /// (`gcsfs-rename-from`). Copies keep it, as server-side copies keep metadata.
    pub journal: Option<String>,
}

/// Where an open file's unsaved state lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// Nothing local: reads come from the bucket.
    None,
    /// A new file written only sequentially from 0 so far, held in memory (streaming mode; the
    /// reftest's files stay far below the 4 MiB past which the fs streams them into an upload).
    /// Reads are served from it; any other write or a truncate moves it to a staging copy
    /// (nothing is published); its upload is create-only and leaves no local copy.
    Head(Vec<u8>),
    /// A full local copy (clean copies stay until the last handle closes).
    Staged(Vec<u8>),
}

/// An open file (an inode with open handles).
#[derive(Clone, Debug)]
pub struct MFile {
    pub key: String,
    /// Removed by this mount (unlink, or renamed over) while open: never uploaded.
    pub unlinked: bool,
    /// No longer reachable by its name: the store stopped showing the name (another client
    /// deleted it, or a directory of that name appeared). Unlike `unlinked`, its pending changes
    /// are still uploaded to `key` at close, and the conditional upload decides what happens.
    pub unbound: bool,
    /// Created here and never uploaded.
    pub local: bool,
    pub dirty: bool,
    pub body: Body,
    /// Generation the local state is based on (0 = new file): the upload's precondition.
    pub base: u64,
    /// The latest generation this mount has seen of the file (refreshed by lookups while the
    /// file is clean); what a handle without a pinned generation bases its changes on.
    pub seen: Option<u64>,
    pub open: usize,
}

/// An open handle.
#[derive(Clone, Debug)]
pub struct MHandle {
    pub file: usize,
    /// The generation this handle's view is based on: the one seen at open, then each one this
    /// mount publishes or renames the file to (our own changes move every handle along).
    /// `None` until then for handles of a file that was never uploaded: they follow the latest
    /// generation seen.
    pub pinned: Option<u64>,
}

#[derive(Clone, Debug, Default)]
pub struct Model {
    pub bucket: BTreeMap<String, Obj>,
    next_generation: u64,
    pub files: Vec<MFile>,
    pub handles: Vec<MHandle>,
    /// Data of writers that lost an upload race (kept under `gcsfs-conflicts/`).
    pub conflicts: Vec<Vec<u8>>,
    /// New files are held in memory while written sequentially (`FsConfig::streaming_writes`).
    pub streaming: bool,
    /// Data of every generation ever written (by anyone).
    history: BTreeMap<u64, Vec<u8>>,
    /// The alternative branch: a handle pinned to a generation that is no longer live is served
    /// from a copy the mount may still hold (SEMANTICS.md: a pinned handle "keeps reading the
    /// old generation for whatever is already fetched"; its writes then fail at close, and the
    /// data is kept). Whether the fs still holds one depends on cache lifetimes, so the harness
    /// accepts either branch: ESTALE at the write (nothing accepted, nothing kept), or Ok and
    /// ESTALE at close (kept in the conflicts directory).
    pub held_copy: bool,
    /// By file: every content its local copy had since this mount last published it. With
    /// `--write-back async` a background upload publishes whichever of them the file held when
    /// it ran (see `Harness::check_bucket`).
    unpublished: BTreeMap<usize, Vec<Vec<u8>>>,
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

fn write_at(buf: &mut Vec<u8>, offset: usize, data: &[u8]) {
    if buf.len() < offset + data.len() {
        buf.resize(offset + data.len(), 0);
    }
    buf[offset..offset + data.len()].copy_from_slice(data);
}

impl Model {
    pub fn new(streaming: bool) -> Self {
        Self {
            streaming,
            ..Default::default()
        }
    }

    /// Other states the fs may equally be in, where SEMANTICS.md allows either: a copy of a
    /// gone generation still held.
    pub fn variants(&self) -> Vec<Model> {
        let mut held = self.clone();
        held.held_copy = true;
        vec![held]
    }

    // ----- the bucket -------------------------------------------------------------------------

    pub fn put(&mut self, key: &str, data: Vec<u8>) -> u64 {
        self.next_generation += 1;
        let generation = self.next_generation;
        self.history.insert(generation, data.clone());
        self.bucket.insert(
            key.to_string(),
            Obj {
                generation,
                data,
                journal: None,
            },
        );
        generation
    }

    /// `put`, carrying a journal (a copy keeps the source's).
    fn put_with_journal(&mut self, key: &str, data: Vec<u8>, journal: Option<String>) -> u64 {
        let generation = self.put(key, data);
        self.bucket.get_mut(key).expect("just put").journal = journal;
        generation
    }

    fn live(&self, key: &str) -> u64 {
        self.bucket.get(key).map_or(0, |o| o.generation)
    }

    fn has_children(&self, path: &str) -> bool {
        let prefix = format!("{path}/");
        self.bucket
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&prefix))
    }

    fn keys_under(&self, prefix: &str) -> Vec<String> {
        self.bucket
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect()
    }

    // ----- names ------------------------------------------------------------------------------

    /// The open file bound to name `key` (the newest if several).
    pub fn bound(&self, key: &str) -> Option<usize> {
        self.files
            .iter()
            .rposition(|f| f.open > 0 && !f.unlinked && !f.unbound && f.key == key)
    }

    /// Whether `data` is a content the open file bound to `key` had since this mount last
    /// published it.
    pub fn had_since_published(&self, key: &str, data: &[u8]) -> bool {
        self.bound(key)
            .and_then(|fi| self.unpublished.get(&fi))
            .is_some_and(|states| states.iter().any(|s| s == data))
    }

    /// The local content of every file still open here and not removed, by the key it would be
    /// uploaded to.
    pub fn open_contents(&self) -> Vec<(String, Vec<u8>)> {
        self.files
            .iter()
            .filter(|f| f.open > 0 && !f.unlinked)
            .filter_map(|f| match &f.body {
                Body::Head(d) | Body::Staged(d) => Some((f.key.clone(), d.clone())),
                Body::None => None,
            })
            .collect()
    }

    /// Records file `fi`'s local content as one it had since it was last published.
    fn note_state(&mut self, fi: usize) {
        if let Body::Head(d) | Body::Staged(d) = &self.files[fi].body {
            self.unpublished.entry(fi).or_default().push(d.clone());
        }
    }

    /// The store no longer shows `path` as this file: whatever file was bound to it is unbound
    /// (it keeps its pending changes; SEMANTICS.md: "the file stays open and its changes are
    /// uploaded at close").
    fn unbind(&mut self, path: &str) {
        if let Some(fi) = self.bound(path) {
            self.files[fi].unbound = true;
        }
    }

    /// Whether a file created here and not uploaded yet lies below directory `path`.
    fn has_local_descendants(&self, path: &str) -> bool {
        let prefix = format!("{path}/");
        self.files
            .iter()
            .any(|f| f.open > 0 && f.local && !f.unlinked && f.key.starts_with(&prefix))
    }

    /// What `path` is. A file this mount is writing (local or dirty) and still bound to the
    /// name answers for it without asking the store: the kernel holds it and the writer keeps
    /// using it (SEMANTICS.md leaves this open; it is what a local filesystem does). Otherwise
    /// the store decides and a directory wins over a file of the same name; once a lookup has
    /// seen the directory (or the name gone), the file is unbound for good.
    pub fn lookup(&mut self, path: &str) -> Option<K> {
        if let Some(base) = path.strip_suffix('\n') {
            return self.bucket.contains_key(base).then_some(K::File);
        }
        if let Some(fi) = self.bound(path)
            && (self.files[fi].local || self.files[fi].dirty)
        {
            return Some(K::File);
        }
        if self.has_children(path) {
            self.unbind(path);
            Some(K::Dir)
        } else if self.has_local_descendants(path) {
            // SEMANTICS.md: a directory holding new files not yet uploaded keeps existing, and
            // wins its name over a file of that name (listed as `name\n`).
            self.unbind(path);
            Some(K::Dir)
        } else if self.bucket.contains_key(path) {
            // A clean open file learns the object's current generation.
            let live = self.live(path);
            if let Some(fi) = self.bound(path) {
                self.files[fi].seen = Some(live);
            }
            self.unbind_below(path);
            Some(K::File)
        } else {
            self.unbind(path);
            self.unbind_below(path);
            None
        }
    }

    /// Walks `parts` (each must be a directory) to a directory path.
    pub fn resolve_dir(&mut self, parts: &[&str]) -> Result<String, i32> {
        let mut dir = String::new();
        for part in parts {
            dir = join(&dir, part);
            match self.lookup(&dir) {
                Some(K::Dir) => {}
                Some(K::File) => return Err(ENOTDIR),
                None => return Err(ENOENT),
            }
        }
        Ok(dir)
    }

    /// The entries of directory `dir` (`""` is the root), as readdir shows them.
    pub fn list(&mut self, dir: &str) -> BTreeMap<String, K> {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut dirs = BTreeSet::new();
        let mut files = BTreeSet::new();
        for key in self.keys_under(&prefix) {
            let rest = &key[prefix.len()..];
            if rest.is_empty() {
                continue; // the directory's own marker
            }
            match rest.find('/') {
                Some(i) => dirs.insert(rest[..i].to_string()),
                None => files.insert(rest.to_string()),
            };
        }
        // A listed directory wins its name, also over a file being written here.
        for d in &dirs {
            self.unbind(&join(dir, d));
        }
        // Directories holding new files not uploaded yet are listed even if the bucket has
        // nothing under them, and win their names like listed ones.
        for f in &self.files {
            if f.open > 0
                && f.local
                && !f.unlinked
                && let Some(rest) = f.key.strip_prefix(&prefix)
                && let Some((name, _)) = rest.split_once('/')
            {
                dirs.insert(name.to_string());
            }
        }
        // Listing a clean open file refreshes what this mount has seen of it.
        for f in files.iter().filter(|f| !dirs.contains(*f)) {
            let key = join(dir, f);
            if let Some(fi) = self.bound(&key)
                && !self.files[fi].dirty
                && !self.files[fi].local
            {
                self.files[fi].seen = Some(self.live(&key));
            }
        }
        let mut out: BTreeMap<String, K> = dirs.iter().map(|d| (d.clone(), K::Dir)).collect();
        for f in files {
            if dirs.contains(&f) {
                out.insert(format!("{f}\n"), K::File);
            } else {
                out.insert(f, K::File);
            }
        }
        // Files created here and not uploaded yet are listed too.
        for f in &self.files {
            if f.open > 0 && f.local && !f.unlinked && !f.unbound {
                let (parent, name) = match f.key.rfind('/') {
                    Some(i) => (&f.key[..i], &f.key[i + 1..]),
                    None => ("", f.key.as_str()),
                };
                if parent == dir {
                    out.entry(name.to_string()).or_insert(K::File);
                }
            }
        }
        out
    }

    // ----- file state -------------------------------------------------------------------------

    fn new_file(&mut self, file: MFile) -> usize {
        self.files.push(file);
        self.files.len() - 1
    }

    /// A new open of the file at `path` (known to be a file): shares the open file if there is
    /// one. Returns the handle (not yet added to `handles`).
    fn open_handle(&mut self, path: &str) -> MHandle {
        let live = self.live(path);
        if let Some(fi) = self.bound(path) {
            let f = &mut self.files[fi];
            f.open += 1;
            if !(f.dirty || f.local) {
                f.seen = Some(live);
                if f.base != live {
                    // A newer generation: a clean copy of the old one no longer describes the
                    // file (SEMANTICS.md: an open that sees a new generation drops cached data).
                    f.body = Body::None;
                    f.base = live;
                }
            }
            return MHandle {
                file: fi,
                pinned: f.seen,
            };
        }
        let file = self.new_file(MFile {
            key: path.to_string(),
            unlinked: false,
            unbound: false,
            local: false,
            dirty: false,
            body: Body::None,
            base: live,
            seen: Some(live),
            open: 1,
        });
        MHandle {
            file,
            pinned: Some(live),
        }
    }

    /// Our own upload or rename made `generation` of the file: every handle now sees it.
    fn repin_handles(&mut self, fi: usize, generation: u64) {
        for h in &mut self.handles {
            if h.file == fi {
                h.pinned = Some(generation);
            }
        }
    }

    fn published(&mut self, fi: usize, data: Vec<u8>) {
        let key = self.files[fi].key.clone();
        let generation = self.put(&key, data);
        self.adopt(fi, generation);
    }

    /// The file's changes are now `generation` of its key.
    fn adopt(&mut self, fi: usize, generation: u64) {
        self.unpublished.remove(&fi);
        let f = &mut self.files[fi];
        f.base = generation;
        f.seen = Some(generation);
        f.dirty = false;
        f.local = false;
        self.repin_handles(fi, generation);
    }

    /// Makes sure the file has a local copy, optionally truncated to `len`. `pinned` is the
    /// generation the writing handle opened (`None`: the latest this mount has seen).
    fn ensure_staged(
        &mut self,
        fi: usize,
        pinned: Option<u64>,
        len: Option<usize>,
    ) -> Result<(), i32> {
        let f = &mut self.files[fi];
        match &mut f.body {
            // A new file held in memory moves to a staging copy (still new: nothing published).
            Body::Head(data) => {
                let mut data = std::mem::take(data);
                if let Some(len) = len {
                    data.resize(len, 0);
                }
                f.body = Body::Staged(data);
                return Ok(());
            }
            // A clean local copy serves only the generation it holds: a handle pinned to another
            // generation (SEMANTICS.md: "downloaded once, pinned to the open generation") gets
            // its own.
            Body::Staged(s) if f.dirty || f.local || pinned.is_none_or(|p| p == f.base) => {
                if let Some(len) = len {
                    s.resize(len, 0);
                }
                return Ok(());
            }
            _ => {}
        }
        let Some(want) = pinned.or(f.seen) else {
            f.body = Body::Staged(vec![0; len.unwrap_or(0)]);
            return Ok(());
        };
        if f.local {
            f.body = Body::Staged(vec![0; len.unwrap_or(0)]);
            return Ok(());
        }
        if len == Some(0) {
            // truncate to 0 skips the download.
            f.base = want;
            f.body = Body::Staged(Vec::new());
            return Ok(());
        }
        let key = f.key.clone();
        let held = self.held_copy.then(|| self.history.get(&want)).flatten();
        match self
            .bucket
            .get(&key)
            .filter(|o| o.generation == want)
            .map(|o| &o.data)
            .or(held)
        {
            Some(data) => {
                let mut data = data.clone();
                if let Some(len) = len {
                    data.resize(len, 0);
                }
                let f = &mut self.files[fi];
                f.base = want;
                f.body = Body::Staged(data);
                Ok(())
            }
            // The pinned generation is gone.
            _ => Err(ESTALE),
        }
    }

    /// Publishes the file's changes (flush, fsync, last release).
    pub fn upload(&mut self, fi: usize) -> Result<(), i32> {
        let f = &mut self.files[fi];
        if !f.dirty {
            return Ok(());
        }
        if f.unlinked {
            f.body = Body::None;
            f.dirty = false;
            return Ok(());
        }
        let (data, kept_copy) = match std::mem::replace(&mut f.body, Body::None) {
            Body::None => {
                f.dirty = false;
                return Ok(());
            }
            // Uploaded from memory in one create-only request; no local copy stays.
            Body::Head(data) => (data, false),
            Body::Staged(data) => (data, true),
        };
        let (key, base) = (f.key.clone(), f.base);
        if self.live(&key) == base {
            if kept_copy {
                self.files[fi].body = Body::Staged(data.clone());
            }
            self.published(fi, data);
            return Ok(());
        }
        // A precondition failure is another writer's object, whatever it holds: the fs takes an
        // object holding exactly its bytes for its own only when its first attempt's answer
        // was lost (a retry), which never happens here (MemStore, no faults).
        let f = &mut self.files[fi];
        f.dirty = false;
        f.local = false;
        self.conflicts.push(data);
        Err(ESTALE)
    }

    fn release(&mut self, handle: MHandle) {
        let f = &mut self.files[handle.file];
        f.open -= 1;
        if f.open == 0 && !f.dirty {
            f.body = Body::None;
        }
    }

    /// Reads the whole file through a fresh handle `h`, without closing it.
    fn read_handle(&mut self, h: &MHandle) -> Out {
        let f = &self.files[h.file];
        match &f.body {
            Body::Head(data) => return Ok(data.clone()),
            // Pending changes are seen by every handle; a clean copy only by handles of its
            // generation.
            Body::Staged(s) if f.dirty || f.local || h.pinned.is_none_or(|p| p == f.base) => {
                return Ok(s.clone());
            }
            _ => {}
        }
        let Some(pinned) = h.pinned else {
            return Err(ESTALE);
        };
        match self.bucket.get(&f.key) {
            Some(o) if o.generation == pinned => Ok(o.data.clone()),
            _ if self.held_copy && self.history.contains_key(&pinned) => {
                Ok(self.history[&pinned].clone())
            }
            _ => Err(ESTALE),
        }
    }

    // ----- operations -------------------------------------------------------------------------

    pub fn create(&mut self, path: &str, data: &[u8], then: Then) -> Out {
        let (parts, _) = split(path);
        self.resolve_dir(&parts)?;
        if self.lookup(path).is_some() {
            return Err(EEXIST);
        }
        let file = self.new_file(MFile {
            key: path.to_string(),
            unlinked: false,
            unbound: false,
            local: true,
            dirty: true,
            body: if self.streaming {
                Body::Head(Vec::new())
            } else {
                Body::Staged(Vec::new())
            },
            base: 0,
            seen: None,
            open: 1,
        });
        let h = MHandle { file, pinned: None };
        self.write_handle(&h, 0, data)?;
        match then {
            Then::Closed => {
                let r = self.upload(h.file);
                self.release(h);
                r.map(|()| Vec::new())
            }
            Then::Flushed if data.is_empty() => {
                // A handle that wrote nothing does not upload when flushed (SEMANTICS.md: the
                // copy of a descriptor closed after `dup2`); the release will.
                self.handles.push(h);
                Ok(Vec::new())
            }
            Then::Flushed => {
                self.handles.push(h.clone());
                self.upload(h.file).map(|()| Vec::new())
            }
            Then::Kept => {
                self.handles.push(h);
                Ok(Vec::new())
            }
        }
    }

    fn write_handle(&mut self, h: &MHandle, offset: usize, data: &[u8]) -> Result<(), i32> {
        if data.is_empty() {
            // The kernel never sends a zero-length write.
            return Ok(());
        }
        let fi = h.file;
        if let Body::Head(head) = &mut self.files[fi].body
            && head.len() == offset
        {
            head.extend_from_slice(data);
            self.note_state(fi);
            return Ok(());
        }
        self.ensure_staged(fi, h.pinned, None)?;
        let f = &mut self.files[fi];
        let Body::Staged(s) = &mut f.body else {
            unreachable!("staged above")
        };
        write_at(s, offset, data);
        f.dirty = true;
        self.note_state(fi);
        Ok(())
    }

    pub fn write(&mut self, handle: usize, offset: u8, data: &[u8]) -> Out {
        if self.handles.is_empty() {
            return Ok(Vec::new());
        }
        let h = self.handles[handle % self.handles.len()].clone();
        self.write_handle(&h, offset as usize, data)
            .map(|()| Vec::new())
    }

    pub fn close(&mut self, handle: usize) -> Out {
        if self.handles.is_empty() {
            return Ok(Vec::new());
        }
        let h = self.handles.remove(handle % self.handles.len());
        let r = self.upload(h.file);
        self.release(h);
        r.map(|()| Vec::new())
    }

    /// Resolves `path` to a file: ENOENT, ENOTDIR (a parent is a file) or EISDIR.
    fn file_at(&mut self, path: &str) -> Result<(), i32> {
        let (parts, _) = split(path);
        self.resolve_dir(&parts)?;
        match self.lookup(path) {
            None => Err(ENOENT),
            Some(K::Dir) => Err(EISDIR),
            Some(K::File) => Ok(()),
        }
    }

    pub fn open(&mut self, path: &str) -> Out {
        self.file_at(path)?;
        let h = self.open_handle(path);
        self.handles.push(h);
        Ok(Vec::new())
    }

    pub fn read(&mut self, path: &str) -> Out {
        self.file_at(path)?;
        self.read_file(path)
    }

    /// open + read + close of an existing file (also used by the tree walk; `path` may be a
    /// `name\n` alias, which is a separate inode over the same object).
    pub fn read_file(&mut self, path: &str) -> Out {
        if let Some(base) = path.strip_suffix('\n') {
            return Ok(self.bucket[base].data.clone());
        }
        let h = self.open_handle(path);
        let data = self.read_handle(&h);
        // close(2) of any descriptor publishes the file's changes.
        let r = self.upload(h.file);
        self.release(h);
        let data = data?;
        r.map(|()| data)
    }

    pub fn truncate(&mut self, path: &str, size: u8) -> Out {
        self.file_at(path)?;
        let size = size as usize;
        if let Some(fi) = self.bound(path) {
            // No handle: the change is based on the generation this mount last opened or
            // published (what the open handles work on), else the latest seen.
            let f = &self.files[fi];
            let based = Some(f.base).filter(|&b| b != 0).or(f.seen);
            self.ensure_staged(fi, based, Some(size))?;
            self.files[fi].dirty = true;
            self.note_state(fi);
            return Ok(Vec::new());
        }
        // Nobody has it open: uploaded at once, and no local copy is kept.
        let mut data = self.bucket[path].data.clone();
        data.resize(size, 0);
        self.put(path, data);
        Ok(Vec::new())
    }

    pub fn mkdir(&mut self, path: &str) -> Out {
        let (parts, _) = split(path);
        self.resolve_dir(&parts)?;
        if self.lookup(path).is_some() {
            return Err(EEXIST);
        }
        self.put(&format!("{path}/"), Vec::new());
        Ok(Vec::new())
    }

    /// rmdir of a path known to be a directory.
    fn remove_dir(&mut self, path: &str) -> Result<(), i32> {
        let prefix = format!("{path}/");
        // New files not uploaded yet, at any depth, make it non-empty (they are listed).
        if self.has_local_descendants(path) || self.keys_under(&prefix).iter().any(|k| *k != prefix)
        {
            return Err(ENOTEMPTY);
        }
        self.bucket.remove(&prefix);
        self.unbind_below(path);
        Ok(())
    }

    /// Directory `path` is gone (removed, found gone, or now a file): a file still open below
    /// it whose object another client deleted (changed here, so found by its name until now)
    /// goes with it; a directory made again by that name (a rename over it, another client's
    /// marker) does not hold it, as in the fs, where the directory's inode goes. Its changes
    /// still upload to its key at close, as any open file's do (and lose their precondition).
    fn unbind_below(&mut self, path: &str) {
        let prefix = format!("{path}/");
        for f in &mut self.files {
            if f.open > 0 && !f.unlinked && f.key.starts_with(&prefix) {
                f.unbound = true;
            }
        }
    }

    pub fn rmdir(&mut self, path: &str) -> Out {
        let (parts, _) = split(path);
        self.resolve_dir(&parts)?;
        match self.lookup(path) {
            None => Err(ENOENT),
            Some(K::File) => Err(ENOTDIR),
            Some(K::Dir) => self.remove_dir(path).map(|()| Vec::new()),
        }
    }

    pub fn unlink(&mut self, path: &str) -> Out {
        let (parts, _) = split(path);
        self.resolve_dir(&parts)?;
        match self.lookup(path) {
            None => return Err(ENOENT),
            Some(K::Dir) => return Err(EISDIR),
            Some(K::File) => {}
        }
        let Some(fi) = self.bound(path) else {
            self.bucket.remove(path);
            return Ok(Vec::new());
        };
        let f = &self.files[fi];
        if !f.local
            && let Some(known) = f.seen
        {
            // Deletes only the generation this mount knows.
            match self.bucket.get(path) {
                None => {}
                Some(o) if o.generation == known => {
                    self.bucket.remove(path);
                }
                Some(_) => return Err(ESTALE),
            }
        }
        self.files[fi].unlinked = true;
        Ok(Vec::new())
    }

    pub fn rename(&mut self, from: &str, to: &str) -> Out {
        let (from_parts, _) = split(from);
        let (to_parts, _) = split(to);
        self.resolve_dir(&from_parts)?;
        self.resolve_dir(&to_parts)?;
        let Some(kind) = self.lookup(from) else {
            return Err(ENOENT);
        };
        // The kernel refuses these before asking the filesystem.
        if kind == K::Dir && to.starts_with(&format!("{from}/")) {
            return Err(EINVAL);
        }
        if from.starts_with(&format!("{to}/")) {
            return Err(ENOTEMPTY);
        }
        let dst = self.lookup(to);
        if from == to {
            return Ok(Vec::new());
        }
        match (kind, dst) {
            (K::Dir, Some(K::File)) => return Err(ENOTDIR),
            (K::File, Some(K::Dir)) => return Err(EISDIR),
            _ => {}
        }
        match kind {
            K::Dir => self.rename_dir(from, to, dst.is_some()),
            K::File => self.rename_file(from, to),
        }
        .map(|()| Vec::new())
    }

    /// A directory rename, with the journal SEMANTICS.md describes: the destination marker
    /// names the source while the rename runs, and a rename onto a destination whose marker
    /// names the source resumes it (a partial copy only; ENOTEMPTY otherwise).
    fn rename_dir(&mut self, from: &str, to: &str, dst_exists: bool) -> Result<(), i32> {
        let old_prefix = format!("{from}/");
        let new_prefix = format!("{to}/");
        let resumed = dst_exists
            && self
                .bucket
                .get(&new_prefix)
                .is_some_and(|m| m.journal.as_deref() == Some(old_prefix.as_str()));
        if dst_exists && !resumed {
            self.remove_dir(to)?;
        }
        // A partial copy holds only copies: new or changed files here under it are not.
        if resumed
            && self.files.iter().any(|f| {
                f.open > 0 && !f.unlinked && (f.local || f.dirty) && f.key.starts_with(&new_prefix)
            })
        {
            return Err(ENOTEMPTY);
        }
        // Publish pending changes below the directory first.
        let below: Vec<usize> = (0..self.files.len())
            .filter(|&i| {
                let f = &self.files[i];
                f.open > 0 && !f.unlinked && f.key.starts_with(&old_prefix)
            })
            .collect();
        for &fi in &below {
            self.upload(fi)?;
        }
        let src_marker = self.bucket.get(&old_prefix).cloned();
        let created = !resumed;
        if created {
            // Takes the place of the source's marker (and its data).
            let data = src_marker
                .as_ref()
                .map(|m| m.data.clone())
                .unwrap_or_default();
            self.put_with_journal(&new_prefix, data, Some(old_prefix.clone()));
        }
        let rel = |keys: Vec<String>, prefix: &str| -> BTreeSet<String> {
            keys.iter()
                .filter(|k| k.len() > prefix.len())
                .map(|k| k[prefix.len()..].to_string())
                .collect()
        };
        let src = rel(self.keys_under(&old_prefix), &old_prefix);
        let dst = rel(self.keys_under(&new_prefix), &new_prefix);
        if !(dst.is_subset(&src) || src.is_subset(&dst)) {
            if created {
                self.bucket.remove(&new_prefix);
            }
            return Err(ENOTEMPTY);
        }
        if let Some(m) = &src_marker
            && m.data != self.bucket[&new_prefix].data
        {
            return Err(ESTALE);
        }
        if src.iter().any(|r| {
            dst.contains(r)
                && self.bucket[&format!("{old_prefix}{r}")].data
                    != self.bucket[&format!("{new_prefix}{r}")].data
        }) {
            return Err(ESTALE);
        }
        let mut moved = BTreeMap::new();
        for r in &src {
            let old = self
                .bucket
                .remove(&format!("{old_prefix}{r}"))
                .expect("listed");
            let new_key = format!("{new_prefix}{r}");
            let generation = match self.bucket.get(&new_key) {
                Some(copy) => copy.generation,
                None => self.put_with_journal(&new_key, old.data, old.journal),
            };
            moved.insert(old.generation, generation);
        }
        // The source's marker goes last; the journal is cleared (or its marker deleted, when the
        // source had none: an implicit directory stays implicit).
        if src_marker.is_some() {
            self.bucket.remove(&old_prefix);
            self.bucket.get_mut(&new_prefix).expect("journal").journal = None;
        } else {
            self.bucket.remove(&new_prefix);
        }
        // Open files move with their directory, and keep working on what they had.
        for fi in below {
            let f = &mut self.files[fi];
            f.key = format!("{new_prefix}{}", &f.key[old_prefix.len()..]);
            if let Some(&generation) = moved.get(&f.base) {
                f.base = generation;
                f.seen = Some(generation);
                self.repin_handles(fi, generation);
            }
        }
        Ok(())
    }

    /// Another mount's rename of directory `from` to `to` that stopped part-way (a crash),
    /// leaving what gcsfs's journal leaves: the marker `to/` naming `from/`, the first `copied`
    /// (mod n + 1) of the n objects copied in key order, and, if all were, the first `deleted`
    /// (mod n + 2) sources deleted, the source's marker as the (n + 1)th. Does nothing unless
    /// `from/` holds something and nothing lies under `to/` (and neither is inside the other).
    pub fn interrupted_rename(&mut self, from: &str, to: &str, copied: u8, deleted: u8) -> Out {
        let old_prefix = format!("{from}/");
        let new_prefix = format!("{to}/");
        if from == to
            || new_prefix.starts_with(&old_prefix)
            || old_prefix.starts_with(&new_prefix)
            || self.keys_under(&old_prefix).is_empty()
            || !self.keys_under(&new_prefix).is_empty()
        {
            return Ok(Vec::new());
        }
        let marker = self.bucket.get(&old_prefix).cloned();
        let sources: Vec<String> = self
            .keys_under(&old_prefix)
            .into_iter()
            .filter(|k| *k != old_prefix)
            .collect();
        let n = sources.len();
        let data = marker.as_ref().map(|m| m.data.clone()).unwrap_or_default();
        self.put_with_journal(&new_prefix, data, Some(old_prefix.clone()));
        let copied = usize::from(copied) % (n + 1);
        for key in &sources[..copied] {
            let o = self.bucket[key].clone();
            self.put_with_journal(
                &format!("{new_prefix}{}", &key[old_prefix.len()..]),
                o.data,
                o.journal,
            );
        }
        if copied == n {
            let deleted = usize::from(deleted) % (n + 2);
            for key in &sources[..deleted.min(n)] {
                self.bucket.remove(key);
            }
            if deleted > n {
                self.bucket.remove(&old_prefix);
            }
        }
        Ok(Vec::new())
    }

    fn rename_file(&mut self, from: &str, to: &str) -> Result<(), i32> {
        let src = self.bound(from);
        if let Some(fi) = src {
            self.upload(fi)?;
        }
        let dst = self.bound(to);
        // The destination is replaced only if it still holds what this mount knows of it.
        let dst_known = match dst {
            Some(di) if self.files[di].local || self.files[di].dirty => {
                self.files[di].seen.unwrap_or(0)
            }
            _ => self.live(to),
        };
        // The source is copied at the generation this mount knows.
        let src_known = match src {
            Some(fi) => self.files[fi].seen,
            None => Some(self.live(from)),
        };
        let obj = match self.bucket.get(from) {
            Some(o) if Some(o.generation) == src_known => o.clone(),
            _ => return Err(ESTALE),
        };
        if self.live(to) != dst_known {
            return Err(ESTALE);
        }
        let generation = self.put(to, obj.data);
        self.bucket.remove(from);
        if let Some(di) = dst {
            self.files[di].unlinked = true;
        }
        if let Some(fi) = src {
            let f = &mut self.files[fi];
            f.key = to.to_string();
            if f.base != obj.generation && !f.dirty {
                // A clean copy of an older generation no longer describes the file.
                f.body = Body::None;
            }
            f.base = generation;
            f.seen = Some(generation);
            // Handles working on the generation copied move to the copy; a handle pinned to
            // an older one (its own upload, since replaced by another writer) keeps it: its
            // changes are based on what it had (ESTALE, or a held copy).
            for h in &mut self.handles {
                if h.file == fi && h.pinned == Some(obj.generation) {
                    h.pinned = Some(generation);
                }
            }
        }
        Ok(())
    }

    pub fn remote_put(&mut self, path: &str, marker: bool, data: &[u8]) -> Out {
        if marker {
            self.put(&format!("{path}/"), Vec::new());
        } else {
            self.put(path, data.to_vec());
        }
        Ok(Vec::new())
    }

    /// The key a remote delete of `index` removes.
    pub fn remote_delete_key(&self, index: usize) -> Option<String> {
        if self.bucket.is_empty() {
            return None;
        }
        self.bucket.keys().nth(index % self.bucket.len()).cloned()
    }

    pub fn remote_delete(&mut self, key: Option<&str>) -> Out {
        if let Some(key) = key {
            self.bucket.remove(key);
        }
        Ok(Vec::new())
    }
}

/// Parent components and name of a path.
pub fn split(path: &str) -> (Vec<&str>, &str) {
    let mut parts: Vec<&str> = path.split('/').collect();
    let name = parts.pop().expect("non-empty");
    (parts, name)
}
