//! The operator trait every dataflow step implements, and the messages operators exchange.
//!
//! An operator processes batches; watermark and end-of-input hooks have defaults that pass
//! the event through, so a stateless operator implements one method.

mod accumulator_state;
mod aggregate;
mod asof_join;
mod change_tracker;
mod exchange;
mod filter;
mod join;
mod lookup_join;
mod lookup_source_join;
mod multiset_accumulator;
mod periodic_emit;
mod project;
mod scan;
mod session_aggregate;
#[cfg(test)]
mod snapshot_harness;
#[cfg(test)]
mod test_support;
mod top_n;
mod union;
mod window_aggregate;

pub use aggregate::{AggregateCall, AggregateOperator, KeyedWatermark};
pub use asof_join::{AsofDirection, AsofJoinOperator, AsofJoinSide, AsofJoinSpec};
pub use exchange::{ExchangeOperator, KeyRouter};
pub use filter::FilterOperator;
pub use join::{IntervalJoinOperator, JoinSpec, RegularJoinOperator, TimeBound};
pub use lookup_join::LookupJoinOperator;
pub use lookup_source_join::{LookupSourceJoinOperator, LookupSourceJoinSpec};
pub use periodic_emit::PeriodicEmitOperator;
pub use project::ProjectOperator;
pub use scan::ScanOperator;
pub use session_aggregate::{SessionAggregateOperator, SessionWindow};
pub use top_n::TopNOperator;
pub use union::UnionOperator;
pub use window_aggregate::{TwoPhase, WindowAggregateOperator};

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Array, ArrayRef, Int64Array, Int8Array};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::physical_expr::PhysicalExpr;

use crate::change_batch::ChangeBatch;
use crate::state::{OperatorState, RestoredPart};

/// Evaluates every expression over `batch`, as full columns.
pub(crate) fn evaluate_columns<'a>(
    exprs: impl IntoIterator<Item = &'a Arc<dyn PhysicalExpr>>,
    batch: &RecordBatch,
) -> DfResult<Vec<ArrayRef>> {
    let rows = batch.num_rows();
    exprs
        .into_iter()
        .map(|e| e.evaluate(batch)?.into_array(rows))
        .collect()
}

/// The key of the one group (or partition) of an operator keyed by nothing, such as a
/// global aggregate: its rows have no key columns to convert.
pub(crate) fn global_key() -> DfResult<OwnedRow> {
    let converter = RowConverter::new(vec![SortField::new(DataType::Int8)])?;
    let rows = converter.convert_columns(&[Arc::new(Int8Array::from(vec![0])) as ArrayRef])?;
    Ok(rows.row(0).owned())
}

/// Epoch milliseconds of a timestamp (any unit) or BIGINT key column; NULL as `i64::MAX`
/// (a window that never closes before the end of input).
pub(crate) fn epoch_ms(values: &ArrayRef) -> DfResult<Vec<i64>> {
    let (multiplier, divisor) = match values.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => (1_000, 1),
        DataType::Timestamp(TimeUnit::Millisecond, _) | DataType::Int64 => (1, 1),
        DataType::Timestamp(TimeUnit::Microsecond, _) => (1, 1_000),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => (1, 1_000_000),
        other => {
            return Err(DataFusionError::Plan(format!(
                "window_end must be a TIMESTAMP, got {other}"
            )))
        }
    };
    let raw = datafusion::arrow::compute::cast(values, &DataType::Int64)?;
    let raw = raw
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| DataFusionError::Internal("cast to Int64".into()))?;
    if raw.null_count() == 0 {
        // The common case, without a validity check per value (a copy for milliseconds).
        let values = raw.values();
        if (multiplier, divisor) == (1, 1) {
            return Ok(values.to_vec());
        }
        return Ok(values
            .iter()
            .map(|v| v.saturating_mul(multiplier).div_euclid(divisor))
            .collect());
    }
    Ok(raw
        .iter()
        .map(|v| {
            v.map_or(i64::MAX, |v| {
                v.saturating_mul(multiplier).div_euclid(divisor)
            })
        })
        .collect())
}

/// An aggregate's output batch of `schema` from `columns`: aggregate results may be typed
/// more loosely than the planned schema (e.g. a nullable count), whose types are
/// authoritative, so a column of another type is cast.
pub(crate) fn batch_of_schema(schema: &SchemaRef, columns: Vec<ArrayRef>) -> DfResult<RecordBatch> {
    let columns = cast_to_fields(columns, schema.fields())?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// `columns` cast, where their types differ, to those of `fields` (pairwise).
pub(crate) fn cast_to_fields(
    columns: Vec<ArrayRef>,
    fields: &datafusion::arrow::datatypes::Fields,
) -> DfResult<Vec<ArrayRef>> {
    Ok(columns
        .into_iter()
        .zip(fields)
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(column)
            } else {
                datafusion::arrow::compute::cast(&column, field.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?)
}

/// A message on a stream: rows, event-time progress, or the end of the stream.
#[derive(Debug, Clone)]
pub enum Message {
    /// Rows (with optional retraction weights).
    Data(ChangeBatch),
    /// No row with an event time below this (epoch milliseconds) will follow. Also ends an
    /// idle spell: the stream holds watermarks back again.
    Watermark(i64),
    /// The stream's sources have been silent for their idle timeout: until its next
    /// watermark (or rows), it holds no watermark back where it is merged with others.
    Idle,
    /// The stream is finished; nothing follows.
    End,
    /// A checkpoint's barrier: everything before it belongs to the checkpoint, everything
    /// after it to the next (see `runtime::checkpoint`).
    Barrier(std::sync::Arc<crate::runtime::Barrier>),
}

/// One step of a continuous query, instantiated once per worker.
///
/// Operators receive inputs already merged per port by the query instance: watermarks arrive
/// as the minimum over all input ports, and `on_end` is called once every port has ended.
pub trait Operator: Send {
    /// Short name shown in `EXPLAIN` and errors (e.g. `Filter`).
    fn name(&self) -> &'static str;

    /// One-line description of what the operator does, for `EXPLAIN`.
    fn describe(&self) -> String;

    /// A fresh instance for another worker (state is not shared between workers).
    fn fork(&self) -> Box<dyn Operator>;

    /// A fresh instance for one of `workers` workers: an operator whose work differs with
    /// the number of workers (a partial aggregate, which has nothing to save on one worker)
    /// adapts here. The default is [`Self::fork`].
    fn fork_for(&self, workers: usize) -> Box<dyn Operator> {
        let _ = workers;
        self.fork()
    }

    /// Processes a batch arriving on input `port`, appending results to `out`.
    fn process(
        &mut self,
        port: usize,
        input: ChangeBatch,
        out: &mut Vec<ChangeBatch>,
    ) -> DfResult<()>;

    /// Called when the operator's input watermark advances; may emit rows (e.g. closed windows).
    fn on_watermark(&mut self, _watermark_ms: i64, _out: &mut Vec<ChangeBatch>) -> DfResult<()> {
        Ok(())
    }

    /// Called when every input port went idle, before the operator says so downstream (an
    /// idle input no longer holds the watermark back downstream); may emit rows.
    fn on_idle(&mut self, _out: &mut Vec<ChangeBatch>) -> DfResult<()> {
        Ok(())
    }

    /// The watermark passed downstream once `on_watermark(watermark_ms)` returned: lower
    /// than it while the operator still holds rows it will emit later with event times
    /// behind it (an ASOF join's left rows waiting for a match), or emits rows that much
    /// older than its input watermark (an interval join pairing a new row with older ones),
    /// so they are not late downstream.
    fn output_watermark(&self, watermark_ms: i64) -> i64 {
        watermark_ms
    }

    /// Whether input `port`'s watermark holds the operator's input watermark back (the
    /// minimum over ports). A lookup join's table says nothing of its stream rows' times.
    fn holds_watermark(&self, _port: usize) -> bool {
        true
    }

    /// True when the operator's answer depends on where its input batches begin and end
    /// (keyed watermarks advance once per batch), so the runtime must not merge queued
    /// batches anywhere upstream of it.
    fn needs_batch_boundaries(&self) -> bool {
        false
    }

    /// Called once when every input has ended; flushes whatever is left.
    fn on_end(&mut self, _out: &mut Vec<ChangeBatch>) -> DfResult<()> {
        Ok(())
    }

    /// Entries of keyed state the operator holds now (groups, open windows); 0 if stateless.
    fn state_entries(&self) -> u64 {
        0
    }

    /// Input rows dropped because they arrived after their window fired (or, for a join,
    /// after their matches may have left the state).
    fn late_rows(&self) -> u64 {
        0
    }

    /// Approximate bytes of keyed state held now (keys and accumulators); 0 if stateless.
    /// May cost time proportional to the state: the runtime samples it, not per batch.
    fn state_bytes(&self) -> u64 {
        0
    }

    /// How often `on_timer` runs, in processing time; `None` (the default) for no timer.
    fn timer_interval(&self) -> Option<Duration> {
        None
    }

    /// Called every `timer_interval` while the query runs and `timer_armed` holds; may emit
    /// rows (after which the output watermark is asked again: a timer may release rows that
    /// held it back).
    fn on_timer(&mut self, _out: &mut Vec<ChangeBatch>) -> DfResult<()> {
        Ok(())
    }

    /// Whether `on_timer` has work now. A disarmed timer neither runs nor wakes a parked
    /// worker: an operator that polls for work done off the worker (a lookup join waiting
    /// for its source) costs nothing while it waits for nothing.
    fn timer_armed(&self) -> bool {
        true
    }

    /// The operator's state for a checkpoint, taken between messages at a consistent cut:
    /// with `full`, the whole state; otherwise what changed since the previous call (an
    /// operator may always answer with a full snapshot). `None` when it holds no state.
    ///
    /// A call resets what counts as changed, so if the checkpoint it was for fails, the
    /// runtime asks for a full snapshot next time.
    fn snapshot(&mut self, _full: bool) -> DfResult<Option<OperatorState>> {
        Ok(None)
    }

    /// Replaces the state of a freshly forked operator with `parts` (the latest entry per
    /// key over its snapshots), before it sees any message. Restoring state into an
    /// operator that holds none is an error.
    fn restore(&mut self, parts: Vec<RestoredPart>) -> DfResult<()> {
        if parts
            .iter()
            .all(|p| p.batches.iter().all(|b| b.num_rows() == 0))
        {
            Ok(())
        } else {
            Err(DataFusionError::Internal(format!(
                "operator {} keeps no state, but a checkpoint holds state for it",
                self.name()
            )))
        }
    }
}
