//! The one wasmtime [`Engine`] and [`Linker`] every call shares.
//!
//! Built once per process: compiling, linking and the instance pool are
//! long-lived; only the store is per call (see [`crate::sandbox`]). The engine
//! has the component model (called asynchronously: wasi:http needs it), fuel
//! (a deterministic CPU budget), epoch interruption (the wall-clock limit and
//! the guests' yield points) and the pooling allocator with copy-on-write
//! memory images, so instantiating a fresh instance is a few microseconds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Linker, Resource};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi::filesystem::WasiFilesystemView;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    Descriptor, DescriptorFlags, DescriptorType, ErrorCode, Host as _, HostDescriptor as _,
    NewTimestamp, OpenFlags, PathFlags,
};

use crate::config::HostConfig;

/// How often the epoch advances. A running guest yields to the executor at
/// every tick, and a call is stopped at the first tick after its deadline, so
/// this is also the precision of the wall-clock limit.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Core instances the pool holds per slot: a Rust guest built by
/// wasm-component-ld has its module plus small shim and fixup modules (one
/// component may use up to [`CORE_INSTANCES_PER_COMPONENT`] of the total).
const CORE_INSTANCES_PER_SLOT: u32 = 8;

/// Linear memories one component may have (its module and shims): the
/// pool's slots and each call's limiter both use it.
pub const MEMORIES_PER_COMPONENT: u32 = 4;
/// Tables one component may have (the pool and each call's limiter).
pub const TABLES_PER_COMPONENT: u32 = 8;
/// Core instances one component may have (the pool refuses more when it
/// loads, each call's limiter when it runs): a Python tool built by
/// componentize-py has 14.
pub const CORE_INSTANCES_PER_COMPONENT: u32 = 32;

/// Table elements per table: enough for large Rust and Python guests. The
/// pool's slots and each call's limiter both use it.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Bytes of a linear memory a slot keeps resident between calls, reset to
/// their original contents in place (a Python tool's call dirties a few
/// MiB of its heap image). Bounds what an idle slot holds.
const MEMORY_KEEP_RESIDENT: usize = 16 << 20;

/// Bytes of a table a slot keeps resident between calls.
const TABLE_KEEP_RESIDENT: usize = 1 << 20;

/// The settings of `host` that [`new_engine`] shapes the pool with, as 16
/// hex digits: a component refused by one pool (its memory larger than
/// `maxima.memory`) may fit another, so a remembered failure is kept per
/// pool, not only per engine build.
pub fn pool_key(host: &HostConfig) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&(host.instances as u64).to_le_bytes());
    hasher.update(&host.maxima.memory.to_le_bytes());
    hasher.finalize().to_hex()[..16].to_string()
}

/// Builds the shared engine, its instance pool shaped by `host`: one slot
/// per instance, each reserving address space (not memory) for the largest
/// memory a policy may grant.
pub fn new_engine(host: &HostConfig) -> wasmtime::Result<Engine> {
    let slots = host.instances;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        .total_core_instances(slots * CORE_INSTANCES_PER_SLOT)
        // Enough for every slot's component to use its maxima, so that a
        // call admitted is never refused by the pool instead.
        .total_memories(slots * MEMORIES_PER_COMPONENT)
        .total_tables(slots * TABLES_PER_COMPONENT)
        .total_stacks(slots)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_memory_size(host.maxima.memory as usize)
        .table_elements(MAX_TABLE_ELEMENTS)
        .max_component_instance_size(1 << 20)
        .max_core_instance_size(1 << 20);
    // A slot keeps the pages a call dirtied and puts their original bytes
    // back (found with Linux's PAGEMAP_SCAN, 6.7 and later), instead of
    // dropping them and faulting them in again on the next call: the first
    // call in a fresh Python instance touches megabytes of its heap image.
    pool.linear_memory_keep_resident(MEMORY_KEEP_RESIDENT)
        .table_keep_resident(TABLE_KEEP_RESIDENT)
        .pagemap_scan(wasmtime::Enabled::Auto);

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
///
/// Opening a FIFO, socket or device file inside a mount is refused (see
/// [`refuse_special_files`]).
pub fn new_linker<T>(engine: &Engine) -> wasmtime::Result<Linker<T>>
where
    T: wasmtime_wasi::WasiView + wasmtime_wasi_http::WasiHttpView + RecordDenial + 'static,
{
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    refuse_special_files(&mut linker)?;
    gate_name_lookups(&mut linker)?;
    cap_sockets(&mut linker)?;
    Ok(linker)
}

/// Store data that keeps the capabilities a call was refused, for its result.
pub trait RecordDenial {
    /// Records that the tool was refused `target` (a `kind` of capability:
    /// `fs`, `net`), and why.
    fn record_denial(&mut self, kind: &'static str, target: String, reason: &str);
    /// The call's network gate (name lookups are answered through it).
    fn net_gate(&self) -> crate::net::Gate;
}

/// Why opening a special file is refused, as the call's denial says.
const SPECIAL_FILE_REFUSED: &str =
    "a FIFO, socket or device file in a mount: only regular files and directories can be opened";

/// Why a path was refused when it leaves its mount.
const PATH_LEAVES_MOUNT: &str = "the path leaves its mount (\"..\", an absolute path or a symbolic link pointing outside): only the directories of the policy's [[fs]] entries are visible; mount the directory it points into with an [[fs]] entry to allow it";
/// Why a path was refused when it would write to a read-only mount.
const MOUNT_READ_ONLY: &str =
    "the mount is read-only: set access = \"read-write\" on its [[fs]] entry to allow writing";
/// Why a hard link was refused.
const LINK_REFUSED: &str = "a hard link that leaves its mount, links across mounts or writes to a read-only mount: links stay inside one read-write mount";
/// Why a rename was refused.
const RENAME_REFUSED: &str = "a rename that leaves its mount, or moves into or out of a read-only mount: renames stay inside read-write mounts";
/// Why creating a symbolic link to an absolute path was refused.
const SYMLINK_ABSOLUTE: &str = "a symbolic link to an absolute path: links point to a relative path (the sandbox would not follow an absolute one)";

/// Why opening `path` was refused: the path leaves its mount if even
/// looking at it is refused, else the open asked to write to a read-only
/// mount.
async fn why_refused(
    fs: &mut wasmtime_wasi::filesystem::WasiFilesystemCtxView<'_>,
    dir: Resource<Descriptor>,
    path_flags: PathFlags,
    path: &str,
) -> &'static str {
    match fs.stat_at(dir, path_flags, path.to_string()).await {
        Ok(_) => MOUNT_READ_ONLY,
        Err(e) => match fs.convert_error_code(e) {
            Ok(ErrorCode::NotPermitted | ErrorCode::Access) => PATH_LEAVES_MOUNT,
            Ok(ErrorCode::NoEntry) => MOUNT_READ_ONLY,
            _ => PATH_LEAVES_MOUNT,
        },
    }
}

/// The wasi:filesystem interface that wasmtime-wasi 48 defines; guests
/// importing any 0.2.x version are linked to it.
const FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// The wasi:filesystem methods on one path that share one shadow.
#[derive(Clone, Copy)]
enum PathOp {
    CreateDirectory,
    RemoveDirectory,
    UnlinkFile,
}

/// How a refusal of a wasi:filesystem method is explained in its denial.
enum Why<'a> {
    /// Always this reason (links and renames, which involve two paths).
    Fixed(&'static str),
    /// Whichever of [`PATH_LEAVES_MOUNT`] and [`MOUNT_READ_ONLY`] holds for
    /// this path in the method's directory ([`why_refused`]).
    Path(Resource<Descriptor>, PathFlags, &'a str),
}

/// Converts a wasi:filesystem method's result for the guest and lists a
/// refusal (`not-permitted` or `access`, what cap-std answers for a path
/// that leaves its mount and wasmtime-wasi for a write to a read-only one)
/// as a denial of `target`, explained by `why`.
async fn settle<T, R>(
    store: &mut wasmtime::StoreContextMut<'_, T>,
    done: wasmtime_wasi::p2::FsResult<R>,
    target: String,
    why: Why<'_>,
) -> wasmtime::Result<Result<R, ErrorCode>>
where
    T: wasmtime_wasi::WasiView + RecordDenial + 'static,
{
    let mut fs = store.data_mut().filesystem();
    let done = match done {
        Ok(value) => Ok(value),
        Err(e) => Err(fs.convert_error_code(e)?),
    };
    if let Err(ErrorCode::NotPermitted | ErrorCode::Access) = done {
        let reason = match why {
            Why::Fixed(reason) => reason,
            Why::Path(dir, path_flags, path) => why_refused(&mut fs, dir, path_flags, path).await,
        };
        tracing::info!(%target, "a filesystem operation refused");
        store.data_mut().record_denial("fs", target, reason);
    }
    Ok(done)
}

/// Replaces wasi:filesystem's `open-at` with one that refuses FIFOs, sockets
/// and device files (error `access`, which guests see as "permission
/// denied", and a denial in the call's result): opening a FIFO blocks until a writer appears, on a thread that
/// no timeout can reclaim, so every such read would leak a blocked thread and
/// keep the process from exiting. The type is checked on the path just
/// before opening it; a file swapped for a FIFO on the host in between
/// (the guest cannot create one) would still be opened.
///
/// The other methods a mount can refuse (links, renames, symbolic links,
/// timestamps, creating and removing directories and files) are shadowed
/// too, so that each refusal is listed as a denial ([`settle`]).
fn refuse_special_files<T>(linker: &mut Linker<T>) -> wasmtime::Result<()>
where
    T: wasmtime_wasi::WasiView + RecordDenial + 'static,
{
    linker.allow_shadowing(true);
    linker.instance(FILESYSTEM_TYPES)?.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store,
         (dir, path_flags, path, open_flags, flags): (
            Resource<Descriptor>,
            PathFlags,
            String,
            OpenFlags,
            DescriptorFlags,
        )| {
            Box::new(async move {
                let mut fs = store.data_mut().filesystem();
                let stat = fs
                    .stat_at(Resource::new_borrow(dir.rep()), path_flags, path.clone())
                    .await;
                let special = stat.as_ref().is_ok_and(|s| {
                    !matches!(
                        s.type_,
                        DescriptorType::RegularFile
                            | DescriptorType::Directory
                            | DescriptorType::SymbolicLink
                    )
                });
                if special {
                    tracing::info!(%path, "opening a special file refused");
                    store
                        .data_mut()
                        .record_denial("fs", path, SPECIAL_FILE_REFUSED);
                    return Ok((Err(ErrorCode::Access),));
                }
                let again = Resource::new_borrow(dir.rep());
                let opened = fs
                    .open_at(dir, path_flags, path.clone(), open_flags, flags)
                    .await;
                let why = Why::Path(again, path_flags, &path);
                Ok((settle(&mut store, opened, path.clone(), why).await?,))
            })
        },
    )?;
    linker.instance(FILESYSTEM_TYPES)?.func_wrap_async(
        "[method]descriptor.link-at",
        |mut store,
         (dir, path_flags, old, new_dir, new): (
            Resource<Descriptor>,
            PathFlags,
            String,
            Resource<Descriptor>,
            String,
        )| {
            Box::new(async move {
                let mut fs = store.data_mut().filesystem();
                let linked = fs
                    .link_at(dir, path_flags, old.clone(), new_dir, new.clone())
                    .await;
                let target = format!("{old} -> {new}");
                Ok((settle(&mut store, linked, target, Why::Fixed(LINK_REFUSED)).await?,))
            })
        },
    )?;
    linker.instance(FILESYSTEM_TYPES)?.func_wrap_async(
        "[method]descriptor.rename-at",
        |mut store,
         (dir, old, new_dir, new): (
            Resource<Descriptor>,
            String,
            Resource<Descriptor>,
            String,
        )| {
            Box::new(async move {
                let mut fs = store.data_mut().filesystem();
                let renamed = fs.rename_at(dir, old.clone(), new_dir, new.clone()).await;
                let target = format!("{old} -> {new}");
                Ok((settle(&mut store, renamed, target, Why::Fixed(RENAME_REFUSED)).await?,))
            })
        },
    )?;
    linker.instance(FILESYSTEM_TYPES)?.func_wrap_async(
        "[method]descriptor.symlink-at",
        |mut store, (dir, old, new): (Resource<Descriptor>, String, String)| {
            Box::new(async move {
                let mut fs = store.data_mut().filesystem();
                let again = Resource::new_borrow(dir.rep());
                let linked = fs.symlink_at(dir, old.clone(), new.clone()).await;
                let target = format!("{new} -> {old}");
                // cap-std refuses an absolute target; otherwise the link's
                // own path left its mount or the mount is read-only.
                let why = if old.starts_with('/') {
                    Why::Fixed(SYMLINK_ABSOLUTE)
                } else {
                    Why::Path(again, PathFlags::empty(), &new)
                };
                Ok((settle(&mut store, linked, target, why).await?,))
            })
        },
    )?;
    linker.instance(FILESYSTEM_TYPES)?.func_wrap_async(
        "[method]descriptor.set-times-at",
        |mut store,
         (dir, path_flags, path, atime, mtime): (
            Resource<Descriptor>,
            PathFlags,
            String,
            NewTimestamp,
            NewTimestamp,
        )| {
            Box::new(async move {
                let mut fs = store.data_mut().filesystem();
                let again = Resource::new_borrow(dir.rep());
                let set = fs
                    .set_times_at(dir, path_flags, path.clone(), atime, mtime)
                    .await;
                let why = Why::Path(again, path_flags, &path);
                Ok((settle(&mut store, set, path.clone(), why).await?,))
            })
        },
    )?;
    for (method, op) in [
        (
            "[method]descriptor.create-directory-at",
            PathOp::CreateDirectory,
        ),
        (
            "[method]descriptor.remove-directory-at",
            PathOp::RemoveDirectory,
        ),
        ("[method]descriptor.unlink-file-at", PathOp::UnlinkFile),
    ] {
        linker.instance(FILESYSTEM_TYPES)?.func_wrap_async(
            method,
            move |mut store, (dir, path): (Resource<Descriptor>, String)| {
                Box::new(async move {
                    let mut fs = store.data_mut().filesystem();
                    let again = Resource::new_borrow(dir.rep());
                    let done = match op {
                        PathOp::CreateDirectory => fs.create_directory_at(dir, path.clone()).await,
                        PathOp::RemoveDirectory => fs.remove_directory_at(dir, path.clone()).await,
                        PathOp::UnlinkFile => fs.unlink_file_at(dir, path.clone()).await,
                    };
                    let why = Why::Path(again, PathFlags::empty(), &path);
                    Ok((settle(&mut store, done, path.clone(), why).await?,))
                })
            },
        )?;
    }
    linker.allow_shadowing(false);
    Ok(())
}

/// The wasi:sockets name-lookup interface of wasmtime-wasi 48.
const IP_NAME_LOOKUP: &str = "wasi:sockets/ip-name-lookup@0.2.12";

/// Replaces wasi:sockets' `resolve-addresses` with one that answers only for
/// a name a `[net] allow` rule names (a refusal is a denial and the guest's
/// `access-denied`). The call's gate resolves the name itself and remembers
/// which addresses are that name's; the connection check accepts an address
/// through a name only if it is among them, so a second, rebound answer
/// (the one wasmtime-wasi's own lookup hands the guest) cannot reach a
/// private address.
fn gate_name_lookups<T>(linker: &mut Linker<T>) -> wasmtime::Result<()>
where
    T: wasmtime_wasi::WasiView + RecordDenial + 'static,
{
    use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::{Host as _, ResolveAddressStream};
    use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode as NetError, Network};
    use wasmtime_wasi::sockets::WasiSocketsView as _;

    linker.allow_shadowing(true);
    let result = linker.instance(IP_NAME_LOOKUP)?.func_wrap_async(
        "resolve-addresses",
        |mut store, (network, name): (Resource<Network>, String)| {
            Box::new(async move {
                let gate = store.data().net_gate();
                match gate.lookup(&name).await {
                    Ok(_) => {}
                    Err(crate::net::Refused::Denied) => {
                        return Ok((Err::<Resource<ResolveAddressStream>, _>(
                            NetError::AccessDenied,
                        ),))
                    }
                    Err(crate::net::Refused::NotFound) => {
                        return Ok((Err(NetError::NameUnresolvable),))
                    }
                }
                let mut view = store.data_mut().sockets();
                match view.resolve_addresses(network, name) {
                    Ok(stream) => Ok((Ok(stream),)),
                    Err(e) => Ok((Err(e.downcast()?),)),
                }
            })
        },
    );
    linker.allow_shadowing(false);
    result
}

/// The wasi:sockets socket-creation interfaces of wasmtime-wasi 48.
const TCP_CREATE_SOCKET: &str = "wasi:sockets/tcp-create-socket@0.2.12";
const UDP_CREATE_SOCKET: &str = "wasi:sockets/udp-create-socket@0.2.12";

/// Replaces wasi:sockets' `create-tcp-socket` and `create-udp-socket` with
/// ones that count the call's sockets against [`crate::net::MAX_SOCKETS`]
/// (past it: `new-socket-limit` and a denial). A socket is a descriptor
/// of this process before any destination is checked, so without a cap one
/// call could take the descriptors every other call needs.
fn cap_sockets<T>(linker: &mut Linker<T>) -> wasmtime::Result<()>
where
    T: wasmtime_wasi::WasiView + RecordDenial + 'static,
{
    use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode as NetError, IpAddressFamily};
    use wasmtime_wasi::p2::bindings::sockets::tcp_create_socket::Host as _;
    use wasmtime_wasi::p2::bindings::sockets::udp_create_socket::Host as _;
    use wasmtime_wasi::p2::{TcpSocket, UdpSocket};
    use wasmtime_wasi::sockets::WasiSocketsView as _;

    linker.allow_shadowing(true);
    linker.instance(TCP_CREATE_SOCKET)?.func_wrap(
        "create-tcp-socket",
        |mut store, (family,): (IpAddressFamily,)| {
            if !store.data().net_gate().take_socket() {
                return Ok((Err::<Resource<TcpSocket>, _>(NetError::NewSocketLimit),));
            }
            match store.data_mut().sockets().create_tcp_socket(family) {
                Ok(socket) => Ok((Ok(socket),)),
                Err(e) => Ok((Err(e.downcast()?),)),
            }
        },
    )?;
    let result = linker.instance(UDP_CREATE_SOCKET)?.func_wrap_async(
        "create-udp-socket",
        |mut store, (family,): (IpAddressFamily,)| {
            Box::new(async move {
                if !store.data().net_gate().take_socket() {
                    return Ok((Err::<Resource<UdpSocket>, _>(NetError::NewSocketLimit),));
                }
                match store.data_mut().sockets().create_udp_socket(family).await {
                    Ok(socket) => Ok((Ok(socket),)),
                    Err(e) => Ok((Err(e.downcast()?),)),
                }
            })
        },
    );
    linker.allow_shadowing(false);
    result
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
