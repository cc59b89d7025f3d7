//! Keyed watermarks for session windows: over a source declared `PER KEY` whose key columns
//! are exactly a session window's partition, each partition has a watermark of its own, the
//! latest start of its rows' windows (a row's own window starts at its event time) minus the
//! source's delay. A session closes when its partition's watermark reaches its end, and a row
//! is late when its own window ended at or before that watermark.
//!
//! Invariants: a partition's watermark never moves backwards, and moves only after its whole
//! batch was judged by the watermark before it; a row with a NULL event time leaves it where
//! it is. Partitions are remembered until the end of input: a forgotten one's late rows would
//! look on time.

use datafusion::common::HashMap;
use std::collections::BTreeSet;

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::row::OwnedRow;
use datafusion::error::Result as DfResult;

use super::SessionAggregateOperator;
use crate::change_batch::ChangeBatch;
use crate::operator::change_tracker::{ChangeTracker, EntryFlags};
use crate::watermark::WATERMARK_MIN_MS;

/// The watermark of every session partition seen.
#[derive(Debug)]
pub(super) struct KeyedSessions {
    delay_ms: i64,
    /// Each partition's watermark, and whether it moved since the previous snapshot.
    pub(super) watermarks: HashMap<OwnedRow, (i64, EntryFlags)>,
    /// Partitions whose watermark moved since the previous snapshot.
    pub(super) changes: ChangeTracker<OwnedRow>,
}

impl KeyedSessions {
    /// Partition watermarks trailing their rows by `delay_ms`.
    pub(super) fn new(delay_ms: i64) -> Self {
        Self {
            delay_ms,
            watermarks: HashMap::new(),
            changes: ChangeTracker::default(),
        }
    }

    /// The same tracking with no state, for another worker.
    pub(super) fn fork(&self) -> Self {
        Self::new(self.delay_ms)
    }

    /// For `EXPLAIN`.
    pub(super) fn describe(&self) -> String {
        format!("per key, watermark delay {} ms", self.delay_ms)
    }

    /// Partitions tracked.
    pub(super) fn len(&self) -> usize {
        self.watermarks.len()
    }

    /// Approximate bytes held for the partitions.
    pub(super) fn bytes(&self) -> usize {
        self.watermarks
            .keys()
            .map(|partition| partition.row().as_ref().len() + std::mem::size_of::<i64>())
            .sum()
    }
}

impl SessionAggregateOperator {
    /// The watermark the rows of `partition` are judged by: the partition's own with keyed
    /// watermarks (as it stood before the batch), the input's otherwise.
    pub(super) fn partition_watermark_ms(&self, partition: &OwnedRow) -> i64 {
        match &self.keyed {
            Some(keyed) => keyed
                .watermarks
                .get(partition)
                .map_or(WATERMARK_MIN_MS, |(watermark_ms, _)| *watermark_ms),
            None => self.watermark_ms,
        }
    }

    /// With keyed watermarks, the latest window start (event time) of each partition's rows
    /// in a batch whose rows have `partitions` and window `starts` (column `start_column`).
    pub(super) fn latest_starts(
        &self,
        partitions: &[OwnedRow],
        start_column: &ArrayRef,
        starts: &[i64],
    ) -> Option<Vec<(OwnedRow, i64)>> {
        self.keyed.as_ref()?;
        let mut latest: HashMap<&OwnedRow, i64> = HashMap::new();
        for (row, partition) in partitions.iter().enumerate() {
            if start_column.is_valid(row) {
                let entry = latest.entry(partition).or_insert(starts[row]);
                *entry = (*entry).max(starts[row]);
            }
        }
        Some(
            latest
                .into_iter()
                .map(|(partition, start)| (partition.clone(), start))
                .collect(),
        )
    }

    /// With keyed watermarks: advances the partitions' watermarks by their `latest` starts,
    /// then emits every session of theirs the watermark closed, and frees those past their
    /// lateness.
    pub(super) fn fire_keyed(
        &mut self,
        latest: Vec<(OwnedRow, i64)>,
    ) -> DfResult<Option<ChangeBatch>> {
        let Some(keyed) = &mut self.keyed else {
            return Ok(None);
        };
        let mut due: Vec<(OwnedRow, i64, i64, i64)> = Vec::new();
        for (partition, start_ms) in latest {
            let watermark_ms = start_ms.saturating_sub(keyed.delay_ms);
            let (current, flags) = keyed
                .watermarks
                .entry(partition.clone())
                .or_insert((WATERMARK_MIN_MS, EntryFlags::default()));
            if watermark_ms <= *current {
                continue;
            }
            *current = watermark_ms;
            keyed.changes.touch(flags, || partition.clone());
            // A partition's sessions are disjoint: ordered by start, their ends increase.
            let sessions = self.partitions.get(&partition).into_iter().flatten();
            for (start, session) in sessions.take_while(|(_, s)| s.end_ms <= watermark_ms) {
                due.push((partition.clone(), *start, session.end_ms, watermark_ms));
            }
        }
        let mut rows = Vec::new();
        for (partition, start_ms, end_ms, watermark_ms) in due {
            let fired = self
                .partitions
                .get(&partition)
                .and_then(|sessions| sessions.get(&start_ms))
                .is_some_and(|session| session.emitted.is_some());
            if !fired {
                rows.extend(self.emit(&partition, start_ms)?);
            }
            if end_ms.saturating_add(self.allowed_lateness_ms) <= watermark_ms {
                self.free(&partition, start_ms);
            }
        }
        rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        Ok(self
            .changes(&[], &rows)?
            .map(|change| ChangeBatch::insert_only(change.into_batch())))
    }

    /// With keyed watermarks, at the end of input: every session is due.
    pub(super) fn end_keyed(&mut self) {
        if let Some(keyed) = &mut self.keyed {
            keyed.watermarks.clear();
            keyed.changes.lost_track();
            self.by_end = self
                .partitions
                .iter()
                .flat_map(|(partition, sessions)| {
                    sessions
                        .iter()
                        .map(|(start, session)| (session.end_ms, partition.clone(), *start))
                })
                .collect::<BTreeSet<_>>();
        }
    }
}
