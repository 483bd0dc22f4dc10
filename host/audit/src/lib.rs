//! The audit log: one hash-chained record per call, whatever its outcome,
//! durable before the call's answer, verifiable offline.
//!
//! - [`record`]: the record and its canonical, versioned encoding
//!   (specified in `docs/AUDIT.md` for independent verifiers);
//! - [`log`]: sled storage with group commit, the JSONL mirror live readers
//!   use, and periodic signed checkpoints;
//! - [`checkpoint`]: C2SP signed notes of the head (Ed25519);
//! - [`verify`]: finds the first altered, missing, reordered or truncated record.

pub mod checkpoint;
pub mod error;
pub mod log;
pub mod record;
pub mod verify;

pub use checkpoint::{Checkpoint, SigningKey, VerifyingKey};
pub use error::AuditError;
pub use log::{read_jsonl, read_records, AuditLog, AuditOptions, Sealed, Source};
pub use record::{Entry, Record, RecordedDenial};
pub use verify::{verify, Finding, Verified};
