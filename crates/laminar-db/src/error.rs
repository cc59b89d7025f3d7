//! The error type of the public API. Every message names the statement, object, column or
//! record concerned, so a user can act on it without reading the source.

use laminar_connectors::ConnectorError;
use laminar_core::CoreError;
use laminar_sql::SqlError;

/// Errors returned by [`crate::LaminarDB`].
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Parsing or planning failed (syntax errors carry line and column).
    #[error(transparent)]
    Sql(#[from] SqlError),
    /// The engine refused or failed an operation.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// A connector (file, generator) failed or was misconfigured.
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    /// An object with that name exists.
    #[error("{kind} {name} already exists")]
    AlreadyExists {
        /// Kind of the existing object.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// No object with that name exists.
    #[error("{kind} '{name}' does not exist{hint}")]
    NotFound {
        /// What was looked for (e.g. `source`).
        kind: &'static str,
        /// The name as given.
        name: String,
        /// The known names, or empty.
        hint: String,
    },
    /// The object exists but is of another kind than the statement names.
    #[error("{name} is a {actual}, not a {expected}")]
    WrongKind {
        /// The object's name.
        name: String,
        /// What it is.
        actual: &'static str,
        /// What the statement expected.
        expected: &'static str,
    },
    /// `DROP` of an object others read from.
    #[error("cannot drop {kind} {name}: {dependents} read from it; drop them first")]
    HasDependents {
        /// Kind of the object.
        kind: &'static str,
        /// Its name.
        name: String,
        /// The dependents, e.g. `materialized view hot, sink out`.
        dependents: String,
    },
    /// A pushed or inserted row does not fit the source's schema.
    #[error("source {source_name}, column {column}: expected {expected}, got {actual}")]
    TypeMismatch {
        /// The source.
        source_name: String,
        /// The column.
        column: String,
        /// The declared SQL type.
        expected: String,
        /// The type or value given.
        actual: String,
    },
    /// A pushed batch lacks a column or has one the source does not declare.
    #[error("source {source_name}: {message}")]
    BadBatch {
        /// The source.
        source_name: String,
        /// What is wrong, naming the column.
        message: String,
    },
    /// The statement is valid but not allowed here (e.g. `INSERT` into a view).
    #[error("{statement}: {message}")]
    NotAllowed {
        /// The statement or call.
        statement: String,
        /// Why.
        message: String,
    },
    /// A snapshot query failed while running.
    #[error("query failed: {message}")]
    Query {
        /// DataFusion's explanation.
        message: String,
    },
    /// Reading or writing the catalog failed.
    #[error("catalog {path}: {message}")]
    Catalog {
        /// The catalog file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Writing or reading the data directory's logs and checkpoints failed.
    #[error(transparent)]
    Storage(#[from] laminar_storage::StorageError),
    /// Recovering from the data directory failed: a log record or checkpoint cannot be
    /// applied to the catalog.
    #[error("recovery: {message}")]
    Recovery {
        /// What could not be recovered, naming the object or file.
        message: String,
    },
    /// A checkpoint could not be taken; the previous one stays valid.
    #[error("checkpoint {epoch} failed: {message}")]
    Checkpoint {
        /// The checkpoint's epoch.
        epoch: u64,
        /// What failed.
        message: String,
    },
    /// An output log could not be written or read.
    #[error("output log of {object}: {message}")]
    OutputLog {
        /// The stream, view or source whose log it is.
        object: String,
        /// What failed, naming the file.
        message: String,
    },
    /// `subscribe_from` after an epoch whose successors the output log no longer keeps.
    #[error(
        "cannot resume {object} after epoch {epoch}: its output log no longer holds the \
         epochs after it; the oldest epoch to resume after is {oldest}"
    )]
    EpochNotRetained {
        /// The stream, view or source.
        object: String,
        /// The epoch asked for.
        epoch: u64,
        /// The oldest epoch a subscription can resume after.
        oldest: u64,
    },
    /// `subscribe_from` after an epoch that is not committed.
    #[error(
        "cannot resume {object} after epoch {epoch}: it is not committed; the newest \
         committed epoch is {newest}"
    )]
    EpochNotCommitted {
        /// The stream, view or source.
        object: String,
        /// The epoch asked for.
        epoch: u64,
        /// The newest epoch a subscription can resume after.
        newest: u64,
    },
    /// A broken internal invariant: always a bug in LaminarDB.
    #[error("internal error (this is a bug in LaminarDB, please report it): {0}")]
    Internal(String),
}

/// Result alias of the public API.
pub type Result<T, E = DbError> = std::result::Result<T, E>;
