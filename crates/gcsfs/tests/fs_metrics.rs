//! The numbers behind the metrics, on `Filesystem` → `RetryStore` → `FaultStore` → `MemStore`:
//! every upload of file data is counted once, whatever made it (a close with `--write-back
//! sync`, a background upload, `fsync`, a streamed new file, the drain); failed uploads are
//! counted as such; the retry layer's retries are counted by call; the dirty-file figures
//! follow the files with unsaved changes.

use std::sync::Arc;
use std::time::Duration;

use gcsfs::fs::{Caller, DirtySummary, Filesystem, FsConfig, InodeNo, ManualClock, WriteBack};
use gcsfs::store::mem::MemStore;
use gcsfs::store::{Fault, FaultStore, ObjectKey, Op, RetryConfig, RetryStats, RetryStore};
use tokio::time::Instant;

const ME: Caller = Caller { uid: 0, gid: 0 };

struct Rig {
    mem: Arc<MemStore>,
    faults: Arc<FaultStore>,
    retries: Arc<RetryStats>,
    fs: Arc<Filesystem>,
    _tmp: tempfile::TempDir,
}

/// A filesystem writing back as `write_back` says (shared, so that async uploads run).
fn rig(write_back: WriteBack) -> Rig {
    let mem = Arc::new(MemStore::new());
    let faults = Arc::new(FaultStore::new(mem.clone()));
    let retry = RetryConfig {
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        ..RetryConfig::default()
    };
    let store = RetryStore::new(faults.clone(), retry);
    let retries = store.stats();
    let tmp = tempfile::tempdir().unwrap();
    let fs = Filesystem::shared(
        Arc::new(store),
        FsConfig {
            temp_dir: tmp.path().into(),
            write_back,
            max_dirty_age: Duration::ZERO,
            ..Default::default()
        },
        Arc::new(ManualClock::default()),
    );
    Rig {
        mem,
        faults,
        retries,
        fs,
        _tmp: tmp,
    }
}

fn in_bucket(mem: &MemStore, key: &str) -> Option<Vec<u8>> {
    mem.get(&ObjectKey::new(key).unwrap())
        .map(|(_, data)| data.to_vec())
}

/// (completed, failed, in flight)
fn uploads(fs: &Filesystem) -> (u64, u64, u64) {
    let s = fs.stats();
    (
        s.uploads_completed(),
        s.uploads_failed(),
        s.uploads_in_flight(),
    )
}

/// Creates `name` with `data`; returns its inode and open handle.
async fn create(fs: &Filesystem, name: &str, data: &[u8]) -> (InodeNo, u64) {
    let (e, o) = fs
        .create(InodeNo::ROOT, name, 0o644, libc::O_WRONLY, ME)
        .await
        .unwrap();
    fs.write(o.fh, 0, data).await.unwrap();
    (e.attr.ino, o.fh)
}

/// Creates `name` with `data` and closes it (flush + release).
async fn write_file(fs: &Filesystem, name: &str, data: &[u8]) -> InodeNo {
    let (ino, fh) = create(fs, name, data).await;
    fs.flush(fh).await.unwrap();
    fs.release(ino, fh).await.unwrap();
    ino
}

#[tokio::test]
async fn sync_closes_count_one_upload_per_file_and_a_read_only_close_none() {
    let r = rig(WriteBack::Sync);
    assert_eq!(uploads(&r.fs), (0, 0, 0));
    for i in 0..3 {
        write_file(&r.fs, &format!("f{i}"), b"data").await;
    }
    assert_eq!(in_bucket(&r.mem, "f2").unwrap(), b"data");
    assert_eq!(uploads(&r.fs), (3, 0, 0));
    // A close that changed nothing uploads nothing.
    let ino = r.fs.lookup(InodeNo::ROOT, "f0").await.unwrap().attr.ino;
    let o = r.fs.open(ino, libc::O_RDONLY).await.unwrap();
    r.fs.flush(o.fh).await.unwrap();
    r.fs.release(ino, o.fh).await.unwrap();
    // fsync uploads once, the close after it nothing more.
    let (ino, fh) = create(&r.fs, "synced", b"x").await;
    r.fs.fsync(fh).await.unwrap();
    r.fs.flush(fh).await.unwrap();
    r.fs.release(ino, fh).await.unwrap();
    assert_eq!(uploads(&r.fs), (4, 0, 0));
}

#[tokio::test]
async fn async_background_uploads_are_counted() {
    let r = rig(WriteBack::Async);
    for i in 0..5 {
        write_file(&r.fs, &format!("f{i}"), b"data").await;
    }
    assert!(r.fs.wait_for_uploads(Duration::from_secs(30)).await);
    assert_eq!(in_bucket(&r.mem, "f4").unwrap(), b"data");
    assert_eq!(uploads(&r.fs), (5, 0, 0));
    assert_eq!(r.fs.uploads_queued(), 0);
    assert_eq!(r.fs.dirty_summary(), DirtySummary::default());
}

#[tokio::test]
async fn a_streamed_new_file_is_one_upload() {
    let r = rig(WriteBack::Sync);
    let chunk = vec![7u8; 1 << 20];
    let (e, o) =
        r.fs.create(InodeNo::ROOT, "big", 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap();
    for i in 0..6u64 {
        r.fs.write(o.fh, i << 20, &chunk).await.unwrap();
    }
    // Past 4 MiB the file is streamed: its upload is in flight while it is written.
    assert_eq!(uploads(&r.fs), (0, 0, 1));
    r.fs.flush(o.fh).await.unwrap();
    r.fs.release(e.attr.ino, o.fh).await.unwrap();
    assert_eq!(in_bucket(&r.mem, "big").unwrap().len(), 6 << 20);
    assert_eq!(uploads(&r.fs), (1, 0, 0));
}

#[tokio::test]
async fn the_drain_counts_its_uploads() {
    let r = rig(WriteBack::Sync);
    let (_a, _) = create(&r.fs, "a", b"aaaa").await;
    let (_b, _) = create(&r.fs, "b", b"bb").await;
    let summary = r.fs.dirty_summary();
    assert_eq!((summary.files, summary.bytes), (2, 6));
    assert_eq!(uploads(&r.fs), (0, 0, 0));
    let failures = r.fs.drain(Instant::now() + Duration::from_secs(30)).await;
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(uploads(&r.fs), (2, 0, 0));
    assert_eq!(r.fs.dirty_summary(), DirtySummary::default());
}

#[tokio::test]
async fn failed_uploads_and_retries_are_counted() {
    let r = rig(WriteBack::Sync);
    // Two 503s, then the upload goes through: two retries of `write`, one upload.
    r.faults.push_n(Op::Write, Fault::Status(503), 2);
    write_file(&r.fs, "retried", b"data").await;
    assert_eq!(r.retries.retries(Op::Write), 2);
    assert_eq!(r.retries.retries(Op::Stat), 0);
    assert_eq!(uploads(&r.fs), (1, 0, 0));

    // A 403 is not retried: the close fails, counted as a failed upload; the file stays dirty.
    r.faults.push(Op::Write, Fault::Status(403));
    let (ino, fh) = create(&r.fs, "denied", b"kept").await;
    assert!(r.fs.flush(fh).await.is_err());
    assert_eq!(r.retries.retries(Op::Write), 2);
    assert_eq!(uploads(&r.fs), (1, 1, 0));
    let summary = r.fs.dirty_summary();
    assert_eq!((summary.files, summary.bytes), (1, 4));
    // The next close uploads it.
    r.fs.release(ino, fh).await.unwrap();
    assert_eq!(in_bucket(&r.mem, "denied").unwrap(), b"kept");
    assert_eq!(uploads(&r.fs), (2, 1, 0));
}

#[tokio::test]
async fn a_failed_background_upload_is_counted() {
    let r = rig(WriteBack::Async);
    r.faults.push(Op::Write, Fault::Status(403));
    write_file(&r.fs, "denied", b"kept").await;
    assert!(r.fs.wait_for_uploads(Duration::from_secs(30)).await);
    assert_eq!(uploads(&r.fs), (0, 1, 0));
    assert_eq!(r.fs.dirty_summary().files, 1);
}
