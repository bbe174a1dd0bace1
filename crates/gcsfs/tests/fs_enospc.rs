//! A full `--temp-dir` (ENOSPC while staging): the writer gets ENOSPC, and nothing already
//! acknowledged is lost. The temp dir is a 1 MiB tmpfs mounted for the test (root needed).

#[path = "common/required.rs"]
mod required;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gcsfs::fs::{Caller, Filesystem, FsConfig, InodeNo, ManualClock, WriteBack};
use gcsfs::store::mem::MemStore;
use gcsfs::store::{ObjectKey, ObjectStore, Preconditions, WriteAttrs, WriteSource};

const ME: Caller = Caller { uid: 0, gid: 0 };

/// A small tmpfs, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "gcsfs-enospc"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Files left in it (staging files of the filesystem).
    fn files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

async fn put(store: &MemStore, key: &str, data: &[u8]) {
    store
        .write(
            &ObjectKey::new(key).unwrap(),
            WriteSource::Bytes(Bytes::copy_from_slice(data)),
            Preconditions::NONE,
            &WriteAttrs::default(),
        )
        .await
        .unwrap();
}

fn get(mem: &MemStore, key: &str) -> Option<Vec<u8>> {
    mem.get(&ObjectKey::new(key).ok()?)
        .map(|(_, data)| data.to_vec())
}

#[tokio::test]
async fn a_full_temp_dir_fails_the_writer_with_enospc_and_loses_nothing_acknowledged() {
    let Some(tmpfs) = Tmpfs::mount("1m") else {
        required::cannot_run("mounting a tmpfs (needs root)");
        return;
    };
    // `gcsfs mount` would charge staging here to the memory budget (`fs_memory.rs` tests
    // that); this test leaves it uncharged, to see the disk itself fill up.
    assert!(
        gcsfs::fs::is_in_memory(tmpfs.path()).unwrap(),
        "a tmpfs is memory"
    );
    let mem = Arc::new(MemStore::new());
    let kept: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    put(&mem, "kept", &kept).await;
    put(&mem, "big", &vec![7u8; 2 << 20]).await;
    let fs = Filesystem::shared(
        mem.clone(),
        FsConfig {
            temp_dir: tmpfs.path().into(),
            write_back: WriteBack::Async,
            ..Default::default()
        },
        Arc::new(ManualClock::default()),
    );

    // An acknowledged change to an existing file: staged (100 kB of the 1 MiB), closed.
    let k = fs.lookup(InodeNo::ROOT, "kept").await.unwrap().attr.ino;
    let o = fs.open(k, libc::O_RDWR).await.unwrap();
    fs.write(o.fh, 0, b"CHANGED").await.unwrap();
    let mut expected_kept = kept.clone();
    expected_kept[..7].copy_from_slice(b"CHANGED");

    // The first change to a 2 MiB object must stage all of it: ENOSPC, and no partial
    // staging file is left behind.
    let b = fs.lookup(InodeNo::ROOT, "big").await.unwrap().attr.ino;
    let ob = fs.open(b, libc::O_RDWR).await.unwrap();
    let e = fs.write(ob.fh, 0, b"x").await.unwrap_err();
    assert_eq!(e.errno(), libc::ENOSPC, "{e}");
    assert_eq!(tmpfs.files().len(), 1, "only the staging file of `kept`");

    // A staged file that grows past the space: the write that does not fit fails, and the
    // file stays as acknowledged (no bytes of the failed write, its size unchanged).
    let (g, og) = fs
        .create(InodeNo::ROOT, "grow", 0o644, libc::O_RDWR, ME)
        .await
        .unwrap();
    fs.write(og.fh, 0, b"0123456789").await.unwrap();
    fs.write(og.fh, 2, b"ab").await.unwrap(); // not an append: staged
    let e = fs.write(og.fh, 10, &vec![1u8; 2 << 20]).await.unwrap_err();
    assert_eq!(e.errno(), libc::ENOSPC, "{e}");
    assert_eq!(fs.getattr(g.attr.ino).await.unwrap().attr.size, 10);
    assert_eq!(
        &fs.read(og.fh, 0, 100).await.unwrap().into_bytes()[..],
        b"01ab456789"
    );

    // The writer of `big` may go on with something that fits once space is free again.
    for (ino, fh) in [(k, o.fh), (g.attr.ino, og.fh), (b, ob.fh)] {
        let _ = fs.flush(fh).await;
        fs.release(ino, fh).await.unwrap();
    }
    assert!(fs.wait_for_uploads(Duration::from_secs(60)).await);
    assert!(!fs.has_dirty());
    // (Lengths first: a failure then says what went wrong without printing megabytes.)
    let kept_now = get(&mem, "kept").unwrap();
    assert_eq!(kept_now.len(), expected_kept.len());
    assert!(kept_now == expected_kept, "`kept` as acknowledged");
    let grow = get(&mem, "grow").unwrap();
    assert_eq!(grow.len(), 10, "no byte of the refused write");
    assert_eq!(grow, b"01ab456789");
    let big = get(&mem, "big").unwrap();
    assert!(
        big.len() == 2 << 20 && big.iter().all(|&b| b == 7),
        "`big` untouched"
    );
    assert!(
        tmpfs.files().is_empty(),
        "staging files are gone once saved"
    );
}
