//! Micro-benchmarks of the filesystem's hot paths on `MemStore` (no network, no FUSE): name
//! lookups answered from the inode table, listing a 10,000-entry directory the way the kernel
//! reads it (4 KiB readdir buffers), the listing merged with local-only files, and
//! `Filesystem::write` into a staging file or a streaming upload.
//!
//! `cargo bench -p gcsfs --bench fs_ops` runs them; `cargo bench -p gcsfs --bench fs_ops -- --quick`
//! for a short run. The end-to-end comparison with gcsfuse and rclone lives in `benches/compare`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gcsfs::fs::{Filesystem, FsConfig, InodeNo, ManualClock};
use gcsfs::store::mem::MemStore;
use gcsfs::store::{ObjectKey, ObjectStore, Preconditions, WriteAttrs, WriteSource};
use tokio::runtime::Runtime;

/// The process the tests act as: root, the mount's default owner.
const ME: gcsfs::fs::Caller = gcsfs::fs::Caller { uid: 0, gid: 0 };

/// Entries in the big directory.
const DIR_ENTRIES: usize = 10_000;
/// Local-only (created, not yet uploaded) files merged into the listing.
const LOCAL_FILES: usize = 100;
/// Bytes the kernel's readdir buffer holds (one page).
const KERNEL_READDIR_BUF: usize = 4096;

struct Fixture {
    fs: Arc<Filesystem>,
    dir: InodeNo,
    _tmp: tempfile::TempDir,
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn name(i: usize) -> String {
    format!("file-{i:05}.txt")
}

/// A filesystem over a bucket with `dir/` holding [`DIR_ENTRIES`] small objects.
async fn fixture(streaming_writes: bool) -> Fixture {
    fixture_ttl(streaming_writes, FsConfig::default().negative_ttl).await
}

/// With `negative_ttl` zero, a directory is never listed from the inode table: every readdir
/// merges a store listing.
async fn fixture_ttl(streaming_writes: bool, negative_ttl: Duration) -> Fixture {
    let store = Arc::new(MemStore::new());
    for i in 0..DIR_ENTRIES {
        let key = ObjectKey::new(format!("dir/{}", name(i))).unwrap();
        store
            .write(
                &key,
                WriteSource::Bytes(Bytes::from_static(b"x")),
                Preconditions::NONE,
                &WriteAttrs::default(),
            )
            .await
            .unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = FsConfig {
        temp_dir: tmp.path().to_path_buf(),
        streaming_writes,
        negative_ttl,
        ..Default::default()
    };
    // A clock that never moves: cached entries stay valid for the whole run.
    let fs = Arc::new(Filesystem::new(
        store,
        config,
        Arc::new(ManualClock::default()),
    ));
    let dir = fs.lookup(InodeNo::ROOT, "dir").await.unwrap().attr.ino;
    Fixture { fs, dir, _tmp: tmp }
}

/// Lists `dir` as the kernel does: each readdir call fills one 4 KiB buffer (a `fuse_dirent` is
/// 24 bytes + the name, padded to 8) and the next call starts after the last entry taken.
/// Returns the number of entries.
async fn list_like_kernel(fs: &Filesystem, dir: InodeNo) -> usize {
    let fh = fs.opendir(dir).unwrap();
    let mut offset = 0;
    let mut count = 0;
    loop {
        let entries = fs.readdir(fh, offset).await.unwrap();
        if entries.is_empty() {
            break;
        }
        let mut used = 0;
        for e in &entries {
            let size = (24 + e.name.len()).div_ceil(8) * 8;
            if used + size > KERNEL_READDIR_BUF {
                break;
            }
            used += size;
            offset = e.offset;
            count += 1;
        }
    }
    fs.releasedir(fh).unwrap();
    count
}

fn bench_lookup(c: &mut Criterion) {
    let rt = runtime();
    let f = rt.block_on(fixture(true));
    // One listing caches every name of the directory.
    assert_eq!(rt.block_on(list_like_kernel(&f.fs, f.dir)), DIR_ENTRIES + 2);
    let mut group = c.benchmark_group("lookup");
    let mut i = 0;
    group.bench_function("cached_name_in_10k_dir", |b| {
        b.to_async(&rt).iter(|| {
            i = (i + 7919) % DIR_ENTRIES;
            let n = name(i);
            let (fs, dir) = (f.fs.clone(), f.dir);
            async move { black_box(fs.lookup(dir, &n).await.unwrap()) }
        })
    });
    group.bench_function("getattr_cached", |b| {
        let ino = rt.block_on(f.fs.lookup(f.dir, &name(42))).unwrap().attr.ino;
        b.to_async(&rt).iter(|| {
            let fs = f.fs.clone();
            async move { black_box(fs.getattr(ino).await.unwrap()) }
        })
    });
    group.finish();
}

fn bench_readdir(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("readdir_10k");
    group.throughput(Throughput::Elements(DIR_ENTRIES as u64));
    group.sample_size(20);

    // Listing merges: each iteration lists the store again.
    let f = rt.block_on(fixture_ttl(true, Duration::ZERO));
    group.bench_function("kernel_4k_buffers", |b| {
        b.to_async(&rt).iter(|| {
            let (fs, dir) = (f.fs.clone(), f.dir);
            async move { assert_eq!(list_like_kernel(&fs, dir).await, DIR_ENTRIES + 2) }
        })
    });

    // Within the negative TTL of a full listing, from the inode table (no store listing).
    let t = rt.block_on(fixture(true));
    rt.block_on(list_like_kernel(&t.fs, t.dir));
    group.bench_function("from_inode_table", |b| {
        b.to_async(&rt).iter(|| {
            let (fs, dir) = (t.fs.clone(), t.dir);
            async move { assert_eq!(list_like_kernel(&fs, dir).await, DIR_ENTRIES + 2) }
        })
    });

    // The same listing merged with files created in the directory and not yet uploaded.
    let g = rt.block_on(fixture_ttl(true, Duration::ZERO));
    let _open: Vec<_> = rt.block_on(async {
        let mut open = Vec::new();
        for i in 0..LOCAL_FILES {
            let name = format!("new-{i:03}");
            open.push(
                g.fs.create(g.dir, &name, 0o644, libc::O_WRONLY, ME)
                    .await
                    .unwrap(),
            );
        }
        open
    });
    group.bench_function("kernel_4k_buffers_with_100_local_files", |b| {
        b.to_async(&rt).iter(|| {
            let (fs, dir) = (g.fs.clone(), g.dir);
            async move {
                assert_eq!(
                    list_like_kernel(&fs, dir).await,
                    DIR_ENTRIES + LOCAL_FILES + 2
                )
            }
        })
    });
    group.finish();
}

fn bench_write(c: &mut Criterion) {
    const FILE_SIZE: usize = 16 << 20;
    let rt = runtime();
    let mut group = c.benchmark_group("write_16MiB");
    group.throughput(Throughput::Bytes(FILE_SIZE as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    for (mode, streaming) in [("staged", false), ("streaming", true)] {
        let f = rt.block_on(fixture(streaming));
        for chunk in [4usize << 10, 1 << 20] {
            let label = format!("{mode}/{}KiB_chunks", chunk >> 10);
            let data = vec![0xa5u8; chunk];
            let mut n = 0u64;
            group.bench_function(label, |b| {
                // Only the writes are timed; create before and flush + release after are not.
                b.to_async(&rt).iter_custom(|iters| {
                    let (fs, dir, data) = (f.fs.clone(), f.dir, data.clone());
                    n += 1;
                    let round = n;
                    async move {
                        let mut total = Duration::ZERO;
                        for it in 0..iters {
                            let name = format!("w-{round}-{it}");
                            let (entry, open) = fs
                                .create(dir, &name, 0o644, libc::O_WRONLY, ME)
                                .await
                                .unwrap();
                            let start = Instant::now();
                            let mut offset = 0;
                            while offset < FILE_SIZE {
                                let wrote = fs.write(open.fh, offset as u64, &data).await.unwrap();
                                offset += wrote as usize;
                            }
                            total += start.elapsed();
                            fs.flush(open.fh).await.unwrap();
                            fs.release(entry.attr.ino, open.fh).await.unwrap();
                            fs.unlink(dir, &name).await.unwrap();
                        }
                        total
                    }
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_lookup, bench_readdir, bench_write);
criterion_main!(benches);
