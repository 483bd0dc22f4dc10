//! The pipeline's own guarantees, through the public API: admission
//! (unauthorized, forbidden, overloaded, all audited), secrets blanked from
//! everything that leaves a call, caller-controlled text bounded, and the
//! host configuration's maxima.

mod common;

use std::process::Command;

use fabric_host::{Call, Caller, Fabric, HostConfig, Outcome, Scope};
use serde_json::{json, Value};

/// Every record of a closed fabric's log, as `fabric audit export` prints them.
fn records(f: common::TestFabric) -> Vec<Value> {
    let common::TestFabric { fabric, data, keys } = f;
    drop(fabric);
    let out = Command::new(env!("CARGO_BIN_EXE_fabric"))
        .arg("--data")
        .arg(data.path())
        .arg("--audit-key")
        .arg(keys.path().join("key"))
        .args(["audit", "export"])
        .output()
        .expect("run fabric audit export");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a record per line"))
        .collect()
}

fn run(fabric: &Fabric, call: Call) -> fabric_host::CallResult {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(fabric.call(call))
        .expect("audited")
}

#[test]
fn refusals_are_decided_before_anything_runs_and_are_audited() {
    let f = common::open(&common::example_tools(), &common::repo().join("policies"));
    let text_only = Caller::named("ci-bot", Scope::new(["text.*"]));

    let r = run(
        &f,
        Call::new(
            Caller::Unauthenticated("no token".into()),
            "text.echo",
            json!({"text": "x"}),
        ),
    );
    assert_eq!(r.outcome, Outcome::Unauthorized);
    assert_eq!(r.fuel_used, 0);

    // Out of scope: forbidden, whether the tool exists or not.
    for tool in ["fs.grep", "fs.no-such-tool"] {
        let r = run(&f, Call::new(text_only.clone(), tool, json!({})));
        assert_eq!(r.outcome, Outcome::Forbidden, "{tool}");
        let message = r.error.unwrap().message;
        assert!(
            message.contains("ci-bot") && message.contains("scope"),
            "{message}"
        );
    }
    let r = run(
        &f,
        Call::new(text_only.clone(), "text.echo", json!({"text": "in scope"})).in_session("s-1"),
    );
    assert_eq!(r.outcome, Outcome::Ok);

    // Listing follows the scope.
    let names: Vec<String> = f.tools(&text_only).into_iter().map(|t| t.name).collect();
    assert!(
        !names.is_empty() && names.iter().all(|n| n.starts_with("text.")),
        "{names:?}"
    );
    assert!(f.tool(&text_only, "fs.grep").is_none());
    assert!(f.tool(&Caller::Local, "fs.grep").is_some());

    let log = records(f);
    let outcomes: Vec<&str> = log.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["unauthorized", "forbidden", "forbidden", "ok"]);
    assert_eq!(log[0]["caller"], Value::Null);
    assert_eq!(log[1]["caller"], "ci-bot");
    assert_eq!(log[3]["session"], "s-1");
    // Refused before resolution: no component digest recorded.
    assert_eq!(log[1]["component_digest"], Value::Null);
}

#[test]
fn calls_beyond_max_in_flight_are_overloaded_not_queued_without_bound() {
    let policies = common::policies(&[(
        "types",
        "[limits]\ntimeout = \"300ms\"\nfuel = 100_000_000_000\n",
    )]);
    let data = common::data_dir();
    let keys = tempfile::tempdir().unwrap();
    let mut options = common::options(
        &common::test_tools(),
        policies.path(),
        Some(data.path()),
        Some(&keys.path().join("key")),
    );
    options.host = HostConfig::parse("max_in_flight = 1").unwrap();
    let fabric = std::sync::Arc::new(Fabric::open(&options).unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (spinning, second) = runtime.block_on(async {
        let spinner = fabric.clone();
        let spin = tokio::spawn(async move {
            let call = Call::new(Caller::Local, "types.spin", json!({"n": 7}));
            spinner.call(call).await
        });
        // Let the spinning call take the one slot first.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let second = fabric
            .call(Call::new(Caller::Local, "types.nothing", json!({})))
            .await;
        (spin.await.expect("spin task"), second)
    });
    let (spinning, second) = (spinning.unwrap(), second.unwrap());
    assert_eq!(spinning.outcome, Outcome::Timeout);
    assert_eq!(second.outcome, Outcome::Overloaded);
    assert!(second.audit.is_some(), "a refusal is audited");
    assert_eq!(second.error.unwrap().detail["retry_after_s"], 1);
    // The slot is free again.
    let r = runtime
        .block_on(fabric.call(Call::new(Caller::Local, "types.nothing", json!({}))))
        .unwrap();
    assert_eq!(r.outcome, Outcome::Ok);
}

#[test]
fn passed_env_values_never_leave_a_call() {
    let secret = "p1pel1ne-s3cret-v4lue";
    // Safe in edition 2021; the variable's name is unique to this test.
    std::env::set_var("FABRIC_PIPELINE_TEST_SECRET", secret);
    let policies = common::policies(&[(
        "types",
        "[env]\npass = [\"FABRIC_PIPELINE_TEST_SECRET\"]\n[guard]\nrules = \"none\"\n",
    )]);
    let f = common::open(&common::test_tools(), policies.path());
    let blank = "[env:FABRIC_PIPELINE_TEST_SECRET]";

    // In a tool's error value, in a trap's message, in an output.
    let refused = common::call(
        &f,
        "types.refuse",
        json!({"reason": format!("token {secret} rejected")}),
    );
    assert_eq!(refused.outcome, Outcome::ToolError);
    let trapped = common::call(
        &f,
        "types.panic",
        json!({"message": format!("leaked {secret}")}),
    );
    assert_eq!(trapped.outcome, Outcome::Trap);
    let echoed = common::call(&f, "types.text", json!({"s": secret, "c": "x"}));
    assert_eq!(echoed.outcome, Outcome::Ok);
    for r in [&refused, &trapped, &echoed] {
        let shown = serde_json::to_string(r).unwrap();
        assert!(!shown.contains(secret), "{shown}");
    }
    assert!(refused.error.unwrap().message.contains(blank));
    assert!(trapped.error.unwrap().message.contains(blank));
    assert_eq!(echoed.output, json!([blank, "x"]));

    let log = records(f);
    let text = serde_json::to_string(&log).unwrap();
    assert!(!text.contains(secret), "a record holds the secret: {text}");
    assert!(log[0]["error"].as_str().unwrap().contains(blank));
    // The output digest is of what the caller received, so it cannot
    // confirm a guess of the secret.
    let received = blake3::hash(&serde_json::to_vec(&json!([blank, "x"])).unwrap());
    assert_eq!(log[2]["output_digest"], received.to_hex().as_str());
}

#[test]
fn caller_controlled_text_is_bounded_in_results_and_records() {
    let f = common::open(&common::example_tools(), &common::repo().join("policies"));
    let huge = "k".repeat(10 << 20);
    let r = common::call(&f, "text.echo", json!({"text": "x", huge.as_str(): 1}));
    assert_eq!(r.outcome, Outcome::InvalidArguments);
    let shown = serde_json::to_string(&r).unwrap();
    assert!(shown.len() < 20_000, "result is {} bytes", shown.len());
    assert!(shown.contains("bytes cut)"), "{}", &shown[..200]);

    let r = common::call(&f, &huge, json!({}));
    assert_eq!(r.outcome, Outcome::UnknownTool);
    assert!(r.tool.len() < 400 && r.tool.ends_with("bytes cut)"));
    assert!(serde_json::to_string(&r).unwrap().len() < 20_000);

    let log = records(f);
    for record in &log {
        let size = serde_json::to_string(record).unwrap().len();
        assert!(size < 20_000, "a record of {size} bytes");
    }
}

#[test]
fn the_host_configuration_bounds_what_policies_may_grant() {
    let policies = common::policies(&[("text", "[limits]\nmemory = \"128 MiB\"\n")]);
    let mut options = common::options(&common::example_tools(), policies.path(), None, None);
    options.host = HostConfig::parse("[maxima]\nmemory = \"64 MiB\"").unwrap();
    let f = Fabric::open(&options).unwrap();
    let problem = f
        .problems()
        .iter()
        .find(|p| p.file.ends_with("text.wasm"))
        .map(|p| p.to_string())
        .expect("text's policy is refused");
    assert!(
        problem.contains("limits.memory") && problem.contains("64 MiB"),
        "{problem}"
    );

    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "max_in_flight = \"many\"").unwrap();
    let e = HostConfig::load(file.path()).unwrap_err().to_string();
    assert!(e.contains(&file.path().display().to_string()), "{e}");
}
