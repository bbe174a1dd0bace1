//! The memory budget on `MemStore`: new files held in memory and streamed uploads' buffers take
//! from its writes share and are staged on disk when it is full; uploads' copies take from its
//! transfers share; whatever the pressure, every byte lands.

use std::sync::Arc;
use std::time::Duration;

use gcsfs::fs::{Caller, Filesystem, FsConfig, InodeNo, ManualClock, WriteBack};
use gcsfs::store::mem::MemStore;
use gcsfs::store::{Fault, FaultStore, ObjectKey, Op, RetryConfig, RetryStore};

const ME: Caller = Caller { uid: 0, gid: 0 };
const MIB: usize = 1 << 20;

struct Rig {
    mem: Arc<MemStore>,
    faults: Arc<FaultStore>,
    fs: Arc<Filesystem>,
    tmp: tempfile::TempDir,
}

fn rig(budget_mib: u64, write_back: WriteBack) -> Rig {
    let mem = Arc::new(MemStore::new());
    let faults = Arc::new(FaultStore::new(mem.clone()));
    let store = Arc::new(RetryStore::new(faults.clone(), RetryConfig::default()));
    let tmp = tempfile::tempdir().unwrap();
    let fs = Filesystem::shared(
        store,
        FsConfig {
            temp_dir: tmp.path().into(),
            write_back,
            memory_budget: budget_mib << 20,
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

fn content(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + seed * 7) % 251) as u8)
        .collect()
}

fn landed(mem: &MemStore, key: &str, want: &[u8]) -> bool {
    mem.get(&ObjectKey::new(key).unwrap())
        .is_some_and(|(_, data)| data[..] == *want)
}

fn staging_files(tmp: &tempfile::TempDir) -> usize {
    std::fs::read_dir(tmp.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().is_file())
        .count()
}

#[tokio::test]
async fn new_files_past_the_writes_share_are_staged_and_land_whole() {
    // A 16 MiB budget: its writes share is 6 MiB. Ten new files of 1 MiB, all open at once.
    let r = rig(16, WriteBack::Sync);
    let mut open = Vec::new();
    for i in 0..10 {
        let (e, o) =
            r.fs.create(InodeNo::ROOT, &format!("f{i}"), 0o644, libc::O_WRONLY, ME)
                .await
                .unwrap();
        let data = content(i, MIB);
        for (k, piece) in data.chunks(128 << 10).enumerate() {
            r.fs.write(o.fh, (k * (128 << 10)) as u64, piece)
                .await
                .unwrap();
            assert!(r.fs.memory().in_use() <= 16 << 20);
        }
        open.push((e.attr.ino, o.fh, data));
    }
    assert!(
        r.fs.memory().in_use() <= 6 << 20,
        "new files in memory stay within the writes share"
    );
    assert!(
        staging_files(&r.tmp) >= 4,
        "the files that found no room were staged"
    );
    for (i, (ino, fh, data)) in open.into_iter().enumerate() {
        r.fs.flush(fh).await.unwrap();
        r.fs.release(ino, fh).await.unwrap();
        assert!(landed(&r.mem, &format!("f{i}"), &data), "f{i}");
    }
    assert_eq!(r.fs.memory().in_use(), 0, "everything given back");
    assert_eq!(staging_files(&r.tmp), 0);
}

/// Writes `len` bytes in order to a new file `name` and returns the store calls made before
/// its close, and its data.
async fn write_sequentially(r: &Rig, name: &str, len: usize) -> (u64, Vec<u8>) {
    let (e, o) =
        r.fs.create(InodeNo::ROOT, name, 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap();
    let data = content(1, len);
    for (k, piece) in data.chunks(MIB).enumerate() {
        r.fs.write(o.fh, (k * MIB) as u64, piece).await.unwrap();
    }
    // Let a streamed upload's task get going.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    let before_close = r.faults.calls(Op::Write) + r.faults.calls(Op::StartUpload);
    r.fs.flush(o.fh).await.unwrap();
    r.fs.release(e.attr.ino, o.fh).await.unwrap();
    (before_close, data)
}

#[tokio::test]
async fn a_stream_starts_only_with_room_for_its_buffers_else_the_file_is_staged() {
    // 1 GiB budget: a 12 MiB file written in order streams (its upload starts before close).
    let roomy = rig(1024, WriteBack::Sync);
    let (calls, data) = write_sequentially(&roomy, "s", 12 * MIB).await;
    assert!(calls > 0, "streamed while written");
    assert!(landed(&roomy.mem, "s", &data));

    // 32 MiB: the writes share (12 MiB) has no room for a stream's 24 MiB: staged, uploaded
    // from the staging file at close.
    let tight = rig(32, WriteBack::Sync);
    let (calls, data) = write_sequentially(&tight, "s", 12 * MIB).await;
    assert_eq!(calls, 0, "nothing sent before close");
    assert!(landed(&tight.mem, "s", &data));
    assert_eq!(tight.fs.memory().in_use(), 0);
}

#[tokio::test(start_paused = true)]
async fn uploads_copies_stay_within_the_transfers_share() {
    // 32 MiB budget: transfers share 8 MiB. 40 staged files of 1 MiB closed in async mode, 16
    // upload slots, each upload 1 s: at most 8 copies are held at once, and all land.
    let r = rig(32, WriteBack::Async);
    r.faults
        .push(Op::Write, Fault::Latency(Duration::from_secs(1)));
    let mut files = Vec::new();
    for i in 0..40 {
        let (e, o) =
            r.fs.create(InodeNo::ROOT, &format!("t{i}"), 0o644, libc::O_WRONLY, ME)
                .await
                .unwrap();
        let data = content(i, MIB);
        // Not in order: staged.
        r.fs.write(o.fh, 1, &data[1..]).await.unwrap();
        r.fs.write(o.fh, 0, &data[..1]).await.unwrap();
        r.fs.flush(o.fh).await.unwrap();
        r.fs.release(e.attr.ino, o.fh).await.unwrap();
        files.push(data);
    }
    let mut peak = 0;
    let start = tokio::time::Instant::now();
    let done = loop {
        peak = peak.max(r.fs.memory().in_use());
        if !r.fs.has_dirty() {
            break true;
        }
        if start.elapsed() > Duration::from_secs(600) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(done && r.fs.wait_for_uploads(Duration::from_secs(60)).await);
    assert!(peak <= 8 << 20, "peak {peak} over the transfers share");
    assert!(peak > 0, "the copies were charged");
    for (i, data) in files.iter().enumerate() {
        assert!(landed(&r.mem, &format!("t{i}"), data), "t{i}");
    }
}
