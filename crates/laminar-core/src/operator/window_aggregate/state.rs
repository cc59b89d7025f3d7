//! Snapshot and restore of the [`WindowAggregateOperator`]'s state, incremental by window.
//!
//! Parts: `counters` (the watermark, late rows) and `windows`, one entry per open window
//! keyed by its end: the window's group keys (one list column per key column) and its
//! accumulators' states (one list column per state field), each column holding the whole
//! window in one value. A delta rewrites the windows that received rows since the previous
//! snapshot and deletes the windows fired since; windows untouched cost nothing.
//!
//! `GroupValues::emit` and `GroupsAccumulator::state` consume the window, so a snapshot
//! rebuilds each window it writes from what it wrote (interning the keys again gives the
//! groups the same ids, and the states merge into fresh accumulators), exactly as a restore
//! builds it.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BinaryArray, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result as DfResult};

use super::{WindowAggregateOperator, WindowGroups};
use crate::operator::accumulator_state::state_column;
use crate::operator::change_tracker::EntryFlags;
use crate::state::{restored_part, OperatorState, RestoredPart, StateKind, StatePart};
use crate::state_codec::{
    counters_part, single_row_list, state_batch, Counters, PartReader, StateColumn, COUNTERS_PART,
};

/// Name of the part holding the open windows.
const WINDOWS_PART: &str = "windows";

/// The operator's name in restore errors.
const OPERATOR: &str = "WindowAggregate";

/// Name of the column of group key column `index`.
fn key_column(index: usize) -> String {
    format!("group_{index}")
}

/// A window's entry key: its end, big-endian.
fn window_key(window_end_ms: i64) -> Vec<u8> {
    window_end_ms.to_be_bytes().to_vec()
}

impl WindowAggregateOperator {
    /// The operator's state: every open window with `full` (or when a delta cannot say
    /// what changed), otherwise the windows that received rows since the previous snapshot,
    /// and the deletion of those fired since.
    pub(super) fn snapshot_state(&mut self, full: bool) -> DfResult<OperatorState> {
        let full = full || self.changes.needs_full();
        let (changed, removed) = self.changes.take();
        let (ends, deletes) = if full {
            (self.windows.keys().copied().collect(), Vec::new())
        } else {
            // A window never opens again once fired, but stay exact if one did.
            let deletes = removed
                .into_iter()
                .filter(|end| !self.windows.contains_key(end))
                .map(window_key)
                .collect();
            (changed, deletes)
        };
        let mut upserts = Vec::new();
        for end in ends {
            let write = self
                .windows
                .get(&end)
                .is_some_and(|window| full || window.flags.is_dirty());
            if write {
                upserts.push(self.write_window(end)?);
            }
        }
        let counters = counters_part(&[
            ("watermark_ms", self.watermark_ms),
            ("late_rows", self.late_rows as i64),
        ])?;
        let mut windows = StatePart::new(WINDOWS_PART, upserts);
        windows.deletes = deletes;
        let kind = if full {
            StateKind::Full
        } else {
            StateKind::Delta
        };
        Ok(OperatorState {
            kind,
            parts: vec![counters, windows],
        })
    }

    /// The one-row state batch of the open window ending at `window_end_ms`, which is
    /// rebuilt from it.
    fn write_window(&mut self, window_end_ms: i64) -> DfResult<RecordBatch> {
        let mut window = self.windows.remove(&window_end_ms).ok_or_else(|| {
            DataFusionError::Internal(format!("window ending at {window_end_ms} ms is not open"))
        })?;
        let (keys, states) = self.emit_keys_and_states(&mut window)?;
        let mut columns: Vec<StateColumn> = vec![(
            "window_end_ms".into(),
            Arc::new(Int64Array::from(vec![window_end_ms])),
            true,
        )];
        for (index, key) in keys.iter().enumerate() {
            columns.push((key_column(index), single_row_list(Arc::clone(key)), true));
        }
        for (call, fields) in states.iter().enumerate() {
            for (field, state) in fields.iter().enumerate() {
                columns.push((
                    state_column(call, field),
                    single_row_list(Arc::clone(state)),
                    true,
                ));
            }
        }
        let batch = state_batch(
            BinaryArray::from_iter_values([window_key(window_end_ms)]),
            columns,
        )?;
        let mut rebuilt = self.rebuild_window(&keys, &states)?;
        rebuilt.flags = EntryFlags::restored();
        self.windows.insert(window_end_ms, rebuilt);
        Ok(batch)
    }

    /// A window holding the groups `keys` (distinct, as emitted) with accumulator `states`
    /// (`[call][field]`, one row per group).
    pub(super) fn rebuild_window(
        &mut self,
        keys: &[ArrayRef],
        states: &[Vec<ArrayRef>],
    ) -> DfResult<WindowGroups> {
        let mut window = self.open_window()?;
        super::intern(&mut window, keys, &self.layout, &mut self.group_ids)?;
        let total_groups = window.groups.len();
        for (accumulator, state) in window.accumulators.iter_mut().zip(states) {
            accumulator.merge_batch(state, &self.group_ids, total_groups)?;
        }
        Ok(window)
    }

    /// Replaces the state of a fresh instance with `parts`, as [`Self::snapshot_state`]
    /// wrote them (merged over a chain of snapshots).
    pub(super) fn restore_state(&mut self, parts: &[RestoredPart]) -> DfResult<()> {
        let known = [COUNTERS_PART, WINDOWS_PART];
        let Some(counters) = Counters::restore(OPERATOR, parts, &known)? else {
            return Ok(());
        };
        if !self.windows.is_empty() {
            return Err(DataFusionError::Internal(
                "state restored into a window aggregate that already holds windows".into(),
            ));
        }
        self.watermark_ms = counters.get("watermark_ms")?;
        self.late_rows = counters.get("late_rows")? as u64;
        // Groups accumulators emit the states the function declares, as DataFusion's
        // two-phase aggregation relies on.
        let state_types: Vec<Vec<DataType>> = self
            .calls
            .iter()
            .map(|call| {
                let fields = call.function.state_fields()?;
                Ok(fields.iter().map(|f| f.data_type().clone()).collect())
            })
            .collect::<DfResult<_>>()?;
        for batch in restored_part(parts, WINDOWS_PART).map_or(&[][..], |p| &p.batches) {
            let reader = PartReader::new(OPERATOR, WINDOWS_PART);
            for row in 0..batch.num_rows() {
                self.restore_window(&reader, batch, row, &state_types)?;
            }
        }
        self.changes.restored();
        Ok(())
    }

    /// Restores the window of row `row`, written by [`Self::write_window`], whose
    /// accumulator states have `state_types` (`[call][field]`).
    fn restore_window(
        &mut self,
        reader: &PartReader<'_>,
        batch: &RecordBatch,
        row: usize,
        state_types: &[Vec<DataType>],
    ) -> DfResult<()> {
        let window_end_ms = reader
            .required::<Int64Array>(batch, "window_end_ms")?
            .value(row);
        let keys = self
            .layout
            .key_schema()
            .fields()
            .iter()
            .enumerate()
            .map(|(index, field)| {
                reader.list_value(batch, &key_column(index), row, field.data_type())
            })
            .collect::<DfResult<Vec<_>>>()?;
        let mut states = Vec::with_capacity(state_types.len());
        for (call, types) in state_types.iter().enumerate() {
            let fields = types
                .iter()
                .enumerate()
                .map(|(field, data_type)| {
                    reader.list_value(batch, &state_column(call, field), row, data_type)
                })
                .collect::<DfResult<Vec<_>>>()?;
            states.push(fields);
        }
        let groups = keys.first().map_or(0, |k| k.len());
        if keys
            .iter()
            .chain(states.iter().flatten())
            .any(|c| c.len() != groups)
        {
            return Err(reader.malformed(format!(
                "window ending at {window_end_ms} ms: key and state columns differ in length"
            )));
        }
        self.settle_layout(window_end_ms, &keys)?;
        let mut window = self.rebuild_window(&keys, &states)?;
        if window.groups.len() != groups {
            return Err(reader.malformed(format!(
                "window ending at {window_end_ms} ms: a group key appears twice"
            )));
        }
        window.flags = EntryFlags::restored();
        if self.windows.insert(window_end_ms, window).is_some() {
            return Err(
                reader.malformed(format!("window ending at {window_end_ms} ms appears twice"))
            );
        }
        Ok(())
    }
}
