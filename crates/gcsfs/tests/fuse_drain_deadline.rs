//! `gcsfs mount` on SIGTERM when uploads cannot succeed: it stops by `--drain-timeout`
//! although each upload would retry for a minute, names each file it could not upload, leaves
//! no mount behind and exits non-zero.
//!
//! The bucket lives on an emulator of the test's own (see `private_emulator`), killed once the
//! files are written. Needs `GCSFS_TEST_ENDPOINT` (the shared emulator's setup provides
//! `fake-gcs-server` and port 80), `/dev/fuse` and root; otherwise it prints `skipped: <reason>`.

mod common;
mod private_emulator;

use std::io::Write;
use std::time::{Duration, Instant};

use common::mount::{Bucket, Mount, MountOptions, data, fuse_endpoint, no_spawns};
use private_emulator::PrivateEmulator;

/// `--drain-timeout` of the test, in seconds.
const DRAIN_TIMEOUT: u64 = 3;

/// What the exit may take beyond `--drain-timeout` before the test fails: a generous bound on
/// a loaded machine, there to catch a shutdown that waits for the retries (a minute).
const MARGIN: Duration = Duration::from_secs(5);

/// The files written, by path in the mount.
const FILES: [&str; 2] = ["a.txt", "dir/b.txt"];

#[test]
fn sigterm_with_the_store_gone_exits_by_the_drain_timeout_naming_each_file() {
    if fuse_endpoint().is_none() {
        return;
    }
    let mut emulator = PrivateEmulator::start();
    let bucket = Bucket::fresh(&emulator.endpoint, "fuse-deadline");
    let options = MountOptions {
        extra: [
            "--retry-deadline-secs",
            "60",
            "--drain-timeout",
            &DRAIN_TIMEOUT.to_string(),
        ]
        .map(String::from)
        .to_vec(),
        ..MountOptions::default()
    };
    let mut m = Mount::new(&bucket, options);
    std::fs::create_dir(m.join("dir")).unwrap();
    // Small files held open with unsaved data: no close (and no process started meanwhile,
    // whose inherited copy would be closed, see `no_spawns`), so nothing uploads them.
    let quiet = no_spawns();
    let open: Vec<std::fs::File> = FILES
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let mut f = std::fs::File::create(m.join(path)).unwrap();
            f.write_all(&data(i as u64, 4096 + i)).unwrap();
            f
        })
        .collect();
    assert_eq!(bucket.names(), ["dir/"], "only the directory is uploaded");
    emulator.kill();

    let start = Instant::now();
    // SIGTERM, then wait (bounded) for the exit; asserts the mount is gone afterwards.
    let status = m.stop();
    let took = start.elapsed();
    drop((open, quiet));
    let log = m.log();
    eprintln!("gcsfs mount exited {took:?} after SIGTERM with {status}");
    assert!(
        took < Duration::from_secs(DRAIN_TIMEOUT) + MARGIN,
        "exit took {took:?}; log:\n{log}"
    );
    assert_eq!(status.code(), Some(1), "log:\n{log}");
    for path in FILES {
        assert!(
            log.lines()
                .any(|l| l.contains("ERROR") && l.contains(&format!("/{path}"))),
            "{path} is not named as not uploaded; log:\n{log}"
        );
    }
    assert!(
        log.contains("2 file(s) could not be uploaded"),
        "no final error line; log:\n{log}"
    );
}
