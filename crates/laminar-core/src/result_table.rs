//! `ResultTable`: the stored result of a materialized view, appended to by workers and read
//! by snapshot queries. Append-only queries store every row; retracting queries fold their
//! changelog here once keyed results land.

use std::sync::RwLock;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

/// The rows of a materialized view.
#[derive(Debug)]
pub struct ResultTable {
    schema: SchemaRef,
    batches: RwLock<Vec<RecordBatch>>,
}

impl ResultTable {
    /// An empty table with `schema`.
    pub fn new(schema: SchemaRef) -> Self {
        Self {
            schema,
            batches: RwLock::new(Vec::new()),
        }
    }

    /// The table's schema.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Appends inserted rows.
    pub fn append(&self, batch: RecordBatch) {
        if batch.num_rows() == 0 {
            return;
        }
        // A poisoned lock means a reader panicked mid-clone; the data itself is intact.
        let mut batches = self
            .batches
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        batches.push(batch);
    }

    /// A consistent snapshot of the rows (cheap: batches are reference-counted).
    pub fn snapshot(&self) -> Vec<RecordBatch> {
        self.batches
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Number of rows stored.
    pub fn num_rows(&self) -> usize {
        self.batches
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(RecordBatch::num_rows)
            .sum()
    }
}
