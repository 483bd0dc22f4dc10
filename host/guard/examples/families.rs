//! Aggregate detection per source family of a labelled set (the first field
//! of `source`, e.g. `bipia-text`), without listing any case:
//! `cargo run --release -p fabric-guard --example families -- FILE.jsonl [--model-rejects | --rules-alone]`
//! (`--model-rejects`: the learned detector rejects whatever the string's
//! length, as a policy may make it;
//! `--rules-alone`: no learned detector, as `[guard] model = "none"`).

use std::collections::BTreeMap;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.iter().find(|a| !a.starts_with("--")) else {
        eprintln!("usage: families FILE.jsonl [--model-rejects | --rules-alone]");
        std::process::exit(2);
    };
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        eprintln!("{path}: {e}");
        std::process::exit(2);
    });
    let flag = |name: &str| args.iter().any(|a| a == name);
    if flag("--model-rejects") && flag("--rules-alone") {
        eprintln!("--model-rejects and --rules-alone exclude each other");
        std::process::exit(2);
    }
    let mut config = fabric_guard::GuardConfig::with_limit(u64::MAX);
    if flag("--model-rejects") {
        config.model_rejects();
    }
    if flag("--rules-alone") {
        config.model = None;
    }
    let mut per: BTreeMap<(bool, String), (u64, u64)> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(case) = serde_json::from_str::<fabric_guard::eval::Case>(line) else {
            continue;
        };
        let family = case.category().unwrap_or("-").to_string();
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
