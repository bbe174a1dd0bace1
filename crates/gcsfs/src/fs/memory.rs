//! One memory budget for the bytes gcsfs holds in memory (`--memory-limit-mb`).
//!
//! The budget is split in three fixed shares, so that no kind of use can starve another and no
//! wait can form a cycle:
//!
//! - **reads** (3/8): prefetched parts (what the reader's read-ahead fetched before it was asked
//!   for), capped further by `--prefetch-memory-mb`. Speculative: a part that finds no room is
//!   not fetched ahead (reads then go block by block).
//! - **writes** (3/8): new files held in memory before their upload (up to 4 MiB each), and the
//!   buffers of streamed uploads ([`STREAM_MEMORY`] each). Never waited for: a file that finds no
//!   room is staged in `--temp-dir` instead (a new file is then uploaded from there at close).
//! - **transfers** (1/4): the copy of the data an upload sends in one request (up to
//!   `store::SINGLE_REQUEST_MAX` per upload). Waited for: an upload holds it only for its
//!   request, and holds no other share while it waits, so the wait always ends.
//!
//! What is not charged: a random read's block (demanded, one per read in flight, at most two
//! kept per open file), the FUSE request buffers, and staging files — which live in memory when
//! `--temp-dir` is a tmpfs (as /tmp is on Cloud Run). [`MemoryBudget::derive`] leaves half of the
//! container's limit outside the budget for these, the runtime, and the application.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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

    /// The prefetch share, as the semaphore readers take parts from.
    pub fn reads(&self) -> Arc<Semaphore> {
        self.reads.clone()
    }

    /// `bytes` of the writes share now, or `None` if it is full.
    pub fn try_write(&self, bytes: u64) -> Option<Charge> {
        let n = u32::try_from(bytes).ok()?;
        self.writes.clone().try_acquire_many_owned(n).ok()
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
}
