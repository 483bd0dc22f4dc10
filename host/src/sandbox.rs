//! One call in a fresh, limited instance.
//!
//! For every call the sandbox builds a new [`Store`] from the tool's
//! [`Policy`]: fuel, a memory limiter, an epoch deadline, and a WASI context
//! holding exactly the capabilities the policy grants (preopened directories,
//! environment variables, the HTTP allowlist; no sockets, no inherited stdio).
//! It instantiates the tool's pre-linked component, calls one function and
//! drops everything. Nothing survives into the next call.
//!
//! Every way the run can end is a [`RunEnd`] value; only a fault of Fabric
//! itself would be an error, and there is none on this path.

use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use wasmtime::component::{ComponentExportIndex, InstancePre, ResourceTable, Val};
use wasmtime::{Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::engine::{deadline_ticks, MAX_TABLE_ELEMENTS};
use crate::policy::{NetPolicy, Policy};
pub use crate::secrets::Secrets;

/// Bytes of a tool's stdout and stderr kept per call (for error messages and
/// traces). Beyond it, writes fail inside the guest.
const STDIO_CAPACITY: usize = 64 * 1024;

/// How much of a failed tool's stderr goes into the error message.
const STDERR_IN_MESSAGE: usize = 2 * 1024;

/// Grace beyond the policy timeout for a call blocked in the host (e.g. on a
/// slow HTTP response), where epoch interruption cannot reach it.
const HOST_WAIT_GRACE: Duration = Duration::from_millis(50);

/// A capability the tool asked for and was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Denial {
    /// What kind of capability: `net`.
    pub kind: &'static str,
    /// What was asked for, e.g. `example.com:443`.
    pub target: String,
    /// Why it was refused.
    pub reason: String,
}

/// How a run ended.
#[derive(Debug)]
pub enum RunEnd {
    /// The function returned these values.
    Returned(Vec<Val>),
    /// The run was stopped or failed.
    Failed(Failure),
}

/// Why a run did not return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The fuel budget ran out.
    FuelExhausted,
    /// Memory growth beyond the limit was refused.
    MemoryExceeded,
    /// The wall-clock limit passed.
    Timeout,
    /// Any other trap.
    Trap,
    /// No instance slot was free.
    Overloaded,
}

/// A failed run.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The kind.
    pub kind: FailureKind,
    /// A message for the caller.
    pub message: String,
}

/// The result of one sandboxed run.
#[derive(Debug)]
pub struct Run {
    /// How it ended.
    pub end: RunEnd,
    /// Fuel consumed.
    pub fuel_used: u64,
    /// Capabilities the tool was refused.
    pub denials: Vec<Denial>,
    /// The `[env] pass` values the tool was handed, for later redaction.
    pub secrets: Secrets,
}

/// Per-call store data: the WASI and HTTP contexts and the limiter.
pub struct State {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limiter: Limiter,
    net: NetGate,
    stderr: MemoryOutputPipe,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.net,
        }
    }
}

/// Enforces the memory limit and remembers whether it had to.
struct Limiter {
    memory: usize,
    refused: Option<usize>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            self.refused = Some(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// wasi:http hooks: every outgoing request is checked against the policy's
/// allowlist before a connection is made.
struct NetGate {
    policy: NetPolicy,
    denials: Vec<Denial>,
}

type ResponseFuture = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<wasmtime_wasi_http::WasiBody>,
                Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for NetGate {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> ResponseFuture {
        let uri = request.uri();
        let host = uri.host().unwrap_or_default().to_string();
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        if !self.policy.allows(&host, port) {
            let target = format!("{host}:{port}");
            tracing::info!(%target, "outgoing request denied");
            self.denials.push(Denial {
                kind: "net",
                target,
                reason: "not in the policy's [net] allow list".into(),
            });
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// A fresh store for one call of a tool under `policy`: fuel set, limiter
/// installed, epoch deadline armed, WASI context holding only what the
/// policy grants.
pub fn new_store(
    engine: &Engine,
    policy: &Policy,
    secrets: &Secrets,
) -> wasmtime::Result<Store<State>> {
    let mut wasi = WasiCtx::builder();
    for m in &policy.mounts {
        let perms = if m.writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        wasi.preopened_dir(&m.host, &m.guest, perms)?;
    }
    for (name, value) in &policy.env_vars {
        wasi.env(name, value);
    }
    for (name, value) in secrets.vars() {
        wasi.env(name, value);
    }
    let stderr = MemoryOutputPipe::new(STDIO_CAPACITY);
    wasi.stdout(MemoryOutputPipe::new(STDIO_CAPACITY))
        .stderr(stderr.clone());
    let state = State {
        wasi: wasi.build(),
        http: WasiHttpCtx::new(),
        table: ResourceTable::new(),
        limiter: Limiter {
            memory: policy.limits.memory as usize,
            refused: None,
        },
        net: NetGate {
            policy: policy.net.clone(),
            denials: Vec::new(),
        },
        stderr,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    store.set_fuel(policy.limits.fuel)?;
    store.set_epoch_deadline(deadline_ticks(policy.limits.timeout));
    store.epoch_deadline_trap();
    Ok(store)
}

/// Runs `func` of a fresh instance of `pre` with `params`, under `policy`.
pub async fn run(
    pre: &InstancePre<State>,
    func: &ComponentExportIndex,
    results: usize,
    policy: &Policy,
    params: &[Val],
) -> Run {
    let secrets = Secrets::read(&policy.env_pass);
    let mut store = match new_store(pre.engine(), policy, &secrets) {
        Ok(store) => store,
        Err(e) => {
            let failure = Failure {
                kind: FailureKind::Trap,
                message: format!("the sandbox could not be set up: {e:#}"),
            };
            return Run {
                end: RunEnd::Failed(failure),
                fuel_used: 0,
                denials: Vec::new(),
                secrets,
            };
        }
    };
    let call = async {
        let instance = pre.instantiate_async(&mut store).await?;
        let func = instance
            .get_func(&mut store, func)
            .ok_or_else(|| wasmtime::Error::msg("the component no longer exports this function"))?;
        let mut out = vec![Val::Bool(false); results];
        func.call_async(&mut store, params, &mut out).await?;
        Ok::<_, wasmtime::Error>(out)
    };
    let outcome = tokio::time::timeout(policy.limits.timeout + HOST_WAIT_GRACE, call).await;
    let fuel_used = policy
        .limits
        .fuel
        .saturating_sub(store.get_fuel().unwrap_or(0));
    let end = match outcome {
        Ok(Ok(values)) => RunEnd::Returned(values),
        Ok(Err(e)) => RunEnd::Failed(classify(&e, store.data(), policy)),
        Err(_elapsed) => RunEnd::Failed(Failure {
            kind: FailureKind::Timeout,
            message: format!(
                "the call exceeded its {:?} time limit while waiting on the host",
                policy.limits.timeout
            ),
        }),
    };
    let denials = std::mem::take(&mut store.data_mut().net.denials);
    Run {
        end,
        fuel_used,
        denials,
        secrets,
    }
}

fn classify(e: &wasmtime::Error, state: &State, policy: &Policy) -> Failure {
    let limits = &policy.limits;
    let (kind, message) = if e
        .downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        (
            FailureKind::Overloaded,
            "all instance slots are busy; retry shortly".to_string(),
        )
    } else if let Some(wanted) = state.limiter.refused {
        (
            FailureKind::MemoryExceeded,
            format!(
                "the tool needed {wanted} bytes of memory; its limit is {} bytes (limits.memory)",
                limits.memory
            ),
        )
    } else {
        match e.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => (
                FailureKind::FuelExhausted,
                format!(
                    "the tool used up its fuel budget of {} (limits.fuel)",
                    limits.fuel
                ),
            ),
            Some(Trap::Interrupt) => (
                FailureKind::Timeout,
                format!(
                    "the tool ran past its time limit of {:?} (limits.timeout)",
                    limits.timeout
                ),
            ),
            Some(trap) => (FailureKind::Trap, format!("the tool trapped: {trap}")),
            None => match e.downcast_ref::<wasmtime_wasi::I32Exit>() {
                Some(exit) => (
                    FailureKind::Trap,
                    format!("the tool exited with status {}", exit.0),
                ),
                None => (FailureKind::Trap, format!("the tool failed: {e:#}")),
            },
        }
    };
    let stderr = state.stderr.contents();
    let message = if stderr.is_empty() || kind == FailureKind::Overloaded {
        message
    } else {
        let tail = &stderr[stderr.len().saturating_sub(STDERR_IN_MESSAGE)..];
        format!(
            "{message}; tool stderr: {}",
            String::from_utf8_lossy(tail).trim()
        )
    };
    Failure { kind, message }
}
