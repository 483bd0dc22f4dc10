//! The output guard: checks every tool output before anyone sees it.
//!
//! It enforces the policy's output size limit (`limits.output`, bytes of the
//! output's JSON), then walks every string in the output value and applies
//! the rules ([`rules`], shipped as `default-rules.toml`): instructions aimed
//! at the model, hidden text, exfiltration URLs, role and special tokens, and
//! encoded payloads (decoded and checked again once). A rule rejects the
//! output, redacts the matched span (`[redacted:RULE-ID]`) or flags it.
//!
//! Matching is linear-time (the `regex` crate: finite automata, no
//! backtracking): one [`regex::RegexSet`] pass per rule kind finds which rules
//! hit, and only those rules are run again for their spans.

pub mod rules;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;
use unicode_normalization::UnicodeNormalization;

use crate::policy::NetPolicy;
pub use rules::{Action, Kind, RuleSet};

/// Longest excerpt of matched text in a flag, in characters.
const EXCERPT_CHARS: usize = 80;
/// Shortest decoded text worth re-checking.
const MIN_DECODED_TEXT: usize = 8;

/// One rule hit reported with a call's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    pub net: NetPolicy,
    /// Largest output, bytes of JSON.
    pub output_limit: u64,
}

impl GuardConfig {
    /// The default rules, no overrides, no allowed hosts, this size limit.
    pub fn with_limit(output_limit: u64) -> GuardConfig {
        GuardConfig {
            rules: RuleSet::default_rules(),
            actions: BTreeMap::new(),
            net: NetPolicy::default(),
            output_limit,
        }
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
    let size = json_size(&output);
    if size > config.output_limit {
        return Guarded::Rejected {
            message: format!(
                "the output is {size} bytes of JSON; the limit is {} bytes (limits.output)",
                config.output_limit
            ),
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
    if rejected.is_empty() {
        Guarded::Pass { output, flags }
    } else {
        rejected.dedup();
        Guarded::Rejected {
            message: format!(
                "the output was rejected by the guard: {}",
                rejected.join("; ")
            ),
            flags,
        }
    }
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
            for (i, item) in items.iter_mut().enumerate() {
                let len = pointer.len();
                pointer.push_str(&format!("/{i}"));
                walk(item, pointer, config, flags, rejected);
                pointer.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
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
    let hits = scan(s, &normalised, config, true);
    if hits.is_empty() {
        return None;
    }
    let mut redact_raw = Vec::new();
    let mut redact_norm = Vec::new();
    for hit in &hits {
        let rule = &config.rules.rules[hit.rule];
        flags.push(Flag {
            rule: rule.id.clone(),
            action: hit.action.as_str().into(),
            pointer: if pointer.is_empty() {
                "/".into()
            } else {
                pointer.into()
            },
            excerpt: hit.excerpt.clone(),
        });
        match hit.action {
            Action::Reject => rejected.push(format!("{} ({})", rule.id, rule.description)),
            Action::Redact if hit.in_normalised => redact_norm.push((hit.span, rule.id.as_str())),
            Action::Redact => redact_raw.push((hit.span, rule.id.as_str())),
            Action::Flag => {}
        }
    }
    if redact_raw.is_empty() && redact_norm.is_empty() {
        return None;
    }
    if redact_norm.is_empty() {
        return Some(redact(s, redact_raw));
    }
    // Spans in the normalised text: the redacted output is the normalised
    // text (raw spans are re-found in it where they survive normalisation).
    let mut text = normalised.into_owned();
    for ((start, end), id) in redact_raw {
        if let Some(at) = text.find(&s[start..end]) {
            redact_norm.push(((at, at + end - start), id));
        }
    }
    text = redact(&text, redact_norm);
    Some(text)
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

/// All rule hits in one string. `decode` allows one round of re-checking
/// decoded blobs.
fn scan(raw: &str, normalised: &str, config: &GuardConfig, decode: bool) -> Vec<Hit> {
    let rules = &config.rules;
    let mut hits = Vec::new();
    // Which (rule, pattern) pairs match: one pass over text that
    // normalisation left unchanged, else one pass per kind on its text.
    let mut matched: Vec<(usize, usize)> = Vec::new();
    if raw == normalised {
        let m = rules.all.set.matches(raw);
        matched.extend(m.iter().map(|i| rules.all.owners[i]));
    } else {
        for (kind, kind_rules) in &rules.kinds {
            let text = if kind.normalised() { normalised } else { raw };
            matched.extend(
                kind_rules
                    .set
                    .matches(text)
                    .iter()
                    .map(|i| kind_rules.owners[i]),
            );
        }
    }
    // Hex rules before base64 ones, as in the file: a blob is reported once.
    matched.sort_unstable();
    {
        for (rule_index, pattern_index) in matched {
            let rule = &rules.rules[rule_index];
            let kind = &rule.kind;
            let text = if kind.normalised() { normalised } else { raw };
            let action = config.actions.get(&rule.id).copied().unwrap_or(rule.action);
            let re = &rule.patterns[pattern_index];
            match kind {
                Kind::Exfiltration => {
                    // find_iter runs on the fast DFA; captures only on each match.
                    for m in re.find_iter(text) {
                        let whole = (m.start(), m.end());
                        let hit = match re.captures(m.as_str()).and_then(|c| c.name("url")) {
                            Some(url) => exfiltrates(url.as_str(), &config.net),
                            None => true,
                        };
                        if hit
                            && !hits
                                .iter()
                                .any(|h: &Hit| h.span == whole && !h.in_normalised)
                        {
                            let excerpt = excerpt(&text[whole.0..whole.1]);
                            hits.push(Hit {
                                rule: rule_index,
                                action,
                                span: whole,
                                in_normalised: false,
                                excerpt,
                            });
                        }
                    }
                }
                Kind::Encoded => {
                    for m in re.find_iter(text) {
                        let span = (m.start(), m.end());
                        if hits.iter().any(|h: &Hit| {
                            h.span == span && rules.rules[h.rule].kind == Kind::Encoded
                        }) {
                            continue; // one blob, one encoded-rule hit (hex rules come first)
                        }
                        let blob = m.as_str();
                        let is_hex =
                            blob.len() % 2 == 0 && blob.bytes().all(|b| b.is_ascii_hexdigit());
                        let decoded = if is_hex {
                            decode_hex(blob)
                        } else {
                            decode_base64(blob)
                        };
                        hits.push(Hit {
                            rule: rule_index,
                            action,
                            span,
                            in_normalised: false,
                            excerpt: excerpt(m.as_str()),
                        });
                        let Some(decoded) = decoded.filter(|_| decode) else {
                            continue;
                        };
                        let norm = normalise(&decoded);
                        for inner in scan(&decoded, &norm, config, false) {
                            let inner_rule = &rules.rules[inner.rule];
                            if inner_rule.kind.normalised() {
                                let excerpt = format!("decoded: {}", inner.excerpt);
                                hits.push(Hit {
                                    rule: inner.rule,
                                    action: inner.action,
                                    span,
                                    in_normalised: false,
                                    excerpt,
                                });
                            }
                        }
                    }
                }
                _ => {
                    for m in re.find_iter(text) {
                        if is_flag_emoji(m.as_str()) {
                            continue;
                        }
                        if *kind == Kind::Instruction && quoted(text, m.start()) {
                            continue; // "…" quoted: a mention of an attack, not one
                        }
                        let span = (m.start(), m.end());
                        let in_normalised = kind.normalised() && !std::ptr::eq(normalised, raw);
                        hits.push(Hit {
                            rule: rule_index,
                            action,
                            span,
                            in_normalised,
                            excerpt: excerpt(m.as_str()),
                        });
                    }
                }
            }
        }
    }
    hits
}

/// Whether a URL sends data to a host the policy does not allow: it has a
/// query, or a long path (data encoded into path segments).
fn exfiltrates(url: &str, net: &NetPolicy) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || host_port.starts_with('[') => {
            (h, p.parse().unwrap_or(0))
        }
        _ => (
            host_port,
            if scheme.eq_ignore_ascii_case("https") {
                443
            } else {
                80
            },
        ),
    };
    if net.allows(host, port) {
        return false;
    }
    let path = path.split('#').next().unwrap_or_default();
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    // Data: a long query value, a template placeholder ({secret}, [DATA],
    // <DATA, $TOKEN) or key=value in the path, a long query, or a long path
    // segment; `?branch=main` or `?v=4.2` carry none.
    let long_value = query
        .split('&')
        .any(|kv| kv.split_once('=').map_or(kv, |(_, v)| v).len() >= 12);
    let marks = ['{', '}', '[', ']', '<', '>', '$'];
    let placeholder = query.contains(marks) || path.contains(marks) || path.contains('=');
    long_value || placeholder || query.len() >= 40 || path.split('/').any(|seg| seg.len() > 32)
}

/// A subdivision-flag emoji (🏴 followed by up to 7 tag characters and
/// CANCEL TAG), the one ordinary use of tag characters.
fn is_flag_emoji(m: &str) -> bool {
    let Some(tags) = m.strip_prefix('\u{1F3F4}') else {
        return false;
    };
    tags.ends_with('\u{E007F}') && tags.chars().count() <= 8
}

/// Whether the match at `at` is quoted as an example (phrases such as
/// "ignore previous instructions"): a quotation mark right before it,
/// introduced by words that mention rather than use it.
fn quoted(text: &str, at: usize) -> bool {
    let quotes = [
        '"', '\'', '`', '\u{201C}', '\u{2018}', '\u{AB}', '\u{201E}', '\u{300C}', '\u{201A}',
        '\u{300E}',
    ];
    if !text[..at]
        .chars()
        .next_back()
        .is_some_and(|c| quotes.contains(&c))
    {
        return false;
    }
    let mut from = at.saturating_sub(80);
    while !text.is_char_boundary(from) {
        from -= 1;
    }
    let before = text[from..at].to_lowercase();
    const MENTIONS: [&str; 27] = [
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
        "wie",
        "z. b",
        "etwa",
        "comme",
        "exemple",
        "como",
        "ejemplo",
        "такие как",
        "например",
        "如",
        "例如",
        "phrase",
        "frase",
    ];
    MENTIONS.iter().any(|m| before.contains(m))
}

fn decode_base64(blob: &str) -> Option<String> {
    let trimmed = blob.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(trimmed)
        .ok()?;
    text_like(bytes)
}

fn decode_hex(blob: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..blob.len())
        .step_by(2)
        .map(|i| {
            blob.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    text_like(bytes?)
}

/// Decoded bytes that read as text (UTF-8, mostly printable).
fn text_like(bytes: Vec<u8>) -> Option<String> {
    let text = String::from_utf8(bytes).ok()?;
    let printable = text
        .chars()
        .filter(|c| !c.is_control() || c.is_whitespace())
        .count();
    (text.chars().count() >= MIN_DECODED_TEXT && printable * 10 >= text.chars().count() * 9)
        .then_some(text)
}

/// The text instruction and token rules see: Unicode tag characters decoded
/// to ASCII, zero-width and bidi controls removed, NFKC, and confusable
/// letters folded to Latin inside words that mix scripts. ASCII is returned
/// as is (borrowed).
pub fn normalise(s: &str) -> Cow<'_, str> {
    if s.is_ascii() || already_normal(s) {
        return Cow::Borrowed(s);
    }
    let cleaned: String = s
        .chars()
        .filter_map(|c| match c {
            '\u{E0020}'..='\u{E007E}' => char::from_u32(c as u32 - 0xE0000),
            '\u{E0000}'..='\u{E007F}' => None,
            '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{180E}'
            | '\u{00AD}' => None,
            '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' => None,
            c => Some(c),
        })
        .nfkc()
        .collect();
    Cow::Owned(fold_confusables(&cleaned))
}

/// Whether normalisation would leave `s` unchanged: no tag, zero-width or
/// bidi characters, no Greek or Cyrillic letters, and already NFKC (quick check).
fn already_normal(s: &str) -> bool {
    let special = s.chars().any(|c| {
        matches!(c, '\u{E0000}'..='\u{E007F}' | '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' | '\u{180E}' | '\u{00AD}'
            | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{0370}'..='\u{052F}' | '\u{0261}')
    });
    !special
        && unicode_normalization::is_nfkc_quick(s.chars())
            == unicode_normalization::IsNormalized::Yes
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

/// The length of a value's compact JSON text, without building the text.
pub fn json_size(value: &Value) -> u64 {
    struct Counter(u64);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing to a counter cannot fail, and a Value always serializes.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

#[cfg(test)]
mod tests;
