//! The filesystem's three write paths through the faults of a GCS upload, on
//! `Filesystem` → `RetryStore` → `FaultStore` → `MemStore`: a small new file (held in memory,
//! one request at close), a changed existing file (a staging file: one request up to 8 MiB, a
//! resumable session above), and a large new file written in order (streamed while written).
//!
//! For each: the application sees success and the bucket holds exactly what it wrote, or it
//! sees an error (at `write`, `flush` or `close`, within the deadline) and the bucket holds no
//! byte nobody wrote — the old object, the other writer's, or nothing. No call panics.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gcsfs::fs::{Filesystem, FsConfig, FsError, InodeNo, ManualClock};
use gcsfs::store::mem::MemStore;
use gcsfs::store::{
    Fault, FaultStore, ObjectKey, ObjectStore, Op, Preconditions, RetryConfig, RetryStore,
    WriteAttrs, WriteSource,
};

const MIB: usize = 1 << 20;

/// Deterministic bytes, different for each `seed`.
fn data(seed: u8, len: usize) -> Vec<u8> {
    let mut x = u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

struct Rig {
    mem: Arc<MemStore>,
    faults: Arc<FaultStore>,
    fs: Filesystem,
    tmp: tempfile::TempDir,
}

fn rig(retry: RetryConfig) -> Rig {
    let mem = Arc::new(MemStore::new());
    let faults = Arc::new(FaultStore::new(mem.clone()));
    let wait = retry.upload_wait_limit();
    let store = Arc::new(RetryStore::new(faults.clone(), retry));
    let tmp = tempfile::tempdir().unwrap();
    let fs = Filesystem::new(
        store,
        FsConfig {
            temp_dir: tmp.path().into(),
            metadata_ttl: Duration::ZERO,
            negative_ttl: Duration::ZERO,
            write_wait_limit: wait,
            ..Default::default()
        },
        Arc::new(ManualClock::default()),
    );
    Rig {
        mem,
        faults,
        fs,
        tmp,
    }
}

/// Short backoffs: these tests run in real time (staging files are read on blocking threads,
/// which a paused clock would skip past).
fn fast() -> RetryConfig {
    RetryConfig {
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(10),
        ..RetryConfig::default()
    }
}

async fn put(mem: &MemStore, key: &str, bytes: &[u8]) {
    mem.write(
        &ObjectKey::new(key).unwrap(),
        WriteSource::Bytes(Bytes::copy_from_slice(bytes)),
        Preconditions::NONE,
        &WriteAttrs::default(),
    )
    .await
    .unwrap();
}

/// The object's data in the bucket, if any.
fn get(mem: &MemStore, key: &str) -> Option<Vec<u8>> {
    mem.get(&ObjectKey::new(key).ok()?)
        .map(|(_, data)| data.to_vec())
}

/// A write path of the filesystem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// A new 100 KiB file: held in memory, one create-only request at close.
    Small,
    /// 4 KiB changed in the middle of a 1 MiB object: a staging file, one request.
    StagedSmall,
    /// 4 KiB changed in the middle of a 20 MiB object: a staging file, a resumable session.
    StagedLarge,
    /// A new 20 MiB file written in order in 1 MiB writes: streamed while written.
    Streamed,
}

use Path::*;

/// The process the tests act as: root, the mount's default owner.
const ME: gcsfs::fs::Caller = gcsfs::fs::Caller { uid: 0, gid: 0 };

const PATHS: [Path; 4] = [Small, StagedSmall, StagedLarge, Streamed];

impl Path {
    /// The object before the change, if any.
    fn old(self) -> Option<Vec<u8>> {
        match self {
            Small | Streamed => None,
            StagedSmall => Some(data(1, MIB)),
            StagedLarge => Some(data(1, 20 * MIB)),
        }
    }

    /// The object the application means to leave.
    fn new_data(self) -> Vec<u8> {
        match self {
            Small => data(2, 100 * 1024),
            Streamed => data(2, 20 * MIB),
            StagedSmall | StagedLarge => {
                let mut d = self.old().unwrap();
                d[300_000..300_000 + 4096].copy_from_slice(&data(3, 4096));
                d
            }
        }
    }

    /// The store call that carries the data.
    fn data_op(self) -> Op {
        match self {
            Small | StagedSmall => Op::Write,
            StagedLarge | Streamed => Op::UploadChunk,
        }
    }

    /// Data requests of a fault-free upload (the last finalizes).
    fn requests(self) -> usize {
        match self {
            Small | StagedSmall | StagedLarge => 1,
            // 8 + 8 + 4 MiB.
            Streamed => 3,
        }
    }
}

/// What the application saw: the first error of its writes, flush and close, if any.
async fn run_app(rig: &Rig, path: Path) -> Result<(), FsError> {
    let new = path.new_data();
    let (ino, fh) = match path {
        Small | Streamed => {
            let (e, o) = rig
                .fs
                .create(InodeNo::ROOT, "f", 0o644, libc::O_WRONLY, ME)
                .await?;
            (e.attr.ino, o.fh)
        }
        StagedSmall | StagedLarge => {
            let ino = rig.fs.lookup(InodeNo::ROOT, "f").await?.attr.ino;
            (ino, rig.fs.open(ino, libc::O_RDWR).await?.fh)
        }
    };
    let writes = async {
        match path {
            Small => rig.fs.write(fh, 0, &new).await.map(drop),
            Streamed => {
                for at in (0..new.len()).step_by(MIB) {
                    rig.fs.write(fh, at as u64, &new[at..at + MIB]).await?;
                }
                Ok(())
            }
            StagedSmall | StagedLarge => rig
                .fs
                .write(fh, 300_000, &new[300_000..300_000 + 4096])
                .await
                .map(drop),
        }
    };
    let written = writes.await;
    let flushed = rig.fs.flush(fh).await;
    let released = rig.fs.release(ino, fh).await;
    written.and(flushed).and(released)
}

/// Runs the application on `path` with `fault` queued for its `n`-th data request, and checks
/// the outcome against `want`.
async fn case(path: Path, n: usize, fault: Fault, want: Want) {
    let what = format!("{path:?}, {fault:?} on data request {n}");
    let rig = rig(fast());
    if let Some(old) = path.old() {
        put(&rig.mem, "f", &old).await;
    }
    rig.faults.push_n(path.data_op(), Fault::Pass, n);
    rig.faults.push(path.data_op(), fault);
    let seen = run_app(&rig, path).await;
    let stored = get(&rig.mem, "f");
    match want {
        Want::Written => {
            assert!(seen.is_ok(), "{what}: the application saw {seen:?}");
            assert!(
                stored.as_deref() == Some(&path.new_data()[..]),
                "{what}: the bucket does not hold what was written"
            );
        }
        Want::Error(errno) => {
            let e = seen.expect_err(&what);
            assert_eq!(e.errno(), errno, "{what}: {e:?}");
            // A file whose data is at hand stays dirty after an error and the release tries
            // again: the bucket may then hold the new data. Nothing else, ever; and a stream's
            // data is gone with its upload.
            let kept_and_retried =
                path != Streamed && stored.as_deref() == Some(&path.new_data()[..]);
            assert!(
                stored == path.old() || kept_and_retried,
                "{what}: the bucket holds bytes nobody wrote"
            );
        }
    }
    assert_eq!(rig.mem.open_uploads(), 0, "{what}: a session was left open");
    assert!(
        !rig.fs.has_dirty() || matches!(want, Want::Error(_)),
        "{what}"
    );
}

#[derive(Clone, Copy, Debug)]
enum Want {
    /// Success, and the bucket holds the new data.
    Written,
    /// This errno, and the bucket holds what it held before.
    Error(i32),
}

#[tokio::test]
async fn transient_failures_on_any_request_are_survived() {
    for path in PATHS {
        for n in 0..path.requests() {
            case(path, n, Fault::Status(503), Want::Written).await;
            let reset = match path.data_op() {
                Op::Write => Fault::ResetMidStream { after_bytes: 0 },
                _ => Fault::PartialChunk {
                    persist: 3 * MIB as u64 + 5,
                },
            };
            case(path, n, reset, Want::Written).await;
        }
    }
}

#[tokio::test]
async fn the_lost_answer_to_the_last_request_is_not_an_error() {
    for path in PATHS {
        case(
            path,
            path.requests() - 1,
            Fault::StatusAfterCommit(503),
            Want::Written,
        )
        .await;
    }
}

#[tokio::test]
async fn a_412_is_estale_and_leaves_the_bucket_alone() {
    for path in PATHS {
        case(
            path,
            path.requests() - 1,
            Fault::Status(412),
            Want::Error(libc::ESTALE),
        )
        .await;
    }
}

#[tokio::test]
async fn a_refused_upload_is_an_error_at_write_or_close_and_nothing_panics() {
    // 403 is not retried: the streamed file learns it at a later write or at close; every
    // later call returns it too (the upload task's result is taken once and kept).
    for path in PATHS {
        for n in 0..path.requests() {
            case(path, n, Fault::Status(403), Want::Error(libc::EACCES)).await;
        }
    }
}

#[tokio::test]
async fn a_failed_stream_keeps_failing_every_call_and_leaves_nothing_dirty() {
    let rig = rig(fast());
    rig.faults.push(Op::UploadChunk, Fault::Status(403));
    let (e, o) = rig
        .fs
        .create(InodeNo::ROOT, "big", 0o644, libc::O_WRONLY, ME)
        .await
        .unwrap();
    let chunk = data(4, MIB);
    let mut first = None;
    for i in 0..24u64 {
        if let Err(err) = rig.fs.write(o.fh, i * MIB as u64, &chunk).await {
            first = Some((i, err.errno()));
            break;
        }
    }
    let (at, errno) = first.expect("a write must fail once the upload has failed");
    assert_eq!(errno, libc::EACCES, "failed at write {at}");
    // The same error again, from every later call, never a panic.
    let again = rig.fs.write(o.fh, (at + 1) * MIB as u64, &chunk).await;
    assert!(again.is_err());
    assert_eq!(rig.fs.flush(o.fh).await.unwrap_err().errno(), libc::EACCES);
    let failures = rig
        .fs
        .drain(tokio::time::Instant::now() + Duration::from_secs(60))
        .await;
    assert!(
        failures.is_empty(),
        "a file whose data is lost is not retried: {failures:?}"
    );
    let _ = rig.fs.release(e.attr.ino, o.fh).await;
    assert!(get(&rig.mem, "big").is_none());
    assert_eq!(rig.mem.open_uploads(), 0);
}

#[tokio::test]
async fn a_staged_file_whose_upload_failed_is_uploaded_by_the_drain() {
    let rig = rig(fast());
    put(&rig.mem, "doc", &data(5, MIB)).await;
    let ino = rig.fs.lookup(InodeNo::ROOT, "doc").await.unwrap().attr.ino;
    let fh = rig.fs.open(ino, libc::O_RDWR).await.unwrap().fh;
    rig.fs.write(fh, 10, b"changed").await.unwrap();
    rig.faults.push(Op::Write, Fault::Status(403));
    assert_eq!(rig.fs.flush(fh).await.unwrap_err().errno(), libc::EACCES);
    assert!(rig.fs.has_dirty(), "the data stays, staged");
    let failures = rig
        .fs
        .drain(tokio::time::Instant::now() + Duration::from_secs(60))
        .await;
    assert!(failures.is_empty(), "{failures:?}");
    let mut want = data(5, MIB);
    want[10..17].copy_from_slice(b"changed");
    assert!(get(&rig.mem, "doc").unwrap() == want);
    let _ = rig.fs.release(ino, fh).await;
    assert!(rig.tmp.path().exists());
}

/// Creates `name` and writes 24 MiB to it in order (streamed) while every store call meets
/// `fault`; returns the first error of the writes and the close, and how long it took.
async fn stream_into(rig: &Rig, name: &str, fault: Fault) -> (FsError, Duration) {
    let (e, o) = rig
        .fs
        .create(InodeNo::ROOT, name, 0o644, libc::O_WRONLY, ME)
        .await
        .unwrap();
    for op in Op::ALL {
        rig.faults.push_n(op, fault, 100_000);
    }
    let started = tokio::time::Instant::now();
    let chunk = data(6, MIB);
    let mut failed = None;
    for i in 0..24u64 {
        if let Err(e) = rig.fs.write(o.fh, i * MIB as u64, &chunk).await {
            failed = Some(e);
            break;
        }
    }
    let err = match failed {
        Some(e) => e,
        None => rig.fs.flush(o.fh).await.unwrap_err(),
    };
    let took = started.elapsed();
    let _ = rig.fs.release(e.attr.ino, o.fh).await;
    (err, took)
}

#[tokio::test(start_paused = true)]
async fn an_outage_fails_a_streamed_write_within_the_deadline() {
    // Every store call fails for an hour; the retry deadline is 3 s. The application's write
    // or close must fail within the deadline plus one request's limit, not hang.
    let rig = rig(RetryConfig {
        deadline: Duration::from_secs(3),
        ..RetryConfig::default()
    });
    let (err, took) = stream_into(&rig, "out", Fault::Status(503)).await;
    assert_eq!(err.errno(), libc::EIO, "{err:?}");
    assert!(took <= Duration::from_secs(3 + 10), "took {took:?}");
    assert!(get(&rig.mem, "out").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_stalled_service_fails_a_streamed_write_within_its_bound() {
    // Every call hangs: the write is cut at the stall limit, the retries end at the deadline.
    let retry = RetryConfig {
        deadline: Duration::from_secs(3),
        stall_timeout: Duration::from_secs(2),
        ..RetryConfig::default()
    };
    let bound = retry.upload_wait_limit();
    let rig = rig(retry);
    let (err, took) = stream_into(&rig, "stall", Fault::Stall).await;
    assert_eq!(err.errno(), libc::EIO, "{err:?}");
    assert!(took <= bound * 2, "took {took:?}, bound {bound:?}");
    assert!(get(&rig.mem, "stall").is_none());
}

#[tokio::test]
async fn closing_a_reader_does_not_report_the_writers_upload_error() {
    let rig = rig(fast());
    put(&rig.mem, "shared", b"old").await;
    let ino = rig
        .fs
        .lookup(InodeNo::ROOT, "shared")
        .await
        .unwrap()
        .attr
        .ino;
    let writer = rig.fs.open(ino, libc::O_RDWR).await.unwrap().fh;
    let reader = rig.fs.open(ino, libc::O_RDONLY).await.unwrap().fh;
    rig.fs.write(writer, 0, b"new").await.unwrap();
    rig.faults.push(Op::Write, Fault::Status(403));
    assert_eq!(
        rig.fs.flush(writer).await.unwrap_err().errno(),
        libc::EACCES
    );
    // `cat` of the file closes its descriptor: not its business.
    assert!(rig.fs.flush(reader).await.is_ok());
    // fsync asks for the file's data to be saved, whoever wrote it: it uploads.
    rig.fs.fsync(reader).await.unwrap();
    assert_eq!(get(&rig.mem, "shared").unwrap(), b"new");
    let _ = rig.fs.release(ino, reader).await;
    let _ = rig.fs.release(ino, writer).await;
}

#[tokio::test]
async fn a_descriptor_closed_before_any_write_uploads_nothing() {
    // A shell's `cmd > file` (and `dd of=`) opens the file, dup2()s it onto stdout and closes
    // the original: that close must not upload an empty object first.
    let rig = rig(fast());
    put(&rig.mem, "out", b"previous contents").await;
    let ino = rig.fs.lookup(InodeNo::ROOT, "out").await.unwrap().attr.ino;
    let fh = rig
        .fs
        .open(ino, libc::O_WRONLY | libc::O_TRUNC)
        .await
        .unwrap()
        .fh;
    rig.fs.flush(fh).await.unwrap(); // the original descriptor's close
    rig.fs.write(fh, 0, b"output").await.unwrap();
    rig.fs.flush(fh).await.unwrap(); // stdout's close
    rig.fs.release(ino, fh).await.unwrap();
    assert_eq!(get(&rig.mem, "out").unwrap(), b"output");
    assert_eq!(
        rig.faults.calls(Op::Write),
        1,
        "one upload, not an empty one first"
    );

    // A new file created the same way.
    let (e, o) = rig
        .fs
        .create(InodeNo::ROOT, "new", 0o644, libc::O_WRONLY, ME)
        .await
        .unwrap();
    rig.fs.flush(o.fh).await.unwrap();
    rig.fs.write(o.fh, 0, b"hello").await.unwrap();
    rig.fs.flush(o.fh).await.unwrap();
    rig.fs.release(e.attr.ino, o.fh).await.unwrap();
    assert_eq!(get(&rig.mem, "new").unwrap(), b"hello");
    assert_eq!(rig.faults.calls(Op::Write), 2);

    // `touch`: nothing written at all; the release creates the empty object.
    let (e, o) = rig
        .fs
        .create(InodeNo::ROOT, "empty", 0o644, libc::O_WRONLY, ME)
        .await
        .unwrap();
    rig.fs.flush(o.fh).await.unwrap();
    rig.fs.release(e.attr.ino, o.fh).await.unwrap();
    assert_eq!(get(&rig.mem, "empty").unwrap(), b"");
}
