//! Snapshot and restore of the [`SessionAggregateOperator`]'s state, incremental by
//! session.
//!
//! Parts: `counters` (the watermark, late rows), `sessions` (one entry per open session,
//! keyed by its start and partition: its end, last emitted row and accumulator states) and,
//! with keyed watermarks, `partition_watermarks`. Sessions are incremental because a
//! changelog session aggregate frees none (its state grows with the partitions), and under
//! `EMIT ON WINDOW CLOSE` a delta stays small anyway: a merge or a late row rewrites the
//! sessions it made and deletes the ones it replaced.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BinaryArray, BinaryBuilder, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::row::OwnedRow;
use datafusion::error::{DataFusionError, Result as DfResult};

use super::{Session, SessionAggregateOperator};
use crate::operator::accumulator_state::{
    state_types, AccumulatorStates, EmittedColumns, EmittedRows, StateColumns,
};
use crate::operator::change_tracker::EntryFlags;
use crate::state::{restored_part, OperatorState, RestoredPart, StateKind, StatePart};
use crate::state_codec::{
    counters_part, state_batch, Counters, PartReader, StateColumn, COUNTERS_PART,
};

/// Name of the part holding the open sessions.
const SESSIONS_PART: &str = "sessions";

/// Name of the part holding each partition's watermark (keyed watermarks).
const WATERMARKS_PART: &str = "partition_watermarks";

/// The operator's name in restore errors.
const OPERATOR: &str = "SessionAggregate";

/// A session's entry key: its start (fixed width, so the key is unique), then its partition.
fn session_key(partition: &OwnedRow, start_ms: i64) -> Vec<u8> {
    let mut key = start_ms.to_be_bytes().to_vec();
    key.extend_from_slice(partition.row().as_ref());
    key
}

impl SessionAggregateOperator {
    /// The operator's state: everything with `full` (or when a delta cannot say what
    /// changed), otherwise the sessions changed and removed since the previous snapshot.
    pub(super) fn snapshot_state(&mut self, full: bool) -> DfResult<OperatorState> {
        let full = full
            || self.changes.needs_full()
            || self.keyed.as_ref().is_some_and(|k| k.changes.needs_full());
        let (changed, removed) = self.changes.take();
        let (sessions, deletes) = if full {
            let all = self
                .partitions
                .iter()
                .flat_map(|(partition, sessions)| {
                    sessions.keys().map(|start| (partition.clone(), *start))
                })
                .collect();
            (all, Vec::new())
        } else {
            // A session removed and made again (same partition and start) is written.
            let deletes = removed
                .into_iter()
                .filter(|(partition, start)| self.session_mut(partition, *start).is_none())
                .map(|(partition, start)| session_key(&partition, start))
                .collect();
            (changed, deletes)
        };
        let counters = counters_part(&[
            ("watermark_ms", self.watermark_ms),
            ("late_rows", self.late_rows as i64),
        ])?;
        let mut sessions = StatePart::new(SESSIONS_PART, self.write_sessions(sessions, full)?);
        sessions.deletes = deletes;
        let mut parts = vec![counters, sessions];
        if self.keyed.is_some() {
            parts.push(self.write_watermarks(full)?);
        }
        let kind = if full {
            StateKind::Full
        } else {
            StateKind::Delta
        };
        Ok(OperatorState { kind, parts })
    }

    fn session_mut(&mut self, partition: &OwnedRow, start_ms: i64) -> Option<&mut Session> {
        self.partitions
            .get_mut(partition)
            .and_then(|sessions| sessions.get_mut(&start_ms))
    }

    /// The state batch of `sessions` (those still open and, unless `all`, still dirty: a
    /// session may be listed twice); rebuilds their accumulators from what it wrote.
    fn write_sessions(
        &mut self,
        sessions: Vec<(OwnedRow, i64)>,
        all: bool,
    ) -> DfResult<Vec<RecordBatch>> {
        let calls = self.calls.len();
        let mut keys = BinaryBuilder::new();
        let mut partitions = BinaryBuilder::new();
        let (mut starts, mut ends) = (Vec::new(), Vec::new());
        let mut emitted = EmittedRows::new(calls);
        let mut states = AccumulatorStates::new(calls);
        let mut written = Vec::new();
        for (partition, start_ms) in sessions {
            let Some(session) = self.session_mut(&partition, start_ms) else {
                continue;
            };
            if !all && !session.flags.is_dirty() {
                continue;
            }
            session.flags.written();
            keys.append_value(session_key(&partition, start_ms));
            partitions.append_value(partition.row().as_ref());
            starts.push(start_ms);
            ends.push(session.end_ms);
            emitted.push(session.emitted.as_ref());
            states.push(&mut session.accumulators)?;
            written.push((partition, start_ms));
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
            ("partition".into(), Arc::new(partitions.finish()), true),
            ("start_ms".into(), Arc::new(Int64Array::from(starts)), true),
            ("end_ms".into(), Arc::new(Int64Array::from(ends)), true),
        ];
        columns.extend(emitted.finish(&result_types)?);
        columns.extend(state_columns);
        let batch = state_batch(keys.finish(), columns)?;
        for (row, (partition, start_ms)) in written.iter().enumerate() {
            let fresh = self.accumulators()?;
            if let Some(session) = self.session_mut(partition, *start_ms) {
                session.accumulators = rebuild.rebuild(row, fresh)?;
            }
        }
        Ok(vec![batch])
    }

    /// The partitions' watermarks: all, or those that moved since the previous snapshot.
    fn write_watermarks(&mut self, all: bool) -> DfResult<StatePart> {
        let Some(keyed) = &mut self.keyed else {
            return Ok(StatePart::new(WATERMARKS_PART, Vec::new()));
        };
        let (moved, _) = keyed.changes.take();
        let partitions: Vec<OwnedRow> = if all {
            keyed.watermarks.keys().cloned().collect()
        } else {
            moved
        };
        let mut keys = BinaryBuilder::new();
        let mut watermarks = Vec::new();
        for partition in partitions {
            let Some((watermark_ms, flags)) = keyed.watermarks.get_mut(&partition) else {
                continue;
            };
            if !all && !flags.is_dirty() {
                continue;
            }
            flags.written();
            keys.append_value(partition.row().as_ref());
            watermarks.push(*watermark_ms);
        }
        let upserts = if watermarks.is_empty() {
            Vec::new()
        } else {
            let column: ArrayRef = Arc::new(Int64Array::from(watermarks));
            vec![state_batch(
                keys.finish(),
                vec![("watermark_ms", column, true)],
            )?]
        };
        Ok(StatePart::new(WATERMARKS_PART, upserts))
    }

    /// Replaces the state of a fresh instance with `parts`, as [`Self::snapshot_state`]
    /// wrote them (merged over a chain of snapshots).
    pub(super) fn restore_state(&mut self, parts: &[RestoredPart]) -> DfResult<()> {
        let known = [COUNTERS_PART, SESSIONS_PART, WATERMARKS_PART];
        let Some(counters) = Counters::restore(OPERATOR, parts, &known)? else {
            return Ok(());
        };
        if !self.partitions.is_empty() {
            return Err(DataFusionError::Internal(
                "state restored into a session aggregate that already holds sessions".into(),
            ));
        }
        self.watermark_ms = counters.get("watermark_ms")?;
        self.late_rows = counters.get("late_rows")? as u64;
        if let Some(part) = restored_part(parts, SESSIONS_PART) {
            for batch in &part.batches {
                self.restore_sessions(&PartReader::new(OPERATOR, SESSIONS_PART), batch)?;
            }
        }
        let parser = self.converter.parser();
        if let Some(keyed) = &mut self.keyed {
            for batch in restored_part(parts, WATERMARKS_PART).map_or(&[][..], |p| &p.batches) {
                let reader = PartReader::new(OPERATOR, WATERMARKS_PART);
                let (keys, watermarks) = (
                    reader.keys(batch)?,
                    reader.required::<Int64Array>(batch, "watermark_ms")?,
                );
                for row in 0..batch.num_rows() {
                    let partition = parser.parse(keys.value(row)).owned();
                    let entry = (watermarks.value(row), EntryFlags::restored());
                    keyed.watermarks.insert(partition, entry);
                }
            }
            keyed.changes.restored();
        }
        self.changes.restored();
        Ok(())
    }

    /// Restores the sessions of one batch written by [`Self::write_sessions`].
    fn restore_sessions(&mut self, reader: &PartReader<'_>, batch: &RecordBatch) -> DfResult<()> {
        let partitions = reader.required::<BinaryArray>(batch, "partition")?;
        let starts = reader.required::<Int64Array>(batch, "start_ms")?;
        let ends = reader.required::<Int64Array>(batch, "end_ms")?;
        let emitted = EmittedColumns::read(reader, batch, self.calls.len())?;
        let types = state_types(&mut self.accumulators()?)?;
        let states = StateColumns::read(reader, batch, &types)?;
        let parser = self.converter.parser();
        for row in 0..batch.num_rows() {
            let partition = parser.parse(partitions.value(row)).owned();
            let (start_ms, end_ms) = (starts.value(row), ends.value(row));
            let session = Session {
                end_ms,
                accumulators: states.rebuild(row, self.accumulators()?)?,
                emitted: emitted.at(row)?,
                flags: EntryFlags::restored(),
            };
            let sessions = self.partitions.entry(partition.clone()).or_default();
            if sessions.insert(start_ms, session).is_some() {
                return Err(reader.malformed("a session appears twice"));
            }
            // The index of sessions by end holds every open session (see `absorb`).
            if self.emit_on_close && self.keyed.is_none() {
                self.by_end.insert((end_ms, partition, start_ms));
            }
        }
        Ok(())
    }
}
