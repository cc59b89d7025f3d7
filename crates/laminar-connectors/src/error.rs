//! The one error type of the connector crate. Every variant carries the facts a user needs to
//! fix the problem (connector, option, file, line, column, types) as structured fields, and
//! its message names them.

use std::path::PathBuf;

/// Result alias used throughout the connector crate.
pub type Result<T> = std::result::Result<T, ConnectorError>;

/// Everything that can go wrong while creating, opening, reading or writing a connector.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// The connector name after `FROM` / `INTO` is not one this crate provides.
    #[error("unknown {role} connector '{name}'; known {role} connectors: {known}")]
    UnknownConnector {
        /// `source` or `sink`.
        role: &'static str,
        /// The name the user wrote.
        name: String,
        /// Comma-separated list of the available connectors.
        known: String,
    },

    /// An option key the connector does not understand (often a typo).
    #[error("unknown option '{option}' for connector {connector}; known options: {known}")]
    UnknownOption {
        /// Connector the option was given to, e.g. `FILE source`.
        connector: String,
        /// The option key as given (lowercased).
        option: String,
        /// Comma-separated list of the options the connector accepts.
        known: String,
    },

    /// A required option is absent.
    #[error("connector {connector} requires option '{option}'")]
    MissingOption {
        /// Connector the option is required by.
        connector: String,
        /// The missing option key.
        option: String,
    },

    /// An option is present but its value is not acceptable.
    #[error("invalid value '{value}' for option '{option}' of connector {connector}: {reason}")]
    InvalidOption {
        /// Connector the option was given to.
        connector: String,
        /// The option key.
        option: String,
        /// The value as given.
        value: String,
        /// What is wrong and what would be accepted.
        reason: String,
    },

    /// The connector cannot infer a schema and the source declared none.
    #[error("connector {connector} with {detail} needs declared columns, e.g. CREATE SOURCE s (id BIGINT, name VARCHAR) FROM ...")]
    SchemaRequired {
        /// Connector that needs the schema.
        connector: String,
        /// Why, e.g. `format 'csv'`.
        detail: String,
    },

    /// A declared column does not exist in the data the connector produces.
    #[error("column {column} does not exist in {origin}; available columns: {available}")]
    ColumnNotFound {
        /// The declared column.
        column: String,
        /// Where it was looked for: a file path or a generator table.
        origin: String,
        /// Comma-separated list of the columns that do exist.
        available: String,
    },

    /// A declared column exists but its type cannot be produced from the data's type.
    #[error("column {column} is declared as {declared} but {origin} has {actual}")]
    ColumnType {
        /// The declared column.
        column: String,
        /// A file path or a generator table.
        origin: String,
        /// The declared data type.
        declared: String,
        /// The data type the connector has for that column.
        actual: String,
    },

    /// A declared column has a type the file format cannot represent.
    #[error(
        "column {column} has type {data_type}, which the {format} format cannot read or write"
    )]
    UnsupportedType {
        /// The declared column.
        column: String,
        /// Its data type.
        data_type: String,
        /// The file format, e.g. `csv`.
        format: String,
    },

    /// A sink adds a column (`op` of a changelog) that the result already has.
    #[error(
        "connector {connector} adds column {column} to the rows of a changelog, and the query \
         already has a column of that name; rename it (AS ...)"
    )]
    ColumnClash {
        /// Connector adding the column.
        connector: String,
        /// The added column.
        column: String,
    },

    /// A file `path` (possibly a glob) matched no file when the source was opened.
    #[error("no file matches path '{pattern}'")]
    NoFilesMatched {
        /// The path or glob pattern as given.
        pattern: String,
    },

    /// An operating-system level I/O error on a file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A record in an input file does not fit the declared schema.
    #[error("{file} line {line}{}: {message}", column.as_ref().map(|c| format!(", column {c}")).unwrap_or_default())]
    MalformedRecord {
        /// The input file.
        file: String,
        /// Physical 1-based line of the record in the file (the header counts).
        line: u64,
        /// The offending column, when the problem is a single value.
        column: Option<String>,
        /// What is wrong, e.g. `cannot parse 'abc' as Int64`.
        message: String,
    },

    /// A file could not be decoded or encoded in its format (corrupt parquet, writer failure).
    #[error("{}: {message}", path.display())]
    Format {
        /// The file involved.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },

    /// The connector cannot do what the engine asked (resume a source, commit a sink's
    /// output exactly once).
    #[error("connector {connector} does not support {feature}")]
    Unsupported {
        /// Connector asked, e.g. `FILE sink`.
        connector: String,
        /// What it cannot do, and what to do instead when there is an alternative.
        feature: String,
    },

    /// A source cannot resume from a checkpoint's position because its input changed.
    #[error("cannot resume {connector} '{origin}' from its checkpoint: {partition}: {reason}")]
    ResumeImpossible {
        /// Connector resuming, e.g. `FILE source`.
        connector: String,
        /// The source's `path` (files) or generated table (generators).
        origin: String,
        /// The partition the position no longer fits: a file path, or `partition 3`.
        partition: String,
        /// What changed, e.g. `the file is gone`.
        reason: String,
    },

    /// A sink's pre-committed output cannot be made visible.
    #[error("{}: cannot commit epoch {epoch}: {reason}", path.display())]
    CommitFailed {
        /// The sink's output path.
        path: PathBuf,
        /// The epoch being committed.
        epoch: u64,
        /// What is missing or does not match the pre-commit's record.
        reason: String,
    },

    /// A sink whose durable state became uncertain (a failed fsync, rename or commit)
    /// refuses all further work, rather than risk losing or duplicating output silently.
    #[error(
        "{}: the sink stopped accepting output after an earlier failure ({cause}); reopen the \
         database to recover it",
        path.display()
    )]
    SinkPoisoned {
        /// The sink's output path.
        path: PathBuf,
        /// The first failure.
        cause: String,
    },

    /// A condition the connector code believes impossible; reaching it is a bug.
    #[error("internal error in connector {connector} (this is a bug): {message}")]
    Internal {
        /// Connector where it happened.
        connector: String,
        /// What was observed.
        message: String,
    },
}

impl ConnectorError {
    /// Shorthand for an [`ConnectorError::InvalidOption`].
    pub(crate) fn invalid_option(
        connector: &str,
        option: &str,
        value: &str,
        reason: impl Into<String>,
    ) -> Self {
        Self::InvalidOption {
            connector: connector.to_owned(),
            option: option.to_owned(),
            value: value.to_owned(),
            reason: reason.into(),
        }
    }

    /// Shorthand for an [`ConnectorError::Io`] error on `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_record_message_names_file_line_and_column() {
        let err = ConnectorError::MalformedRecord {
            file: "data/bids.csv".into(),
            line: 7,
            column: Some("price".into()),
            message: "cannot parse 'abc' as Int64".into(),
        };
        assert_eq!(
            err.to_string(),
            "data/bids.csv line 7, column price: cannot parse 'abc' as Int64"
        );
        let err = ConnectorError::MalformedRecord {
            file: "a.csv".into(),
            line: 2,
            column: None,
            message: "expected 3 fields, found 2".into(),
        };
        assert_eq!(err.to_string(), "a.csv line 2: expected 3 fields, found 2");
    }
}
