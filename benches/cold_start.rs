//! Cold start: what a fresh sandboxed instance per call costs.
//!
//! Side by side, in one run, on `text.echo` from `build/tools`:
//! - `cold`: fresh store + instantiate + call + drop (what every call pays);
//! - `pipeline`: a whole `Fabric::call` (validate, cold run, convert, guard);
//! - `warm`: the same call on one instance reused across calls (the floor,
//!   which Fabric never does in production: it would leak state between calls);
//! - `process`: spawning `/bin/true` and waiting for it, for scale.
//!
//! Run: `cargo bench --bench cold_start` (after `scripts/build-tools`).
//! Iterations: `FABRIC_BENCH_ITERS` (default 20000).

use std::time::{Duration, Instant};

use fabric_host::registry::Status;
use fabric_host::sandbox::{self, RunEnd};
use fabric_host::{Call, Caller, Fabric, Options};
use serde_json::json;
use wasmtime::component::Val;

fn main() {
    let iters: usize = std::env::var("FABRIC_BENCH_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // No data directory: the audit log has its own benchmark.
    let options = Options::new(root.join("build/tools"), root.join("policies"));
    let fabric = Fabric::open(&options).expect("open fabric (run scripts/build-tools first)");
    let tool = fabric
        .registry()
        .get("text.echo")
        .expect("text.echo is built (run scripts/build-tools)");
    let Status::Ready(callable) = &tool.status else {
        panic!("text.echo unavailable")
    };
    let policy = callable.component.policy.clone();
    let params = [Val::String("hello, fabric".into())];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let linked = runtime
        .block_on(callable.component.linked())
        .expect("text.echo compiles");
    let func = linked.func(callable).expect("text.echo exported");
    let halt = std::sync::Arc::new(sandbox::Halt::default());
    let cold = runtime.block_on(async {
        measure(iters, || async {
            let run = sandbox::run(
                &linked.pre,
                &func,
                1,
                &policy,
                &params,
                sandbox::Halts {
                    host: &halt,
                    call: None,
                },
            )
            .await;
            assert!(matches!(run.end, RunEnd::Returned(_)), "{:?}", run.end);
        })
        .await
    });

    let pipeline = runtime.block_on(async {
        measure(iters, || async {
            let call = Call::new(Caller::Local, "text.echo", json!({"text": "hello, fabric"}));
            let r = fabric.call(call).await.unwrap();
            assert_eq!(r.output, json!("hello, fabric"));
        })
        .await
    });

    // The same call on one reused instance: `fabric bench`'s floor.
    let warm = runtime.block_on(fabric.reused_instance(
        "text.echo",
        &json!({"text": "hello, fabric"}),
        (iters / 10).max(10),
        iters,
    ));
    let warm = stats(warm.expect("text.echo runs on a reused instance"));

    let process_iters = (iters / 20).max(50);
    let process = runtime.block_on(measure(process_iters, || async {
        let status = std::process::Command::new("/bin/true").status().unwrap();
        assert!(status.success());
    }));

    println!("text.echo, {iters} iterations ({process_iters} for process), one run:");
    println!(
        "{:<10} {:>10} {:>10} {:>10}",
        "", "p50 µs", "p99 µs", "mean µs"
    );
    for (name, s) in [
        ("cold", &cold),
        ("pipeline", &pipeline),
        ("warm", &warm),
        ("process", &process),
    ] {
        println!(
            "{name:<10} {:>10.1} {:>10.1} {:>10.1}",
            us(s.p50),
            us(s.p99),
            us(s.mean)
        );
    }
    println!(
        "cold/warm p50 = {:.1}x, process/cold p50 = {:.0}x",
        us(cold.p50) / us(warm.p50),
        us(process.p50) / us(cold.p50)
    );
}

struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

async fn measure<F, Fut>(iters: usize, mut f: F) -> Stats
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..(iters / 10).max(10) {
        f().await; // warm-up: caches, pool slots, CoW images
    }
    let mut samples = Vec::with_capacity(iters);
    for _ in 0..iters {
        let start = Instant::now();
        f().await;
        samples.push(start.elapsed());
    }
    stats(samples)
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let total: Duration = samples.iter().sum();
    Stats {
        p50: samples[samples.len() / 2],
        p99: samples[samples.len() * 99 / 100],
        mean: total / samples.len() as u32,
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
