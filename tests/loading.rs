//! Loading a tools directory: broken components and bad policies are
//! reported (file, function, why) and do not stop the others loading.

mod common;

use std::path::Path;

use fabric_host::{Caller, Fabric, Outcome};
use serde_json::json;

fn copy_text_tool(to: &Path, name: &str) {
    std::fs::copy(
        common::example_tools().join("text.wasm"),
        to.join(format!("{name}.wasm")),
    )
    .unwrap();
}

fn open(tools: &Path, policies: &Path) -> Fabric {
    Fabric::open(&common::options(tools, policies, None, None)).unwrap()
}

fn problem_for(f: &Fabric, file: &str) -> String {
    let problems = f.problems();
    problems
        .iter()
        .find(|p| p.file.file_name().unwrap() == file)
        .unwrap_or_else(|| panic!("no problem reported for {file}: {problems:?}"))
        .to_string()
}

#[test]
fn broken_components_are_reported_and_the_rest_load() {
    let tools = tempfile::tempdir().unwrap();
    let t = tools.path();
    copy_text_tool(t, "good");
    std::fs::write(t.join("notwasm.wasm"), b"hello, I am text").unwrap();
    std::fs::write(t.join("core.wasm"), wat::parse_str("(module)").unwrap()).unwrap();
    let mut truncated = std::fs::read(common::example_tools().join("text.wasm")).unwrap();
    truncated.truncate(truncated.len() / 2);
    std::fs::write(t.join("truncated.wasm"), truncated).unwrap();
    let missing_import = wat::parse_str(
        r#"(component
             (import "acme:missing/api@1.0.0" (instance (export "f" (func))))
           )"#,
    )
    .unwrap();
    std::fs::write(t.join("unlinkable.wasm"), missing_import).unwrap();
    copy_text_tool(t, "Bad Name");
    std::fs::write(
        t.join("README.md"),
        "not a component, and not *.wasm: ignored",
    )
    .unwrap();

    let none = common::policies(&[]);
    let f = open(t, none.path());
    assert!(problem_for(&f, "notwasm.wasm").contains("not a WebAssembly file"));
    assert!(
        problem_for(&f, "core.wasm").contains("not a valid component"),
        "{}",
        problem_for(&f, "core.wasm")
    );
    assert!(problem_for(&f, "truncated.wasm").contains("not a valid component"));
    let unlinkable = problem_for(&f, "unlinkable.wasm");
    assert!(
        unlinkable.contains("cannot be linked") && unlinkable.contains("acme:missing/api"),
        "{unlinkable}"
    );
    assert!(problem_for(&f, "Bad Name.wasm").contains("not a valid tool name"));
    assert_eq!(f.problems().len(), 5, "{:?}", f.problems());

    let names: Vec<String> = f
        .tools(&Caller::Local)
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["good.echo", "good.stats"]);
    let r = common::call(&f, "good.echo", json!({"text": "still works"}));
    assert_eq!(r.output, json!("still works"));
}

#[test]
fn a_bad_policy_keeps_its_tool_out_and_names_file_and_key() {
    let tools = tempfile::tempdir().unwrap();
    copy_text_tool(tools.path(), "strict");
    copy_text_tool(tools.path(), "fine");
    let policies = common::policies(&[("strict", "[limits]\nmemory = \"lots\"\n")]);
    let f = open(tools.path(), policies.path());
    let problem = problem_for(&f, "strict.wasm");
    assert!(
        problem.contains("strict.toml")
            && problem.contains("limits.memory")
            && problem.contains("not a size"),
        "{problem}"
    );
    assert!(f.tool(&Caller::Local, "strict.echo").is_none());
    let r = common::call(&f, "strict.echo", json!({"text": "x"}));
    assert_eq!(r.outcome, Outcome::UnknownTool);
    assert_eq!(
        common::call(&f, "fine.echo", json!({"text": "x"})).outcome,
        Outcome::Ok
    );
}

#[test]
fn compiled_components_are_cached_by_digest() {
    let tools = tempfile::tempdir().unwrap();
    copy_text_tool(tools.path(), "cached");
    let data = tempfile::tempdir().unwrap();
    let none = common::policies(&[]);
    let options = common::options(tools.path(), none.path(), Some(data.path()), None);
    let first = Fabric::open(&options).unwrap();
    drop(first);
    let cached: Vec<_> = std::fs::read_dir(data.path().join("compiled"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cached.len(), 1);
    let digest = blake3::hash(&std::fs::read(tools.path().join("cached.wasm")).unwrap())
        .to_hex()
        .to_string();
    assert!(cached[0]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with(&digest));
    // A corrupt cache entry is recompiled, not trusted.
    std::fs::write(&cached[0], b"garbage").unwrap();
    let again = Fabric::open(&options).unwrap();
    assert_eq!(
        common::call(&again, "cached.echo", json!({"text": "ok"})).output,
        json!("ok")
    );
}
