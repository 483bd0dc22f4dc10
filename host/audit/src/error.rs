//! The audit log's one error type, shared by the writer, the readers and
//! the key loader. Each variant keeps the path involved and, where there is
//! one, the underlying cause as its [`source`](std::error::Error::source).

use std::path::PathBuf;
use std::sync::Arc;

use crate::checkpoint::CheckpointError;
use crate::record::FieldError;

/// The audit log failed: a fault of Fabric itself, which stops the call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// A file or directory could not be created, read or written.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done (`write`, `open`, …).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The sled store failed on an operation.
    #[error("cannot {action} the audit store {}", path.display())]
    Store {
        /// What was being done.
        action: &'static str,
        /// The store's directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: sled::Error,
    },
    /// Another live process holds the store's lock.
    #[error(
        "another Fabric process holds the audit store {}; stop it or wait for it to finish",
        path.display()
    )]
    Locked {
        /// The store's directory.
        path: PathBuf,
    },
    /// The store (or a record in it) cannot be read: it is damaged.
    #[error(
        "the audit store {} is corrupt ({what}); keep it for inspection and restore the data directory from a backup",
        path.display()
    )]
    Corrupt {
        /// The store's directory.
        path: PathBuf,
        /// What is corrupt.
        what: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// There is no audit log at this path.
    #[error("no audit log in {} (no call has been recorded there)", path.display())]
    Missing {
        /// The audit directory.
        path: PathBuf,
    },
    /// The store is gone while the mirror or a checkpoint remains: it was
    /// deleted or moved, not never written.
    #[error(
        "the audit store {} is missing, yet {found} there: the store was deleted or moved \
         (restore it from a backup; `fabric audit recover` puts back the records log.jsonl holds)",
        path.display()
    )]
    StoreMissing {
        /// The store's directory (`DATA/audit/db`).
        path: PathBuf,
        /// What remains beside it.
        found: String,
    },
    /// The stored head or the last signed checkpoint is ahead of the records
    /// (records were removed) or disagrees with them (records were replaced).
    #[error("refusing to write to the audit log in {}: {divergence}", path.display())]
    Diverged {
        /// The audit directory.
        path: PathBuf,
        /// What disagrees.
        divergence: Divergence,
    },
    /// The checkpoint key file is unusable.
    #[error("audit key {}: {problem}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        problem: CheckpointError,
    },
    /// A record could not be encoded, so its hash and the chain's head are
    /// unknown; nothing more is written.
    #[error("record {seq} cannot be sealed")]
    Seal {
        /// The record's sequence number.
        seq: u64,
        /// The cause.
        #[source]
        source: FieldError,
    },
    /// The writer stopped after an earlier failure, given as the source.
    #[error("the audit log stopped after a failure; no call is answered unrecorded: restart Fabric once the cause is fixed")]
    Failed {
        /// The failure that stopped the writer.
        #[source]
        source: Arc<AuditError>,
    },
    /// The writer is gone (closed, or its thread ended).
    #[error("the audit log is closed")]
    Closed,
}

/// How the records disagree with what was stored or signed about them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// Records that remain in the store.
    pub remain: u64,
    /// The record count the store's head gives.
    pub head: Option<u64>,
    /// The record count of the last signed checkpoint.
    pub checkpoint: Option<u64>,
    /// What is wrong, in words.
    pub problem: String,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = |n: Option<u64>| n.map_or("none".to_string(), |n| format!("{n} records"));
        write!(
            f,
            "{} (stored head: {}; last signed checkpoint: {}; records that remain: {}). \
             Keep a copy of the data directory, then recover explicitly with `fabric audit recover`, \
             which continues from what remains and records the loss in the log",
            self.problem,
            count(self.head),
            count(self.checkpoint),
            self.remain
        )
    }
}

impl AuditError {
    /// An [`AuditError::Io`].
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> AuditError {
        let path = path.into();
        move |source| AuditError::Io {
            action,
            path,
            source,
        }
    }

    /// An [`AuditError::Store`].
    pub(crate) fn store(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(sled::Error) -> AuditError {
        let path = path.into();
        move |source| AuditError::Store {
            action,
            path,
            source,
        }
    }
}

/// An error and its causes, `: `-separated, for log lines and messages.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
