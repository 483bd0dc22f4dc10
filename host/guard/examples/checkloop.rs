//! Runs `check` a fixed number of times over an output made of the strings
//! in a JSON array file (for CPU-time comparisons of two builds with
//! `perf stat -e task-clock`): `checkloop PARTS.json`. The output holds 64
//! items (`ITEMS=N` in the environment for another count) and is checked
//! 3000 times (`REPS=N`).
fn main() {
    let path = std::env::args().nth(1).unwrap_or_default();
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let parts: Vec<String> = serde_json::from_str(&text).unwrap_or_default();
    if parts.is_empty() {
        eprintln!("usage: checkloop PARTS.json (a JSON array of strings)");
        std::process::exit(2);
    }
    let cfg = fabric_guard::GuardConfig::with_limit(u64::MAX);
    let n: usize = std::env::var("ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let reps: usize = std::env::var("REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let items: Vec<serde_json::Value> = (0..n)
        .map(|i| serde_json::json!({"n": i, "text": parts[i % parts.len()]}))
        .collect();
    let value = serde_json::json!({ "items": items });
    for _ in 0..reps {
        std::hint::black_box(fabric_guard::check(value.clone(), &cfg));
    }
}
