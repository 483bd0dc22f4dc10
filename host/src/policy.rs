//! Policies: what one tool component may use, loaded from `policies/NAME.toml`.
//!
//! A policy is read strictly: unknown keys, malformed sizes and durations,
//! missing host directories and limits above the host's maxima are load
//! errors naming the file, the key and what is allowed. A component without a
//! policy file gets [`Policy::default`]: no files, no network, no environment,
//! default limits.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::files::{self, Links};

/// Largest fuel a policy may grant per call (about a minute of CPU).
pub const MAX_FUEL: u64 = 100_000_000_000;
/// Largest linear memory a policy may grant; also the size of a pooling
/// allocator slot, so raising it costs address space for every slot.
pub const MAX_MEMORY: u64 = 1 << 30;
/// Longest wall-clock time a policy may grant per call.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// Largest output a policy may accept.
pub const MAX_OUTPUT: u64 = 64 << 20;
/// Longest breaker window or cool-down a policy may set.
pub const MAX_BREAKER_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Largest policy file read.
pub const MAX_POLICY_FILE: u64 = 1 << 20;

/// The largest limits any policy on this host may grant: a policy above one
/// of them is a load error. Set by the host configuration
/// ([`crate::HostConfig`]); the defaults are the `MAX_*` constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Maxima {
    /// Fuel per call.
    pub fuel: u64,
    /// Linear memory per call (all its memories together), bytes; also the
    /// pooling allocator's largest memory.
    pub memory: u64,
    /// Wall-clock time per call.
    pub timeout: Duration,
    /// Output, bytes of JSON.
    pub output: u64,
}

impl Maxima {
    /// The default limits, lowered where they exceed these maxima: what a
    /// tool without a policy file, or without a `[limits]` key, gets.
    pub fn default_limits(&self) -> Limits {
        Limits {
            fuel: defaults::FUEL.min(self.fuel),
            memory: defaults::MEMORY.min(self.memory),
            timeout: defaults::TIMEOUT.min(self.timeout),
            output: defaults::OUTPUT.min(self.output),
        }
    }
}

impl Default for Maxima {
    fn default() -> Maxima {
        Maxima {
            fuel: MAX_FUEL,
            memory: MAX_MEMORY,
            timeout: MAX_TIMEOUT,
            output: MAX_OUTPUT,
        }
    }
}

/// Limits of the default policy, chosen for small text tools: generous for
/// them, and tight enough that a runaway tool is stopped within a second.
pub mod defaults {
    use std::time::Duration;
    /// Fuel per call: roughly 0.1–0.5 s of guest CPU.
    pub const FUEL: u64 = 500_000_000;
    /// Linear memory per call.
    pub const MEMORY: u64 = 64 << 20;
    /// Wall clock per call.
    pub const TIMEOUT: Duration = Duration::from_secs(5);
    /// Largest output, as JSON bytes.
    pub const OUTPUT: u64 = 1 << 20;
}

/// A policy failed to load.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {message}")]
pub struct PolicyError {
    /// The policy file.
    pub file: PathBuf,
    /// The offending key (`limits.memory`, `fs[1].host`, …) or `(file)`.
    pub key: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

/// A tool's compiled policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Where it was loaded from (`None`: the default policy).
    pub source: Option<PathBuf>,
    /// blake3 of the policy file's bytes (of the empty string for the default).
    pub digest: blake3::Hash,
    /// Per-call resource limits.
    pub limits: Limits,
    /// Host directories made visible to the tool.
    pub mounts: Vec<Mount>,
    /// Outbound network allowlist.
    pub net: NetPolicy,
    /// Environment variables with fixed values.
    pub env_vars: Vec<(String, String)>,
    /// Environment variables copied from the host by name (never logged).
    pub env_pass: Vec<String>,
    /// The guard's rules (the default set, or the file `[guard] rules` names).
    pub guard_rules: std::sync::Arc<crate::guard::RuleSet>,
    /// Per-rule action overrides, `[guard.actions]`.
    pub guard_actions: std::collections::BTreeMap<String, crate::guard::Action>,
    /// Score thresholds, span and detector weight over the rules' own,
    /// `[guard.score]`.
    pub guard_score: crate::guard::Thresholds,
    /// How outputs are marked as data, `[guard] spotlight`.
    pub guard_spotlight: Option<crate::guard::Spotlight>,
    /// The learned detector, `[guard] model` (the shipped one unless
    /// `"none"`, or unless `rules = "none"` and `model` is unset).
    pub guard_model: Option<std::sync::Arc<crate::guard::model::Model>>,
    /// Store arguments and output in audit records, cut to this many bytes
    /// (`None`: only their digests are recorded).
    pub audit_payloads: Option<u64>,
    /// When the tool's circuit breaker opens, `[breaker]`.
    pub breaker: BreakerPolicy,
    /// Which of the component's functions are tools, `[exports]`.
    pub exports: Exports,
}

/// `[exports]`: which exported functions are listed and callable. Names are
/// function names (the part of a tool's name after `NAME.`), with `*` as a
/// wildcard. Known toolchain helpers (componentize-py's `init`) are hidden
/// unless `expose` names them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exports {
    /// Only these are tools (`None`: every export not hidden).
    pub expose: Option<Vec<String>>,
    /// These are not tools.
    pub hide: Vec<String>,
}

impl Exports {
    /// Whether `function` is a tool, where `helper` says the toolchain made
    /// it rather than the author (hidden unless `expose` names it exactly).
    pub fn shows(&self, function: &str, helper: bool) -> bool {
        if self.hide.iter().any(|p| glob_match(p, function)) {
            return false;
        }
        match &self.expose {
            Some(expose) if helper => expose.iter().any(|p| p == function),
            Some(expose) => expose.iter().any(|p| glob_match(p, function)),
            None => !helper,
        }
    }
}

/// `pattern` with `*` matching any run of characters.
fn glob_match(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(mut tail) = text.strip_prefix(head) else {
                return false;
            };
            loop {
                if glob_match(rest, tail) {
                    return true;
                }
                let mut chars = tail.chars();
                if chars.next().is_none() {
                    return false;
                }
                tail = chars.as_str();
            }
        }
    }
}

/// `[breaker]`: after `failures` consecutive traps, timeouts or fuel
/// exhaustions within `window`, calls are refused (`circuit_open`) for
/// `cooldown`, then one trial call is let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failures that open the circuit; 0 turns the breaker off.
    pub failures: u32,
    /// The failures must all end within this window of the first.
    pub window: Duration,
    /// How long the circuit stays open before a trial call.
    pub cooldown: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> BreakerPolicy {
        BreakerPolicy {
            failures: 5,
            window: Duration::from_secs(60),
            cooldown: Duration::from_secs(30),
        }
    }
}

/// Per-call limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Fuel (deterministic CPU budget).
    pub fuel: u64,
    /// Bytes of linear memory, all of a call's memories together.
    pub memory: u64,
    /// Wall-clock time.
    pub timeout: Duration,
    /// Largest output, as JSON bytes.
    pub output: u64,
}

/// A host directory visible to the tool at a guest path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Absolute host path, without symbolic links (resolved when the policy
    /// loaded).
    pub host: PathBuf,
    /// The directory's device and inode when the policy loaded: each call
    /// opens `host` without following links and checks it is still this
    /// directory ([`crate::sandbox`]).
    pub id: (u64, u64),
    /// Path the guest sees.
    pub guest: String,
    /// Whether the guest may write.
    pub writable: bool,
}

/// Network rules: destinations it may reach, addresses it may listen on.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NetPolicy {
    /// Allowed destinations.
    pub allow: Vec<NetRule>,
    /// Whether private, loopback and link-local addresses may be reached.
    pub allow_private: bool,
    /// Local addresses (IP/CIDR and port) where the tool may bind a socket
    /// other than the implicit any-address, any-port one, and listen.
    pub listen: Vec<NetRule>,
}

impl NetPolicy {
    /// Whether the tool may use the network at all: reach a destination
    /// (`allow`) or accept connections (`listen`).
    pub fn grants_any(&self) -> bool {
        !self.allow.is_empty() || !self.listen.is_empty()
    }
}

/// One `[net] allow` entry: a host or network, and a port or any port.
#[derive(Debug, Clone, PartialEq)]
pub struct NetRule {
    /// The host part.
    pub host: NetHost,
    /// `None` means any port (`*`).
    pub port: Option<u16>,
}

/// The host part of a [`NetRule`].
#[derive(Debug, Clone, PartialEq)]
pub enum NetHost {
    /// A DNS name, lower-case, matched exactly.
    Name(String),
    /// An IP network (a single address is a /32 or /128).
    Cidr(IpAddr, u8),
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            source: None,
            digest: blake3::hash(b""),
            limits: Limits {
                fuel: defaults::FUEL,
                memory: defaults::MEMORY,
                timeout: defaults::TIMEOUT,
                output: defaults::OUTPUT,
            },
            mounts: Vec::new(),
            net: NetPolicy::default(),
            env_vars: Vec::new(),
            env_pass: Vec::new(),
            guard_rules: crate::guard::RuleSet::default_rules(),
            guard_actions: std::collections::BTreeMap::new(),
            guard_score: crate::guard::Thresholds::default(),
            guard_spotlight: None,
            guard_model: Some(crate::guard::model::Model::shipped()),
            audit_payloads: None,
            breaker: BreakerPolicy::default(),
            exports: Exports::default(),
        }
    }
}

// ---- the file format (serde), strict ----

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    limits: FileLimits,
    #[serde(default)]
    fs: Vec<FileMount>,
    #[serde(default)]
    net: FileNet,
    #[serde(default)]
    env: FileEnv,
    #[serde(default)]
    guard: FileGuard,
    #[serde(default)]
    audit: FileAudit,
    #[serde(default)]
    breaker: FileBreaker,
    #[serde(default)]
    exports: FileExports,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileExports {
    expose: Option<Vec<String>>,
    #[serde(default)]
    hide: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileBreaker {
    failures: Option<u32>,
    window: Option<String>,
    cooldown: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileAudit {
    #[serde(default)]
    payloads: bool,
    payload_limit: Option<Size>,
}

/// Default cut of stored audit payloads.
const DEFAULT_PAYLOAD_LIMIT: u64 = 4 << 10;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    fuel: Option<u64>,
    memory: Option<Size>,
    timeout: Option<String>,
    output: Option<Size>,
}

#[derive(Deserialize, Clone)]
#[serde(
    untagged,
    expecting = "a size: a whole number of bytes (65536) or a string with a unit (\"64 KiB\", \"32 MiB\")"
)]
pub(crate) enum Size {
    Bytes(u64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMount {
    host: String,
    guest: String,
    access: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileNet {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    allow_private: bool,
    #[serde(default)]
    listen: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileEnv {
    #[serde(default)]
    vars: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pass: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileGuard {
    rules: Option<String>,
    #[serde(default)]
    actions: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    score: Option<crate::guard::Thresholds>,
    spotlight: Option<String>,
    model: Option<String>,
}

impl Policy {
    /// Loads `dir/NAME.toml`, or returns the default policy (its limits
    /// lowered to `maxima`) when there is no such entry (a symbolic link that
    /// leads nowhere is an error, not "no policy").
    pub fn load_for(dir: &Path, name: &str, maxima: &Maxima) -> Result<Policy, PolicyError> {
        let path = dir.join(format!("{name}.toml"));
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Policy {
                limits: maxima.default_limits(),
                ..Policy::default()
            }),
            _ => Policy::load(&path, maxima),
        }
    }

    /// Loads and checks one policy file: a regular file (links followed) of
    /// at most [`MAX_POLICY_FILE`] bytes; a FIFO or device is refused unread.
    pub fn load(path: &Path, maxima: &Maxima) -> Result<Policy, PolicyError> {
        let err = |key: &str, message: String| PolicyError {
            file: path.to_path_buf(),
            key: key.to_string(),
            message,
        };
        let bytes = files::read_regular(path, MAX_POLICY_FILE, Links::Follow)
            .map_err(|e| err("(file)", format!("cannot read it: {e}")))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| err("(file)", "is not UTF-8 text: save it as UTF-8".into()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Policy::parse_with(&text, base, maxima)
            .map_err(|(key, message)| err(&key, message))
            .map(|mut p| {
                p.source = Some(path.to_path_buf());
                p
            })
    }

    /// Parses policy text under the default maxima; relative `fs.host` paths
    /// are resolved against `base`. Errors are `(key, message)`.
    pub fn parse(text: &str, base: &Path) -> Result<Policy, (String, String)> {
        Policy::parse_with(text, base, &Maxima::default())
    }

    /// Parses policy text under `maxima`. An error's key carries the line
    /// it is on, `limits.memory (line 3)`, when it can be found.
    pub fn parse_with(
        text: &str,
        base: &Path,
        maxima: &Maxima,
    ) -> Result<Policy, (String, String)> {
        Policy::parse_file(text, base, maxima).map_err(|(key, message)| {
            if key.contains("(line ") {
                return (key, message);
            }
            match line_of(text, &key) {
                Some(line) => (format!("{key} (line {line})"), message),
                None => (key, message),
            }
        })
    }

    fn parse_file(text: &str, base: &Path, maxima: &Maxima) -> Result<Policy, (String, String)> {
        let file: File = toml::from_str(text).map_err(|e| {
            let msg = e.message().to_string();
            let key = e
                .span()
                .map(|span| match key_at_offset(text, span.start) {
                    Some(key) => format!("{key} (line {})", line_at(text, span.start)),
                    None => key_at(text, span),
                })
                .unwrap_or_else(|| "(file)".into());
            (key, format!("{msg}{}", hint_for(&msg)))
        })?;
        let mut policy = Policy {
            digest: blake3::hash(text.as_bytes()),
            limits: maxima.default_limits(),
            ..Policy::default()
        };

        let l = &file.limits;
        if let Some(fuel) = l.fuel {
            check_max(
                "limits.fuel",
                fuel,
                maxima.fuel,
                &fuel.to_string(),
                &maxima.fuel.to_string(),
            )?;
            if fuel == 0 {
                return Err(("limits.fuel".into(), "must be greater than 0".into()));
            }
            policy.limits.fuel = fuel;
        }
        if let Some(size) = &l.memory {
            let bytes = parse_size("limits.memory", size)?;
            check_max(
                "limits.memory",
                bytes,
                maxima.memory,
                &show_size(bytes),
                &show_size(maxima.memory),
            )?;
            if bytes < MIN_MEMORY {
                return Err((
                    "limits.memory".into(),
                    format!(
                        "{} is too small to run anything: allowed is at least 64 KiB (one WebAssembly page) and at most {}",
                        show_size(bytes),
                        show_size(maxima.memory)
                    ),
                ));
            }
            policy.limits.memory = bytes;
        }
        if let Some(text) = &l.timeout {
            let d = parse_duration(text).ok_or_else(|| {
                (
                    "limits.timeout".to_string(),
                    format!("{text:?} is not a duration: write e.g. \"500ms\", \"2s\" or \"1m\""),
                )
            })?;
            // The wall clock is checked once an epoch tick: a shorter
            // timeout would not be kept to.
            if d < crate::engine::EPOCH_TICK || d > maxima.timeout {
                return Err((
                    "limits.timeout".into(),
                    format!(
                        "{text:?} is out of range: allowed is at least {:?} (the clock's tick) and at most {:?}",
                        crate::engine::EPOCH_TICK,
                        maxima.timeout
                    ),
                ));
            }
            policy.limits.timeout = d;
        }
        if let Some(size) = &l.output {
            let bytes = parse_size("limits.output", size)?;
            check_max(
                "limits.output",
                bytes,
                maxima.output,
                &show_size(bytes),
                &show_size(maxima.output),
            )?;
            if bytes == 0 {
                return Err((
                    "limits.output".into(),
                    format!(
                        "0 bytes would reject every output: allowed is more than 0 and at most {}",
                        show_size(maxima.output)
                    ),
                ));
            }
            policy.limits.output = bytes;
        }

        for (i, m) in file.fs.iter().enumerate() {
            let key = |k: &str| format!("fs[{i}].{k}");
            let writable = match m.access.as_deref() {
                None | Some("read-only") => false,
                Some("read-write") => true,
                Some(other) => {
                    return Err((
                        key("access"),
                        format!("{other:?} is not allowed: use \"read-only\" or \"read-write\""),
                    ))
                }
            };
            let host = base.join(&m.host);
            let host = host.canonicalize().map_err(|e| {
                (
                    key("host"),
                    format!("{} cannot be used: {e}", host.display()),
                )
            })?;
            let meta = std::fs::metadata(&host).map_err(|e| {
                (
                    key("host"),
                    format!("{} cannot be used: {e}", host.display()),
                )
            })?;
            if !meta.is_dir() {
                return Err((
                    key("host"),
                    format!("{} is not a directory", host.display()),
                ));
            }
            // A tool that can write a directory can put a link where a
            // directory inside it was; a mount of that inner directory would
            // then show wherever the link leads. A read-only outer mount is
            // safe: the tool cannot replace what is inside it.
            let nested = policy.mounts.iter().enumerate().find_map(|(j, x)| {
                if host == x.host {
                    None
                } else if x.writable && host.starts_with(&x.host) {
                    Some((j, &host, &x.host))
                } else if writable && x.host.starts_with(&host) {
                    Some((j, &x.host, &host))
                } else {
                    None
                }
            });
            if let Some((j, inner, outer)) = nested {
                return Err((
                    key("host"),
                    format!(
                        "{} lies inside the read-write mount {} (this entry and fs[{j}]): a tool could put a link where the inner directory is, and its mount would then show wherever the link leads; mount directories that do not nest, or make the outer one read-only",
                        inner.display(),
                        outer.display()
                    ),
                ));
            }
            if !m.guest.starts_with('/')
                || m.guest.split('/').any(|c| c == "..")
                || m.guest.contains('\0')
            {
                return Err((
                    key("guest"),
                    format!(
                        "{:?} must be an absolute path without \"..\" or NUL, e.g. \"/data\"",
                        m.guest
                    ),
                ));
            }
            // "/a", "/a/", "//a" and "/./a" are one directory to the guest.
            let guest = normalize_guest(&m.guest);
            if let Some(j) = policy.mounts.iter().position(|x| x.guest == guest) {
                return Err((
                    key("guest"),
                    format!(
                        "{:?} is the guest directory {guest:?} that fs[{j}] already mounts: mount each guest path once",
                        m.guest
                    ),
                ));
            }
            use std::os::unix::fs::MetadataExt;
            policy.mounts.push(Mount {
                host,
                id: (meta.dev(), meta.ino()),
                guest,
                writable,
            });
        }

        for (i, entry) in file.net.allow.iter().enumerate() {
            let rule = parse_net_rule(entry, false).map_err(|m| (format!("net.allow[{i}]"), m))?;
            policy.net.allow.push(rule);
        }
        policy.net.allow_private = file.net.allow_private;
        for (i, entry) in file.net.listen.iter().enumerate() {
            let key = format!("net.listen[{i}]");
            let rule = parse_net_rule(entry, true).map_err(|m| (key.clone(), m))?;
            if matches!(rule.host, NetHost::Name(_)) {
                return Err((
                    key,
                    format!("{entry:?}: listen on an IP address, e.g. \"127.0.0.1:8080\" or \"0.0.0.0:*\""),
                ));
            }
            policy.net.listen.push(rule);
        }

        for (name, value) in &file.env.vars {
            check_env_name(name).map_err(|m| (format!("env.vars.{name}"), m))?;
            if value.contains('\0') {
                // The tool would see the value cut at the NUL.
                return Err((
                    format!("env.vars.{name}"),
                    "the value holds a NUL character, which no environment variable can".into(),
                ));
            }
            policy.env_vars.push((name.clone(), value.clone()));
        }
        for (i, name) in file.env.pass.iter().enumerate() {
            check_env_name(name).map_err(|m| (format!("env.pass[{i}]"), m))?;
            if file.env.vars.contains_key(name) {
                // The tool would get both values, the host's among them.
                return Err((
                    format!("env.pass[{i}]"),
                    format!("{name:?} is also set in env.vars: give each variable one source, a fixed value or the host's"),
                ));
            }
            policy.env_pass.push(name.clone());
        }

        if file.guard.rules.as_deref() == Some("none") {
            policy.guard_rules = crate::guard::RuleSet::none();
        } else if let Some(rules) = file.guard.rules.as_deref().filter(|r| *r != "default") {
            let path = base.join(rules);
            let set =
                crate::guard::RuleSet::load(&path).map_err(|e| ("guard.rules".to_string(), e.0))?;
            policy.guard_rules = std::sync::Arc::new(set);
        }
        // A trusted tool's `rules = "none"` turns the learned detector off
        // too, unless `model` says otherwise.
        let model =
            file.guard
                .model
                .as_deref()
                .unwrap_or(if file.guard.rules.as_deref() == Some("none") {
                    "none"
                } else {
                    "default"
                });
        policy.guard_model = match model {
            "default" => Some(crate::guard::model::Model::shipped()),
            "none" => None,
            other => {
                return Err((
                    "guard.model".to_string(),
                    format!("{other:?} is not allowed: use \"default\" or \"none\""),
                ))
            }
        };
        for (id, action) in &file.guard.actions {
            let key = format!("guard.actions.{}", key_segment(id));
            let model = id == crate::guard::model::MODEL_ID;
            if model && policy.guard_model.is_none() {
                return Err((
                    key,
                    "the learned detector is off (guard.model = \"none\", or guard.rules = \"none\" without guard.model = \"default\")".into(),
                ));
            }
            if model && action == "redact" {
                return Err((
                    key,
                    "the learned detector cannot redact (it knows only its best window): use \"reject\" or \"flag\"".into(),
                ));
            }
            if !model && policy.guard_rules.get(id).is_none() {
                return Err((key, format!("no rule {id:?} in the guard's rules")));
            }
            let action = crate::guard::Action::parse(action).ok_or_else(|| {
                let allowed = if model {
                    "\"reject\" or \"flag\""
                } else {
                    "\"reject\", \"redact\" or \"flag\""
                };
                (key, format!("{action:?} is not allowed: use {allowed}"))
            })?;
            policy.guard_actions.insert(id.clone(), action);
        }
        if let Some(score) = file.guard.score {
            if file.guard.rules.as_deref() == Some("none") {
                return Err((
                    "guard.score".to_string(),
                    "the score comes from the rules' signals, and guard.rules = \"none\" turns them off: remove one of the two".into(),
                ));
            }
            // Checked as written here: a stricter `reject` under the rule
            // file's own `flag` is the user's choice, not a mistake.
            score.check().map_err(|m| ("guard.score".to_string(), m))?;
            policy.guard_score = score;
        }
        if let Some(mode) = &file.guard.spotlight {
            policy.guard_spotlight =
                Some(crate::guard::Spotlight::parse(mode).ok_or_else(|| {
                    (
                        "guard.spotlight".to_string(),
                        format!("{mode:?} is not allowed: use \"delimit\" or \"datamark\""),
                    )
                })?);
        }
        let limit = match &file.audit.payload_limit {
            Some(_) if !file.audit.payloads => {
                return Err((
                    "audit.payload_limit".to_string(),
                    "payloads are not recorded unless audit.payloads = true: set it, or remove the limit".into(),
                ))
            }
            Some(size) => parse_size("audit.payload_limit", size)?,
            None => DEFAULT_PAYLOAD_LIMIT,
        };
        check_max(
            "audit.payload_limit",
            limit,
            maxima.output,
            &show_size(limit),
            &show_size(maxima.output),
        )?;
        policy.audit_payloads = file.audit.payloads.then_some(limit);
        let b = &file.breaker;
        if let Some(n) = b.failures {
            policy.breaker.failures = n;
        }
        for (key, text, slot) in [
            ("breaker.window", &b.window, &mut policy.breaker.window),
            (
                "breaker.cooldown",
                &b.cooldown,
                &mut policy.breaker.cooldown,
            ),
        ] {
            if let Some(text) = text {
                *slot = parse_duration(text)
                    .filter(|d| !d.is_zero() && *d <= MAX_BREAKER_DURATION)
                    .ok_or_else(|| {
                        (
                            key.to_string(),
                            format!(
                                "{text:?} is not a duration from 1ms to 24h: write e.g. \"30s\" or \"1m\""
                            ),
                        )
                    })?;
            }
        }
        let expose = file.exports.expose.iter().flatten();
        let named = (expose.map(|n| ("exports.expose", n)))
            .chain(file.exports.hide.iter().map(|n| ("exports.hide", n)));
        for (key, name) in named {
            if name.is_empty() || name.contains('.') {
                return Err((
                    key.to_string(),
                    format!("{name:?} is not a function name: write the part of the tool's name after NAME., e.g. \"summarize\" or \"debug-*\""),
                ));
            }
        }
        policy.exports = Exports {
            expose: file.exports.expose,
            hide: file.exports.hide,
        };
        Ok(policy)
    }
}

impl fabric_guard::Destinations for NetPolicy {
    fn allows(&self, host: &str, port: u16) -> bool {
        NetPolicy::allows(self, host, port)
    }
}

impl NetPolicy {
    /// Whether `host:port` (host as in a URL: a name or an IP literal) is allowed.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let ip: Option<IpAddr> = host.parse().ok();
        self.allow.iter().any(|rule| {
            rule.port.is_none_or(|p| p == port)
                && match (&rule.host, ip) {
                    (NetHost::Name(name), None) => *name == host,
                    (NetHost::Cidr(net, bits), Some(ip)) => in_network(ip, *net, *bits),
                    _ => false,
                }
        })
    }
}

/// Smallest linear memory a policy may grant: one WebAssembly page.
pub const MIN_MEMORY: u64 = 64 << 10;

/// A guest path with empty and `.` components dropped: `//a/./b/` is `/a/b`.
fn normalize_guest(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// The line (from 1) of `key` (`limits.memory`, `fs[1].host`,
/// `net.allow[0]`, `guard.actions."token.role-line"`) in policy text, when
/// the text parses as TOML and holds the key.
fn line_of(text: &str, key: &str) -> Option<usize> {
    use toml::de::DeValue;
    let root = DeValue::Table(toml::de::DeTable::parse(text).ok()?.into_inner());
    let mut value = &root;
    let mut start = 0;
    for segment in key_segments(key)? {
        let next = match (segment, value) {
            (Segment::Key(name), DeValue::Table(t)) => {
                let (k, v) = t.iter().find(|(k, _)| k.get_ref().as_ref() == name)?;
                start = k.span().start;
                v
            }
            (Segment::Index(i), DeValue::Array(a)) => {
                let v = a.get(i)?;
                start = v.span().start;
                v
            }
            _ => return None,
        };
        value = next.get_ref();
    }
    Some(line_at(text, start))
}

/// The line (from 1) that byte `offset` of `text` is on.
fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// One step of a policy key: a table's key or an array's index.
enum Segment {
    Key(String),
    Index(usize),
}

/// Splits a key as this module writes them (`fs[1].host`,
/// `guard.actions."a.b"`) into its steps.
fn key_segments(key: &str) -> Option<Vec<Segment>> {
    let mut segments = Vec::new();
    let mut rest = key;
    while !rest.is_empty() {
        rest = rest.strip_prefix('.').unwrap_or(rest);
        if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"')?;
            segments.push(Segment::Key(quoted[..end].to_string()));
            rest = &quoted[end + 1..];
        } else if let Some(index) = rest.strip_prefix('[') {
            let end = index.find(']')?;
            segments.push(Segment::Index(index[..end].parse().ok()?));
            rest = &index[end + 1..];
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            segments.push(Segment::Key(rest[..end].to_string()));
            rest = &rest[end..];
        }
    }
    Some(segments)
}

/// `name` as a step of a key: bare when TOML allows it, else quoted.
fn key_segment(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

/// The key that the byte `offset` of policy text lies in (its name or its
/// value), written as [`line_of`] reads it: `fs[0].access`.
fn key_at_offset(text: &str, offset: usize) -> Option<String> {
    fn find(value: &toml::de::DeValue<'_>, offset: usize, path: &mut String) -> bool {
        let len = path.len();
        match value {
            toml::de::DeValue::Table(t) => {
                for (k, v) in t.iter() {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(&key_segment(k.get_ref()));
                    if find(v.get_ref(), offset, path)
                        || k.span().contains(&offset)
                        || v.span().contains(&offset)
                    {
                        return true;
                    }
                    path.truncate(len);
                }
            }
            toml::de::DeValue::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    path.push_str(&format!("[{i}]"));
                    if find(v.get_ref(), offset, path) || v.span().contains(&offset) {
                        return true;
                    }
                    path.truncate(len);
                }
            }
            _ => {}
        }
        false
    }
    let doc = toml::de::DeTable::parse(text).ok()?;
    let mut path = String::new();
    let root = toml::de::DeValue::Table(doc.into_inner());
    (find(&root, offset, &mut path) && !path.is_empty()).then_some(path)
}

/// A symbolic link inside a mount whose target lies outside it: the tool
/// cannot follow it (the sandbox refuses), which `fabric policy check`
/// reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeavingLink {
    /// The mount's key, `fs[0].host`.
    pub key: String,
    /// The link, on the host.
    pub link: PathBuf,
    /// Where it leads (as far as it resolves).
    pub target: PathBuf,
}

/// Entries walked per mount when looking for links that leave it.
const LINK_SCAN_LIMIT: usize = 100_000;

impl Policy {
    /// The symbolic links under each mount that lead out of it (at most
    /// 100,000 entries are walked per mount).
    pub fn links_leaving_mounts(&self) -> Vec<LeavingLink> {
        let mut found = Vec::new();
        for (i, m) in self.mounts.iter().enumerate() {
            let mut stack = vec![m.host.clone()];
            let mut walked = 0;
            while let Some(dir) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries.flatten() {
                    walked += 1;
                    if walked > LINK_SCAN_LIMIT {
                        break;
                    }
                    let path = entry.path();
                    let Ok(kind) = entry.file_type() else {
                        continue;
                    };
                    if kind.is_dir() {
                        stack.push(path);
                    } else if kind.is_symlink() {
                        let target = std::fs::read_link(&path).unwrap_or_default();
                        let resolved = path
                            .parent()
                            .map(|p| p.join(&target))
                            .and_then(|t| t.canonicalize().ok());
                        let inside = resolved.as_ref().is_some_and(|r| r.starts_with(&m.host));
                        if !inside {
                            found.push(LeavingLink {
                                key: format!("fs[{i}].host"),
                                link: path,
                                target: resolved.unwrap_or(target),
                            });
                        }
                    }
                }
            }
        }
        found
    }
}

/// Whether `host` is a name a `[net]` rule can hold, not an address written
/// some other way ("127.1", "0x7f000001", "10.0.0.256"): its last label is
/// not all digits, and no label is longer than DNS allows.
pub fn is_host_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && host.rsplit('.').next().is_some_and(|tld| {
            !tld.bytes().all(|b| b.is_ascii_digit())
                && !tld.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("0x"))
        })
}

/// Names the key a parse error points at: `table.key (line N)`.
fn key_at(text: &str, span: std::ops::Range<usize>) -> String {
    let start = span.start.min(text.len());
    let end = span.end.clamp(start, text.len());
    let line = line_at(text, start);
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_text = text[line_start..].lines().next().unwrap_or_default();
    // A bad value: name the key on its left.
    let token = match line_text.find('=') {
        Some(eq) if start - line_start > eq => line_text[..eq].trim(),
        _ => text.get(start..end).unwrap_or_default().trim(),
    }
    .trim_matches(['[', ']', '"']);
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(['[', ']']).trim());
    match table {
        Some(table) if !token.is_empty() => format!("{table}.{token} (line {line})"),
        _ => format!("{token} (line {line})"),
    }
}

fn hint_for(message: &str) -> &'static str {
    if message.contains("unknown field") {
        " (allowed tables: [limits] fuel/memory/timeout/output, [[fs]] host/guest/access, [net] allow/allow_private/listen, [env] vars/pass, [guard] rules/actions/score/spotlight/model, [audit] payloads/payload_limit, [breaker] failures/window/cooldown, [exports] expose/hide)"
    } else {
        ""
    }
}

fn check_max(
    key: &str,
    value: u64,
    max: u64,
    shown: &str,
    max_shown: &str,
) -> Result<(), (String, String)> {
    if value > max {
        return Err((
            key.into(),
            format!("{shown} is above the host's maximum of {max_shown}"),
        ));
    }
    Ok(())
}

fn check_env_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid variable name (letters, digits and _, not starting with a digit)"))
    }
}

/// `1 GiB`, `64 MiB`, `4 KiB` when exact, else `N bytes`.
pub(crate) fn show_size(bytes: u64) -> String {
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{} {unit}", bytes / size);
        }
    }
    format!("{bytes} bytes")
}

/// `"64 MiB"`, `"512KiB"`, `"1 GB"`, `"100"` or a plain integer of bytes.
pub(crate) fn parse_size(key: &str, size: &Size) -> Result<u64, (String, String)> {
    let text = match size {
        Size::Bytes(n) => return Ok(*n),
        Size::Text(t) => t.trim(),
    };
    let bad = || {
        (
            key.to_string(),
            format!(
                "{text:?} is not a size: write e.g. \"64 MiB\", \"512 KiB\" or a number of bytes"
            ),
        )
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '_')
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.replace('_', "").parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// A size written as text (`"64 MiB"`, `"4 KiB"`, `"1000"`), or what is
/// wrong with it.
pub fn parse_size_text(text: &str) -> Result<u64, String> {
    parse_size("size", &Size::Text(text.to_string())).map_err(|(_, m)| m)
}

/// `"250ms"`, `"2s"`, `"1.5s"`, `"1m"`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (num, unit) = text.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

/// One `[net] allow` entry, or a `listen` one when `listen` (which may name
/// port 0, any free port).
fn parse_net_rule(entry: &str, listen: bool) -> Result<NetRule, String> {
    let bad = |why: &str| {
        format!("{entry:?}: {why}; write \"host:port\", \"host:*\", \"10.0.0.0/8:443\" or \"[::1]:8080\"")
    };
    if entry.contains("://") {
        return Err(bad("a rule is a host and a port, not a URL"));
    }
    let (host, port) = entry
        .rsplit_once(':')
        .ok_or_else(|| bad("missing the port"))?;
    let port = match port {
        "*" => None,
        p => Some(
            // Port 0 is a bind to any free port: a listen rule's, never a
            // destination's.
            p.parse::<u16>()
                .ok()
                .filter(|&p| p != 0 || listen)
                .ok_or_else(|| {
                    bad(if listen {
                        "the port must be 0-65535 or *"
                    } else {
                        "the port must be 1-65535 or *"
                    })
                })?,
        ),
    };
    // "[::1]", "[::/0]" and "[::]/0" alike: brackets only around the host,
    // and an IPv6 host only in them ("::1:8080" could be either).
    let bracketed = host.starts_with('[');
    let host = match host.strip_prefix('[') {
        // "[::1]" or "[::/0]", or "[::]/0"
        Some(inner) if inner.contains(']') => inner.replacen(']', "", 1),
        Some(_) => return Err(bad("brackets go around an IPv6 address only")),
        None => host.to_string(),
    };
    if host.contains(['[', ']']) || (bracketed && !host.contains(':')) {
        return Err(bad("brackets go around an IPv6 address only"));
    }
    if !bracketed && host.contains(':') {
        return Err(bad("an IPv6 address goes in brackets, before the port"));
    }
    let host = host.as_str();
    if host.is_empty() {
        return Err(bad("missing the host"));
    }
    let (addr, bits) = match host.split_once('/') {
        Some((a, b)) => (
            a,
            Some(b.parse::<u8>().map_err(|_| bad("bad prefix length"))?),
        ),
        None => (host, None),
    };
    if let Ok(ip) = addr.parse::<IpAddr>() {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        if bits > max {
            return Err(bad("prefix length too long"));
        }
        // "10.1.2.5/24" is the network 10.1.2.0/24, as it always matched.
        return Ok(NetRule {
            host: NetHost::Cidr(network_of(ip, bits), bits),
            port,
        });
    }
    if bits.is_some() {
        return Err(bad("a /prefix needs an IP address"));
    }
    if !is_host_name(host) {
        return Err(bad("not a valid host name"));
    }
    Ok(NetRule {
        host: NetHost::Name(host.to_ascii_lowercase()),
        port,
    })
}

/// The network address of `ip/bits`: its bits past the prefix cleared.
fn network_of(ip: IpAddr, bits: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

/// Whether `ip` is in the network `net/bits` (same family only).
pub(crate) fn in_network(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    ip.is_ipv4() == net.is_ipv4() && network_of(ip, bits) == network_of(net, bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Policy, (String, String)> {
        Policy::parse(text, Path::new(env!("CARGO_MANIFEST_DIR")))
    }

    #[test]
    fn exports_choose_which_functions_are_tools() {
        let p = Policy::parse(
            "[exports]\nexpose = [\"top-*\", \"summarize\", \"init\"]\nhide = [\"top-secret\"]\n",
            Path::new("."),
        )
        .unwrap();
        assert!(p.exports.shows("summarize", false));
        assert!(p.exports.shows("top-words", false));
        assert!(!p.exports.shows("top-secret", false), "hide wins");
        assert!(!p.exports.shows("other", false), "not exposed");
        assert!(p.exports.shows("init", true), "a helper named exactly");
        let default = Policy::default();
        assert!(default.exports.shows("anything", false));
        assert!(
            !default.exports.shows("init", true),
            "helpers hidden by default"
        );
        let err =
            Policy::parse("[exports]\nhide = [\"words.init\"]\n", Path::new(".")).unwrap_err();
        assert!(err.0.starts_with("exports.hide"), "{err:?}");
    }

    #[test]
    fn listening_is_network_as_reaching_out_is() {
        assert!(!parse("").unwrap().net.grants_any());
        assert!(!parse("[net]\nallow_private = true\n")
            .unwrap()
            .net
            .grants_any());
        assert!(parse("[net]\nallow = [\"example.com:443\"]\n")
            .unwrap()
            .net
            .grants_any());
        assert!(parse("[net]\nlisten = [\"127.0.0.1:0\"]\n")
            .unwrap()
            .net
            .grants_any());
    }

    #[test]
    fn empty_file_is_the_default_policy() {
        let p = parse("").unwrap();
        assert_eq!(p.limits, Policy::default().limits);
        assert!(p.mounts.is_empty() && p.net.allow.is_empty() && p.env_vars.is_empty());
    }

    #[test]
    fn reads_every_section() {
        let p = parse(
            r#"
            [limits]
            fuel = 50_000_000
            memory = "32 MiB"
            timeout = "1500ms"
            output = 65536
            [[fs]]
            host = "src"
            guest = "/src"
            access = "read-write"
            [net]
            allow = ["Example.com:443", "10.1.2.0/24:5432", "api.example.org:*", "[::1]:8080"]
            [env]
            vars = { LOG_LEVEL = "info" }
            pass = ["GITHUB_TOKEN"]
            [guard]
            rules = "default"
            [audit]
            payloads = true
            payload_limit = "1 KiB"
            "#,
        )
        .unwrap();
        assert_eq!(p.limits.fuel, 50_000_000);
        assert_eq!(p.limits.memory, 32 << 20);
        assert_eq!(p.limits.timeout, Duration::from_millis(1500));
        assert_eq!(p.limits.output, 65536);
        assert!(
            p.mounts[0].writable
                && p.mounts[0].host.ends_with("host/src")
                && p.mounts[0].guest == "/src"
        );
        assert!(p.net.allows("example.com", 443));
        assert!(!p.net.allows("example.com", 80));
        assert!(!p.net.allows("evil-example.com", 443));
        assert!(p.net.allows("10.1.2.77", 5432));
        assert!(!p.net.allows("10.1.3.1", 5432));
        assert!(p.net.allows("api.example.org", 1));
        assert!(p.net.allows("[::1]", 8080));
        assert_eq!(p.env_vars, vec![("LOG_LEVEL".into(), "info".into())]);
        assert_eq!(p.env_pass, vec!["GITHUB_TOKEN".to_string()]);
        assert_eq!(p.audit_payloads, Some(1024));
        assert_eq!(parse("").unwrap().audit_payloads, None);
    }

    #[track_caller]
    fn rejects(text: &str, key: &str, needle: &str) {
        let (k, m) = parse(text).expect_err("policy should be rejected");
        assert!(k.contains(key), "key {k:?} should name {key:?} ({m})");
        assert!(
            m.contains(needle),
            "message {m:?} should contain {needle:?}"
        );
    }

    #[test]
    fn rejects_bad_policies_naming_key_and_allowed_values() {
        rejects(
            "[limits]\nfule = 1",
            "limits.fule (line 2)",
            "unknown field `fule`",
        );
        rejects(
            "[limit]\nfuel = 1",
            "limit (line 1)",
            "unknown field `limit`",
        );
        rejects(
            "[limits]\nfuel = 1\n[net]\nallow = [\"a:1\"]\ndeny = []",
            "net.deny (line 5)",
            "unknown field `deny`",
        );
        rejects("[limits]\nfuel = \"many\"", "limits.fuel", "");
        // A type error inside the second of an array of tables names it.
        rejects(
            "[[fs]]\nhost = \"src\"\nguest = \"/s\"\n\n[[fs]]\nhost = \"tests\"\nguest = \"/t\"\naccess = 5",
            "fs[1].access (line 8)",
            "expected a string",
        );
        rejects(
            "[limits]\nfuel = 1\n[[fs]]\nhost = \"src\"\nguest = \"/s\"\nmode = 1",
            "fs[0].mode (line 6)",
            "unknown field `mode`",
        );
        rejects(
            "[limits]\nmemory = \"64 MB/s\"",
            "limits.memory",
            "not a size",
        );
        rejects(
            "[limits]\nmemory = \"2 GiB\"",
            "limits.memory",
            "maximum of 1 GiB",
        );
        rejects("[limits]\nfuel = 0", "limits.fuel", "greater than 0");
        rejects("[limits]\nfuel = 100_000_000_001", "limits.fuel", "maximum");
        rejects(
            "[limits]\ntimeout = \"2 fortnights\"",
            "limits.timeout",
            "not a duration",
        );
        rejects(
            "[limits]\ntimeout = \"1h\"",
            "limits.timeout",
            "not a duration",
        );
        rejects(
            "[limits]\ntimeout = \"1ms\"",
            "limits.timeout",
            "at least 5ms (the clock's tick)",
        );
        rejects(
            "[limits]\ntimeout = \"301s\"",
            "limits.timeout",
            "at most 300s",
        );
        rejects("[limits]\noutput = \"65 MiB\"", "limits.output", "64 MiB");
        rejects(
            "[[fs]]\nhost = \"no/such/dir\"\nguest = \"/x\"",
            "fs[0].host",
            "cannot be used",
        );
        rejects(
            "[[fs]]\nhost = \"src\"\nguest = \"x\"",
            "fs[0].guest",
            "absolute",
        );
        rejects(
            "[[fs]]\nhost = \"src\"\nguest = \"/x\"\naccess = \"rw\"",
            "fs[0].access",
            "\"read-only\" or \"read-write\"",
        );
        // A read-write mount holding another: the tool could swap the inner
        // directory for a link. A read-only one holding a writable one is
        // fine, as are directories that do not nest.
        rejects(
            "[[fs]]\nhost = \"src\"\nguest = \"/s\"\naccess = \"read-write\"\n[[fs]]\nhost = \"src/server\"\nguest = \"/r\"",
            "fs[1].host",
            "lies inside the read-write mount",
        );
        rejects(
            "[[fs]]\nhost = \"src/server\"\nguest = \"/r\"\n[[fs]]\nhost = \"src\"\nguest = \"/s\"\naccess = \"read-write\"",
            "fs[1].host",
            "lies inside the read-write mount",
        );
        assert!(parse("[[fs]]\nhost = \"src\"\nguest = \"/s\"\n[[fs]]\nhost = \"src/server\"\nguest = \"/r\"\naccess = \"read-write\"").is_ok());
        assert!(parse("[[fs]]\nhost = \"src\"\nguest = \"/s\"\naccess = \"read-write\"\n[[fs]]\nhost = \"tests\"\nguest = \"/t\"\naccess = \"read-write\"").is_ok());
        rejects(
            "[env]\nvars = { TOKEN = \"public\" }\npass = [\"TOKEN\"]",
            "env.pass[0]",
            "also set in env.vars",
        );
        rejects(
            "[net]\nallow = [\"example.com\"]",
            "net.allow[0]",
            "missing the port",
        );
        rejects(
            "[net]\nallow = [\"example.com:99999\"]",
            "net.allow[0]",
            "1-65535",
        );
        // Entries that would mean something other than they seem.
        for (entry, says) in [
            ("example.com:0", "1-65535"),
            ("https://example.com:443", "not a URL"),
            ("2001:db8::1:443", "in brackets"),
            (
                "exa[mple].com:443",
                "brackets go around an IPv6 address only",
            ),
            (
                "[example.com]:443",
                "brackets go around an IPv6 address only",
            ),
            ("0X7F000001:80", "host name"),
            ("[::1:443", "brackets go around an IPv6 address only"),
            ("10.0.0.256:80", "host name"),
            ("127.1:80", "host name"),
            ("0x7f000001:80", "host name"),
        ] {
            rejects(
                &format!("[net]\nallow = [\"{entry}\"]"),
                "net.allow[0]",
                says,
            );
        }
        assert!(parse("[net]\nallow = [\"[::1]:80\", \"[2001:db8::/32]:*\", \"[::]/0:443\", \"localhost:6379\"]").is_ok());
        rejects(
            "[net]\nallow = [\"exa mple.com:80\"]",
            "net.allow[0]",
            "host name",
        );
        rejects(
            "[env]\npass = [\"1BAD\"]",
            "env.pass[0]",
            "not a valid variable name",
        );
        rejects(
            "[guard]\nrules = \"/no/such/rules.toml\"",
            "guard.rules",
            "/no/such/rules.toml",
        );
        rejects(
            "[guard.actions]\n\"no.such.rule\" = \"flag\"",
            "guard.actions.\"no.such.rule\" (line 2)",
            "no rule",
        );
        rejects(
            "[guard.actions]\n\"token.role-line\" = \"ban\"",
            "guard.actions.\"token.role-line\" (line 2)",
            "\"reject\", \"redact\" or \"flag\"",
        );
        let p = parse("[guard.actions]\n\"token.role-line\" = \"reject\"").unwrap();
        assert_eq!(
            p.guard_actions.get("token.role-line"),
            Some(&crate::guard::Action::Reject)
        );
    }

    #[test]
    fn guard_score_thresholds_and_spotlight() {
        let p = parse(
            "[guard]\nspotlight = \"datamark\"\n[guard.score]\nreject = 7\nflag = 4\nmodel = 0",
        )
        .unwrap();
        assert_eq!(p.guard_spotlight, Some(crate::guard::Spotlight::Datamark));
        assert_eq!(p.guard_score.reject, Some(7));
        assert_eq!(p.guard_score.flag, Some(4));
        assert_eq!(p.guard_score.redact, None);
        assert_eq!(p.guard_score.model, Some(0));
        // Thresholds that could not be meant, merged with the rules' own.
        rejects(
            "[guard.score]\nreject = 3\nflag = 7",
            "guard.score",
            "flag = 7 is above reject = 3",
        );
        rejects(
            "[guard.score]\nredact = 9\nreject = 8",
            "guard.score",
            "redact = 9 is above reject = 8",
        );
        // Stricter than the rule file's own flag (3): allowed.
        assert!(parse("[guard.score]\nreject = 2").is_ok());
        rejects(
            "[guard.score]\nspan = 0",
            "guard.score",
            "span = 0 is not allowed",
        );
        rejects("[env.vars]\nA = \"x\\u0000y\"", "env.vars.A", "NUL");
        rejects(
            "[limits]\nmemory = -1",
            "limits.memory",
            "a whole number of bytes",
        );
        rejects(
            "[audit]\npayload_limit = \"1 KiB\"",
            "audit.payload_limit",
            "audit.payloads = true",
        );
        rejects(
            "[guard]\nrules = \"none\"\n[guard.score]\nreject = 5",
            "guard.score",
            "turns them off",
        );
        assert!(parse("[guard.score]\nredact = 0\nreject = 4\nflag = 2").is_ok());
        let p = parse("").unwrap();
        assert_eq!(p.guard_spotlight, None);
        rejects(
            "[guard]\nspotlight = \"bold\"",
            "guard.spotlight",
            "\"delimit\" or \"datamark\"",
        );
        rejects("[guard.score]\nrejct = 3", "guard", "rejct");
    }

    #[test]
    fn guard_model_follows_rules_unless_named() {
        let on = |text: &str| parse(text).unwrap().guard_model.is_some();
        assert!(on(""));
        assert!(!on("[guard]\nmodel = \"none\""));
        // A trusted tool's `rules = "none"` turns the model off too...
        assert!(!on("[guard]\nrules = \"none\""));
        // ...unless the policy names it.
        assert!(on("[guard]\nrules = \"none\"\nmodel = \"default\""));
        rejects(
            "[guard]\nmodel = \"big\"",
            "guard.model",
            "\"default\" or \"none\"",
        );
        let p = parse("[guard.actions]\n\"model.injection\" = \"flag\"").unwrap();
        assert_eq!(
            p.guard_actions.get("model.injection"),
            Some(&crate::guard::Action::Flag)
        );
        rejects(
            "[guard]\nmodel = \"none\"\n[guard.actions]\n\"model.injection\" = \"flag\"",
            "guard.actions.\"model.injection\"",
            "learned detector is off",
        );
        rejects(
            "[guard.actions]\n\"model.injection\" = \"redact\"",
            "guard.actions.\"model.injection\"",
            "cannot redact",
        );
        rejects(
            "[guard.actions]\n\"model.injection\" = \"ban\"",
            "guard.actions.\"model.injection\"",
            "use \"reject\" or \"flag\"",
        );
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("k", &Size::Text("1 KiB".into())).unwrap(), 1024);
        assert_eq!(
            parse_size("k", &Size::Text("3MB".into())).unwrap(),
            3_000_000
        );
        assert!(parse_size("k", &Size::Text("99999999999999 GiB".into())).is_err());
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("5"), None);
    }
}
