//! The operations a reference-test case is made of, and their proptest strategies.
//!
//! Names come from {a, b, c}, nested at most three deep, so that random sequences collide:
//! a file and a directory of the same name, a remote put under a local file, a rename onto an
//! existing name… `Debug` prints an op list as Rust that compiles in a regression test.

use std::fmt;

use proptest::prelude::*;

/// A path of 1 to 3 components, each `a`, `b` or `c`.
#[derive(Clone, PartialEq, Eq)]
pub struct P(pub String);

/// `p("a/b")`, for regression tests.
pub fn p(s: &str) -> P {
    P(s.to_string())
}

impl fmt::Debug for P {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p({:?})", self.0)
    }
}

/// File data (small, lowercase letters so a mismatch is readable).
#[derive(Clone, PartialEq, Eq)]
pub struct D(pub Vec<u8>);

/// `d("abc")`, for regression tests.
pub fn d(s: &str) -> D {
    D(s.as_bytes().to_vec())
}

impl fmt::Debug for D {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "d({:?})", String::from_utf8_lossy(&self.0))
    }
}

/// What happens to a newly created file after its first write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Then {
    /// `close(2)`: flush and release.
    Closed,
    /// `fsync(2)`-like flush; the handle stays open.
    Flushed,
    /// Nothing: the file stays local and dirty, the handle open.
    Kept,
}

/// One step of a test case. Handles are indices into the list of handles still open (taken
/// modulo its length; the op does nothing when none is open).
#[derive(Clone, Debug)]
pub enum Op {
    /// Lookup (must be missing: as `open(O_CREAT|O_EXCL)`), create, write `data` at 0, then `then`.
    Create {
        path: P,
        data: D,
        then: Then,
    },
    /// `open(O_RDWR)` of an existing file; the handle stays open.
    Open {
        path: P,
    },
    /// `pwrite` through an open handle.
    Write {
        handle: usize,
        offset: u8,
        data: D,
    },
    /// `close(2)` of an open handle (flush, then release).
    Close {
        handle: usize,
    },
    /// `open(O_RDONLY)`, read the whole file, `close(2)`.
    Read {
        path: P,
    },
    /// `truncate(2)` by path.
    Truncate {
        path: P,
        size: u8,
    },
    Mkdir {
        path: P,
    },
    Rmdir {
        path: P,
    },
    Unlink {
        path: P,
    },
    Rename {
        from: P,
        to: P,
    },
    /// Another client writes an object: `path` itself, or the directory marker `path/`.
    RemotePut {
        path: P,
        marker: bool,
        data: D,
    },
    /// Another client deletes the `index`-th object of the bucket (in key order).
    RemoteDelete {
        index: usize,
    },
    /// Another mount's rename of directory `from` to `to` stopped part-way (it crashed): the
    /// bucket holds what gcsfs's rename journal leaves, `copied` and `deleted` saying how far
    /// it got (see `Model::interrupted_rename`).
    InterruptedRename {
        from: P,
        to: P,
        copied: u8,
        deleted: u8,
    },
    /// This mount repeats the last `InterruptedRename` (`rename(from, to)`), as SEMANTICS.md
    /// says to finish one; nothing if there was none.
    RepeatRename,
    /// `ls` of a directory (`path`'s parent; the root for one-component paths): readdir only.
    List {
        path: P,
    },
    /// Walk the tree (readdir + lookup + read of files nobody has open) and compare.
    CheckTree,
    /// The kernel forgets every inode reference the test took so far.
    Forget,
    /// `syncfs(2)`: every pending background upload finishes (a no-op with `--write-back
    /// sync`); the bucket is compared after it in every mode.
    Sync,
    /// The process dies now (`kill -9`): the bucket as it is at this instant, uploads in flight
    /// or not, is what would survive. It must hold everything the last `Sync` saved that was not
    /// changed since, and nothing that was never a saved or pending state of its file (see
    /// `Harness::check_crash_image`). The run then goes on: the image is only looked at.
    Crash,
}

impl Op {
    /// Whether the op acts on the bucket from outside this mount.
    pub fn is_remote(&self) -> bool {
        matches!(
            self,
            Op::RemotePut { .. }
                | Op::RemoteDelete { .. }
                | Op::InterruptedRename { .. }
                | Op::RepeatRename
        )
    }
}

fn path() -> impl Strategy<Value = P> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..=3)
        .prop_map(|parts| P(parts.join("/")))
}

fn data() -> impl Strategy<Value = D> {
    prop::collection::vec(b'a'..=b'z', 0..6).prop_map(D)
}

fn then() -> impl Strategy<Value = Then> {
    prop_oneof![Just(Then::Closed), Just(Then::Flushed), Just(Then::Kept)]
}

/// One random op.
pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        // The weights of `local_op`'s ops add up to 33.
        33 => local_op(),
        4 => (path(), any::<bool>(), data())
            .prop_map(|(path, marker, data)| Op::RemotePut { path, marker, data }),
        2 => any::<usize>().prop_map(|index| Op::RemoteDelete { index }),
        3 => (path(), path(), any::<u8>(), any::<u8>())
            .prop_map(|(from, to, copied, deleted)| Op::InterruptedRename { from, to, copied, deleted }),
        3 => Just(Op::RepeatRename),
    ]
}

/// One random op of this mount only (no other client): the async write-back's cases, where
/// the bucket is compared only after a `Sync` (see `harness.rs`). Generated directly, not by
/// filtering `op` (whose rejects ran past proptest's limit at 20,000 cases).
pub fn local_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (path(), data(), then()).prop_map(|(path, data, then)| Op::Create { path, data, then }),
        2 => path().prop_map(|path| Op::Open { path }),
        4 => (any::<usize>(), 0..12u8, data())
            .prop_map(|(handle, offset, data)| Op::Write { handle, offset, data }),
        3 => any::<usize>().prop_map(|handle| Op::Close { handle }),
        3 => path().prop_map(|path| Op::Read { path }),
        1 => (path(), 0..8u8).prop_map(|(path, size)| Op::Truncate { path, size }),
        3 => path().prop_map(|path| Op::Mkdir { path }),
        2 => path().prop_map(|path| Op::Rmdir { path }),
        2 => path().prop_map(|path| Op::Unlink { path }),
        3 => (path(), path()).prop_map(|(from, to)| Op::Rename { from, to }),
        1 => path().prop_map(|path| Op::List { path }),
        1 => Just(Op::CheckTree),
        1 => Just(Op::Forget),
        1 => Just(Op::Sync),
        1 => Just(Op::Crash),
    ]
}
