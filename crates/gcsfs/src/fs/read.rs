//! Reads of clean files: ranged GETs pinned to the generation seen at open.
//!
//! A [`Reader`] belongs to one open handle and sorts reads into two patterns:
//!
//! - **Sequential** — a read inside or just after what is being fetched (or at the end of the
//!   previous read). The file is fetched as a stream of [`Part`]s: ranged GETs of one
//!   `block_size`-aligned block each, several in flight. Parts for what the kernel asked start
//!   at once; beyond the furthest byte asked, blocks are fetched speculatively within a window
//!   (`initial_window`, doubling up to `max_window`) and the mount-wide `prefetch_memory`
//!   budget. When the kernel's own read-ahead on the mount is large (gcsfs raises it where it
//!   may, see `Filesystem::set_kernel_readahead`), the kernel asks far ahead by itself and holds
//!   the data in its page cache; the speculative window then shrinks to one block, so little data
//!   waits in gcsfs's memory.
//! - **Random** — any other read fetches the aligned block around it. The read is answered as
//!   soon as its own bytes arrive; the whole block is then offered to the kernel's page cache
//!   (`page_cache.rs`), so later reads nearby need no request at all. A random read ahead of
//!   the stream ends the stream; one behind it (the kernel asking again for pages its
//!   read-ahead dropped) leaves the stream as it is. The block is held from the prefetch
//!   budget; without room, only the pages the read asked for are fetched (and not offered).
//!   A reader keeps its last two blocks, until its sequential stream has passed them by the
//!   same distance at which it forgets its own parts.
//!
//!   The block's size adapts per reader ([`RandomBlock`]): it starts at `random_block` (1 MiB)
//!   and halves, down to `random_block_min` (64 KiB), after 8 random fetches in a row in
//!   1 MiB regions the reader never fetched from (a file read at random where no block is of
//!   use twice: 256 bytes fetched per byte of a 4 KiB read at 1 MiB, 16 at 64 KiB). A read
//!   that comes back to a region fetched before (its pages dropped, or outside a smaller
//!   block) or into a kept block restores the whole block at once, and the next halving waits
//!   twice as long (up to 256 fetches). Since reads the page cache serves never reach gcsfs,
//!   locality is seen only once the block is smaller: on a file read at random that the page
//!   cache can hold, reads soon come back to regions fetched before and the block stays whole
//!   (`benches/README.md`: random 4 KiB reads of a 1 GiB file within noise of a fixed block,
//!   first-touch reads 29 bytes fetched per byte read instead of 256). The floor
//!   is 64 KiB rather than the read's own pages because a GET costs its round trip (~30 ms);
//!   64 KiB more take well under a millisecond on the wire and serve neighbours (a database's
//!   8–16 KiB pages, a zip entry's header and data). A block always holds every page the read
//!   asked for.
//!
//! Speculative parts take from the mount's prefetch budget, each reader within its fair share
//! (the budget divided by the readers alive, at least one part's buffer), so one reader far
//! ahead in a big file never leaves the others (a data loader's many files) without read-ahead;
//! parts a read is waiting for start whatever the share.
//!
//! A part hands bytes to reads as they arrive (a read waits only for its own bytes) and a
//! stream part frees what reads have taken. A read is registered on its parts as it is planned,
//! so they keep its bytes and do not pause short of them; a part holding more than
//! `PART_BUFFER` lets go of what lies more than `LET_GO_MARGIN` below every registered read
//! (the kernel's read-ahead reads arrive a little out of order; a random read that looked
//! sequential must not make a part hold all before it). If the kernel asks again for bytes
//! already freed (it dropped its cached pages), they are fetched again.
//!
//! Locks: a `Reader` sits behind a `tokio::sync::Mutex` per handle, held only to plan a read,
//! never while waiting for data. A part's `buffer` and `waiting` are `parking_lot` mutexes,
//! each held for a lookup or a count and never with the other or across an await.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::InodeNo;
use super::error::{FsError, FsResult};
use super::page_cache::{PageFeeder, PageGate};
use super::read_data::ReadData;
use crate::store::{ByteRange, ErrorKind, Generation, ObjectKey, ObjectStore, StoreError};

/// The kernel's page size: what a random read fetches at least.
const PAGE: u64 = 4096;

/// Random blocks a reader keeps for reads that come before the kernel has them cached (a
/// sequential stream lets go of those it has passed, as of its own parts).
const RANDOM_BLOCKS_KEPT: usize = 2;
/// Fresh random fetches in a row (see [`RandomBlock`]) after which a reader's random block
/// halves, at first.
const SHRINK_AFTER: u32 = 8;
/// The most fresh fetches in a row a reader waits for before halving its random block: each
/// time reads showed a smaller block wrong, the wait doubles up to this.
const SHRINK_AFTER_MAX: u32 = 256;
/// `random_block` regions a reader remembers having fetched from (8 KiB at most): with the
/// default 1 MiB block, any region of a 1 GiB file.
const REGIONS_REMEMBERED: usize = 1024;
/// Bytes a stream part holds that no read has taken (nor waits for) before it stops pulling
/// from its GET: the rest waits in the connection until reads ask for it. A part pulls on while
/// a read waits for bytes not yet arrived, so this bounds only what sits unclaimed while reads
/// are slower than the network (4 sequential readers: 2 MiB held ~4 MiB more per reader than
/// 1 MiB, and 512 KiB ~1 MiB less again, at the same speed).
const PART_BUFFER: u64 = 512 << 10;
/// The largest read the kernel sends (`fuse::MAX_IO`): a waiting read's bytes start at most
/// this far before its end.
const MAX_READ: u64 = 1 << 20;
/// How far below the nearest waiting read a stream part holding more than [`PART_BUFFER`]
/// keeps the bytes no read has taken. The kernel's read-ahead sends its reads in order, but
/// they reach gcsfs's reader out of order (several FUSE threads, tasks on several workers):
/// a read planned a few MiB after the reads beyond it still finds its bytes. At one read's
/// worth, 1–2 % of a 4-reader sequential read was fetched a second time, each such read
/// waiting a round trip.
const LET_GO_MARGIN: u64 = 4 * MAX_READ;

/// Read-path tuning. Defaults suit GCS from a Cloud Run container.
#[derive(Debug, Clone)]
pub struct ReadConfig {
    /// Size (and alignment) of each ranged GET of a sequential read. Default 32 MiB: with a
    /// large kernel read-ahead several are in flight at once, and each pays one round trip.
    pub block_size: u64,
    /// First speculative window beyond the furthest byte asked, once reads look sequential.
    /// Default 1 MiB.
    pub initial_window: u64,
    /// Largest speculative window (`--max-read-ahead-mb`), used when the kernel's own read-ahead
    /// is small. Default 16 MiB (speculative parts hold at most `PART_BUFFER` each in memory).
    pub max_window: u64,
    /// Largest size (and alignment) of the GET around a random read: where a reader's random
    /// block starts, and what it grows back to when reads land near earlier ones. Default 1 MiB.
    pub random_block: u64,
    /// Smallest random block a reader shrinks to when its reads never come back to the blocks
    /// fetched before (a read still gets at least its own pages). Default 64 KiB.
    pub random_block_min: u64,
    /// Mount-wide bytes of speculative data in memory (`--prefetch-memory-mb`). Default 64 MiB.
    pub prefetch_memory: u64,
}

impl Default for ReadConfig {
    fn default() -> Self {
        Self {
            block_size: 32 << 20,
            initial_window: 1 << 20,
            max_window: 16 << 20,
            random_block: 1 << 20,
            random_block_min: 64 << 10,
            prefetch_memory: 64 << 20,
        }
    }
}

/// The size of the block a reader's random reads fetch, adapting to whether reads come back
/// to the blocks fetched before.
///
/// The file is seen in regions of `random_block` (the largest block), and the reader remembers
/// the last [`REGIONS_REMEMBERED`] regions it fetched from. A random fetch is *fresh* when its
/// region is not among them; it *returns* when it is (a whole block would have held this read:
/// the kernel dropped the pages, or the block was smaller). A read served by a kept block also
/// returns. The block starts at `random_block`; after `patience` fresh fetches in a row it
/// halves (down to `random_block_min`); a return brings it back to `random_block` at once, and
/// if the block was smaller the patience doubles (from [`SHRINK_AFTER`] up to
/// [`SHRINK_AFTER_MAX`]): a reader whose reads do come back stops shrinking soon.
///
/// gcsfs sees only the reads the kernel's page cache missed: once a block is offered there,
/// reads in it never reach gcsfs, so at the largest block every read gcsfs sees looks fresh,
/// locality or not. The block shrinks to find out, and the returns at the smaller size say
/// whether the larger was of use (on a file read at random that the page cache can hold, the
/// share of returns is the share of the file already read).
#[derive(Debug)]
struct RandomBlock {
    size: u64,
    max: u64,
    min: u64,
    /// Regions (offset / `max`) fetched from, oldest first.
    regions: VecDeque<u64>,
    /// Fresh fetches in a row.
    fresh: u32,
    /// Fresh fetches in a row that halve the block.
    patience: u32,
}

impl RandomBlock {
    fn new(config: &ReadConfig) -> Self {
        let max = config.random_block.max(PAGE);
        Self {
            size: max,
            max,
            min: (config.random_block_min / PAGE * PAGE).clamp(PAGE, max),
            regions: VecDeque::new(),
            fresh: 0,
            patience: SHRINK_AFTER,
        }
    }

    /// A random read of `[offset, end)` that no kept block holds: the size of the block to
    /// fetch around it.
    fn fetch(&mut self, offset: u64, end: u64) -> u64 {
        let (first, last) = (offset / self.max, (end.max(offset + 1) - 1) / self.max);
        if (first..=last).any(|r| self.regions.contains(&r)) {
            self.returned();
        } else {
            self.fresh += 1;
            if self.fresh > self.patience {
                self.size = (self.size / 2 / PAGE * PAGE).max(self.min);
                self.fresh = 1;
            }
        }
        for r in first..=last {
            if !self.regions.contains(&r) {
                if self.regions.len() == REGIONS_REMEMBERED {
                    self.regions.pop_front();
                }
                self.regions.push_back(r);
            }
        }
        self.size
    }

    /// A read came back to what an earlier block held (or would have, at full size).
    fn returned(&mut self) {
        if self.size < self.max {
            self.size = self.max;
            self.patience = (self.patience * 2).min(SHRINK_AFTER_MAX);
        }
        self.fresh = 0;
    }
}

#[derive(Debug, Clone, Default)]
struct Progress {
    filled: u64,
    done: bool,
    error: Option<Arc<StoreError>>,
}

/// Bytes of a part that reads may still take.
#[derive(Debug, Default)]
struct Buffer {
    /// Chunks not freed, by absolute start offset. Chunks arrive in order; freeing can leave
    /// holes (reads take their ranges in any order).
    chunks: BTreeMap<u64, Bytes>,
    /// The absolute offset the next chunk will start at.
    end: u64,
    /// Bytes in `chunks`.
    held: u64,
    /// Ranges reads took, sorted, disjoint and not touching: a chunk is freed once one of
    /// them covers it whole (a chunk can straddle two reads).
    taken: Vec<(u64, u64)>,
}

impl Buffer {
    fn starting_at(start: u64) -> Buffer {
        Buffer {
            end: start,
            ..Default::default()
        }
    }

    fn push(&mut self, chunk: Bytes) {
        let len = chunk.len() as u64;
        if len > 0 {
            self.chunks.insert(self.end, chunk);
            self.end += len;
            self.held += len;
        }
    }

    /// Appends views of `[from, to)` (slices of the chunks that hold it, no copy) to `out` if
    /// every byte of it is still held; appends nothing otherwise.
    fn views(&self, from: u64, to: u64, out: &mut Vec<Bytes>) -> bool {
        let first = match self.chunks.range(..=from).next_back() {
            Some((&k, _)) => k,
            None => return from >= to,
        };
        let mark = out.len();
        let mut pos = first;
        for (&k, chunk) in self.chunks.range(first..) {
            if k != pos || pos >= to {
                break;
            }
            let cend = k + chunk.len() as u64;
            if cend > from {
                out.push(chunk.slice((from.max(k) - k) as usize..(to.min(cend) - k) as usize));
            }
            pos = cend;
        }
        if pos < to {
            out.truncate(mark);
            return false;
        }
        true
    }

    /// Records that `[from, to)` was taken and frees every chunk a taken range covers whole.
    fn take(&mut self, from: u64, to: u64) {
        let at = self.taken.partition_point(|&(_, b)| b < from);
        let mut merged = (from, to);
        while let Some(&(a, b)) = self.taken.get(at)
            && a <= merged.1
        {
            merged = (merged.0.min(a), merged.1.max(b));
            self.taken.remove(at);
        }
        self.taken.insert(at, merged);
        let (a, b) = merged;
        let whole: Vec<u64> = self
            .chunks
            .range(a..b)
            .filter(|&(&k, c)| k + c.len() as u64 <= b)
            .map(|(&k, _)| k)
            .collect();
        for k in whole {
            if let Some(c) = self.chunks.remove(&k) {
                self.held -= c.len() as u64;
            }
        }
    }
}

/// Where a finished random block goes besides the reads that asked for it.
#[derive(Debug, Clone)]
pub struct Offer {
    pub feeder: PageFeeder,
    pub gate: Arc<PageGate>,
    pub ino: InodeNo,
}

/// One ranged GET `[start, end)`, filled in the background.
#[derive(Debug)]
pub struct Part {
    start: u64,
    end: u64,
    /// Free bytes once taken (stream parts); random blocks keep theirs for the page cache.
    frees: bool,
    buffer: Mutex<Buffer>,
    progress: watch::Receiver<Progress>,
    /// Ends of the ranges reads are waiting for (with how many wait for each); they decide
    /// whether a download holding much may go on (see the fill loop).
    waiting: Mutex<BTreeMap<u64, u32>>,
    wake: Arc<tokio::sync::Notify>,
    /// The download, stopped when the part is dropped.
    task: Mutex<Option<tokio::task::AbortHandle>>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Part {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().take() {
            task.abort();
        }
    }
}

impl Part {
    /// Prefetch budget this part holds.
    fn charged(&self) -> u64 {
        self._permit.as_ref().map_or(0, |p| p.num_permits() as u64)
    }

    fn spawn(
        source: &Source,
        start: u64,
        end: u64,
        frees: bool,
        permit: Option<OwnedSemaphorePermit>,
        offer: Option<Offer>,
    ) -> Arc<Part> {
        let (tx, rx) = watch::channel(Progress::default());
        let (store, key, generation) =
            (source.store.clone(), source.key.clone(), source.generation);
        let part = Arc::new(Part {
            start,
            end,
            frees,
            buffer: Mutex::new(Buffer::starting_at(start)),
            progress: rx,
            waiting: Mutex::default(),
            wake: Arc::default(),
            task: Mutex::new(None),
            _permit: permit,
        });
        // The task holds the part weakly: dropping the part ends the download.
        let weak = Arc::downgrade(&part);
        {
            let task = tokio::spawn(async move {
                let result: Result<(), StoreError> = async {
                    let range = ByteRange {
                        start,
                        end: Some(end),
                    };
                    let mut stream = store.read(&key, Some(generation), range).await?;
                    let mut filled = 0u64;
                    loop {
                        // A stream part holding `PART_BUFFER` bytes no read has taken pulls no
                        // further unless every waiting read needs more: if none waits, what
                        // it holds is speculative; if one can be answered already, it will take
                        // its bytes and wake this loop. Never paused while all waiting reads
                        // need more, it cannot hold up a read.
                        if frees {
                            let Some(part) = weak.upgrade() else {
                                return Ok(());
                            };
                            let wake = part.wake.clone();
                            let arrived = start + filled;
                            let held = part.buffer.lock().held;
                            let nearest = part.waiting.lock().keys().next().copied();
                            drop(part);
                            if held >= PART_BUFFER && nearest.is_none_or(|to| to <= arrived) {
                                wake.notified().await;
                                continue;
                            }
                        }
                        let Some(chunk) = stream.next().await else {
                            break;
                        };
                        let chunk = chunk?;
                        let Some(part) = weak.upgrade() else {
                            return Ok(());
                        };
                        filled += chunk.len() as u64;
                        // A read waiting far into a stream part (a random read that looked
                        // sequential) must not make it hold everything before that read: past
                        // `PART_BUFFER`, bytes below every waiting read are let go (a later
                        // read of them fetches them again).
                        let over = {
                            let mut buffer = part.buffer.lock();
                            buffer.push(chunk);
                            frees && buffer.held > PART_BUFFER
                        };
                        let nearest = over
                            .then(|| part.waiting.lock().keys().next().copied())
                            .flatten();
                        if let Some(nearest) = nearest {
                            let floor = nearest.saturating_sub(LET_GO_MARGIN).min(start + filled);
                            let mut buffer = part.buffer.lock();
                            if let Some((&first, _)) = buffer.chunks.first_key_value()
                                && first < floor
                            {
                                buffer.take(first, floor);
                            }
                        }
                        drop(part);
                        tx.send_modify(|p| p.filled = filled);
                    }
                    Ok(())
                }
                .await;
                let complete = result.is_ok() && tx.borrow().filled == end - start;
                tx.send_modify(|p| {
                    p.done = true;
                    p.error = result.err().map(Arc::new);
                });
                if let (true, Some(offer), Some(part)) = (complete, offer, weak.upgrade()) {
                    part.offer(offer, generation);
                }
            });
            *part.task.lock() = Some(task.abort_handle());
        }
        part
    }

    /// Hands the whole (complete) part to the kernel's page cache.
    fn offer(&self, offer: Offer, generation: Generation) {
        let data = {
            let mut views = Vec::new();
            if !self.buffer.lock().views(self.start, self.end, &mut views) {
                return;
            }
            ReadData::from_pieces(views).into_bytes()
        };
        offer
            .feeder
            .offer(&offer.gate, offer.ino, generation, self.start, data);
    }

    fn contains(&self, pos: u64) -> bool {
        self.start <= pos && pos < self.end
    }

    /// Registers a read that needs this part's bytes up to `to` (an absolute offset inside
    /// it): until the returned guard is dropped, after the read has taken them, the part keeps
    /// them and its download does not pause short of them. A read registers when it is planned,
    /// under its reader's lock, so bytes planned for are never let go before the read's task
    /// gets to run (a read spanning two parts waits for the first before the second).
    fn wait_for(self: &Arc<Self>, to: u64) -> Waiting {
        *self.waiting.lock().entry(to).or_default() += 1;
        if self.progress.borrow().filled < to - self.start {
            self.wake.notify_one();
        }
        Waiting {
            part: self.clone(),
            to,
        }
    }

    /// Waits until the part holds its bytes up to `to`.
    async fn arrived(&self, to: u64) -> FsResult<()> {
        let mut rx = self.progress.clone();
        let need = to - self.start;
        let progress = rx
            .wait_for(|p| p.filled >= need || p.done)
            .await
            .map(|p| p.clone());
        let progress = progress.map_err(|_| FsError::Stale("read task ended"))?;
        if progress.filled >= need {
            return Ok(());
        }
        Err(match progress.error {
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
        })
    }

    /// Takes `[from, to)` (absolute offsets inside this part, arrived): appends views of its
    /// chunks to `out`; a stream part then frees what reads have taken (a view keeps its chunk
    /// alive until the reply is sent). `false` if those bytes were freed already.
    fn take_views(&self, from: u64, to: u64, out: &mut Vec<Bytes>) -> bool {
        let mut buffer = self.buffer.lock();
        if !buffer.views(from, to, out) {
            return false;
        }
        // A stream part frees what a read took (and may pull again); a random block keeps it.
        if self.frees {
            buffer.take(from, to);
            drop(buffer);
            self.wake.notify_one();
        }
        true
    }
}

/// A read planned on a part (waiting for its bytes, or taking them), until dropped.
#[derive(Debug)]
struct Waiting {
    part: Arc<Part>,
    to: u64,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut waiting = self.part.waiting.lock();
        if let Some(n) = waiting.get_mut(&self.to) {
            *n -= 1;
            if *n == 0 {
                waiting.remove(&self.to);
            }
        }
        drop(waiting);
        // The download may be paused for this read to take its bytes.
        self.part.wake.notify_one();
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

/// What parts are fetched from: one generation of one object.
#[derive(Debug, Clone)]
struct Source {
    store: Arc<dyn ObjectStore>,
    key: ObjectKey,
    generation: Generation,
}

/// The parts that serve one read, and what to fetch again if some bytes were freed.
#[derive(Debug)]
pub struct Plan {
    /// Each piece's part (the read registered on it up to its end) and where it starts.
    pieces: Vec<(Waiting, u64)>,
    source: Source,
}

/// What readers of one mount share.
#[derive(Debug, Clone)]
pub struct ReadContext {
    pub config: ReadConfig,
    /// The mount-wide prefetch memory budget.
    pub budget: Arc<Semaphore>,
    /// Its size, in bytes.
    pub budget_size: u64,
    /// Readers alive on the mount (each open handle that has read), for each one's fair share
    /// of the budget.
    pub readers: Arc<AtomicUsize>,
    /// The kernel's read-ahead on the mount, in bytes.
    pub kernel_readahead: u64,
    /// Where complete random blocks are offered (none: not offered).
    pub offer: Option<Offer>,
}

/// The read state of one open handle, pinned to one generation.
#[derive(Debug)]
pub struct Reader {
    source: Source,
    size: u64,
    ctx: ReadContext,
    /// The sequential stream: disjoint parts by start offset.
    stream: BTreeMap<u64, Arc<Part>>,
    /// Recent random blocks, newest last.
    blocks: VecDeque<Arc<Part>>,
    /// The size of the next random block.
    random_block: RandomBlock,
    /// End of the last read.
    last_end: u64,
    /// End of the furthest sequential read.
    furthest: u64,
    /// The speculative window.
    window: u64,
}

impl Reader {
    /// A reader of `key` at `generation`, `size` bytes long.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        key: ObjectKey,
        generation: Generation,
        size: u64,
        ctx: ReadContext,
    ) -> Self {
        ctx.readers.fetch_add(1, Ordering::Relaxed);
        Self {
            source: Source {
                store,
                key,
                generation,
            },
            size,
            window: ctx.config.initial_window,
            random_block: RandomBlock::new(&ctx.config),
            ctx,
            stream: BTreeMap::new(),
            blocks: VecDeque::new(),
            last_end: 0,
            furthest: 0,
        }
    }

    fn block_size(&self) -> u64 {
        self.ctx.config.block_size.max(1)
    }

    /// Prefetch budget this reader's parts hold.
    fn held(&self) -> u64 {
        self.stream
            .values()
            .chain(self.blocks.iter())
            .map(|p| p.charged())
            .sum()
    }

    /// This reader's fair share of the prefetch budget: an equal part for each reader alive,
    /// but at least one part's buffer, so every reader keeps some read-ahead.
    fn fair_share(&self) -> u64 {
        let readers = self.ctx.readers.load(Ordering::Relaxed).max(1) as u64;
        (self.ctx.budget_size / readers).max(PART_BUFFER)
    }

    /// How far reads may run ahead of (or out of order within) the stream and still count as
    /// sequential: the kernel's read-ahead issues many reads at once.
    fn slack(&self) -> u64 {
        self.ctx.kernel_readahead.max(self.block_size())
    }

    /// Plans a read of `[offset, offset+len)`: returns the parts holding it, starting GETs for
    /// whatever is missing and for the read-ahead. Waiting for the data happens outside the
    /// reader's lock, in [`read_planned`].
    pub fn plan(&mut self, offset: u64, len: u32) -> Plan {
        let end = (offset + len as u64).min(self.size);
        let mut pieces = Vec::new();
        if offset < end {
            if self.is_sequential(offset) {
                self.sequential(offset, end);
            } else if self.in_blocks(offset, end) {
                self.random_block.returned();
            } else {
                self.random(offset, end);
            }
            self.last_end = end;
            let mut pos = offset;
            while pos < end {
                let part = match self.find(pos) {
                    Some(p) => p,
                    // Not covered (the steps above cover every read): fetch it on its own.
                    None => Part::spawn(&self.source, pos, end, false, None, None),
                };
                let to = part.end.min(end);
                pieces.push((part.wait_for(to), pos));
                pos = to;
            }
        }
        Plan {
            pieces,
            source: self.source.clone(),
        }
    }

    fn is_sequential(&self, offset: u64) -> bool {
        if self.last_end == 0 && self.stream.is_empty() && offset < self.slack() {
            // The first reads of a handle near the start (planned in any order).
            return true;
        }
        if let (Some((_, first)), Some((_, last))) =
            (self.stream.first_key_value(), self.stream.last_key_value())
            && offset + self.slack() >= first.start
            && offset <= last.end + self.slack()
        {
            return true;
        }
        offset == self.last_end
    }

    fn in_blocks(&self, offset: u64, end: u64) -> bool {
        let mut pos = offset;
        while pos < end {
            match self.blocks.iter().find(|p| p.contains(pos)) {
                Some(p) => pos = p.end,
                None => return false,
            }
        }
        true
    }

    /// The part (stream first, then random blocks) holding byte `pos`.
    fn find(&self, pos: u64) -> Option<Arc<Part>> {
        self.find_stream(pos)
            .or_else(|| self.blocks.iter().rev().find(|p| p.contains(pos)).cloned())
    }

    fn find_stream(&self, pos: u64) -> Option<Arc<Part>> {
        let (_, p) = self.stream.range(..=pos).next_back()?;
        p.contains(pos).then(|| p.clone())
    }

    /// The end of a stream part starting at `pos`: the end of its block, or the start of the
    /// next part if that comes first.
    fn part_end(&self, pos: u64) -> u64 {
        let b = self.block_size();
        let mut end = ((pos / b) + 1) * b;
        if let Some((&next, _)) = self.stream.range(pos + 1..).next() {
            end = end.min(next);
        }
        end.min(self.size)
    }

    /// Starts a stream part at `pos`, up to the end of its block. (Starting earlier, at the
    /// block's start, would fetch bytes the kernel may ask for much later: they would wait in
    /// memory.) A part holds at most about `PART_BUFFER` bytes nobody asked for, which is what
    /// it takes from the mount-wide budget. Speculative parts (`demanded` is `None`) start only
    /// within the budget. A part demanded by a read ending at `demanded` starts anyway; past the
    /// budget it ends at the `random_block` boundary after that read, so it holds nothing
    /// speculative (random reads that look sequential cannot pile up paused parts).
    fn start_part(&mut self, pos: u64, demanded: Option<u64>) -> Option<u64> {
        let start = pos;
        let mut pend = self.part_end(start);
        let holds = (pend - start).min(PART_BUFFER);
        // Speculation stays within this reader's fair share, so that one reader far ahead in
        // a big file does not leave the others (a data loader's many files) none.
        let within_share = demanded.is_some() || self.held() + holds <= self.fair_share();
        let permit = within_share
            .then(|| {
                self.ctx
                    .budget
                    .clone()
                    .try_acquire_many_owned(u32::try_from(holds).unwrap_or(u32::MAX))
                    .ok()
            })
            .flatten();
        if permit.is_none() {
            let read_end = demanded?;
            let rb = self.ctx.config.random_block.max(1);
            pend = pend.min(read_end.div_ceil(rb).saturating_mul(rb));
        }
        let p = Part::spawn(&self.source, start, pend, true, permit, None);
        self.stream.insert(start, p);
        Some(pend)
    }

    fn sequential(&mut self, offset: u64, end: u64) {
        if offset >= self.last_end {
            self.window = (self.window * 2).min(self.ctx.config.max_window);
        }
        // Forget parts well behind this read.
        let behind = offset.saturating_sub(self.slack());
        while let Some((&start, p)) = self.stream.first_key_value() {
            if p.end > behind {
                break;
            }
            self.stream.remove(&start);
        }
        // And random blocks as far behind: a reader that began far into the file (fio's jobs
        // on their quarters, a resumed download) kept the block of its first read, 1 MiB
        // charged to the budget and held to the end (4 sequential readers: 3 MiB of a 40 MiB
        // peak, measured 4 MiB less with it let go).
        self.blocks.retain(|b| b.end > behind);
        // Whatever this read needs is fetched now.
        let mut pos = offset;
        while pos < end {
            pos = match self.find_stream(pos) {
                Some(p) => p.end,
                None => self.start_part(pos, Some(end)).unwrap_or(end),
            };
        }
        self.furthest = self.furthest.max(end);
        // Then ahead of the furthest byte asked, within the window and the budget. With a
        // large kernel read-ahead the kernel asks ahead itself: one block is enough.
        let window = if self.ctx.kernel_readahead >= 2 * self.block_size() {
            self.block_size()
        } else {
            self.window
        };
        let horizon = (self.furthest + window).min(self.size);
        let mut pos = self.furthest;
        while pos < horizon {
            pos = match self.find_stream(pos) {
                Some(p) => p.end,
                None => match self.start_part(pos, None) {
                    Some(pend) => pend,
                    None => break,
                },
            };
        }
    }

    fn random(&mut self, offset: u64, end: u64) {
        // A jump ahead of the stream: its read-ahead is of no use any more. A read behind the
        // stream keeps it: that is how the kernel asks again for pages its dropped read-ahead
        // never fetched (past the congestion threshold) while the reader goes on ahead.
        let behind = self
            .stream
            .first_key_value()
            .is_some_and(|(_, first)| end <= first.start);
        if !behind {
            self.stream.clear();
            self.window = self.ctx.config.initial_window;
            self.furthest = 0;
        }
        // The block adapts to how this reader's reads come back to what it fetched; it always
        // holds the pages the read asked for.
        let rb = self.random_block.fetch(offset, end);
        let start = offset / rb * rb;
        let stop = end.div_ceil(rb).saturating_mul(rb).min(self.size);
        // The block is held (for the reads that come before the kernel has it cached) from the
        // reads share of the memory budget. Without room, only the pages this read asked for
        // are fetched, and not offered to the page cache: a random read under pressure costs
        // what it asks, never a block kept outside the budget.
        let permit = self
            .ctx
            .budget
            .clone()
            .try_acquire_many_owned(u32::try_from(stop - start).unwrap_or(u32::MAX))
            .ok();
        let (start, stop, offer) = match permit {
            Some(_) => (start, stop, self.ctx.offer.clone()),
            None => (
                offset / PAGE * PAGE,
                end.div_ceil(PAGE).saturating_mul(PAGE).min(self.size),
                None,
            ),
        };
        let p = Part::spawn(&self.source, start, stop, false, permit, offer);
        if self.blocks.len() == RANDOM_BLOCKS_KEPT {
            self.blocks.pop_front();
        }
        self.blocks.push_back(p);
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.ctx.readers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Waits for a planned read's parts and answers with views of their chunks (no copy: the bytes
/// go to the kernel as they came off the socket); bytes that were freed meanwhile are fetched
/// again.
pub async fn read_planned(plan: Plan) -> FsResult<ReadData> {
    for (w, _) in &plan.pieces {
        w.part.arrived(w.to).await?;
    }
    let mut out = Vec::new();
    for (w, from) in &plan.pieces {
        if !w.part.take_views(*from, w.to, &mut out) {
            let again = Part::spawn(&plan.source, *from, w.to, false, None, None);
            let _waiting = again.wait_for(w.to);
            again.arrived(w.to).await?;
            // A part that does not free keeps every byte it got.
            again.take_views(*from, w.to, &mut out);
        }
    }
    drop(plan);
    Ok(ReadData::from_pieces(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An object in a `MemStore` and a read context over it with a 16 MiB prefetch budget.
    struct Fixture {
        store: Arc<crate::store::mem::MemStore>,
        key: ObjectKey,
        meta: crate::store::ObjectMeta,
        ctx: ReadContext,
    }

    impl Fixture {
        async fn new(data: Vec<u8>, config: ReadConfig, kernel_readahead: u64) -> Fixture {
            use crate::store::{Preconditions, WriteAttrs, WriteSource};
            let store = Arc::new(crate::store::mem::MemStore::new());
            let key = ObjectKey::new("f").unwrap();
            let meta = store
                .write(
                    &key,
                    WriteSource::Bytes(Bytes::from(data)),
                    Preconditions::NONE,
                    &WriteAttrs::default(),
                )
                .await
                .unwrap();
            let budget = 16 * MIB;
            let ctx = ReadContext {
                config,
                budget: Arc::new(Semaphore::new(budget as usize)),
                budget_size: budget,
                readers: Arc::default(),
                kernel_readahead,
                offer: None,
            };
            Fixture {
                store,
                key,
                meta,
                ctx,
            }
        }

        fn reader(&self) -> Reader {
            Reader::new(
                self.store.clone(),
                self.key.clone(),
                self.meta.generation,
                self.meta.size,
                self.ctx.clone(),
            )
        }
    }

    /// How much prefetch budget a reader holds at most while it reads a 64 MiB object in
    /// order, 128 KiB at a time, with `others` other readers alive and a 16 MiB budget.
    async fn most_held(others: usize) -> u64 {
        let config = ReadConfig {
            block_size: 2 << 20,
            initial_window: 1 << 20,
            max_window: 32 << 20,
            random_block: 1 << 20,
            random_block_min: 64 << 10,
            prefetch_memory: 16 << 20,
        };
        let f = Fixture::new(vec![7u8; 64 << 20], config, 0).await;
        let _others: Vec<Reader> = (0..others).map(|_| f.reader()).collect();
        let mut r = f.reader();
        let mut most = 0;
        for offset in (0..(48u64 << 20)).step_by(128 << 10) {
            let _plan = r.plan(offset, 128 << 10);
            most = most.max(r.held());
        }
        most
    }

    /// Reads of `[at, at + len)` MiB, planned in the order given, each waited for before the
    /// next is planned; returns how many GETs the reader sent.
    async fn gets_for_reads_in_order(reads: &[(u64, u64)]) -> u64 {
        let data: Vec<u8> = (0..8 * MIB).map(|i| (i % 251) as u8).collect();
        let config = ReadConfig {
            block_size: 8 * MIB,
            ..ReadConfig::default()
        };
        let f = Fixture::new(data.clone(), config, 16 * MIB).await;
        let mut r = f.reader();
        for &(at, len) in reads {
            let plan = r.plan(at * MIB, (len * MIB) as u32);
            let got = read_planned(plan).await.unwrap().into_bytes();
            assert_eq!(
                &got[..],
                &data[(at * MIB) as usize..((at + len) * MIB) as usize]
            );
        }
        f.store.calls(crate::store::Op::Read)
    }

    #[tokio::test]
    async fn a_sequential_read_reaching_the_reader_late_finds_its_bytes() {
        // The kernel's read-ahead asked for MiB 1, 2 and 3 in order; the reads of 2 and 3
        // reached the reader first (the task of the read of 1 ran late). The part, pulling on
        // for them past its buffer, keeps MiB 1 (within LET_GO_MARGIN of them): one GET serves
        // all. With a margin of one read (1 MiB), MiB 1 was let go and fetched again.
        let late = [(0, 1), (2, 1), (3, 1), (1, 1)];
        assert_eq!(gets_for_reads_in_order(&late).await, 1);
        // A read of the next MiB after a jump far into the part (a random read that looked
        // sequential) does not keep the whole part: what lies more than LET_GO_MARGIN below
        // the waiting read is let go, and fetched again if asked for.
        let jump = [(0, 1), (6, 1), (1, 1)];
        assert_eq!(gets_for_reads_in_order(&jump).await, 2);
    }

    #[tokio::test]
    async fn a_random_block_a_sequential_read_has_passed_is_let_go() {
        let config = ReadConfig {
            block_size: 2 * MIB,
            ..ReadConfig::default()
        };
        let f = Fixture::new(vec![7u8; (16 * MIB) as usize], config, 0).await;
        let mut r = f.reader();
        let read = async |r: &mut Reader, at: u64| {
            let plan = r.plan(at * MIB, MIB as u32);
            assert_eq!(read_planned(plan).await.unwrap().len(), MIB as usize);
        };
        // The first read, far into the file, fetches and keeps a random block; the reads after
        // it are sequential.
        read(&mut r, 4).await;
        assert_eq!(r.blocks.len(), 1);
        read(&mut r, 5).await;
        read(&mut r, 6).await;
        // Within the slack behind the stream (one block, 2 MiB, here): kept, for the kernel
        // asking again.
        assert_eq!(r.blocks.len(), 1);
        // Past it: let go, and its share of the budget given back.
        read(&mut r, 7).await;
        assert!(r.blocks.is_empty());
        let held = r.held();
        assert_eq!(f.ctx.budget.available_permits() as u64, 16 * MIB - held);
    }

    #[tokio::test]
    async fn speculation_stays_within_each_readers_fair_share() {
        let (alone, two, eight) = (most_held(0).await, most_held(1).await, most_held(7).await);
        eprintln!("held at most: alone {alone}, one of two {two}, one of eight {eight}");
        // Speculation within the share, plus the part a read itself needs (demanded parts
        // start whatever the share).
        // Alone, a reader's read-ahead takes what the budget has (more than half of it).
        assert!(alone > (8 << 20) + PART_BUFFER);
        // With one other reader alive, half of it at most; with seven, an eighth.
        assert!(two <= (8 << 20) + PART_BUFFER);
        assert!(eight <= (2 << 20) + PART_BUFFER);
    }

    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;

    fn random_block() -> RandomBlock {
        RandomBlock::new(&ReadConfig {
            random_block: MIB,
            random_block_min: 64 * KIB,
            ..ReadConfig::default()
        })
    }

    /// A 4 KiB read somewhere in region `r` (1 MiB).
    fn in_region(b: &mut RandomBlock, r: u64) -> u64 {
        let offset = r * MIB + 12 * KIB;
        b.fetch(offset, offset + 4 * KIB)
    }

    #[test]
    fn the_random_block_halves_while_reads_never_come_back_down_to_its_minimum() {
        let mut b = random_block();
        let sizes: Vec<u64> = (0..60).map(|r| in_region(&mut b, r) / KIB).collect();
        // SHRINK_AFTER (8) fetches at each size, then half, down to 64 KiB.
        let mut want = Vec::new();
        for size in [1024, 512, 256, 128] {
            want.extend([size; SHRINK_AFTER as usize]);
        }
        want.resize(60, 64);
        assert_eq!(sizes, want);
    }

    #[test]
    fn a_read_that_comes_back_restores_the_whole_block_and_slows_the_next_shrink() {
        let mut b = random_block();
        for r in 0..20 {
            in_region(&mut b, r);
        }
        assert_eq!(b.size, 256 * KIB);
        // Region 3 was fetched from (a block of 1 MiB then): its pages are gone from the page
        // cache, or a larger block would have held this read. Back to 1 MiB at once.
        assert_eq!(in_region(&mut b, 3), MIB);
        // Now it takes twice as many fresh fetches to halve.
        let sizes: Vec<u64> = (100..100 + 2 * SHRINK_AFTER as u64 + 1)
            .map(|r| in_region(&mut b, r) / KIB)
            .collect();
        let mut want = vec![1024; 2 * SHRINK_AFTER as usize];
        want.push(512);
        assert_eq!(sizes, want);
        // A read served by a kept block counts as coming back too.
        b.returned();
        assert_eq!(b.size, MIB);
        // The patience stops doubling at SHRINK_AFTER_MAX.
        for _ in 0..20 {
            b.size = 64 * KIB;
            b.returned();
        }
        assert_eq!(b.patience, SHRINK_AFTER_MAX);
    }

    #[test]
    fn the_random_block_remembers_a_bounded_number_of_regions() {
        let mut b = random_block();
        // A read straddling two regions is fresh once and records both.
        b.fetch(MIB - 4 * KIB, MIB + 4 * KIB);
        assert_eq!(b.regions, [0, 1]);
        for r in 2..3000 {
            in_region(&mut b, r);
        }
        assert_eq!(b.regions.len(), REGIONS_REMEMBERED);
        assert_eq!(b.size, 64 * KIB);
        // Region 0 was forgotten: fresh. A recent one comes back.
        assert_eq!(in_region(&mut b, 0), 64 * KIB);
        assert_eq!(in_region(&mut b, 2990), MIB);
    }

    #[test]
    fn odd_settings_keep_the_random_block_in_whole_pages() {
        let mut b = RandomBlock::new(&ReadConfig {
            random_block: MIB + 3 * PAGE,
            random_block_min: 1000,
            ..ReadConfig::default()
        });
        assert_eq!(b.min, PAGE);
        for r in 0..200 {
            let offset = r * b.max + 12 * KIB;
            let size = b.fetch(offset, offset + 4 * KIB);
            assert_eq!(size % PAGE, 0, "{size}");
            assert!(size >= PAGE);
        }
        assert_eq!(b.size, PAGE);
    }

    fn buffer(chunks: &[usize]) -> Buffer {
        let mut b = Buffer::starting_at(100);
        for (i, &n) in chunks.iter().enumerate() {
            b.push(Bytes::from(vec![i as u8; n]));
        }
        b
    }

    fn held(b: &Buffer) -> Vec<u64> {
        b.chunks.keys().copied().collect()
    }

    #[test]
    fn taking_frees_whole_chunks_in_any_order() {
        let mut b = buffer(&[10, 10, 10, 10]);
        // Out of order: [115, 135) covers only the third chunk whole.
        b.take(115, 135);
        assert_eq!((held(&b), b.held), (vec![100, 110, 130], 30));
        // [100, 112) frees the first; the second straddles a gap (112..115).
        b.take(100, 112);
        assert_eq!((held(&b), b.held), (vec![110, 130], 20));
        b.take(112, 115);
        // [100, 135) is taken: the second goes, the fourth (to 140) stays.
        assert_eq!((held(&b), b.held), (vec![130], 10));
        assert_eq!(b.taken, vec![(100, 135)]);
        b.take(135, 140);
        assert_eq!((held(&b), b.held), (vec![], 0));
    }

    #[test]
    fn views_are_slices_of_the_chunks_not_copies() {
        let b = buffer(&[10, 10, 10]);
        let (first, second) = (b.chunks[&100].clone(), b.chunks[&110].clone());
        let mut out = Vec::new();
        assert!(b.views(102, 108, &mut out));
        assert_eq!(out.len(), 1, "inside one chunk: one view");
        assert_eq!(
            out[0].as_ptr(),
            first[2..].as_ptr(),
            "a view of the chunk, no copy"
        );
        assert_eq!(&out[0][..], &[0u8; 6]);
        let mut out = Vec::new();
        assert!(b.views(105, 125, &mut out));
        assert_eq!(out.len(), 3);
        assert_eq!(out[1].as_ptr(), second.as_ptr());
        assert_eq!(out.concat(), [&[0u8; 5][..], &[1; 10], &[2; 5]].concat());
    }

    #[test]
    fn views_refuse_freed_bytes_and_bytes_not_arrived() {
        let mut b = buffer(&[10, 10, 10]);
        b.take(110, 120);
        let mut out = Vec::new();
        assert!(!b.views(105, 125, &mut out), "the middle chunk was freed");
        assert!(out.is_empty(), "nothing appended for a range with a hole");
        assert!(b.views(120, 130, &mut out));
        assert_eq!(out.concat(), vec![2u8; 10]);
        // Past what arrived.
        assert!(!b.views(125, 131, &mut Vec::new()));
        assert!(b.views(130, 130, &mut Vec::new()));
    }
}
