//! Aggregate: unwindowed `GROUP BY` (and global aggregates) over an append-only input or a
//! changelog, producing a changelog. Each group keeps one DataFusion `Accumulator` per
//! aggregate (over a changelog, one that retracts rows); after a batch, every group it
//! touched retracts its previous result row and inserts the new one, so a view folding the
//! changelog always holds one row per live group. The runtime routes rows by group key, so
//! each worker owns a disjoint set of groups. With `EMIT ON WINDOW CLOSE` over a source with
//! keyed watermarks, each group fires by the watermark of its key instead
//! ([`keyed`]). Snapshots are incremental by group ([`state`]).

use datafusion::common::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, UInt32Array,
};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::PhysicalExpr;

use super::change_tracker::{ChangeTracker, EntryFlags};
use super::multiset_accumulator::MultisetAggregate;
use super::Operator;
use crate::change_batch::ChangeBatch;
use crate::state::{OperatorState, RestoredPart};
use crate::watermark::WATERMARK_END_MS;
pub(crate) use keyed::keyed_output_watermark;
use keyed::KeyedWatermarks;

mod keyed;
mod state;
#[cfg(test)]
mod tests;

pub use keyed::KeyedWatermark;

/// One aggregate call: the function, and its `FILTER (WHERE ...)` if any.
#[derive(Debug, Clone)]
pub struct AggregateCall {
    /// The function with its argument expressions.
    pub function: Arc<AggregateFunctionExpr>,
    /// Rows the call sees, if filtered.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
}

/// How the accumulators of one call retract rows of a changelog.
#[derive(Debug, Clone)]
enum Accumulation {
    /// DataFusion's `retract_batch`, exact for order-independent aggregates.
    Sliding,
    /// The multiset of the group's argument rows, for any aggregate.
    Multiset(Arc<MultisetAggregate>),
}

struct Group {
    accumulators: Vec<Box<dyn Accumulator>>,
    /// For `EMIT ON WINDOW CLOSE`: the group's window end, epoch milliseconds.
    window_end_ms: i64,
    /// Rows in the group (inserts minus retractions); at zero the group is gone.
    rows: i64,
    /// The result row last emitted for the group, to retract when it changes.
    emitted: Option<Vec<ScalarValue>>,
    /// Changed since the previous snapshot, or in one.
    flags: EntryFlags,
}

/// Groups rows and maintains aggregates, emitting retract/insert pairs.
pub struct AggregateOperator {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    calls: Vec<AggregateCall>,
    schema: SchemaRef,
    key_fields: Vec<SortField>,
    converter: RowConverter,
    groups: HashMap<OwnedRow, Group>,
    /// The one group of an aggregate without `GROUP BY` (rows have no key to convert).
    global_key: Option<OwnedRow>,
    /// `EMIT ON WINDOW CLOSE`: the index of `window_end` among the keys.
    window_end_key: Option<usize>,
    /// Retractions of rows the aggregate never received, ignored.
    unmatched_retractions: u64,
    /// How long after firing a window still accepts (and corrects with) late rows.
    allowed_lateness_ms: i64,
    /// The input carries retractions: accumulators are the retractable kinds.
    retracting: bool,
    /// With `retracting`, how each call's accumulators retract.
    accumulation: Vec<Accumulation>,
    watermark_ms: i64,
    late_rows: u64,
    /// With `EMIT ON WINDOW CLOSE`: the watermark of each key, when groups fire per key.
    keyed: Option<Box<KeyedWatermarks>>,
    /// Groups changed and removed since the previous snapshot.
    changes: ChangeTracker<OwnedRow>,
}

impl std::fmt::Debug for AggregateOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl AggregateOperator {
    /// Groups by `keys` (evaluated over the input) and computes `calls`; rows of the output
    /// `schema` are the key columns followed by one column per call.
    pub fn new(
        keys: Vec<Arc<dyn PhysicalExpr>>,
        calls: Vec<AggregateCall>,
        key_fields: Vec<SortField>,
        schema: SchemaRef,
    ) -> DfResult<Self> {
        let keys_empty = keys.is_empty();
        Ok(Self {
            keys,
            calls,
            schema,
            converter: RowConverter::new(key_fields.clone())?,
            global_key: if keys_empty {
                Some(super::global_key()?)
            } else {
                None
            },
            key_fields,
            groups: HashMap::new(),
            window_end_key: None,
            unmatched_retractions: 0,
            allowed_lateness_ms: 0,
            retracting: false,
            accumulation: Vec::new(),
            watermark_ms: i64::MIN,
            late_rows: 0,
            keyed: None,
            changes: ChangeTracker::default(),
        })
    }

    /// Emits each group once, when the watermark reaches its window end (key `window_end`),
    /// and frees it; rows of windows already closed are dropped and counted.
    /// With `allowed_lateness_ms`, a fired window keeps its state that much longer and a late
    /// row retracts the fired row and emits the corrected one.
    pub fn emit_on_window_close(mut self, window_end: usize, allowed_lateness_ms: i64) -> Self {
        self.window_end_key = Some(window_end);
        self.allowed_lateness_ms = allowed_lateness_ms.max(0);
        self
    }

    /// With `emit_on_window_close`: a group fires when the watermark of its key (the group
    /// keys at `spec.key_positions`) reaches its window end, and its rows are late by that
    /// watermark. The input's watermark then only ends the input, and the operator forwards
    /// none before: a key never seen may still bring rows of any window.
    pub fn keyed_watermarks(mut self, spec: KeyedWatermark) -> DfResult<Self> {
        self.keyed = Some(Box::new(KeyedWatermarks::new(spec, &self.key_fields)?));
        Ok(self)
    }

    /// Consumes a changelog over input rows of `input_schema`: retracted rows are removed
    /// from their groups. Order-independent aggregates (COUNT, SUM, AVG, STDDEV, VARIANCE)
    /// retract with DataFusion's own `retract_batch`; every other aggregate (MIN, MAX,
    /// FIRST_VALUE, DISTINCT, ARRAY_AGG, ...) keeps the multiset of its argument rows.
    /// Fails, naming the function, only for arguments the row encoding cannot hold.
    pub fn retracting(mut self, input_schema: &Schema) -> DfResult<Self> {
        let mut accumulation = Vec::with_capacity(self.calls.len());
        for call in &self.calls {
            let function = call.function.fun().name().to_lowercase();
            // DataFusion's sliding accumulators for MIN, MAX, FIRST_VALUE, ... retract in
            // arrival order (a moving frame); a changelog retracts any row, so only
            // order-independent aggregates retract natively.
            let order_independent = RETRACTABLE_AGGREGATES.contains(&function.as_str())
                && !call.function.is_distinct()
                && call
                    .function
                    .create_sliding_accumulator()
                    .is_ok_and(|a| a.supports_retract_batch());
            if order_independent {
                accumulation.push(Accumulation::Sliding);
                continue;
            }
            let ordering = call.function.order_bys().iter().map(|sort| &sort.expr);
            let argument_types = call
                .function
                .expressions()
                .iter()
                .chain(ordering)
                .map(|e| e.data_type(input_schema))
                .collect::<DfResult<Vec<_>>>()?;
            let multiset = MultisetAggregate::new(Arc::clone(&call.function), &argument_types)?;
            accumulation.push(Accumulation::Multiset(Arc::new(multiset)));
        }
        self.accumulation = accumulation;
        self.retracting = true;
        Ok(self)
    }

    fn accumulators(&self) -> DfResult<Vec<Box<dyn Accumulator>>> {
        if !self.retracting {
            return self
                .calls
                .iter()
                .map(|c| c.function.create_accumulator())
                .collect();
        }
        self.calls
            .iter()
            .zip(&self.accumulation)
            .map(|(call, accumulation)| match accumulation {
                Accumulation::Sliding => call.function.create_sliding_accumulator(),
                Accumulation::Multiset(multiset) => Ok(multiset.accumulator()),
            })
            .collect()
    }
}

impl Operator for AggregateOperator {
    fn name(&self) -> &'static str {
        "Aggregate"
    }

    fn describe(&self) -> String {
        let keys: Vec<String> = self.keys.iter().map(ToString::to_string).collect();
        let calls: Vec<String> = self
            .calls
            .iter()
            .map(|c| c.function.name().to_string())
            .collect();
        let emit = match (&self.keyed, self.window_end_key) {
            (Some(keyed), _) => {
                format!("emit on window close {}", keyed.describe(&self.keys))
            }
            (None, Some(_)) => "emit on window close".to_string(),
            (None, None) => "changelog".to_string(),
        };
        format!(
            "Aggregate [{}] by [{}] ({emit})",
            calls.join(", "),
            keys.join(", "),
        )
    }

    fn fork(&self) -> Box<dyn Operator> {
        Box::new(Self {
            keys: self.keys.clone(),
            calls: self.calls.clone(),
            schema: self.schema.clone(),
            key_fields: self.key_fields.clone(),
            // `new` built a converter from these very fields, so building another cannot fail.
            converter: RowConverter::new(self.key_fields.clone())
                .expect("key types were accepted when the prototype was built"),
            groups: HashMap::new(),
            global_key: self.global_key.clone(),
            window_end_key: self.window_end_key,
            unmatched_retractions: 0,
            allowed_lateness_ms: self.allowed_lateness_ms,
            retracting: self.retracting,
            accumulation: self.accumulation.clone(),
            watermark_ms: i64::MIN,
            late_rows: 0,
            keyed: self.keyed.as_ref().map(|keyed| Box::new(keyed.fork())),
            changes: ChangeTracker::default(),
        })
    }

    fn state_entries(&self) -> u64 {
        (self.groups.len() + self.keyed.as_ref().map_or(0, |keyed| keyed.len())) as u64
    }

    fn late_rows(&self) -> u64 {
        self.late_rows
    }

    fn state_bytes(&self) -> u64 {
        let keys = self.keyed.as_ref().map_or(0, |keyed| keyed.bytes()) as u64;
        keys + self
            .groups
            .iter()
            .map(|(key, group)| {
                let accumulators: usize = group.accumulators.iter().map(|a| a.size()).sum();
                (key.row().as_ref().len() + std::mem::size_of::<Group>() + accumulators) as u64
            })
            .sum::<u64>()
    }

    fn on_watermark(&mut self, watermark_ms: i64, out: &mut Vec<ChangeBatch>) -> DfResult<()> {
        if self.window_end_key.is_none() {
            return Ok(());
        }
        if let Some(keyed) = &mut self.keyed {
            // Groups fire by their key's watermark; the input's only ends the input.
            if watermark_ms < WATERMARK_END_MS {
                return Ok(());
            }
            keyed.clear();
        }
        self.watermark_ms = self.watermark_ms.max(watermark_ms);
        if let Some(change) = self.fire(watermark_ms)? {
            out.push(change);
        }
        Ok(())
    }

    fn output_watermark(&self, input_watermark_ms: i64) -> i64 {
        keyed_output_watermark(self.keyed.is_some(), input_watermark_ms)
    }

    fn needs_batch_boundaries(&self) -> bool {
        self.keyed.is_some()
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
        if !input.is_insert_only() && !self.retracting {
            return Err(DataFusionError::Internal(
                "retractions reached an aggregate planned for an append-only input".into(),
            ));
        }
        let batch = input.batch();
        let weights = input.weights();
        let rows = batch.num_rows();
        let key_columns = super::evaluate_columns(&self.keys, batch)?;
        let (order, mut members) = self.group_rows(rows, &key_columns)?;
        let arguments = self.arguments(batch)?;

        let window_ends = match self.window_end_key {
            Some(index) => Some(super::epoch_ms(&key_columns[index])?),
            None => None,
        };
        let batch_keys = self.keyed_batch(batch, &key_columns)?;
        let mut retracted: Vec<(OwnedRow, Vec<ScalarValue>)> = Vec::new();
        let mut inserted: Vec<(OwnedRow, Vec<ScalarValue>)> = Vec::new();
        for key in order {
            let members = members.remove(&key).unwrap_or_default();
            let window_end_ms = match (&window_ends, members.first()) {
                (Some(ends), Some(first)) => ends[*first as usize],
                _ => i64::MAX,
            };
            let watermark_ms = self.group_watermark_ms(batch_keys.as_ref(), &members);
            if window_ends.is_some()
                && window_end_ms.saturating_add(self.allowed_lateness_ms) <= watermark_ms
            {
                // The window fired and its allowed lateness passed: its result is final.
                self.late_rows += members.len() as u64;
                continue;
            }
            // Rows in by their weight: inserts (+w) and retractions (-w), each |w| times.
            let (inserts, mut retracts) = split_by_weight(&members, weights);
            let held = self.groups.get(&key).map_or(0, |g| g.rows);
            // A retraction of a row this aggregate never saw (its input existed before the
            // query did) has nothing to undo; applying it would corrupt the accumulators.
            // Changelogs retract a row before inserting its replacement, so a batch's
            // retractions refer to rows held before it.
            let retractable = usize::try_from(held).unwrap_or(0);
            if retracts.len() > retractable {
                self.unmatched_retractions += (retracts.len() - retractable) as u64;
                retracts.truncate(retractable);
            }
            if inserts.is_empty() && retracts.is_empty() {
                continue;
            }
            if !self.groups.contains_key(&key) {
                let group = Group {
                    accumulators: self.accumulators()?,
                    window_end_ms,
                    rows: 0,
                    emitted: None,
                    flags: EntryFlags::default(),
                };
                self.groups.insert(key.clone(), group);
                self.track_group(batch_keys.as_ref(), &members, window_end_ms, &key);
            }
            let Some(group) = self.groups.get_mut(&key) else {
                continue;
            };
            self.changes.touch(&mut group.flags, || key.clone());
            for (accumulator, arguments) in group.accumulators.iter_mut().zip(&arguments) {
                if !inserts.is_empty() {
                    accumulator.update_batch(&select(arguments, &inserts)?)?;
                }
                if !retracts.is_empty() {
                    accumulator.retract_batch(&select(arguments, &retracts)?)?;
                }
            }
            group.rows += inserts.len() as i64 - retracts.len() as i64;
            // A global aggregate always has its one row (COUNT(*) of nothing is 0).
            if group.rows <= 0 && self.global_key.is_none() {
                // Every row of the group was retracted: the group is gone.
                if let Some(group) = self.groups.remove(&key) {
                    self.changes.remove(group.flags, || key.clone());
                    if let Some(previous) = group.emitted {
                        retracted.push((key, previous));
                    }
                }
                continue;
            }
            let window_fired = window_end_ms <= watermark_ms;
            if self.window_end_key.is_some() && group.emitted.is_none() && !window_fired {
                // Results wait for the window to close; a fired window (within its allowed
                // lateness) is corrected right away below.
                continue;
            }
            let values = group
                .accumulators
                .iter_mut()
                .map(|a| a.evaluate())
                .collect::<DfResult<Vec<_>>>()?;
            if group.emitted.as_ref() == Some(&values) {
                continue;
            }
            if let Some(previous) = group.emitted.replace(values.clone()) {
                retracted.push((key.clone(), previous));
            }
            inserted.push((key, values));
        }
        if let Some(change) = self.changes(&retracted, &inserted)? {
            out.push(change);
        }
        if let Some(batch_keys) = batch_keys {
            out.extend(self.fire_keyed(&batch_keys)?);
        }
        Ok(())
    }
}

/// Indices of inserted and retracted rows among `members`, each repeated by its weight.
fn split_by_weight(members: &[u32], weights: Option<&Int64Array>) -> (Vec<u32>, Vec<u32>) {
    let Some(weights) = weights else {
        return (members.to_vec(), Vec::new());
    };
    let mut inserts = Vec::new();
    let mut retracts = Vec::new();
    for &row in members {
        let weight = weights.value(row as usize);
        let target = if weight > 0 {
            &mut inserts
        } else {
            &mut retracts
        };
        for _ in 0..weight.unsigned_abs() {
            target.push(row);
        }
    }
    (inserts, retracts)
}

/// The argument columns of one call at `rows`, with its FILTER applied.
pub(super) fn select(arguments: &CallArguments, rows: &[u32]) -> DfResult<Vec<ArrayRef>> {
    let (values, mask) = arguments;
    let indices = UInt32Array::from(rows.to_vec());
    let mut taken = values
        .iter()
        .map(|v| take(v.as_ref(), &indices, None))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(mask) = mask {
        let group_mask = take(mask, &indices, None)?;
        let group_mask = group_mask
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| DataFusionError::Internal("FILTER mask".into()))?;
        // The filter kernel drops NULL like false, as SQL's FILTER (WHERE) does.
        taken = taken
            .iter()
            .map(|v| datafusion::arrow::compute::filter(v.as_ref(), group_mask))
            .collect::<Result<Vec<_>, _>>()?;
    }
    Ok(taken)
}

/// Groups in first-seen order, and the row indices of each.
type GroupedRows = (Vec<OwnedRow>, HashMap<OwnedRow, Vec<u32>>);

/// Aggregates whose retraction does not depend on the order rows arrived in.
const RETRACTABLE_AGGREGATES: [&str; 13] = [
    "count",
    "sum",
    "avg",
    "mean",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "var",
    "var_pop",
    "var_samp",
    "var_population",
    "var_sample",
    "variance",
];

/// Arguments of one aggregate call over a batch, with its `FILTER` as a mask.
pub(super) type CallArguments = (Vec<ArrayRef>, Option<BooleanArray>);

impl AggregateOperator {
    /// Row indices per group, groups in first-seen order.
    fn group_rows(&self, rows: usize, key_columns: &[ArrayRef]) -> DfResult<GroupedRows> {
        let mut order: Vec<OwnedRow> = Vec::new();
        let mut members: HashMap<OwnedRow, Vec<u32>> = HashMap::new();
        if let Some(global) = &self.global_key {
            order.push(global.clone());
            members.insert(global.clone(), (0..rows as u32).collect());
            return Ok((order, members));
        }
        let keys = self.converter.convert_columns(key_columns)?;
        for (index, key) in keys.iter().enumerate() {
            let entry = members.entry(key.owned()).or_insert_with(|| {
                order.push(key.owned());
                Vec::new()
            });
            entry.push(index as u32);
        }
        Ok((order, members))
    }

    /// The argument columns of every call, with its FILTER folded into a mask.
    fn arguments(&self, batch: &RecordBatch) -> DfResult<Vec<CallArguments>> {
        call_arguments(&self.calls, batch)
    }
}

/// The argument columns of every call over `batch`, with its FILTER folded into a mask.
pub(super) fn call_arguments(
    calls: &[AggregateCall],
    batch: &RecordBatch,
) -> DfResult<Vec<CallArguments>> {
    let rows = batch.num_rows();
    let mut arguments = Vec::with_capacity(calls.len());
    for call in calls {
        // As DataFusion's AggregateExec does: an order-sensitive aggregate (FIRST_VALUE(x
        // ORDER BY ts), ARRAY_AGG(x ORDER BY y)) receives its ordering columns after its
        // arguments and keeps the order itself.
        let ordering = call.function.order_bys().iter().map(|sort| &sort.expr);
        let values =
            super::evaluate_columns(call.function.expressions().iter().chain(ordering), batch)?;
        let mask = match &call.filter {
            None => None,
            Some(filter) => {
                let mask = filter.evaluate(batch)?.into_array(rows)?;
                let mask = mask
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .ok_or_else(|| DataFusionError::Plan("FILTER is not BOOLEAN".into()))?
                    .clone();
                Some(mask)
            }
        };
        arguments.push((values, mask));
    }
    Ok(arguments)
}

impl AggregateOperator {
    /// Fires every window whose end the watermark reached: one final row per group.
    fn fire(&mut self, watermark_ms: i64) -> DfResult<Option<ChangeBatch>> {
        let keep = self.allowed_lateness_ms > 0;
        let closed: Vec<OwnedRow> = self
            .groups
            .iter()
            .filter(|(_, group)| group.emitted.is_none() && group.window_end_ms <= watermark_ms)
            .map(|(key, _)| key.clone())
            .collect();
        let mut rows = Vec::with_capacity(closed.len());
        for key in closed {
            let Some(group) = self.groups.get_mut(&key) else {
                continue;
            };
            let values = group
                .accumulators
                .iter_mut()
                .map(|a| a.evaluate())
                .collect::<DfResult<Vec<_>>>()?;
            if keep {
                group.emitted = Some(values.clone());
                self.changes.touch(&mut group.flags, || key.clone());
            } else if let Some(group) = self.groups.remove(&key) {
                self.changes.remove(group.flags, || key.clone());
            }
            rows.push((key, values));
        }
        // Windows whose allowed lateness passed are final: their state goes.
        let lateness = self.allowed_lateness_ms;
        let changes = &mut self.changes;
        self.groups.retain(|key, group| {
            let open = group.window_end_ms.saturating_add(lateness) > watermark_ms;
            if !open {
                changes.remove(group.flags, || key.clone());
            }
            open
        });
        // Closed windows in key order, so output does not depend on hash order.
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(self
            .changes(&[], &rows)?
            .map(|change| ChangeBatch::insert_only(change.into_batch())))
    }

    /// Builds one change batch: the retractions, then the insertions.
    fn changes(
        &self,
        retracted: &[(OwnedRow, Vec<ScalarValue>)],
        inserted: &[(OwnedRow, Vec<ScalarValue>)],
    ) -> DfResult<Option<ChangeBatch>> {
        let all: Vec<&(OwnedRow, Vec<ScalarValue>)> = retracted.iter().chain(inserted).collect();
        if all.is_empty() {
            return Ok(None);
        }
        let mut columns = if self.global_key.is_some() {
            Vec::new()
        } else {
            self.converter
                .convert_rows(all.iter().map(|(key, _)| key.row()))?
        };
        for call in 0..self.calls.len() {
            let values = all.iter().map(|(_, values)| values[call].clone());
            columns.push(ScalarValue::iter_to_array(values)?);
        }
        let batch = super::batch_of_schema(&self.schema, columns)?;
        let weights = Int64Array::from_iter_values(
            std::iter::repeat_n(-1, retracted.len()).chain(std::iter::repeat_n(1, inserted.len())),
        );
        Ok(Some(ChangeBatch::with_weights(batch, weights)))
    }
}
