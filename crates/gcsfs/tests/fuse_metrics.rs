//! `--prometheus-port` on a real mount (`--write-back async`): `GET /metrics` answers with every
//! gcsfs metric while files are written, the uploads completed reach the number of files once
//! they are synced, a failed lookup is counted as an ENOENT, and other paths get a 404.
//!
//! Needs `GCSFS_TEST_ENDPOINT`, `/dev/fuse` and root; otherwise it prints `skipped: <reason>`.

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use common::mount::{Bucket, Mount, MountOptions, data, fuse_endpoint, sh};

/// A port free now (the daemon binds it a moment later).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `GET path` on the metrics port: (status line, headers and body).
fn get(port: u16, path: &str) -> (String, String) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics port");
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    let (status, rest) = reply.split_once("\r\n").expect("a status line");
    (status.to_owned(), rest.to_owned())
}

/// The metrics text.
fn scrape(port: u16) -> String {
    let (status, rest) = get(port, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{rest}");
    let (head, body) = rest.split_once("\r\n\r\n").expect("a blank line");
    assert!(
        head.contains("Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{head}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    body.to_owned()
}

/// The value of the sample `name` (with its labels, e.g. `x_total{op="lookup"}`); 0 if absent.
fn value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |v| {
            v.parse().unwrap_or_else(|e| panic!("{name}: {v:?}: {e}"))
        })
}

const NAMES: [&str; 13] = [
    "gcsfs_dirty_files ",
    "gcsfs_dirty_bytes ",
    "gcsfs_oldest_dirty_age_seconds ",
    "gcsfs_uploads_queued ",
    "gcsfs_uploads_in_flight ",
    "gcsfs_uploads_completed_total ",
    "gcsfs_uploads_failed_total ",
    "gcsfs_store_retries_total{call=\"write\"} ",
    "gcsfs_memory_budget_used_bytes ",
    "gcsfs_memory_budget_limit_bytes ",
    "gcsfs_memory_staged_bytes ",
    "gcsfs_fuse_op_duration_seconds_count{op=\"lookup\"} ",
    "gcsfs_fuse_op_duration_seconds_bucket{le=\"+Inf\",op=\"write\"} ",
];

#[test]
fn metrics_on_a_real_mount() {
    let Some(endpoint) = fuse_endpoint() else {
        return;
    };
    let bucket = Bucket::fresh(&endpoint, "metrics");
    let port = free_port();
    let options = MountOptions {
        extra: [
            "--write-back",
            "async",
            "--prometheus-port",
            &port.to_string(),
            "--memory-limit-mb",
            "64",
        ]
        .map(String::from)
        .to_vec(),
        ..MountOptions::default()
    };
    let m = Mount::new(&bucket, options);
    let mnt = m.path().display().to_string();

    let before = scrape(port);
    assert_eq!(value(&before, "gcsfs_uploads_completed_total"), 0.0);
    assert_eq!(
        value(&before, "gcsfs_memory_budget_limit_bytes"),
        (64u64 << 20) as f64
    );

    const FILES: u64 = 12;
    std::fs::create_dir(m.join("d")).unwrap();
    for i in 0..FILES {
        std::fs::write(m.join(format!("d/f{i}")), data(i, 1000 + i as usize)).unwrap();
    }
    // During the run: every metric is there.
    let during = scrape(port);
    for name in NAMES {
        assert!(
            during.lines().any(|l| l.starts_with(name)),
            "no {name:?} in:\n{during}"
        );
    }
    assert!(value(&during, "gcsfs_uploads_completed_total") <= FILES as f64);

    // `sync FILE...` fsyncs each file: it returns once each is in the bucket.
    sh(&format!("sync {mnt}/d/*"));
    for i in 0..FILES {
        assert_eq!(
            bucket.get(&format!("d/f{i}")),
            Some(data(i, 1000 + i as usize)),
            "d/f{i}"
        );
    }
    let after = scrape(port);
    assert_eq!(
        value(&after, "gcsfs_uploads_completed_total"),
        FILES as f64,
        "one upload per file:\n{after}"
    );
    assert_eq!(value(&after, "gcsfs_uploads_failed_total"), 0.0);
    assert_eq!(value(&after, "gcsfs_dirty_files"), 0.0);
    assert_eq!(value(&after, "gcsfs_dirty_bytes"), 0.0);
    assert_eq!(value(&after, "gcsfs_oldest_dirty_age_seconds"), 0.0);
    assert!(value(&after, "gcsfs_fuse_op_duration_seconds_count{op=\"write\"}") >= FILES as f64);

    // A lookup of a missing name is an ENOENT, counted before stat(1) sees it.
    let enoent = "gcsfs_fuse_errors_total{op=\"lookup\",errno=\"ENOENT\"}";
    let seen = value(&after, enoent);
    let missing = m.join("no-such-file-here");
    assert!(std::fs::metadata(&missing).is_err());
    let counted = value(&scrape(port), enoent);
    assert!(counted > seen, "{enoent}: {seen} then {counted}");

    // Anything but GET /metrics is not found.
    let (status, _) = get(port, "/");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
}
