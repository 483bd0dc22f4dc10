//! Audit log cost, side by side in one run: calls/s of `text.echo` with no
//! audit log, with the log but no flush, and durable (group commit: one fsync
//! per batch of concurrent calls), at concurrency 1 and 16; then the speed of
//! verifying the log (records/s).
//!
//! Run: `cargo bench --bench audit` (after `scripts/build-tools`).
//! Calls per row: `FABRIC_BENCH_CALLS` (default 5000).

use std::sync::Arc;
use std::time::Instant;

use fabric_host::audit;
use fabric_host::{Call, Fabric, Options};
use serde_json::json;

fn main() {
    let calls: usize = std::env::var("FABRIC_BENCH_CALLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5000);
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("text.echo, {calls} calls per row, one run:");
    println!("{:<28} {:>12} {:>12}", "", "c=1 calls/s", "c=16 calls/s");
    let mut durable_dir = None;
    for (name, audited, durable) in [
        ("no audit log", false, false),
        ("audit, no flush", true, false),
        ("audit, durable (group commit)", true, true),
    ] {
        let mut rates = Vec::new();
        for concurrency in [1usize, 16] {
            let dir = tempfile::tempdir().unwrap();
            let options = Options {
                tools_dir: root.join("build/tools"),
                policies_dir: root.join("policies"),
                data_dir: audited.then(|| dir.path().to_path_buf()),
                audit_key: None,
                durable_audit: durable,
                max_component_size: fabric_host::registry::DEFAULT_MAX_COMPONENT_SIZE,
            };
            let fabric = Arc::new(
                Fabric::open(&options).expect("open fabric (run scripts/build-tools first)"),
            );
            let started = Instant::now();
            runtime.block_on(async {
                let per_worker = calls / concurrency;
                let workers: Vec<_> = (0..concurrency)
                    .map(|_| {
                        let fabric = fabric.clone();
                        tokio::spawn(async move {
                            for _ in 0..per_worker {
                                let call = Call {
                                    caller: None,
                                    session: None,
                                    tool: "text.echo".into(),
                                    arguments: json!({"text": "x"}),
                                };
                                assert!(fabric.call(call).await.unwrap().output == json!("x"));
                            }
                        })
                    })
                    .collect();
                for w in workers {
                    w.await.unwrap();
                }
            });
            rates
                .push((calls / concurrency * concurrency) as f64 / started.elapsed().as_secs_f64());
            drop(fabric);
            if durable && concurrency == 16 {
                durable_dir = Some(dir);
            }
        }
        println!("{name:<28} {:>12.0} {:>12.0}", rates[0], rates[1]);
    }

    let dir = durable_dir.unwrap();
    let started = Instant::now();
    let (_, items, head) = audit::read_records(&dir.path().join("audit")).unwrap();
    let read = started.elapsed();
    let verified = audit::verify(&items, 0, head, None).unwrap();
    let total = started.elapsed();
    println!(
        "verify: {} records in {:.1} ms ({:.0} records/s; reading and parsing {:.1} ms of it)",
        verified.count,
        total.as_secs_f64() * 1e3,
        verified.count as f64 / total.as_secs_f64(),
        read.as_secs_f64() * 1e3
    );
}
