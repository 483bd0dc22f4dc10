//! `fabric guard eval FILE.jsonl…`: measures the guard on labelled outputs,
//! each file (a development part, a validation part) in a column of its own.
//! The measuring is `fabric_guard::eval`; this is its front end.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use fabric_host::guard::eval::{self, Figures};
use fabric_host::guard::GuardConfig;

/// Whether a file is a held-out part whose errors are not shown by default.
fn held_out(file: &Path) -> bool {
    file.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("validation"))
}

/// Runs the eval on every file and prints the figures side by side (or one
/// JSON object per file); `model_rejects` lets the learned detector reject
/// whatever the string's length.
pub fn eval(
    files: &[PathBuf],
    show_errors: bool,
    show_validation_errors: bool,
    json: bool,
    model_rejects: bool,
) -> Result<ExitCode> {
    let mut config = GuardConfig::with_limit(u64::MAX);
    if model_rejects {
        config.model_rejects();
    }
    let mut parts: Vec<(&PathBuf, Figures)> = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let figures = eval::evaluate(&text, &config)
            .map_err(|e| anyhow::anyhow!("{}:{}", file.display(), e))?;
        parts.push((file, figures));
    }
    if json {
        for (file, figures) in &parts {
            let mut value = serde_json::to_value(figures)?;
            value["file"] = serde_json::json!(file.display().to_string());
            println!("{value}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    for (file, figures) in &parts {
        let shown = show_errors && (!held_out(file) || show_validation_errors);
        for miss in figures.misses.iter().filter(|_| shown) {
            println!(
                "{}:{}: {} [{}] hits: {}",
                file.display(),
                miss.line,
                miss.what,
                miss.source,
                if miss.hits.is_empty() {
                    "none".into()
                } else {
                    miss.hits.join("; ")
                },
            );
        }
        if show_errors && !shown {
            println!(
                "{}: held out, errors not shown (--show-validation-errors)",
                file.display()
            );
        }
    }
    let names: Vec<String> = parts
        .iter()
        .map(|(f, _)| {
            f.file_name()
                .map_or_else(|| f.display().to_string(), |n| n.to_string_lossy().into())
        })
        .collect();
    let width = names.iter().map(String::len).max().unwrap_or(0).max(26);
    print!("{:<18}", "");
    for name in &names {
        print!(" {name:>width$}");
    }
    println!();
    let row = |label: &str, cell: &dyn Fn(&Figures) -> String| {
        print!("{label:<18}");
        for (_, f) in &parts {
            print!(" {:>width$}", cell(f));
        }
        println!();
    };
    row("cases", &|f| {
        format!("{} injected, {} benign", f.injected, f.benign)
    });
    row("detection", &|f| {
        format!(
            "{}/{} = {:.1} %",
            f.detected,
            f.injected,
            100.0 * f.detection_rate
        )
    });
    row("false positives", &|f| {
        format!(
            "{}/{} = {:.1} %",
            f.false_positives,
            f.benign,
            100.0 * f.false_positive_rate
        )
    });
    println!();
    println!("cases hit per rule (injected/benign)");
    let mut rules: Vec<&String> = parts.iter().flat_map(|(_, f)| f.rules.keys()).collect();
    rules.sort();
    rules.dedup();
    for rule in rules {
        print!("{rule:<40}");
        for (_, f) in &parts {
            let c = f.rules.get(rule).cloned().unwrap_or_default();
            print!(" {:>12}", format!("{}/{}", c.injected, c.benign));
        }
        println!();
    }
    Ok(ExitCode::SUCCESS)
}
