//! The drain at shutdown, on `MemStore`: uploads run in parallel, writes racing its start are
//! either refused or saved (never accepted and then lost), and every file not saved is named.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gcsfs::fs::{Filesystem, FsConfig, InodeNo, ManualClock};
use gcsfs::store::mem::MemStore;
use gcsfs::store::{Fault, FaultStore, ObjectKey, ObjectStore, Op, RetryConfig, RetryStore};
use tokio::time::Instant;

/// The process the tests act as: root, the mount's default owner.
const ME: gcsfs::fs::Caller = gcsfs::fs::Caller { uid: 0, gid: 0 };

fn fs_over(store: Arc<dyn ObjectStore>, tmp: &tempfile::TempDir, concurrency: usize) -> Filesystem {
    Filesystem::new(
        store,
        FsConfig {
            temp_dir: tmp.path().into(),
            upload_concurrency: concurrency,
            ..Default::default()
        },
        Arc::new(ManualClock::default()),
    )
}

/// The object's data in the bucket, if any.
fn get(mem: &MemStore, key: &str) -> Option<Vec<u8>> {
    mem.get(&ObjectKey::new(key).ok()?)
        .map(|(_, data)| data.to_vec())
}

#[tokio::test(start_paused = true)]
async fn the_drain_uploads_files_in_parallel() {
    // Every upload takes 1 s (store latency): 64 dirty files at 16 at a time take 4 s, not 64.
    let mem = Arc::new(MemStore::new());
    let faults = Arc::new(FaultStore::new(mem.clone()));
    faults.push(Op::Write, Fault::Latency(Duration::from_secs(1)));
    let tmp = tempfile::tempdir().unwrap();
    let fs = fs_over(faults.clone(), &tmp, 16);
    let mut open = Vec::new();
    for i in 0..64 {
        let (e, o) = fs
            .create(InodeNo::ROOT, &format!("f{i}"), 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap();
        fs.write(o.fh, 0, format!("data {i}").as_bytes())
            .await
            .unwrap();
        open.push((e.attr.ino, o.fh));
    }
    let started = Instant::now();
    let failures = fs.drain(started + Duration::from_secs(30)).await;
    assert!(failures.is_empty(), "{failures:?}");
    let took = started.elapsed();
    assert!(
        took <= Duration::from_secs(6),
        "took {took:?} (virtual time)"
    );
    for i in 0..64 {
        assert_eq!(
            get(&mem, &format!("f{i}")).unwrap(),
            format!("data {i}").as_bytes()
        );
    }
    // The gate is closed: a new change is refused.
    let late = fs
        .create(InodeNo::ROOT, "late", 0o644, libc::O_WRONLY, ME)
        .await;
    assert_eq!(late.unwrap_err().errno(), libc::EROFS);
    assert!(fs.is_shutting_down());
}

#[tokio::test(start_paused = true)]
async fn files_not_saved_by_the_deadline_are_named() {
    // Each upload takes 10 s; the drain has 15 s at 2 at a time: two files make it (started at
    // once, never cut at the half-time mark), the others cannot.
    let mem = Arc::new(MemStore::new());
    let faults = Arc::new(FaultStore::new(mem.clone()));
    faults.push(Op::Write, Fault::Latency(Duration::from_secs(10)));
    let tmp = tempfile::tempdir().unwrap();
    let fs = fs_over(faults.clone(), &tmp, 2);
    for i in 0..6 {
        let (_, o) = fs
            .create(InodeNo::ROOT, &format!("f{i}"), 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap();
        fs.write(o.fh, 0, b"x").await.unwrap();
    }
    let started = Instant::now();
    let failures = fs.drain(started + Duration::from_secs(15)).await;
    assert!(
        started.elapsed() <= Duration::from_secs(16),
        "{:?}",
        started.elapsed()
    );
    let named: BTreeSet<String> = failures.iter().map(|f| f.path.clone()).collect();
    for i in 0..6 {
        let path = format!("/f{i}");
        let saved = get(&mem, &format!("f{i}")).is_some();
        assert!(
            saved != named.contains(&path),
            "{path}: saved {saved}, named {}",
            named.contains(&path)
        );
    }
    assert_eq!(named.len(), 4, "{named:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_racing_the_drain_is_saved_or_refused_never_lost() {
    // Writers keep creating and writing files (left open, so only the drain saves them) while
    // the drain starts. Every write that returned success must be in the bucket afterwards,
    // or named by the drain; writes after the final pass began are refused.
    for round in 0..50 {
        let mem = Arc::new(MemStore::new());
        let store = Arc::new(RetryStore::new(mem.clone(), RetryConfig::default()));
        let tmp = tempfile::tempdir().unwrap();
        let fs = Arc::new(fs_over(store, &tmp, 4));
        // Each writer says when its first write went through: the drain starts only then, so
        // every round races writes in progress (however the threads are scheduled).
        let started = Arc::new(tokio::sync::Semaphore::new(0));
        let mut writers = Vec::new();
        for w in 0..4 {
            let fs = fs.clone();
            let started = started.clone();
            writers.push(tokio::spawn(async move {
                // Until refused: writers stop only when the gate closes on them.
                let mut acknowledged = Vec::new();
                for i in 0.. {
                    let name = format!("w{w}-{i}");
                    let (_, o) = match fs
                        .create(InodeNo::ROOT, &name, 0o644, libc::O_WRONLY, ME)
                        .await
                    {
                        Ok(created) => created,
                        Err(e) => {
                            assert_eq!(e.errno(), libc::EROFS, "{name}: {e:?}");
                            break;
                        }
                    };
                    let data = Bytes::from(format!("{name} round {round}"));
                    if let Err(e) = fs.write(o.fh, 0, &data).await {
                        assert_eq!(e.errno(), libc::EROFS, "{name}: {e:?}");
                        break;
                    }
                    acknowledged.push((name, data));
                    if i == 0 {
                        started.add_permits(1);
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                acknowledged
            }));
        }
        drop(started.acquire_many(4).await.unwrap());
        // Writers that never stop keep the first passes busy until half the time is used,
        // then the gate closes.
        let failures = fs.drain(Instant::now() + Duration::from_secs(1)).await;
        let named: BTreeSet<String> = failures.iter().map(|f| f.path.clone()).collect();
        let mut total = 0;
        for w in writers {
            for (name, data) in w.await.unwrap() {
                total += 1;
                let saved = get(&mem, &name);
                assert!(
                    saved.as_deref() == Some(&data[..]) || named.contains(&format!("/{name}")),
                    "round {round}: {name} was acknowledged and is neither saved nor named"
                );
            }
        }
        assert!(
            total >= 4,
            "round {round}: each writer wrote before the drain"
        );
        assert!(
            !fs.has_dirty(),
            "round {round}: a file is still dirty after the drain"
        );
    }
}
