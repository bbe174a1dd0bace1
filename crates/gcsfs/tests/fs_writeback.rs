//! `--write-back async` on `MemStore`: close returns before the upload, fsync waits for it,
//! closes of a queued file make one upload, renames and unlinks of pending files never race an
//! upload, a failed background upload keeps the data and is reported, the age bound uploads a
//! file still open, and the drain saves what is pending.

use std::sync::Arc;
use std::time::Duration;

use gcsfs::fs::{Caller, Filesystem, FsConfig, InodeNo, ManualClock, ReadData, WriteBack};
use gcsfs::store::mem::MemStore;
use gcsfs::store::{Fault, FaultStore, ObjectKey, Op, RetryConfig, RetryStore};
use tokio::time::Instant;

const ME: Caller = Caller { uid: 0, gid: 0 };

struct Rig {
    mem: Arc<MemStore>,
    faults: Arc<FaultStore>,
    fs: Arc<Filesystem>,
    clock: Arc<ManualClock>,
    _tmp: tempfile::TempDir,
}

fn rig(concurrency: usize, max_dirty_age: Duration) -> Rig {
    rig_mode(WriteBack::Async, concurrency, max_dirty_age)
}

fn rig_mode(write_back: WriteBack, concurrency: usize, max_dirty_age: Duration) -> Rig {
    let mem = Arc::new(MemStore::new());
    let faults = Arc::new(FaultStore::new(mem.clone()));
    let store = Arc::new(RetryStore::new(faults.clone(), RetryConfig::default()));
    let tmp = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::default());
    let fs = Filesystem::shared(
        store,
        FsConfig {
            temp_dir: tmp.path().into(),
            write_back,
            upload_concurrency: concurrency,
            max_dirty_age,
            ..Default::default()
        },
        clock.clone(),
    );
    Rig {
        mem,
        faults,
        fs,
        clock,
        _tmp: tmp,
    }
}

/// The object's data in the bucket, if any.
fn get(mem: &MemStore, key: &str) -> Option<Vec<u8>> {
    mem.get(&ObjectKey::new(key).ok()?)
        .map(|(_, data)| data.to_vec())
}

/// Creates `name` with `data` and closes it (flush + release); returns its inode.
async fn write_file(fs: &Filesystem, name: &str, data: &[u8]) -> InodeNo {
    let (e, o) = fs
        .create(InodeNo::ROOT, name, 0o644, libc::O_WRONLY, ME)
        .await
        .unwrap();
    fs.write(o.fh, 0, data).await.unwrap();
    fs.flush(o.fh).await.unwrap();
    fs.release(e.attr.ino, o.fh).await.unwrap();
    e.attr.ino
}

/// Opens existing `ino` for writing, replaces its data with `data`, closes it.
async fn rewrite(fs: &Filesystem, ino: InodeNo, data: &[u8]) {
    let o = fs.open(ino, libc::O_WRONLY | libc::O_TRUNC).await.unwrap();
    fs.write(o.fh, 0, data).await.unwrap();
    fs.flush(o.fh).await.unwrap();
    fs.release(ino, o.fh).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn close_returns_before_the_upload_and_the_file_then_lands() {
    let r = rig(4, Duration::from_secs(10));
    r.faults
        .push(Op::Write, Fault::Latency(Duration::from_secs(5)));
    let started = Instant::now();
    let ino = write_file(&r.fs, "a", b"hello").await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "close waited for the upload"
    );
    assert!(get(&r.mem, "a").is_none(), "not uploaded yet");
    // The mount sees the pending file meanwhile.
    let attr = r.fs.getattr(ino).await.unwrap().attr;
    assert_eq!(attr.size, 5);
    assert!(r.fs.wait_for_uploads(Duration::from_secs(60)).await);
    assert_eq!(get(&r.mem, "a").unwrap(), b"hello");
    assert!(!r.fs.has_dirty());
}

#[tokio::test(start_paused = true)]
async fn fsync_waits_for_the_files_upload() {
    let r = rig(4, Duration::from_secs(10));
    r.faults
        .push(Op::Write, Fault::Latency(Duration::from_secs(5)));
    let (e, o) =
        r.fs.create(InodeNo::ROOT, "f", 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap();
    r.fs.write(o.fh, 0, b"synced").await.unwrap();
    r.fs.fsync(o.fh).await.unwrap();
    assert_eq!(get(&r.mem, "f").unwrap(), b"synced");
    r.fs.release(e.attr.ino, o.fh).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn closes_of_a_queued_file_make_one_upload() {
    // One upload at a time, the first one slow: the file's three closes while it waits in the
    // queue are one upload of its last contents.
    let r = rig(1, Duration::ZERO);
    r.faults
        .push(Op::Write, Fault::Latency(Duration::from_secs(3)));
    write_file(&r.fs, "slow", b"first in line").await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let ino = write_file(&r.fs, "b", b"v1").await;
    rewrite(&r.fs, ino, b"v2").await;
    rewrite(&r.fs, ino, b"v3").await;
    assert!(r.fs.wait_for_uploads(Duration::from_secs(60)).await);
    assert_eq!(get(&r.mem, "b").unwrap(), b"v3");
    assert_eq!(
        r.faults.calls(Op::Write),
        2,
        "one upload each for slow and b"
    );
}

#[tokio::test(start_paused = true)]
async fn renames_and_unlinks_of_pending_files_win_over_their_uploads() {
    let r = rig(1, Duration::ZERO);
    r.faults
        .push(Op::Write, Fault::Latency(Duration::from_secs(3)));
    write_file(&r.fs, "slow", b"occupies the only slot").await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    write_file(&r.fs, "moved", b"m").await;
    write_file(&r.fs, "removed", b"r").await;
    // Both are queued behind the slow upload.
    r.fs.rename(InodeNo::ROOT, "moved", InodeNo::ROOT, "there", 0)
        .await
        .unwrap();
    r.fs.unlink(InodeNo::ROOT, "removed").await.unwrap();
    assert!(r.fs.wait_for_uploads(Duration::from_secs(60)).await);
    assert_eq!(get(&r.mem, "there").unwrap(), b"m");
    assert!(get(&r.mem, "moved").is_none(), "nothing at the old name");
    assert!(
        get(&r.mem, "removed").is_none(),
        "an unlinked file never comes back"
    );
    assert!(!r.fs.has_dirty());
}

#[tokio::test(start_paused = true)]
async fn a_failed_background_upload_keeps_the_data_and_the_next_close_says_so() {
    let r = rig(4, Duration::ZERO);
    r.faults.push(Op::Write, Fault::Status(403));
    let ino = write_file(&r.fs, "f", b"keep me").await;
    assert!(r.fs.wait_for_uploads(Duration::from_secs(60)).await);
    assert!(get(&r.mem, "f").is_none());
    assert!(r.fs.has_dirty(), "the data is kept");
    // The next close of a change reports it (and queues the file again).
    let o =
        r.fs.open(ino, libc::O_WRONLY | libc::O_APPEND)
            .await
            .unwrap();
    r.fs.write(o.fh, 7, b"!").await.unwrap();
    let err = r.fs.flush(o.fh).await.unwrap_err();
    assert_eq!(err.errno(), libc::EACCES, "{err:?}");
    r.fs.release(ino, o.fh).await.unwrap();
    assert!(r.fs.wait_for_uploads(Duration::from_secs(60)).await);
    assert_eq!(get(&r.mem, "f").unwrap(), b"keep me!");
    // Reported once.
    let o = r.fs.open(ino, libc::O_WRONLY).await.unwrap();
    r.fs.write(o.fh, 0, b"K").await.unwrap();
    r.fs.flush(o.fh).await.unwrap();
    r.fs.release(ino, o.fh).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_age_bound_uploads_a_file_still_open() {
    let r = rig(4, Duration::from_secs(2));
    let (e, o) =
        r.fs.create(InodeNo::ROOT, "log", 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap();
    r.fs.write(o.fh, 0, b"line 1\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(get(&r.mem, "log").is_none(), "younger than the bound");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(r.fs.wait_for_uploads(Duration::from_secs(60)).await);
    assert_eq!(get(&r.mem, "log").unwrap(), b"line 1\n");
    // Still open, still written: the next change is uploaded at close.
    r.fs.write(o.fh, 7, b"line 2\n").await.unwrap();
    r.fs.flush(o.fh).await.unwrap();
    r.fs.release(e.attr.ino, o.fh).await.unwrap();
    assert!(r.fs.wait_for_uploads(Duration::from_secs(60)).await);
    assert_eq!(get(&r.mem, "log").unwrap(), b"line 1\nline 2\n");
}

#[tokio::test(start_paused = true)]
async fn the_drain_saves_every_pending_file() {
    let r = rig(2, Duration::ZERO);
    r.faults
        .push(Op::Write, Fault::Latency(Duration::from_millis(500)));
    for i in 0..20 {
        write_file(&r.fs, &format!("f{i}"), format!("data {i}").as_bytes()).await;
    }
    let failures = r.fs.drain(Instant::now() + Duration::from_secs(30)).await;
    assert!(failures.is_empty(), "{failures:?}");
    for i in 0..20 {
        assert_eq!(
            get(&r.mem, &format!("f{i}")).unwrap(),
            format!("data {i}").as_bytes()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_streamed_file_still_reports_its_upload_at_close() {
    // Its bytes are nowhere but in the upload: close waits for it and says how it went.
    let r = rig(4, Duration::ZERO);
    r.faults.push(Op::UploadChunk, Fault::Pass);
    r.faults.push(Op::UploadChunk, Fault::Status(403));
    let (e, o) =
        r.fs.create(InodeNo::ROOT, "big", 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap();
    let chunk = vec![5u8; 1 << 20];
    let mut failed = false;
    for i in 0..10u64 {
        if r.fs.write(o.fh, i << 20, &chunk).await.is_err() {
            failed = true;
            break;
        }
    }
    let closed = r.fs.flush(o.fh).await;
    assert!(failed || closed.is_err(), "the failure reached the program");
    let _ = r.fs.release(e.attr.ino, o.fh).await;
    assert!(get(&r.mem, "big").is_none());

    // And a good one is in the bucket when close returns.
    let (e, o) =
        r.fs.create(InodeNo::ROOT, "good", 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap();
    for i in 0..10u64 {
        r.fs.write(o.fh, i << 20, &chunk).await.unwrap();
    }
    r.fs.flush(o.fh).await.unwrap();
    assert_eq!(get(&r.mem, "good").map(|d| d.len()), Some(10 << 20));
    r.fs.release(e.attr.ino, o.fh).await.unwrap();
}

/// Lets spawned tasks run until `op` has been called `n` times on the fault store (an upload
/// is then in its network call). Counts no virtual time: it yields, and now and then sleeps a
/// real millisecond, since the way to the call may pass a blocking thread (reading a staging
/// file) that a busy machine schedules late. Gives up after a minute of real time.
async fn until_called(faults: &FaultStore, op: Op, n: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut spins = 0u32;
    while std::time::Instant::now() < deadline {
        if faults.calls(op) >= n {
            return;
        }
        tokio::task::yield_now().await;
        spins += 1;
        if spins.is_multiple_of(1000) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    panic!("{op} was not called {n} times");
}

/// What the file reads through `fh` now, or a panic if the read waits (the upload in flight
/// holds the store for 5 s of the paused clock; a read that waited for it would take that long).
async fn read_now(fs: &Filesystem, fh: u64) -> Vec<u8> {
    tokio::time::timeout(Duration::from_secs(1), fs.read(fh, 0, 4096))
        .await
        .expect("a read waited for another handle's upload")
        .unwrap()
        .into_bytes()
        .to_vec()
}

#[tokio::test(start_paused = true)]
async fn readers_and_writers_never_wait_for_an_upload_and_its_snapshot_is_what_lands() {
    let r = rig(4, Duration::ZERO);
    let ino = write_file(&r.fs, "f", b"hello world").await;
    assert!(r.fs.wait_for_uploads(Duration::from_secs(60)).await);
    let first = r
        .mem
        .get(&ObjectKey::new("f").unwrap())
        .unwrap()
        .0
        .generation;

    let w = r.fs.open(ino, libc::O_RDWR).await.unwrap();
    r.fs.write(w.fh, 0, b"HELLO").await.unwrap();
    r.faults
        .push(Op::Write, Fault::Latency(Duration::from_secs(5)));
    let writes = r.faults.calls(Op::Write);
    let fs = r.fs.clone();
    let fsync = tokio::spawn(async move { fs.fsync(w.fh).await });
    until_called(&r.faults, Op::Write, writes + 1).await;

    // The upload is in its network call. Another handle reads the pending data, and a write
    // goes on, without waiting for it.
    let rd = r.fs.open(ino, libc::O_RDONLY).await.unwrap();
    assert_eq!(read_now(&r.fs, rd.fh).await, b"HELLO world");
    tokio::time::timeout(Duration::from_secs(1), r.fs.write(w.fh, 6, b"WORLD"))
        .await
        .expect("a write waited for the upload")
        .unwrap();
    assert_eq!(read_now(&r.fs, rd.fh).await, b"HELLO WORLD");
    assert!(!fsync.is_finished());

    // The upload sends the data as it was when it started; the later write stays pending,
    // based on the generation that upload made.
    r.faults.push(Op::Write, Fault::Latency(Duration::ZERO));
    fsync.await.unwrap().unwrap();
    let (meta, data) = r.mem.get(&ObjectKey::new("f").unwrap()).unwrap();
    assert_eq!(&data[..], b"HELLO world");
    assert!(meta.generation > first);
    assert!(
        r.fs.has_dirty(),
        "the write made during the upload is pending"
    );
    assert_eq!(r.fs.getattr(ino).await.unwrap().attr.size, 11);
    r.fs.fsync(w.fh).await.unwrap();
    assert_eq!(get(&r.mem, "f").unwrap(), b"HELLO WORLD");
    assert!(!r.fs.has_dirty());
    r.fs.release(ino, rd.fh).await.unwrap();
    r.fs.flush(w.fh).await.unwrap();
    r.fs.release(ino, w.fh).await.unwrap();
    assert!(r.fs.wait_for_uploads(Duration::from_secs(60)).await);
    assert_eq!(get(&r.mem, "f").unwrap(), b"HELLO WORLD");
}

#[tokio::test(start_paused = true)]
async fn a_new_file_appended_to_during_its_upload_keeps_its_size_and_lands_whole() {
    let r = rig(4, Duration::ZERO);
    let (e, o) =
        r.fs.create(InodeNo::ROOT, "n", 0o644, libc::O_RDWR, ME)
            .await
            .unwrap();
    let ino = e.attr.ino;
    r.fs.write(o.fh, 0, b"abc").await.unwrap();
    r.faults
        .push(Op::Write, Fault::Latency(Duration::from_secs(5)));
    let fs = r.fs.clone();
    let fsync = tokio::spawn(async move { fs.fsync(o.fh).await });
    until_called(&r.faults, Op::Write, 1).await;
    assert_eq!(read_now(&r.fs, o.fh).await, b"abc");
    r.fs.write(o.fh, 3, b"def").await.unwrap();
    assert_eq!(read_now(&r.fs, o.fh).await, b"abcdef");
    r.faults.push(Op::Write, Fault::Latency(Duration::ZERO));
    fsync.await.unwrap().unwrap();
    assert_eq!(get(&r.mem, "n").unwrap(), b"abc");
    // The size is the file's, not the object's: the append is still to come.
    assert_eq!(r.fs.getattr(ino).await.unwrap().attr.size, 6);
    assert_eq!(read_now(&r.fs, o.fh).await, b"abcdef");
    // The next upload replaces the generation the first one made (no conflict with itself).
    r.fs.flush(o.fh).await.unwrap();
    r.fs.release(ino, o.fh).await.unwrap();
    assert!(r.fs.wait_for_uploads(Duration::from_secs(60)).await);
    assert_eq!(get(&r.mem, "n").unwrap(), b"abcdef");
    assert!(!r.fs.has_dirty());
    assert!(!r._tmp.path().join("gcsfs-conflicts").exists());
}

#[tokio::test(start_paused = true)]
async fn a_rename_during_an_upload_waits_for_it_and_moves_every_change() {
    let r = rig(4, Duration::ZERO);
    let ino = write_file(&r.fs, "src", b"one").await;
    assert!(r.fs.wait_for_uploads(Duration::from_secs(60)).await);
    let w = r.fs.open(ino, libc::O_RDWR).await.unwrap();
    r.fs.write(w.fh, 0, b"two").await.unwrap();
    r.faults
        .push(Op::Write, Fault::Latency(Duration::from_secs(5)));
    let writes = r.faults.calls(Op::Write);
    let fs = r.fs.clone();
    let fsync = tokio::spawn(async move { fs.fsync(w.fh).await });
    until_called(&r.faults, Op::Write, writes + 1).await;
    r.fs.write(w.fh, 3, b"+three").await.unwrap();
    r.faults.push(Op::Write, Fault::Latency(Duration::ZERO));
    r.fs.rename(InodeNo::ROOT, "src", InodeNo::ROOT, "dst", 0)
        .await
        .unwrap();
    assert!(fsync.is_finished(), "the rename came after the upload");
    fsync.await.unwrap().unwrap();
    assert!(get(&r.mem, "src").is_none(), "nothing at the old name");
    assert_eq!(get(&r.mem, "dst").unwrap(), b"two+three");
    assert!(!r.fs.has_dirty());
    r.fs.flush(w.fh).await.unwrap();
    r.fs.release(ino, w.fh).await.unwrap();
    assert!(r.fs.wait_for_uploads(Duration::from_secs(60)).await);
    assert!(get(&r.mem, "src").is_none());
    assert_eq!(get(&r.mem, "dst").unwrap(), b"two+three");
}

/// Reads a file whose background upload may be running on another worker thread, as an app
/// reading back what it just wrote does: every read sees the data, never ESTALE. (Found by the
/// reference-model test on a multi-threaded runtime.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_back_a_file_while_its_background_upload_runs_sees_the_data() {
    let r = rig(4, Duration::from_secs(3600));
    for i in 0..200u32 {
        let name = format!("f{i}");
        let data = format!("data of {name}");
        let ino = write_file(&r.fs, &name, data.as_bytes()).await;
        let o = r.fs.open(ino, libc::O_RDONLY).await.unwrap();
        let got = r.fs.read(o.fh, 0, 4096).await.map(ReadData::into_bytes);
        r.fs.release(ino, o.fh).await.unwrap();
        assert_eq!(
            got.as_deref().ok(),
            Some(data.as_bytes()),
            "{name}: {got:?}"
        );
        if i % 2 == 0 {
            // And once more by a new open of an existing file, rewritten.
            rewrite(&r.fs, ino, b"second").await;
            let o = r.fs.open(ino, libc::O_RDONLY).await.unwrap();
            let got = r.fs.read(o.fh, 0, 4096).await.map(ReadData::into_bytes);
            r.fs.release(ino, o.fh).await.unwrap();
            assert_eq!(got.as_deref().ok(), Some(&b"second"[..]), "{name}: {got:?}");
        }
    }
    assert!(r.fs.wait_for_uploads(Duration::from_secs(30)).await);
}

/// `tar x` with `--write-back async`: each file's mode and times are set right after its close,
/// while its upload is queued or running. The setattr does not wait for the upload, and the
/// attributes are not lost: an upload that took the old ones leaves the file to upload again.
#[tokio::test(start_paused = true)]
async fn attributes_set_after_an_async_close_wait_for_nothing_and_land() {
    let r = rig(4, Duration::from_secs(3600));
    r.faults
        .push(Op::Write, Fault::Latency(Duration::from_secs(5)));
    let writes = r.faults.calls(Op::Write);
    let ino = write_file(&r.fs, "f", b"data").await;
    until_called(&r.faults, Op::Write, writes + 1).await;
    // The upload is in its network call: chmod and utimes return at once.
    let set = gcsfs::fs::SetAttr {
        mode: Some(0o600),
        mtime: Some(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000)),
        ..Default::default()
    };
    let e = tokio::time::timeout(Duration::from_secs(1), r.fs.setattr(ino, set))
        .await
        .expect("setattr waited for the upload")
        .unwrap();
    assert_eq!(e.attr.perm, 0o600);
    // The first upload took the old attributes; the file is uploaded again with the new ones
    // once it ends (no handle is open to close it later).
    r.faults.push(Op::Write, Fault::Latency(Duration::ZERO));
    assert!(r.fs.wait_for_uploads(Duration::from_secs(60)).await);
    let (meta, data) = r.mem.get(&ObjectKey::new("f").unwrap()).unwrap();
    assert_eq!(&data[..], b"data");
    assert_eq!(
        meta.metadata
            .get("goog-reserved-posix-mode")
            .map(String::as_str),
        Some("600")
    );
    assert_eq!(
        meta.metadata
            .get("goog-reserved-file-mtime")
            .map(String::as_str),
        Some("1000000")
    );
    assert!(!r.fs.has_dirty());
}

/// `tar x` sets each directory's mode and times at the end; with `--write-back async` those
/// changes are made here at once and written to the marker in the background, like a file's
/// data. A directory removed meanwhile is never brought back by its pending attributes, whether
/// their write was running (rmdir waits for it) or still queued (it finds the directory gone).
#[tokio::test(start_paused = true)]
async fn directory_attributes_are_written_back_and_never_revive_a_removed_directory() {
    let r = rig(1, Duration::from_secs(3600));
    let mode = |m| gcsfs::fs::SetAttr {
        mode: Some(m),
        ..Default::default()
    };
    let marker = |name: &str| r.mem.get(&ObjectKey::new(format!("{name}/")).unwrap());
    for name in ["kept", "running", "queued"] {
        r.fs.mkdir(InodeNo::ROOT, name, 0o755, ME).await.unwrap();
    }
    let ino = |name: &'static str| {
        let fs = r.fs.clone();
        async move { fs.lookup(InodeNo::ROOT, name).await.unwrap().attr.ino }
    };
    let (kept, running, queued) = (ino("kept").await, ino("running").await, ino("queued").await);

    // A patch in its network call: the chmod returned without waiting for it.
    r.faults
        .push(Op::Patch, Fault::Latency(Duration::from_secs(5)));
    let patches = r.faults.calls(Op::Patch);
    let e = tokio::time::timeout(Duration::from_secs(1), r.fs.setattr(running, mode(0o700)))
        .await
        .expect("a directory's chmod waited for the network")
        .unwrap();
    assert_eq!(e.attr.perm, 0o700, "seen here at once");
    until_called(&r.faults, Op::Patch, patches + 1).await;
    // One upload slot: this one waits in the queue behind it.
    r.fs.setattr(queued, mode(0o711)).await.unwrap();
    r.fs.setattr(kept, mode(0o750)).await.unwrap();
    // Both removed while their attributes are pending.
    r.fs.rmdir(InodeNo::ROOT, "queued").await.unwrap();
    r.fs.rmdir(InodeNo::ROOT, "running").await.unwrap();
    assert!(r.fs.wait_for_uploads(Duration::from_secs(60)).await);
    assert!(marker("running").is_none(), "removed, not revived");
    assert!(marker("queued").is_none(), "removed, not revived");
    let (meta, _) = marker("kept").expect("kept");
    assert_eq!(meta.metadata["goog-reserved-posix-mode"], "750");
    assert!(!r.fs.has_dirty());
}

/// A chmod of a directory that arrives while the directory is being renamed waits for the
/// move and lands on the new name: never patched onto the old marker that the rename then
/// deletes (lost), and never a new marker at the old name (revived). A second chmod made while
/// the first is being written lands too, even with the directory open (no close of a
/// directory queues it again).
#[tokio::test(start_paused = true)]
async fn directory_attributes_follow_a_rename_and_a_second_change_lands() {
    let r = rig(4, Duration::from_secs(3600));
    let mode = |m| gcsfs::fs::SetAttr {
        mode: Some(m),
        ..Default::default()
    };
    let marker = |name: &str| r.mem.get(&ObjectKey::new(format!("{name}/")).unwrap());
    r.fs.mkdir(InodeNo::ROOT, "a", 0o755, ME).await.unwrap();
    let a = r.fs.lookup(InodeNo::ROOT, "a").await.unwrap().attr.ino;

    // The rename's removal of the old marker takes a while; the chmod comes meanwhile.
    r.faults
        .push(Op::Delete, Fault::Latency(Duration::from_secs(5)));
    let deletes = r.faults.calls(Op::Delete);
    let fs = r.fs.clone();
    let rename =
        tokio::spawn(async move { fs.rename(InodeNo::ROOT, "a", InodeNo::ROOT, "b", 0).await });
    until_called(&r.faults, Op::Delete, deletes + 1).await;
    r.fs.setattr(a, mode(0o700)).await.unwrap();
    rename.await.unwrap().unwrap();
    assert!(r.fs.wait_for_uploads(Duration::from_secs(60)).await);
    assert!(marker("a").is_none(), "the old name is not revived");
    let (meta, _) = marker("b").expect("moved");
    assert_eq!(meta.metadata["goog-reserved-posix-mode"], "700", "not lost");

    // Open, and changed twice: the second change comes while the first is being written.
    let dh = r.fs.opendir(a).unwrap();
    r.faults
        .push(Op::Patch, Fault::Latency(Duration::from_secs(5)));
    let patches = r.faults.calls(Op::Patch);
    r.fs.setattr(a, mode(0o750)).await.unwrap();
    until_called(&r.faults, Op::Patch, patches + 1).await;
    r.fs.setattr(a, mode(0o711)).await.unwrap();
    assert!(r.fs.wait_for_uploads(Duration::from_secs(60)).await);
    let (meta, _) = marker("b").unwrap();
    assert_eq!(meta.metadata["goog-reserved-posix-mode"], "711");
    assert!(!r.fs.has_dirty());
    r.fs.releasedir(dh).unwrap();
}

/// With `--write-back sync` a file's close and setattr still wait for the bucket, but a
/// directory's attributes are written in the background as in `async` (`tar x` ends by setting
/// the mode and times of every directory it made, one after the other): the chmod returns
/// before its patch, `fsync` of the directory waits for it, and a write that fails is tried
/// again by the age bound.
#[tokio::test(start_paused = true)]
async fn sync_mode_writes_directory_attributes_in_the_background() {
    let r = rig_mode(WriteBack::Sync, 4, Duration::from_secs(60));
    let marker = |name: &str| r.mem.get(&ObjectKey::new(format!("{name}/")).unwrap());
    let mode = |m| gcsfs::fs::SetAttr {
        mode: Some(m),
        ..Default::default()
    };
    let d =
        r.fs.mkdir(InodeNo::ROOT, "d", 0o700, ME)
            .await
            .unwrap()
            .attr
            .ino;
    // A file's close in this mode still returns once the file is in the bucket.
    write_file(&r.fs, "f", b"data").await;
    assert_eq!(get(&r.mem, "f").unwrap(), b"data");

    r.faults
        .push(Op::Patch, Fault::Latency(Duration::from_secs(5)));
    let patches = r.faults.calls(Op::Patch);
    let e = tokio::time::timeout(Duration::from_secs(1), r.fs.setattr(d, mode(0o755)))
        .await
        .expect("a directory's chmod waited for the network")
        .unwrap();
    assert_eq!(e.attr.perm, 0o755, "seen here at once");
    until_called(&r.faults, Op::Patch, patches + 1).await;
    r.fs.fsyncdir(d).await.unwrap();
    let (meta, _) = marker("d").unwrap();
    assert_eq!(
        meta.metadata["goog-reserved-posix-mode"], "755",
        "fsyncdir waited"
    );
    assert!(!r.fs.has_dirty());

    // A write refused for good keeps the change; fsyncdir reports its own failure; the age
    // bound tries again.
    r.faults.push(Op::Patch, Fault::Status(403));
    r.fs.setattr(d, mode(0o711)).await.unwrap();
    assert!(r.fs.wait_for_uploads(Duration::from_secs(60)).await);
    assert!(r.fs.has_dirty(), "the change is kept");
    let (meta, _) = marker("d").unwrap();
    assert_eq!(meta.metadata["goog-reserved-posix-mode"], "755");
    r.faults.push(Op::Patch, Fault::Status(403));
    let err = r.fs.fsyncdir(d).await;
    assert!(err.is_err(), "the failure is reported: {err:?}");
    // Two failures in a row: the age bound waits twice its 60 s before trying again.
    tokio::time::sleep(Duration::from_secs(100)).await;
    let (meta, _) = marker("d").unwrap();
    assert_eq!(
        meta.metadata["goog-reserved-posix-mode"], "755",
        "backing off"
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(r.fs.wait_for_uploads(Duration::from_secs(60)).await);
    let (meta, _) = marker("d").unwrap();
    assert_eq!(
        meta.metadata["goog-reserved-posix-mode"], "711",
        "the age bound saved it"
    );
    assert!(!r.fs.has_dirty());
}

/// `tar x` and `cp -p` chown every entry to the owner it already has and chmod it to the mode
/// it was made with: while this mount's view is current, that costs no request. Once the view
/// is older than the metadata TTL, the same call is written (another client may have changed
/// the attribute meanwhile; the patch's preconditions tell).
#[tokio::test(start_paused = true)]
async fn setattr_to_the_current_values_sends_nothing_while_the_view_is_current() {
    for write_back in [WriteBack::Sync, WriteBack::Async] {
        let r = rig_mode(write_back, 4, Duration::from_secs(3600));
        let d =
            r.fs.mkdir(InodeNo::ROOT, "d", 0o755, ME)
                .await
                .unwrap()
                .attr
                .ino;
        let f = write_file(&r.fs, "f", b"data").await;
        assert!(r.fs.wait_for_uploads(Duration::from_secs(60)).await);
        let calls = |r: &Rig| [Op::Patch, Op::Write, Op::Stat].map(|op| r.faults.calls(op));
        let before = calls(&r);
        for ino in [d, f] {
            let attr = r.fs.getattr(ino).await.unwrap().attr;
            let same = gcsfs::fs::SetAttr {
                mode: Some(u32::from(attr.perm)),
                uid: Some(attr.uid),
                gid: Some(attr.gid),
                mtime: Some(attr.mtime),
                ..Default::default()
            };
            let e = r.fs.setattr(ino, same).await.unwrap();
            assert_eq!(e.attr.perm, attr.perm);
        }
        assert!(r.fs.wait_for_uploads(Duration::from_secs(60)).await);
        assert_eq!(calls(&r), before, "{write_back:?}: nothing to write");
        assert!(!r.fs.has_dirty());

        // Past the TTL the view may be stale: the same chmod is written.
        r.clock.advance(Duration::from_secs(61));
        let patches = r.faults.calls(Op::Patch);
        let writes = r.faults.calls(Op::Write);
        let chmod = gcsfs::fs::SetAttr {
            mode: Some(0o644),
            ..Default::default()
        };
        r.fs.setattr(f, chmod).await.unwrap();
        assert!(r.fs.wait_for_uploads(Duration::from_secs(60)).await);
        assert!(
            r.faults.calls(Op::Patch) + r.faults.calls(Op::Write) > patches + writes,
            "{write_back:?}: a stale view is not trusted"
        );
    }
}

/// A file's way through the write-back's states (`lifecycle.rs`), as this mount shows them:
/// Staged while written, Queued behind another upload, Uploading, Clean once in the bucket,
/// Failed when its upload is refused (dirty: kept), Conflicted when another writer won the race
/// (not dirty: its data went to the conflicts directory), Unlinked once removed.
#[tokio::test(start_paused = true)]
async fn a_file_walks_through_the_write_back_phases() {
    use gcsfs::fs::Phase;
    use gcsfs::store::{ObjectStore, Preconditions, WriteAttrs, WriteSource};
    let r = rig(1, Duration::from_secs(3600));
    let (e, o) =
        r.fs.create(InodeNo::ROOT, "a", 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap();
    let a = e.attr.ino;
    r.fs.write(o.fh, 0, b"one").await.unwrap();
    assert_eq!(r.fs.phase_of(a), Some(Phase::Staged));

    // The only upload slot is taken by a slow upload: "a" waits in the queue.
    r.faults
        .push(Op::Write, Fault::Latency(Duration::from_secs(5)));
    let writes = r.faults.calls(Op::Write);
    let slow = write_file(&r.fs, "slow", b"slow").await;
    until_called(&r.faults, Op::Write, writes + 1).await;
    assert_eq!(
        r.fs.phase_of(slow),
        Some(Phase::Uploading { requeued: false })
    );
    r.fs.flush(o.fh).await.unwrap();
    r.fs.release(a, o.fh).await.unwrap();
    assert_eq!(r.fs.phase_of(a), Some(Phase::Queued));
    assert!(r.fs.wait_for_uploads(Duration::from_secs(60)).await);
    assert_eq!(r.fs.phase_of(a), Some(Phase::Clean));
    assert_eq!(get(&r.mem, "a").unwrap(), b"one");

    // Refused: kept, dirty.
    r.faults.push(Op::Write, Fault::Status(403));
    let o = r.fs.open(a, libc::O_WRONLY).await.unwrap();
    r.fs.write(o.fh, 0, b"two").await.unwrap();
    r.fs.flush(o.fh).await.unwrap();
    assert!(r.fs.wait_for_uploads(Duration::from_secs(60)).await);
    assert_eq!(r.fs.phase_of(a), Some(Phase::Failed));
    assert!(r.fs.has_dirty());
    r.fs.fsync(o.fh).await.unwrap();
    assert_eq!(r.fs.phase_of(a), Some(Phase::Clean));
    assert_eq!(get(&r.mem, "a").unwrap(), b"two");

    // Another writer replaces the object: this mount's next upload loses the race.
    r.mem
        .write(
            &ObjectKey::new("a").unwrap(),
            WriteSource::Bytes(bytes::Bytes::from_static(b"theirs")),
            Preconditions::NONE,
            &WriteAttrs::default(),
        )
        .await
        .unwrap();
    r.fs.write(o.fh, 0, b"three").await.unwrap();
    assert!(r.fs.fsync(o.fh).await.is_err(), "ESTALE");
    assert_eq!(r.fs.phase_of(a), Some(Phase::Conflicted));
    assert!(!r.fs.has_dirty());
    assert_eq!(get(&r.mem, "a").unwrap(), b"theirs", "never overwritten");

    r.fs.release(a, o.fh).await.unwrap();

    // Removed while open and changed: its changes go nowhere, and it stays so.
    let (e, o) =
        r.fs.create(InodeNo::ROOT, "b", 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap();
    let b = e.attr.ino;
    r.fs.write(o.fh, 0, b"four").await.unwrap();
    assert_eq!(r.fs.phase_of(b), Some(Phase::Staged));
    r.fs.unlink(InodeNo::ROOT, "b").await.unwrap();
    r.fs.fsync(o.fh).await.unwrap();
    assert_eq!(r.fs.phase_of(b), Some(Phase::Unlinked));
    r.fs.write(o.fh, 0, b"five").await.unwrap();
    assert_eq!(r.fs.phase_of(b), Some(Phase::Unlinked));
    assert!(!r.fs.has_dirty());
    r.fs.release(b, o.fh).await.unwrap();
    assert!(get(&r.mem, "b").is_none());
    assert_eq!(gcsfs::fs::unexpected_events(), 0);
}

/// A descriptor open on a file that was removed (unlinked, or renamed over) while its changes
/// waited in the upload queue keeps reading and writing them, as on a local filesystem; the
/// removed file never reaches the bucket. Was (found by the async reference-model test with two
/// threads): the queued upload ran after the unlink, found the file removed and dropped its
/// staged data, so the descriptor's next write said ESTALE (it tried to stage the deleted
/// generation again), and a write at offset 0 silently started the file over.
#[tokio::test(start_paused = true)]
async fn a_file_removed_while_its_upload_is_queued_keeps_its_data_for_open_descriptors() {
    for rename_over in [false, true] {
        let r = rig(1, Duration::from_secs(3600));
        let a = write_file(&r.fs, "a", b"published").await;
        assert!(r.fs.wait_for_uploads(Duration::from_secs(60)).await);
        if rename_over {
            write_file(&r.fs, "b", b"moved over").await;
            assert!(r.fs.wait_for_uploads(Duration::from_secs(60)).await);
        }
        let o = r.fs.open(a, libc::O_RDWR).await.unwrap();
        r.fs.write(o.fh, 9, b" and changed").await.unwrap();
        // The only upload slot is taken by a slow upload; another descriptor's close queues
        // "a" behind it.
        r.faults
            .push(Op::Write, Fault::Latency(Duration::from_secs(5)));
        let writes = r.faults.calls(Op::Write);
        write_file(&r.fs, "slow", b"slow").await;
        until_called(&r.faults, Op::Write, writes + 1).await;
        let other = r.fs.open(a, libc::O_RDONLY).await.unwrap();
        r.fs.release(a, other.fh).await.unwrap();
        if rename_over {
            r.fs.rename(InodeNo::ROOT, "b", InodeNo::ROOT, "a", 0)
                .await
                .unwrap();
        } else {
            r.fs.unlink(InodeNo::ROOT, "a").await.unwrap();
        }
        // The queued upload runs now, after the removal.
        assert!(r.fs.wait_for_uploads(Duration::from_secs(60)).await);
        assert_eq!(r.fs.phase_of(a), Some(gcsfs::fs::Phase::Unlinked));
        r.fs.write(o.fh, 21, b", still open").await.unwrap();
        assert_eq!(
            read_now(&r.fs, o.fh).await,
            b"published and changed, still open",
            "rename_over={rename_over}"
        );
        r.fs.fsync(o.fh).await.unwrap();
        r.fs.release(a, o.fh).await.unwrap();
        let expected: Option<&[u8]> = rename_over.then_some(b"moved over");
        assert_eq!(
            get(&r.mem, "a").as_deref(),
            expected,
            "rename_over={rename_over}"
        );
        assert!(!r.fs.has_dirty());
    }
    assert_eq!(gcsfs::fs::unexpected_events(), 0);
}

/// A new file past the streaming threshold (its bytes only in the streamed upload), removed
/// while open: the descriptor still reads and writes all of it, and the object never appears
/// (the stream is finished to keep the bytes, then deleted as any unlinked object is). Was:
/// a later upload aborted the stream, and its bytes were gone from the open descriptor.
#[tokio::test(start_paused = true)]
async fn a_streamed_file_removed_while_open_keeps_its_bytes_and_leaves_no_object() {
    const MIB: usize = 1 << 20;
    for write_back in [WriteBack::Sync, WriteBack::Async] {
        let r = rig_mode(write_back, 4, Duration::from_secs(3600));
        let (e, o) =
            r.fs.create(InodeNo::ROOT, "big", 0o644, libc::O_RDWR, ME)
                .await
                .unwrap();
        let ino = e.attr.ino;
        let data: Vec<u8> = (0..6 * MIB).map(|i| (i % 251) as u8).collect();
        for (k, chunk) in data.chunks(MIB).enumerate() {
            r.fs.write(o.fh, (k * MIB) as u64, chunk).await.unwrap();
        }
        assert_eq!(r.fs.phase_of(ino), Some(gcsfs::fs::Phase::Streaming));
        r.fs.unlink(InodeNo::ROOT, "big").await.unwrap();
        assert_eq!(r.fs.phase_of(ino), Some(gcsfs::fs::Phase::Unlinked));
        assert!(
            get(&r.mem, "big").is_none(),
            "{write_back:?}: no object after unlink"
        );
        r.fs.write(o.fh, data.len() as u64, b"tail").await.unwrap();
        let back =
            r.fs.read(o.fh, 6 * MIB as u64 - 4, 8)
                .await
                .unwrap()
                .into_bytes();
        assert_eq!(
            &back[..],
            &[data[6 * MIB - 4..].to_vec(), b"tail".to_vec()].concat()
        );
        let start = r.fs.read(o.fh, 0, 4096).await.unwrap().into_bytes();
        assert_eq!(&start[..], &data[..4096]);
        r.fs.flush(o.fh).await.unwrap();
        r.fs.release(ino, o.fh).await.unwrap();
        assert!(r.fs.wait_for_uploads(Duration::from_secs(60)).await);
        assert!(
            get(&r.mem, "big").is_none(),
            "{write_back:?}: never created"
        );
        assert!(!r.fs.has_dirty());
    }
    assert_eq!(gcsfs::fs::unexpected_events(), 0);
}

/// A listing served before this mount's own upload of a file and read after it, the file's
/// inode evicted in between (the kernel forgot it): what the listing shows of the file is
/// older than the upload, and must not be cached as the file. Was (found by the async
/// reference-model test with two threads): the old generation was bound as fresh for the
/// metadata TTL, so `stat` showed the old size and a rename of the file copied a generation
/// that no longer existed (ESTALE).
#[tokio::test(start_paused = true)]
async fn a_listing_older_than_this_mounts_upload_never_brings_back_the_old_generation() {
    use gcsfs::store::Fault;
    for write_back in [WriteBack::Sync, WriteBack::Async] {
        let r = rig_mode(write_back, 4, Duration::from_secs(3600));
        let c = write_file(&r.fs, "c", b"one").await;
        assert!(r.fs.wait_for_uploads(Duration::from_secs(60)).await);
        // Listed in full (small), then the listing's negative TTL runs out: the next lookup
        // of a name the table lacks lists the directory again.
        let fh = r.fs.opendir(InodeNo::ROOT).unwrap();
        r.fs.readdir(fh, 0).await.unwrap();
        r.fs.releasedir(fh).unwrap();
        r.clock.advance(Duration::from_secs(30));
        r.faults
            .push(Op::List, Fault::LateAnswer(Duration::from_secs(5)));
        let lists = r.faults.calls(Op::List);
        let fs = r.fs.clone();
        let lookup = tokio::spawn(async move { fs.lookup(InodeNo::ROOT, "other").await });
        until_called(&r.faults, Op::List, lists + 1).await;
        // The listing was served (showing "one"); now this mount replaces the file, and the
        // kernel forgets it, so its inode goes.
        rewrite(&r.fs, c, b"two, longer").await;
        assert!(r.fs.wait_for_uploads(Duration::from_secs(60)).await);
        r.fs.forget(c, 1);
        assert!(lookup.await.unwrap().is_err(), "no such name");
        let e = r.fs.lookup(InodeNo::ROOT, "c").await.unwrap();
        assert_eq!(e.attr.size, 11, "{write_back:?}: the size this mount wrote");
        r.fs.rename(InodeNo::ROOT, "c", InodeNo::ROOT, "d", 0)
            .await
            .unwrap();
        assert!(r.fs.wait_for_uploads(Duration::from_secs(60)).await);
        assert_eq!(get(&r.mem, "d").unwrap(), b"two, longer");
    }
}

/// A new file held in memory is being uploaded (an fsync of its first MiB) while its writer
/// goes on past the streaming threshold. Was: the writes started a create-only stream, the
/// upload made the object first, and the stream then failed: every byte after the fsync's
/// snapshot was lost. Now the file goes on in a staging file and lands whole.
#[tokio::test(start_paused = true)]
async fn a_new_file_passing_the_stream_threshold_during_an_upload_of_its_start_lands_whole() {
    const MIB: usize = 1 << 20;
    let r = rig(4, Duration::from_secs(3600));
    r.faults
        .push(Op::Write, Fault::Latency(Duration::from_secs(5)));
    let (e, o) =
        r.fs.create(InodeNo::ROOT, "big", 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap();
    let mut data = vec![1u8; MIB];
    r.fs.write(o.fh, 0, &data).await.unwrap();
    let writes = r.faults.calls(Op::Write);
    let fs = r.fs.clone();
    let fh = o.fh;
    let sync = tokio::spawn(async move { fs.fsync(fh).await });
    until_called(&r.faults, Op::Write, writes + 1).await;
    let chunk = vec![2u8; 128 << 10];
    while data.len() < 6 * MIB {
        r.fs.write(o.fh, data.len() as u64, &chunk).await.unwrap();
        data.extend_from_slice(&chunk);
    }
    sync.await.unwrap().unwrap();
    r.fs.flush(o.fh).await.unwrap();
    r.fs.release(e.attr.ino, o.fh).await.unwrap();
    assert!(r.fs.wait_for_uploads(Duration::from_secs(60)).await);
    assert!(get(&r.mem, "big").unwrap() == data, "every byte lands");
    assert!(!r.fs.has_dirty());
    assert_eq!(gcsfs::fs::unexpected_events(), 0);
}

/// A handle keeps a clean local copy of this mount's upload; another writer replaces the
/// object; this mount renames the file (copying the other writer's generation) and, while
/// the copy runs, a write through the handle changes the old copy. Was: the rename rebased
/// that change onto the moved copy, and the close replaced the other writer's data with it.
/// Now the change stays based on what the handle had: ESTALE at close, their data untouched.
#[tokio::test(start_paused = true)]
async fn a_write_during_the_rename_of_a_file_another_writer_replaced_never_overwrites_them() {
    use gcsfs::store::{ObjectStore, Preconditions, WriteAttrs, WriteSource};
    let r = rig_mode(WriteBack::Sync, 4, Duration::from_secs(3600));
    let (e, o) =
        r.fs.create(InodeNo::ROOT, "c", 0o644, libc::O_RDWR, ME)
            .await
            .unwrap();
    r.fs.write(o.fh, 0, b"mine").await.unwrap();
    r.fs.flush(o.fh).await.unwrap();
    // A rewrite in place: the file now has a clean staging copy of this mount's generation.
    r.fs.write(o.fh, 0, b"MINE").await.unwrap();
    r.fs.flush(o.fh).await.unwrap();
    assert_eq!(get(&r.mem, "c").unwrap(), b"MINE");
    r.mem
        .write(
            &ObjectKey::new("c").unwrap(),
            WriteSource::Bytes(bytes::Bytes::from_static(b"theirs")),
            Preconditions::NONE,
            &WriteAttrs::default(),
        )
        .await
        .unwrap();
    // Past the TTL: the rename looks the file up again and copies their generation.
    r.clock.advance(Duration::from_secs(61));
    r.faults
        .push(Op::Copy, Fault::Latency(Duration::from_secs(5)));
    let copies = r.faults.calls(Op::Copy);
    let fs = r.fs.clone();
    let rename =
        tokio::spawn(async move { fs.rename(InodeNo::ROOT, "c", InodeNo::ROOT, "a", 0).await });
    until_called(&r.faults, Op::Copy, copies + 1).await;
    let wrote = r.fs.write(o.fh, 0, b"X").await;
    rename.await.unwrap().unwrap();
    let closed = r.fs.flush(o.fh).await;
    let _ = r.fs.release(e.attr.ino, o.fh).await;
    assert_eq!(get(&r.mem, "a").unwrap(), b"theirs", "never overwritten");
    assert!(
        wrote.is_err() || closed.is_err(),
        "the change is refused or reported: {wrote:?} {closed:?}"
    );
}
