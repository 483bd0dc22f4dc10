//! A `fabric serve` under test: its data directory, the real binary on
//! 127.0.0.1:0, and the clients that drive it (curl, raw TCP).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Tools for every server: the bundled ones and the test tool `types`
/// (whose `spin` keeps a call busy until its fuel runs out).
pub fn tools_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("serve-tools");
        std::fs::create_dir_all(&dir).expect("tools dir");
        for src in [super::example_tools(), super::test_tools()] {
            for entry in std::fs::read_dir(src).expect("read tools") {
                let path = entry.expect("entry").path();
                // Copied, not linked: links out of a tools directory are refused.
                let copy = dir.join(path.file_name().expect("name"));
                let _ = std::fs::remove_file(&copy);
                std::fs::copy(&path, &copy).expect("copy tool");
            }
        }
        dir
    })
}

/// A data directory, its signing key and the `fabric` command over them.
pub struct Env {
    pub data: tempfile::TempDir,
    pub keys: tempfile::TempDir,
    /// The policies directory (the repo's unless set).
    pub policies: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        Env {
            data: super::data_dir(),
            keys: super::keys_dir(),
            policies: super::repo().join("policies"),
        }
    }

    pub fn fabric(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fabric"));
        cmd.arg("--tools")
            .arg(tools_dir())
            .arg("--policies")
            .arg(&self.policies)
            .arg("--data")
            .arg(self.data.path())
            .arg("--audit-key")
            .arg(self.keys.path().join("key"))
            .env_remove("FABRIC_LOG");
        cmd
    }

    /// Runs `fabric ARGS` to its end.
    pub fn run(&self, args: &[&str]) -> Output {
        self.fabric().args(args).output().expect("fabric runs")
    }

    /// `fabric caller add NAME --scope …`: the token.
    pub fn add_caller(&self, name: &str, scope: &[&str]) -> String {
        self.add_caller_with(name, scope, &[])
    }

    /// `fabric caller add NAME --scope … EXTRA…` (budgets, caps): the token.
    pub fn add_caller_with(&self, name: &str, scope: &[&str], extra: &[&str]) -> String {
        let out = self
            .fabric()
            .args(["caller", "add", name])
            .args(extra)
            .arg("--scope")
            .args(scope)
            .output()
            .expect("run fabric caller add");
        assert!(out.status.success(), "caller add: {}", stderr(&out));
        let text = String::from_utf8(out.stdout).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "the token is the only stdout line: {text:?}"
        );
        lines[0].to_string()
    }

    pub fn serve(&self, args: &[&str]) -> Server {
        serve_with(self.fabric(), args)
    }

    /// The audit records, via `fabric audit export`.
    pub fn audit(&self) -> Vec<Value> {
        let out = self
            .fabric()
            .args(["audit", "export"])
            .output()
            .expect("run fabric audit export");
        assert!(out.status.success(), "audit export: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("a record is JSON"))
            .collect()
    }

    /// The record of the invocation `id`.
    pub fn record(&self, id: &str) -> Value {
        self.audit()
            .into_iter()
            .find(|r| r["invocation_id"] == id)
            .unwrap_or_else(|| panic!("no audit record of invocation {id}"))
    }
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Server {
    pub fn addr(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }

    /// SIGTERM, then the exit status (within 20 s).
    pub fn stop(self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        self.stop_after_signal()
    }

    /// The exit status of a server already signalled (within 20 s).
    pub fn stop_after_signal(mut self) -> std::process::ExitStatus {
        eventually(Duration::from_secs(20), Duration::from_millis(50), || {
            self.child
                .try_wait()
                .expect("wait")
                .ok_or_else(|| "fabric serve did not stop".to_string())
        })
    }
}

/// Polls `probe` every `every` until it gives a value; panics with its
/// last complaint when `within` has passed.
pub fn eventually<T>(
    within: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(complaint) => assert!(Instant::now() < deadline, "{complaint}"),
        }
        std::thread::sleep(every);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP exchange as curl sees it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Reply {
    /// The body's `error.message` ("" when it has none).
    pub fn error_message(&self) -> String {
        self.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// `curl -s ARGS URL`: status, headers and body.
pub fn curl(url: &str, args: &[&str]) -> Reply {
    let out = Command::new("curl")
        .args(["-s", "-D", "-", "-o", "-", "--max-time", "30"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl is installed (apt-get install curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status from curl {args:?}: {text:?}"));
    Reply {
        status,
        headers: head.to_string(),
        body: body.to_string(),
    }
}

pub fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

/// `POST /v1/tools/TOOL/invoke` with `body` as JSON.
pub fn invoke(server: &Server, token: &str, tool: &str, body: &str) -> Reply {
    invoke_with(server, token, tool, body, &[])
}

/// The same, with more request headers (`Name: value`).
pub fn invoke_with(
    server: &Server,
    token: &str,
    tool: &str,
    body: &str,
    headers: &[&str],
) -> Reply {
    let auth = bearer(token);
    let mut args = vec!["-H", &auth, "-H", "Content-Type: application/json"];
    for h in headers {
        args.extend(["-H", h]);
    }
    args.extend(["--data-binary", body]);
    curl(&format!("{}/v1/tools/{tool}/invoke", server.url), &args)
}

pub fn ok_call(server: &Server, token: &str) {
    let reply = invoke(
        server,
        token,
        "text.echo",
        r#"{"arguments":{"text":"still fine"}}"#,
    );
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["output"], "still fine");
}

/// Sends raw bytes, then reads until the server closes or `wait` passes.
pub fn raw(addr: &str, bytes: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(wait)).expect("timeout");
    let _ = stream.write_all(bytes);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// `fabric serve` on 127.0.0.1:0 from a prepared `fabric` command (its
/// environment, global options), once it accepts connections.
pub fn serve_with(mut cmd: Command, args: &[&str]) -> Server {
    let mut child = cmd
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start fabric serve");
    let line = first_line(&mut child);
    let url = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first stdout line: {line:?}"))
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    Server { child, url }
}

/// The first stdout line of `child` (piped), without its newline.
pub fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout piped"))
        .read_line(&mut line)
        .expect("read the first line");
    line.trim_end().to_string()
}
