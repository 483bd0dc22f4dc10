//! The sandbox towards the host: spinning guests share the executor and stop
//! at their own deadline, fuel is counted on every outcome, host faults are
//! told apart from traps, and special files in mounts cannot hang a call or
//! the process.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fabric_host::registry::Status;
use fabric_host::sandbox::{self, FailureKind, RunEnd};
use fabric_host::{Call, CallResult, Caller, Outcome};
use serde_json::{json, Value};
use wasmtime::component::Val;

/// A tools directory holding these built components (`dir/NAME.wasm`).
fn tools(components: &[(&Path, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (from, name) in components {
        let file = format!("{name}.wasm");
        std::fs::copy(from.join(&file), dir.path().join(&file)).expect("copy component");
    }
    dir
}

fn call(tool: &str, arguments: Value) -> Call {
    Call::new(Caller::Local, tool, arguments)
}

/// On a runtime of one and of two worker threads, with twice as many
/// spinning calls as workers, a short call still runs at once and every
/// spinning call ends as `timeout` at its own deadline. Before guests
/// yielded, a spinner held its worker until it was stopped: on one worker the
/// echo waited for it, and the spinners queued behind it ended one timeout
/// later each.
#[test]
fn spinning_guests_yield_and_stop_at_their_own_deadline() {
    let tools = tools(&[
        (&common::test_tools(), "hostile"),
        (&common::example_tools(), "text"),
    ]);
    let policies = common::policies(&[(
        "hostile",
        "[limits]\nfuel = 100_000_000_000\ntimeout = \"1s\"\n",
    )]);
    let fabric = std::sync::Arc::new(common::open(tools.path(), policies.path()));
    for workers in [1, 2] {
        spin_beside_echo(&fabric, workers, Duration::from_secs(1));
    }
}

/// Runs `2 * workers` calls of `hostile.spin` (whose policy timeout is
/// `timeout`) and, once they are running, one `text.echo`.
fn spin_beside_echo(
    fabric: &std::sync::Arc<common::TestFabric>,
    workers: usize,
    timeout: Duration,
) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime");

    let started = Instant::now();
    let spinners: Vec<_> = (0..2 * workers)
        .map(|_| {
            let fabric = fabric.clone();
            runtime.spawn(async move {
                let result = fabric.call(call("hostile.spin", json!({}))).await;
                (result, started.elapsed())
            })
        })
        .collect();
    // Let the spinners take the workers first. (Measured on this thread: a
    // tokio timer needs a free worker to fire.)
    std::thread::sleep(Duration::from_millis(100));
    let sent = Instant::now();
    let echo = {
        let fabric = fabric.clone();
        runtime.spawn(async move { fabric.call(call("text.echo", json!({"text": "hi"}))).await })
    };
    let result = runtime.block_on(echo).expect("echo task");
    let latency = sent.elapsed();
    let result = result.expect("audited");
    assert_eq!(result.outcome, Outcome::Ok, "{:?}", result.error);
    assert!(
        latency < Duration::from_millis(500),
        "text.echo took {latency:?} beside {} spinning calls on {workers} workers",
        2 * workers
    );

    let ends: Vec<(CallResult, Duration)> = runtime.block_on(async {
        let mut ends = Vec::new();
        for spinner in spinners {
            let (result, end) = spinner.await.expect("spinner task");
            ends.push((result.expect("audited"), end));
        }
        ends
    });
    for (result, end) in &ends {
        assert_eq!(result.outcome, Outcome::Timeout, "{:?}", result.error);
        assert!(
            *end >= timeout && *end < timeout + Duration::from_millis(500),
            "a spinning call with a {timeout:?} timeout ended after {end:?} on {workers} workers (all: {:?})",
            ends.iter().map(|(_, e)| e).collect::<Vec<_>>()
        );
    }
}

/// `fuel_used` is what the call burned, however it ended. A timed-out loop
/// without calls never stores its fuel count, which used to read as 16.
#[test]
fn fuel_used_is_reported_on_every_outcome() {
    let policies = common::policies(&[
        (
            "hostile",
            "[limits]\nfuel = 100_000_000_000\ntimeout = \"300ms\"\n",
        ),
        (
            "types",
            "[limits]\nfuel = 50_000_000\nmemory = \"64 MiB\"\ntimeout = \"10s\"\n",
        ),
    ]);
    let f = common::open(&common::test_tools(), policies.path());

    let r = common::call(&f, "hostile.spin", json!({}));
    assert_eq!(r.outcome, Outcome::Timeout, "{:?}", r.error);
    // 300 ms of a tight loop is hundreds of millions of instructions; even
    // a starved thread on a busy machine gets through ten million.
    assert!(
        r.fuel_used > 10_000_000 && r.fuel_used < 100_000_000_000,
        "fuel_used {} after a 300 ms spin",
        r.fuel_used
    );

    let r = common::call(&f, "types.spin", json!({"n": 1}));
    assert_eq!(r.outcome, Outcome::FuelExhausted, "{:?}", r.error);
    assert_eq!(r.fuel_used, 50_000_000);

    let ok = common::call(&f, "types.allocate", json!({"mib": 1}));
    assert_eq!(ok.outcome, Outcome::Ok, "{:?}", ok.error);
    assert!(ok.fuel_used > 0);
    let r = common::call(&f, "types.allocate", json!({"mib": 128}));
    assert_eq!(r.outcome, Outcome::MemoryExceeded, "{:?}", r.error);
    assert!(
        r.fuel_used > 0 && r.fuel_used < 50_000_000,
        "{}",
        r.fuel_used
    );

    let r = common::call(&f, "types.panic", json!({"message": "boom"}));
    assert_eq!(r.outcome, Outcome::Trap, "{:?}", r.error);
    assert!(
        r.fuel_used > 0 && r.fuel_used < 50_000_000,
        "{}",
        r.fuel_used
    );
}

/// The example `fs` tools with `mount` (created here) as `/shared`, and
/// the policies directory to keep; one call lists it, so it works.
fn fs_on_a_fresh_mount(mount: &Path) -> (common::TestFabric, tempfile::TempDir) {
    std::fs::create_dir(mount).expect("mount dir");
    let policies = common::policies(&[(
        "fs",
        &format!(
            "[[fs]]\nhost = {:?}\nguest = \"/shared\"\n",
            mount.display().to_string()
        ),
    )]);
    let f = common::open(&common::example_tools(), policies.path());
    let r = common::call(&f, "fs.list", json!({"path": "/shared"}));
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.error);
    (f, policies)
}

/// A mounted directory removed after the policy was loaded is the host's
/// fault: the sandbox says so, naming the policy key and the path.
#[test]
fn a_vanished_mount_is_a_host_fault_naming_key_and_path() {
    let root = tempfile::tempdir().expect("temp dir");
    let mount = root.path().join("shared");
    let (f, _policies) = fs_on_a_fresh_mount(&mount);

    std::fs::remove_dir(&mount).expect("remove mount dir");
    let tool = f.registry().get("fs.list").expect("fs.list listed");
    let Status::Ready(callable) = &tool.status else {
        panic!("fs.list unavailable")
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let linked = runtime
        .block_on(callable.component.linked())
        .expect("fs compiles");
    let run = runtime.block_on(sandbox::run(
        &linked.pre,
        &linked.func(callable).expect("fs.list exported"),
        1,
        &callable.component.policy,
        &[Val::String("/shared".into())],
        sandbox::Halts {
            host: &Default::default(),
            call: None,
        },
    ));
    let RunEnd::Failed(failure) = run.end else {
        panic!("the run should fail: {:?}", run.end)
    };
    assert_eq!(failure.kind, FailureKind::Host, "{}", failure.message);
    let shown = mount.display().to_string();
    for needle in ["host fault", "fs.toml", "fs[0].host", shown.as_str()] {
        assert!(
            failure.message.contains(needle),
            "{needle:?} missing from {:?}",
            failure.message
        );
    }
    assert_eq!(run.fuel_used, 0);

    // Through the pipeline: not an outcome of the tool but an error of
    // Fabric's, audited as `host_fault`.
    let call = call("fs.list", json!({"path": "/shared"}));
    match runtime.block_on(f.call(call)) {
        Err(fabric_host::CallError::HostFault { message, audit }) => {
            assert!(
                message.contains("host fault") && message.contains("fs[0].host"),
                "{message}"
            );
            assert_eq!(audit.expect("audited").seq, 1);
        }
        other => panic!("expected a host fault, got {other:?}"),
    }
    drop(runtime);
    let log = common::records(f);
    assert_eq!(log[1]["outcome"], "host_fault");
}

/// A mount replaced after the policy loaded (by a symbolic link to another
/// directory, as a tool that can write its parent could do, or by another
/// directory) is not followed: the call is a host fault, and the other
/// directory is never shown.
#[test]
fn a_mount_replaced_by_a_link_is_refused_not_followed() {
    let root = tempfile::tempdir().expect("temp dir");
    let mount = root.path().join("shared");
    let elsewhere = root.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("other dir");
    std::fs::write(elsewhere.join("secret.txt"), "not for the tool").expect("write");
    let (f, _policies) = fs_on_a_fresh_mount(&mount);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let moved = root.path().join("moved");
    std::fs::rename(&mount, &moved).expect("move the mount away");
    for replace in ["link", "directory"] {
        match replace {
            "link" => std::os::unix::fs::symlink(&elsewhere, &mount).expect("link"),
            _ => {
                std::fs::remove_file(&mount).expect("unlink");
                std::fs::create_dir(&mount).expect("a new directory");
                std::fs::write(mount.join("secret.txt"), "not for the tool").expect("write");
            }
        }
        let call = call("fs.list", json!({"path": "/shared"}));
        match runtime.block_on(f.call(call)) {
            Err(fabric_host::CallError::HostFault { message, .. }) => assert!(
                message.contains("fs[0].host") && message.contains("no longer the directory")
                    || message.contains("symbolic link"),
                "{replace}: {message}"
            ),
            other => panic!("{replace}: expected a host fault, got {other:?}"),
        }
    }
}

/// A FIFO inside a mount: 40 concurrent reads of it are refused at once
/// (opening a FIFO blocks until a writer comes, on a thread no timeout can
/// reclaim), the rest of the directory stays usable, and the process exits.
#[test]
fn a_fifo_in_a_mount_is_refused_and_the_process_exits() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("notes.txt"), "needle in a haystack\n").expect("write file");
    let fifo = dir.path().join("pipe");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success(), "mkfifo failed");
    let policies = common::policies(&[(
        "fs",
        &format!(
            "[limits]\ntimeout = \"1s\"\n[[fs]]\nhost = {:?}\nguest = \"/m\"\n",
            dir.path().display().to_string()
        ),
    )]);
    let data = common::data_dir();
    let keys = tempfile::tempdir().expect("temp dir");
    let fabric = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_fabric"))
            .arg("--tools")
            .arg(common::example_tools())
            .arg("--policies")
            .arg(policies.path())
            .arg("--data")
            .arg(data.path())
            .arg("--audit-key")
            .arg(keys.path().join("key"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("fabric runs")
    };
    let finish = |mut child: std::process::Child| {
        let bound = Duration::from_secs(30);
        let started = Instant::now();
        while child.try_wait().expect("wait").is_none() {
            if started.elapsed() > bound {
                let _ = child.kill();
                let _ = child.wait();
                panic!("fabric did not exit within {bound:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().expect("output");
        (out, started.elapsed())
    };

    let (out, took) = finish(fabric(&[
        "call",
        "fs.read",
        r#"{"path":"/m/pipe","max-bytes":100}"#,
        "--repeat",
        "40",
        "--concurrency",
        "40",
    ]));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON result line"))
        .collect();
    assert_eq!(lines.len(), 40, "{}", String::from_utf8_lossy(&out.stderr));
    for r in &lines {
        assert_eq!(r["outcome"], "tool_error", "{r}");
        let message = r["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.to_lowercase().contains("permission denied"),
            "{message}"
        );
        assert_eq!(r["denials"][0]["kind"], "fs", "{r}");
        assert_eq!(r["denials"][0]["target"], "pipe", "{r}");
    }
    assert!(
        took < Duration::from_secs(10),
        "40 refused reads took {took:?}"
    );

    // grep walks the directory: the FIFO is skipped, the file is searched.
    let (out, _) = finish(fabric(&[
        "call",
        "fs.grep",
        r#"{"pattern":"needle","path":"/m"}"#,
        "--json",
    ]));
    let r: Value = serde_json::from_slice(&out.stdout).expect("a JSON result");
    assert_eq!(r["outcome"], "ok", "{r}");
    assert_eq!(r["output"][0]["path"], "/m/notes.txt", "{r}");
}
