//! `--write-back async` on a real mount: files closed by a program land in the bucket in the
//! background, `fsync` (here `dd conv=fsync`) returns once its file is in the bucket, and
//! unmounting saves what is still pending.
//!
//! Needs `GCSFS_TEST_ENDPOINT`, `/dev/fuse` and root; otherwise it prints `skipped: <reason>`.

mod common;

use std::time::{Duration, Instant};

use common::mount::{Bucket, Mount, MountOptions, data, fuse_endpoint, sh};

#[test]
fn async_write_back_on_a_real_mount() {
    let Some(endpoint) = fuse_endpoint() else {
        return;
    };
    let bucket = Bucket::fresh(&endpoint, "async");
    let options = MountOptions {
        extra: ["--write-back", "async", "--upload-concurrency", "8"]
            .map(String::from)
            .to_vec(),
        ..MountOptions::default()
    };
    let mut m = Mount::new(&bucket, options);
    let mnt = m.path().display().to_string();
    let src = tempfile::tempdir().unwrap();
    for i in 0..40u64 {
        std::fs::write(src.path().join(format!("f{i}")), data(i, 3000 + i as usize)).unwrap();
    }
    sh(&format!(
        "mkdir {mnt}/d && cp {}/* {mnt}/d/",
        src.path().display()
    ));
    // Seen here at once, whatever the bucket holds yet.
    assert_eq!(sh(&format!("ls {mnt}/d | wc -l")).trim(), "40");
    // In the bucket shortly after (bounded: a hang, not a speed, is what this catches).
    let deadline = Instant::now() + Duration::from_secs(60);
    while bucket.list("d/").len() < 41 {
        assert!(
            Instant::now() < deadline,
            "the files were not uploaded in the background"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in 0..40u64 {
        assert!(
            bucket.get(&format!("d/f{i}")).as_deref() == Some(&data(i, 3000 + i as usize)[..]),
            "d/f{i}"
        );
    }
    // fsync returns with the file in the bucket.
    sh(&format!(
        "head -c 5000 /dev/urandom > {}/s && dd if={}/s of={mnt}/synced bs=5000 conv=fsync status=none",
        src.path().display(),
        src.path().display()
    ));
    assert_eq!(
        bucket.get("synced"),
        Some(std::fs::read(src.path().join("s")).unwrap())
    );
    // Pending files are saved by the unmount.
    sh(&format!(
        "for i in 1 2 3 4 5; do echo late $i > {mnt}/late$i; done"
    ));
    let status = m.stop();
    assert!(status.success(), "{status}; log:\n{}", m.log());
    for i in 1..=5 {
        assert_eq!(
            bucket.get(&format!("late{i}")),
            Some(format!("late {i}\n").into_bytes())
        );
    }
}
