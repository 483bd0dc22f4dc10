//! The output guard: checks every tool output before anyone sees it.
//!
//! It enforces the policy's output size limit (`limits.output`, bytes of the
//! output's JSON), then walks every string in the output value and applies
//! the rules ([`rules`], shipped as `default-rules.toml`): instructions aimed
//! at the model, hidden text, exfiltration URLs, role and special tokens, and
//! encoded payloads ([`decode`]: base64/32/85, hex, percent, entities,
//! `\u` escapes, ROT13, reversed lines), whose decoded text is checked once
//! more. A rule rejects the output, redacts the matched span
//! (`[redacted:RULE-ID]`) or flags it. Quoted or introduced mentions of an
//! attack (a security article, a test's payload list) are told apart from
//! uses (see `mentioned`).
//!
//! Beside the phrase rules, [`signals`] detect the parts of an injection
//! separately (an addressee, a task switch, an imperative, a reference to the
//! user or to the reader's answer, urgency, secrecy, an out-of-place channel)
//! and score each window of a string; thresholds per action turn the score
//! into a rejection, a redaction or a flag (flag id [`SCORE_ID`]). Views of
//! the text undo letter spacing and fragments split across list items.
//! Beside both, a learned detector ([`model`]: logistic regression over
//! hashed word and character n-grams, trained on the development part of
//! the labelled data) scores each window of a string and rejects (id
//! [`model::MODEL_ID`]; on fewer than 24 words it flags, and a policy may
//! make it always reject or always flag) what it is confident is an
//! injection written as ordinary text, which no phrase or signal names.
//! [`spotlight`](mod@spotlight) marks an output that passes as data for the
//! agent.
//! [`eval`] measures the whole on labelled sets.
//!
//! Matching is linear-time (finite automata, no backtracking): for text that
//! normalisation leaves unchanged (most text), one lazy DFA over every rule
//! pattern says which rules hit (usually none: a search that stops at the
//! first match end) and another finds the signals; otherwise one
//! [`regex::RegexSet`] pass per rule kind finds which rules hit. Only the
//! rules that hit are run again for their spans; the bookkeeping per hit is
//! constant, so an output built to hit a rule everywhere costs time in
//! proportion to its size (see the worst-case rows of the guard benchmark),
//! and its report is cut to `MAX_FLAGS` flags.
//!
//! The default rules are compiled part by part on first use: loading them
//! costs under a millisecond, the first check builds the two automata (on
//! two threads; [`RuleSet::prepare`] does it ahead, e.g. while a tool runs)
//! from the NFAs the build compiled ([`automata`]), and a rule's own regex
//! or a kind's set is compiled only when needed.

#[doc(hidden)] // shared with the build script, not an interface
pub mod automata;
pub mod decode;
pub mod eval;
pub mod model;
pub mod rules;
pub mod signals;
pub mod spotlight;
mod views;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use unicode_normalization::UnicodeNormalization;

pub use rules::{Action, Kind, Report, RuleSet};
pub use signals::Thresholds;
pub use spotlight::{Spotlight, Spotlighted};

/// Most flags listed for one output: an output built to hit a rule a million
/// times gets a bounded report (every rule that hit is still named).
const MAX_FLAGS: usize = 256;
/// Longest excerpt of matched text in a flag, in characters.
const EXCERPT_CHARS: usize = 80;

/// One rule hit reported with a call's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Flag {
    /// The rule's id.
    pub rule: String,
    /// What the rule did: `reject`, `redact` or `flag`.
    pub action: String,
    /// JSON pointer into the output.
    pub pointer: String,
    /// A short excerpt of what matched (invisible characters escaped).
    pub excerpt: String,
}

/// The guard's verdict on an output.
#[derive(Debug, Clone, PartialEq)]
pub enum Guarded {
    /// The output may go to the caller, with these flags.
    Pass {
        /// The output, possibly redacted.
        output: Value,
        /// Rule hits.
        flags: Vec<Flag>,
    },
    /// The output was rejected.
    Rejected {
        /// Why, naming the rule or limit.
        message: String,
        /// Rule hits.
        flags: Vec<Flag>,
    },
}

/// What the guard applies to one tool's outputs (built from its policy).
#[derive(Debug, Clone)]
pub struct GuardConfig {
    /// The rules.
    pub rules: Arc<RuleSet>,
    /// Per-rule action overrides.
    pub actions: BTreeMap<String, Action>,
    /// Hosts the tool may reach: exfiltration URLs to them are not hits.
    pub net: Arc<dyn Destinations>,
    /// Largest output, bytes of JSON.
    pub output_limit: u64,
    /// Score thresholds that replace the rule file's (`[guard.score]`);
    /// unset fields keep the rule file's.
    pub score: Thresholds,
    /// How an output that passes is marked as data for the agent
    /// (`[guard] spotlight`), if at all.
    pub spotlight: Option<Spotlight>,
    /// The learned detector run beside the rules on every string
    /// (`[guard] model`; the shipped one by default), if any.
    pub model: Option<Arc<model::Model>>,
}

impl GuardConfig {
    /// The default rules, no overrides, no allowed hosts, this size limit.
    pub fn with_limit(output_limit: u64) -> GuardConfig {
        GuardConfig {
            rules: RuleSet::default_rules(),
            actions: BTreeMap::new(),
            net: Arc::new(NoDestinations),
            output_limit,
            score: Thresholds::default(),
            spotlight: None,
            model: Some(model::Model::shipped()),
        }
    }

    /// Lets the learned detector reject whatever its window's length, as a
    /// policy's `[guard.actions] "model.injection" = "reject"` does (by
    /// default a window of fewer than 24 words only flags).
    pub fn model_rejects(&mut self) {
        self.actions.insert(model::MODEL_ID.into(), Action::Reject);
    }
}

/// The hosts a tool may send data to (its policy's network allowlist):
/// a URL to one of them carries nothing out of bounds.
pub trait Destinations: std::fmt::Debug + Send + Sync {
    /// Whether `host:port` (host as written in a URL: a name or an IP
    /// literal, possibly bracketed) is allowed.
    fn allows(&self, host: &str, port: u16) -> bool;
}

/// No destination is allowed: every data-carrying URL is a third party.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDestinations;

impl Destinations for NoDestinations {
    fn allows(&self, _host: &str, _port: u16) -> bool {
        false
    }
}

/// Where in which text a rule hit.
struct Hit {
    rule: usize,
    action: Action,
    /// Byte span in the raw string, or in the normalised one.
    span: (usize, usize),
    in_normalised: bool,
    excerpt: String,
}

/// Checks an output: size first, then every string in it.
pub fn check(output: Value, config: &GuardConfig) -> Guarded {
    if let Some(message) = too_large(json_size(&output), "", config.output_limit) {
        return Guarded::Rejected {
            message,
            flags: Vec::new(),
        };
    }
    let mut output = output;
    let mut flags = Vec::new();
    let mut rejected: Vec<String> = Vec::new();
    walk(
        &mut output,
        &mut String::new(),
        config,
        &mut flags,
        &mut rejected,
    );
    let flags = cap_flags(flags);
    // A redaction's marker can be longer than what it hides (a 3-byte
    // override becomes `[redacted:hidden.bidi-override]`): what reaches the
    // agent is held to the limit too.
    if rejected.is_empty() && flags.iter().any(|f| f.action == "redact") {
        if let Some(message) =
            too_large(json_size(&output), "after redaction ", config.output_limit)
        {
            return Guarded::Rejected { message, flags };
        }
    }
    if rejected.is_empty() {
        Guarded::Pass { output, flags }
    } else {
        Guarded::Rejected {
            message: format!(
                "the output was rejected by the guard: {}",
                rejected.join("; ")
            ),
            flags,
        }
    }
}

/// The output marked as data for the agent, when the config asks for it
/// (`[guard] spotlight`). Call it on the output [`check`] let pass: the
/// rules see the output as the tool made it, the agent sees it marked.
pub fn spotlight(output: &Value, config: &GuardConfig) -> Option<spotlight::Spotlighted> {
    let mode = config.spotlight?;
    Some(match output {
        Value::String(s) => mode.apply(s),
        other => mode.apply(&other.to_string()),
    })
}

/// The error for an output of `size` bytes of JSON (`at` is "" for an exact
/// size, "at least " for a lower bound) when that is over `limit`.
pub fn too_large(size: u64, at: &str, limit: u64) -> Option<String> {
    (size > limit).then(|| {
        format!(
            "the output is {at}{size} bytes of JSON; the limit is {limit} bytes (limits.output)"
        )
    })
}

impl Guarded {
    /// The verdict as the value that may pass (`Err` with the rejection's
    /// message otherwise) and the flags either way.
    pub fn split(self) -> (Result<Value, String>, Vec<Flag>) {
        match self {
            Guarded::Pass { output, flags } => (Ok(output), flags),
            Guarded::Rejected { message, flags } => (Err(message), flags),
        }
    }
}

/// Keeps the first [`MAX_FLAGS`] flags and the first flag of every other rule
/// that hit, so the rule ids stay complete; a last `guard.omitted` flag
/// counts the rest.
fn cap_flags(flags: Vec<Flag>) -> Vec<Flag> {
    if flags.len() <= MAX_FLAGS {
        return flags;
    }
    let total = flags.len();
    let mut kept: Vec<Flag> = Vec::with_capacity(MAX_FLAGS + 16);
    for (i, flag) in flags.into_iter().enumerate() {
        if i < MAX_FLAGS || !kept.iter().any(|k| k.rule == flag.rule) {
            kept.push(flag);
        }
    }
    let omitted = total - kept.len();
    kept.push(Flag {
        rule: "guard.omitted".into(),
        action: "flag".into(),
        pointer: "/".into(),
        excerpt: format!("{omitted} more hits of the rules above are not listed"),
    });
    kept
}

fn walk(
    value: &mut Value,
    pointer: &mut String,
    config: &GuardConfig,
    flags: &mut Vec<Flag>,
    rejected: &mut Vec<String>,
) {
    match value {
        Value::String(s) => {
            if let Some(replacement) = check_string(s, pointer, config, flags, rejected) {
                *s = replacement;
            }
        }
        Value::Array(items) => {
            for (what, view) in views::array_views(items) {
                for extra in check_view(&view, what, config) {
                    let finding = (&extra.id, &extra.description, extra.action);
                    report(flags, rejected, pointer, finding, &extra.excerpt);
                }
            }
            for (i, item) in items.iter_mut().enumerate() {
                let len = pointer.len();
                let _ = write!(pointer, "/{i}"); // writing to a String cannot fail
                walk(item, pointer, config, flags, rejected);
                pointer.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                let len = pointer.len();
                pointer.push('/');
                if key.contains(['~', '/']) {
                    pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
                } else {
                    pointer.push_str(key);
                }
                walk(item, pointer, config, flags, rejected);
                pointer.truncate(len);
            }
        }
        _ => {}
    }
}

/// Scans one string; returns its redacted form when a redaction applies.
fn check_string(
    s: &str,
    pointer: &str,
    config: &GuardConfig,
    flags: &mut Vec<Flag>,
    rejected: &mut Vec<String>,
) -> Option<String> {
    let normalised = normalise(s);
    let signals = &config.rules.signals;
    let thresholds = signals.thresholds.overridden_by(&config.score);
    let (hits, scored, shapes) = if unchanged(s, &normalised) {
        // One pass finds the signals and which rules may match (most text
        // matches none, and then nothing else runs; each rule that may
        // match is tried by its own regex in `scan`).
        let mut matched = Vec::new();
        let (scored, shapes) = signals.scan(s, &thresholds, Some(&mut matched));
        let matched = matched.into_iter().map(|k| config.rules.all[k]).collect();
        let hits = scan(s, &normalised, config, true, Some(matched));
        (hits, scored, shapes)
    } else {
        let (scored, shapes) = signals.score_and_shapes(&normalised, &thresholds);
        (scan(s, &normalised, config, true, None), scored, shapes)
    };
    // The learned detector's best window, when it reaches the threshold,
    // adds to the score of the best signal window if it overlaps it and has
    // words enough for its probability to mean something.
    let window = config
        .model
        .as_ref()
        .and_then(|model| model.detect(&normalised));
    let by_model = match (&scored, &window) {
        (Some(scored), Some(window))
            if scored.span.0 < window.span.1
                && window.span.0 < scored.span.1
                && confident(window) =>
        {
            thresholds.model.unwrap_or(0)
        }
        _ => 0,
    };
    let mut extras = scored_extras(scored, &normalised, config, &thresholds, "", 0, by_model);
    for (what, view) in views::text_views(&normalised, shapes) {
        extras.extend(check_view(&view, what, config));
    }
    extras.extend(window.map(|window| learned(window, &normalised, config)));
    if hits.is_empty() && extras.is_empty() {
        return None;
    }
    let mut redact_raw = Vec::new();
    let mut redact_norm = Vec::new();
    for hit in &hits {
        let rule = &config.rules.rules[hit.rule];
        let finding = (&rule.id, &rule.description, hit.action);
        report(flags, rejected, pointer, finding, &hit.excerpt);
        match hit.action {
            Action::Redact if hit.in_normalised => redact_norm.push((hit.span, rule.id.as_str())),
            Action::Redact => redact_raw.push((hit.span, rule.id.as_str())),
            Action::Reject | Action::Flag => {}
        }
    }
    // The score and the views after the rules' own hits.
    for extra in &extras {
        let finding = (&extra.id, &extra.description, extra.action);
        report(flags, rejected, pointer, finding, &extra.excerpt);
        if extra.action == Action::Redact {
            let span = extra.span.unwrap_or((0, normalised.len()));
            redact_norm.push((span, extra.id.as_str()));
        }
    }
    if redact_raw.is_empty() && redact_norm.is_empty() {
        return None;
    }
    if redact_norm.is_empty() {
        return Some(redact(s, redact_raw));
    }
    // Spans in the normalised text: the redacted output is the normalised
    // text, and each raw span is found there as the normalised form of what
    // it covers. Normalisation changes lengths only locally, so where a span
    // lands is about the normalised length of the raw text before it; of the
    // copies of its piece within [`MAP_SLACK`] bytes of that place, the
    // nearest is taken (hidden tag text that repeats a visible phrase is
    // redacted where it was hidden, not where it was visible). A piece not
    // found there (a character composed with its neighbour) redacts the
    // whole string: its hidden text must not come out decoded. Spans that
    // normalisation removed (bidi, zero-width) need no redaction there. One
    // pass over the text in all.
    let text = normalised.into_owned();
    redact_raw.sort_by_key(|r| r.0);
    let (mut raw_at, mut approx) = (0, 0);
    for ((start, end), id) in redact_raw {
        approx += normalise(&s[raw_at.min(start)..start]).len();
        raw_at = raw_at.max(end);
        let piece = normalise(&s[start..end]);
        if piece.is_empty() {
            continue;
        }
        let from = floor_boundary(&text, approx.saturating_sub(MAP_SLACK));
        let to = ceil_boundary(&text, approx + piece.len() + MAP_SLACK);
        let nearest = text[from..to]
            .match_indices(piece.as_ref())
            .map(|(i, _)| from + i)
            .min_by_key(|&at| at.abs_diff(approx));
        match nearest {
            Some(at) => redact_norm.push(((at, at + piece.len()), id)),
            None => redact_norm.push(((0, text.len()), id)),
        }
        approx += piece.len();
    }
    Some(redact(&text, redact_norm))
}

/// How far (bytes) from where a raw span should land in the normalised text
/// its piece is looked for: normalising the text before it in pieces (at
/// span edges) rather than whole shifts lengths by at most a few characters
/// (a composition, a look-alike folded in a word the edge splits).
const MAP_SLACK: usize = 64;

/// Records a finding (its id, description and action) at `pointer` (`/`
/// for the output itself): its flag, and when it rejects, why, once per id
/// and description.
fn report(
    flags: &mut Vec<Flag>,
    rejected: &mut Vec<String>,
    pointer: &str,
    (id, description, action): (&String, &String, Action),
    excerpt: &str,
) {
    flags.push(Flag {
        rule: id.clone(),
        action: action.as_str().into(),
        pointer: if pointer.is_empty() { "/" } else { pointer }.into(),
        excerpt: excerpt.into(),
    });
    if action == Action::Reject {
        let why = format!("{id} ({description})");
        if !rejected.contains(&why) {
            rejected.push(why);
        }
    }
}

/// A finding that is not one rule's match: a score over signals, or a rule
/// that hit a view of the text (letter-spaced, joined fragments).
struct Extra {
    id: String,
    description: String,
    action: Action,
    /// Span in the normalised text; `None` for the whole string.
    span: Option<(usize, usize)>,
    excerpt: String,
}

/// The flag id of a score over signals.
pub const SCORE_ID: &str = "signal.score";

/// Fewest words (as the model counts them) in the learned detector's window
/// for its finding to stand on its own: to reject by default, and to add to
/// a signal window's score ([`signals::Thresholds::model`]). Three times the
/// fewest it scores at all ([`model::MIN_WORDS`]): on shorter text its
/// probability rests on a handful of words. It scores a three-line code
/// answer ("Use the following code:" and a `requests.post`) above its
/// threshold, not the same answer in two more sentences, and of the benign
/// check sets' texts it scores above its threshold, the short ones (a
/// terms-of-service line, a marketing line) only flag.
const CONFIDENT_WORDS: usize = 3 * model::MIN_WORDS;

/// Whether the learned detector's window holds [`CONFIDENT_WORDS`] words or
/// more: its finding then rejects by default and adds to an overlapping
/// signal window's score.
fn confident(window: &model::Window) -> bool {
    window.words >= CONFIDENT_WORDS
}

/// What a view adds to its score: splitting text so that no piece matches
/// is itself a sign of an injection.
const VIEW_BONUS: u32 = 2;

/// A best window's score as a finding, when `thresholds` (the rules' own,
/// as the policy overrides them) call for an action. `what` prefixes the
/// excerpt (for views). `bonus` is added to the score, and so is
/// `by_model`, what the learned detector adds to it
/// ([`signals::Thresholds::model`]), named among the signals when it adds
/// anything.
fn scored_extras(
    scored: Option<signals::Scored>,
    text: &str,
    config: &GuardConfig,
    thresholds: &signals::Thresholds,
    what: &str,
    bonus: u32,
    by_model: u32,
) -> Vec<Extra> {
    let signals = &config.rules.signals;
    let Some(scored) = scored else {
        return Vec::new();
    };
    let total = scored.score.saturating_add(bonus).saturating_add(by_model);
    let Some(action) = thresholds.action(total) else {
        return Vec::new();
    };
    let names: Vec<&str> = scored
        .signals
        .iter()
        .map(|&i| signals.signals[i].id.as_str())
        .chain((by_model > 0).then_some(model::MODEL_ID))
        .collect();
    let window = &text[scored.span.0..scored.span.1];
    let extra = Extra {
        id: SCORE_ID.into(),
        description: format!(
            "signals of an injection scored {total}: {}",
            names.join(", ")
        ),
        action,
        span: Some(scored.span),
        excerpt: format!(
            "{what}score {total} ({}): {}",
            names.join("+"),
            excerpt(window)
        ),
    };
    vec![extra]
}

/// The learned detector's finding on a (normalised) string: its best
/// `window`, which reached the model's threshold. By default it rejects
/// when the window holds [`CONFIDENT_WORDS`] words or more and flags a
/// shorter one (short ordinary notices score high: see the README); a
/// policy makes it always `reject` or always `flag` (`[guard.actions]
/// "model.injection"`). It never redacts, as only its best window is known;
/// a redact override rejects.
fn learned(window: model::Window, text: &str, config: &GuardConfig) -> Extra {
    let p = window.probability();
    let action = match config.actions.get(model::MODEL_ID) {
        Some(Action::Reject | Action::Redact) => Action::Reject,
        Some(Action::Flag) => Action::Flag,
        None if confident(&window) => Action::Reject,
        None => Action::Flag,
    };
    Extra {
        id: model::MODEL_ID.into(),
        description: "the learned detector scored a window of it as an injection".into(),
        action,
        span: Some(window.span),
        excerpt: format!("p {p:.3}: {}", excerpt(&text[window.span.0..window.span.1])),
    }
}

/// The rules and the score applied to a view of an output (its letter-spaced
/// runs collapsed, its fragments joined). A view has no spans in the output,
/// so a redaction there rejects.
fn check_view(view: &str, what: &str, config: &GuardConfig) -> Vec<Extra> {
    let norm = normalise(view);
    let rules = &config.rules;
    // A view that normalisation leaves as it is (most): the one pass finds
    // its signals and its rules (but the encoded ones: a view is not
    // decoded), and only the small set of the `decoded` kind runs besides.
    let thresholds = rules.signals.thresholds.overridden_by(&config.score);
    let mut scored = None;
    let mut matched = None;
    if unchanged(view, &norm) {
        let mut found = Vec::new();
        scored = Some(rules.signals.scan(view, &thresholds, Some(&mut found)).0);
        let mut pairs: Vec<(usize, usize)> = found
            .into_iter()
            .map(|k| rules.all[k])
            .filter(|&(r, _)| rules.rules[r].kind != Kind::Encoded)
            .collect();
        if let Some(decoded) = rules.kinds.get(&Kind::Decoded) {
            pairs.extend(
                decoded
                    .set()
                    .matches(view)
                    .iter()
                    .map(|i| decoded.owners[i]),
            );
        }
        matched = Some(pairs);
    }
    let mut out: Vec<Extra> = Vec::new();
    for hit in scan(view, &norm, config, false, matched) {
        let rule = &config.rules.rules[hit.rule];
        if hit.action == Action::Flag || !rule.kind.normalised() {
            continue;
        }
        if out.iter().any(|e| e.id == rule.id) {
            continue;
        }
        out.push(Extra {
            id: rule.id.clone(),
            description: format!("{} (in {what})", rule.description),
            action: Action::Reject,
            span: None,
            excerpt: format!("{what}: {}", hit.excerpt),
        });
    }
    let what = format!("{what}: ");
    let scored = scored.unwrap_or_else(|| rules.signals.score_and_shapes(&norm, &thresholds).0);
    let extras = scored_extras(scored, &norm, config, &thresholds, &what, VIEW_BONUS, 0);
    for mut e in extras {
        if e.action != Action::Flag {
            e.action = Action::Reject;
        }
        e.span = None;
        out.push(e);
    }
    out
}

/// Replaces spans (merged where they overlap) with `[redacted:ID]`.
fn redact(text: &str, mut spans: Vec<((usize, usize), &str)>) -> String {
    spans.sort_by_key(|s| s.0);
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for ((start, end), id) in spans {
        if start < at {
            at = at.max(end);
            continue;
        }
        out.push_str(&text[at..start]);
        out.push_str(&format!("[redacted:{id}]"));
        at = end;
    }
    out.push_str(&text[at..]);
    out
}

/// All rule hits in one string. `decode` is true for the output's own text
/// (encoded blobs are decoded and their text scanned once more) and false
/// for decoded text (which `decoded` rules also see, and which is not decoded
/// again). `matched` lists the (rule, pattern) pairs that may match when the
/// caller found them already (the one pass over text that normalisation
/// left unchanged, [`RuleSet::all`]: a superset, as each pair's regex is
/// run here); else each kind's set finds those that match.
fn scan(
    raw: &str,
    normalised: &str,
    config: &GuardConfig,
    decode: bool,
    matched: Option<Vec<(usize, usize)>>,
) -> Vec<Hit> {
    let rules = &config.rules;
    let mut hits = Vec::new();
    let unchanged = unchanged(raw, normalised);
    let mut matched = match matched {
        Some(matched) => matched,
        None => {
            let mut matched = Vec::new();
            for (kind, kind_rules) in &rules.kinds {
                let skip = if decode { Kind::Decoded } else { Kind::Encoded };
                if *kind == skip {
                    continue;
                }
                let text = if kind.normalised() { normalised } else { raw };
                matched.extend(
                    kind_rules
                        .set()
                        .matches(text)
                        .iter()
                        .map(|i| kind_rules.owners[i]),
                );
            }
            matched
        }
    };
    // In file order: hex rules before base64 ones, so a blob is decoded once.
    matched.sort_unstable();
    // Bookkeeping that keeps the work linear however many matches there are.
    let mut exfil_spans: BTreeMap<usize, usize> = BTreeMap::new(); // start -> end, disjoint
    let mut tried: HashSet<(usize, (usize, usize))> = HashSet::new(); // (rule, span)
    let mut reported_blobs: HashSet<(usize, usize)> = HashSet::new();
    let mut decoded_spans: BTreeMap<usize, usize> = BTreeMap::new(); // start -> end, disjoint
    for (rule_index, pattern_index) in matched {
        let rule = &rules.rules[rule_index];
        let kind = rule.kind;
        let text = if kind.normalised() { normalised } else { raw };
        let action = config.actions.get(&rule.id).copied().unwrap_or(rule.action);
        let re = rule.patterns[pattern_index].regex();
        match (kind, rule.decode) {
            (Kind::Exfiltration, _) => {
                // The DFAs find each match; its groups are resolved (a
                // third pass, over the match only) when its URL may carry
                // data at all: most links carry none.
                let has_url = re.capture_names().any(|n| n == Some("url"));
                // Every match has a `url` (no group is optional).
                let always_url = has_url && re.static_captures_len() == Some(re.captures_len());
                for m in re.find_iter(text) {
                    let whole = (m.start(), m.end());
                    if overlaps(&exfil_spans, whole) {
                        continue; // an image is also a link: one hit
                    }
                    if always_url && !may_carry_data(m.as_str()) {
                        continue;
                    }
                    let url = if has_url {
                        re.captures_at(text, m.start())
                            .and_then(|caps| caps.name("url"))
                            .map(|u| u.as_str())
                    } else {
                        None
                    };
                    // Never a mere mention: a renderer loads a quoted
                    // image as readily as any other.
                    let hit = match url {
                        Some(url) => exfiltrates(url, &*config.net),
                        None => true,
                    };
                    if hit {
                        exfil_spans.insert(whole.0, whole.1);
                        hits.push(Hit {
                            rule: rule_index,
                            action,
                            span: whole,
                            in_normalised: false,
                            excerpt: excerpt(m.as_str()),
                        });
                    }
                }
            }
            (Kind::Encoded, Some(decoder)) => {
                let mut line_end = 0;
                for m in re.find_iter(text) {
                    let span = if decoder.whole_line() {
                        if m.start() < line_end {
                            continue; // this line is done
                        }
                        let line = line_around(text, m.start(), m.end());
                        line_end = line.1;
                        line
                    } else {
                        (m.start(), m.end())
                    };
                    if overlaps(&decoded_spans, span)
                        || reported_blobs.contains(&span)
                        || !tried.insert((rule_index, span))
                    {
                        continue; // one blob, decoded once, reported once
                    }
                    let blob = &text[span.0..span.1];
                    let mut inner_hits = Vec::new();
                    if let Some(decoded) = decoder.decode(blob) {
                        decoded_spans.insert(span.0, span.1);
                        let norm = normalise(&decoded);
                        for inner in scan(&decoded, &norm, config, false, None) {
                            if rules.rules[inner.rule].kind.normalised() {
                                inner_hits.push(Hit {
                                    rule: inner.rule,
                                    action: inner.action,
                                    span,
                                    in_normalised: false,
                                    excerpt: format!("decoded: {}", inner.excerpt),
                                });
                            }
                        }
                    }
                    if rule.report == Report::Blob || !inner_hits.is_empty() {
                        reported_blobs.insert(span);
                        hits.push(Hit {
                            rule: rule_index,
                            action,
                            span,
                            in_normalised: false,
                            excerpt: excerpt(blob),
                        });
                    }
                    hits.extend(inner_hits);
                }
            }
            _ => {
                for m in re.find_iter(text) {
                    if is_flag_emoji(m.as_str()) {
                        continue;
                    }
                    let examined = matches!(kind, Kind::Instruction | Kind::Token);
                    if examined && mentioned(text, m.start(), m.end(), kind) {
                        continue; // a mention of an attack, not one
                    }
                    hits.push(Hit {
                        rule: rule_index,
                        action,
                        span: (m.start(), m.end()),
                        in_normalised: kind.normalised() && !unchanged,
                        excerpt: excerpt(m.as_str()),
                    });
                }
            }
        }
    }
    hits
}

/// Whether normalisation left `raw` as it was.
fn unchanged(raw: &str, normalised: &str) -> bool {
    std::ptr::eq(raw, normalised) || raw == normalised
}

/// Whether `span` overlaps one of a set of disjoint spans (start -> end).
fn overlaps(spans: &BTreeMap<usize, usize>, span: (usize, usize)) -> bool {
    spans
        .range(..span.1)
        .next_back()
        .is_some_and(|(_, &end)| end > span.0)
}

/// The byte span of the line holding `start..end`.
fn line_around(text: &str, start: usize, end: usize) -> (usize, usize) {
    let from = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let to = text[end..].find('\n').map_or(text.len(), |i| end + i);
    (from, to)
}

/// Whether a URL sends data to a host the policy does not allow: it has a
/// query, or a long path (data encoded into path segments). Nothing else in
/// the text vouches for a host: a mail from `news@shop.example` with a pixel
/// on `shop.example` is let through only by a policy allowing it, since an
/// attacker who mails the user writes the sender's address too.
fn exfiltrates(url: &str, net: &dyn Destinations) -> bool {
    exfiltrates_as_written(url, net)
        || rendered_url(url).is_some_and(|rendered| exfiltrates_as_written(&rendered, net))
}

/// `url` as a renderer reads it, when that differs from the text: HTML
/// character references decoded (`&#63;` is `?`, `&#x3a;` and `&colon;` are
/// `:`) and, as CommonMark reads a destination, a backslash before ASCII
/// punctuation dropped (`https\://`). Both readings are judged.
fn rendered_url(url: &str) -> Option<String> {
    if !url.contains(['&', '\\']) {
        return None;
    }
    const NAMED: &[(&str, char)] = &[
        ("amp", '&'),
        ("quot", '"'),
        ("lt", '<'),
        ("gt", '>'),
        ("colon", ':'),
        ("quest", '?'),
        ("equals", '='),
        ("sol", '/'),
        ("period", '.'),
        ("num", '#'),
        ("percnt", '%'),
        ("commat", '@'),
        ("lpar", '('),
        ("rpar", ')'),
        ("plus", '+'),
    ];
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(c) = rest.chars().next() {
        if c == '\\' {
            if let Some(p) = rest[1..].chars().next().filter(char::is_ascii_punctuation) {
                out.push(p);
                rest = &rest[1 + p.len_utf8()..];
                continue;
            }
        } else if c == '&' {
            let reference = rest[1..].split_once(';').and_then(|(name, _)| {
                let decoded = match name.strip_prefix('#') {
                    Some(n) => decode::reference_code(n).and_then(char::from_u32),
                    None => NAMED.iter().find(|(k, _)| *k == name).map(|(_, v)| *v),
                };
                decoded
                    .filter(|_| name.len() <= 10)
                    .map(|d| (d, name.len() + 2))
            });
            if let Some((decoded, len)) = reference {
                out.push(decoded);
                rest = &rest[len..];
                continue;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    (out != url).then_some(out)
}

/// Whether `url`, read as written, sends data to a host the policy does
/// not allow.
fn exfiltrates_as_written(url: &str, net: &dyn Destinations) -> bool {
    // Browsers read any run of slashes and backslashes after an http(s)
    // scheme, none included, as the `//` (`https:/h`, `https:\\h`,
    // `https:h` all go to `h`).
    // Only a literal scheme: `https&#58;//h:8443/…` has no colon before its
    // port, and is judged as decoded.
    let Some((scheme, rest)) = url.split_once(':') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("https") && !scheme.eq_ignore_ascii_case("http") {
        return false;
    }
    let rest = rest.trim_start_matches(['/', '\\']);
    // A backslash ends the authority for a browser, not for RFC 3986
    // (curl, most HTTP libraries): the URL exfiltrates when either reading
    // sends its data to a host the policy does not allow.
    let browser = authority_end(rest);
    let rfc = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    // One reading when they agree (no backslash): most URLs.
    std::iter::once(browser)
        .chain((rfc != browser).then_some(rfc))
        .any(|end| {
            let (authority, path) = rest.split_at(end);
            let (host, port) = host_and_port(authority);
            let port = port.unwrap_or(if scheme.eq_ignore_ascii_case("https") {
                443
            } else {
                80
            });
            !net.allows(host, port) && carries_data(path, false)
        })
}

/// Where a URL's authority ends for a browser in what follows its `://`:
/// at the first `/`, `?`, `#` or `\` (browsers read a backslash as a slash
/// in http and https URLs, so `https://evil.example\@allowed.example/` goes
/// to `evil.example`).
fn authority_end(rest: &str) -> usize {
    rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len())
}

/// A URL authority's host (an IPv6 literal in its brackets) and port, the
/// user information before an `@` dropped; the port is `None` when none is
/// given or it is not a number.
fn host_and_port(authority: &str) -> (&str, Option<u16>) {
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = match host_port.find(']') {
        Some(close) if host_port.starts_with('[') => {
            let (host, after) = host_port.split_at(close + 1);
            (host, after.strip_prefix(':'))
        }
        _ => match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    (host, port.and_then(|p| p.parse().ok()))
}

/// Whether a URL's path and query (what follows its host) carry data: a
/// query value that is data rather than a setting, a template placeholder
/// (`{secret}`, `[DATA]`, `<DATA`, `$TOKEN`) or key=value in the path, or a
/// long path segment; `?branch=main` or `?v=4.2` carry none. `nested`: this
/// is a URL given as a query value, whose own values are not followed
/// further and whose fragment counts (it is sent as part of the value).
fn carries_data(path: &str, nested: bool) -> bool {
    let path = if nested {
        path
    } else {
        path.split('#').next().unwrap_or_default()
    };
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let data_value = query
        .split('&')
        .any(|kv| data_value(kv.split_once('=').map_or(kv, |(_, v)| v), nested));
    let placeholder =
        query.contains(PLACEHOLDER_MARKS) || path.contains(PLACEHOLDER_MARKS) || path.contains('=');
    data_value || placeholder || path.split('/').any(encoded_segment)
}

/// Whether a link's URL may carry data ([`exfiltrates`] can hold): a
/// necessary condition, checked on the whole match (which holds the URL at
/// its end) from its first `http:`/`https:` (colon as written or encoded), so that most links need no capture
/// groups. Data needs a query or a `=` (`?`, `=`), a placeholder mark, or a
/// run of 24 bytes that none of [`encoded_segment`]'s separators breaks
/// (nor `/` or `#`, which a path segment cannot hold).
fn may_carry_data(matched: &str) -> bool {
    // From the first `http` followed by a colon as written or encoded (a
    // link's text before it only lengthens the tail, which is safe; a title
    // after it may hold a `://` of its own).
    let bytes = matched.as_bytes();
    let Some(at) = (0..bytes.len().saturating_sub(4)).find(|&i| {
        let mut after = i + 4;
        if bytes[i..after].eq_ignore_ascii_case(b"http") {
            after += usize::from(
                bytes
                    .get(after)
                    .is_some_and(|b| b.eq_ignore_ascii_case(&b's')),
            );
            matches!(bytes.get(after), Some(b':' | b'&' | b'\\'))
        } else {
            false
        }
    }) else {
        return true;
    };
    let tail = &matched[at..];
    // A character reference or a backslash escape can join short runs into
    // a long one once decoded (`…&#81;…`): those are left to the full check.
    if tail.contains(['&', '\\']) {
        return true;
    }
    tail.contains(['?', '='])
        || tail.contains(PLACEHOLDER_MARKS)
        || tail
            .split(|c| c == '/' || c == '#' || WORD_SEPARATORS.contains(&c))
            .any(|run| run.len() >= ENCODED_RUN)
}

/// Marks of a template placeholder in a URL (`{secret}`, `[DATA]`, `<DATA`,
/// `$TOKEN`): where they stand, the URL carries data.
const PLACEHOLDER_MARKS: [char; 7] = ['{', '}', '[', ']', '<', '>', '$'];
/// Separators that break a URL path segment into words.
const WORD_SEPARATORS: [char; 6] = ['-', '_', '.', '~', '+', '%'];
/// Bytes of the shortest unbroken run that makes a path segment data.
const ENCODED_RUN: usize = 24;

/// Whether a query value carries data rather than a setting: decoded, it
/// holds a token (a run of letters and digits) of 16 characters or more, or
/// of 12 or more that mixes letters and digits (a hash, an encoded blob), it
/// is a template variable in capitals, or it is a sentence (five words or
/// more). `branch=main`, `style=for-the-badge`, `query=workflow%3ACI`,
/// `repo=winnow-rs/winnow`, `labelColor=555555` and `labelColor=6A7EC2` are
/// settings.
///
/// A value that is itself a URL (a badge service's `url=`) is judged without
/// its host's name, so that `url=https://raw.githubusercontent.com/…/v2.json`
/// is a setting: the host must be a plain name (letters, digits, dots,
/// hyphens, a port), none of whose labels mixes 12 or more letters and
/// digits as a blob does; everything after it (the whole value reaches the
/// outer host, fragment included) is judged as a URL's path and query are
/// ([`carries_data`], one level deep: `nested` says this value is already
/// inside one), its path's words must not mix 12 letters and digits (a
/// commit's hash excepted), and its query and fragment are judged as any
/// value is.
fn data_value(value: &str, nested: bool) -> bool {
    let decoded = decode::Decoder::Percent
        .decode(value)
        .unwrap_or_else(|| value.to_string());
    if !nested {
        let url = ["https://", "http://"].iter().find_map(|scheme| {
            decoded
                .get(..scheme.len())
                .filter(|s| s.eq_ignore_ascii_case(scheme))
                .map(|s| &decoded[s.len()..])
        });
        if let Some(rest) = url {
            let (authority, after) = rest.split_at(authority_end(rest));
            let host = match host_and_port(authority) {
                (host, Some(_)) if !authority.contains('@') => host,
                _ => authority,
            };
            let plain_host = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
            // Its path's words may be long (`internationalization`, a
            // commit's hash) but not blob-like; its query and fragment are
            // values.
            let (path, values) = after.split_at(after.find(['?', '#']).unwrap_or(after.len()));
            return !plain_host
                || host
                    .split(['.', '-'])
                    .any(|label| blob_token(label, usize::MAX))
                || path
                    .split(|c: char| !c.is_alphanumeric())
                    .any(|word| blob_token(word, usize::MAX) && !content_hash(word))
                || carries_data(after, true)
                || plain_data(values);
        }
    }
    plain_data(&decoded)
}

/// Whether a decoded query value (or what follows a URL value's host) holds
/// a blob-like token, a template variable in capitals or a sentence (see
/// [`data_value`]).
fn plain_data(decoded: &str) -> bool {
    let token = decoded
        .split(|c: char| !c.is_alphanumeric())
        .any(|t| blob_token(t, 16));
    // A template variable (`SECRET_TOKEN`, `CONVERSATION`) stands for data;
    // a short hex number in capitals (a colour, `6A7EC2`) is a setting.
    let hex_number = decoded.len() <= 8
        && decoded.bytes().all(|b| b.is_ascii_hexdigit())
        && decoded.bytes().any(|b| b.is_ascii_digit());
    let variable = decoded.len() >= 4
        && !hex_number
        && decoded
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        && decoded.bytes().filter(u8::is_ascii_uppercase).count() >= 3
        && (decoded.contains('_') || decoded.len() >= 6);
    token || variable || decoded.split_whitespace().count() >= 5
}

/// Whether `word` is a 40- or 64-digit hex commit or content hash (a name,
/// not data, in a URL's path).
fn content_hash(word: &str) -> bool {
    matches!(word.len(), 40 | 64) && word.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether a run of letters and digits looks like data: `long` characters
/// or more, or 12 or more that mix letters and digits (a hash, a blob).
fn blob_token(t: &str, long: usize) -> bool {
    let n = t.chars().count();
    let mixed = t.chars().any(|c| c.is_ascii_digit()) && t.chars().any(char::is_alphabetic);
    n >= long || (n >= 12 && mixed)
}

/// Whether a URL path segment looks like data encoded into it: longer than
/// 32 bytes with a run of at least 24 bytes that no separator (`-`, `_`,
/// `.`, `~`, `+`, `%`) breaks into words, and not a 40- or 64-digit hex
/// commit or content hash. `opentelemetry-semantic-conventions`, a draft's
/// name or a badge's label are words; a base64 blob is not.
fn encoded_segment(seg: &str) -> bool {
    if seg.len() <= 32 {
        return false;
    }
    !content_hash(seg)
        && seg
            .split(WORD_SEPARATORS)
            .any(|run| run.len() >= ENCODED_RUN)
}

/// A subdivision-flag emoji (🏴 followed by up to 7 tag characters and
/// CANCEL TAG), the one ordinary use of tag characters.
fn is_flag_emoji(m: &str) -> bool {
    let Some(tags) = m
        .strip_prefix('\u{1F3F4}')
        .and_then(|t| t.strip_suffix('\u{E007F}'))
    else {
        return false;
    };
    // A region code: tag letters a-z and digits, 1 to 7 of them (gbeng).
    let count = tags.chars().count();
    (1..=7).contains(&count)
        && tags
            .chars()
            .all(|c| matches!(c, '\u{E0030}'..='\u{E0039}' | '\u{E0061}'..='\u{E007A}'))
}

/// Quotation marks that open or close a quoted phrase.
const QUOTES: [char; 12] = [
    '"', '\'', '`', '\u{201C}', '\u{201D}', '\u{2018}', '\u{2019}', '\u{AB}', '\u{BB}', '\u{201E}',
    '\u{300C}', '\u{300D}',
];

/// Words that introduce a quoted example of an attack ("phrases such as
/// '…'", "类似“…”"), looked for in the 120 bytes before the quote.
const MENTIONS: [&str; 34] = [
    "such as",
    "like",
    "e.g",
    "phrase",
    "payload",
    "attack",
    "string",
    "example",
    "wrote",
    "says",
    "said",
    "contain",
    "text",
    "pattern",
    "inject",
    "claim",
    "variant",
    "wie",
    "z. b",
    "etwa",
    "comme",
    "exemple",
    "du type",
    "como",
    "ejemplo",
    "frase",
    "такие как",
    "например",
    "вроде",
    "фраз",
    "如",
    "类似",
    "例如",
    "ような",
];

/// Words right before an unquoted token or URL that make it an example
/// ("role tokens such as <|im_start|>", "an image like ![a](…)").
const INLINE_MENTIONS: [&str; 12] = [
    "such as",
    "like",
    "for instance",
    "for example",
    "e.g.",
    "i.e.",
    "token",
    "tokens",
    "strings",
    "markers",
    "например",
    "例如",
];

/// Whether a match is a mention of an attack rather than one: a phrase in
/// quotation marks introduced as an example or closed right after it, an
/// example introduced inline, or a special token written as a string literal
/// in code (`"<|im_end|>"`).
fn mentioned(text: &str, start: usize, end: usize, kind: Kind) -> bool {
    let before = &text[floor_boundary(text, start.saturating_sub(120))..start];
    let mut back = before
        .chars()
        .rev()
        .skip_while(|c| *c == ' ' || *c == '\u{A0}');
    let opened = back.next().filter(|c| QUOTES.contains(c));
    // A quoted phrase: closed again on the same line, soon after the match
    // (a short example, not a payload that goes on to give orders).
    let after = &text[end..ceil_boundary(text, end + 100)];
    let closed = after
        .split('\n')
        .next()
        .unwrap_or_default()
        .contains(QUOTES);
    if opened.is_some() && closed {
        let prefix = &before
            [..before.trim_end_matches([' ', '\u{A0}']).len() - opened.map_or(0, char::len_utf8)];
        let lower = prefix.to_lowercase();
        // Introduced as an example, or an enclosed phrase in prose ('do not
        // tell the user'); not a value in data (`"note": "Ignore …"`).
        let in_data = prefix.trim_end().ends_with([':', '=', '[', ',', '(', '{']);
        if MENTIONS.iter().any(|m| lower.contains(m)) || !in_data {
            return true;
        }
    }
    if kind == Kind::Instruction {
        return false;
    }
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let near = &before[floor_boundary(before, before.len().saturating_sub(24)).max(line_start)..];
    let near = near.to_lowercase();
    if INLINE_MENTIONS.iter().any(|m| near.contains(m)) {
        return true;
    }
    // A token as a string literal in code: closed by a quote right after it
    // (at most a role name and an escaped line break in between).
    if kind == Kind::Token && opened.is_some() {
        let rest = text[end..].trim_start_matches(|c: char| c.is_ascii_alphabetic());
        let rest = rest
            .strip_prefix("\\n")
            .or(rest.strip_prefix('\n'))
            .unwrap_or(rest);
        return rest.starts_with(QUOTES);
    }
    false
}

/// The largest char boundary at or below `at`.
fn floor_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// The smallest char boundary at or above `at` (at most the text's length).
pub(crate) fn ceil_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

/// The text instruction and token rules see: escaped line breaks and tabs
/// (`\\n`, `\\r`, `\\t` as two characters, as in JSON or iCalendar text)
/// read as the whitespace they stand for, Unicode tag characters decoded to
/// ASCII, zero-width and bidi controls removed, NFKC, and confusable letters
/// folded to Latin inside words that mix scripts. Text that needs none of
/// this is returned as is (borrowed).
pub fn normalise(s: &str) -> Cow<'_, str> {
    let unescaped = if has_whitespace_escapes(s) {
        Cow::Owned(
            s.replace("\\n", "\n")
                .replace("\\r", "\r")
                .replace("\\t", "\t"),
        )
    } else {
        Cow::Borrowed(s)
    };
    if unescaped.is_ascii() || already_normal(&unescaped) {
        return unescaped;
    }
    let cleaned: String = unescaped
        .chars()
        .filter_map(|c| match c {
            '\u{E0020}'..='\u{E007E}' => char::from_u32(c as u32 - 0xE0000),
            c if removed(c) => None,
            c => Some(c),
        })
        .nfkc()
        .collect();
    Cow::Owned(fold_confusables(&cleaned))
}

/// Characters normalisation removes (tag characters it first decodes when
/// they stand for ASCII): Unicode tags, zero-width characters, soft hyphen,
/// bidi marks, embeddings, overrides and isolates, invisible operators,
/// variation selectors, the combining grapheme joiner and Hangul fillers:
/// everything that shows nothing and can split a word.
fn removed(c: char) -> bool {
    matches!(c, '\u{E0000}'..='\u{E007F}' | '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}'
        | '\u{FEFF}' | '\u{180E}' | '\u{00AD}' | '\u{061C}' | '\u{202A}'..='\u{202E}'
        | '\u{2066}'..='\u{2069}' | '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}'
        | '\u{034F}' | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}')
}

/// Whether `s` holds a backslash escape of a line break or tab.
fn has_whitespace_escapes(s: &str) -> bool {
    s.contains('\\')
        && s.as_bytes()
            .windows(2)
            .any(|w| w[0] == b'\\' && matches!(w[1], b'n' | b'r' | b't'))
}

/// Whether normalisation would leave `s` unchanged: no tag, zero-width or
/// bidi characters, no Greek or Cyrillic letters, and already NFKC (quick check).
///
/// Only the non-ASCII characters are examined (ASCII is always normal). Leaving
/// out the ASCII between them can only make the NFKC quick check answer
/// "maybe", which sends the text through full normalisation: slower, never wrong.
fn already_normal(s: &str) -> bool {
    // Greek and Cyrillic letters (and Latin script ɡ) may need folding.
    let special =
        non_ascii(s).any(|c| removed(c) || matches!(c, '\u{0370}'..='\u{052F}' | '\u{0261}'));
    !special
        && unicode_normalization::is_nfkc_quick(non_ascii(s))
            == unicode_normalization::IsNormalized::Yes
}

/// The non-ASCII characters of `s`, skipping ASCII runs a word at a time.
fn non_ascii(s: &str) -> impl Iterator<Item = char> + '_ {
    let bytes = s.as_bytes();
    let mut at = 0;
    std::iter::from_fn(move || {
        while at + 8 <= bytes.len() {
            let word = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
            if word & 0x8080_8080_8080_8080 != 0 {
                break;
            }
            at += 8;
        }
        while at < bytes.len() && bytes[at] < 0x80 {
            at += 1;
        }
        let c = s[at..].chars().next()?;
        at += c.len_utf8();
        Some(c)
    })
}

/// Folds look-alike letters (Cyrillic, Greek) to Latin inside words that also
/// contain ASCII letters, so "іgnore" (Cyrillic і) reads "ignore" while
/// Russian and Greek words stay as they are.
fn fold_confusables(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let mixed = word.chars().any(|c| c.is_ascii_alphabetic())
            && word.chars().any(|c| confusable(c).is_some());
        if mixed {
            out.extend(word.chars().map(|c| confusable(c).unwrap_or(c)));
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in s.chars() {
        if c.is_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

fn confusable(c: char) -> Option<char> {
    Some(match c {
        'а' | 'α' => 'a',
        'А' | 'Α' => 'A',
        'в' => 'b',
        'В' | 'Β' => 'B',
        'с' | 'ϲ' => 'c',
        'С' | 'Ϲ' => 'C',
        'ԁ' => 'd',
        'е' | 'ε' => 'e',
        'Е' | 'Ε' => 'E',
        'ɡ' => 'g',
        'һ' => 'h',
        'Н' | 'Η' => 'H',
        'і' | 'ι' | 'ı' => 'i',
        'І' | 'Ι' => 'I',
        'ј' => 'j',
        'Ј' => 'J',
        'к' | 'κ' => 'k',
        'К' | 'Κ' => 'K',
        'М' | 'Μ' => 'M',
        'п' => 'n',
        'Ν' => 'N',
        'о' | 'ο' => 'o',
        'О' | 'Ο' => 'O',
        'р' | 'ρ' => 'p',
        'Р' | 'Ρ' => 'P',
        'ԛ' => 'q',
        'г' => 'r',
        'ѕ' => 's',
        'Ѕ' => 'S',
        'т' | 'τ' => 't',
        'Т' | 'Τ' => 'T',
        'υ' => 'u',
        'ν' => 'v',
        'ԝ' => 'w',
        'х' | 'χ' => 'x',
        'Х' | 'Χ' => 'X',
        'у' | 'γ' => 'y',
        'У' | 'Υ' => 'Y',
        'Ζ' => 'Z',
        _ => return None,
    })
}

/// Up to [`EXCERPT_CHARS`] characters, with invisible and control characters
/// shown as `\u{…}` so the excerpt carries no hidden text itself.
fn excerpt(text: &str) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == EXCERPT_CHARS {
            out.push('…');
            break;
        }
        let invisible = c.is_control()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}' | '\u{E0000}'..='\u{E007F}');
        if invisible {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// The length of a value's compact JSON text (as `serde_json::to_string`
/// writes it), counted without building the text.
pub fn json_size(value: &Value) -> u64 {
    match value {
        Value::Null => 4,
        Value::Bool(b) => 4 + u64::from(!*b),
        Value::Number(n) => number_size(n),
        Value::String(s) => string_size(s),
        Value::Array(items) => {
            2 + items.iter().map(json_size).sum::<u64>() + items.len().saturating_sub(1) as u64
        }
        Value::Object(map) => {
            2 + map
                .iter()
                .map(|(k, v)| string_size(k) + 1 + json_size(v))
                .sum::<u64>()
                + map.len().saturating_sub(1) as u64
        }
    }
}

/// A JSON string's length with its quotes and escapes: `\"` and `\\` and
/// the short control escapes take two bytes, other control characters six.
fn string_size(s: &str) -> u64 {
    // Branch-free per byte, in blocks of at most 255 bytes with one-byte
    // counters, so the compiler vectorises it 16 bytes at a time: control
    // characters take six bytes but the five with a short escape two, a
    // quote or backslash two.
    let mut escapes = 0u64;
    for block in s.as_bytes().chunks(255) {
        let (mut control, mut short, mut quote) = (0u8, 0u8, 0u8);
        for &b in block {
            control += u8::from(b < 0x20);
            short += u8::from(matches!(b, 0x08 | 0x0C | b'\n' | b'\r' | b'\t'));
            quote += u8::from(b == b'"' || b == b'\\');
        }
        escapes += 5 * u64::from(control) - 4 * u64::from(short) + u64::from(quote);
    }
    2 + s.len() as u64 + escapes
}

/// A number's length as serde_json writes it.
fn number_size(n: &serde_json::Number) -> u64 {
    struct Counter(u64);
    impl std::fmt::Write for Counter {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0 += s.len() as u64;
            Ok(())
        }
    }
    let mut counter = Counter(0);
    let _ = write!(counter, "{n}"); // Number's Display is its JSON text
    counter.0
}

#[cfg(test)]
mod tests;
