//! Times the guard's stages per string on a JSON array of strings (a tuning
//! aid): `cargo run --release -p fabric-guard --example prof FILE.json`.
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let text = std::fs::read_to_string(args.get(1).map_or("", |s| s)).unwrap_or_default();
    let parts: Vec<String> = serde_json::from_str(&text).unwrap_or_default();
    let rules = fabric_guard::RuleSet::default_rules();
    let cfg = fabric_guard::GuardConfig::with_limit(u64::MAX);
    let reps = 20_000;
    let bytes: usize = parts.iter().map(String::len).sum::<usize>() * reps;
    let mib = bytes as f64 / (1 << 20) as f64;
    for _ in 0..2 {
        let t = Instant::now();
        for _ in 0..reps {
            for p in &parts {
                std::hint::black_box(rules.signals.score(p, &rules.signals.thresholds));
            }
        }
        let s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..reps {
            for p in &parts {
                let mut matched = Vec::new();
                std::hint::black_box(rules.signals.scan(
                    p,
                    &rules.signals.thresholds,
                    Some(&mut matched),
                ));
            }
        }
        let r = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..reps {
            for p in &parts {
                std::hint::black_box(fabric_guard::check(
                    serde_json::Value::String(p.clone()),
                    &cfg,
                ));
            }
        }
        let c = t.elapsed().as_secs_f64();
        println!(
            "signals {:.0} MiB/s, signals and rules {:.0} MiB/s, check {:.0} MiB/s",
            mib / s,
            mib / r,
            mib / c
        );
    }
}
