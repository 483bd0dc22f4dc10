//! The pipeline's own guarantees, through the public API: admission
//! (unauthorized, forbidden, overloaded, all audited), caller-controlled text
//! bounded, and the host configuration's maxima. (Secrets: tests/secrets.rs,
//! a binary of its own because it sets an environment variable.)

mod common;

use fabric_host::{Call, Caller, Fabric, HostConfig, Outcome, Scope};
use serde_json::{json, Value};

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
    // A huge out-of-scope name is cut in the message too.
    let r = run(
        &f,
        Call::new(text_only.clone(), "x".repeat(1 << 20), json!({})),
    );
    assert_eq!(r.outcome, Outcome::Forbidden);
    assert!(serde_json::to_string(&r).unwrap().len() < 4096);
    // Suggestions name only tools the caller may see.
    let echo_only = Caller::named("echo-bot", Scope::new(["text.echo", "text.ech*"]));
    let r = run(&f, Call::new(echo_only, "text.echoo", json!({})));
    assert_eq!(r.outcome, Outcome::UnknownTool);
    let message = r.error.unwrap().message;
    assert!(
        message.contains("text.echo") && !message.contains("text.stats"),
        "{message}"
    );

    // Listing follows the scope.
    let names: Vec<String> = f.tools(&text_only).into_iter().map(|t| t.name).collect();
    assert!(
        !names.is_empty() && names.iter().all(|n| n.starts_with("text.")),
        "{names:?}"
    );
    assert!(f.tool(&text_only, "fs.grep").is_none());
    assert!(f.tool(&Caller::Local, "fs.grep").is_some());

    let log = common::records(f);
    let outcomes: Vec<&str> = log.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(
        outcomes,
        [
            "unauthorized",
            "forbidden",
            "forbidden",
            "ok",
            "forbidden",
            "unknown_tool"
        ]
    );
    assert!(serde_json::to_string(&log[4]).unwrap().len() < 4096);
    assert_eq!(log[0]["caller"], Value::Null);
    assert_eq!(log[1]["caller"], "ci-bot");
    assert_eq!(log[3]["session"], "s-1");
    // Refused before resolution: no component digest recorded.
    assert_eq!(log[1]["component_digest"], Value::Null);
}

#[test]
fn calls_beyond_max_in_flight_and_the_queue_are_overloaded() {
    let policies = common::policies(&[(
        "types",
        "[limits]\ntimeout = \"1s\"\nfuel = 100_000_000_000\n",
    )]);
    let data = common::data_dir();
    let keys = tempfile::tempdir().unwrap();
    let mut options = common::options(
        &common::test_tools(),
        policies.path(),
        Some(data.path()),
        Some(&keys.path().join("key")),
    );
    options.host = HostConfig::parse("max_in_flight = 1\nqueue = 0").unwrap();
    let fabric = std::sync::Arc::new(Fabric::open(&options).unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (spinning, second) = runtime.block_on(async {
        // Compiled first: components compile on their first call, and that
        // must not decide which call takes the slot.
        for (path, compiled) in fabric.precompile().await {
            assert!(compiled.is_ok(), "{}: {compiled:?}", path.display());
        }
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
    drop(runtime);
    let fabric = std::sync::Arc::into_inner(fabric).expect("no other holder");
    let log = common::records(common::TestFabric { fabric, data, keys });
    let outcomes: Vec<&str> = log.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["overloaded", "timeout", "ok"]);
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

    let log = common::records(f);
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

    // A tool without a policy file gets the default limits lowered to the
    // maxima, not the defaults above them.
    let none = common::policies(&[]);
    let mut options = common::options(&common::test_tools(), none.path(), None, None);
    options.host = HostConfig::parse("[maxima]\ntimeout = \"20ms\"").unwrap();
    let f = Fabric::open(&options).unwrap();
    let r = common::call(&f, "types.spin", json!({"n": 7}));
    assert_eq!(r.outcome, Outcome::Timeout);
    let message = r.error.unwrap().message;
    assert!(message.contains("20ms"), "{message}");

    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "max_in_flight = \"many\"").unwrap();
    let e = HostConfig::load(file.path()).unwrap_err().to_string();
    assert!(e.contains(&file.path().display().to_string()), "{e}");
}
