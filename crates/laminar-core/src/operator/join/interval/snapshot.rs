//! Snapshots of the interval join's state. The state is bounded by the watermark (a row
//! leaves it once out of reach of the other input), so every snapshot is whole: each stored
//! row of an input is one entry, keyed by its place (event time, arrival number), with its
//! join key, row encoding and whether a row of the other input matched it; one `progress`
//! entry holds the watermark, the arrival counter and the late-row count.

use std::sync::Arc;

use datafusion::arrow::array::{
    BinaryArray, BinaryBuilder, BooleanArray, BooleanBuilder, Int64Array, Int64Builder,
    UInt64Array, UInt64Builder,
};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, Rows};
use datafusion::common::hash_map::Entry;
use datafusion::common::HashMap;
use datafusion::error::Result as DfResult;

use super::{IntervalJoinOperator, TimedRow, TimedSide};
use crate::operator::cast_to_fields;
use crate::state::{restored_part, OperatorState, RestoredPart, StatePart};
use crate::state_codec::{
    check_part_names, state_batch, time_sequence_key, PartReader, STATE_BATCH_ENTRIES_MAX,
};

const OWNER: &str = "IntervalJoin";
/// Each input's part, by port.
const SIDE_PARTS: [&str; 2] = ["left", "right"];
const PROGRESS_PART: &str = "progress";
/// The key of the one `progress` entry.
const PROGRESS_KEY: &[u8] = b"progress";

impl TimedSide {
    /// Every stored row, its columns encoded by `converter`.
    fn part(&self, name: &str, converter: &RowConverter) -> DfResult<StatePart> {
        let mut batch_rows: HashMap<u32, Rows> = HashMap::new();
        for (_, timed) in self.rows() {
            if let Entry::Vacant(vacant) = batch_rows.entry(timed.batch) {
                let batch = self.batch(timed.batch).ok_or_else(super::missing)?;
                vacant.insert(converter.convert_columns(batch.columns())?);
            }
        }
        let mut batches = Vec::new();
        let rows: Vec<_> = self.rows().collect();
        for chunk in rows.chunks(STATE_BATCH_ENTRIES_MAX) {
            let mut keys = BinaryBuilder::new();
            let mut event_times = Int64Builder::new();
            let mut sequences = UInt64Builder::new();
            let mut join_keys = BinaryBuilder::new();
            let mut rows = BinaryBuilder::new();
            let mut matched = BooleanBuilder::new();
            for (join_key, timed) in chunk {
                let row = batch_rows
                    .get(&timed.batch)
                    .ok_or_else(super::missing)?
                    .row(timed.row as usize);
                keys.append_value(time_sequence_key(timed.time_ms, timed.sequence));
                event_times.append_value(timed.time_ms);
                sequences.append_value(timed.sequence);
                join_keys.append_value(join_key);
                rows.append_value(row.as_ref());
                matched.append_value(timed.matched);
            }
            batches.push(state_batch(
                keys.finish(),
                vec![
                    ("time_ms", Arc::new(event_times.finish()), false),
                    ("sequence", Arc::new(sequences.finish()), false),
                    ("join_key", Arc::new(join_keys.finish()), false),
                    ("row", Arc::new(rows.finish()), false),
                    ("matched", Arc::new(matched.finish()), false),
                ],
            )?);
        }
        Ok(StatePart::new(name, batches))
    }

    /// The side a restored part describes (empty without one): its rows decoded by
    /// `encoder` into one kept batch of `schema`.
    fn restored(
        part: Option<&RestoredPart>,
        name: &str,
        encoder: &RowConverter,
        schema: &SchemaRef,
    ) -> DfResult<Self> {
        let reader = PartReader::new(OWNER, name);
        let mut side = Self::default();
        let mut stored = Vec::new();
        for batch in part.into_iter().flat_map(|p| &p.batches) {
            let times = reader.required::<Int64Array>(batch, "time_ms")?;
            let sequences = reader.required::<UInt64Array>(batch, "sequence")?;
            let join_keys = reader.required::<BinaryArray>(batch, "join_key")?;
            let rows = reader.required::<BinaryArray>(batch, "row")?;
            let matched = reader.required::<BooleanArray>(batch, "matched")?;
            for index in 0..batch.num_rows() {
                stored.push((
                    join_keys.value(index),
                    rows.value(index),
                    times.value(index),
                    sequences.value(index),
                    matched.value(index),
                ));
            }
        }
        if stored.is_empty() {
            return Ok(side);
        }
        let parser = encoder.parser();
        let columns = encoder.convert_rows(stored.iter().map(|s| parser.parse(s.1)))?;
        let columns = cast_to_fields(columns, schema.fields())?;
        let rows = RecordBatch::try_new(Arc::clone(schema), columns)
            .map_err(|e| reader.malformed(format_args!("rows do not fit the input: {e}")))?;
        let kept = side.keep(&rows);
        for (index, (join_key, _, time_ms, sequence, matched)) in stored.into_iter().enumerate() {
            let row = TimedRow {
                time_ms,
                sequence,
                batch: kept,
                row: u32::try_from(index).map_err(|_| reader.malformed("too many rows"))?,
                matched,
            };
            side.insert(join_key, row);
        }
        Ok(side)
    }
}

impl IntervalJoinOperator {
    /// The whole state (see the module doc).
    pub(super) fn snapshot_parts(&self) -> DfResult<OperatorState> {
        let mut parts = Vec::with_capacity(3);
        for (index, (side, name)) in self.sides.iter().zip(SIDE_PARTS).enumerate() {
            parts.push(side.part(name, &self.core.rows[index])?);
        }
        let progress = state_batch(
            BinaryArray::from_vec(vec![PROGRESS_KEY]),
            vec![
                (
                    "watermark_ms",
                    Arc::new(Int64Array::from(vec![self.watermark_ms])),
                    false,
                ),
                (
                    "sequence",
                    Arc::new(UInt64Array::from(vec![self.sequence])),
                    false,
                ),
                (
                    "late_rows",
                    Arc::new(UInt64Array::from(vec![self.late_rows])),
                    false,
                ),
            ],
        )?;
        parts.push(StatePart::new(PROGRESS_PART, vec![progress]));
        Ok(OperatorState::full(parts))
    }

    /// Replaces the state with `parts`.
    pub(super) fn restore_parts(&mut self, parts: &[RestoredPart]) -> DfResult<()> {
        check_part_names(OWNER, parts, &[SIDE_PARTS[0], SIDE_PARTS[1], PROGRESS_PART])?;
        for (index, name) in SIDE_PARTS.into_iter().enumerate() {
            self.sides[index] = TimedSide::restored(
                restored_part(parts, name),
                name,
                &self.core.rows[index],
                &self.core.spec.inputs[index],
            )?;
        }
        let reader = PartReader::new(OWNER, PROGRESS_PART);
        let progress = match restored_part(parts, PROGRESS_PART) {
            Some(part) => reader.single(part)?,
            None => None,
        };
        let Some(progress) = progress else {
            return Err(reader.missing());
        };
        self.watermark_ms = reader
            .required::<Int64Array>(progress, "watermark_ms")?
            .value(0);
        self.sequence = reader
            .required::<UInt64Array>(progress, "sequence")?
            .value(0);
        self.late_rows = reader
            .required::<UInt64Array>(progress, "late_rows")?
            .value(0);
        let stored_max = self
            .sides
            .iter()
            .filter_map(|side| side.rows().map(|(_, row)| row.sequence).max())
            .max();
        if stored_max.is_some_and(|max| max >= self.sequence) {
            return Err(reader.malformed("a stored row's arrival number is not below the counter"));
        }
        Ok(())
    }
}
