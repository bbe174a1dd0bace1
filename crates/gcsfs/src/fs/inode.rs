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
//! directory rename (rewriting its loaded descendants' keys) walks every inode.
//!
//! ## Eviction
//!
//! One rule, [`InodeTable::evictable`], decides when an inode may go: nothing refers to it (no
//! kernel lookup reference, no open handle, no request that resolved a name to it), it holds no unsaved data and is not a name made here
//! and not yet in the bucket, no name is bound below it (a directory goes after its children),
//! and no open directory stream may still hand it to the kernel (it is not bound in a directory
//! that is open: a readdir entry stays valid until the kernel has it and counted it). `forget`,
//! `release`, `releasedir`, `unlink` and `rename` drop such an inode at once; cached inodes that
//! the kernel never held (listed, not looked up) are kept in recency order (`recent`, an LRU
//! touched when a listing or lookup binds a name, the kernel takes a reference, or a handle
//! opens) and the least recently used evictable ones go when the table passes
//! `max_cached_inodes`. A sweep walks from the cold end and stops once it found enough, and the
//! next one waits until a quarter of the cap was added again, so inodes the kernel pins are
//! walked at most once per `cap / 4` insertions. Recency is kept to the precision of an epoch
//! (the time it takes to add 1/64 of the table): an inode moves to the warm end at most once
//! per epoch, so a hot inode costs no list update per request, and only insertions (which are
//! what evicts) end an epoch.
//!
//! ## Layout
//!
//! Sized for a million cached inodes: inodes live in the slots of one array (`slab`), added
//! in the order they are bound (a listing binds a directory's children in name order), so a
//! listing from the table walks memory in order. Inode numbers are handed out in the same
//! order and index their slots through a hash that keeps that order ([`InoHasher`]). A
//! directory's name index holds, per child, only its slot (4 bytes, so the index of a large
//! directory stays in the CPU's cache), placed by the hash of the name and compared with the
//! name the inode holds (inline up to 24 bytes): finding a name reads the index and the one
//! inode. See `benches/scale.rs` and ARCHITECTURE.md for the figures.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Instant;

use compact_str::CompactString;

use super::attr::{Kind, Stat};
use super::refresh::DirInfo;
use super::write::FileCell;
use crate::store::{Generation, ObjectMeta};

pub use super::ino::InodeNo;

/// Maps keyed by inode number, hashed by [`InoHasher`].
type InoMap<V> = HashMap<InodeNo, V, std::hash::BuildHasherDefault<InoHasher>>;
type InoSet = HashSet<InodeNo, std::hash::BuildHasherDefault<InoHasher>>;

/// Hashes an inode number to itself in the low bits, which place it in a hash table, and to
/// a mix of it in the top 7, which the table compares first. Numbers are handed out in order,
/// as a listing binds names in order, so what is walked in order (a listing from the table, a
/// readdirplus's references) walks the index in order too, not at random over megabytes.
#[derive(Default)]
struct InoHasher(u64);

impl std::hash::Hasher for InoHasher {
    fn finish(&self) -> u64 {
        const TOP: u64 = 0xFE00_0000_0000_0000;
        (self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) & TOP) | (self.0 & !TOP)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// One inode. Its fields are private: the table changes what its indexes mirror (number,
/// parent and name, references, local and unlinked, write-back state), and everything else
/// changes through the methods below, each named for what happened.
///
/// Laid out by hand (`repr(C)`), what a lookup reads first: with a directory of 100,000 names
/// its inodes are not in the CPU's caches, and each cache line it touches is a trip to memory.
#[derive(Debug)]
#[repr(C)]
pub struct Inode {
    // Read by every lookup (the first 64 bytes).
    /// Stored inline up to 24 bytes (most names), so comparing names reads no other memory.
    name: CompactString,
    /// Until when `stat` may be served without asking the store.
    valid_until: Instant,
    ino: InodeNo,
    /// Kernel lookup count (decremented by `forget`; set through the table).
    lookups: u64,
    /// The recency epoch in which it was last moved to the warm end of `recent`.
    touched: u32,
    /// Created here and not yet in the bucket (set through the table).
    local: bool,
    /// Removed from its directory while still open (set through the table).
    unlinked: bool,
    // Read to answer with attributes.
    /// Write-back state, created on first open of a file (set through the table).
    file: Option<Arc<FileCell>>,
    /// Directories: what lookups learned about listing it (see `fs::refresh`).
    dir_info: Option<Box<DirInfo>>,
    stat: Stat,
    // The rest.
    parent: InodeNo,
    /// File/symlink: the object key. Directory: its prefix ending in `/` (`""` for the bucket root).
    key: String,
    /// The last object metadata seen (kept so rewrites carry content type and custom metadata).
    meta: Option<Box<ObjectMeta>>,
    /// Open handles, file or directory (set through the table).
    open_handles: u32,
    /// Requests using the inode right now (a name resolved to it: `Filesystem::resolve`).
    pins: u32,
    /// Directories: how many names were unbound from it so far (a listing that saw one go
    /// while it ran cannot say it knows every child).
    names_dropped: u64,
    /// The generation whose pages the kernel may hold in its page cache.
    cached_generation: Option<Generation>,
    /// Directories: until when every child is known to be in the table (after a full listing,
    /// or a `mkdir` made here), so a name not in the table does not exist.
    complete_until: Option<Instant>,
}

impl Inode {
    fn new(ino: InodeNo, parent: InodeNo, name: &str, key: String, stat: Stat) -> Self {
        Inode {
            ino,
            parent,
            name: CompactString::from(name),
            key,
            stat,
            meta: None,
            valid_until: Instant::now(),
            lookups: 0,
            open_handles: 0,
            pins: 0,
            touched: 0,
            names_dropped: 0,
            file: None,
            local: false,
            unlinked: false,
            cached_generation: None,
            complete_until: None,
            dir_info: None,
        }
    }

    pub fn ino(&self) -> InodeNo {
        self.ino
    }

    pub fn parent(&self) -> InodeNo {
        self.parent
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// File/symlink: the object key. Directory: its prefix ending in `/` (`""` for the root).
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn stat(&self) -> &Stat {
        &self.stat
    }

    /// The last object metadata seen.
    pub fn meta(&self) -> Option<&ObjectMeta> {
        self.meta.as_deref()
    }

    /// The object last seen, if it is still this inode's (a rename moves the key first).
    pub fn object(&self) -> Option<&ObjectMeta> {
        self.meta().filter(|m| m.key.as_str() == self.key)
    }

    /// Until when `stat` may be served without asking the store.
    pub fn valid_until(&self) -> Instant {
        self.valid_until
    }

    /// Directories: until when every child is known to be in the table.
    pub fn complete_until(&self) -> Option<Instant> {
        self.complete_until
    }

    /// What lookups learned about listing this directory (`fs::refresh` keeps its rules).
    pub fn dir_info_mut(&mut self) -> &mut DirInfo {
        self.dir_info.get_or_insert_default()
    }

    pub fn kind(&self) -> Kind {
        self.stat.kind
    }

    /// The store's object for this inode was seen (listed, read back, or written here):
    /// `stat` describes it (`Stat::from_object` or `from_marker`, with this mount's attributes
    /// kept over it while a change of them is unsaved). Its metadata is kept so that rewrites
    /// carry its content type and custom metadata.
    pub fn object_seen(&mut self, meta: ObjectMeta, stat: Stat) {
        self.stat = stat;
        self.meta = Some(Box::new(meta));
    }

    /// The object was written (its metadata is `meta`) while attributes changed here are not
    /// in it yet: the local ones stay.
    pub fn meta_seen(&mut self, meta: ObjectMeta) {
        self.meta = Some(Box::new(meta));
    }

    /// Created here: `stat` and no object yet.
    pub fn created_here(&mut self, stat: Stat) {
        self.stat = stat;
        self.meta = None;
    }

    /// A change made here at `now` (data or attributes): `change` edits the attributes, and
    /// the change time becomes `now`, as any change of an inode moves it.
    pub fn changed_here(&mut self, now: std::time::SystemTime, change: impl FnOnce(&mut Stat)) {
        change(&mut self.stat);
        self.stat.ctime = now;
    }

    /// `stat` may be served without asking the store until `until` (`now`: ask next time).
    pub fn valid_for(&mut self, until: Instant) {
        self.valid_until = until;
    }

    /// The kernel may hold pages of `generation` (set at open and when this mount wrote it).
    /// Returns the generation it may have held before.
    pub fn cache_generation(&mut self, generation: Option<Generation>) -> Option<Generation> {
        std::mem::replace(&mut self.cached_generation, generation)
    }

    /// Directories: every child is in the table until `until` (`None`: not known), after a
    /// listing of `listed` children of which `subdirs` are directories (or a `mkdir` here).
    pub fn listed_in_full(&mut self, until: Option<Instant>, listed: usize, subdirs: u32) {
        self.complete_until = until;
        let info = self.dir_info_mut();
        info.listed_len = Some(listed);
        info.subdirs = Some(subdirs);
    }

    /// Directories: the table may lack children (one was evicted, or a rename may have
    /// brought more than the last listing showed).
    pub fn not_complete(&mut self) {
        self.complete_until = None;
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

    /// Open handles on this inode.
    pub fn open_handles(&self) -> u32 {
        self.open_handles
    }

    /// Directories: how many names were unbound from it so far (evicted, unlinked, renamed
    /// away, or found gone).
    pub fn names_dropped(&self) -> u64 {
        self.names_dropped
    }

    fn dirty(&self) -> bool {
        self.file.as_ref().is_some_and(|f| f.is_dirty())
    }

    /// Attributes for the kernel: the stat's, with the link count this inode knows.
    pub fn attr(&self, own: &super::attr::Ownership) -> super::attr::Attr {
        let mut attr = self.stat.attr(self.ino, own);
        attr.nlink = match self.kind() {
            _ if self.unlinked => 0,
            Kind::Dir => self
                .dir_info
                .as_ref()
                .and_then(|d| d.subdirs)
                .map_or(1, |n| n.saturating_add(2)),
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

/// The names bound in one directory: each child's slot in the table (4 bytes: the index of a
/// directory of 100,000 names fits in a CPU's L2 cache), found by the hash of its name and
/// compared with the name the inode holds (the index holds no copy of it). Growing the index
/// hashes the names again, reading the inodes. A slot is always bound under the name its inode
/// holds (the table's `rename` changes the name between unbinding and binding).
#[derive(Debug, Default)]
struct Names(hashbrown::HashTable<u32>);

fn name_hash(hasher: &hashbrown::DefaultHashBuilder, name: &str) -> u64 {
    hasher.hash_one(name)
}

impl Names {
    fn find(&self, slots: &slab::Slab<Inode>, h: u64, name: &str) -> Option<u32> {
        self.0
            .find(h, |&slot| slots[slot as usize].name.as_str() == name)
            .copied()
    }

    fn insert(
        &mut self,
        slots: &slab::Slab<Inode>,
        hasher: &hashbrown::DefaultHashBuilder,
        h: u64,
        slot: u32,
    ) {
        self.0
            .insert_unique(h, slot, |&s| name_hash(hasher, &slots[s as usize].name));
    }

    fn remove(&mut self, h: u64, slot: u32) {
        if let Ok(entry) = self.0.find_entry(h, |&s| s == slot) {
            entry.remove();
        }
    }

    fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }
}

/// All inodes, the per-directory name index, and the sets of inodes found by state.
#[derive(Debug)]
pub struct InodeTable {
    /// The inodes, each in a slot of one array (a freed slot is taken by the next inode), so
    /// inodes added together, such as a directory's children bound by a listing, lie together
    /// in memory and a listing from the table walks it in order.
    slots: slab::Slab<Inode>,
    /// Inode number → slot.
    index: InoMap<u32>,
    /// Directory → the names bound in it.
    names: InoMap<Names>,
    /// Hashes names for `names` (seeded per table: names come from the bucket).
    hasher: hashbrown::DefaultHashBuilder,
    /// Inodes `local` and not `unlinked`.
    locals: InoSet,
    /// Inodes with a `file` (write-back state).
    cells: InoSet,
    /// Every inode but the root, least recently used last (see the module doc), to the
    /// precision of an epoch.
    recent: lru::LruCache<InodeNo, (), std::hash::BuildHasherDefault<InoHasher>>,
    /// The current recency epoch: an inode moves to the warm end of `recent` at most once per
    /// epoch; an epoch ends once inodes numbering 1/64 of the table were added.
    epoch: u32,
    added_in_epoch: usize,
    /// The table size at which the next sweep walks `recent`.
    next_sweep: usize,
    /// Names unbound anywhere so far (see [`InodeTable::unbound_total`]).
    unbound_total: u64,
    /// Names dropped while store requests that bind names were in flight.
    drops: RecentDrops,
    next: u64,
}

/// Names that left the table (evicted, unlinked, renamed away, found gone) while a store
/// request whose answer binds names — a listing page, a probe — was in flight.
///
/// Such an answer may predate what made the name go: a listing that began before this mount's
/// own upload finished shows the generation before it, one that began before an unlink shows
/// the removed file. While the inode that knew better is in the table, binding the answer
/// keeps what the inode knows (`upsert_child`); once it is gone, nothing would, and the old
/// answer would be taken for the truth until the metadata TTL runs out (a rename of the file
/// then copies a generation that no longer exists: ESTALE). So a request notes when it starts
/// ([`InodeTable::binding_request_started`]), every drop made while any request is in flight is
/// recorded with a sequence number, and a name the answer shows that was dropped after the
/// request started is bound as not known ([`InodeTable::dropped_since`]): the next lookup asks
/// the store again. A record is kept only while a request that started before it is still in
/// flight.
#[derive(Debug, Default)]
struct RecentDrops {
    /// Sequence number of the last drop recorded.
    seq: u64,
    /// Requests in flight, by the sequence number when they started.
    in_flight: std::collections::BTreeMap<u64, u32>,
    /// (directory, name) → sequence number of its last drop.
    dropped: HashMap<(InodeNo, CompactString), u64>,
    /// `dropped`'s size after the last pruning: it is pruned again once it doubled.
    kept: usize,
}

impl RecentDrops {
    fn started(&mut self) -> u64 {
        *self.in_flight.entry(self.seq).or_default() += 1;
        self.seq
    }

    fn ended(&mut self, start: u64) {
        if let std::collections::btree_map::Entry::Occupied(mut e) = self.in_flight.entry(start) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
        match self.in_flight.keys().next() {
            None => {
                self.dropped.clear();
                self.kept = 0;
            }
            Some(&oldest) if self.dropped.len() > (2 * self.kept).max(1024) => {
                // Drops no request in flight started before are of no use to any.
                self.dropped.retain(|_, &mut seq| seq > oldest);
                self.kept = self.dropped.len();
            }
            Some(_) => {}
        }
    }

    fn dropped(&mut self, parent: InodeNo, name: &str) {
        if !self.in_flight.is_empty() {
            self.seq += 1;
            self.dropped.insert((parent, name.into()), self.seq);
        }
    }

    fn dropped_since(&self, parent: InodeNo, name: &str, start: u64) -> bool {
        !self.dropped.is_empty()
            && self
                .dropped
                .get(&(parent, CompactString::from(name)))
                .is_some_and(|&seq| seq > start)
    }
}

impl InodeTable {
    /// A table holding only the root directory with prefix `root_prefix`.
    pub fn new(root_prefix: String, root_stat: Stat, now: Instant) -> Self {
        let mut root = Inode::new(InodeNo::ROOT, InodeNo::ROOT, "", root_prefix, root_stat);
        root.valid_until = now + std::time::Duration::from_secs(u64::from(u32::MAX));
        root.lookups = 1;
        let mut slots = slab::Slab::new();
        let slot = slots.insert(root) as u32;
        let mut index = InoMap::default();
        index.insert(InodeNo::ROOT, slot);
        Self {
            slots,
            index,
            names: InoMap::default(),
            hasher: hashbrown::DefaultHashBuilder::default(),
            locals: InoSet::default(),
            cells: InoSet::default(),
            recent: lru::LruCache::unbounded_with_hasher(Default::default()),
            epoch: 0,
            added_in_epoch: 0,
            next_sweep: 0,
            unbound_total: 0,
            drops: RecentDrops::default(),
            next: 2,
        }
    }

    /// A store request whose answer will bind names (a listing page, a probe) starts: the
    /// number to pass to [`InodeTable::dropped_since`] and, when it ends (answered or not),
    /// to [`InodeTable::binding_request_ended`].
    pub fn binding_request_started(&mut self) -> u64 {
        self.drops.started()
    }

    /// The request that [`InodeTable::binding_request_started`] numbered `start` ended.
    pub fn binding_request_ended(&mut self, start: u64) {
        self.drops.ended(start);
    }

    /// Whether `parent/name` left the table after the request numbered `start` began: its
    /// answer about the name may be older than what this table knew then (see `RecentDrops`),
    /// so it is bound as not known (to be asked again), never cached as fresh.
    pub fn dropped_since(&self, parent: InodeNo, name: &str, start: u64) -> bool {
        self.drops.dropped_since(parent, name, start)
    }

    fn hash(&self, name: &str) -> u64 {
        name_hash(&self.hasher, name)
    }

    fn slot(&self, ino: InodeNo) -> Option<u32> {
        self.index.get(&ino).copied()
    }

    /// The slot of the inode bound to `name` in `parent`.
    fn find(&self, parent: InodeNo, name: &str) -> Option<u32> {
        self.names
            .get(&parent)?
            .find(&self.slots, self.hash(name), name)
    }

    /// Whether the inode in `slot` is bound to its name.
    fn bound(&self, slot: u32) -> bool {
        let inode = &self.slots[slot as usize];
        self.find(inode.parent, &inode.name) == Some(slot)
    }

    /// Moves `ino` (in `slot`) to the warm end of `recent`, once per epoch.
    fn touch(&mut self, slot: u32) {
        let inode = &mut self.slots[slot as usize];
        if inode.touched != self.epoch && inode.ino != InodeNo::ROOT {
            inode.touched = self.epoch;
            self.recent.promote(&inode.ino);
        }
    }

    /// Binds `name` in `parent` to `ino`, whose inode holds that name already.
    fn bind(&mut self, parent: InodeNo, name: &str, ino: InodeNo) {
        let (Some(slot), h) = (self.slot(ino), self.hash(name)) else {
            return;
        };
        debug_assert_eq!(self.slots[slot as usize].name, name);
        self.names
            .entry(parent)
            .or_default()
            .insert(&self.slots, &self.hasher, h, slot);
    }

    fn unbind_name(&mut self, parent: InodeNo, name: &str) -> Option<InodeNo> {
        let h = self.hash(name);
        let dir = self.names.get_mut(&parent)?;
        let slot = dir.find(&self.slots, h, name)?;
        dir.remove(h, slot);
        if dir.0.is_empty() {
            self.names.remove(&parent);
        }
        if let Some(p) = self.get_mut(parent) {
            p.names_dropped += 1;
        }
        self.drops.dropped(parent, name);
        Some(self.slots[slot as usize].ino)
    }

    /// How many names were removed (unlinked, renamed away, found gone) anywhere so far; an
    /// eviction does not count, the name still stands. A probe that saw none go while it ran may
    /// bind what its listing showed below the directory it found (`lookup::learn_below`); one
    /// that did might bring back a name removed meanwhile.
    pub fn unbound_total(&self) -> u64 {
        self.unbound_total
    }

    /// Keeps `locals` in step with `ino`'s `local` and `unlinked`.
    fn reindex(&mut self, ino: InodeNo) {
        match self.get(ino) {
            Some(i) if i.local && !i.unlinked => self.locals.insert(ino),
            _ => self.locals.remove(&ino),
        };
    }

    /// Records whether `ino` exists only here (made here, not in the bucket yet).
    pub fn set_local(&mut self, ino: InodeNo, local: bool) {
        if let Some(inode) = self.get_mut(ino) {
            inode.local = local;
        }
        self.reindex(ino);
    }

    /// `ino` was just created here (`create`): local, bound, with write-back state `cell`.
    pub fn created(&mut self, ino: InodeNo, cell: Arc<FileCell>) {
        if let Some(inode) = self.get_mut(ino) {
            inode.file = Some(cell);
            inode.local = true;
            inode.unlinked = false;
            self.cells.insert(ino);
        }
        self.reindex(ino);
    }

    /// `ino`'s write-back state, made (based on `base`) if it has none yet.
    pub fn file_cell(&mut self, ino: InodeNo, base: Generation) -> Option<Arc<FileCell>> {
        let inode = self.get_mut(ino)?;
        let cell = inode
            .file
            .get_or_insert_with(|| Arc::new(FileCell::new(base)))
            .clone();
        self.cells.insert(ino);
        Some(cell)
    }

    pub fn get(&self, ino: InodeNo) -> Option<&Inode> {
        self.slot(ino).map(|slot| &self.slots[slot as usize])
    }

    pub fn get_mut(&mut self, ino: InodeNo) -> Option<&mut Inode> {
        self.slot(ino).map(|slot| &mut self.slots[slot as usize])
    }

    /// The kernel took `n` more references to `ino` (a lookup, a create, a readdirplus entry).
    pub fn add_lookups(&mut self, ino: InodeNo, n: u64) {
        if let Some(slot) = self.slot(ino) {
            self.slots[slot as usize].lookups += n;
            self.touch(slot);
        }
    }

    /// The inode bound to `name` in `parent`, if `accept` takes it, with one more kernel
    /// reference (a lookup answered from memory).
    pub fn lookup_child(
        &mut self,
        parent: InodeNo,
        name: &str,
        accept: impl FnOnce(&Inode) -> bool,
    ) -> Option<&Inode> {
        let slot = self.find(parent, name)?;
        if !accept(&self.slots[slot as usize]) {
            return None;
        }
        self.slots[slot as usize].lookups += 1;
        self.touch(slot);
        Some(&self.slots[slot as usize])
    }

    /// A request uses `ino` until [`InodeTable::unpin`]: it is not evicted meanwhile. Whether
    /// it is (still) in the table.
    pub fn pin(&mut self, ino: InodeNo) -> bool {
        match self.get_mut(ino) {
            Some(inode) => {
                inode.pins += 1;
                true
            }
            None => false,
        }
    }

    /// The request that pinned `ino` is done with it. An inode still bound to its name stays
    /// cached (see `sweep`); one that lost its name meanwhile (unlinked, replaced) goes now if
    /// nothing else refers to it.
    pub fn unpin(&mut self, ino: InodeNo) {
        let Some(slot) = self.slot(ino) else {
            return;
        };
        let inode = &mut self.slots[slot as usize];
        inode.pins = inode.pins.saturating_sub(1);
        if inode.pins == 0 && !self.bound(slot) {
            self.maybe_evict(ino);
        }
    }

    /// A handle (file or directory) was opened on `ino`.
    pub fn open_handle(&mut self, ino: InodeNo) {
        if let Some(slot) = self.slot(ino) {
            self.slots[slot as usize].open_handles += 1;
            self.touch(slot);
        }
    }

    /// A handle on `ino` was closed; returns how many stay open. The caller calls
    /// [`InodeTable::maybe_evict`] once it no longer needs the inode.
    pub fn close_handle(&mut self, ino: InodeNo) -> u32 {
        self.get_mut(ino).map_or(0, |inode| {
            inode.open_handles = inode.open_handles.saturating_sub(1);
            inode.open_handles
        })
    }

    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// The inode currently bound to `name` in `parent`.
    pub fn child(&self, parent: InodeNo, name: &str) -> Option<InodeNo> {
        self.find(parent, name)
            .map(|slot| self.slots[slot as usize].ino)
    }

    /// The inode currently bound to `name` in `parent`.
    pub fn child_inode(&self, parent: InodeNo, name: &str) -> Option<&Inode> {
        self.find(parent, name)
            .map(|slot| &self.slots[slot as usize])
    }

    /// The children bound in `dir` in name order, with their kinds, if every one of them
    /// answers from memory at `now` (else `None`: the caller lists the store).
    pub fn children_by_name(
        &self,
        dir: InodeNo,
        now: Instant,
    ) -> Option<Vec<(CompactString, InodeNo, Kind)>> {
        let Some(names) = self.names.get(&dir) else {
            return Some(Vec::new());
        };
        let mut slots: Vec<u32> = names.slots().collect();
        // In slot order first: children bound by one listing lie together, in name order, so
        // the checks walk memory in order and the sort below finds it (nearly) sorted.
        slots.sort_unstable();
        if !slots
            .iter()
            .all(|&s| self.slots[s as usize].answers_from_memory(now))
        {
            return None;
        }
        slots.sort_by(|&a, &b| {
            self.slots[a as usize]
                .name
                .cmp(&self.slots[b as usize].name)
        });
        Some(
            slots
                .into_iter()
                .map(|s| {
                    let i = &self.slots[s as usize];
                    (i.name.clone(), i.ino, i.kind())
                })
                .collect(),
        )
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
        if let Some(slot) = self.find(parent, name) {
            let inode = &mut self.slots[slot as usize];
            let ino = inode.ino;
            if inode.kind() == stat.kind {
                let dirty = inode.dirty() || inode.local;
                // A listing's prefix says less about a directory than its marker did.
                let less = inode.stat.known && !stat.known;
                // Generations of a key only grow: an older one is a listing or probe that
                // began before this mount's own upload made the one known here.
                let older = matches!(
                    (inode.stat.generation, stat.generation),
                    (Some(known), Some(seen)) if seen < known
                );
                if !dirty && !less && !older {
                    inode.stat = stat;
                    inode.meta = meta.map(Box::new);
                }
                inode.valid_until = valid_until;
                self.touch(slot);
                return ino;
            }
            // The name now denotes something of another kind. The old inode keeps its key
            // (a file with pending changes still uploads to it; a directory-and-file pair is
            // legal in GCS) but is no longer reachable by this name.
            self.unbind(parent, name);
        }
        self.added_in_epoch += 1;
        if self.added_in_epoch > self.slots.len() / 64 {
            self.epoch = self.epoch.wrapping_add(1);
            self.added_in_epoch = 0;
        }
        let ino = InodeNo(self.next);
        self.next += 1;
        let mut inode = Inode::new(ino, parent, name, key, stat);
        inode.meta = meta.map(Box::new);
        inode.valid_until = valid_until;
        inode.touched = self.epoch;
        let slot = u32::try_from(self.slots.insert(inode)).expect("fewer than 2^32 inodes");
        self.index.insert(ino, slot);
        self.bind(parent, name, ino);
        self.recent.put(ino, ());
        ino
    }

    /// Unbinds `name` from `parent`; the inode lives on (marked unlinked) while the kernel or an
    /// open handle still refers to it.
    pub fn detach(&mut self, parent: InodeNo, name: &str) -> Option<InodeNo> {
        let ino = self.unbind_name(parent, name)?;
        self.unbound_total += 1;
        if let Some(inode) = self.get_mut(ino) {
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
        self.unbound_total += 1;
        self.maybe_evict(ino);
        Some(ino)
    }

    /// Whether a file created here and not yet uploaded lies anywhere below directory `ino`.
    pub fn has_local_descendants(&self, ino: InodeNo) -> bool {
        let Some(dir) = self.get(ino) else {
            return false;
        };
        let prefix = dir.key.as_str();
        self.locals
            .iter()
            .filter_map(|l| self.get(*l))
            .any(|i| i.ino != ino && i.key.starts_with(prefix))
    }

    /// Whether a file with changes not uploaded yet (new, or dirty) lies anywhere below
    /// directory `ino`.
    pub fn has_unsaved_descendants(&self, ino: InodeNo) -> bool {
        let Some(dir) = self.get(ino) else {
            return false;
        };
        let prefix = dir.key.as_str();
        self.locals
            .iter()
            .chain(self.cells.iter())
            .filter_map(|l| self.get(*l))
            .any(|i| {
                i.ino != ino && !i.unlinked && i.key.starts_with(prefix) && (i.local || i.dirty())
            })
    }

    /// Whether `ino` is a directory holding a file created here and not uploaded yet: such a
    /// directory exists here whatever the store shows (SEMANTICS.md), and keeps its name.
    pub fn is_pending_dir(&self, ino: InodeNo) -> bool {
        self.get(ino).is_some_and(|i| i.kind() == Kind::Dir) && self.has_local_descendants(ino)
    }

    /// Subdirectories of `parent`, still bound to their names, that hold files created here
    /// and not uploaded yet (see [`InodeTable::is_pending_dir`]), by name.
    pub fn pending_child_dirs(&self, parent: InodeNo) -> Vec<(String, InodeNo)> {
        let Some(dir) = self.get(parent) else {
            return Vec::new();
        };
        let prefix = dir.key.as_str();
        let names: std::collections::BTreeSet<&str> = self
            .locals
            .iter()
            .filter_map(|l| self.get(*l))
            .filter(|i| i.ino != parent)
            .filter_map(|i| i.key.strip_prefix(prefix)?.split_once('/'))
            .map(|(first, _)| first)
            .collect();
        names
            .into_iter()
            .filter_map(|name| {
                let ino = self.child(parent, name)?;
                (self.get(ino)?.kind() == Kind::Dir).then(|| (name.to_string(), ino))
            })
            .collect()
    }

    /// Moves `ino` to `new_parent/new_name` with object key `new_key`; a directory's loaded
    /// descendants get their keys rewritten. Whatever `new_name` denoted before is detached.
    pub fn rename(&mut self, ino: InodeNo, new_parent: InodeNo, new_name: &str, new_key: String) {
        let Some(inode) = self.get(ino) else {
            return;
        };
        let (old_parent, old_name, old_key) = (inode.parent, inode.name.clone(), inode.key.clone());
        if self.child(new_parent, new_name).is_some_and(|c| c != ino) {
            self.detach(new_parent, new_name);
        }
        self.unbind_name(old_parent, &old_name);
        self.unbound_total += 1;
        let is_dir = {
            let inode = self.get_mut(ino).expect("checked above");
            inode.parent = new_parent;
            inode.name = CompactString::from(new_name);
            inode.key = new_key.clone();
            inode.kind() == Kind::Dir
        };
        self.bind(new_parent, new_name, ino);
        if is_dir {
            for (_, other) in self.slots.iter_mut() {
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
        if let Some(inode) = self.get_mut(ino) {
            inode.lookups = inode.lookups.saturating_sub(n);
        }
        self.maybe_evict(ino);
    }

    /// The one eviction rule (see the module doc): whether `inode` may be dropped now.
    fn evictable(&self, inode: &Inode) -> bool {
        let bound_in_open_dir = || {
            self.child(inode.parent, &inode.name) == Some(inode.ino)
                && self.get(inode.parent).is_some_and(|p| p.open_handles > 0)
        };
        inode.ino != InodeNo::ROOT
            && inode.lookups == 0
            && inode.open_handles == 0
            && inode.pins == 0
            && !inode.dirty()
            && (!inode.local || inode.unlinked)
            && !self.names.contains_key(&inode.ino)
            && !bound_in_open_dir()
    }

    /// Removes `ino` if [`InodeTable::evictable`] lets it go.
    pub fn maybe_evict(&mut self, ino: InodeNo) {
        let Some(slot) = self.slot(ino) else {
            return;
        };
        let inode = &self.slots[slot as usize];
        if !self.evictable(inode) {
            return;
        }
        if self.bound(slot) {
            let (parent, name) = (inode.parent, inode.name.clone());
            self.unbind_name(parent, &name);
            // The parent no longer knows all its children.
            if let Some(parent) = self.get_mut(parent) {
                parent.complete_until = None;
            }
        }
        self.slots.remove(slot as usize);
        self.index.remove(&ino);
        self.locals.remove(&ino);
        self.cells.remove(&ino);
        self.recent.pop(&ino);
    }

    /// Keeps the table near `cap` inodes: past it, drops the least recently used evictable
    /// ones until a quarter of `cap` is free (or nothing more may go), and does not walk again
    /// before a quarter of `cap` more inodes were added.
    pub fn sweep(&mut self, cap: usize) {
        let len = self.len();
        if len <= cap || len < self.next_sweep {
            return;
        }
        let target = cap - cap / 4;
        let victims: Vec<InodeNo> = self
            .recent
            .iter()
            .rev()
            .filter_map(|(ino, ())| self.get(*ino))
            .filter(|i| self.evictable(i))
            .map(|i| i.ino)
            .take(len - target)
            .collect();
        for ino in victims {
            self.maybe_evict(ino);
        }
        self.next_sweep = self.len() + (cap / 4).max(1);
    }

    /// Children of `parent` that exist only locally (created, not yet uploaded).
    pub fn local_children(&self, parent: InodeNo) -> Vec<(String, InodeNo, Kind)> {
        self.locals
            .iter()
            .filter_map(|l| self.get(*l))
            .filter(|i| i.parent == parent && i.ino != InodeNo::ROOT)
            .map(|i| (i.name.to_string(), i.ino, i.kind()))
            .collect()
    }

    /// An entry was added to (`subdirs` +1 for a directory), removed from (-1) or changed in
    /// directory `dir` here: its mtime and ctime become now (in memory: a directory's marker
    /// is not rewritten for it), and a known subdirectory count follows.
    pub fn entries_changed(&mut self, dir: InodeNo, subdirs: i32) {
        if let Some(d) = self.get_mut(dir) {
            let now = std::time::SystemTime::now();
            d.stat.mtime = now;
            d.stat.ctime = now;
            if let Some(n) = d.dir_info.as_mut().and_then(|i| i.subdirs.as_mut()) {
                *n = n.saturating_add_signed(subdirs);
            }
        }
    }

    /// Every inode holding write-back state (for draining at unmount).
    pub fn with_file_state(&self) -> Vec<(InodeNo, Arc<FileCell>)> {
        self.cells
            .iter()
            .filter_map(|c| self.get(*c))
            .filter_map(|i| i.file.clone().map(|f| (i.ino, f)))
            .collect()
    }

    /// Checks the indexes against the inodes (tests and debug builds): every inode number
    /// indexes the slot holding it, every bound name points at a live inode that has that
    /// parent and name (under the hash of that name), and `locals` and `cells` hold exactly the
    /// inodes they mirror. Returns the first broken rule.
    pub fn check(&self) -> Result<(), String> {
        if self.index.len() != self.slots.len() {
            return Err(format!(
                "{} inode numbers indexed for {} inodes",
                self.index.len(),
                self.slots.len()
            ));
        }
        for (&ino, &slot) in &self.index {
            if self.slots.get(slot as usize).map(|i| i.ino) != Some(ino) {
                return Err(format!("inode {ino} indexed at a slot holding another"));
            }
        }
        for (parent, dir) in &self.names {
            if dir.0.is_empty() {
                return Err(format!("empty name map kept for {parent}"));
            }
            for slot in dir.slots() {
                let Some(i) = self.slots.get(slot as usize) else {
                    return Err(format!("a name in {parent} bound to an empty slot"));
                };
                if i.parent != *parent || self.find(*parent, &i.name) != Some(slot) {
                    return Err(format!(
                        "a name in {parent} bound to {}, which is {}/{}",
                        i.ino, i.parent, i.name
                    ));
                }
            }
        }
        for (_, i) in &self.slots {
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
            .chain(self.recent.iter().map(|(ino, ())| ino))
            .find(|i| !self.index.contains_key(i))
        {
            return Err(format!("a set holds the dead inode {dead}"));
        }
        if self.recent.len() + 1 != self.len() || self.recent.contains(&InodeNo::ROOT) {
            return Err(format!(
                "recent holds {} inodes of {} (the root excluded)",
                self.recent.len(),
                self.len()
            ));
        }
        Ok(())
    }

    /// Inodes whose key starts with `prefix` (loaded descendants of a directory), `ino` excluded.
    pub fn descendants(&self, prefix: &str, except: InodeNo) -> Vec<InodeNo> {
        self.slots
            .iter()
            .map(|(_, i)| i)
            .filter(|i| i.ino != except && !i.unlinked && i.key.starts_with(prefix))
            .map(|i| i.ino)
            .collect()
    }

    /// The path of `ino` relative to the mount root, for log lines.
    pub fn path(&self, ino: InodeNo) -> String {
        let mut parts = Vec::new();
        let mut cur = ino;
        while cur != InodeNo::ROOT {
            let Some(inode) = self.get(cur) else {
                break;
            };
            parts.push(inode.name.as_str());
            cur = inode.parent;
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    fn table() -> (InodeTable, Instant) {
        let now = Instant::now();
        (
            InodeTable::new(String::new(), Stat::dir(SystemTime::now()), now),
            now,
        )
    }

    /// Binds directory `name` under `parent` (listed, no kernel reference).
    fn dir(t: &mut InodeTable, parent: InodeNo, name: &str, now: Instant) -> InodeNo {
        let key = format!("{}{name}/", t.get(parent).unwrap().key);
        let stat = Stat::listed_dir(SystemTime::now());
        t.upsert_child(parent, name, key, stat, None, now + Duration::from_secs(60))
    }

    fn alive(t: &InodeTable, inos: &[InodeNo]) -> Vec<bool> {
        inos.iter().map(|i| t.get(*i).is_some()).collect()
    }

    #[test]
    fn a_name_dropped_during_a_request_is_known_to_it_until_no_older_request_runs() {
        let (mut t, now) = table();
        let a = dir(&mut t, InodeNo::ROOT, "a", now);
        dir(&mut t, InodeNo::ROOT, "b", now);
        // With no request in flight, nothing is recorded.
        t.detach(InodeNo::ROOT, "b");
        let first = t.binding_request_started();
        assert!(!t.dropped_since(InodeNo::ROOT, "b", first));
        // Dropped (here: evicted) while `first` runs: its answer about "a" may predate that.
        t.maybe_evict(a);
        assert!(t.get(a).is_none());
        assert!(t.dropped_since(InodeNo::ROOT, "a", first));
        assert!(!t.dropped_since(InodeNo::ROOT, "b", first));
        // A request started after the drop may trust its answer; the older one still may not.
        let second = t.binding_request_started();
        assert!(!t.dropped_since(InodeNo::ROOT, "a", second));
        t.binding_request_ended(first);
        t.binding_request_ended(second);
        // No request in flight: the record is gone.
        assert!(!t.dropped_since(InodeNo::ROOT, "a", first));
        t.check().unwrap();
    }

    #[test]
    fn a_sweep_drops_the_least_recently_used_first() {
        let (mut t, now) = table();
        let a: Vec<_> = (0..8)
            .map(|i| dir(&mut t, InodeNo::ROOT, &format!("d{i}"), now))
            .collect();
        // d0 and d1 are used again (a later listing binds them again): the coldest are d2, d3.
        dir(&mut t, InodeNo::ROOT, "d0", now);
        dir(&mut t, InodeNo::ROOT, "d1", now);
        // 9 inodes with the root, cap 8: down to 6 (a quarter of the cap free).
        t.sweep(8);
        assert_eq!(t.len(), 6);
        assert_eq!(
            alive(&t, &a),
            [true, true, false, false, false, true, true, true]
        );
        t.check().unwrap();
    }

    #[test]
    fn a_sweep_keeps_what_is_referenced_open_unsaved_or_has_children() {
        let (mut t, now) = table();
        let held = dir(&mut t, InodeNo::ROOT, "held", now);
        t.add_lookups(held, 1);
        let open = dir(&mut t, InodeNo::ROOT, "open", now);
        t.open_handle(open);
        let parent = dir(&mut t, InodeNo::ROOT, "parent", now);
        let child = dir(&mut t, parent, "child", now);
        t.add_lookups(child, 1);
        let local = dir(&mut t, InodeNo::ROOT, "local", now);
        t.set_local(local, true);
        let idle: Vec<_> = (0..4)
            .map(|i| dir(&mut t, InodeNo::ROOT, &format!("i{i}"), now))
            .collect();
        t.sweep(4);
        assert_eq!(alive(&t, &[held, open, parent, child, local]), [true; 5]);
        assert_eq!(alive(&t, &idle), [false; 4]);
        t.check().unwrap();
        // The child goes once the kernel forgets it; its parent on the next sweep.
        t.forget(child, 1);
        assert_eq!(alive(&t, &[child, parent]), [false, true]);
        for i in 0..2 {
            dir(&mut t, InodeNo::ROOT, &format!("j{i}"), now);
        }
        t.sweep(4);
        assert!(t.get(parent).is_none());
        t.check().unwrap();
    }

    #[test]
    fn children_of_an_open_directory_stay_until_it_is_closed() {
        let (mut t, now) = table();
        let d = dir(&mut t, InodeNo::ROOT, "d", now);
        t.add_lookups(d, 1);
        t.open_handle(d);
        let kids: Vec<_> = (0..6)
            .map(|i| dir(&mut t, d, &format!("k{i}"), now))
            .collect();
        t.sweep(4);
        assert_eq!(
            alive(&t, &kids),
            [true; 6],
            "an open listing may still hand them out"
        );
        assert_eq!(t.close_handle(d), 0);
        t.maybe_evict(d);
        // The sweep that found nothing waits for a quarter of the cap to be added.
        dir(&mut t, InodeNo::ROOT, "x", now);
        t.sweep(4);
        assert!(t.len() <= 4, "{} inodes left", t.len());
        assert!(t.get(d).is_some(), "the kernel holds it");
        t.check().unwrap();
    }

    #[test]
    fn a_pinned_inode_outlives_sweeps_and_goes_when_unpinned_without_a_name() {
        let (mut t, now) = table();
        let kept = dir(&mut t, InodeNo::ROOT, "kept", now);
        let gone = dir(&mut t, InodeNo::ROOT, "gone", now);
        assert!(t.pin(kept) && t.pin(gone));
        for i in 0..6 {
            dir(&mut t, InodeNo::ROOT, &format!("i{i}"), now);
        }
        t.sweep(4);
        assert_eq!(alive(&t, &[kept, gone]), [true, true]);
        // Unpinned while bound: stays cached. Unpinned after losing its name: goes.
        t.unpin(kept);
        assert!(t.get(kept).is_some());
        t.detach(InodeNo::ROOT, "gone");
        assert!(t.get(gone).is_some(), "still pinned");
        t.unpin(gone);
        assert!(t.get(gone).is_none());
        assert!(!t.pin(gone), "a dropped inode cannot be pinned");
        t.check().unwrap();
    }

    #[test]
    fn a_sweep_that_can_drop_nothing_does_not_walk_again_at_once() {
        let (mut t, now) = table();
        let pinned: Vec<_> = (0..8)
            .map(|i| dir(&mut t, InodeNo::ROOT, &format!("p{i}"), now))
            .collect();
        for &p in &pinned {
            t.add_lookups(p, 1);
        }
        t.sweep(4);
        assert_eq!(t.len(), 9);
        // Released by the kernel without being evicted (as if forget raced a lookup): the
        // next sweep only walks once a quarter of the cap (1) more was added.
        for &p in &pinned {
            t.get_mut(p).unwrap().lookups = 0;
        }
        t.sweep(4);
        assert_eq!(t.len(), 9, "no walk before the table grew");
        dir(&mut t, InodeNo::ROOT, "y", now);
        t.sweep(4);
        assert_eq!(t.len(), 3);
        t.check().unwrap();
    }

    #[test]
    fn recency_moves_once_per_epoch_and_an_epoch_ends_with_insertions() {
        let (mut t, now) = table();
        // 129 inodes: an epoch ends every 129 / 64 + 1 = 3 insertions.
        let a: Vec<_> = (0..128)
            .map(|i| dir(&mut t, InodeNo::ROOT, &format!("d{i:03}"), now))
            .collect();
        let epoch = t.epoch;
        // d127 was added in this epoch: a touch does not move it. d0 was not: it moves.
        t.add_lookups(a[0], 1);
        assert_eq!(t.recent.peek_lru().map(|(i, ())| *i), Some(a[1]));
        assert_eq!(t.recent.iter().next().map(|(i, ())| *i), Some(a[0]));
        t.add_lookups(a[127], 1);
        assert_eq!(
            t.recent.iter().next().map(|(i, ())| *i),
            Some(a[0]),
            "same epoch"
        );
        for i in 0..3 {
            dir(&mut t, InodeNo::ROOT, &format!("e{i}"), now);
        }
        assert_ne!(t.epoch, epoch);
        t.add_lookups(a[127], 1);
        assert_eq!(t.recent.iter().next().map(|(i, ())| *i), Some(a[127]));
        t.check().unwrap();
    }

    #[test]
    fn children_by_name_come_in_name_order_and_follow_renames() {
        let (mut t, now) = table();
        for name in ["m", "b", "z", "a"] {
            dir(&mut t, InodeNo::ROOT, name, now);
        }
        let names = |t: &InodeTable| -> Vec<String> {
            t.children_by_name(InodeNo::ROOT, now)
                .unwrap()
                .into_iter()
                .map(|(name, ino, _)| {
                    assert_eq!(t.get(ino).unwrap().name, name);
                    name.to_string()
                })
                .collect()
        };
        assert_eq!(names(&t), ["a", "b", "m", "z"]);
        let m = t.child(InodeNo::ROOT, "m").unwrap();
        t.rename(m, InodeNo::ROOT, "c", "c/".into());
        assert_eq!(names(&t), ["a", "b", "c", "z"]);
        assert_eq!(t.child(InodeNo::ROOT, "c"), Some(m));
        assert_eq!(t.child(InodeNo::ROOT, "m"), None);
        // A child past its TTL: the table cannot answer for the directory.
        assert!(
            t.children_by_name(InodeNo::ROOT, now + Duration::from_secs(61))
                .is_none()
        );
        t.check().unwrap();
    }

    /// The inode's own size bounds the table's memory and what a listing from it reads: the
    /// parts only some inodes need (the object's metadata, a directory's listing state) are
    /// boxed.
    #[test]
    fn an_inode_fits_in_five_cache_lines() {
        assert!(
            std::mem::size_of::<Inode>() <= 320,
            "{}",
            std::mem::size_of::<Inode>()
        );
    }
}
