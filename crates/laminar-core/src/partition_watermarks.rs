//! The watermarks of a source's partitions: each partition has its own (the largest
//! `WATERMARK FOR` value over its rows), and the source's is the minimum over the partitions
//! that are active. A partition that ended no longer counts; with an idle timeout, neither
//! does one that produced no row for that long (processing time), until its next row. Time is
//! passed in, so the rules are pure and tested without clocks.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::watermark::WATERMARK_MIN_MS;

/// What a source's partitions allow its watermark to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceProgress {
    /// The minimum over the active partitions' watermarks: `WATERMARK_MIN_MS` while one of
    /// them has produced no row.
    Active(i64),
    /// No partition is active and at least one is idle: the source holds nothing back.
    Idle,
    /// No partition is open: none was yet, or every one ended.
    Closed,
}

#[derive(Debug, Clone)]
struct Partition {
    watermark_ms: i64,
    /// When it last produced rows (or was opened): idleness counts from here.
    last_active: Instant,
    idle: bool,
}

/// The open partitions of one source reader (or push source), by partition number.
#[derive(Debug, Clone)]
pub struct PartitionWatermarks {
    partitions: BTreeMap<u32, Partition>,
    idle_timeout: Option<Duration>,
}

impl PartitionWatermarks {
    /// No partition yet; partitions silent for `idle_timeout` are idle (never, without one).
    pub fn new(idle_timeout: Option<Duration>) -> Self {
        Self {
            partitions: BTreeMap::new(),
            idle_timeout,
        }
    }

    /// `partition` will produce rows: from `now` it holds the source's watermark back, also
    /// before its first row, until it ends or goes idle. Opening an open partition changes
    /// nothing.
    pub fn open(&mut self, partition: u32, now: Instant) {
        self.partitions.entry(partition).or_insert(Partition {
            watermark_ms: WATERMARK_MIN_MS,
            last_active: now,
            idle: false,
        });
    }

    /// Rows of `partition` arrived at `now`; `batch_max_ms` is the watermark they allow
    /// (`None` when none of them has an event time). Opens the partition if it was not, and
    /// makes it active again if it was idle.
    pub fn observe(&mut self, partition: u32, batch_max_ms: Option<i64>, now: Instant) {
        self.open(partition, now);
        if let Some(state) = self.partitions.get_mut(&partition) {
            state.last_active = now;
            state.idle = false;
            if let Some(ms) = batch_max_ms {
                state.watermark_ms = state.watermark_ms.max(ms);
            }
        }
    }

    /// Every open partition's watermark, for a checkpoint.
    pub fn watermarks(&self) -> Vec<(u32, i64)> {
        self.partitions
            .iter()
            .map(|(partition, state)| (*partition, state.watermark_ms))
            .collect()
    }

    /// Opens `partition` with the watermark a checkpoint recorded for it (raising it if
    /// the partition is already further).
    pub fn restore(&mut self, partition: u32, watermark_ms: i64, now: Instant) {
        self.open(partition, now);
        if let Some(state) = self.partitions.get_mut(&partition) {
            state.watermark_ms = state.watermark_ms.max(watermark_ms);
        }
    }

    /// `partition` produced its last row: it no longer holds the watermark back.
    pub fn end(&mut self, partition: u32) {
        self.partitions.remove(&partition);
    }

    /// Marks idle every active partition that has been silent for the idle timeout at
    /// `now`; returns whether any became idle.
    pub fn expire(&mut self, now: Instant) -> bool {
        let Some(timeout) = self.idle_timeout else {
            return false;
        };
        let mut expired = false;
        for state in self.partitions.values_mut().filter(|p| !p.idle) {
            if now.saturating_duration_since(state.last_active) >= timeout {
                state.idle = true;
                expired = true;
            }
        }
        expired
    }

    /// Time the reader spent waiting for the engine to take its rows (backpressure) is not
    /// silence: every partition's silence is shortened by `waited`.
    pub fn discount(&mut self, waited: Duration) {
        if self.idle_timeout.is_none() {
            return;
        }
        for state in self.partitions.values_mut() {
            state.last_active = state
                .last_active
                .checked_add(waited)
                .unwrap_or(state.last_active);
        }
    }

    /// What the partitions allow the source's watermark to be now.
    pub fn progress(&self) -> SourceProgress {
        let active = self
            .partitions
            .values()
            .filter(|p| !p.idle)
            .map(|p| p.watermark_ms)
            .min();
        match active {
            Some(ms) => SourceProgress::Active(ms),
            None if self.partitions.is_empty() => SourceProgress::Closed,
            None => SourceProgress::Idle,
        }
    }

    /// When the next active partition goes idle if it stays silent; `None` without an idle
    /// timeout or an active partition.
    pub fn next_expiry(&self) -> Option<Instant> {
        let timeout = self.idle_timeout?;
        self.partitions
            .values()
            .filter(|p| !p.idle)
            .map(|p| p.last_active + timeout)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn at(start: Instant, seconds: u64) -> Instant {
        start + Duration::from_secs(seconds)
    }

    #[test]
    fn the_source_watermark_is_the_minimum_over_active_partitions() {
        let t0 = Instant::now();
        let mut partitions = PartitionWatermarks::new(None);
        assert_eq!(partitions.progress(), SourceProgress::Closed);
        partitions.open(0, t0);
        partitions.open(1, t0);
        // Partition 1 has produced nothing yet: it holds the watermark at its minimum.
        partitions.observe(0, Some(30), t0);
        assert_eq!(
            partitions.progress(),
            SourceProgress::Active(WATERMARK_MIN_MS)
        );
        partitions.observe(1, Some(10), t0);
        assert_eq!(partitions.progress(), SourceProgress::Active(10));
        // A partition's own watermark never moves back; rows without event time move nothing.
        partitions.observe(1, Some(5), t0);
        partitions.observe(1, None, t0);
        assert_eq!(partitions.progress(), SourceProgress::Active(10));
        partitions.observe(1, Some(20), t0);
        assert_eq!(partitions.progress(), SourceProgress::Active(20));
    }

    #[test]
    fn an_ended_partition_stops_holding_the_watermark_back() {
        let t0 = Instant::now();
        let mut partitions = PartitionWatermarks::new(None);
        partitions.observe(0, Some(100), t0);
        partitions.observe(1, Some(7), t0);
        assert_eq!(partitions.progress(), SourceProgress::Active(7));
        partitions.end(1);
        assert_eq!(partitions.progress(), SourceProgress::Active(100));
        partitions.end(0);
        assert_eq!(partitions.progress(), SourceProgress::Closed);
    }

    #[test]
    fn a_silent_partition_goes_idle_after_the_timeout_and_back_with_its_next_row() {
        let t0 = Instant::now();
        let mut partitions = PartitionWatermarks::new(Some(TIMEOUT));
        partitions.open(0, t0);
        partitions.open(1, t0);
        partitions.observe(0, Some(50), at(t0, 1));
        assert_eq!(partitions.next_expiry(), Some(at(t0, 5)));
        // Partition 1 never produced: idle 5 s after it opened.
        assert!(!partitions.expire(at(t0, 4)));
        assert!(partitions.expire(at(t0, 5)));
        assert_eq!(partitions.progress(), SourceProgress::Active(50));
        assert_eq!(partitions.next_expiry(), Some(at(t0, 6)));
        // Then partition 0 too: the source is idle.
        assert!(partitions.expire(at(t0, 6)));
        assert_eq!(partitions.progress(), SourceProgress::Idle);
        assert_eq!(partitions.next_expiry(), None);
        // A row reactivates its partition, with the watermark it had.
        partitions.observe(1, Some(20), at(t0, 9));
        assert_eq!(partitions.progress(), SourceProgress::Active(20));
        partitions.observe(0, None, at(t0, 9));
        assert_eq!(partitions.progress(), SourceProgress::Active(20));
    }

    #[test]
    fn without_a_timeout_nothing_goes_idle() {
        let t0 = Instant::now();
        let mut partitions = PartitionWatermarks::new(None);
        partitions.open(0, t0);
        assert!(!partitions.expire(at(t0, 3_600)));
        assert_eq!(partitions.next_expiry(), None);
        assert_eq!(
            partitions.progress(),
            SourceProgress::Active(WATERMARK_MIN_MS)
        );
    }

    #[test]
    fn an_idle_partition_left_with_ended_ones_keeps_the_source_idle() {
        let t0 = Instant::now();
        let mut partitions = PartitionWatermarks::new(Some(TIMEOUT));
        partitions.observe(0, Some(10), t0);
        partitions.observe(1, Some(90), t0);
        partitions.observe(1, Some(95), at(t0, 4));
        assert!(partitions.expire(at(t0, 5)));
        assert_eq!(partitions.progress(), SourceProgress::Active(95));
        partitions.end(1);
        assert_eq!(partitions.progress(), SourceProgress::Idle);
    }

    #[test]
    fn waiting_for_the_engine_is_not_silence() {
        let t0 = Instant::now();
        let mut partitions = PartitionWatermarks::new(Some(TIMEOUT));
        partitions.observe(0, Some(10), t0);
        partitions.observe(1, Some(20), t0);
        // Partition 0's rows waited 10 s for room; partition 1 could not be read meanwhile.
        partitions.discount(Duration::from_secs(10));
        partitions.observe(0, Some(30), at(t0, 10));
        assert!(!partitions.expire(at(t0, 12)));
        assert_eq!(partitions.progress(), SourceProgress::Active(20));
        partitions.observe(0, Some(40), at(t0, 12));
        assert!(partitions.expire(at(t0, 15)));
        assert_eq!(partitions.progress(), SourceProgress::Active(40));
    }
}
