//! Measuring the guard on labelled outputs (`fabric guard eval`).
//!
//! A labelled set is JSON lines, one case per line:
//! `{"text": "<a tool output>", "injected": true, "source": "…"}` (other
//! fields are ignored). A case is *detected* when the guard rejects it or
//! redacts part of it; flags alone are informational.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{check, GuardConfig, Guarded};

/// One labelled case.
#[derive(Debug, Clone, Deserialize)]
pub struct Case {
    /// The tool output.
    pub text: String,
    /// Whether it holds an injection.
    pub injected: bool,
    /// Where it comes from (`category:carrier:origin`).
    #[serde(default)]
    pub source: Option<String>,
}

impl Case {
    /// Its category: the first field of its source (`bipia-text`,
    /// `benign-docs`), if it has one.
    pub fn category(&self) -> Option<&str> {
        self.source.as_deref().and_then(|s| s.split(':').next())
    }
}

/// A line of a labelled set that is not a case (shown as `LINE: expected …`,
/// to follow a file name and a colon).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{line}: expected {{\"text\": …, \"injected\": bool}}: {message}")]
pub struct EvalError {
    /// The 1-based line number.
    pub line: usize,
    /// What the JSON parser said.
    pub message: String,
}

/// A case the guard got wrong.
#[derive(Debug, Clone, Serialize)]
pub struct Miss {
    /// The 1-based line number.
    pub line: usize,
    /// `missed` (an injection not detected) or `false positive`.
    pub what: &'static str,
    /// The case's source.
    pub source: String,
    /// The rules that acted, with their excerpts (`rule "excerpt"`).
    pub hits: Vec<String>,
}

/// Per-rule counts: cases of each label that a rule hit.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RuleCount {
    /// Injected cases the rule hit.
    pub injected: u64,
    /// Benign cases the rule hit.
    pub benign: u64,
}

/// The guard's figures on one labelled set.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    /// Injected cases.
    pub injected: u64,
    /// Benign cases.
    pub benign: u64,
    /// Injected cases detected.
    pub detected: u64,
    /// Benign cases detected.
    pub false_positives: u64,
    /// `detected / injected` (0 when there are none).
    pub detection_rate: f64,
    /// `false_positives / benign` (0 when there are none).
    pub false_positive_rate: f64,
    /// Per rule, the cases it hit.
    pub rules: BTreeMap<String, RuleCount>,
    /// The cases the guard got wrong, in file order.
    #[serde(skip)]
    pub misses: Vec<Miss>,
}

/// Whether the guard detected an injection in an output: it rejected it or
/// redacted part of it (flags alone are informational).
pub fn detected(guarded: &Guarded) -> bool {
    match guarded {
        Guarded::Rejected { .. } => true,
        Guarded::Pass { flags, .. } => flags.iter().any(|f| f.action != "flag"),
    }
}

/// Runs the guard over every case of a labelled set (JSON lines; blank
/// lines are skipped).
pub fn evaluate(jsonl: &str, config: &GuardConfig) -> Result<Figures, EvalError> {
    let mut figures = Figures::default();
    for (n, line) in jsonl.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let case: Case = serde_json::from_str(line).map_err(|e| EvalError {
            line: n + 1,
            message: e.to_string(),
        })?;
        let guarded = check(Value::String(case.text), config);
        let detected = detected(&guarded);
        let (_, flags) = guarded.split();
        let mut seen: Vec<&str> = flags.iter().map(|f| f.rule.as_str()).collect();
        seen.sort_unstable();
        seen.dedup();
        for rule in seen {
            let count = figures.rules.entry(rule.to_string()).or_default();
            if case.injected {
                count.injected += 1;
            } else {
                count.benign += 1;
            }
        }
        if detected != case.injected {
            figures.misses.push(Miss {
                line: n + 1,
                what: if case.injected {
                    "missed"
                } else {
                    "false positive"
                },
                source: case.source.unwrap_or_else(|| "-".into()),
                hits: flags
                    .iter()
                    .filter(|f| f.action != "flag" || case.injected)
                    .map(|f| format!("{} {:?}", f.rule, f.excerpt))
                    .collect(),
            });
        }
        if case.injected {
            figures.injected += 1;
            figures.detected += u64::from(detected);
        } else {
            figures.benign += 1;
            figures.false_positives += u64::from(detected);
        }
    }
    let rate = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    figures.detection_rate = rate(figures.detected, figures.injected);
    figures.false_positive_rate = rate(figures.false_positives, figures.benign);
    Ok(figures)
}
