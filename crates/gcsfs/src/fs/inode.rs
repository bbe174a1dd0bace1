//! The inode table: which names the kernel knows, their object keys and cached attributes.
//!
//! Guarded by one `parking_lot::Mutex` in [`super::Filesystem`]; every method here is
//! synchronous and short, so the lock is never held across an `.await`.
//!
//! Nothing here scans the whole table on a request's path: names are indexed per directory
//! (a lookup, a listing from memory, an emptiness check cost what the directory holds), and the
//! few inodes that need finding by state have sets of their own — files made here and not in
//! the bucket yet (`locals`: pending directories, local children) and files with write-back
//! state (`cells`: the drain, the age bound). Those sets are kept by the table's methods, which
//! are the only writers of the fields they mirror (`Inode::local`, `unlinked`, `file`). Only a
//! directory rename (rewriting its loaded descendants' keys) and the sweep past the cap walk
//! every inode.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use super::attr::{Kind, Stat};
use super::refresh::DirInfo;
use super::write::FileCell;
use crate::store::{Generation, ObjectMeta};

/// A FUSE inode number. `InodeNo::ROOT` (1) is the mount's root directory.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct InodeNo(pub u64);

impl InodeNo {
    pub const ROOT: InodeNo = InodeNo(1);
}

impl std::fmt::Display for InodeNo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One inode.
#[derive(Debug)]
pub struct Inode {
    pub ino: InodeNo,
    pub parent: InodeNo,
    pub name: String,
    /// File/symlink: the object key. Directory: its prefix ending in `/` (`""` for the bucket root).
    pub key: String,
    pub stat: Stat,
    /// The last object metadata seen (kept so rewrites carry content type and custom metadata).
    pub meta: Option<ObjectMeta>,
    /// Until when `stat` may be served without asking the store.
    pub valid_until: Instant,
    /// Kernel lookup count (decremented by `forget`).
    pub lookups: u64,
    /// Open file handles.
    pub open_handles: u32,
    /// Write-back state, created on first open of a file (set through the table).
    file: Option<Arc<FileCell>>,
    /// Created here and not yet in the bucket (set through the table).
    local: bool,
    /// Removed from its directory while still open (set through the table).
    unlinked: bool,
    /// The generation whose pages the kernel may hold in its page cache.
    pub cached_generation: Option<Generation>,
    /// Directories: until when every child is known to be in the table (after a full listing,
    /// or a `mkdir` made here), so a name not in the table does not exist.
    pub complete_until: Option<Instant>,
    /// Directories: what lookups learned about listing it (see `fs::refresh`).
    pub dir_info: DirInfo,
}

impl Inode {
    pub fn kind(&self) -> Kind {
        self.stat.kind
    }

    /// The file's write-back state, once it was opened for writing or changed.
    pub fn file(&self) -> Option<&Arc<FileCell>> {
        self.file.as_ref()
    }

    /// Created here and not yet in the bucket.
    pub fn local(&self) -> bool {
        self.local
    }

    /// Removed from its directory while still open.
    pub fn unlinked(&self) -> bool {
        self.unlinked
    }

    fn dirty(&self) -> bool {
        self.file.as_ref().is_some_and(|f| f.is_dirty())
    }

    /// Attributes for the kernel: the stat's, with the link count this inode knows.
    pub fn attr(&self, own: &super::attr::Ownership) -> super::attr::Attr {
        let mut attr = self.stat.attr(self.ino, own);
        attr.nlink = match self.kind() {
            _ if self.unlinked => 0,
            Kind::Dir => self.dir_info.subdirs.map_or(1, |n| n.saturating_add(2)),
            _ => 1,
        };
        attr
    }

    /// Whether a lookup of this inode's name is answered from memory: its attributes are within
    /// the TTL, or it was made or changed here and not yet uploaded.
    pub fn answers_from_memory(&self, now: Instant) -> bool {
        self.valid_until > now || self.local || self.file.as_ref().is_some_and(|f| f.is_dirty())
    }
}

/// All inodes, the per-directory name index, and the sets of inodes found by state.
#[derive(Debug)]
pub struct InodeTable {
    inodes: HashMap<InodeNo, Inode>,
    /// Directory → name → the inode bound to it.
    names: HashMap<InodeNo, HashMap<String, InodeNo>>,
    /// Inodes `local` and not `unlinked`.
    locals: HashSet<InodeNo>,
    /// Inodes with a `file` (write-back state).
    cells: HashSet<InodeNo>,
    next: u64,
}

impl InodeTable {
    /// A table holding only the root directory with prefix `root_prefix`.
    pub fn new(root_prefix: String, root_stat: Stat, now: Instant) -> Self {
        let root = Inode {
            ino: InodeNo::ROOT,
            parent: InodeNo::ROOT,
            name: String::new(),
            key: root_prefix,
            stat: root_stat,
            meta: None,
            valid_until: now + std::time::Duration::from_secs(u64::from(u32::MAX)),
            lookups: 1,
            open_handles: 0,
            file: None,
            local: false,
            unlinked: false,
            cached_generation: None,
            complete_until: None,
            dir_info: DirInfo::default(),
        };
        let mut inodes = HashMap::new();
        inodes.insert(InodeNo::ROOT, root);
        Self {
            inodes,
            names: HashMap::new(),
            locals: HashSet::new(),
            cells: HashSet::new(),
            next: 2,
        }
    }

    fn bind(&mut self, parent: InodeNo, name: &str, ino: InodeNo) {
        self.names
            .entry(parent)
            .or_default()
            .insert(name.to_string(), ino);
    }

    fn unbind_name(&mut self, parent: InodeNo, name: &str) -> Option<InodeNo> {
        let dir = self.names.get_mut(&parent)?;
        let ino = dir.remove(name)?;
        if dir.is_empty() {
            self.names.remove(&parent);
        }
        Some(ino)
    }

    /// Keeps `locals` in step with `ino`'s `local` and `unlinked`.
    fn reindex(&mut self, ino: InodeNo) {
        match self.inodes.get(&ino) {
            Some(i) if i.local && !i.unlinked => self.locals.insert(ino),
            _ => self.locals.remove(&ino),
        };
    }

    /// Records whether `ino` exists only here (made here, not in the bucket yet).
    pub fn set_local(&mut self, ino: InodeNo, local: bool) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.local = local;
        }
        self.reindex(ino);
    }

    /// `ino` was just created here (`create`): local, bound, with write-back state `cell`.
    pub fn created(&mut self, ino: InodeNo, cell: Arc<FileCell>) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.file = Some(cell);
            inode.local = true;
            inode.unlinked = false;
            self.cells.insert(ino);
        }
        self.reindex(ino);
    }

    /// `ino`'s write-back state, made (based on `base`) if it has none yet.
    pub fn file_cell(&mut self, ino: InodeNo, base: Generation) -> Option<Arc<FileCell>> {
        let inode = self.inodes.get_mut(&ino)?;
        let cell = inode
            .file
            .get_or_insert_with(|| Arc::new(FileCell::new(base)))
            .clone();
        self.cells.insert(ino);
        Some(cell)
    }

    pub fn get(&self, ino: InodeNo) -> Option<&Inode> {
        self.inodes.get(&ino)
    }

    pub fn get_mut(&mut self, ino: InodeNo) -> Option<&mut Inode> {
        self.inodes.get_mut(&ino)
    }

    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.inodes.len()
    }

    /// The inode currently bound to `name` in `parent`.
    pub fn child(&self, parent: InodeNo, name: &str) -> Option<InodeNo> {
        self.names.get(&parent)?.get(name).copied()
    }

    /// The names bound in `parent` and their inodes.
    pub fn children(&self, parent: InodeNo) -> Vec<(String, InodeNo)> {
        self.names.get(&parent).map_or_else(Vec::new, |dir| {
            dir.iter().map(|(name, &ino)| (name.clone(), ino)).collect()
        })
    }

    /// Binds `name` in `parent` to an inode with `stat`, reusing the existing inode when the kind
    /// matches. A file with local changes keeps its local attributes. Returns the inode number.
    pub fn upsert_child(
        &mut self,
        parent: InodeNo,
        name: &str,
        key: String,
        stat: Stat,
        meta: Option<ObjectMeta>,
        valid_until: Instant,
    ) -> InodeNo {
        if let Some(ino) = self.child(parent, name) {
            let inode = self
                .inodes
                .get_mut(&ino)
                .expect("index points at a live inode");
            if inode.kind() == stat.kind {
                let dirty = inode.dirty() || inode.local;
                // A listing's prefix says less about a directory than its marker did.
                let less = inode.stat.known && !stat.known;
                if !dirty && !less {
                    inode.stat = stat;
                    inode.meta = meta;
                }
                inode.valid_until = valid_until;
                return ino;
            }
            // The name now denotes something of another kind. The old inode keeps its key
            // (a file with pending changes still uploads to it; a directory-and-file pair is
            // legal in GCS) but is no longer reachable by this name.
            self.unbind(parent, name);
        }
        let ino = InodeNo(self.next);
        self.next += 1;
        self.inodes.insert(
            ino,
            Inode {
                ino,
                parent,
                name: name.to_string(),
                key,
                stat,
                meta,
                valid_until,
                lookups: 0,
                open_handles: 0,
                file: None,
                local: false,
                unlinked: false,
                cached_generation: None,
                complete_until: None,
                dir_info: DirInfo::default(),
            },
        );
        self.bind(parent, name, ino);
        ino
    }

    /// Unbinds `name` from `parent`; the inode lives on (marked unlinked) while the kernel or an
    /// open handle still refers to it.
    pub fn detach(&mut self, parent: InodeNo, name: &str) -> Option<InodeNo> {
        let ino = self.unbind_name(parent, name)?;
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.unlinked = true;
        }
        self.reindex(ino);
        self.maybe_evict(ino);
        Some(ino)
    }

    /// Unbinds `name` from `parent` without declaring the inode removed: used when the store no
    /// longer shows the name (another client deleted it, or it is now something else). An open
    /// file keeps its pending changes, whose conditional upload then decides what happens.
    pub fn unbind(&mut self, parent: InodeNo, name: &str) -> Option<InodeNo> {
        let ino = self.unbind_name(parent, name)?;
        self.maybe_evict(ino);
        Some(ino)
    }

    /// Whether a file created here and not yet uploaded lies anywhere below directory `ino`.
    pub fn has_local_descendants(&self, ino: InodeNo) -> bool {
        let Some(dir) = self.inodes.get(&ino) else {
            return false;
        };
        let prefix = dir.key.as_str();
        self.locals
            .iter()
            .filter_map(|l| self.inodes.get(l))
            .any(|i| i.ino != ino && i.key.starts_with(prefix))
    }

    /// Whether a file with changes not uploaded yet (new, or dirty) lies anywhere below
    /// directory `ino`.
    pub fn has_unsaved_descendants(&self, ino: InodeNo) -> bool {
        let Some(dir) = self.inodes.get(&ino) else {
            return false;
        };
        let prefix = dir.key.as_str();
        self.locals
            .iter()
            .chain(self.cells.iter())
            .filter_map(|l| self.inodes.get(l))
            .any(|i| {
                i.ino != ino && !i.unlinked && i.key.starts_with(prefix) && (i.local || i.dirty())
            })
    }

    /// Whether `ino` is a directory holding a file created here and not uploaded yet: such a
    /// directory exists here whatever the store shows (SEMANTICS.md), and keeps its name.
    pub fn is_pending_dir(&self, ino: InodeNo) -> bool {
        self.inodes.get(&ino).is_some_and(|i| i.kind() == Kind::Dir)
            && self.has_local_descendants(ino)
    }

    /// Subdirectories of `parent`, still bound to their names, that hold files created here
    /// and not uploaded yet (see [`InodeTable::is_pending_dir`]), by name.
    pub fn pending_child_dirs(&self, parent: InodeNo) -> Vec<(String, InodeNo)> {
        let Some(dir) = self.inodes.get(&parent) else {
            return Vec::new();
        };
        let prefix = dir.key.as_str();
        let names: std::collections::BTreeSet<&str> = self
            .locals
            .iter()
            .filter_map(|l| self.inodes.get(l))
            .filter(|i| i.ino != parent)
            .filter_map(|i| i.key.strip_prefix(prefix)?.split_once('/'))
            .map(|(first, _)| first)
            .collect();
        names
            .into_iter()
            .filter_map(|name| {
                let ino = self.child(parent, name)?;
                (self.inodes.get(&ino)?.kind() == Kind::Dir).then(|| (name.to_string(), ino))
            })
            .collect()
    }

    /// Moves `ino` to `new_parent/new_name` with object key `new_key`; a directory's loaded
    /// descendants get their keys rewritten. Whatever `new_name` denoted before is detached.
    pub fn rename(&mut self, ino: InodeNo, new_parent: InodeNo, new_name: &str, new_key: String) {
        let Some(inode) = self.inodes.get(&ino) else {
            return;
        };
        let (old_parent, old_name, old_key) = (inode.parent, inode.name.clone(), inode.key.clone());
        if self.child(new_parent, new_name).is_some_and(|c| c != ino) {
            self.detach(new_parent, new_name);
        }
        self.unbind_name(old_parent, &old_name);
        self.bind(new_parent, new_name, ino);
        let is_dir = {
            let inode = self.inodes.get_mut(&ino).expect("checked above");
            inode.parent = new_parent;
            inode.name = new_name.to_string();
            inode.key = new_key.clone();
            inode.kind() == Kind::Dir
        };
        if is_dir {
            for other in self.inodes.values_mut() {
                if other.ino != ino
                    && other.ino != InodeNo::ROOT
                    && !other.unlinked
                    && other.key.starts_with(&old_key)
                {
                    other.key = format!("{new_key}{}", &other.key[old_key.len()..]);
                }
            }
        }
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&mut self, ino: InodeNo, n: u64) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.lookups = inode.lookups.saturating_sub(n);
        }
        self.maybe_evict(ino);
    }

    /// Removes `ino` if nothing refers to it any more: no kernel reference, no open handle, no
    /// unsaved data, and not a local-only (made here, not yet in the bucket) name. A directory
    /// the kernel forgot has no child the kernel still holds (a dentry holds its parent);
    /// children it had listed, which nothing holds either, stay until `sweep` drops them.
    pub fn maybe_evict(&mut self, ino: InodeNo) {
        if ino == InodeNo::ROOT {
            return;
        }
        let Some(inode) = self.inodes.get(&ino) else {
            return;
        };
        if inode.lookups > 0
            || inode.open_handles > 0
            || inode.dirty()
            || (inode.local && !inode.unlinked)
        {
            return;
        }
        let (parent, name) = (inode.parent, inode.name.clone());
        if self.child(parent, &name) == Some(ino) {
            self.unbind_name(parent, &name);
            // The parent no longer knows all its children.
            if let Some(parent) = self.inodes.get_mut(&parent) {
                parent.complete_until = None;
            }
        }
        self.inodes.remove(&ino);
        self.locals.remove(&ino);
        self.cells.remove(&ino);
    }

    /// Keeps the table under `cap` inodes by dropping ones nothing refers to (no kernel
    /// reference, no handle, no unsaved data): first those whose attributes expired, then any.
    pub fn sweep(&mut self, now: Instant, cap: usize) {
        if self.inodes.len() <= cap {
            return;
        }
        // A directory with names bound in it waits for its children to go first.
        let idle = |i: &Inode| {
            i.ino != InodeNo::ROOT
                && !self.names.contains_key(&i.ino)
                && i.lookups == 0
                && i.open_handles == 0
                && !i.local
                && !i.dirty()
        };
        let mut victims: Vec<(bool, InodeNo)> = self
            .inodes
            .values()
            .filter(|i| idle(i))
            .map(|i| (i.valid_until > now, i.ino))
            .collect();
        // Expired first.
        victims.sort_unstable();
        let excess = self.inodes.len() - cap / 2;
        for (_, ino) in victims.into_iter().take(excess) {
            self.maybe_evict(ino);
        }
    }

    /// Children of `parent` that exist only locally (created, not yet uploaded).
    pub fn local_children(&self, parent: InodeNo) -> Vec<(String, InodeNo, Kind)> {
        self.locals
            .iter()
            .filter_map(|l| self.inodes.get(l))
            .filter(|i| i.parent == parent && i.ino != InodeNo::ROOT)
            .map(|i| (i.name.clone(), i.ino, i.kind()))
            .collect()
    }

    /// An entry was added to (`subdirs` +1 for a directory), removed from (-1) or changed in
    /// directory `dir` here: its mtime and ctime become now (in memory: a directory's marker
    /// is not rewritten for it), and a known subdirectory count follows.
    pub fn entries_changed(&mut self, dir: InodeNo, subdirs: i32) {
        if let Some(d) = self.inodes.get_mut(&dir) {
            let now = std::time::SystemTime::now();
            d.stat.mtime = now;
            d.stat.ctime = now;
            if let Some(n) = d.dir_info.subdirs.as_mut() {
                *n = n.saturating_add_signed(subdirs);
            }
        }
    }

    /// Every inode holding write-back state (for draining at unmount).
    pub fn with_file_state(&self) -> Vec<(InodeNo, Arc<FileCell>)> {
        self.cells
            .iter()
            .filter_map(|c| self.inodes.get(c))
            .filter_map(|i| i.file.clone().map(|f| (i.ino, f)))
            .collect()
    }

    /// Checks the indexes against the inodes (tests and debug builds): every bound name points
    /// at a live inode that has that parent and name, and `locals` and `cells` hold exactly the
    /// inodes they mirror. Returns the first broken rule.
    pub fn check(&self) -> Result<(), String> {
        for (parent, dir) in &self.names {
            if dir.is_empty() {
                return Err(format!("empty name map kept for {parent}"));
            }
            for (name, ino) in dir {
                let Some(i) = self.inodes.get(ino) else {
                    return Err(format!("{parent}/{name} bound to a dead inode {ino}"));
                };
                if i.parent != *parent || i.name != *name {
                    return Err(format!(
                        "{parent}/{name} bound to {ino}, which is {}/{}",
                        i.parent, i.name
                    ));
                }
            }
        }
        for i in self.inodes.values() {
            if (i.local && !i.unlinked) != self.locals.contains(&i.ino) {
                return Err(format!("locals out of step for {}", i.ino));
            }
            if i.file.is_some() != self.cells.contains(&i.ino) {
                return Err(format!("cells out of step for {}", i.ino));
            }
        }
        if let Some(dead) = self
            .locals
            .iter()
            .chain(&self.cells)
            .find(|i| !self.inodes.contains_key(i))
        {
            return Err(format!("a set holds the dead inode {dead}"));
        }
        Ok(())
    }

    /// Inodes whose key starts with `prefix` (loaded descendants of a directory), `ino` excluded.
    pub fn descendants(&self, prefix: &str, except: InodeNo) -> Vec<InodeNo> {
        self.inodes
            .values()
            .filter(|i| i.ino != except && !i.unlinked && i.key.starts_with(prefix))
            .map(|i| i.ino)
            .collect()
    }

    /// The path of `ino` relative to the mount root, for log lines.
    pub fn path(&self, ino: InodeNo) -> String {
        let mut parts = Vec::new();
        let mut cur = ino;
        while cur != InodeNo::ROOT {
            let Some(inode) = self.inodes.get(&cur) else {
                break;
            };
            parts.push(inode.name.clone());
            cur = inode.parent;
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }
}
