//! Snapshot and restore of the [`AggregateOperator`]'s state, incremental by group.
//!
//! Parts: `counters` (the watermark, late rows, unmatched retractions), `groups` (one entry
//! per group: its row-format key, window end, row count, last emitted row and accumulator
//! states) and, with keyed watermarks, `key_watermarks` (see [`super::keyed`]). A delta
//! holds the groups changed since the previous snapshot and deletes the groups gone; a
//! group is written whole, so a delta's size follows the number of groups touched, not the
//! number of groups held.

use std::sync::Arc;

use datafusion::arrow::array::{BinaryBuilder, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::row::OwnedRow;
use datafusion::error::{DataFusionError, Result as DfResult};

use super::keyed::KEY_WATERMARKS_PART;
use super::{Accumulation, AggregateOperator};
use crate::operator::accumulator_state::{
    state_types, AccumulatorStates, EmittedColumns, EmittedRows, StateColumns,
};
use crate::operator::change_tracker::EntryFlags;
use crate::state::{restored_part, OperatorState, RestoredPart, StateKind, StatePart};
use crate::state_codec::{
    counters_part, state_batch, Counters, PartReader, StateColumn, COUNTERS_PART,
};

/// Name of the part holding the groups.
const GROUPS_PART: &str = "groups";

/// The operator's name in restore errors.
const OPERATOR: &str = "Aggregate";

impl AggregateOperator {
    /// The operator's state: everything with `full` (or when a delta cannot say what
    /// changed), otherwise the groups changed and removed since the previous snapshot.
    pub(super) fn snapshot_state(&mut self, full: bool) -> DfResult<OperatorState> {
        let full = full
            || self.changes.needs_full()
            || self.keyed.as_ref().is_some_and(|keyed| keyed.needs_full());
        let (changed, removed) = self.changes.take();
        let (keys, deletes) = if full {
            (self.groups.keys().cloned().collect(), Vec::new())
        } else {
            // A group removed and created again is written, not deleted.
            let deletes = removed
                .into_iter()
                .filter(|key| !self.groups.contains_key(key))
                .map(|key| key.row().as_ref().to_vec())
                .collect();
            (changed, deletes)
        };
        let counters = counters_part(&[
            ("watermark_ms", self.watermark_ms),
            ("late_rows", self.late_rows as i64),
            ("unmatched_retractions", self.unmatched_retractions as i64),
        ])?;
        let mut groups = StatePart::new(GROUPS_PART, self.write_groups(keys, full)?);
        groups.deletes = deletes;
        let mut parts = vec![counters, groups];
        if let Some(keyed) = &mut self.keyed {
            parts.push(keyed.snapshot(full)?);
        }
        let kind = if full {
            StateKind::Full
        } else {
            StateKind::Delta
        };
        Ok(OperatorState { kind, parts })
    }

    /// The state batch of the groups `keys` (those still held and, unless `all`, still
    /// dirty: a key may be listed twice); rebuilds their accumulators from what it wrote.
    fn write_groups(&mut self, keys: Vec<OwnedRow>, all: bool) -> DfResult<Vec<RecordBatch>> {
        let calls = self.calls.len();
        let mut key_bytes = BinaryBuilder::new();
        let mut window_ends = Vec::new();
        let mut rows = Vec::new();
        let mut emitted = EmittedRows::new(calls);
        let mut states = AccumulatorStates::new(calls);
        let mut written = Vec::new();
        for key in keys {
            let Some(group) = self.groups.get_mut(&key) else {
                continue;
            };
            if !all && !group.flags.is_dirty() {
                continue;
            }
            group.flags.written();
            key_bytes.append_value(key.row().as_ref());
            window_ends.push(group.window_end_ms);
            rows.push(group.rows);
            emitted.push(group.emitted.as_ref());
            states.push(&mut group.accumulators)?;
            written.push(key);
        }
        if written.is_empty() {
            return Ok(Vec::new());
        }
        let (state_columns, rebuild) = states.finish()?;
        let result_types: Vec<DataType> = self
            .calls
            .iter()
            .map(|call| call.function.field().data_type().clone())
            .collect();
        let mut columns: Vec<StateColumn> = vec![
            (
                "window_end_ms".into(),
                Arc::new(Int64Array::from(window_ends)),
                true,
            ),
            ("rows".into(), Arc::new(Int64Array::from(rows)), true),
        ];
        columns.extend(emitted.finish(&result_types)?);
        columns.extend(state_columns);
        let batch = state_batch(key_bytes.finish(), columns)?;
        if self.states_are_kept() {
            return Ok(vec![batch]);
        }
        for (row, key) in written.iter().enumerate() {
            let fresh = self.accumulators()?;
            if let Some(group) = self.groups.get_mut(key) {
                group.accumulators = rebuild.rebuild(row, fresh)?;
            }
        }
        Ok(vec![batch])
    }

    /// Whether every call's accumulator survives `state()` unchanged and merges back into
    /// an equal one (COUNT, SUM, MIN, MAX keep a plain value): then the live accumulators
    /// need no rebuild after a snapshot, which for a million groups is most of its cost.
    fn states_are_kept(&self) -> bool {
        const KEPT: [&str; 4] = ["count", "sum", "min", "max"];
        // Without retractions there is no accumulation list: plain accumulators.
        self.calls.iter().enumerate().all(|(index, call)| {
            let plain = self
                .accumulation
                .get(index)
                .is_none_or(|a| matches!(a, Accumulation::Sliding));
            plain && KEPT.contains(&call.function.fun().name())
        })
    }

    /// Replaces the state of a fresh instance with `parts`, as [`Self::snapshot_state`]
    /// wrote them (merged over a chain of snapshots).
    pub(super) fn restore_state(&mut self, parts: &[RestoredPart]) -> DfResult<()> {
        let known = [COUNTERS_PART, GROUPS_PART, KEY_WATERMARKS_PART];
        let Some(counters) = Counters::restore(OPERATOR, parts, &known)? else {
            return Ok(());
        };
        if !self.groups.is_empty() {
            return Err(DataFusionError::Internal(
                "state restored into an aggregate that already holds groups".into(),
            ));
        }
        self.watermark_ms = counters.get("watermark_ms")?;
        self.late_rows = counters.get("late_rows")? as u64;
        self.unmatched_retractions = counters.get("unmatched_retractions")? as u64;
        if let Some(part) = restored_part(parts, GROUPS_PART) {
            for batch in &part.batches {
                self.restore_groups(&PartReader::new(OPERATOR, GROUPS_PART), batch)?;
            }
        }
        self.restore_keyed(restored_part(parts, KEY_WATERMARKS_PART))?;
        self.changes.restored();
        Ok(())
    }

    /// Restores the groups of one batch written by [`Self::write_groups`].
    fn restore_groups(&mut self, reader: &PartReader<'_>, batch: &RecordBatch) -> DfResult<()> {
        let calls = self.calls.len();
        let keys = reader.keys(batch)?;
        let window_ends = reader.required::<Int64Array>(batch, "window_end_ms")?;
        let rows = reader.required::<Int64Array>(batch, "rows")?;
        let emitted = EmittedColumns::read(reader, batch, calls)?;
        let types = state_types(&mut self.accumulators()?)?;
        let states = StateColumns::read(reader, batch, &types)?;
        let parser = self.converter.parser();
        for row in 0..batch.num_rows() {
            // The one group of a global aggregate has no key columns to parse.
            let key = match &self.global_key {
                Some(global) => global.clone(),
                None => parser.parse(keys.value(row)).owned(),
            };
            let group = super::Group {
                accumulators: states.rebuild(row, self.accumulators()?)?,
                window_end_ms: window_ends.value(row),
                rows: rows.value(row),
                emitted: emitted.at(row)?,
                flags: EntryFlags::restored(),
            };
            if self.groups.insert(key, group).is_some() {
                return Err(reader.malformed("a group key appears twice"));
            }
        }
        Ok(())
    }
}
