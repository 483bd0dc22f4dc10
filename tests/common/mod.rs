//! Shared test setup: where the built components are, and a Fabric over them.
//!
//! The components are built by `scripts/build-tools` (the README's test
//! command runs it first). A test that cannot find them fails, naming the
//! command to run: a missing component is never a silent pass.

#![allow(dead_code)]

pub mod server;

use std::path::{Path, PathBuf};

use fabric_host::{Call, CallResult, Caller, Fabric, Options};
use serde_json::Value;

/// The repository root: the checkout under test, which cargo names at run
/// time too. The compile-time path would name whichever checkout built the
/// binary, and checkouts sharing one target directory reuse each other's
/// builds of the same sources.
pub fn repo() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
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

/// Compiled components shared by all tests (each test has its own data
/// directory, whose `compiled/` links here), so each is compiled once. Named
/// for the entry format (keyed entries), so that checkouts sharing a target
/// directory with an older format do not keep replacing each other's entries.
pub fn shared_compiled() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fabric-compiled-keyed");
    std::fs::create_dir_all(&dir).expect("compiled cache dir");
    dir
}

/// A fresh data directory (own audit log) sharing the compiled-code cache.
pub fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::os::unix::fs::symlink(shared_compiled(), dir.path().join("compiled"))
        .expect("link compiled cache");
    dir
}

/// A fresh directory for a signing key (`key`) whose compiled-code key
/// (`compiled.key`, beside it) links to one shared by all tests, so that
/// the shared compiled-code cache verifies for every test.
pub fn keys_dir() -> tempfile::TempDir {
    let shared = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fabric-compiled.key");
    if !shared.exists() {
        // Written whole under a unique name, then renamed: a test reading it
        // meanwhile sees no key or the whole key, never a part.
        let mut tmp = tempfile::NamedTempFile::new_in(shared.parent().expect("parent"))
            .expect("temp key file");
        std::io::Write::write_all(&mut tmp, blake3::hash(b"fabric tests").as_bytes())
            .expect("write test key");
        tmp.persist(&shared).expect("place test key");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    std::os::unix::fs::symlink(&shared, dir.path().join("compiled.key"))
        .expect("link compiled-code key");
    dir
}

/// A Fabric with its own data directory (audit log) and signing key.
pub struct TestFabric {
    /// The fabric.
    pub fabric: Fabric,
    /// Its data directory.
    pub data: tempfile::TempDir,
    /// Holds the signing key (`key`) and verifier key (`key.pub`).
    pub keys: tempfile::TempDir,
}

impl std::ops::Deref for TestFabric {
    type Target = Fabric;
    fn deref(&self) -> &Fabric {
        &self.fabric
    }
}

/// Options for a Fabric over `tools` with `policies`, a data dir and a key.
pub fn options(tools: &Path, policies: &Path, data: Option<&Path>, key: Option<&Path>) -> Options {
    let mut options = Options::new(tools, policies);
    options.data_dir = data.map(Into::into);
    options.audit_key = key.map(Into::into);
    options
}

/// Opens a Fabric over `tools` with `policies`.
pub fn open(tools: &Path, policies: &Path) -> TestFabric {
    let data = data_dir();
    let keys = keys_dir();
    let options = options(
        tools,
        policies,
        Some(data.path()),
        Some(&keys.path().join("key")),
    );
    TestFabric {
        fabric: Fabric::open(&options).expect("fabric opens"),
        data,
        keys,
    }
}

/// Runs one call to completion.
pub fn call(fabric: &Fabric, tool: &str, arguments: Value) -> CallResult {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let call = Call::new(Caller::Local, tool, arguments);
    runtime
        .block_on(fabric.call(call))
        .expect("audit record written")
}

/// A directory with the given policy files (`(name, toml)`).
pub fn policies(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text) in files {
        std::fs::write(dir.path().join(format!("{name}.toml")), text).expect("write policy");
    }
    dir
}

/// Every record of a closed fabric's log, as `fabric audit export` prints them.
pub fn records(f: TestFabric) -> Vec<serde_json::Value> {
    let TestFabric { fabric, data, keys } = f;
    drop(fabric);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fabric"))
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
