//! One memory budget for the bytes gcsfs holds in memory (`--memory-limit-mb`).
//!
//! The budget is split in three fixed shares, so that no kind of use can starve another and no
//! wait can form a cycle:
//!
//! - **reads** (3/8): prefetched parts (what the reader's read-ahead fetched before it was asked
//!   for) and random reads' blocks (kept, at most two per open file, for reads that come before
//!   the kernel has them cached), capped further by `--prefetch-memory-mb`. Never waited for: a
//!   part that finds no room is not fetched ahead (reads then go block by block), and a random
//!   read that finds no room for its block fetches only the pages it asked for.
//! - **writes** (3/8): new files held in memory before their upload (up to 4 MiB each), the
//!   buffers of streamed uploads ([`STREAM_MEMORY`] each), and — when `--temp-dir` is in memory
//!   (a tmpfs or ramfs, as /tmp is on Cloud Run; see [`is_in_memory`]) — every byte of every
//!   staging file. New files and stream buffers are not waited for when `--temp-dir` is a
//!   disk: a file that finds no room is staged there instead (a new file is then uploaded from
//!   there at close). When it is in memory, staging is no escape: a write that would start a
//!   stream waits (holding no lock, up to `write_wait_limit`) for room for the stream's buffers
//!   (less what the file's head holds already: its bytes go into them), and only then stages.
//!   Staged bytes in memory are: a change that grows a staging file (a write past its end, a
//!   truncate up, the download of an existing object for its first change, the copy made when
//!   an upload holds the file) waits for room, up to `write_wait_limit`, for what uploads in
//!   flight and queued will free (in `--write-back async` a finished upload drops the staging
//!   file of a closed file; an upload's end lets go of the copy it held). No room by then, or a
//!   file larger than the whole share: ENOSPC, as a full disk would say, and nothing already
//!   written is lost. A new file spilled from memory is then in memory all the same: its
//!   writes wait (or fail) like any staged bytes. Shrinking or dropping a staging file gives its
//!   bytes back; a copy held by an upload keeps its bytes until the upload ends.
//! - **transfers** (1/4): the copy of the data an upload sends in one request (up to
//!   `store::SINGLE_REQUEST_MAX` per upload). Waited for: an upload holds it only for its
//!   request, and holds no other share while it waits, so the wait always ends.
//!
//! No cycle: a writer waits for the writes share holding no lock and no other charge (it lets
//! go of the file's state lock and of any room it set aside, and takes the state lock again
//! once the room is there); what frees the share (an upload, a close) never waits for the
//! writes share. The only bytes a waiting writer keeps are its own file's staged bytes, which is
//! why a file larger than the share fails at once instead of waiting.
//!
//! What is not charged: the bytes a read asked for while they wait for it (at most a FUSE
//! request each, and requests in flight are bounded), the FUSE request buffers, and staging
//! files on a disk-backed
//! `--temp-dir`. [`MemoryBudget::derive`] leaves half of the container's limit outside the
//! budget for these, the runtime, and the application.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Memory a streamed upload holds at most: the request in flight and the next one
/// (`store::STREAM_CHUNK` each), and the writes queued for it.
pub const STREAM_MEMORY: u64 = 3 * crate::store::STREAM_CHUNK;

/// Bytes held against the budget; given back when dropped.
pub type Charge = OwnedSemaphorePermit;

/// The mount's memory budget, in three shares (see the module doc).
#[derive(Debug)]
pub struct MemoryBudget {
    total: u64,
    reads: Arc<Semaphore>,
    reads_size: u64,
    writes: Arc<Semaphore>,
    writes_size: u64,
    transfers: Arc<Semaphore>,
    transfers_size: u64,
    /// Bytes of staging files charged to the writes share now (see [`StagedCharge`]).
    staged: Arc<AtomicU64>,
}

/// Where the default budget came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitSource {
    CgroupV2,
    CgroupV1,
    PhysicalMemory,
}

impl std::fmt::Display for LimitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LimitSource::CgroupV2 => "the cgroup v2 memory.max",
            LimitSource::CgroupV1 => "the cgroup v1 memory.limit_in_bytes",
            LimitSource::PhysicalMemory => "physical memory",
        })
    }
}

fn permits(bytes: u64) -> usize {
    usize::try_from(bytes)
        .unwrap_or(usize::MAX)
        .min(Semaphore::MAX_PERMITS)
}

fn sem(bytes: u64) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(permits(bytes)))
}

impl MemoryBudget {
    /// A budget of `total` bytes; prefetching takes at most `prefetch_cap` of its share.
    pub fn new(total: u64, prefetch_cap: u64) -> Self {
        let reads_size = (total / 8 * 3).min(prefetch_cap);
        let writes_size = total / 8 * 3;
        let transfers_size = total / 4;
        Self {
            total,
            reads: sem(reads_size),
            reads_size,
            writes: sem(writes_size),
            writes_size,
            transfers: sem(transfers_size),
            transfers_size,
            staged: Arc::default(),
        }
    }

    /// The default budget: half of the memory limit the process lives under (its cgroup's, v2
    /// or v1, else physical memory), and where that limit came from.
    pub fn derive() -> (u64, LimitSource) {
        let (limit, source) = memory_limit();
        (limit / 2, source)
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// The size of the prefetch share.
    pub fn reads_size(&self) -> u64 {
        self.reads_size
    }

    /// The prefetch share, as the semaphore readers take parts from.
    pub fn reads(&self) -> Arc<Semaphore> {
        self.reads.clone()
    }

    /// `bytes` of the writes share now, or `None` if it is full.
    pub fn try_write(&self, bytes: u64) -> Option<Charge> {
        let mut charge = self.writes.clone().try_acquire_many_owned(0).ok()?;
        let mut left = bytes;
        while left > 0 {
            let n = u32::try_from(left).unwrap_or(u32::MAX);
            // A failure drops what was taken so far: it is given back.
            charge.merge(self.writes.clone().try_acquire_many_owned(n).ok()?);
            left -= u64::from(n);
        }
        Some(charge)
    }

    /// The size of the writes share.
    pub fn writes_size(&self) -> u64 {
        self.writes_size
    }

    /// `bytes` of the writes share for a staging file: first from what `room` set aside, the
    /// rest if it is free now; else `Err(bytes)` (nothing taken, `room` as it was).
    pub fn take_write(&self, bytes: u64, room: &mut Room) -> Result<Charge, u64> {
        let set_aside = room.take(bytes);
        let have = set_aside.as_ref().map_or(0, |c| c.num_permits() as u64);
        let Some(mut rest) = self.try_write(bytes - have) else {
            if let Some(c) = set_aside {
                room.put(c);
            }
            return Err(bytes);
        };
        if let Some(c) = set_aside {
            rest.merge(c);
        }
        Ok(rest)
    }

    /// Waits until `need` bytes of the writes share are free and sets them aside in `room` for
    /// the change that found none (which tries again with them). Holds nothing while it waits:
    /// what `room` held is given back first. Returns `false` if `deadline` passed first.
    ///
    /// The wait is cut every [`ROOM_RECHECK`] (returning `true`, with nothing set aside) so
    /// that the caller looks again: what it needs may have shrunk meanwhile (an upload that held
    /// its staging file ended, so no copy is needed any more).
    pub async fn wait_write(&self, need: u64, room: &mut Room, deadline: Instant) -> bool {
        room.reserved = None;
        let until = deadline.min(Instant::now() + ROOM_RECHECK);
        let acquire = async {
            let mut charge = self
                .writes
                .clone()
                .acquire_many_owned(0)
                .await
                .expect("the budget's semaphores are never closed");
            let mut left = need;
            while left > 0 {
                let n = u32::try_from(left).unwrap_or(u32::MAX);
                let more = self
                    .writes
                    .clone()
                    .acquire_many_owned(n)
                    .await
                    .expect("the budget's semaphores are never closed");
                charge.merge(more);
                left -= u64::from(n);
            }
            charge
        };
        match tokio::time::timeout_at(until, acquire).await {
            Ok(charge) => {
                room.reserved = Some(charge);
                true
            }
            Err(_) => Instant::now() < deadline,
        }
    }

    /// An empty charge for a staging file, counted in [`MemoryBudget::staged`] as it grows.
    pub fn staged_charge(&self) -> StagedCharge {
        StagedCharge {
            charge: None,
            staged: self.staged.clone(),
        }
    }

    /// Bytes of staging files charged now (0 unless the temp dir is in memory).
    pub fn staged(&self) -> u64 {
        self.staged.load(Ordering::Relaxed)
    }

    /// `bytes` of the transfers share (at most all of it), once they are free.
    pub async fn transfer(&self, bytes: u64) -> Charge {
        let n = u32::try_from(bytes.min(self.transfers_size)).unwrap_or(u32::MAX);
        self.transfers
            .clone()
            .acquire_many_owned(n)
            .await
            .expect("the budget's semaphores are never closed")
    }

    /// Bytes charged now, over all shares.
    pub fn in_use(&self) -> u64 {
        let used = |s: &Semaphore, size: u64| size.saturating_sub(s.available_permits() as u64);
        used(&self.reads, self.reads_size)
            + used(&self.writes, self.writes_size)
            + used(&self.transfers, self.transfers_size)
    }
}

/// How often a writer waiting for room looks again at what it needs.
pub const ROOM_RECHECK: Duration = Duration::from_millis(100);

/// Room a change to a staging file set aside while it waited with no lock held; what is not
/// used is given back when it is dropped.
#[derive(Debug, Default)]
pub struct Room {
    reserved: Option<Charge>,
}

impl Room {
    /// Room holding `charge`, set aside.
    pub fn holding(charge: Charge) -> Self {
        Self {
            reserved: Some(charge),
        }
    }

    /// Up to `bytes` of what is set aside.
    fn take(&mut self, bytes: u64) -> Option<Charge> {
        let held = self.reserved.as_ref()?.num_permits() as u64;
        if held <= bytes {
            return self.reserved.take();
        }
        let n = usize::try_from(bytes).unwrap_or(usize::MAX);
        self.reserved.as_mut()?.split(n)
    }

    fn put(&mut self, charge: Charge) {
        match &mut self.reserved {
            Some(held) => held.merge(charge),
            None => self.reserved = Some(charge),
        }
    }
}

/// The bytes of the writes share one staging file holds (its size, when the temp dir is in
/// memory), counted in [`MemoryBudget::staged`]; given back when dropped.
#[derive(Debug)]
pub struct StagedCharge {
    charge: Option<Charge>,
    staged: Arc<AtomicU64>,
}

impl StagedCharge {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.charge.as_ref().map_or(0, |c| c.num_permits() as u64)
    }

    /// Holds `charge` too.
    pub fn add(&mut self, charge: Charge) {
        self.staged
            .fetch_add(charge.num_permits() as u64, Ordering::Relaxed);
        match &mut self.charge {
            Some(held) => held.merge(charge),
            None => self.charge = Some(charge),
        }
    }

    /// Gives back what is held above `bytes`.
    pub fn shrink_to(&mut self, bytes: u64) {
        let held = self.bytes();
        if held <= bytes {
            return;
        }
        let excess = held - bytes;
        if let Some(c) = &mut self.charge {
            let n = usize::try_from(excess).unwrap_or(usize::MAX);
            drop(c.split(n));
            self.staged.fetch_sub(excess, Ordering::Relaxed);
        }
    }
}

impl Drop for StagedCharge {
    fn drop(&mut self) {
        self.staged.fetch_sub(self.bytes(), Ordering::Relaxed);
    }
}

/// tmpfs's `statfs` magic number.
const TMPFS_MAGIC: u32 = 0x0102_1994;
/// ramfs's `statfs` magic number.
const RAMFS_MAGIC: u32 = 0x8584_58f6;

/// Whether files in `dir` live in memory: it is on a tmpfs or a ramfs (as /tmp is on Cloud
/// Run), so what is staged there is memory the container is billed and killed for.
pub fn is_in_memory(dir: &Path) -> std::io::Result<bool> {
    let st = nix::sys::statfs::statfs(dir).map_err(std::io::Error::from)?;
    // `f_type` is a signed word of the platform's width; the magic numbers are 32-bit.
    #[allow(clippy::unnecessary_cast, clippy::cast_possible_truncation)]
    let magic = st.filesystem_type().0 as u32;
    Ok(magic == TMPFS_MAGIC || magic == RAMFS_MAGIC)
}

/// The memory limit of this process: its cgroup's (v2 `memory.max`, else v1
/// `memory.limit_in_bytes`) when one is set below physical memory, else physical memory.
pub fn memory_limit() -> (u64, LimitSource) {
    let physical = read("/proc/meminfo")
        .and_then(|m| meminfo_total(&m))
        .unwrap_or(1 << 30);
    let cgroups = read("/proc/self/cgroup").unwrap_or_default();
    let candidates = [
        cgroup_v2_path(&cgroups).and_then(|p| {
            read(&format!("/sys/fs/cgroup{p}/memory.max"))
                .and_then(|v| parse_limit(&v))
                .map(|l| (l, LimitSource::CgroupV2))
        }),
        cgroup_v1_path(&cgroups).and_then(|p| {
            read(&format!("/sys/fs/cgroup/memory{p}/memory.limit_in_bytes"))
                .and_then(|v| parse_limit(&v))
                .map(|l| (l, LimitSource::CgroupV1))
        }),
    ];
    candidates
        .into_iter()
        .flatten()
        .filter(|(l, _)| *l < physical)
        .min_by_key(|(l, _)| *l)
        .unwrap_or((physical, LimitSource::PhysicalMemory))
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(Path::new(path)).ok()
}

/// `MemTotal` of /proc/meminfo, in bytes.
fn meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A limit file's value: bytes, or `None` for "max" (v2) or a value that means no limit.
fn parse_limit(text: &str) -> Option<u64> {
    let v: u64 = text.trim().parse().ok()?;
    // cgroup v1 reports "no limit" as a huge page-aligned number.
    (v < (1u64 << 62)).then_some(v)
}

/// The unified hierarchy's path of this process ("0::/path" in /proc/self/cgroup).
fn cgroup_v2_path(cgroups: &str) -> Option<String> {
    cgroups
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim_end_matches('/').to_string())
}

/// The v1 memory controller's path of this process ("N:memory:/path" or a line naming memory
/// among several controllers).
fn cgroup_v1_path(cgroups: &str) -> Option<String> {
    cgroups.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then(|| path.trim_end_matches('/').to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_read_from_either_cgroup_version() {
        let v1 = "12:pids:/x\n5:memory:/gcsfs/test\n0::/\n";
        assert_eq!(cgroup_v1_path(v1).as_deref(), Some("/gcsfs/test"));
        assert_eq!(cgroup_v2_path(v1).as_deref(), Some(""));
        let joined = "4:cpu,memory:/a/\n";
        assert_eq!(cgroup_v1_path(joined).as_deref(), Some("/a"));
        assert_eq!(cgroup_v2_path("0::/run/app\n").as_deref(), Some("/run/app"));
        assert_eq!(parse_limit("268435456\n"), Some(256 << 20));
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(
            meminfo_total("MemTotal:       24576000 kB\nMemFree: 1 kB\n"),
            Some(24_576_000 * 1024)
        );
    }

    #[tokio::test]
    async fn shares_are_bounded_and_given_back() {
        let b = MemoryBudget::new(64 << 20, u64::MAX);
        assert_eq!(b.in_use(), 0);
        let w = b.try_write(24 << 20).expect("room in the writes share");
        assert!(b.try_write(1 << 20).is_none(), "the writes share is 24 MiB");
        let t = b.transfer(100 << 20).await; // clamped to the share
        assert_eq!(b.in_use(), (24 << 20) + (16 << 20));
        drop((w, t));
        assert_eq!(b.in_use(), 0);
        // The prefetch cap applies within the reads share.
        let capped = MemoryBudget::new(64 << 20, 8 << 20);
        assert_eq!(capped.reads().available_permits(), 8 << 20);
    }

    #[tokio::test]
    async fn room_set_aside_is_used_first_and_given_back() {
        let b = MemoryBudget::new(64 << 20, u64::MAX); // writes share 24 MiB
        let mut room = Room::default();
        let far = Instant::now() + Duration::from_secs(5);
        assert!(b.wait_write(20 << 20, &mut room, far).await);
        assert_eq!(b.in_use(), 20 << 20);
        // 8 MiB, from what was set aside (12 MiB of it stays there).
        let c = b.take_write(8 << 20, &mut room).expect("set aside");
        assert_eq!(b.in_use(), 20 << 20);
        // 16 MiB: the 12 set aside and 4 free now.
        let d = b.take_write(16 << 20, &mut room).expect("set aside + free");
        assert_eq!(b.in_use(), 24 << 20);
        assert!(b.take_write(1, &mut room).is_err(), "the share is full");
        drop(d);
        assert!(b.wait_write(2 << 20, &mut room, far).await);
        assert!(b.take_write(20 << 20, &mut room).is_err(), "nothing taken");
        assert_eq!(b.in_use(), 10 << 20, "room kept");
        drop(room);
        assert_eq!(
            b.in_use(),
            8 << 20,
            "what was set aside and not used is given back"
        );
        let mut staged = b.staged_charge();
        staged.add(c);
        assert_eq!(b.staged(), 8 << 20);
        staged.shrink_to(1 << 20);
        assert_eq!((b.staged(), b.in_use()), (1 << 20, 1 << 20));
        drop(staged);
        assert_eq!((b.staged(), b.in_use()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_for_room_ends_at_its_deadline() {
        let b = MemoryBudget::new(64 << 20, u64::MAX);
        let _all = b.try_write(24 << 20).unwrap();
        let mut room = Room::default();
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut tries = 0;
        while b.wait_write(1, &mut room, deadline).await {
            tries += 1;
            assert!(tries < 1000, "the wait ends");
        }
        assert!(Instant::now() >= deadline);
    }

    #[test]
    fn memory_filesystems_are_recognised() {
        assert!(!is_in_memory(Path::new("/proc")).unwrap(), "procfs");
        let shm = Path::new("/dev/shm");
        if let Ok(st) = nix::sys::statfs::statfs(shm)
            && st.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC
        {
            assert!(is_in_memory(shm).unwrap());
        }
    }
}
