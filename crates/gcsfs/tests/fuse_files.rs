//! File data through a real mount: copying a tree in and reading it back after a remount,
//! unpacking a tarball and reorganising it with shell tools, appending, editing in place and
//! truncating, and uploading dirty files on SIGTERM.
//!
//! Each test mounts its own emulator bucket with the `gcsfs` binary (see `common/mount.rs`)
//! and checks both what the mount shows and what the bucket holds. Needs `GCSFS_TEST_ENDPOINT`,
//! `/dev/fuse` and root; otherwise each test prints `skipped: <reason>`.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::process::Command;

use common::mount::{
    Bucket, Mount, MountOptions, Tree, assert_objects, data, fuse_endpoint, no_spawns, sh, spawn,
    wait_bounded,
};

const MIB: usize = 1 << 20;

macro_rules! endpoint {
    () => {
        match fuse_endpoint() {
            Some(e) => e,
            None => return,
        }
    };
}

/// A deterministic tree: nested directories, empty and small files, names with a space and
/// non-ASCII letters, a 1.5 MiB file and (if `large`) a 20 MiB + 123 B one.
fn sample_files(large: bool) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    files.insert("top.txt".into(), b"top level\n".to_vec());
    files.insert("empty.bin".into(), Vec::new());
    files.insert("a/one.txt".into(), b"one\n".to_vec());
    files.insert("a/with space.txt".into(), b"spaced\n".to_vec());
    files.insert("a/ünïcödé.txt".into(), "ünïcödé\n".as_bytes().to_vec());
    files.insert("a/b/c/deep.bin".into(), data(1, 4097));
    files.insert("a/b/medium.bin".into(), data(2, 3 * MIB / 2));
    for i in 0..24u64 {
        files.insert(
            format!("many/f{i:02}"),
            data(100 + i, (i as usize * 331) % 8192),
        );
    }
    if large {
        files.insert("big/large.bin".into(), data(3, 20 * MIB + 123));
    }
    files
}

/// `cp -r` a tree in, remount, `diff -r` equal; the bucket holds exactly the tree.
#[test]
fn copy_tree_in_survives_remount() {
    let endpoint = endpoint!();
    let bucket = Bucket::fresh(&endpoint, "fuse-cp");
    let src = tempfile::tempdir().unwrap();
    let tree = Tree::create(src.path(), sample_files(true), &["emptydir", "a/b/empty"]);

    let mut m = Mount::new(&bucket, MountOptions::default());
    let dst = m.join("tree");
    sh(&format!(
        "cp -r '{}' '{}'",
        src.path().display(),
        dst.display()
    ));
    m.remount();
    sh(&format!(
        "diff -r '{}' '{}'",
        src.path().display(),
        dst.display()
    ));
    assert_eq!(Tree::read(&dst), tree);
    assert_objects(&bucket, "", &tree.objects("tree/"));
}

/// `tar x`, then `find`, `ls -l`, `mv` of a file and of a directory, `rm -r`: the mount
/// and the bucket match the same steps done on a local copy.
#[test]
fn tarball_unpacked_and_reorganised() {
    let endpoint = endpoint!();
    let bucket = Bucket::fresh(&endpoint, "fuse-tar");
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let local = work.path().join("local");
    let tarball = work.path().join("t.tar");
    Tree::create(&src, sample_files(false), &["emptydir"]);
    // Modes and an mtime tar will restore (stored as gcloud POSIX metadata).
    sh(&format!(
        "chmod 600 '{s}/top.txt' && chmod 755 '{s}/a/one.txt' && \
         touch -m -d '2001-02-03 04:05:06' '{s}/a/b/medium.bin' && \
         tar -C '{s}' -cf '{t}' . && mkdir '{l}' && tar -C '{l}' -xf '{t}'",
        s = src.display(),
        t = tarball.display(),
        l = local.display()
    ));

    let m = Mount::new(&bucket, MountOptions::default());
    let t = m.join("t");
    std::fs::create_dir(&t).unwrap();
    sh(&format!(
        "tar -C '{}' -xf '{}'",
        t.display(),
        tarball.display()
    ));

    let find = |root: &std::path::Path| sh(&format!("cd '{}' && find . | sort", root.display()));
    assert_eq!(find(&t), find(&local));
    // Files only (directories have sizes and link counts of their own): mode, links, owner,
    // size, mtime in seconds and name must all match.
    let ls = |root: &std::path::Path| {
        sh(&format!(
            "cd '{}' && ls -lnR --time-style=+%s | grep '^-' | tr -s ' '",
            root.display()
        ))
    };
    assert_eq!(ls(&t), ls(&local));

    let steps = "mv a/one.txt a/renamed.txt && mv a/b moved && rm -r many";
    sh(&format!("cd '{}' && {steps}", t.display()));
    sh(&format!("cd '{}' && {steps}", local.display()));
    assert_eq!(find(&t), find(&local));
    let after = Tree::read(&local);
    assert_eq!(Tree::read(&t), after);
    assert_objects(&bucket, "", &after.objects("t/"));
}

/// Reads `rel` through the mount and from the bucket, and checks both against `want`.
fn check_file(m: &Mount, bucket: &Bucket, rel: &str, want: &[u8], step: &str) {
    let through_mount = std::fs::read(m.join(rel)).unwrap();
    assert!(
        through_mount == want,
        "{step}: read through the mount: {} bytes, want {}",
        through_mount.len(),
        want.len()
    );
    let stored = bucket.get(rel).expect("object exists");
    assert!(
        stored == want,
        "{step}: object: {} bytes, want {}",
        stored.len(),
        want.len()
    );
}

/// Append (`>>`), edit in place (pwrite in the middle), `truncate -s` smaller and larger.
#[test]
fn append_edit_truncate() {
    let endpoint = endpoint!();
    let bucket = Bucket::fresh(&endpoint, "fuse-edit");
    let mut m = Mount::new(&bucket, MountOptions::default());
    let path = m.join("f.bin");
    let p = path.display().to_string();

    let mut model = data(7, 3 * MIB + 5);
    std::fs::write(&path, &model).unwrap();
    check_file(&m, &bucket, "f.bin", &model, "write");

    sh(&format!("printf 'appended tail' >> '{p}'"));
    model.extend_from_slice(b"appended tail");
    check_file(&m, &bucket, "f.bin", &model, "append");

    let patch = data(8, 10_000);
    let at = 1_500_000;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    file.write_all_at(&patch, at as u64).unwrap();
    nix::unistd::close(file).expect("close uploads the edit");
    model[at..at + patch.len()].copy_from_slice(&patch);
    check_file(&m, &bucket, "f.bin", &model, "pwrite");

    sh(&format!("truncate -s 1000 '{p}'"));
    model.truncate(1000);
    check_file(&m, &bucket, "f.bin", &model, "truncate smaller");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 1000);

    sh(&format!("truncate -s 70000 '{p}'"));
    model.resize(70_000, 0);
    check_file(&m, &bucket, "f.bin", &model, "truncate larger");

    sh(&format!(
        "echo a > '{d}/s.txt' && echo b >> '{d}/s.txt'",
        d = m.path().display()
    ));
    check_file(&m, &bucket, "s.txt", b"a\nb\n", "small append");

    // Nothing was served from this mount's memory only.
    m.remount();
    check_file(&m, &bucket, "f.bin", &model, "after remount");
    check_file(&m, &bucket, "s.txt", b"a\nb\n", "after remount");
}

/// SIGTERM with dirty files still open: the daemon uploads them all and exits 0.
///
/// The files are written without any close of a descriptor (every close, even of a duplicate,
/// is a FUSE flush that uploads, so no process is started meanwhile: [`no_spawns`]). A sleeping
/// child holds one: `cat` into it closes its copy, which uploads, then the shell's own `printf`
/// adds unsaved bytes. This test process holds three more: a new file being streamed, an
/// append and an in-place edit of existing objects. Before SIGTERM the bucket is checked to
/// still hold none of the unsaved changes.
#[test]
fn sigterm_uploads_open_dirty_files() {
    let endpoint = endpoint!();
    let bucket = Bucket::fresh(&endpoint, "fuse-term");
    let base = data(9, 200_000);
    bucket.put("existing.txt", b"base\n");
    bucket.put("edit.bin", &base);
    let big = data(10, 3 * MIB + 17);
    let work = tempfile::tempdir().unwrap();
    let big_src = work.path().join("big");
    let ready = work.path().join("ready");
    std::fs::write(&big_src, &big).unwrap();

    let mut m = Mount::new(&bucket, MountOptions::default());
    // Only the shell's builtins touch fd 1 after `exec >`; `: 2>file` redirects fd 2 only.
    let script = r#"exec >"$1" || exit 1
cat "$2" && printf END || exit 1
: 2>"$3"
exec sleep 600"#;
    let holder = KillOnDrop(spawn(
        Command::new("sh")
            .args(["-c", script, "sh"])
            .arg(m.join("big"))
            .arg(&big_src)
            .arg(&ready),
    ));
    let quiet = no_spawns();
    let mut new = std::fs::File::create(m.join("new")).unwrap();
    new.write_all(&data(11, MIB + 3)).unwrap();
    let mut append = std::fs::OpenOptions::new()
        .append(true)
        .open(m.join("existing.txt"))
        .unwrap();
    append.write_all(b"more").unwrap();
    let edit = std::fs::OpenOptions::new()
        .write(true)
        .open(m.join("edit.bin"))
        .unwrap();
    edit.write_all_at(b"XY", 1000).unwrap();
    holder.wait_for(&ready);

    // The premise: none of the changes is in the bucket yet.
    assert_eq!(bucket.get("new"), None, "new uploaded before SIGTERM");
    assert_eq!(bucket.get("existing.txt").as_deref(), Some(&b"base\n"[..]));
    assert!(
        bucket.get("edit.bin").unwrap() == base,
        "edit.bin uploaded early"
    );
    assert!(
        bucket.get("big").unwrap() == big,
        "big: want its flushed data only"
    );

    let status = m.stop();
    assert!(status.success(), "daemon exit: {status}; log:\n{}", m.log());
    drop((holder, new, append, edit, quiet));

    assert!(bucket.get("new").unwrap() == data(11, MIB + 3), "new");
    assert_eq!(
        bucket.get("existing.txt").as_deref(),
        Some(&b"base\nmore"[..])
    );
    let mut edited = base.clone();
    edited[1000..1002].copy_from_slice(b"XY");
    assert!(bucket.get("edit.bin").unwrap() == edited, "edit.bin");
    let mut big_end = big.clone();
    big_end.extend_from_slice(b"END");
    assert!(bucket.get("big").unwrap() == big_end, "big");
}

/// Kills (SIGKILL) and reaps a child process this test started.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = wait_bounded(&mut self.0, std::time::Duration::from_secs(10));
    }
}

impl KillOnDrop {
    /// Waits until `path` exists; panics if the child exits first or it takes over a minute.
    fn wait_for(&self, path: &std::path::Path) {
        let deadline = std::time::Instant::now() + common::mount::PATIENCE;
        while !path.exists() {
            let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
            let alive = nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG))
                .is_ok_and(|s| s == nix::sys::wait::WaitStatus::StillAlive);
            assert!(alive, "the child exited before creating {}", path.display());
            assert!(
                std::time::Instant::now() < deadline,
                "no {} after a minute",
                path.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// `cp -p` sets mode, owner and mtime on the open descriptor after writing the data. They
/// must reach the bucket, so that they survive a remount.
#[test]
fn cp_p_attributes_survive_remount() {
    let endpoint = endpoint!();
    let bucket = Bucket::fresh(&endpoint, "fuse-cp-p");
    let src = tempfile::tempdir().unwrap();
    let mut files = BTreeMap::new();
    files.insert("small".to_string(), b"small\n".to_vec());
    files.insert("large".to_string(), data(12, 300_000));
    Tree::create(src.path(), files, &[]);
    sh(&format!(
        "cd '{}' && chmod 640 small large && touch -m -d '2001-02-03 04:05:06' small large",
        src.path().display()
    ));
    let mut m = Mount::new(&bucket, MountOptions::default());
    sh(&format!(
        "cp -p '{s}/small' '{s}/large' '{d}/'",
        s = src.path().display(),
        d = m.path().display()
    ));
    m.remount();
    let stat = |root: &std::path::Path| {
        sh(&format!(
            "cd '{}' && stat -c '%n %a %u %g %s %Y' small large",
            root.display()
        ))
    };
    assert_eq!(stat(m.path()), stat(src.path()));
}

/// A file opened, then unlinked, keeps working through the open descriptor (the common
/// "anonymous temporary file" pattern); nothing is uploaded.
#[test]
fn unlinked_open_file_keeps_working() {
    let endpoint = endpoint!();
    let bucket = Bucket::fresh(&endpoint, "fuse-unlinked");
    let m = Mount::new(&bucket, MountOptions::default());
    let path = m.join("scratch");
    std::fs::write(&path, b"hello").unwrap();
    let quiet = no_spawns();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    let mut buf = [0u8; 5];
    file.read_exact_at(&mut buf, 0).expect("read after unlink");
    assert_eq!(&buf, b"hello");
    file.write_all_at(b" world", 5).expect("write after unlink");
    let mut all = [0u8; 11];
    file.read_exact_at(&mut all, 0).expect("read back");
    assert_eq!(&all, b"hello world");
    nix::unistd::close(file).expect("close");
    drop(quiet);
    assert!(!path.exists());
    assert_eq!(bucket.names(), Vec::<String>::new(), "nothing uploaded");
}
