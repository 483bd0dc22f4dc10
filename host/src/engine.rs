//! The one wasmtime [`Engine`] and [`Linker`] every call shares.
//!
//! Built once per process: compiling, linking and the instance pool are
//! long-lived; only the store is per call (see [`crate::sandbox`]). The engine
//! has the component model (called asynchronously: wasi:http needs it), fuel
//! (a deterministic CPU budget), epoch interruption (the wall-clock limit) and
//! the pooling allocator with copy-on-write memory images, so instantiating
//! a fresh instance is a few microseconds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::config::HostConfig;

/// How often the epoch advances. A call's timeout is rounded up to whole
/// ticks, so this is the precision of the wall-clock limit.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Core instances a component may create: a Rust guest built by
/// wasm-component-ld has its module plus small shim and fixup modules.
const CORE_INSTANCES_PER_COMPONENT: u32 = 8;

/// Linear memories one component may have (its module and shims).
const MEMORIES_PER_COMPONENT: u32 = 4;
/// Tables one component may have.
const TABLES_PER_COMPONENT: u32 = 8;

/// Table elements per table: enough for large Rust and Python guests. The
/// pool's slots and each call's limiter both use it.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Builds the shared engine, its instance pool shaped by `host`: one slot
/// per instance, each reserving address space (not memory) for the largest
/// memory a policy may grant.
pub fn new_engine(host: &HostConfig) -> wasmtime::Result<Engine> {
    let slots = host.instances;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        .total_core_instances(slots * CORE_INSTANCES_PER_COMPONENT)
        // Enough for every slot's component to use its maxima, so that a
        // call admitted is never refused by the pool instead.
        .total_memories(slots * MEMORIES_PER_COMPONENT)
        .total_tables(slots * TABLES_PER_COMPONENT)
        .total_stacks(slots)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_memory_size(host.maxima.memory as usize)
        .table_elements(MAX_TABLE_ELEMENTS)
        .max_component_instance_size(1 << 20)
        .max_core_instance_size(1 << 20);

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .memory_init_cow(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// The linker: WASI 0.2 (cli, clocks, random, filesystem, sockets) and
/// wasi:http's outgoing handler. What a call can reach through them is
/// decided by the per-call context the sandbox builds from the policy.
/// Generic over the store's data so that the engine knows nothing of the
/// sandbox's per-call state.
pub fn new_linker<T>(engine: &Engine) -> wasmtime::Result<Linker<T>>
where
    T: wasmtime_wasi::WasiView + wasmtime_wasi_http::WasiHttpView + 'static,
{
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    Ok(linker)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a background thread
/// until dropped. Stores set their deadline in ticks of it.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    /// Starts ticking `engine`'s epoch.
    pub fn start(engine: &Engine) -> std::io::Result<EpochTicker> {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = engine.weak();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("fabric-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                }
            })?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Ticks to wait before interrupting a call with this timeout.
pub fn deadline_ticks(timeout: Duration) -> u64 {
    (timeout.as_nanos().div_ceil(EPOCH_TICK.as_nanos()) as u64).max(1)
}
