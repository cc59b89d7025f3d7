//! One partition of a top-N: its rows in rank order with their multiplicities, and (for a
//! changelog) the rows it last emitted, so an update emits only what changed.

use std::collections::BTreeMap;

use datafusion::arrow::row::{OwnedRow, Row};

use crate::operator::change_tracker::EntryFlags;

/// A row's place in its partition: its ORDER BY key, then the whole row (the tie-breaker).
/// Both are rows of the operator's converters, so comparing them orders by rank.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct RankKey {
    order: OwnedRow,
    pub(super) row: OwnedRow,
}

impl RankKey {
    /// The place of `row` (whole-row encoding) with ORDER BY key `order`.
    pub(super) fn new(order: OwnedRow, row: OwnedRow) -> Self {
        Self { order, row }
    }

    fn borrowed(&self) -> (Row<'_>, Row<'_>) {
        (self.order.row(), self.row.row())
    }

    /// The ORDER BY key's encoding.
    pub(super) fn order_bytes(&self) -> &[u8] {
        self.order.row().data()
    }

    /// The whole row's encoding.
    pub(super) fn row_bytes(&self) -> &[u8] {
        self.row.row().data()
    }
}

/// A row with the row number it carries in the output.
pub(super) type Numbered = (RankKey, u64);

/// The rows of one partition.
#[derive(Debug, Default)]
pub(super) struct Partition {
    /// Rows in rank order, each with its multiplicity.
    ranked: BTreeMap<RankKey, u64>,
    /// Sum of the multiplicities in `ranked`.
    rows: u64,
    /// Event-time end of the partition's window (window mode).
    pub(super) window_end_ms: i64,
    /// Changelog mode: the rows last emitted, in rank order.
    emitted: Vec<Numbered>,
    /// Changed since the previous snapshot, or in one.
    pub(super) flags: EntryFlags,
}

impl Partition {
    /// A partition restored from a checkpoint: `ranked` rows with their multiplicities (in
    /// any order, none 0) and the `emitted` rows in rank order.
    pub(super) fn restored(
        ranked: Vec<(RankKey, u64)>,
        emitted: Vec<Numbered>,
        window_end_ms: i64,
    ) -> Self {
        let rows = ranked.iter().map(|(_, count)| count).sum();
        Self {
            ranked: ranked.into_iter().collect(),
            rows,
            window_end_ms,
            emitted,
            flags: EntryFlags::restored(),
        }
    }

    /// The rows held in rank order, with their multiplicities.
    pub(super) fn ranked(&self) -> impl Iterator<Item = (&RankKey, u64)> {
        self.ranked.iter().map(|(key, &count)| (key, count))
    }

    /// Changelog mode: the rows last emitted, in rank order, with their numbers.
    pub(super) fn emitted(&self) -> &[Numbered] {
        &self.emitted
    }

    /// Rows held, counting multiplicities.
    pub(super) fn rows(&self) -> u64 {
        self.rows
    }

    /// Holds no row and has none emitted: the partition can go.
    pub(super) fn is_empty(&self) -> bool {
        self.ranked.is_empty() && self.emitted.is_empty()
    }

    /// Adds `count` copies of a row. With a `cap`, only the best `cap` rows are kept (an
    /// append-only input never brings a dropped row back). Returns the change in rows held.
    pub(super) fn insert(
        &mut self,
        order: Row<'_>,
        row: Row<'_>,
        count: u64,
        cap: Option<u64>,
    ) -> i64 {
        if let Some(cap) = cap {
            let worst = self.ranked.last_key_value().map(|(key, _)| key.borrowed());
            let full = self.rows >= cap;
            if cap == 0 || (full && worst.is_some_and(|worst| (order, row) >= worst)) {
                return 0;
            }
        }
        let key = RankKey {
            order: order.owned(),
            row: row.owned(),
        };
        *self.ranked.entry(key).or_insert(0) += count;
        self.rows += count;
        let mut added = count as i64;
        let Some(cap) = cap else {
            return added;
        };
        while self.rows > cap {
            let Some(mut worst) = self.ranked.last_entry() else {
                break;
            };
            let excess = (self.rows - cap).min(*worst.get());
            *worst.get_mut() -= excess;
            if *worst.get() == 0 {
                worst.remove();
            }
            self.rows -= excess;
            added -= excess as i64;
        }
        added
    }

    /// Removes up to `count` copies of a row; returns how many were held.
    pub(super) fn remove(&mut self, order: Row<'_>, row: Row<'_>, count: u64) -> u64 {
        let key = RankKey {
            order: order.owned(),
            row: row.owned(),
        };
        let Some(held) = self.ranked.get_mut(&key) else {
            return 0;
        };
        let removed = count.min(*held);
        *held -= removed;
        if *held == 0 {
            self.ranked.remove(&key);
        }
        self.rows -= removed;
        removed
    }

    /// The best `limit` rows in rank order, each repeated by its multiplicity, numbered from 1.
    pub(super) fn top(&self, limit: usize) -> Vec<Numbered> {
        self.ranked
            .iter()
            .flat_map(|(key, &count)| std::iter::repeat_n(key, count as usize))
            .take(limit)
            .zip(1..)
            .map(|(key, rank)| (key.clone(), rank))
            .collect()
    }

    /// Makes the emitted rows the current top `limit`, appending the rows to retract and to
    /// insert. With `rank_updates`, a row whose number changed is retracted and re-inserted;
    /// without, a row keeps the number it was emitted with until it leaves the top N.
    pub(super) fn update(
        &mut self,
        limit: usize,
        rank_updates: bool,
        retracted: &mut Vec<Numbered>,
        inserted: &mut Vec<Numbered>,
    ) {
        let current = self.top(limit);
        let previous = std::mem::take(&mut self.emitted);
        // Both lists are in rank order (and by number within equal rows): a merge finds
        // the rows that stay.
        let mut previous = previous.into_iter().peekable();
        let mut current = current.into_iter().peekable();
        let mut emitted = Vec::with_capacity(limit.min(self.ranked.len()));
        loop {
            let order = match (previous.peek(), current.peek()) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(old), Some(new)) if rank_updates => (&old.0, old.1).cmp(&(&new.0, new.1)),
                (Some(old), Some(new)) => old.0.cmp(&new.0),
            };
            match order {
                std::cmp::Ordering::Equal => {
                    current.next();
                    emitted.extend(previous.next());
                }
                std::cmp::Ordering::Less => retracted.extend(previous.next()),
                std::cmp::Ordering::Greater => {
                    if let Some(new) = current.next() {
                        inserted.push(new.clone());
                        emitted.push(new);
                    }
                }
            }
        }
        self.emitted = emitted;
    }
}
