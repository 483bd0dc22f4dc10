//! The audit log: one hash-chained record per call, whatever its outcome,
//! durable before the call's answer, verifiable offline.
//!
//! - [`record`]: the record and its canonical, versioned encoding
//!   (specified in `docs/AUDIT.md` for independent verifiers);
//! - [`log`]: sled storage with group commit behind a bounded queue, the
//!   JSONL mirror live readers use, signed checkpoints (by count and by
//!   time, idle or not), refusal of a log whose records were removed;
//! - [`checkpoint`]: C2SP signed notes of the head (Ed25519);
//! - [`verify`]: finds the first altered, missing, reordered or truncated record.

pub mod checkpoint;
pub mod error;
pub mod fsutil;
pub mod log;
pub mod record;
pub mod verify;

pub use checkpoint::{public_key_path, Checkpoint, SigningKey, VerifyingKey};
pub use error::{AuditError, Divergence};
pub use log::{
    mirror_count, read_export, read_jsonl, read_log, read_records, AuditLog, AuditOptions,
    Follower, LogRead, Recovery, Sealed, Source,
};
pub use record::{Entry, Record, RecordedDenial};
pub use verify::{verify, Finding, Verified};
