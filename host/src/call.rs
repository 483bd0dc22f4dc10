//! The pipeline every call takes, from a [`Call`] to a [`CallResult`].
//!
//! ```text
//! Call ─► admit ─► resolve ─► validate ─► sandbox ─► guard ─► redact ─► audit ─► CallResult
//! ```
//!
//! Each stage hands the next a typed value, or ends the call with an
//! [`Ending`]; the result object is built once, from the parts, at the end.
//! The CLI and the servers build a `Call` and get a `CallResult` from
//! [`Fabric::call`]; none of them knows about stores, rules or hashes.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tracing::Instrument;
use wasmtime::component::{Linker, Val};
use wasmtime::Engine;

use crate::admit::{overloaded_detail, Admission, Admitted, Caller};
use crate::audit::{AuditError, AuditLog, AuditOptions, Entry, RecordedDenial};
use crate::breaker::CircuitState;
use crate::budget::{
    self, Budgets, LazySledCounters, MemoryCounters, SledCounters, Spent, StoreError, Usage,
};
use crate::config::HostConfig;
use crate::engine::{new_engine, new_linker, pool_key, EpochTicker};
use crate::guard::{self, Flag, GuardConfig};
use crate::listing::ToolInfo;
use crate::metrics::{CallSample, Metrics};
use crate::policy::Policy;
use crate::registry::{Callable, CodeCache, LoadProblem, Registry, RegistryError, Returns, Status};
use crate::sandbox::{self, Denial, FailureKind, Halt, RunEnd, Secrets, State};
use crate::schema::{arguments_to_vals, min_json_size, Ty};
use crate::telemetry::{CallFacts, CallSpan, Stage, Telemetry, TraceContext};

/// Longest caller-controlled name (a tool name, a session id) kept in
/// messages, results and audit records; longer ones are cut, visibly.
pub(crate) const MAX_NAME: usize = 256;
/// Longest error message kept in a result or record. Messages carry
/// caller-controlled text (argument keys) and tool text (stderr).
const MAX_MESSAGE: usize = 4096;
/// The outcome recorded in the audit log for a call the host failed (never
/// in a result: such a call ends in [`CallError::HostFault`]).
pub const HOST_FAULT: &str = "host_fault";
/// Outputs at least this large (bytes of JSON) are converted and guarded on
/// tokio's blocking pool, so a big output does not hold up the reactor.
const OFF_REACTOR: u64 = 64 * 1024;

/// Where a [`Fabric`] finds its tools and keeps its state. Start from
/// [`Options::new`] and set the fields you need.
#[derive(Debug, Clone)]
#[non_exhaustive]
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
    /// Pool shape, admission bound and the maxima policies may grant.
    pub host: HostConfig,
    /// Where call spans go (nowhere by default).
    pub telemetry: Telemetry,
    /// Open the budget store (under the data directory) when a caller with
    /// a budget first needs it, not when Fabric opens: for processes only
    /// the local operator calls, which has no budget. Off by default, so a
    /// server finds a store it cannot open before it takes a call.
    pub budgets_on_first_use: bool,
}

impl Options {
    /// Tools and policies from these directories, no data directory (no
    /// audit log, no compiled-code cache), the default host configuration.
    pub fn new(tools_dir: impl Into<PathBuf>, policies_dir: impl Into<PathBuf>) -> Options {
        Options {
            tools_dir: tools_dir.into(),
            policies_dir: policies_dir.into(),
            data_dir: None,
            audit_key: None,
            durable_audit: true,
            host: HostConfig::default(),
            telemetry: Telemetry::default(),
            budgets_on_first_use: false,
        }
    }
}

/// Fabric could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    /// The budget store could not be opened.
    #[error(transparent)]
    Budgets(#[from] StoreError),
}

/// A fault of Fabric itself that stopped a call: never an outcome of the
/// call, which would have been returned as a [`CallResult`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The call's audit record could not be made durable, so no answer is
    /// given.
    #[error("the call's audit record could not be written: {0}")]
    Audit(#[from] AuditError),
    /// The host could not give the tool what its policy grants (a mounted
    /// directory vanished after load). The call was audited with outcome
    /// `host_fault`; the message names the policy key and what to fix.
    #[error("{message}")]
    HostFault {
        /// What failed and what to do.
        message: String,
        /// The call's audit record, when the log is on.
        audit: Option<AuditRef>,
    },
}

/// One request to run a tool.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Call {
    /// Who is calling.
    pub caller: Caller,
    /// The agent session the call belongs to, when given.
    pub session: Option<String>,
    /// `NAME.FUNCTION`.
    pub tool: String,
    /// The arguments object.
    pub arguments: Value,
    /// The caller's trace context, when it sent one.
    pub trace: Option<TraceContext>,
    /// Stops this call alone when halted (a client that cancelled by
    /// disconnecting): it ends as `timeout`, saying why, and is audited.
    pub cancel: Option<Arc<Halt>>,
}

impl Call {
    /// A call of `tool` with `arguments`, in no session.
    pub fn new(caller: Caller, tool: impl Into<String>, arguments: Value) -> Call {
        Call {
            caller,
            session: None,
            tool: tool.into(),
            arguments,
            trace: None,
            cancel: None,
        }
    }

    /// The same call, in `session`.
    pub fn in_session(mut self, session: impl Into<String>) -> Call {
        self.session = Some(session.into());
        self
    }

    /// The same call, continuing the caller's trace.
    pub fn with_trace(mut self, trace: TraceContext) -> Call {
        self.trace = Some(trace);
        self
    }

    /// The same call, stopped when `cancel` is halted.
    pub fn cancelled_by(mut self, cancel: Arc<Halt>) -> Call {
        self.cancel = Some(cancel);
        self
    }
}

/// How a call ended. Stable, snake_case names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
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
    /// The caller's budget is spent; nothing ran.
    BudgetExceeded,
    /// No valid credentials; nothing ran.
    Unauthorized,
    /// The caller may not use this tool; nothing ran.
    Forbidden,
    /// No capacity to run the call now; nothing ran.
    Overloaded,
    /// The tool's circuit breaker is open after repeated failures; nothing ran.
    CircuitOpen,
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
            Outcome::CircuitOpen => "circuit_open",
        }
    }
}

/// The error part of a result.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ErrorBody {
    /// One line saying what went wrong.
    pub message: String,
    /// Structured detail: the tool's error value, the offending pointer,
    /// `retry_after_s` for refusals that pass, …
    pub detail: Value,
}

/// Guard findings in a result.
#[derive(Debug, Clone, PartialEq, Default, Serialize, schemars::JsonSchema)]
pub struct GuardReport {
    /// Rule hits.
    pub flags: Vec<Flag>,
    /// The tool's text marked as data (`[guard] spotlight`), when the policy
    /// asks for it: the mode, this call's marker and the marked text (on
    /// `ok` the output string, or the output's JSON text; on `tool_error`
    /// the error value (`error.detail`), on `trap` the message: what the
    /// tool wrote).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spotlight: Option<guard::Spotlighted>,
}

/// Where the call's audit record is.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct AuditRef {
    /// Sequence number.
    pub seq: u64,
    /// Record hash, blake3 hex.
    pub hash: String,
}

/// The contract's result object.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
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
    /// The audit record (`null` when the audit log is off).
    pub audit: Option<AuditRef>,
    /// The call's trace and span ids (its `execute_tool` span), also in its
    /// audit record.
    pub trace: TraceRef,
    /// Where the call's time went (not part of the result object).
    #[serde(skip)]
    #[schemars(skip)]
    pub phases: Phases,
}

/// Where a call is in the traces: its trace id and its own span id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct TraceRef {
    /// The trace, 32 lower-case hex digits (the caller's, when it sent a
    /// `traceparent`).
    pub trace_id: String,
    /// The call's `execute_tool` span, 16 lower-case hex digits.
    pub span_id: String,
    /// Whether the span is sampled (exported).
    #[serde(skip)]
    #[schemars(skip)]
    pub sampled: bool,
}

/// Where one call's time went, stage by stage: what `fabric bench` breaks
/// its latency into. Stages a call did not reach are zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Phases {
    /// The admit stage: caller, scope, breaker, caps, a slot (including the
    /// wait in the queue) and budgets.
    pub admit: std::time::Duration,
    /// Resolving the tool and validating the arguments.
    pub validate: std::time::Duration,
    /// A fresh store and instance.
    pub instantiate: std::time::Duration,
    /// The guest's call.
    pub run: std::time::Duration,
    /// Output conversion, the guard and settling the budgets (two stages in
    /// a call's trace: `guard`, `settle`).
    pub guard: std::time::Duration,
    /// The audit append, until the record is durable.
    pub audit: std::time::Duration,
}

/// How a call ended, as the stages decide it: the outcome, the output, the
/// error and the guard's flags. Every stage that stops a call returns one.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ending {
    outcome: Outcome,
    output: Value,
    error: Option<ErrorBody>,
    flags: Vec<Flag>,
    /// The host, not the tool, failed: the call ends in a [`CallError`].
    host_fault: bool,
}

impl Ending {
    /// A call that did not end `ok`.
    pub(crate) fn failed(outcome: Outcome, message: impl Into<String>, detail: Value) -> Ending {
        Ending {
            outcome,
            output: Value::Null,
            error: Some(ErrorBody {
                message: message.into(),
                detail,
            }),
            flags: Vec::new(),
            host_fault: false,
        }
    }

    /// A fault of the host: the call ends in [`CallError::HostFault`].
    pub(crate) fn host_fault(message: impl Into<String>) -> Ending {
        Ending {
            host_fault: true,
            ..Ending::failed(Outcome::Trap, message, Value::Null)
        }
    }

    fn flagged(mut self, flags: Vec<Flag>) -> Ending {
        self.flags = flags;
        self
    }

    /// How it ended.
    #[cfg(test)]
    pub(crate) fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// The error part, unless `ok`.
    #[cfg(test)]
    pub(crate) fn error(&self) -> Option<&ErrorBody> {
        self.error.as_ref()
    }
}

/// What the stages produced, before redaction and audit.
struct Done<'a> {
    ending: Ending,
    callable: Option<&'a Callable>,
    fuel_used: u64,
    denials: Vec<Denial>,
    secrets: Secrets,
    /// The call's slots, held until its record is written.
    _admitted: Option<Admitted<'a>>,
    phases: Phases,
    /// The stages' start and end, for the call's trace.
    stages: Vec<Stage>,
}

impl<'a> Done<'a> {
    /// A call that ended before its sandbox ran. The values of its
    /// policy's `[env] pass` variables are read all the same, so that
    /// arguments or an error quoting one are redacted in the result and the
    /// record as a run call's are.
    fn before_run(ending: Ending, callable: Option<&'a Callable>) -> Done<'a> {
        Done {
            ending,
            callable,
            fuel_used: 0,
            denials: Vec::new(),
            secrets: callable.map_or_else(Secrets::default, |c| {
                Secrets::read(&c.component.policy.env_pass)
            }),
            _admitted: None,
            phases: Phases::default(),
            stages: Vec::new(),
        }
    }

    fn timed(mut self, clock: Laps) -> Done<'a> {
        self.phases = clock.phases;
        self.stages = clock.stages;
        self
    }
}

/// The long-lived runtime: engine, registry, admission, audit writer and
/// epoch timer. Share it (`Arc<Fabric>`) between every front end and
/// request; nothing in it is per call.
///
/// ```
/// use fabric_host::{Call, Caller, Fabric, Options, Outcome};
/// use serde_json::json;
///
/// let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
/// let options = Options::new(format!("{root}/build/tools"), format!("{root}/policies"));
/// let fabric = Fabric::open(&options)?;
/// let runtime = tokio::runtime::Runtime::new()?;
///
/// let call = Call::new(Caller::Local, "text.echo", json!({"text": "hi"}));
/// let result = runtime.block_on(fabric.call(call))?;
/// assert_eq!(result.outcome, Outcome::Ok);
/// assert_eq!(result.output, json!("hi"));
///
/// // Bad arguments are refused before any instance is created.
/// let call = Call::new(Caller::Local, "text.echo", json!({"text": 5}));
/// let result = runtime.block_on(fabric.call(call))?;
/// assert_eq!(result.outcome, Outcome::InvalidArguments);
/// assert_eq!(result.fuel_used, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Fabric {
    /// The components hold it too; reused-instance measurements need it.
    engine: Engine,
    registry: Registry,
    admission: Admission,
    audit: Option<AuditLog>,
    halt: Arc<Halt>,
    telemetry: Telemetry,
    metrics: Arc<Metrics>,
    /// Outputs guarded on the blocking pool at once: one per core (see
    /// [`guard_lanes`]).
    guard_lanes: Arc<Semaphore>,
    _ticker: EpochTicker,
}

/// How many large outputs are guarded at once: one per core (the wait for a
/// lane counts in the call's guard stage). A check is
/// CPU-bound, so more at once would not end sooner, and each check running
/// holds its own caches of the guard's automata (up to 16 MiB a group,
/// eight groups for the default rules; about 30 MB each after checking the
/// development part's 840 benign records, so 16 threads at once held 490
/// MB). Admission lets `max_in_flight` calls run (32 per core by default),
/// and without this bound their outputs' checks would too: `fabric serve`
/// on 2 cores, 32 concurrent calls reading different 200 KB text files,
/// twice, peaked at 1,060 MB of memory, and at 580 MB with it (in 7.1-7.2 s
/// against 9.6-10.9). Smaller outputs are checked on the reactor's worker
/// threads, one per core as well, so at most two checks per core run at
/// once. (Caches are kept for reuse, sharded by thread, so the blocking
/// pool's changing threads may keep more sets than run at once.)
fn guard_lanes() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Fabric {
    /// Builds the engine and loads every tool. Problems with single
    /// components are in [`Fabric::problems`], not errors.
    pub fn open(options: &Options) -> Result<Fabric, OpenError> {
        // The default guard rules' automata take tens of milliseconds to
        // build: built beside the engine and the first call, not after it.
        let _ = std::thread::Builder::new()
            .name("guard-prepare".into())
            .spawn(|| crate::guard::RuleSet::default_rules().prepare());
        let engine = new_engine(&options.host).map_err(|e| OpenError::Engine(format!("{e:#}")))?;
        let linker: Linker<State> =
            new_linker(&engine).map_err(|e| OpenError::Engine(format!("{e:#}")))?;
        // Compiled code is cached only under a key kept beside the audit key.
        let cache = options
            .data_dir
            .as_ref()
            .zip(options.audit_key.as_ref())
            .and_then(|(data, key)| {
                CodeCache::open(data.join("compiled"), key, pool_key(&options.host))
            });
        let metrics = Arc::new(Metrics::new());
        let registry = Registry::load(
            &engine,
            &linker,
            &options.tools_dir,
            &options.policies_dir,
            cache,
            &options.host,
        )?;
        let audit = match &options.data_dir {
            Some(dir) => Some(AuditLog::open(&AuditOptions {
                key: options.audit_key.clone(),
                durable: options.durable_audit,
                on_batch: Some({
                    let metrics = metrics.clone();
                    Arc::new(move |records| metrics.audit_batch(records))
                }),
                ..AuditOptions::new(dir.join("audit"))
            })?),
            None => None,
        };
        let counters: Box<dyn budget::CounterStore> = match &options.data_dir {
            Some(dir) if options.budgets_on_first_use => {
                Box::new(LazySledCounters::new(&dir.join("budgets")))
            }
            Some(dir) => Box::new(SledCounters::open(&dir.join("budgets"))?),
            None => Box::<MemoryCounters>::default(),
        };
        let budgets = Budgets::new(counters, options.host.anomaly);
        let ticker = EpochTicker::start(&engine)?;
        Ok(Fabric {
            engine,
            registry,
            admission: Admission::new(
                options.host.max_in_flight as usize,
                options.host.queue as usize,
                budgets,
            ),
            audit,
            halt: Arc::default(),
            telemetry: options.telemetry.clone(),
            metrics,
            guard_lanes: Arc::new(Semaphore::new(guard_lanes())),
            _ticker: ticker,
        })
    }

    /// The tools `caller` may see, sorted by name, as every front end lists
    /// them.
    pub fn tools(&self, caller: &Caller) -> Vec<ToolInfo> {
        let mut tools: Vec<ToolInfo> = self
            .registry
            .tools()
            .filter(|t| caller.may_call(&t.name))
            .map(ToolInfo::of)
            .collect();
        // The registry's order is by component, then function (`a.f` comes
        // before `a-b.f`); MCP's cursors are names, so they need this one.
        tools.sort_by(|a, b| a.name.cmp(&b.name));
        tools
    }

    /// One tool's listing, if `caller` may see it.
    pub fn tool(&self, caller: &Caller, name: &str) -> Option<ToolInfo> {
        self.registry
            .get(name)
            .filter(|t| caller.may_call(&t.name))
            .map(ToolInfo::of)
    }

    /// What failed to load: components, policies, single functions, and
    /// components found not to compile or link (by a call, `precompile`, or
    /// a failure remembered in the compiled-code cache).
    pub fn problems(&self) -> Vec<LoadProblem> {
        self.registry.problems()
    }

    /// Compiles and links every component not compiled yet (from the cache
    /// where it can): each component file and whether it compiled, or why not.
    pub async fn precompile(&self) -> Vec<(PathBuf, Result<(), String>)> {
        self.registry.precompile().await
    }

    /// Tools whose circuit breaker is open or half-open.
    pub fn open_circuits(&self) -> Vec<CircuitState> {
        self.admission.open_circuits()
    }

    /// Calls running now, and calls waiting for a slot.
    pub fn load(&self) -> (usize, usize) {
        (self.admission.in_flight(), self.admission.queued())
    }

    /// What the caller `name` has spent (all of its calls), and its session
    /// `session` when given.
    pub fn spent(&self, name: &str, session: Option<&str>) -> Result<Spent, StoreError> {
        let key = match session {
            Some(s) => budget::session_key(name, s),
            None => budget::caller_key(name),
        };
        self.admission.budgets().spent(&key)
    }

    /// The metrics of every call so far, as Prometheus text.
    pub fn metrics(&self) -> String {
        let circuits: Vec<(String, i64)> = self
            .open_circuits()
            .into_iter()
            .map(|c| (c.tool, if c.state == "open" { 2 } else { 1 }))
            .collect();
        self.metrics.render(
            self.load(),
            &self.anomalies(),
            &circuits,
            self.registry.cache_lookups(),
        )
    }

    /// Where call spans go.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Budget anomaly alerts raised so far, by caller name.
    pub fn anomalies(&self) -> Vec<(String, u64)> {
        self.admission.budgets().anomalies()
    }

    /// Stops every running call now: each ends as `timeout` (with a message
    /// saying why) and is audited; calls started after it end the same way.
    /// For shutdown, once the grace period for running calls has passed.
    pub fn halt(&self) {
        self.halt.halt();
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

    /// Calls `tool` with `arguments` on ONE instance, `warmup` times and then
    /// `n` times, returning the latencies of the `n`: the floor under a
    /// fresh instance per call, for `fabric bench`. Not isolated: state
    /// carries over from call to call, which is why Fabric never serves
    /// calls this way. Fuel and time are unlimited; nothing is audited.
    pub async fn reused_instance(
        &self,
        tool: &str,
        arguments: &Value,
        warmup: usize,
        n: usize,
    ) -> Result<Vec<std::time::Duration>, String> {
        let callable = self
            .resolve(&Caller::Local, tool)
            .map_err(|e| e.error.map(|e| e.message).unwrap_or_default())?;
        let params = arguments_to_vals(&callable.params, arguments).map_err(|e| e.to_string())?;
        let policy = &callable.component.policy;
        let mut store = sandbox::new_store(
            &self.engine,
            policy,
            &Secrets::default(),
            sandbox::Halts {
                host: &self.halt,
                call: None,
            },
        )
        .map_err(|f| f.message)?;
        let unlimited = store
            .set_fuel(u64::MAX)
            .map(|()| store.set_epoch_deadline(u64::MAX / 2));
        unlimited.map_err(|e| format!("{e:#}"))?;
        let linked = callable.component.linked().await?;
        let func = linked.func(callable)?;
        let instance = linked
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| format!("instantiating {tool} failed: {e:#}"))?;
        let func = instance
            .get_func(&mut store, func)
            .ok_or_else(|| format!("{tool} is not exported"))?;
        let results = usize::from(!matches!(callable.returns, Returns::Nothing));
        let mut out = vec![Val::Bool(false); results];
        let mut samples = Vec::with_capacity(n);
        for i in 0..warmup + n {
            let started = Instant::now();
            func.call_async(&mut store, &params, &mut out)
                .await
                .map_err(|e| format!("{tool} failed on a reused instance: {e:#}"))?;
            if i >= warmup {
                samples.push(started.elapsed());
            }
        }
        Ok(samples)
    }

    /// The registry, for benchmarks.
    #[cfg(feature = "internals")]
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Gives back the compiled code pages of tools no call has used for
    /// `idle` ([`Registry::release_idle`]); returns the bytes given back.
    pub fn release_idle(&self, idle: std::time::Duration) -> u64 {
        self.registry.release_idle(idle)
    }

    /// The shared engine, for benchmarks.
    #[cfg(feature = "internals")]
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Runs one call through the whole pipeline. The result is returned once
    /// its audit record is durable; an error is a fault of Fabric itself (the
    /// audit log cannot be written), never an outcome of the call.
    ///
    /// Dropping the future cancels the call, and a call cancelled before its
    /// record is appended leaves none: a front end that may drop it (a client
    /// that disconnects) runs it in a task of its own.
    pub async fn call(&self, call: Call) -> Result<CallResult, CallError> {
        let started = Instant::now();
        let time_unix_us = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let invocation_id = new_invocation_id();
        let tool = cap(&call.tool, MAX_NAME).into_owned();
        let traced = self.telemetry.start_call(call.trace.as_ref());
        let trace_id = traced.ids.trace_hex();
        let span = tracing::info_span!("call", tool = %tool, invocation_id = %invocation_id, trace_id = %trace_id);
        let mut done = self.pipeline(&call).instrument(span.clone()).await;

        // Nothing a tool was handed from the host environment leaves in a
        // result or a record (the guard stage redacted what the tool said;
        // this catches what the stages made of it, such as flag excerpts).
        let ending = done.secrets.redact_ending(done.ending);
        let host_fault = ending.host_fault;
        let denials = done.secrets.redact_denials(done.denials);
        // Marked as data after the guard and the redaction of secrets.
        // The tool wrote an output, or its error value or panic message:
        // all of it reaches the agent, so all of it is marked.
        let spotlight = done.callable.and_then(|c| match ending.outcome {
            Outcome::Ok => guard::spotlight(&ending.output, &c.component.guard),
            // The tool's own text: its error value (whole, in `detail`), or
            // its panic message.
            Outcome::ToolError | Outcome::Trap => ending.error.as_ref().and_then(|e| {
                let text = match &e.detail {
                    Value::Null => Value::String(e.message.clone()),
                    detail => detail.clone(),
                };
                guard::spotlight(&text, &c.component.guard)
            }),
            _ => None,
        });
        let mut result = CallResult {
            invocation_id,
            tool,
            outcome: ending.outcome,
            output: ending.output,
            error: ending.error,
            guard: GuardReport {
                flags: ending.flags,
                spotlight,
            },
            denials,
            fuel_used: done.fuel_used,
            duration_us: started.elapsed().as_micros() as u64,
            audit: None,
            trace: TraceRef {
                trace_id,
                span_id: traced.ids.span_hex(),
                sampled: traced.ids.sampled,
            },
            phases: done.phases,
        };
        if let Some(audit) = &self.audit {
            let appending = Instant::now();
            let mut entry = audit_entry(&call, &result, done.callable, &done.secrets, time_unix_us);
            entry.trace_id = Some(traced.ids.trace_id);
            entry.span_id = Some(traced.ids.span_id);
            if host_fault {
                entry.outcome = HOST_FAULT.to_string();
            }
            let sealed = match audit
                .append(entry)
                .instrument(tracing::info_span!(parent: &span, "audit"))
                .await
            {
                Ok(sealed) => sealed,
                Err(e) => {
                    // No answer without a record: the call's span and
                    // metrics say so.
                    done.stages.push(("audit", appending, Instant::now()));
                    let facts = Observed {
                        callable: done.callable,
                        outcome: AUDIT_FAILED,
                    };
                    self.observe(&call, &result, facts, traced, &done.stages);
                    return Err(e.into());
                }
            };
            result.audit = Some(AuditRef {
                seq: sealed.seq,
                hash: sealed.hash,
            });
            let appended = Instant::now();
            result.phases.audit = appended - appending;
            self.metrics
                .audit_appended(result.phases.audit.as_secs_f64());
            done.stages.push(("audit", appending, appended));
            result.duration_us = started.elapsed().as_micros() as u64;
        }
        let outcome = if host_fault {
            HOST_FAULT
        } else {
            result.outcome.as_str()
        };
        let facts = Observed {
            callable: done.callable,
            outcome,
        };
        self.observe(&call, &result, facts, traced, &done.stages);
        if host_fault {
            span.in_scope(
                || tracing::error!(tool = %result.tool, "host fault: {:?}", result.error),
            );
            return Err(CallError::HostFault {
                message: result.error.map(|e| e.message).unwrap_or_default(),
                audit: result.audit,
            });
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

    /// Ends the call's span and counts the call in the metrics.
    fn observe(
        &self,
        call: &Call,
        result: &CallResult,
        observed: Observed<'_>,
        traced: CallSpan,
        stages: &[Stage],
    ) {
        let Observed { callable, outcome } = observed;
        let caller = match &call.caller {
            Caller::Local => "local",
            other => other.name().unwrap_or(""),
        };
        let rules: Vec<String> = result.guard.flags.iter().map(|f| f.rule.clone()).collect();
        let tool = if callable.is_some() {
            result.tool.as_str()
        } else {
            ""
        };
        let seconds: Vec<(&'static str, f64)> = stages
            .iter()
            .map(|(name, from, to)| (*name, (*to - *from).as_secs_f64()))
            .collect();
        self.metrics.record_call(&CallSample {
            tool,
            caller,
            outcome,
            seconds: result.duration_us as f64 / 1e6,
            fuel: result.fuel_used,
            guard_rules: &rules,
            stages: &seconds,
        });
        if traced.ids.sampled {
            self.metrics.span_started();
        }
        if !traced.recording() {
            return;
        }
        traced.end(
            CallFacts {
                invocation_id: &result.invocation_id,
                tool: &result.tool,
                description: callable
                    .and_then(|_| self.registry.get(&result.tool))
                    .and_then(|t| t.description.as_deref()),
                caller,
                session: call.session.as_deref(),
                outcome,
                fuel_used: result.fuel_used,
                guard_rules: rules,
                denials: result.denials.len(),
                audit_seq: result.audit.as_ref().map(|a| a.seq),
                resolved: callable.is_some(),
            },
            stages,
        );
    }

    /// admit → resolve → validate → enter (breaker, caps, slot, budgets) →
    /// sandbox → guard → settle.
    async fn pipeline(&self, call: &Call) -> Done<'_> {
        let mut clock = Laps::start();
        let checked = self.admission.check_caller(call);
        clock.phases.admit = clock.lap("admit");
        if let Err(refusal) = checked {
            return Done::before_run(*refusal, None).timed(clock);
        }
        let callable = match self.resolve(&call.caller, &call.tool) {
            Ok(callable) => callable,
            Err(ending) => return Done::before_run(ending, None).timed(clock),
        };
        let params = tracing::info_span!("validate").in_scope(|| validate(callable, call));
        clock.phases.validate = clock.lap("validate");
        let params = match params {
            Ok(params) => params,
            Err(ending) => return Done::before_run(ending, Some(callable)).timed(clock),
        };
        // Compiled on its first call (outside the call's limits and slots).
        let linked = match callable.component.linked().await {
            Ok(linked) => linked.func(callable).map(|func| (linked, func)),
            Err(reason) => Err(reason),
        };
        clock.phases.instantiate = clock.lap("link");
        // Its code stays resident while the call runs (see `idle.rs`).
        let _in_use = callable.component.in_use();
        let (linked, func) = match linked {
            Ok(linked) => linked,
            Err(reason) => {
                let ending = unavailable(cap(&call.tool, MAX_NAME).as_ref(), &reason);
                return Done::before_run(ending, Some(callable)).timed(clock);
            }
        };
        let policy = &*callable.component.policy;
        // The slots are held until the call's record is written.
        let entered = match &call.cancel {
            // A call cancelled while it waits for a slot never runs.
            Some(cancel) => tokio::select! {
                entered = self.admission.enter(call, policy) => entered,
                () = cancel.halted() => Err(Box::new(Ending::failed(
                    Outcome::Timeout,
                    sandbox::CANCELLED.to_string(),
                    Value::Null,
                ))),
            },
            None => self.admission.enter(call, policy).await,
        };
        let queued = clock.lap("queue");
        clock.phases.admit += queued;
        let mut admitted = match entered {
            Ok(admitted) => admitted,
            Err(refusal) => return Done::before_run(*refusal, Some(callable)).timed(clock),
        };
        // A budget with less left than the policy grants lowers the limits.
        let capped = admitted.granted().and_then(|g| capped(policy, g));
        let limits = capped.as_ref().unwrap_or(policy);
        let results = usize::from(!matches!(callable.returns, Returns::Nothing));
        let started = Instant::now();
        let halts = sandbox::Halts {
            host: &self.halt,
            call: call.cancel.as_ref(),
        };
        let run = sandbox::run(&linked.pre, &func, results, limits, &params, halts)
            .instrument(tracing::info_span!("sandbox"))
            .await;
        let wall_us = started.elapsed().as_micros() as u64;
        let sandboxed = clock.split(run.instantiate, "instantiate", "run");
        let instantiated = run.instantiate.min(sandboxed);
        clock.phases.instantiate += instantiated;
        clock.phases.run = sandboxed - instantiated;
        let guard = match &capped {
            Some(p) => Cow::Owned(GuardConfig {
                output_limit: p.limits.output,
                ..callable.component.guard.clone()
            }),
            None => Cow::Borrowed(&callable.component.guard),
        };
        let mut ending = guard_stage(
            &callable.returns,
            &guard,
            run.end,
            &run.secrets,
            &self.guard_lanes,
        )
        .instrument(tracing::info_span!("guard"))
        .await;
        let hit_cap = match &capped {
            Some(p) => note_cap(&mut ending, &policy.limits, &p.limits),
            None => false,
        };
        // Only a call charged to a budget needs its output measured.
        let output = if ending.outcome == Outcome::Ok && admitted.granted().is_some() {
            guard::json_size(&ending.output)
        } else {
            0
        };
        let used = Usage {
            fuel: run.fuel_used,
            wall_us,
            output,
        };
        let message = ending.error.as_ref().map(|e| e.message.as_str());
        // A call stopped because its client cancelled says nothing about the
        // tool either (one that ended otherwise is counted as it ended).
        let cancelled = ending.outcome == Outcome::Timeout
            && call.cancel.as_ref().is_some_and(|c| c.is_halted());
        let verdict =
            (!hit_cap && !ending.host_fault && !cancelled).then_some((ending.outcome, message));
        let guarded = clock.lap("guard");
        self.admission.leave(&mut admitted, policy, verdict, used);
        clock.phases.guard = guarded + clock.lap("settle");
        Done {
            ending,
            callable: Some(callable),
            fuel_used: run.fuel_used,
            denials: run.denials,
            secrets: run.secrets,
            _admitted: Some(admitted),
            phases: clock.phases,
            stages: clock.stages,
        }
    }

    /// The callable tool named `name`, or why there is none (suggesting
    /// only tools the caller may see).
    fn resolve(&self, caller: &Caller, name: &str) -> Result<&Callable, Ending> {
        let shown = cap(name, MAX_NAME);
        let Some(tool) = self.registry.get(name) else {
            if let Some(reason) = self.registry.broken(name) {
                return Err(unavailable(&shown, reason));
            }
            let visible = self
                .registry
                .tools()
                .map(|t| t.name.as_str())
                .filter(|t| caller.may_call(t));
            let hint = suggest(name, visible);
            return Err(Ending::failed(
                Outcome::UnknownTool,
                format!("unknown tool {shown:?}{hint}"),
                Value::Null,
            ));
        };
        match (&tool.status, tool.unavailable()) {
            (Status::Ready(callable), None) => Ok(callable),
            (_, reason) => Err(unavailable(&shown, reason.unwrap_or_default())),
        }
    }
}

/// The ending of a call of a tool that is listed but cannot run: outcome
/// `unknown_tool` (nothing ran), with the reason.
fn unavailable(tool: &str, reason: &str) -> Ending {
    Ending::failed(
        Outcome::UnknownTool,
        cap(
            &format!("tool {tool:?} is unavailable: {reason}"),
            MAX_MESSAGE,
        )
        .into_owned(),
        json!({ "unavailable": cap(reason, MAX_MESSAGE) }),
    )
}

/// The arguments as WIT values, or `invalid_arguments` naming the pointer.
fn validate(callable: &Callable, call: &Call) -> Result<Vec<Val>, Ending> {
    arguments_to_vals(&callable.params, &call.arguments).map_err(|e| {
        let detail = json!({
            "pointer": cap(&e.pointer, MAX_MESSAGE),
            "problem": cap(&e.problem, MAX_MESSAGE),
        });
        Ending::failed(
            Outcome::InvalidArguments,
            cap(&e.to_string(), MAX_MESSAGE),
            detail,
        )
    })
}

/// The policy with its limits lowered to what the caller's budgets have
/// left, or `None` when they leave the policy's own limits.
fn capped(policy: &Policy, granted: Usage) -> Option<Policy> {
    let l = &policy.limits;
    let timeout = std::time::Duration::from_micros(granted.wall_us);
    if granted.fuel >= l.fuel && timeout >= l.timeout && granted.output >= l.output {
        return None;
    }
    let mut lowered = policy.clone();
    lowered.limits.fuel = granted.fuel.min(l.fuel);
    lowered.limits.timeout = timeout.min(l.timeout);
    lowered.limits.output = granted.output.min(l.output);
    Some(lowered)
}

/// Says in the error of a call that hit a limit a budget lowered that the
/// budget, not the policy, set it; returns whether it did.
fn note_cap(
    ending: &mut Ending,
    policy: &crate::policy::Limits,
    capped: &crate::policy::Limits,
) -> bool {
    let budget = match ending.outcome {
        Outcome::FuelExhausted if capped.fuel < policy.fuel => "fuel",
        Outcome::Timeout if capped.timeout < policy.timeout => "wall",
        Outcome::OutputRejected if capped.output < policy.output => "output",
        _ => return false,
    };
    if let Some(error) = ending.error.as_mut() {
        error.message.push_str(&format!(
            "; the limit was lowered to what is left of the caller's {budget} budget"
        ));
    }
    true
}

/// How the run ended, checked by the guard: a trap's message and a tool's
/// error value reach the caller only through it, like an output. What the
/// tool said is redacted of its `[env] pass` values before anything else is
/// done with it (cut, guarded, excerpted).
async fn guard_stage(
    returns: &Returns,
    guard: &GuardConfig,
    end: RunEnd,
    secrets: &Secrets,
    lanes: &Arc<Semaphore>,
) -> Ending {
    match end {
        RunEnd::Failed(f) if f.kind == FailureKind::Host => Ending::host_fault(f.message),
        RunEnd::Failed(f) => {
            let (outcome, detail) = match f.kind {
                FailureKind::FuelExhausted => (Outcome::FuelExhausted, Value::Null),
                FailureKind::MemoryExceeded => (Outcome::MemoryExceeded, Value::Null),
                FailureKind::Timeout => (Outcome::Timeout, Value::Null),
                FailureKind::Trap => (Outcome::Trap, Value::Null),
                FailureKind::Overloaded => (Outcome::Overloaded, overloaded_detail()),
                FailureKind::OutputTooLarge => (Outcome::OutputRejected, Value::Null),
                FailureKind::Host => (Outcome::Trap, Value::Null),
            };
            let said = secrets.redact(&f.message).into_owned();
            let (verdict, flags) = guard::check(Value::String(said), guard).split();
            let message = match verdict {
                Ok(Value::String(message)) => message,
                Ok(_) => String::new(),
                Err(why) => format!("the tool trapped; its message was withheld: {why}"),
            };
            Ending::failed(outcome, cap(&message, MAX_MESSAGE), detail).flagged(flags)
        }
        RunEnd::Returned(mut values) => {
            let value = values.pop();
            // Measured on the lifted value, before any JSON is built.
            let least = value.as_ref().map_or(0, min_json_size);
            if let Some(message) = guard::too_large(least, "at least ", guard.output_limit) {
                return Ending::failed(Outcome::OutputRejected, message, Value::Null);
            }
            if least < OFF_REACTOR {
                return check_returned(returns, guard, value.as_ref(), secrets);
            }
            let (returns, guard) = (returns.clone(), guard.clone());
            let secrets = secrets.clone();
            // The check holds its lane to its end, even if this call's
            // future is dropped meanwhile. (The semaphore is never closed,
            // so acquiring cannot fail.)
            let lane = Arc::clone(lanes).acquire_owned().await;
            tokio::task::spawn_blocking(move || {
                let _lane = lane;
                check_returned(&returns, &guard, value.as_ref(), &secrets)
            })
            .await
            .unwrap_or_else(|e| {
                Ending::failed(
                    Outcome::Trap,
                    format!("checking the output failed: {e}"),
                    Value::Null,
                )
            })
        }
    }
}

/// Converts a returned value to JSON, redacts and guards it: `ok` with the
/// output, `tool_error` with the tool's error value, or `output_rejected`.
fn check_returned(
    returns: &Returns,
    guard: &GuardConfig,
    value: Option<&Val>,
    secrets: &Secrets,
) -> Ending {
    let returned = returned_json(returns, value).map(|r| match r {
        Ok(output) => Ok(secrets.redact_value(output)),
        Err(tool_error) => Err(secrets.redact_value(tool_error)),
    });
    let (ok, err) = match returns {
        Returns::Nothing => (None, None),
        Returns::Value(ty) => (Some(ty), None),
        Returns::Result { ok, err } => (ok.as_ref(), err.as_ref()),
    };
    match returned {
        Err(message) => Ending::failed(Outcome::Trap, message, Value::Null),
        Ok(Ok(output)) => match guard::check(output, guard).split() {
            (Ok(output), flags) => match redacted_out_of_type(ok, &output, &flags) {
                Some(message) => {
                    Ending::failed(Outcome::OutputRejected, message, Value::Null).flagged(flags)
                }
                None => Ending {
                    outcome: Outcome::Ok,
                    output,
                    error: None,
                    flags,
                    host_fault: false,
                },
            },
            (Err(message), flags) => {
                Ending::failed(Outcome::OutputRejected, message, Value::Null).flagged(flags)
            }
        },
        Ok(Err(tool_error)) => match guard::check(tool_error, guard).split() {
            (Ok(detail), flags) => match redacted_out_of_type(err, &detail, &flags) {
                Some(message) => Ending::failed(
                    Outcome::OutputRejected,
                    format!("the tool's error value was rejected: {message}"),
                    Value::Null,
                )
                .flagged(flags),
                None => {
                    let message = match &detail {
                        Value::String(s) => cap(s, MAX_MESSAGE).into_owned(),
                        _ => "the tool returned an error".to_string(),
                    };
                    Ending::failed(Outcome::ToolError, message, detail).flagged(flags)
                }
            },
            (Err(message), flags) => Ending::failed(
                Outcome::OutputRejected,
                format!("the tool's error value was rejected: {message}"),
                Value::Null,
            )
            .flagged(flags),
        },
    }
}

/// Why a redacted value is rejected instead: the guard redacted part of it
/// and what is left is not a value of its declared type (a `char` became a
/// marker), which the caller's schema (MCP's `outputSchema`) would refuse.
/// `None` when nothing was redacted or the value still fits.
fn redacted_out_of_type(ty: Option<&Ty>, value: &Value, flags: &[Flag]) -> Option<String> {
    let ty = ty?;
    if !flags.iter().any(|f| f.action == "redact") {
        return None;
    }
    let e = ty.to_val(value, "").err()?;
    let at = if e.pointer.is_empty() {
        String::new()
    } else {
        format!(" at {}", e.pointer)
    };
    Some(format!(
        "the guard redacted part of the output, and the redacted value{at} no longer matches \
         its declared type ({}): rejected instead",
        e.problem
    ))
}

/// The output (`Ok`) or the tool's error value (`Err`) of a returned value;
/// the outer error is a value that does not match its type.
fn returned_json(returns: &Returns, value: Option<&Val>) -> Result<Result<Value, Value>, String> {
    let bad =
        |what: &str| format!("the tool returned {what}, which does not match its declared type");
    match (returns, value) {
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

/// The audit record's `error` for arguments refused by a tool whose policy
/// does not store arguments (`[audit] payloads`): the caller's message
/// quotes them.
pub const ARGUMENTS_WITHHELD: &str =
    "the arguments do not match the tool's schema (the reason quotes them, and this tool's policy does not store arguments: [audit] payloads)";

/// The audit entry of a finished call, built from the (redacted) result.
/// Stored payloads are cut to the policy's limit, with the values of
/// passed-through env vars blanked.
fn audit_entry(
    call: &Call,
    result: &CallResult,
    callable: Option<&Callable>,
    secrets: &Secrets,
    time_unix_us: u64,
) -> Entry {
    let json = |v: &Value| serde_json::to_vec(v).unwrap_or_default();
    let policy = callable.map(|c| &*c.component.policy);
    let payload = |v: &Value| {
        let limit = policy?.audit_payloads?;
        let json = json(&secrets.redact_value(v.clone()));
        Some(cut(&String::from_utf8_lossy(&json), limit as usize).to_string())
    };
    let ok = result.outcome == Outcome::Ok;
    Entry {
        time_unix_us,
        invocation_id: result.invocation_id.clone(),
        caller: call.caller.name().map(|n| cap(n, MAX_NAME).into_owned()),
        session: call
            .session
            .as_deref()
            .map(|s| cap(s, MAX_NAME).into_owned()),
        tool: result.tool.clone(),
        component_digest: callable.map(|c| *c.component.digest.as_bytes()),
        policy_digest: policy.map(|p| *p.digest.as_bytes()),
        arguments_digest: *blake3::hash(&json(&call.arguments)).as_bytes(),
        // Of the output as the caller received it (redacted), so the digest
        // cannot confirm a guess of a secret.
        output_digest: ok.then(|| *blake3::hash(&json(&result.output)).as_bytes()),
        outcome: result.outcome.as_str().to_string(),
        // Why arguments were refused quotes them (a key, a value): stored
        // only where the policy stores arguments.
        error: result.error.as_ref().map(|e| {
            if result.outcome == Outcome::InvalidArguments && payload(&Value::Null).is_none() {
                ARGUMENTS_WITHHELD.to_string()
            } else {
                e.message.clone()
            }
        }),
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
        // Filled in by the caller, which holds the call's span.
        trace_id: None,
        span_id: None,
    }
}

impl Secrets {
    /// The ending with every secret value replaced in its output, error
    /// message, error detail and flag excerpts.
    fn redact_ending(&self, mut ending: Ending) -> Ending {
        if self.nothing_to_redact() {
            return ending;
        }
        ending.output = self.redact_value(ending.output);
        if let Some(error) = ending.error.as_mut() {
            error.message = self.redact(&error.message).into_owned();
            error.detail = self.redact_value(std::mem::take(&mut error.detail));
        }
        for flag in &mut ending.flags {
            flag.excerpt = self.redact(&flag.excerpt).into_owned();
        }
        ending
    }

    fn redact_denials(&self, mut denials: Vec<Denial>) -> Vec<Denial> {
        if !self.nothing_to_redact() {
            for d in &mut denials {
                d.target = self.redact(&d.target).into_owned();
                d.reason = self.redact(&d.reason).into_owned();
            }
        }
        denials
    }
}

/// `text`, or its first `max` bytes (on a character boundary) followed by
/// `…(N bytes cut)`.
pub(crate) fn cap(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let kept = cut(text, max);
    Cow::Owned(format!("{kept}…({} bytes cut)", text.len() - kept.len()))
}

/// The longest prefix of `text` of at most `max` bytes that ends on a
/// character boundary.
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// "; NAME has: …" for a mistyped tool name of a known component, or a
/// pointer to the listing.
fn suggest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> String {
    let component = name.split('.').next().unwrap_or_default();
    let same: Vec<&str> = known
        .filter(|k| k.split('.').next() == Some(component))
        .collect();
    if same.is_empty() {
        "; list the tools to see what exists".to_string()
    } else {
        format!("; {} has: {}", cap(component, MAX_NAME), same.join(", "))
    }
}

/// 128 random bits, hex.
fn new_invocation_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// How a finished call is told to its span and the metrics: the tool, if
/// it resolved, and the outcome as recorded (`host_fault` where the result
/// says `trap`, `audit_failed` where no record could be written).
struct Observed<'a> {
    callable: Option<&'a Callable>,
    outcome: &'static str,
}

/// The outcome a call's span and metrics give a call whose audit record
/// could not be written (it gets no answer).
const AUDIT_FAILED: &str = "audit_failed";

/// The pipeline's stopwatch: each lap is one stage, kept as a duration for
/// [`Phases`] and as a start and end for the call's trace.
struct Laps {
    last: Instant,
    phases: Phases,
    stages: Vec<Stage>,
}

impl Laps {
    fn start() -> Laps {
        Laps {
            last: Instant::now(),
            phases: Phases::default(),
            stages: Vec::with_capacity(8),
        }
    }

    /// Ends stage `name` now; its duration.
    fn lap(&mut self, name: &'static str) -> std::time::Duration {
        let now = Instant::now();
        self.stages.push((name, self.last, now));
        let lap = now - self.last;
        self.last = now;
        lap
    }

    /// Ends two stages now, the first `first_len` long (at most the whole);
    /// the duration of both.
    fn split(
        &mut self,
        first_len: std::time::Duration,
        first: &'static str,
        second: &'static str,
    ) -> std::time::Duration {
        let now = Instant::now();
        let whole = now - self.last;
        let middle = self.last + first_len.min(whole);
        self.stages.push((first, self.last, middle));
        self.stages.push((second, middle, now));
        self.last = now;
        whole
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_cuts_visibly_on_a_char_boundary() {
        assert_eq!(cap("short", 10), "short");
        assert_eq!(cap("abcdef", 3), "abc…(3 bytes cut)");
        // 'é' is two bytes: never split it.
        assert_eq!(cap("aéb", 2), "a…(3 bytes cut)");
        let huge = "k".repeat(10 << 20);
        assert!(cap(&huge, MAX_NAME).len() < MAX_NAME + 32);
    }

    #[tokio::test]
    async fn large_outputs_wait_for_a_guard_lane_and_small_ones_do_not() {
        use std::time::Duration;
        let (guard, secrets) = (GuardConfig::with_limit(u64::MAX), Secrets::read(&[]));
        let returns = Returns::Value(crate::schema::Ty::String);
        let output =
            |bytes: usize| RunEnd::Returned(vec![Val::String("a word ".repeat(bytes / 7))]);
        let lanes = Arc::new(Semaphore::new(0));
        // Under OFF_REACTOR bytes: checked here, no lane needed.
        let small = guard_stage(&returns, &guard, output(1000), &secrets, &lanes);
        let small = tokio::time::timeout(Duration::from_secs(60), small).await;
        assert!(small.is_ok_and(|e| e.outcome == Outcome::Ok));
        // Twice OFF_REACTOR (checked in milliseconds once it may start):
        // not while every lane is taken, then as soon as one is free, which
        // it gives back.
        let large = guard_stage(
            &returns,
            &guard,
            output(2 * OFF_REACTOR as usize),
            &secrets,
            &lanes,
        );
        tokio::pin!(large);
        let waiting = tokio::time::timeout(Duration::from_secs(2), &mut large).await;
        assert!(waiting.is_err(), "checked without a lane");
        lanes.add_permits(1);
        let done = tokio::time::timeout(Duration::from_secs(60), large).await;
        assert!(done.is_ok_and(|e| e.outcome == Outcome::Ok));
        assert_eq!(lanes.available_permits(), 1);
    }
}
