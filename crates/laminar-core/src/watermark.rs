//! Watermark generation at a source partition: the watermark is the maximum, over the rows
//! seen so far, of the source's `WATERMARK FOR ts AS <expr>` expression (typically
//! `ts - INTERVAL '2' SECOND`), in epoch milliseconds. It never moves backwards.

use std::sync::Arc;

use datafusion::arrow::array::{Array, Int64Array};
use datafusion::arrow::compute::{cast, max};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::physical_expr::PhysicalExpr;

use crate::error::{CoreError, Result};

/// Watermark before any row was seen.
pub const WATERMARK_MIN_MS: i64 = i64::MIN;
/// Watermark after the end of input: every window can close.
pub const WATERMARK_END_MS: i64 = i64::MAX;

/// Tracks one source partition's watermark.
#[derive(Debug, Clone)]
pub struct WatermarkGenerator {
    source: String,
    expr: Arc<dyn PhysicalExpr>,
    current_ms: i64,
}

impl WatermarkGenerator {
    /// A generator for source `source` evaluating `expr` (a `TIMESTAMP` or epoch-millisecond
    /// `BIGINT` expression over the source's columns).
    pub fn new(source: String, expr: Arc<dyn PhysicalExpr>) -> Self {
        Self {
            source,
            expr,
            current_ms: WATERMARK_MIN_MS,
        }
    }

    /// The current watermark in epoch milliseconds.
    pub fn current_ms(&self) -> i64 {
        self.current_ms
    }

    /// Observes a batch; returns the new watermark if it advanced.
    pub fn observe(&mut self, batch: &RecordBatch) -> Result<Option<i64>> {
        let Some(batch_max) = self.batch_max(batch)? else {
            return Ok(None);
        };
        Ok(self.advance(batch_max))
    }

    /// The watermark a batch would allow (the expression's maximum over it), without
    /// advancing; `None` for an empty or all-NULL batch.
    pub fn batch_max(&self, batch: &RecordBatch) -> Result<Option<i64>> {
        if batch.num_rows() == 0 {
            return Ok(None);
        }
        let values = self
            .expr
            .evaluate(batch)
            .and_then(|v| v.into_array(batch.num_rows()))
            .map_err(|source| self.error(source))?;
        max_epoch_ms(values.as_ref()).map_err(|e| self.error(e))
    }

    /// Moves the watermark to `batch_max` if that is later; returns the new watermark if it
    /// advanced.
    pub fn advance(&mut self, batch_max: i64) -> Option<i64> {
        if batch_max > self.current_ms {
            self.current_ms = batch_max;
            Some(batch_max)
        } else {
            None
        }
    }

    fn error(&self, source: DataFusionError) -> CoreError {
        CoreError::Expression {
            context: format!("watermark of source {}", self.source),
            source,
        }
    }
}

/// Maximum of a timestamp or BIGINT (epoch ms) array, in epoch milliseconds; `None` if all
/// values are NULL.
fn max_epoch_ms(values: &dyn Array) -> std::result::Result<Option<i64>, DataFusionError> {
    let as_ms = match values.data_type() {
        DataType::Int64 => cast(values, &DataType::Int64)?,
        DataType::Timestamp(unit, _) => {
            let raw = cast(values, &DataType::Int64)?;
            let raw = raw
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(|| DataFusionError::Internal("timestamp cast to Int64".into()))?;
            let divisor = match unit {
                TimeUnit::Second => return Ok(max(raw).map(|s| s.saturating_mul(1000))),
                TimeUnit::Millisecond => 1,
                TimeUnit::Microsecond => 1_000,
                TimeUnit::Nanosecond => 1_000_000,
            };
            return Ok(max(raw).map(|v| v.div_euclid(divisor)));
        }
        other => {
            return Err(DataFusionError::Plan(format!(
                "watermark expression must be TIMESTAMP or BIGINT (epoch milliseconds), got {other}"
            )))
        }
    };
    let as_ms = as_ms
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| DataFusionError::Internal("Int64 cast".into()))?;
    Ok(max(as_ms))
}
