//! Runs `check` a fixed number of times over an output made of the strings
//! in a JSON array file (for CPU-time comparisons of two builds with
//! `perf stat -e task-clock`): `checkloop PARTS.json`.
fn main() {
    let path = std::env::args().nth(1).unwrap_or_default();
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let parts: Vec<String> = serde_json::from_str(&text).unwrap_or_default();
    if parts.is_empty() {
        eprintln!("usage: checkloop PARTS.json (a JSON array of strings)");
        std::process::exit(2);
    }
    let cfg = fabric_guard::GuardConfig::with_limit(u64::MAX);
    let items: Vec<serde_json::Value> = (0..64)
        .map(|i| serde_json::json!({"n": i, "text": parts[i % parts.len()]}))
        .collect();
    let value = serde_json::json!({ "items": items });
    for _ in 0..3000 {
        std::hint::black_box(fabric_guard::check(value.clone(), &cfg));
    }
}
