//! The audit record and its canonical encoding (version 1).
//!
//! `docs/AUDIT.md` specifies the encoding for independent verifiers; this
//! file is its reference implementation and must match it byte for byte.

use serde::{Deserialize, Serialize};

/// Leading bytes of every encoded record: a magic string, NUL, the version.
pub const MAGIC: &[u8] = b"fabric-audit\x00\x01";

/// `prev_hash` of the first record: 32 zero bytes.
pub const GENESIS: [u8; 32] = [0; 32];

/// A capability refusal, as recorded. Fields it does not list are refused,
/// as a record's are: they are outside the hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedDenial {
    /// `net`, `fs`, `env`.
    pub kind: String,
    /// What was asked for.
    pub target: String,
    /// Why it was refused.
    pub reason: String,
}

/// What the pipeline hands the audit log about one call.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Entry {
    /// Wall-clock time the call started, microseconds since the Unix epoch.
    pub time_unix_us: u64,
    /// The invocation id.
    pub invocation_id: String,
    /// The caller, when known.
    pub caller: Option<String>,
    /// The session, when given.
    pub session: Option<String>,
    /// The tool name as called.
    pub tool: String,
    /// blake3 of the component, when the tool resolved.
    pub component_digest: Option<[u8; 32]>,
    /// blake3 of the policy file, when the tool resolved.
    pub policy_digest: Option<[u8; 32]>,
    /// blake3 of the arguments' compact JSON.
    pub arguments_digest: [u8; 32],
    /// blake3 of the output's compact JSON, when there is an output.
    pub output_digest: Option<[u8; 32]>,
    /// The outcome's name.
    pub outcome: String,
    /// The error message, for every outcome but `ok`.
    pub error: Option<String>,
    /// Capability refusals.
    pub denials: Vec<RecordedDenial>,
    /// Ids of guard rules that hit.
    pub guard_flags: Vec<String>,
    /// Fuel used.
    pub fuel_used: u64,
    /// Duration of the call, microseconds.
    pub duration_us: u64,
    /// The arguments' JSON, when the policy stores payloads (truncated).
    pub arguments: Option<String>,
    /// The output's JSON, when the policy stores payloads (truncated).
    pub output: Option<String>,
    /// The W3C trace id of the call's trace.
    pub trace_id: Option<[u8; 16]>,
    /// The call's own span id (its `execute_tool` span).
    pub span_id: Option<[u8; 8]>,
}

/// A sealed record: an [`Entry`] with its place in the chain. This is also
/// the export format (one JSON object per line; digests and hashes in hex).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Sequence number, from 0, without gaps.
    pub seq: u64,
    /// Microseconds since the Unix epoch.
    pub time_unix_us: u64,
    /// The invocation id.
    pub invocation_id: String,
    /// The caller.
    pub caller: Option<String>,
    /// The session.
    pub session: Option<String>,
    /// The tool.
    pub tool: String,
    /// Component digest, hex.
    pub component_digest: Option<String>,
    /// Policy digest, hex.
    pub policy_digest: Option<String>,
    /// Arguments digest, hex.
    pub arguments_digest: String,
    /// Output digest, hex.
    pub output_digest: Option<String>,
    /// Outcome.
    pub outcome: String,
    /// Error message.
    pub error: Option<String>,
    /// Capability refusals.
    pub denials: Vec<RecordedDenial>,
    /// Guard rule ids.
    pub guard_flags: Vec<String>,
    /// Fuel used.
    pub fuel_used: u64,
    /// Duration, microseconds.
    pub duration_us: u64,
    /// Stored arguments payload.
    pub arguments: Option<String>,
    /// Stored output payload.
    pub output: Option<String>,
    /// W3C trace id, 32 hex digits (absent in records written before
    /// traces were recorded).
    #[serde(default)]
    pub trace_id: Option<String>,
    /// The call's span id, 16 hex digits.
    #[serde(default)]
    pub span_id: Option<String>,
    /// Hash of the previous record, hex (64 zeros for the first).
    pub prev_hash: String,
    /// This record's hash, hex: blake3 of [`Record::encode`].
    pub hash: String,
}

/// A record whose fields do not decode (bad hex, wrong length).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field {field}: {problem}")]
pub struct FieldError {
    /// The field.
    pub field: &'static str,
    /// What is wrong.
    pub problem: String,
}

impl Record {
    /// Seals an entry as record `seq` after `prev_hash`. Fails, rather than
    /// produce a record without a valid hash, when it cannot be encoded.
    pub fn seal(entry: Entry, seq: u64, prev_hash: [u8; 32]) -> Result<Record, FieldError> {
        let hex = |d: [u8; 32]| blake3::Hash::from_bytes(d).to_hex().to_string();
        let mut record = Record {
            seq,
            time_unix_us: entry.time_unix_us,
            invocation_id: entry.invocation_id,
            caller: entry.caller,
            session: entry.session,
            tool: entry.tool,
            component_digest: entry.component_digest.map(hex),
            policy_digest: entry.policy_digest.map(hex),
            arguments_digest: hex(entry.arguments_digest),
            output_digest: entry.output_digest.map(hex),
            outcome: entry.outcome,
            error: entry.error,
            denials: entry.denials,
            guard_flags: entry.guard_flags,
            fuel_used: entry.fuel_used,
            duration_us: entry.duration_us,
            arguments: entry.arguments,
            output: entry.output,
            trace_id: entry.trace_id.map(hex_bytes),
            span_id: entry.span_id.map(hex_bytes),
            prev_hash: hex(prev_hash),
            hash: String::new(),
        };
        record.hash = record.compute_hash()?.to_hex().to_string();
        Ok(record)
    }

    /// The 32 bytes of this record's stated `hash`.
    pub fn hash_bytes(&self) -> Result<[u8; 32], FieldError> {
        digest("hash", &self.hash)
    }

    /// The canonical encoding (docs/AUDIT.md): MAGIC, then tagged fields in
    /// tag order, absent optional fields omitted.
    pub fn encode(&self) -> Result<Vec<u8>, FieldError> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(MAGIC);
        let mut field = |tag: u8, value: &[u8]| {
            out.push(tag);
            out.extend_from_slice(&(value.len() as u32).to_be_bytes());
            out.extend_from_slice(value);
        };
        field(1, &digest("prev_hash", &self.prev_hash)?);
        field(2, &self.seq.to_be_bytes());
        field(3, &self.time_unix_us.to_be_bytes());
        field(4, self.invocation_id.as_bytes());
        if let Some(v) = &self.caller {
            field(5, v.as_bytes());
        }
        if let Some(v) = &self.session {
            field(6, v.as_bytes());
        }
        field(7, self.tool.as_bytes());
        if let Some(v) = &self.component_digest {
            field(8, &digest("component_digest", v)?);
        }
        if let Some(v) = &self.policy_digest {
            field(9, &digest("policy_digest", v)?);
        }
        field(10, &digest("arguments_digest", &self.arguments_digest)?);
        if let Some(v) = &self.output_digest {
            field(11, &digest("output_digest", v)?);
        }
        field(12, self.outcome.as_bytes());
        if let Some(v) = &self.error {
            field(13, v.as_bytes());
        }
        for d in &self.denials {
            let mut value = Vec::new();
            for part in [&d.kind, &d.target, &d.reason] {
                value.extend_from_slice(&(part.len() as u32).to_be_bytes());
                value.extend_from_slice(part.as_bytes());
            }
            field(14, &value);
        }
        for flag in &self.guard_flags {
            field(15, flag.as_bytes());
        }
        field(16, &self.fuel_used.to_be_bytes());
        field(17, &self.duration_us.to_be_bytes());
        if let Some(v) = &self.arguments {
            field(18, v.as_bytes());
        }
        if let Some(v) = &self.output {
            field(19, v.as_bytes());
        }
        if let Some(v) = &self.trace_id {
            field(20, &fixed_hex::<16>("trace_id", v)?);
        }
        if let Some(v) = &self.span_id {
            field(21, &fixed_hex::<8>("span_id", v)?);
        }
        Ok(out)
    }

    /// blake3 of the canonical encoding.
    pub fn compute_hash(&self) -> Result<blake3::Hash, FieldError> {
        Ok(blake3::hash(&self.encode()?))
    }
}

/// Decodes a 64-digit lower-case hex digest.
pub fn digest(field: &'static str, hex: &str) -> Result<[u8; 32], FieldError> {
    let bad = |problem: &str| FieldError {
        field,
        problem: problem.to_string(),
    };
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(bad("not 64 lower-case hex digits"));
    }
    blake3::Hash::from_hex(hex)
        .map(|h| *h.as_bytes())
        .map_err(|e| bad(&e.to_string()))
}

/// Lower-case hex of `bytes`.
fn hex_bytes<const N: usize>(bytes: [u8; N]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes exactly `N` bytes from `2N` lower-case hex digits.
pub fn fixed_hex<const N: usize>(field: &'static str, hex: &str) -> Result<[u8; N], FieldError> {
    let bad = || FieldError {
        field,
        problem: format!("not {} lower-case hex digits", 2 * N),
    };
    let digits = hex.as_bytes();
    if digits.len() != 2 * N {
        return Err(bad());
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in digits.chunks(2).enumerate() {
        out[i] = (nibble(pair[0]).ok_or_else(bad)? << 4) | nibble(pair[1]).ok_or_else(bad)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_denial_with_a_field_it_does_not_list_is_refused() {
        let listed = r#"{"kind":"net","target":"evil.example:443","reason":"not allowed"}"#;
        assert!(serde_json::from_str::<RecordedDenial>(listed).is_ok());
        // Outside the hash, so it could say anything: the record is refused.
        let extra = r#"{"kind":"net","target":"evil.example:443","reason":"not allowed","approved_by":"security-team"}"#;
        assert!(serde_json::from_str::<RecordedDenial>(extra).is_err());
    }
}
