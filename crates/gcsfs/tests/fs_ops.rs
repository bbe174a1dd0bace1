//! Filesystem operations on `MemStore`, without FUSE: namespace mapping, write-back, conflicts,
//! caches (with an injected clock).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use gcsfs::fs::{
    Filesystem, FsConfig, FsError, InodeNo, Kind, ManualClock, RENAME_FROM_KEY, SetAttr,
};
use gcsfs::store::mem::MemStore;
use gcsfs::store::{
    ByteRange, Fault, ObjectKey, ObjectStore, Op, Preconditions, WriteAttrs, WriteSource,
};

/// The process the tests act as: root, the mount's default owner.
const ME: gcsfs::fs::Caller = gcsfs::fs::Caller { uid: 0, gid: 0 };

struct Fixture {
    store: Arc<MemStore>,
    fs: Filesystem,
    clock: Arc<ManualClock>,
    _tmp: tempfile::TempDir,
}

fn fixture_with(store: Arc<MemStore>, ttl: Duration) -> Fixture {
    fixture_ttls(store, ttl, ttl)
}

fn fixture_ttls(store: Arc<MemStore>, ttl: Duration, negative_ttl: Duration) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let config = FsConfig {
        temp_dir: tmp.path().to_path_buf(),
        metadata_ttl: ttl,
        negative_ttl,
        list_page_size: 7,
        ..Default::default()
    };
    let clock = Arc::new(ManualClock::default());
    let fs = Filesystem::new(store.clone(), config, clock.clone());
    Fixture {
        store,
        fs,
        clock,
        _tmp: tmp,
    }
}

fn fixture() -> Fixture {
    fixture_with(Arc::new(MemStore::new()), Duration::ZERO)
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

async fn get(store: &MemStore, key: &str) -> Option<Vec<u8>> {
    let mut s = store
        .read(&ObjectKey::new(key).ok()?, None, ByteRange::ALL)
        .await
        .ok()?;
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.unwrap());
    }
    Some(out)
}

async fn lookup_path(fs: &Filesystem, path: &str) -> Result<InodeNo, FsError> {
    let mut ino = InodeNo::ROOT;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        ino = fs.lookup(ino, part).await?.attr.ino;
    }
    Ok(ino)
}

async fn list(fs: &Filesystem, ino: InodeNo) -> Vec<(String, Kind)> {
    let fh = fs.opendir(ino).unwrap();
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let entries = fs.readdir(fh, offset).await.unwrap();
        if entries.is_empty() {
            break;
        }
        for e in &entries {
            out.push((e.name.clone(), e.kind));
            offset = e.offset;
        }
    }
    fs.releasedir(fh).unwrap();
    out.retain(|(n, _)| n != "." && n != "..");
    out.sort();
    out
}

async fn write_file(fs: &Filesystem, parent: InodeNo, name: &str, data: &[u8]) -> InodeNo {
    let (entry, open) = fs
        .create(parent, name, 0o644, libc::O_WRONLY, ME)
        .await
        .unwrap();
    fs.write(open.fh, 0, data).await.unwrap();
    fs.flush(open.fh).await.unwrap();
    fs.release(entry.attr.ino, open.fh).await.unwrap();
    entry.attr.ino
}

async fn read_file(fs: &Filesystem, ino: InodeNo) -> Result<Vec<u8>, FsError> {
    let open = fs.open(ino, libc::O_RDONLY).await?;
    let mut out = Vec::new();
    loop {
        let chunk = fs.read(open.fh, out.len() as u64, 65536).await?;
        if chunk.is_empty() {
            break;
        }
        out.extend_from_slice(&chunk.into_bytes());
    }
    fs.release(ino, open.fh).await?;
    Ok(out)
}

#[tokio::test]
async fn create_write_close_uploads_and_reads_back() {
    let f = fixture();
    let ino = write_file(&f.fs, InodeNo::ROOT, "hello.txt", b"hello world").await;
    assert_eq!(get(&f.store, "hello.txt").await.unwrap(), b"hello world");
    assert_eq!(read_file(&f.fs, ino).await.unwrap(), b"hello world");
    let attr = f.fs.getattr(ino).await.unwrap().attr;
    assert_eq!(attr.size, 11);
    assert_eq!(attr.kind, Kind::File);
}

#[tokio::test]
async fn empty_file_is_created_on_close() {
    let f = fixture();
    write_file(&f.fs, InodeNo::ROOT, "empty", b"").await;
    assert_eq!(get(&f.store, "empty").await.unwrap(), b"");
}

#[tokio::test]
async fn implicit_and_explicit_directories() {
    let f = fixture();
    put(&f.store, "a/b/c.txt", b"c").await;
    put(&f.store, "x/", b"").await;
    let a = lookup_path(&f.fs, "a").await.unwrap();
    assert_eq!(f.fs.getattr(a).await.unwrap().attr.kind, Kind::Dir);
    let c = lookup_path(&f.fs, "a/b/c.txt").await.unwrap();
    assert_eq!(read_file(&f.fs, c).await.unwrap(), b"c");
    let x = lookup_path(&f.fs, "x").await.unwrap();
    assert_eq!(f.fs.getattr(x).await.unwrap().attr.kind, Kind::Dir);
    assert_eq!(
        list(&f.fs, InodeNo::ROOT).await,
        vec![("a".to_string(), Kind::Dir), ("x".to_string(), Kind::Dir)]
    );
    assert!(
        list(&f.fs, x).await.is_empty(),
        "marker itself is not listed"
    );
    assert!(matches!(
        lookup_path(&f.fs, "nope").await,
        Err(FsError::NotFound)
    ));
}

#[tokio::test]
async fn directory_wins_and_file_stays_reachable_with_suffix() {
    let f = fixture();
    put(&f.store, "d", b"file").await;
    put(&f.store, "d!x", b"1").await;
    put(&f.store, "d-y", b"2").await;
    put(&f.store, "d/inner", b"inner").await;
    let names = list(&f.fs, InodeNo::ROOT).await;
    assert_eq!(
        names,
        vec![
            ("d".to_string(), Kind::Dir),
            ("d\n".to_string(), Kind::File),
            ("d!x".to_string(), Kind::File),
            ("d-y".to_string(), Kind::File),
        ]
    );
    let d = lookup_path(&f.fs, "d").await.unwrap();
    assert_eq!(f.fs.getattr(d).await.unwrap().attr.kind, Kind::Dir);
    let file = f.fs.lookup(InodeNo::ROOT, "d\n").await.unwrap().attr.ino;
    assert_eq!(read_file(&f.fs, file).await.unwrap(), b"file");
}

#[tokio::test]
async fn names_that_cannot_be_paths_are_skipped() {
    let f = fixture();
    put(&f.store, "ok", b"1").await;
    put(&f.store, "a//b", b"1").await;
    put(&f.store, "./x", b"1").await;
    put(&f.store, "../y", b"1").await;
    put(&f.store, &"l".repeat(300), b"1").await;
    put(&f.store, "withdata/", b"data").await;
    let names = list(&f.fs, InodeNo::ROOT).await;
    assert_eq!(
        names,
        vec![
            ("a".to_string(), Kind::Dir),
            ("ok".to_string(), Kind::File),
            ("withdata".to_string(), Kind::Dir),
        ]
    );
    let a = lookup_path(&f.fs, "a").await.unwrap();
    assert!(
        list(&f.fs, a).await.is_empty(),
        "a//b has an empty component"
    );
}

#[tokio::test]
async fn large_directory_lists_every_entry_once_across_pages() {
    let f = fixture();
    for i in 0..250 {
        put(&f.store, &format!("big/f{i:04}"), b"").await;
    }
    for i in 0..30 {
        put(&f.store, &format!("big/d{i:02}/x"), b"").await;
    }
    let big = lookup_path(&f.fs, "big").await.unwrap();
    let names = list(&f.fs, big).await;
    assert_eq!(names.len(), 280);
    let mut dedup = names.clone();
    dedup.dedup();
    assert_eq!(dedup.len(), 280);
    // Restarting from an earlier offset (rewinddir) gives the same sequence.
    let fh = f.fs.opendir(big).unwrap();
    let first = f.fs.readdir(fh, 0).await.unwrap();
    let _ = f.fs.readdir(fh, 20).await.unwrap();
    let again = f.fs.readdir(fh, 0).await.unwrap();
    assert_eq!(
        first.iter().map(|e| &e.name).collect::<Vec<_>>(),
        again.iter().map(|e| &e.name).collect::<Vec<_>>()
    );
    f.fs.releasedir(fh).unwrap();
}

/// A path nobody looked at: the probe that finds its first directory lists a few keys below
/// it, and the names along the first path there are bound at once, so looking up the rest of
/// `data/deep/a/b/one.bin` asks the store nothing (one round trip instead of five). A file name
/// that is also a directory is not taken for a file.
#[tokio::test]
async fn a_cold_deep_path_costs_one_probe() {
    let store = Arc::new(MemStore::new());
    put(&store, "data/deep/a/b/one.bin", b"first").await;
    put(&store, "data/deep/a/b/two", b"x").await;
    put(&store, "data/deep/a/b/two/inside", b"y").await;
    let f = fixture_with(store.clone(), Duration::from_secs(60));
    let data = lookup_path(&f.fs, "data").await.unwrap();
    let calls = |op| store.calls(op);
    let before = (calls(Op::Stat), calls(Op::List));
    let ino = lookup_path(&f.fs, "data/deep/a/b/one.bin").await.unwrap();
    assert_eq!(
        (calls(Op::Stat), calls(Op::List)),
        before,
        "answered from the first probe"
    );
    assert_eq!(read_file(&f.fs, ino).await.unwrap(), b"first");
    // `two` is a file and a directory: not learned as either kind from the page; the lookup
    // asks, and the directory wins.
    let b = lookup_path(&f.fs, "data/deep/a/b").await.unwrap();
    let two = f.fs.lookup(b, "two").await.unwrap();
    assert_eq!(two.attr.kind, Kind::Dir);
    assert!(data != b);
    f.fs.check_invariants().unwrap();
}

/// `tar x` sets each directory's mode and times: each change patches the marker as this mount
/// last saw it (made by `mkdir`, or by the change before), with no request to look at it
/// first. A marker another writer changed meanwhile is looked at and patched again; its other
/// metadata stays.
#[tokio::test]
async fn directory_attributes_patch_the_marker_as_last_seen() {
    let f = fixture();
    let d =
        f.fs.mkdir(InodeNo::ROOT, "d", 0o755, ME)
            .await
            .unwrap()
            .attr
            .ino;
    let stats = f.store.calls(Op::Stat);
    let mode = |m| SetAttr {
        mode: Some(m),
        ..Default::default()
    };
    f.fs.setattr(d, mode(0o700)).await.unwrap();
    let times = SetAttr {
        mtime: Some(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000)),
        ..Default::default()
    };
    f.fs.setattr(d, times).await.unwrap();
    assert_eq!(f.store.calls(Op::Stat), stats, "no look before a patch");
    let marker = ObjectKey::new("d/").unwrap();
    let theirs = [("owner-team".to_string(), Some("x".to_string()))]
        .into_iter()
        .collect();
    f.store
        .patch_metadata(&marker, &theirs, Preconditions::NONE)
        .await
        .unwrap();
    let e = f.fs.setattr(d, mode(0o711)).await.unwrap();
    assert_eq!(e.attr.perm, 0o711);
    let (meta, _) = f.store.get(&marker).unwrap();
    assert_eq!(meta.metadata["goog-reserved-posix-mode"], "711");
    assert_eq!(meta.metadata["goog-reserved-file-mtime"], "1000000");
    assert_eq!(meta.metadata["owner-team"], "x");
}

/// Entries a readdirplus buffered stay valid until the kernel has them: a sweep past
/// `max_cached_inodes` (here set off by listing another directory) does not drop the children
/// of a directory being listed, so `readdirplus_sent` counts a reference to a live inode whose
/// attributes are its own.
#[tokio::test]
async fn readdirplus_entries_outlive_a_sweep_until_sent() {
    let store = Arc::new(MemStore::new());
    for i in 0..20 {
        put(&store, &format!("d/f{i:02}"), b"abc").await;
        put(&store, &format!("other/g{i:02}"), b"").await;
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = FsConfig {
        temp_dir: tmp.path().to_path_buf(),
        list_page_size: 7,
        max_cached_inodes: 8,
        ..Default::default()
    };
    let fs = Filesystem::new(store, config, Arc::new(ManualClock::default()));
    let d = lookup_path(&fs, "d").await.unwrap();
    let fh = fs.opendir(d).unwrap();
    let page = fs.readdir(fh, 0).await.unwrap();
    let files: Vec<_> = page.iter().filter(|e| e.attr.is_some()).cloned().collect();
    assert!(files.len() >= 5, "{page:?}");
    // Another directory's listing sweeps the table (40+ inodes against a cap of 8).
    let other = lookup_path(&fs, "other").await.unwrap();
    assert_eq!(list(&fs, other).await.len(), 20);
    fs.readdirplus_sent(&page);
    for e in &files {
        let attr = fs.getattr(e.ino).await.unwrap().attr;
        assert_eq!((attr.kind, attr.size), (Kind::File, 3), "{}", e.name);
    }
    fs.releasedir(fh).unwrap();
    fs.check_invariants().unwrap();
}

/// A `releasedir` while a readdir of the same handle waits for the store still counts the
/// directory closed: its listed children become evictable again (before, the close was lost
/// and they stayed cached for the mount's life).
#[tokio::test]
async fn releasedir_during_a_readdir_counts_the_directory_closed() {
    let mem = Arc::new(MemStore::new());
    for i in 0..20 {
        put(&mem, &format!("d/f{i:02}"), b"abc").await;
        put(&mem, &format!("other/g{i:02}"), b"").await;
    }
    let faults = Arc::new(gcsfs::store::FaultStore::new(mem.clone()));
    let tmp = tempfile::tempdir().unwrap();
    let config = FsConfig {
        temp_dir: tmp.path().to_path_buf(),
        metadata_ttl: Duration::ZERO,
        negative_ttl: Duration::ZERO,
        max_cached_inodes: 8,
        ..Default::default()
    };
    let fs = Filesystem::new(faults.clone(), config, Arc::new(ManualClock::default()));
    let d = lookup_path(&fs, "d").await.unwrap();
    let fh = fs.opendir(d).unwrap();
    faults.push(Op::List, Fault::Stall);
    let mut readdir = Box::pin(fs.readdir(fh, 0));
    assert!(
        futures::poll!(readdir.as_mut()).is_pending(),
        "the listing stalls"
    );
    fs.releasedir(fh).unwrap();
    drop(readdir);
    // Bind d's children (a listing through a new handle), then close it: cached, unreferenced.
    let children: Vec<InodeNo> = {
        let fh = fs.opendir(d).unwrap();
        let mut inos = Vec::new();
        let mut offset = 0;
        loop {
            let page = fs.readdir(fh, offset).await.unwrap();
            let Some(last) = page.last() else { break };
            offset = last.offset;
            inos.extend(page.iter().filter(|e| e.attr.is_some()).map(|e| e.ino));
        }
        fs.releasedir(fh).unwrap();
        inos
    };
    assert_eq!(children.len(), 20);
    // Another directory's listing sweeps the table past its cap of 8: d is closed, so its
    // children go.
    let other = lookup_path(&fs, "other").await.unwrap();
    assert_eq!(list(&fs, other).await.len(), 20);
    let left = futures::future::join_all(children.iter().map(|&c| fs.getattr(c)))
        .await
        .into_iter()
        .filter(|r| r.is_ok())
        .count();
    assert!(
        left < 20,
        "d still counted open: all {left} of its children kept"
    );
    fs.check_invariants().unwrap();
}

/// A name made only of the conflict suffix (or a dot with it) can be listed but never looked
/// up, whether the lookup is answered from memory or by the store.
#[tokio::test]
async fn a_name_of_only_the_conflict_suffix_is_never_found() {
    let store = Arc::new(MemStore::new());
    put(&store, "d/\n", b"x").await;
    put(&store, "d/.\n", b"x").await;
    put(&store, "d/ok", b"x").await;
    let f = fixture_with(store, Duration::from_secs(60));
    let d = lookup_path(&f.fs, "d").await.unwrap();
    let listed: Vec<_> = list(&f.fs, d).await.into_iter().map(|(n, _)| n).collect();
    assert!(listed.contains(&"ok".to_string()), "{listed:?}");
    for name in ["\n", ".\n"] {
        let err = f.fs.lookup(d, name).await.unwrap_err();
        assert!(matches!(err, FsError::NotFound), "{name:?}: {err:?}");
    }
    f.fs.lookup(d, "ok").await.unwrap();
}

/// A listing from the inode table lists each child under the name it had when the listing
/// began, or not at all if it was renamed since: never one name twice.
#[tokio::test]
async fn a_rename_during_a_listing_from_memory_never_lists_a_name_twice() {
    let store = Arc::new(MemStore::new());
    for name in ["a", "b", "c"] {
        put(&store, &format!("d/{name}"), b"x").await;
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = FsConfig {
        temp_dir: tmp.path().to_path_buf(),
        metadata_ttl: Duration::from_secs(60),
        negative_ttl: Duration::from_secs(60),
        list_page_size: 1,
        ..Default::default()
    };
    let fs = Filesystem::new(store, config, Arc::new(ManualClock::default()));
    let d = lookup_path(&fs, "d").await.unwrap();
    assert_eq!(
        list(&fs, d).await.len(),
        3,
        "listed in full: now from the table"
    );
    let fh = fs.opendir(d).unwrap();
    let first = fs.readdir(fh, 0).await.unwrap();
    let names: Vec<_> = first.iter().map(|e| e.name.clone()).collect();
    assert_eq!(names, [".", "..", "a"]);
    // `b` takes `a`'s name while the listing is past `a`.
    fs.rename(d, "b", d, "a", 0).await.unwrap();
    let mut all = first;
    loop {
        let page = fs.readdir(fh, all.last().unwrap().offset).await.unwrap();
        if page.is_empty() {
            break;
        }
        all.extend(page);
    }
    fs.releasedir(fh).unwrap();
    let names: Vec<_> = all.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [".", "..", "a", "c"],
        "b was renamed away, a listed once"
    );
    fs.check_invariants().unwrap();
}

#[tokio::test]
async fn local_new_files_are_listed_before_upload() {
    let f = fixture();
    let (entry, open) =
        f.fs.create(InodeNo::ROOT, "pending", 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap();
    assert!(get(&f.store, "pending").await.is_none());
    let names = list(&f.fs, InodeNo::ROOT).await;
    assert_eq!(names, vec![("pending".to_string(), Kind::File)]);
    f.fs.release(entry.attr.ino, open.fh).await.unwrap();
    assert!(get(&f.store, "pending").await.is_some());
}

/// A directory that exists only because it holds new files not uploaded yet (another client
/// removed its marker) is listed in its parent, wins its name over a remote file of that name
/// (listed and reachable as `name\n`), and is not empty for `rmdir` (nor is its parent).
#[tokio::test]
async fn directory_kept_by_pending_files_is_listed_and_wins_its_name() {
    let f = fixture();
    let top =
        f.fs.mkdir(InodeNo::ROOT, "top", 0o755, ME)
            .await
            .unwrap()
            .attr
            .ino;
    let d = f.fs.mkdir(top, "d", 0o755, ME).await.unwrap().attr.ino;
    let (entry, open) =
        f.fs.create(d, "new", 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap();
    f.fs.write(open.fh, 0, b"mine").await.unwrap();
    // Another client removes both markers: the bucket has nothing under `top/` any more.
    for marker in ["top/d/", "top/"] {
        f.store
            .delete(&ObjectKey::new(marker).unwrap(), Preconditions::NONE)
            .await
            .unwrap();
    }
    assert!(f.store.keys().is_empty());
    assert_eq!(
        list(&f.fs, InodeNo::ROOT).await,
        vec![("top".to_string(), Kind::Dir)]
    );
    assert_eq!(list(&f.fs, top).await, vec![("d".to_string(), Kind::Dir)]);
    assert_eq!(list(&f.fs, d).await, vec![("new".to_string(), Kind::File)]);
    // A remote file of the directory's name, and names sorting between `d` and `d/`.
    put(&f.store, "top/d", b"theirs").await;
    put(&f.store, "top/d!x", b"1").await;
    assert_eq!(
        list(&f.fs, top).await,
        vec![
            ("d".to_string(), Kind::Dir),
            ("d\n".to_string(), Kind::File),
            ("d!x".to_string(), Kind::File),
        ]
    );
    let found = f.fs.lookup(top, "d").await.unwrap().attr;
    assert_eq!((found.ino, found.kind), (d, Kind::Dir));
    let file = f.fs.lookup(top, "d\n").await.unwrap().attr.ino;
    assert_eq!(read_file(&f.fs, file).await.unwrap(), b"theirs");
    assert_eq!(
        f.fs.create(top, "d", 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap_err()
            .errno(),
        libc::EEXIST
    );
    for (parent, name) in [(top, "d"), (InodeNo::ROOT, "top")] {
        assert_eq!(
            f.fs.rmdir(parent, name).await.unwrap_err().errno(),
            libc::ENOTEMPTY,
            "rmdir {name}"
        );
    }
    // Once uploaded, the file is listed from the bucket; nothing was lost or overwritten.
    f.fs.flush(open.fh).await.unwrap();
    f.fs.release(entry.attr.ino, open.fh).await.unwrap();
    assert_eq!(get(&f.store, "top/d/new").await.unwrap(), b"mine");
    assert_eq!(get(&f.store, "top/d").await.unwrap(), b"theirs");
    assert_eq!(list(&f.fs, d).await, vec![("new".to_string(), Kind::File)]);
}

#[tokio::test]
async fn two_writers_one_wins_other_gets_estale_and_data_is_kept() {
    let f = fixture();
    put(&f.store, "doc", b"v1").await;
    let ino = lookup_path(&f.fs, "doc").await.unwrap();
    let open = f.fs.open(ino, libc::O_RDWR).await.unwrap();
    f.fs.write(open.fh, 0, b"mine").await.unwrap();
    // Another client replaces the object meanwhile.
    put(&f.store, "doc", b"theirs").await;
    let err = f.fs.flush(open.fh).await.unwrap_err();
    assert_eq!(err.errno(), libc::ESTALE, "{err}");
    assert_eq!(get(&f.store, "doc").await.unwrap(), b"theirs");
    let _ = f.fs.release(ino, open.fh).await;
    // The losing writer's data is preserved locally.
    let conflicts = std::fs::read_dir(f._tmp.path().join("gcsfs-conflicts"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect::<Vec<_>>();
    assert_eq!(conflicts, vec![b"mine".to_vec()]);
}

#[tokio::test]
async fn new_file_racing_a_remote_create_gets_estale() {
    let f = fixture();
    let (entry, open) =
        f.fs.create(InodeNo::ROOT, "race", 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap();
    f.fs.write(open.fh, 0, b"local").await.unwrap();
    put(&f.store, "race", b"remote").await;
    assert_eq!(f.fs.flush(open.fh).await.unwrap_err().errno(), libc::ESTALE);
    assert_eq!(get(&f.store, "race").await.unwrap(), b"remote");
    let _ = f.fs.release(entry.attr.ino, open.fh).await;
}

#[tokio::test]
async fn append_edit_and_truncate_existing_objects() {
    let f = fixture();
    put(&f.store, "log", b"0123456789").await;
    let ino = lookup_path(&f.fs, "log").await.unwrap();
    // Append.
    let open =
        f.fs.open(ino, libc::O_WRONLY | libc::O_APPEND)
            .await
            .unwrap();
    f.fs.write(open.fh, 10, b"ab").await.unwrap();
    f.fs.release(ino, open.fh).await.unwrap();
    assert_eq!(get(&f.store, "log").await.unwrap(), b"0123456789ab");
    // Edit in place, and read through the same handle before close.
    let open = f.fs.open(ino, libc::O_RDWR).await.unwrap();
    f.fs.write(open.fh, 2, b"XY").await.unwrap();
    assert_eq!(
        &f.fs.read(open.fh, 0, 100).await.unwrap().into_bytes()[..],
        b"01XY456789ab"
    );
    f.fs.release(ino, open.fh).await.unwrap();
    assert_eq!(get(&f.store, "log").await.unwrap(), b"01XY456789ab");
    // truncate(2) on a closed file persists at once.
    f.fs.setattr(
        ino,
        SetAttr {
            size: Some(4),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(get(&f.store, "log").await.unwrap(), b"01XY");
    // O_TRUNC.
    let open =
        f.fs.open(ino, libc::O_WRONLY | libc::O_TRUNC)
            .await
            .unwrap();
    f.fs.write(open.fh, 0, b"new").await.unwrap();
    f.fs.release(ino, open.fh).await.unwrap();
    assert_eq!(get(&f.store, "log").await.unwrap(), b"new");
}

#[tokio::test]
async fn handles_share_dirty_state() {
    let f = fixture();
    put(&f.store, "shared", b"aaaa").await;
    let ino = lookup_path(&f.fs, "shared").await.unwrap();
    let w = f.fs.open(ino, libc::O_WRONLY).await.unwrap();
    let r = f.fs.open(ino, libc::O_RDONLY).await.unwrap();
    f.fs.write(w.fh, 0, b"bb").await.unwrap();
    assert_eq!(
        &f.fs.read(r.fh, 0, 10).await.unwrap().into_bytes()[..],
        b"bbaa"
    );
    f.fs.release(ino, w.fh).await.unwrap();
    f.fs.release(ino, r.fh).await.unwrap();
    assert_eq!(get(&f.store, "shared").await.unwrap(), b"bbaa");
}

#[tokio::test]
async fn pinned_generation_read_gets_estale_never_a_mix() {
    let f = fixture();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    put(&f.store, "big", &big).await;
    let ino = lookup_path(&f.fs, "big").await.unwrap();
    let open = f.fs.open(ino, libc::O_RDONLY).await.unwrap();
    let first = f.fs.read(open.fh, 0, 4096).await.unwrap().into_bytes();
    assert_eq!(&first[..], &big[..4096]);
    put(&f.store, "big", &vec![7u8; 3_000_000]).await;
    // Further reads return the pinned generation's bytes or ESTALE, never the new data.
    let mut offset = 4096u64;
    loop {
        match f.fs.read(open.fh, offset, 1 << 20).await {
            Ok(b) if b.is_empty() => break,
            Ok(b) => {
                let b = b.into_bytes();
                assert_eq!(&b[..], &big[offset as usize..offset as usize + b.len()]);
                offset += b.len() as u64;
            }
            Err(e) => {
                assert_eq!(e.errno(), libc::ESTALE);
                break;
            }
        }
    }
    f.fs.release(ino, open.fh).await.unwrap();
}

#[tokio::test]
async fn mkdir_rmdir_and_not_empty() {
    let f = fixture();
    let d =
        f.fs.mkdir(InodeNo::ROOT, "d", 0o755, ME)
            .await
            .unwrap()
            .attr
            .ino;
    assert!(get(&f.store, "d/").await.is_some());
    assert_eq!(
        f.fs.mkdir(InodeNo::ROOT, "d", 0o755, ME)
            .await
            .unwrap_err()
            .errno(),
        libc::EEXIST
    );
    write_file(&f.fs, d, "f", b"1").await;
    assert_eq!(
        f.fs.rmdir(InodeNo::ROOT, "d").await.unwrap_err().errno(),
        libc::ENOTEMPTY
    );
    f.fs.unlink(d, "f").await.unwrap();
    f.fs.rmdir(InodeNo::ROOT, "d").await.unwrap();
    assert!(get(&f.store, "d/").await.is_none());
    // An implicit directory with an object under it is not empty either.
    put(&f.store, "imp/x", b"").await;
    assert_eq!(
        f.fs.rmdir(InodeNo::ROOT, "imp").await.unwrap_err().errno(),
        libc::ENOTEMPTY
    );
}

#[tokio::test]
async fn unlink_of_replaced_object_is_estale_and_keeps_theirs() {
    let f = fixture_with(Arc::new(MemStore::new()), Duration::from_secs(60));
    put(&f.store, "f", b"1").await;
    lookup_path(&f.fs, "f").await.unwrap();
    put(&f.store, "f", b"2").await;
    assert_eq!(
        f.fs.unlink(InodeNo::ROOT, "f").await.unwrap_err().errno(),
        libc::ESTALE
    );
    assert_eq!(get(&f.store, "f").await.unwrap(), b"2");
}

#[tokio::test]
async fn rename_file_and_directory() {
    let f = fixture();
    put(&f.store, "src", b"data").await;
    f.fs.rename(InodeNo::ROOT, "src", InodeNo::ROOT, "dst", 0)
        .await
        .unwrap();
    assert!(get(&f.store, "src").await.is_none());
    assert_eq!(get(&f.store, "dst").await.unwrap(), b"data");
    // Over an existing file.
    put(&f.store, "other", b"o").await;
    f.fs.rename(InodeNo::ROOT, "dst", InodeNo::ROOT, "other", 0)
        .await
        .unwrap();
    assert_eq!(get(&f.store, "other").await.unwrap(), b"data");
    // Directory with nested content.
    put(&f.store, "dir/a", b"a").await;
    put(&f.store, "dir/sub/b", b"b").await;
    put(&f.store, "dir/", b"").await;
    f.fs.rename(InodeNo::ROOT, "dir", InodeNo::ROOT, "moved", 0)
        .await
        .unwrap();
    let mut keys: Vec<String> = f
        .store
        .keys()
        .into_iter()
        .map(|k| k.into_string())
        .collect();
    keys.sort();
    assert_eq!(keys, vec!["moved/", "moved/a", "moved/sub/b", "other"]);
    let b = lookup_path(&f.fs, "moved/sub/b").await.unwrap();
    assert_eq!(read_file(&f.fs, b).await.unwrap(), b"b");
}

#[tokio::test]
async fn rename_dir_over_limit_fails_cleanly() {
    let store = Arc::new(MemStore::new());
    let tmp = tempfile::tempdir().unwrap();
    let fs = Filesystem::new(
        store.clone(),
        FsConfig {
            temp_dir: tmp.path().into(),
            metadata_ttl: Duration::ZERO,
            negative_ttl: Duration::ZERO,
            rename_dir_limit: 3,
            ..Default::default()
        },
        Arc::new(ManualClock::default()),
    );
    for i in 0..5 {
        put(&store, &format!("d/{i}"), b"").await;
    }
    let err = fs
        .rename(InodeNo::ROOT, "d", InodeNo::ROOT, "e", 0)
        .await
        .unwrap_err();
    assert_eq!(err.errno(), libc::EMFILE);
    assert_eq!(store.keys().len(), 5, "nothing copied or deleted");
}

/// A filesystem over `FaultStore` over `MemStore` (no retries: an injected failure is the
/// operation's failure, as a crash part-way would be), TTLs zero.
struct Faulty {
    mem: Arc<MemStore>,
    faults: Arc<gcsfs::store::FaultStore>,
    fs: Filesystem,
    _tmp: tempfile::TempDir,
}

fn faulty() -> Faulty {
    let mem = Arc::new(MemStore::new());
    let faults = Arc::new(gcsfs::store::FaultStore::new(mem.clone()));
    let tmp = tempfile::tempdir().unwrap();
    let fs = Filesystem::new(
        faults.clone(),
        FsConfig {
            temp_dir: tmp.path().into(),
            metadata_ttl: Duration::ZERO,
            negative_ttl: Duration::ZERO,
            list_page_size: 7,
            ..Default::default()
        },
        Arc::new(ManualClock::default()),
    );
    Faulty {
        mem,
        faults,
        fs,
        _tmp: tmp,
    }
}

/// Every object in `store`: key → (data, custom metadata).
async fn snapshot(
    store: &MemStore,
) -> std::collections::BTreeMap<String, (Vec<u8>, std::collections::BTreeMap<String, String>)> {
    let mut out = std::collections::BTreeMap::new();
    for key in store.keys() {
        let meta = store.stat(&key).await.unwrap();
        let data = get(store, key.as_str()).await.unwrap();
        out.insert(key.into_string(), (data, meta.metadata));
    }
    out
}

/// `snapshot` with every key under `from` moved under `to`: what a finished rename leaves.
fn moved(
    before: &std::collections::BTreeMap<
        String,
        (Vec<u8>, std::collections::BTreeMap<String, String>),
    >,
    from: &str,
    to: &str,
) -> std::collections::BTreeMap<String, (Vec<u8>, std::collections::BTreeMap<String, String>)> {
    before
        .iter()
        .map(|(k, v)| match k.strip_prefix(from) {
            Some(rest) => (format!("{to}{rest}"), v.clone()),
            None => (k.clone(), v.clone()),
        })
        .collect()
}

/// Directory `A` with a marker carrying metadata of its own, 20 files and a subdirectory.
async fn put_tree(store: &MemStore, explicit: bool) {
    if explicit {
        let mut attrs = WriteAttrs::default();
        attrs.metadata.insert("note".into(), "kept".into());
        store
            .write(
                &ObjectKey::new("A/").unwrap(),
                WriteSource::Bytes(Bytes::new()),
                Preconditions::NONE,
                &attrs,
            )
            .await
            .unwrap();
    }
    for i in 0..20 {
        put(store, &format!("A/f{i:02}"), format!("data {i}").as_bytes()).await;
    }
    put(store, "A/sub/", b"").await;
    put(store, "A/sub/x", b"x").await;
    put(store, "other", b"o").await;
}

fn keys_under(
    snap: &std::collections::BTreeMap<
        String,
        (Vec<u8>, std::collections::BTreeMap<String, String>),
    >,
    prefix: &str,
) -> usize {
    snap.keys().filter(|k| k.starts_with(prefix)).count()
}

/// A directory rename that fails part-way through its copy phase (as a crash would leave it)
/// is finished by repeating it: the destination is not empty, but its marker's journal names
/// the source. Copies already there are not made again.
#[tokio::test]
async fn dir_rename_interrupted_while_copying_resumes_when_repeated() {
    let f = faulty();
    put_tree(&f.mem, true).await;
    let before = snapshot(&f.mem).await;
    f.faults.push_n(Op::Copy, Fault::Pass, 5);
    f.faults.push(Op::Copy, Fault::Status(503));
    let err =
        f.fs.rename(InodeNo::ROOT, "A", InodeNo::ROOT, "B", 0)
            .await
            .unwrap_err();
    assert_eq!(err.errno(), libc::EIO);
    let partial = snapshot(&f.mem).await;
    assert_eq!(
        partial["B/"].1.get(RENAME_FROM_KEY).map(String::as_str),
        Some("A/")
    );
    let copied = keys_under(&partial, "B/") - 1;
    assert!(
        copied > 0 && copied < 22,
        "{copied} copies: interrupted part-way"
    );
    for (k, v) in &before {
        assert_eq!(partial.get(k), Some(v), "source {k} untouched");
    }
    // An `ls` of the partial destination works; so does a plain rename elsewhere: ENOTEMPTY.
    let b = lookup_path(&f.fs, "B").await.unwrap();
    assert_eq!(list(&f.fs, b).await.len(), copied);
    put(&f.mem, "C/x", b"c").await;
    assert_eq!(
        f.fs.rename(InodeNo::ROOT, "C", InodeNo::ROOT, "B", 0)
            .await
            .unwrap_err()
            .errno(),
        libc::ENOTEMPTY
    );
    f.mem
        .delete(&ObjectKey::new("C/x").unwrap(), Preconditions::NONE)
        .await
        .unwrap();

    let copies_before = f.faults.calls(Op::Copy);
    f.fs.rename(InodeNo::ROOT, "A", InodeNo::ROOT, "B", 0)
        .await
        .unwrap();
    assert_eq!(
        f.faults.calls(Op::Copy) - copies_before,
        (22 - copied) as u64,
        "only the missing objects are copied"
    );
    // Every object at B once, with its data and metadata (the marker's own too), nothing at
    // A, no journal key.
    assert_eq!(snapshot(&f.mem).await, moved(&before, "A/", "B/"));
    let x = lookup_path(&f.fs, "B/sub/x").await.unwrap();
    assert_eq!(read_file(&f.fs, x).await.unwrap(), b"x");
    assert_eq!(
        lookup_path(&f.fs, "A").await.unwrap_err().errno(),
        libc::ENOENT
    );
}

/// As above, interrupted in the delete phase, with an implicit source directory (no marker):
/// the repeat deletes the rest, and the journal's marker goes too (B stays implicit).
#[tokio::test]
async fn dir_rename_interrupted_while_deleting_resumes_when_repeated() {
    let f = faulty();
    put_tree(&f.mem, false).await;
    let before = snapshot(&f.mem).await;
    f.faults.push_n(Op::Delete, Fault::Pass, 7);
    f.faults.push(Op::Delete, Fault::Status(503));
    let err =
        f.fs.rename(InodeNo::ROOT, "A", InodeNo::ROOT, "B", 0)
            .await
            .unwrap_err();
    assert_eq!(err.errno(), libc::EIO);
    let partial = snapshot(&f.mem).await;
    assert_eq!(
        partial["B/"].1.get(RENAME_FROM_KEY).map(String::as_str),
        Some("A/")
    );
    assert_eq!(
        keys_under(&partial, "B/"),
        23,
        "every copy and the journal marker"
    );
    let left = keys_under(&partial, "A/");
    assert!(
        left > 0 && left < 22,
        "{left} sources left: interrupted part-way"
    );

    f.fs.rename(InodeNo::ROOT, "A", InodeNo::ROOT, "B", 0)
        .await
        .unwrap();
    assert_eq!(snapshot(&f.mem).await, moved(&before, "A/", "B/"));
    assert!(
        get(&f.mem, "B/").await.is_none(),
        "B stays implicit, as A was"
    );
}

/// A repeat that finds a copy with other data than its source (another writer changed it)
/// stops with ESTALE before copying or deleting anything.
#[tokio::test]
async fn resumed_dir_rename_over_a_changed_copy_is_estale_and_deletes_nothing() {
    let f = faulty();
    put_tree(&f.mem, true).await;
    f.faults.push_n(Op::Copy, Fault::Pass, 5);
    f.faults.push(Op::Copy, Fault::Status(503));
    f.fs.rename(InodeNo::ROOT, "A", InodeNo::ROOT, "B", 0)
        .await
        .unwrap_err();
    put(&f.mem, "B/f00", b"someone else's").await;
    let partial = snapshot(&f.mem).await;
    let (copies, deletes) = (f.faults.calls(Op::Copy), f.faults.calls(Op::Delete));
    let err =
        f.fs.rename(InodeNo::ROOT, "A", InodeNo::ROOT, "B", 0)
            .await
            .unwrap_err();
    assert_eq!(err.errno(), libc::ESTALE);
    assert_eq!(snapshot(&f.mem).await, partial, "nothing copied or deleted");
    assert_eq!(f.faults.calls(Op::Copy), copies);
    assert_eq!(f.faults.calls(Op::Delete), deletes);
}

/// A journal key that could not be cleared at the end is harmless: the rename succeeds, the
/// directory lists and renames as any other, and a new directory of the source's name is not
/// merged into it (ENOTEMPTY, as without a journal).
#[tokio::test]
async fn journal_left_on_a_finished_dir_rename_is_harmless() {
    let f = faulty();
    put_tree(&f.mem, true).await;
    let before = snapshot(&f.mem).await;
    f.faults.push(Op::Patch, Fault::Status(503));
    f.fs.rename(InodeNo::ROOT, "A", InodeNo::ROOT, "B", 0)
        .await
        .unwrap();
    let after = snapshot(&f.mem).await;
    assert_eq!(
        after["B/"].1.get(RENAME_FROM_KEY).map(String::as_str),
        Some("A/")
    );
    let b = lookup_path(&f.fs, "B").await.unwrap();
    assert_eq!(list(&f.fs, b).await.len(), 21);
    // A new `A`, renamed onto the (non-empty) `B` that names it: not a resume.
    let a =
        f.fs.mkdir(InodeNo::ROOT, "A", 0o755, ME)
            .await
            .unwrap()
            .attr
            .ino;
    write_file(&f.fs, a, "new", b"new").await;
    let err =
        f.fs.rename(InodeNo::ROOT, "A", InodeNo::ROOT, "B", 0)
            .await
            .unwrap_err();
    assert_eq!(err.errno(), libc::ENOTEMPTY);
    assert_eq!(get(&f.mem, "A/new").await.unwrap(), b"new");
    assert!(get(&f.mem, "B/new").await.is_none());
    // B renames on; the source marker's journal is not carried along.
    f.fs.rename(InodeNo::ROOT, "B", InodeNo::ROOT, "C", 0)
        .await
        .unwrap();
    let done = snapshot(&f.mem).await;
    let mut want = moved(&before, "A/", "C/");
    want.insert("A/".into(), done["A/"].clone());
    want.insert("A/new".into(), done["A/new"].clone());
    assert_eq!(done["A/new"].0, b"new");
    assert_eq!(done, want);
    // An emptied directory whose marker holds a journal is removed like any other.
    f.faults.push(Op::Patch, Fault::Status(503));
    f.fs.rename(InodeNo::ROOT, "A", InodeNo::ROOT, "D", 0)
        .await
        .unwrap();
    let d = lookup_path(&f.fs, "D").await.unwrap();
    f.fs.unlink(d, "new").await.unwrap();
    f.fs.rmdir(InodeNo::ROOT, "D").await.unwrap();
    assert!(f.mem.keys().iter().all(|k| !k.as_str().starts_with("D/")));
}

/// A rename onto a destination that a stale "no such name" said was missing, but that another
/// client filled meanwhile, takes back the journal marker it made: ENOTEMPTY, nothing moved.
#[tokio::test]
async fn dir_rename_onto_a_directory_filled_meanwhile_is_not_empty() {
    let store = Arc::new(MemStore::new());
    let f = fixture_with(store, Duration::from_secs(60));
    put(&f.store, "A/x", b"x").await;
    assert_eq!(
        lookup_path(&f.fs, "B").await.unwrap_err().errno(),
        libc::ENOENT
    );
    put(&f.store, "B/y", b"y").await;
    let err =
        f.fs.rename(InodeNo::ROOT, "A", InodeNo::ROOT, "B", 0)
            .await
            .unwrap_err();
    assert_eq!(err.errno(), libc::ENOTEMPTY);
    let mut keys: Vec<String> = f
        .store
        .keys()
        .into_iter()
        .map(|k| k.into_string())
        .collect();
    keys.sort();
    assert_eq!(keys, ["A/x", "B/y"]);
}

#[tokio::test]
async fn symlinks_standard_and_legacy() {
    let f = fixture();
    let e =
        f.fs.symlink(InodeNo::ROOT, "ln", "target/file", ME)
            .await
            .unwrap();
    assert_eq!(e.attr.kind, Kind::Symlink);
    assert_eq!(f.fs.readlink(e.attr.ino).await.unwrap(), "target/file");
    let (meta, data) = f.store.get(&ObjectKey::new("ln").unwrap()).unwrap();
    assert_eq!(&data[..], b"target/file");
    assert_eq!(
        meta.metadata.get("goog-reserved-file-is-symlink").unwrap(),
        "true"
    );
    // gcsfuse's legacy form.
    let mut attrs = WriteAttrs::default();
    attrs
        .metadata
        .insert("gcsfuse_symlink_target".into(), "old/target".into());
    f.store
        .write(
            &ObjectKey::new("legacy").unwrap(),
            WriteSource::Bytes(Bytes::new()),
            Preconditions::NONE,
            &attrs,
        )
        .await
        .unwrap();
    let l = lookup_path(&f.fs, "legacy").await.unwrap();
    assert_eq!(f.fs.readlink(l).await.unwrap(), "old/target");
}

#[tokio::test]
async fn chmod_chown_and_mtime_are_stored_in_gcloud_keys() {
    let f = fixture();
    put(&f.store, "p", b"x").await;
    let ino = lookup_path(&f.fs, "p").await.unwrap();
    let mtime = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000);
    let attr =
        f.fs.setattr(
            ino,
            SetAttr {
                mode: Some(0o100600),
                uid: Some(1234),
                gid: Some(99),
                mtime: Some(mtime),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .attr;
    assert_eq!(
        (attr.perm, attr.uid, attr.gid, attr.mtime),
        (0o600, 1234, 99, mtime)
    );
    let (meta, data) = f.store.get(&ObjectKey::new("p").unwrap()).unwrap();
    assert_eq!(&data[..], b"x");
    assert_eq!(
        meta.metadata.get("goog-reserved-posix-mode").unwrap(),
        "600"
    );
    assert_eq!(
        meta.metadata.get("goog-reserved-posix-uid").unwrap(),
        "1234"
    );
    assert_eq!(meta.metadata.get("goog-reserved-posix-gid").unwrap(), "99");
    assert_eq!(
        meta.metadata.get("goog-reserved-file-mtime").unwrap(),
        "1000000"
    );
}

#[tokio::test]
async fn metadata_cache_ttl_with_injected_clock() {
    let f = fixture_with(Arc::new(MemStore::new()), Duration::from_secs(10));
    put(&f.store, "cached", b"1").await;
    lookup_path(&f.fs, "cached").await.unwrap();
    // Negative entry too.
    assert!(lookup_path(&f.fs, "later").await.is_err());
    f.store
        .delete(&ObjectKey::new("cached").unwrap(), Preconditions::NONE)
        .await
        .unwrap();
    put(&f.store, "later", b"1").await;
    // Within the TTL the caches answer.
    assert!(lookup_path(&f.fs, "cached").await.is_ok());
    assert!(lookup_path(&f.fs, "later").await.is_err());
    f.clock.advance(Duration::from_secs(11));
    assert!(matches!(
        lookup_path(&f.fs, "cached").await,
        Err(FsError::NotFound)
    ));
    assert!(lookup_path(&f.fs, "later").await.is_ok());
}

#[tokio::test]
async fn drain_uploads_every_dirty_file_and_refuses_new_writes() {
    let f = fixture();
    let mut open = Vec::new();
    for i in 0..5 {
        let (e, o) =
            f.fs.create(InodeNo::ROOT, &format!("f{i}"), 0o644, libc::O_WRONLY, ME)
                .await
                .unwrap();
        f.fs.write(o.fh, 0, format!("data{i}").as_bytes())
            .await
            .unwrap();
        open.push((e.attr.ino, o.fh));
    }
    assert!(f.fs.has_dirty());
    let failures =
        f.fs.drain(tokio::time::Instant::now() + Duration::from_secs(60))
            .await;
    assert!(failures.is_empty(), "{failures:?}");
    for i in 0..5 {
        assert_eq!(
            get(&f.store, &format!("f{i}")).await.unwrap(),
            format!("data{i}").as_bytes()
        );
    }
    assert_eq!(
        f.fs.create(InodeNo::ROOT, "late", 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap_err()
            .errno(),
        libc::EROFS
    );
}

#[tokio::test]
async fn only_dir_mounts_a_subtree() {
    let store = Arc::new(MemStore::new());
    put(&store, "outside", b"").await;
    put(&store, "sub/dir/inside", b"in").await;
    let tmp = tempfile::tempdir().unwrap();
    let fs = Filesystem::new(
        store.clone(),
        FsConfig {
            temp_dir: tmp.path().into(),
            only_dir: "/sub/dir/".into(),
            metadata_ttl: Duration::ZERO,
            negative_ttl: Duration::ZERO,
            ..Default::default()
        },
        Arc::new(ManualClock::default()),
    );
    assert_eq!(
        list(&fs, InodeNo::ROOT).await,
        vec![("inside".to_string(), Kind::File)]
    );
    write_file(&fs, InodeNo::ROOT, "new", b"n").await;
    assert_eq!(get(&store, "sub/dir/new").await.unwrap(), b"n");
}

#[tokio::test]
async fn unlinked_open_file_is_not_uploaded() {
    let f = fixture();
    let (e, o) =
        f.fs.create(InodeNo::ROOT, "tmp", 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap();
    f.fs.write(o.fh, 0, b"scratch").await.unwrap();
    f.fs.unlink(InodeNo::ROOT, "tmp").await.unwrap();
    f.fs.release(e.attr.ino, o.fh).await.unwrap();
    assert!(get(&f.store, "tmp").await.is_none());
}

#[tokio::test]
async fn sequential_new_file_streams_then_falls_back_on_seek() {
    let f = fixture();
    let (e, o) =
        f.fs.create(InodeNo::ROOT, "s", 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap();
    let ino = e.attr.ino;
    let chunk = vec![1u8; 1_000_000];
    for i in 0..5u64 {
        f.fs.write(o.fh, i * 1_000_000, &chunk).await.unwrap();
    }
    // Nothing visible until close (the resumable upload is not finalised).
    assert!(get(&f.store, "s").await.is_none());
    assert!(
        std::fs::read_dir(f._tmp.path()).unwrap().next().is_none(),
        "a streamed file keeps no local copy"
    );
    // A write that seeks back: what was streamed is published, then staged and edited.
    f.fs.write(o.fh, 10, b"XY").await.unwrap();
    assert_eq!(
        f.fs.read(o.fh, 8, 6).await.unwrap().into_bytes().as_ref(),
        &[1, 1, b'X', b'Y', 1, 1]
    );
    f.fs.release(ino, o.fh).await.unwrap();
    let data = get(&f.store, "s").await.unwrap();
    assert_eq!(data.len(), 5_000_000);
    assert_eq!(&data[10..12], b"XY");
    assert!(data[12..].iter().all(|&b| b == 1));
}

#[tokio::test]
async fn small_new_file_is_one_create_only_upload() {
    let f = fixture();
    write_file(&f.fs, InodeNo::ROOT, "small", &[7u8; 4096]).await;
    assert_eq!(f.store.calls(gcsfs::store::Op::Write), 1);
    assert_eq!(get(&f.store, "small").await.unwrap(), vec![7u8; 4096]);
    assert!(
        std::fs::read_dir(f._tmp.path()).unwrap().next().is_none(),
        "no staging file for a small new file"
    );
}

#[tokio::test]
async fn small_new_file_losing_a_create_race_keeps_its_data() {
    let f = fixture();
    let (e, o) =
        f.fs.create(InodeNo::ROOT, "r2", 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap();
    f.fs.write(o.fh, 0, b"mine").await.unwrap();
    put(&f.store, "r2", b"theirs").await;
    assert_eq!(f.fs.flush(o.fh).await.unwrap_err().errno(), libc::ESTALE);
    assert_eq!(get(&f.store, "r2").await.unwrap(), b"theirs");
    let _ = f.fs.release(e.attr.ino, o.fh).await;
    let kept: Vec<Vec<u8>> = std::fs::read_dir(f._tmp.path().join("gcsfs-conflicts"))
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(kept, vec![b"mine".to_vec()]);
}

#[tokio::test]
async fn streamed_file_losing_a_create_race_is_estale() {
    let f = fixture();
    let (e, o) =
        f.fs.create(InodeNo::ROOT, "r", 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap();
    f.fs.write(o.fh, 0, &vec![3u8; 5 << 20]).await.unwrap();
    put(&f.store, "r", b"theirs").await;
    assert_eq!(f.fs.flush(o.fh).await.unwrap_err().errno(), libc::ESTALE);
    assert_eq!(get(&f.store, "r").await.unwrap(), b"theirs");
    let _ = f.fs.release(e.attr.ino, o.fh).await;
}

#[tokio::test]
async fn streamed_file_unlinked_while_open_creates_nothing() {
    let f = fixture();
    let (e, o) =
        f.fs.create(InodeNo::ROOT, "gone", 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap();
    f.fs.write(o.fh, 0, &vec![3u8; 5 << 20]).await.unwrap();
    f.fs.unlink(InodeNo::ROOT, "gone").await.unwrap();
    f.fs.release(e.attr.ino, o.fh).await.unwrap();
    assert!(get(&f.store, "gone").await.is_none());
}

#[tokio::test]
async fn upload_whose_answer_was_lost_is_recognised_as_ours() {
    use gcsfs::store::{Fault, FaultStore, Op, RetryConfig, RetryStore};
    let mem = Arc::new(MemStore::new());
    put(&mem, "doc", b"old").await;
    let faults = Arc::new(FaultStore::new(mem.clone()));
    let store = Arc::new(RetryStore::new(faults.clone(), RetryConfig::default()));
    let tmp = tempfile::tempdir().unwrap();
    let fs = Filesystem::new(
        store,
        FsConfig {
            temp_dir: tmp.path().into(),
            metadata_ttl: Duration::ZERO,
            negative_ttl: Duration::ZERO,
            ..Default::default()
        },
        Arc::new(ManualClock::default()),
    );
    let ino = lookup_path(&fs, "doc").await.unwrap();
    let open = fs.open(ino, libc::O_WRONLY | libc::O_TRUNC).await.unwrap();
    fs.write(open.fh, 0, b"new data").await.unwrap();
    // The upload lands, but its answer is lost; the retry then fails its precondition.
    faults.push(Op::Write, Fault::StatusAfterCommit(503));
    fs.flush(open.fh).await.unwrap();
    fs.release(ino, open.fh).await.unwrap();
    assert_eq!(get(&mem, "doc").await.unwrap(), b"new data");
    assert_eq!(
        faults.calls(Op::Write),
        2,
        "one committed attempt, one retry"
    );
    assert!(
        !tmp.path().join("gcsfs-conflicts").exists(),
        "not a conflict"
    );
}

#[tokio::test]
async fn listed_or_new_directories_answer_missing_names_without_the_store() {
    use gcsfs::store::Op;
    let f = fixture_with(Arc::new(MemStore::new()), Duration::from_secs(60));
    put(&f.store, "full/a", b"").await;
    let full = lookup_path(&f.fs, "full").await.unwrap();
    list(&f.fs, full).await;
    let d =
        f.fs.mkdir(InodeNo::ROOT, "new", 0o755, ME)
            .await
            .unwrap()
            .attr
            .ino;
    let (stats, lists) = (f.store.calls(Op::Stat), f.store.calls(Op::List));
    assert!(matches!(
        f.fs.lookup(full, "missing").await,
        Err(FsError::NotFound)
    ));
    assert!(matches!(
        f.fs.lookup(d, "missing").await,
        Err(FsError::NotFound)
    ));
    assert!(f.fs.lookup(full, "a").await.is_ok());
    assert_eq!(
        (f.store.calls(Op::Stat), f.store.calls(Op::List)),
        (stats, lists)
    );
    // A file created in the new directory is found, and after the negative TTL the store is
    // asked again.
    write_file(&f.fs, d, "made", b"x").await;
    assert!(f.fs.lookup(d, "made").await.is_ok());
    f.clock.advance(Duration::from_secs(61));
    put(&f.store, "new/remote", b"").await;
    assert!(f.fs.lookup(d, "remote").await.is_ok());
}

#[tokio::test]
async fn small_directory_is_listed_again_instead_of_probed_after_the_negative_ttl() {
    use gcsfs::store::Op;
    let f = fixture_ttls(
        Arc::new(MemStore::new()),
        Duration::from_secs(60),
        Duration::from_secs(5),
    );
    let d =
        f.fs.mkdir(InodeNo::ROOT, "d", 0o755, ME)
            .await
            .unwrap()
            .attr
            .ino;
    for i in 0..3 {
        write_file(&f.fs, d, &format!("f{i}"), b"x").await;
    }
    f.clock.advance(Duration::from_secs(6));
    let (stats, lists) = (f.store.calls(Op::Stat), f.store.calls(Op::List));
    // The directory's knowledge expired: one listing answers this name and the next ones.
    assert!(matches!(
        f.fs.lookup(d, "missing").await,
        Err(FsError::NotFound)
    ));
    assert!(matches!(
        f.fs.lookup(d, "missing2").await,
        Err(FsError::NotFound)
    ));
    assert!(f.fs.lookup(d, "f1").await.is_ok());
    assert_eq!(
        (f.store.calls(Op::Stat), f.store.calls(Op::List)),
        (stats, lists + 1)
    );
    // Another client's file shows once the listing is older than the negative TTL.
    put(&f.store, "d/remote", b"r").await;
    assert!(matches!(
        f.fs.lookup(d, "remote").await,
        Err(FsError::NotFound)
    ));
    f.clock.advance(Duration::from_secs(6));
    assert!(f.fs.lookup(d, "remote").await.is_ok());
    assert_eq!(
        (f.store.calls(Op::Stat), f.store.calls(Op::List)),
        (stats, lists + 2)
    );
}

#[tokio::test]
async fn a_directory_listed_within_the_negative_ttl_is_listed_again_from_memory() {
    use gcsfs::store::Op;
    let f = fixture_ttls(
        Arc::new(MemStore::new()),
        Duration::from_secs(60),
        Duration::from_secs(5),
    );
    for i in 0..20 {
        put(&f.store, &format!("d/f{i:02}"), b"x").await;
    }
    put(&f.store, "d/sub/x", b"").await;
    let d = lookup_path(&f.fs, "d").await.unwrap();
    let first = list(&f.fs, d).await;
    assert_eq!(first.len(), 21);
    let lists = f.store.calls(Op::List);
    // Changes made here show at once, and the listing (3 pages of 7) needs no request.
    write_file(&f.fs, d, "made", b"y").await;
    f.fs.unlink(d, "f00").await.unwrap();
    let mut expected: Vec<_> = first.into_iter().filter(|(n, _)| n != "f00").collect();
    expected.push(("made".into(), Kind::File));
    expected.sort();
    assert_eq!(list(&f.fs, d).await, expected);
    assert_eq!(f.store.calls(Op::List), lists);
    // Another client's file shows once the listing is older than the negative TTL, as it does
    // for a lookup of its name.
    put(&f.store, "d/remote", b"r").await;
    assert!(!list(&f.fs, d).await.iter().any(|(n, _)| n == "remote"));
    f.clock.advance(Duration::from_secs(6));
    assert!(list(&f.fs, d).await.iter().any(|(n, _)| n == "remote"));
    assert!(f.store.calls(Op::List) > lists);
}

#[tokio::test]
async fn a_directory_whose_entries_expired_is_listed_from_the_store() {
    use gcsfs::store::Op;
    // Attributes expire (1 s) before the listing's negative TTL (5 s) does.
    let f = fixture_ttls(
        Arc::new(MemStore::new()),
        Duration::from_secs(1),
        Duration::from_secs(5),
    );
    put(&f.store, "d/a", b"x").await;
    let d = lookup_path(&f.fs, "d").await.unwrap();
    list(&f.fs, d).await;
    let lists = f.store.calls(Op::List);
    f.clock.advance(Duration::from_secs(2));
    put(&f.store, "d/a", b"longer").await;
    assert_eq!(list(&f.fs, d).await, vec![("a".to_string(), Kind::File)]);
    assert_eq!(f.store.calls(Op::List), lists + 1);
    let a = f.fs.lookup(d, "a").await.unwrap();
    assert_eq!(a.attr.size, 6, "the new listing's attributes");
}

/// Objects sorting before the `f…` names under `dir/`: the probe that finds `dir` learns these
/// (see `lookup::learn_below`), so the lookups a test counts all reach the store.
async fn pad_first_keys(store: &MemStore, dir: &str) {
    for i in 0..gcsfs::fs::PROBE_KEYS {
        put(store, &format!("{dir}/_pad{i:02}"), b"").await;
    }
}

#[tokio::test]
async fn many_lookups_in_one_directory_list_it_once() {
    use gcsfs::store::Op;
    let f = fixture_ttls(
        Arc::new(MemStore::new()),
        Duration::from_secs(60),
        Duration::from_secs(5),
    );
    for i in 0..40 {
        put(&f.store, &format!("big/f{i:02}"), b"x").await;
    }
    pad_first_keys(&f.store, "big").await;
    let big = lookup_path(&f.fs, "big").await.unwrap();
    let stats = f.store.calls(Op::Stat);
    // Fifteen names are probed one by one; the sixteenth lists the directory (40 entries in
    // pages of 7)...
    for i in 0..16 {
        assert!(f.fs.lookup(big, &format!("f{i:02}")).await.is_ok());
    }
    assert_eq!(f.store.calls(Op::Stat), stats + 15);
    let lists = f.store.calls(Op::List);
    // ...so the rest, and a name it does not hold, need no request.
    for i in 16..40 {
        assert!(f.fs.lookup(big, &format!("f{i:02}")).await.is_ok());
    }
    assert!(matches!(
        f.fs.lookup(big, "absent").await,
        Err(FsError::NotFound)
    ));
    assert_eq!(
        (f.store.calls(Op::Stat), f.store.calls(Op::List)),
        (stats + 15, lists)
    );
}

#[tokio::test]
async fn directory_too_large_to_list_keeps_being_probed() {
    use gcsfs::store::Op;
    let f = fixture_ttls(
        Arc::new(MemStore::new()),
        Duration::from_secs(60),
        Duration::from_secs(5),
    );
    // More than 32 pages of 7.
    for i in 0..240 {
        put(&f.store, &format!("huge/f{i:03}"), b"x").await;
    }
    pad_first_keys(&f.store, "huge").await;
    let huge = lookup_path(&f.fs, "huge").await.unwrap();
    for i in 0..16 {
        assert!(f.fs.lookup(huge, &format!("f{i:03}")).await.is_ok());
    }
    let lists = f.store.calls(Op::List);
    // The listing stopped at its bound: the names it reached are cached, the others (and
    // missing ones) are still asked for, and no listing starts again within the TTL.
    let stats = f.store.calls(Op::Stat);
    assert!(f.fs.lookup(huge, "f100").await.is_ok());
    assert_eq!(f.store.calls(Op::Stat), stats);
    for i in 230..240 {
        assert!(f.fs.lookup(huge, &format!("f{i:03}")).await.is_ok());
    }
    for i in 0..20 {
        assert!(matches!(
            f.fs.lookup(huge, &format!("absent{i}")).await,
            Err(FsError::NotFound)
        ));
    }
    assert_eq!(f.store.calls(Op::Stat), stats + 30);
    // Each probe lists `name/` once (to find implicit directories), nothing more.
    assert_eq!(f.store.calls(Op::List), lists + 30);
}

#[tokio::test]
async fn open_file_keeps_working_after_unlink() {
    let f = fixture();
    put(&f.store, "scratch", b"hello").await;
    let ino = lookup_path(&f.fs, "scratch").await.unwrap();
    let open = f.fs.open(ino, libc::O_RDWR).await.unwrap();
    f.fs.unlink(InodeNo::ROOT, "scratch").await.unwrap();
    assert!(get(&f.store, "scratch").await.is_none());
    assert_eq!(
        &f.fs.read(open.fh, 0, 5).await.unwrap().into_bytes()[..],
        b"hello"
    );
    f.fs.write(open.fh, 5, b" world").await.unwrap();
    assert_eq!(
        &f.fs.read(open.fh, 0, 100).await.unwrap().into_bytes()[..],
        b"hello world"
    );
    f.fs.release(ino, open.fh).await.unwrap();
    assert!(f.store.keys().is_empty(), "nothing uploaded");
}

#[tokio::test]
async fn renamed_directory_keeps_nested_directories_as_directories() {
    let f = fixture();
    let a =
        f.fs.mkdir(InodeNo::ROOT, "a", 0o755, ME)
            .await
            .unwrap()
            .attr
            .ino;
    let c = f.fs.mkdir(a, "c", 0o755, ME).await.unwrap().attr.ino;
    write_file(&f.fs, c, "deep", b"d").await;
    f.fs.rename(InodeNo::ROOT, "a", InodeNo::ROOT, "moved", 0)
        .await
        .unwrap();
    assert_eq!(f.fs.getattr(c).await.unwrap().attr.kind, Kind::Dir);
    assert_eq!(list(&f.fs, c).await, vec![("deep".to_string(), Kind::File)]);
}

#[tokio::test]
async fn mtime_set_before_close_of_a_new_file_is_kept() {
    let f = fixture();
    let (e, o) =
        f.fs.create(InodeNo::ROOT, "p", 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap();
    f.fs.write(o.fh, 0, b"data").await.unwrap();
    let mtime = std::time::UNIX_EPOCH + Duration::from_secs(981_173_106);
    f.fs.setattr(
        e.attr.ino,
        SetAttr {
            mtime: Some(mtime),
            mode: Some(0o640),
            fh: Some(o.fh),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    f.fs.release(e.attr.ino, o.fh).await.unwrap();
    let (meta, _) = f.store.get(&ObjectKey::new("p").unwrap()).unwrap();
    assert_eq!(
        meta.metadata.get("goog-reserved-file-mtime").unwrap(),
        "981173106"
    );
    assert_eq!(
        meta.metadata.get("goog-reserved-posix-mode").unwrap(),
        "640"
    );
}

#[tokio::test]
async fn reads_through_a_handle_after_its_own_fsync() {
    let f = fixture();
    put(&f.store, "a", b"0123456789").await;
    let ino = lookup_path(&f.fs, "a").await.unwrap();
    let open = f.fs.open(ino, libc::O_RDWR).await.unwrap();
    f.fs.write(open.fh, 0, b"AB").await.unwrap();
    f.fs.fsync(open.fh).await.unwrap();
    // The local copy may be gone (another handle's release); the handle follows our upload.
    assert_eq!(
        &f.fs.read(open.fh, 0, 100).await.unwrap().into_bytes()[..],
        b"AB23456789"
    );
    f.fs.release(ino, open.fh).await.unwrap();
}
