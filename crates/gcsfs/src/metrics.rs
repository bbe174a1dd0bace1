//! Prometheus metrics (`--prometheus-port`): the filesystem's and the store's plain numbers
//! (`fs::FsStats`, `fs::Filesystem::dirty_summary`, `store::RetryStats`, the memory budget)
//! read at scrape time, and the FUSE adapter's per-operation latencies and errors, served in
//! the OpenMetrics text format at `GET /metrics` by a small HTTP/1.x server of its own.
//!
//! The server runs on the tokio runtime, never on a FUSE thread. A client cannot hurt the
//! mount: at most [`MAX_CONNECTIONS`] are served at once (more wait in the kernel's accept
//! queue), a request head larger than [`MAX_REQUEST`] is refused, and a connection is closed
//! after one answer or after [`CONNECTION_TIMEOUT`], whichever comes first.

use std::borrow::Cow;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::fs::{DirtySummary, Filesystem};
use crate::store::{Op, RetryStats};

/// Connections served at once, at most.
pub const MAX_CONNECTIONS: usize = 8;
/// Largest request head read (request line and headers), in bytes.
pub const MAX_REQUEST: usize = 8 << 10;
/// How long a connection may take, from accept to the end of the answer.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// The `Content-Type` of the answer to `GET /metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why the metrics server could not start.
#[derive(Debug, thiserror::Error)]
#[error("--prometheus-port {port}: cannot listen on 0.0.0.0:{port}")]
pub struct BindError {
    /// The port asked for.
    pub port: u16,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Binds the metrics server's socket on `0.0.0.0:port`, at start-up (so that a port taken is
/// an error before anything is mounted). Call inside the runtime that will serve it.
pub fn bind(port: u16) -> Result<TcpListener, BindError> {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    std::net::TcpListener::bind(addr)
        .and_then(|l| {
            l.set_nonblocking(true)?;
            TcpListener::from_std(l)
        })
        .map_err(|source| BindError { port, source })
}

/// Labels of a FUSE operation's latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

/// Labels of a FUSE operation's errors.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    op: &'static str,
    errno: Cow<'static, str>,
}

/// Latency buckets of FUSE operations: 100 µs to 26 s, by factors of 4.
fn op_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 4.0, 10))
}

/// What the FUSE adapter records: each operation's latency (from the callback to the reply) and
/// its errors by errno.
#[derive(Debug)]
pub struct FuseMetrics {
    durations: Family<OpLabels, Histogram, fn() -> Histogram>,
    errors: Family<ErrorLabels, Counter>,
}

impl Default for FuseMetrics {
    fn default() -> Self {
        Self {
            durations: Family::new_with_constructor(op_histogram),
            errors: Family::default(),
        }
    }
}

impl FuseMetrics {
    /// Records one `op` (the fuser callback's name) answered after `elapsed`, with the errno
    /// it failed with, if any.
    pub fn record(&self, op: &'static str, elapsed: Duration, errno: Option<i32>) {
        self.durations
            .get_or_create(&OpLabels { op })
            .observe(elapsed.as_secs_f64());
        if let Some(code) = errno {
            self.errors
                .get_or_create(&ErrorLabels {
                    op,
                    errno: errno_name(code),
                })
                .inc();
        }
    }
}

/// `ENOENT` for `libc::ENOENT`, and so on.
fn errno_name(code: i32) -> Cow<'static, str> {
    match code {
        libc::ENOENT => Cow::Borrowed("ENOENT"),
        libc::EIO => Cow::Borrowed("EIO"),
        libc::EEXIST => Cow::Borrowed("EEXIST"),
        libc::ESTALE => Cow::Borrowed("ESTALE"),
        _ => Cow::Owned(format!("{:?}", nix::errno::Errno::from_raw(code))),
    }
}

/// The state figures read at each scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Files with unsaved changes, their bytes, the oldest change's age.
    pub dirty: DirtySummary,
    /// Files queued for a background upload, not started.
    pub uploads_queued: u64,
    /// Uploads running now.
    pub uploads_in_flight: u64,
    /// Uploads that put a file's data in the bucket.
    pub uploads_completed: u64,
    /// Uploads that failed.
    pub uploads_failed: u64,
    /// Bytes charged to the memory budget now.
    pub memory_used: u64,
    /// The memory budget.
    pub memory_limit: u64,
    /// Bytes of staging files charged to the budget now (part of `memory_used`; 0 unless the
    /// temp dir is in memory).
    pub memory_staged: u64,
    /// Retries by store call (every call, zeros included); empty without a retry layer.
    pub retries: Vec<(Op, u64)>,
}

impl Snapshot {
    /// The figures of `fs` and of `retries` now.
    pub fn of(fs: &Filesystem, retries: Option<&RetryStats>) -> Self {
        let stats = fs.stats();
        Snapshot {
            dirty: fs.dirty_summary(),
            uploads_queued: fs.uploads_queued(),
            uploads_in_flight: stats.uploads_in_flight(),
            uploads_completed: stats.uploads_completed(),
            uploads_failed: stats.uploads_failed(),
            memory_used: fs.memory().in_use(),
            memory_limit: fs.memory().total(),
            memory_staged: fs.memory().staged(),
            retries: retries
                .map(|r| Op::ALL.iter().map(|&op| (op, r.retries(op))).collect())
                .unwrap_or_default(),
        }
    }
}

/// Reads a [`Snapshot`] at each scrape; `None` once the filesystem is gone (its metrics are
/// then left out).
type Source = Box<dyn Fn() -> Option<Snapshot> + Send + Sync>;

/// The collector of the state figures.
struct StateCollector(Source);

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateCollector")
    }
}

fn gauge<N: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: N,
) -> std::fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, unit, metric.metric_type())?)
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// Labels of a store call's retries.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    call: &'static str,
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let Some(s) = (self.0)() else {
            return Ok(());
        };
        let e = &mut encoder;
        gauge(
            e,
            "dirty_files",
            "Files with changes not yet in the bucket.",
            None,
            s.dirty.files,
        )?;
        gauge(
            e,
            "dirty",
            "Sizes of the files with changes not yet in the bucket, summed.",
            Some(&Unit::Bytes),
            s.dirty.bytes,
        )?;
        gauge(
            e,
            "oldest_dirty_age",
            "Age of the oldest change not yet in the bucket (0 if none).",
            Some(&Unit::Seconds),
            s.dirty.oldest_age.as_secs_f64(),
        )?;
        gauge(
            e,
            "uploads_queued",
            "Files queued for a background upload (--write-back async), not started.",
            None,
            s.uploads_queued,
        )?;
        gauge(
            e,
            "uploads_in_flight",
            "Uploads of file data running now.",
            None,
            s.uploads_in_flight,
        )?;
        counter(
            e,
            "uploads_completed",
            "Uploads of file data that put it in the bucket (at close, fsync, in the background, by the drain).",
            s.uploads_completed,
        )?;
        counter(
            e,
            "uploads_failed",
            "Uploads of file data that failed.",
            s.uploads_failed,
        )?;
        gauge(
            e,
            "memory_budget_used",
            "Bytes charged to the memory budget (--memory-limit-mb).",
            Some(&Unit::Bytes),
            s.memory_used,
        )?;
        gauge(
            e,
            "memory_staged",
            "Bytes of staging files charged to the memory budget: --temp-dir is in memory (a tmpfs); part of memory_budget_used.",
            Some(&Unit::Bytes),
            s.memory_staged,
        )?;
        gauge(
            e,
            "memory_budget_limit",
            "The memory budget (--memory-limit-mb).",
            Some(&Unit::Bytes),
            s.memory_limit,
        )?;
        if !s.retries.is_empty() {
            let metric_type = ConstCounter::new(0u64).metric_type();
            let mut family = e.encode_descriptor(
                "store_retries",
                "Retries of Cloud Storage calls by the retry layer, by call.",
                None,
                metric_type,
            )?;
            for (op, n) in &s.retries {
                let labels = CallLabels { call: op.name() };
                ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The mount's metrics: the registry, rendered at each scrape.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// Metrics of the state `source` reads and of the FUSE operations `fuse` records.
    pub fn new(
        source: impl Fn() -> Option<Snapshot> + Send + Sync + 'static,
        fuse: &FuseMetrics,
    ) -> Self {
        let mut registry = Registry::with_prefix("gcsfs");
        registry.register_collector(Box::new(StateCollector(Box::new(source))));
        registry.register_with_unit(
            "fuse_op_duration",
            "Time from a FUSE request's arrival to its answer, by operation",
            Unit::Seconds,
            fuse.durations.clone(),
        );
        registry.register(
            "fuse_errors",
            "FUSE requests answered with an error, by operation and errno",
            fuse.errors.clone(),
        );
        Self { registry }
    }

    /// The metrics of a mounted filesystem (left out once it is dropped), its store's retries
    /// (`None`: no retry layer) and its FUSE adapter's operations.
    pub fn for_mount(
        fs: Weak<Filesystem>,
        retries: Option<Arc<RetryStats>>,
        fuse: &FuseMetrics,
    ) -> Self {
        Self::new(
            move || fs.upgrade().map(|fs| Snapshot::of(&fs, retries.as_deref())),
            fuse,
        )
    }

    /// Every metric, in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String does not fail; a collector's error would leave the text cut.
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(%error, "encoding the metrics failed");
        }
        out
    }
}

/// Serves `metrics` on `listener` until the runtime ends (see the module doc).
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let socket = match listener.accept().await {
            Ok((socket, _)) => socket,
            Err(error) => {
                // Out of file descriptors, say: do not spin.
                tracing::warn!(%error, "metrics server: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, answer(socket, &metrics)).await;
            drop(slot);
        });
    }
}

/// Reads one request head from `socket`, answers it and closes the connection.
async fn answer(mut socket: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let complete = loop {
        if head_end(&head).is_some() {
            break true;
        }
        if head.len() >= MAX_REQUEST {
            break false;
        }
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            return Ok(()); // closed before the request was whole
        }
        head.extend_from_slice(&buf[..n]);
    };
    let reply = if complete {
        respond(&head, || metrics.render())
    } else {
        reply(
            431,
            "Request Header Fields Too Large",
            "text/plain",
            b"request too large\n",
        )
    };
    socket.write_all(&reply).await?;
    socket.shutdown().await
}

/// Where a request head ends (after its blank line), if it does in `bytes`.
fn head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The answer to the request `head`: the metrics for `GET /metrics` (rendered by `render`),
/// 404 for any other well-formed HTTP/1.x request, 400 for anything else.
fn respond(head: &[u8], render: impl FnOnce() -> String) -> Vec<u8> {
    let line = head
        .split(|&b| b == b'\n')
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
        .unwrap_or_default()
        .trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let (Some(method), Some(target), Some(version), None) = (method, target, version, parts.next())
    else {
        return reply(400, "Bad Request", "text/plain", b"bad request\n");
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") || method.is_empty() {
        return reply(400, "Bad Request", "text/plain", b"bad request\n");
    }
    let path = target.split('?').next().unwrap_or_default();
    if method == "GET" && path == "/metrics" {
        reply(200, "OK", CONTENT_TYPE, render().as_bytes())
    } else {
        reply(
            404,
            "Not Found",
            "text/plain",
            b"not found; metrics are at /metrics\n",
        )
    }
}

/// An HTTP/1.1 answer that closes the connection.
fn reply(status: u16, reason: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Snapshot {
        Snapshot {
            dirty: DirtySummary {
                files: 3,
                bytes: 4096,
                oldest_age: Duration::from_millis(2500),
            },
            uploads_queued: 2,
            uploads_in_flight: 1,
            uploads_completed: 17,
            uploads_failed: 4,
            memory_used: 1 << 20,
            memory_limit: 128 << 20,
            memory_staged: 4096,
            retries: vec![(Op::Write, 5), (Op::Stat, 0)],
        }
    }

    #[test]
    fn known_values_render_as_expected() {
        let fuse = FuseMetrics::default();
        fuse.record("lookup", Duration::from_micros(50), Some(libc::ENOENT));
        fuse.record("lookup", Duration::from_millis(3), None);
        fuse.record("write", Duration::from_secs(100), Some(libc::EROFS));
        let text = Metrics::new(|| Some(known()), &fuse).render();
        for line in [
            "# TYPE gcsfs_dirty_files gauge",
            "gcsfs_dirty_files 3",
            "# TYPE gcsfs_dirty_bytes gauge",
            "# UNIT gcsfs_dirty_bytes bytes",
            "gcsfs_dirty_bytes 4096",
            "gcsfs_oldest_dirty_age_seconds 2.5",
            "gcsfs_uploads_queued 2",
            "gcsfs_uploads_in_flight 1",
            "# TYPE gcsfs_uploads_completed counter",
            "gcsfs_uploads_completed_total 17",
            "gcsfs_uploads_failed_total 4",
            "gcsfs_memory_budget_used_bytes 1048576",
            "gcsfs_memory_budget_limit_bytes 134217728",
            "gcsfs_memory_staged_bytes 4096",
            "# TYPE gcsfs_store_retries counter",
            "gcsfs_store_retries_total{call=\"write\"} 5",
            "gcsfs_store_retries_total{call=\"stat\"} 0",
            "# TYPE gcsfs_fuse_op_duration_seconds histogram",
            "gcsfs_fuse_op_duration_seconds_count{op=\"lookup\"} 2",
            "gcsfs_fuse_op_duration_seconds_bucket{le=\"0.0001\",op=\"lookup\"} 1",
            "gcsfs_fuse_op_duration_seconds_bucket{le=\"0.0064\",op=\"lookup\"} 2",
            "gcsfs_fuse_op_duration_seconds_bucket{le=\"+Inf\",op=\"write\"} 1",
            "gcsfs_fuse_op_duration_seconds_bucket{le=\"26.2144\",op=\"write\"} 0",
            "# HELP gcsfs_fuse_errors FUSE requests answered with an error, by operation and errno.",
            "gcsfs_fuse_errors_total{op=\"lookup\",errno=\"ENOENT\"} 1",
            "gcsfs_fuse_errors_total{op=\"write\",errno=\"EROFS\"} 1",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing line {line:?} in:\n{text}"
            );
        }
        assert!(!text.contains("errno=\"ENOENT\"} 2"), "{text}");
    }

    #[test]
    fn a_filesystem_gone_leaves_only_the_fuse_metrics() {
        let fuse = FuseMetrics::default();
        fuse.record("getattr", Duration::from_millis(1), None);
        let text = Metrics::new(|| None, &fuse).render();
        assert!(!text.contains("gcsfs_dirty_files"), "{text}");
        assert!(
            text.contains("# TYPE gcsfs_fuse_op_duration_seconds histogram"),
            "{text}"
        );
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(libc::ENOENT), "ENOENT");
        assert_eq!(errno_name(libc::EROFS), "EROFS");
        assert_eq!(errno_name(libc::ENOTEMPTY), "ENOTEMPTY");
    }

    fn text(reply: &[u8]) -> String {
        String::from_utf8(reply.to_vec()).unwrap()
    }

    #[test]
    fn get_metrics_is_answered_and_everything_else_is_not() {
        let ok = text(&respond(
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
            || "body\n".into(),
        ));
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains(&format!("Content-Type: {CONTENT_TYPE}\r\n")),
            "{ok}"
        );
        assert!(
            ok.contains("Content-Length: 5\r\nConnection: close\r\n\r\nbody\n"),
            "{ok}"
        );
        let ok10 = text(&respond(b"GET /metrics?x=1 HTTP/1.0\n\n", || "b".into()));
        assert!(ok10.starts_with("HTTP/1.1 200 OK\r\n"), "{ok10}");
        for (head, status) in [
            (&b"GET / HTTP/1.1\r\n\r\n"[..], "404"),
            (b"POST /metrics HTTP/1.1\r\n\r\n", "404"),
            (b"GET /metrics/x HTTP/1.1\r\n\r\n", "404"),
            (b"GET /metrics HTTP/2.0\r\n\r\n", "400"),
            (b"GET /metrics\r\n\r\n", "400"),
            (b"\x00\xff garbage\r\n\r\n", "400"),
            (b"GET /metrics HTTP/1.1 extra\r\n\r\n", "400"),
        ] {
            let r = text(&respond(head, || panic!("rendered for {head:?}")));
            assert!(
                r.starts_with(&format!("HTTP/1.1 {status} ")),
                "{head:?}: {r}"
            );
            assert!(r.contains("Connection: close\r\n"), "{r}");
        }
    }

    #[test]
    fn the_head_ends_at_the_first_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\n"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.0\n\nrest"), Some(16));
    }

    #[tokio::test]
    async fn the_server_answers_and_survives_bad_clients() {
        let listener = bind(0).unwrap();
        let port = listener.local_addr().unwrap().port();
        let fuse = FuseMetrics::default();
        let metrics = Arc::new(Metrics::new(|| Some(known()), &fuse));
        tokio::spawn(serve(listener, metrics));
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        // Clients that send nothing hold a slot each, but not the others up (timeouts are
        // longer than this test: they only need to leave slots free).
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS - 1 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        // One whose request never ends is refused once it reaches the size bound.
        let mut flood = TcpStream::connect(addr).await.unwrap();
        flood.write_all(&vec![b'a'; MAX_REQUEST]).await.unwrap();
        let mut refused = String::new();
        let _ = flood.read_to_string(&mut refused).await;
        assert!(refused.starts_with("HTTP/1.1 431 "), "{refused}");
        drop(flood);
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
        let mut got = String::new();
        c.read_to_string(&mut got).await.unwrap();
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(
            got.contains("\ngcsfs_uploads_completed_total 17\n"),
            "{got}"
        );
        drop(idle);
    }

    #[test]
    fn a_port_taken_is_an_error_naming_it() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let err = bind(port).unwrap_err();
        let line = crate::logging::error_chain(&err);
        assert!(
            line.starts_with(&format!(
                "--prometheus-port {port}: cannot listen on 0.0.0.0:{port}: "
            )),
            "{line}"
        );
    }
}
