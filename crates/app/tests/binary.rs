//! Starts the real `app` binary, calls `/create` over TCP, sends SIGTERM and checks a clean exit.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// Kills the child if the test fails before it exits.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// One HTTP/1.1 request with `Connection: close`; returns the status code and the body.
fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

#[test]
fn binary_serves_create_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // A free port: bind to port 0, read the port, release it for the child.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_app"))
        .env("PORT", port.to_string())
        .env("FOLDER", dir.path())
        .env_remove("MNT_DIR")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = Guard(child);
    let mut stdout = BufReader::new(child.0.stdout.take().unwrap());

    // The first log line says the server is listening: after it, connections are accepted.
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let started: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(started["severity"], "INFO", "{line}");
    assert_eq!(started["addr"], format!("0.0.0.0:{port}"), "{line}");

    let (status, body) = http(port, "POST", "/create");
    assert_eq!(status, 200, "{body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    let path = created["path"].as_str().unwrap();
    assert_eq!(std::path::Path::new(path).parent(), Some(dir.path()));
    assert!(std::fs::read_to_string(path).unwrap().ends_with("Z\n"));

    kill(Pid::from_raw(child.0.id() as i32), Signal::SIGTERM).unwrap();
    let status = child.0.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");

    // The rest of the log: one info line for the request, then the shutdown lines, all JSON.
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let lines: Vec<Value> = rest
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let request = lines
        .iter()
        .find(|l| l["uri"] == "/create")
        .expect("a request log line");
    assert_eq!(request["severity"], "INFO");
    assert_eq!(request["status"], 200);
    assert_eq!(request["method"], "POST");
    assert!(lines.iter().any(|l| l["signal"] == "SIGTERM"), "{rest}");
}
