//! Directory listings: `opendir`, `readdir`/`readdirplus`, `releasedir`.
//!
//! A [`DirStream`] walks the store's delimiter listing one page at a time, so memory stays
//! bounded by a page whatever the directory's size. Entry offsets are positions in the sequence
//! `.`, `..`, listed entries, local-only entries; a stream keeps only the current page, and a
//! request for an earlier offset restarts the listing (as after `rewinddir`). Local-only entries
//! are new files not uploaded yet and directories that exist only because they hold such files
//! (another client may have removed everything under them).
//!
//! A directory whose inode table holds every child (listed in full, or made here, within the
//! negative TTL: `Inode::complete_until`, the knowledge `lookup` answers missing names from) is
//! listed from the table instead, with no request, as long as each child is one `lookup` would
//! answer from memory too. A listing is thus never fresher or staler than lookups of its names.
//!
//! Names: prefixes become directories, objects files (or symlinks). When object `x` and prefix
//! `x/` both exist the directory wins and the file is listed as `x` + [`CONFLICT_SUFFIX`]. A file
//! is held back until the listing has passed `x/` (keys between `x` and `x/` sort in between), so
//! the check works across pages. A directory kept only by pending new files wins its name the
//! same way. Names that cannot be paths are skipped with one log line each.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use compact_str::CompactString;

use super::attr::{Attr, Kind, Stat};
use super::error::{FsError, FsResult};
use super::handles::Handle;
use super::inode::InodeTable;
use super::names::{self, CONFLICT_SUFFIX};
use super::{Filesystem, InodeNo};
use crate::store::{ListRequest, ObjectMeta};

/// One directory entry as handed to the kernel.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub ino: InodeNo,
    /// Offset of the entry after this one (what the kernel passes back to continue).
    pub offset: u64,
    pub kind: Kind,
    pub name: String,
    /// Attributes, for readdirplus (not for `.` and `..`).
    pub attr: Option<Attr>,
    /// Whether the kernel may keep the entry and its attributes for the TTL. Not for a
    /// directory whose attributes are not the store's on a mount that checks permissions
    /// (see `Filesystem::may_hand_out`): the kernel then asks for them before using them.
    pub cacheable: bool,
}

/// A child found in the listing, before it becomes an inode.
enum Listed {
    Dir(String),
    File(String, ObjectMeta),
}

/// Iteration state of one open directory handle.
#[derive(Debug)]
pub struct DirStream {
    ino: InodeNo,
    parent: InodeNo,
    prefix: String,
    /// Entries starting at offset `buffer_start`.
    buffer: Vec<DirEntry>,
    buffer_start: u64,
    next_token: Option<String>,
    listing_done: bool,
    finished: bool,
    /// Files whose `name/` prefix may still appear.
    held: Vec<(String, ObjectMeta)>,
    /// Local-only children not yet seen in the listing (emitted at the end).
    local_pending: HashMap<String, (InodeNo, Kind)>,
    /// Names of the local-only directories (kept by pending new files): a listed file of such a
    /// name is shown with the conflict suffix, as under a listed directory.
    pending_dirs: HashSet<String>,
    /// Directory names already emitted: GCS never repeats a prefix across pages, but some
    /// emulators do, so a repeat is dropped rather than shown twice.
    emitted_dirs: HashSet<String>,
    /// Children listed from the store so far.
    listed: usize,
    /// Children still to emit when the listing comes from the inode table, by name.
    from_table: Option<std::collections::VecDeque<(CompactString, InodeNo, Kind)>>,
    /// The directory's `names_dropped` when the listing began: if a name was unbound while it
    /// ran (a child evicted after its upload, say), the listing does not mark the directory
    /// complete — the table may lack a child the listing did not show.
    dropped_at_start: u64,
}

impl DirStream {
    fn new(
        ino: InodeNo,
        parent: InodeNo,
        prefix: String,
        local: Vec<(String, InodeNo, Kind)>,
        dropped: u64,
    ) -> Self {
        let mut stream = DirStream {
            ino,
            parent,
            prefix,
            buffer: Vec::new(),
            buffer_start: 0,
            next_token: None,
            listing_done: false,
            finished: false,
            held: Vec::new(),
            local_pending: HashMap::new(),
            pending_dirs: HashSet::new(),
            emitted_dirs: HashSet::new(),
            listed: 0,
            from_table: None,
            dropped_at_start: dropped,
        };
        stream.restart(local, dropped);
        stream
    }

    fn restart(&mut self, local: Vec<(String, InodeNo, Kind)>, dropped: u64) {
        self.dropped_at_start = dropped;
        self.buffer.clear();
        self.buffer_start = 0;
        self.next_token = None;
        self.listing_done = false;
        self.finished = false;
        self.held.clear();
        self.emitted_dirs.clear();
        self.listed = 0;
        self.from_table = None;
        self.pending_dirs = local
            .iter()
            .filter(|(_, _, k)| *k == Kind::Dir)
            .map(|(n, _, _)| n.clone())
            .collect();
        self.local_pending = local.into_iter().map(|(n, i, k)| (n, (i, k))).collect();
    }

    fn next_offset(&self) -> u64 {
        self.buffer_start + self.buffer.len() as u64
    }
}

impl Filesystem {
    /// Opens directory `ino` for listing.
    pub fn opendir(&self, ino: InodeNo) -> FsResult<u64> {
        let (prefix, parent, local, dropped) = {
            let mut table = self.inodes.lock();
            let inode = table.get(ino).ok_or(FsError::NotFound)?;
            if inode.kind() != Kind::Dir {
                return Err(FsError::NotDir);
            }
            let (key, parent, dropped) = (
                inode.key().to_string(),
                inode.parent(),
                inode.names_dropped(),
            );
            table.open_handle(ino);
            (key, parent, listed_local_children(&table, ino), dropped)
        };
        let stream = DirStream::new(ino, parent, prefix, local, dropped);
        Ok(self
            .handles
            .add(Handle::Dir(ino, Arc::new(tokio::sync::Mutex::new(stream)))))
    }

    /// Lists directory `ino` in full, reading at most `max_pages` pages, and caches every child
    /// as readdir does. Returns how many children it has, or `None` if it has more pages.
    pub(super) async fn list_all(&self, ino: InodeNo, max_pages: usize) -> FsResult<Option<usize>> {
        let mut s = {
            let table = self.inodes.lock();
            let inode = table.get(ino).ok_or(FsError::NotFound)?;
            if inode.kind() != Kind::Dir {
                return Err(FsError::NotDir);
            }
            let local = listed_local_children(&table, ino);
            DirStream::new(
                ino,
                inode.parent(),
                inode.key().to_string(),
                local,
                inode.names_dropped(),
            )
        };
        let mut pages = 0;
        while !s.listing_done {
            if pages == max_pages {
                return Ok(None);
            }
            self.fill(&mut s).await?;
            pages += 1;
            // Only the cached inodes are wanted, not the entries.
            s.buffer_start += s.buffer.len() as u64;
            s.buffer.clear();
        }
        Ok(Some(s.listed))
    }

    /// Closes a directory handle.
    pub fn releasedir(&self, fh: u64) -> FsResult<()> {
        let handle = self.handles.take(fh);
        let Some(Handle::Dir(ino, _)) = handle else {
            return Err(FsError::BadHandle);
        };
        let mut table = self.inodes.lock();
        table.close_handle(ino);
        table.maybe_evict(ino);
        Ok(())
    }

    /// Entries of an open directory from `offset` on (at least one page unless the end is
    /// reached). With `plus`, entries carry attributes and the caller must report which ones
    /// reached the kernel through [`Filesystem::readdirplus_sent`].
    pub async fn readdir(&self, fh: u64, offset: u64) -> FsResult<Vec<DirEntry>> {
        let stream = self.handles.dir(fh)?;
        let mut s = stream.lock().await;
        if offset < s.buffer_start {
            let (local, dropped) = {
                let table = self.inodes.lock();
                let dropped = table.get(s.ino).map_or(0, |i| i.names_dropped());
                (listed_local_children(&table, s.ino), dropped)
            };
            s.restart(local, dropped);
        }
        while s.next_offset() <= offset && !s.finished {
            // Drop what the kernel has consumed, then fetch more.
            let keep_from = (offset - s.buffer_start) as usize;
            let keep_from = keep_from.min(s.buffer.len());
            s.buffer.drain(..keep_from);
            s.buffer_start += keep_from as u64;
            self.fill(&mut s).await?;
        }
        let skip = offset.saturating_sub(s.buffer_start) as usize;
        Ok(s.buffer.iter().skip(skip).cloned().collect())
    }

    /// Tells the filesystem which readdirplus entries reached the kernel: each is a lookup
    /// reference the kernel will later `forget`. Entries that did not fit are handed out again
    /// by the next call; until then they are ordinary cached inodes (see `InodeTable::sweep`).
    pub fn readdirplus_sent(&self, sent: &[DirEntry]) {
        let mut table = self.inodes.lock();
        for e in sent.iter().filter(|e| e.attr.is_some()) {
            table.add_lookups(e.ino, 1);
        }
    }

    /// Appends the next batch of entries to the stream's buffer.
    async fn fill(&self, s: &mut DirStream) -> FsResult<()> {
        if s.next_offset() == 0 {
            let (dir, parent) = (s.ino, s.parent);
            push(s, dir, Kind::Dir, ".".into(), None);
            push(s, parent, Kind::Dir, "..".into(), None);
            // Go on with the first page: a first reply of only `.` and `..` would make the
            // kernel's adaptive readdirplus fall back to plain readdir for the rest.
            if let Some(children) = self.known_children(s.ino) {
                // Every child is in the table already: no listing (local-only ones included).
                s.local_pending.clear();
                s.from_table = Some(children.into());
            }
        }
        if let Some(rest) = s.from_table.as_mut() {
            let page_len = (self.config.list_page_size.max(1) as usize).min(rest.len());
            let page: Vec<_> = rest.drain(..page_len).collect();
            s.listing_done = rest.is_empty();
            s.finished = s.listing_done;
            let (dir, own) = (s.ino, self.ownership());
            let table = self.inodes.lock();
            for (name, ino, kind) in page {
                // Only a child that still has the name it had when the listing began: one
                // removed or renamed since is not listed (never sent without its own
                // attributes). Each name of the listing is sent once at most.
                let Some(child) = table
                    .get(ino)
                    .filter(|c| c.parent() == dir && c.name() == name && !c.unlinked())
                else {
                    continue;
                };
                let attr = (child.attr(&own), self.may_hand_out(child.stat()));
                push(s, ino, kind, name.into(), Some(attr));
            }
            return Ok(());
        }
        if s.listing_done {
            let mut local: Vec<_> = s.local_pending.drain().collect();
            local.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, (ino, kind)) in local {
                if let Some(attr) = self.attr_of(ino) {
                    push(s, ino, kind, name, Some(attr));
                }
            }
            s.finished = true;
            return Ok(());
        }
        let request = ListRequest {
            prefix: s.prefix.clone(),
            delimiter: Some("/".into()),
            page_token: s.next_token.clone(),
            max_results: Some(self.config.list_page_size),
            start_offset: None,
        };
        // Room for the page's names, made before the request is known to the table (so that
        // its own evictions do not make it distrust its answer, see `add_listed`).
        self.inodes.lock().sweep(self.config.max_cached_inodes);
        let binding = self.binding_request();
        let page = self.store.list(&request).await?;
        s.next_token = page.next_page_token;
        s.listing_done = s.next_token.is_none();
        let complete_until = s.listing_done.then(|| self.complete_until()).flatten();

        // Merge objects and prefixes in key order.
        let mut listed = Vec::with_capacity(page.objects.len() + page.prefixes.len());
        let mut objects = page.objects.into_iter().peekable();
        let mut prefixes = page.prefixes.into_iter().peekable();
        loop {
            let take_object = match (objects.peek(), prefixes.peek()) {
                (Some(o), Some(p)) => o.key.as_str() < p.as_str(),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if take_object {
                let o = objects.next().expect("peeked");
                let key = o.key.as_str().to_string();
                self.release_held(s, &key, &mut listed);
                if key == s.prefix {
                    if o.size > 0 {
                        tracing::warn!(key, "directory marker holds data; its data is not shown");
                    }
                    continue;
                }
                let name = key[s.prefix.len()..].to_string();
                if let Err(why) = names::check_component(&name) {
                    tracing::warn!(key, ?why, "object name is not a valid path; skipped");
                    continue;
                }
                s.held.push((name, o));
            } else {
                let p = prefixes.next().expect("peeked");
                self.release_held(s, &p, &mut listed);
                let name = p[s.prefix.len()..p.len() - 1].to_string();
                if let Err(why) = names::check_component(&name) {
                    tracing::warn!(prefix = p, ?why, "prefix is not a valid path; skipped");
                    continue;
                }
                if !s.emitted_dirs.insert(name.clone()) {
                    continue;
                }
                if let Some(i) = s.held.iter().position(|(n, _)| *n == name) {
                    let (n, meta) = s.held.remove(i);
                    listed.push(Listed::File(format!("{n}{CONFLICT_SUFFIX}"), meta));
                }
                listed.push(Listed::Dir(name));
            }
        }
        if s.listing_done {
            let held: Vec<_> = s.held.drain(..).collect();
            for (n, m) in held {
                listed.push(file_entry(s, n, m));
            }
        }
        s.listed += listed.len();
        self.add_listed(s, listed, binding.start);
        drop(binding);
        if let Some(until) = complete_until
            && let Some(dir) = self.inodes.lock().get_mut(s.ino)
            && dir.names_dropped() == s.dropped_at_start
        {
            let subdirs = s.emitted_dirs.union(&s.pending_dirs).count();
            dir.listed_in_full(
                Some(until),
                s.listed,
                u32::try_from(subdirs).unwrap_or(u32::MAX),
            );
        }
        Ok(())
    }

    /// Moves held files that can no longer meet their `name/` prefix (the listing passed it).
    fn release_held(&self, s: &mut DirStream, next_key: &str, out: &mut Vec<Listed>) {
        let prefix_len = s.prefix.len();
        let mut i = 0;
        while i < s.held.len() {
            let dir_key = format!("{}{}/", &s.prefix[..prefix_len], s.held[i].0);
            if dir_key.as_str() < next_key {
                let (n, m) = s.held.remove(i);
                out.push(file_entry(s, n, m));
            } else {
                i += 1;
            }
        }
    }

    /// Turns listed children into inodes and entries; `start`: the listing request's number
    /// (see `Filesystem::binding_request`).
    fn add_listed(&self, s: &mut DirStream, listed: Vec<Listed>, start: u64) {
        let now = self.now();
        let valid = now + self.config.metadata_ttl;
        let own = self.ownership();
        let mut entries = Vec::with_capacity(listed.len());
        {
            let mut table = self.inodes.lock();
            for item in listed {
                let (name, key, stat, meta) = match item {
                    Listed::Dir(name) => {
                        let key = names::dir_prefix(&names::join(&s.prefix, &name));
                        (name, key, Stat::listed_dir(SystemTime::now()), None)
                    }
                    Listed::File(name, meta) => {
                        let key = meta.key.as_str().to_string();
                        (name, key, Stat::from_object(&meta), Some(meta))
                    }
                };
                s.local_pending.remove(&name);
                // A name dropped from the table while the listing ran (evicted after this
                // mount's own upload, unlinked, renamed away): what the listing shows of it may
                // be older than what was dropped. Listed, but not known: the next lookup asks
                // the store, and the kernel gets no attributes to cache.
                let stale =
                    table.child(s.ino, &name).is_none() && table.dropped_since(s.ino, &name, start);
                let ino = table.upsert_child(
                    s.ino,
                    &name,
                    key,
                    stat,
                    meta,
                    if stale { now } else { valid },
                );
                let inode = table.get(ino).expect("just inserted");
                let attr = (inode.attr(&own), !stale && self.may_hand_out(inode.stat()));
                entries.push((ino, inode.kind(), name, attr));
            }
        }
        for (ino, kind, name, attr) in entries {
            push(s, ino, kind, name, Some(attr));
        }
    }

    /// Every child of `dir`, by name, if the inode table holds them all: the directory was
    /// listed in full (or made here) within the negative TTL, and each child is one `lookup`
    /// answers from memory (attributes within the TTL, or made or changed here). `None`: list it.
    fn known_children(&self, dir: InodeNo) -> Option<Vec<(CompactString, InodeNo, Kind)>> {
        let now = self.now();
        let table = self.inodes.lock();
        if table
            .get(dir)?
            .complete_until()
            .is_none_or(|until| until <= now)
        {
            return None;
        }
        table.children_by_name(dir, now)
    }

    /// `ino`'s attributes, and whether the kernel may cache them.
    fn attr_of(&self, ino: InodeNo) -> Option<(Attr, bool)> {
        let table = self.inodes.lock();
        table
            .get(ino)
            .map(|i| (i.attr(&self.ownership()), self.may_hand_out(i.stat())))
    }
}

/// Local-only children of `dir` still bound to their names: new files not uploaded yet, and
/// directories holding such files (at any depth), which lookup finds whatever the store shows.
/// A new file whose name was taken by a directory (or vanished) in the store is unbound: lookup
/// no longer finds it, so readdir must not list it either (it uploads at close and is then
/// listed from the store).
fn listed_local_children(table: &InodeTable, dir: InodeNo) -> Vec<(String, InodeNo, Kind)> {
    let mut out: Vec<_> = table
        .local_children(dir)
        .into_iter()
        .filter(|(name, ino, _)| table.child(dir, name) == Some(*ino))
        .collect();
    out.extend(
        table
            .pending_child_dirs(dir)
            .into_iter()
            .map(|(name, ino)| (name, ino, Kind::Dir)),
    );
    out
}

/// A listed file, renamed with the conflict suffix if a directory of its name was emitted or is
/// kept here by pending new files.
fn file_entry(s: &DirStream, name: String, meta: ObjectMeta) -> Listed {
    if s.emitted_dirs.contains(&name) || s.pending_dirs.contains(&name) {
        Listed::File(format!("{name}{CONFLICT_SUFFIX}"), meta)
    } else {
        Listed::File(name, meta)
    }
}

fn push(s: &mut DirStream, ino: InodeNo, kind: Kind, name: String, attr: Option<(Attr, bool)>) {
    let offset = s.next_offset() + 1;
    s.buffer.push(DirEntry {
        ino,
        offset,
        kind,
        name,
        cacheable: attr.is_some_and(|(_, c)| c),
        attr: attr.map(|(a, _)| a),
    });
}
