//! Views of an output that undo two ways of splitting an injection so that
//! no piece matches: letter-spaced text (`I g n o r e  a l l …`) and
//! fragments (`["Ig", "nore", " all prev", …]`, in a JSON array or written
//! as a quoted list in text). A view is built only when its shape occurs,
//! and the rules and the score then see it as one more string.

use std::sync::OnceLock;

use regex::Regex;
use serde_json::Value;

use crate::signals::Shapes;

/// Runs of at least six single letters, each followed by one separator
/// (space, dot, hyphen) inside a word or two to four spaces between words.
fn spaced() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"(?-u:\b)[A-Za-z](?:(?:[ .\-]| {2,4})[A-Za-z](?-u:\b)){5,}")
            .expect("the letter-spacing pattern compiles")
    })
}

/// A quoted list of at least four short strings (`"a", "b", 'c', …`).
fn quoted_list() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r#"(?:["'][^"'\n]{1,32}["']\s*,\s*){3,}["'][^"'\n]{1,32}["']"#)
            .expect("the quoted-list pattern compiles")
    })
}

/// Views of one string: its letter-spaced runs collapsed, and each quoted
/// list's items joined (without a separator and with spaces).
///
/// `shapes` says which shapes the signal pass saw (each view is built only
/// when its shape was seen; [`Shapes::UNKNOWN`] looks again here).
pub(crate) fn text_views(text: &str, shapes: Shapes) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let spaced_shape = if shapes == Shapes::UNKNOWN {
        maybe_spaced(text.as_bytes())
    } else {
        shapes.letter_spaced
    };
    let list_shape = if shapes == Shapes::UNKNOWN {
        maybe_quoted_list(text.as_bytes())
    } else {
        shapes.quoted_list
    };
    if spaced_shape && spaced().is_match(text) {
        let mut view = String::with_capacity(text.len());
        let mut at = 0;
        for m in spaced().find_iter(text) {
            view.push_str(&text[at..m.start()]);
            view.push_str(&collapse(m.as_str()));
            at = m.end();
        }
        view.push_str(&text[at..]);
        out.push(("letter-spaced text", view));
    }
    if list_shape && quoted_list().is_match(text) {
        let (mut tight, mut spaced) = (String::new(), String::new());
        for m in quoted_list().find_iter(text) {
            let items = items_of(m.as_str());
            tight.push_str(&items.concat());
            tight.push('\n');
            spaced.push_str(&items.join(" "));
            spaced.push('\n');
        }
        out.push(("joined list items", tight));
        out.push(("joined list items", spaced));
    }
    out
}

/// Views of a JSON array of at least three strings, all short (fragments,
/// not lines): its items joined without a separator and with spaces.
pub(crate) fn array_views(items: &[Value]) -> Vec<(&'static str, String)> {
    if items.len() < 3 {
        return Vec::new();
    }
    let mut parts = Vec::with_capacity(items.len());
    let mut total = 0;
    for item in items {
        match item {
            Value::String(s) => {
                total += s.len();
                parts.push(s.as_str());
            }
            _ => return Vec::new(),
        }
    }
    if total > 40 * items.len() {
        return Vec::new();
    }
    vec![
        ("joined array items", parts.concat()),
        ("joined array items", parts.join(" ")),
    ]
}

/// A cheap first look for letter spacing: at least four single letters in a
/// row, each followed by a space, dot or hyphen and another letter (one pass
/// over the bytes; the regex confirms).
fn maybe_spaced(bytes: &[u8]) -> bool {
    let mut run = 0;
    let mut i = 0;
    while i + 2 < bytes.len() {
        let single = bytes[i].is_ascii_alphabetic()
            && matches!(bytes[i + 1], b' ' | b'.' | b'-')
            && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric());
        if single {
            run += 1;
            if run >= 4 {
                return true;
            }
            // The next letter, after one separator or a wider gap.
            i += 2;
            while i < bytes.len() && bytes[i] == b' ' {
                i += 1;
            }
        } else {
            run = 0;
            i += 1;
        }
    }
    false
}

/// A cheap first look for a quoted list: a quote, a comma and a quote close
/// together (`", "`, `','`).
fn maybe_quoted_list(bytes: &[u8]) -> bool {
    memchr::memchr_iter(b',', bytes).any(|at| {
        let before = bytes[..at].iter().rev().find(|b| !b.is_ascii_whitespace());
        let after = bytes[at + 1..].iter().find(|b| !b.is_ascii_whitespace());
        matches!(before, Some(b'"' | b'\'')) && matches!(after, Some(b'"' | b'\''))
    })
}

/// `I g n o r e   a l l` → `Ignore all`: wide gaps separate words.
fn collapse(run: &str) -> String {
    let mut out = String::with_capacity(run.len());
    for (i, word) in run.split("  ").filter(|w| !w.trim().is_empty()).enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.extend(word.chars().filter(|c| c.is_ascii_alphabetic()));
    }
    out
}

/// The items of a quoted list, without their quotes.
fn items_of(list: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let mut rest = list;
    while let Some(open) = rest.find(['"', '\'']) {
        let quote = rest.as_bytes()[open] as char;
        let after = &rest[open + 1..];
        let Some(close) = after.find(quote) else {
            break;
        };
        items.push(&after[..close]);
        rest = &after[close + 1..];
    }
    items
}
