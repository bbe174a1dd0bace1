//! The fault matrix on a real mount: programs writing and reading through gcsfs while the
//! network to the emulator misbehaves (toxiproxy between them): connections reset mid-request,
//! requests or answers cut after N bytes, a stall, answers sliced into small pieces, latency,
//! and an outage longer than the retry deadline.
//!
//! For every path × fault the program either succeeds and the bucket holds exactly what it
//! wrote (or it read exactly what the bucket holds), or it fails within the deadline and the
//! bucket holds no byte nobody wrote (the old object, or nothing; after the network heals and
//! the mount is stopped, possibly the new data, uploaded from what the mount kept). The daemon
//! never panics and never hangs. Each test prints its rows of the matrix.
//!
//! Needs `GCSFS_TEST_ENDPOINT` (the shared emulator's setup provides `fake-gcs-server` and port
//! 80), toxiproxy (`scripts/install-deps.sh`), `/dev/fuse` and root; without the first three it
//! prints `skipped: <reason>`, and a missing toxiproxy fails.

mod common;
mod private_emulator;
mod toxiproxy;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::mount::{
    Bucket, Mount, MountOptions, answers, data, fuse_endpoint, no_spawns, spawn, wait_bounded,
};
use private_emulator::{PrivateEmulator, free_host};
use toxiproxy::Toxiproxy;

/// `--retry-deadline-secs` and `--stall-timeout-secs` of the mounts.
const DEADLINE: u64 = 3;
const STALL: u64 = 2;

/// When a windowed fault starts after the program does (a small file is written in less: its
/// faults start with it), and how long it lasts.
const FAULT_AT: Duration = Duration::from_millis(300);
const FAULT_FOR: Duration = Duration::from_millis(1500);

/// How long an outage lasts: longer than the deadline.
const OUTAGE_FOR: Duration = Duration::from_secs(12);

/// No program may take longer than this (bounds a hang; a healthy case takes seconds).
const PATIENCE: Duration = Duration::from_secs(90);

/// During an outage, a write must fail within this long after the outage began: the deadline,
/// one request cut at its limit (stall timeout + 8 MiB at 1 MiB/s), a status query, backoffs,
/// and a generous margin for a loaded machine. (`--retry-deadline-secs` 3 against the 8 min 19 s
/// seen before uploads were ours.)
const OUTAGE_BOUND: Duration = Duration::from_secs(DEADLINE + STALL + 8 + STALL + 5 + 15);

const MIB: usize = 1 << 20;

/// The emulator behind a proxy of its own.
struct Net {
    _emulator: PrivateEmulator,
    emulator_endpoint: String,
    toxi: Toxiproxy,
    /// The proxy's endpoint, where gcsfs sends everything.
    front: String,
}

const PROXY: &str = "gcs";

impl Net {
    fn new() -> Self {
        let front_host = free_host();
        let emulator = PrivateEmulator::start_behind(&front_host);
        let toxi = Toxiproxy::start();
        let upstream = format!("{}:80", emulator.endpoint.trim_start_matches("http://"));
        toxi.proxy(PROXY, &format!("{front_host}:80"), &upstream);
        // A link of 16 MB/s each way, so that a 20 MiB transfer lasts long enough (over a
        // second) for a fault to land in its middle.
        for stream in ["upstream", "downstream"] {
            toxi.add(
                PROXY,
                &format!("link-{stream}"),
                "bandwidth",
                stream,
                serde_json::json!({ "rate": 16 * 1024 }),
            );
        }
        Self {
            emulator_endpoint: emulator.endpoint.clone(),
            _emulator: emulator,
            toxi,
            front: format!("http://{front_host}"),
        }
    }
}

/// A fault of the network between gcsfs and the emulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NetFault {
    /// Every connection is reset 50 ms after it opens, for a window: requests in flight
    /// (a chunk of an upload, a download) die mid-way.
    ResetPeer,
    /// Every connection is closed after the client sent 2 MiB, for a window: upload requests
    /// die mid-body.
    CutUpload,
    /// Every connection is closed after the server sent 512 KiB, for a window: downloads die
    /// mid-body.
    CutDownload,
    /// Nothing passes, and connections stay open, for a window longer than the stall timeout.
    Stall,
    /// Answers arrive in pieces of ~256 bytes, all along.
    Slicer,
    /// 100 ms (± 50) on every answer, all along.
    Latency,
    /// The service is unreachable for longer than the retry deadline.
    Outage,
}

use NetFault::*;

const FAULTS: [NetFault; 7] = [
    ResetPeer,
    CutUpload,
    CutDownload,
    Stall,
    Slicer,
    Latency,
    Outage,
];

impl NetFault {
    /// Adds the fault; returns how long it stays (`None`: until the end of the program).
    fn begin(self, toxi: &Toxiproxy) -> Option<Duration> {
        let add = |kind: &str, stream: &str, attrs: serde_json::Value| {
            toxi.add(PROXY, "fault", kind, stream, attrs)
        };
        match self {
            ResetPeer => {
                add(
                    "reset_peer",
                    "upstream",
                    serde_json::json!({ "timeout": 50 }),
                );
                Some(FAULT_FOR)
            }
            CutUpload => {
                add(
                    "limit_data",
                    "upstream",
                    serde_json::json!({ "bytes": 2 * MIB }),
                );
                Some(FAULT_FOR)
            }
            CutDownload => {
                add(
                    "limit_data",
                    "downstream",
                    serde_json::json!({ "bytes": 512 * 1024 }),
                );
                Some(FAULT_FOR)
            }
            Stall => {
                add("timeout", "upstream", serde_json::json!({ "timeout": 0 }));
                Some(Duration::from_secs(STALL + 1))
            }
            Slicer => {
                add(
                    "slicer",
                    "downstream",
                    serde_json::json!({ "average_size": 256, "size_variation": 128, "delay": 0 }),
                );
                None
            }
            Latency => {
                add(
                    "latency",
                    "downstream",
                    serde_json::json!({ "latency": 100, "jitter": 50 }),
                );
                None
            }
            Outage => {
                toxi.set_enabled(PROXY, false);
                Some(OUTAGE_FOR)
            }
        }
    }

    /// Takes the fault away.
    fn end(self, toxi: &Toxiproxy) {
        match self {
            Outage => toxi.set_enabled(PROXY, true),
            _ => toxi.remove(PROXY, "fault"),
        }
    }

    /// Whether the program may not fail: the fault only slows things down.
    fn harmless(self) -> bool {
        matches!(self, Slicer | Latency)
    }
}

/// What a program does on the mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path_ {
    /// `cp` of a new 100 KiB file: one request at close.
    Small,
    /// `dd conv=notrunc` of 4 KiB into a 12 MiB object: downloaded to a staging file, then
    /// uploaded from it in a resumable session.
    Staged,
    /// `cp` of a new 20 MiB file: streamed while written.
    Streamed,
    /// `cp` of a 20 MiB object out of the mount: a sequential download.
    Read,
}

use Path_::*;

impl Path_ {
    /// The object's name in the bucket.
    fn name(self) -> &'static str {
        match self {
            Small => "small",
            Staged => "staged",
            Streamed => "streamed",
            Read => "read",
        }
    }

    /// The object before the program runs.
    fn old(self) -> Option<Vec<u8>> {
        match self {
            Small | Streamed => None,
            Staged => Some(data(1, 12 * MIB)),
            Read => Some(data(2, 20 * MIB)),
        }
    }

    /// The object the program means to leave (for `Read`: what it must read).
    fn new_data(self) -> Vec<u8> {
        match self {
            Small => data(3, 100 * 1024),
            Streamed => data(4, 20 * MIB),
            Staged => {
                let mut d = self.old().expect("staged has old data");
                d[300 * 1024..304 * 1024].copy_from_slice(&data(5, 4096));
                d
            }
            Read => self.old().expect("read has old data"),
        }
    }

    /// The program, with its input files in `work`.
    fn command(self, mnt: &Path, work: &Path) -> Command {
        let target = mnt.join(self.name());
        let mut cmd = Command::new("sh");
        let script = match self {
            Small | Streamed => {
                std::fs::write(work.join("src"), self.new_data()).unwrap();
                format!("cp {} {}", work.join("src").display(), target.display())
            }
            Staged => {
                std::fs::write(work.join("patch"), data(5, 4096)).unwrap();
                format!(
                    "dd if={} of={} bs=4096 seek=75 count=1 conv=notrunc status=none",
                    work.join("patch").display(),
                    target.display()
                )
            }
            Read => format!("cp {} {}", target.display(), work.join("out").display()),
        };
        cmd.args(["-c", &script]);
        cmd
    }
}

/// What the bucket held, in a word.
fn describe(got: &Option<Vec<u8>>, path: Path_) -> &'static str {
    match got {
        None => "absent",
        Some(d) if Some(d) == path.old().as_ref() => "old, untouched",
        Some(d) if *d == path.new_data() => "new, exact",
        Some(_) => "WRONG BYTES",
    }
}

/// Runs every fault against `path`, asserting the invariants, and prints the rows.
fn matrix(path: Path_) {
    if fuse_endpoint().is_none() {
        return;
    }
    let mut rows = Vec::new();
    for fault in FAULTS {
        rows.push(one_case(path, fault));
    }
    println!("| path | fault | program | took | bucket after | bucket after stop |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
}

fn one_case(path: Path_, fault: NetFault) -> String {
    let what = format!("{path:?} × {fault:?}");
    let net = Net::new();
    let bucket = Bucket::fresh(&net.emulator_endpoint, "faults");
    if let Some(old) = path.old() {
        bucket.put(path.name(), &old);
    }
    let options = MountOptions {
        extra: [
            "--retry-deadline-secs",
            &DEADLINE.to_string(),
            "--stall-timeout-secs",
            &STALL.to_string(),
            "--drain-timeout",
            "20",
        ]
        .map(String::from)
        .to_vec(),
        ..MountOptions::default()
    };
    let mut m = Mount::new(&bucket.via(&net.front), options);
    let work = tempfile::tempdir().unwrap();
    let mut cmd = path.command(m.path(), work.path());
    let started = Instant::now();
    let mut child = spawn(
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped()),
    );

    // The fault, during the program (or all along).
    if !fault.harmless() && path != Small {
        std::thread::sleep(FAULT_AT);
    }
    let fault_began = Instant::now();
    let lasts = fault.begin(&net.toxi);
    let status = match lasts {
        Some(d) => {
            let until = fault_began + d;
            let mut status = None;
            while Instant::now() < until && status.is_none() {
                status = child.try_wait().unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
            if status.is_none() && fault == Outage {
                // The program must give up during the outage, within the bound.
                let left = OUTAGE_BOUND.saturating_sub(fault_began.elapsed());
                status = wait_bounded(&mut child, left);
            }
            fault.end(&net.toxi);
            status.or_else(|| wait_bounded(&mut child, PATIENCE))
        }
        None => {
            let status = wait_bounded(&mut child, PATIENCE);
            fault.end(&net.toxi);
            status
        }
    };
    let took = started.elapsed();
    let Some(status) = status else {
        let _ = child.kill();
        panic!(
            "{what}: the program did not end within {PATIENCE:?}; daemon log:\n{}",
            m.log()
        );
    };
    let stderr = {
        use std::io::Read;
        let mut s = String::new();
        let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut s));
        s.trim().to_owned()
    };
    if fault == Outage {
        // A program that still needs the service when the outage begins cannot succeed during
        // it: it must fail within the bound.
        assert!(
            !status.success() || took < FAULT_AT + OUTAGE_FOR,
            "{what}: succeeded only after the outage"
        );
        if !status.success() {
            assert!(
                took <= FAULT_AT + OUTAGE_BOUND,
                "{what}: failed after {took:?}, bound {OUTAGE_BOUND:?} from the outage"
            );
        }
    }
    if fault.harmless() {
        assert!(
            status.success(),
            "{what}: failed ({stderr}); log:\n{}",
            m.log()
        );
    }

    // What the program saw against what the bucket holds.
    let got = bucket.get(path.name());
    let after = describe(&got, path);
    if path == Read {
        let out = std::fs::read(work.path().join("out")).unwrap_or_default();
        let want = path.new_data();
        if status.success() {
            assert!(out == want, "{what}: read other bytes than the object's");
        } else {
            assert!(
                out.len() <= want.len() && out[..] == want[..out.len()],
                "{what}: what was read before the failure is not the object's"
            );
        }
        assert_eq!(after, "old, untouched", "{what}");
    } else if status.success() {
        assert_eq!(after, "new, exact", "{what}: the program saw success");
    } else {
        assert!(
            matches!(after, "old, untouched" | "absent" | "new, exact"),
            "{what}: the bucket holds bytes nobody wrote"
        );
        if path.old().is_none() {
            assert_ne!(after, "old, untouched");
        }
    }
    // The daemon lived through it and still answers.
    assert!(answers(m.path()), "{what}: the mount no longer answers");
    let log = m.log();
    assert!(
        !log.contains("panicked"),
        "{what}: the daemon panicked:\n{log}"
    );

    // Stopped with the network healed, the mount uploads what it kept; the bucket still holds
    // nothing nobody wrote.
    let stopped = m.stop();
    if std::env::var_os("GCSFS_FAULTS_LOG").is_some() {
        println!("---- {what}: daemon log ----\n{}", m.log());
    }
    let got = bucket.get(path.name());
    let after_stop = describe(&got, path);
    assert!(
        matches!(after_stop, "old, untouched" | "absent" | "new, exact"),
        "{what}: after stop, the bucket holds bytes nobody wrote"
    );
    if path == Read {
        assert_eq!(after_stop, "old, untouched");
    }
    let program = if status.success() {
        "ok".to_owned()
    } else {
        let reason = stderr.lines().last().unwrap_or("").replace('|', "/");
        format!("exit {}: {reason}", status.code().unwrap_or(-1))
    };
    format!(
        "| {path:?} | {fault:?} | {program} | {:.1} s | {after} | {after_stop} (exit {}) |",
        took.as_secs_f64(),
        stopped.code().unwrap_or(-1)
    )
}

#[test]
fn small_new_files_through_network_faults() {
    matrix(Small);
}

#[test]
fn staged_edits_through_network_faults() {
    matrix(Staged);
}

#[test]
fn streamed_new_files_through_network_faults() {
    matrix(Streamed);
}

#[test]
fn reads_through_network_faults() {
    matrix(Read);
}

#[test]
fn five_hundred_dirty_files_are_uploaded_within_cloud_runs_ten_seconds() {
    // 500 small files written and still open (so not uploaded yet) when SIGTERM comes, over a
    // link with 15 ms each way: the default --drain-timeout (8 s) must upload every one, well
    // before Cloud Run's SIGKILL 10 s after SIGTERM. (`GCSFS_DRAIN500_FLAGS` adds mount flags,
    // e.g. `--upload-concurrency 1 --drain-timeout 60` for the one-at-a-time drain: 17 s.)
    if fuse_endpoint().is_none() {
        return;
    }
    let net = Net::new();
    for stream in ["upstream", "downstream"] {
        net.toxi.add(
            PROXY,
            &format!("delay-{stream}"),
            "latency",
            stream,
            serde_json::json!({ "latency": 15 }),
        );
    }
    let bucket = Bucket::fresh(&net.emulator_endpoint, "drain500");
    let options = MountOptions {
        extra: std::env::var("GCSFS_DRAIN500_FLAGS")
            .map(|f| f.split_whitespace().map(String::from).collect())
            .unwrap_or_default(),
        ..MountOptions::default()
    };
    let mut m = Mount::new(&bucket.via(&net.front), options);
    let quiet = no_spawns();
    let open: Vec<std::fs::File> = (0..500)
        .map(|i| {
            let mut f = std::fs::File::create(m.join(format!("f{i:03}"))).unwrap();
            std::io::Write::write_all(&mut f, &data(i, 2048)).unwrap();
            f
        })
        .collect();
    assert!(
        bucket.names().is_empty(),
        "nothing is uploaded before the drain"
    );
    let started = Instant::now();
    let status = m.stop();
    let took = started.elapsed();
    drop((open, quiet));
    println!("500 dirty files at SIGTERM, 15 ms each way: gcsfs exited {took:?} after it");
    assert!(status.success(), "exit {status}; log:\n{}", m.log());
    assert!(
        took < Duration::from_secs(10),
        "took {took:?}; log:\n{}",
        m.log()
    );
    let listed = bucket.list("");
    assert_eq!(listed.len(), 500);
    for i in 0..500u64 {
        let name = format!("f{i:03}");
        assert!(
            bucket.get(&name).as_deref() == Some(&data(i, 2048)[..]),
            "{name} differs"
        );
    }
}
