//! The registry: every component in the tools directory, compiled, linked
//! and introspected once at start-up.
//!
//! For each `NAME.wasm` it computes the blake3 digest, loads the compiled
//! artifact from the on-disk cache (keyed by that digest and the engine's
//! compatibility hash) or compiles and stores it, pre-links it against the
//! WASI linker ([`InstancePre`]), loads `policies/NAME.toml`, decodes the
//! component's WIT to learn its exported functions with their types and
//! docs, and derives each tool's JSON Schemas.
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
use crate::guard::GuardConfig;
use crate::policy::Policy;
use crate::sandbox::State;
use crate::schema::{self, Param, Ty};
use fabric_wit_docs::Docs;

/// A tools directory that could not be read at all.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the tools directory {dir}: {source}")]
pub struct RegistryError {
    /// The directory.
    pub dir: PathBuf,
    /// The I/O error.
    pub source: std::io::Error,
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
    /// Loads every `*.wasm` in `tools_dir`, with policies from
    /// `policies_dir`, caching compiled code in `cache_dir` when given.
    pub fn load(
        engine: &Engine,
        linker: &Linker<State>,
        tools_dir: &Path,
        policies_dir: &Path,
        cache_dir: Option<&Path>,
        host: &HostConfig,
    ) -> Result<Registry, RegistryError> {
        let read = std::fs::read_dir(tools_dir).map_err(|source| RegistryError {
            dir: tools_dir.into(),
            source,
        })?;
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
            match load_component(engine, linker, &file, policies_dir, cache_dir, host) {
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

fn load_component(
    engine: &Engine,
    linker: &Linker<State>,
    file: &Path,
    policies_dir: &Path,
    cache_dir: Option<&Path>,
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
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read it: {e}"))?;
    if !bytes.starts_with(b"\0asm") {
        return Err("not a WebAssembly file".into());
    }
    if bytes.get(4..8) == Some(&[1, 0, 0, 0]) {
        return Err("not a valid component: it is a core WebAssembly module; build the tool for wasm32-wasip2, or wrap it with `wasm-tools component new`".into());
    }
    let (resolve, world) = match wit_component::decode(&bytes) {
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
    let digest = blake3::hash(&bytes);
    let component = compile(engine, &bytes, digest, cache_dir)?;
    let pre = linker.instantiate_pre(&component).map_err(|e| {
        format!("cannot be linked: {e:#} (a tool may import only the interfaces of the fabric:tool/host world)")
    })?;
    let guard = GuardConfig {
        rules: policy.guard_rules.clone(),
        actions: policy.guard_actions.clone(),
        net: Arc::new(policy.net.clone()),
        output_limit: policy.limits.output,
    };
    let loaded = Arc::new(Loaded {
        digest,
        pre,
        policy: Arc::new(policy),
        guard,
    });

    let docs = Docs::read(&bytes).unwrap_or_default();
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

/// Compiles a component, or loads it from the cache of compiled artifacts.
fn compile(
    engine: &Engine,
    bytes: &[u8],
    digest: blake3::Hash,
    cache_dir: Option<&Path>,
) -> Result<Component, String> {
    let compile_now =
        || Component::new(engine, bytes).map_err(|e| format!("does not compile: {e:#}"));
    let Some(dir) = cache_dir else {
        return compile_now();
    };
    let path = dir.join(format!(
        "{}-{}.cwasm",
        digest.to_hex(),
        compatibility_key(engine)
    ));
    if path.exists() {
        // SAFETY: the file was written by `Component::serialize` of an engine
        // with the same compatibility hash (it is in the name), in a directory
        // that only Fabric writes to. A file that fails to load is recompiled.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => return Ok(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), "recompiling: cached artifact unusable: {e:#}")
            }
        }
    }
    let component = compile_now()?;
    if let Err(e) = store_artifact(dir, &path, &component) {
        tracing::warn!(path = %path.display(), "cannot cache the compiled component: {e:#}");
    }
    Ok(component)
}

fn store_artifact(dir: &Path, path: &Path, component: &Component) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, component.serialize()?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
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
