//! Name resolution and attributes: `lookup`, `getattr`, `forget`.
//!
//! A name resolves from the inode table while its attributes are fresh (`metadata_ttl`), or
//! from the negative cache (`negative_ttl`); otherwise one round trip asks the store both
//! questions at once: is there an object `key` (a file) and is there anything under `key/` (a
//! directory, explicit marker or implicit prefix). The directory wins a tie; the file stays
//! reachable as `name` + [`CONFLICT_SUFFIX`](super::names::CONFLICT_SUFFIX). Before probing,
//! a lookup may list the whole directory instead when that is cheaper (`super::refresh`).
//!
//! The probe's listing asks for the first [`PROBE_KEYS`] keys under `key/` (not one): a
//! directory found that way comes with the first paths below it, which are bound at once
//! ([`learn_below`]) — the directories along each path, and its file when nothing else shows
//! that name is also a directory. A path nobody looked at before (`head -c 1 dir/sub/file`
//! right after mounting) then costs one round trip for the first directory instead of one per
//! name, at no extra request. Names already bound are left as they are.

use std::time::{Instant, SystemTime};

use super::attr::{Kind, Stat};
use super::error::{FsError, FsResult};
use super::inode::Inode;
use super::names::{self, BadName, CONFLICT_SUFFIX};
use super::{Entry, Filesystem, InodeNo};
use crate::store::{ErrorKind, ListRequest, ObjectKey, ObjectMeta};

/// What the inode table says a child name is.
enum Cached {
    Hit(InodeNo),
    Missing,
    /// Not known (or no longer fresh): ask the store about it under the directory's prefix.
    Unknown(String),
}

/// An inode a name resolved to, kept from eviction until dropped: between resolving a name and
/// using its inode, another request (a sweep, a finished background upload, a `forget`) may
/// otherwise drop an inode nothing else refers to.
pub(super) struct Resolved<'a> {
    fs: &'a Filesystem,
    pub ino: InodeNo,
}

impl Drop for Resolved<'_> {
    fn drop(&mut self) {
        self.fs.inodes.lock().unpin(self.ino);
    }
}

/// A store request whose answer binds names (a probe, a listing page), known to the inode
/// table while it runs, so that a name dropped meanwhile is not bound from an answer older than
/// the drop (see `InodeTable::dropped_since`). Ends when dropped: answered, failed or
/// cancelled. (Dropped with the table's lock not held: its drop takes it.)
pub(super) struct BindingRequest<'a> {
    fs: &'a Filesystem,
    pub start: u64,
}

impl Drop for BindingRequest<'_> {
    fn drop(&mut self) {
        self.fs.inodes.lock().binding_request_ended(self.start);
    }
}

/// Keys the probe of a name lists under `name/`: enough to see past the markers of a few
/// nested directories to the first file below them.
pub const PROBE_KEYS: u32 = 16;

/// What the store says a child name is.
pub(super) enum Found {
    File(ObjectMeta),
    /// A directory, with its marker object if it has one, and the first objects below it (in
    /// key order; `more`: the listing has more).
    Dir {
        marker: Option<ObjectMeta>,
        below: Vec<ObjectMeta>,
        more: bool,
    },
    Nothing,
}

impl Filesystem {
    /// Registers a store request whose answer will bind names (see [`BindingRequest`]).
    pub(super) fn binding_request(&self) -> BindingRequest<'_> {
        let start = self.inodes.lock().binding_request_started();
        BindingRequest { fs: self, start }
    }

    /// Looks up `name` in `parent`; on success the kernel holds one more reference to the inode.
    pub async fn lookup(&self, parent: InodeNo, name: &str) -> FsResult<Entry> {
        if let Some(entry) = self.lookup_from_memory(parent, name) {
            return Ok(entry);
        }
        let resolved = self.resolve(parent, name).await?;
        let mut table = self.inodes.lock();
        table.add_lookups(resolved.ino, 1);
        let attr = table
            .get(resolved.ino)
            .ok_or(FsError::NotFound)?
            .attr(&self.ownership());
        drop(table);
        Ok(self.entry(attr))
    }

    /// A lookup the inode table answers (the name is bound to an inode that answers from
    /// memory, as [`Filesystem::resolve`] would find it), in one hold of its lock: the
    /// attributes are read and the kernel's reference counted together, so nothing can evict
    /// the inode in between and no pin is needed. `None`: resolve it.
    fn lookup_from_memory(&self, parent: InodeNo, name: &str) -> Option<Entry> {
        // The same check of the name as `resolve_once` makes (a name that is only the
        // conflict suffix, or a dot with it, is never found).
        split_lookup_name(name).ok()?;
        let now = self.now();
        let mut table = self.inodes.lock();
        if table.get(parent)?.kind() != Kind::Dir {
            return None;
        }
        let child = table.lookup_child(parent, name, |c| self.hit_in_memory(c, now))?;
        let attr = child.attr(&self.ownership());
        Some(self.entry(attr))
    }

    /// The kernel dropped `n` references.
    pub fn forget(&self, ino: InodeNo, n: u64) {
        self.inodes.lock().forget(ino, n);
    }

    /// Whether the table's `child` answers a lookup of its name at `now` with no request: its
    /// attributes are fresh (or only this mount can have changed them) and may be handed out.
    fn hit_in_memory(&self, child: &Inode, now: Instant) -> bool {
        child.answers_from_memory(now) && self.may_hand_out(child.stat())
    }

    /// Whether `stat` may be given to the kernel to cache: always, unless the kernel checks
    /// permissions and these are not the store's attributes (a directory seen only in a
    /// listing, whose marker may say otherwise).
    pub(super) fn may_hand_out(&self, stat: &Stat) -> bool {
        stat.known || !self.config.check_permissions
    }

    /// Attributes of `ino`, refreshed from the store when older than the TTL.
    pub async fn getattr(&self, ino: InodeNo) -> FsResult<Entry> {
        let unknown_dir = {
            let table = self.inodes.lock();
            let inode = table.get(ino).ok_or(FsError::NotFound)?;
            (inode.kind() == Kind::Dir && !self.may_hand_out(inode.stat()))
                .then(|| (inode.parent(), inode.name().to_string()))
        };
        if let Some((parent, name)) = unknown_dir {
            return self.refresh_dir_attrs(ino, parent, &name).await;
        }
        let (key, parent, name, kind) = {
            let table = self.inodes.lock();
            let inode = table.get(ino).ok_or(FsError::NotFound)?;
            let dirty = inode.file().is_some_and(|f| f.is_dirty());
            if inode.kind() == Kind::Dir
                || inode.valid_until() > self.now()
                || dirty
                || inode.local()
                || inode.unlinked()
            {
                return Ok(self.entry(inode.attr(&self.ownership())));
            }
            (
                inode.key().to_string(),
                inode.parent(),
                inode.name().to_string(),
                inode.kind(),
            )
        };
        let key = ObjectKey::new(key).map_err(FsError::Store)?;
        match self.store.stat(&key).await {
            Ok(meta) => {
                let stat = Stat::from_object(&meta);
                let mut table = self.inodes.lock();
                if stat.kind == kind {
                    let valid = self.now() + self.config.metadata_ttl;
                    let ino2 = table.upsert_child(
                        parent,
                        &name,
                        key.into_string(),
                        stat,
                        Some(meta),
                        valid,
                    );
                    if ino2 == ino {
                        let inode = table.get(ino).ok_or(FsError::NotFound)?;
                        return Ok(self.entry(inode.attr(&self.ownership())));
                    }
                }
                // The name now holds something else; this inode is stale.
                Err(FsError::Stale("object replaced by another kind"))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                self.inodes.lock().unbind(parent, &name);
                Err(FsError::NotFound)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Reads the attributes of directory `ino` (`parent/name`) from the store: its marker's,
    /// or the defaults if it has none.
    async fn refresh_dir_attrs(
        &self,
        ino: InodeNo,
        parent: InodeNo,
        name: &str,
    ) -> FsResult<Entry> {
        let got = self.resolve_fresh(parent, name).await?;
        let table = self.inodes.lock();
        let inode = table.get(got).ok_or(FsError::NotFound)?;
        if got != ino {
            return Err(FsError::Stale("directory replaced"));
        }
        Ok(self.entry(inode.attr(&self.ownership())))
    }

    /// Resolves `parent/name` asking the store, whatever the caches hold.
    async fn resolve_fresh(&self, parent: InodeNo, name: &str) -> FsResult<InodeNo> {
        let prefix = {
            let table = self.inodes.lock();
            table
                .get(parent)
                .ok_or(FsError::NotFound)?
                .key()
                .to_string()
        };
        let key = names::join(&prefix, name);
        let found = self.probe(&key, true).await?;
        let valid = self.now() + self.config.metadata_ttl;
        let mut table = self.inodes.lock();
        match found {
            Found::Dir { marker, .. } => {
                Ok(bind_dir(&mut table, parent, name, &key, marker, valid))
            }
            Found::File(_) => Err(FsError::Stale("directory replaced by a file")),
            Found::Nothing => Err(FsError::NotFound),
        }
    }

    /// Resolves `parent/name` to an inode (without counting a kernel reference), kept in the
    /// table while the result lives. An inode dropped between resolving and pinning it (another
    /// request evicted it) is resolved again.
    pub(super) async fn resolve(&self, parent: InodeNo, name: &str) -> FsResult<Resolved<'_>> {
        let mut tries = 0;
        loop {
            let ino = self.resolve_once(parent, name).await?;
            if self.inodes.lock().pin(ino) {
                return Ok(Resolved { fs: self, ino });
            }
            tries += 1;
            if tries == 3 {
                return Err(FsError::NotFound);
            }
        }
    }

    /// One attempt of [`Filesystem::resolve`].
    async fn resolve_once(&self, parent: InodeNo, name: &str) -> FsResult<InodeNo> {
        let (file_only, base) = split_lookup_name(name)?;
        let mut prefix = match self.cached(parent, name)? {
            Cached::Hit(ino) => return Ok(ino),
            Cached::Missing => return Err(FsError::NotFound),
            Cached::Unknown(prefix) => prefix,
        };
        if self.negative_hit(parent, name) {
            return Err(FsError::NotFound);
        }
        if self.refresh_for_lookup(parent).await? {
            // The directory was just listed: look again.
            match self.cached(parent, name)? {
                Cached::Hit(ino) => return Ok(ino),
                Cached::Missing => return Err(FsError::NotFound),
                Cached::Unknown(p) => prefix = p,
            }
        }
        let key = names::join(&prefix, base);
        let unbound_before = {
            let mut table = self.inodes.lock();
            // Lookups of names never listed add inodes too: keep the table under its cap
            // (before the probe is known to the table: its own evictions are no news to it).
            table.sweep(self.config.max_cached_inodes);
            table.unbound_total()
        };
        let request = self.binding_request();
        let found = self.probe(&key, !file_only).await?;
        let now = self.now();
        let mut table = self.inodes.lock();
        // Dropped from the table while the probe ran (evicted after this mount's upload, say):
        // the answer may be older than what was dropped, so it is bound as not known.
        let valid = if table.child(parent, name).is_none()
            && table.dropped_since(parent, name, request.start)
        {
            now
        } else {
            now + self.config.metadata_ttl
        };
        // A file created here while we were asking wins over the store's answer.
        if let Some(ino) = table.child(parent, name)
            && table.get(ino).is_some_and(|i| i.local())
        {
            return Ok(ino);
        }
        match found {
            Found::Dir {
                marker,
                below,
                more,
            } => {
                let ino = bind_dir(&mut table, parent, name, &key, marker, valid);
                // Not if a name was unbound while the probe ran (an rm here): its listing may
                // still show it.
                if table.unbound_total() == unbound_before {
                    let prefix = names::dir_prefix(&key);
                    learn_below(&mut table, ino, &prefix, &below, more, valid);
                }
                Ok(ino)
            }
            Found::File(meta) => {
                // A directory holding files not uploaded yet keeps its name; the file is
                // reachable as `name` + CONFLICT_SUFFIX, as when the store shows both.
                if let Some(ino) = table.child(parent, name)
                    && table.is_pending_dir(ino)
                {
                    return Ok(ino);
                }
                let stat = Stat::from_object(&meta);
                Ok(table.upsert_child(parent, name, key, stat, Some(meta), valid))
            }
            Found::Nothing => {
                // A directory holding files not uploaded yet exists here even if the store has
                // nothing under it any more.
                if let Some(ino) = table.child(parent, name)
                    && table.is_pending_dir(ino)
                {
                    return Ok(ino);
                }
                table.unbind(parent, name);
                drop(table);
                self.remember_missing(parent, name);
                Err(FsError::NotFound)
            }
        }
    }

    /// What the inode table alone says about `parent/name`.
    fn cached(&self, parent: InodeNo, name: &str) -> FsResult<Cached> {
        let now = self.now();
        let table = self.inodes.lock();
        let p = table.get(parent).ok_or(FsError::NotFound)?;
        if p.kind() != Kind::Dir {
            return Err(FsError::NotDir);
        }
        if let Some(c) = table.child_inode(parent, name) {
            if self.hit_in_memory(c, now) {
                return Ok(Cached::Hit(c.ino()));
            }
        } else if p.complete_until().is_some_and(|until| until > now) {
            // The directory's full listing is recent and has no such name.
            return Ok(Cached::Missing);
        }
        Ok(Cached::Unknown(p.key().to_string()))
    }

    /// Asks the store whether `key` is a directory (when `dirs`) and/or a file, in one round trip.
    pub(super) async fn probe(&self, key: &str, dirs: bool) -> FsResult<Found> {
        let object_key = ObjectKey::new(key).map_err(FsError::Store)?;
        let stat = self.store.stat(&object_key);
        let list_req = ListRequest {
            prefix: names::dir_prefix(key),
            delimiter: None,
            max_results: Some(PROBE_KEYS),
            ..Default::default()
        };
        let list = async {
            if dirs {
                self.store.list(&list_req).await.map(Some)
            } else {
                Ok(None)
            }
        };
        let (stat, list) = futures::join!(stat, list);
        if let Some(page) = list?
            && (!page.objects.is_empty() || !page.prefixes.is_empty())
        {
            // The marker `key/`, if there is one, sorts before everything else under it.
            let (marker, below): (Vec<_>, Vec<_>) = page
                .objects
                .into_iter()
                .partition(|o| o.key.as_str() == list_req.prefix);
            return Ok(Found::Dir {
                marker: marker.into_iter().next(),
                below,
                more: page.next_page_token.is_some(),
            });
        }
        match stat {
            Ok(meta) => Ok(Found::File(meta)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Found::Nothing),
            Err(e) => Err(e.into()),
        }
    }

    fn negative_hit(&self, parent: InodeNo, name: &str) -> bool {
        if self.config.negative_ttl.is_zero() {
            return false;
        }
        let mut neg = self.negative.lock();
        match neg.get(&(parent, name.to_string())) {
            Some(&until) if until > self.now() => true,
            Some(_) => {
                neg.pop(&(parent, name.to_string()));
                false
            }
            None => false,
        }
    }

    pub(super) fn remember_missing(&self, parent: InodeNo, name: &str) {
        if self.config.negative_ttl.is_zero() {
            return;
        }
        let until = self.now() + self.config.negative_ttl;
        self.negative.lock().put((parent, name.to_string()), until);
    }

    pub(super) fn forget_missing(&self, parent: InodeNo, name: &str) {
        self.negative.lock().pop(&(parent, name.to_string()));
    }
}

/// Binds `parent/name` to the directory `key` found in the store, with its marker's
/// attributes (or the defaults of a directory without one).
fn bind_dir(
    table: &mut super::inode::InodeTable,
    parent: InodeNo,
    name: &str,
    key: &str,
    marker: Option<ObjectMeta>,
    valid: std::time::Instant,
) -> InodeNo {
    let stat = match &marker {
        Some(m) => Stat::from_marker(m),
        None => Stat::dir(SystemTime::now()),
    };
    table.upsert_child(parent, name, names::dir_prefix(key), stat, marker, valid)
}

/// Binds what the first objects below directory `dir` (prefix `prefix`) show, in key order:
/// every directory along their paths (a marker among them gives its directory's attributes),
/// and each file unless its name may be a directory too (a key under `name/` in the page, or
/// the page stopping before it could show one). Names already bound are left alone, as are
/// names that cannot be paths. Valid for the metadata TTL, as a listing's entries are.
fn learn_below(
    table: &mut super::inode::InodeTable,
    dir: InodeNo,
    prefix: &str,
    below: &[ObjectMeta],
    more: bool,
    valid: std::time::Instant,
) {
    'objects: for o in below {
        let Some(rel) = o.key.as_str().strip_prefix(prefix) else {
            continue;
        };
        // "a/b/f": directories a, a/b and file f; "a/b/": the marker of a/b.
        let comps: Vec<&str> = rel.split('/').collect();
        let Some((last, dirs)) = comps.split_last() else {
            continue;
        };
        let mut parent = dir;
        let mut at = prefix.to_string();
        for part in dirs {
            if names::check_component(part).is_err() {
                continue 'objects;
            }
            let dir_key = names::dir_prefix(&format!("{at}{part}"));
            parent = match table.child(parent, part) {
                Some(ino) if table.get(ino).is_some_and(|i| i.kind() == Kind::Dir) => ino,
                Some(_) => continue 'objects,
                None => {
                    let marker = (o.key.as_str() == dir_key).then(|| o.clone());
                    let stat = match &marker {
                        Some(m) => Stat::from_marker(m),
                        None => Stat::listed_dir(SystemTime::now()),
                    };
                    table.upsert_child(parent, part, dir_key.clone(), stat, marker, valid)
                }
            };
            at = dir_key;
        }
        if last.is_empty() || names::check_component(last).is_err() {
            continue;
        }
        // Keys under `name/` sort from `name/` up to (not including) `name0`.
        let key = format!("{at}{last}");
        let (lo, hi) = (format!("{key}/"), format!("{key}0"));
        let shown_as_dir = below
            .iter()
            .any(|n| n.key.as_str() >= lo.as_str() && n.key.as_str() < hi.as_str());
        let page_covers = !more || below.last().is_some_and(|n| n.key.as_str() >= hi.as_str());
        if !shown_as_dir && page_covers && table.child(parent, last).is_none() {
            let stat = Stat::from_object(o);
            table.upsert_child(parent, last, key, stat, Some(o.clone()), valid);
        }
    }
}

/// A name asked for in a lookup: whether it names only a file (it ends in the conflict
/// suffix, the name under which a file hidden by a directory of the same name is reachable)
/// and the name of the object. A name that is not a valid component is never found (one too
/// long says so).
fn split_lookup_name(name: &str) -> FsResult<(bool, &str)> {
    let (file_only, base) = match name.strip_suffix(CONFLICT_SUFFIX) {
        Some(base) => (true, base),
        None => (false, name),
    };
    match names::check_component(base) {
        Ok(()) => Ok((file_only, base)),
        Err(BadName::TooLong) => Err(FsError::NameTooLong),
        Err(_) => Err(FsError::NotFound),
    }
}
