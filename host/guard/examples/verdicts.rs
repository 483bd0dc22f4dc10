//! The guard's verdict on each case of a labelled set, one `1` (detected:
//! rejected or redacted) or `0` per line, in order, and nothing of the case
//! itself (so a held-out part's cases stay unseen): for combining the guard
//! with another detector in aggregate, as
//! `tests/data/guard/linear_baseline.py` does:
//! `cargo run --release -p fabric-guard --example verdicts -- FILE.jsonl`.
#[path = "common/labelled.rs"]
mod labelled;

fn main() {
    let (path, text) = labelled::read_set("verdicts FILE.jsonl");
    let config = fabric_guard::GuardConfig::with_limit(u64::MAX);
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let case: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("{path}:{}: {e}", n + 1);
                std::process::exit(2);
            }
        };
        let output = case["text"].as_str().unwrap_or_default().to_string();
        let detected = fabric_guard::eval::detected(&fabric_guard::check(
            serde_json::Value::String(output),
            &config,
        ));
        println!("{}", u8::from(detected));
    }
}
