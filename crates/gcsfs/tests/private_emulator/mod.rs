//! An emulator of a test's own, for tests that make the store go away mid-test (the shared one
//! at `GCSFS_TEST_ENDPOINT` must stay up for every other test).
//!
//! [`PrivateEmulator::start`] runs `fake-gcs-server` (as `scripts/lib/emulator.sh` does) on port
//! 80 of a loopback address nobody listens on yet, from `127.0.0.31` up; [`PrivateEmulator::kill`]
//! kills it, after which every request to it is refused. Port 80 and the binary come with the
//! shared emulator, so these tests run whenever `GCSFS_TEST_ENDPOINT` is set (and fail, rather
//! than skip, if the binary cannot be found then).
#![allow(dead_code)] // each test file uses a different part

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// The first loopback address tried (`127.0.0.N`), and how many are tried.
const FIRST_HOST: u8 = 31;
const HOSTS: u8 = 60;

/// How long the emulator may take to answer after it was started (bounds a hang).
const START_PATIENCE: Duration = Duration::from_secs(30);

/// A running `fake-gcs-server` on `http://127.0.0.N` (port 80); killed on drop.
#[derive(Debug)]
pub struct PrivateEmulator {
    child: Option<Child>,
    /// Its endpoint, e.g. `http://127.0.0.31`.
    pub endpoint: String,
    /// Its log file.
    pub log: PathBuf,
}

/// Where `fake-gcs-server` is: on `PATH`, or in Go's default binary directory.
fn binary() -> PathBuf {
    let name = "fake-gcs-server";
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join("go/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not on PATH (scripts/lib/emulator.sh emulator_install puts it there)")
        })
}

/// Whether something accepts connections on `host:80`.
fn listening(host: &str) -> bool {
    let addr: SocketAddr = format!("{host}:80").parse().expect("address");
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// A loopback address (`127.0.0.N`) on whose port 80 nobody listens yet, from `127.0.0.31` up;
/// never the same one twice in a process. Panics when they are used up.
pub fn free_host() -> String {
    static NEXT: AtomicU8 = AtomicU8::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < HOSTS, "no free loopback address left for a test server");
        let host = format!("127.0.0.{}", FIRST_HOST + n);
        if !listening(&host) {
            return host;
        }
    }
}

impl PrivateEmulator {
    /// Starts an emulator on the first free address from `127.0.0.31`; panics if none starts.
    pub fn start() -> Self {
        Self::start_as(None)
    }

    /// Starts an emulator that is reached through `front` (`127.0.0.N`, a proxy in front of
    /// it): the resumable-upload URLs it hands out point there, so upload requests pass the
    /// proxy too.
    pub fn start_behind(front: &str) -> Self {
        Self::start_as(Some(front))
    }

    fn start_as(front: Option<&str>) -> Self {
        let bin = binary();
        loop {
            let host = free_host();
            let public = front.unwrap_or(&host).to_owned();
            let log = std::env::temp_dir().join(format!("gcsfs-private-emulator-{host}.log"));
            let out = std::fs::File::create(&log).expect("emulator log");
            let mut child = Command::new(&bin)
                .args(["-scheme", "http", "-host", &host, "-port", "80"])
                .args(["-backend", "memory", "-external-url"])
                .arg(format!("http://{public}:80"))
                .args(["-public-host", &public])
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("log fd"))
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let deadline = Instant::now() + START_PATIENCE;
            let started = loop {
                if child.try_wait().expect("try_wait").is_some() {
                    // Most likely the address was taken meanwhile: try the next one.
                    break false;
                }
                if listening(&host) {
                    break true;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "the emulator on {host} did not answer within {START_PATIENCE:?}; log:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            // Still running once it listens: the listener is its own.
            if started && child.try_wait().expect("try_wait").is_none() {
                return Self {
                    child: Some(child),
                    endpoint: format!("http://{host}"),
                    log,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the emulator (SIGKILL) and waits for it: from now on, every request is refused.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateEmulator {
    fn drop(&mut self) {
        self.kill();
    }
}
