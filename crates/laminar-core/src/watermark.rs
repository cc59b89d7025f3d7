//! Watermark generation at a source: a partition's watermark is the maximum, over its rows
//! seen so far, of the source's `WATERMARK FOR ts AS <expr>` expression (typically
//! `ts - INTERVAL '2' SECOND`), in epoch milliseconds; the source's is the minimum over its
//! active partitions (`partition_watermarks`). Neither moves backwards. The
//! expression must not decrease as its event-time column grows (as every watermark delay
//! does), so it is evaluated on the batch's latest row only, not on every row. A row whose
//! event time (the `WATERMARK FOR` column) is behind the watermark is late.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array};
use datafusion::arrow::compute::kernels::cmp::lt;
use datafusion::arrow::compute::{cast, max, prep_null_mask_filter};
use datafusion::arrow::datatypes::{
    DataType, Int64Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_expr::PhysicalExpr;

use crate::error::{CoreError, Result};

/// Watermark before any row was seen.
pub const WATERMARK_MIN_MS: i64 = i64::MIN;
/// Watermark after the end of input: every window can close.
pub const WATERMARK_END_MS: i64 = i64::MAX;

/// Evaluates a source's watermark expression over batches, holds the source's watermark and
/// finds the rows behind it.
#[derive(Debug, Clone)]
pub struct WatermarkGenerator {
    source: String,
    expr: Arc<dyn PhysicalExpr>,
    /// The one column the expression reads, when it reads exactly one.
    time_column: Option<usize>,
    /// The `WATERMARK FOR` column, whose value is a row's event time.
    event_time: usize,
    current_ms: i64,
}

impl WatermarkGenerator {
    /// A generator for source `source` evaluating `expr` (a `TIMESTAMP` or epoch-millisecond
    /// `BIGINT` expression over the source's columns); `event_time` is the index of the
    /// `WATERMARK FOR` column.
    pub fn new(source: String, event_time: usize, expr: Arc<dyn PhysicalExpr>) -> Self {
        let columns = collect_columns(&expr);
        let time_column = match columns.iter().collect::<Vec<_>>().as_slice() {
            [column] => Some(column.index()),
            _ => None,
        };
        Self {
            source,
            expr,
            time_column,
            event_time,
            current_ms: WATERMARK_MIN_MS,
        }
    }

    /// The current watermark in epoch milliseconds.
    pub fn current_ms(&self) -> i64 {
        self.current_ms
    }

    /// Sets the watermark a checkpoint recorded (it never moves back).
    pub fn restore(&mut self, watermark_ms: i64) {
        self.current_ms = self.current_ms.max(watermark_ms);
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

    /// Which rows of `batch` are late: their event time is earlier than the current
    /// watermark. `None` when no row is (always before the first watermark). A NULL event
    /// time is never late.
    pub fn late_rows(&self, batch: &RecordBatch) -> Result<Option<BooleanArray>> {
        if self.current_ms == WATERMARK_MIN_MS || batch.num_rows() == 0 {
            return Ok(None);
        }
        let column = batch.columns().get(self.event_time).ok_or_else(|| {
            CoreError::Internal(format!(
                "source {}: event-time column {} missing from a batch of {} columns",
                self.source,
                self.event_time,
                batch.num_columns()
            ))
        })?;
        let (raw, threshold) =
            event_time_threshold(column, self.current_ms).map_err(|e| self.error(e.into()))?;
        let late =
            lt(&raw, &Int64Array::new_scalar(threshold)).map_err(|e| self.error(e.into()))?;
        let late = if late.null_count() > 0 {
            prep_null_mask_filter(&late)
        } else {
            late
        };
        Ok((late.true_count() > 0).then_some(late))
    }

    fn error(&self, source: DataFusionError) -> CoreError {
        CoreError::Expression {
            context: format!("watermark of source {}", self.source),
            source,
        }
    }
}

/// An event-time column as raw integers in its own unit, and the value in that unit below
/// which a row is earlier than `watermark_ms`. Comparing in the column's unit keeps
/// sub-millisecond times exact: a time is behind a whole-millisecond watermark exactly when
/// its raw value is below the watermark scaled to the unit (rounded up for seconds).
fn event_time_threshold(
    column: &ArrayRef,
    watermark_ms: i64,
) -> std::result::Result<(ArrayRef, i64), datafusion::arrow::error::ArrowError> {
    match column.data_type() {
        DataType::Int64 => Ok((Arc::clone(column), watermark_ms)),
        DataType::Timestamp(unit, _) => {
            let threshold = match unit {
                TimeUnit::Second => {
                    watermark_ms.div_euclid(1000) + i64::from(watermark_ms.rem_euclid(1000) != 0)
                }
                TimeUnit::Millisecond => watermark_ms,
                TimeUnit::Microsecond => watermark_ms.saturating_mul(1_000),
                TimeUnit::Nanosecond => watermark_ms.saturating_mul(1_000_000),
            };
            Ok((cast(column, &DataType::Int64)?, threshold))
        }
        // Any other event-time type (a DATE, say) compares as a millisecond timestamp.
        _ => {
            let as_ms = cast(column, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
            Ok((cast(&as_ms, &DataType::Int64)?, watermark_ms))
        }
    }
}

/// Index of the largest non-NULL value of a TIMESTAMP or BIGINT column; `None` if all are
/// NULL.
fn latest_row(values: &dyn Array) -> Option<usize> {
    let raw = raw_i64(values)?;
    if values.null_count() == 0 {
        // Two passes a compiler vectorizes, rather than one comparing options per value:
        // this runs on every pushed batch, on the pushing thread.
        let top = *raw.iter().max()?;
        return raw.iter().position(|value| *value == top);
    }
    let mut best: Option<(usize, i64)> = None;
    for (index, value) in raw.iter().enumerate() {
        if values.is_valid(index) && best.is_none_or(|(_, top)| *value > top) {
            best = Some((index, *value));
        }
    }
    best.map(|(index, _)| index)
}

/// The raw values of a BIGINT or timestamp (any unit) array, without a copy.
pub(crate) fn raw_i64(values: &dyn Array) -> Option<&[i64]> {
    let raw: &[i64] = match values.data_type() {
        DataType::Int64 => values.as_primitive_opt::<Int64Type>()?.values(),
        DataType::Timestamp(TimeUnit::Second, _) => {
            values.as_primitive_opt::<TimestampSecondType>()?.values()
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => values
            .as_primitive_opt::<TimestampMillisecondType>()?
            .values(),
        DataType::Timestamp(TimeUnit::Microsecond, _) => values
            .as_primitive_opt::<TimestampMicrosecondType>()?
            .values(),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => values
            .as_primitive_opt::<TimestampNanosecondType>()?
            .values(),
        _ => return None,
    };
    Some(raw)
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{TimestampMicrosecondArray, TimestampSecondArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::physical_expr::expressions::col;

    /// The rows of a one-column batch that are late once the watermark is `watermark_ms`.
    fn late_at(column: ArrayRef, watermark_ms: i64) -> Vec<bool> {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "ts",
            column.data_type().clone(),
            true,
        )]));
        let batch = RecordBatch::try_new(Arc::clone(&schema), vec![column]).expect("batch");
        let mut generator =
            WatermarkGenerator::new("s".into(), 0, col("ts", &schema).expect("column"));
        assert_eq!(generator.late_rows(&batch).expect("late rows"), None);
        generator.advance(watermark_ms);
        generator.late_rows(&batch).expect("late rows").map_or_else(
            || vec![false; batch.num_rows()],
            |late| late.iter().map(|l| l == Some(true)).collect(),
        )
    }

    #[test]
    fn a_row_is_late_when_its_event_time_is_before_the_watermark() {
        let ms = Arc::new(Int64Array::from(vec![Some(99), Some(100), None, Some(101)]));
        assert_eq!(late_at(ms, 100), vec![true, false, false, false]);
    }

    #[test]
    fn lateness_is_exact_in_the_column_unit() {
        // Watermark 1.5 s: 1 s is before it, 2 s is not.
        let seconds = Arc::new(TimestampSecondArray::from(vec![1, 2]));
        assert_eq!(late_at(seconds, 1_500), vec![true, false]);
        // Watermark 10 ms: 9.999 ms is before it, 10 ms and 10.001 ms are not.
        let micros = Arc::new(TimestampMicrosecondArray::from(vec![9_999, 10_000, 10_001]));
        assert_eq!(late_at(micros, 10), vec![true, false, false]);
    }
}
