//! Snapshots of the regular join's state, incremental by join key: each input's rows of one
//! key are one entry (parallel lists of row encodings, multiplicities and match counts), and
//! a delta rewrites the keys changed since the previous snapshot and deletes those whose
//! rows went (retracted or expired). With a `state_ttl`, each key's last access is kept as
//! wall-clock milliseconds (part `expiry`), so idle time across a restart counts toward it.

use datafusion::common::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::{
    Array, BinaryArray, BinaryBuilder, Int64Array, Int64Builder, ListArray, ListBuilder,
    RecordBatch,
};
use datafusion::error::Result as DfResult;

use super::{Group, RegularJoinOperator, Side, Stored};
use crate::operator::join::state_ttl::KeyExpiry;
use crate::state::{restored_part, OperatorState, RestoredPart, StateKind, StatePart};
use crate::state_codec::{check_part_names, state_batch, PartReader, STATE_BATCH_ENTRIES_MAX};

const OWNER: &str = "RegularJoin";
/// Each input's part, by port.
const SIDE_PARTS: [&str; 2] = ["left", "right"];
const EXPIRY_PART: &str = "expiry";

/// Processing time paired with the wall clock, to carry last-access times across a restart.
#[derive(Debug, Clone, Copy)]
pub(in crate::operator::join) struct WallClock {
    pub(in crate::operator::join) now: Instant,
    pub(in crate::operator::join) unix_ms: i64,
}

impl WallClock {
    pub(super) fn now() -> Self {
        // A clock before 1970 reads as 1970: ages then count from there, never panic.
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_millis() as i64);
        Self {
            now: Instant::now(),
            unix_ms,
        }
    }

    fn unix_ms_of(self, at: Instant) -> i64 {
        let age_ms = self.now.saturating_duration_since(at).as_millis() as i64;
        self.unix_ms.saturating_sub(age_ms)
    }

    /// The instant of wall-clock time `unix_ms`, aged at most `ttl` (an older key is due
    /// at the next check either way, and the monotonic clock may not reach further back).
    fn instant_of(self, unix_ms: i64, ttl: Duration) -> Instant {
        let age_ms = self.unix_ms.saturating_sub(unix_ms).max(0) as u64;
        let age = Duration::from_millis(age_ms).min(ttl);
        self.now.checked_sub(age).unwrap_or(self.now)
    }
}

/// Builds the entries of one input's part: a key's rows, counts and match counts.
struct GroupBatches {
    batches: Vec<RecordBatch>,
    keys: BinaryBuilder,
    rows: ListBuilder<BinaryBuilder>,
    counts: ListBuilder<Int64Builder>,
    matches: ListBuilder<Int64Builder>,
    entries: usize,
}

impl GroupBatches {
    fn new() -> Self {
        Self {
            batches: Vec::new(),
            keys: BinaryBuilder::new(),
            rows: ListBuilder::new(BinaryBuilder::new()),
            counts: ListBuilder::new(Int64Builder::new()),
            matches: ListBuilder::new(Int64Builder::new()),
            entries: 0,
        }
    }

    fn push(&mut self, key: &[u8], group: &Group) -> DfResult<()> {
        self.keys.append_value(key);
        for (row, stored) in &group.rows {
            self.rows.values().append_value(row);
            self.counts.values().append_value(stored.count);
            self.matches.values().append_value(stored.matches);
        }
        self.rows.append(true);
        self.counts.append(true);
        self.matches.append(true);
        self.entries += 1;
        if self.entries == STATE_BATCH_ENTRIES_MAX {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> DfResult<()> {
        if self.entries == 0 {
            return Ok(());
        }
        self.entries = 0;
        let batch = state_batch(
            self.keys.finish(),
            vec![
                ("rows", std::sync::Arc::new(self.rows.finish()), false),
                ("counts", std::sync::Arc::new(self.counts.finish()), false),
                ("matches", std::sync::Arc::new(self.matches.finish()), false),
            ],
        )?;
        self.batches.push(batch);
        Ok(())
    }

    fn finish(mut self) -> DfResult<Vec<RecordBatch>> {
        self.flush()?;
        Ok(self.batches)
    }
}

impl Side {
    /// Every key's rows; what changes next counts from here.
    fn full_part(&mut self, name: &str) -> DfResult<StatePart> {
        let mut batches = GroupBatches::new();
        for (key, group) in &mut self.groups {
            group.changed = false;
            batches.push(key, group)?;
        }
        self.changed = Some(Vec::new());
        Ok(StatePart::new(name, batches.finish()?))
    }

    /// The keys changed since the last snapshot, sorted and once each; starts a new interval.
    fn take_changed(&mut self) -> Vec<Box<[u8]>> {
        let mut keys = self.changed.replace(Vec::new()).unwrap_or_default();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// The rows of the changed `keys`, and the keys whose rows went.
    fn delta_part(&mut self, name: &str, keys: &[Box<[u8]>]) -> DfResult<StatePart> {
        let mut batches = GroupBatches::new();
        let mut deletes = Vec::new();
        for key in keys {
            match self.groups.get_mut(key) {
                Some(group) => {
                    group.changed = false;
                    batches.push(key, group)?;
                }
                None => deletes.push(key.to_vec()),
            }
        }
        Ok(StatePart {
            name: name.to_string(),
            upserts: batches.finish()?,
            deletes,
        })
    }

    /// The side a restored part describes (empty without one); changes count from here.
    fn restored(part: Option<&RestoredPart>, name: &str) -> DfResult<Self> {
        let mut side = Self {
            changed: Some(Vec::new()),
            ..Self::default()
        };
        let reader = PartReader::new(OWNER, name);
        for batch in part.into_iter().flat_map(|p| &p.batches) {
            let keys = reader.keys(batch)?;
            let rows = reader.required::<ListArray>(batch, "rows")?;
            let counts = reader.required::<ListArray>(batch, "counts")?;
            let matches = reader.required::<ListArray>(batch, "matches")?;
            if rows.value_offsets() != counts.value_offsets()
                || rows.value_offsets() != matches.value_offsets()
            {
                return Err(reader.malformed("a key's rows, counts and matches differ in number"));
            }
            let row_values = list_values::<BinaryArray>(&reader, rows, "rows")?;
            let count_values = list_values::<Int64Array>(&reader, counts, "counts")?;
            let match_values = list_values::<Int64Array>(&reader, matches, "matches")?;
            for (index, range) in rows.value_offsets().windows(2).enumerate() {
                let (start, end) = (range[0] as usize, range[1] as usize);
                if start >= end {
                    return Err(reader.malformed("a key holds no rows"));
                }
                let mut group = Group::default();
                for value in start..end {
                    let count = count_values.value(value);
                    if count <= 0 {
                        return Err(
                            reader.malformed(format_args!("a row's multiplicity is {count}"))
                        );
                    }
                    let stored = Stored {
                        count,
                        matches: match_values.value(value),
                    };
                    group.rows.insert(row_values.value(value).into(), stored);
                }
                side.rows += group.rows.len() as u64;
                if let Some(old) = side.groups.insert(keys.value(index).into(), group) {
                    side.rows -= old.rows.len() as u64;
                }
            }
        }
        Ok(side)
    }
}

/// A list column's values, as `T` without NULLs.
fn list_values<'a, T: Array + 'static>(
    reader: &PartReader<'_>,
    list: &'a ListArray,
    name: &str,
) -> DfResult<&'a T> {
    let values = list.values();
    let typed = values
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| reader.column_error(name, format_args!("holds {}", list.data_type())))?;
    if values.null_count() > 0 {
        return Err(reader.column_error(name, "holds a NULL"));
    }
    Ok(typed)
}

/// The `expiry` part: each key's last access in wall-clock milliseconds, for `keys` (all
/// indexed keys when `None`); keys no longer indexed are deleted.
fn expiry_part(
    expiry: &KeyExpiry,
    keys: Option<&[Box<[u8]>]>,
    clock: WallClock,
) -> DfResult<StatePart> {
    let mut entries: Vec<(&[u8], Instant)> = Vec::new();
    let mut deletes = Vec::new();
    match keys {
        None => entries.extend(expiry.entries()),
        Some(keys) => {
            for key in keys {
                match expiry.last_access(key) {
                    Some(at) => entries.push((key, at)),
                    None => deletes.push(key.to_vec()),
                }
            }
        }
    }
    let mut upserts = Vec::new();
    for chunk in entries.chunks(STATE_BATCH_ENTRIES_MAX) {
        let keys: BinaryArray = chunk.iter().map(|(key, _)| Some(*key)).collect();
        let last: Int64Array = chunk.iter().map(|(_, at)| clock.unix_ms_of(*at)).collect();
        upserts.push(state_batch(
            keys,
            vec![("last_access_unix_ms", std::sync::Arc::new(last), false)],
        )?);
    }
    Ok(StatePart {
        name: EXPIRY_PART.to_string(),
        upserts,
        deletes,
    })
}

impl RegularJoinOperator {
    /// The join's state as of `clock`: whole, or the keys changed since the last snapshot.
    /// The first snapshot is always whole.
    pub(in crate::operator::join) fn snapshot_at(
        &mut self,
        full: bool,
        clock: WallClock,
    ) -> DfResult<OperatorState> {
        if full || self.sides.iter().any(|side| side.changed.is_none()) {
            let mut parts = Vec::with_capacity(3);
            for (side, name) in self.sides.iter_mut().zip(SIDE_PARTS) {
                parts.push(side.full_part(name)?);
            }
            if let Some(expiry) = &self.expiry {
                parts.push(expiry_part(expiry, None, clock)?);
            }
            return Ok(OperatorState::full(parts));
        }
        let changed = [self.sides[0].take_changed(), self.sides[1].take_changed()];
        let mut parts = Vec::with_capacity(3);
        for ((side, name), keys) in self.sides.iter_mut().zip(SIDE_PARTS).zip(&changed) {
            if !keys.is_empty() {
                parts.push(side.delta_part(name, keys)?);
            }
        }
        if let Some(expiry) = &self.expiry {
            // A key's access is always a write of its rows on one input, so the keys changed
            // on either input are those whose last access changed.
            let [mut keys, right] = changed;
            keys.extend(right);
            keys.sort_unstable();
            keys.dedup();
            if !keys.is_empty() {
                parts.push(expiry_part(expiry, Some(&keys), clock)?);
            }
        }
        Ok(OperatorState {
            kind: StateKind::Delta,
            parts,
        })
    }

    /// Replaces the state with `parts` as of `clock`.
    pub(in crate::operator::join) fn restore_at(
        &mut self,
        parts: &[RestoredPart],
        clock: WallClock,
    ) -> DfResult<()> {
        check_part_names(OWNER, parts, &[SIDE_PARTS[0], SIDE_PARTS[1], EXPIRY_PART])?;
        for (side, name) in self.sides.iter_mut().zip(SIDE_PARTS) {
            *side = Side::restored(restored_part(parts, name), name)?;
        }
        let Some(expiry) = &mut self.expiry else {
            return Ok(());
        };
        let ttl = expiry.ttl();
        *expiry = KeyExpiry::new(ttl);
        let reader = PartReader::new(OWNER, EXPIRY_PART);
        let mut last_access: HashMap<&[u8], i64> = HashMap::new();
        for batch in restored_part(parts, EXPIRY_PART)
            .into_iter()
            .flat_map(|p| &p.batches)
        {
            let keys = reader.keys(batch)?;
            let last = reader.required::<Int64Array>(batch, "last_access_unix_ms")?;
            last_access.extend(keys.iter().flatten().zip(last.values().iter().copied()));
        }
        // Every key holding rows is indexed, as while running; one without a recorded
        // access (a checkpoint taken before the TTL was set) counts from now.
        for side in &self.sides {
            for key in side.groups.keys() {
                let at = last_access
                    .get(&**key)
                    .map_or(clock.now, |unix_ms| clock.instant_of(*unix_ms, ttl));
                if expiry.last_access(key).is_none_or(|known| known < at) {
                    expiry.touch(key, at);
                }
            }
        }
        Ok(())
    }
}
