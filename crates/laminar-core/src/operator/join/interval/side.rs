//! One input's rows in an interval join: per join key, a deque of rows in (time, arrival)
//! order, so a probe binary-searches its key's rows for the time range it reaches and expiry
//! pops a key's oldest rows from the front. A row is a reference into the input batch it
//! arrived in, which is kept (shared, not copied) while any of its rows is stored: storing
//! a row allocates nothing and encodes nothing. Which keys to visit on expiry is kept per
//! second of event time ("bucket"): each stored row appends its key's slot to its bucket's
//! list, a cheap push instead of an ordered index of every row. Once the watermark passes
//! all of a bucket's reach, its keys' rows that far behind are popped; the one bucket the
//! watermark is inside is sorted by time once and consumed up to the watermark, so every
//! row leaves exactly when it is out of reach.

use std::collections::BTreeMap;
use std::hash::BuildHasher;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::compute::interleave;
use datafusion::error::{DataFusionError, Result as DfResult};
use hashbrown::{DefaultHashBuilder, HashTable};

use super::key_rows::KeyRows;

/// Event time per bucket, in milliseconds.
const BUCKET_MS: i64 = 1_000;

/// How far ahead in a bucket's list expiry fetches a key's group, then its first row.
const PREFETCH_GROUPS_AHEAD: usize = 16;
const PREFETCH_ROWS_AHEAD: usize = 8;

/// Asks the CPU to bring `value` into its caches; changes nothing else.
#[allow(unsafe_code)]
fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it reads nothing the program sees and never faults,
    // and `value` is a live reference anyway.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(value).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// A stored row, and whether a row of the other input matched it.
#[derive(Debug, Clone, Copy)]
pub(super) struct TimedRow {
    pub(super) time_ms: i64,
    /// Arrival number: orders rows of equal time.
    pub(super) sequence: u64,
    /// Its batch's slot (see [`TimedSide::keep`]) and its index there.
    pub(super) batch: u32,
    pub(super) row: u32,
    pub(super) matched: bool,
}

/// A kept input batch and how many of its rows are stored.
struct KeptBatch {
    batch: Option<RecordBatch>,
    rows: usize,
}

/// One key's rows, by (time, arrival). A freed group keeps its buffers for the next key
/// given its slot, so keys that come and go allocate nothing in steady state.
#[derive(Default)]
struct Group {
    key: Vec<u8>,
    /// The key's hash, kept so freeing the slot or growing the table need not read the
    /// key again (a cache miss per key on expiry, where nearly every key is freed).
    hash: u64,
    rows: KeyRows,
    live: bool,
}

/// The key index of a side, borrowed apart from its buckets.
struct Keys<'a> {
    slots: &'a mut HashTable<u32>,
    groups: &'a mut Vec<Group>,
    free: &'a mut Vec<u32>,
}

/// The keys that received rows in one bucket: `(time, slot)` per row.
#[derive(Default)]
struct Bucket {
    entries: Vec<(i64, u32)>,
    /// Entries before this one were visited.
    visited: usize,
    /// The unvisited entries are in time order.
    sorted: bool,
}

/// One input's stored rows.
#[derive(Default)]
pub(super) struct TimedSide {
    /// Live groups' slots, by their key's hash (the key itself is in the group).
    slots: HashTable<u32>,
    hasher: DefaultHashBuilder,
    groups: Vec<Group>,
    free: Vec<u32>,
    buckets: BTreeMap<i64, Bucket>,
    rows: usize,
    batches: Vec<KeptBatch>,
    free_batches: Vec<u32>,
    /// Per kept batch, its place in the batches a gather reads (scratch).
    gather_slots: Vec<Option<usize>>,
    /// Kept batches whose last stored row expired, released by `release_emptied`.
    emptied: Vec<u32>,
    /// Entry lists of removed buckets, reused by new ones.
    spare_entries: Vec<Vec<(i64, u32)>>,
}

impl TimedSide {
    /// Keeps `batch` for rows of it to be stored; returns its slot. A slot whose batch has
    /// no stored row is released by [`release_unused`](Self::release_unused).
    pub(super) fn keep(&mut self, batch: &RecordBatch) -> u32 {
        let kept = KeptBatch {
            batch: Some(batch.clone()),
            rows: 0,
        };
        if let Some(slot) = self.free_batches.pop() {
            self.batches[slot as usize] = kept;
            slot
        } else {
            self.batches.push(kept);
            u32::try_from(self.batches.len() - 1).unwrap_or(u32::MAX)
        }
    }

    /// Releases the batches expiry emptied (unless a row was stored in one since).
    pub(super) fn release_emptied(&mut self) {
        while let Some(slot) = self.emptied.pop() {
            self.release_unused(slot);
        }
    }

    /// Releases kept batch `slot` if none of its rows is stored.
    pub(super) fn release_unused(&mut self, slot: u32) {
        let kept = &mut self.batches[slot as usize];
        if kept.rows == 0 && kept.batch.is_some() {
            kept.batch = None;
            self.free_batches.push(slot);
        }
    }

    /// Stores `row` (of a batch kept by [`keep`](Self::keep)) under `key`.
    pub(super) fn insert(&mut self, key: &[u8], row: TimedRow) {
        let slot = match self.slot(key) {
            Some(slot) => slot,
            None => self.new_slot(key),
        };
        let spare = &mut self.spare_entries;
        let bucket = self
            .buckets
            .entry(row.time_ms.div_euclid(BUCKET_MS))
            .or_insert_with(|| Bucket {
                entries: spare.pop().unwrap_or_default(),
                visited: 0,
                sorted: false,
            });
        bucket.entries.push((row.time_ms, slot));
        bucket.sorted = false;
        self.rows += 1;
        self.batches[row.batch as usize].rows += 1;
        let rows = &mut self.groups[slot as usize].rows;
        let place = (row.time_ms, row.sequence);
        if rows
            .back()
            .is_none_or(|last| (last.time_ms, last.sequence) <= place)
        {
            rows.push_back(row);
        } else {
            // Out of order within the key: rarely far from the back.
            let at = rows.partition_point(|r| (r.time_ms, r.sequence) <= place);
            rows.insert(at, row);
        }
    }

    /// A slot for `key`, which has none.
    fn new_slot(&mut self, key: &[u8]) -> u32 {
        let slot = if let Some(slot) = self.free.pop() {
            slot
        } else {
            self.groups.push(Group::default());
            // More than 4 billion keys held at once would not fit in memory anyway.
            u32::try_from(self.groups.len() - 1).unwrap_or(u32::MAX)
        };
        let hash = self.hasher.hash_one(key);
        let group = &mut self.groups[slot as usize];
        group.key.clear();
        group.key.extend_from_slice(key);
        group.hash = hash;
        group.live = true;
        let groups = &self.groups;
        self.slots
            .insert_unique(hash, slot, |&s| groups[s as usize].hash);
        slot
    }

    /// Frees slot `slot` of `keys` (its group has no row left), keeping its buffers.
    fn free_slot(keys: &mut Keys<'_>, slot: u32) {
        let group = &mut keys.groups[slot as usize];
        group.live = false;
        if let Ok(entry) = keys.slots.find_entry(group.hash, |&s| s == slot) {
            entry.remove();
        }
        keys.free.push(slot);
    }

    /// The slot of `key`'s rows, if it has any.
    pub(super) fn slot(&self, key: &[u8]) -> Option<u32> {
        let groups = &self.groups;
        self.slots
            .find(self.hasher.hash_one(key), |&s| {
                groups[s as usize].key.as_slice() == key
            })
            .copied()
    }

    /// Positions and rows of slot `slot` with times in `[from_ms, to_ms]`.
    pub(super) fn range(
        &self,
        slot: u32,
        from_ms: i64,
        to_ms: i64,
    ) -> impl Iterator<Item = (usize, &TimedRow)> {
        let rows = &self.groups[slot as usize].rows;
        let start = rows.partition_point(|r| r.time_ms < from_ms);
        let end = rows.partition_point(|r| r.time_ms <= to_ms);
        rows.iter()
            .skip(start)
            .take(end.saturating_sub(start))
            .enumerate()
            .map(move |(offset, row)| (start + offset, row))
    }

    /// The row at `position` of slot `slot` (as [`range`](Self::range) gave it, with no
    /// insert or expiry since).
    pub(super) fn row_mut(&mut self, slot: u32, position: usize) -> Option<&mut TimedRow> {
        self.groups.get_mut(slot as usize)?.rows.get_mut(position)
    }

    /// Removes every row with `time + reach < watermark`, handing each to `gone`. The
    /// batches they emptied stay until [`release_emptied`](Self::release_emptied), so the
    /// rows can still be gathered.
    pub(super) fn expire(&mut self, reach: i64, watermark_ms: i64, mut gone: impl FnMut(TimedRow)) {
        let expired = |time_ms: i64| time_ms.saturating_add(reach) < watermark_ms;
        let mut keys = Keys {
            slots: &mut self.slots,
            groups: &mut self.groups,
            free: &mut self.free,
        };
        while let Some(mut entry) = self.buckets.first_entry() {
            let start = entry.key().saturating_mul(BUCKET_MS);
            if !expired(start) {
                return;
            }
            let whole = expired(start.saturating_add(BUCKET_MS - 1));
            let bucket = entry.get_mut();
            if !whole && !bucket.sorted {
                // Rows mostly arrive in time order, so the list often is already.
                let unvisited = &mut bucket.entries[bucket.visited..];
                if !unvisited.is_sorted_by_key(|entry| entry.0) {
                    unvisited.sort_unstable_by_key(|entry| entry.0);
                }
                bucket.sorted = true;
            }
            while let Some(&(time_ms, slot)) = bucket.entries.get(bucket.visited) {
                if !whole && !expired(time_ms) {
                    break;
                }
                // Nearly every key is visited once, so each visit would wait on two cache
                // misses (the key's group, then its rows): fetch both ahead, in two stages.
                if let Some(group) = bucket
                    .entries
                    .get(bucket.visited + PREFETCH_GROUPS_AHEAD)
                    .and_then(|&(_, ahead)| keys.groups.get(ahead as usize))
                {
                    prefetch(group);
                }
                if let Some(front) = bucket
                    .entries
                    .get(bucket.visited + PREFETCH_ROWS_AHEAD)
                    .and_then(|&(_, near)| keys.groups.get(near as usize))
                    .and_then(|group| group.rows.front())
                {
                    prefetch(front);
                }
                bucket.visited += 1;
                let group = &mut keys.groups[slot as usize];
                while group.rows.front().is_some_and(|r| expired(r.time_ms)) {
                    if let Some(row) = group.rows.pop_front() {
                        self.rows -= 1;
                        let kept = &mut self.batches[row.batch as usize];
                        kept.rows -= 1;
                        if kept.rows == 0 {
                            self.emptied.push(row.batch);
                        }
                        gone(row);
                    }
                }
                if group.rows.is_empty() && group.live {
                    // The key's last row left; its slot is reused (a later visit of it
                    // through an older list finds nothing expired, or another key's rows).
                    Self::free_slot(&mut keys, slot);
                }
            }
            if bucket.visited < bucket.entries.len() {
                return;
            }
            let mut entries = entry.remove().entries;
            entries.clear();
            self.spare_entries.push(entries);
        }
    }

    /// Rows stored.
    pub(super) fn len(&self) -> usize {
        self.rows
    }

    /// Approximate bytes held: the kept batches, the row references and the keys.
    pub(super) fn bytes(&self) -> u64 {
        let per_row = std::mem::size_of::<TimedRow>() + std::mem::size_of::<(i64, u32)>();
        let keys: usize = self
            .groups
            .iter()
            .filter(|group| group.live)
            .map(|group| group.key.len() + 16)
            .sum();
        // A kept batch may be a slice of a larger one: its own rows are what it holds for
        // the join (the rest is the input's, shared).
        let batches: usize = self
            .batches
            .iter()
            .filter_map(|kept| kept.batch.as_ref())
            .flat_map(RecordBatch::columns)
            .map(|column| column.to_data().get_slice_memory_size().unwrap_or(0))
            .sum();
        (batches + self.rows * per_row + keys) as u64
    }

    /// The columns of the rows `rows` refers to, in that order.
    pub(super) fn gather(&mut self, rows: &[(u32, u32)]) -> DfResult<Vec<ArrayRef>> {
        let (batches, slots) = (&self.batches, &mut self.gather_slots);
        gather_rows(batches, slots, rows)
    }

    /// The batch kept in `slot`.
    pub(super) fn batch(&self, slot: u32) -> Option<&RecordBatch> {
        self.batches.get(slot as usize)?.batch.as_ref()
    }

    /// Every stored row with its key, key by key.
    pub(super) fn rows(&self) -> impl Iterator<Item = (&[u8], &TimedRow)> {
        self.groups
            .iter()
            .filter(|group| group.live)
            .flat_map(|group| group.rows.iter().map(|row| (group.key.as_slice(), row)))
    }
}

/// The columns of rows `rows` (kept batch slot, row) of `batches`, in that order; `slots`
/// is scratch space.
fn gather_rows(
    batches: &[KeptBatch],
    slots: &mut Vec<Option<usize>>,
    rows: &[(u32, u32)],
) -> DfResult<Vec<ArrayRef>> {
    slots.clear();
    slots.resize(batches.len(), None);
    let mut sources: Vec<&RecordBatch> = Vec::new();
    let mut indices = Vec::with_capacity(rows.len());
    for &(slot, row) in rows {
        let place = if let Some(place) = slots.get(slot as usize).copied().flatten() {
            place
        } else {
            let batch = batches
                .get(slot as usize)
                .and_then(|kept| kept.batch.as_ref())
                .ok_or_else(|| {
                    DataFusionError::Internal("an interval join row's batch is gone".into())
                })?;
            sources.push(batch);
            slots[slot as usize] = Some(sources.len() - 1);
            sources.len() - 1
        };
        indices.push((place, row as usize));
    }
    let Some(first) = sources.first() else {
        return Ok(Vec::new());
    };
    (0..first.num_columns())
        .map(|column| {
            let arrays: Vec<&dyn Array> = sources
                .iter()
                .map(|batch| batch.column(column).as_ref())
                .collect();
            Ok(interleave(&arrays, &indices)?)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::Int64Array;

    use super::*;

    /// A side with one kept batch of 100 rows (`value = index`).
    fn side() -> (TimedSide, u32) {
        let mut side = TimedSide::default();
        let batch = RecordBatch::try_from_iter([(
            "v",
            Arc::new(Int64Array::from_iter_values(0..100)) as ArrayRef,
        )])
        .expect("batch");
        let slot = side.keep(&batch);
        (side, slot)
    }

    fn row(batch: u32, time_ms: i64, sequence: u64) -> TimedRow {
        TimedRow {
            time_ms,
            sequence,
            batch,
            row: u32::try_from(sequence).expect("small"),
            matched: false,
        }
    }

    fn expire(side: &mut TimedSide, reach: i64, watermark_ms: i64) -> Vec<u64> {
        let mut gone = Vec::new();
        side.expire(reach, watermark_ms, |row| gone.push(row.sequence));
        side.release_emptied();
        gone.sort_unstable();
        gone
    }

    #[test]
    fn rows_leave_exactly_when_out_of_reach_whatever_order_they_came_in() {
        let (mut side, batch) = side();
        // Times across three buckets, out of order, two keys.
        for (sequence, (key, time)) in [
            (b"a", 2_500),
            (b"b", 500),
            (b"a", 1_200),
            (b"a", 100),
            (b"b", 2_900),
            (b"b", 1_999),
        ]
        .into_iter()
        .enumerate()
        {
            side.insert(key, row(batch, time, sequence as u64));
        }
        assert_eq!(side.len(), 6);
        // Reach 100: a row at t leaves once the watermark passes t + 100.
        assert_eq!(expire(&mut side, 100, 200), Vec::<u64>::new());
        assert_eq!(expire(&mut side, 100, 201), [3]);
        assert_eq!(expire(&mut side, 100, 1_301), [1, 2]);
        assert_eq!(expire(&mut side, 100, 2_100), [5]);
        // A row arriving into the bucket being consumed is still found.
        side.insert(b"a", row(batch, 2_050, 6));
        assert_eq!(expire(&mut side, 100, 2_151), [6]);
        assert!(
            side.batch(batch).is_some(),
            "kept while rows of it are stored"
        );
        assert_eq!(expire(&mut side, 100, i64::MAX), [0, 4]);
        assert_eq!(side.len(), 0);
        assert!(side.slot(b"a").is_none() && side.slot(b"b").is_none());
        assert!(side.batch(batch).is_none(), "released with its last row");
    }

    #[test]
    fn a_probe_finds_a_key_s_rows_in_its_time_range_in_order_and_gathers_them() {
        let (mut side, batch) = side();
        for (sequence, time) in [30, 10, 20, 20, 40].into_iter().enumerate() {
            side.insert(b"k", row(batch, time, sequence as u64));
        }
        side.insert(b"other", row(batch, 20, 9));
        let slot = side.slot(b"k").expect("stored");
        let found: Vec<(u32, u32)> = side
            .range(slot, 15, 30)
            .map(|(_, r)| (r.batch, r.row))
            .collect();
        assert_eq!(found, [(batch, 2), (batch, 3), (batch, 0)]);
        let columns = side.gather(&found).expect("gathered");
        let values = columns[0]
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("Int64");
        assert_eq!(values.values().to_vec(), [2, 3, 0]);
        let (position, _) = side.range(slot, 40, 40).next().expect("the row at 40");
        side.row_mut(slot, position).expect("row").matched = true;
        assert!(side
            .rows()
            .any(|(key, r)| key == b"k" && r.time_ms == 40 && r.matched));
        assert_eq!(side.range(slot, 41, 100).count(), 0);
    }

    #[test]
    fn a_freed_key_slot_is_reused_without_disturbing_other_keys() {
        let (mut side, batch) = side();
        side.insert(b"a", row(batch, 0, 0));
        side.insert(b"b", row(batch, 5_000, 1));
        assert_eq!(expire(&mut side, 0, 1), [0]);
        side.insert(b"c", row(batch, 6_000, 2));
        assert_eq!(side.len(), 2);
        assert_eq!(expire(&mut side, 0, 5_001), [1]);
        assert_eq!(expire(&mut side, 0, 6_001), [2]);
        assert_eq!(side.rows().count(), 0);
        // A batch none of whose rows was stored is released at once.
        let unused = side.keep(&side.batch(batch).cloned().unwrap_or_else(|| {
            RecordBatch::new_empty(Arc::new(datafusion::arrow::datatypes::Schema::empty()))
        }));
        side.release_unused(unused);
        assert!(side.batch(unused).is_none());
    }
}
