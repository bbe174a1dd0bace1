//! The memory budget under a real cgroup limit: the daemon of an `--write-back async` mount is
//! moved into a child cgroup whose memory limit is 256 MiB (v1 `memory.limit_in_bytes` or v2
//! `memory.max`, whichever the machine has), with `--memory-limit-mb 128` (what it derives from
//! such a limit). Then, at once: 4 readers of large files, 2 writers of large files and 1,000
//! small files, and an edit in place of an existing file (staged whole). The `--temp-dir` is
//! a tmpfs, as /tmp is on Cloud Run: staging files are memory, charged to the cgroup and to
//! the budget. The daemon must not be OOM-killed, and every byte is checked afterwards
//! (readers against what was written, writers', the edited and small files against the
//! bucket). Peak RSS is printed.
//!
//! The large files are `GCSFS_MEMORY_TEST_MIB` MiB each (default 128; the figure is
//! 1024, run by hand). Needs `GCSFS_TEST_ENDPOINT`, `/dev/fuse`, root and a memory cgroup.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::mount::{Bucket, Mount, MountOptions, fuse_endpoint};
use common::required::cannot_run;

const MIB: usize = 1 << 20;
const LIMIT: u64 = 256 << 20;

/// A child memory cgroup, removed on drop (its processes moved back to the root first).
struct Cgroup {
    dir: PathBuf,
    root: PathBuf,
    v2: bool,
}

impl Cgroup {
    fn create(limit: u64) -> Result<Self, String> {
        let name = format!("gcsfs-test-{}", std::process::id());
        let v1 = Path::new("/sys/fs/cgroup/memory");
        let (root, v2) = if v1.join("memory.limit_in_bytes").exists() {
            (v1.to_path_buf(), false)
        } else if std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
        {
            let _ = std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+memory");
            (PathBuf::from("/sys/fs/cgroup"), true)
        } else {
            return Err("no memory cgroup controller".into());
        };
        let dir = root.join(name);
        std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let cg = Self { dir, root, v2 };
        let file = if v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        std::fs::write(cg.dir.join(file), limit.to_string())
            .map_err(|e| format!("setting {file}: {e}"))?;
        Ok(cg)
    }

    fn add(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).expect("move into cgroup");
    }

    /// The most memory the cgroup held (its processes' memory and the tmpfs pages they wrote),
    /// in MiB, where the kernel tells.
    fn peak_mib(&self) -> Option<u64> {
        let file = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        let bytes: u64 = std::fs::read_to_string(self.dir.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        Some(bytes >> 20)
    }

    /// OOM kills in the cgroup so far.
    fn oom_kills(&self) -> u64 {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        std::fs::read_to_string(self.dir.join(file))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if let Ok(procs) = std::fs::read_to_string(self.dir.join("cgroup.procs")) {
            for pid in procs.split_whitespace() {
                let _ = std::fs::write(self.root.join("cgroup.procs"), pid);
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Deterministic bytes, produced piece by piece (large files are never held whole).
struct Gen(u64);

impl Gen {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// Writes `mib` MiB of seed `seed` to `path` in 1 MiB writes; returns its CRC32C.
fn write_big(path: &Path, seed: u64, mib: usize) -> u32 {
    let mut f = std::fs::File::create(path).unwrap();
    let mut g = Gen::new(seed);
    let mut buf = vec![0u8; MIB];
    let mut crc = 0;
    for _ in 0..mib {
        g.fill(&mut buf);
        crc = crc32c::crc32c_append(crc, &buf);
        f.write_all(&buf).unwrap();
    }
    f.sync_all().unwrap();
    crc
}

/// The CRC32C and length of what `path` reads.
fn read_crc(path: &Path) -> (u32, usize) {
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; MIB];
    let (mut crc, mut len) = (0, 0);
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return (crc, len);
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        len += n;
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[test]
fn under_a_256_mib_cgroup_a_mixed_load_is_not_oom_killed_and_every_byte_lands() {
    let Some(endpoint) = fuse_endpoint() else {
        return;
    };
    let mib: usize = std::env::var("GCSFS_MEMORY_TEST_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let cgroup = match Cgroup::create(LIMIT) {
        Ok(c) => c,
        Err(why) => {
            cannot_run(&format!("a memory cgroup: {why}"));
            return;
        }
    };
    let bucket = Bucket::fresh(&endpoint, "memory");
    let options = MountOptions {
        extra: ["--write-back", "async", "--memory-limit-mb", "128"]
            .map(String::from)
            .to_vec(),
        // As on Cloud Run: staging files are memory, charged to the daemon's cgroup (and to
        // gcsfs's budget, which sees the tmpfs).
        tmpfs_temp_dir: Some("1g".into()),
        ..MountOptions::default()
    };
    let m = Mount::new(&bucket, options);
    let mnt = m.path().to_path_buf();

    // The files the readers read, written (and closed: uploaded in the background) first.
    std::fs::create_dir(mnt.join("in")).unwrap();
    let read_crcs: Vec<u32> = (0..4)
        .map(|i| write_big(&mnt.join(format!("in/r{i}")), 100 + i, mib))
        .collect();
    // A file edited in place during the load: staged whole (in the tmpfs), then uploaded. At
    // most 16 MiB: a file larger than the budget's writes share (48 MiB here) cannot be staged
    // in memory at all (ENOSPC, by design: SEMANTICS.md).
    let edit_mib = (mib / 8).clamp(2, 16);
    let edit_crc_before = write_big(&mnt.join("in/e0"), 300, edit_mib);
    let deadline = Instant::now() + Duration::from_secs(600);
    while bucket.list("in/").len() < 6 {
        assert!(
            Instant::now() < deadline,
            "the readers' files were not uploaded"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // From here the daemon lives under the limit.
    let pid = m.pid();
    cgroup.add(pid);
    let peak = Arc::new(AtomicU64::new(rss_kib(pid).unwrap_or(0)));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let started = Instant::now();
    std::fs::create_dir(mnt.join("out")).unwrap();
    std::fs::create_dir(mnt.join("small")).unwrap();
    let mut work = Vec::new();
    // The readers' files were just written: without the page cache, reads go to the daemon.
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "1");
    for i in 0..4u64 {
        let path = mnt.join(format!("in/r{i}"));
        work.push(std::thread::spawn(move || {
            let got = read_crc(&path);
            (format!("in/r{i}"), got)
        }));
    }
    for i in 0..2u64 {
        let path = mnt.join(format!("out/w{i}"));
        work.push(std::thread::spawn(move || {
            let crc = write_big(&path, 200 + i, mib);
            (format!("out/w{i}"), (crc, mib * MIB))
        }));
    }
    let edited = mnt.join("in/e0");
    let editor = std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&edited)
            .unwrap();
        let mut patch = vec![0u8; MIB];
        Gen::new(400).fill(&mut patch);
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start((edit_mib * MIB / 2) as u64))
            .unwrap();
        f.write_all(&patch).unwrap();
        drop(f);
        patch
    });
    let small_dir = mnt.join("small");
    let small = std::thread::spawn(move || {
        for i in 0..1000u64 {
            let mut g = Gen::new(1000 + i);
            let mut buf = vec![0u8; 1000 + i as usize];
            g.fill(&mut buf);
            std::fs::write(small_dir.join(format!("s{i}")), &buf).unwrap();
        }
    });
    let results: Vec<(String, (u32, usize))> =
        work.into_iter().map(|t| t.join().unwrap()).collect();
    small.join().unwrap();
    let patch = editor.join().unwrap();
    let load_secs = started.elapsed().as_secs_f64();
    // Everything written reaches the bucket (the async write-back): wait for the listing.
    let deadline = Instant::now() + Duration::from_secs(600);
    while bucket.list("small/").len() < 1001 || bucket.list("out/").len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the writes were not all uploaded"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak_mib = peak.load(Ordering::Relaxed) as f64 / 1024.0;
    println!(
        "memory test: {mib} MiB files, load {load_secs:.1} s, daemon peak RSS {peak_mib:.0} MiB \
         (cgroup limit 256 MiB, budget 128 MiB; the cgroup's peak, tmpfs included: {} MiB), \
         OOM kills {}",
        cgroup
            .peak_mib()
            .map_or_else(|| "unknown".to_string(), |m| m.to_string()),
        cgroup.oom_kills()
    );
    assert_eq!(
        cgroup.oom_kills(),
        0,
        "the daemon hit the cgroup's OOM killer"
    );
    assert!(rss_kib(pid).is_some(), "the daemon is alive");

    for (i, want) in read_crcs.iter().enumerate() {
        let (_, got) = results
            .iter()
            .find(|(n, _)| *n == format!("in/r{i}"))
            .unwrap();
        assert_eq!(*got, (*want, mib * MIB), "reader of in/r{i}");
    }
    for i in 0..2 {
        let name = format!("out/w{i}");
        let (_, want) = results.iter().find(|(n, _)| *n == name).unwrap();
        let got = bucket.get(&name).expect("written file in the bucket");
        assert_eq!((crc32c::crc32c(&got), got.len()), *want, "{name}");
    }
    for i in 0..1000u64 {
        let mut g = Gen::new(1000 + i);
        let mut want = vec![0u8; 1000 + i as usize];
        g.fill(&mut want);
        assert!(
            bucket.get(&format!("small/s{i}")).as_deref() == Some(&want[..]),
            "small/s{i}"
        );
    }
    // The edited file: its old bytes (written in 1 MiB steps from seed 300) with the patch in
    // the middle, once the background upload of the edit landed.
    let mut want = Vec::with_capacity(edit_mib * MIB);
    let mut g = Gen::new(300);
    let mut buf = vec![0u8; MIB];
    for _ in 0..edit_mib {
        g.fill(&mut buf);
        want.extend_from_slice(&buf);
    }
    assert_eq!(crc32c::crc32c(&want), edit_crc_before);
    let at = edit_mib * MIB / 2;
    want[at..at + MIB].copy_from_slice(&patch);
    let deadline = Instant::now() + Duration::from_secs(120);
    while bucket.get("in/e0").as_deref() != Some(&want[..]) {
        assert!(Instant::now() < deadline, "the edit of in/e0 did not land");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(m);
}
