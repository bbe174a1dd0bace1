//! Reference-model property test of the filesystem layer.
//!
//! Random sequences of operations over a tiny name space ({a, b, c}, three deep) — creating,
//! writing, reading, truncating, making and removing directories, unlinking, renaming, another
//! client putting and deleting objects directly in the bucket, and another mount's directory
//! rename interrupted part-way (then repeated here to finish it) — run against the real
//! [`gcsfs::fs::Filesystem`] over `MemStore` (metadata and negative TTL zero) and against the
//! reference model in `reftest/model.rs`, which encodes `docs/SEMANTICS.md`. Every op's result,
//! the bucket, the conflicts directory and (periodically and at the end) the whole tree must
//! agree. The shape follows awslabs/mountpoint-s3's `reftests`.
//!
//! `async_write_back_matches_reference_model` runs this mount's ops alone (no other client)
//! with `--write-back async` on a runtime with worker threads (`REFTEST_THREADS`, default 2):
//! background uploads run in parallel with the ops after the close that queued them — reads,
//! writes, renames and unlinks of pending files, lookups that race their upload. Every op's
//! result and every tree walk must agree as in the sync mode; the bucket is compared after each
//! `Sync` (syncfs) and at the end, where an open file may be in the bucket with any of the
//! contents it had since it was last published (a background upload takes the file as it is).
//! A `Crash` op looks at the bucket at that instant, uploads in flight or not: it must hold
//! what the last `Sync` saved (where nothing changed since) and no state its file never had —
//! a crash loses at most the changes not saved yet.
//! The inode cache is 4 inodes, so sweeps run on most lookups and listings; half the cases
//! keep metadata and negative caches for an hour (nothing else changes the bucket, so they
//! never lie), so lookups, listings from the inode table and the negative cache answer from
//! memory while uploads run.
//!
//! `PROPTEST_CASES` raises the case count (default 64); `REFTEST_TRACE=1` prints every op
//! with the model's and the filesystem's results. A shrunk failure is kept as a
//! `regression_*` test below that replays its exact op list; one pinning an fs bug not fixed
//! yet is `#[ignore]`d with the bug named. The model reproduces no known bug.

#[path = "reftest/harness.rs"]
mod harness;
#[path = "reftest/model.rs"]
mod model;
#[path = "reftest/ops.rs"]
mod ops;
#[path = "reftest/sut.rs"]
mod sut;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

#[allow(unused_imports)]
use ops::{Op::*, Then::*, d, p};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

/// Replays `ops` on a fresh runtime. With `--write-back async` the runtime has worker threads
/// (`REFTEST_THREADS`, default 2), so background uploads run in parallel with the ops that
/// follow (and the lock order is exercised); otherwise one thread, deterministic.
fn replay(ops: &[ops::Op], streaming: bool, async_wb: bool, cached: bool) -> Result<(), String> {
    let threads = std::env::var("REFTEST_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let rt = if async_wb && threads > 1 {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
    .unwrap();
    rt.block_on(harness::run_mode(ops, streaming, async_wb, cached))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/reftest.txt",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn filesystem_matches_reference_model(
        ops in prop::collection::vec(ops::op(), 1..=40),
        streaming in any::<bool>(),
    ) {
        if let Err(e) = replay(&ops, streaming, false, false) {
            prop_assert!(false, "{}", e);
        }
    }

    /// `--write-back async`, this mount alone: closes return before the upload, which runs in
    /// the background while later ops (renames, unlinks, writes, reads of the pending files)
    /// go on; the bucket must match the model after each `Sync` and at the end.
    #[test]
    fn async_write_back_matches_reference_model(
        ops in prop::collection::vec(ops::local_op(), 1..=40),
        streaming in any::<bool>(),
        cached in any::<bool>(),
    ) {
        if let Err(e) = replay(&ops, streaming, true, cached) {
            prop_assert!(false, "{}", e);
        }
    }
}

/// Replays a case in both write modes against the model as SEMANTICS.md describes it, and
/// with `--write-back async` too when no other client acts in it.
async fn check(ops: Vec<ops::Op>) {
    let async_too = !ops.iter().any(ops::Op::is_remote);
    for streaming in [false, true] {
        check_mode(&ops, streaming).await;
        if async_too {
            check_async(&ops, streaming).await;
        }
    }
}

/// Replays a case in one write mode against the model as SEMANTICS.md describes it.
async fn check_mode(ops: &[ops::Op], streaming: bool) {
    if let Err(e) = harness::run(ops, streaming).await {
        panic!("streaming_writes={streaming}: {e}");
    }
}

/// Replays a case with `--write-back async`.
async fn check_async(ops: &[ops::Op], streaming: bool) {
    if let Err(e) = harness::run_mode(ops, streaming, true, false).await {
        panic!("write-back async, streaming_writes={streaming}: {e}");
    }
}

/// `--write-back async`: `b` is closed (its upload queued), then an open file is renamed over
/// it. The queued upload of the replaced `b` ran after the rename had moved the other file in,
/// lost its create-only precondition, and put `b`'s old bytes in the conflicts directory (data
/// invented: that file was replaced). The rename now holds `b`'s publish lock too.
#[tokio::test]
async fn regression_async_rename_over_pending_file_invents_a_conflict() {
    check(vec![
        Create {
            path: p("c"),
            data: d(""),
            then: Flushed,
        },
        Write {
            handle: 0,
            offset: 1,
            data: d("a"),
        },
        Create {
            path: p("b"),
            data: d("a"),
            then: Closed,
        },
        Rename {
            from: p("c"),
            to: p("b"),
        },
    ])
    .await;
}

/// `--write-back async` with caches on, several threads: a listing of the root began while `a`
/// was still pending; `a`'s background upload finished and the forgotten inode was evicted
/// (unbinding it) while the listing ran; the listing then marked the root complete without `a`,
/// and every lookup of `a` answered ENOENT for an hour. A listing now marks a directory complete
/// only if no name was unbound from it meanwhile. Replayed 20 times per mode (the interleaving
/// depends on the threads).
#[test]
fn regression_async_cached_lookup_of_uploaded_file_is_enoent() {
    let ops = vec![
        Mkdir { path: p("b") },
        Mkdir { path: p("c") },
        CheckTree,
        Create {
            path: p("a"),
            data: d(""),
            then: Closed,
        },
        Create {
            path: p("b/a"),
            data: d(""),
            then: Flushed,
        },
        Forget,
        Rmdir { path: p("a") },
    ];
    for streaming in [false, true] {
        for _ in 0..20 {
            if let Err(e) = replay(&ops, streaming, true, true) {
                panic!("streaming_writes={streaming}: {e}");
            }
        }
    }
}

#[tokio::test]
async fn smoke_every_op_once() {
    check(vec![
        Mkdir { path: p("a") },
        Create {
            path: p("a/b"),
            data: d("hello"),
            then: Closed,
        },
        Read { path: p("a/b") },
        Open { path: p("a/b") },
        Write {
            handle: 0,
            offset: 5,
            data: d("!"),
        },
        Close { handle: 0 },
        Truncate {
            path: p("a/b"),
            size: 2,
        },
        RemotePut {
            path: p("c/a"),
            marker: false,
            data: d("x"),
        },
        RemotePut {
            path: p("b"),
            marker: true,
            data: d(""),
        },
        Rename {
            from: p("a"),
            to: p("b"),
        },
        Rename {
            from: p("b/b"),
            to: p("c/b"),
        },
        CheckTree,
        Unlink { path: p("c/a") },
        Rmdir { path: p("b") },
        RemoteDelete { index: 0 },
        Forget,
    ])
    .await;
}

/// A remote client creates `c/a` while this mount has file `c` open with unsaved data; an `ls`
/// lists directory `c`. Was: the open file was unlinked, its close returned Ok and dropped the
/// data. SEMANTICS.md: the file stays open, its close uploads `c` (next to `c/a`), and it is
/// then reachable as `c\n`.
#[tokio::test]
async fn regression_listing_remote_dir_drops_open_file_data() {
    check(vec![
        Create {
            path: p("c"),
            data: d("mine"),
            then: Kept,
        },
        RemotePut {
            path: p("c/a"),
            marker: false,
            data: d(""),
        },
        List { path: p("c") },
        Close { handle: 0 },
    ])
    .await;
}

/// Another client deletes `a` while this mount has it open; a lookup of `a` (here by `unlink`,
/// which rightly answers ENOENT) unbinds the open file. Was: a later write through the
/// still-open handle was dropped at close, which returned Ok. SEMANTICS.md: a write that needs
/// the deleted contents fails with ESTALE (streaming mode: no local copy is left after the
/// flush), or close does and the data is kept in the conflicts directory (a clean local copy is
/// still there).
#[tokio::test]
async fn regression_lookup_after_remote_delete_drops_later_writes() {
    check(vec![
        Create {
            path: p("a"),
            data: d(""),
            then: Flushed,
        },
        RemoteDelete { index: 0 },
        Unlink { path: p("a") },
        Write {
            handle: 0,
            offset: 0,
            data: d("a"),
        },
        Close { handle: 0 },
    ])
    .await;
}

/// A new file written sequentially (held in memory: it is small) loses the create race. Close
/// rightly returns ESTALE and leaves the other object alone. Was: the data was gone.
/// SEMANTICS.md: a new file under 4 MiB is kept under `gcsfs-conflicts/`.
#[tokio::test]
async fn regression_streamed_file_losing_create_race_keeps_no_conflict_copy() {
    check_mode(
        &[
            Create {
                path: p("b"),
                data: d("a"),
                then: Kept,
            },
            RemotePut {
                path: p("b"),
                marker: false,
                data: d(""),
            },
            Close { handle: 0 },
        ],
        true,
    )
    .await;
}

/// A new file loses the create race in streaming mode. Was: its inode stayed "local" with no
/// data and was never evicted, so every later lookup returned it (reads ESTALE, `unlink`
/// deleted nothing). SEMANTICS.md: the name then shows the other writer's object.
#[tokio::test]
async fn regression_streamed_create_race_leaves_phantom_local_file() {
    check_mode(
        &[
            Create {
                path: p("a"),
                data: d("a"),
                then: Kept,
            },
            RemotePut {
                path: p("a"),
                marker: false,
                data: d("theirs"),
            },
            Close { handle: 0 },
            Read { path: p("a") },
        ],
        true,
    )
    .await;
}

/// A directory is renamed while a file below it is open; the file moves with it. Was: its next
/// close failed with ESTALE (data to the conflicts directory) although nobody else wrote, as
/// the open file stayed based on the generation of its old key.
#[tokio::test]
async fn regression_dir_rename_with_open_file_spurious_estale() {
    check(vec![
        Mkdir { path: p("b") },
        Create {
            path: p("b/b"),
            data: d("x"),
            then: Flushed,
        },
        Rename {
            from: p("b"),
            to: p("a"),
        },
        Write {
            handle: 0,
            offset: 0,
            data: d("a"),
        },
        Close { handle: 0 },
    ])
    .await;
}

/// This mount keeps `a` open (clean, after a flush); another client replaces it. Was: a new
/// open + read of `a` returned the old generation's bytes from the retained local copy.
/// SEMANTICS.md: open pins the generation it sees and reads return exactly that generation.
#[tokio::test]
async fn regression_new_open_reads_stale_local_copy() {
    check(vec![
        Create {
            path: p("a"),
            data: d("old"),
            then: Flushed,
        },
        RemotePut {
            path: p("a"),
            marker: false,
            data: d("new"),
        },
        Read { path: p("a") },
    ])
    .await;
}

/// A new file is flushed (published); another client replaces it; an `ls` sees the new
/// generation. Was (streaming mode): a further write through the creating handle was applied on
/// top of the other client's data and the close succeeded, replacing their object.
/// SEMANTICS.md: changes are based on the generation the writer had; if the object changed
/// meanwhile, the write (no local copy left) or the close returns ESTALE.
#[tokio::test]
async fn regression_published_stream_handle_rebases_onto_other_writer() {
    check(vec![
        Create {
            path: p("b"),
            data: d("mine"),
            then: Flushed,
        },
        RemotePut {
            path: p("b"),
            marker: false,
            data: d("theirs"),
        },
        List { path: p("a") },
        Write {
            handle: 0,
            offset: 0,
            data: d("X"),
        },
        Close { handle: 0 },
    ])
    .await;
}

/// This mount has new file `c/b` pending (open, not uploaded); another client deletes the only
/// object under `c/` and puts it back. Was: the lookup in between replaced directory `c`'s
/// inode and listing `c` no longer showed the pending `c/b`. SEMANTICS.md: a directory holding
/// new files not yet uploaded keeps existing.
#[tokio::test]
async fn regression_pending_file_lost_from_listing_after_dir_vanished() {
    check(vec![
        RemotePut {
            path: p("c/a"),
            marker: false,
            data: d(""),
        },
        Create {
            path: p("c/b"),
            data: d("x"),
            then: Kept,
        },
        RemoteDelete { index: 0 },
        Read { path: p("c/a") },
        RemotePut {
            path: p("c/a"),
            marker: false,
            data: d(""),
        },
        List { path: p("c/a") },
    ])
    .await;
}

/// `truncate` of a file nobody has open; another client replaces the object. Was: the
/// truncate left a clean local copy on the inode and the next open + read returned it.
#[tokio::test]
async fn regression_truncate_leaves_stale_copy_for_next_open() {
    check(vec![
        RemotePut {
            path: p("a"),
            marker: false,
            data: d("abc"),
        },
        Truncate {
            path: p("a"),
            size: 1,
        },
        RemotePut {
            path: p("a"),
            marker: false,
            data: d("new"),
        },
        Read { path: p("a") },
    ])
    .await;
}

/// A new file `c` is pending here when another client creates `c/a`: the listing shows
/// directory `c`, which then wins the name. The other client deletes `c/a`. Was: readdir of the
/// root listed the unbound pending file as `c` while lookup of `c` answered ENOENT.
/// Now neither shows it until its close uploads it.
#[tokio::test]
async fn regression_listing_shows_unbound_new_file() {
    check(vec![
        Create {
            path: p("c"),
            data: d(""),
            then: Kept,
        },
        RemotePut {
            path: p("c/a"),
            marker: false,
            data: d(""),
        },
        CheckTree,
        RemoteDelete { index: 0 },
        CheckTree,
    ])
    .await;
}

/// A file opened here is renamed here, then written through the open handle (`mv` of a log
/// file its writer keeps open). Was: the write failed with ESTALE, as the handle still asked
/// for the source's generation at the new key. SEMANTICS.md: our own rename is no conflict.
#[tokio::test]
async fn regression_write_after_own_rename_is_stale() {
    check(vec![
        RemotePut {
            path: p("a"),
            marker: false,
            data: d("old"),
        },
        Open { path: p("a") },
        Rename {
            from: p("a"),
            to: p("b"),
        },
        Write {
            handle: 0,
            offset: 0,
            data: d("new"),
        },
        Close { handle: 0 },
    ])
    .await;
}

/// As `regression_write_after_own_rename_is_stale`, with the file's directory renamed.
#[tokio::test]
async fn regression_write_after_own_dir_rename_is_stale() {
    check(vec![
        RemotePut {
            path: p("c/a"),
            marker: false,
            data: d("old"),
        },
        Open { path: p("c/a") },
        Rename {
            from: p("c"),
            to: p("b"),
        },
        Write {
            handle: 0,
            offset: 1,
            data: d("x"),
        },
        Close { handle: 0 },
    ])
    .await;
}

/// A new file is created and flushed here (`x`, generation 1); another client replaces it
/// (`yy`, generation 2); another open of the file here sees generation 2. A write through the
/// creating handle is then based on generation 2 (downloaded, written over, uploaded: `ay`)
/// instead of failing: the handle's own view was generation 1. SEMANTICS.md: changes are based
/// on the generation the writer had; if the object changed meanwhile, the write (no local copy
/// of generation 1 left) or the close returns ESTALE and the other writer's object is left
/// untouched. With no open in between (`regression_published_stream_handle_rebases_onto_other_writer`)
/// it does.
#[tokio::test]
async fn regression_created_handle_rebases_onto_generation_another_open_saw() {
    check(vec![
        Create {
            path: p("a"),
            data: d("x"),
            then: Flushed,
        },
        RemotePut {
            path: p("a"),
            marker: false,
            data: d("yy"),
        },
        Read { path: p("a") },
        Write {
            handle: 0,
            offset: 0,
            data: d("a"),
        },
    ])
    .await;
}

/// `a` was opened and closed here (its inode keeps the write-back state, based on `abc`'s
/// generation); another client replaces it with `xyz`. Was: `truncate(a, 1)` by path, with
/// nobody holding it open, failed with ESTALE (based on the generation last opened here, not
/// the one the lookup just saw). SEMANTICS.md: "`truncate(2)` of a file nobody has open is
/// uploaded at once" (here `x`).
#[tokio::test]
async fn regression_truncate_after_remote_replace_of_closed_file_is_stale() {
    check(vec![
        RemotePut {
            path: p("a"),
            marker: false,
            data: d("abc"),
        },
        Open { path: p("a") },
        Close { handle: 0 },
        RemotePut {
            path: p("a"),
            marker: false,
            data: d("xyz"),
        },
        Truncate {
            path: p("a"),
            size: 1,
        },
        Read { path: p("a") },
    ])
    .await;
}

/// Directory `a` holds new file `a/a`, pending here; another client deletes the marker `a/`
/// and puts a file `a`; a lookup (here a read) of `a`; the client deletes `a`. Was: the lookup
/// found file `a`, which took the name from the directory inode, and the directory was then
/// gone here (lookup ENOENT) until `a/a` was uploaded at close. SEMANTICS.md: a directory
/// holding new files not yet uploaded keeps existing; it wins its name over the file (the read
/// is EISDIR), which is reachable as `a\n` meanwhile.
#[tokio::test]
async fn regression_pending_dir_lost_to_remote_file_of_its_name() {
    check(vec![
        Mkdir { path: p("a") },
        Create {
            path: p("a/a"),
            data: d("x"),
            then: Kept,
        },
        RemoteDelete { index: 0 },
        RemotePut {
            path: p("a"),
            marker: false,
            data: d("f"),
        },
        Read { path: p("a") },
        RemoteDelete { index: 0 },
        List { path: p("a/a") },
    ])
    .await;
}

/// Directory `a` holds new file `a/a`, pending here; another client deletes the marker `a/`,
/// the only object under it. Was: lookup still found directory `a` but readdir of the root did
/// not list it. SEMANTICS.md: a directory holding new files not yet uploaded keeps existing.
#[tokio::test]
async fn regression_pending_dir_not_listed_in_its_parent() {
    check(vec![
        Mkdir { path: p("a") },
        Create {
            path: p("a/a"),
            data: d("x"),
            then: Kept,
        },
        RemoteDelete { index: 0 },
        List { path: p("a") },
        CheckTree,
    ])
    .await;
}

/// As `regression_pending_dir_lost_to_remote_file_of_its_name`, with the tree walked while file
/// `a` exists: the root lists directory `a` (kept by the pending `a/a`) and file `a\n`, whose
/// lookup and read reach the other client's object.
#[tokio::test]
async fn regression_pending_dir_and_remote_file_of_its_name_are_both_listed() {
    check(vec![
        Mkdir { path: p("a") },
        Create {
            path: p("a/a"),
            data: d("x"),
            then: Kept,
        },
        RemoteDelete { index: 0 },
        RemotePut {
            path: p("a"),
            marker: false,
            data: d("f"),
        },
        List { path: p("a") },
        CheckTree,
    ])
    .await;
}

/// Directory `a/b` holds new file `a/b/c`, pending here; another client deletes the marker
/// `a/b/`. Was: `rmdir a` deleted `a/` (only direct pending children counted), although `a`
/// lists `b`. Now ENOTEMPTY.
#[tokio::test]
async fn regression_rmdir_of_dir_with_nested_pending_file() {
    check(vec![
        Mkdir { path: p("a") },
        Mkdir { path: p("a/b") },
        Create {
            path: p("a/b/c"),
            data: d("x"),
            then: Kept,
        },
        RemoteDelete { index: 1 },
        Rmdir { path: p("a") },
        CheckTree,
    ])
    .await;
}

/// New file `c/c` is flushed here; another client replaces it; this mount renames directory
/// `c` to `a`. Was: the open file was rebased onto the copy of the other client's generation,
/// so a write through the creating handle built on their data and its close replaced it.
/// SEMANTICS.md: the changes are based on the generation this writer had: ESTALE.
#[tokio::test]
async fn regression_dir_rename_rebases_open_file_onto_other_writers_copy() {
    check(vec![
        Mkdir { path: p("c") },
        Create {
            path: p("c/c"),
            data: d("mine"),
            then: Flushed,
        },
        RemotePut {
            path: p("c/c"),
            marker: false,
            data: d("theirs"),
        },
        Rename {
            from: p("c"),
            to: p("a"),
        },
        Write {
            handle: 0,
            offset: 0,
            data: d("x"),
        },
        Close { handle: 0 },
    ])
    .await;
}

/// Directory `a` (marker, `a/a`, `a/b`), renamed to `c` by another mount that stopped after `n`
/// copies, or after all copies and `deleted` deletes; then `ops`; then this mount repeats the
/// rename.
fn interrupted(copied: u8, deleted: u8, ops: Vec<ops::Op>) -> Vec<ops::Op> {
    let mut all = vec![
        Mkdir { path: p("a") },
        Create {
            path: p("a/a"),
            data: d("1"),
            then: Closed,
        },
        Create {
            path: p("a/b"),
            data: d("22"),
            then: Closed,
        },
        InterruptedRename {
            from: p("a"),
            to: p("c"),
            copied,
            deleted,
        },
        CheckTree,
    ];
    all.extend(ops);
    all.extend([RepeatRename, CheckTree]);
    all
}

/// SEMANTICS.md: a directory rename interrupted while copying is finished by repeating it.
#[tokio::test]
async fn interrupted_dir_rename_resumes_after_the_copy_phase() {
    check(interrupted(1, 0, vec![])).await;
}

/// SEMANTICS.md: … or while deleting (here after one delete, and after all but the marker).
#[tokio::test]
async fn interrupted_dir_rename_resumes_after_the_delete_phase() {
    check(interrupted(2, 1, vec![])).await;
    check(interrupted(2, 2, vec![])).await;
}

/// SEMANTICS.md: a copy with other data than its source (another client changed it) stops the
/// repeat with ESTALE, nothing copied or deleted.
#[tokio::test]
async fn interrupted_dir_rename_over_a_changed_copy_is_estale() {
    check(interrupted(
        1,
        0,
        vec![RemotePut {
            path: p("c/a"),
            marker: false,
            data: d("theirs"),
        }],
    ))
    .await;
}

/// SEMANTICS.md: a journal left on a finished rename is harmless: a new `a` renamed onto the
/// non-empty `c` is ENOTEMPTY (not merged), and `c` renames on as any directory.
#[tokio::test]
async fn journal_left_on_a_finished_dir_rename_does_not_merge_a_new_source() {
    let mut ops = interrupted(
        2,
        3,
        vec![
            Mkdir { path: p("a") },
            Create {
                path: p("a/c"),
                data: d("new"),
                then: Closed,
            },
        ],
    );
    ops.extend([
        Rename {
            from: p("c"),
            to: p("b"),
        },
        CheckTree,
    ]);
    check(ops).await;
}

/// A new file pending in the partial destination is not the source's: the repeat is
/// ENOTEMPTY (the file uploads at close, next to the copies).
#[tokio::test]
async fn interrupted_dir_rename_with_a_new_file_in_the_destination_is_not_empty() {
    check(interrupted(
        1,
        0,
        vec![Create {
            path: p("c/c"),
            data: d("mine"),
            then: Kept,
        }],
    ))
    .await;
}

/// A file written and flushed through an open handle is replaced by another writer, then
/// renamed here (the rename copies the other writer's generation, the one this mount saw);
/// then a write through the handle. Was: the model moved every handle of the file to the
/// copy, so the write built on the other writer's data; the fs keeps the handle on its own
/// generation (as a directory rename does, see
/// `regression_dir_rename_rebases_open_file_onto_other_writers_copy`): ESTALE at the write, or,
/// while a copy of it is held, at close.
#[tokio::test]
async fn regression_write_after_rename_of_a_file_another_writer_replaced() {
    check(vec![
        Create {
            path: p("c"),
            data: d("a"),
            then: Flushed,
        },
        Read { path: p("a") },
        Rename {
            from: p("a"),
            to: p("a"),
        },
        RemotePut {
            path: p("c"),
            marker: false,
            data: d(""),
        },
        Rename {
            from: p("c"),
            to: p("a"),
        },
        Write {
            handle: 0,
            offset: 0,
            data: d("a"),
        },
    ])
    .await;
}

/// A new empty file flushed through a handle that wrote nothing (so not uploaded yet) when
/// another client creates the same name with the same (empty) content: the release's
/// create-only upload fails its precondition. Was: the model took an object holding exactly
/// its bytes for its own upload (as the fs does only when a first attempt's answer was lost)
/// and expected the close to succeed; the fs says ESTALE, another writer created it first.
#[tokio::test]
async fn regression_close_after_remote_create_of_same_bytes_is_stale() {
    check(vec![
        Create {
            path: p("c"),
            data: d(""),
            then: Flushed,
        },
        RemotePut {
            path: p("c"),
            marker: false,
            data: d(""),
        },
    ])
    .await;
}

/// `--write-back async`, two worker threads: a file changed through an open handle is queued
/// for upload (another handle's close) and unlinked; the queued upload ran after the unlink,
/// found the file removed and dropped its staged data while the first handle was still open,
/// whose next write then said ESTALE (the model: it goes on, as on a local filesystem). Failed
/// about one run in ten, so it is replayed many times; `fs_writeback` pins the same order
/// deterministically.
#[test]
fn regression_async_unlink_while_an_upload_is_queued_keeps_the_open_handles_data() {
    let ops = vec![
        Create {
            path: p("a"),
            data: d("binas"),
            then: Flushed,
        },
        Write {
            handle: 0,
            offset: 5,
            data: d("x"),
        },
        Read { path: p("a") },
        Unlink { path: p("a") },
        Write {
            handle: 0,
            offset: 10,
            data: d("ggslb"),
        },
    ];
    for _ in 0..100 {
        for streaming in [false, true] {
            if let Err(e) = replay(&ops, streaming, true, false) {
                panic!("streaming_writes={streaming}: {e}");
            }
        }
    }
}

/// An open file changed here whose object another mount deleted (its interrupted directory
/// rename moved it away) keeps its name while its directory stands; then a directory is renamed
/// over that (empty, as the bucket shows it) directory. Was: the model still found the file by
/// its old path in the new directory; the fs does not (the directory it was in is gone), and
/// now neither does the model. Its changes still upload to its key at close.
#[tokio::test]
async fn regression_a_directory_renamed_over_one_holding_an_orphaned_open_file_does_not_hold_it() {
    check(vec![
        Mkdir { path: p("c") },
        Create {
            path: p("c/b"),
            data: d("a"),
            then: Flushed,
        },
        Write {
            handle: 0,
            offset: 0,
            data: d("a"),
        },
        InterruptedRename {
            from: p("c"),
            to: p("b/a"),
            copied: 7,
            deleted: 76,
        },
        Rename {
            from: p("b"),
            to: p("c"),
        },
        Read { path: p("c/b") },
        Create {
            path: p("c/b"),
            data: d(""),
            then: Closed,
        },
    ])
    .await;
}

/// An open file changed here whose object another client deleted, in a directory then found
/// gone (nothing else under it), which another client then makes again (a marker). Was: the
/// model still found the file by its old path in the new directory (ESTALE on a read); the fs
/// does not (the directory's inode went, and the file with it), and now neither does the model.
#[tokio::test]
async fn regression_a_directory_made_again_does_not_hold_an_orphaned_open_file() {
    check(vec![
        RemotePut {
            path: p("b/b"),
            marker: false,
            data: d(""),
        },
        Create {
            path: p("b/a"),
            data: d("a"),
            then: Flushed,
        },
        Write {
            handle: 0,
            offset: 0,
            data: d("a"),
        },
        RemoteDelete { index: 0 },
        Unlink { path: p("b/b") },
        Read { path: p("b") },
        RemotePut {
            path: p("b"),
            marker: true,
            data: d(""),
        },
        Read { path: p("b/a") },
        Rename {
            from: p("a"),
            to: p("b/a/a"),
        },
    ])
    .await;
}
