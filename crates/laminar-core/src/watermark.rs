//! Watermark generation at a source partition: the watermark is the maximum, over the rows
//! seen so far, of the source's `WATERMARK FOR ts AS <expr>` expression (typically
//! `ts - INTERVAL '2' SECOND`), in epoch milliseconds. It never moves backwards. The
//! expression must not decrease as its event-time column grows (as every watermark delay
//! does), so it is evaluated on the batch's latest row only, not on every row.

use std::sync::Arc;

use datafusion::arrow::array::{Array, Int64Array};
use datafusion::arrow::compute::{cast, max};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::physical_expr::utils::collect_columns;
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
    /// The one column the expression reads, when it reads exactly one.
    time_column: Option<usize>,
    current_ms: i64,
}

impl WatermarkGenerator {
    /// A generator for source `source` evaluating `expr` (a `TIMESTAMP` or epoch-millisecond
    /// `BIGINT` expression over the source's columns).
    pub fn new(source: String, expr: Arc<dyn PhysicalExpr>) -> Self {
        let columns = collect_columns(&expr);
        let time_column = match columns.iter().collect::<Vec<_>>().as_slice() {
            [column] => Some(column.index()),
            _ => None,
        };
        Self {
            source,
            expr,
            time_column,
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
        // The latest row gives the largest watermark: evaluate the expression there only.
        let column = self.time_column.map(|index| batch.column(index));
        let latest = match column {
            Some(column)
                if matches!(
                    column.data_type(),
                    DataType::Timestamp(..) | DataType::Int64
                ) =>
            {
                match latest_row(column.as_ref()) {
                    Some(row) => Some(batch.slice(row, 1)),
                    // Every event time is NULL: nothing to learn from this batch.
                    None => return Ok(None),
                }
            }
            _ => None,
        };
        let batch = latest.as_ref().unwrap_or(batch);
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

/// Index of the largest non-NULL value of a TIMESTAMP or BIGINT column; `None` if all are
/// NULL.
fn latest_row(values: &dyn Array) -> Option<usize> {
    let as_int = cast(values, &DataType::Int64).ok()?;
    let as_int = as_int.as_any().downcast_ref::<Int64Array>()?;
    let mut best: Option<(usize, i64)> = None;
    for (index, value) in as_int.iter().enumerate() {
        if let Some(value) = value {
            if best.is_none_or(|(_, top)| value > top) {
                best = Some((index, value));
            }
        }
    }
    best.map(|(index, _)| index)
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
