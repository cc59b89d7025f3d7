//! Snapshots of the ASOF join's state. The state is bounded by the watermark (left rows
//! leave once settled, right rows once no future left row can match them), so every
//! snapshot is whole: the right rows per key and time, the left rows still waiting (with
//! the answer emitted early for each), the keys a watermark step must visit, and one
//! `progress` entry (watermark, output watermark hold, arrival counter, late rows, steps
//! since the last full sweep). Times are in the join's unit.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, BinaryArray, BinaryBuilder, Int64Array, Int64Builder, UInt32Array, UInt64Array,
    UInt64Builder,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowParser};
use datafusion::error::Result as DfResult;

use super::state::Pending;
use super::AsofJoinOperator;
use crate::state::{restored_part, OperatorState, RestoredPart, StatePart};
use crate::state_codec::{
    check_part_names, state_batch, time_sequence_key, PartReader, StateColumn,
    STATE_BATCH_ENTRIES_MAX,
};

const OWNER: &str = "AsofJoin";
const RIGHT_PART: &str = "right";
const PENDING_PART: &str = "pending";
const DIRTY_PART: &str = "dirty";
const PROGRESS_PART: &str = "progress";
/// The key of the one `progress` entry.
const PROGRESS_KEY: &[u8] = b"progress";

impl AsofJoinOperator {
    /// The whole state (see the module doc).
    pub(super) fn snapshot_parts(&self) -> DfResult<OperatorState> {
        Ok(OperatorState::full(vec![
            StatePart::new(RIGHT_PART, self.right_batches()?),
            StatePart::new(PENDING_PART, self.pending_batches()?),
            StatePart::new(DIRTY_PART, self.dirty_batches()?),
            StatePart::new(PROGRESS_PART, vec![self.progress_batch()?]),
        ]))
    }

    fn right_batches(&self) -> DfResult<Vec<RecordBatch>> {
        let rows: Vec<(&OwnedRow, i64, &OwnedRow)> = self
            .keys
            .iter()
            .flat_map(|(key, state)| state.right.iter().map(move |(t, row)| (key, *t, row)))
            .collect();
        let mut batches = Vec::new();
        for chunk in rows.chunks(STATE_BATCH_ENTRIES_MAX) {
            let mut entry_keys = BinaryBuilder::new();
            let mut join_keys = BinaryBuilder::new();
            let mut event_times = Int64Builder::new();
            let mut values = BinaryBuilder::new();
            for (key, time, row) in chunk {
                let key = key.row();
                let mut entry_key = Vec::with_capacity(8 + key.as_ref().len());
                entry_key.extend_from_slice(&time.to_be_bytes());
                entry_key.extend_from_slice(key.as_ref());
                entry_keys.append_value(entry_key);
                join_keys.append_value(key);
                event_times.append_value(*time);
                values.append_value(row.row());
            }
            batches.push(state_batch(
                entry_keys.finish(),
                vec![
                    ("join_key", Arc::new(join_keys.finish()), false),
                    ("time", Arc::new(event_times.finish()), false),
                    ("row", Arc::new(values.finish()), false),
                ],
            )?);
        }
        Ok(batches)
    }

    fn pending_batches(&self) -> DfResult<Vec<RecordBatch>> {
        let rows: Vec<(&OwnedRow, (i64, u64), &Pending)> = self
            .keys
            .iter()
            .flat_map(|(key, state)| state.pending.iter().map(move |(at, p)| (key, *at, p)))
            .collect();
        let mut batches = Vec::new();
        for chunk in rows.chunks(STATE_BATCH_ENTRIES_MAX) {
            let mut entry_keys = BinaryBuilder::new();
            let mut join_keys = BinaryBuilder::new();
            let mut event_times = Int64Builder::new();
            let mut arrivals = UInt64Builder::new();
            let mut values = BinaryBuilder::new();
            let mut answer_times = Int64Builder::new();
            let mut answer_rows = BinaryBuilder::new();
            for (key, (time, arrival), pending) in chunk {
                entry_keys.append_value(time_sequence_key(*time, *arrival));
                join_keys.append_value(key.row());
                event_times.append_value(*time);
                arrivals.append_value(*arrival);
                values.append_value(pending.row.row());
                answer_times.append_option(pending.answer.as_ref().map(|(at, _)| *at));
                answer_rows.append_option(pending.answer.as_ref().map(|(_, row)| row.row()));
            }
            batches.push(state_batch(
                entry_keys.finish(),
                vec![
                    ("join_key", Arc::new(join_keys.finish()), false),
                    ("time", Arc::new(event_times.finish()), false),
                    ("arrival", Arc::new(arrivals.finish()), false),
                    ("row", Arc::new(values.finish()), false),
                    ("answer_time", Arc::new(answer_times.finish()), true),
                    ("answer_row", Arc::new(answer_rows.finish()), true),
                ],
            )?);
        }
        Ok(batches)
    }

    fn dirty_batches(&self) -> DfResult<Vec<RecordBatch>> {
        let keys: Vec<&OwnedRow> = self.dirty.iter().collect();
        keys.chunks(STATE_BATCH_ENTRIES_MAX)
            .map(|chunk| {
                let keys: BinaryArray = chunk.iter().map(|k| Some(k.row())).collect();
                state_batch(keys, Vec::<StateColumn<&str>>::new())
            })
            .collect()
    }

    fn progress_batch(&self) -> DfResult<RecordBatch> {
        state_batch(
            BinaryArray::from_vec(vec![PROGRESS_KEY]),
            vec![
                (
                    "watermark",
                    Arc::new(Int64Array::from(vec![self.watermark])),
                    false,
                ),
                (
                    "hold_ms",
                    Arc::new(Int64Array::from(vec![self.hold_ms])),
                    false,
                ),
                (
                    "arrivals",
                    Arc::new(UInt64Array::from(vec![self.arrivals])),
                    false,
                ),
                (
                    "late_rows",
                    Arc::new(UInt64Array::from(vec![self.late_rows])),
                    false,
                ),
                (
                    // Kept for the format; wake-ups replaced the periodic sweep.
                    "steps_since_sweep",
                    Arc::new(UInt32Array::from(vec![0_u32])),
                    false,
                ),
            ],
        )
    }

    /// Replaces the state with `parts`.
    pub(super) fn restore_parts(&mut self, parts: &[RestoredPart]) -> DfResult<()> {
        check_part_names(
            OWNER,
            parts,
            &[RIGHT_PART, PENDING_PART, DIRTY_PART, PROGRESS_PART],
        )?;
        self.keys.clear();
        self.dirty.clear();
        self.wakeups.clear();
        self.held.clear();
        let key_parser = self.converters.key.parser();
        let right_parser = self.converters.right.parser();
        let left_parser = self.converters.left.parser();
        self.restore_right(parts, &key_parser, &right_parser)?;
        self.restore_pending(parts, &key_parser, &left_parser, &right_parser)?;
        let reader = PartReader::new(OWNER, DIRTY_PART);
        for batch in restored_part(parts, DIRTY_PART)
            .into_iter()
            .flat_map(|p| &p.batches)
        {
            for key in reader.keys(batch)?.iter().flatten() {
                let key = self.restored_key(&reader, &key_parser, key)?;
                self.dirty.insert(key);
            }
        }
        self.rows_held = self
            .keys
            .values()
            .map(|state| (state.right.len() + state.pending.len()) as u64)
            .sum();
        // Wake-ups and holds are not saved: the first step after the restore visits every
        // key once and registers them again.
        for (key, state) in &mut self.keys {
            state.dirty = true;
            self.dirty.insert(key.clone());
        }
        self.restore_progress(parts)
    }

    /// A join key of the state, as the running join holds it.
    fn restored_key(
        &self,
        reader: &PartReader<'_>,
        parser: &RowParser,
        bytes: &[u8],
    ) -> DfResult<OwnedRow> {
        match &self.global_key {
            Some(global) if global.row().as_ref() == bytes => Ok(global.clone()),
            Some(_) => Err(reader.malformed("a key of a join without keys is not its one key")),
            None => Ok(parser.parse(bytes).owned()),
        }
    }

    fn restore_right(
        &mut self,
        parts: &[RestoredPart],
        key_parser: &RowParser,
        right_parser: &RowParser,
    ) -> DfResult<()> {
        let reader = PartReader::new(OWNER, RIGHT_PART);
        for batch in restored_part(parts, RIGHT_PART)
            .into_iter()
            .flat_map(|p| &p.batches)
        {
            let join_keys = reader.required::<BinaryArray>(batch, "join_key")?;
            let event_times = reader.required::<Int64Array>(batch, "time")?;
            let rows = reader.required::<BinaryArray>(batch, "row")?;
            for index in 0..batch.num_rows() {
                let key = self.restored_key(&reader, key_parser, join_keys.value(index))?;
                let row = right_parser.parse(rows.value(index)).owned();
                let state = self.keys.entry(key).or_default();
                state.right.insert(event_times.value(index), row);
            }
        }
        Ok(())
    }

    fn restore_pending(
        &mut self,
        parts: &[RestoredPart],
        key_parser: &RowParser,
        left_parser: &RowParser,
        right_parser: &RowParser,
    ) -> DfResult<()> {
        let reader = PartReader::new(OWNER, PENDING_PART);
        for batch in restored_part(parts, PENDING_PART)
            .into_iter()
            .flat_map(|p| &p.batches)
        {
            let join_keys = reader.required::<BinaryArray>(batch, "join_key")?;
            let event_times = reader.required::<Int64Array>(batch, "time")?;
            let arrivals = reader.required::<UInt64Array>(batch, "arrival")?;
            let rows = reader.required::<BinaryArray>(batch, "row")?;
            let answer_times = reader.column::<Int64Array>(batch, "answer_time")?;
            let answer_rows = reader.column::<BinaryArray>(batch, "answer_row")?;
            for index in 0..batch.num_rows() {
                let key = self.restored_key(&reader, key_parser, join_keys.value(index))?;
                let answer = match (answer_times.is_valid(index), answer_rows.is_valid(index)) {
                    (true, true) => Some((
                        answer_times.value(index),
                        right_parser.parse(answer_rows.value(index)).owned(),
                    )),
                    (false, false) => None,
                    _ => return Err(reader.malformed("an answer has a time or a row, not both")),
                };
                let pending = Pending {
                    row: left_parser.parse(rows.value(index)).owned(),
                    answer,
                };
                let at = (event_times.value(index), arrivals.value(index));
                let state = self.keys.entry(key).or_default();
                state.pending.insert(at, pending);
            }
        }
        Ok(())
    }

    fn restore_progress(&mut self, parts: &[RestoredPart]) -> DfResult<()> {
        let reader = PartReader::new(OWNER, PROGRESS_PART);
        let progress = match restored_part(parts, PROGRESS_PART) {
            Some(part) => reader.single(part)?,
            None => None,
        };
        let Some(progress) = progress else {
            return Err(reader.missing());
        };
        self.watermark = reader
            .required::<Int64Array>(progress, "watermark")?
            .value(0);
        self.hold_ms = reader.required::<Int64Array>(progress, "hold_ms")?.value(0);
        self.arrivals = reader
            .required::<UInt64Array>(progress, "arrivals")?
            .value(0);
        self.late_rows = reader
            .required::<UInt64Array>(progress, "late_rows")?
            .value(0);
        reader.required::<UInt32Array>(progress, "steps_since_sweep")?;
        let arrived_max = self
            .keys
            .values()
            .filter_map(|state| state.pending.keys().map(|&(_, a)| a).max())
            .max();
        if arrived_max.is_some_and(|max| max >= self.arrivals) {
            return Err(reader.malformed("a waiting row's arrival number is not below the counter"));
        }
        Ok(())
    }
}
