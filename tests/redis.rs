//! The bundled `redis` tool against a real `redis-server` the test starts on
//! a free loopback port: PING and GET through wasi:sockets, allowed by an
//! explicit loopback rule; a port not on the list is a denial.
//!
//! Needs `redis-server` on PATH (`.ci/run` installs Debian's). Without it the
//! tests print why and pass without running (only where the binary is absent).

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fabric_host::Outcome;
use serde_json::json;

/// A redis-server on a free port, killed (by its own pid) when dropped.
struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Starts redis-server, or `None` (with a message) when it is not installed.
fn start() -> Option<Server> {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "SKIPPED: redis-server is not installed (apt-get install redis-server; .ci/run does)"
        );
        return None;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    let server = Server {
        child,
        port,
        _dir: dir,
    };
    let started = Instant::now();
    while send(port, "*1\r\n$4\r\nPING\r\n").as_deref() != Some("+PONG\r\n") {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "redis-server did not answer"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(server)
}

/// Sends raw RESP, returns the first reply bytes.
fn send(port: u16, resp: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(resp.as_bytes()).ok()?;
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// The bundled policy, pointed at `port`.
fn policy(allow_port: u16, addr_port: u16) -> String {
    let text = std::fs::read_to_string(common::repo().join("policies/redis.toml"))
        .expect("bundled policy");
    text.replace("127.0.0.1/32:6379", &format!("127.0.0.1/32:{allow_port}"))
        .replace("127.0.0.1:6379", &format!("127.0.0.1:{addr_port}"))
}

#[test]
fn ping_and_get_against_a_real_redis_server() {
    let Some(server) = start() else { return };
    let port = server.port;
    assert_eq!(
        send(port, "*3\r\n$3\r\nSET\r\n$8\r\ngreeting\r\n$6\r\nhéllo\r\n").as_deref(),
        Some("+OK\r\n")
    );
    let policies = common::policies(&[("redis", &policy(port, port))]);
    let f = common::open(&common::example_tools(), policies.path());

    let r = common::call(&f, "redis.ping", json!({}));
    assert_eq!(r.outcome, Outcome::Ok, "{:?} {:?}", r.error, r.denials);
    assert_eq!(r.output, json!("PONG"));
    let r = common::call(&f, "redis.get", json!({"key": "greeting"}));
    assert_eq!(r.output, json!("héllo"), "{:?}", r.error);
    let r = common::call(&f, "redis.get", json!({"key": "no such key"}));
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.error);
    assert_eq!(r.output, json!(null));
    assert!(r.denials.is_empty());
}

#[test]
fn a_port_not_on_the_list_is_a_denial() {
    let Some(server) = start() else { return };
    let port = server.port;
    // The server is there, but the policy allows another port.
    let other = free_port();
    let policies = common::policies(&[("redis", &policy(other, port))]);
    let f = common::open(&common::example_tools(), policies.path());
    let r = common::call(&f, "redis.ping", json!({}));
    assert_eq!(r.outcome, Outcome::ToolError, "{:?}", r.error);
    let message = r
        .error
        .as_ref()
        .map(|e| e.message.clone())
        .unwrap_or_default();
    assert!(message.contains("access-denied"), "{message}");
    assert_eq!(r.denials.len(), 1, "{:?}", r.denials);
    assert_eq!(r.denials[0].kind, "net");
    assert_eq!(r.denials[0].target, format!("127.0.0.1:{port}"));
    assert!(
        r.denials[0]
            .reason
            .contains(&format!("allow = [\"127.0.0.1/32:{port}\"]")),
        "{}",
        r.denials[0].reason
    );
    // The server saw nothing of it: still answering, no stray state.
    assert_eq!(
        send(port, "*1\r\n$4\r\nPING\r\n").as_deref(),
        Some("+PONG\r\n")
    );
}
