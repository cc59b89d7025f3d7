//! The error type of the engine core: failures while evaluating operators or moving data
//! between workers, named after the query or stream they concern.

use datafusion::error::DataFusionError;

/// Errors raised by operators and the runtime.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// An expression or kernel failed while processing a batch of a query.
    #[error("query {query}: operator {operator} failed: {source}")]
    Operator {
        /// The stream, view or sink whose query failed.
        query: String,
        /// The operator that failed (e.g. `Filter`).
        operator: String,
        /// The underlying failure.
        #[source]
        source: DataFusionError,
    },
    /// An expression failed outside a query (e.g. a watermark expression).
    #[error("{context}: {source}")]
    Expression {
        /// What was being evaluated, naming the object.
        context: String,
        /// The underlying failure.
        #[source]
        source: DataFusionError,
    },
    /// A bounded queue is full and the caller asked not to wait.
    #[error("source {source_name}: input queue is full ({capacity} batches); retry later or use a blocking push")]
    Full {
        /// The source whose queue is full.
        source_name: String,
        /// The queue's capacity in batches.
        capacity: usize,
    },
    /// The stream no longer accepts input (finished or dropped).
    #[error("source {source_name} is closed: it was finished or dropped and accepts no more rows")]
    Closed {
        /// The closed source.
        source_name: String,
    },
    /// The runtime has shut down.
    #[error("the runtime has shut down")]
    ShutDown,
    /// Waiting for a condition exceeded its deadline.
    #[error("timed out after {waited_ms} ms waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long the caller waited.
        waited_ms: u64,
    },
    /// A broken internal invariant: always a bug in LaminarDB.
    #[error("internal error (this is a bug in LaminarDB, please report it): {0}")]
    Internal(String),
}

/// Result alias of the core crate.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;
