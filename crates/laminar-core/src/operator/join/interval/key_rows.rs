//! One join key's stored rows in (time, arrival) order, the first held inline.
//!
//! In joins keyed by a near-unique value (Nexmark q7 joins bids on their price) almost
//! every key holds one row. Holding that row in the key's group itself, not in a separate
//! buffer, saves a cache miss each time the key's rows are appended to, probed or expired.

use std::collections::VecDeque;

use super::side::TimedRow;

/// A key's rows: `first`, then `rest`. `rest` is empty while `first` is `None`.
#[derive(Debug, Default)]
pub(super) struct KeyRows {
    first: Option<TimedRow>,
    rest: VecDeque<TimedRow>,
}

impl KeyRows {
    pub(super) fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    pub(super) fn front(&self) -> Option<&TimedRow> {
        self.first.as_ref()
    }

    pub(super) fn back(&self) -> Option<&TimedRow> {
        self.rest.back().or(self.first.as_ref())
    }

    pub(super) fn get_mut(&mut self, position: usize) -> Option<&mut TimedRow> {
        match position {
            0 => self.first.as_mut(),
            _ => self.rest.get_mut(position - 1),
        }
    }

    pub(super) fn push_back(&mut self, row: TimedRow) {
        if self.first.is_none() {
            self.first = Some(row);
        } else {
            self.rest.push_back(row);
        }
    }

    /// Inserts `row` at `position` (at most the number of rows).
    pub(super) fn insert(&mut self, position: usize, row: TimedRow) {
        if position == 0 {
            if let Some(first) = self.first.replace(row) {
                self.rest.push_front(first);
            }
        } else {
            self.rest.insert(position - 1, row);
        }
    }

    pub(super) fn pop_front(&mut self) -> Option<TimedRow> {
        let first = self.first.take()?;
        self.first = self.rest.pop_front();
        Some(first)
    }

    /// The number of leading rows for which `before` holds (`before` is true for a prefix).
    pub(super) fn partition_point(&self, before: impl Fn(&TimedRow) -> bool) -> usize {
        match &self.first {
            Some(first) if before(first) => 1 + self.rest.partition_point(before),
            _ => 0,
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &TimedRow> {
        self.first.iter().chain(self.rest.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(time_ms: i64) -> TimedRow {
        TimedRow {
            time_ms,
            sequence: 0,
            batch: 0,
            row: 0,
            matched: false,
        }
    }

    fn times(rows: &KeyRows) -> Vec<i64> {
        rows.iter().map(|r| r.time_ms).collect()
    }

    #[test]
    fn rows_keep_their_order_across_the_inline_first_and_the_rest() {
        let mut rows = KeyRows::default();
        assert!(rows.is_empty() && rows.front().is_none() && rows.back().is_none());
        rows.push_back(row(20));
        assert_eq!(rows.back().map(|r| r.time_ms), Some(20));
        rows.push_back(row(40));
        rows.insert(0, row(10));
        rows.insert(2, row(30));
        rows.insert(rows.iter().count(), row(50));
        assert_eq!(times(&rows), [10, 20, 30, 40, 50]);
        assert_eq!(rows.partition_point(|r| r.time_ms < 35), 3);
        assert_eq!(rows.partition_point(|r| r.time_ms < 5), 0);
        assert_eq!(rows.partition_point(|_| true), 5);
        if let Some(third) = rows.get_mut(2) {
            third.matched = true;
        }
        assert!(rows.iter().nth(2).is_some_and(|r| r.matched));
        assert_eq!(rows.pop_front().map(|r| r.time_ms), Some(10));
        assert_eq!(rows.front().map(|r| r.time_ms), Some(20));
        while rows.pop_front().is_some() {}
        assert!(rows.is_empty());
    }
}
