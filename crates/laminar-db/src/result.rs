//! `ExecuteResult`: what a statement returned: a confirmation, a row count, or rows.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use laminar_sql::ObjectKind;

/// The outcome of one statement.
#[derive(Debug, Clone)]
pub enum ExecuteResult {
    /// An object was created.
    Created {
        /// Its kind.
        kind: ObjectKind,
        /// Its name.
        name: String,
    },
    /// An object was dropped.
    Dropped {
        /// Its kind.
        kind: ObjectKind,
        /// Its name.
        name: String,
    },
    /// Nothing to do (`IF NOT EXISTS` / `IF EXISTS`).
    Skipped {
        /// Why, naming the object.
        reason: String,
    },
    /// Rows were inserted.
    Inserted {
        /// How many.
        rows: u64,
    },
    /// Rows returned by `SELECT`, `SHOW`, `DESCRIBE` or `EXPLAIN`.
    Rows {
        /// Their schema.
        schema: SchemaRef,
        /// The rows.
        batches: Vec<RecordBatch>,
    },
}

impl ExecuteResult {
    /// A one-line confirmation for shells (`CREATE MATERIALIZED VIEW hot`).
    pub fn message(&self) -> String {
        match self {
            Self::Created { kind, name } => format!("CREATE {kind} {name}"),
            Self::Dropped { kind, name } => format!("DROP {kind} {name}"),
            Self::Skipped { reason } => reason.clone(),
            Self::Inserted { rows } => format!("INSERT {rows}"),
            Self::Rows { batches, .. } => {
                let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
                format!("{rows} row{}", if rows == 1 { "" } else { "s" })
            }
        }
    }

    /// The rows, if the statement returned any.
    pub fn batches(&self) -> Option<&[RecordBatch]> {
        match self {
            Self::Rows { batches, .. } => Some(batches),
            _ => None,
        }
    }
}
