//! The inode table: which names the kernel knows, their object keys and cached attributes.
//!
//! Guarded by one `std::sync::Mutex` in [`super::Filesystem`]; every method here is synchronous
//! and short, so the lock is never held across an `.await`.

use std::collections::HashMap;
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
    /// Write-back state, created on first open of a file.
    pub file: Option<Arc<FileCell>>,
    /// Created here and not yet in the bucket.
    pub local: bool,
    /// Removed from its directory while still open.
    pub unlinked: bool,
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

/// All inodes, and the (parent, name) → inode index.
#[derive(Debug)]
pub struct InodeTable {
    inodes: HashMap<InodeNo, Inode>,
    names: HashMap<(InodeNo, String), InodeNo>,
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
            next: 2,
        }
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
        self.names.get(&(parent, name.to_string())).copied()
    }

    /// The names bound in `parent` and their inodes (a scan of the whole index).
    pub fn children(&self, parent: InodeNo) -> Vec<(String, InodeNo)> {
        self.names
            .iter()
            .filter(|((p, _), _)| *p == parent)
            .map(|((_, name), &ino)| (name.clone(), ino))
            .collect()
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
                let dirty = inode.file.as_ref().is_some_and(|f| f.is_dirty()) || inode.local;
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
        self.names.insert((parent, name.to_string()), ino);
        ino
    }

    /// Unbinds `name` from `parent`; the inode lives on (marked unlinked) while the kernel or an
    /// open handle still refers to it.
    pub fn detach(&mut self, parent: InodeNo, name: &str) -> Option<InodeNo> {
        let ino = self.names.remove(&(parent, name.to_string()))?;
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.unlinked = true;
        }
        self.maybe_evict(ino);
        Some(ino)
    }

    /// Unbinds `name` from `parent` without declaring the inode removed: used when the store no
    /// longer shows the name (another client deleted it, or it is now something else). An open
    /// file keeps its pending changes, whose conditional upload then decides what happens.
    pub fn unbind(&mut self, parent: InodeNo, name: &str) -> Option<InodeNo> {
        let ino = self.names.remove(&(parent, name.to_string()))?;
        self.maybe_evict(ino);
        Some(ino)
    }

    /// Whether a file created here and not yet uploaded lies anywhere below directory `ino`.
    pub fn has_local_descendants(&self, ino: InodeNo) -> bool {
        let Some(dir) = self.inodes.get(&ino) else {
            return false;
        };
        let prefix = &dir.key;
        self.inodes
            .values()
            .any(|i| i.local && !i.unlinked && i.ino != ino && i.key.starts_with(prefix.as_str()))
    }

    /// Whether a file with changes not uploaded yet (new, or dirty) lies anywhere below
    /// directory `ino`.
    pub fn has_unsaved_descendants(&self, ino: InodeNo) -> bool {
        let Some(dir) = self.inodes.get(&ino) else {
            return false;
        };
        let prefix = dir.key.as_str();
        self.inodes.values().any(|i| {
            i.ino != ino
                && !i.unlinked
                && i.key.starts_with(prefix)
                && (i.local || i.file.as_ref().is_some_and(|f| f.is_dirty()))
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
            .inodes
            .values()
            .filter(|i| i.local && !i.unlinked && i.ino != parent)
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
        self.names.remove(&(old_parent, old_name));
        self.names.insert((new_parent, new_name.to_string()), ino);
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
        let dirty = inode.file.as_ref().is_some_and(|f| f.is_dirty());
        if inode.lookups > 0 || inode.open_handles > 0 || dirty || (inode.local && !inode.unlinked)
        {
            return;
        }
        let key = (inode.parent, inode.name.clone());
        if self.names.get(&key) == Some(&ino) {
            self.names.remove(&key);
            // The parent no longer knows all its children.
            if let Some(parent) = self.inodes.get_mut(&key.0) {
                parent.complete_until = None;
            }
        }
        self.inodes.remove(&ino);
    }

    /// Keeps the table under `cap` inodes by dropping ones nothing refers to (no kernel
    /// reference, no handle, no unsaved data): first those whose attributes expired, then any.
    pub fn sweep(&mut self, now: Instant, cap: usize) {
        if self.inodes.len() <= cap {
            return;
        }
        let idle = |i: &Inode| {
            i.ino != InodeNo::ROOT
                && i.lookups == 0
                && i.open_handles == 0
                && !i.local
                && !i.file.as_ref().is_some_and(|f| f.is_dirty())
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
        self.inodes
            .values()
            .filter(|i| i.parent == parent && i.local && !i.unlinked && i.ino != InodeNo::ROOT)
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
        self.inodes
            .values()
            .filter_map(|i| i.file.clone().map(|f| (i.ino, f)))
            .collect()
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
