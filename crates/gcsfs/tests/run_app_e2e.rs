//! End to end on the emulator: `gcsfs run` with the `app` binary (concurrent `/create`, then
//! SIGTERM), and SIGTERM while twenty large files are being written.
//!
//! `app` is another crate's binary, so it is looked up next to this test's own profile directory
//! (`target/debug/app`, also under `CARGO_TARGET_DIR`); `scripts/test.sh` builds the whole
//! workspace first. Without it the app test prints why it is skipped.

mod run_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use rand::{RngCore, SeedableRng, rngs::StdRng};
use run_support::{
    KillGroupOnDrop, Running, bucket_objects, gcsfs_debug, gcsfs_run, new_bucket,
    not_uploaded_paths, wait_for,
};

const LIMIT: Duration = Duration::from_secs(120);
const MIB: usize = 1 << 20;

/// A port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What `app` writes into a file it names `name` (`2026-11-28T10-25-11.764879949Z.txt`, maybe
/// with a `-N` suffix before `.txt`): the RFC 3339 timestamp with colons, and a newline.
fn app_contents_for(name: &str) -> String {
    let stem = &name[..name.find('Z').expect("Z in the name") + 1];
    let mut chars: Vec<char> = stem.chars().collect();
    chars[13] = ':';
    chars[16] = ':';
    chars.into_iter().collect::<String>() + "\n"
}

#[test]
fn app_creates_50_files_concurrently_and_sigterm_exits_0_with_all_uploaded() {
    let endpoint = emulator_or_skip!();
    fuse_or_skip!();
    let Some(app) = run_support::workspace_binary("app") else {
        eprintln!(
            "skipped: {} not built (cargo build -p app; scripts/test.sh builds the workspace)",
            run_support::profile_dir().join("app").display()
        );
        return;
    };
    let bucket = new_bucket(&endpoint, "app");
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let port = free_port();
    let mut c = gcsfs_run(&gcsfs_debug(), &endpoint, &bucket, &mnt);
    // FOLDER is unset (gcsfs_run removes it): the app writes to $MNT_DIR, set by gcsfs run.
    c.env("PORT", port.to_string()).arg("--").arg(&app);
    let mut running = Running::start(c, &mnt);

    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    wait_for("the app to answer /healthz", LIMIT, || {
        assert!(
            running.child.try_wait().unwrap().is_none(),
            "gcsfs run exited early"
        );
        run_support::block_on(client.get(format!("{base}/healthz")).send())
            .is_ok_and(|r| r.status().is_success())
    });

    let paths: Vec<String> = run_support::block_on(async {
        let calls = (0..50).map(|_| {
            let client = client.clone();
            let url = format!("{base}/create");
            async move {
                let resp = client.post(url).send().await.expect("POST /create");
                assert_eq!(resp.status(), 200);
                let body: serde_json::Value = resp.json().await.expect("JSON body");
                body["path"].as_str().expect("path").to_owned()
            }
        });
        futures::future::join_all(calls).await
    });
    let names: BTreeSet<String> = paths
        .iter()
        .map(|p| {
            let p = PathBuf::from(p);
            assert_eq!(
                p.parent(),
                Some(mnt.as_path()),
                "not in MNT_DIR: {}",
                p.display()
            );
            p.file_name().unwrap().to_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(names.len(), 50, "paths are not distinct: {paths:?}");

    let check_bucket = |when: &str| {
        let objects = bucket_objects(&endpoint, &bucket);
        let got: BTreeSet<String> = objects.keys().cloned().collect();
        assert_eq!(
            got, names,
            "{when}: the bucket's objects are not the 50 files"
        );
        for (name, data) in &objects {
            assert_eq!(
                String::from_utf8_lossy(data),
                app_contents_for(name),
                "{when}: {name}"
            );
        }
    };
    // `/create` answers after close, and close uploads: all 50 are there before SIGTERM.
    check_bucket("before SIGTERM");

    running.signal(Signal::SIGTERM);
    let (status, stdout, err) = running.wait(LIMIT);
    assert_eq!(status.code(), Some(0), "stderr:\n{err}");
    assert!(
        stdout.contains("SIGTERM received"),
        "the app did not get SIGTERM:\n{stdout}"
    );
    assert!(not_uploaded_paths(&err).is_empty(), "{err}");
    check_bucket("after exit");
}

/// 32 MiB of seeded random bytes: every large file is a prefix of it.
fn pattern() -> Vec<u8> {
    let mut data = vec![0u8; 32 * MIB];
    StdRng::seed_from_u64(0x6c73_6366).fill_bytes(&mut data);
    data
}

/// File `i`'s size in MiB: 8 to 32.
fn size_mib(i: usize) -> usize {
    8 + (i * 7) % 25
}

/// Starts `gcsfs run` with a command that writes `big-0` … `big-19` into the mount at once, each
/// through one `dd` fed 1 MiB every 0.1 s (so they are still being written when SIGTERM comes),
/// appending `i` to `$1/done` when file `i`'s `dd` (and so its close, and so its upload)
/// succeeded. `on_term` is the command's SIGTERM trap. Returns once every file holds at least
/// 1 MiB (seen through the mount), with the sizes seen then.
fn start_writers(
    endpoint: &str,
    bucket: &str,
    dir: &Path,
    flags: &[&str],
    on_term: &str,
) -> (Running, KillGroupOnDrop, Vec<u64>) {
    let mnt = dir.join("mnt");
    let out = dir.join("out");
    std::fs::create_dir(&mnt).unwrap();
    std::fs::create_dir(&out).unwrap();
    let pattern_path = dir.join("pattern");
    std::fs::write(&pattern_path, pattern()).unwrap();
    let sizes: Vec<String> = (0..20).map(|i| size_mib(i).to_string()).collect();
    let script = format!(
        r#"
        out=$1 pattern=$2
        echo $$ > "$out/pid"
        trap '{on_term}' TERM
        f=0
        for n in {sizes}; do
          ( (i=0; while [ $i -lt $n ]; do
               dd if="$pattern" bs=1M skip=$i count=1 status=none || exit 1
               i=$((i + 1)); sleep 0.1
             done) | dd of="$MNT_DIR/big-$f" bs=1M iflag=fullblock status=none \
            && echo $f >> "$out/done" ) &
          f=$((f + 1))
        done
        wait
        while :; do sleep 0.1; done
        "#,
        sizes = sizes.join(" ")
    );
    let mut c = gcsfs_run(&gcsfs_debug(), endpoint, bucket, &mnt);
    c.args(flags)
        .args(["--", "sh", "-c", &script, "sh"])
        .arg(&out)
        .arg(&pattern_path);
    let running = Running::start(c, &mnt);
    let pid_file = out.join("pid");
    wait_for("the command to start", LIMIT, || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n'))
    });
    let group = KillGroupOnDrop(
        std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap(),
    );
    let mut seen = vec![0u64; 20];
    wait_for("every file to hold 1 MiB", LIMIT, || {
        for (i, s) in seen.iter_mut().enumerate() {
            *s = std::fs::metadata(mnt.join(format!("big-{i}"))).map_or(0, |m| m.len());
        }
        seen.iter().all(|&s| s >= MIB as u64)
    });
    (running, group, seen)
}

/// The `done` markers the writers left.
fn done_files(dir: &Path) -> BTreeSet<usize> {
    std::fs::read_to_string(dir.join("out/done"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

#[test]
fn sigterm_while_20_large_files_are_written_and_the_command_finishes_them_uploads_all_whole() {
    let endpoint = emulator_or_skip!();
    fuse_or_skip!();
    let bucket = new_bucket(&endpoint, "big-all");
    let dir = tempfile::tempdir().unwrap();
    // The command finishes its writers on SIGTERM; there is time for all of it.
    let flags = ["--child-stop-timeout", "100", "--drain-timeout", "100"];
    let (running, _group, _) =
        start_writers(&endpoint, &bucket, dir.path(), &flags, "wait; exit 0");
    running.signal(Signal::SIGTERM);
    let (status, _, err) = running.wait(LIMIT);
    assert_eq!(status.code(), Some(0), "stderr:\n{err}");
    assert!(not_uploaded_paths(&err).is_empty(), "{err}");
    assert_eq!(
        done_files(dir.path()).len(),
        20,
        "not every writer finished"
    );
    let objects = bucket_objects(&endpoint, &bucket);
    let pattern = pattern();
    for i in 0..20 {
        let data = objects
            .get(&format!("big-{i}"))
            .unwrap_or_else(|| panic!("big-{i} missing"));
        assert!(
            data[..] == pattern[..size_mib(i) * MIB],
            "big-{i} is not its whole content"
        );
    }
}

#[test]
fn sigterm_while_20_large_files_are_written_with_no_time_left_names_each_file_not_uploaded() {
    let endpoint = emulator_or_skip!();
    fuse_or_skip!();
    let bucket = new_bucket(&endpoint, "big-none");
    let dir = tempfile::tempdir().unwrap();
    // The command ignores SIGTERM and keeps writing: it is killed (with its writers) after 1 s,
    // and the drain gets what is left of 1 s.
    let flags = ["--child-stop-timeout", "1", "--drain-timeout", "1"];
    let (running, _group, seen) = start_writers(&endpoint, &bucket, dir.path(), &flags, "");
    running.signal(Signal::SIGTERM);
    let (status, _, err) = running.wait(LIMIT);
    let code = status.code().expect("exit code");
    let named = not_uploaded_paths(&err);
    let objects = bucket_objects(&endpoint, &bucket);
    let pattern = pattern();
    let done = done_files(dir.path());
    let mut report = BTreeMap::new();
    for (i, seen) in seen.iter().enumerate() {
        let name = format!("big-{i}");
        let full = size_mib(i) * MIB;
        let verdict = match objects.get(&name) {
            // A writer that finished closed its file: the close uploaded all of it.
            _ if done.contains(&i) => {
                let data = objects.get(&name).map(Vec::as_slice).unwrap_or_default();
                assert!(data == &pattern[..full], "{name} finished but is not whole");
                "finished"
            }
            // gcsfs names files by their path in the mount.
            _ if named.contains(&format!("/{name}")) => "named in the log",
            // Otherwise what it held when its writer was killed was uploaded, all of it: at
            // least what was seen before SIGTERM, and nothing but the pattern.
            Some(data) => {
                assert!(
                    data.len() as u64 >= *seen,
                    "{name}: {} < {seen} bytes",
                    data.len()
                );
                assert!(
                    data[..] == pattern[..data.len()],
                    "{name} is not a prefix of its data"
                );
                "uploaded as written"
            }
            None => panic!("{name} is neither uploaded nor named in the log:\n{err}"),
        };
        report.insert(name, verdict);
    }
    eprintln!("exit {code}; {report:?}");
    assert_ne!(code, 0, "{err}");
    if !named.is_empty() {
        let summary = run_support::json_lines(&err)
            .into_iter()
            .find(|l| {
                l["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("could not be uploaded")
            })
            .unwrap_or_else(|| panic!("no summary line:\n{err}"));
        // The count of files still dirty at the exit: those of the drain, less any a flush
        // still running then finished later (gcsfs waits a little for the unmount).
        let count = summary["count"].as_u64().unwrap() as usize;
        assert!((1..=named.len()).contains(&count), "{err}");
    }
}
