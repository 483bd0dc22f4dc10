//! The callers file: who may call, with which token, which tools.
//!
//! ```toml
//! [defaults]                     # applies to every caller that does not say otherwise
//! max_in_flight = 16
//! [defaults.budget]
//! calls = 10_000
//!
//! [[caller]]
//! name = "ci"
//! token_hash = "…"               # blake3 of the bearer token, hex; never the token
//! scope = ["text.*", "fs.grep"]  # tool names and globs
//! max_in_flight = 4
//! [caller.budget]                # per caller: calls, fuel, wall, output, per_minute
//! fuel = 1_000_000_000
//! wall = "10m"
//! [caller.session_budget]        # the same keys, per agent session
//! calls = 100
//! ```
//!
//! Read strictly: unknown keys, duplicate names, a malformed hash or budget
//! are errors naming the file and the key. Budgets and `max_in_flight`,
//! merged with `[defaults]`, travel with the caller's [`Identity`] to the
//! admit stage. Tokens are matched by their hash in
//! constant time; [`CallerFile`] re-reads the file when it changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::admit::{Caller, Identity, Scope};
use crate::policy::{parse_duration, parse_size_text};

/// Prefix of every token `fabric caller add` makes, so a leaked one is
/// recognisable.
const TOKEN_PREFIX: &str = "fabric_";

/// A callers file that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{}: {key}: {message}", file.display())]
pub struct CallersError {
    /// The file.
    pub file: PathBuf,
    /// The key to blame (`(file)` for the whole file).
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl CallersError {
    fn new(file: &Path, key: impl Into<String>, message: impl Into<String>) -> CallersError {
        CallersError {
            file: file.to_path_buf(),
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A budget as written: every key optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    /// Calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calls: Option<u64>,
    /// Fuel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Wall-clock time, a duration (`"10m"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wall: Option<String>,
    /// Output bytes, a size (`"10 MiB"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Calls per minute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_minute: Option<u64>,
}

impl BudgetSpec {
    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        *self == BudgetSpec::default()
    }

    /// Sets `key` from `KEY=VALUE` text (the CLI's `--budget`), checked.
    pub fn set(&mut self, assignment: &str) -> Result<(), String> {
        let (key, value) = assignment
            .split_once('=')
            .ok_or_else(|| format!("{assignment:?}: write KEY=VALUE, e.g. calls=1000"))?;
        let (key, value) = (key.trim(), value.trim());
        let number = || {
            value
                .replace('_', "")
                .parse::<u64>()
                .map_err(|_| format!("{key}: {value:?} is not a whole number"))
        };
        match key {
            "calls" => self.calls = Some(number()?),
            "fuel" => self.fuel = Some(number()?),
            "per_minute" => self.per_minute = Some(number()?),
            "wall" => self.wall = Some(value.to_string()),
            "output" => self.output = Some(value.to_string()),
            _ => {
                return Err(format!(
                    "unknown budget key {key:?}: use calls, fuel, wall, output or per_minute"
                ))
            }
        }
        self.check().map(drop).map_err(|(k, m)| format!("{k}: {m}"))
    }

    /// The budget in numbers, or the key that is wrong.
    fn check(&self) -> Result<Budget, (String, String)> {
        let wall = match &self.wall {
            None => None,
            Some(w) => Some(parse_duration(w).ok_or_else(|| {
                (
                    "wall".to_string(),
                    format!("{w:?} is not a duration: write e.g. \"250ms\", \"30s\" or \"10m\""),
                )
            })?),
        };
        let output = match &self.output {
            None => None,
            Some(o) => Some(parse_size_text(o).map_err(|m| ("output".to_string(), m))?),
        };
        Ok(Budget {
            calls: self.calls,
            fuel: self.fuel,
            wall,
            output,
            per_minute: self.per_minute,
        })
    }
}

/// A budget, checked: what a caller (or one of its sessions) may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Budget {
    /// Calls.
    pub calls: Option<u64>,
    /// Fuel.
    pub fuel: Option<u64>,
    /// Wall-clock time of its calls.
    pub wall: Option<Duration>,
    /// Output bytes.
    pub output: Option<u64>,
    /// Calls per minute.
    pub per_minute: Option<u64>,
}

/// Settings every caller gets unless it says otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Calls of one caller running at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    /// Per-caller budget.
    #[serde(default, skip_serializing_if = "BudgetSpec::is_empty")]
    pub budget: BudgetSpec,
    /// Per-session budget.
    #[serde(default, skip_serializing_if = "BudgetSpec::is_empty")]
    pub session_budget: BudgetSpec,
}

/// One caller as written in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerSpec {
    /// The name recorded in audit records.
    pub name: String,
    /// blake3 of its bearer token, hex.
    pub token_hash: String,
    /// Tool names and globs it may call.
    pub scope: Vec<String>,
    /// Calls running at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    /// Per-caller budget.
    #[serde(default, skip_serializing_if = "BudgetSpec::is_empty")]
    pub budget: BudgetSpec,
    /// Per-session budget.
    #[serde(default, skip_serializing_if = "BudgetSpec::is_empty")]
    pub session_budget: BudgetSpec,
}

/// The callers file as written: what `fabric caller` edits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallersSpec {
    /// Applies to every caller.
    #[serde(default, skip_serializing_if = "is_default")]
    pub defaults: Defaults,
    /// The callers.
    #[serde(default, rename = "caller")]
    pub callers: Vec<CallerSpec>,
}

fn is_default(d: &Defaults) -> bool {
    *d == Defaults::default()
}

impl CallersSpec {
    /// Reads and checks `path`; a missing file is an error.
    pub fn read(path: &Path) -> Result<CallersSpec, CallersError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            CallersError::new(
                path,
                "(file)",
                format!(
                    "cannot read it ({e}); create it with `fabric caller add NAME --scope GLOB`"
                ),
            )
        })?;
        CallersSpec::parse(path, &text)
    }

    /// Parses and checks the text of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<CallersSpec, CallersError> {
        let spec: CallersSpec = toml::from_str(text).map_err(|e| {
            let message = e.message().to_string();
            let key = match e.span() {
                Some(span) => format!("line {}", text[..span.start].lines().count().max(1)),
                None => "(file)".to_string(),
            };
            CallersError::new(path, key, message)
        })?;
        spec.check(path)?;
        Ok(spec)
    }

    fn check(&self, path: &Path) -> Result<(), CallersError> {
        if self.defaults.max_in_flight == Some(0) {
            return Err(CallersError::new(
                path,
                "defaults.max_in_flight",
                "must be at least 1",
            ));
        }
        for (table, spec) in [
            ("defaults.budget", &self.defaults.budget),
            ("defaults.session_budget", &self.defaults.session_budget),
        ] {
            spec.check()
                .map_err(|(k, m)| CallersError::new(path, format!("{table}.{k}"), m))?;
        }
        let mut seen = std::collections::HashSet::new();
        let mut hashes = std::collections::HashMap::new();
        for (i, c) in self.callers.iter().enumerate() {
            let at = |key: &str| format!("caller[{i}] ({:?}).{key}", c.name);
            check_name(&c.name).map_err(|m| CallersError::new(path, at("name"), m))?;
            if !seen.insert(c.name.as_str()) {
                return Err(CallersError::new(
                    path,
                    at("name"),
                    "another caller has this name; names must be unique",
                ));
            }
            let hash = parse_hash(&c.token_hash).ok_or_else(|| {
                CallersError::new(
                    path,
                    at("token_hash"),
                    "must be 64 hex digits, the blake3 hash of the token (fabric caller add writes it)",
                )
            })?;
            // One token naming two callers would take the scope and budgets
            // of whichever comes last: a copied block must not widen a token.
            if let Some(other) = hashes.insert(hash, c.name.as_str()) {
                return Err(CallersError::new(
                    path,
                    at("token_hash"),
                    format!(
                        "caller {other:?} has the same token; each caller needs a token of its own (fabric caller add makes one)"
                    ),
                ));
            }
            if c.scope.is_empty() || c.scope.iter().any(|s| s.trim().is_empty()) {
                return Err(CallersError::new(
                    path,
                    at("scope"),
                    "give at least one tool name or glob, e.g. [\"text.*\"]",
                ));
            }
            if c.max_in_flight == Some(0) {
                return Err(CallersError::new(
                    path,
                    at("max_in_flight"),
                    "must be at least 1 (remove the caller to lock it out)",
                ));
            }
            for (table, spec) in [("budget", &c.budget), ("session_budget", &c.session_budget)] {
                spec.check()
                    .map_err(|(k, m)| CallersError::new(path, at(&format!("{table}.{k}")), m))?;
            }
        }
        Ok(())
    }

    /// Writes the file (0600), atomically: a temporary file renamed over it.
    /// A spec that [`CallersSpec::parse`] would refuse is not written (the
    /// error names the key and says so), so no writer leaves a file that
    /// every later reader, `fabric serve` among them, refuses.
    pub fn write(&self, path: &Path) -> Result<(), CallersError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        self.check(path).map_err(|e| CallersError {
            message: format!("{}; nothing was written", e.message),
            ..e
        })?;
        let fail = |what: &str, e: std::io::Error| {
            CallersError::new(path, "(file)", format!("cannot {what} ({e})"))
        };
        let text = toml::to_string_pretty(self)
            .map_err(|e| CallersError::new(path, "(file)", format!("cannot encode it ({e})")))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| fail("create its directory", e))?;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| fail("write it", e))?;
        file.write_all(text.as_bytes())
            .and_then(|_| file.sync_all())
            .map_err(|e| fail("write it", e))?;
        std::fs::rename(&tmp, path).map_err(|e| fail("replace it", e))
    }

    /// The caller named `name`.
    pub fn get(&self, name: &str) -> Option<&CallerSpec> {
        self.callers.iter().find(|c| c.name == name)
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a caller name: 1-64 letters, digits, '-', '_', '.', '@'"
        ))
    }
}

/// Checks a caller name as `fabric caller add` takes it.
pub fn validate_name(name: &str) -> Result<(), String> {
    check_name(name)
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    blake3::Hash::from_hex(hex).ok().map(|h| *h.as_bytes())
}

/// A fresh random bearer token (256 bits) and its hash, hex.
pub fn new_token() -> (String, String) {
    let bytes: [u8; 32] = rand::random();
    let token = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = blake3::hash(token.as_bytes()).to_hex().to_string();
    (token, hash)
}

/// The callers of a file, ready to authenticate tokens.
#[derive(Debug, Default)]
pub struct Callers {
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    hash: [u8; 32],
    identity: Arc<Identity>,
}

/// What the admit stage will enforce for one caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Calls running at once.
    pub max_in_flight: Option<u32>,
    /// Per caller.
    pub budget: Budget,
    /// Per session.
    pub session_budget: Budget,
}

impl Callers {
    /// The callers of a checked spec.
    pub fn from_spec(spec: &CallersSpec) -> Callers {
        let merge = |own: &BudgetSpec, default: &BudgetSpec| {
            let d = default.check().unwrap_or_default();
            let o = own.check().unwrap_or_default();
            Budget {
                calls: o.calls.or(d.calls),
                fuel: o.fuel.or(d.fuel),
                wall: o.wall.or(d.wall),
                output: o.output.or(d.output),
                per_minute: o.per_minute.or(d.per_minute),
            }
        };
        let entries = spec
            .callers
            .iter()
            .filter_map(|c| {
                Some(Entry {
                    hash: parse_hash(&c.token_hash)?,
                    identity: Arc::new(Identity {
                        name: c.name.clone(),
                        scope: Scope::new(c.scope.iter().cloned()),
                        limits: Limits {
                            max_in_flight: c.max_in_flight.or(spec.defaults.max_in_flight),
                            budget: merge(&c.budget, &spec.defaults.budget),
                            session_budget: merge(&c.session_budget, &spec.defaults.session_budget),
                        },
                    }),
                })
            })
            .collect();
        Callers { entries }
    }

    /// The caller whose token this is. Every entry is compared, in constant
    /// time per entry, whether or not one matched.
    pub fn authenticate(&self, token: &str) -> Option<Arc<Identity>> {
        let hash = blake3::hash(token.as_bytes());
        let mut found = None;
        for e in &self.entries {
            if bool::from(e.hash.ct_eq(hash.as_bytes())) {
                found = Some(e.identity.clone());
            }
        }
        found
    }

    /// The limits of the caller named `name` (budgets merged with the
    /// defaults), for the admit stage.
    pub fn limits(&self, name: &str) -> Option<Limits> {
        self.entries
            .iter()
            .find(|e| e.identity.name == name)
            .map(|e| e.identity.limits)
    }

    /// How many callers there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A callers file that is re-read when it changes (its modification time or
/// length), checked at most every [`CallerFile::RECHECK`] on the request path.
/// A change that does not parse keeps the callers in force and is reported.
#[derive(Debug)]
pub struct CallerFile {
    path: PathBuf,
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    callers: Arc<Callers>,
    stamp: Option<(SystemTime, u64)>,
    checked: std::time::Instant,
}

impl CallerFile {
    /// How often the file's metadata is looked at.
    pub const RECHECK: Duration = Duration::from_millis(250);

    /// Loads `path`; it must exist and parse.
    pub fn open(path: &Path) -> Result<CallerFile, CallersError> {
        let stamp = stamp(path);
        let spec = CallersSpec::read(path)?;
        Ok(CallerFile {
            path: path.to_path_buf(),
            state: Mutex::new(Loaded {
                callers: Arc::new(Callers::from_spec(&spec)),
                stamp,
                checked: std::time::Instant::now(),
            }),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The callers in force, re-read first if the file changed.
    pub fn current(&self) -> Arc<Callers> {
        let mut state = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        if state.checked.elapsed() >= Self::RECHECK {
            state.checked = std::time::Instant::now();
            let now = stamp(&self.path);
            if now != state.stamp {
                state.stamp = now;
                match CallersSpec::read(&self.path) {
                    Ok(spec) => {
                        state.callers = Arc::new(Callers::from_spec(&spec));
                        tracing::info!(path = %self.path.display(), callers = state.callers.len(), "callers file reloaded");
                    }
                    Err(e) => {
                        tracing::error!("{e}; keeping the callers loaded before");
                        eprintln!("error: {e}; keeping the callers loaded before");
                    }
                }
            }
        }
        state.callers.clone()
    }

    /// The caller a request's `Authorization` header value names.
    pub fn caller(&self, authorization: Option<&str>) -> Caller {
        let Some(value) = authorization else {
            return Caller::Unauthenticated("no bearer token".into());
        };
        // The scheme's name is case-insensitive (RFC 9110, 11.1).
        let Some(token) = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token)
        else {
            return Caller::Unauthenticated(
                "the Authorization header is not a bearer token".into(),
            );
        };
        match self.current().authenticate(token.trim()) {
            Some(identity) => Caller::Named(identity),
            None => Caller::Unauthenticated("the bearer token is not a known caller's".into()),
        }
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Budgets as `KEY=VALUE` lines, for `fabric caller show`.
pub fn describe_budget(spec: &BudgetSpec) -> BTreeMap<&'static str, String> {
    let mut out = BTreeMap::new();
    if let Some(v) = spec.calls {
        out.insert("calls", v.to_string());
    }
    if let Some(v) = spec.fuel {
        out.insert("fuel", v.to_string());
    }
    if let Some(v) = &spec.wall {
        out.insert("wall", v.clone());
    }
    if let Some(v) = &spec.output {
        out.insert("output", v.clone());
    }
    if let Some(v) = spec.per_minute {
        out.insert("per_minute", v.to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_authenticate_by_hash() {
        let (token, hash) = new_token();
        assert!(token.starts_with(TOKEN_PREFIX));
        let spec = CallersSpec {
            defaults: Defaults::default(),
            callers: vec![CallerSpec {
                name: "ci".into(),
                token_hash: hash,
                scope: vec!["text.*".into()],
                max_in_flight: None,
                budget: BudgetSpec::default(),
                session_budget: BudgetSpec::default(),
            }],
        };
        let callers = Callers::from_spec(&spec);
        assert_eq!(
            callers.authenticate(&token).map(|i| i.name.clone()),
            Some("ci".into())
        );
        assert!(callers.authenticate("fabric_wrong").is_none());
        let text = toml::to_string_pretty(&spec).unwrap();
        assert!(!text.contains(&token));
        assert_eq!(
            CallersSpec::parse(Path::new("c.toml"), &text).unwrap(),
            spec
        );
    }

    #[test]
    fn strict_parsing_names_the_key() {
        let p = Path::new("callers.toml");
        let bad_hash = "[[caller]]\nname = \"a\"\ntoken_hash = \"xyz\"\nscope = [\"*\"]\n";
        let e = CallersSpec::parse(p, bad_hash).unwrap_err().to_string();
        assert!(
            e.contains("callers.toml") && e.contains("token_hash"),
            "{e}"
        );
        let unknown = "[[caller]]\nname = \"a\"\ntokn = \"x\"\n";
        let e = CallersSpec::parse(p, unknown).unwrap_err().to_string();
        assert!(e.contains("tokn") && e.contains("line"), "{e}");
        let h = "0".repeat(64);
        let bad_wall = format!(
            "[[caller]]\nname = \"a\"\ntoken_hash = \"{h}\"\nscope = [\"*\"]\n[caller.budget]\nwall = \"soon\"\n"
        );
        let e = CallersSpec::parse(p, &bad_wall).unwrap_err().to_string();
        assert!(e.contains("budget.wall"), "{e}");
        let mut b = BudgetSpec::default();
        assert!(b.set("output=1 MiB").is_ok());
        assert!(b.set("wall=10m").is_ok());
        assert!(b.set("colors=3").is_err());
        assert!(b.set("calls=many").is_err());
        // One token for two callers (a copied block): refused, naming both.
        let h = "0".repeat(64);
        let twice = format!(
            "[[caller]]\nname = \"bot\"\ntoken_hash = \"{h}\"\nscope = [\"text.echo\"]\n[[caller]]\nname = \"admin\"\ntoken_hash = \"{h}\"\nscope = [\"*\"]\n"
        );
        let e = CallersSpec::parse(p, &twice).unwrap_err().to_string();
        assert!(
            e.contains("\"admin\"") && e.contains("\"bot\" has the same token"),
            "{e}"
        );
    }
}
