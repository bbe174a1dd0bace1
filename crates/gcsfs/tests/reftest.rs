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

use proptest::prelude::*;
use model::Quirks;
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
        if let Err(e) = harness::run(&ops, streaming, Quirks::NONE).await {
            panic!("streaming_writes={streaming}: {e}");
        }
    }
}

#[tokio::test]
async fn smoke_every_op_once() {
    check(vec![
        Mkdir { path: p("a") },
        Create { path: p("a/b"), data: d("hello"), then: AndClose },
        Read { path: p("a/b") },
        Open { path: p("a/b") },
        Write { handle: 0, offset: 5, data: d("!") },
        Close { handle: 0 },
        Truncate { path: p("a/b"), size: 2 },
        RemotePut { path: p("c/a"), marker: false, data: d("x") },
        RemotePut { path: p("b"), marker: true, data: d("") },
        Rename { from: p("a"), to: p("b") },
        Rename { from: p("b/b"), to: p("c/b") },
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
        Create { path: p("c"), data: d("mine"), then: AndKeep },
        RemotePut { path: p("c/a"), marker: false, data: d("") },
        List { path: p("c") },
        Close { handle: 0 },
    ])
    .await;
}
