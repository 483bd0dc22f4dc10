//! Cost control and graceful degradation, end to end against the real
//! `fabric serve`: budgets of every kind (per caller and per session, exact
//! under 64 parallel calls, kept across a restart), the bounded queue and the
//! per-caller cap, circuit breakers, slow clients, SIGTERM with calls in
//! flight, and SIGKILL under load.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::server::*;
use serde_json::{json, Value};

const ECHO: &str = r#"{"arguments":{"text":"hello"}}"#;

/// A policies directory: the repo's `text.toml`, plus `types.toml` with
/// `text`.
fn policies_with_types(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = common::repo().join("policies/text.toml");
    std::fs::copy(repo, dir.path().join("text.toml")).expect("copy");
    std::fs::write(dir.path().join("types.toml"), text).expect("write policy");
    dir
}

/// A host configuration file in `env`'s data directory.
fn host_config(env: &Env, text: &str) -> PathBuf {
    let path = env.data.path().join("host.toml");
    std::fs::write(&path, text).expect("write host config");
    path
}

fn session_invoke(server: &Server, token: &str, session: &str, body: &str) -> Reply {
    curl(
        &format!("{}/v1/tools/text.echo/invoke", server.url),
        &[
            "-H",
            &bearer(token),
            "-H",
            "Content-Type: application/json",
            "-H",
            &format!("Fabric-Session: {session}"),
            "--data-binary",
            body,
        ],
    )
}

/// Asserts a 429 `budget_exceeded` naming `budget`; returns the error.
fn assert_budget(reply: &Reply, budget: &str) -> Value {
    assert_eq!(reply.status, 429, "{reply:?}");
    let result = reply.json();
    assert_eq!(result["outcome"], "budget_exceeded", "{result}");
    let error = result["error"].clone();
    assert_eq!(error["detail"]["budget"], budget, "{error}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("its {budget} budget: limit")),
        "{message}"
    );
    error
}

#[test]
fn every_budget_kind_is_enforced_per_caller_and_per_session_and_survives_a_restart() {
    let env = Env::new();
    let steps = env.add_caller_with("steps", &["text.*"], &["--budget", "calls=3"]);
    let minute = env.add_caller_with("minute", &["text.*"], &["--budget", "per_minute=2"]);
    let fuel = env.add_caller_with("fuel", &["text.*"], &["--budget", "fuel=1"]);
    let wall = env.add_caller_with("wall", &["text.*"], &["--budget", "wall=1ms"]);
    let output = env.add_caller_with("output", &["text.*"], &["--budget", "output=14"]);
    let sessions = env.add_caller_with("sessions", &["text.*"], &["--session-budget", "calls=2"]);
    let server = env.serve(&[]);

    // calls: three run, the fourth is refused; the budget never resets by
    // itself, so Retry-After says to back off for an hour.
    for _ in 0..3 {
        assert_eq!(invoke(&server, &steps, "text.echo", ECHO).status, 200);
    }
    let refused = invoke(&server, &steps, "text.echo", ECHO);
    let error = assert_budget(&refused, "calls");
    assert_eq!(error["detail"]["limit"], 3);
    assert_eq!(error["detail"]["used"], 3);
    assert_eq!(error["detail"]["resets_in_s"], Value::Null);
    assert!(error["message"]
        .as_str()
        .unwrap_or_default()
        .contains("never resets"));
    assert_eq!(refused.header("retry-after").as_deref(), Some("3600"));
    assert_eq!(error["detail"]["retry_after_s"], 3600);
    let id = refused.json()["invocation_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let record = env.record(&id);
    assert_eq!(record["outcome"], "budget_exceeded");
    assert_eq!(record["caller"], "steps");

    // per_minute: the third call this minute waits for the next minute.
    // (Two calls could straddle a minute boundary: then the limit is met later.)
    let mut refused = None;
    for _ in 0..5 {
        let reply = invoke(&server, &minute, "text.echo", ECHO);
        if reply.status == 429 {
            refused = Some(reply);
            break;
        }
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    let refused = refused.expect("the per-minute budget refused a call");
    assert_budget(&refused, "per_minute");
    let retry: u64 = refused
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After on a budget that resets");
    assert!((1..=60).contains(&retry), "{retry}");

    // fuel: the first call is capped to the 1 unit left and runs out, saying
    // why; then there is none left.
    let capped = invoke(&server, &fuel, "text.echo", ECHO);
    assert_eq!(capped.status, 200, "{capped:?}");
    assert_eq!(capped.json()["outcome"], "fuel_exhausted");
    assert!(capped.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("caller's fuel budget"));
    assert_budget(&invoke(&server, &fuel, "text.echo", ECHO), "fuel");

    // wall: each call spends guest time until the millisecond is gone.
    let mut calls = 0;
    let refused = loop {
        let reply = invoke(&server, &wall, "text.echo", ECHO);
        if reply.status != 200 {
            break reply;
        }
        calls += 1;
        assert!(calls < 1000, "a 1 ms wall budget never ran out");
    };
    assert_budget(&refused, "wall");

    // output: "hello" is 7 bytes of JSON; two fit in 14, the third is refused.
    for _ in 0..2 {
        let reply = invoke(&server, &output, "text.echo", ECHO);
        assert_eq!(reply.json()["outcome"], "ok", "{reply:?}");
    }
    assert_budget(&invoke(&server, &output, "text.echo", ECHO), "output");

    // Per session: two calls in session a, then a is spent; b and no session
    // still run.
    for _ in 0..2 {
        assert_eq!(session_invoke(&server, &sessions, "a", ECHO).status, 200);
    }
    let error = assert_budget(&session_invoke(&server, &sessions, "a", ECHO), "calls");
    assert_eq!(error["detail"]["scope"], "session");
    assert!(error["message"]
        .as_str()
        .unwrap_or_default()
        .contains(r#"session "a" of caller "sessions""#));
    assert_eq!(session_invoke(&server, &sessions, "b", ECHO).status, 200);
    assert_eq!(invoke(&server, &sessions, "text.echo", ECHO).status, 200);

    // Restart: what was spent is still spent.
    assert!(server.stop().success());
    let show = env
        .fabric()
        .args(["caller", "show", "steps"])
        .output()
        .expect("caller show");
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(show.status.success(), "{}", stderr(&show));
    assert!(shown.contains("budget.calls: 3"), "{shown}");
    assert!(shown.contains("spent.calls: 3"), "{shown}");
    let server = env.serve(&[]);
    assert_budget(&invoke(&server, &steps, "text.echo", ECHO), "calls");
    assert_budget(&session_invoke(&server, &sessions, "a", ECHO), "calls");
    assert!(server.stop().success());

    // Reset: one session, then the caller.
    let reset = env
        .fabric()
        .args(["caller", "reset", "sessions", "--session", "a"])
        .output()
        .expect("caller reset");
    assert!(reset.status.success(), "{}", stderr(&reset));
    let reset = env
        .fabric()
        .args(["caller", "reset", "steps"])
        .output()
        .expect("caller reset");
    assert!(reset.status.success(), "{}", stderr(&reset));
    let server = env.serve(&[]);
    assert_eq!(invoke(&server, &steps, "text.echo", ECHO).status, 200);
    assert_eq!(session_invoke(&server, &sessions, "a", ECHO).status, 200);
    // A reset of a session of an unknown caller names the mistake.
    let bad = env
        .fabric()
        .args(["caller", "reset", "nobody"])
        .output()
        .expect("caller reset");
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("no caller named"), "{}", stderr(&bad));
    drop(server);
}

#[test]
fn sixty_four_parallel_calls_against_a_budget_of_ten_run_exactly_ten() {
    let env = Env::new();
    let token = env.add_caller_with("ten", &["text.*"], &["--budget", "calls=10"]);
    let server = env.serve(&[]);
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..64)
            .map(|_| s.spawn(|| invoke(&server, &token, "text.echo", ECHO).status))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((ok, refused), (10, 54), "{statuses:?}");
    let ran = env
        .audit()
        .into_iter()
        .filter(|r| r["caller"] == "ten" && r["outcome"] == "ok")
        .count();
    assert_eq!(ran, 10);
}

/// Starts a `types.TOOL` call of `n` in a thread; returns its reply later.
fn in_background(
    server: &Server,
    token: &str,
    tool: &str,
    n: u64,
) -> std::thread::JoinHandle<Reply> {
    let url = format!("{}/v1/tools/types.{tool}/invoke", server.url);
    let token = token.to_string();
    std::thread::spawn(move || {
        curl(
            &url,
            &[
                "-H",
                &bearer(&token),
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                &json!({"arguments": {"n": n}}).to_string(),
            ],
        )
    })
}

/// Waits until `/readyz` reports `n` calls running.
fn wait_in_flight(server: &Server, n: u64) {
    eventually(Duration::from_secs(20), Duration::from_millis(10), || {
        let ready = curl(&format!("{}/readyz", server.url), &[]).json();
        let running = ready["load"]["in_flight"].as_u64().unwrap_or(0);
        if running == n {
            Ok(())
        } else {
            Err(format!(
                "{running} calls in flight, waiting for {n}: {ready}"
            ))
        }
    })
}

/// `types.spin` never returns: under the long policy it takes its 8 s.
const LONG_SPIN: u64 = 1;
/// Rounds of `types.work` that take a fraction of a second.
const WORK: u64 = 1 << 28;
const LONG_POLICY: &str = "[limits]\nfuel = 100_000_000_000\ntimeout = \"8s\"\n";

#[test]
fn a_full_queue_is_503_with_retry_after_health_answers_and_caps_are_per_caller() {
    let mut env = Env::new();
    let policies = policies_with_types(LONG_POLICY);
    env.policies = policies.path().to_path_buf();
    let config = host_config(&env, "max_in_flight = 2\nqueue = 0\n");
    let greedy = env.add_caller_with("greedy", &["types.*", "text.*"], &["--max-in-flight", "1"]);
    let other = env.add_caller("other", &["types.*", "text.*"]);
    let server = env.serve(&["--host-config", config.to_str().expect("utf-8")]);

    // The greedy caller at its cap of one: its next call is refused, the
    // other caller's is not.
    let first = in_background(&server, &greedy, "spin", LONG_SPIN);
    wait_in_flight(&server, 1);
    let capped = invoke(&server, &greedy, "text.echo", ECHO);
    assert_eq!(capped.status, 503, "{capped:?}");
    assert_eq!(capped.json()["outcome"], "overloaded");
    assert!(capped.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("max_in_flight"));
    assert!(capped.header("retry-after").is_some());
    assert_eq!(invoke(&server, &other, "text.echo", ECHO).status, 200);

    // Both slots busy and no queue: the next call is 503 with Retry-After,
    // while health and readiness still answer at once.
    let second = in_background(&server, &other, "spin", LONG_SPIN);
    wait_in_flight(&server, 2);
    let full = invoke(&server, &other, "text.echo", ECHO);
    assert_eq!(full.status, 503, "{full:?}");
    assert_eq!(full.json()["outcome"], "overloaded");
    assert_eq!(full.header("retry-after").as_deref(), Some("1"));
    let started = Instant::now();
    assert_eq!(curl(&format!("{}/healthz", server.url), &[]).status, 200);
    let ready = curl(&format!("{}/readyz", server.url), &[]);
    assert_eq!(ready.status, 200);
    assert!(started.elapsed() < Duration::from_secs(2));
    for handle in [first, second] {
        let reply = handle.join().expect("thread");
        assert_eq!(reply.json()["outcome"], "timeout", "{reply:?}");
    }
    assert_eq!(invoke(&server, &other, "text.echo", ECHO).status, 200);
}

#[test]
fn a_failing_tool_opens_its_circuit_half_opens_and_closes_on_success() {
    let mut env = Env::new();
    let policies = policies_with_types(
        "[limits]\nfuel = 20_000_000\n[breaker]\nfailures = 3\ncooldown = \"5s\"\n",
    );
    env.policies = policies.path().to_path_buf();
    let token = env.add_caller("ops", &["types.*", "text.*"]);
    let server = env.serve(&[]);
    let work = |n: u64| {
        invoke(
            &server,
            &token,
            "types.work",
            &json!({"arguments": {"n": n}}).to_string(),
        )
    };
    for _ in 0..3 {
        let reply = work(1 << 40);
        assert_eq!(reply.json()["outcome"], "fuel_exhausted", "{reply:?}");
    }
    let open = work(1);
    assert_eq!(open.status, 503, "{open:?}");
    let result = open.json();
    assert_eq!(result["outcome"], "circuit_open");
    assert_eq!(result["fuel_used"], 0);
    assert_eq!(
        result["error"]["detail"]["failures"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    assert!(open.header("retry-after").is_some());
    // Other tools are not affected; readiness shows the open circuit.
    assert_eq!(invoke(&server, &token, "text.echo", ECHO).status, 200);
    let ready = curl(&format!("{}/readyz", server.url), &[]).json();
    assert_eq!(ready["circuits"][0]["tool"], "types.work", "{ready}");
    assert_eq!(ready["circuits"][0]["state"], "open");
    let metrics = curl(&format!("{}/metrics", server.url), &[]);
    assert!(
        metrics
            .body
            .contains("fabric_circuit_state{tool=\"types.work\"} 2"),
        "{}",
        metrics.body
    );
    // After the cool-down, one trial call runs and closes it.
    std::thread::sleep(Duration::from_millis(5100));
    let trial = work(1);
    assert_eq!(trial.json()["outcome"], "ok", "{trial:?}");
    let ready = curl(&format!("{}/readyz", server.url), &[]).json();
    assert_eq!(ready["circuits"], json!([]), "{ready}");
    assert_eq!(work(1).json()["outcome"], "ok");
    let refused = env
        .audit()
        .into_iter()
        .filter(|r| r["outcome"] == "circuit_open")
        .count();
    assert_eq!(refused, 1);
}

#[test]
fn slow_and_idle_clients_are_timed_out() {
    let env = Env::new();
    let token = env.add_caller("t", &["text.*"]);
    let server = env.serve(&["--client-timeout", "300ms"]);
    // Half a request head, then nothing: closed.
    let started = Instant::now();
    let answer = raw(
        &server.addr(),
        b"POST /v1/tools/text.echo/invoke HTTP/1.1\r\nHost: x\r\n",
        Duration::from_secs(10),
    );
    assert!(started.elapsed() < Duration::from_secs(5), "{answer:?}");
    // A kept-alive connection left idle after its answer: closed too.
    let mut stream = TcpStream::connect(server.addr()).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let request = format!(
        "POST /v1/tools/text.echo/invoke HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{ECHO}",
        ECHO.len()
    );
    stream.write_all(request.as_bytes()).expect("write");
    let started = Instant::now();
    let mut seen = Vec::new();
    let _ = stream.read_to_end(&mut seen);
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.starts_with("HTTP/1.1 200"), "{seen}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "an idle keep-alive connection stayed open {:?}",
        started.elapsed()
    );
    ok_call(&server, &token);
}

#[test]
fn sigterm_drains_calls_in_flight_then_stops_what_outlives_the_grace() {
    let mut env = Env::new();
    let policies = policies_with_types(LONG_POLICY);
    env.policies = policies.path().to_path_buf();
    let token = env.add_caller("t", &["types.*", "text.*"]);

    // Calls shorter than the grace finish, are answered and audited.
    let server = env.serve(&["--shutdown-grace", "20s"]);
    let running: Vec<_> = (0..4)
        .map(|_| in_background(&server, &token, "work", WORK))
        .collect();
    wait_in_flight(&server, 4);
    let addr = server.addr();
    let pid = server.child.id();
    let term = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    // New connections are refused soon after the signal.
    eventually(
        Duration::from_secs(5),
        Duration::from_millis(20),
        || match TcpStream::connect(&addr) {
            Err(_) => Ok(()),
            Ok(_) => Err("still accepting after SIGTERM".to_string()),
        },
    );
    let mut ids = Vec::new();
    for handle in running {
        let reply = handle.join().expect("thread");
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.json()["outcome"], "ok", "{reply:?}");
        ids.push(
            reply.json()["invocation_id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert!(server.stop_after_signal().success());
    let records = env.audit();
    for id in &ids {
        assert!(
            records.iter().any(|r| r["invocation_id"] == id.as_str()),
            "{id}"
        );
    }
    assert_verifies(&env);

    // A call whose client left holds no connection open, yet shutdown
    // waits for it too: it completes and is audited before the exit.
    let server = env.serve(&["--shutdown-grace", "20s"]);
    let body = format!(r#"{{"arguments":{{"n":{}}}}}"#, WORK * 8);
    let request = format!(
        "POST /v1/tools/types.work/invoke HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(server.addr()).expect("connect");
    stream.write_all(request.as_bytes()).expect("send");
    wait_in_flight(&server, 1);
    drop(stream);
    let before = env.audit().len();
    let pid = server.child.id();
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    assert!(server.stop_after_signal().success());
    let records = env.audit();
    assert_eq!(records.len(), before + 1, "the abandoned call was audited");
    assert_eq!(records[before]["tool"], "types.work");
    assert_verifies(&env);

    // A call longer than the grace is stopped as `timeout`, answered and audited.
    let server = env.serve(&["--shutdown-grace", "300ms"]);
    let long = in_background(&server, &token, "spin", LONG_SPIN);
    wait_in_flight(&server, 1);
    let pid = server.child.id();
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let reply = long.join().expect("thread");
    assert_eq!(reply.status, 200, "{reply:?}");
    let result = reply.json();
    assert_eq!(result["outcome"], "timeout", "{result}");
    assert!(result["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("shutting down"));
    assert!(server.stop_after_signal().success());
    let id = result["invocation_id"].as_str().unwrap_or_default();
    assert_eq!(env.record(id)["outcome"], "timeout");
    assert_verifies(&env);
}

fn assert_verifies(env: &Env) {
    let verify = env
        .fabric()
        .args(["audit", "verify"])
        .output()
        .expect("audit verify");
    assert!(
        verify.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        stderr(&verify)
    );
}

/// One `POST` over a fresh connection: the status and the body, or `None`
/// when no whole response came back.
fn post(addr: &str, token: &str, body: &str) -> Option<(u16, Value)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let request = format!(
        "POST /v1/tools/text.echo/invoke HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut seen = Vec::new();
    stream.read_to_end(&mut seen).ok()?;
    let text = String::from_utf8_lossy(&seen);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, serde_json::from_str(body).ok()?))
}

#[test]
fn sigkill_under_load_never_loses_an_answered_call() {
    let env = Env::new();
    let token = env.add_caller("load", &["text.*"]);
    let mut answered: Vec<String> = Vec::new();
    for round in 0..5u64 {
        let server = env.serve(&[]);
        let addr = server.addr();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let clients: Vec<_> = (0..64)
            .map(|_| {
                let (addr, token) = (addr.clone(), token.clone());
                let (stop, seen) = (stop.clone(), seen.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        match post(&addr, &token, ECHO) {
                            Some((200, result)) => {
                                let id = result["invocation_id"].as_str().unwrap_or_default();
                                seen.lock().expect("lock").push(id.to_string());
                            }
                            Some(_) => {}
                            None => break,
                        }
                    }
                })
            })
            .collect();
        // A moment that differs per round and per run.
        let jitter = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::from(d.subsec_nanos()) % 400);
        std::thread::sleep(Duration::from_millis(300 + 150 * round + jitter));
        let pid = server.child.id();
        let killed = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        stop.store(true, Ordering::SeqCst);
        for c in clients {
            c.join().expect("client");
        }
        drop(server);
        let got = std::mem::take(&mut *seen.lock().expect("lock"));
        assert!(!got.is_empty(), "round {round}: no call was answered");
        answered.extend(got);
        // Restart: the log recovers, calls work, and everything answered is there.
        let server = env.serve(&[]);
        ok_call(&server, &token);
        assert!(server.stop().success());
        assert_verifies(&env);
        let recorded: std::collections::HashSet<String> = env
            .audit()
            .into_iter()
            .filter_map(|r| r["invocation_id"].as_str().map(str::to_string))
            .collect();
        let lost: Vec<&String> = answered
            .iter()
            .filter(|id| !recorded.contains(*id))
            .collect();
        assert!(
            lost.is_empty(),
            "round {round}: answered but not in the log: {lost:?}"
        );
    }
}

#[test]
fn mcp_content_carries_a_spotlighted_tool_error_only_marked() {
    let mut env = Env::new();
    let policies = policies_with_types("[guard]\nspotlight = \"datamark\"\n");
    env.policies = policies.path().to_path_buf();
    let token = env.add_caller("t", &["types.*"]);
    let server = env.serve(&[]);
    let reply = curl(
        &format!("{}/mcp", server.url),
        &[
            "-H",
            &bearer(&token),
            "-H",
            "Content-Type: application/json",
            "-H",
            "Accept: application/json, text/event-stream",
            "-H",
            "MCP-Protocol-Version: 2026-07-28",
            "-H",
            "Mcp-Method: tools/call",
            "-H",
            "Mcp-Name: types.refuse",
            "-d",
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"types.refuse","arguments":{"reason":"no such file"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#,
        ],
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    let result = &reply.json()["result"];
    assert_eq!(result["isError"], true, "{result}");
    let marker = result["_meta"]["fabric.dev/result"]["guard"]["spotlight"]["marker"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!marker.is_empty(), "{result}");
    // One item: the outcome and the marked error; the raw text nowhere.
    let content = result["content"].as_array().cloned().unwrap_or_default();
    assert_eq!(content.len(), 1, "{result}");
    assert_eq!(
        content[0]["text"],
        format!("tool_error: {marker}no{marker}such{marker}file"),
        "{result}"
    );
    assert!(server.stop().success());
}

/// A 2026-07-28 call on a raw connection, returning the stream once the
/// request is sent.
fn modern_call_on(server: &Server, token: &str, tool: &str, arguments: &str) -> TcpStream {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}","arguments":{arguments},"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#
    );
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
         MCP-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: {tool}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(server.addr()).expect("connect");
    stream.write_all(request.as_bytes()).expect("send");
    stream
}

#[test]
fn a_2026_07_28_client_that_disconnects_cancels_its_call_which_is_audited() {
    let mut env = Env::new();
    let policies = policies_with_types(LONG_POLICY);
    env.policies = policies.path().to_path_buf();
    let token = env.add_caller("t", &["types.*"]);
    let server = env.serve(&[]);

    // The revision: "The server MUST treat a client disconnect as
    // cancellation of that request." The spin would take its 8 s.
    let stream = modern_call_on(&server, &token, "types.spin", r#"{"n":1}"#);
    wait_in_flight(&server, 1);
    let left = Instant::now();
    drop(stream);
    wait_in_flight(&server, 0);
    let stopped = left.elapsed();
    assert!(
        stopped < Duration::from_secs(5),
        "ran on {stopped:?} after the disconnect"
    );
    assert_cancelled(&env, "types.spin", Duration::from_secs(10));

    // Cancellations say nothing about the tool: more of them than the
    // breaker's threshold (5) leave its circuit closed.
    for _ in 0..5 {
        let stream = modern_call_on(&server, &token, "types.spin", r#"{"n":1}"#);
        wait_in_flight(&server, 1);
        drop(stream);
        wait_in_flight(&server, 0);
    }

    // Answered calls are not cancelled afterwards, and a connection kept
    // open gets its answer.
    let mut stream = modern_call_on(&server, &token, "types.checked", r#"{"x":7}"#);
    let mut answer = String::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    while !answer.contains("fabric.dev/result") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""isError":false"#), "{answer}");
    assert!(server.stop().success());
    assert_verifies(&env);
}

#[test]
fn a_2026_07_28_call_cancelled_while_queued_never_runs() {
    let mut env = Env::new();
    let policies = policies_with_types(LONG_POLICY);
    env.policies = policies.path().to_path_buf();
    let config = host_config(&env, "max_in_flight = 1\nqueue = 4\n");
    let token = env.add_caller("t", &["types.*"]);
    let server = env.serve(&["--host-config", config.to_str().expect("utf-8")]);
    // One spin holds the only slot for its 8 s; a second call queues.
    let holder = modern_call_on(&server, &token, "types.spin", r#"{"n":1}"#);
    wait_in_flight(&server, 1);
    let queued = modern_call_on(&server, &token, "types.work", r#"{"n":1}"#);
    eventually(Duration::from_secs(10), Duration::from_millis(10), || {
        let ready = curl(&format!("{}/readyz", server.url), &[]).json();
        match ready["load"]["queued"].as_u64() {
            Some(1) => Ok(()),
            _ => Err(format!("not queued yet: {ready}")),
        }
    });
    let left = Instant::now();
    drop(queued);
    // Its record comes while the spin still holds the slot.
    assert_cancelled(&env, "types.work", Duration::from_secs(5));
    assert!(
        left.elapsed() < Duration::from_secs(5),
        "{:?}",
        left.elapsed()
    );
    drop(holder);
    assert!(server.stop().success());
}

/// Waits up to `within` for the audit record of a call of `tool`, and checks
/// it is a cancelled call's: a `timeout` saying the client left.
fn assert_cancelled(env: &Env, tool: &str, within: Duration) {
    let record = eventually(within, Duration::from_millis(20), || {
        let records = env.audit();
        match records.iter().find(|r| r["tool"] == tool) {
            Some(r) => Ok(r.clone()),
            None => Err(format!("no record of {tool} yet: {records:?}")),
        }
    });
    assert_eq!(record["outcome"], "timeout", "{record}");
    assert!(
        record["error"]
            .as_str()
            .is_some_and(|e| e.contains("cancelled: its client closed the connection")),
        "{record}"
    );
}
