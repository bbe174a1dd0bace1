//! The read path on `MemStore`, without FUSE: sequential streams of block-sized GETs (also when
//! the kernel's reads come in any order), random reads fetching an aligned block that goes to the
//! kernel's page cache (a block that shrinks while reads never come back to earlier blocks and
//! grows back when they do), and the page gate that keeps other generations and local changes
//! out of that cache.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gcsfs::fs::{Filesystem, FsConfig, InodeNo, KernelCache, ManualClock, ReadConfig};
use gcsfs::store::mem::MemStore;
use gcsfs::store::{ObjectKey, ObjectStore, Op, Preconditions, WriteAttrs, WriteSource};

const MIB: u64 = 1 << 20;

/// Records what would have gone into the kernel's page cache.
#[derive(Debug, Default)]
struct PageCache(Mutex<Vec<(InodeNo, u64, Vec<u8>)>>);

impl KernelCache for PageCache {
    fn store(&self, ino: InodeNo, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.lock().unwrap().push((ino, offset, data.to_vec()));
        Ok(())
    }
}

impl PageCache {
    fn stored(&self) -> Vec<(InodeNo, u64, Vec<u8>)> {
        self.0.lock().unwrap().clone()
    }

    /// Waits (bounded) until `n` stores were made: the page-cache thread runs on its own.
    async fn wait_for(&self, n: usize) -> Vec<(InodeNo, u64, Vec<u8>)> {
        for _ in 0..2000 {
            let got = self.stored();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.stored()
    }
}

struct Fixture {
    store: Arc<MemStore>,
    fs: Arc<Filesystem>,
    cache: Arc<PageCache>,
    clock: Arc<ManualClock>,
    _tmp: tempfile::TempDir,
}

/// A filesystem with small blocks: stream parts of 1 MiB, random blocks of 64 KiB (so they do
/// not adapt).
fn fixture(kernel_readahead: u64) -> Fixture {
    fixture_budget(kernel_readahead, 64 * MIB)
}

/// As [`fixture`], with `prefetch_memory` bytes of read-ahead budget.
fn fixture_budget(kernel_readahead: u64, prefetch_memory: u64) -> Fixture {
    fixture_blocks(kernel_readahead, prefetch_memory, MIB)
}

/// As [`fixture_budget`], with stream parts of `block_size`.
fn fixture_blocks(kernel_readahead: u64, prefetch_memory: u64, block_size: u64) -> Fixture {
    fixture_read(kernel_readahead, prefetch_memory, block_size, 64 << 10)
}

/// As [`fixture_blocks`], with random blocks of up to `random_block` (at least 64 KiB).
fn fixture_read(
    kernel_readahead: u64,
    prefetch_memory: u64,
    block_size: u64,
    random_block: u64,
) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(MemStore::new());
    let config = FsConfig {
        temp_dir: tmp.path().to_path_buf(),
        metadata_ttl: Duration::from_secs(60),
        negative_ttl: Duration::from_secs(5),
        read: ReadConfig {
            block_size,
            initial_window: 256 << 10,
            max_window: 4 * MIB,
            random_block,
            random_block_min: 64 << 10,
            prefetch_memory,
        },
        ..Default::default()
    };
    let clock = Arc::new(ManualClock::default());
    let fs = Arc::new(Filesystem::new(store.clone(), config, clock.clone()));
    let cache = Arc::new(PageCache::default());
    fs.attach_kernel_cache(cache.clone()).unwrap();
    fs.set_kernel_readahead(kernel_readahead);
    Fixture {
        store,
        fs,
        cache,
        clock,
        _tmp: tmp,
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1] ^ seed)
        .collect()
}

async fn put(store: &MemStore, key: &str, data: &[u8]) {
    store
        .write(
            &ObjectKey::new(key).unwrap(),
            WriteSource::Bytes(Bytes::copy_from_slice(data)),
            Preconditions::NONE,
            &WriteAttrs::default(),
        )
        .await
        .unwrap();
}

async fn open(fs: &Filesystem, name: &str, flags: i32) -> (InodeNo, u64) {
    let ino = fs.lookup(InodeNo::ROOT, name).await.unwrap().attr.ino;
    (ino, fs.open(ino, flags).await.unwrap().fh)
}

/// Reads `[offset, offset+len)` through `fh`, failing the test instead of hanging.
async fn read(fs: &Arc<Filesystem>, fh: u64, offset: u64, len: u32) -> Vec<u8> {
    tokio::time::timeout(Duration::from_secs(30), fs.read(fh, offset, len))
        .await
        .expect("a read never finished")
        .unwrap()
        .into_bytes()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_reads_in_any_order_are_served_by_few_block_sized_gets() {
    let f = fixture(8 * MIB);
    let data = pattern(6 * MIB as usize + 12345, 1);
    put(&f.store, "big", &data).await;
    let (_, fh) = open(&f.fs, "big", libc::O_RDONLY).await;
    let reads_before = f.store.calls(Op::Read);
    // The kernel's read-ahead sends many 256 KiB reads at once; they are planned about in
    // order (here: every pair swapped).
    let chunk = 256 << 10;
    let mut offsets: Vec<u64> = (0..data.len() as u64).step_by(chunk).collect();
    for pair in offsets.chunks_mut(2) {
        pair.reverse();
    }
    let tasks: Vec<_> = offsets
        .iter()
        .map(|&off| {
            let fs = f.fs.clone();
            tokio::spawn(async move { (off, read(&fs, fh, off, chunk as u32).await) })
        })
        .collect();
    for t in tasks {
        let (off, got) = t.await.unwrap();
        let end = (off as usize + chunk).min(data.len());
        assert_eq!(got, &data[off as usize..end], "bytes at {off}");
    }
    let gets = f.store.calls(Op::Read) - reads_before;
    // Seven 1 MiB blocks; a read planned before the one in front of it splits a block.
    assert!(gets <= 14, "{gets} GETs for 7 blocks");
    // A sequential stream is not cached by gcsfs in the kernel (the kernel does it itself).
    assert!(f.cache.stored().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_prefetch_budget_a_read_fetches_only_its_own_blocks() {
    // With no budget left, a stream part started for a read ends at the random block after it:
    // nothing is fetched ahead (random reads that look sequential once piled up paused
    // 2 MiB parts, outside the budget).
    let f = fixture_budget(0, 0);
    let data = pattern(4 * MIB as usize, 3);
    put(&f.store, "big", &data).await;
    let (_, fh) = open(&f.fs, "big", libc::O_RDONLY).await;
    let before = f.store.calls(Op::Read);
    let chunk = 256 << 10;
    for off in (0..4 * MIB).step_by(chunk) {
        let got = read(&f.fs, fh, off, chunk as u32).await;
        assert_eq!(
            got,
            &data[off as usize..off as usize + chunk],
            "bytes at {off}"
        );
    }
    // One GET per read: each ends where the read does (a multiple of the 64 KiB random
    // block). Within a budget, the four 1 MiB blocks take 4 GETs.
    assert_eq!(f.store.calls(Op::Read) - before, 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_far_into_a_stream_part_does_not_make_it_hold_what_lies_before() {
    // Stream parts of 8 MiB. A read at 6 MiB waits on the part started at 0; the part lets go
    // of what no waiting read needs once it holds 2 MiB, so a later read of 1 MiB fetches it
    // again instead of finding 6 MiB kept for it.
    let f = fixture_blocks(0, 64 * MIB, 8 * MIB);
    let data = pattern(8 * MIB as usize, 4);
    put(&f.store, "big", &data).await;
    let (_, fh) = open(&f.fs, "big", libc::O_RDONLY).await;
    let chunk = 256 << 10;
    assert_eq!(read(&f.fs, fh, 0, chunk).await, &data[..chunk as usize]);
    let at = 6 * MIB as usize;
    assert_eq!(
        read(&f.fs, fh, at as u64, chunk).await,
        &data[at..at + chunk as usize]
    );
    let before = f.store.calls(Op::Read);
    let at = MIB as usize;
    assert_eq!(
        read(&f.fs, fh, at as u64, chunk).await,
        &data[at..at + chunk as usize]
    );
    assert_eq!(
        f.store.calls(Op::Read) - before,
        1,
        "1 MiB was let go and fetched again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_behind_the_stream_leaves_the_stream_in_place() {
    // The kernel drops read-ahead past its congestion threshold and later asks again for the
    // pages it never fetched, far behind where the reader is. That read must not end the
    // stream: the reads after it would each fetch a random block instead.
    let f = fixture(0);
    let data = pattern(8 * MIB as usize, 2);
    put(&f.store, "big", &data).await;
    let (_, fh) = open(&f.fs, "big", libc::O_RDONLY).await;
    let chunk = 256 << 10;
    for off in (0..4 * MIB).step_by(chunk) {
        let got = read(&f.fs, fh, off, chunk as u32).await;
        assert_eq!(got, &data[off as usize..off as usize + chunk]);
    }
    let got = read(&f.fs, fh, 0, chunk as u32).await;
    assert_eq!(got, &data[..chunk], "the read behind the stream");
    for off in (4 * MIB..8 * MIB).step_by(chunk) {
        let got = read(&f.fs, fh, off, chunk as u32).await;
        assert_eq!(
            got,
            &data[off as usize..off as usize + chunk],
            "bytes at {off}"
        );
    }
    // The stream keeps going: no byte from 4 MiB on is fetched twice. (Ending the stream
    // would start a new one there, over the parts the old one had started already, with a
    // window of 4 MiB. Counted by range, not by GETs since some instant: when the old parts
    // start depends on scheduling.)
    let mut fetched = vec![0u8; 8 * MIB as usize];
    for (_, range) in f.store.reads() {
        let end = range.end.unwrap_or(8 * MIB).min(8 * MIB);
        for b in &mut fetched[range.start as usize..end as usize] {
            *b += 1;
        }
    }
    let twice = fetched[4 * MIB as usize..]
        .iter()
        .filter(|&&n| n > 1)
        .count();
    assert_eq!(twice, 0, "{twice} bytes past 4 MiB fetched more than once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequential_reader_far_ahead_of_what_it_took_is_never_stuck() {
    // Small kernel read-ahead: gcsfs reads ahead itself, and a part holding 2 MiB nobody took
    // pauses its download. A read that needs bytes beyond must still be answered.
    let f = fixture(128 << 10);
    let f = Fixture {
        fs: {
            let tmp = f._tmp.path().to_path_buf();
            let config = FsConfig {
                temp_dir: tmp,
                read: ReadConfig {
                    block_size: 8 * MIB,
                    ..ReadConfig::default()
                },
                ..Default::default()
            };
            Arc::new(Filesystem::new(
                f.store.clone(),
                config,
                Arc::new(ManualClock::default()),
            ))
        },
        ..f
    };
    let data = pattern(8 * MIB as usize, 2);
    put(&f.store, "big", &data).await;
    let (_, fh) = open(&f.fs, "big", libc::O_RDONLY).await;
    assert_eq!(read(&f.fs, fh, 0, 4096).await, &data[..4096]);
    // Sequential by position (inside the part), but 6 MiB ahead of what was taken.
    let at = 6 * MIB;
    assert_eq!(
        read(&f.fs, fh, at, 1 << 20).await,
        &data[at as usize..(at + MIB) as usize]
    );
    // Bytes skipped over are still there; bytes taken and freed are fetched again.
    assert_eq!(
        read(&f.fs, fh, 4096, 4096).await,
        &data[4096..8192],
        "skipped bytes"
    );
    assert_eq!(read(&f.fs, fh, 0, 4096).await, &data[..4096], "freed bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_read_fetches_its_aligned_block_and_hands_it_to_the_page_cache() {
    let f = fixture(128 << 10);
    let data = pattern(4 * MIB as usize, 3);
    put(&f.store, "big", &data).await;
    let (ino, fh) = open(&f.fs, "big", libc::O_RDONLY).await;
    let reads_before = f.store.calls(Op::Read);
    let at = 3 * MIB + 70_000;
    assert_eq!(
        read(&f.fs, fh, at, 4096).await,
        &data[at as usize..at as usize + 4096]
    );
    // One GET of the 64 KiB block around it, stored whole at its aligned offset.
    assert_eq!(f.store.calls(Op::Read) - reads_before, 1);
    let block = at / (64 << 10) * (64 << 10);
    let stored = f.cache.wait_for(1).await;
    assert_eq!(stored.len(), 1);
    assert_eq!((stored[0].0, stored[0].1), (ino, block));
    assert_eq!(
        stored[0].2,
        &data[block as usize..(block + (64 << 10)) as usize]
    );
    // Another read in that block is served from it, with no request.
    assert_eq!(
        read(&f.fs, fh, block + 100, 10).await,
        &data[block as usize + 100..block as usize + 110]
    );
    assert_eq!(f.store.calls(Op::Read) - reads_before, 1);
}

/// A random read's block is held from the prefetch budget: with no room, the read fetches only
/// the pages it asked for, keeps nothing for the page cache, and still answers right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_prefetch_budget_a_random_read_fetches_only_its_pages() {
    let f = fixture_budget(128 << 10, 0);
    let data = pattern(4 * MIB as usize, 3);
    put(&f.store, "big", &data).await;
    let (_, fh) = open(&f.fs, "big", libc::O_RDONLY).await;
    let before = f.store.reads().len();
    let at = 3 * MIB + 70_000;
    assert_eq!(
        read(&f.fs, fh, at, 4096).await,
        &data[at as usize..at as usize + 4096]
    );
    let reads = f.store.reads();
    let got: Vec<_> = reads[before..]
        .iter()
        .map(|(_, r)| (r.start, r.end))
        .collect();
    // 3 MiB + 70,000 .. + 4096 straddles a page boundary: two pages, not a 64 KiB block.
    let first_page = at / 4096 * 4096;
    assert_eq!(got, [(first_page, Some(first_page + 8192))]);
    // Settle, then check nothing was offered to the page cache.
    put(&f.store, "other", &pattern(MIB as usize, 5)).await;
    assert!(f.cache.stored().is_empty(), "no block offered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_cache_is_fed_only_while_nobody_writes_and_only_the_open_generation() {
    let f = fixture(128 << 10);
    let v1 = pattern(4 * MIB as usize, 4);
    put(&f.store, "f", &v1).await;
    let (ino, reader) = open(&f.fs, "f", libc::O_RDONLY).await;
    // A writer opens the same file: nothing read from now on goes to the page cache.
    let writer = f.fs.open(ino, libc::O_RDWR).await.unwrap().fh;
    read(&f.fs, reader, 2 * MIB + 300_000, 100).await;
    // Settle: a later store for another file proves the earlier offer was decided.
    put(&f.store, "other", &pattern(4 * MIB as usize, 5)).await;
    let (other_ino, other) = open(&f.fs, "other", libc::O_RDONLY).await;
    read(&f.fs, other, 3 * MIB, 100).await;
    let stored = f.cache.wait_for(1).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].0, other_ino,
        "a file open for writing fed the page cache"
    );
    f.fs.release(ino, writer).await.unwrap();
    f.fs.release(ino, reader).await.unwrap();
    // Another client replaces the object: the next open (after the TTL) pins the new
    // generation, and what it reads is what goes to the page cache.
    let v2 = pattern(4 * MIB as usize, 6);
    put(&f.store, "f", &v2).await;
    f.clock.advance(Duration::from_secs(61));
    let (_, fresh) = open(&f.fs, "f", libc::O_RDONLY).await;
    let at = 2 * MIB + 200_000;
    assert_eq!(
        read(&f.fs, fresh, at, 10).await,
        &v2[at as usize..at as usize + 10]
    );
    let stored = f.cache.wait_for(2).await;
    let block = at / 65536 * 65536;
    assert_eq!((stored[1].0, stored[1].1), (ino, block));
    assert_eq!(stored[1].2, &v2[block as usize..block as usize + 65536]);
}

/// The GETs (start, end) made since `before` reads were recorded.
fn gets_since(store: &MemStore, before: usize) -> Vec<(u64, u64)> {
    store.reads()[before..]
        .iter()
        .map(|(_, r)| (r.start, r.end.expect("ranged")))
        .collect()
}

/// `n` distinct 1 MiB regions of `1..regions`, in a scrambled order (region 0 is left out:
/// the first reads of a handle near the start count as sequential).
fn scrambled_regions(regions: u64, n: usize) -> Vec<u64> {
    let mut all: Vec<u64> = (1..regions).collect();
    let mut x = 0x9e37_79b9_u64;
    for i in (1..all.len()).rev() {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        all.swap(i, (x >> 33) as usize % (i + 1));
    }
    all.truncate(n);
    all
}

/// A file read at random where each read lands in a 1 MiB region no read touched before (a
/// 100 GiB file read at random): the random block shrinks, so far fewer bytes are fetched
/// than a whole block per read, and the page cache still gets whole blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_that_never_come_back_shrink_the_random_block() {
    let f = fixture_read(128 << 10, 64 * MIB, MIB, MIB);
    let data = pattern(64 * MIB as usize, 7);
    put(&f.store, "big", &data).await;
    let (_, fh) = open(&f.fs, "big", libc::O_RDONLY).await;
    let before = f.store.reads().len();
    let regions = scrambled_regions(64, 63);
    for (i, &r) in regions.iter().enumerate() {
        let at = r * MIB + (i as u64 * 37 % 250) * 4096;
        assert_eq!(
            read(&f.fs, fh, at, 4096).await,
            &data[at as usize..at as usize + 4096],
            "bytes at {at}"
        );
    }
    let gets = gets_since(&f.store, before);
    // One GET per read (each awaited before the next), each an aligned block holding it.
    assert_eq!(gets.len(), regions.len());
    let fetched: u64 = gets.iter().map(|(a, b)| b - a).sum();
    let read = 4096 * regions.len() as u64;
    eprintln!("fetched {fetched} bytes for {read} read");
    // A whole 1 MiB block per read would be 63 MiB (256 bytes per byte read). The block
    // halves after 8 fresh reads at each size: 8 × (1 MiB + 512 + 256 + 128 KiB) + 31 × 64 KiB
    // = 16.9 MiB, 68 bytes per byte read, and 16 per byte read from then on.
    assert!(
        fetched <= 17 * MIB,
        "{fetched} bytes fetched for {read} read"
    );
    for &(a, b) in &gets[gets.len() - 16..] {
        assert_eq!(
            (b - a, a % (64 << 10)),
            (64 << 10, 0),
            "a late GET {a}..{b}"
        );
    }
}

/// Random reads that stay near each other (a database's hot pages, a zip's directory and its
/// entries): each block's bytes are used, so every GET stays a whole 1 MiB block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_that_come_back_keep_whole_random_blocks() {
    let f = fixture_read(128 << 10, 64 * MIB, MIB, MIB);
    let data = pattern(64 * MIB as usize, 8);
    put(&f.store, "big", &data).await;
    let (_, fh) = open(&f.fs, "big", libc::O_RDONLY).await;
    let before = f.store.reads().len();
    // 200 reads of 4 KiB at scrambled pages of the 4 MiB from 32 MiB (never the page right
    // after the previous read: that would be sequential).
    let mut pages = scrambled_regions(1024, 200);
    pages.dedup_by(|p, prev| *p == *prev + 1);
    for p in pages {
        let at = 32 * MIB + p * 4096;
        assert_eq!(
            read(&f.fs, fh, at, 4096).await,
            &data[at as usize..at as usize + 4096],
            "bytes at {at}"
        );
    }
    let gets = gets_since(&f.store, before);
    assert!(!gets.is_empty());
    for (a, b) in gets {
        assert_eq!(
            (b - a, a % MIB),
            (MIB, 0),
            "GET {a}..{b} is not a whole block"
        );
    }
}

/// After the block shrank, a read that comes back to a region fetched before gets the whole
/// 1 MiB block again; and however small the block, a read gets at least its own pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shrunk_random_block_grows_back_and_still_holds_the_whole_read() {
    let f = fixture_read(128 << 10, 64 * MIB, MIB, MIB);
    let data = pattern(64 * MIB as usize, 9);
    put(&f.store, "big", &data).await;
    let (_, fh) = open(&f.fs, "big", libc::O_RDONLY).await;
    let regions = scrambled_regions(64, 50);
    for &r in &regions[..40] {
        read(&f.fs, fh, r * MIB + 8192, 4096).await;
    }
    // Shrunk to 64 KiB: a read of 200 KiB across a 64 KiB boundary gets every page it asked
    // for, from one GET of the 64 KiB blocks around it.
    let before = f.store.reads().len();
    let at = regions[40] * MIB + 100_000;
    let len = 200 << 10;
    assert_eq!(
        read(&f.fs, fh, at, len).await,
        &data[at as usize..(at + len as u64) as usize]
    );
    let block = 64 << 10;
    let want = (
        at / block * block,
        (at + len as u64).div_ceil(block) * block,
    );
    assert_eq!(gets_since(&f.store, before), [want]);
    // Back in a region read before (its page away from what was fetched there): the whole
    // 1 MiB block.
    let before = f.store.reads().len();
    let at = regions[39] * MIB + 600 * 1024;
    assert_eq!(
        read(&f.fs, fh, at, 4096).await,
        &data[at as usize..at as usize + 4096]
    );
    let r = regions[39] * MIB;
    assert_eq!(gets_since(&f.store, before), [(r, r + MIB)]);
}
