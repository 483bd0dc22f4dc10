//! `fabric bench` end to end: the real binary on a bundled tool, its JSON
//! report checked for sane relations, its SVG parsed, and a tool that fails
//! every call reported as failing, not as fast.

mod common;

use std::process::Command;

use serde_json::Value;

fn bench(tools: &std::path::Path, args: &[&str]) -> (std::process::Output, Value) {
    let data = common::data_dir();
    let keys = common::keys_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_fabric"))
        .arg("--tools")
        .arg(tools)
        .arg("--policies")
        .arg(common::repo().join("policies"))
        .arg("--data")
        .arg(data.path())
        .arg("--audit-key")
        .arg(keys.path().join("key"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .expect("run fabric bench");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "the report is not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, report)
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn the_report_has_every_figure_with_sane_relations_and_a_plot() {
    let svg = tempfile::NamedTempFile::new().expect("temp file");
    let (out, r) = bench(
        &common::example_tools(),
        &[
            "text.echo",
            r#"{"text": "hello"}"#,
            "--calls",
            "300",
            "--warmup",
            "30",
            "--repeat",
            "2",
            "--process-calls",
            "5",
            "--svg",
            svg.path().to_str().expect("utf-8"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(r["tool"], "text.echo");
    assert_eq!(r["audit"], "durable");
    assert_eq!(r["all_failed"], false);
    assert_eq!(r["outcomes"]["ok"]["calls"], 300);
    let fresh = &r["modes"]["fresh"];
    assert_eq!(fresh["calls"], 300);
    let order = ["p50_us", "p90_us", "p99_us", "p99_9_us", "max_us"];
    for pair in order.windows(2) {
        assert!(
            f(&fresh[pair[0]]) <= f(&fresh[pair[1]]),
            "{pair:?}: {fresh}"
        );
    }
    assert!(f(&fresh["calls_per_s"]) > 0.0);
    let reused = &r["modes"]["reused"];
    assert!(
        f(&reused["p50_us"]) < f(&fresh["p50_us"]),
        "a reused instance is the floor: {reused} vs {fresh}"
    );
    assert!(f(&r["ratios"]["fresh_over_reused_p50"]) > 1.0);
    let process = &r["modes"]["process"];
    assert_eq!(process["calls"], 5, "{process}");
    assert!(f(&process["p50_us"]) > f(&fresh["p50_us"]));
    assert!(r["modes"]["wasmtime"].is_object());
    // The phases account for the whole call, within 10 %.
    let phases = ["admit", "validate", "instantiate", "run", "guard", "audit"];
    let sum: f64 = phases.iter().map(|p| f(&r["phases"][p]["mean_us"])).sum();
    let whole = f(&fresh["mean_us"]);
    assert!(
        (sum - whole).abs() <= 0.10 * whole,
        "phases sum to {sum} µs of a {whole} µs call: {}",
        r["phases"]
    );
    for p in phases {
        assert!(f(&r["phases"][p]["p50_us"]) <= f(&r["phases"][p]["p99_us"]));
    }
    assert!(f(&r["phases"]["instantiate"]["p50_us"]) > 0.0);
    assert!(f(&r["timer_overhead_ns"]) > 0.0);
    assert!(f(&r["peak_rss_bytes"]) > 1e6);
    assert_eq!(
        r["fresh_p50_us_per_repeat"].as_array().map(Vec::len),
        Some(2)
    );

    // The SVG parses, with one CDF series per measured mode in its legend.
    let check = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, xml.dom.minidom as m\n\
             d = m.parse(sys.argv[1])\n\
             texts = [t.firstChild.data.strip() for t in d.getElementsByTagName('text') if t.firstChild]\n\
             print('\\n'.join(texts))",
        )
        .arg(svg.path())
        .output()
        .expect("python3");
    assert!(
        check.status.success(),
        "the SVG does not parse: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let texts = String::from_utf8_lossy(&check.stdout);
    for series in [
        "fresh instance (Fabric)",
        "reused instance (not isolated)",
        "process per call (fabric call)",
    ] {
        assert_eq!(
            texts.lines().filter(|l| *l == series).count(),
            1,
            "{series} in {texts}"
        );
    }
    assert!(!texts.contains("wasmtime run per call") || r["modes"]["wasmtime"]["calls"].is_u64());
}

#[test]
fn a_tool_that_fails_every_call_is_reported_as_failing() {
    let (out, r) = bench(
        &common::test_tools(),
        &[
            "types.panic",
            r#"{"message": "boom"}"#,
            "--calls",
            "20",
            "--warmup",
            "2",
            "--repeat",
            "1",
            "--process-calls",
            "0",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(r["all_failed"], true);
    // Traps, until the tool's circuit breaker opens and refuses the rest.
    let outcomes = r["outcomes"].as_object().expect("outcomes");
    let total: u64 = outcomes.values().filter_map(|o| o["calls"].as_u64()).sum();
    assert_eq!(total, 20, "{outcomes:?}");
    assert!(outcomes.get("ok").is_none(), "{outcomes:?}");
    assert!(r["outcomes"]["trap"]["first_error"]
        .as_str()
        .unwrap_or_default()
        .contains("boom"));
    assert!(
        r["modes"]["reused"]["skipped"].is_string(),
        "{}",
        r["modes"]
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("every call of types.panic failed"),
        "{stderr}"
    );
}
