//! Keyed watermarks of a windowed aggregate (Yasser et al., "Keyed Watermarks", 2023): every
//! key of a source declared `PER KEY` has a watermark of its own, the latest event time of
//! its rows minus the source's delay, so a key whose events arrive late in event time does
//! not see its windows closed by the others. This module tracks those watermarks and, per
//! key, the open windows they close; the aggregate decides what firing means.
//!
//! Invariants: a key's watermark never moves backwards; it moves only after a whole batch
//! was judged against the watermark before it (a row never makes itself or its batch late);
//! a row with a NULL event time leaves its key's watermark where it is.

use datafusion::common::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BinaryBuilder, Int64Array, RecordBatch};
use datafusion::arrow::row::{OwnedRow, Row, RowConverter, Rows, SortField};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::physical_expr::PhysicalExpr;

use super::AggregateOperator;
use crate::change_batch::ChangeBatch;
use crate::operator::change_tracker::{ChangeTracker, EntryFlags};
use crate::state::{RestoredPart, StatePart};
use crate::state_codec::{state_batch, PartReader};
use crate::watermark::{WATERMARK_END_MS, WATERMARK_MIN_MS};

/// How an aggregate reads keyed watermarks off its input.
#[derive(Debug, Clone)]
pub struct KeyedWatermark {
    /// Each input row's event time: a TIMESTAMP (any unit) or epoch-millisecond BIGINT.
    pub event_time: Arc<dyn PhysicalExpr>,
    /// Positions of the watermark's key columns among the aggregate's group keys.
    pub key_positions: Vec<usize>,
    /// How far a key's watermark trails the latest event time of its rows, in milliseconds.
    pub delay_ms: i64,
}

/// One key's watermark and the groups (windows) of the key still held.
#[derive(Debug)]
struct KeyState {
    watermark_ms: i64,
    /// `(window end, group key)` of every group of this key the aggregate still holds.
    groups: Vec<(i64, OwnedRow)>,
    /// The watermark changed since the previous snapshot, or is in one.
    flags: EntryFlags,
}

/// A group whose key's watermark reached its window end.
#[derive(Debug)]
struct DueGroup {
    /// The aggregate's key of the group.
    group: OwnedRow,
    /// The key's watermark is past the window end plus the allowed lateness: the group's
    /// result is final and its state can go.
    expired: bool,
}

/// The watermark keys and event times of one input batch.
pub(super) struct BatchKeys {
    keys: Rows,
    times_ms: Vec<Option<i64>>,
}

impl BatchKeys {
    /// The watermark key of row `row`.
    pub(super) fn key(&self, row: usize) -> Row<'_> {
        self.keys.row(row)
    }
}

/// Per-key watermarks and the groups they close.
pub(super) struct KeyedWatermarks {
    spec: KeyedWatermark,
    fields: Vec<SortField>,
    converter: RowConverter,
    /// One entry per key seen: keys are never forgotten before the end of input, since a
    /// forgotten key's late rows would look on time.
    keys: HashMap<Box<[u8]>, KeyState>,
    /// Keys whose watermark moved since the previous snapshot.
    changes: ChangeTracker<Box<[u8]>>,
}

impl KeyedWatermarks {
    /// Tracks `spec` for an aggregate whose group keys have `group_fields`.
    pub(super) fn new(spec: KeyedWatermark, group_fields: &[SortField]) -> DfResult<Self> {
        if spec.key_positions.is_empty() {
            return Err(DataFusionError::Internal(
                "keyed watermarks without key columns".into(),
            ));
        }
        let fields = spec
            .key_positions
            .iter()
            .map(|&position| {
                group_fields.get(position).cloned().ok_or_else(|| {
                    DataFusionError::Internal(format!(
                        "watermark key at group key {position} of {}",
                        group_fields.len()
                    ))
                })
            })
            .collect::<DfResult<Vec<_>>>()?;
        Ok(Self {
            converter: RowConverter::new(fields.clone())?,
            fields,
            spec,
            keys: HashMap::new(),
            changes: ChangeTracker::default(),
        })
    }

    /// The same tracking with no state, for another worker.
    pub(super) fn fork(&self) -> Self {
        Self {
            spec: self.spec.clone(),
            fields: self.fields.clone(),
            // `new` built a converter from these very fields, so building another cannot fail.
            converter: RowConverter::new(self.fields.clone())
                .expect("key types were accepted when the prototype was built"),
            keys: HashMap::new(),
            changes: ChangeTracker::default(),
        }
    }

    /// For `EXPLAIN`: the key columns among the group keys `keys`, and the delay.
    pub(super) fn describe(&self, keys: &[Arc<dyn PhysicalExpr>]) -> String {
        let names: Vec<String> = self
            .spec
            .key_positions
            .iter()
            .filter_map(|&position| keys.get(position).map(ToString::to_string))
            .collect();
        format!(
            "per key [{}], watermark delay {} ms",
            names.join(", "),
            self.spec.delay_ms
        )
    }

    /// Keys tracked.
    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Approximate bytes held for the keys.
    pub(super) fn bytes(&self) -> usize {
        self.keys
            .iter()
            .map(|(key, state)| {
                key.len()
                    + std::mem::size_of::<KeyState>()
                    + state
                        .groups
                        .iter()
                        .map(|(_, group)| group.row().as_ref().len() + 8)
                        .sum::<usize>()
            })
            .sum()
    }

    /// The watermark keys and event times of `batch`, whose group key columns are
    /// `group_columns`.
    fn batch_keys(&self, batch: &RecordBatch, group_columns: &[ArrayRef]) -> DfResult<BatchKeys> {
        let columns: Vec<ArrayRef> = self
            .spec
            .key_positions
            .iter()
            .map(|&position| Arc::clone(&group_columns[position]))
            .collect();
        let keys = self.converter.convert_columns(&columns)?;
        let times = self
            .spec
            .event_time
            .evaluate(batch)?
            .into_array(batch.num_rows())?;
        let times_ms = super::super::epoch_ms(&times)?
            .into_iter()
            .enumerate()
            .map(|(row, ms)| times.is_valid(row).then_some(ms))
            .collect();
        Ok(BatchKeys { keys, times_ms })
    }

    /// The watermark of `key`; the minimum for a key never seen.
    fn watermark_ms(&self, key: Row<'_>) -> i64 {
        self.keys
            .get(key.as_ref())
            .map_or(WATERMARK_MIN_MS, |state| state.watermark_ms)
    }

    /// Remembers a new group of `key`, closing at `window_end_ms`.
    fn track(&mut self, key: Row<'_>, window_end_ms: i64, group: OwnedRow) {
        let state = state_of(&mut self.keys, key);
        state.groups.push((window_end_ms, group));
        // A key first seen is written too, so a restored aggregate knows every key.
        self.changes.touch(&mut state.flags, || key.as_ref().into());
    }

    /// Advances the watermarks of the batch's keys by its event times; returns the groups
    /// whose key's watermark now reached their window end (each group once per advance
    /// until it expires, `allowed_lateness_ms` after its end), in key order.
    fn advance(&mut self, batch: &BatchKeys, allowed_lateness_ms: i64) -> Vec<DueGroup> {
        let mut latest: HashMap<Row<'_>, i64> = HashMap::new();
        for (row, time) in batch.times_ms.iter().enumerate() {
            if let Some(time) = *time {
                let entry = latest.entry(batch.keys.row(row)).or_insert(time);
                *entry = (*entry).max(time);
            }
        }
        let mut advanced: Vec<(Row<'_>, i64)> = latest
            .into_iter()
            .map(|(key, time)| (key, time.saturating_sub(self.spec.delay_ms)))
            .filter(|(key, watermark)| *watermark > self.watermark_ms(*key))
            .collect();
        advanced.sort_unstable();
        let mut due = Vec::new();
        for (key, watermark_ms) in advanced {
            let state = state_of(&mut self.keys, key);
            state.watermark_ms = watermark_ms;
            self.changes.touch(&mut state.flags, || key.as_ref().into());
            state.groups.retain(|(end_ms, group)| {
                if *end_ms > watermark_ms {
                    return true;
                }
                let expired = end_ms.saturating_add(allowed_lateness_ms) <= watermark_ms;
                due.push(DueGroup {
                    group: group.clone(),
                    expired,
                });
                !expired
            });
        }
        due
    }

    /// Forgets every key (at the end of input, when every group fires).
    pub(super) fn clear(&mut self) {
        self.keys.clear();
        self.changes.lost_track();
    }
}

/// The state of `key` among `keys`, created with the lowest watermark if missing.
fn state_of<'a>(keys: &'a mut HashMap<Box<[u8]>, KeyState>, key: Row<'_>) -> &'a mut KeyState {
    // Looked up before inserting: the key's bytes are copied only for a new key.
    if !keys.contains_key(key.as_ref()) {
        let state = KeyState {
            watermark_ms: WATERMARK_MIN_MS,
            groups: Vec::new(),
            flags: EntryFlags::default(),
        };
        keys.insert(key.as_ref().into(), state);
    }
    keys.get_mut(key.as_ref())
        .expect("the key was inserted above if it was missing")
}

/// Name of the state part holding each key's watermark.
pub(super) const KEY_WATERMARKS_PART: &str = "key_watermarks";

impl KeyedWatermarks {
    /// A delta cannot describe the keys' changes (none was taken, or every key went).
    pub(super) fn needs_full(&self) -> bool {
        self.changes.needs_full()
    }

    /// The keys' watermarks for a snapshot: all of them, or those that moved since the
    /// previous one. A key's groups are not written: restoring the groups tracks them again.
    pub(super) fn snapshot(&mut self, full: bool) -> DfResult<StatePart> {
        let (moved, _) = self.changes.take();
        let mut keys = BinaryBuilder::new();
        let mut watermarks = Vec::new();
        let mut write = |key: &[u8], state: &mut KeyState| {
            state.flags.written();
            keys.append_value(key);
            watermarks.push(state.watermark_ms);
        };
        if full {
            for (key, state) in &mut self.keys {
                write(key, state);
            }
        } else {
            for key in moved {
                if let Some(state) = self.keys.get_mut(&key) {
                    if state.flags.is_dirty() {
                        write(&key, state);
                    }
                }
            }
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
        Ok(StatePart::new(KEY_WATERMARKS_PART, upserts))
    }

    /// Restores the keys' watermarks written by [`Self::snapshot`].
    fn restore_watermarks(&mut self, part: &RestoredPart) -> DfResult<()> {
        for batch in &part.batches {
            let reader = PartReader::new("Aggregate", KEY_WATERMARKS_PART);
            let keys = reader.keys(batch)?;
            let watermarks = reader.required::<Int64Array>(batch, "watermark_ms")?;
            for row in 0..batch.num_rows() {
                let state = KeyState {
                    watermark_ms: watermarks.value(row),
                    groups: Vec::new(),
                    flags: EntryFlags::restored(),
                };
                self.keys.insert(keys.value(row).into(), state);
            }
        }
        Ok(())
    }
}

impl AggregateOperator {
    /// With keyed watermarks, after the groups were restored: restores the keys'
    /// watermarks from `part` and tracks every group under its key again.
    pub(super) fn restore_keyed(&mut self, part: Option<&RestoredPart>) -> DfResult<()> {
        let Some(keyed) = &mut self.keyed else {
            return Ok(());
        };
        if let Some(part) = part {
            keyed.restore_watermarks(part)?;
        }
        // Every group held is tracked: the aggregate forgets a group's tracking only when
        // it frees the group.
        let groups: Vec<(&OwnedRow, i64)> = self
            .groups
            .iter()
            .map(|(key, group)| (key, group.window_end_ms))
            .collect();
        if !groups.is_empty() {
            let columns = self
                .converter
                .convert_rows(groups.iter().map(|(key, _)| key.row()))?;
            let key_columns: Vec<ArrayRef> = keyed
                .spec
                .key_positions
                .iter()
                .map(|&position| Arc::clone(&columns[position]))
                .collect();
            let keys = keyed.converter.convert_columns(&key_columns)?;
            for (row, (group, window_end_ms)) in groups.into_iter().enumerate() {
                keyed.track(keys.row(row), window_end_ms, group.clone());
            }
        }
        keyed.changes.restored();
        Ok(())
    }
}

/// The watermark a keyed-watermark aggregate passes on: none until the end of input, since a
/// key it has not seen yet can still bring rows for any window; otherwise its input's.
pub(crate) fn keyed_output_watermark(keyed: bool, input_watermark_ms: i64) -> i64 {
    if keyed && input_watermark_ms < WATERMARK_END_MS {
        WATERMARK_MIN_MS
    } else {
        input_watermark_ms
    }
}

impl AggregateOperator {
    /// With keyed watermarks, the keys and event times of `batch`, whose group key columns
    /// are `key_columns`.
    pub(super) fn keyed_batch(
        &self,
        batch: &RecordBatch,
        key_columns: &[ArrayRef],
    ) -> DfResult<Option<BatchKeys>> {
        self.keyed
            .as_ref()
            .map(|keyed| keyed.batch_keys(batch, key_columns))
            .transpose()
    }

    /// With keyed watermarks, remembers the new group `group` (rows `members` of the batch)
    /// under its key, to fire when the key's watermark reaches `window_end_ms`.
    pub(super) fn track_group(
        &mut self,
        batch_keys: Option<&BatchKeys>,
        members: &[u32],
        window_end_ms: i64,
        group: &OwnedRow,
    ) {
        if let (Some(keyed), Some(batch_keys), Some(&first)) =
            (&mut self.keyed, batch_keys, members.first())
        {
            keyed.track(batch_keys.key(first as usize), window_end_ms, group.clone());
        }
    }

    /// The watermark the rows of a group are judged by: their key's with keyed watermarks
    /// (as it stood before the batch), the input's otherwise.
    pub(super) fn group_watermark_ms(
        &self,
        batch_keys: Option<&BatchKeys>,
        members: &[u32],
    ) -> i64 {
        match (&self.keyed, batch_keys, members.first()) {
            (Some(keyed), Some(batch_keys), Some(&first)) => {
                keyed.watermark_ms(batch_keys.key(first as usize))
            }
            _ => self.watermark_ms,
        }
    }

    /// Keyed watermarks: advances the watermarks of the batch's keys, then fires every group
    /// whose key's watermark reached its window end, one final row each.
    pub(super) fn fire_keyed(&mut self, batch_keys: &BatchKeys) -> DfResult<Option<ChangeBatch>> {
        let Some(keyed) = &mut self.keyed else {
            return Ok(None);
        };
        let due = keyed.advance(batch_keys, self.allowed_lateness_ms);
        let mut rows = Vec::with_capacity(due.len());
        for DueGroup {
            group: key,
            expired,
        } in due
        {
            let Some(group) = self.groups.get_mut(&key) else {
                continue;
            };
            if group.emitted.is_none() {
                let values = group
                    .accumulators
                    .iter_mut()
                    .map(|a| a.evaluate())
                    .collect::<DfResult<Vec<_>>>()?;
                group.emitted = Some(values.clone());
                self.changes.touch(&mut group.flags, || key.clone());
                rows.push((key.clone(), values));
            }
            if expired {
                if let Some(group) = self.groups.remove(&key) {
                    self.changes.remove(group.flags, || key.clone());
                }
            }
        }
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(self
            .changes(&[], &rows)?
            .map(|change| ChangeBatch::insert_only(change.into_batch())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_expr::expressions::col;

    /// A batch of `(device, ts)` rows, and its device column as the one group key.
    fn batch(rows: &[(&str, Option<i64>)]) -> (RecordBatch, Vec<ArrayRef>) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("device", DataType::Utf8, false),
            Field::new("ts", DataType::Int64, true),
        ]));
        let devices: ArrayRef = Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0)));
        let times: ArrayRef = Arc::new(rows.iter().map(|r| r.1).collect::<Int64Array>());
        let batch = RecordBatch::try_new(schema, vec![Arc::clone(&devices), times]).expect("batch");
        (batch, vec![devices])
    }

    fn tracker() -> KeyedWatermarks {
        let (sample, _) = batch(&[]);
        let spec = KeyedWatermark {
            event_time: col("ts", &sample.schema()).expect("column"),
            key_positions: vec![0],
            delay_ms: 100,
        };
        KeyedWatermarks::new(spec, &[SortField::new(DataType::Utf8)]).expect("tracker")
    }

    /// A group key standing for window `end_ms` of some key.
    fn group(end_ms: i64) -> OwnedRow {
        let converter = RowConverter::new(vec![SortField::new(DataType::Int64)]).expect("rows");
        let column: ArrayRef = Arc::new(Int64Array::from(vec![end_ms]));
        converter
            .convert_columns(&[column])
            .expect("row")
            .row(0)
            .owned()
    }

    #[test]
    fn each_key_closes_its_own_windows_and_never_moves_back() {
        let mut keyed = tracker();
        let (first, keys) = batch(&[("fast", Some(10_000)), ("slow", Some(1_000))]);
        let first = keyed.batch_keys(&first, &keys).expect("keys");
        keyed.track(first.key(0), 9_000, group(9_000));
        keyed.track(first.key(1), 2_000, group(2_000));
        // fast's watermark 9_900 closes its window ending at 9_000; slow's (900) does not.
        let due = keyed.advance(&first, 0);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].group, group(9_000));
        assert!(due[0].expired);
        assert_eq!(keyed.watermark_ms(first.key(0)), 9_900);
        assert_eq!(keyed.watermark_ms(first.key(1)), 900);
        // An older time and a NULL one leave the watermarks where they are.
        let (second, keys) = batch(&[("fast", Some(5_000)), ("slow", None)]);
        let second = keyed.batch_keys(&second, &keys).expect("keys");
        assert!(keyed.advance(&second, 0).is_empty());
        assert_eq!(keyed.watermark_ms(second.key(0)), 9_900);
        assert_eq!(keyed.watermark_ms(second.key(1)), 900);
        // slow catches up in its own time; with lateness its window stays due until expired.
        let (third, keys) = batch(&[("slow", Some(2_200))]);
        let third = keyed.batch_keys(&third, &keys).expect("keys");
        let due = keyed.advance(&third, 500);
        assert_eq!(due.len(), 1);
        assert!(!due[0].expired);
        assert_eq!((keyed.len(), keyed.watermark_ms(third.key(0))), (2, 2_100));
    }
}
