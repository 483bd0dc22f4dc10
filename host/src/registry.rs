//! The registry: every component in the tools directory, described when
//! first needed and compiled on first call.
//!
//! Opening the registry only lists `NAME.wasm` files, so start-up costs the
//! same with 3 components or 30. A component is *described* the first time
//! one of its tools is looked up or the tools are listed: the file is read
//! (a regular file no larger than the limit; a symbolic link only to a file
//! inside the tools directory), hashed (blake3), its policy
//! `policies/NAME.toml` loaded, and its WIT decoded from the binary (no
//! compiling) to learn its exported functions with their types and docs and
//! derive each tool's JSON Schemas. It is *compiled and linked* on the first
//! call of one of its tools (or by [`Registry::precompile`]): the compiled
//! artifact comes from the [`CodeCache`] (checked to be made by this host
//! from these very bytes) or is compiled off the async reactor and stored,
//! then pre-linked against the WASI linker ([`InstancePre`]).
//!
//! A component that fails any of this is a [`LoadProblem`] naming the file
//! (and the function, where one is to blame) and why; the other components
//! still work. Its tools are listed as unavailable with the reason, and a
//! call of one answers that reason. A failure to compile or link is
//! remembered in the cache beside the compiled code (`DIGEST-ENGINE-POOL.failed`)
//! so that later listings show it without compiling again. A function whose
//! types the JSON mapping cannot carry is listed as unavailable, with the
//! reason.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use serde_json::Value;
use wasmtime::component::{Component, ComponentExportIndex, InstancePre, Linker};
use wasmtime::Engine;
use wit_parser::{FunctionKind, Resolve, Type, TypeDefKind, WorldItem};

use crate::config::HostConfig;
use crate::files::{self, Links, ReadError};
use crate::guard::GuardConfig;
use crate::policy::Policy;
use crate::sandbox::State;
use crate::schema::{self, Param, Ty};
use fabric_wit_docs::Docs;

/// A cached artifact may be this many times the largest component allowed
/// (compiled code is 2-4 times its component's size).
const ARTIFACT_GROWTH: u64 = 8;

/// The file beside the audit signing key that holds the compiled-code key.
pub const CODE_KEY_FILE: &str = "compiled.key";

/// A tools or policies directory that could not be used at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The tools directory cannot be read.
    #[error("cannot read the tools directory {dir}: {source}")]
    Tools {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The policies directory is missing or not a directory. Loading on
    /// without it would give every tool the default policy.
    #[error("cannot use the policies directory {dir}: {problem}; create it (an empty directory gives every tool the default policy), or name the directory that holds the tools' policies")]
    Policies {
        /// The directory.
        dir: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
}

/// Something about one component that kept it, or one of its functions,
/// from loading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadProblem {
    /// The component file (or policy file).
    pub file: PathBuf,
    /// The function to blame, when it is one function.
    pub function: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for LoadProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.function {
            Some(func) => write!(f, "{}: {func}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// A described component: what every call of its tools shares. Its code
/// is compiled and linked on first use ([`Loaded::linked`]).
pub struct Loaded {
    /// blake3 digest of the component's bytes.
    pub digest: blake3::Hash,
    /// Its policy.
    pub policy: Arc<Policy>,
    /// The output guard its policy configures.
    pub guard: GuardConfig,
    file: PathBuf,
    /// `(exported interface, function)` of each callable, by its slot.
    exports: Vec<(Option<String>, String)>,
    shared: Arc<Shared>,
    /// Why it cannot be compiled or linked, remembered from an earlier try.
    failed_before: Option<String>,
    code: tokio::sync::OnceCell<Result<Linked, String>>,
    /// When a call last started or ended ([`crate::idle::now_ms`]), calls
    /// running now, and the `last_used_ms` whose idle spell released the
    /// code's pages (a call since makes them differ).
    last_used_ms: AtomicU64,
    in_use: AtomicU32,
    released_for: AtomicU64,
}

/// A call's use of a component's code, from [`Loaded::in_use`] until dropped.
#[must_use = "the code is in use only while the guard lives"]
pub struct InUse<'a>(&'a Loaded);

impl Drop for InUse<'_> {
    fn drop(&mut self) {
        self.0
            .last_used_ms
            .store(crate::idle::now_ms(), Ordering::SeqCst);
        self.0.in_use.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A component compiled and pre-linked against the WASI linker.
pub struct Linked {
    /// The pre-linked component.
    pub pre: InstancePre<State>,
    /// Each callable's export index (resolved once), by its slot.
    funcs: Vec<Option<ComponentExportIndex>>,
}

impl Linked {
    /// The export index of `callable`'s function.
    pub fn func(&self, callable: &Callable) -> Result<ComponentExportIndex, String> {
        self.funcs
            .get(callable.slot)
            .copied()
            .flatten()
            .ok_or_else(|| "the component does not export this function".to_string())
    }
}

impl Loaded {
    /// The component compiled and linked: the first caller compiles (off
    /// the async reactor, or from the cache), the others wait for it.
    pub async fn linked(&self) -> Result<&Linked, String> {
        self.last_used_ms
            .store(crate::idle::now_ms(), Ordering::SeqCst);
        if let Some(reason) = &self.failed_before {
            return Err(reason.clone());
        }
        let code = self.code.get_or_init(|| async {
            let (shared, file, digest) = (self.shared.clone(), self.file.clone(), self.digest);
            let exports = self.exports.clone();
            // Its warnings go where the caller's would.
            let dispatch = tracing::dispatcher::get_default(Clone::clone);
            let span = tracing::Span::current();
            tokio::task::spawn_blocking(move || {
                tracing::dispatcher::with_default(&dispatch, || {
                    span.in_scope(|| shared.link(&file, digest, &exports))
                })
            })
            .await
            .unwrap_or_else(|e| Err(format!("compiling it failed: {e}")))
        });
        code.await.as_ref().map_err(Clone::clone)
    }

    /// Marks the code in use by a call until the guard drops: an idle
    /// release passes it by, and the call's end counts as a use.
    pub fn in_use(&self) -> InUse<'_> {
        self.in_use.fetch_add(1, Ordering::SeqCst);
        InUse(self)
    }

    /// Why it cannot be compiled or linked, if that is known.
    pub fn failure(&self) -> Option<&str> {
        match (&self.failed_before, self.code.get()) {
            (Some(reason), _) | (None, Some(Err(reason))) => Some(reason),
            _ => None,
        }
    }
}

/// What a tool function returns, as the pipeline sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Returns {
    /// Nothing: the output is `null`.
    Nothing,
    /// A plain value.
    Value(Ty),
    /// `result<T, E>`: `ok` is the output, `err` is a `tool_error`.
    Result {
        /// `T`, if any.
        ok: Option<Ty>,
        /// `E`, if any.
        err: Option<Ty>,
    },
}

/// One tool: an exported function of a component.
pub struct Tool {
    /// `NAME.FUNCTION`.
    pub name: String,
    /// The WIT doc comment of the function, if the component carries it.
    pub description: Option<String>,
    /// JSON Schema of the arguments object (null when unavailable).
    pub input_schema: Value,
    /// JSON Schema of the output (null when unavailable).
    pub output_schema: Value,
    /// Whether and how it can be called.
    pub status: Status,
}

impl Tool {
    /// Why it cannot be called, if it cannot (as far as is known without
    /// compiling it).
    pub fn unavailable(&self) -> Option<&str> {
        match &self.status {
            Status::Ready(c) => c.component.failure(),
            Status::Unavailable(reason) => Some(reason),
        }
    }
}

/// Whether a tool can be called.
pub enum Status {
    /// Callable (once its component compiles and links).
    Ready(Callable),
    /// Listed but not callable, with the reason.
    Unavailable(String),
}

/// Everything needed to call a ready tool.
pub struct Callable {
    /// Its component.
    pub component: Arc<Loaded>,
    /// Its function's place in the component's exports.
    slot: usize,
    /// The parameters, in order.
    pub params: Vec<Param>,
    /// The return shape.
    pub returns: Returns,
}

/// What is shared by every component of a registry.
struct Shared {
    engine: Engine,
    linker: Linker<State>,
    /// The cache and the largest artifact it may hold.
    cache: Option<(CodeCache, u64)>,
    policies_dir: PathBuf,
    /// The tools directory, resolved.
    inside: PathBuf,
    host: HostConfig,
}

/// One `NAME.wasm`, described on first use.
struct Entry {
    file: PathBuf,
    described: OnceLock<Described>,
}

/// A component's tools and what is wrong with it.
struct Described {
    tools: BTreeMap<String, Tool>,
    problems: Vec<LoadProblem>,
    /// Why none of its tools are known (it could not be read or decoded).
    broken: Option<String>,
    /// The component, when it decodes and its policy loads.
    loaded: Option<Arc<Loaded>>,
}

/// All tools, by name, in components described when first needed.
pub struct Registry {
    shared: Arc<Shared>,
    components: BTreeMap<String, Entry>,
    /// Files that cannot be components (bad names).
    problems: Vec<LoadProblem>,
}

impl Registry {
    /// Compiled-code cache lookups so far: (hits, misses). Zero without a
    /// cache.
    pub fn cache_lookups(&self) -> (u64, u64) {
        self.shared.cache.as_ref().map_or((0, 0), |(c, _)| {
            (
                c.hits.load(Ordering::Relaxed),
                c.misses.load(Ordering::Relaxed),
            )
        })
    }

    /// Gives back the resident pages of the compiled code of every component
    /// that has had no call running for `idle` (see `idle.rs`); returns the
    /// bytes given back. A component is released once per idle spell.
    pub fn release_idle(&self, idle: std::time::Duration) -> u64 {
        let now = crate::idle::now_ms();
        let idle_ms = idle.as_millis() as u64;
        let mut total = 0;
        for entry in self.components.values() {
            let Some(loaded) = entry.described.get().and_then(|d| d.loaded.as_ref()) else {
                continue;
            };
            // Calls running first: a call that ends after this read has
            // stamped its end before `last` is read.
            let running = loaded.in_use.load(Ordering::SeqCst);
            let last = loaded.last_used_ms.load(Ordering::SeqCst);
            if running > 0
                || loaded.released_for.load(Ordering::SeqCst) == last
                || now.saturating_sub(last) < idle_ms
            {
                continue;
            }
            let Some(Ok(linked)) = loaded.code.get() else {
                continue;
            };
            // SAFETY: the code's file in the compile cache is this user's
            // and no one else may write it (see `load_checked`); it is only
            // ever replaced by a rename, never changed in place. Code
            // compiled in this process is anonymous memory, which `release`
            // leaves alone.
            match unsafe { crate::idle::release(linked.pre.component().image_range()) } {
                crate::idle::Released::Pages(n) => total += n,
                crate::idle::Released::Kept => tracing::debug!(
                    file = %loaded.file.display(),
                    "compiled code not from a cached file, or with pages of the process's own: kept"
                ),
                crate::idle::Released::Unsupported => return total,
            }
            // A call that started since stamped a newer time: its idle
            // spell will be released in turn.
            loaded.released_for.store(last, Ordering::SeqCst);
        }
        total
    }

    /// Lists every `*.wasm` in `tools_dir` (nothing is read yet), with
    /// policies from `policies_dir` (which must exist), caching compiled
    /// code in `cache` when given.
    pub fn load(
        engine: &Engine,
        linker: &Linker<State>,
        tools_dir: &Path,
        policies_dir: &Path,
        cache: Option<CodeCache>,
        host: &HostConfig,
    ) -> Result<Registry, RegistryError> {
        let tools_error = |source| RegistryError::Tools {
            dir: tools_dir.into(),
            source,
        };
        let read = std::fs::read_dir(tools_dir).map_err(tools_error)?;
        // Symbolic links are followed only to files under this directory.
        let inside = std::fs::canonicalize(tools_dir).map_err(tools_error)?;
        let policies_problem = match std::fs::metadata(policies_dir) {
            Ok(meta) if meta.is_dir() => None,
            Ok(meta) => Some(format!("it is {}", files::describe(&meta.file_type()))),
            Err(e) => Some(e.to_string()),
        };
        if let Some(problem) = policies_problem {
            return Err(RegistryError::Policies {
                dir: policies_dir.into(),
                problem,
            });
        }
        let limit = host.max_component_size.saturating_mul(ARTIFACT_GROWTH);
        let mut registry = Registry {
            shared: Arc::new(Shared {
                engine: engine.clone(),
                linker: linker.clone(),
                cache: cache.map(|c| (c, limit)),
                policies_dir: policies_dir.into(),
                inside,
                host: host.clone(),
            }),
            components: BTreeMap::new(),
            problems: Vec::new(),
        };
        let mut files: Vec<PathBuf> = read
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
            .collect();
        files.sort();
        for file in files {
            let name = file
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            {
                registry.problems.push(LoadProblem {
                    file,
                    function: None,
                    message: format!("{name:?} is not a valid tool name: rename the file to lower-case letters, digits, '-' and '_'"),
                });
                continue;
            }
            let described = OnceLock::new();
            registry.components.insert(name, Entry { file, described });
        }
        Ok(registry)
    }

    fn described<'a>(&'a self, entry: &'a Entry) -> &'a Described {
        entry
            .described
            .get_or_init(|| self.shared.describe(&entry.file))
    }

    /// The tool called `name` (describing only its component).
    pub fn get(&self, name: &str) -> Option<&Tool> {
        let component = name.split('.').next().unwrap_or_default();
        let entry = self.components.get(component)?;
        self.described(entry).tools.get(name)
    }

    /// Why the component a tool named `name` would belong to offers no
    /// tools at all, if it exists and is broken that way.
    pub fn broken(&self, name: &str) -> Option<&str> {
        let component = name.split('.').next().unwrap_or_default();
        let entry = self.components.get(component)?;
        self.described(entry).broken.as_deref()
    }

    /// All tools, by component name, then function name (describing every
    /// component).
    pub fn tools(&self) -> impl Iterator<Item = &Tool> {
        self.components
            .values()
            .flat_map(|entry| self.described(entry).tools.values())
    }

    /// What failed to load, as far as is known without compiling: bad
    /// files, policies, single functions, and compile or link failures met
    /// before (describing every component).
    pub fn problems(&self) -> Vec<LoadProblem> {
        let mut problems = self.problems.clone();
        for entry in self.components.values() {
            let described = self.described(entry);
            problems.extend(described.problems.iter().cloned());
            let failed = described.loaded.as_ref().and_then(|l| l.failure());
            if let Some(reason) = failed {
                problems.push(LoadProblem {
                    file: entry.file.clone(),
                    function: None,
                    message: reason.to_string(),
                });
            }
        }
        problems.sort_by(|a, b| a.file.cmp(&b.file));
        problems
    }

    /// Compiles and links every component not yet compiled (from the cache
    /// where it can), one at a time: each component's file and what became
    /// of it.
    pub async fn precompile(&self) -> Vec<(PathBuf, Result<(), String>)> {
        let mut done = Vec::new();
        for entry in self.components.values() {
            let described = self.described(entry);
            if let Some(reason) = &described.broken {
                done.push((entry.file.clone(), Err(reason.clone())));
                continue;
            }
            let outcome = match &described.loaded {
                Some(component) => component.linked().await.map(|_| ()),
                None => Err(described
                    .problems
                    .first()
                    .map_or_else(|| "it cannot be loaded".to_string(), |p| p.message.clone())),
            };
            done.push((entry.file.clone(), outcome));
        }
        done
    }
}

/// Toolchain helpers exported beside the author's functions, as
/// `(exported interface, function)`: hidden unless a policy's
/// `[exports] expose` names them.
const HELPERS: &[(&str, &str)] = &[
    // componentize-py's pre-initialisation hook (run once by its build).
    ("exports", "init"),
];

/// Decodes a component's types, or says what the file is instead.
fn decode(bytes: &[u8]) -> Result<(wit_parser::Resolve, wit_parser::WorldId), String> {
    if !bytes.starts_with(b"\0asm") {
        return Err("not a WebAssembly file".into());
    }
    // A core module or a file cut short, said as such (the decoder's own
    // error would not say what to do).
    fabric_wit_docs::check_component(bytes)
        .map_err(|why| format!("not a valid component: {why}"))?;
    match wit_component::decode(bytes) {
        Ok(wit_component::DecodedWasm::Component(resolve, world)) => Ok((resolve, world)),
        Ok(wit_component::DecodedWasm::WitPackage(..)) => {
            Err("this is a WIT package, not a runnable component".into())
        }
        Err(e) => Err(format!(
            "not a valid component ({e:#}); the file is damaged or cut short: build it again"
        )),
    }
}

/// The functions a decoded component exports: each with the full name of
/// its exported interface (`None` for the world's own) and whether it is a
/// toolchain helper ([`HELPERS`]).
fn exported_functions(
    resolve: &wit_parser::Resolve,
    world: wit_parser::WorldId,
) -> Vec<(Option<String>, &wit_parser::Function, bool)> {
    let mut out = Vec::new();
    for (key, item) in &resolve.worlds[world].exports {
        let (instance, functions): (Option<String>, Vec<&wit_parser::Function>) = match item {
            WorldItem::Function(f) => (None, vec![f]),
            WorldItem::Interface { id, .. } => (
                Some(resolve.name_world_key(key)),
                resolve.interfaces[*id].functions.values().collect(),
            ),
            WorldItem::Type { .. } => continue,
        };
        for f in functions {
            let helper = HELPERS
                .iter()
                .any(|(i, n)| instance.as_deref() == Some(*i) && *n == f.name);
            out.push((instance.clone(), f, helper));
        }
    }
    out
}

/// The doc keys ([`fabric_wit_docs::function_key`]) of the functions a
/// component exports, toolchain helpers left out: what `fabric docs add`
/// matches against the WIT it embeds.
pub fn exported_doc_keys(bytes: &[u8]) -> Result<Vec<String>, String> {
    let (resolve, world) = decode(bytes)?;
    Ok(exported_functions(&resolve, world)
        .into_iter()
        .filter(|(_, _, helper)| !helper)
        .map(|(instance, f, _)| fabric_wit_docs::function_key(instance.as_deref(), &f.name))
        .collect())
}

impl Shared {
    /// Reads, decodes and describes one component; never compiles it.
    fn describe(self: &Arc<Self>, file: &Path) -> Described {
        let mut described = Described {
            tools: BTreeMap::new(),
            problems: Vec::new(),
            broken: None,
            loaded: None,
        };
        let problem = |function: Option<String>, message: String| LoadProblem {
            file: file.to_path_buf(),
            function,
            message,
        };
        let started = std::time::Instant::now();
        let result = read_component(&self.inside, file, self.host.max_component_size)
            .and_then(|bytes| self.describe_bytes(file, &bytes));
        tracing::debug!(file = %file.display(), us = started.elapsed().as_micros() as u64, "described");
        match result {
            Ok((tools, problems, loaded)) => {
                described.loaded = loaded;
                described
                    .problems
                    .extend(problems.into_iter().map(|(f, m)| problem(f, m)));
                for tool in tools {
                    described.tools.insert(tool.name.clone(), tool);
                }
            }
            Err(message) => {
                described.problems.push(problem(None, message.clone()));
                described.broken = Some(message);
            }
        }
        described
    }

    fn describe_bytes(self: &Arc<Self>, file: &Path, bytes: &[u8]) -> Result<Description, String> {
        let name = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let (resolve, world) = decode(bytes)?;
        let digest = blake3::hash(bytes);
        let mut problems = Vec::new();
        // A bad policy keeps every tool from running, but they are listed.
        let policy = Policy::load_for(&self.policies_dir, &name, &self.host.maxima)
            .map_err(|e| format!("its policy is invalid: {e}"));
        if let Err(reason) = &policy {
            problems.push((None, reason.clone()));
        }
        let exports_rule = policy
            .as_ref()
            .map(|p| p.exports.clone())
            .unwrap_or_default();
        let (docs, docs_problem) = match Docs::read_checked(bytes) {
            Ok(docs) => (docs.unwrap_or_default(), None),
            Err(why) => (Docs::default(), Some(why)),
        };
        let doc = |key: &str| docs.get(key).map(str::to_string);
        let mut tools = Vec::new();
        let mut exports = Vec::new();
        // Ready tools wait for their component, made once the exports are known.
        let mut ready: Vec<(usize, Vec<Param>, Returns)> = Vec::new();
        let exported = exported_functions(&resolve, world);
        let any_exported = exported.iter().any(|(_, _, helper)| !helper);
        for (instance, f, helper) in exported {
            if !exports_rule.shows(&f.name, helper) {
                continue;
            }
            let tool_name = format!("{name}.{}", f.name);
            let doc_key = fabric_wit_docs::function_key(instance.as_deref(), &f.name);
            let description = doc(&doc_key).or_else(|| {
                f.docs
                    .contents
                    .as_ref()
                    .map(|d| d.trim().to_string())
                    .filter(|d| !d.is_empty())
            });
            if tools.iter().any(|t: &Tool| t.name == tool_name) {
                problems.push((
                        Some(f.name.clone()),
                        format!("two exported interfaces both have a function {:?}; only the first is a tool", f.name),
                    ));
                continue;
            }
            let status = match (&policy, describe_function(&resolve, f, &doc)) {
                (_, Err(reason)) => {
                    problems.push((Some(f.name.clone()), format!("unavailable: {reason}")));
                    Status::Unavailable(reason)
                }
                (Err(reason), Ok(_)) => Status::Unavailable(reason.clone()),
                (Ok(_), Ok((params, returns))) => {
                    ready.push((tools.len(), params, returns));
                    exports.push((instance.clone(), f.name.clone()));
                    // Replaced below by the callable.
                    Status::Unavailable(String::new())
                }
            };
            tools.push(Tool {
                name: tool_name,
                description,
                input_schema: Value::Null,
                output_schema: Value::Null,
                status,
            });
        }
        if tools.is_empty() && problems.is_empty() {
            let why = if any_exported {
                "its policy's [exports] hides every function it exports, so it offers no tools"
            } else {
                "exports no functions, so it offers no tools"
            };
            problems.push((None, why.into()));
        }
        if let Some(why) = docs_problem {
            problems.push((
                None,
                format!("{why}: the descriptions are the WIT doc comments compiled in, if any; embed them again with `fabric docs add`"),
            ));
        }
        let Ok(policy) = policy else {
            return Ok((tools, problems, None));
        };
        let failed_before = self
            .cache
            .as_ref()
            .and_then(|(cache, _)| cache.failure(digest, &self.engine));
        let guard = GuardConfig {
            rules: policy.guard_rules.clone(),
            actions: policy.guard_actions.clone(),
            net: Arc::new(policy.net.clone()),
            output_limit: policy.limits.output,
            score: policy.guard_score,
            spotlight: policy.guard_spotlight,
            model: policy.guard_model.clone(),
        };
        let loaded = Arc::new(Loaded {
            digest,
            policy: Arc::new(policy),
            guard,
            file: file.to_path_buf(),
            exports,
            shared: self.clone(),
            failed_before,
            code: tokio::sync::OnceCell::new(),
            last_used_ms: AtomicU64::new(crate::idle::now_ms()),
            in_use: AtomicU32::new(0),
            released_for: AtomicU64::new(u64::MAX),
        });
        for (slot, (index, params, returns)) in ready.into_iter().enumerate() {
            let tool = &mut tools[index];
            tool.input_schema = schema::input_schema(&params, |_| None);
            tool.output_schema = schema::output_schema(match &returns {
                Returns::Nothing => None,
                Returns::Value(t) => Some(t),
                Returns::Result { ok, .. } => ok.as_ref(),
            });
            tool.status = Status::Ready(Callable {
                component: loaded.clone(),
                slot,
                params,
                returns,
            });
        }
        Ok((tools, problems, Some(loaded)))
    }

    /// Compiles (or loads from the cache) and links a described component;
    /// a failure is remembered in the cache.
    fn link(
        &self,
        file: &Path,
        digest: blake3::Hash,
        exports: &[(Option<String>, String)],
    ) -> Result<Linked, String> {
        let started = std::time::Instant::now();
        let cache = self.cache.as_ref().map(|(c, limit)| (c, *limit));
        let bytes = || {
            let bytes = read_component(&self.inside, file, self.host.max_component_size)?;
            if blake3::hash(&bytes) != digest {
                return Err("changed on disk since it was described: restart fabric to load the new version".to_string());
            }
            Ok(bytes)
        };
        let component = compile(&self.engine, bytes, digest, cache)?;
        let linked = self.linker.instantiate_pre(&component).map_err(|e| {
            format!("cannot be linked: {e:#} (a tool may import only the interfaces of the fabric:tool/host world)")
        });
        let pre = match linked {
            Ok(pre) => pre,
            Err(reason) => {
                if let Some((cache, _)) = cache {
                    cache.remember_failure(digest, &self.engine, &reason);
                }
                return Err(reason);
            }
        };
        let funcs = exports
            .iter()
            .map(|(instance, name)| {
                let instance = match instance {
                    Some(i) => Some(component.get_export_index(None, i)?),
                    None => None,
                };
                component.get_export_index(instance.as_ref(), name)
            })
            .collect();
        tracing::debug!(file = %file.display(), ms = started.elapsed().as_millis() as u64, "compiled and linked");
        Ok(Linked { pre, funcs })
    }
}

type Problems = Vec<(Option<String>, String)>;

/// A component's tools, its problems, and the component when it can run.
type Description = (Vec<Tool>, Problems, Option<Arc<Loaded>>);

/// Reads a component file: a regular file (or a symbolic link to one under
/// `inside`, the tools directory resolved) of at most `limit` bytes.
fn read_component(inside: &Path, file: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let meta = std::fs::symlink_metadata(file).map_err(|e| format!("cannot read it: {e}"))?;
    let target = if meta.file_type().is_symlink() {
        let target = std::fs::canonicalize(file).map_err(|e| {
            format!("is a symbolic link that does not resolve ({e}): remove it, or point it at a component inside the tools directory")
        })?;
        if !target.starts_with(inside) {
            return Err(format!(
                "is a symbolic link to {}, outside the tools directory: copy the component into the tools directory instead",
                target.display()
            ));
        }
        target
    } else {
        file.to_path_buf()
    };
    files::read_regular(&target, limit, Links::Refuse).map_err(|e| match e {
        ReadError::NotRegular(kind) => format!(
            "is {kind}, not a regular file: only regular files are loaded; replace it with the component file or remove it"
        ),
        ReadError::TooLarge { size, limit } => format!(
            "is {size} bytes, over the {limit}-byte limit for a component: remove it, or raise the host's max_component_size"
        ),
        ReadError::Io(e) => format!("cannot read it: {e}"),
    })
}

fn describe_function(
    resolve: &Resolve,
    f: &wit_parser::Function,
    doc: &dyn Fn(&str) -> Option<String>,
) -> Result<(Vec<Param>, Returns), String> {
    match f.kind {
        FunctionKind::Freestanding => {}
        FunctionKind::AsyncFreestanding => {
            return Err("async functions are not supported: export it as a plain func".into())
        }
        _ => return Err("resource methods are not supported".into()),
    }
    let mut params = Vec::new();
    for p in &f.params {
        let ty = schema::ty_from_wit(resolve, &p.ty, doc)
            .map_err(|e| format!("parameter {:?}: {e}", p.name))?;
        params.push(Param {
            name: p.name.clone(),
            ty,
        });
    }
    let returns = match &f.result {
        None => Returns::Nothing,
        Some(ty) => {
            let result_of = |t: &Type| match t {
                Type::Id(id) => match &resolve.types[*id].kind {
                    TypeDefKind::Result(r) => Some(r.clone()),
                    _ => None,
                },
                _ => None,
            };
            let convert =
                |t: &Type| schema::ty_from_wit(resolve, t, doc).map_err(|e| format!("result: {e}"));
            match result_of(ty) {
                Some(r) => Returns::Result {
                    ok: r.ok.as_ref().map(convert).transpose()?,
                    err: r.err.as_ref().map(convert).transpose()?,
                },
                None => Returns::Value(convert(ty)?),
            }
        }
    };
    Ok((params, returns))
}

/// Compiles a component (its bytes read by `bytes` only when needed), or
/// loads it from the cache, where `u64` is the largest artifact read. A
/// component that does not compile is remembered as such in the cache.
fn compile(
    engine: &Engine,
    bytes: impl FnOnce() -> Result<Vec<u8>, String>,
    digest: blake3::Hash,
    cache: Option<(&CodeCache, u64)>,
) -> Result<Component, String> {
    let compile_now = |bytes: Vec<u8>| {
        Component::new(engine, &bytes).map_err(|e| format!("does not compile: {e:#}"))
    };
    let Some((cache, limit)) = cache else {
        return compile_now(bytes()?);
    };
    let path = cache.entry(digest, engine, "cwasm");
    match cache.check(&path, digest, limit) {
        Ok(file) => match load_checked(engine, file) {
            Ok(component) => {
                cache.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(component);
            }
            Err(e) => tracing::warn!(
                path = %path.display(),
                "compiled code unusable ({e:#}): recompiled and replaced"
            ),
        },
        Err(Stale::Missing) => {}
        Err(Stale::Unreadable(e)) => tracing::warn!(
            path = %path.display(),
            "compiled code unreadable ({e}): recompiled and replaced"
        ),
        Err(Stale::Unbound) => tracing::warn!(
            path = %path.display(),
            "compiled code not made by this host from this component (altered, copied from another entry, made under another key, or writable by another user): recompiled and replaced"
        ),
    }
    cache.misses.fetch_add(1, Ordering::Relaxed);
    let component = match compile_now(bytes()?) {
        Ok(component) => component,
        Err(reason) => {
            cache.remember_failure(digest, engine, &reason);
            return Err(reason);
        }
    };
    if let Err(e) = component
        .serialize()
        .map_err(|e| format!("{e:#}"))
        .and_then(|artifact| {
            // Code larger than a load would accept is not stored to be
            // refused at every start.
            if artifact.len() as u64 > limit {
                return Err(format!(
                    "{} bytes of code, over the {limit} a load reads",
                    artifact.len()
                ));
            }
            cache
                .store(&path, digest, &artifact)
                .map_err(|e| e.to_string())
        })
    {
        tracing::warn!(path = %path.display(), "cannot cache the compiled component: {e}");
    }
    Ok(component)
}

/// Loads the compiled code in `file`, just checked by [`CodeCache::check`].
///
/// On Linux the file is mapped, not copied (only the pages calls touch are
/// resident, and they are the page cache's), through `/proc/self/fd`: the
/// very file that was checked, whatever is renamed over its path since.
/// Elsewhere it is read into memory first.
fn load_checked(engine: &Engine, file: std::fs::File) -> wasmtime::Result<Component> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let same_file = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        if same_file.exists() {
            // SAFETY: the file's bytes carry a hash keyed with this host's
            // secret over themselves and this component's digest (this host
            // serialized them from these bytes), and the file belongs to this
            // user with no write permission for anyone else, so nobody but
            // this user can change it while it is mapped. wasmtime checks the
            // engine configuration it was made for.
            return unsafe { Component::deserialize_file(engine, &same_file) };
        }
    }
    let mut file = file;
    let mut bytes = Vec::new();
    std::io::Seek::rewind(&mut file)?;
    file.read_to_end(&mut bytes)?;
    // SAFETY: as above; `bytes` is in memory, so no file can change under it.
    unsafe { Component::deserialize(engine, bytes) }
}

/// Compiled components on disk (`DATA/compiled/DIGEST-ENGINE.cwasm`), each
/// bound to its source: the tag file beside it (`….tag`) holds a blake3 hash
/// keyed with a per-host secret over the component's digest and the compiled
/// code, checked before the code is loaded. A copied, swapped or edited
/// entry is recompiled.
pub struct CodeCache {
    dir: PathBuf,
    key: [u8; 32],
    /// The pool's settings ([`crate::engine::pool_key`]), part of a
    /// remembered failure's name.
    pool: String,
    /// Lookups that found usable code, and lookups that compiled.
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Longest reason for a failure kept in the cache.
const MAX_FAILURE: u64 = 16 << 10;

/// Start of every entry's tag file (`….tag`, beside the code in `….cwasm`);
/// then the 32-byte keyed hash of the component's digest and the code.
const MAGIC: &[u8; 16] = b"fabric-cwasm-v2\n";
const TAG_LEN: usize = MAGIC.len() + blake3::OUT_LEN;

/// Start of a remembered failure (`….failed`); then its keyed tag (over the
/// component's digest, the entry's file name, the build of Fabric's sources
/// and the reason, with a key derived for failures alone, so no failure's
/// tag is a code tag), then the reason. Only this host can write one that is
/// believed, and another build, or an entry renamed to another engine's,
/// tries again.
const FAILED_MAGIC: &[u8; 17] = b"fabric-failed-v1\n";

/// Why a cache entry was not used.
enum Stale {
    Missing,
    Unreadable(ReadError),
    Unbound,
}

impl CodeCache {
    /// The cache in `dir` for an engine whose pool is `pool`
    /// ([`crate::engine::pool_key`]), keyed with the 32 random bytes in [`CODE_KEY_FILE`]
    /// beside `audit_key` (created on first use, mode 0600). `None`, with a
    /// warning, when that key can be neither read nor created: then nothing
    /// is cached.
    pub fn open(dir: PathBuf, audit_key: &Path, pool: String) -> Option<CodeCache> {
        let key_file = audit_key.with_file_name(CODE_KEY_FILE);
        match read_or_create_key(&key_file) {
            Ok(key) => Some(CodeCache {
                dir,
                key,
                pool,
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
            }),
            Err(e) => {
                tracing::warn!(
                    "compiled code is not cached: the key {} {e}",
                    key_file.display()
                );
                None
            }
        }
    }

    /// The path of the entry for `digest` compiled by `engine`, with `ext`.
    fn entry(&self, digest: blake3::Hash, engine: &Engine, ext: &str) -> PathBuf {
        self.dir.join(format!(
            "{}-{}.{ext}",
            digest.to_hex(),
            compatibility_key(engine)
        ))
    }

    /// The path of the remembered failure of `digest` on `engine` with this
    /// cache's pool (`DIGEST-ENGINE-POOL.failed`).
    fn failure_entry(&self, digest: blake3::Hash, engine: &Engine) -> PathBuf {
        let name = format!(
            "{}-{}-{}.failed",
            digest.to_hex(),
            compatibility_key(engine),
            self.pool
        );
        self.dir.join(name)
    }

    /// Why the component `digest` did not compile or link on this engine
    /// before, if this host remembered it: an entry whose tag does not
    /// match (written by someone else, or by another build of Fabric) is
    /// ignored, and the component is compiled again.
    fn failure(&self, digest: blake3::Hash, engine: &Engine) -> Option<String> {
        let path = self.failure_entry(digest, engine);
        let limit = (FAILED_MAGIC.len() + blake3::OUT_LEN) as u64 + MAX_FAILURE;
        let bytes = files::read_regular(&path, limit, Links::Refuse).ok()?;
        let rest = bytes.strip_prefix(FAILED_MAGIC)?;
        let (tag, reason) = rest.split_at_checked(blake3::OUT_LEN)?;
        let tag = blake3::Hash::from_bytes(tag.try_into().ok()?);
        // blake3::Hash compares in constant time.
        (tag == self.failure_tag(digest, &path, reason))
            .then(|| String::from_utf8_lossy(reason).into_owned())
    }

    /// Remembers why the component `digest` does not compile or link.
    fn remember_failure(&self, digest: blake3::Hash, engine: &Engine, reason: &str) {
        let path = self.failure_entry(digest, engine);
        let mut reason = reason.as_bytes();
        reason = &reason[..reason.len().min(MAX_FAILURE as usize)];
        let tag = self.failure_tag(digest, &path, reason);
        let stored = files::create_private_dir(&self.dir)
            .and_then(|()| files::write_atomic(&path, &[FAILED_MAGIC, tag.as_bytes(), reason]));
        if let Err(e) = stored {
            tracing::warn!(path = %path.display(), "cannot remember why the component failed: {e}");
        }
    }

    /// The tag of a remembered failure stored at `path`.
    fn failure_tag(&self, digest: blake3::Hash, path: &Path, reason: &[u8]) -> blake3::Hash {
        let name = path
            .file_name()
            .map(|n| n.as_encoded_bytes())
            .unwrap_or_default();
        // A key of its own: no failure's tag can pass as a code tag.
        let key = blake3::derive_key("fabric compile-cache failure tag v1", &self.key);
        let mut hasher = blake3::Hasher::new_keyed(&key);
        hasher.update(digest.as_bytes());
        let build = concat!(env!("CARGO_PKG_VERSION"), "+", env!("FABRIC_SOURCE_ID"));
        for part in [FAILED_MAGIC.as_slice(), name, build.as_bytes()] {
            // Length-prefixed, so no two different inputs hash alike.
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        hasher.update(reason);
        hasher.finalize()
    }

    /// The keyed hash of `digest` and then the code: a code tag once
    /// finalized.
    fn tagger(&self, digest: blake3::Hash) -> blake3::Hasher {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(digest.as_bytes());
        hasher
    }

    /// Checks the compiled code stored at `path` for `digest` against its
    /// tag (the file beside it), reading it through once; the opened file,
    /// which must belong to this user and be writable by no one else.
    fn check(&self, path: &Path, digest: blake3::Hash, limit: u64) -> Result<std::fs::File, Stale> {
        let stale = |e: ReadError| {
            if e.is_not_found() {
                Stale::Missing
            } else {
                Stale::Unreadable(e)
            }
        };
        // An entry of the earlier layout (tag and code in one file) has no
        // tag file: it is recompiled and replaced, as a missing one is.
        let tag = files::read_regular(&path.with_extension("tag"), TAG_LEN as u64, Links::Refuse)
            .map_err(stale)?;
        if tag.len() != TAG_LEN || !tag.starts_with(MAGIC) {
            return Err(Stale::Unbound);
        }
        let stored = <[u8; blake3::OUT_LEN]>::try_from(&tag[MAGIC.len()..])
            .map(blake3::Hash::from_bytes)
            .map_err(|_| Stale::Unbound)?;
        let (file, _) = files::open_regular(path, limit, Links::Refuse).map_err(stale)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let meta = file.metadata().map_err(|e| Stale::Unreadable(e.into()))?;
            // SAFETY: geteuid has no preconditions.
            let me = unsafe { libc::geteuid() };
            if meta.uid() != me || meta.mode() & 0o022 != 0 {
                return Err(Stale::Unbound);
            }
        }
        let mut hasher = self.tagger(digest);
        files::copy_limited(&file, limit, &mut hasher).map_err(Stale::Unreadable)?;
        // blake3::Hash compares in constant time.
        if stored != hasher.finalize() {
            return Err(Stale::Unbound);
        }
        Ok(file)
    }

    /// Stores compiled code for `digest` at `path` and its tag beside it,
    /// each atomically (code first: a reader between the two finds a tag
    /// that does not match and recompiles).
    fn store(&self, path: &Path, digest: blake3::Hash, artifact: &[u8]) -> std::io::Result<()> {
        files::create_private_dir(&self.dir)?;
        let tag = self.tagger(digest).update(artifact).finalize();
        files::write_atomic(path, &[artifact])?;
        files::write_atomic(&path.with_extension("tag"), &[MAGIC, tag.as_bytes()])
    }
}

/// Reads the 32-byte key at `path`, creating it (random, 0600) if missing.
fn read_or_create_key(path: &Path) -> Result<[u8; 32], String> {
    let read = || {
        match files::read_regular(path, 64, Links::Follow) {
        Ok(bytes) => <[u8; 32]>::try_from(bytes.as_slice()).map(Some).map_err(|_| {
            "is not a 32-byte key: remove it and a new one is made (cached code is then recompiled)"
                .to_string()
        }),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(format!("cannot be read: {e}")),
    }
    };
    if let Some(key) = read()? {
        return Ok(key);
    }
    let create = |e: std::io::Error| format!("cannot be created: {e}");
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        files::create_private_dir(dir).map_err(create)?;
    }
    fabric_audit::fsutil::publish_new(path, 0o600, &rand::random::<[u8; 32]>()).map_err(create)?;
    read()?.ok_or_else(|| "vanished right after it was created".to_string())
}

/// The engine's precompile-compatibility hash, as 16 hex digits.
fn compatibility_key(engine: &Engine) -> String {
    use std::hash::{Hash, Hasher};
    struct Blake3Hasher(blake3::Hasher);
    impl Hasher for Blake3Hasher {
        fn finish(&self) -> u64 {
            let hash = self.0.finalize();
            u64::from_le_bytes(hash.as_bytes()[..8].try_into().unwrap_or_default())
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut hasher = Blake3Hasher(blake3::Hasher::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}
