//! Offline verification of a log or an export: finds the first record that
//! was altered, dropped, reordered or cut off.

use crate::checkpoint::Checkpoint;
use crate::log::Stored;
use crate::record::{digest, GENESIS};

/// What is wrong with a log, at which record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {seq}: {kind}: {detail}")]
pub struct Finding {
    /// The first bad sequence number.
    pub seq: u64,
    /// `altered`, `missing`, `reordered` or `truncated`.
    pub kind: &'static str,
    /// Explanation.
    pub detail: String,
}

/// A log that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Number of records.
    pub count: u64,
    /// Hash of the last record, hex (`None` when empty).
    pub head: Option<String>,
}

/// Verifies records in storage order. `from` skips checks of earlier records
/// (trusting record `from`'s link to its predecessor); `stored_head` is the
/// `(count, hash)` the store recorded; `checkpoint` one an auditor kept.
pub fn verify(
    items: &[Stored],
    from: u64,
    stored_head: Option<(u64, [u8; 32])>,
    checkpoint: Option<Checkpoint>,
) -> Result<Verified, Finding> {
    let finding = |seq: u64, kind: &'static str, detail: String| Finding { seq, kind, detail };
    let mut prev: Option<[u8; 32]> = if from == 0 { Some(GENESIS) } else { None };
    let mut hashes: Vec<[u8; 32]> = Vec::with_capacity(items.len());
    for (position, (key, parsed)) in items.iter().enumerate() {
        let expected = position as u64;
        if *key != expected {
            return Err(finding(
                expected,
                "missing",
                format!("the next stored record is {key}"),
            ));
        }
        let record = parsed
            .as_ref()
            .map_err(|e| finding(expected, "altered", e.clone()))?;
        let stated = digest("hash", &record.hash)
            .map_err(|e| finding(expected, "altered", e.to_string()))?;
        // Its content first: an edited `seq` is an alteration, not a record
        // missing or moved.
        if expected >= from {
            let computed = record
                .compute_hash()
                .map_err(|e| finding(expected, "altered", e.to_string()))?;
            if *computed.as_bytes() != stated {
                return Err(finding(
                    expected,
                    "altered",
                    "its content does not match its hash".into(),
                ));
            }
        }
        if record.seq != expected {
            let later = items[position..]
                .iter()
                .any(|(_, r)| r.as_ref().is_ok_and(|r| r.seq == expected));
            return Err(if later || record.seq < expected {
                finding(
                    expected,
                    "reordered",
                    format!(
                        "record {} stands where record {expected} belongs",
                        record.seq
                    ),
                )
            } else {
                finding(
                    expected,
                    "missing",
                    format!("the next record is {}", record.seq),
                )
            });
        }
        if expected >= from {
            let link = digest("prev_hash", &record.prev_hash)
                .map_err(|e| finding(expected, "altered", e.to_string()))?;
            if let Some(prev) = prev {
                if link != prev {
                    // The predecessor's content and hash agree, yet this record
                    // chains to another hash: the predecessor was rewritten.
                    let seq = expected.saturating_sub(1);
                    return Err(finding(
                        seq,
                        "altered",
                        format!("record {expected} chains to a different hash"),
                    ));
                }
            }
        }
        prev = Some(stated);
        hashes.push(stated);
    }
    let count = hashes.len() as u64;
    if let Some((stored_count, stored_hash)) = stored_head {
        if stored_count > count {
            return Err(finding(
                count,
                "truncated",
                format!("the store's head says {stored_count} records, {count} remain"),
            ));
        }
        if stored_count == count && count > 0 && hashes[count as usize - 1] != stored_hash {
            return Err(finding(
                count - 1,
                "altered",
                "the last record is not the head the store recorded".into(),
            ));
        }
    }
    if let Some(cp) = checkpoint {
        if cp.size > count {
            return Err(finding(
                count,
                "truncated",
                format!("the checkpoint has {} records, the log {count}", cp.size),
            ));
        }
        if cp.size > 0 && hashes[cp.size as usize - 1] != cp.hash {
            return Err(finding(
                cp.size - 1,
                "altered",
                format!(
                    "history rewritten: the log's first {} records do not end in the checkpoint's hash \
                     (the change is in this record or an earlier one: a chain re-hashed from it on \
                     hides which; compare an export kept from before)",
                    cp.size
                ),
            ));
        }
    }
    Ok(Verified {
        count,
        head: hashes
            .last()
            .map(|h| blake3::Hash::from_bytes(*h).to_hex().to_string()),
    })
}
