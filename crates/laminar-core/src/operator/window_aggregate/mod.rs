//! Vectorized windowed aggregate for `EMIT ON WINDOW CLOSE` over an append-only input: each
//! open window (by `window_end`) holds DataFusion's columnar group table (`GroupValues`) and
//! one `GroupsAccumulator` per aggregate, so a batch is grouped and accumulated column at a
//! time with no per-row allocation. When the watermark reaches a window's end, its groups
//! are emitted in one batch (in first-seen order) and the window's state is dropped whole.
//!
//! The row-at-a-time `AggregateOperator` covers what this cannot: changelog output, inputs
//! with retractions, allowed lateness (a fired window must stay readable), and aggregates
//! without a groups accumulator (e.g. `COUNT(DISTINCT ..)`).
//!
//! On more than one worker the aggregation runs in two phases, partial states crossing
//! workers instead of input rows ([`phase`]).
//!
//! Snapshots are incremental by window ([`state`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{Field, SchemaRef};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::aggregates::group_values::{new_group_values, GroupValues};
use datafusion::physical_plan::aggregates::order::GroupOrdering;

use super::aggregate::{call_arguments, CallArguments};
use super::change_tracker::{ChangeTracker, EntryFlags};
use super::epoch_ms;
use super::{AggregateCall, Operator};
use crate::change_batch::ChangeBatch;
use crate::state::{OperatorState, RestoredPart};

mod layout;
#[cfg(test)]
mod layout_tests;
mod phase;
#[cfg(test)]
mod phase_tests;
mod state;
#[cfg(test)]
mod tests;

use layout::KeyLayout;
pub use phase::TwoPhase;
use phase::{Phase, PARTIAL_FLUSH_GROUPS};

/// One open window's groups and their accumulators.
struct WindowGroups {
    /// Grouped by the keys the layout does not hold once per window.
    groups: Box<dyn GroupValues>,
    /// The values of the keys held once per window (see [`layout`]), one per such key;
    /// none before the window's first row.
    held: Vec<Option<ArrayRef>>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    /// Received rows since the previous snapshot, or is in one.
    flags: EntryFlags,
}

/// Groups rows per window with DataFusion's vectorized group table and accumulators.
pub struct WindowAggregateOperator {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    calls: Vec<AggregateCall>,
    schema: SchemaRef,
    /// Index of `window_end` among the keys.
    window_end_key: usize,
    /// Which keys the group tables hold and which each window holds once.
    layout: KeyLayout,
    windows: BTreeMap<i64, WindowGroups>,
    watermark_ms: i64,
    late_rows: u64,
    /// Group ids of the rows being accumulated, reused across batches.
    group_ids: Vec<usize>,
    /// Windows that received rows, and windows fired, since the previous snapshot.
    changes: ChangeTracker<i64>,
    /// Which part of a two-phase aggregation this instance computes.
    phase: Phase,
    /// Group tables of fired windows, emptied, for the next windows to open: a new
    /// window's table then need not grow (and rehash) from nothing again.
    spare_groups: Vec<Box<dyn GroupValues>>,
}

/// Emptied group tables kept for reuse. Windows open one after another, but may fire
/// several at a time: a final instance's watermark waits for the slowest worker, and then
/// passes the windows it held back at once. With two spares, the windows opened after such a
/// burst grew their tables from nothing (`reserve_rehash` was ~3% of two workers' profile of
/// the hopping count; with eight, ~1%). The spares hold no more than the windows they
/// came from held when open.
const SPARE_GROUP_TABLES: usize = 8;

impl std::fmt::Debug for WindowAggregateOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl WindowAggregateOperator {
    /// True when every call has a groups accumulator, so this operator can run them.
    pub fn supports(calls: &[AggregateCall]) -> bool {
        calls
            .iter()
            .all(|call| call.function.groups_accumulator_supported())
    }

    /// Groups by `keys` (`window_end_key` among them) and computes `calls`, emitting each
    /// window once when the watermark reaches its end; output rows of `schema` are the keys
    /// followed by one column per call.
    pub fn new(
        keys: Vec<Arc<dyn PhysicalExpr>>,
        calls: Vec<AggregateCall>,
        key_fields: &[Field],
        window_end_key: usize,
        schema: SchemaRef,
    ) -> DfResult<Self> {
        if window_end_key >= keys.len() || !Self::supports(&calls) {
            return Err(DataFusionError::Internal(
                "vectorized window aggregate planned for unsupported keys or calls".into(),
            ));
        }
        let layout = KeyLayout::new(key_fields, window_end_key, None);
        // Fails here, at planning, rather than at the first window, for key types the group
        // table cannot hold.
        new_group_values(Arc::clone(layout.group_schema()), &GroupOrdering::None)?;
        Ok(Self {
            keys,
            calls,
            schema,
            window_end_key,
            layout,
            windows: BTreeMap::new(),
            watermark_ms: i64::MIN,
            late_rows: 0,
            group_ids: Vec::new(),
            changes: ChangeTracker::default(),
            phase: Phase::Single,
            spare_groups: Vec::new(),
        })
    }

    /// Declares key `key` the window's `window_start`: each window then holds it once while
    /// its rows agree on it (see [`layout`]).
    #[must_use]
    pub fn with_window_start_key(mut self, key: usize) -> Self {
        if key < self.keys.len() {
            let fields = self.layout.key_fields();
            self.layout = KeyLayout::new(&fields, self.window_end_key, Some(key));
        }
        self
    }

    /// A fresh instance of the same aggregate (no state) computing `phase`.
    fn forked(&self, phase: Phase) -> Self {
        Self {
            keys: self.keys.clone(),
            calls: self.calls.clone(),
            schema: Arc::clone(&self.schema),
            window_end_key: self.window_end_key,
            layout: self.layout.clone(),
            windows: BTreeMap::new(),
            watermark_ms: i64::MIN,
            late_rows: 0,
            group_ids: Vec::new(),
            changes: ChangeTracker::default(),
            phase,
            spare_groups: Vec::new(),
        }
    }

    fn open_window(&mut self) -> DfResult<WindowGroups> {
        let groups = match self.spare_groups.pop() {
            Some(groups) => groups,
            None => new_group_values(Arc::clone(self.layout.group_schema()), &GroupOrdering::None)?,
        };
        Ok(WindowGroups {
            groups,
            held: Vec::with_capacity(self.layout.constants()),
            accumulators: self
                .calls
                .iter()
                .map(|call| call.function.create_groups_accumulator())
                .collect::<DfResult<_>>()?,
            flags: EntryFlags::default(),
        })
    }

    /// Moves `key` from the keys held once per window into the group tables, rebuilding
    /// every open window with it: rows of one window disagreed on it.
    fn group_by_key(&mut self, key: usize) -> DfResult<()> {
        let open = std::mem::take(&mut self.windows);
        let mut emitted = Vec::with_capacity(open.len());
        for (end, mut window) in open {
            let (keys, states) = self.emit_keys_and_states(&mut window)?;
            emitted.push((end, keys, states, window.flags));
        }
        self.layout = self.layout.grouping(key);
        self.spare_groups.clear();
        for (end, keys, states, flags) in emitted {
            let mut window = self.rebuild_window(&keys, &states)?;
            window.flags = flags;
            self.windows.insert(end, window);
        }
        Ok(())
    }

    /// Makes sure the window ending at `window_end_ms` (open or not) can hold the rows of
    /// `keys` under the current layout, moving keys into the group tables where they
    /// disagree.
    fn settle_layout(&mut self, window_end_ms: i64, keys: &[ArrayRef]) -> DfResult<()> {
        loop {
            let held = self
                .windows
                .get(&window_end_ms)
                .map_or(&[][..], |window| window.held.as_slice());
            match self.layout.disagreeing(keys, held)? {
                Some(key) => self.group_by_key(key)?,
                None => return Ok(()),
            }
        }
    }

    /// Adds rows (all of one window) to that window's groups.
    fn accumulate(
        &mut self,
        window_end_ms: i64,
        keys: &[ArrayRef],
        arguments: &[CallArguments],
    ) -> DfResult<()> {
        self.settle_layout(window_end_ms, keys)?;
        if !self.windows.contains_key(&window_end_ms) {
            let window = self.open_window()?;
            self.windows.insert(window_end_ms, window);
        }
        let Some(window) = self.windows.get_mut(&window_end_ms) else {
            return Ok(());
        };
        self.changes.touch(&mut window.flags, || window_end_ms);
        intern(window, keys, &self.layout, &mut self.group_ids)?;
        let total_groups = window.groups.len();
        let merging = matches!(self.phase, Phase::Final(_));
        for (accumulator, (values, filter)) in window.accumulators.iter_mut().zip(arguments) {
            if merging {
                accumulator.merge_batch(values, &self.group_ids, total_groups)?;
            } else {
                accumulator.update_batch(values, &self.group_ids, filter.as_ref(), total_groups)?;
            }
        }
        Ok(())
    }

    /// Adds the rows of a batch spanning several windows (or holding late rows) to their
    /// windows. Late rows are counted and dropped; a partial instance passes them on for
    /// the final one to judge. Event time mostly ascends within a batch, so a window's rows
    /// are usually one run, added as a zero-copy slice; a window whose rows lie in several
    /// runs gets them gathered.
    fn accumulate_per_window(
        &mut self,
        ends: &[i64],
        keys: &[ArrayRef],
        arguments: &[CallArguments],
        partial: bool,
    ) -> DfResult<()> {
        let runs = runs(ends);
        let mut scattered: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        let mut seen = std::collections::BTreeSet::new();
        let scatter = runs.iter().any(|&(end, _)| !seen.insert(end));
        for (end, rows) in runs {
            if end <= self.watermark_ms && !partial {
                self.late_rows += rows.len() as u64;
            } else if scatter {
                let to = u32::try_from(rows.end).map_err(|_| {
                    DataFusionError::Internal("a batch of more than 2^32 rows".into())
                })?;
                scattered
                    .entry(end)
                    .or_default()
                    .extend(rows.start as u32..to);
            } else {
                let window_keys: Vec<ArrayRef> = keys
                    .iter()
                    .map(|k| k.slice(rows.start, rows.len()))
                    .collect();
                let window_arguments = slice_arguments(arguments, rows.start, rows.len());
                self.accumulate(end, &window_keys, &window_arguments)?;
            }
        }
        for (end, rows) in scattered {
            let rows = UInt32Array::from(rows);
            let window_keys = take_rows(keys, &rows)?;
            let window_arguments = take_arguments(arguments, &rows)?;
            self.accumulate(end, &window_keys, &window_arguments)?;
        }
        Ok(())
    }

    /// Emits and drops every window whose end the watermark reached, oldest first: each
    /// group's final values, or a partial instance's accumulator states.
    fn fire(&mut self, watermark_ms: i64, out: &mut Vec<ChangeBatch>) -> DfResult<()> {
        while let Some(entry) = self.windows.first_entry() {
            let window_end_ms = *entry.key();
            if window_end_ms > watermark_ms {
                break;
            }
            let mut window = entry.remove();
            self.changes.remove(window.flags, || window_end_ms);
            let mut columns = self.emit_keys(&mut window)?;
            let schema = if let Phase::Partial { schema, .. } = &self.phase {
                for accumulator in &mut window.accumulators {
                    columns.extend(accumulator.state(EmitTo::All)?);
                }
                schema
            } else {
                for accumulator in &mut window.accumulators {
                    columns.push(accumulator.evaluate(EmitTo::All)?);
                }
                &self.schema
            };
            let batch = super::batch_of_schema(schema, columns)?;
            let rows = batch.num_rows();
            if rows > 0 {
                out.push(ChangeBatch::insert_only(batch));
            }
            if self.spare_groups.len() < SPARE_GROUP_TABLES {
                // Emptied, keeping the capacity of the groups it held.
                window.groups.clear_shrink(rows);
                self.spare_groups.push(window.groups);
            }
        }
        Ok(())
    }
}

/// Interns the rows of `keys` (all key columns, all rows of `window`) in the window's group
/// table, holding the keys the layout keeps once per window in the window itself.
fn intern(
    window: &mut WindowGroups,
    keys: &[ArrayRef],
    layout: &KeyLayout,
    group_ids: &mut Vec<usize>,
) -> DfResult<()> {
    if layout.constants() == 0 {
        return window.groups.intern(keys, group_ids);
    }
    layout.hold(keys, &mut window.held);
    window
        .groups
        .intern(&layout.grouped_columns(keys), group_ids)
}

impl WindowAggregateOperator {
    /// Every group's key columns (all of them, the keys held once per window put back),
    /// consuming the window's groups.
    fn emit_keys(&self, window: &mut WindowGroups) -> DfResult<Vec<ArrayRef>> {
        let grouped = window.groups.emit(EmitTo::All)?;
        self.layout.all_columns(grouped, &window.held)
    }

    /// Every group's key columns and each call's accumulator states (`[call][field]`),
    /// consuming the window: what a snapshot writes and a rebuild reads.
    fn emit_keys_and_states(
        &self,
        window: &mut WindowGroups,
    ) -> DfResult<(Vec<ArrayRef>, Vec<Vec<ArrayRef>>)> {
        let keys = self.emit_keys(window)?;
        let states = window
            .accumulators
            .iter_mut()
            .map(|accumulator| accumulator.state(EmitTo::All))
            .collect::<DfResult<Vec<_>>>()?;
        Ok((keys, states))
    }
}

/// The runs of equal values of `ends`: each run's value and rows, in order.
fn runs(ends: &[i64]) -> Vec<(i64, std::ops::Range<usize>)> {
    let mut runs = Vec::new();
    let mut start = 0;
    for row in 1..=ends.len() {
        if row == ends.len() || ends[row] != ends[start] {
            runs.push((ends[start], start..row));
            start = row;
        }
    }
    runs
}

/// Call arguments (and their FILTER masks) at rows `offset..offset + len`, zero-copy.
fn slice_arguments(arguments: &[CallArguments], offset: usize, len: usize) -> Vec<CallArguments> {
    arguments
        .iter()
        .map(|(values, mask)| {
            (
                values.iter().map(|v| v.slice(offset, len)).collect(),
                mask.as_ref().map(|m| m.slice(offset, len)),
            )
        })
        .collect()
}

/// `columns` at `rows`.
fn take_rows(columns: &[ArrayRef], rows: &UInt32Array) -> DfResult<Vec<ArrayRef>> {
    Ok(columns
        .iter()
        .map(|column| take(column.as_ref(), rows, None))
        .collect::<Result<_, _>>()?)
}

/// Call arguments (and their FILTER masks) at `rows`.
fn take_arguments(arguments: &[CallArguments], rows: &UInt32Array) -> DfResult<Vec<CallArguments>> {
    arguments
        .iter()
        .map(|(values, mask)| {
            let values = take_rows(values, rows)?;
            let mask = match mask {
                None => None,
                Some(mask) => {
                    let taken = take(mask, rows, None)?;
                    let taken = taken
                        .as_any()
                        .downcast_ref::<BooleanArray>()
                        .ok_or_else(|| DataFusionError::Internal("FILTER mask".into()))?
                        .clone();
                    Some(taken)
                }
            };
            Ok((values, mask))
        })
        .collect()
}

impl Operator for WindowAggregateOperator {
    fn name(&self) -> &'static str {
        "WindowAggregate"
    }

    fn describe(&self) -> String {
        let keys: Vec<String> = self.keys.iter().map(ToString::to_string).collect();
        let calls: Vec<String> = self
            .calls
            .iter()
            .map(|c| c.function.name().to_string())
            .collect();
        let phase = match self.phase {
            Phase::Single => "",
            Phase::Partial { bypass: false, .. } => "partial states, ",
            Phase::Partial { bypass: true, .. } => "partial states (none on one worker), ",
            Phase::Final(_) => "merging partial states, ",
        };
        format!(
            "WindowAggregate [{}] by [{}] ({phase}emit on window close, vectorized)",
            calls.join(", "),
            keys.join(", ")
        )
    }

    fn fork(&self) -> Box<dyn Operator> {
        Box::new(self.forked(self.phase.clone()))
    }

    fn fork_for(&self, workers: usize) -> Box<dyn Operator> {
        Box::new(self.forked(self.phase_for(workers)))
    }

    fn state_entries(&self) -> u64 {
        self.windows
            .values()
            .map(|window| window.groups.len() as u64)
            .sum()
    }

    fn late_rows(&self) -> u64 {
        self.late_rows
    }

    fn state_bytes(&self) -> u64 {
        self.windows
            .values()
            .map(|window| {
                let accumulators: usize = window.accumulators.iter().map(|a| a.size()).sum();
                (window.groups.size() + accumulators) as u64
            })
            .sum()
    }

    fn on_watermark(&mut self, watermark_ms: i64, out: &mut Vec<ChangeBatch>) -> DfResult<()> {
        self.watermark_ms = self.watermark_ms.max(watermark_ms);
        self.fire(self.watermark_ms, out)
    }

    fn on_idle(&mut self, out: &mut Vec<ChangeBatch>) -> DfResult<()> {
        if matches!(self.phase, Phase::Partial { bypass: false, .. }) {
            self.fire(i64::MAX, out)?;
        }
        Ok(())
    }

    fn snapshot(&mut self, full: bool) -> DfResult<Option<OperatorState>> {
        self.snapshot_state(full).map(Some)
    }

    fn restore(&mut self, parts: Vec<RestoredPart>) -> DfResult<()> {
        self.restore_state(&parts)
    }

    fn process(
        &mut self,
        _port: usize,
        input: ChangeBatch,
        out: &mut Vec<ChangeBatch>,
    ) -> DfResult<()> {
        if matches!(self.phase, Phase::Partial { bypass: true, .. }) {
            out.push(input);
            return Ok(());
        }
        if !input.is_insert_only() {
            return Err(DataFusionError::Internal(
                "retractions reached a window aggregate planned for an append-only input".into(),
            ));
        }
        let batch = input.batch();
        let (keys, arguments) = match &self.phase {
            Phase::Final(merge) => {
                let states = merge
                    .states
                    .iter()
                    .map(|range| {
                        let columns = batch.columns().get(range.clone()).ok_or_else(|| {
                            DataFusionError::Internal(format!(
                                "partial window states of {} columns, state columns {range:?} expected",
                                batch.num_columns()
                            ))
                        })?;
                        Ok((columns.to_vec(), None))
                    })
                    .collect::<DfResult<_>>()?;
                (super::evaluate_columns(&merge.keys, batch)?, states)
            }
            _ => (
                super::evaluate_columns(&self.keys, batch)?,
                call_arguments(&self.calls, batch)?,
            ),
        };
        let ends = epoch_ms(&keys[self.window_end_key])?;
        let Some(&first_end) = ends.first() else {
            return Ok(());
        };
        let partial = matches!(self.phase, Phase::Partial { .. });
        // The common case: every row of the batch in one open window.
        if first_end > self.watermark_ms && ends.iter().all(|end| *end == first_end) {
            self.accumulate(first_end, &keys, &arguments)?;
        } else {
            self.accumulate_per_window(&ends, &keys, &arguments, partial)?;
        }
        if partial {
            let open: usize = self.windows.values().map(|w| w.groups.len()).sum();
            let limit = if open > PARTIAL_FLUSH_GROUPS {
                i64::MAX
            } else {
                self.watermark_ms
            };
            self.fire(limit, out)?;
        }
        Ok(())
    }
}
