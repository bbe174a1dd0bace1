//! Where a file's changes stand: one state machine per [`FileCell`](super::write::FileCell),
//! and the only place the write-back's states and their transitions are written down.
//!
//! ```text
//!                 changed                 queue               upload_started
//!   Clean ───────────────────▶ Staged ───────────▶ Queued ─────────────────────▶ Uploading
//!     ▲  ▲                     │  ▲ ▲                                            │ │ │ │
//!     │  │      stream_started │  │ └───────────── uploaded, changed meanwhile ──┘ │ │ │
//!     │  │                     ▼  │    (to Queued if queued again during it)       │ │ │
//!     │  └──── stream_done ─ Streaming                                             │ │ │
//!     │                        │ stream_lost ──▶ Lost                              │ │ │
//!     └──────────────────────────────────────────── uploaded, nothing changed ─────┘ │ │
//!                Failed ◀──────────────────────────────────── upload_failed ─────────┘ │
//!                Conflicted ◀───────────────────────────────── conflicted ─────────────┘
//!   any ── unlinked ──▶ Unlinked (final)
//! ```
//!
//! - **Clean**: nothing here that is not in the bucket.
//! - **Staged**: changed here (a new file's bytes in memory, or a staging file), no upload
//!   queued or running.
//! - **Streaming**: a new file written in order from offset 0: its bytes go straight into a
//!   resumable upload as they are written (nothing is staged); closing it finishes the upload.
//! - **Queued**: changed, and queued for a background upload task that has not started (when it
//!   starts, `dequeued`, the file is Staged again until the task takes its snapshot, so that a
//!   change from then on queues a task of its own, as a change during the upload does).
//! - **Uploading**: an upload of a snapshot of the changes is running. Changes made meanwhile
//!   are counted: the upload leaves the file Clean only if there were none. `requeued`: a task
//!   is queued and not started (the file was queued during the upload, or before an fsync,
//!   rename or the drain took the upload from the queue), so the upload ends in Queued if
//!   changes remain.
//!
//! Queued, or Uploading with `requeued`, means one upload task is pending: `queue` asks for a
//! task only when neither holds, so closes of a file waiting in the queue make one upload.
//! (After an upload that ends Clean or Conflicted while its task is pending, a new change may
//! queue a second task: the later one finds nothing to do.)
//! - **Failed**: the last upload failed; the changes are kept (staged) and the file is dirty:
//!   the next close, fsync, the age bound or the drain tries again.
//! - **Conflicted**: the last upload lost its `ifGenerationMatch` race: the changes were moved to
//!   `gcsfs-conflicts/` and the file is what the other writer made. Not dirty.
//! - **Lost**: a streamed upload failed: its bytes were only in the upload and are gone (every
//!   handle open on the file reports it). Not dirty.
//! - **Unlinked**: removed (unlinked, or renamed over) while it had state: its changes go
//!   nowhere, and no upload or stream starts. Final. Set by the unlink or rename itself; the
//!   data stays for descriptors still open, and goes with the release of the last one.
//!
//! A file is *dirty* (has changes that must reach the bucket: the drain, `has_dirty`, the age
//! bound and lookups answered from memory go by it) in Staged, Streaming, Queued, Uploading and
//! Failed. A change (`changed`) is made, and every transition is taken, with the cell's `state`
//! lock held, but for `queue` (the uploader's, which only decides whether a task is needed).
//!
//! An event that a phase does not expect is a bug: debug builds (the tests) panic on it; a
//! release build logs it and keeps the file dirty if it was, so no change is dropped by it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Events that came in a phase not expecting them, since the process started (a bug each; a
/// panic in a background task would go unseen, so the tests check this count too).
static UNEXPECTED: AtomicU64 = AtomicU64::new(0);

/// How many events came in a phase not expecting them (see [`Phase::next`]).
pub fn unexpected_events() -> u64 {
    UNEXPECTED.load(Ordering::Relaxed)
}

/// Where a file's changes stand (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Clean,
    Staged,
    Streaming,
    Queued,
    Uploading { requeued: bool },
    Failed,
    Conflicted,
    Lost,
    Unlinked,
}

impl Phase {
    /// Whether the file has changes that must still reach the bucket.
    pub fn is_dirty(self) -> bool {
        matches!(
            self,
            Phase::Staged
                | Phase::Streaming
                | Phase::Queued
                | Phase::Uploading { .. }
                | Phase::Failed
        )
    }

    /// The phase after `event`; `None` if the event is not expected in this phase.
    pub fn next(self, event: Event) -> Option<Phase> {
        use Event as E;
        use Phase as P;
        Some(match (self, event) {
            (P::Unlinked, _) => P::Unlinked,
            (_, E::Unlinked) => P::Unlinked,

            (P::Clean | P::Staged | P::Failed | P::Conflicted | P::Lost, E::Changed) => P::Staged,
            (P::Streaming | P::Queued | P::Uploading { .. }, E::Changed) => self,

            // A new file's in-memory head grows past the threshold: its bytes start an upload.
            // Only from Staged: with an upload of the head queued, running or failed, the
            // head goes on in a staging file instead (`write`), so that no stream races an
            // upload that would make the object the stream must create.
            (P::Staged, E::StreamStarted) => P::Streaming,
            (P::Streaming, E::StreamDone) => P::Clean,
            (P::Streaming, E::StreamLost) => P::Lost,

            (P::Staged | P::Failed | P::Queued, E::Queue) => P::Queued,
            (P::Uploading { .. }, E::Queue) => P::Uploading { requeued: true },
            // Nothing to queue: clean, or what there was is gone; a stream is settled by the
            // close of the handle writing it (its bytes are on their way already).
            (P::Clean | P::Conflicted | P::Lost | P::Streaming, E::Queue) => self,
            // The queued task starts: a change from now on needs a task of its own.
            (P::Queued, E::Dequeued) => P::Staged,
            (P::Uploading { .. }, E::Dequeued) => P::Uploading { requeued: false },
            (_, E::Dequeued) => self,

            (P::Staged | P::Failed, E::UploadStarted) => P::Uploading { requeued: false },
            // Uploaded by someone else (an fsync, a rename, the drain) before its task started:
            // the task is still to come.
            (P::Queued, E::UploadStarted) => P::Uploading { requeued: true },

            (P::Uploading { .. }, E::Uploaded { more: false }) => P::Clean,
            (P::Uploading { requeued: true }, E::Uploaded { more: true }) => P::Queued,
            (P::Uploading { requeued: false }, E::Uploaded { more: true }) => P::Staged,
            (P::Uploading { requeued: true }, E::UploadFailed) => P::Queued,
            (P::Uploading { requeued: false }, E::UploadFailed) => P::Failed,
            (P::Uploading { .. }, E::Conflicted) => P::Conflicted,

            // Dirty, but nothing to send after all (no data staged; the bucket's root).
            (P::Staged | P::Queued | P::Failed, E::NothingToUpload) => P::Clean,
            _ => return None,
        })
    }
}

/// What happens to a file's changes (see [`Phase::next`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A write, a truncate, or an attribute change of the local data.
    Changed,
    /// A new file's bytes start going into a resumable upload.
    StreamStarted,
    /// The streamed upload finished: the object is made.
    StreamDone,
    /// The streamed upload failed: its bytes are gone.
    StreamLost,
    /// Queued for a background upload.
    Queue,
    /// A queued upload task starts (it will take the publish lock, then its snapshot).
    Dequeued,
    /// An upload took its snapshot of the changes.
    UploadStarted,
    /// The upload made its object; `more`: changes were made since its snapshot.
    Uploaded { more: bool },
    /// The upload failed (after its retries); the changes are kept.
    UploadFailed,
    /// The upload lost an `ifGenerationMatch` race; the changes went to the conflicts directory.
    Conflicted,
    /// Dirty, but there was nothing to send.
    NothingToUpload,
    /// The file (or directory) is gone: what it had goes nowhere.
    Unlinked,
}

/// A file's phase, with the count of its changes and the age of the oldest one not uploaded.
#[derive(Debug)]
pub struct Lifecycle {
    phase: Phase,
    /// Changes made so far: an upload publishes those counted when it took its snapshot.
    changes: u64,
    /// When the oldest change not yet uploaded was made (the write-back's age bound).
    dirty_since: Option<Instant>,
    /// Uploads that failed in a row, and when the last one did: the age bound tries again
    /// after a backoff that doubles with each (see [`Lifecycle::due`]).
    failures: u32,
    failed_at: Option<Instant>,
}

/// The longest wait between the age bound's tries of a file whose uploads keep failing.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(300);

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            phase: Phase::Clean,
            changes: 0,
            dirty_since: None,
            failures: 0,
            failed_at: None,
        }
    }
}

impl Lifecycle {
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// How long the oldest pending change has waited, if the file is dirty.
    pub fn dirty_age(&self) -> Option<Duration> {
        self.dirty_since.map(|t| t.elapsed())
    }

    /// Whether the age bound (`max_age`) should queue the file now: its oldest change is that
    /// old, and, after failed uploads, the backoff since the last failure has passed
    /// (`max_age`, doubled with each failure in a row, at most [`MAX_RETRY_BACKOFF`]), so a
    /// file that cannot be uploaded (an outage, a permission) is not tried every second.
    pub fn due(&self, max_age: Duration) -> bool {
        if self.dirty_age().is_none_or(|age| age < max_age) {
            return false;
        }
        let Some(failed_at) = self.failed_at else {
            return true;
        };
        let doublings = self.failures.saturating_sub(1).min(16);
        let backoff = max_age
            .saturating_mul(1 << doublings)
            .min(MAX_RETRY_BACKOFF.max(max_age));
        failed_at.elapsed() >= backoff
    }

    /// One more change of the local data.
    pub fn changed(&mut self) {
        self.changes += 1;
        self.go(Event::Changed);
    }

    pub fn stream_started(&mut self) {
        self.go(Event::StreamStarted);
    }

    pub fn stream_done(&mut self) {
        self.go(Event::StreamDone);
    }

    pub fn stream_lost(&mut self) {
        self.go(Event::StreamLost);
    }

    /// Queued for a background upload: whether a new upload task is needed. Not when a task
    /// is queued and not started yet (Queued, or Uploading and requeued): it will take this
    /// change along; nor when there is nothing to upload, or a stream carries it.
    pub fn queue(&mut self) -> bool {
        let before = self.phase;
        self.go(Event::Queue);
        let pending = |p| matches!(p, Phase::Queued | Phase::Uploading { requeued: true });
        !pending(before) && pending(self.phase)
    }

    /// A queued upload task starts.
    pub fn dequeued(&mut self) {
        self.go(Event::Dequeued);
    }

    /// An upload takes its snapshot: the change count it stands for.
    pub fn upload_started(&mut self) -> u64 {
        self.go(Event::UploadStarted);
        self.changes
    }

    /// The upload of the snapshot taken at change count `seen` made its object: whether the
    /// file is clean now (no change was made since).
    pub fn uploaded(&mut self, seen: u64) -> bool {
        self.go(Event::Uploaded {
            more: self.changes != seen,
        });
        !self.phase.is_dirty()
    }

    pub fn upload_failed(&mut self) {
        self.go(Event::UploadFailed);
        self.failures = self.failures.saturating_add(1);
        self.failed_at = Some(Instant::now());
    }

    pub fn conflicted(&mut self) {
        self.go(Event::Conflicted);
    }

    pub fn nothing_to_upload(&mut self) {
        self.go(Event::NothingToUpload);
    }

    pub fn unlinked(&mut self) {
        self.go(Event::Unlinked);
    }

    fn go(&mut self, event: Event) {
        let next = match self.phase.next(event) {
            Some(next) => next,
            None => {
                let msg = format!("write-back: {event:?} not expected in {:?}", self.phase);
                UNEXPECTED.fetch_add(1, Ordering::Relaxed);
                debug_assert!(false, "{msg}");
                tracing::error!("{msg}; the file keeps its changes");
                if self.phase.is_dirty() {
                    self.phase
                } else {
                    Phase::Staged
                }
            }
        };
        match (self.phase.is_dirty(), next.is_dirty()) {
            (false, true) => self.dirty_since = Some(Instant::now()),
            (_, false) => self.dirty_since = None,
            (true, true) => {}
        }
        if matches!(event, Event::Uploaded { .. }) || !next.is_dirty() {
            // An upload got through (or nothing is left to send): no backoff any more.
            self.failures = 0;
            self.failed_at = None;
        }
        self.phase = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_PHASES: [Phase; 10] = [
        Phase::Clean,
        Phase::Staged,
        Phase::Streaming,
        Phase::Queued,
        Phase::Uploading { requeued: false },
        Phase::Uploading { requeued: true },
        Phase::Failed,
        Phase::Conflicted,
        Phase::Lost,
        Phase::Unlinked,
    ];

    const ALL_EVENTS: [Event; 13] = [
        Event::Changed,
        Event::Dequeued,
        Event::StreamStarted,
        Event::StreamDone,
        Event::StreamLost,
        Event::Queue,
        Event::UploadStarted,
        Event::Uploaded { more: false },
        Event::Uploaded { more: true },
        Event::UploadFailed,
        Event::Conflicted,
        Event::NothingToUpload,
        Event::Unlinked,
    ];

    /// The whole table, spelled out: (phase, event) → phase, or `-` where the event is a bug.
    #[test]
    fn the_transition_table() {
        use Event as E;
        use Phase as P;
        let up = P::Uploading { requeued: false };
        let upq = P::Uploading { requeued: true };
        type Row<'a> = (P, &'a [(E, Option<P>)]);
        let expected: &[Row<'_>] = &[
            (
                P::Clean,
                &[
                    (E::Changed, Some(P::Staged)),
                    (E::Queue, Some(P::Clean)),
                    (E::Dequeued, Some(P::Clean)),
                    (E::Unlinked, Some(P::Unlinked)),
                ],
            ),
            (
                P::Staged,
                &[
                    (E::Changed, Some(P::Staged)),
                    (E::StreamStarted, Some(P::Streaming)),
                    (E::Queue, Some(P::Queued)),
                    (E::Dequeued, Some(P::Staged)),
                    (E::UploadStarted, Some(up)),
                    (E::NothingToUpload, Some(P::Clean)),
                    (E::Unlinked, Some(P::Unlinked)),
                ],
            ),
            (
                P::Streaming,
                &[
                    (E::Changed, Some(P::Streaming)),
                    (E::StreamDone, Some(P::Clean)),
                    (E::StreamLost, Some(P::Lost)),
                    (E::Queue, Some(P::Streaming)),
                    (E::Dequeued, Some(P::Streaming)),
                    (E::Unlinked, Some(P::Unlinked)),
                ],
            ),
            (
                P::Queued,
                &[
                    (E::Changed, Some(P::Queued)),
                    (E::Queue, Some(P::Queued)),
                    (E::Dequeued, Some(P::Staged)),
                    (E::UploadStarted, Some(upq)),
                    (E::NothingToUpload, Some(P::Clean)),
                    (E::Unlinked, Some(P::Unlinked)),
                ],
            ),
            (
                up,
                &[
                    (E::Changed, Some(up)),
                    (E::Queue, Some(upq)),
                    (E::Dequeued, Some(up)),
                    (E::Uploaded { more: false }, Some(P::Clean)),
                    (E::Uploaded { more: true }, Some(P::Staged)),
                    (E::UploadFailed, Some(P::Failed)),
                    (E::Conflicted, Some(P::Conflicted)),
                    (E::Unlinked, Some(P::Unlinked)),
                ],
            ),
            (
                upq,
                &[
                    (E::Changed, Some(upq)),
                    (E::Queue, Some(upq)),
                    (E::Dequeued, Some(up)),
                    (E::Uploaded { more: false }, Some(P::Clean)),
                    (E::Uploaded { more: true }, Some(P::Queued)),
                    (E::UploadFailed, Some(P::Queued)),
                    (E::Conflicted, Some(P::Conflicted)),
                    (E::Unlinked, Some(P::Unlinked)),
                ],
            ),
            (
                P::Failed,
                &[
                    (E::Changed, Some(P::Staged)),
                    (E::Queue, Some(P::Queued)),
                    (E::Dequeued, Some(P::Failed)),
                    (E::UploadStarted, Some(up)),
                    (E::NothingToUpload, Some(P::Clean)),
                    (E::Unlinked, Some(P::Unlinked)),
                ],
            ),
            (
                P::Conflicted,
                &[
                    (E::Changed, Some(P::Staged)),
                    (E::Queue, Some(P::Conflicted)),
                    (E::Dequeued, Some(P::Conflicted)),
                    (E::Unlinked, Some(P::Unlinked)),
                ],
            ),
            (
                P::Lost,
                &[
                    (E::Changed, Some(P::Staged)),
                    (E::Queue, Some(P::Lost)),
                    (E::Dequeued, Some(P::Lost)),
                    (E::Unlinked, Some(P::Unlinked)),
                ],
            ),
        ];
        for (from, allowed) in expected {
            for event in ALL_EVENTS {
                let want = allowed
                    .iter()
                    .find(|(e, _)| *e == event)
                    .and_then(|(_, to)| *to);
                assert_eq!(from.next(event), want, "{from:?} on {event:?}");
            }
        }
        // Unlinked is final: every event leaves it there.
        for event in ALL_EVENTS {
            assert_eq!(P::Unlinked.next(event), Some(P::Unlinked), "{event:?}");
        }
        assert_eq!(
            expected.len() + 1,
            ALL_PHASES.len(),
            "every phase is in the table"
        );
    }

    #[test]
    fn dirty_phases_are_those_with_changes_to_send() {
        let dirty: Vec<Phase> = ALL_PHASES.into_iter().filter(|p| p.is_dirty()).collect();
        assert_eq!(
            dirty,
            [
                Phase::Staged,
                Phase::Streaming,
                Phase::Queued,
                Phase::Uploading { requeued: false },
                Phase::Uploading { requeued: true },
                Phase::Failed,
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_during_an_upload_leaves_the_file_dirty_and_its_age_runs_from_the_first() {
        let mut l = Lifecycle::default();
        assert_eq!(l.dirty_age(), None);
        l.changed();
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(l.queue(), "the first queue needs a task");
        assert!(!l.queue(), "a second one is merged into it");
        l.dequeued();
        let seen = l.upload_started();
        l.changed();
        assert!(l.queue(), "queued again during its upload: one more task");
        assert!(!l.queue());
        assert!(!l.uploaded(seen), "changed meanwhile: still dirty");
        assert_eq!(l.phase(), Phase::Queued);
        assert_eq!(
            l.dirty_age(),
            Some(Duration::from_secs(3)),
            "age of the oldest change"
        );
        l.dequeued();
        let seen = l.upload_started();
        assert!(l.uploaded(seen));
        assert_eq!(l.phase(), Phase::Clean);
        assert_eq!(l.dirty_age(), None);
    }

    #[test]
    fn a_failed_upload_keeps_the_file_dirty_until_one_succeeds() {
        let mut l = Lifecycle::default();
        l.changed();
        let _ = l.upload_started();
        l.upload_failed();
        assert_eq!(l.phase(), Phase::Failed);
        assert!(l.phase().is_dirty());
        assert!(l.queue(), "the age bound or a close queues it again");
        l.dequeued();
        let seen = l.upload_started();
        assert!(l.uploaded(seen));
    }

    #[test]
    fn a_conflict_or_a_lost_stream_leaves_nothing_to_send_and_a_new_change_starts_over() {
        let mut l = Lifecycle::default();
        l.changed();
        let _ = l.upload_started();
        l.conflicted();
        assert!(!l.phase().is_dirty());
        assert!(!l.queue(), "nothing to upload");
        l.changed();
        assert_eq!(l.phase(), Phase::Staged);

        let mut s = Lifecycle::default();
        s.changed();
        s.stream_started();
        s.changed();
        assert!(s.phase().is_dirty());
        s.stream_lost();
        assert_eq!(s.phase(), Phase::Lost);
        assert!(!s.phase().is_dirty());
    }

    #[test]
    fn an_unlinked_file_stays_unlinked_and_clean() {
        let mut l = Lifecycle::default();
        l.changed();
        let seen = l.upload_started();
        l.unlinked();
        l.changed();
        assert!(!l.queue());
        assert_eq!(l.phase(), Phase::Unlinked);
        let _ = l.uploaded(seen);
        assert_eq!(l.phase(), Phase::Unlinked);
        assert!(!l.phase().is_dirty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_age_bound_backs_off_after_failures_and_not_before() {
        let max = Duration::from_secs(10);
        let mut l = Lifecycle::default();
        l.changed();
        assert!(!l.due(max));
        tokio::time::advance(max).await;
        assert!(l.due(max), "old enough, never failed");
        for backoff in [10, 20, 40, 80, 160, 300, 300] {
            assert!(l.queue());
            l.dequeued();
            let _ = l.upload_started();
            l.upload_failed();
            tokio::time::advance(Duration::from_secs(backoff - 1)).await;
            assert!(!l.due(max), "within the {backoff} s backoff");
            tokio::time::advance(Duration::from_secs(1)).await;
            assert!(l.due(max), "after the {backoff} s backoff");
        }
        assert!(l.queue());
        l.dequeued();
        let seen = l.upload_started();
        l.changed();
        assert!(!l.uploaded(seen));
        assert!(
            l.due(max),
            "an upload got through: no backoff for what is left"
        );
    }

    #[test]
    #[should_panic(expected = "not expected")]
    fn an_unexpected_event_is_a_bug_in_tests() {
        let mut l = Lifecycle::default();
        l.upload_failed();
    }
}

#[cfg(test)]
mod queue_tests {
    use super::*;

    /// An fsync (or a rename, or the drain) uploads a file whose task is still queued: the
    /// task is still to come, so closes meanwhile ask for no other one.
    #[test]
    fn an_upload_taken_from_the_queue_leaves_its_task_pending() {
        let mut l = Lifecycle::default();
        l.changed();
        assert!(l.queue());
        let seen = l.upload_started();
        assert_eq!(l.phase(), Phase::Uploading { requeued: true });
        l.changed();
        assert!(!l.queue(), "the pending task will take it");
        assert!(!l.uploaded(seen));
        assert_eq!(l.phase(), Phase::Queued);
        l.dequeued();
        let seen = l.upload_started();
        assert!(l.uploaded(seen));
    }

    #[test]
    fn a_stream_is_never_queued() {
        let mut l = Lifecycle::default();
        l.changed();
        l.stream_started();
        assert!(!l.queue(), "its close settles it");
        assert_eq!(l.phase(), Phase::Streaming);
        l.stream_done();
        assert_eq!(l.phase(), Phase::Clean);
    }
}
