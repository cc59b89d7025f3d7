//! The one error type of the storage layer. Every variant that concerns a file names it, so
//! a user reading the message knows which file to look at; corruption also names the byte
//! offset where the damage starts.

use std::path::PathBuf;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The operating system refused an operation on a file or directory.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A file's bytes fail a check: checksum mismatch, impossible length, bad magic, a
    /// truncated record, a gap in a sequence.
    #[error("{} is corrupt at byte {offset}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the damaged record or field starts.
        offset: u64,
        /// The broken rule.
        reason: String,
    },
    /// The write-ahead log refuses writes because an earlier write or fdatasync failed:
    /// what it had accepted since the last successful sync may not be on disk.
    #[error(
        "the write-ahead log refuses writes since a write or sync of {} failed: {reason}",
        path.display()
    )]
    Poisoned {
        /// The segment whose write or sync failed.
        path: PathBuf,
        /// The first failure.
        reason: String,
    },
    /// A file is well formed but not something this version can read (format version,
    /// unknown kind), or a value to write cannot be represented in the format.
    #[error("{}: {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is unsupported.
        reason: String,
    },
    /// Checkpoint manifests exist but none of them is usable.
    #[error("no valid checkpoint in {}: {reason}", path.display())]
    NoValidCheckpoint {
        /// The newest manifest.
        path: PathBuf,
        /// Why it (and every older one) cannot be used.
        reason: String,
    },
    /// An option or argument has a value the storage layer does not accept.
    #[error("invalid {option} '{value}': {reason}")]
    InvalidOption {
        /// The option, e.g. `durability`.
        option: &'static str,
        /// The value given.
        value: String,
        /// What is accepted instead.
        reason: String,
    },
    /// A checkpoint was asked to do something its protocol does not allow (a delta with no
    /// full snapshot before it, an epoch that does not increase, a state id added twice).
    #[error("checkpoint {epoch}: {reason}")]
    Checkpoint {
        /// The checkpoint's epoch.
        epoch: u64,
        /// The broken rule.
        reason: String,
    },
    /// A state id asked of a recovered checkpoint is not in it.
    #[error("checkpoint {epoch} holds no state '{id}'")]
    UnknownState {
        /// The checkpoint's epoch.
        epoch: u64,
        /// The state id asked for.
        id: String,
    },
}

/// Result of a storage operation.
pub type Result<T> = std::result::Result<T, StorageError>;

impl StorageError {
    /// An [`StorageError::Io`] error for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// A [`StorageError::Corrupt`] error for `path` at `offset`.
    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        Self::Corrupt {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }

    /// A [`StorageError::Format`] error for `path`.
    pub(crate) fn format(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::Format {
            path: path.into(),
            reason: reason.into(),
        }
    }
}
