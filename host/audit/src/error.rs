//! The audit log's one error type, shared by the writer, the readers and
//! the key loader.

use std::path::{Path, PathBuf};

/// The audit log failed: a fault of Fabric itself, which stops the call.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The store could not be opened or written.
    #[error("audit store {path}: {message}")]
    Store {
        /// Directory or file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The writer stopped after an earlier failure.
    #[error("the audit log is closed after an earlier failure; restart Fabric")]
    Closed,
}

/// An [`AuditError::Store`] for `path`.
pub(crate) fn store_err(path: &Path, e: impl std::fmt::Display) -> AuditError {
    AuditError::Store {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}
