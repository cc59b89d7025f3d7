//! Two-phase window aggregation: which part of it an instance computes, and how the parts
//! are built from one planned aggregate.
//!
//! On more than one worker, rows of a window aggregate cross workers to the worker owning
//! their group. Routing every input row costs about as much as aggregating it (hashing the
//! keys, splitting each batch, the copies crossing), so a *partial* instance on each worker
//! first aggregates the rows it has into accumulator states, and only those states (a row
//! per group and window, not per input row) cross the exchange to a *final* instance that
//! merges them, as DataFusion's partial and final `AggregateExec`s do.
//!
//! A partial's output is only ever merged, so it may emit a group's state more than once:
//! - when the window closes on its own worker (before that worker's watermark passes it on,
//!   so the state reaches the final instance ahead of the watermark that closes the window
//!   there);
//! - when its worker's input goes idle (an idle worker no longer holds the final instances'
//!   watermark back, so what it holds must go before it stops holding);
//! - when its open groups pass [`PARTIAL_FLUSH_GROUPS`] (memory stays bounded however many
//!   keys a window has);
//! - at once, for rows whose window already closed on its worker: whether they are late is
//!   the final instance's call, against the watermark of all workers, exactly as one phase
//!   would judge them.
//!
//! On one worker nothing crosses, so the partial instance passes rows through and the final
//! one aggregates them in one phase ([`WindowAggregateOperator::fork_for`]).

use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::error::Result as DfResult;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::PhysicalExpr;

use super::WindowAggregateOperator;

/// Open groups (over all windows) past which a partial instance emits its states early.
pub(super) const PARTIAL_FLUSH_GROUPS: usize = 1 << 18;

/// Which part of the aggregation an instance computes.
#[derive(Debug, Clone)]
pub(super) enum Phase {
    /// All of it: input rows in, each group's final values out.
    Single,
    /// Input rows in, each group's keys and accumulator states out (see the module docs),
    /// in batches of `schema` (the keys, then each call's state fields). `bypass` on one
    /// worker: rows pass through untouched.
    Partial { bypass: bool, schema: SchemaRef },
    /// Partial states in, merged, each group's final values out.
    Final(Merge),
}

/// Where a final instance finds keys and states in its input (the partial instances'
/// output: the keys, then each call's state fields).
#[derive(Debug, Clone)]
pub(super) struct Merge {
    /// The key columns.
    pub(super) keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Each call's state columns.
    pub(super) states: Vec<Range<usize>>,
}

impl Merge {
    /// Reads the output of partial instances with `partial_schema` (keys first, `keys` of
    /// them), whose calls have `state_widths` state fields each.
    fn new(partial_schema: &Schema, keys: usize, state_widths: &[usize]) -> Self {
        let keys = (0..keys)
            .map(|index| {
                Arc::new(Column::new(partial_schema.field(index).name(), index))
                    as Arc<dyn PhysicalExpr>
            })
            .collect();
        let mut next = partial_schema.fields().len() - state_widths.iter().sum::<usize>();
        let states = state_widths
            .iter()
            .map(|width| {
                let range = next..next + width;
                next += width;
                range
            })
            .collect();
        Self { keys, states }
    }
}

/// A window aggregate split in two phases.
pub struct TwoPhase {
    /// Runs before the exchange, on each worker's own rows.
    pub partial: WindowAggregateOperator,
    /// Runs after the exchange, merging the partial states of its keys.
    pub last: WindowAggregateOperator,
    /// The key columns of the partial instances' output, which the exchange routes by.
    pub route_keys: Vec<Arc<dyn PhysicalExpr>>,
}

impl WindowAggregateOperator {
    /// Splits this (single-phase) aggregate into the partial instance that runs before the
    /// exchange and the final instance after it.
    pub fn two_phase(&self) -> DfResult<TwoPhase> {
        let mut fields: Vec<Field> = self.layout.key_fields();
        let mut widths = Vec::with_capacity(self.calls.len());
        for (call, aggregate) in self.calls.iter().enumerate() {
            let states = aggregate.function.state_fields()?;
            widths.push(states.len());
            for (index, state) in states.iter().enumerate() {
                fields.push(Field::new(
                    format!("state_{call}_{index}"),
                    state.data_type().clone(),
                    true,
                ));
            }
        }
        let partial_schema: SchemaRef = Arc::new(Schema::new(fields));
        let merge = Merge::new(
            &partial_schema,
            self.layout.key_schema().fields().len(),
            &widths,
        );
        let route_keys = merge.keys.clone();
        let partial = self.forked(Phase::Partial {
            bypass: false,
            schema: partial_schema,
        });
        let last = self.forked(Phase::Final(merge));
        Ok(TwoPhase {
            partial,
            last,
            route_keys,
        })
    }

    /// The instance for one of `workers` workers: one worker aggregates in one phase.
    pub(super) fn phase_for(&self, workers: usize) -> Phase {
        match (&self.phase, workers) {
            (Phase::Partial { schema, .. }, 1) => Phase::Partial {
                bypass: true,
                schema: Arc::clone(schema),
            },
            (Phase::Final(_), 1) => Phase::Single,
            (phase, _) => phase.clone(),
        }
    }
}
