//! The values of a policy's `[env] pass` variables, read once per call by
//! the sandbox stage and handed forward, so that later stages can blank
//! them from everything that leaves the call (result and audit record)
//! without reading the process environment again.

use std::borrow::Cow;

/// Values shorter than this are passed to the tool but not redacted:
/// blanking every `a` or `42` of an output would destroy it, and a value
/// that short protects nothing.
pub const MIN_REDACTED_LEN: usize = 4;

/// Passed-through variables and their values, for one call.
#[derive(Debug, Clone, Default)]
pub struct Secrets(Vec<(String, String)>);

impl Secrets {
    /// Reads `names` from the host environment; unset variables are skipped.
    pub fn read(names: &[String]) -> Secrets {
        Secrets(
            names
                .iter()
                .filter_map(|name| Some((name.clone(), std::env::var(name).ok()?)))
                .collect(),
        )
    }

    /// The variables and values, to hand to the tool.
    pub fn vars(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Whether no value is long enough to be redacted.
    pub fn nothing_to_redact(&self) -> bool {
        self.0.iter().all(|(_, v)| v.len() < MIN_REDACTED_LEN)
    }

    /// `text` with every value replaced by `[env:NAME]`, longest first (so a
    /// value that contains another is blanked whole). Only literal
    /// occurrences are found: a tool that encodes a value (base64, a
    /// `list<u8>` output) can still carry it out.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut hits: Vec<&(String, String)> = self
            .0
            .iter()
            .filter(|(_, v)| v.len() >= MIN_REDACTED_LEN && text.contains(v.as_str()))
            .collect();
        if hits.is_empty() {
            return Cow::Borrowed(text);
        }
        hits.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
        let mut out = text.to_string();
        for (name, value) in hits {
            out = out.replace(value.as_str(), &format!("[env:{name}]"));
        }
        Cow::Owned(out)
    }
}

impl Secrets {
    /// `value` with every string (and object key) redacted.
    pub fn redact_value(&self, value: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        if self.nothing_to_redact() {
            return value;
        }
        match value {
            Value::String(s) => match self.redact(&s) {
                Cow::Borrowed(_) => Value::String(s),
                Cow::Owned(t) => Value::String(t),
            },
            Value::Array(items) => {
                Value::Array(items.into_iter().map(|v| self.redact_value(v)).collect())
            }
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (self.redact(&k).into_owned(), self.redact_value(v)))
                    .collect(),
            ),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_longest_first_and_skips_short_values() {
        let s = Secrets(vec![
            ("SHORT".into(), "ab".into()),
            ("TOKEN".into(), "s3cr3t".into()),
            ("LONG".into(), "xx-s3cr3t-yy".into()),
        ]);
        assert_eq!(
            s.redact("a xx-s3cr3t-yy and s3cr3t, ab"),
            "a [env:LONG] and [env:TOKEN], ab"
        );
        assert!(matches!(s.redact("nothing here"), Cow::Borrowed(_)));
        assert!(Secrets(vec![("A".into(), "ab".into())]).nothing_to_redact());
    }
}
