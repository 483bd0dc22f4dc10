//! One call in a fresh, limited instance.
//!
//! For every call the sandbox builds a new [`Store`] from the tool's
//! [`Policy`]: fuel, a memory limiter, a wall-clock deadline, and a WASI
//! context holding exactly the capabilities the policy grants (preopened
//! directories, environment variables, the HTTP allowlist; no sockets, no
//! inherited stdio). It instantiates the tool's pre-linked component, calls
//! one function and drops everything. Nothing survives into the next call.
//!
//! Guests share the async executor: a running guest yields at every epoch
//! tick (and every [`FUEL_YIELD_INTERVAL`] units of fuel), so a CPU-bound tool
//! never holds a worker thread for longer than a tick; once the call's own
//! deadline has passed, the next tick stops it as a `timeout`.
//!
//! Every way the run can end is a [`RunEnd`] value, a fault of the host (a
//! mounted directory that is gone) included: [`FailureKind::Host`].

use std::future::Future;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use wasmtime::component::{ComponentExportIndex, InstancePre, ResourceTable, Val};
use wasmtime::{Engine, ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::engine::{
    RecordDenial, CORE_INSTANCES_PER_COMPONENT, MAX_TABLE_ELEMENTS, MEMORIES_PER_COMPONENT,
    TABLES_PER_COMPONENT,
};
use crate::net::Gate;
use crate::policy::Policy;
pub use crate::secrets::Secrets;

/// Bytes of a tool's stdout and stderr kept per call (for error messages and
/// traces). Beyond it, writes fail inside the guest.
const STDIO_CAPACITY: usize = 64 * 1024;

/// Host resources (streams, pollables, sockets, descriptors) one call may
/// hold at once; past it a host call that would add one traps.
pub const MAX_RESOURCES: usize = 10_000;

/// wasmtime's message when a copy between guest and host exceeds the
/// store's hostcall copy limit.
const HOSTCALL_COPY_EXHAUSTED: &str = "fuel allocated for hostcalls has been exhausted";

/// Bytes one host call, or one returned value, may copy out of the guest
/// (wasmtime's default hostcall fuel, set explicitly so the message above can
/// name it).
const HOSTCALL_COPY_LIMIT: usize = 128 << 20;

/// Raises this process's soft limit on open files to its hard limit, as a
/// server running many calls at once needs (each call's mounts, sockets and
/// connections are descriptors; a soft limit of 1,024 is a common default).
/// Returns the limit now in force (`None`: unlimited).
pub fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!("cannot raise the open-file limit: {e}");
        }
    }
    getrlimit(Resource::Nofile).current
}

/// How much of a failed tool's stderr goes into the error message.
const STDERR_IN_MESSAGE: usize = 2 * 1024;

/// Grace beyond the policy timeout for a call blocked in the host (e.g. on a
/// slow HTTP response), where epoch interruption cannot reach it.
const HOST_WAIT_GRACE: Duration = Duration::from_millis(50);

/// Fuel a guest burns between yields to the executor. Compiled code keeps its
/// fuel count in a register and stores it only at calls, returns, traps and
/// these refuelling points, so it also bounds how much of a timed-out call's
/// fuel `fuel_used` can miss (about a millisecond of guest CPU).
pub const FUEL_YIELD_INTERVAL: u64 = 1_000_000;

/// A capability the tool asked for and was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Denial {
    /// What kind of capability: `net` or `fs`.
    pub kind: &'static str,
    /// What was asked for: `example.com:443`, or a path as the tool opened
    /// it (relative to a directory of its mounts).
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
    /// The returned value was too large to copy out of the guest (more than
    /// the hostcall copy limit): the output is rejected unread.
    OutputTooLarge,
    /// The host could not provide what the policy grants (e.g. a mounted
    /// directory was removed after the policy was loaded): not the tool's
    /// fault, and its message says what to fix.
    Host,
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
    /// Time to build the store and instantiate the component; the rest of
    /// the run is the guest's call.
    pub instantiate: Duration,
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

impl RecordDenial for State {
    fn record_denial(&mut self, kind: &'static str, target: String, reason: &str) {
        self.net.gate.deny(kind, target, reason.to_string());
    }

    fn net_gate(&self) -> Gate {
        self.net.gate.clone()
    }
}

/// Enforces the memory limit on all of a call's linear memories and tables
/// together, and how many core instances, memories and tables it may create
/// (the pool refuses a component over those when it loads; these are a
/// backstop), and remembers whether it refused memory.
struct Limiter {
    /// The call's limit (`limits.memory`).
    memory: usize,
    /// Bytes its linear memories and tables hold now, counted as they are
    /// created and grown (a call's store is dropped with them).
    used: usize,
    /// The total a refused growth asked for.
    refused: Option<usize>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Past the memory's own declared maximum the growth fails anyway
        // (after this hook): not counted, and not the policy's refusal.
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        Ok(self.grow(current, desired))
    }

    fn instances(&self) -> usize {
        CORE_INSTANCES_PER_COMPONENT as usize
    }

    fn memories(&self) -> usize {
        MEMORIES_PER_COMPONENT as usize
    }

    fn tables(&self) -> usize {
        TABLES_PER_COMPONENT as usize
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS || maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let bytes = |elements: usize| elements.saturating_mul(TABLE_ELEMENT_BYTES);
        Ok(self.grow(bytes(current), bytes(desired)))
    }
}

/// Bytes a table element is counted at against `limits.memory`: a
/// reference, as the host holds it.
const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

impl Limiter {
    /// Grows what the call holds from `current` bytes to `desired`, when the
    /// total stays within the limit; else remembers the refusal.
    fn grow(&mut self, current: usize, desired: usize) -> bool {
        let total = self.used.saturating_sub(current).saturating_add(desired);
        if total > self.memory {
            self.refused = Some(total);
            return false;
        }
        self.used = total;
        true
    }
}

/// wasi:http hooks: every outgoing request goes through the call's network
/// [`Gate`]: the host is resolved here, every address checked, and only a
/// checked address is dialled.
struct NetGate {
    gate: Gate,
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
        Box::new(crate::net::send_request(
            self.gate.clone(),
            request,
            options,
        ))
    }
}

/// A fresh store for one call of a tool under `policy`: fuel set, limiter
/// installed, deadline armed, WASI context holding only what the policy
/// grants. The deadline is `policy.limits.timeout` from now; until it passes
/// the guest yields at every epoch tick, after it the next tick traps with
/// [`Trap::Interrupt`]. A mount that cannot be opened is a
/// [`FailureKind::Host`] failure naming its policy key and path.
pub fn new_store(
    engine: &Engine,
    policy: &Policy,
    secrets: &Secrets,
    halts: Halts<'_>,
) -> Result<Store<State>, Failure> {
    let mut wasi = WasiCtx::builder();
    for (i, m) in policy.mounts.iter().enumerate() {
        let perms = if m.writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        let key = format!("fs[{i}].host");
        let dir = open_mount(&m.host, m.id).map_err(|e| host_fault(policy, &key, &m.host, &e))?;
        // The directory just checked, reached through its descriptor: a
        // link put in its place after the check is not followed.
        let checked = format!("/proc/self/fd/{}", dir.as_raw_fd());
        wasi.preopened_dir(&checked, &m.guest, perms)
            .map_err(|e| host_fault(policy, &key, &m.host, &e))?;
    }
    for (name, value) in &policy.env_vars {
        wasi.env(name, value);
    }
    for (name, value) in secrets.vars() {
        wasi.env(name, value);
    }
    let gate = Gate::new(&policy.net);
    // Sockets are on for every tool; each use is checked by the gate against
    // the policy (no rule: every destination refused, and listed as a denial).
    let check = gate.clone();
    wasi.allow_tcp(true)
        .allow_udp(true)
        .allow_ip_name_lookup(true)
        .socket_addr_check(move |addr, usage| {
            let allowed = check.check_socket_use(addr, usage);
            Box::pin(async move { allowed })
        });
    let stderr = MemoryOutputPipe::new(STDIO_CAPACITY);
    wasi.stdout(MemoryOutputPipe::new(STDIO_CAPACITY))
        .stderr(stderr.clone());
    let mut table = ResourceTable::new();
    table.set_max_capacity(MAX_RESOURCES);
    let state = State {
        wasi: wasi.build(),
        http: WasiHttpCtx::new(),
        table,
        limiter: Limiter {
            memory: policy.limits.memory as usize,
            used: 0,
            refused: None,
        },
        net: NetGate { gate },
        stderr,
    };
    let mut store = Store::new(engine, state);
    store.set_hostcall_fuel(HOSTCALL_COPY_LIMIT);
    store.limiter(|s| &mut s.limiter);
    let fuel = store
        .fuel_async_yield_interval(Some(FUEL_YIELD_INTERVAL))
        .and_then(|()| store.set_fuel(policy.limits.fuel));
    if let Err(e) = fuel {
        return Err(Failure {
            kind: FailureKind::Host,
            message: format!("the sandbox could not set the fuel budget: {e:#}"),
        });
    }
    let deadline = Instant::now() + policy.limits.timeout;
    let host = halts.host.clone();
    let call = halts.call.cloned();
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        let halted = host.is_halted() || call.as_ref().is_some_and(|c| c.is_halted());
        Ok(if Instant::now() >= deadline || halted {
            UpdateDeadline::Interrupt
        } else {
            // Tokio's yield lets the worker run every other ready task and
            // poll its I/O driver before this guest runs again.
            UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now()))
        })
    });
    Ok(store)
}

/// Stops every running call at once (shutdown after its grace period): each
/// ends as a `timeout` at its next epoch tick, or at once if it is waiting
/// in the host.
#[derive(Debug, Default)]
pub struct Halt {
    stopped: AtomicBool,
    notify: tokio::sync::Notify,
}

impl Halt {
    /// Stops every call running now and every call started after.
    pub fn halt(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Whether [`Halt::halt`] was called.
    pub fn is_halted(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Completes once halted.
    pub(crate) async fn halted(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_halted() {
                return;
            }
            notified.await;
        }
    }
}

/// The error of a call its client cancelled (a `timeout`: the contract's
/// outcomes have no `cancelled`).
pub const CANCELLED: &str =
    "the call was cancelled: its client closed the connection before the answer";

/// What stops a running call before its limits do: the host's [`Halt`]
/// (shutdown), and the call's own, when it has one (its client cancelled).
#[derive(Debug, Clone, Copy)]
pub struct Halts<'a> {
    /// Stops every call.
    pub host: &'a Arc<Halt>,
    /// Stops this call.
    pub call: Option<&'a Arc<Halt>>,
}

impl Halts<'_> {
    /// Completes once either is halted.
    async fn halted(&self) {
        match self.call {
            Some(call) => tokio::select! {
                () = self.host.halted() => {}
                () = call.halted() => {}
            },
            None => self.host.halted().await,
        }
    }
}

/// Opens the mount at `path` (absolute and free of links when the policy
/// loaded) without following a symbolic link anywhere in it, and checks it
/// is still the directory `id` (device, inode) the policy loaded. A tool
/// that can write a parent of a mount (another tool's, or its own through
/// another mount) could otherwise replace it with a link to any directory
/// of the host between calls.
fn open_mount(path: &std::path::Path, id: (u64, u64)) -> Result<OwnedFd, String> {
    use rustix::fs::{openat, Mode, OFlags, CWD};
    use std::path::Component;
    // O_PATH: walking and checking need no read permission on the
    // directories (wasmtime-wasi reopens the last one itself).
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let failed = |e: rustix::io::Errno| match e {
        rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => {
            "a part of it is now a symbolic link or not a directory".to_string()
        }
        e => e.to_string(),
    };
    let mut dir = openat(CWD, "/", flags, Mode::empty()).map_err(failed)?;
    for part in path.components() {
        match part {
            Component::RootDir => {}
            Component::Normal(name) => {
                dir = openat(&dir, name, flags, Mode::empty()).map_err(failed)?
            }
            _ => return Err("it is not a plain absolute path".into()),
        }
    }
    let stat = rustix::fs::fstat(&dir).map_err(failed)?;
    if (stat.st_dev as u64, stat.st_ino as u64) != id {
        return Err(
            "it is no longer the directory the policy loaded (it was replaced; to mount the new one, restart)"
                .into(),
        );
    }
    Ok(dir)
}

/// A host-side failure to provide the mount at `key`.
fn host_fault(
    policy: &Policy,
    key: &str,
    path: &std::path::Path,
    e: &dyn std::fmt::Display,
) -> Failure {
    let file = policy
        .source
        .as_deref()
        .map_or_else(|| "the policy".to_string(), |p| p.display().to_string());
    Failure {
        kind: FailureKind::Host,
        message: format!(
            "host fault, not the tool's: {file}: {key}: {} cannot be opened ({e:#}); \
             it was usable when the policy was loaded: restore it, or fix the policy and restart",
            path.display()
        ),
    }
}

/// Runs `func` of a fresh instance of `pre` with `params`, under `policy`.
pub async fn run(
    pre: &InstancePre<State>,
    func: &ComponentExportIndex,
    results: usize,
    policy: &Policy,
    params: &[Val],
    halts: Halts<'_>,
) -> Run {
    let started = Instant::now();
    let secrets = Secrets::read(&policy.env_pass);
    let mut store = match new_store(pre.engine(), policy, &secrets, halts) {
        Ok(store) => store,
        Err(failure) => {
            return Run {
                end: RunEnd::Failed(failure),
                fuel_used: 0,
                denials: Vec::new(),
                secrets,
                instantiate: Duration::ZERO,
            };
        }
    };
    let mut instantiate = Duration::ZERO;
    let call = async {
        let instance = pre.instantiate_async(&mut store).await?;
        instantiate = started.elapsed();
        let func = instance
            .get_func(&mut store, func)
            .ok_or_else(|| wasmtime::Error::msg("the component no longer exports this function"))?;
        let mut out = vec![Val::Bool(false); results];
        func.call_async(&mut store, params, &mut out).await?;
        Ok::<_, wasmtime::Error>(out)
    };
    let limited = tokio::time::timeout(policy.limits.timeout + HOST_WAIT_GRACE, call);
    // A guest waiting in the host sees no epoch tick: the halt ends it too.
    let outcome = tokio::select! {
        outcome = limited => outcome,
        () = halts.halted() => Ok(Err(wasmtime::Error::new(Trap::Interrupt))),
    };
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
    let end = match end {
        RunEnd::Failed(f) if f.kind == FailureKind::Timeout && halts.host.is_halted() => {
            RunEnd::Failed(Failure {
                kind: FailureKind::Timeout,
                message: "the call was stopped: the host is shutting down and its grace period \
                          for running calls has passed"
                    .to_string(),
            })
        }
        RunEnd::Failed(f)
            if f.kind == FailureKind::Timeout && halts.call.is_some_and(|c| c.is_halted()) =>
        {
            RunEnd::Failed(Failure {
                kind: FailureKind::Timeout,
                message: CANCELLED.to_string(),
            })
        }
        end => end,
    };
    let denials = store.data().net.gate.take_denials();
    Run {
        end,
        fuel_used,
        denials,
        secrets,
        instantiate,
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
    } else if e.downcast_ref::<wasmtime::WasmBacktrace>().is_none()
        && e.root_cause().to_string().contains(HOSTCALL_COPY_EXHAUSTED)
    {
        // Copying the returned value out failed after the guest returned (no
        // guest frame on the stack): the output itself was too large.
        (
            FailureKind::OutputTooLarge,
            format!(
                "the tool returned more than {} bytes, far above its output limit of {} bytes of JSON (limits.output); it was rejected unread",
                HOSTCALL_COPY_LIMIT, limits.output
            ),
        )
    } else if let Some(wasmtime::component::ResourceTableError::Full) =
        e.downcast_ref::<wasmtime::component::ResourceTableError>()
    {
        (
            FailureKind::Trap,
            format!(
                "the tool held more than {MAX_RESOURCES} host resources (streams, pollables, sockets, descriptors) at once; the limit per call is {MAX_RESOURCES}"
            ),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_count_against_the_memory_limit_with_linear_memory() {
        let limit = 64 << 10;
        let mut limiter = Limiter {
            memory: limit,
            used: 0,
            refused: None,
        };
        assert!(limiter.memory_growing(0, limit / 2, None).unwrap());
        // Tables filling the other half fit; one element more does not.
        let elements = limit / 2 / TABLE_ELEMENT_BYTES;
        assert!(limiter.table_growing(0, elements, None).unwrap());
        assert!(!limiter.table_growing(elements, elements + 1, None).unwrap());
        assert_eq!(limiter.refused, Some(limit + TABLE_ELEMENT_BYTES));
        // Past the table's own maximum: not the policy's refusal.
        let mut fresh = Limiter {
            memory: limit,
            used: 0,
            refused: None,
        };
        assert!(!fresh.table_growing(0, 10, Some(5)).unwrap());
        assert_eq!(fresh.refused, None);
    }
}
