//! The pipeline every call takes, from a [`Call`] to a [`CallResult`].
//!
//! ```text
//! Call ─► resolve (registry) ─► validate (schema) ─► run (sandbox) ─► guard ─► audit ─► CallResult
//! ```
//!
//! The CLI and the servers build a `Call` and get a `CallResult` from
//! [`Fabric::call`]; none of them knows about stores or schemas. Every way a
//! call can end is an [`Outcome`].

use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use serde::Serialize;
use serde_json::{json, Value};
use tracing::Instrument;
use wasmtime::component::{Linker, Val};
use wasmtime::Engine;

use crate::audit::{AuditError, AuditLog, AuditOptions, Entry, RecordedDenial};
use crate::engine::{new_engine, new_linker, EpochTicker};
use crate::guard::{self, Flag};
use crate::registry::{Callable, Registry, RegistryError, Returns, Status};
use crate::sandbox::{self, Denial, FailureKind, RunEnd, State};
use crate::schema::{arguments_to_vals, min_json_size};

/// Where a [`Fabric`] finds its tools and keeps its state.
#[derive(Debug, Clone)]
pub struct Options {
    /// Directory of tool components (`NAME.wasm`).
    pub tools_dir: PathBuf,
    /// Directory of policies (`NAME.toml`).
    pub policies_dir: PathBuf,
    /// State directory (compiled-code cache, audit log in `audit/`). `None`:
    /// nothing is written to disk and calls are not audited.
    pub data_dir: Option<PathBuf>,
    /// Key that signs audit checkpoints, kept outside the data directory;
    /// created on first use. `None`: checkpoints are not signed.
    pub audit_key: Option<PathBuf>,
    /// Flush each audit batch before answering (the default). Off only to
    /// measure what durability costs.
    pub durable_audit: bool,
}

/// Fabric could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The engine could not be built.
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
    /// The tools directory could not be read.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The epoch thread could not be started.
    #[error("cannot start the epoch timer thread: {0}")]
    Ticker(#[from] std::io::Error),
    /// The audit log could not be opened.
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// One request to run a tool.
#[derive(Debug, Clone)]
pub struct Call {
    /// Who is calling (`None` for the local CLI).
    pub caller: Option<String>,
    /// The caller's session, when given.
    pub session: Option<String>,
    /// `NAME.FUNCTION`.
    pub tool: String,
    /// The arguments object.
    pub arguments: Value,
}

/// How a call ended. Stable, snake_case names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The tool returned a value (or `ok` of its `result`).
    Ok,
    /// The tool returned the `err` of its `result`.
    ToolError,
    /// The arguments did not match the tool's schema; nothing ran.
    InvalidArguments,
    /// No such tool (or it is listed as unavailable); nothing ran.
    UnknownTool,
    /// The fuel budget ran out.
    FuelExhausted,
    /// The memory limit was reached.
    MemoryExceeded,
    /// The wall-clock limit passed.
    Timeout,
    /// Any other trap.
    Trap,
    /// The guard rejected the output.
    OutputRejected,
    /// The caller's budget is spent.
    BudgetExceeded,
    /// No valid credentials.
    Unauthorized,
    /// The caller may not use this tool.
    Forbidden,
    /// No capacity to run the call now.
    Overloaded,
}

impl Outcome {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ToolError => "tool_error",
            Outcome::InvalidArguments => "invalid_arguments",
            Outcome::UnknownTool => "unknown_tool",
            Outcome::FuelExhausted => "fuel_exhausted",
            Outcome::MemoryExceeded => "memory_exceeded",
            Outcome::Timeout => "timeout",
            Outcome::Trap => "trap",
            Outcome::OutputRejected => "output_rejected",
            Outcome::BudgetExceeded => "budget_exceeded",
            Outcome::Unauthorized => "unauthorized",
            Outcome::Forbidden => "forbidden",
            Outcome::Overloaded => "overloaded",
        }
    }
}

/// The error part of a result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorBody {
    /// One line saying what went wrong.
    pub message: String,
    /// Structured detail: the tool's error value, the offending pointer, …
    pub detail: Value,
}

/// Guard findings in a result.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct GuardReport {
    /// Rule hits.
    pub flags: Vec<Flag>,
}

/// Where the call's audit record is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRef {
    /// Sequence number.
    pub seq: u64,
    /// Record hash, blake3 hex.
    pub hash: String,
}

/// The contract's result object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallResult {
    /// Unique id of this invocation.
    pub invocation_id: String,
    /// The tool name as called.
    pub tool: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The output (`null` unless `ok`).
    pub output: Value,
    /// What went wrong (`null` when `ok`).
    pub error: Option<ErrorBody>,
    /// Guard findings.
    pub guard: GuardReport,
    /// Capabilities the tool was refused.
    pub denials: Vec<Denial>,
    /// Fuel used.
    pub fuel_used: u64,
    /// Wall-clock duration of the whole call, microseconds.
    pub duration_us: u64,
    /// The audit record (`null` until the audit log is enabled).
    pub audit: Option<AuditRef>,
}

/// The long-lived runtime: engine, linker, registry and epoch timer.
pub struct Fabric {
    engine: Engine,
    registry: Registry,
    audit: Option<AuditLog>,
    _ticker: EpochTicker,
}

impl Fabric {
    /// Builds the engine and loads every tool. Problems with single
    /// components are in [`Registry::problems`], not errors.
    pub fn open(options: &Options) -> Result<Fabric, OpenError> {
        let engine = new_engine().map_err(|e| OpenError::Engine(format!("{e:#}")))?;
        let linker: Linker<State> =
            new_linker(&engine).map_err(|e| OpenError::Engine(format!("{e:#}")))?;
        let cache = options.data_dir.as_ref().map(|d| d.join("compiled"));
        let registry = Registry::load(
            &engine,
            &linker,
            &options.tools_dir,
            &options.policies_dir,
            cache.as_deref(),
        )?;
        let audit = match &options.data_dir {
            Some(dir) => Some(AuditLog::open(&AuditOptions {
                key: options.audit_key.clone(),
                durable: options.durable_audit,
                ..AuditOptions::new(dir.join("audit"))
            })?),
            None => None,
        };
        let ticker = EpochTicker::start(&engine)?;
        Ok(Fabric {
            engine,
            registry,
            audit,
            _ticker: ticker,
        })
    }

    /// Closes the audit log: writes what is queued, signs the head and
    /// releases the store, reporting a failure (dropping a `Fabric` does the
    /// same silently).
    pub async fn close(self) -> Result<(), AuditError> {
        match self.audit {
            Some(audit) => audit.close().await,
            None => Ok(()),
        }
    }

    /// The tools.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The shared engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Runs one call through the whole pipeline. The result is returned once
    /// its audit record is durable; an error is a fault of Fabric itself (the
    /// audit log cannot be written), never an outcome of the call.
    pub async fn call(&self, call: Call) -> Result<CallResult, AuditError> {
        let started = Instant::now();
        let time_unix_us = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let invocation_id = new_invocation_id();
        let span = tracing::info_span!("call", tool = %call.tool, invocation_id = %invocation_id);
        let (mut result, callable) = self.run_pipeline(&call).instrument(span.clone()).await;
        result.invocation_id = invocation_id;
        result.duration_us = started.elapsed().as_micros() as u64;
        if let Some(audit) = &self.audit {
            let entry = audit_entry(&call, &result, callable, time_unix_us);
            let sealed = audit
                .append(entry)
                .instrument(tracing::info_span!(parent: &span, "audit"))
                .await?;
            result.audit = Some(AuditRef {
                seq: sealed.seq,
                hash: sealed.hash,
            });
            result.duration_us = started.elapsed().as_micros() as u64;
        }
        span.in_scope(|| {
            tracing::info!(
                outcome = result.outcome.as_str(),
                fuel = result.fuel_used,
                us = result.duration_us,
                "done"
            )
        });
        Ok(result)
    }

    async fn run_pipeline(&self, call: &Call) -> (CallResult, Option<&Callable>) {
        let tool = match self.registry.get(&call.tool) {
            Some(tool) => tool,
            None => {
                let hint = suggest(&call.tool, self.registry.tools().map(|t| t.name.as_str()));
                let message = format!("unknown tool {:?}{hint}", call.tool);
                return (fail(call, Outcome::UnknownTool, message, Value::Null), None);
            }
        };
        let callable = match &tool.status {
            Status::Ready(c) => c,
            Status::Unavailable(reason) => {
                let message = format!("tool {:?} is unavailable: {reason}", call.tool);
                return (fail(call, Outcome::UnknownTool, message, Value::Null), None);
            }
        };

        let params = match tracing::info_span!("validate")
            .in_scope(|| arguments_to_vals(&callable.params, &call.arguments))
        {
            Ok(params) => params,
            Err(e) => {
                let detail = json!({"pointer": e.pointer, "problem": e.problem});
                return (
                    fail(call, Outcome::InvalidArguments, e.to_string(), detail),
                    Some(callable),
                );
            }
        };

        let results = usize::from(!matches!(callable.returns, Returns::Nothing));
        let policy = &callable.component.policy;
        let run = sandbox::run(
            &callable.component.pre,
            &callable.func,
            results,
            policy,
            &params,
        )
        .instrument(tracing::info_span!("sandbox"))
        .await;
        let mut result = fail(call, Outcome::Trap, String::new(), Value::Null);
        result.fuel_used = run.fuel_used;
        result.denials = run.denials;
        let guard = &callable.component.guard;

        let output = match run.end {
            RunEnd::Failed(f) => {
                result.outcome = match f.kind {
                    FailureKind::FuelExhausted => Outcome::FuelExhausted,
                    FailureKind::MemoryExceeded => Outcome::MemoryExceeded,
                    FailureKind::Timeout => Outcome::Timeout,
                    FailureKind::Trap => Outcome::Trap,
                    FailureKind::Overloaded => Outcome::Overloaded,
                };
                // A trap's message can carry the guest's own text (a panic
                // message): it reaches the caller only through the guard.
                let (verdict, flags) = guard::check(Value::String(f.message), guard).split();
                result.guard.flags = flags;
                let message = match verdict {
                    Ok(message) => message.as_str().unwrap_or_default().to_string(),
                    Err(why) => format!("the tool trapped; its message was withheld: {why}"),
                };
                result.error = Some(ErrorBody {
                    message,
                    detail: Value::Null,
                });
                return (result, Some(callable));
            }
            RunEnd::Returned(values) => {
                // Measured on the lifted value, before any JSON is built.
                let least = values.first().map_or(0, min_json_size);
                if let Some(message) = guard::too_large(least, "at least ", guard.output_limit) {
                    result.outcome = Outcome::OutputRejected;
                    result.error = Some(ErrorBody {
                        message,
                        detail: Value::Null,
                    });
                    return (result, Some(callable));
                }
                match returned_json(callable, values.first()) {
                    Ok(Ok(output)) => output,
                    Ok(Err(tool_error)) => {
                        // The tool's error value goes back to the caller too: guarded.
                        let (verdict, flags) = guard::check(tool_error, guard).split();
                        result.guard.flags = flags;
                        match verdict {
                            Ok(output) => {
                                result.outcome = Outcome::ToolError;
                                let message = match &output {
                                    Value::String(s) => s.clone(),
                                    _ => "the tool returned an error".to_string(),
                                };
                                result.error = Some(ErrorBody {
                                    message,
                                    detail: output,
                                });
                            }
                            Err(message) => {
                                result.outcome = Outcome::OutputRejected;
                                result.error = Some(ErrorBody {
                                    message: format!(
                                        "the tool's error value was rejected: {message}"
                                    ),
                                    detail: Value::Null,
                                });
                            }
                        }
                        return (result, Some(callable));
                    }
                    Err(message) => {
                        result.error = Some(ErrorBody {
                            message,
                            detail: Value::Null,
                        });
                        return (result, Some(callable));
                    }
                }
            }
        };

        let (verdict, flags) =
            tracing::info_span!("guard").in_scope(|| guard::check(output, guard).split());
        result.guard.flags = flags;
        match verdict {
            Ok(output) => {
                result.outcome = Outcome::Ok;
                result.output = output;
                result.error = None;
            }
            Err(message) => {
                result.outcome = Outcome::OutputRejected;
                result.error = Some(ErrorBody {
                    message,
                    detail: Value::Null,
                });
            }
        }
        (result, Some(callable))
    }
}

/// The output (`Ok`) or the tool's error value (`Err`) of a returned value;
/// the outer error is a value that does not match its type.
fn returned_json(callable: &Callable, value: Option<&Val>) -> Result<Result<Value, Value>, String> {
    let bad =
        |what: &str| format!("the tool returned {what}, which does not match its declared type");
    match (&callable.returns, value) {
        (Returns::Nothing, _) => Ok(Ok(Value::Null)),
        (Returns::Value(ty), Some(v)) => ty.to_json(v).map(Ok),
        (Returns::Result { ok, .. }, Some(Val::Result(Ok(v)))) => match (ok, v) {
            (Some(t), Some(v)) => t.to_json(v).map(Ok),
            (None, None) => Ok(Ok(Value::Null)),
            _ => Err(bad("an ok value")),
        },
        (Returns::Result { err, .. }, Some(Val::Result(Err(v)))) => match (err, v) {
            (Some(t), Some(v)) => t.to_json(v).map(Err),
            (None, None) => Ok(Err(Value::Null)),
            _ => Err(bad("an error value")),
        },
        _ => Err(bad("no value or a non-result value")),
    }
}

/// The audit entry of a finished call. Stored payloads are cut to the
/// policy's limit, with the values of passed-through env vars blanked.
fn audit_entry(
    call: &Call,
    result: &CallResult,
    callable: Option<&Callable>,
    time_unix_us: u64,
) -> Entry {
    let json = |v: &Value| serde_json::to_vec(v).unwrap_or_default();
    let policy = callable.map(|c| &*c.component.policy);
    let payload = |v: &Value| {
        let limit = policy?.audit_payloads?;
        let mut text = String::from_utf8_lossy(&json(v)).into_owned();
        for name in &policy?.env_pass {
            if let Some(secret) = std::env::var(name).ok().filter(|s| !s.is_empty()) {
                text = text.replace(&secret, &format!("[env:{name}]"));
            }
        }
        let mut end = text.len().min(limit as usize);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        Some(text)
    };
    let ok = result.outcome == Outcome::Ok;
    Entry {
        time_unix_us,
        invocation_id: result.invocation_id.clone(),
        caller: call.caller.clone(),
        session: call.session.clone(),
        tool: call.tool.clone(),
        component_digest: callable.map(|c| *c.component.digest.as_bytes()),
        policy_digest: policy.map(|p| *p.digest.as_bytes()),
        arguments_digest: *blake3::hash(&json(&call.arguments)).as_bytes(),
        output_digest: ok.then(|| *blake3::hash(&json(&result.output)).as_bytes()),
        outcome: result.outcome.as_str().to_string(),
        error: result.error.as_ref().map(|e| e.message.clone()),
        denials: result
            .denials
            .iter()
            .map(|d| RecordedDenial {
                kind: d.kind.to_string(),
                target: d.target.clone(),
                reason: d.reason.clone(),
            })
            .collect(),
        guard_flags: result.guard.flags.iter().map(|f| f.rule.clone()).collect(),
        fuel_used: result.fuel_used,
        duration_us: result.duration_us,
        arguments: payload(&call.arguments),
        output: if ok { payload(&result.output) } else { None },
    }
}

fn fail(call: &Call, outcome: Outcome, message: String, detail: Value) -> CallResult {
    CallResult {
        invocation_id: String::new(),
        tool: call.tool.clone(),
        outcome,
        output: Value::Null,
        error: Some(ErrorBody { message, detail }),
        guard: GuardReport::default(),
        denials: Vec::new(),
        fuel_used: 0,
        duration_us: 0,
        audit: None,
    }
}

/// "; did you mean …?" for a mistyped tool name, or a pointer to the list.
fn suggest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> String {
    let component = name.split('.').next().unwrap_or_default();
    let same: Vec<&str> = known
        .filter(|k| k.split('.').next() == Some(component))
        .collect();
    if same.is_empty() {
        "; `fabric tools` lists the tools".to_string()
    } else {
        format!("; {component} has: {}", same.join(", "))
    }
}

/// 128 random bits, hex.
fn new_invocation_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}
