//! A toxiproxy server of a test's own: TCP proxies between gcsfs and an emulator that inject the
//! faults real networks and GCS front ends produce — connections reset or cut after N bytes,
//! stalls, bodies sliced into small pieces, latency — and outages (a disabled proxy).
//!
//! The binary is `toxiproxy-server` on `PATH`, or Go's `server` from
//! `go install github.com/Shopify/toxiproxy/v2/cmd/server@v2.12.0` (what `scripts/install-deps.sh`
//! installs, in Go's binary directory). A test that needs it fails when it is missing.
#![allow(dead_code)] // each test file uses a different part

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the server may take to answer after it was started (bounds a hang).
const START_PATIENCE: Duration = Duration::from_secs(30);

/// A running toxiproxy; killed on drop.
#[derive(Debug)]
pub struct Toxiproxy {
    child: Option<Child>,
    /// Its API, e.g. `http://127.0.0.1:40123`.
    api: String,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
}

/// Where the server binary is.
fn binary() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("toxiproxy-server"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(gobin) = std::env::var_os("GOBIN") {
        candidates.push(PathBuf::from(gobin).join("server"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join("go/bin/server"));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "toxiproxy is not installed (scripts/install-deps.sh installs it: \
                 go install github.com/Shopify/toxiproxy/v2/cmd/server@v2.12.0)"
            )
        })
}

/// A TCP port on 127.0.0.1 that nobody listens on right now.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("address").port()
}

impl Toxiproxy {
    /// Starts a server with its API on a free port of 127.0.0.1.
    pub fn start() -> Self {
        let bin = binary();
        let port = free_port();
        let log = std::env::temp_dir().join(format!("gcsfs-toxiproxy-{port}.log"));
        let out = std::fs::File::create(&log).expect("toxiproxy log");
        let child = Command::new(&bin)
            .args(["-host", "127.0.0.1", "-port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log fd"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
        let deadline = Instant::now() + START_PATIENCE;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "toxiproxy did not answer within {START_PATIENCE:?}; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Self {
            child: Some(child),
            api: format!("http://{addr}"),
            rt,
            http: reqwest::Client::new(),
        }
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Option<serde_json::Value>) {
        self.rt.block_on(async {
            let mut rb = self
                .http
                .request(method.clone(), format!("{}{path}", self.api));
            if let Some(b) = &body {
                rb = rb.json(b);
            }
            let resp = rb.send().await.expect("toxiproxy API");
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            assert!(
                status.is_success(),
                "toxiproxy {method} {path}: {status}: {text}"
            );
        })
    }

    /// A proxy `name` listening on `listen` (`host:port`) in front of `upstream`.
    pub fn proxy(&self, name: &str, listen: &str, upstream: &str) {
        let body = serde_json::json!({ "name": name, "listen": listen, "upstream": upstream });
        self.call(reqwest::Method::POST, "/proxies", Some(body));
    }

    /// Adds toxic `toxic` of `kind` to proxy `name`, on the `stream` direction (`upstream`:
    /// client to server, `downstream`: server to client), with `attributes`.
    pub fn add(
        &self,
        name: &str,
        toxic: &str,
        kind: &str,
        stream: &str,
        attributes: serde_json::Value,
    ) {
        let body = serde_json::json!({
            "name": toxic, "type": kind, "stream": stream, "toxicity": 1.0,
            "attributes": attributes,
        });
        self.call(
            reqwest::Method::POST,
            &format!("/proxies/{name}/toxics"),
            Some(body),
        );
    }

    /// Removes toxic `toxic` from proxy `name`.
    pub fn remove(&self, name: &str, toxic: &str) {
        self.call(
            reqwest::Method::DELETE,
            &format!("/proxies/{name}/toxics/{toxic}"),
            None,
        );
    }

    /// Turns proxy `name` off (every connection refused, open ones closed) or on again.
    pub fn set_enabled(&self, name: &str, enabled: bool) {
        let body = serde_json::json!({ "enabled": enabled });
        self.call(
            reqwest::Method::POST,
            &format!("/proxies/{name}"),
            Some(body),
        );
    }
}

impl Drop for Toxiproxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
