//! Runs `check` over the bench's four realistic strings a fixed number of
//! times (for CPU-time comparisons with `perf stat -e task-clock`).
fn main() {
    let text = std::fs::read_to_string("/tmp/g15/parts.json").unwrap_or_default();
    let parts: Vec<String> = serde_json::from_str(&text).unwrap_or_default();
    let cfg = fabric_guard::GuardConfig::with_limit(u64::MAX);
    let items: Vec<serde_json::Value> = (0..64)
        .map(|i| serde_json::json!({"n": i, "text": parts[i % parts.len()]}))
        .collect();
    let value = serde_json::json!({ "items": items });
    for _ in 0..3000 {
        std::hint::black_box(fabric_guard::check(value.clone(), &cfg));
    }
}
