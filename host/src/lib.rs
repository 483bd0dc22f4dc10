//! # Fabric host: the runtime behind every tool call
//!
//! Fabric runs each tool call as a WebAssembly component in a fresh,
//! sandboxed instance and stands between the agent and the tool: it checks
//! the arguments, limits the run, checks the output and reports how the call
//! ended.
//!
//! # Layout
//!
//! One call takes one path; each stage is one module, read top to bottom:
//!
//! ```text
//!  CLI / HTTP / MCP ─► Call { caller, tool, arguments }            call.rs
//!                 │ admit     caller, scope, slots                 admit.rs
//!                 │ resolve   NAME.FUNCTION → Tool                 registry.rs
//!                 │ validate  JSON → Vec<Val> against the schema   schema.rs
//!                 │ sandbox   fresh Store: fuel, memory, deadline, sandbox.rs
//!                 │           WASI ctx from the policy             policy.rs
//!                 │ guard     output size, content and injection   guard crate
//!                 │ audit     hash-chained record, durable         audit crate
//!                 ▼
//!              CallResult (the contract's result object)
//! ```
//!
//! - [`engine`]: the one `Engine` (component model, fuel, epochs, pooling
//!   allocator with copy-on-write images), the WASI linker and the epoch timer.
//! - [`registry`]: loads `NAME.wasm` components once, caches their compiled
//!   code by digest, pre-links them, and turns their exported functions into
//!   tools with JSON Schemas and descriptions.
//! - [`schema`]: the WIT ↔ JSON mapping: schemas, argument validation and
//!   conversion, output conversion.
//! - [`policy`]: `policies/NAME.toml`, read strictly: limits, mounts, network
//!   allowlist, environment.
//! - [`sandbox`]: builds the per-call store from a policy and runs one call in
//!   a fresh instance, mapping every way it can end to a value.
//! - [`guard`] (the `fabric-guard` crate, `host/guard/`): checks outputs
//!   before they leave: size, then rules as data (`default-rules.toml`) that
//!   reject, redact or flag. Needs nothing of wasmtime.
//! - [`audit`] (the `fabric-audit` crate, `host/audit/`): the append-only,
//!   hash-chained log (sled, group commit, signed checkpoints) and its
//!   offline verifier. Needs nothing of wasmtime.
//! - [`call`]: the pipeline above, and [`Fabric`], which holds what is built
//!   once.
//! - [`admit`]: the first stage: caller, scope, slots.
//! - [`callers`]: the callers file (token hashes, scopes, budgets), re-read
//!   when it changes.
//! - [`server`]: `fabric serve`: REST, MCP (Streamable HTTP) and the OpenAPI
//!   document, thin adapters over [`Fabric::call`].
//!
//! Built once: engine, linker, each component's `InstancePre`, policies,
//! compiled guard rules, the audit writer.
//! Built per call and dropped at its end: the store, its WASI context and the
//! instance. Nothing from one call survives into the next.

pub mod admit;
pub mod call;
pub mod callers;
pub mod config;
pub mod listing;
pub mod policy;
pub mod schema;
mod secrets;
pub mod server;

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
    Outcome, TraceContext,
};
pub use config::HostConfig;
pub use listing::{Grants, ToolInfo};
pub use registry::LoadProblem;
pub use sandbox::Denial;
