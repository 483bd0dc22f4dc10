//! Soak: 10,000 hostile calls in a row, cycling through the containment
//! suite's attacks, two at a time. The host's resident memory after them is
//! within 10 % of its value after the first 100 calls, and no file
//! descriptor leaks.
//!
//! Slow (about two minutes on two cores), so ignored by default:
//! `cargo test --release --test soak -- --ignored --nocapture`.
//! `FABRIC_SOAK_CALLS` changes the number of calls; `FABRIC_SOAK_AUDIT=1`
//! writes every call to an audit log too, whose store (sled) first fills its
//! page cache up to its cap: the 10 % bound is then taken from half-way.

mod common;

use std::sync::Arc;
use std::time::Instant;

use fabric_host::{Call, Caller, Outcome};
use serde_json::{json, Value};

/// Resident set size of this process, bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// Open file descriptors of this process.
fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// The attacks, each with the outcome it must end in.
fn attacks(silent_port: u16) -> Vec<(&'static str, Value, Outcome)> {
    vec![
        ("spin", json!({}), Outcome::FuelExhausted),
        ("sleep", json!({"ms": 60_000}), Outcome::Timeout),
        ("hog", json!({}), Outcome::MemoryExceeded),
        ("recurse", json!({"depth": 100_000_000u64}), Outcome::Trap),
        ("exhaust-resources", json!({}), Outcome::Trap),
        ("flood", json!({"n": 2_000_000}), Outcome::OutputRejected),
        ("spew", json!({"n": 1_000_000}), Outcome::Ok),
        (
            "read-file",
            json!({"path": "/m/escape"}),
            Outcome::ToolError,
        ),
        (
            "read-file",
            json!({"path": "/m/../../etc/passwd"}),
            Outcome::ToolError,
        ),
        (
            "write-file",
            json!({"path": "/m/new.txt", "text": "x"}),
            Outcome::ToolError,
        ),
        (
            "fetch",
            json!({"url": "http://169.254.169.254/"}),
            Outcome::ToolError,
        ),
        (
            "fetch",
            json!({"url": "http://localhost:1/"}),
            Outcome::ToolError,
        ),
        (
            "connect",
            json!({"addr": "127.0.0.1:1", "send": "x"}),
            Outcome::ToolError,
        ),
        (
            "read-socket",
            json!({"addr": format!("127.0.0.1:{silent_port}")}),
            Outcome::Timeout,
        ),
        (
            "send-udp",
            json!({"addr": "10.0.0.1:53"}),
            Outcome::ToolError,
        ),
        (
            "listen",
            json!({"addr": "0.0.0.0:8080"}),
            Outcome::ToolError,
        ),
        ("env", json!({"name": "HOME"}), Outcome::Ok),
    ]
}

#[test]
#[ignore = "slow: run with --ignored (about two minutes)"]
fn ten_thousand_hostile_calls_leak_neither_memory_nor_descriptors() {
    let calls: usize = std::env::var("FABRIC_SOAK_CALLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_port = listener.local_addr().expect("addr").port();
    // Accepts and holds each connection until the next two arrive (by then
    // its call has timed out: calls run two at a time), so that the test's
    // own side holds a constant number of descriptors.
    std::thread::spawn(move || {
        let mut held = std::collections::VecDeque::new();
        for stream in listener.incoming() {
            held.push_back(stream);
            if held.len() > 2 {
                held.pop_front();
            }
        }
    });
    let mount = tempfile::tempdir().expect("temp dir");
    std::os::unix::fs::symlink("/etc/passwd", mount.path().join("escape")).expect("symlink");
    let policies = common::policies(&[(
        "hostile",
        &format!(
            "[limits]\nfuel = 100_000_000\nmemory = \"16 MiB\"\ntimeout = \"200ms\"\n\
             [[fs]]\nhost = {:?}\nguest = \"/m\"\n\
             [net]\nallow = [\"127.0.0.1/32:{silent_port}\", \"localhost:*\"]\n\
             [breaker]\nfailures = 0\n",
            mount.path().display().to_string()
        ),
    )]);
    let f = Arc::new(common::open(&common::test_tools(), policies.path()));
    // Without the audit log by default: sled, its store, keeps resident
    // memory growing with the log (about 3.4 MiB per 1 000 records here),
    // which is the audit log's to bound, not containment's.
    // FABRIC_SOAK_AUDIT=1 soaks through it too.
    let no_audit = std::env::var("FABRIC_SOAK_AUDIT").is_err();
    let bare = no_audit.then(|| {
        Arc::new(
            fabric_host::Fabric::open(&fabric_host::Options::new(
                common::test_tools(),
                policies.path(),
            ))
            .expect("fabric opens"),
        )
    });
    let attacks = Arc::new(attacks(silent_port));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    let run = |from: usize, to: usize| {
        runtime.block_on(async {
            let mut tasks = Vec::new();
            for lane in 0..2 {
                let f = f.clone();
                let bare = bare.clone();
                let attacks = attacks.clone();
                tasks.push(tokio::spawn(async move {
                    for i in (from + lane..to).step_by(2) {
                        let (tool, args, want) = &attacks[i % attacks.len()];
                        let call =
                            Call::new(Caller::Local, format!("hostile.{tool}"), args.clone());
                        let r = match &bare {
                            Some(b) => b.call(call).await,
                            None => f.call(call).await,
                        }
                        .expect("audited");
                        // On a loaded machine a CPU-bound attack may reach
                        // its 200 ms deadline before its own limit; the
                        // containment tests assert exact outcomes, this one
                        // what is left behind.
                        assert!(
                            r.outcome == *want || r.outcome == Outcome::Timeout,
                            "call {i}: {tool} {args}: {:?} {:?}",
                            r.outcome,
                            r.error
                        );
                    }
                }));
            }
            for t in tasks {
                t.await.expect("lane");
            }
        })
    };

    let started = Instant::now();
    run(0, 100);
    let (rss_100, fds_100) = (rss(), fds());
    let mut done = 100;
    // With the audit log, sled's page cache fills up to its cap first (16
    // MiB): the bound is then on the second half, once it has.
    let mut rss_half = rss_100;
    while done < calls {
        let next = (done + 1000).min(calls);
        run(done, next);
        if done < calls / 2 && next >= calls / 2 {
            rss_half = rss();
        }
        done = next;
        eprintln!(
            "soak: after {done} calls: RSS {:.1} MiB, {} fds",
            rss() as f64 / 1048576.0,
            fds()
        );
    }
    let (rss_end, fds_end) = (rss(), fds());
    let took = started.elapsed();
    eprintln!(
        "soak: {calls} calls in {took:?} ({:.0} calls/s); RSS after 100: {:.1} MiB, after {calls}: {:.1} MiB ({:+.1} %); fds after 100: {fds_100}, after {calls}: {fds_end}",
        calls as f64 / took.as_secs_f64(),
        rss_100 as f64 / 1048576.0,
        rss_end as f64 / 1048576.0,
        (rss_end as f64 / rss_100 as f64 - 1.0) * 100.0
    );
    let base = if no_audit { rss_100 } else { rss_half };
    assert!(
        rss_end as f64 <= base as f64 * 1.10,
        "RSS grew from {base} to {rss_end} bytes"
    );
    assert!(fds_end <= fds_100, "fds grew from {fds_100} to {fds_end}");
    // A normal call still works.
    let r = common::call(&f, "hostile.flood", json!({"n": 3}));
    assert_eq!(r.output, json!("xxx"));
}
