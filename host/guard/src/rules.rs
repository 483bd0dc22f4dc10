//! Guard rules as data: the rule file format and its compiled form.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use regex::{Regex, RegexSet};
use serde::Deserialize;

pub use super::decode::Decoder;

/// The rules shipped with Fabric (`host/guard/src/default-rules.toml`).
pub const DEFAULT_RULES: &str = include_str!("default-rules.toml");

/// What a rule does when it hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The output is rejected (outcome `output_rejected`).
    Reject,
    /// The matched span becomes `[redacted:RULE-ID]`.
    Redact,
    /// The output passes; the hit is reported.
    Flag,
}

impl Action {
    /// The action's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Reject => "reject",
            Action::Redact => "redact",
            Action::Flag => "flag",
        }
    }

    /// Parses `reject`, `redact` or `flag`.
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "reject" => Some(Action::Reject),
            "redact" => Some(Action::Redact),
            "flag" => Some(Action::Flag),
            _ => None,
        }
    }
}

/// Which text a rule sees (see the default rule file's header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Instructions aimed at the model: normalised text.
    Instruction,
    /// Role and special tokens: normalised text.
    Token,
    /// Hidden text: raw text.
    Hidden,
    /// Exfiltration URLs: raw text, host checked against the policy.
    Exfiltration,
    /// Encoded blobs: raw text; each match is decoded (the rule's `decode`)
    /// and the decoded text is checked again, once.
    Encoded,
    /// Checked only on text decoded from an encoded blob (normalised):
    /// words that are ordinary in plain text but suspicious when hidden.
    Decoded,
}

impl Kind {
    /// Whether the kind matches normalised rather than raw text.
    pub fn normalised(self) -> bool {
        matches!(self, Kind::Instruction | Kind::Token | Kind::Decoded)
    }
}

/// When an `encoded` rule reports the blob itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    /// Every match is reported (with its action), whatever it decodes to.
    #[default]
    Blob,
    /// Only the rules its decoded text hits are reported: for encodings that
    /// are everywhere in ordinary output (percent-encoded URLs, entities).
    Hits,
}

/// Why a rule pattern that can match no text at all is refused (a signal may:
/// `^` marks a position).
const EMPTY_MATCH: &str = "can match empty text (a lone \\b, x?, x*), so it would hit every string: make it require at least one character";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    rule: Vec<FileRule>,
    #[serde(default)]
    signal: Vec<crate::signals::FileSignal>,
    #[serde(default)]
    score: crate::signals::Thresholds,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRule {
    id: String,
    kind: Kind,
    action: Action,
    description: String,
    patterns: Vec<String>,
    #[serde(default)]
    decode: Option<Decoder>,
    #[serde(default)]
    report: Report,
}

/// One compiled rule.
#[derive(Debug)]
pub struct Rule {
    /// Its id.
    pub id: String,
    /// Its kind.
    pub kind: Kind,
    /// Its default action.
    pub action: Action,
    /// What it detects.
    pub description: String,
    /// Its patterns.
    pub patterns: Vec<Pattern>,
    /// How an `encoded` rule's matches are decoded.
    pub decode: Option<Decoder>,
    /// When an `encoded` rule reports the blob itself.
    pub report: Report,
}

/// One pattern of a rule. Its own regex, which finds the spans of a rule
/// that hit, is compiled on first use: most outputs hit no rule, so most
/// patterns are never compiled in a process.
#[derive(Debug)]
pub struct Pattern {
    source: String,
    regex: OnceLock<Regex>,
}

impl Pattern {
    fn new(source: String) -> Pattern {
        Pattern {
            source,
            regex: OnceLock::new(),
        }
    }

    /// The pattern as written in the rule file.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The compiled pattern. A rule file is checked when it loads (every
    /// pattern compiles), so this cannot fail.
    pub fn regex(&self) -> &Regex {
        self.regex.get_or_init(|| {
            compile(&self.source).expect("rule patterns were checked when the rules loaded")
        })
    }
}

/// The rules of one kind, with a set for the one-pass first check. The set
/// is compiled on first use: outputs that normalisation leaves unchanged
/// (most of them) never need it (see [`RuleSet::all`]).
#[derive(Debug)]
pub struct KindRules {
    patterns: Vec<String>,
    set: OnceLock<RegexSet>,
    /// For each set entry: (index into [`RuleSet::rules`], index of the pattern).
    pub owners: Vec<(usize, usize)>,
}

impl KindRules {
    /// Every pattern of the kind, in one set. The rule file was checked when
    /// it loaded (the set compiles), so this cannot fail.
    pub fn set(&self) -> &RegexSet {
        self.set.get_or_init(|| {
            build_set(&self.patterns, "kind").expect("rule sets were checked when the rules loaded")
        })
    }
}

/// A compiled rule file.
///
/// The default rules are compiled lazily, part by part, on first use (a
/// one-call process pays only for what its output needs; see
/// [`RuleSet::prepare`]); a rule file that [`RuleSet::parse`] or
/// [`RuleSet::load`] reads is compiled whole, so that its errors surface
/// when it loads.
#[derive(Debug)]
pub struct RuleSet {
    /// The rules, in file order.
    pub rules: Vec<Rule>,
    /// Per kind, the set of all its patterns.
    pub kinds: BTreeMap<Kind, KindRules>,
    /// Every pattern of every kind but `decoded`, as (rule, pattern) index
    /// pairs: they run in the signals' automaton ([`crate::signals`]), one
    /// pass over text that normalisation leaves unchanged (most text), which
    /// finds the signals and which of these patterns match at once.
    pub all: Vec<(usize, usize)>,
    /// The signals and their score thresholds (`[[signal]]`, `[score]`).
    pub signals: crate::signals::Signals,
}

/// A rule file that does not load.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct RulesError(pub String);

/// Largest compiled size of one rule kind's pattern set.
const SET_SIZE_LIMIT: usize = 64 << 20;

impl RuleSet {
    /// The default rules, parsed once per process and compiled part by part
    /// on first use (they are tested to compile).
    pub fn default_rules() -> Arc<RuleSet> {
        static DEFAULT: OnceLock<Arc<RuleSet>> = OnceLock::new();
        DEFAULT
            .get_or_init(|| {
                Arc::new(
                    RuleSet::parse_with(DEFAULT_RULES, false)
                        .expect("the bundled default rules parse"),
                )
            })
            .clone()
    }

    /// Builds now what checking any output needs (the one-pass automaton
    /// of the rules and signals), so that the first check does not: call it
    /// from a background thread while a tool runs. Idempotent and cheap once
    /// done.
    pub fn prepare(&self) {
        self.signals.prepare();
    }

    /// The score thresholds of the rule file (`[score]`).
    pub fn thresholds(&self) -> crate::signals::Thresholds {
        self.signals.thresholds
    }

    /// No rules at all (`[guard] rules = "none"`): only the size limit applies.
    pub fn none() -> Arc<RuleSet> {
        Arc::new(RuleSet {
            rules: Vec::new(),
            kinds: BTreeMap::new(),
            all: Vec::new(),
            signals: crate::signals::Signals::none(),
        })
    }

    /// Loads a rule file.
    pub fn load(path: &Path) -> Result<RuleSet, RulesError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| RulesError(format!("{}: {e}", path.display())))?;
        RuleSet::parse(&text).map_err(|e| RulesError(format!("{}: {}", path.display(), e.0)))
    }

    /// Parses and compiles rule-file text (every part, so that any error
    /// shows now).
    pub fn parse(text: &str) -> Result<RuleSet, RulesError> {
        RuleSet::parse_with(text, true)
    }

    /// Parses rule-file text; compiles every part now when `eager`, else
    /// each part on first use (for text known to compile).
    fn parse_with(text: &str, eager: bool) -> Result<RuleSet, RulesError> {
        let mut file: File =
            toml::from_str(text).map_err(|e| RulesError(e.message().to_string()))?;
        let mut rules = Vec::new();
        // Per kind: the patterns, and for each its (rule, pattern) index.
        type Patterns = (Vec<String>, Vec<(usize, usize)>);
        let mut by_kind: BTreeMap<Kind, Patterns> = BTreeMap::new();
        for r in std::mem::take(&mut file.rule) {
            if rules.iter().any(|x: &Rule| x.id == r.id) {
                return Err(RulesError(format!("rule {:?} is defined twice", r.id)));
            }
            if (r.kind == Kind::Encoded) != r.decode.is_some() {
                return Err(RulesError(format!(
                    "rule {:?}: `decode` is required for kind \"encoded\" and allowed only there",
                    r.id
                )));
            }
            if r.patterns.is_empty() {
                return Err(RulesError(format!("rule {:?} has no patterns", r.id)));
            }
            let mut patterns = Vec::new();
            for (i, p) in r.patterns.into_iter().enumerate() {
                let pattern = Pattern::new(p.clone());
                if eager {
                    let re = compile(&p)
                        .map_err(|e| RulesError(format!("rule {:?}, pattern {i}: {e}", r.id)))?;
                    let empty = regex_syntax::parse(&p)
                        .is_ok_and(|hir| hir.properties().minimum_len() == Some(0));
                    if empty {
                        return Err(RulesError(format!(
                            "rule {:?}, pattern {i} {EMPTY_MATCH}",
                            r.id
                        )));
                    }
                    let _ = pattern.regex.set(re);
                }
                patterns.push(pattern);
                let entry = by_kind.entry(r.kind).or_default();
                entry.0.push(p);
                entry.1.push((rules.len(), i));
            }
            rules.push(Rule {
                id: r.id,
                kind: r.kind,
                action: r.action,
                description: r.description,
                patterns,
                decode: r.decode,
                report: r.report,
            });
        }
        // In file order, as the build script compiles the default rules'
        // automaton (`crate::automata`).
        let mut all_patterns = Vec::new();
        let mut all = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            if rule.kind == Kind::Decoded {
                continue; // never run on the output itself
            }
            for (i, pattern) in rule.patterns.iter().enumerate() {
                all_patterns.push(pattern.source.clone());
                all.push((index, i));
            }
        }
        let mut kinds = BTreeMap::new();
        for (kind, (patterns, owners)) in by_kind {
            let set = OnceLock::new();
            if eager {
                let _ = set.set(build_set(&patterns, &format!("{kind:?}"))?);
            }
            kinds.insert(
                kind,
                KindRules {
                    patterns,
                    set,
                    owners,
                },
            );
        }
        file.score
            .check()
            .map_err(|m| RulesError(format!("[score]: {m}")))?;
        let signals =
            crate::signals::Signals::compile(file.signal, file.score, all_patterns, eager)?;
        Ok(RuleSet {
            rules,
            kinds,
            all,
            signals,
        })
    }

    /// The rule with this id.
    pub fn get(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id)
    }
}

/// One rule pattern as its own regex (the `regex` crate's default limits).
fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(pattern)
}

fn build_set(patterns: &[String], what: &str) -> Result<RegexSet, RulesError> {
    regex::RegexSetBuilder::new(patterns)
        .size_limit(SET_SIZE_LIMIT)
        .dfa_size_limit(SET_SIZE_LIMIT)
        .build()
        .map_err(|e| RulesError(format!("the {what} rules do not compile together: {e}")))
}
