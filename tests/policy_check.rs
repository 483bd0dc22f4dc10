//! `fabric policy check [FILE…]`: each kind of mistake is reported with its
//! file, key, line and what is allowed; exit 0 when all files are good, 1
//! otherwise; symbolic links leaving a mount are warned of.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn check(dir: &Path, files: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fabric"))
        .arg("--policies")
        .arg(dir)
        .args(["policy", "check"])
        .args(files.iter().map(|f| dir.join(f)))
        .output()
        .expect("fabric runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_bundled_policies_pass() {
    let out = Command::new(env!("CARGO_BIN_EXE_fabric"))
        .current_dir(common::repo())
        .args(["policy", "check"])
        .output()
        .expect("fabric runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    for name in ["fs", "http", "redis", "text"] {
        assert!(
            text(&out.stdout).contains(&format!("policies/{name}.toml: ok")),
            "{}",
            text(&out.stdout)
        );
    }
    assert!(
        !text(&out.stdout).contains("warning"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_policy_no_component_is_named_for_is_warned_of() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("txet.toml"), "[limits]\nfuel = 1\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_fabric"))
        .arg("--policies")
        .arg(dir.path())
        .arg("--tools")
        .arg(common::example_tools())
        .args(["policy", "check"])
        .output()
        .expect("fabric runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("txet.toml: warning: there is no component")
            && stdout.contains("txet.wasm"),
        "{stdout}"
    );
}

#[test]
fn every_kind_of_mistake_names_file_key_line_and_what_is_allowed() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("data")).expect("dir");
    let cases: &[(&str, &str, &str)] = &[
        ("[limits]\nfule = 3\n", "limits.fule (line 2)", "expected one of `fuel`, `memory`, `timeout`, `output`"),
        ("[limits]\nmemory = 0\n", "limits.memory (line 2)", "allowed is at least 64 KiB (one WebAssembly page) and at most 1 GiB"),
        ("[limits]\nmemory = \"2 GiB\"\n", "limits.memory (line 2)", "above the host's maximum of 1 GiB"),
        ("[limits]\noutput = 0\n", "limits.output (line 2)", "allowed is more than 0 and at most 64 MiB"),
        ("[limits]\nfuel = 0\n", "limits.fuel (line 2)", "must be greater than 0"),
        ("[limits]\ntimeout = \"forever\"\n", "limits.timeout (line 2)", "write e.g. \"500ms\""),
        (
            "[[fs]]\nhost = \"data\"\nguest = \"/a\"\n[[fs]]\nhost = \"data\"\nguest = \"//a/\"\naccess = \"read-write\"\n",
            "fs[1].guest (line 6)",
            "\"//a/\" is the guest directory \"/a\" that fs[0] already mounts",
        ),
        ("[[fs]]\nhost = \"nowhere\"\nguest = \"/a\"\n", "fs[0].host (line 2)", "cannot be used"),
        ("[[fs]]\nhost = \"data\"\nguest = \"/a\"\naccess = \"rw\"\n", "fs[0].access (line 4)", "use \"read-only\" or \"read-write\""),
        ("[net]\nallow = [\"example.com\"]\n", "net.allow[0] (line 2)", "missing the port"),
        ("[net]\nlisten = [\"localhost:80\"]\n", "net.listen[0] (line 2)", "listen on an IP address"),
        ("[env]\npass = [\"1X\"]\n", "env.pass[0] (line 2)", "not a valid variable name"),
    ];
    for (i, (policy, key, needle)) in cases.iter().enumerate() {
        let name = format!("p{i}.toml");
        std::fs::write(dir.path().join(&name), policy).expect("write");
        let out = check(dir.path(), &[&name]);
        assert_eq!(out.status.code(), Some(1), "{policy}");
        let err = text(&out.stderr);
        let file = dir.path().join(&name).display().to_string();
        assert!(
            err.starts_with(&format!("{file}: {key}: ")),
            "{policy:?}: {err}"
        );
        assert!(err.contains(needle), "{policy:?}: {err}");
    }
    // All at once: exit 1, one line per bad file.
    let out = check(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).lines().count(),
        cases.len(),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn links_leaving_a_mount_are_warned_of() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("data/sub")).expect("dir");
    std::fs::create_dir(dir.path().join("outside")).expect("dir");
    std::os::unix::fs::symlink("../outside", dir.path().join("data/leak")).expect("link");
    std::os::unix::fs::symlink("sub", dir.path().join("data/fine")).expect("link");
    std::fs::write(
        dir.path().join("p.toml"),
        "[[fs]]\nhost = \"data\"\nguest = \"/a\"\n",
    )
    .expect("write");
    let out = check(dir.path(), &["p.toml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("p.toml: ok"), "{stdout}");
    assert!(stdout.contains("fs[0].host: warning: "), "{stdout}");
    assert!(stdout.contains("data/leak -> "), "{stdout}");
    assert!(!stdout.contains("data/fine"), "{stdout}");
}

/// `/a` read-only and `/a/` read-write used to load, the write landing in
/// the read-write one; now the policy does not load and the tool is
/// unavailable, its problem naming the key.
#[test]
fn a_guest_path_mounted_twice_is_refused_at_load() {
    let dir = tempfile::tempdir().expect("temp dir");
    let policies = common::policies(&[(
        "fs",
        &format!(
            "[[fs]]\nhost = {0:?}\nguest = \"/a\"\n[[fs]]\nhost = {0:?}\nguest = \"/a/\"\naccess = \"read-write\"\n",
            dir.path().display().to_string()
        ),
    )]);
    let f = common::open(&common::example_tools(), policies.path());
    let problems = format!("{:?}", f.problems());
    assert!(problems.contains("fs[1].guest"), "{problems}");
    let r = common::call(&f, "fs.list", serde_json::json!({"path": "/a"}));
    assert_ne!(r.outcome, fabric_host::Outcome::Ok);
}
