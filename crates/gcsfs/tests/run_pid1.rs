//! `gcsfs run` as PID 1 of its own PID namespace (`unshare --pid --fork --mount-proc`), as in a
//! container: it reaps orphaned zombies, forwards TERM INT HUP QUIT USR1 USR2 to the command, and
//! exits with the command's status. Run with the debug binary, and with the release binary the
//! image ships when it exists (`GCSFS_RUN_TEST_RELEASE_BIN`, or `target/release/gcsfs`;
//! `scripts/tests/docker-check.sh` builds it and runs this test again).

mod run_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use run_support::{Running, children, gcsfs_run, json_lines, new_bucket, wait_for};

const LIMIT: Duration = Duration::from_secs(60);

/// The command: records what it sees in files under `$1` (outside the mount).
/// - `orphans`: three subshells that outlive their parent (so PID 1 inherits them) and wait for
///   `$1/release`; for each, `ppid P 1` while alive, then `reaped P` once `/proc/P` is gone (or
///   `zombie P` if it stays a zombie for 5 s). Plus one that exits at once after its parent
///   (`sh -c '(sleep 0.1) & exit'`), which must also disappear.
/// - `got`: one line per trapped signal, in order.
/// - exits with the number written to `$1/exit`.
const SCRIPT: &str = r#"
out=$1
for s in TERM INT HUP QUIT USR1 USR2; do trap "echo $s >> $out/got" "$s"; done
sh -c 'for i in 1 2 3; do
         (while [ ! -e "$1/release" ]; do sleep 0.02; done) &
         echo $! >> "$1/orphans"
       done' sh "$out"
sh -c '(sleep 0.1) & echo $! > "$1/quick"' sh "$out"
for p in $(cat "$out/orphans"); do
  echo "ppid $p $(sed 's/.*) //' /proc/$p/stat | cut -d' ' -f2)" >> "$out/results"
done
touch "$out/release"
for p in $(cat "$out/orphans") $(cat "$out/quick"); do
  n=0
  while [ -e /proc/$p ] && [ $n -lt 250 ]; do sleep 0.02; n=$((n + 1)); done
  if [ -e /proc/$p ]; then
    echo "zombie $p $(sed 's/.*) //' /proc/$p/stat | cut -d' ' -f1)" >> "$out/results"
  else
    echo "reaped $p" >> "$out/results"
  fi
done
touch "$out/ready"
while [ ! -e "$out/exit" ]; do sleep 0.02; done
exit "$(cat "$out/exit")"
"#;

fn pid1_reaps_forwards_and_exits_with_the_commands_status(gcsfs: &Path) {
    let endpoint = emulator_or_skip!();
    fuse_or_skip!();
    if Command::new("unshare").arg("--version").output().is_err() {
        run_support::required::cannot_run("unshare (util-linux) is not installed");
        return;
    }
    eprintln!("gcsfs binary: {}", gcsfs.display());
    let bucket = new_bucket(&endpoint, "pid1");
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let out = dir.path().join("out");
    std::fs::create_dir(&mnt).unwrap();
    std::fs::create_dir(&out).unwrap();

    let inner = gcsfs_run(gcsfs, &endpoint, &bucket, &mnt);
    let mut c = Command::new("unshare");
    c.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(inner.get_program())
        .args(inner.get_args())
        .args(["--child-stop-timeout", "60", "--drain-timeout", "60"])
        .args(["--", "sh", "-c", SCRIPT, "sh"])
        .arg(&out);
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let running = Running::start(c, &mnt);
    let ready = out.join("ready");
    wait_for("the command's zombie checks", LIMIT, || ready.exists());

    // The orphans were re-parented to PID 1 (gcsfs) and reaped by it.
    let results = std::fs::read_to_string(out.join("results")).unwrap();
    let lines: Vec<&str> = results.lines().collect();
    let ppids: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("ppid "))
        .copied()
        .collect();
    assert_eq!(ppids.len(), 3, "{results}");
    for l in &ppids {
        assert!(l.ends_with(" 1"), "orphan not re-parented to PID 1: {l}");
    }
    let reaped = lines.iter().filter(|l| l.starts_with("reaped ")).count();
    assert_eq!(reaped, 4, "not every orphan was reaped:\n{results}");

    // gcsfs is the unshare process's only child, and PID 1 in its namespace.
    let kids = children(running.pid());
    assert_eq!(kids.len(), 1, "unshare's children: {kids:?}");
    let gcsfs_pid: Pid = kids[0];
    let status = std::fs::read_to_string(format!("/proc/{gcsfs_pid}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(
        nspid.ends_with("\t1"),
        "gcsfs is not PID 1 in its namespace: {nspid}"
    );

    let got = out.join("got");
    let order = [
        Signal::SIGHUP,
        Signal::SIGQUIT,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGINT,
        Signal::SIGTERM,
    ];
    for (i, sig) in order.iter().enumerate() {
        nix::sys::signal::kill(gcsfs_pid, *sig).unwrap();
        let want = sig.as_str().trim_start_matches("SIG");
        wait_for(&format!("the command to get {sig}"), LIMIT, || {
            std::fs::read_to_string(&got).is_ok_and(|s| s.lines().count() > i)
        });
        let seen = std::fs::read_to_string(&got).unwrap();
        assert_eq!(seen.lines().nth(i), Some(want), "signals seen: {seen:?}");
    }

    std::fs::write(out.join("exit"), "42\n").unwrap();
    let (status, _out, err) = running.wait(LIMIT);
    assert_eq!(status.code(), Some(42), "stderr:\n{err}");
    let logs = json_lines(&err);
    let started = logs
        .iter()
        .find(|l| l["message"] == "started the command")
        .unwrap_or_else(|| panic!("no start line in:\n{err}"));
    assert_eq!(started["pid1"], true);
    let forwarded = logs
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .unwrap_or("")
                .starts_with("forwarding SIG")
        })
        .count();
    assert_eq!(forwarded, order.len(), "{err}");
}

#[test]
fn pid1_debug_binary() {
    pid1_reaps_forwards_and_exits_with_the_commands_status(&run_support::gcsfs_debug());
}

#[test]
fn pid1_release_binary() {
    match run_support::gcsfs_release() {
        Some(bin) => pid1_reaps_forwards_and_exits_with_the_commands_status(&bin),
        None => eprintln!(
            "skipped: no release binary (target/release/gcsfs; scripts/tests/docker-check.sh builds it \
             and runs this test with it)"
        ),
    }
}
