//! # Fabric host: the runtime behind every tool call
//!
//! Fabric runs each tool call as a WebAssembly component in a fresh,
//! sandboxed instance and stands between the agent and the tool: it checks
//! the arguments, limits the run, checks the output and reports how the call
//! ended.
//!
//! # Layout
//!
//! One call takes one path; each stage is one module, read top to bottom.
//! Each hands the next a typed value or ends the call with an outcome:
//!
//! ```text
//!  CLI / HTTP / MCP ─► Call { caller, session, tool, arguments, trace }   call.rs
//!          │ admit     caller known? tool in scope?                       admit.rs
//!          │ resolve   NAME.FUNCTION → the tool's pre-linked component    registry.rs
//!          │ validate  JSON → Vec<Val> against the WIT-derived schema     schema.rs
//!          │ enter     circuit closed? caller under its cap? a slot (or a   admit.rs
//!          │           place in the queue)? budget left? (reserved)       budget.rs, breaker.rs
//!          │ sandbox   fresh Store: fuel, memory, deadline, WASI ctx      sandbox.rs
//!          │           from the policy (mounts, net allowlist, env)       policy.rs
//!          │           every connection through the call's net gate       net.rs
//!          │ guard     output size, content and injection rules          guard crate
//!          │ redact    [env] pass values blanked from what leaves         secrets.rs
//!          │ settle    budgets charged what was used; breaker told        budget.rs
//!          │ audit     hash-chained record, durable before the answer    audit crate
//!          │ observe   spans ended (and exported), metrics counted      telemetry.rs, spans.rs, otlp.rs, metrics.rs
//!          ▼
//!      CallResult (the contract's result object)
//! ```
//!
//! - [`call`]: the pipeline above, [`Fabric`] (what is built once) and the
//!   result types. Front ends build a [`Call`] and get a [`CallResult`]; they
//!   list tools with [`Fabric::tools`] ([`listing`]).
//! - [`admit`]: who is calling ([`Caller`], [`Scope`]) and whether the call
//!   may run now: `unauthorized`, `forbidden` (before anything is resolved),
//!   then `circuit_open`, `overloaded` (the caller's cap, the slots and the
//!   bounded queue) and `budget_exceeded`, each audited like every other
//!   outcome.
//! - [`budget`]: per-caller and per-session budgets (calls, fuel, wall time,
//!   output, calls per minute), reserved before a call and settled after it,
//!   in a [`budget::CounterStore`] (sled under the data directory); anomaly
//!   alerts.
//! - [`breaker`]: a circuit breaker per tool (`[breaker]` in its policy).
//! - [`config`]: the host configuration ([`HostConfig`]): instance slots,
//!   calls admitted at once, largest component, the maxima policies may grant.
//! - `engine` (internal): the one `Engine` (component model, fuel, epochs,
//!   pooling allocator with copy-on-write images), the WASI linker and the
//!   epoch timer.
//! - `registry` (internal): lists `NAME.wasm` components at start-up and
//!   describes each when first needed (regular files only, size-capped; WIT
//!   decoded from the binary, no compiling), turning its exported functions
//!   (as its policy's `[exports]` chooses) into tools with JSON Schemas and
//!   descriptions; compiles and pre-links a component on its first call (or
//!   `precompile`), caching compiled code under a per-host keyed hash and
//!   remembering failures.
//! - `files` (internal): bounded reads of regular files only, and atomic
//!   writes through fresh exclusive temporary files.
//! - [`schema`]: the WIT ↔ JSON mapping: schemas, argument validation and
//!   conversion, output conversion.
//! - [`policy`]: `policies/NAME.toml`, read strictly: limits, mounts, network
//!   allowlist, environment.
//! - [`net`]: the network rules in one place: the allowlist and the
//!   private-range rule, checked on every address dialled, for the wasi:http
//!   connector (which resolves and dials itself), wasi:sockets' address
//!   check and its name lookups; refusals become denials.
//! - `sandbox` (internal): builds the per-call store from a policy and runs
//!   one call in a fresh instance, mapping every way it can end to a value.
//! - [`guard`] (the `fabric-guard` crate, `host/guard/`): checks outputs
//!   before they leave: size, then rules and scored signals as data
//!   (`default-rules.toml`) that reject, redact or flag; an output that
//!   passes is spotlighted (marked as data) when its policy asks. Needs
//!   nothing of wasmtime.
//! - [`audit`] (the `fabric-audit` crate, `host/audit/`): the append-only,
//!   hash-chained log (sled, group commit, signed checkpoints) and its
//!   offline verifier. Needs nothing of wasmtime.
//! - [`callers`]: the callers file (token hashes, scopes, budgets), re-read
//!   when it changes.
//! - [`telemetry`]: W3C trace context in (REST headers, MCP `_meta`), a
//!   trace id and span id for every call, and OpenTelemetry spans out
//!   (`execute_tool` and one per stage) when an exporter is configured.
//! - [`spans`]: the queue of finished spans (written as protobuf), whose thread
//!   batches them to the exporter, off the call path.
//! - [`otlp`]: the exporter that posts those batches to an OTLP/HTTP
//!   collector as protobuf.
//! - `idle`: idle tools give their compiled code's resident pages back.
//! - [`metrics`]: the Prometheus metrics every call updates, served at
//!   `/metrics`.
//! - [`server`]: `fabric serve`: REST, MCP (Streamable HTTP) and the OpenAPI
//!   document, thin adapters over [`Fabric::call`].
//!
//! Built once: engine, linker, each component's `InstancePre`, policies,
//! compiled guard rules, the admission semaphore, the audit writer.
//! Built per call and dropped at its end: the store, its WASI context and the
//! instance. Nothing from one call survives into the next.
//!
//! The internal modules open to the benchmarks with the `internals` feature;
//! they are not a stable API.

pub mod admit;
pub mod breaker;
pub mod budget;
pub mod call;
pub mod callers;
pub mod config;
mod files;
pub(crate) mod idle;
pub mod listing;
pub mod metrics;
pub mod net;
pub mod otlp;
pub mod policy;
pub mod schema;
mod secrets;
pub mod server;
pub mod spans;
pub mod telemetry;

// Internals: the benchmarks reach them through the `internals` feature.
#[cfg(feature = "internals")]
pub mod engine;
#[cfg(not(feature = "internals"))]
pub(crate) mod engine;
#[cfg(feature = "internals")]
pub mod registry;
#[cfg(not(feature = "internals"))]
pub(crate) mod registry;
#[cfg(feature = "internals")]
pub mod sandbox;
#[cfg(not(feature = "internals"))]
pub(crate) mod sandbox;

pub use fabric_audit as audit;
pub use fabric_guard as guard;

pub use admit::{Caller, Identity, Scope};
pub use call::{
    AuditRef, Call, CallError, CallResult, ErrorBody, Fabric, GuardReport, OpenError, Options,
    Outcome, Phases, TraceRef,
};
pub use config::HostConfig;
pub use listing::{Grants, ToolInfo};
pub use registry::{exported_doc_keys, LoadProblem, RegistryError};
pub use sandbox::{raise_open_file_limit, Denial};
pub use telemetry::{Telemetry, TraceContext};
