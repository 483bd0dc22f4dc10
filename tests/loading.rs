//! Loading a tools directory: broken components, special files and bad
//! policies are reported (file, function, why) and do not stop the others
//! loading; the compiled-code cache survives concurrent loads and refuses
//! code it did not make.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use fabric_host::{Caller, Fabric, HostConfig, Options, Outcome};
use serde_json::json;

fn copy_text_tool(to: &Path, name: &str) {
    std::fs::copy(
        common::example_tools().join("text.wasm"),
        to.join(format!("{name}.wasm")),
    )
    .unwrap();
}

/// A tools directory holding copies of the bundled Rust tools (small and
/// quick to compile), for tests that compile every component.
fn rust_tools() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in ["text", "fs", "http", "redis"] {
        let from = common::example_tools().join(format!("{name}.wasm"));
        std::fs::copy(from, dir.path().join(format!("{name}.wasm"))).unwrap();
    }
    dir
}

fn open(tools: &Path, policies: &Path) -> Fabric {
    Fabric::open(&common::options(tools, policies, None, None)).unwrap()
}

/// Every problem reported for `file`, one per line.
fn problem_for(f: &Fabric, file: &str) -> String {
    let problems = f.problems();
    let found: Vec<String> = problems
        .iter()
        .filter(|p| p.file.file_name().unwrap() == file)
        .map(|p| p.to_string())
        .collect();
    assert!(
        !found.is_empty(),
        "no problem reported for {file}: {problems:?}"
    );
    found.join("\n")
}

/// Tools are listed by name, whatever order their components sort in
/// (`a.echo` sorts after `a-b.stats` by name, before it by component): MCP's
/// page cursors are names, and a list out of that order paged in a loop.
#[test]
fn tools_are_listed_by_name() {
    let tools = tempfile::tempdir().unwrap();
    let policies = tempfile::tempdir().unwrap();
    copy_text_tool(tools.path(), "a");
    copy_text_tool(tools.path(), "a-b");
    let f = open(tools.path(), policies.path());
    let names: Vec<String> = f
        .tools(&Caller::Local)
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("a.")) && names.iter().any(|n| n.starts_with("a-b."))
    );
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
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
    // Linking is found out by compiling, which `precompile` (or a call) does.
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(f.precompile());
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
    // unlinkable.wasm also exports nothing: two problems.
    assert_eq!(f.problems().len(), 6, "{:?}", f.problems());

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
    let listed = f.tool(&Caller::Local, "strict.echo").expect("listed");
    assert!(!listed.available);
    assert!(listed.reason.unwrap().contains("limits.memory"));
    let r = common::call(&f, "strict.echo", json!({"text": "x"}));
    assert_eq!(r.outcome, Outcome::UnknownTool);
    assert!(r.error.unwrap().message.contains("its policy is invalid"));
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
    let keys = tempfile::tempdir().unwrap();
    let none = common::policies(&[]);
    let key = keys.path().join("key");
    let options = common::options(tools.path(), none.path(), Some(data.path()), Some(&key));
    let first = Fabric::open(&options).unwrap();
    // Listing the tools compiles nothing; the first call compiles.
    assert_eq!(first.tools(&Caller::Local).len(), 2);
    assert!(!data.path().join("compiled").exists());
    common::call(&first, "cached.echo", json!({"text": "x"}));
    drop(first);
    let cached = cache_entries(data.path());
    assert_eq!(cached.len(), 1);
    // The code is stored as wasmtime wrote it, its keyed tag beside it.
    assert!(cached[0].with_extension("tag").is_file());
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

#[test]
fn without_a_key_location_nothing_is_cached() {
    let tools = tempfile::tempdir().unwrap();
    copy_text_tool(tools.path(), "uncached");
    let data = tempfile::tempdir().unwrap();
    let none = common::policies(&[]);
    let options = common::options(tools.path(), none.path(), Some(data.path()), None);
    let f = Fabric::open(&options).unwrap();
    assert_eq!(
        common::call(&f, "uncached.echo", json!({"text": "ok"})).output,
        json!("ok")
    );
    assert!(!data.path().join("compiled").exists());
}

/// Runs `Fabric::open` on another thread and gives up after `secs` seconds
/// (a load that blocks fails the test instead of hanging it).
fn open_within(options: Options, secs: u64) -> Fabric {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // The receiver is gone once the test has given up.
        let _ = tx.send(Fabric::open(&options).map_err(|e| e.to_string()));
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("loading the tools took over {secs} s: it is blocked"))
        .unwrap()
}

#[test]
fn a_fifo_named_like_a_component_is_refused_without_blocking() {
    let tools = tempfile::tempdir().unwrap();
    copy_text_tool(tools.path(), "good");
    let fifo = tools.path().join("fifo.wasm");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let none = common::policies(&[]);
    let f = open_within(common::options(tools.path(), none.path(), None, None), 60);
    let problem = problem_for(&f, "fifo.wasm");
    assert!(
        problem.contains("is a named pipe (FIFO), not a regular file"),
        "{problem}"
    );
    assert!(f.registry().get("good.echo").is_some());
}

#[test]
fn a_link_to_dev_zero_is_refused_without_reading_it() {
    let tools = tempfile::tempdir().unwrap();
    copy_text_tool(tools.path(), "good");
    std::os::unix::fs::symlink("/dev/zero", tools.path().join("zero.wasm")).unwrap();
    let none = common::policies(&[]);
    let f = open_within(common::options(tools.path(), none.path(), None, None), 60);
    let problem = problem_for(&f, "zero.wasm");
    assert!(
        problem.contains("symbolic link to /dev/zero, outside the tools directory"),
        "{problem}"
    );
    assert!(f.registry().get("good.echo").is_some());
}

#[test]
fn links_are_followed_only_to_files_inside_the_tools_directory() {
    let tools = tempfile::tempdir().unwrap();
    let t = tools.path();
    std::fs::create_dir(t.join("versions")).unwrap();
    copy_text_tool(&t.join("versions"), "text-1.2");
    std::os::unix::fs::symlink("versions/text-1.2.wasm", t.join("inside.wasm")).unwrap();
    std::os::unix::fs::symlink(
        common::example_tools().join("text.wasm"),
        t.join("outside.wasm"),
    )
    .unwrap();
    std::os::unix::fs::symlink("no-such.wasm", t.join("dangling.wasm")).unwrap();
    std::fs::create_dir(t.join("dir.wasm")).unwrap();
    let none = common::policies(&[]);
    let f = open_within(common::options(t, none.path(), None, None), 60);
    assert_eq!(
        common::call(&f, "inside.echo", json!({"text": "linked"})).output,
        json!("linked")
    );
    let outside = problem_for(&f, "outside.wasm");
    assert!(
        outside.contains("outside the tools directory: copy the component into"),
        "{outside}"
    );
    assert!(problem_for(&f, "dangling.wasm").contains("does not resolve"));
    assert!(problem_for(&f, "dir.wasm").contains("is a directory, not a regular file"));
    assert_eq!(f.registry().problems().len(), 3);
}

#[test]
fn a_component_over_the_size_limit_is_refused() {
    let tools = tempfile::tempdir().unwrap();
    copy_text_tool(tools.path(), "big");
    let size = std::fs::metadata(tools.path().join("big.wasm"))
        .unwrap()
        .len();
    let none = common::policies(&[]);
    let mut options = common::options(tools.path(), none.path(), None, None);
    options.host = HostConfig::parse(&format!("max_component_size = {}", size - 1)).unwrap();
    let f = Fabric::open(&options).unwrap();
    let problem = problem_for(&f, "big.wasm");
    assert!(
        problem.contains(&format!(
            "is {size} bytes, over the {}-byte limit",
            size - 1
        )) && problem.contains("max_component_size"),
        "{problem}"
    );
    options.host = HostConfig::parse(&format!("max_component_size = {size}")).unwrap();
    let f = Fabric::open(&options).unwrap();
    assert!(f.registry().get("big.echo").is_some());
}

#[test]
fn a_fifo_or_dangling_link_as_a_policy_is_an_error_not_the_default() {
    let tools = tempfile::tempdir().unwrap();
    copy_text_tool(tools.path(), "piped");
    copy_text_tool(tools.path(), "dangling");
    let policies = common::policies(&[]);
    let made = Command::new("mkfifo")
        .arg(policies.path().join("piped.toml"))
        .status()
        .unwrap();
    assert!(made.success());
    std::os::unix::fs::symlink("gone.toml", policies.path().join("dangling.toml")).unwrap();
    let f = open_within(
        common::options(tools.path(), policies.path(), None, None),
        60,
    );
    let piped = problem_for(&f, "piped.wasm");
    assert!(
        piped.contains("piped.toml") && piped.contains("named pipe"),
        "{piped}"
    );
    let dangling = problem_for(&f, "dangling.wasm");
    assert!(dangling.contains("dangling.toml"), "{dangling}");
    for name in ["piped.echo", "dangling.echo"] {
        let listed = f.tool(&Caller::Local, name).expect("listed");
        assert!(
            !listed.available,
            "{name} must not run on the default policy"
        );
    }
}

/// Warnings logged on this thread while `f` runs.
fn warnings_during<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let result = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&sink.0.lock().unwrap()).into_owned();
    (result, text.lines().map(str::to_string).collect())
}

/// The compiled-code files of the cache (each has a `.tag` beside it).
fn cache_entries(data: &Path) -> Vec<PathBuf> {
    cache_files(data, "cwasm")
}

/// The cache's files ending in `.ext`, sorted.
fn cache_files(data: &Path, ext: &str) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(data.join("compiled"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    entries.sort();
    entries
}

#[test]
fn parallel_cold_loads_in_one_process_all_succeed() {
    const THREADS: usize = 6;
    // One cold cache and one compiled-code key (keys/compiled.key, made by
    // whichever thread comes first), shared; each thread has its own audit
    // log and signing key, as separate Fabrics in one process would.
    let compiled = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let small = rust_tools();
    let fabrics: Vec<(tempfile::TempDir, Options)> = (0..THREADS)
        .map(|i| {
            let data = tempfile::tempdir().unwrap();
            std::os::unix::fs::symlink(compiled.path(), data.path().join("compiled")).unwrap();
            let options = common::options(
                small.path(),
                &common::repo().join("policies"),
                Some(data.path()),
                Some(&keys.path().join(format!("key-{i}"))),
            );
            (data, options)
        })
        .collect();
    let start = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = fabrics
        .iter()
        .map(|(_, options)| {
            let (options, start) = (options.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let (opened, warnings) = warnings_during(|| {
                    let f = Fabric::open(&options).expect("opens");
                    let runtime = tokio::runtime::Runtime::new().unwrap();
                    let compiled = runtime.block_on(f.precompile());
                    assert!(compiled.iter().all(|(_, r)| r.is_ok()), "{compiled:?}");
                    f
                });
                let f = opened;
                let echo = common::call(&f, "text.echo", json!({"text": "par"}));
                (f.registry().problems().len(), echo.output, warnings)
            })
        })
        .collect();
    for t in threads {
        let (problems, output, warnings) = t.join().unwrap();
        assert_eq!(problems, 0);
        assert_eq!(output, json!("par"));
        assert!(warnings.is_empty(), "{warnings:#?}");
    }
    let entries = cache_entries(fabrics[0].0.path());
    // One per example tool (text, fs, http, redis).
    let tools = std::fs::read_dir(small.path()).unwrap().count();
    assert_eq!(
        entries.len(),
        tools,
        "one entry per component, no temporary files left: {entries:?}"
    );
    // What they left behind loads without a warning.
    let (reopened, warnings) = warnings_during(|| Fabric::open(&fabrics[0].1));
    assert!(reopened.is_ok() && warnings.is_empty(), "{warnings:#?}");
}

/// `fabric --tools TOOLS --data DATA --audit-key KEY`.
fn fabric_cmd(tools: &Path, data: &Path, key: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fabric"));
    cmd.current_dir(common::repo())
        .arg("--tools")
        .arg(tools)
        .arg("--data")
        .arg(data)
        .arg("--audit-key")
        .arg(key);
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn parallel_cold_loads_in_several_processes_all_succeed() {
    const PROCESSES: usize = 6;
    let small = rust_tools();
    let data = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    // One signing key and one compiled-code key beside it, each made by
    // whichever process comes first and read by the others.
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            fabric_cmd(small.path(), data.path(), &keys.path().join("key"))
                .arg("precompile")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout)
                .lines()
                .any(|l| l.starts_with("ok ") && l.ends_with("text.wasm")),
            "{}",
            text(&out.stdout)
        );
    }
    // One compiled entry per tool (text, fs, http, redis).
    let tools = std::fs::read_dir(small.path()).unwrap().count();
    assert_eq!(cache_entries(data.path()).len(), tools);
    // One compiled-code key, private, made by exactly one of them.
    let key = keys.path().join("compiled.key");
    let meta = std::fs::metadata(&key).unwrap();
    assert_eq!(meta.len(), 32);
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    let leftovers: Vec<_> = std::fs::read_dir(keys.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// The cache entry of the bundled component `name`.
fn entry_of(data: &Path, name: &str) -> PathBuf {
    let digest =
        blake3::hash(&std::fs::read(common::example_tools().join(format!("{name}.wasm"))).unwrap())
            .to_hex()
            .to_string();
    cache_entries(data)
        .into_iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&digest)
        })
        .unwrap_or_else(|| panic!("no cache entry for {name}"))
}

#[test]
fn swapped_compiled_code_is_recompiled_not_run() {
    let small = rust_tools();
    let data = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let out = fabric_cmd(small.path(), data.path(), &keys.path().join("key"))
        .arg("precompile")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (echo, http) = (entry_of(data.path(), "text"), entry_of(data.path(), "http"));
    std::fs::copy(&http, &echo).unwrap();

    let out = fabric_cmd(small.path(), data.path(), &keys.path().join("key"))
        .args(["call", "text.echo", r#"{"text":"still me"}"#])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "still me\n");
    let warning = text(&out.stderr);
    assert!(
        warning.contains(&echo.display().to_string())
            && warning.contains("not made by this host from this component")
            && warning.contains("recompiled"),
        "{warning}"
    );
    // Replaced: the next start loads it silently.
    let out = fabric_cmd(small.path(), data.path(), &keys.path().join("key"))
        .args(["call", "text.echo", r#"{"text":"again"}"#])
        .output()
        .unwrap();
    assert_eq!(text(&out.stdout), "again\n");
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

/// The text tool, called once so that its compiled code is cached, with
/// the options to open a Fabric on that cache again.
struct CachedText {
    _tools: tempfile::TempDir,
    data: tempfile::TempDir,
    _keys: tempfile::TempDir,
    _policies: tempfile::TempDir,
    options: fabric_host::Options,
}

impl CachedText {
    fn new() -> CachedText {
        let tools = tempfile::tempdir().unwrap();
        copy_text_tool(tools.path(), "text");
        let data = tempfile::tempdir().unwrap();
        let keys = tempfile::tempdir().unwrap();
        let policies = common::policies(&[]);
        let key = keys.path().join("key");
        let options = common::options(tools.path(), policies.path(), Some(data.path()), Some(&key));
        common::call(
            &Fabric::open(&options).unwrap(),
            "text.echo",
            json!({"text": "x"}),
        );
        CachedText {
            _tools: tools,
            data,
            _keys: keys,
            _policies: policies,
            options,
        }
    }

    /// Opens a Fabric on the cache again and calls the tool: the warnings
    /// logged meanwhile.
    fn call_again(&self) -> Vec<String> {
        let (_f, warnings) = warnings_during(|| {
            let f = Fabric::open(&self.options).unwrap();
            assert_eq!(
                common::call(&f, "text.echo", json!({"text": "ok"})).output,
                json!("ok")
            );
            f
        });
        warnings
    }
}

#[test]
fn a_cache_entry_others_may_write_is_recompiled_not_mapped() {
    use std::os::unix::fs::PermissionsExt;
    let cache = CachedText::new();
    let data = cache.data.path();
    // Its bytes and tag still match, but another user could change it while
    // it is mapped.
    let entry = entry_of(data, "text");
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o666)).unwrap();
    let warnings = cache.call_again();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("writable by another user") && w.contains("recompiled")),
        "{warnings:#?}"
    );
    let mode = std::fs::metadata(&entry).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "replaced by a private entry");
}

#[test]
fn a_cache_entry_linked_to_a_device_is_replaced_unread() {
    let cache = CachedText::new();
    let data = cache.data.path();
    let entry = entry_of(data, "text");
    std::fs::remove_file(&entry).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &entry).unwrap();
    let warnings = cache.call_again();
    assert!(
        warnings.iter().any(|w| w.contains("unreadable")),
        "{warnings:#?}"
    );
    assert!(!std::fs::symlink_metadata(&entry)
        .unwrap()
        .file_type()
        .is_symlink());
}

fn run_in(dir: &Path, args: &[&str]) -> Output {
    let keys = common::keys_dir();
    Command::new(env!("CARGO_BIN_EXE_fabric"))
        .current_dir(dir)
        .arg("--tools")
        .arg(common::example_tools())
        .arg("--data")
        .arg(dir.join("data"))
        .arg("--audit-key")
        .arg(keys.path().join("key"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_missing_policies_directory_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-policies");
    let out = run_in(
        dir.path(),
        &[
            "--policies",
            missing.to_str().unwrap(),
            "call",
            "text.echo",
            r#"{"text":"x"}"#,
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "cannot use the policies directory {}",
            missing.display()
        )) && err.contains("create it"),
        "{err}"
    );
    // The default, `policies` in the working directory, is held to the same rule.
    let out = run_in(dir.path(), &["tools"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot use the policies directory policies:"),
        "{}",
        text(&out.stderr)
    );
    // An empty directory is an explicit choice: every tool gets the default policy.
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    let out = run_in(dir.path(), &["call", "text.echo", r#"{"text":"x"}"#]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn a_component_that_cannot_link_is_listed_unavailable_with_why() {
    let tools = tempfile::tempdir().unwrap();
    let t = tools.path();
    copy_text_tool(t, "good");
    let unlinkable = wat::parse_str(
        r#"(component
             (import "acme:missing/api@1.0.0" (instance (export "f" (func))))
             (core module $m (func (export "g")))
             (core instance $i (instantiate $m))
             (func $g (canon lift (core func $i "g")))
             (export "g" (func $g))
           )"#,
    )
    .unwrap();
    std::fs::write(t.join("broken.wasm"), unlinkable).unwrap();
    let data = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let none = common::policies(&[]);
    let key = keys.path().join("key");
    let options = common::options(t, none.path(), Some(data.path()), Some(&key));
    let f = Fabric::open(&options).unwrap();
    // Not known before it is compiled: listed, and the call finds out.
    assert!(f.tool(&Caller::Local, "broken.g").unwrap().available);
    let r = common::call(&f, "broken.g", json!({}));
    assert_eq!(r.outcome, Outcome::UnknownTool);
    let message = r.error.unwrap().message;
    assert!(
        message.contains("is unavailable") && message.contains("acme:missing/api"),
        "{message}"
    );
    let listed = f.tool(&Caller::Local, "broken.g").unwrap();
    assert!(!listed.available);
    assert!(listed.reason.unwrap().contains("cannot be linked"));
    // The good tool still works.
    let r = common::call(&f, "good.echo", json!({"text": "fine"}));
    assert_eq!(r.output, json!("fine"));
    drop(f);
    // The next start knows without compiling: the failure is remembered.
    let f = Fabric::open(&options).unwrap();
    let listed = f.tool(&Caller::Local, "broken.g").unwrap();
    assert!(!listed.available, "remembered");
    assert!(problem_for(&f, "broken.wasm").contains("acme:missing/api"));
    drop(f);
    // A remembered failure this host did not write is not believed: with its
    // reason edited (tag kept), or as plain text (the earlier layout), the
    // component is compiled again and the real reason found.
    let failed = cache_files(data.path(), "failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    let stored = std::fs::read(&failed[0]).unwrap();
    let at = stored
        .windows(b"acme:missing".len())
        .position(|w| w == b"acme:missing")
        .expect("the reason is stored");
    let mut edited = stored[..at].to_vec();
    edited.extend_from_slice(b"forged: this tool is withdrawn");
    for forged in [edited, b"forged: this tool is withdrawn".to_vec()] {
        std::fs::write(&failed[0], &forged).unwrap();
        let f = Fabric::open(&options).unwrap();
        let listed = f.tool(&Caller::Local, "broken.g").unwrap();
        assert!(listed.available, "a forged failure is not believed");
        let message = common::call(&f, "broken.g", json!({}))
            .error
            .unwrap()
            .message;
        assert!(
            message.contains("acme:missing/api") && !message.contains("forged"),
            "{message}"
        );
        drop(f);
    }
    // A component that does not even decode: its tools answer why.
    std::fs::write(t.join("garbled.wasm"), b"\0asm\x0d\0\x01\0garbage").unwrap();
    let f = Fabric::open(&options).unwrap();
    let r = common::call(&f, "garbled.anything", json!({}));
    assert_eq!(r.outcome, Outcome::UnknownTool);
    assert!(
        r.error.unwrap().message.contains("not a valid component"),
        "the reason, not just 'unknown tool'"
    );
}

#[test]
fn a_policy_hiding_every_export_says_so() {
    let policies = common::policies(&[("text", "[exports]\nhide = [\"*\"]\n")]);
    let f = open(&common::example_tools(), policies.path());
    let problem = problem_for(&f, "text.wasm");
    assert!(
        problem.contains("its policy's [exports] hides every function it exports"),
        "{problem}"
    );
}
