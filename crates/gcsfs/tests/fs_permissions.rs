//! Ownership and modes on `MemStore`: new entries belong to their creator, directories keep
//! mode, owner and sticky bit on their marker objects, and a mount whose kernel checks
//! permissions is never handed a directory's attributes that are not the store's.

use std::sync::Arc;

use bytes::Bytes;
use gcsfs::fs::{Caller, Filesystem, FsConfig, InodeNo, Kind, ManualClock, SetAttr};
use gcsfs::store::mem::MemStore;
use gcsfs::store::{ObjectKey, ObjectStore, Preconditions, WriteAttrs, WriteSource};

const ROOT: Caller = Caller { uid: 0, gid: 0 };
const ALICE: Caller = Caller {
    uid: 1000,
    gid: 100,
};

fn fs_over(mem: &Arc<MemStore>, tmp: &tempfile::TempDir, check: bool) -> Filesystem {
    Filesystem::new(
        mem.clone(),
        FsConfig {
            temp_dir: tmp.path().into(),
            check_permissions: check,
            ..Default::default()
        },
        Arc::new(ManualClock::default()),
    )
}

fn md(mem: &MemStore, key: &str) -> std::collections::BTreeMap<String, String> {
    mem.get(&ObjectKey::new(key).unwrap())
        .unwrap_or_else(|| panic!("no object {key}"))
        .0
        .metadata
}

async fn put(mem: &MemStore, key: &str, metadata: &[(&str, &str)]) {
    let attrs = WriteAttrs {
        content_type: None,
        metadata: metadata
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    };
    mem.write(
        &ObjectKey::new(key).unwrap(),
        WriteSource::Bytes(Bytes::new()),
        Preconditions::NONE,
        &attrs,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn new_files_directories_and_symlinks_belong_to_their_creator() {
    let mem = Arc::new(MemStore::new());
    let tmp = tempfile::tempdir().unwrap();
    let fs = fs_over(&mem, &tmp, true);
    let d = fs.mkdir(InodeNo::ROOT, "home", 0o700, ALICE).await.unwrap();
    assert_eq!((d.attr.perm, d.attr.uid, d.attr.gid), (0o700, 1000, 100));
    let (e, o) = fs
        .create(d.attr.ino, "notes", 0o600, libc::O_WRONLY, ALICE)
        .await
        .unwrap();
    assert_eq!((e.attr.perm, e.attr.uid, e.attr.gid), (0o600, 1000, 100));
    fs.write(o.fh, 0, b"mine").await.unwrap();
    fs.flush(o.fh).await.unwrap();
    fs.release(e.attr.ino, o.fh).await.unwrap();
    let l = fs
        .symlink(d.attr.ino, "link", "notes", ALICE)
        .await
        .unwrap();
    assert_eq!((l.attr.uid, l.attr.gid), (1000, 100));
    // In the bucket, in gcloud's keys.
    for key in ["home/", "home/notes", "home/link"] {
        let md = md(&mem, key);
        assert_eq!(
            md.get("goog-reserved-posix-uid").map(String::as_str),
            Some("1000"),
            "{key}"
        );
        assert_eq!(
            md.get("goog-reserved-posix-gid").map(String::as_str),
            Some("100"),
            "{key}"
        );
    }
    assert_eq!(md(&mem, "home/")["goog-reserved-posix-mode"], "700");
    assert_eq!(md(&mem, "home/notes")["goog-reserved-posix-mode"], "600");
    // Root, the mount's default owner, stores nothing it need not.
    fs.mkdir(InodeNo::ROOT, "pub", 0o755, ROOT).await.unwrap();
    assert!(!md(&mem, "pub/").contains_key("goog-reserved-posix-uid"));
    assert!(!md(&mem, "pub/").contains_key("goog-reserved-posix-mode"));

    // A new mount reads them back from the markers and objects.
    let fs = fs_over(&mem, &tmp, true);
    let d = fs.lookup(InodeNo::ROOT, "home").await.unwrap();
    assert_eq!(
        (d.attr.kind, d.attr.perm, d.attr.uid),
        (Kind::Dir, 0o700, 1000)
    );
    let f = fs.lookup(d.attr.ino, "notes").await.unwrap();
    assert_eq!((f.attr.perm, f.attr.uid, f.attr.gid), (0o600, 1000, 100));
}

#[tokio::test]
async fn chmod_and_chown_of_a_directory_are_kept_on_its_marker() {
    let mem = Arc::new(MemStore::new());
    put(&mem, "implicit/file", &[]).await;
    put(&mem, "explicit/", &[("goog-reserved-posix-mode", "755")]).await;
    let tmp = tempfile::tempdir().unwrap();
    let fs = fs_over(&mem, &tmp, true);
    for name in ["implicit", "explicit"] {
        let ino = fs.lookup(InodeNo::ROOT, name).await.unwrap().attr.ino;
        let set = SetAttr {
            mode: Some(0o1777),
            uid: Some(1000),
            gid: Some(100),
            ..Default::default()
        };
        let e = fs.setattr(ino, set).await.unwrap();
        assert_eq!(
            (e.attr.perm, e.attr.uid, e.attr.gid),
            (0o1777, 1000, 100),
            "{name}"
        );
        let md = md(&mem, &format!("{name}/"));
        assert_eq!(md["goog-reserved-posix-mode"], "1777", "{name}");
        assert_eq!(md["goog-reserved-posix-uid"], "1000", "{name}");
    }
    // An implicit directory got a marker to keep them; nothing else changed.
    assert!(mem.get(&ObjectKey::new("implicit/file").unwrap()).is_some());
    // Seen again by another mount.
    let fs = fs_over(&mem, &tmp, true);
    for name in ["implicit", "explicit"] {
        let e = fs.lookup(InodeNo::ROOT, name).await.unwrap();
        assert_eq!((e.attr.perm, e.attr.uid), (0o1777, 1000), "{name}");
    }
}

#[tokio::test]
async fn a_mount_that_checks_permissions_never_hands_out_a_listed_directorys_defaults() {
    // `private/` is 0700 on its marker. A listing of the root shows it as a prefix only: its
    // mode is not in the listing. The kernel must not be handed 0755 (the default) to cache.
    let mem = Arc::new(MemStore::new());
    put(&mem, "private/", &[("goog-reserved-posix-mode", "700")]).await;
    put(&mem, "private/secret", &[]).await;
    let tmp = tempfile::tempdir().unwrap();
    for check in [true, false] {
        let fs = fs_over(&mem, &tmp, check);
        let fh = fs.opendir(InodeNo::ROOT).unwrap();
        let entries = fs.readdir(fh, 0).await.unwrap();
        let e = entries
            .iter()
            .find(|e| e.name == "private")
            .expect("listed");
        if check {
            assert!(
                !e.cacheable,
                "a listed directory's attributes are not the store's"
            );
        } else {
            assert!(e.cacheable);
        }
        fs.releasedir(fh).unwrap();
        // A lookup (or getattr) then reads the marker: the real mode.
        let a = fs.lookup(InodeNo::ROOT, "private").await.unwrap();
        let got = fs.getattr(a.attr.ino).await.unwrap();
        if check {
            assert_eq!(a.attr.perm, 0o700);
            assert_eq!(got.attr.perm, 0o700);
        }
        // Files' attributes are the store's in a listing: cacheable either way.
        let fh = fs.opendir(a.attr.ino).unwrap();
        let entries = fs.readdir(fh, 0).await.unwrap();
        let secret = entries.iter().find(|e| e.name == "secret").expect("listed");
        assert!(secret.cacheable);
        fs.releasedir(fh).unwrap();
    }
    // Once known, a later listing does not make the directory's attributes unknown again.
    let fs = fs_over(&mem, &tmp, true);
    fs.lookup(InodeNo::ROOT, "private").await.unwrap();
    let fh = fs.opendir(InodeNo::ROOT).unwrap();
    let entries = fs.readdir(fh, 0).await.unwrap();
    let e = entries
        .iter()
        .find(|e| e.name == "private")
        .expect("listed");
    assert!(e.cacheable);
    assert_eq!(e.attr.unwrap().perm, 0o700);
}
