//! The output guard: checks a tool's output before anyone sees it.
//!
//! This first version enforces the policy's output size limit (`limits.output`,
//! measured as the bytes of the output's JSON). Content and prompt-injection
//! rules slot in here: they take the same [`Guarded`] shape, adding flags or
//! turning the output into a rejection.

use serde::Serialize;
use serde_json::Value;

/// One rule hit reported with a call's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flag {
    /// The rule's id.
    pub rule: String,
    /// What the rule did: `reject`, `redact` or `flag`.
    pub action: String,
    /// JSON pointer into the output.
    pub pointer: String,
    /// A short excerpt of what matched.
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

/// Checks an output against a size limit in bytes of JSON.
pub fn check(output: Value, limit: u64) -> Guarded {
    let size = json_size(&output);
    if size > limit {
        return Guarded::Rejected {
            message: format!(
                "the output is {size} bytes of JSON; the limit is {limit} bytes (limits.output)"
            ),
            flags: Vec::new(),
        };
    }
    Guarded::Pass {
        output,
        flags: Vec::new(),
    }
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
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn size_limit_is_inclusive_and_counts_json_bytes() {
        let v = json!({"a": "héllo"});
        let n = serde_json::to_vec(&v).unwrap().len() as u64;
        assert_eq!(json_size(&v), n);
        assert!(matches!(check(v.clone(), n), Guarded::Pass { .. }));
        match check(v, n - 1) {
            Guarded::Rejected { message, .. } => {
                assert!(message.contains("limits.output"), "{message}")
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
}
