//! Reference-model property test of the filesystem layer.
//!
//! Random sequences of operations over a tiny name space ({a, b, c}, three deep) — creating,
//! writing, reading, truncating, making and removing directories, unlinking, renaming, and
//! another client putting and deleting objects directly in the bucket — run against the real
//! [`gcsfs::fs::Filesystem`] over `MemStore` (metadata and negative TTL zero) and against the
//! reference model in `reftest/model.rs`, which encodes `docs/SEMANTICS.md`. Every op's result,
//! the bucket, the conflicts directory and (periodically and at the end) the whole tree must
//! agree. The shape follows awslabs/mountpoint-s3's `reftests`.
//!
//! `PROPTEST_CASES` raises the case count (default 64). A shrunk failure is kept as a
//! `regression_*` test below that replays its exact op list.

#[path = "reftest/harness.rs"]
mod harness;
#[path = "reftest/model.rs"]
mod model;
#[path = "reftest/ops.rs"]
mod ops;
#[path = "reftest/sut.rs"]
mod sut;

use model::Quirks;
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

fn replay(ops: &[ops::Op], streaming: bool) -> Result<(), String> {
    // Known bugs are reproduced by the model so the search finds new ones; each is pinned by
    // an ignored regression test below that runs without quirks.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(harness::run(ops, streaming, Quirks::KNOWN))
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
        if let Err(e) = replay(&ops, streaming) {
            prop_assert!(false, "{}", e);
        }
    }
}

/// Replays a case in both write modes against the model as SEMANTICS.md describes it.
async fn check(ops: Vec<ops::Op>) {
    for streaming in [false, true] {
        check_mode(&ops, streaming).await;
    }
}

/// Replays a case in one write mode against the model as SEMANTICS.md describes it.
async fn check_mode(ops: &[ops::Op], streaming: bool) {
    check_with(ops, streaming, Quirks::NONE).await;
}

/// Replays a case in one write mode with some quirks reproduced (to isolate one bug behind
/// another).
async fn check_with(ops: &[ops::Op], streaming: bool, quirks: Quirks) {
    if let Err(e) = harness::run(ops, streaming, quirks).await {
        panic!("streaming_writes={streaming}: {e}");
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
/// lists directory `c` and unbinds the open file; its close returns Ok but the data is neither
/// uploaded nor kept in the conflicts directory. SEMANTICS.md: close returns the upload's error;
/// the file stays reachable as `c\n` next to the directory.
#[tokio::test]
#[ignore = "bug: readdir listing a remote dir `x` unbinds open file `x`; its close returns Ok and drops the data"]
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
/// which rightly answers ENOENT) unbinds the open file. A later write through the still-open
/// handle is then dropped at close, which returns Ok. SEMANTICS.md: the upload is conditional,
/// close returns ESTALE and the data is kept in the conflicts directory (which is what happens
/// when no lookup intervenes).
#[tokio::test]
#[ignore = "bug: a lookup that sees an open file's object deleted remotely unbinds it; later writes are dropped with close Ok"]
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

/// A new file written sequentially is streamed; another client creates the same name first.
/// Close rightly returns ESTALE and leaves the other object alone, but the streamed data is
/// gone: SEMANTICS.md says the losing writer's data is kept under `gcsfs-conflicts/`.
#[tokio::test]
#[ignore = "bug: a streamed new file losing the create race is not kept in gcsfs-conflicts/"]
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

/// After a streamed new file loses the create race, its inode stays "local" (never uploaded)
/// with no data, and is never evicted: every later lookup of the name returns it, so reading
/// the other writer's object fails with ESTALE and `unlink` deletes nothing. SEMANTICS.md: the
/// name then shows the other writer's object.
#[tokio::test]
#[ignore = "bug: after a streamed create loses the race, the name stays bound to a dataless local inode (reads ESTALE)"]
async fn regression_streamed_create_race_leaves_phantom_local_file() {
    // The lost data itself is `regression_streamed_file_losing_create_race_keeps_no_conflict_copy`.
    let quirks = Quirks {
        streamed_conflict_not_kept: true,
        ..Quirks::NONE
    };
    check_with(
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
        quirks,
    )
    .await;
}

/// A directory is renamed while a file below it is open; the file moves with it, but its next
/// close fails with ESTALE (and its data goes to the conflicts directory) although nobody else
/// wrote: the open file is still based on the generation of its old key. A file rename does
/// move the base generation along.
#[tokio::test]
#[ignore = "bug: after a directory rename, closing a changed file that was open below it is a spurious ESTALE"]
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

/// This mount keeps `a` open (clean, after a flush); another client replaces it; a new
/// open + read of `a` returns the old generation's bytes from the retained local copy.
/// SEMANTICS.md: open pins the generation it sees and reads return exactly that generation.
#[tokio::test]
#[ignore = "bug: a new open reads a clean local copy of an older generation kept by another open handle"]
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

/// A new file is streamed and flushed (published); another client replaces it; an `ls` sees
/// the new generation; a further write through the creating handle is applied on top of the
/// other client's data and the close succeeds, replacing their object. With a staging copy the
/// same sequence fails with ESTALE. SEMANTICS.md: changes are based on the generation the
/// writer had; if the object changed meanwhile, close returns ESTALE.
#[tokio::test]
#[ignore = "bug: after a streamed file is published, writes through its handle rebase onto another writer's newer object"]
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
/// object under `c/`, so a lookup finds `c` gone; it puts `c/a` back. Listing `c` no longer
/// shows the pending `c/b` (it hangs off the replaced directory inode), though before the
/// delete it did and after its close it will.
#[tokio::test]
#[ignore = "bug: an open new file disappears from its directory after the directory briefly vanished remotely"]
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

/// `truncate` of a file nobody has open leaves a clean local copy on the inode; another client
/// replaces the object; the next open + read returns the truncated old data.
#[tokio::test]
#[ignore = "bug: truncate of an unopened file leaves a local copy that a later open reads after a remote replace"]
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
