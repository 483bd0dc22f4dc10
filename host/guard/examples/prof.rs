//! Times the guard on a file's text split into JSON items of about 600
//! bytes (a tuning aid): `cargo run --release -p fabric-guard --example prof FILE`.
use std::time::Instant;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let page = std::fs::read_to_string(args.get(1).map_or("", |s| s)).unwrap_or_default();
    let mut items = Vec::new();
    let mut rest = page.as_str();
    while !rest.is_empty() {
        let mut cut = rest.len().min(600);
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        items.push(serde_json::json!({"text": &rest[..cut]}));
        rest = &rest[cut..];
    }
    let value = serde_json::json!({ "items": items });
    let mb = page.len() as f64 / (1 << 20) as f64;
    let cfg = fabric_guard::GuardConfig::with_limit(u64::MAX);
    let rules = fabric_guard::RuleSet::default_rules();
    for round in 0..3 {
        let t = Instant::now();
        std::hint::black_box(fabric_guard::check(value.clone(), &cfg));
        let c = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for item in &items {
            if let Some(s) = item["text"].as_str() {
                std::hint::black_box(rules.signals.score(s, &rules.signals.thresholds));
            }
        }
        let s = t.elapsed().as_secs_f64();
        println!("round {round}: check {:.0} MiB/s, signals alone {:.0} MiB/s", mb / c, mb / s);
    }
}
