//! The trait an external lookup source implements, and its error.

use datafusion::arrow::record_batch::RecordBatch;

/// A source of rows looked up by primary key: a database table, a key-value store, a
/// service. LaminarDB calls it from a thread of its own with the keys a lookup join missed
/// in its cache, batched, so it may block (on a network round trip, a query); it is never
/// called on a worker.
///
/// `keys` holds one row per distinct key, its columns the table's primary key columns in
/// declaration order (named and typed as declared). The answer is a batch of the table's
/// rows, all its declared columns in declaration order, for the keys that exist, in any
/// order; a key with no row is simply absent (and joins as no match). A batch whose column
/// types differ from the declared ones is cast to them; one that cannot be is an error.
pub trait LookupSource: Send + Sync {
    /// The rows whose primary key is one of `keys`.
    ///
    /// # Errors
    /// When the source cannot answer. The call is retried (see the table's `retries`
    /// option); once retries are spent, the queries joining the table fail with the error.
    fn lookup(&self, keys: &RecordBatch) -> Result<RecordBatch, LookupError>;
}

/// Why a lookup source could not answer.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct LookupError {
    message: String,
}

impl LookupError {
    /// An error saying `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl From<datafusion::arrow::error::ArrowError> for LookupError {
    fn from(error: datafusion::arrow::error::ArrowError) -> Self {
        Self::new(error.to_string())
    }
}
