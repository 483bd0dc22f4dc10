//! `cargo bench --bench serve`: what each layer of `fabric serve` costs.
//!
//! Calls of `text.echo`, audit durable, at 1 and 64 concurrent keep-alive
//! connections, each row side by side in one run:
//!
//! - bare hyper: a handler that returns a fixed body (the HTTP floor);
//! - in-process: `Fabric::call` in a loop (no HTTP at all);
//! - REST: `POST /v1/tools/text.echo/invoke`;
//! - MCP: `tools/call`, stateless revision 2026-07-28.
//!
//! Then overload: REST calls offered open-loop (on a fixed schedule, whatever
//! the answers) at 1x, 2x and 4x the capacity measured by the 64-connection
//! REST row: admitted calls/s, the p99 of admitted calls (from their
//! scheduled time, so a late client counts against it), and the share
//! refused with 503. The server runs with its default admission bounds.
//!
//! Then tracing: the 64-connection REST row with the OTLP exporter on
//! (sampling ratio 1, every call's spans batched to a local OTLP/HTTP sink)
//! beside the same row with it off, and beside a second untraced server (an
//! A/A control that shows what two identical servers differ by on this
//! machine). Each round starts three fresh servers (audit logs in memory)
//! and runs the three rows; the rounds cross the six orders of starting them
//! with the six orders of running them, twice; the overhead is the median
//! of the rounds' own ratios. Then what a call's trace ids cost with no
//! exporter.
//!
//! `cargo bench --bench serve -- tracing` runs only the tracing rows;
//! `-- spans` measures the CPU time a traced call's spans cost (built, then
//! also exported), outside any server.
//!
//! The client is this process's own (hyper, one connection per worker), so on
//! a 2-core machine it competes with the server for the cores: compare rows.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fabric_host::callers::{new_token, CallerFile, CallerSpec, CallersSpec};
use fabric_host::otlp::{OtlpConfig, OtlpExporter};
use fabric_host::server::{self, Auth, ServeOptions};
use fabric_host::spans::{BatchConfig, SpanQueue};
use fabric_host::telemetry::Sampler;
use fabric_host::{Call, Caller, Fabric, Options, Telemetry};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

const CONCURRENCY: [usize; 2] = [1, 64];

fn calls_for(concurrency: usize) -> usize {
    if concurrency == 1 {
        3_000
    } else {
        12_000
    }
}

/// What one request of a row looks like.
#[derive(Clone)]
struct Target {
    addr: std::net::SocketAddr,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
}

fn main() {
    if std::env::args().any(|a| a == "spans") {
        return span_cpu();
    }
    let only_tracing = std::env::args().any(|a| a == "tracing");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let tools = root.join("build/tools");
    assert!(
        tools.join("text.wasm").exists(),
        "{} has no text.wasm: run scripts/build-tools first",
        tools.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let plain = Served::start(&runtime, &tools, Telemetry::default(), None);
    let (fabric, fabric_addr, token) = (plain.fabric.clone(), plain.addr, plain.token.clone());
    let bare_addr = runtime.block_on(bare_server());

    let auth = format!("Bearer {token}");
    let echo = json!({"arguments": {"text": "hello"}}).to_string();
    let mcp = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "text.echo", "arguments": {"text": "hello"},
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientCapabilities": {}}}})
    .to_string();
    let rest = Target {
        addr: fabric_addr,
        path: "/v1/tools/text.echo/invoke",
        headers: vec![
            ("authorization", auth.clone()),
            ("content-type", "application/json".into()),
        ],
        body: Bytes::from(echo),
    };
    let mcp = Target {
        addr: fabric_addr,
        path: "/mcp",
        headers: vec![
            ("authorization", auth),
            ("content-type", "application/json".into()),
            ("accept", "application/json, text/event-stream".into()),
            ("mcp-protocol-version", "2026-07-28".into()),
            ("mcp-method", "tools/call".into()),
            ("mcp-name", "text.echo".into()),
        ],
        body: Bytes::from(mcp),
    };
    let bare = Target {
        addr: bare_addr,
        path: "/",
        headers: Vec::new(),
        body: Bytes::from_static(b"{}"),
    };

    println!(
        "{:<28} {:>5} {:>9} {:>9} {:>9} {:>9}",
        "text.echo, audit durable", "conns", "calls/s", "p50 µs", "p99 µs", "p99.9 µs"
    );
    let mut capacity = 0.0;
    for concurrency in CONCURRENCY.into_iter().filter(|_| !only_tracing) {
        let n = calls_for(concurrency);
        let rows = [
            ("bare hyper (fixed body)", None),
            ("in-process Fabric::call", None),
            ("REST invoke", Some(&rest)),
            ("MCP tools/call (stateless)", Some(&mcp)),
        ];
        for (i, (name, target)) in rows.into_iter().enumerate() {
            let (secs, mut latencies) = match (i, target) {
                (0, _) => runtime.block_on(http_load(&bare, concurrency, n)),
                (1, _) => runtime.block_on(in_process(&fabric, concurrency, n)),
                (_, Some(t)) => runtime.block_on(http_load(t, concurrency, n)),
                _ => unreachable!("every HTTP row has a target"),
            };
            latencies.sort_unstable();
            let at = |q: f64| quantile(&latencies, q);
            if i == 2 && concurrency == 64 {
                capacity = n as f64 / secs;
            }
            println!(
                "{name:<28} {concurrency:>5} {:>9.0} {:>9.0} {:>9.0} {:>9.0}",
                n as f64 / secs,
                at(0.50).as_secs_f64() * 1e6,
                at(0.99).as_secs_f64() * 1e6,
                at(0.999).as_secs_f64() * 1e6,
            );
        }
    }

    println!();
    println!(
        "{:<28} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "REST overload (open loop)", "offered", "admitted", "p50 µs", "p99 µs", "503 %"
    );
    for factor in [1.0, 2.0, 4.0].into_iter().filter(|_| !only_tracing) {
        let rate = capacity * factor;
        let o = runtime.block_on(open_loop(&rest, rate, OVERLOAD_SECONDS));
        println!(
            "{:<28} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>8.1}%",
            format!("{factor}x capacity"),
            rate,
            o.admitted.len() as f64 / o.secs,
            quantile(&o.admitted, 0.50).as_secs_f64() * 1e6,
            quantile(&o.admitted, 0.99).as_secs_f64() * 1e6,
            100.0 * o.refused as f64 / (o.refused + o.admitted.len()) as f64,
        );
    }

    // Tracing off and on, on fresh servers of their own, beside a second
    // untraced one (an A/A control: what two identical servers differ by
    // here). The rounds run the three in each of the six orders in turn, so
    // drift, noise and whatever one row leaves the next fall on all of them;
    // the figures are medians of each round's own ratios.
    // FABRIC_BENCH_OTLP_SINK=HOST:PORT exports to a collector outside this
    // process instead, whose work is then not counted in CPU per call.
    let sink = match std::env::var("FABRIC_BENCH_OTLP_SINK") {
        Ok(addr) => addr.parse().expect("FABRIC_BENCH_OTLP_SINK is HOST:PORT"),
        Err(_) => runtime.block_on(otlp_sink()),
    };
    let queue = traced_queue(Some(sink));
    // Their audit logs are kept in memory (/dev/shm, where there is one):
    // how long a disk takes to flush swings with other tenants' I/O by more
    // than tracing costs. Calls get cheaper, so tracing's share of them, if
    // anything, larger.
    let shm = std::path::Path::new("/dev/shm");
    let memory = shm.is_dir().then_some(shm);
    let telemetry = [
        Telemetry::default(),
        Telemetry::default(),
        Telemetry::exporting(queue.clone(), Sampler::AlwaysOn),
    ];
    let names = [
        "exporter off",
        "exporter off, 2nd server",
        "exporter on, ratio 1",
    ];
    let parent = (
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
    );
    let on_server = |served: &Served| Target {
        addr: served.addr,
        headers: vec![
            ("authorization", format!("Bearer {}", served.token)),
            ("content-type", "application/json".into()),
            parent.clone(),
        ],
        ..rest.clone()
    };
    println!();
    println!(
        "{:<28} {:>5} {:>9} {:>9} {:>9} {:>11}",
        "REST, 64 conns, tracing", "round", "calls/s", "p50 µs", "p99 µs", "CPU µs/call"
    );
    let n = calls_for(64) / 6;
    let (mut overhead, mut control_diff) = (Vec::new(), Vec::new());
    let (mut cpu_overhead, mut cpu_control) = (Vec::new(), Vec::new());
    let mut off_rates = Vec::new();
    for round in 0..TRACING_ROUNDS {
        // Fresh servers every round, started in each of the six orders in
        // turn (crossed with the six orders the rows run in): whatever makes
        // one server instance faster than another, such as where its memory
        // landed, falls on every row alike instead of always on one.
        let mut servers: [Option<Served>; 3] = [None, None, None];
        for i in ORDERS[(round / ORDERS.len()) % ORDERS.len()] {
            servers[i] = Some(Served::start(
                &runtime,
                &tools,
                telemetry[i].clone(),
                memory,
            ));
        }
        let servers = servers.map(|s| s.expect("every server started"));
        let mut rate = [0.0; 3];
        let mut cpu = [0.0; 3];
        for i in ORDERS[round % ORDERS.len()] {
            let (name, target) = (names[i], on_server(&servers[i]));
            let before = cpu_time();
            let (secs, mut latencies) = runtime.block_on(http_load(&target, 64, n));
            if i == 2 {
                // The spans still queued are this row's work too.
                queue.force_flush();
            }
            cpu[i] = (cpu_time() - before).as_secs_f64() * 1e6 / n as f64;
            rate[i] = n as f64 / secs;
            latencies.sort_unstable();
            println!(
                "{name:<28} {:>5} {:>9.0} {:>9.0} {:>9.0} {:>11.0}",
                round + 1,
                rate[i],
                quantile(&latencies, 0.50).as_secs_f64() * 1e6,
                quantile(&latencies, 0.99).as_secs_f64() * 1e6,
                cpu[i],
            );
        }
        for served in servers {
            served.stop(&runtime);
        }
        off_rates.push(rate[0]);
        overhead.push(100.0 * (rate[0] - rate[2]) / rate[0]);
        control_diff.push(100.0 * (rate[0] - rate[1]) / rate[0]);
        cpu_overhead.push(100.0 * (cpu[2] - cpu[0]) / cpu[0]);
        cpu_control.push(100.0 * (cpu[1] - cpu[0]) / cpu[0]);
    }
    queue.force_flush();
    let spans = queue.exported();
    let traced_calls = (TRACING_ROUNDS * n) as f64;
    let spread = |v: &mut Vec<f64>| {
        let m = median(v);
        format!("{m:.1} % (rounds {:.1} to {:.1})", v[0], v[v.len() - 1])
    };
    println!(
        "median of {TRACING_ROUNDS} rounds: tracing on costs {} of throughput, {} more CPU per call (client included); two untraced servers differ by {} and {} (the noise floor); {spans} spans exported, {:.1} per traced call (7 made: none dropped if 7)",
        spread(&mut overhead),
        spread(&mut cpu_overhead),
        spread(&mut control_diff),
        spread(&mut cpu_control),
        spans as f64 / traced_calls
    );
    let off = median(&mut off_rates);
    // With no exporter a call still gets trace ids and is counted in the
    // metrics: what that costs, beside a whole call.
    let ids = Telemetry::default();
    let metrics = fabric_host::metrics::Metrics::new();
    let n = 1_000_000;
    let started = Instant::now();
    for _ in 0..n {
        std::hint::black_box(ids.ids_only());
    }
    let ids_ns = started.elapsed().as_secs_f64() * 1e9 / n as f64;
    let started = Instant::now();
    for _ in 0..n {
        metrics.record_for_bench("text.echo", "bench", "ok", 0.0006, 757);
    }
    let metrics_ns = started.elapsed().as_secs_f64() * 1e9 / n as f64;
    println!(
        "without an exporter, per call: trace ids {ids_ns:.0} ns, metrics {metrics_ns:.0} ns; {:.2} % of a 64-connection REST call's CPU ({:.0} µs at {off:.0} calls/s on {} cores)",
        100.0 * (ids_ns + metrics_ns) * 1e-9 * off / cores() as f64,
        1e6 * cores() as f64 / off,
        cores()
    );
    queue.shutdown();
}

/// How long each overload row offers load.
const OVERLOAD_SECONDS: f64 = 3.0;
/// Connections the open-loop client keeps; a request waits for a free one
/// only when all are busy (its latency then counts the wait).
const OPEN_LOOP_CONNECTIONS: usize = 512;

/// The `q` quantile of sorted latencies (zero when there are none).
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

/// What an open-loop run saw.
struct OpenLoop {
    secs: f64,
    /// Latencies of the 200s, sorted.
    admitted: Vec<Duration>,
    /// 503s.
    refused: usize,
}

/// Requests at `rate` per second for `seconds`, each measured from the time
/// the schedule gave it.
async fn open_loop(target: &Target, rate: f64, seconds: f64) -> OpenLoop {
    let n = (rate * seconds) as usize;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = tokio::time::Instant::now();
    let mut workers = Vec::new();
    for _ in 0..OPEN_LOOP_CONNECTIONS {
        let (target, next) = (target.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut sender = connect(target.addr).await;
            let (mut admitted, mut refused) = (Vec::new(), 0);
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let due = started + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(due).await;
                let request = target.request();
                let response = sender.send_request(request).await.expect("response");
                let status = response.status();
                let _ = response.into_body().collect().await.expect("body");
                match status.as_u16() {
                    200 => admitted.push(due.elapsed()),
                    503 => refused += 1,
                    other => panic!("unexpected status {other}"),
                }
            }
            (admitted, refused)
        }));
    }
    let (mut admitted, mut refused) = (Vec::with_capacity(n), 0);
    for w in workers {
        let (a, r) = w.await.expect("worker");
        admitted.extend(a);
        refused += r;
    }
    let secs = started.elapsed().as_secs_f64();
    admitted.sort_unstable();
    OpenLoop {
        secs,
        admitted,
        refused,
    }
}

/// A keep-alive client connection to `addr`.
async fn connect(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    sender
}

impl Target {
    /// One request of this row.
    fn request(&self) -> Request<Full<Bytes>> {
        let mut request = Request::post(self.path).header("host", "bench");
        for (k, v) in &self.headers {
            request = request.header(*k, v);
        }
        request.body(Full::new(self.body.clone())).expect("request")
    }
}

/// A hyper server whose every answer is `{}`.
async fn bare_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// `n` requests over `concurrency` keep-alive connections: elapsed seconds
/// and each request's latency.
async fn http_load(target: &Target, concurrency: usize, n: usize) -> (f64, Vec<Duration>) {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (target, next) = (target.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut sender = connect(target.addr).await;
            let mut latencies = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let request = target.request();
                let sent = Instant::now();
                let response = sender.send_request(request).await.expect("response");
                let status = response.status();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .expect("body")
                    .to_bytes();
                assert!(
                    status.is_success(),
                    "{status}: {}",
                    String::from_utf8_lossy(&body)
                );
                latencies.push(sent.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::with_capacity(n);
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    (started.elapsed().as_secs_f64(), all)
}

/// `n` calls of `Fabric::call`, `concurrency` at a time.
async fn in_process(fabric: &Arc<Fabric>, concurrency: usize, n: usize) -> (f64, Vec<Duration>) {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (fabric, next) = (fabric.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let caller = Caller::named("bench", fabric_host::Scope::new(["text.*"]));
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let sent = Instant::now();
                let call = Call::new(caller.clone(), "text.echo", json!({"text": "hello"}));
                let result = fabric.call(call).await.expect("audited");
                assert_eq!(result.outcome, fabric_host::Outcome::Ok);
                latencies.push(sent.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::with_capacity(n);
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    (started.elapsed().as_secs_f64(), all)
}

/// Rounds of the tracing comparison (each row once per round): each of
/// [`ORDERS`] for the rows crossed with each for starting the servers, twice
/// (single rounds swing by ±30 % on a shared machine; the median of 72 moves
/// by a few points from run to run).
const TRACING_ROUNDS: usize = 72;

/// The orders of the three tracing rows (off, off on a second server, on),
/// every one of them, so that no row always follows another.
const ORDERS: [[usize; 3]; 6] = [
    [0, 1, 2],
    [1, 2, 0],
    [2, 0, 1],
    [0, 2, 1],
    [2, 1, 0],
    [1, 0, 2],
];

/// The median of `values` (sorted in place).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let half = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[half - 1] + values[half]) / 2.0
    } else {
        values[half]
    }
}

/// An OTLP/HTTP sink: reads each export and answers 200 with an empty
/// `ExportTraceServiceResponse` (zero bytes of protobuf).
async fn otlp_sink() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async {
                        // Read, not decoded: a collector's own work is not
                        // Fabric's (the spans are counted as they are sent).
                        let _ = req.into_body().collect().await;
                        let mut response = Response::new(Full::new(Bytes::new()));
                        response.headers_mut().insert(
                            "content-type",
                            hyper::header::HeaderValue::from_static("application/x-protobuf"),
                        );
                        Ok::<_, Infallible>(response)
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A `fabric serve` in this process: its Fabric (durable audit log in a
/// scratch directory, under `data_in` if given), address and a caller's
/// token.
struct Served {
    fabric: Arc<Fabric>,
    addr: std::net::SocketAddr,
    token: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Served {
    fn start(
        runtime: &tokio::runtime::Runtime,
        tools: &std::path::Path,
        telemetry: Telemetry,
        data_in: Option<&std::path::Path>,
    ) -> Served {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let data = match data_in {
            Some(dir) => tempfile::tempdir_in(dir),
            None => tempfile::tempdir(),
        }
        .expect("temp dir");
        let keys = tempfile::tempdir().expect("temp dir");
        let mut options = Options::new(tools, root.join("policies"));
        options.data_dir = Some(data.path().into());
        options.audit_key = Some(keys.path().join("key"));
        options.telemetry = telemetry;
        let fabric = Arc::new(Fabric::open(&options).expect("fabric opens"));
        let (token, token_hash) = new_token();
        let callers = data.path().join("callers.toml");
        CallersSpec {
            callers: vec![CallerSpec {
                name: "bench".into(),
                token_hash,
                scope: vec!["text.*".into()],
                max_in_flight: None,
                budget: Default::default(),
                session_budget: Default::default(),
            }],
            ..Default::default()
        }
        .write(&callers)
        .expect("callers file");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr, server) = runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let options = ServeOptions {
                auth: Auth::Callers(CallerFile::open(&callers).expect("callers")),
                allow_origins: Vec::new(),
                max_body: 1 << 20,
                shutdown_grace: Duration::from_secs(1),
                client_timeout: Duration::from_secs(10),
                release_idle: None,
            };
            let server = tokio::spawn(server::run(fabric.clone(), listener, options, async {
                let _ = stopped.await;
            }));
            (addr, server)
        });
        Served {
            fabric,
            addr,
            token,
            stop,
            server,
            _dirs: (data, keys),
        }
    }

    /// Stops the server and waits until it has let go of its Fabric.
    fn stop(self, runtime: &tokio::runtime::Runtime) {
        let _ = self.stop.send(());
        let _ = runtime.block_on(self.server);
    }
}

/// Cores this process may use.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A span queue as `fabric serve --otlp` makes one (batched, every second),
/// exporting to the OTLP/HTTP sink at `sink`, or dropping every batch
/// without one.
fn traced_queue(sink: Option<std::net::SocketAddr>) -> Arc<SpanQueue> {
    let exporter = sink.map(|sink| {
        let mut e = OtlpExporter::new(&OtlpConfig {
            endpoint: format!("http://{sink}/v1/traces"),
            headers: Vec::new(),
            timeout: Duration::from_secs(10),
        })
        .expect("OTLP exporter");
        e.set_resource(
            &opentelemetry_sdk::Resource::builder_empty()
                .with_service_name("fabric")
                .build(),
        );
        e
    });
    Arc::new(SpanQueue::start(exporter, BatchConfig::default()).expect("span queue"))
}

/// `cargo bench --bench serve -- spans`: the CPU time (every thread of the
/// process) one traced call's spans cost: built and dropped, then built and
/// exported to a local OTLP sink, beside only the ids an untraced call gets.
fn span_cpu() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let sink = runtime.block_on(otlp_sink());
    let parent = fabric_host::TraceContext::parse(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        None,
    );
    const CHUNK: usize = 5_000;
    const CHUNKS: usize = 20;
    println!(
        "{:<34} {:>12} {:>10}",
        "spans of one REST call", "CPU µs/call", "spans"
    );
    let rows: [(&str, Option<Option<std::net::SocketAddr>>); 3] = [
        ("ids only (no exporter)", None),
        ("7 spans, batches dropped", Some(None)),
        ("7 spans, exported to a sink", Some(Some(sink))),
    ];
    for (name, exporter) in rows {
        let queue = exporter.map(traced_queue);
        let telemetry = queue.as_ref().map_or_else(Telemetry::default, |q| {
            Telemetry::exporting(q.clone(), Sampler::AlwaysOn)
        });
        let cpu = cpu_time();
        for _ in 0..CHUNKS {
            for _ in 0..CHUNK {
                telemetry.traced_call_for_bench(parent.clone());
            }
            if let Some(q) = &queue {
                q.force_flush();
            }
        }
        let used = cpu_time() - cpu;
        let spans = queue.as_ref().map_or(0, |q| q.exported());
        println!(
            "{name:<34} {:>12.2} {:>10}",
            used.as_secs_f64() * 1e6 / (CHUNK * CHUNKS) as f64,
            spans
        );
        if let Some(q) = queue {
            q.shutdown();
        }
    }
}

/// CPU time this process has used, on all its threads.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is handed.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}
