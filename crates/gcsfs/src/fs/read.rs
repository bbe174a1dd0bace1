//! Reads of clean files: ranged GETs pinned to the generation seen at open, with a sequential
//! prefetcher.
//!
//! A [`Reader`] belongs to one open handle. Reads that follow each other grow a window
//! (`initial_window` doubling up to `max_window`) that is fetched ahead as several parts of
//! `part_size` in parallel, each its own ranged GET running in a tokio task and filling a
//! [`Part`] progressively (a read waits only for the bytes it needs, not for the whole part).
//! Prefetch memory is bounded by a mount-wide semaphore of `prefetch_memory` bytes: demanded
//! data is always fetched, speculative parts only when the budget allows. A read far from the
//! current position drops the window and fetches what was asked (at least `random_min`).
//!
//! Locks: `Reader` sits behind a `tokio::sync::Mutex` per handle, held only to plan a read, not
//! while waiting for data; `Part::chunks` is a `std::sync::Mutex` held for copies only.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::error::{FsError, FsResult};
use crate::store::{ByteRange, ErrorKind, Generation, ObjectKey, ObjectStore, StoreError};

/// Read-path tuning. Defaults suit GCS from a Cloud Run container.
#[derive(Debug, Clone)]
pub struct ReadConfig {
    /// First prefetch window once a read looks sequential. Default 1 MiB.
    pub initial_window: u64,
    /// Largest prefetch window per handle. Default 64 MiB.
    pub max_window: u64,
    /// Size of each parallel ranged GET. Default 8 MiB.
    pub part_size: u64,
    /// Smallest GET for a random read. Default 128 KiB.
    pub random_min: u64,
    /// Mount-wide bytes of prefetched data in memory. Default 256 MiB.
    pub prefetch_memory: u64,
}

impl Default for ReadConfig {
    fn default() -> Self {
        Self {
            initial_window: 1 << 20,
            max_window: 64 << 20,
            part_size: 8 << 20,
            random_min: 128 << 10,
            prefetch_memory: 256 << 20,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Progress {
    filled: u64,
    done: bool,
    error: Option<Arc<StoreError>>,
}

/// One ranged GET `[start, end)`, filled in the background.
#[derive(Debug)]
pub struct Part {
    start: u64,
    end: u64,
    chunks: Mutex<Vec<Bytes>>,
    progress: watch::Receiver<Progress>,
    task: tokio::task::JoinHandle<()>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Part {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Part {
    fn spawn(
        store: Arc<dyn ObjectStore>,
        key: ObjectKey,
        generation: Generation,
        start: u64,
        end: u64,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Arc<Part> {
        let (tx, rx) = watch::channel(Progress::default());
        Arc::new_cyclic(|weak: &std::sync::Weak<Part>| {
            let weak = weak.clone();
            let task = tokio::spawn(async move {
                let result: Result<(), StoreError> = async {
                    let mut stream = store
                        .read(
                            &key,
                            Some(generation),
                            ByteRange {
                                start,
                                end: Some(end),
                            },
                        )
                        .await?;
                    let mut filled = 0u64;
                    while let Some(chunk) = stream.next().await {
                        let chunk = chunk?;
                        let Some(part) = weak.upgrade() else {
                            return Ok(());
                        };
                        filled += chunk.len() as u64;
                        part.chunks.lock().unwrap().push(chunk);
                        drop(part);
                        tx.send_modify(|p| p.filled = filled);
                    }
                    Ok(())
                }
                .await;
                tx.send_modify(|p| {
                    p.done = true;
                    p.error = result.err().map(Arc::new);
                });
            });
            Part {
                start,
                end,
                chunks: Mutex::new(Vec::new()),
                progress: rx,
                task,
                _permit: permit,
            }
        })
    }

    /// Waits until `[from, to)` (absolute offsets inside this part) is available and copies it
    /// into `out`.
    async fn copy_into(&self, from: u64, to: u64, out: &mut BytesMut) -> FsResult<()> {
        let mut rx = self.progress.clone();
        let need = to - self.start;
        let progress = rx
            .wait_for(|p| p.filled >= need || p.done)
            .await
            .map_err(|_| FsError::Stale("read task ended"))?
            .clone();
        if progress.filled < need {
            return Err(match progress.error {
                Some(e) if e.kind() == ErrorKind::NotFound => {
                    FsError::Stale("the generation open for reading was replaced")
                }
                Some(e) => FsError::Store(StoreError::with_source(
                    e.kind(),
                    "ranged read failed",
                    ArcError(e),
                )),
                // The object was shorter than its recorded size.
                None => FsError::Stale("object shorter than expected"),
            });
        }
        let chunks = self.chunks.lock().unwrap();
        let mut pos = self.start;
        for chunk in chunks.iter() {
            let cend = pos + chunk.len() as u64;
            if cend > from && pos < to {
                let a = from.max(pos) - pos;
                let b = to.min(cend) - pos;
                out.extend_from_slice(&chunk[a as usize..b as usize]);
            }
            pos = cend;
            if pos >= to {
                break;
            }
        }
        Ok(())
    }
}

/// Lets a shared `StoreError` be the source of another error.
#[derive(Debug)]
struct ArcError(Arc<StoreError>);

impl std::fmt::Display for ArcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ArcError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

/// The read state of one open handle, pinned to one generation.
#[derive(Debug)]
pub struct Reader {
    store: Arc<dyn ObjectStore>,
    key: ObjectKey,
    generation: Generation,
    size: u64,
    config: ReadConfig,
    budget: Arc<Semaphore>,
    parts: VecDeque<Arc<Part>>,
    /// End of the last read served; a read starting near here is sequential.
    last_end: u64,
    window: u64,
}

impl Reader {
    pub fn new(
        store: Arc<dyn ObjectStore>,
        key: ObjectKey,
        generation: Generation,
        size: u64,
        config: ReadConfig,
        budget: Arc<Semaphore>,
    ) -> Self {
        Self {
            store,
            key,
            generation,
            size,
            window: config.initial_window,
            config,
            budget,
            parts: VecDeque::new(),
            last_end: 0,
        }
    }

    /// Plans a read of `[offset, offset+len)`: returns the parts holding it, starting GETs for any
    /// missing range and for the prefetch window. Waiting for the data happens outside the lock
    /// via [`read_parts`].
    pub fn plan(&mut self, offset: u64, len: u32) -> Vec<(Arc<Part>, u64, u64)> {
        let end = (offset + len as u64).min(self.size);
        if offset >= end {
            return Vec::new();
        }
        let covered_start = self.parts.front().map(|p| p.start);
        let covered_end = self.parts.back().map(|p| p.end);
        let sequential = match (covered_start, covered_end) {
            (Some(s), Some(e)) => offset >= s && offset <= e,
            _ => offset == self.last_end,
        } || offset == self.last_end;
        if !sequential {
            // Random access: forget the window, fetch what is asked.
            self.parts.clear();
            self.window = self.config.initial_window;
        } else if offset >= self.last_end {
            self.window = (self.window * 2).min(self.config.max_window);
        }
        // Drop parts wholly behind this read.
        while self.parts.front().is_some_and(|p| p.end <= offset) {
            self.parts.pop_front();
        }
        // Make sure the demanded range is covered.
        let mut next = self.parts.back().map(|p| p.end).unwrap_or(offset);
        if self.parts.is_empty() {
            let want = if sequential {
                self.config.part_size.min(self.window)
            } else {
                self.config.random_min.max(len as u64)
            };
            let pend = (offset + want).max(end).min(self.size);
            self.push_part(offset, pend, true);
            next = pend;
        }
        while next < end {
            let pend = (next + self.config.part_size).max(end).min(self.size);
            self.push_part(next, pend, true);
            next = pend;
        }
        // Prefetch ahead while sequential, within the window and the memory budget.
        if sequential {
            let horizon = (end + self.window).min(self.size);
            while next < horizon {
                let pend = (next + self.config.part_size).min(self.size);
                if !self.push_part(next, pend, false) {
                    break;
                }
                next = pend;
            }
        }
        self.last_end = end;
        self.parts
            .iter()
            .filter(|p| p.end > offset && p.start < end)
            .map(|p| (p.clone(), p.start.max(offset), p.end.min(end)))
            .collect()
    }

    /// Starts a GET for `[start, end)`. Demanded parts always start (holding budget if there is
    /// some); speculative ones only when the budget allows. Returns whether it started.
    fn push_part(&mut self, start: u64, end: u64, demanded: bool) -> bool {
        let bytes = u32::try_from(end - start).unwrap_or(u32::MAX);
        let permit = self.budget.clone().try_acquire_many_owned(bytes).ok();
        if permit.is_none() && !demanded {
            return false;
        }
        let part = Part::spawn(
            self.store.clone(),
            self.key.clone(),
            self.generation,
            start,
            end,
            permit,
        );
        self.parts.push_back(part);
        true
    }
}

/// Waits for planned parts and assembles the reply.
pub async fn read_parts(plan: Vec<(Arc<Part>, u64, u64)>) -> FsResult<Bytes> {
    let total: u64 = plan.iter().map(|(_, a, b)| b - a).sum();
    let mut out = BytesMut::with_capacity(total as usize);
    for (part, from, to) in plan {
        part.copy_into(from, to, &mut out).await?;
    }
    Ok(out.freeze())
}

/// The mount-wide prefetch memory budget.
pub fn budget(config: &ReadConfig) -> Arc<Semaphore> {
    let permits = usize::try_from(config.prefetch_memory)
        .unwrap_or(usize::MAX)
        .min(Semaphore::MAX_PERMITS);
    Arc::new(Semaphore::new(permits))
}
