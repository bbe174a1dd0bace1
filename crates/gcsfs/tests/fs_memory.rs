//! The memory budget on `MemStore`: new files held in memory and streamed uploads' buffers take
//! from its writes share and are staged on disk when it is full; uploads' copies take from its
//! transfers share; whatever the pressure, every byte lands. With the temp dir in memory (a
//! tmpfs: `temp_dir_in_memory`), staging files take from the writes share too: writers wait for
//! uploads to free room, and get ENOSPC when none comes, losing nothing acknowledged.

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
    rig_with(budget_mib, write_back, |_| {})
}

/// A rig whose filesystem configuration `tune` adjusts further.
fn rig_with(budget_mib: u64, write_back: WriteBack, tune: impl FnOnce(&mut FsConfig)) -> Rig {
    let mem = Arc::new(MemStore::new());
    let faults = Arc::new(FaultStore::new(mem.clone()));
    let store = Arc::new(RetryStore::new(faults.clone(), RetryConfig::default()));
    let tmp = tempfile::tempdir().unwrap();
    let mut config = FsConfig {
        temp_dir: tmp.path().into(),
        write_back,
        memory_budget: budget_mib << 20,
        ..Default::default()
    };
    tune(&mut config);
    let fs = Filesystem::shared(store, config, Arc::new(ManualClock::default()));
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

// ---- Staging files on a temp dir in memory (`temp_dir_in_memory`) ----

/// A rig whose temp dir counts as memory, staging every new file (no streams, no heads).
fn tmpfs_rig(budget_mib: u64, write_back: WriteBack, wait: Duration) -> Rig {
    rig_with(budget_mib, write_back, |c| {
        c.temp_dir_in_memory = true;
        c.streaming_writes = false;
        c.write_wait_limit = wait;
    })
}

async fn put(mem: &MemStore, key: &str, data: &[u8]) {
    use gcsfs::store::{ObjectStore, Preconditions, WriteAttrs, WriteSource};
    mem.write(
        &ObjectKey::new(key).unwrap(),
        WriteSource::Bytes(bytes::Bytes::copy_from_slice(data)),
        Preconditions::NONE,
        &WriteAttrs::default(),
    )
    .await
    .unwrap();
}

/// Creates `name` and writes `data` to it in 256 KiB pieces; the inode and handle.
async fn create_and_write(fs: &Filesystem, name: &str, data: &[u8]) -> (InodeNo, u64) {
    let (e, o) = fs
        .create(InodeNo::ROOT, name, 0o644, libc::O_RDWR, ME)
        .await
        .unwrap();
    for (k, piece) in data.chunks(256 << 10).enumerate() {
        fs.write(o.fh, (k * (256 << 10)) as u64, piece)
            .await
            .unwrap();
    }
    (e.attr.ino, o.fh)
}

async fn close(fs: &Filesystem, ino: InodeNo, fh: u64) {
    fs.flush(fh).await.unwrap();
    fs.release(ino, fh).await.unwrap();
}

#[tokio::test]
async fn staged_bytes_in_memory_are_charged_and_given_back_once_uploaded() {
    // 16 MiB budget: writes share 6 MiB.
    let r = tmpfs_rig(16, WriteBack::Sync, Duration::from_secs(5));
    let old = content(9, 2 * MIB);
    put(&r.mem, "old", &old).await;

    // A new file: every staged byte is charged, and counted in the budget's use.
    let new = content(1, MIB);
    let (n, nfh) = create_and_write(&r.fs, "new", &new).await;
    assert_eq!(r.fs.memory().staged(), MIB as u64);
    assert_eq!(r.fs.memory().in_use(), MIB as u64);

    // The first change to an existing object downloads it: charged whole.
    let o = r.fs.lookup(InodeNo::ROOT, "old").await.unwrap().attr.ino;
    let ofh = r.fs.open(o, libc::O_RDWR).await.unwrap().fh;
    r.fs.write(ofh, 0, b"OLD").await.unwrap();
    assert_eq!(r.fs.memory().staged(), 3 * MIB as u64);

    // Truncating up and down moves the charge with the size.
    let set = |size| gcsfs::fs::SetAttr {
        size: Some(size),
        fh: Some(ofh),
        ..Default::default()
    };
    r.fs.setattr(o, set(3 * MIB as u64)).await.unwrap();
    assert_eq!(r.fs.memory().staged(), 4 * MIB as u64);
    r.fs.setattr(o, set(MIB as u64)).await.unwrap();
    assert_eq!(r.fs.memory().staged(), 2 * MIB as u64);

    // Uploaded and closed: nothing is held any more.
    close(&r.fs, n, nfh).await;
    assert_eq!(r.fs.memory().staged(), MIB as u64, "only `old` is staged");
    close(&r.fs, o, ofh).await;
    assert_eq!(r.fs.memory().staged(), 0);
    assert_eq!(r.fs.memory().in_use(), 0, "everything given back");
    assert_eq!(staging_files(&r.tmp), 0);
    assert!(landed(&r.mem, "new", &new));
    let mut want = old[..MIB].to_vec();
    want[..3].copy_from_slice(b"OLD");
    assert!(landed(&r.mem, "old", &want));
}

#[tokio::test(start_paused = true)]
async fn a_writer_past_the_share_waits_for_an_upload_to_free_room() {
    // Writes share 6 MiB; every upload takes 10 s. `a` (4 MiB) is closed and its upload
    // queued; `b` (4 MiB) needs room `a`'s staging file holds until that upload ends.
    let r = tmpfs_rig(16, WriteBack::Async, Duration::from_secs(120));
    r.faults
        .push(Op::Write, Fault::Latency(Duration::from_secs(10)));
    let a = content(1, 4 * MIB);
    let (ai, afh) = create_and_write(&r.fs, "a", &a).await;
    close(&r.fs, ai, afh).await;

    let fs = r.fs.clone();
    let mem = r.mem.clone();
    let b = content(2, 4 * MIB);
    let want = b.clone();
    let writer = tokio::spawn(async move {
        let (e, o) = fs
            .create(InodeNo::ROOT, "b", 0o644, libc::O_RDWR, ME)
            .await
            .unwrap();
        let mut a_landed_first = true;
        for (k, piece) in want.chunks(MIB).enumerate() {
            fs.write(o.fh, (k * MIB) as u64, piece).await.unwrap();
            if k >= 2 {
                // This write took room only `a`'s upload could give back.
                a_landed_first &= mem.get(&ObjectKey::new("a").unwrap()).is_some();
            }
        }
        close(&fs, e.attr.ino, o.fh).await;
        a_landed_first
    });
    let mut peak = 0;
    while !writer.is_finished() {
        peak = peak.max(r.fs.memory().staged());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(writer.await.unwrap(), "`b` never took room `a` still held");
    assert!(r.fs.wait_for_uploads(Duration::from_secs(600)).await);
    assert!(peak <= 6 << 20, "staged {peak} over the writes share");
    assert!(landed(&r.mem, "a", &a));
    assert!(landed(&r.mem, "b", &b));
    assert_eq!(r.fs.memory().staged(), 0);
    assert_eq!(r.fs.memory().in_use(), 0);
}

#[tokio::test(start_paused = true)]
async fn small_new_files_in_memory_wait_for_uploads_when_staging_is_memory_too() {
    // New files held in memory (heads) past the writes share spill to staging files, which
    // are memory too: the writer waits for the uploads of earlier files. 24 files of 512 KiB
    // (12 MiB) through a 6 MiB share, each upload 1 s; all land.
    let r = rig_with(16, WriteBack::Async, |c| c.temp_dir_in_memory = true);
    r.faults
        .push(Op::Write, Fault::Latency(Duration::from_secs(1)));
    let mut files = Vec::new();
    let writing = async {
        for i in 0..24 {
            let data = content(i, MIB / 2);
            let (ino, fh) = create_and_write(&r.fs, &format!("h{i}"), &data).await;
            close(&r.fs, ino, fh).await;
            assert!(r.fs.memory().in_use() <= 16 << 20);
            files.push(data);
        }
    };
    tokio::time::timeout(Duration::from_secs(3600), writing)
        .await
        .expect("the writer did not hang");
    assert!(r.fs.wait_for_uploads(Duration::from_secs(600)).await);
    assert!(!r.fs.has_dirty());
    for (i, data) in files.iter().enumerate() {
        assert!(landed(&r.mem, &format!("h{i}"), data), "h{i}");
    }
    assert_eq!(r.fs.memory().in_use(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_file_larger_than_the_share_gets_enospc_and_nothing_acknowledged_is_lost() {
    // Writes share 6 MiB; room is waited for at most 5 s.
    let r = tmpfs_rig(16, WriteBack::Async, Duration::from_secs(5));
    let big_object = vec![7u8; 7 * MIB];
    put(&r.mem, "big", &big_object).await;
    let kept = content(1, MIB);
    let (ki, kfh) = create_and_write(&r.fs, "kept", &kept).await;
    close(&r.fs, ki, kfh).await;

    let attempt = async {
        // A new file growing past the share: ENOSPC at once, and its acknowledged bytes stay.
        let (g, gfh) = create_and_write(&r.fs, "grow", &content(2, 5 * MIB)).await;
        let e =
            r.fs.write(gfh, 5 * MIB as u64, &[1u8; MIB + 1])
                .await
                .unwrap_err();
        assert_eq!(e.errno(), libc::ENOSPC, "{e}");
        assert_eq!(r.fs.getattr(g).await.unwrap().attr.size, 5 * MIB as u64);

        // An existing object larger than the share cannot be staged for a change.
        let b = r.fs.lookup(InodeNo::ROOT, "big").await.unwrap().attr.ino;
        let bfh = r.fs.open(b, libc::O_RDWR).await.unwrap().fh;
        let e = r.fs.write(bfh, 0, b"x").await.unwrap_err();
        assert_eq!(e.errno(), libc::ENOSPC, "{e}");

        // A file that would fit, while `grow` (open, not closing) holds most of the share: the
        // writer waits up to its deadline, then ENOSPC.
        let (s, sfh) = create_and_write(&r.fs, "small", b"acknowledged").await;
        let e = r.fs.write(sfh, 12, &[1u8; MIB]).await.unwrap_err();
        assert_eq!(e.errno(), libc::ENOSPC, "{e}");
        assert_eq!(
            &r.fs.read(sfh, 0, 100).await.unwrap().into_bytes()[..],
            b"acknowledged"
        );
        [(g, gfh), (b, bfh), (s, sfh)]
    };
    let open = tokio::time::timeout(Duration::from_secs(3600), attempt)
        .await
        .expect("ENOSPC came, no hang");
    for (ino, fh) in open {
        let _ = r.fs.flush(fh).await;
        r.fs.release(ino, fh).await.unwrap();
    }
    assert!(r.fs.wait_for_uploads(Duration::from_secs(600)).await);
    assert!(!r.fs.has_dirty());
    assert!(landed(&r.mem, "kept", &kept), "`kept` as acknowledged");
    assert!(
        landed(&r.mem, "grow", &content(2, 5 * MIB)),
        "no byte of the refused write"
    );
    assert!(landed(&r.mem, "small", b"acknowledged"));
    assert!(landed(&r.mem, "big", &big_object), "`big` untouched");
    assert_eq!(r.fs.memory().in_use(), 0);
}

#[tokio::test]
async fn a_temp_dir_on_disk_is_not_charged() {
    // The same 6 MiB writes share; 8 MiB staged on disk: not charged, nothing waits.
    let r = rig_with(16, WriteBack::Sync, |c| c.streaming_writes = false);
    let data = content(3, 8 * MIB);
    let (ino, fh) = create_and_write(&r.fs, "f", &data).await;
    assert_eq!(r.fs.memory().staged(), 0);
    assert_eq!(r.fs.memory().in_use(), 0);
    assert_eq!(staging_files(&r.tmp), 1);
    close(&r.fs, ino, fh).await;
    assert!(landed(&r.mem, "f", &data));
}

/// With the temp dir in memory, staging is no escape for a large new file: a writer whose file
/// would start a stream and finds no room for its buffers waits (holding no lock) until
/// another stream gives them back, then streams. Was: the file was staged in memory and failed
/// with ENOSPC once past the writes share (a 256 MiB Cloud Run container writing two large
/// files at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_temp_dir_in_memory_a_new_large_file_waits_for_stream_room() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // 80 MiB budget: the writes share (30 MiB) holds one stream's buffers (24 MiB) and a new
    // file's first 4 MiB, not two streams.
    let r = rig_with(80, WriteBack::Sync, |c| {
        c.temp_dir_in_memory = true;
        c.write_wait_limit = Duration::from_secs(60);
    });
    // A streams and stays open.
    let (a_ino, a_fh) = {
        let (e, o) =
            r.fs.create(InodeNo::ROOT, "a", 0o644, libc::O_WRONLY, ME)
                .await
                .unwrap();
        (e.attr.ino, o.fh)
    };
    let a_data = content(2, 12 * MIB);
    for (k, piece) in a_data.chunks(MIB).enumerate() {
        r.fs.write(a_fh, (k * MIB) as u64, piece).await.unwrap();
    }
    // B: 40 MiB, more than the whole writes share.
    let written = Arc::new(AtomicUsize::new(0));
    let b_data = content(3, 40 * MIB);
    let b = {
        let (fs, data, written) = (r.fs.clone(), b_data.clone(), written.clone());
        tokio::spawn(async move {
            let (e, o) = fs
                .create(InodeNo::ROOT, "b", 0o644, libc::O_WRONLY, ME)
                .await
                .unwrap();
            for (k, piece) in data.chunks(MIB).enumerate() {
                fs.write(o.fh, (k * MIB) as u64, piece).await?;
                written.store(k + 1, Ordering::Release);
            }
            fs.flush(o.fh).await?;
            fs.release(e.attr.ino, o.fh).await
        })
    };
    // B holds 3 MiB in memory and waits at the write that would start its stream.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while written.load(Ordering::Acquire) < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "B's first 3 MiB were not taken"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(written.load(Ordering::Acquire), 3, "B waits for room");
    r.fs.flush(a_fh).await.unwrap();
    r.fs.release(a_ino, a_fh).await.unwrap();
    b.await
        .unwrap()
        .expect("B streams once A gave its buffers back");
    assert!(landed(&r.mem, "a", &a_data));
    assert!(landed(&r.mem, "b", &b_data));
    assert_eq!(r.fs.memory().in_use(), 0, "everything given back");
}
