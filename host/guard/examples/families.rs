//! Aggregate detection per source family of a labelled set (the first field
//! of `source`, e.g. `bipia-text`), without listing any case:
//! `cargo run --release -p fabric-guard --example families -- FILE.jsonl`.
#[path = "common/labelled.rs"]
mod labelled;

use std::collections::BTreeMap;

fn main() {
    let (_, text) = labelled::read_set("families FILE.jsonl");
    let config = fabric_guard::GuardConfig::with_limit(u64::MAX);
    let mut per: BTreeMap<(bool, String), (u64, u64)> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(case) = serde_json::from_str::<fabric_guard::eval::Case>(line) else {
            continue;
        };
        let family = case
            .source
            .as_deref()
            .and_then(|s| s.split(':').next())
            .unwrap_or("-")
            .to_string();
        let detected = fabric_guard::eval::detected(&fabric_guard::check(
            serde_json::Value::String(case.text),
            &config,
        ));
        let e = per.entry((case.injected, family)).or_default();
        e.0 += u64::from(detected);
        e.1 += 1;
    }
    for ((injected, family), (hit, n)) in per {
        let what = if injected {
            "detected"
        } else {
            "false positives"
        };
        println!("{family:<28} {what:<16} {hit}/{n}");
    }
}
