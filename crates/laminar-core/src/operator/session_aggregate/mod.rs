//! Session-window aggregate: rows of one partition (the group keys other than the window
//! bounds) belong to the same session while they are at most `gap` apart. Each input row
//! arrives with its own window `[ts, ts + gap)`; windows that overlap or touch merge, and so
//! do their accumulators (DataFusion's `state`/`merge_batch`), so an out-of-order row can
//! join two sessions that looked separate. A session is `[first ts, last ts + gap)`.
//!
//! With `EMIT ON WINDOW CLOSE` a session is emitted once the watermark reaches its end and
//! its state is freed (after the allowed lateness); otherwise the output is a changelog that
//! retracts a session's previous row whenever it grows or merges. Over a source with keyed
//! watermarks, sessions close by their partition's watermark instead ([`keyed`]).
//! Snapshots are incremental by session ([`state`]).

use datafusion::common::HashMap;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::PhysicalExpr;

use super::aggregate::keyed_output_watermark;
use super::aggregate::{call_arguments, select, CallArguments};
use super::change_tracker::{ChangeTracker, EntryFlags};
use super::epoch_ms;
use super::{AggregateCall, Operator};
use crate::change_batch::ChangeBatch;
use crate::state::{OperatorState, RestoredPart};
use crate::watermark::WATERMARK_END_MS;
use keyed::KeyedSessions;

mod keyed;
mod state;
#[cfg(test)]
mod tests;

struct Session {
    end_ms: i64,
    accumulators: Vec<Box<dyn Accumulator>>,
    /// The row last emitted for the session, to retract when it changes.
    emitted: Option<Vec<ScalarValue>>,
    /// Changed since the previous snapshot, or in one.
    flags: EntryFlags,
}

/// A session's identity in the output: its partition and bounds.
type SessionRow = (OwnedRow, i64, i64, Vec<ScalarValue>);

/// Where the window bounds sit among the group keys, and how sessions form.
#[derive(Debug, Clone, Copy)]
pub struct SessionWindow {
    /// Index of `window_start` among the group keys.
    pub start_key: usize,
    /// Index of `window_end` among the group keys.
    pub end_key: usize,
}

/// Merges rows into per-partition sessions and aggregates each session.
pub struct SessionAggregateOperator {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    window: SessionWindow,
    calls: Vec<AggregateCall>,
    schema: SchemaRef,
    partition_fields: Vec<SortField>,
    converter: RowConverter,
    /// Open sessions per partition, by start (disjoint and not touching).
    partitions: HashMap<OwnedRow, BTreeMap<i64, Session>>,
    /// Every open session by end, for firing and freeing (`EMIT ON WINDOW CLOSE` only).
    by_end: BTreeSet<(i64, OwnedRow, i64)>,
    emit_on_close: bool,
    allowed_lateness_ms: i64,
    watermark_ms: i64,
    late_rows: u64,
    /// With `EMIT ON WINDOW CLOSE`: each partition's watermark, when sessions close per key.
    keyed: Option<KeyedSessions>,
    /// Sessions (partition, start) changed and removed since the previous snapshot.
    changes: ChangeTracker<(OwnedRow, i64)>,
}

impl std::fmt::Debug for SessionAggregateOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl SessionAggregateOperator {
    /// Groups by `keys` (evaluated over the input; `window` says which are the bounds of each
    /// row's own window) and computes `calls`; output rows of `schema` are the keys followed
    /// by one column per call.
    pub fn new(
        keys: Vec<Arc<dyn PhysicalExpr>>,
        window: SessionWindow,
        calls: Vec<AggregateCall>,
        key_fields: &[SortField],
        schema: SchemaRef,
    ) -> DfResult<Self> {
        if window.start_key >= keys.len() || window.end_key >= keys.len() {
            return Err(DataFusionError::Internal(
                "session window bounds are not among the group keys".into(),
            ));
        }
        let partition_fields: Vec<SortField> = key_fields
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != window.start_key && *i != window.end_key)
            .map(|(_, field)| field.clone())
            .collect();
        Ok(Self {
            keys,
            window,
            calls,
            schema,
            converter: partition_converter(&partition_fields)?,
            partition_fields,
            partitions: HashMap::new(),
            by_end: BTreeSet::new(),
            emit_on_close: false,
            allowed_lateness_ms: 0,
            watermark_ms: i64::MIN,
            late_rows: 0,
            keyed: None,
            changes: ChangeTracker::default(),
        })
    }

    /// Emits each session once, when the watermark reaches its end; with
    /// `allowed_lateness_ms`, a fired session stays that much longer and a late row that
    /// extends it retracts the fired row and emits the corrected one.
    pub fn emit_on_window_close(mut self, allowed_lateness_ms: i64) -> Self {
        self.emit_on_close = true;
        self.allowed_lateness_ms = allowed_lateness_ms.max(0);
        self
    }

    /// With `emit_on_window_close`, over a source whose keyed watermark's keys are exactly
    /// the partition columns: each partition's watermark is the latest start (event time) of
    /// its rows minus `delay_ms`, and closes its sessions in place of the input's watermark,
    /// which then only ends the input. The operator forwards no watermark before: a partition
    /// never seen may still bring rows of any time.
    pub fn keyed_watermarks(mut self, delay_ms: i64) -> Self {
        self.keyed = Some(KeyedSessions::new(delay_ms));
        self
    }

    fn accumulators(&self) -> DfResult<Vec<Box<dyn Accumulator>>> {
        self.calls
            .iter()
            .map(|c| c.function.create_accumulator())
            .collect()
    }

    /// The key columns that form the partition.
    fn partition_columns(&self, keys: &[ArrayRef]) -> Vec<ArrayRef> {
        keys.iter()
            .enumerate()
            .filter(|(i, _)| *i != self.window.start_key && *i != self.window.end_key)
            .map(|(_, column)| Arc::clone(column))
            .collect()
    }

    /// Partition keys of every row; a partition-less session window has one constant key.
    fn partition_keys(&self, keys: &[ArrayRef], rows: usize) -> DfResult<Vec<OwnedRow>> {
        let columns = self.partition_columns(keys);
        let columns = if columns.is_empty() {
            vec![Arc::new(Int64Array::from(vec![0; rows])) as ArrayRef]
        } else {
            columns
        };
        let converted = self.converter.convert_columns(&columns)?;
        Ok(converted.iter().map(|row| row.owned()).collect())
    }
}

/// Converts partition keys; a window without partition keys uses one constant BIGINT key.
fn partition_converter(fields: &[SortField]) -> DfResult<RowConverter> {
    if fields.is_empty() {
        Ok(RowConverter::new(vec![SortField::new(DataType::Int64)])?)
    } else {
        Ok(RowConverter::new(fields.to_vec())?)
    }
}

/// Folds `from`'s accumulated state into `into` (session merge).
fn merge_into(
    into: &mut [Box<dyn Accumulator>],
    from: &mut [Box<dyn Accumulator>],
) -> DfResult<()> {
    for (target, source) in into.iter_mut().zip(from.iter_mut()) {
        let states = source
            .state()?
            .iter()
            .map(ScalarValue::to_array)
            .collect::<DfResult<Vec<_>>>()?;
        target.merge_batch(&states)?;
    }
    Ok(())
}

/// Rows of one batch that form one interval: `[start, end)` and the row indices.
struct Run {
    start_ms: i64,
    end_ms: i64,
    rows: Vec<u32>,
}

/// Coalesces `(start, end, row)` windows (any order) into disjoint, non-touching runs.
fn runs(mut windows: Vec<(i64, i64, u32)>) -> Vec<Run> {
    windows.sort_unstable();
    let mut runs: Vec<Run> = Vec::new();
    for (start_ms, end_ms, row) in windows {
        match runs.last_mut() {
            Some(run) if start_ms <= run.end_ms => {
                run.end_ms = run.end_ms.max(end_ms);
                run.rows.push(row);
            }
            _ => runs.push(Run {
                start_ms,
                end_ms,
                rows: vec![row],
            }),
        }
    }
    runs
}

impl SessionAggregateOperator {
    /// Merges one run of new rows into its partition's sessions. Returns the new session's
    /// start; pushes the rows emitted for the sessions it replaced onto `retracted`.
    fn absorb(
        &mut self,
        partition: &OwnedRow,
        run: &Run,
        arguments: &[CallArguments],
        retracted: &mut Vec<SessionRow>,
    ) -> DfResult<i64> {
        let fresh = self.accumulators()?;
        let sessions = self.partitions.entry(partition.clone()).or_default();
        // Sessions touching [run.start, run.end]: they start at or before the run's end
        // and end at or after its start; sessions are disjoint, so they are adjacent.
        let touching: Vec<i64> = sessions
            .range(..=run.end_ms)
            .rev()
            .take_while(|(_, session)| session.end_ms >= run.start_ms)
            .map(|(start, _)| *start)
            .collect();
        let mut start_ms = run.start_ms;
        let mut end_ms = run.end_ms;
        let mut merged: Option<Vec<Box<dyn Accumulator>>> = None;
        for old_start in touching {
            let Some(mut old) = sessions.remove(&old_start) else {
                continue;
            };
            self.by_end
                .remove(&(old.end_ms, partition.clone(), old_start));
            self.changes
                .remove(old.flags, || (partition.clone(), old_start));
            if let Some(previous) = old.emitted.take() {
                retracted.push((partition.clone(), old_start, old.end_ms, previous));
            }
            start_ms = start_ms.min(old_start);
            end_ms = end_ms.max(old.end_ms);
            match merged.as_mut() {
                None => merged = Some(old.accumulators),
                Some(into) => merge_into(into, &mut old.accumulators)?,
            }
        }
        let mut accumulators = merged.unwrap_or(fresh);
        for (accumulator, arguments) in accumulators.iter_mut().zip(arguments) {
            accumulator.update_batch(&select(arguments, &run.rows)?)?;
        }
        let mut flags = EntryFlags::default();
        self.changes
            .touch(&mut flags, || (partition.clone(), start_ms));
        sessions.insert(
            start_ms,
            Session {
                end_ms,
                accumulators,
                emitted: None,
                flags,
            },
        );
        // Keyed sessions fire from their partition's sessions, not from the common index.
        if self.emit_on_close && self.keyed.is_none() {
            self.by_end.insert((end_ms, partition.clone(), start_ms));
        }
        Ok(start_ms)
    }

    /// Evaluates a session and records the row as emitted; `None` if the session is gone.
    fn emit(&mut self, partition: &OwnedRow, start_ms: i64) -> DfResult<Option<SessionRow>> {
        let Some(session) = self
            .partitions
            .get_mut(partition)
            .and_then(|sessions| sessions.get_mut(&start_ms))
        else {
            return Ok(None);
        };
        let values = session
            .accumulators
            .iter_mut()
            .map(|a| a.evaluate())
            .collect::<DfResult<Vec<_>>>()?;
        session.emitted = Some(values.clone());
        self.changes
            .touch(&mut session.flags, || (partition.clone(), start_ms));
        Ok(Some((partition.clone(), start_ms, session.end_ms, values)))
    }

    /// Removes a session's state.
    fn free(&mut self, partition: &OwnedRow, start_ms: i64) {
        if let Some(sessions) = self.partitions.get_mut(partition) {
            if let Some(session) = sessions.remove(&start_ms) {
                self.changes
                    .remove(session.flags, || (partition.clone(), start_ms));
            }
            if sessions.is_empty() {
                self.partitions.remove(partition);
            }
        }
    }

    /// Builds one change batch: the retractions, then the insertions.
    fn changes(
        &self,
        retracted: &[SessionRow],
        inserted: &[SessionRow],
    ) -> DfResult<Option<ChangeBatch>> {
        let all: Vec<&SessionRow> = retracted.iter().chain(inserted).collect();
        if all.is_empty() {
            return Ok(None);
        }
        let partition_columns = if self.partition_fields.is_empty() {
            Vec::new()
        } else {
            self.converter
                .convert_rows(all.iter().map(|(partition, ..)| partition.row()))?
        };
        let starts: ArrayRef = Arc::new(Int64Array::from_iter_values(
            all.iter().map(|(_, start, _, _)| *start),
        ));
        let ends: ArrayRef = Arc::new(Int64Array::from_iter_values(
            all.iter().map(|(_, _, end, _)| *end),
        ));
        let mut partition_columns = partition_columns.into_iter();
        let mut columns = Vec::with_capacity(self.schema.fields().len());
        for index in 0..self.keys.len() {
            let column = if index == self.window.start_key {
                Arc::clone(&starts)
            } else if index == self.window.end_key {
                Arc::clone(&ends)
            } else {
                partition_columns
                    .next()
                    .ok_or_else(|| DataFusionError::Internal("session partition columns".into()))?
            };
            columns.push(column);
        }
        for call in 0..self.calls.len() {
            let values = all.iter().map(|(.., values)| values[call].clone());
            columns.push(ScalarValue::iter_to_array(values)?);
        }
        let columns = columns
            .into_iter()
            .zip(self.schema.fields())
            .map(|(column, field)| cast_to(&column, field.data_type()))
            .collect::<DfResult<Vec<_>>>()?;
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        let weights = Int64Array::from_iter_values(
            std::iter::repeat_n(-1, retracted.len()).chain(std::iter::repeat_n(1, inserted.len())),
        );
        Ok(Some(ChangeBatch::with_weights(batch, weights)))
    }

    /// Emits every session the watermark closed, and frees those past their lateness.
    fn fire(&mut self, watermark_ms: i64) -> DfResult<Option<ChangeBatch>> {
        let due: Vec<(i64, OwnedRow, i64)> = self
            .by_end
            .iter()
            .take_while(|(end, ..)| *end <= watermark_ms)
            .cloned()
            .collect();
        let mut rows = Vec::new();
        for (end_ms, partition, start_ms) in due {
            let fired = self
                .partitions
                .get(&partition)
                .and_then(|sessions| sessions.get(&start_ms))
                .is_some_and(|session| session.emitted.is_some());
            if !fired {
                if let Some(row) = self.emit(&partition, start_ms)? {
                    rows.push(row);
                }
            }
            if end_ms.saturating_add(self.allowed_lateness_ms) <= watermark_ms {
                self.by_end.remove(&(end_ms, partition.clone(), start_ms));
                self.free(&partition, start_ms);
            }
        }
        // Sessions in key order, so output does not depend on hash order.
        rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        Ok(self
            .changes(&[], &rows)?
            .map(|change| ChangeBatch::insert_only(change.into_batch())))
    }
}

/// Casts a built column to the planned type (results may be typed more loosely).
fn cast_to(column: &ArrayRef, data_type: &DataType) -> DfResult<ArrayRef> {
    if column.data_type() == data_type {
        return Ok(Arc::clone(column));
    }
    // Window bounds are built as epoch milliseconds; a timestamp column takes them as is.
    let column = match data_type {
        DataType::Timestamp(_, _) if column.data_type() == &DataType::Int64 => {
            datafusion::arrow::compute::cast(
                column,
                &DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Millisecond, None),
            )?
        }
        _ => Arc::clone(column),
    };
    Ok(datafusion::arrow::compute::cast(&column, data_type)?)
}

impl Operator for SessionAggregateOperator {
    fn name(&self) -> &'static str {
        "SessionAggregate"
    }

    fn describe(&self) -> String {
        let keys: Vec<String> = self
            .keys
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != self.window.start_key && *i != self.window.end_key)
            .map(|(_, key)| key.to_string())
            .collect();
        let calls: Vec<String> = self
            .calls
            .iter()
            .map(|c| c.function.name().to_string())
            .collect();
        let emit = match (&self.keyed, self.emit_on_close) {
            (Some(keyed), _) => format!("emit on window close {}", keyed.describe()),
            (None, true) => "emit on window close".to_string(),
            (None, false) => "changelog".to_string(),
        };
        format!(
            "SessionAggregate [{}] by [{}] ({emit})",
            calls.join(", "),
            keys.join(", "),
        )
    }

    fn fork(&self) -> Box<dyn Operator> {
        Box::new(Self {
            keys: self.keys.clone(),
            window: self.window,
            calls: self.calls.clone(),
            schema: self.schema.clone(),
            // `new` built a converter from these very fields, so building another cannot fail.
            converter: partition_converter(&self.partition_fields)
                .expect("key types were accepted when the prototype was built"),
            partition_fields: self.partition_fields.clone(),
            partitions: HashMap::new(),
            by_end: BTreeSet::new(),
            emit_on_close: self.emit_on_close,
            allowed_lateness_ms: self.allowed_lateness_ms,
            watermark_ms: i64::MIN,
            late_rows: 0,
            keyed: self.keyed.as_ref().map(KeyedSessions::fork),
            changes: ChangeTracker::default(),
        })
    }

    fn state_entries(&self) -> u64 {
        let partitions = self.keyed.as_ref().map_or(0, KeyedSessions::len) as u64;
        partitions
            + self
                .partitions
                .values()
                .map(|s| s.len() as u64)
                .sum::<u64>()
    }

    fn late_rows(&self) -> u64 {
        self.late_rows
    }

    fn state_bytes(&self) -> u64 {
        let partitions = self.keyed.as_ref().map_or(0, KeyedSessions::bytes) as u64;
        partitions
            + self
                .partitions
                .iter()
                .map(|(partition, sessions)| {
                    let sessions: usize = sessions
                        .values()
                        .map(|session| {
                            let accumulators: usize =
                                session.accumulators.iter().map(|a| a.size()).sum();
                            std::mem::size_of::<Session>() + accumulators
                        })
                        .sum();
                    (partition.row().as_ref().len() + sessions) as u64
                })
                .sum::<u64>()
    }

    fn on_watermark(&mut self, watermark_ms: i64, out: &mut Vec<ChangeBatch>) -> DfResult<()> {
        if self.keyed.is_some() {
            // Sessions close by their partition's watermark; the input's only ends the input.
            if watermark_ms < WATERMARK_END_MS {
                return Ok(());
            }
            self.end_keyed();
        }
        self.watermark_ms = self.watermark_ms.max(watermark_ms);
        if !self.emit_on_close {
            return Ok(());
        }
        if let Some(change) = self.fire(self.watermark_ms)? {
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
        if !input.is_insert_only() {
            return Err(DataFusionError::Internal(
                "retractions reached a session window (planned for append-only input)".into(),
            ));
        }
        let batch = input.batch();
        let key_columns = super::evaluate_columns(&self.keys, batch)?;
        let starts = epoch_ms(&key_columns[self.window.start_key])?;
        let ends = epoch_ms(&key_columns[self.window.end_key])?;
        let partitions = self.partition_keys(&key_columns, batch.num_rows())?;
        let arguments = call_arguments(&self.calls, batch)?;
        let latest = self.latest_starts(&partitions, &key_columns[self.window.start_key], &starts);

        let mut order: Vec<OwnedRow> = Vec::new();
        let mut windows: HashMap<OwnedRow, Vec<(i64, i64, u32)>> = HashMap::new();
        for (row, partition) in partitions.into_iter().enumerate() {
            let (start_ms, end_ms) = (starts[row], ends[row]);
            if self.emit_on_close
                && end_ms.saturating_add(self.allowed_lateness_ms)
                    <= self.partition_watermark_ms(&partition)
            {
                // The row's own window closed (and its lateness passed): it is late.
                self.late_rows += 1;
                continue;
            }
            windows
                .entry(partition)
                .or_insert_with_key(|key| {
                    order.push(key.clone());
                    Vec::new()
                })
                .push((start_ms, end_ms, row as u32));
        }
        let mut retracted = Vec::new();
        let mut touched = Vec::new();
        for partition in order {
            let Some(rows) = windows.remove(&partition) else {
                continue;
            };
            for run in runs(rows) {
                let start_ms = self.absorb(&partition, &run, &arguments, &mut retracted)?;
                touched.push((partition.clone(), start_ms));
            }
        }
        // An existing session can bridge two runs of a batch: the second merge keeps the
        // first's start, so the same session is touched twice.
        touched.sort();
        touched.dedup();
        let mut inserted = Vec::new();
        for (partition, start_ms) in touched {
            let end_ms = self
                .partitions
                .get(&partition)
                .and_then(|sessions| sessions.get(&start_ms))
                .map(|session| session.end_ms);
            let Some(end_ms) = end_ms else {
                // A later run of the same batch merged this session away.
                continue;
            };
            // A session waits for the watermark unless it already closed (a late row within
            // the allowed lateness corrects it at once).
            if self.emit_on_close && end_ms > self.partition_watermark_ms(&partition) {
                continue;
            }
            if let Some(row) = self.emit(&partition, start_ms)? {
                inserted.push(row);
            }
        }
        // A retracted row that is re-inserted unchanged is no change at all.
        let unchanged: Vec<SessionRow> = inserted
            .iter()
            .filter(|row| retracted.contains(row))
            .cloned()
            .collect();
        retracted.retain(|row| !unchanged.contains(row));
        inserted.retain(|row| !unchanged.contains(row));
        if let Some(change) = self.changes(&retracted, &inserted)? {
            out.push(change);
        }
        if let Some(latest) = latest {
            out.extend(self.fire_keyed(latest)?);
        }
        Ok(())
    }
}
