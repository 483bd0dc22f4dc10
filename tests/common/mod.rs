//! Shared test setup: where the built components are, and a Fabric over them.
//!
//! The components are built by `scripts/build-tools` (the README's test
//! command runs it first). A test that cannot find them fails, naming the
//! command to run: a missing component is never a silent pass.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use fabric_host::{Call, CallResult, Fabric, Options};
use serde_json::Value;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The bundled example tools (`build/tools`).
pub fn example_tools() -> PathBuf {
    built("tools")
}

/// The test-only tools (`build/test-tools`).
pub fn test_tools() -> PathBuf {
    built("test-tools")
}

fn built(which: &str) -> PathBuf {
    let dir = repo().join("build").join(which);
    assert!(
        dir.is_dir()
            && std::fs::read_dir(&dir)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false),
        "{} has no components: run scripts/build-tools first",
        dir.display()
    );
    dir
}

/// A state directory shared by all tests, so compiled components are cached.
pub fn shared_data() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fabric-test-data")
}

/// Opens a Fabric over `tools` with `policies`, caching compiled code.
pub fn open(tools: &Path, policies: &Path) -> Fabric {
    let options = Options {
        tools_dir: tools.into(),
        policies_dir: policies.into(),
        data_dir: Some(shared_data()),
    };
    Fabric::open(&options).expect("fabric opens")
}

/// Runs one call to completion.
pub fn call(fabric: &Fabric, tool: &str, arguments: Value) -> CallResult {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(fabric.call(Call {
        caller: None,
        session: None,
        tool: tool.into(),
        arguments,
    }))
}

/// A directory with the given policy files (`(name, toml)`).
pub fn policies(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text) in files {
        std::fs::write(dir.path().join(format!("{name}.toml")), text).expect("write policy");
    }
    dir
}
