//! Putting fetched data into the kernel's page cache ahead of reads (FUSE `notify_store`).
//!
//! A random read fetches a whole block around the bytes asked for (see `read.rs`); once the
//! block has arrived it is *offered* here, and a dedicated thread stores it into the file's
//! page cache, so later reads of that block are served by the kernel without reaching gcsfs.
//! Offers are best effort: when the queue is full they are dropped.
//!
//! # Consistency: the page gate
//! Data may only be stored for the generation the page cache stands for. Each file has a
//! [`PageGate`] holding the generation that may be stored (`None` while the file is open for
//! writing, truncated or otherwise changed here). The feeder thread holds the gate across the
//! kernel call; `open`, `create` and `setattr` take it before changing what the cache stands for,
//! so a store of an old generation either lands before the kernel drops the cache on open, or
//! is refused.
//!
//! # Why this cannot deadlock
//! The kernel call may wait for pages locked by a read in progress. Such a read is answered
//! from a part's download, and downloads never wait for this thread (offers are `try_send`).
//! Whoever waits for a page gate must hold no other lock a read needs: a gate is taken before a
//! `FileCell::state`, never while holding one (see the lock order in `fs/mod.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

use bytes::Bytes;

use super::InodeNo;
use crate::store::Generation;

/// Most bytes waiting to be stored; offers beyond it are dropped.
const MAX_QUEUED_BYTES: u64 = 8 << 20;
/// Most offers waiting to be stored.
const MAX_QUEUED_JOBS: usize = 64;

/// The kernel's page cache of the mount's files.
pub trait KernelCache: Send + Sync + std::fmt::Debug + 'static {
    /// Stores `data` at `offset` of file `ino`'s cached pages. May block while the kernel holds
    /// those pages for a read in progress.
    fn store(&self, ino: InodeNo, offset: u64, data: &[u8]) -> std::io::Result<()>;
}

/// Which generation of a file the kernel's page cache may be fed; see the module docs.
#[derive(Debug, Default)]
pub struct PageGate {
    generation: tokio::sync::Mutex<Option<Generation>>,
    /// Handles open for writing.
    writers: AtomicU32,
}

impl PageGate {
    /// An open of generation `generation` (`None`: none in the bucket yet) for writing or not,
    /// with or without changes pending here: sets what may be stored from now on.
    pub async fn opened(&self, generation: Option<Generation>, writable: bool, dirty: bool) {
        if writable {
            self.writers.fetch_add(1, Ordering::AcqRel);
        }
        let mut g = self.generation.lock().await;
        let writers = self.writers.load(Ordering::Acquire);
        *g = if writers > 0 || dirty {
            None
        } else {
            generation
        };
    }

    /// A handle opened for writing was closed.
    pub fn writer_closed(&self) {
        let _ = self
            .writers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| w.checked_sub(1));
    }

    /// The file is being changed here: nothing more may be stored until it is opened again.
    pub async fn close(&self) {
        *self.generation.lock().await = None;
    }

    /// Like [`PageGate::close`], without waiting; if a store holds the gate right now it is of
    /// data this mount itself moved to the new generation (a rename, an upload), so the store
    /// in flight is still right.
    pub fn try_close(&self) {
        if let Ok(mut g) = self.generation.try_lock() {
            *g = None;
        }
    }
}

/// One offer: `data` of `ino` at `offset`, of `generation`.
struct Job {
    gate: Arc<PageGate>,
    ino: InodeNo,
    generation: Generation,
    offset: u64,
    data: Bytes,
}

/// Hands offers to the feeder thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PageFeeder {
    tx: SyncSender<Job>,
    queued: Arc<AtomicU64>,
}

impl PageFeeder {
    /// Starts the feeder thread storing into `cache`. It ends when every feeder is dropped.
    pub fn start(cache: Arc<dyn KernelCache>) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<Job>(MAX_QUEUED_JOBS);
        let queued = Arc::new(AtomicU64::new(0));
        let counter = queued.clone();
        std::thread::Builder::new()
            .name("gcsfs-pagecache".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    counter.fetch_sub(job.data.len() as u64, Ordering::AcqRel);
                    let gate = job.gate.generation.blocking_lock();
                    if *gate != Some(job.generation) {
                        continue;
                    }
                    if let Err(error) = cache.store(job.ino, job.offset, &job.data) {
                        tracing::debug!(ino = %job.ino, %error, "page cache store refused");
                    }
                    drop(gate);
                }
            })?;
        Ok(Self { tx, queued })
    }

    /// Offers `data` (of `generation`, at `offset` of `ino`) to the kernel's page cache; dropped
    /// if too much is queued already.
    pub fn offer(
        &self,
        gate: &Arc<PageGate>,
        ino: InodeNo,
        generation: Generation,
        offset: u64,
        data: Bytes,
    ) {
        let len = data.len() as u64;
        if self.queued.fetch_add(len, Ordering::AcqRel) + len > MAX_QUEUED_BYTES {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return;
        }
        let job = Job {
            gate: gate.clone(),
            ino,
            generation,
            offset,
            data,
        };
        if let Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) =
            self.tx.try_send(job)
        {
            self.queued
                .fetch_sub(job.data.len() as u64, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<(InodeNo, u64, usize)>>);

    impl KernelCache for Recorder {
        fn store(&self, ino: InodeNo, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.0.lock().unwrap().push((ino, offset, data.len()));
            Ok(())
        }
    }

    /// What was stored once `entry` was.
    fn wait_for(rec: &Recorder, entry: (InodeNo, u64, usize)) -> Vec<(InodeNo, u64, usize)> {
        for _ in 0..2500 {
            let got = rec.0.lock().unwrap().clone();
            if got.contains(&entry) {
                return got;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("{entry:?} was never stored");
    }

    #[tokio::test]
    async fn only_the_gated_generation_is_stored() {
        let rec = Arc::new(Recorder::default());
        let feeder = PageFeeder::start(rec.clone()).unwrap();
        // Jobs are stored in order by one thread: once a sentinel (of an always open gate) is
        // stored, every offer before it has been decided.
        let open = Arc::new(PageGate::default());
        open.opened(Some(Generation(9)), false, false).await;
        let mut sentinels = 0;
        let mut settle = |rec: &Recorder| {
            sentinels += 1;
            feeder.offer(&open, InodeNo(1), Generation(9), sentinels, Bytes::new());
            let got = wait_for(rec, (InodeNo(1), sentinels, 0));
            got.into_iter()
                .filter(|(ino, _, _)| *ino != InodeNo(1))
                .collect::<Vec<_>>()
        };
        let gate = Arc::new(PageGate::default());
        let (g1, g2) = (Generation(1), Generation(2));
        // A gate never opened stores nothing.
        feeder.offer(&gate, InodeNo(5), g1, 0, Bytes::from_static(b"old"));
        assert_eq!(settle(&rec), vec![]);
        // Opened at g1: g1 is stored, g2 is not.
        gate.opened(Some(g1), false, false).await;
        feeder.offer(&gate, InodeNo(5), g2, 0, Bytes::from_static(b"other"));
        feeder.offer(&gate, InodeNo(5), g1, 4096, Bytes::from_static(b"data"));
        assert_eq!(settle(&rec), vec![(InodeNo(5), 4096, 4)]);
        // A writer closes the gate, also for later read-only opens while it is open.
        gate.opened(Some(g1), true, false).await;
        gate.opened(Some(g1), false, false).await;
        feeder.offer(&gate, InodeNo(5), g1, 8192, Bytes::from_static(b"x"));
        assert_eq!(settle(&rec), vec![(InodeNo(5), 4096, 4)]);
        // Once it is closed, the next open decides again; pending changes keep it shut.
        gate.writer_closed();
        gate.opened(Some(g2), false, true).await;
        feeder.offer(&gate, InodeNo(5), g2, 12288, Bytes::from_static(b"new"));
        assert_eq!(settle(&rec), vec![(InodeNo(5), 4096, 4)]);
        gate.opened(Some(g2), false, false).await;
        feeder.offer(&gate, InodeNo(5), g2, 12288, Bytes::from_static(b"new"));
        assert_eq!(
            settle(&rec),
            vec![(InodeNo(5), 4096, 4), (InodeNo(5), 12288, 3)]
        );
        gate.close().await;
        feeder.offer(&gate, InodeNo(5), g2, 16384, Bytes::from_static(b"late"));
        assert_eq!(settle(&rec).len(), 2);
    }
}
