//! `ChangeBatch`: the unit of data moving through the engine, an Arrow batch plus an
//! optional weight per row (+1 insert, -1 retract), i.e. a Z-set. Append-only streams carry
//! no weights, so the common case costs nothing extra.

use datafusion::arrow::array::Int64Array;
use datafusion::arrow::record_batch::RecordBatch;

/// A batch of rows with optional change weights.
#[derive(Debug, Clone)]
pub struct ChangeBatch {
    batch: RecordBatch,
    weights: Option<Int64Array>,
}

impl ChangeBatch {
    /// A batch where every row is an insert.
    pub fn insert_only(batch: RecordBatch) -> Self {
        Self {
            batch,
            weights: None,
        }
    }

    /// A batch with explicit weights; `weights.len()` must equal the row count.
    pub fn with_weights(batch: RecordBatch, weights: Int64Array) -> Self {
        debug_assert_eq!(batch.num_rows(), weights.len());
        Self {
            batch,
            weights: Some(weights),
        }
    }

    /// The rows.
    pub fn batch(&self) -> &RecordBatch {
        &self.batch
    }

    /// Consumes the change batch, returning its rows.
    pub fn into_batch(self) -> RecordBatch {
        self.batch
    }

    /// The weight per row, or `None` when every row is an insert.
    pub fn weights(&self) -> Option<&Int64Array> {
        self.weights.as_ref()
    }

    /// True when every row is an insert.
    pub fn is_insert_only(&self) -> bool {
        self.weights.is_none()
    }

    /// Number of rows.
    pub fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }

    /// Replaces the rows, keeping the weights (for operators that change columns, not rows).
    pub fn map_batch(self, batch: RecordBatch) -> Self {
        debug_assert_eq!(batch.num_rows(), self.batch.num_rows());
        Self {
            batch,
            weights: self.weights,
        }
    }
}
