//! Keeping directories known in full: one listing instead of a round trip per name.
//!
//! A directory whose complete listing this mount saw within the negative TTL
//! (`Inode::complete_until`) answers a name it does not hold as missing, with no request. When
//! that knowledge runs out, or when many names of one directory have to be asked for one by
//! one, listing the directory again is cheaper than asking about each name:
//!
//! - A **small** directory (its last complete listing held at most [`SMALL_DIR_PAGES`] pages)
//!   is listed again instead of probing a name it cannot answer: one round trip either way
//!   (for a one-page directory), and the listing then answers every name for another negative
//!   TTL. This is what keeps `tar x` or a program writing thousands of files into a directory
//!   it made at one request per file after the first negative TTL.
//! - A directory in which [`MISS_TRIGGER`] lookups reached the store within one metadata TTL is
//!   listed in full, up to [`MAX_REFRESH_PAGES`] pages, by the lookup that reached the trigger
//!   (`stat` of thousands of known paths, a build tool checking its inputs). A directory found
//!   larger than that is not tried again for a metadata TTL.
//!
//! Freshness is unchanged: a name is still answered from a listing at most the negative TTL
//! old (missing) or the metadata TTL old (present). Concurrent lookups in a directory being
//! listed wait for a small listing (it costs what their own probe would) and probe on their own
//! during a large one.
//!
//! Locks: the plan is made under `Filesystem::inodes`; the listing runs without it.

use std::time::Instant;

use tokio::sync::watch;

use super::error::FsResult;
use super::{Filesystem, InodeNo};

/// A directory whose last complete listing fit in this many pages is listed again rather than
/// probed name by name.
pub const SMALL_DIR_PAGES: usize = 4;
/// Lookups that reached the store in one directory, within a metadata TTL, before it is listed.
pub const MISS_TRIGGER: u32 = 16;
/// Most pages a listing started by lookups reads; a larger directory keeps being probed.
pub const MAX_REFRESH_PAGES: usize = 32;

/// What lookups learned about listing one directory. Part of its inode.
#[derive(Debug, Default)]
pub struct DirInfo {
    /// Children in the last complete listing (`Some(0)` for a directory made here); `None` if
    /// it was never listed in full.
    pub listed_len: Option<usize>,
    /// Subdirectories, when known: from a complete listing (or 0 for a directory made here),
    /// kept up to date by `mkdir`, `rmdir` and directory renames here. Its link count is 2 +
    /// this.
    pub subdirs: Option<u32>,
    /// Lookups of names in this directory that reached the store since `misses_since`.
    misses: u32,
    misses_since: Option<Instant>,
    /// A listing in flight: done when it turns true (or its sender drops); `small` if worth
    /// waiting for.
    refreshing: Option<Flight>,
    /// Until when the directory is known to be too large to list in full.
    too_big_until: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Flight {
    done: watch::Receiver<bool>,
    small: bool,
}

/// Forgets the flight of a listing whose lookup was dropped before it finished, so later
/// lookups do not keep waiting for (or skipping) a listing nobody runs.
struct FlightGuard<'a> {
    fs: &'a Filesystem,
    dir: InodeNo,
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        if let Some(inode) = self.fs.inodes.lock().get_mut(self.dir) {
            inode.dir_info_mut().refreshing = None;
        }
    }
}

/// What a lookup that cannot be answered from memory should do about its directory.
enum Plan {
    /// Probe the name on its own.
    Probe,
    /// Wait for the small listing in flight, then look again.
    Wait(watch::Receiver<bool>),
    /// List the directory (at most `max_pages` pages), then look again.
    List {
        done: watch::Sender<bool>,
        max_pages: usize,
    },
}

impl Filesystem {
    /// Lists directory `dir` in full if that is the cheaper way to answer a lookup in it (see
    /// the module docs). Returns whether a listing ran (or was waited for): if so, the inode
    /// table holds fresh knowledge of the directory and the lookup should look there again.
    pub(super) async fn refresh_for_lookup(&self, dir: InodeNo) -> FsResult<bool> {
        match self.refresh_plan(dir) {
            Plan::Probe => Ok(false),
            Plan::Wait(mut done) => {
                // An error (the lister went away) also means it is over.
                let _ = done.wait_for(|d| *d).await;
                Ok(true)
            }
            Plan::List { done, max_pages } => {
                let guard = FlightGuard { fs: self, dir };
                let outcome = self.list_all(dir, max_pages).await;
                std::mem::forget(guard);
                let now = self.now();
                {
                    let mut table = self.inodes.lock();
                    if let Some(inode) = table.get_mut(dir) {
                        let info = inode.dir_info_mut();
                        info.refreshing = None;
                        match &outcome {
                            Ok(Some(len)) => info.listed_len = Some(*len),
                            Ok(None) => {
                                info.listed_len = None;
                                info.too_big_until = Some(now + self.config.metadata_ttl);
                            }
                            Err(_) => {}
                        }
                    }
                }
                let _ = done.send(true);
                outcome.map(|_| true)
            }
        }
    }

    /// Decides, under the inode-table lock, how a lookup in `dir` that memory cannot answer
    /// proceeds; registers the listing it starts.
    fn refresh_plan(&self, dir: InodeNo) -> Plan {
        if self.config.negative_ttl.is_zero() || self.config.metadata_ttl.is_zero() {
            // Nothing a listing learns could be kept.
            return Plan::Probe;
        }
        let now = self.now();
        let small_len = SMALL_DIR_PAGES * self.config.list_page_size as usize;
        let mut table = self.inodes.lock();
        let Some(inode) = table.get_mut(dir) else {
            return Plan::Probe;
        };
        let info = inode.dir_info_mut();
        if let Some(flight) = &info.refreshing {
            return match flight.small {
                true => Plan::Wait(flight.done.clone()),
                false => Plan::Probe,
            };
        }
        if info.too_big_until.is_some_and(|t| t > now) {
            return Plan::Probe;
        }
        let (small, max_pages) = if info.listed_len.is_some_and(|n| n <= small_len) {
            (true, 2 * SMALL_DIR_PAGES)
        } else {
            if info
                .misses_since
                .is_none_or(|since| since + self.config.metadata_ttl <= now)
            {
                info.misses = 0;
                info.misses_since = Some(now);
            }
            info.misses += 1;
            if info.misses < MISS_TRIGGER {
                return Plan::Probe;
            }
            info.misses = 0;
            info.misses_since = None;
            (false, MAX_REFRESH_PAGES)
        };
        let (done, rx) = watch::channel(false);
        info.refreshing = Some(Flight { done: rx, small });
        Plan::List { done, max_pages }
    }
}
