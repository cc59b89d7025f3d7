//! The operator trait every dataflow step implements, and the messages operators exchange.
//!
//! An operator processes batches; watermark and end-of-input hooks have defaults that pass
//! the event through, so a stateless operator implements one method.

mod aggregate;
mod exchange;
mod filter;
mod multiset_accumulator;
mod periodic_emit;
mod project;
mod scan;
mod session_aggregate;
mod union;
mod window_aggregate;

pub use aggregate::{AggregateCall, AggregateOperator};
pub use exchange::{ExchangeOperator, KeyRouter};
pub use filter::FilterOperator;
pub use periodic_emit::PeriodicEmitOperator;
pub use project::ProjectOperator;
pub use scan::ScanOperator;
pub use session_aggregate::{SessionAggregateOperator, SessionWindow};
pub use union::UnionOperator;
pub use window_aggregate::WindowAggregateOperator;

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result as DfResult;
use datafusion::physical_expr::PhysicalExpr;

use crate::change_batch::ChangeBatch;

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

/// A message on a stream: rows, event-time progress, or the end of the stream.
#[derive(Debug, Clone)]
pub enum Message {
    /// Rows (with optional retraction weights).
    Data(ChangeBatch),
    /// No row with an event time below this (epoch milliseconds) will follow.
    Watermark(i64),
    /// The stream is finished; nothing follows.
    End,
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

    /// Called once when every input has ended; flushes whatever is left.
    fn on_end(&mut self, _out: &mut Vec<ChangeBatch>) -> DfResult<()> {
        Ok(())
    }

    /// Entries of keyed state the operator holds now (groups, open windows); 0 if stateless.
    fn state_entries(&self) -> u64 {
        0
    }

    /// Input rows dropped because they arrived after their window fired.
    fn late_rows(&self) -> u64 {
        0
    }

    /// How often `on_timer` runs, in processing time; `None` (the default) for no timer.
    fn timer_interval(&self) -> Option<Duration> {
        None
    }

    /// Called every `timer_interval` while the query runs; may emit rows.
    fn on_timer(&mut self, _out: &mut Vec<ChangeBatch>) -> DfResult<()> {
        Ok(())
    }
}
