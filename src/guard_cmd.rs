//! `fabric guard eval FILE.jsonl`: measures the guard on labelled outputs.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use fabric_host::guard::{self, GuardConfig};
use serde::Deserialize;
use serde_json::Value;

/// One labelled case.
#[derive(Deserialize)]
struct Case {
    text: String,
    injected: bool,
    #[serde(default)]
    source: Option<String>,
}

/// Runs the eval and prints detection rate, false-positive rate and per-rule hits.
pub fn eval(file: &Path, show_errors: bool, json: bool) -> Result<ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let config = GuardConfig::with_limit(u64::MAX);
    let (mut injected, mut benign, mut caught, mut false_pos) = (0u64, 0u64, 0u64, 0u64);
    let mut per_rule: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let case: Case = serde_json::from_str(line).with_context(|| {
            format!(
                "{}:{}: expected {{\"text\": …, \"injected\": bool}}",
                file.display(),
                n + 1
            )
        })?;
        let (verdict, flags) = guard::check(Value::String(case.text), &config).split();
        // Detected: rejected, or partly redacted. Flags alone (an encoded blob
        // that decodes to nothing dangerous) are informational.
        let hit = verdict.is_err() || flags.iter().any(|f| f.action != "flag");
        let mut seen: Vec<&str> = flags.iter().map(|f| f.rule.as_str()).collect();
        seen.sort();
        seen.dedup();
        for rule in seen {
            let entry = per_rule.entry(rule.to_string()).or_default();
            if case.injected {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
        if show_errors && hit != case.injected {
            let what = if case.injected {
                "missed"
            } else {
                "false positive"
            };
            let rules: Vec<String> = flags
                .iter()
                .filter(|f| f.action != "flag" || case.injected)
                .map(|f| format!("{} {:?}", f.rule, f.excerpt))
                .collect();
            println!(
                "{}:{}: {what} [{}] hits: {}",
                file.display(),
                n + 1,
                case.source.as_deref().unwrap_or("-"),
                if rules.is_empty() {
                    "none".into()
                } else {
                    rules.join("; ")
                }
            );
        }
        if case.injected {
            injected += 1;
            caught += u64::from(hit);
        } else {
            benign += 1;
            false_pos += u64::from(hit);
        }
    }
    let pct = |a: u64, b: u64| {
        if b == 0 {
            0.0
        } else {
            100.0 * a as f64 / b as f64
        }
    };
    if json {
        let rules: serde_json::Map<String, Value> = per_rule
            .into_iter()
            .map(|(rule, (i, b))| (rule, serde_json::json!({"injected": i, "benign": b})))
            .collect();
        let summary = serde_json::json!({
            "injected": injected,
            "benign": benign,
            "detected": caught,
            "false_positives": false_pos,
            "detection_rate": pct(caught, injected) / 100.0,
            "false_positive_rate": pct(false_pos, benign) / 100.0,
            "rules": rules,
        });
        println!("{summary}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("cases: {} injected, {} benign", injected, benign);
    println!(
        "detection: {caught}/{injected} = {:.1} %",
        pct(caught, injected)
    );
    println!(
        "false positives: {false_pos}/{benign} = {:.1} %",
        pct(false_pos, benign)
    );
    println!("{:<40} {:>9} {:>7}", "rule", "injected", "benign");
    for (rule, (i, b)) in per_rule {
        println!("{rule:<40} {i:>9} {b:>7}");
    }
    Ok(ExitCode::SUCCESS)
}
