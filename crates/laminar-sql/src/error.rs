//! The error type of the SQL layer. Messages name the statement, object, column or construct
//! concerned, with line and column for syntax errors.

use datafusion::error::DataFusionError;

/// Errors from parsing and planning SQL.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// The SQL text does not parse; the message carries line and column.
    #[error("syntax error: {message}")]
    Syntax {
        /// The parser's message, ending with `at Line: L, Column: C`.
        message: String,
    },
    /// Valid SQL that LaminarDB does not support (yet).
    #[error("Unsupported: {construct} (in {context})")]
    Unsupported {
        /// The construct, e.g. `JOIN` or `ORDER BY`.
        construct: String,
        /// The statement or object it appeared in.
        context: String,
    },
    /// A name refers to no source, stream or view.
    #[error("unknown source, stream or view '{name}'{hint}")]
    UnknownObject {
        /// The name as written.
        name: String,
        /// Extra help, e.g. the known names.
        hint: String,
    },
    /// The query is invalid (unknown column, type error, ...), as DataFusion reports it.
    #[error("{context}: {message}")]
    Plan {
        /// The statement or object being planned.
        context: String,
        /// DataFusion's explanation.
        message: String,
    },
    /// A column definition or option is invalid.
    #[error("{context}: {message}")]
    Invalid {
        /// The statement or object concerned.
        context: String,
        /// What is wrong.
        message: String,
    },
}

impl SqlError {
    /// Wraps a DataFusion planning error, keeping its message but dropping the internal
    /// `Error during planning:` style prefixes users do not need.
    pub fn plan(context: impl Into<String>, error: &DataFusionError) -> Self {
        let message = match error.find_root() {
            DataFusionError::Plan(m) | DataFusionError::NotImplemented(m) => m.clone(),
            DataFusionError::SchemaError(e, _) => e.to_string(),
            other => other.to_string(),
        };
        Self::Plan {
            context: context.into(),
            message,
        }
    }
}

/// Result alias of the SQL crate.
pub type Result<T, E = SqlError> = std::result::Result<T, E>;
