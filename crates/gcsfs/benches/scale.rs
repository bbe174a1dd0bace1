//! The namespace at scale, on `MemStore`: `lookup`, `readdir` of a whole directory, and
//! `create` + `unlink` in a directory of 100,000 entries while about 200,000 inodes are cached,
//! against the same in a directory of 1,000 entries (the target: within 2×). Also prints the
//! memory one cached inode costs (RSS growth over the inodes cached).
//!
//! `cargo bench -p gcsfs --bench scale -- --quick`; `cargo test` runs each benchmark once.

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gcsfs::fs::{Filesystem, FsConfig, InodeNo, ManualClock};
use gcsfs::store::mem::MemStore;
use gcsfs::store::{ObjectKey, ObjectStore, Preconditions, WriteAttrs, WriteSource};
use tokio::runtime::Runtime;

const ME: gcsfs::fs::Caller = gcsfs::fs::Caller { uid: 0, gid: 0 };
const BIG: usize = 100_000;
const SMALL: usize = 1_000;
/// Other directories of 1,000 entries, cached too: with `big` and `small`, ~200,000 inodes.
const OTHERS: usize = 99;

struct Fixture {
    fs: Arc<Filesystem>,
    big: InodeNo,
    small: InodeNo,
    _tmp: tempfile::TempDir,
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

async fn put(store: &MemStore, key: String) {
    store
        .write(
            &ObjectKey::new(key).unwrap(),
            WriteSource::Bytes(Bytes::from_static(b"x")),
            Preconditions::NONE,
            &WriteAttrs::default(),
        )
        .await
        .unwrap();
}

/// Lists `dir` in full through readdir (caching every entry), returning the entry count.
async fn list(fs: &Filesystem, dir: InodeNo) -> usize {
    let fh = fs.opendir(dir).unwrap();
    let mut offset = 0;
    let mut count = 0;
    loop {
        let entries = fs.readdir(fh, offset).await.unwrap();
        let Some(last) = entries.last() else {
            break;
        };
        offset = last.offset;
        count += entries.len();
    }
    fs.releasedir(fh).unwrap();
    count
}

async fn fixture() -> Fixture {
    let store = Arc::new(MemStore::new());
    for i in 0..BIG {
        put(&store, format!("big/f{i:06}")).await;
    }
    for i in 0..SMALL {
        put(&store, format!("small/f{i:06}")).await;
    }
    for d in 0..OTHERS {
        for i in 0..SMALL {
            put(&store, format!("o{d:03}/f{i:06}")).await;
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let fs = Arc::new(Filesystem::new(
        store,
        FsConfig {
            temp_dir: tmp.path().to_path_buf(),
            max_cached_inodes: 1_000_000,
            ..Default::default()
        },
        // A clock that never moves: cached entries stay valid for the whole run.
        Arc::new(ManualClock::default()),
    ));
    let before = rss_bytes();
    let big = fs.lookup(InodeNo::ROOT, "big").await.unwrap().attr.ino;
    let small = fs.lookup(InodeNo::ROOT, "small").await.unwrap().attr.ino;
    let mut cached = list(&fs, big).await + list(&fs, small).await;
    for d in 0..OTHERS {
        let dir = fs.lookup(InodeNo::ROOT, &format!("o{d:03}")).await.unwrap();
        cached += list(&fs, dir.attr.ino).await;
    }
    let per_inode = rss_bytes().saturating_sub(before) / cached as u64;
    eprintln!("scale: {cached} inodes cached, about {per_inode} bytes of RSS each");
    Fixture {
        fs,
        big,
        small,
        _tmp: tmp,
    }
}

fn bench_scale(c: &mut Criterion) {
    let rt = runtime();
    let f = rt.block_on(fixture());
    for (label, dir, entries) in [("1k", f.small, SMALL), ("100k", f.big, BIG)] {
        let mut group = c.benchmark_group(format!("dir_{label}_with_200k_cached"));
        let mut i = 0usize;
        group.bench_function("lookup_cached", |b| {
            b.iter(|| {
                i = (i + 7919) % entries;
                let name = format!("f{i:06}");
                black_box(rt.block_on(f.fs.lookup(dir, &name)).unwrap());
            })
        });
        let mut n = 0u64;
        group.bench_function("create_close_unlink", |b| {
            b.iter(|| {
                n += 1;
                let name = format!("new{n}");
                rt.block_on(async {
                    let (e, o) =
                        f.fs.create(dir, &name, 0o644, libc::O_WRONLY, ME)
                            .await
                            .unwrap();
                    f.fs.flush(o.fh).await.unwrap();
                    f.fs.release(e.attr.ino, o.fh).await.unwrap();
                    f.fs.unlink(dir, &name).await.unwrap();
                })
            })
        });
        group.throughput(Throughput::Elements(entries as u64));
        group.sample_size(10);
        group.bench_function("readdir_whole_from_memory", |b| {
            b.iter(|| assert_eq!(rt.block_on(list(&f.fs, dir)), entries + 2)) // with . and ..
        });
        group.finish();
    }
}

criterion_group!(benches, bench_scale);
criterion_main!(benches);
