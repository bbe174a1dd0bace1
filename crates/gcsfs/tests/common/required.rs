//! What a test does when something it needs is missing (the emulator, FUSE, root, a tool).
//!
//! Outside CI it says why and skips. With `GCSFS_TESTS_REQUIRED` set (as `scripts/test.sh`
//! sets it) it fails: there every test must run, and a missing prerequisite is a broken setup,
//! not a pass.

/// The environment variable that makes a missing prerequisite a failure.
pub const REQUIRED: &str = "GCSFS_TESTS_REQUIRED";

/// Says that the test cannot run, for `reason`: prints `skipped: <reason>` (the caller then
/// returns), or panics when [`REQUIRED`] is set.
pub fn cannot_run(reason: &str) {
    if std::env::var_os(REQUIRED).is_some_and(|v| !v.is_empty() && v != "0") {
        panic!("cannot run: {reason} ({REQUIRED} is set: every test must run here)");
    }
    eprintln!("skipped: {reason}");
}
