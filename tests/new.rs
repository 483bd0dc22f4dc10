//! `fabric new NAME --lang …`: each template builds with scripts/build-tools
//! and answers `fabric call` with no edits, described by its WIT docs. Also
//! `fabric docs add` with a tool's WIT dependencies.
//!
//! Each test scaffolds into a fresh project root (tools/, policies/, and
//! links to the repository's scripts/, wit/ and sdk-guest/), so the
//! repository's own tools are untouched.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `fabric ARGS` run in `root`, with a private data dir and key.
fn fabric(root: &Path, args: &[&str]) -> Output {
    let data = common::data_dir();
    let keys = common::keys_dir();
    Command::new(env!("CARGO_BIN_EXE_fabric"))
        .current_dir(root)
        .arg("--data")
        .arg(data.path())
        .arg("--audit-key")
        .arg(keys.path().join("key"))
        .args(args)
        .output()
        .expect("fabric runs")
}

/// A project root: empty tools/ and policies/, the repository's scripts,
/// WIT, guest SDK and toolchain pins linked in, and a Rust tools workspace
/// with no members.
fn project() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for dir in ["scripts", "wit", "sdk-guest"] {
        std::os::unix::fs::symlink(common::repo().join(dir), r.join(dir)).unwrap();
    }
    std::fs::create_dir_all(r.join("tools")).unwrap();
    // The pinned Python and JavaScript toolchains.
    std::os::unix::fs::symlink(
        common::repo().join("tools/toolchains"),
        r.join("tools/toolchains"),
    )
    .unwrap();
    std::fs::create_dir_all(r.join("policies")).unwrap();
    let workspace = std::fs::read_to_string(common::repo().join("tools/Cargo.toml")).unwrap();
    let start = workspace.find("members = [").unwrap();
    let end = start + workspace[start..].find(']').unwrap();
    let empty = format!(
        "{}members = []{}",
        &workspace[..start],
        &workspace[end + 1..]
    );
    std::fs::write(r.join("tools/Cargo.toml"), empty).unwrap();
    root
}

/// Scaffolds `name` in `lang`, builds it, calls it and lists it.
fn scaffold_build_and_call(lang: &str, name: &str) {
    let root = project();
    let r = root.path();
    let out = fabric(r, &["new", name, "--lang", lang]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(r.join(format!("policies/{name}.toml")).is_file());
    assert!(r.join(format!("tools/{name}/wit/world.wit")).is_file());

    let built = Command::new(r.join("scripts/build-tools"))
        .arg(name)
        .current_dir(r)
        .env("FABRIC_BIN", env!("CARGO_BIN_EXE_fabric"))
        .env("FABRIC_PRECOMPILE", "0")
        .output()
        .expect("build-tools runs");
    assert!(built.status.success(), "{}", text(&built.stderr));
    assert!(r.join(format!("build/tools/{name}.wasm")).is_file());

    let tools = "build/tools";
    let tool = format!("{name}.greet");
    let out = fabric(r, &["--tools", tools, "call", &tool, r#"{"name": "you"}"#]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "Hello, you!\n");

    let out = fabric(r, &["--tools", tools, "tools", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [tool.as_str()],
        "only the author's function is a tool"
    );
    let description = listed[0]["description"].as_str().unwrap_or_default();
    assert!(
        description.starts_with("Greets someone by name."),
        "{description:?}"
    );
}

#[test]
fn new_python_tool_builds_and_runs_unedited() {
    scaffold_build_and_call("python", "pyhello");
}

#[test]
fn new_js_tool_builds_and_runs_unedited() {
    scaffold_build_and_call("js", "jshello");
}

#[test]
fn new_rust_tool_builds_and_runs_unedited() {
    scaffold_build_and_call("rust", "rshello");
}

#[test]
fn new_refuses_bad_names_and_existing_tools() {
    let root = project();
    let out = fabric(root.path(), &["new", "Bad_Name", "--lang", "python"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not a valid tool name"));
    // A WIT keyword would make a world that does not parse (map among
    // them), a Rust keyword bindings that do not compile.
    for (keyword, lang, why) in [
        ("stream", "js", "cannot name a WIT package"),
        ("record", "js", "cannot name a WIT package"),
        ("map", "python", "cannot name a WIT package"),
        ("loop", "rust", "Rust keyword"),
        ("self", "rust", "Rust keyword"),
    ] {
        let out = fabric(root.path(), &["new", keyword, "--lang", lang]);
        assert_eq!(out.status.code(), Some(2));
        assert!(text(&out.stderr).contains(why), "{}", text(&out.stderr));
        assert!(!root.path().join("tools").join(keyword).exists());
    }
    // A Rust package name the workspace already has (tools/testing/types).
    let testing = root.path().join("tools/testing/types");
    std::fs::create_dir_all(&testing).unwrap();
    std::fs::write(
        testing.join("Cargo.toml"),
        "[package]\nname = \"tool-types\"\n",
    )
    .unwrap();
    let out = fabric(root.path(), &["new", "types", "--lang", "rust"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("already has a package named \"tool-types\""),
        "{}",
        text(&out.stderr)
    );
    assert!(!root.path().join("tools/types").exists());
    let out = fabric(root.path(), &["new", "twice", "--lang", "js"]);
    assert!(out.status.success());
    let out = fabric(root.path(), &["new", "twice", "--lang", "js"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("already exists"));
}

#[test]
fn docs_add_resolves_a_tools_own_deps_beside_fabrics() {
    let dir = tempfile::tempdir().unwrap();
    let wit = dir.path().join("wit");
    std::fs::create_dir_all(wit.join("deps")).unwrap();
    // The tool carries its own copy of a WASI package that Fabric's wit/deps has too.
    std::fs::copy(
        common::repo().join("wit/deps/io.wit"),
        wit.join("deps/io.wit"),
    )
    .unwrap();
    std::fs::copy(
        common::repo().join("tools/text/wit/world.wit"),
        wit.join("world.wit"),
    )
    .unwrap();
    let component = dir.path().join("text.wasm");
    std::fs::copy(common::example_tools().join("text.wasm"), &component).unwrap();
    let out = docs_add(dir.path(), &component, &wit);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("panicked"));
    // Embedded again over the docs already there: still one set, still read.
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    let out = fabric(
        dir.path(),
        &["--tools", dir.path().to_str().unwrap(), "tools", "--json"],
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let echo = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "text.echo")
        .unwrap();
    assert!(echo["description"]
        .as_str()
        .unwrap()
        .starts_with("Returns the text unchanged."));
}

#[test]
fn docs_add_refuses_a_wit_the_component_was_not_built_from() {
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("text.wasm");
    std::fs::copy(common::example_tools().join("text.wasm"), &component).unwrap();
    let before = std::fs::read(&component).unwrap();
    let out = docs_add(dir.path(), &component, &common::repo().join("tools/fs/wit"));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("does not declare any of the functions the component exports")
            && stderr.contains("#echo"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&component).unwrap(),
        before,
        "nothing written"
    );
}

/// `fabric docs add COMPONENT --wit WIT --deps <Fabric's wit/>`, run in `root`.
fn docs_add(root: &Path, component: &Path, wit: &Path) -> Output {
    let fabric_wit = common::repo().join("wit");
    fabric(
        root,
        &[
            "docs",
            "add",
            component.to_str().unwrap(),
            "--wit",
            wit.to_str().unwrap(),
            "--deps",
            fabric_wit.to_str().unwrap(),
        ],
    )
}
