//! The registry: every component in the tools directory, compiled, linked
//! and introspected once at start-up.
//!
//! For each `NAME.wasm` it reads the file (a regular file no larger than the
//! limit; a symbolic link only to a file inside the tools directory),
//! computes the blake3 digest, loads the compiled artifact from the
//! [`CodeCache`] (checking that it was made by this host from these very
//! bytes) or compiles and stores it, pre-links it against the WASI linker
//! ([`InstancePre`]), loads `policies/NAME.toml`, decodes the component's WIT
//! to learn its exported functions with their types and docs, and derives
//! each tool's JSON Schemas.
//!
//! A component that fails any of this is a [`LoadProblem`] naming the file
//! (and the function, where one is to blame) and why; the other components
//! still load. A function whose types the JSON mapping cannot carry is
//! listed as unavailable, with the reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// A loaded component: what every call of its tools shares.
pub struct Loaded {
    /// blake3 digest of the component's bytes.
    pub digest: blake3::Hash,
    /// The component pre-linked against the WASI linker.
    pub pre: InstancePre<State>,
    /// Its policy.
    pub policy: Arc<Policy>,
    /// The output guard its policy configures.
    pub guard: GuardConfig,
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

/// Whether a tool can be called.
pub enum Status {
    /// Callable.
    Ready(Callable),
    /// Listed but not callable, with the reason.
    Unavailable(String),
}

/// Everything needed to call a ready tool.
pub struct Callable {
    /// Its component.
    pub component: Arc<Loaded>,
    /// The function's export index (resolved once, no string lookups per call).
    pub func: ComponentExportIndex,
    /// The parameters, in order.
    pub params: Vec<Param>,
    /// The return shape.
    pub returns: Returns,
}

/// All tools, by name.
pub struct Registry {
    tools: BTreeMap<String, Tool>,
    problems: Vec<LoadProblem>,
}

impl Registry {
    /// Loads every `*.wasm` in `tools_dir` of at most the host's
    /// `max_component_size` bytes, with policies from `policies_dir` (which must exist), caching
    /// compiled code in `cache` when given.
    pub fn load(
        engine: &Engine,
        linker: &Linker<State>,
        tools_dir: &Path,
        policies_dir: &Path,
        cache: Option<&CodeCache>,
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
        let cache = cache.map(|c| (c, host.max_component_size.saturating_mul(ARTIFACT_GROWTH)));
        let mut files: Vec<PathBuf> = read
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
            .collect();
        files.sort();
        let mut registry = Registry {
            tools: BTreeMap::new(),
            problems: Vec::new(),
        };
        for file in files {
            let problem = |function: Option<String>, message: String| LoadProblem {
                file: file.clone(),
                function,
                message,
            };
            let bytes = match read_component(&inside, &file, host.max_component_size) {
                Ok(bytes) => bytes,
                Err(message) => {
                    registry.problems.push(problem(None, message));
                    continue;
                }
            };
            match load_component(engine, linker, &file, &bytes, policies_dir, cache, host) {
                Ok((tools, problems)) => {
                    registry
                        .problems
                        .extend(problems.into_iter().map(|(f, m)| problem(f, m)));
                    for tool in tools {
                        registry.tools.insert(tool.name.clone(), tool);
                    }
                }
                Err(message) => registry.problems.push(problem(None, message)),
            }
        }
        Ok(registry)
    }

    /// The tool called `name`.
    pub fn get(&self, name: &str) -> Option<&Tool> {
        self.tools.get(name)
    }

    /// All tools, sorted by name.
    pub fn tools(&self) -> impl Iterator<Item = &Tool> {
        self.tools.values()
    }

    /// What failed to load.
    pub fn problems(&self) -> &[LoadProblem] {
        &self.problems
    }
}

type Problems = Vec<(Option<String>, String)>;

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

fn load_component(
    engine: &Engine,
    linker: &Linker<State>,
    file: &Path,
    bytes: &[u8],
    policies_dir: &Path,
    cache: Option<(&CodeCache, u64)>,
    host: &HostConfig,
) -> Result<(Vec<Tool>, Problems), String> {
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
        return Err(format!(
            "{name:?} is not a valid tool name: rename the file to lower-case letters, digits, '-' and '_'"
        ));
    }
    if !bytes.starts_with(b"\0asm") {
        return Err("not a WebAssembly file".into());
    }
    if bytes.get(4..8) == Some(&[1, 0, 0, 0]) {
        return Err("not a valid component: it is a core WebAssembly module; build the tool for wasm32-wasip2, or wrap it with `wasm-tools component new`".into());
    }
    let (resolve, world) = match wit_component::decode(bytes) {
        Ok(wit_component::DecodedWasm::Component(resolve, world)) => (resolve, world),
        Ok(wit_component::DecodedWasm::WitPackage(..)) => {
            return Err("this is a WIT package, not a runnable component".into())
        }
        Err(e) => {
            return Err(format!(
                "not a valid component ({e:#}); a core module must be turned into a component first (wasm-tools component new)"
            ))
        }
    };
    let policy = Policy::load_for(policies_dir, &name, &host.maxima)
        .map_err(|e| format!("its policy is invalid: {e}"))?;
    let digest = blake3::hash(bytes);
    let component = compile(engine, bytes, digest, cache)?;
    let pre = linker.instantiate_pre(&component).map_err(|e| {
        format!("cannot be linked: {e:#} (a tool may import only the interfaces of the fabric:tool/host world)")
    })?;
    let guard = GuardConfig {
        rules: policy.guard_rules.clone(),
        actions: policy.guard_actions.clone(),
        net: Arc::new(policy.net.clone()),
        output_limit: policy.limits.output,
        score: policy.guard_score,
        spotlight: policy.guard_spotlight,
    };
    let loaded = Arc::new(Loaded {
        digest,
        pre,
        policy: Arc::new(policy),
        guard,
    });

    let docs = Docs::read(bytes).unwrap_or_default();
    let doc = |key: &str| docs.get(key).map(str::to_string);
    let mut tools = Vec::new();
    let mut problems = Vec::new();
    let world = &resolve.worlds[world];
    for (key, item) in &world.exports {
        let (instance, functions): (
            Option<(String, ComponentExportIndex)>,
            Vec<&wit_parser::Function>,
        ) = match item {
            WorldItem::Function(f) => (None, vec![f]),
            WorldItem::Interface { id, .. } => {
                let iface_name = resolve.name_world_key(key);
                let Some(index) = component.get_export_index(None, &iface_name) else {
                    problems.push((
                        None,
                        format!("exported interface {iface_name} is missing from the component"),
                    ));
                    continue;
                };
                (
                    Some((iface_name, index)),
                    resolve.interfaces[*id].functions.values().collect(),
                )
            }
            WorldItem::Type { .. } => continue,
        };
        for f in functions {
            let tool_name = format!("{name}.{}", f.name);
            let doc_key = match &instance {
                Some((iface, _)) => format!("{iface}#{}", f.name),
                None => f.name.clone(),
            };
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
            let status = match describe_function(&resolve, f, &doc) {
                Err(reason) => {
                    problems.push((Some(f.name.clone()), format!("unavailable: {reason}")));
                    Status::Unavailable(reason)
                }
                Ok((params, returns)) => {
                    let func =
                        component.get_export_index(instance.as_ref().map(|(_, i)| i), &f.name);
                    match func {
                        Some(func) => Status::Ready(Callable {
                            component: loaded.clone(),
                            func,
                            params,
                            returns,
                        }),
                        None => Status::Unavailable(
                            "the component does not export this function".into(),
                        ),
                    }
                }
            };
            let (input_schema, output_schema) = match &status {
                Status::Ready(c) => (
                    schema::input_schema(&c.params, |_| None),
                    schema::output_schema(match &c.returns {
                        Returns::Nothing => None,
                        Returns::Value(t) => Some(t),
                        Returns::Result { ok, .. } => ok.as_ref(),
                    }),
                ),
                Status::Unavailable(_) => (Value::Null, Value::Null),
            };
            tools.push(Tool {
                name: tool_name,
                description,
                input_schema,
                output_schema,
                status,
            });
        }
    }
    if tools.is_empty() && problems.is_empty() {
        problems.push((None, "exports no functions, so it offers no tools".into()));
    }
    Ok((tools, problems))
}

fn describe_function(
    resolve: &Resolve,
    f: &wit_parser::Function,
    doc: &dyn Fn(&str) -> Option<String>,
) -> Result<(Vec<Param>, Returns), String> {
    if !matches!(f.kind, FunctionKind::Freestanding) {
        return Err("resource methods are not supported".into());
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

/// Compiles a component, or loads it from the cache, where `u64` is the
/// largest artifact read.
fn compile(
    engine: &Engine,
    bytes: &[u8],
    digest: blake3::Hash,
    cache: Option<(&CodeCache, u64)>,
) -> Result<Component, String> {
    let compile_now =
        || Component::new(engine, bytes).map_err(|e| format!("does not compile: {e:#}"));
    let Some((cache, limit)) = cache else {
        return compile_now();
    };
    let path = cache.dir.join(format!(
        "{}-{}.cwasm",
        digest.to_hex(),
        compatibility_key(engine)
    ));
    match cache.read(&path, digest, limit) {
        Ok(artifact) => {
            // SAFETY: `artifact` is in memory (no file can change under it)
            // and carries a hash keyed with this host's secret over itself and
            // this component's digest: this host serialized it from these
            // bytes. wasmtime checks the engine configuration it was made for.
            match unsafe { Component::deserialize(engine, artifact) } {
                Ok(component) => return Ok(component),
                Err(e) => tracing::warn!(
                    path = %path.display(),
                    "compiled code unusable ({e:#}): recompiled and replaced"
                ),
            }
        }
        Err(Stale::Missing) => {}
        Err(Stale::Unreadable(e)) => tracing::warn!(
            path = %path.display(),
            "compiled code unreadable ({e}): recompiled and replaced"
        ),
        Err(Stale::Unbound) => tracing::warn!(
            path = %path.display(),
            "compiled code not made by this host from this component (altered, copied from another entry, or made under another key): recompiled and replaced"
        ),
    }
    let component = compile_now()?;
    if let Err(e) = component
        .serialize()
        .map_err(|e| format!("{e:#}"))
        .and_then(|artifact| {
            cache
                .store(&path, digest, &artifact)
                .map_err(|e| e.to_string())
        })
    {
        tracing::warn!(path = %path.display(), "cannot cache the compiled component: {e}");
    }
    Ok(component)
}

/// Compiled components on disk (`DATA/compiled/DIGEST-ENGINE.cwasm`), each
/// bound to its source: the file holds a blake3 hash keyed with a per-host
/// secret over the component's digest and the compiled code, checked before
/// the code is loaded. A copied, swapped or edited entry is recompiled.
pub struct CodeCache {
    dir: PathBuf,
    key: [u8; 32],
}

/// Start of every cache entry; then the 32-byte keyed hash, then the code.
const MAGIC: &[u8; 16] = b"fabric-cwasm-v1\n";
const HEADER: usize = MAGIC.len() + blake3::OUT_LEN;

/// Why a cache entry was not used.
enum Stale {
    Missing,
    Unreadable(ReadError),
    Unbound,
}

impl CodeCache {
    /// The cache in `dir`, keyed with the 32 random bytes in [`CODE_KEY_FILE`]
    /// beside `audit_key` (created on first use, mode 0600). `None`, with a
    /// warning, when that key can be neither read nor created: then nothing
    /// is cached.
    pub fn open(dir: PathBuf, audit_key: &Path) -> Option<CodeCache> {
        let key_file = audit_key.with_file_name(CODE_KEY_FILE);
        match read_or_create_key(&key_file) {
            Ok(key) => Some(CodeCache { dir, key }),
            Err(e) => {
                tracing::warn!(
                    "compiled code is not cached: the key {} {e}",
                    key_file.display()
                );
                None
            }
        }
    }

    fn tag(&self, digest: blake3::Hash, artifact: &[u8]) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(digest.as_bytes());
        hasher.update(artifact);
        hasher.finalize()
    }

    /// The compiled code stored at `path` for `digest`, once its tag checks.
    fn read(&self, path: &Path, digest: blake3::Hash, limit: u64) -> Result<Vec<u8>, Stale> {
        let entry = match files::read_regular(path, limit, Links::Refuse) {
            Ok(entry) => entry,
            Err(e) if e.is_not_found() => return Err(Stale::Missing),
            Err(e) => return Err(Stale::Unreadable(e)),
        };
        if entry.len() < HEADER || !entry.starts_with(MAGIC) {
            return Err(Stale::Unbound);
        }
        let stored = <[u8; blake3::OUT_LEN]>::try_from(&entry[MAGIC.len()..HEADER])
            .map(blake3::Hash::from_bytes)
            .map_err(|_| Stale::Unbound)?;
        // blake3::Hash compares in constant time.
        if stored != self.tag(digest, &entry[HEADER..]) {
            return Err(Stale::Unbound);
        }
        let mut artifact = entry;
        artifact.drain(..HEADER);
        Ok(artifact)
    }

    /// Stores compiled code for `digest` at `path`, atomically.
    fn store(&self, path: &Path, digest: blake3::Hash, artifact: &[u8]) -> std::io::Result<()> {
        files::create_private_dir(&self.dir)?;
        let tag = self.tag(digest, artifact);
        files::write_atomic(path, &[MAGIC, tag.as_bytes(), artifact])
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
