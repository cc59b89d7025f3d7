//! The errors the `laminardb` command reports, and the exit status each one maps to: a
//! script that cannot be read or has a failing statement exits 2, anything else 1.

use laminar_db::DbError;

/// Exit status of a script that cannot be read or has a failing statement.
pub const EXIT_STATEMENT: u8 = 2;
/// Exit status of every other failure (a query failed while running, the database broke).
pub const EXIT_FAILURE: u8 = 1;

/// Why a command failed; printed as `error: <message>`.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The SQL file could not be read.
    #[error("cannot read {path}: {source}")]
    ReadScript {
        /// The file as given.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A statement of the script failed to parse or to execute.
    #[error("statement {index} (line {line}): {source}")]
    Statement {
        /// 1-based position of the statement in the script.
        index: usize,
        /// Line of the file where the statement starts.
        line: usize,
        /// The database's explanation.
        source: DbError,
    },
    /// Streams, views or sinks failed while the pipeline ran (each was reported as it
    /// failed).
    #[error("{failed} of {total} queries failed")]
    QueriesFailed {
        /// How many failed.
        failed: usize,
        /// How many streams, views and sinks there are.
        total: usize,
    },
    /// Opening the database or another call failed outside any script statement.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A storage benchmark's log failed.
    #[error(transparent)]
    Storage(#[from] laminar_db::storage::StorageError),
    /// Something else the command needs failed (terminal, threads, signals).
    #[error("{context}: {message}")]
    Environment {
        /// What the command was doing.
        context: &'static str,
        /// What went wrong.
        message: String,
    },
}

impl CliError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::ReadScript { .. } | Self::Statement { .. } => EXIT_STATEMENT,
            Self::QueriesFailed { .. }
            | Self::Db(_)
            | Self::Storage(_)
            | Self::Environment { .. } => EXIT_FAILURE,
        }
    }

    /// An [`CliError::Environment`] error.
    pub fn environment(context: &'static str, error: impl std::fmt::Display) -> Self {
        Self::Environment {
            context,
            message: error.to_string(),
        }
    }
}
