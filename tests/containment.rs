//! Containment: the hostile tool (`tools/testing/hostile`) attacks the host
//! one way per test. Each test asserts the exact outcome (and denial, where
//! the host refused a capability), then that a normal call on the same
//! Fabric right after succeeds.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use fabric_host::{CallResult, Outcome};
use serde_json::{json, Value};

/// A Fabric over the test tools with `policy` as the hostile tool's policy.
struct Rig {
    f: common::TestFabric,
    _policies: tempfile::TempDir,
}

fn rig(policy: &str) -> Rig {
    let policies = common::policies(&[("hostile", policy)]);
    Rig {
        f: common::open(&common::test_tools(), policies.path()),
        _policies: policies,
    }
}

impl Rig {
    fn call(&self, tool: &str, args: Value) -> CallResult {
        common::call(&self.f, &format!("hostile.{tool}"), args)
    }

    /// A normal call right after the attack succeeds.
    #[track_caller]
    fn still_serves(&self) {
        let r = self.call("flood", json!({"n": 3}));
        assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.error);
        assert_eq!(r.output, json!("xxx"));
    }
}

fn message(r: &CallResult) -> String {
    r.error
        .as_ref()
        .map(|e| e.message.clone())
        .unwrap_or_default()
}

#[track_caller]
fn expect(r: &CallResult, outcome: Outcome, needle: &str) {
    assert_eq!(r.outcome, outcome, "{:?} {:?}", r.error, r.denials);
    let m = message(r);
    assert!(m.contains(needle), "{needle:?} not in {m:?}");
}

/// The denials of `r` as `(kind, target, reason)`.
fn denials(r: &CallResult) -> Vec<(String, String, String)> {
    r.denials
        .iter()
        .map(|d| (d.kind.to_string(), d.target.clone(), d.reason.clone()))
        .collect()
}

#[track_caller]
fn denied(r: &CallResult, target: &str, reason: &str) {
    assert!(
        r.denials
            .iter()
            .any(|d| d.target == target && d.reason.contains(reason)),
        "no denial of {target:?} for {reason:?} in {:?}",
        denials(r)
    );
}

const QUICK: &str = "[limits]\ntimeout = \"500ms\"\n";

/// Host directories for the fs attacks: `ro` (read-only at /ro) holding
/// `secret.txt`, `rw` (read-write at /rw), and `outside` (not mounted)
/// holding `private.txt`; `ro/escape` is a symbolic link to
/// `outside/private.txt`.
struct Dirs {
    root: tempfile::TempDir,
}

impl Dirs {
    fn new() -> Dirs {
        let root = tempfile::tempdir().expect("temp dir");
        for d in ["ro", "rw", "outside"] {
            std::fs::create_dir(root.path().join(d)).expect("dir");
        }
        std::fs::write(root.path().join("ro/secret.txt"), "read-only text").expect("write");
        std::fs::write(root.path().join("rw/mine.txt"), "mine").expect("write");
        std::fs::write(root.path().join("outside/private.txt"), "private").expect("write");
        std::os::unix::fs::symlink(
            root.path().join("outside/private.txt"),
            root.path().join("ro/escape"),
        )
        .expect("symlink");
        std::os::unix::fs::symlink("../outside", root.path().join("rw/up")).expect("symlink");
        Dirs { root }
    }

    fn path(&self, p: &str) -> std::path::PathBuf {
        self.root.path().join(p)
    }

    fn policy(&self) -> String {
        format!(
            "{QUICK}[[fs]]\nhost = {:?}\nguest = \"/ro\"\n[[fs]]\nhost = {:?}\nguest = \"/rw\"\naccess = \"read-write\"\n",
            self.path("ro").display().to_string(),
            self.path("rw").display().to_string(),
        )
    }
}

/// A loopback HTTP server answering every request `200 ok`, on a free port.
fn http_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0u8; 4096];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    port
}

/// A loopback server that accepts connections and never answers.
fn silent_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    port
}

// ---- CPU, host calls, memory, stack ----

#[test]
fn an_infinite_loop_times_out() {
    let r = rig(&format!("{QUICK}fuel = 100_000_000_000\n"));
    let x = r.call("spin", json!({}));
    expect(&x, Outcome::Timeout, "time limit of 500ms (limits.timeout)");
    r.still_serves();
}

#[test]
fn a_sleep_far_past_the_timeout_inside_a_host_call_times_out() {
    let r = rig(QUICK);
    let started = Instant::now();
    let x = r.call("sleep", json!({"ms": 600_000}));
    expect(
        &x,
        Outcome::Timeout,
        "exceeded its 500ms time limit while waiting on the host",
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    r.still_serves();
}

#[test]
fn a_socket_read_that_never_returns_times_out() {
    let port = silent_server();
    let r = rig(&format!(
        "{QUICK}[net]\nallow = [\"127.0.0.1/32:{port}\"]\n"
    ));
    let started = Instant::now();
    let x = r.call("read-socket", json!({"addr": format!("127.0.0.1:{port}")}));
    assert_eq!(x.outcome, Outcome::Timeout, "{:?}", x.error);
    assert!(x.denials.is_empty(), "{:?}", denials(&x));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    r.still_serves();
}

#[test]
fn unbounded_allocation_is_memory_exceeded() {
    let r = rig("[limits]\nmemory = \"32 MiB\"\n");
    let x = r.call("hog", json!({}));
    expect(
        &x,
        Outcome::MemoryExceeded,
        "its limit is 33554432 bytes (limits.memory)",
    );
    r.still_serves();
}

#[test]
fn deep_recursion_traps() {
    let r = rig(QUICK);
    let x = r.call("recurse", json!({"depth": 100_000_000u64}));
    // The guest's own stack (1 MiB, below its data) overflows first.
    expect(&x, Outcome::Trap, "out of bounds memory access");
    r.still_serves();
}

#[test]
fn a_guest_exhausting_host_resources_traps() {
    let r = rig(QUICK);
    let x = r.call("exhaust-resources", json!({}));
    expect(
        &x,
        Outcome::Trap,
        "more than 10000 host resources (streams, pollables, sockets, descriptors) at once",
    );
    r.still_serves();
}

#[test]
fn sockets_are_capped_per_call_so_descriptors_stay_for_other_calls() {
    let r = rig(QUICK);
    let x = r.call("hold-sockets", json!({"n": 100}));
    assert_eq!(x.outcome, Outcome::Ok, "{:?}", x.error);
    assert_eq!(x.output, json!(100));
    let x = r.call("hold-sockets", json!({"n": 5000}));
    expect(&x, Outcome::ToolError, "after 256: ");
    expect(&x, Outcome::ToolError, "new-socket-limit");
    denied(&x, "socket", "more than 256 sockets in one call");
    // The cap is per call: the next call has its own.
    let x = r.call("hold-sockets", json!({"n": 256}));
    assert_eq!(x.output, json!(256), "{:?}", x.error);
    r.still_serves();
}

// ---- output floods ----

#[test]
fn a_huge_return_value_is_output_rejected() {
    let r = rig(QUICK);
    let x = r.call("flood", json!({"n": 2_000_000}));
    expect(
        &x,
        Outcome::OutputRejected,
        "the limit is 1048576 bytes (limits.output)",
    );
    r.still_serves();
}

/// 900 MB under a 64 MiB output limit: too large even to copy out of the
/// guest; `output_rejected`, not a trap about hostcall fuel.
#[test]
fn an_output_far_above_the_copy_limit_is_output_rejected() {
    let r = rig(
        "[limits]\nmemory = \"1 GiB\"\noutput = \"64 MiB\"\ntimeout = \"30s\"\nfuel = 100_000_000_000\n",
    );
    let x = r.call("flood", json!({"n": 900_000_000u64}));
    expect(
        &x,
        Outcome::OutputRejected,
        "output limit of 67108864 bytes of JSON (limits.output); it was rejected unread",
    );
    r.still_serves();
}

#[test]
fn stdout_and_stderr_floods_are_capped() {
    let r = rig(QUICK);
    let x = r.call("spew", json!({"n": 50_000_000}));
    assert_eq!(x.outcome, Outcome::Ok, "{:?}", x.error);
    // 64 KiB of each is kept; writes beyond it fail inside the guest.
    assert_eq!(x.output, json!(65536));
    r.still_serves();
}

// ---- files ----

#[test]
fn etc_passwd_is_not_visible() {
    let d = Dirs::new();
    let r = rig(&d.policy());
    let x = r.call("read-file", json!({"path": "/etc/passwd"}));
    // No mount covers it: the guest's own path resolution finds no
    // directory to ask the host for, so the host sees no request to refuse.
    expect(&x, Outcome::ToolError, "Capabilities insufficient");
    r.still_serves();
}

#[test]
fn dot_dot_out_of_a_mount_is_refused_and_listed() {
    let d = Dirs::new();
    let r = rig(&d.policy());
    let x = r.call("read-file", json!({"path": "/ro/../outside/private.txt"}));
    expect(&x, Outcome::ToolError, "Operation not permitted");
    denied(&x, "../outside/private.txt", "the path leaves its mount");
    let x = r.call("read-file", json!({"path": "/ro/secret.txt"}));
    assert_eq!(x.output, json!("read-only text"));
    r.still_serves();
}

#[test]
fn a_symlink_planted_in_a_mount_pointing_outside_is_not_followed() {
    let d = Dirs::new();
    let r = rig(&d.policy());
    let x = r.call("read-file", json!({"path": "/ro/escape"}));
    expect(&x, Outcome::ToolError, "Operation not permitted");
    denied(&x, "escape", "symbolic link pointing outside");
    let x = r.call("read-file", json!({"path": "/rw/up/private.txt"}));
    expect(&x, Outcome::ToolError, "Operation not permitted");
    denied(&x, "up/private.txt", "the path leaves its mount");
    r.still_serves();
}

#[test]
fn a_hard_link_across_mounts_is_refused() {
    let d = Dirs::new();
    let r = rig(&d.policy());
    for target in ["/ro/secret.txt", "/ro/escape"] {
        let x = r.call(
            "hard-link",
            json!({"target": target, "link": "/rw/linked.txt"}),
        );
        expect(&x, Outcome::ToolError, "Operation not permitted");
        assert_eq!(x.denials[0].kind, "fs");
        assert!(
            x.denials[0]
                .reason
                .contains("a hard link that leaves its mount"),
            "{:?}",
            denials(&x)
        );
        assert!(!d.path("rw/linked.txt").exists());
    }
    // Inside one read-write mount a hard link is fine.
    let x = r.call(
        "hard-link",
        json!({"target": "/rw/mine.txt", "link": "/rw/again.txt"}),
    );
    assert_eq!(x.outcome, Outcome::Ok, "{:?}", x.error);
    r.still_serves();
}

#[test]
fn refused_directory_link_time_and_unlink_operations_are_listed_as_denials() {
    let d = Dirs::new();
    let r = rig(&d.policy());
    // Out of a read-write mount, and into a read-only one.
    for (call, args, reason) in [
        (
            "make-dir",
            json!({"path": "/rw/../made"}),
            "the path leaves its mount",
        ),
        (
            "remove-file",
            json!({"path": "/rw/../outside/private.txt"}),
            "the path leaves its mount",
        ),
        (
            "make-dir",
            json!({"path": "/ro/made"}),
            "the mount is read-only",
        ),
        (
            "remove-file",
            json!({"path": "/ro/secret.txt"}),
            "the mount is read-only",
        ),
        (
            "touch",
            json!({"path": "/rw/../outside/private.txt"}),
            "the path leaves its mount",
        ),
        (
            "touch",
            json!({"path": "/ro/secret.txt"}),
            "the mount is read-only",
        ),
        (
            "sym-link",
            json!({"target": "/etc/passwd", "link": "/rw/absolute"}),
            "a symbolic link to an absolute path",
        ),
        (
            "sym-link",
            json!({"target": "secret.txt", "link": "/ro/link"}),
            "the mount is read-only",
        ),
    ] {
        let x = r.call(call, args.clone());
        assert_eq!(
            x.outcome,
            Outcome::ToolError,
            "{call} {args}: {:?}",
            x.error
        );
        assert!(
            x.denials
                .iter()
                .any(|denial| denial.kind == "fs" && denial.reason.contains(reason)),
            "{call} {args}: {:?}",
            denials(&x)
        );
    }
    assert!(d.path("outside/private.txt").exists() && d.path("ro/secret.txt").exists());
    assert!(!d.path("made").exists() && !d.path("ro/made").exists());
    assert!(!d.path("rw/absolute").exists() && !d.path("ro/link").exists());
    // Inside a read-write mount all work, and nothing is denied.
    for (call, args) in [
        ("make-dir", json!({"path": "/rw/made"})),
        ("touch", json!({"path": "/rw/mine.txt"})),
        (
            "sym-link",
            json!({"target": "mine.txt", "link": "/rw/link"}),
        ),
        ("remove-file", json!({"path": "/rw/mine.txt"})),
    ] {
        let x = r.call(call, args);
        assert_eq!(x.outcome, Outcome::Ok, "{call}: {:?}", x.error);
        assert!(x.denials.is_empty(), "{call}: {:?}", denials(&x));
    }
    r.still_serves();
}

#[test]
fn a_rename_out_of_a_read_write_mount_is_refused() {
    let d = Dirs::new();
    let r = rig(&d.policy());
    for destination in ["/rw/../mine.txt", "/ro/mine.txt"] {
        let x = r.call(
            "rename",
            json!({"source": "/rw/mine.txt", "destination": destination}),
        );
        expect(&x, Outcome::ToolError, "Operation not permitted");
        assert!(
            x.denials[0]
                .reason
                .contains("a rename that leaves its mount"),
            "{:?}",
            denials(&x)
        );
    }
    assert!(d.path("rw/mine.txt").exists());
    assert!(!d.path("mine.txt").exists() && !d.path("ro/mine.txt").exists());
    r.still_serves();
}

#[test]
fn writing_to_a_read_only_mount_is_refused() {
    let d = Dirs::new();
    let r = rig(&d.policy());
    for path in ["/ro/secret.txt", "/ro/new.txt"] {
        let x = r.call("write-file", json!({"path": path, "text": "changed"}));
        expect(&x, Outcome::ToolError, "Operation not permitted");
        denied(
            &x,
            path.trim_start_matches("/ro/"),
            "the mount is read-only",
        );
    }
    assert_eq!(
        std::fs::read_to_string(d.path("ro/secret.txt")).expect("read"),
        "read-only text"
    );
    assert!(!d.path("ro/new.txt").exists());
    let x = r.call("write-file", json!({"path": "/rw/new.txt", "text": "fine"}));
    assert_eq!(x.outcome, Outcome::Ok, "{:?}", x.error);
    r.still_serves();
}

/// `fs.grep` skips a symbolic link out of its mount, says so, and goes on.
#[test]
fn grep_skips_a_link_it_may_not_follow_and_says_so() {
    let d = Dirs::new();
    std::fs::write(d.path("ro/zz-notes.txt"), "a needle here\n").expect("write");
    std::fs::write(d.path("outside/private.txt"), "a needle outside\n").expect("write");
    let policies = common::policies(&[(
        "fs",
        &format!(
            "[[fs]]\nhost = {:?}\nguest = \"/ro\"\n",
            d.path("ro").display().to_string()
        ),
    )]);
    let f = common::open(&common::example_tools(), policies.path());
    let x = common::call(&f, "fs.grep", json!({"pattern": "needle", "path": "/ro"}));
    assert_eq!(x.outcome, Outcome::Ok, "{:?}", x.error);
    let hits = x.output.as_array().expect("hits");
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert_eq!(hits[0]["path"], "/ro/escape");
    assert_eq!(hits[0]["line"], 0);
    assert!(
        hits[0]["text"]
            .as_str()
            .unwrap_or_default()
            .starts_with("skipped: /ro/escape: Operation not permitted"),
        "{hits:?}"
    );
    assert_eq!(hits[1]["path"], "/ro/zz-notes.txt");
    assert_eq!(hits[1]["text"], "a needle here");
}

// ---- network ----

#[test]
fn a_loopback_listener_by_ip_is_refused() {
    let port = http_server();
    // A catch-all names no private range.
    let r = rig(&format!("{QUICK}[net]\nallow = [\"0.0.0.0/0:*\"]\n"));
    let target = format!("127.0.0.1:{port}");
    let x = r.call("fetch", json!({"url": format!("http://{target}/")}));
    expect(&x, Outcome::ToolError, "HttpRequestDenied");
    denied(&x, &target, "in a private range: loopback 127.0.0.0/8");
    denied(
        &x,
        &target,
        &format!("allow = [\"127.0.0.1/32:{port}\"] or allow_private = true"),
    );
    let x = r.call(
        "connect",
        json!({"addr": target, "send": "GET / HTTP/1.0\r\n\r\n"}),
    );
    expect(&x, Outcome::ToolError, "access-denied");
    denied(
        &x,
        &target,
        "TCP connection: 127.0.0.1 in a private range: loopback",
    );
    r.still_serves();

    // Named explicitly, the same listener is reachable (the refusal above is
    // the rule's doing, not a dead server's).
    let r = rig(&format!(
        "{QUICK}[net]\nallow = [\"127.0.0.1/32:{port}\"]\n"
    ));
    let x = r.call("fetch", json!({"url": format!("http://{target}/")}));
    assert_eq!(x.output, json!("200 ok"), "{:?} {:?}", x.error, denials(&x));
    let x = r.call(
        "connect",
        json!({"addr": target, "send": "GET / HTTP/1.0\r\n\r\n"}),
    );
    assert!(
        x.output
            .as_str()
            .unwrap_or_default()
            .starts_with("HTTP/1.1 200 OK"),
        "{:?}",
        x
    );
}

/// DNS rebinding, with the resolver every test controls: a rule naming
/// `localhost` lets the name through, but the address it resolves to is
/// loopback, checked at connect time, and refused.
#[test]
fn localhost_under_a_rule_naming_it_is_refused_as_loopback() {
    let port = http_server();
    let r = rig(&format!("{QUICK}[net]\nallow = [\"localhost:{port}\"]\n"));
    let x = r.call("fetch", json!({"url": format!("http://localhost:{port}/")}));
    expect(&x, Outcome::ToolError, "HttpRequestDenied");
    denied(
        &x,
        &format!("localhost:{port} (127.0.0.1:{port})"),
        "localhost resolves to 127.0.0.1 in a private range: loopback 127.0.0.0/8",
    );
    // Over sockets the lookup itself finds nothing it may hand out.
    let x = r.call(
        "connect",
        json!({"addr": format!("localhost:{port}"), "send": "x"}),
    );
    expect(&x, Outcome::ToolError, "looking up localhost: ErrorCode");
    denied(&x, "localhost (127.0.0.1)", "in a private range: loopback");
    r.still_serves();

    let r = rig(&format!(
        "{QUICK}[net]\nallow = [\"localhost:{port}\"]\nallow_private = true\n"
    ));
    let x = r.call("fetch", json!({"url": format!("http://localhost:{port}/")}));
    assert_eq!(x.output, json!("200 ok"), "{:?} {:?}", x.error, denials(&x));
    let x = r.call(
        "connect",
        json!({"addr": format!("localhost:{port}"), "send": "GET / HTTP/1.0\r\n\r\n"}),
    );
    assert!(
        x.output
            .as_str()
            .unwrap_or_default()
            .starts_with("HTTP/1.1 200 OK"),
        "{:?}",
        x
    );
}

#[test]
fn the_metadata_address_is_refused() {
    let r = rig(&format!(
        "{QUICK}[net]\nallow = [\"0.0.0.0/0:*\", \"[::]/0:*\"]\n"
    ));
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
    ] {
        let x = r.call("fetch", json!({"url": url}));
        expect(&x, Outcome::ToolError, "HttpRequestDenied");
        assert!(
            x.denials[0]
                .reason
                .contains("cloud metadata (link-local) 169.254.169.254/32"),
            "{:?}",
            denials(&x)
        );
    }
    let x = r.call(
        "connect",
        json!({"addr": "169.254.169.254:80", "send": "x"}),
    );
    denied(&x, "169.254.169.254:80", "cloud metadata");
    r.still_serves();
}

#[test]
fn an_ipv4_mapped_loopback_address_is_refused() {
    let port = http_server();
    let r = rig(&format!(
        "{QUICK}[net]\nallow = [\"[::]/0:*\", \"0.0.0.0/0:*\"]\n"
    ));
    let x = r.call(
        "fetch",
        json!({"url": format!("http://[::ffff:127.0.0.1]:{port}/")}),
    );
    expect(&x, Outcome::ToolError, "HttpRequestDenied");
    denied(
        &x,
        &format!("[::ffff:127.0.0.1]:{port}"),
        "loopback 127.0.0.0/8, written as IPv4-mapped IPv6",
    );
    let x = r.call(
        "connect",
        json!({"addr": format!("[::ffff:127.0.0.1]:{port}"), "send": "x"}),
    );
    // wasi:sockets itself refuses IPv4-mapped addresses on an IPv6 socket
    // before any address check: nothing to list, nothing dialled.
    expect(&x, Outcome::ToolError, "invalid-argument");
    r.still_serves();
}

#[test]
fn a_host_not_on_the_list_is_refused() {
    let r = rig(&format!("{QUICK}[net]\nallow = [\"example.com:443\"]\n"));
    let x = r.call("fetch", json!({"url": "http://example.net/"}));
    expect(&x, Outcome::ToolError, "HttpRequestDenied");
    denied(
        &x,
        "example.net:80",
        "allow it with [net] allow = [\"example.net:80\"]",
    );
    let x = r.call("fetch", json!({"url": "http://example.com/"}));
    denied(
        &x,
        "example.com:80",
        "allow it with [net] allow = [\"example.com:80\"]",
    );
    let x = r.call("connect", json!({"addr": "example.net:443", "send": "x"}));
    denied(&x, "example.net", "name lookup refused");
    r.still_serves();
}

#[test]
fn udp_bind_and_listen_are_refused_unless_a_rule_asks() {
    let r = rig(QUICK);
    let x = r.call("send-udp", json!({"addr": "127.0.0.1:9"}));
    expect(&x, Outcome::ToolError, "access-denied");
    denied(
        &x,
        "127.0.0.1:9",
        "UDP datagram: 127.0.0.1 in a private range",
    );
    let x = r.call("listen", json!({"addr": "127.0.0.1:0"}));
    expect(&x, Outcome::ToolError, "access-denied");
    denied(
        &x,
        "127.0.0.1:0",
        "inbound sockets need a [net] listen rule",
    );
    r.still_serves();

    let r = rig(&format!("{QUICK}[net]\nlisten = [\"127.0.0.1:0\"]\n"));
    let x = r.call("listen", json!({"addr": "127.0.0.1:0"}));
    assert_eq!(x.outcome, Outcome::Ok, "{:?} {:?}", x.error, denials(&x));
    assert!(
        x.output
            .as_str()
            .unwrap_or_default()
            .starts_with("127.0.0.1:"),
        "{:?}",
        x.output
    );
}

// ---- environment ----

#[test]
fn env_vars_not_granted_are_absent() {
    std::env::set_var("FABRIC_TEST_NOT_GRANTED", "secret");
    let r = rig(&format!(
        "{QUICK}[env]\nvars = {{ LOG_LEVEL = \"info\" }}\n"
    ));
    let x = r.call("env-names", json!({}));
    assert_eq!(x.output, json!(["LOG_LEVEL"]));
    for name in ["FABRIC_TEST_NOT_GRANTED", "HOME", "PATH"] {
        let x = r.call("env", json!({"name": name}));
        assert_eq!(x.outcome, Outcome::Ok, "{:?}", x.error);
        assert_eq!(x.output, Value::Null, "{name}");
    }
    r.still_serves();
}

// ---- components ----

/// 128 MiB of initial memory (more than a 64 MiB limit), a data segment at 100 MiB.
const HUGE_DATA_SEGMENT: &str = r#"(component
    (core module $m
      (memory (export "memory") 2048)
      (data (i32.const 104857600) "far away")
      (func (export "f") (result i32) i32.const 7))
    (core instance $i (instantiate $m))
    (func (export "f") (result u32) (canon lift (core func $i "f"))))"#;

/// Grows its table by 10 000 elements until a growth fails; returns its size.
const GROWING_TABLE: &str = r#"(component
    (core module $m
      (table $t 1 funcref)
      (func (export "f") (result i32)
        (block $done
          (loop $grow
            (br_if $done (i32.eq (table.grow $t (ref.null func) (i32.const 10000)) (i32.const -1)))
            (br $grow)))
        (table.size $t)))
    (core instance $i (instantiate $m))
    (func (export "f") (result u32) (canon lift (core func $i "f"))))"#;

/// One call of `blob.f` in a Fabric of [`blob`].
fn call_blob(wat: &str, policy: &str) -> CallResult {
    let (f, _t, _p) = blob(wat, policy);
    common::call(&f, "blob.f", json!({}))
}

/// A Fabric whose tools directory holds only `blob.wasm`, built from `wat`.
fn blob(wat: &str, policy: &str) -> (common::TestFabric, tempfile::TempDir, tempfile::TempDir) {
    let tools = tempfile::tempdir().expect("temp dir");
    let bytes = wat::parse_str(wat).expect("component text");
    std::fs::write(tools.path().join("blob.wasm"), bytes).expect("write component");
    let policies = common::policies(&[("blob", policy)]);
    let f = common::open(tools.path(), policies.path());
    (f, tools, policies)
}

#[test]
fn a_component_with_a_huge_data_segment_is_refused() {
    let x = call_blob(HUGE_DATA_SEGMENT, "[limits]\nmemory = \"64 MiB\"\n");
    assert_eq!(x.outcome, Outcome::MemoryExceeded, "{:?}", x.error);
    // Within its limit the same shape runs.
    let x = call_blob(
        r#"(component
            (core module $m
              (memory (export "memory") 16)
              (data (i32.const 65536) "near")
              (func (export "f") (result i32) i32.const 7))
            (core instance $i (instantiate $m))
            (func (export "f") (result u32) (canon lift (core func $i "f"))))"#,
        "[limits]\nmemory = \"64 MiB\"\n",
    );
    assert_eq!(x.output, json!(7), "{:?}", x.error);
}

#[test]
fn a_guest_growing_its_table_for_ever_is_stopped_at_the_limit() {
    let (f, _t, _p) = blob(GROWING_TABLE, "");
    let x = common::call(&f, "blob.f", json!({}));
    assert_eq!(x.outcome, Outcome::Ok, "{:?}", x.error);
    assert_eq!(
        x.output,
        json!(90_001),
        "growth stops below 100,000 elements"
    );
    let x = common::call(&f, "blob.f", json!({}));
    assert_eq!(x.output, json!(90_001), "a fresh table in the next call");
}

/// The memory limit is on all of a call's linear memories together (two
/// modules' memories of 20 MiB each exceed 32 MiB), and a component may not
/// have more memories or core instances than a pool slot holds.
#[test]
fn the_memory_limit_covers_all_of_a_calls_memories() {
    let x = call_blob(&memories(2, 320), "[limits]\nmemory = \"32 MiB\"\n");
    expect(
        &x,
        Outcome::MemoryExceeded,
        "the tool needed 41943040 bytes of memory; its limit is 33554432 bytes",
    );
    let x = call_blob(&memories(2, 160), "[limits]\nmemory = \"32 MiB\"\n");
    assert_eq!(x.output, json!(7), "{:?}", x.error);
    // A memory's own declared maximum refuses growth past it without
    // counting against the call: 600 refused growths of a 1-2 page memory,
    // then another memory still grows by 1 MiB under the 32 MiB limit.
    let x = call_blob(GROW_PAST_MAXIMUM, "[limits]\nmemory = \"32 MiB\"\n");
    assert_eq!(x.output, json!(1), "{:?}", x.error);
    // More memories than a pool slot holds: refused when it loads.
    let x = call_blob(&memories(5, 1), "");
    expect(
        &x,
        Outcome::UnknownTool,
        "contains 5 Wasm linear memories, which exceeds the configured maximum of 4",
    );
    // And more core instances than a component may have.
    let x = call_blob(&modules(33, ""), "");
    expect(
        &x,
        Outcome::UnknownTool,
        "contains 33 core module instances, which exceeds the configured maximum of 32",
    );
    let x = call_blob(&modules(32, ""), "");
    assert_eq!(x.output, json!(7), "{:?}", x.error);
}

/// Module `a` has a memory of 1 to 2 pages and tries to grow it 600 times;
/// module `b` calls that, then grows its own memory by 16 pages (its old
/// size, 1, or -1 when refused).
const GROW_PAST_MAXIMUM: &str = r#"(component
    (core module $a
      (memory 1 2)
      (func (export "spin") (local i32)
        (loop $again
          (drop (memory.grow (i32.const 1)))
          (local.set 0 (i32.add (local.get 0) (i32.const 1)))
          (br_if $again (i32.lt_u (local.get 0) (i32.const 600))))))
    (core instance $ia (instantiate $a))
    (core module $b
      (import "a" "spin" (func $spin))
      (memory 1)
      (func (export "f") (result i32) (call $spin) (memory.grow (i32.const 16))))
    (core instance $ib (instantiate $b (with "a" (instance $ia))))
    (func (export "f") (result u32) (canon lift (core func $ib "f"))))"#;

/// A component of `n` core modules, each with a memory of `pages` pages.
fn memories(n: usize, pages: u32) -> String {
    modules(n, &format!("(memory (export \"memory\") {pages})"))
}

/// A component of `n` core modules, each holding `item` and a function `f`
/// returning 7, which the component exports from the first.
fn modules(n: usize, item: &str) -> String {
    let modules: String = (0..n)
        .map(|i| {
            format!(
                "(core module $m{i} {item} (func (export \"f\") (result i32) i32.const 7)) \
                 (core instance $i{i} (instantiate $m{i}))"
            )
        })
        .collect();
    format!("(component {modules} (func (export \"f\") (result u32) (canon lift (core func $i0 \"f\"))))")
}

/// Every refusal is in the audit record too.
#[test]
fn denials_are_recorded_in_the_audit_log() {
    let d = Dirs::new();
    let r = rig(&format!(
        "{}[net]\nallow = [\"example.com:443\"]\n",
        d.policy()
    ));
    r.call("fetch", json!({"url": "http://169.254.169.254/"}));
    r.call("read-file", json!({"path": "/ro/escape"}));
    let Rig { f, _policies } = r;
    let log = common::records(f);
    assert_eq!(log[0]["denials"][0]["kind"], "net");
    assert_eq!(log[0]["denials"][0]["target"], "169.254.169.254:80");
    assert!(log[0]["denials"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .contains("cloud metadata"));
    assert_eq!(log[1]["denials"][0]["kind"], "fs");
    assert_eq!(log[1]["denials"][0]["target"], "escape");
}

/// A component asking for more of the instance pool than a slot holds (ten
/// core instances, each with its own memory, where a slot has room for
/// four memories) is refused when it is compiled, naming the pool's limit.
/// And a component that fails while being instantiated, called far more
/// times than the pool has slots, gives each slot back: a leak would end
/// the calls after it (and the tool beside it) with pool exhaustion.
#[test]
fn pool_slots_are_never_exhausted_by_components_that_cannot_instantiate() {
    let instances: String = (0..10)
        .map(|i| format!("(core instance $i{i} (instantiate $m))\n"))
        .collect();
    let greedy = format!(
        r#"(component
            (core module $m
              (memory (export "memory") 1)
              (func (export "f") (result i32) i32.const 7))
            {instances}
            (func (export "f") (result u32) (canon lift (core func $i9 "f"))))"#
    );
    // A data segment past the end of its one page: instantiation traps.
    let failing = r#"(component
        (core module $m
          (memory (export "memory") 1)
          (data (i32.const 70000) "past the end")
          (func (export "f") (result i32) i32.const 7))
        (core instance $i (instantiate $m))
        (func (export "f") (result u32) (canon lift (core func $i "f"))))"#;
    let tools = tempfile::tempdir().expect("temp dir");
    for (name, wat) in [("greedy", greedy.as_str()), ("failing", failing)] {
        std::fs::write(
            tools.path().join(format!("{name}.wasm")),
            wat::parse_str(wat).expect("component text"),
        )
        .expect("write component");
    }
    std::fs::copy(
        common::example_tools().join("text.wasm"),
        tools.path().join("text.wasm"),
    )
    .expect("copy text.wasm");
    let no_breaker = "[breaker]\nfailures = 0\n";
    let policies = common::policies(&[("greedy", ""), ("failing", no_breaker), ("text", "")]);
    let f = common::open(tools.path(), policies.path());
    // Compiled on its first call, and refused then, naming the limit.
    let x = common::call(&f, "greedy.f", json!({}));
    assert_ne!(x.outcome, Outcome::Ok, "{x:?}");
    assert!(
        message(&x).contains("exceeds the configured maximum of 4"),
        "{}",
        message(&x)
    );
    // The default pool has 128 slots.
    for i in 0..300 {
        let x = common::call(&f, "failing.f", json!({}));
        assert_eq!(x.outcome, Outcome::Trap, "call {i}: {}", message(&x));
        assert!(!message(&x).contains("pool"), "call {i}: {}", message(&x));
    }
    let x = common::call(&f, "text.echo", json!({"text": "still here"}));
    assert_eq!(x.output, json!("still here"), "{:?}", x.error);
}
