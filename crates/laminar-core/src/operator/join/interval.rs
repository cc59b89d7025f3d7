//! The interval join: a join of two append-only inputs whose condition bounds the right
//! row's event time relative to the left row's (`r.ts BETWEEN l.ts - a AND l.ts + b`; a
//! window join is the case of equal window ends). A row is kept, per key and in time order,
//! only until the watermark proves that no future row of the other input can match it; it
//! then leaves the state, emitted null-padded first if an outer join never matched it. Pairs
//! are emitted as they are found, so the output is append-only. A row whose event time is
//! behind the join's watermark on arrival is late: its matches may already have left the
//! state, so it is dropped and counted rather than joined with what is left. Snapshots are
//! whole (see `snapshot`).

mod key_rows;
mod side;
mod snapshot;

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::row::Rows;
use datafusion::error::{DataFusionError, Result as DfResult};

use self::side::{TimedRow, TimedSide};
use super::{split, JoinCore, JoinSpec, Pieces, Single};
use crate::change_batch::ChangeBatch;
use crate::operator::{epoch_ms, Operator};
use crate::state::{OperatorState, RestoredPart};
use crate::state_codec::holds_no_entries;
use crate::watermark::WATERMARK_END_MS;

/// How the two inputs' event times relate in every matching pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBound {
    /// The event-time column (TIMESTAMP or epoch-millisecond BIGINT) of each input.
    pub columns: [usize; 2],
    /// Right time minus left time is at least this, in milliseconds (rounded down).
    pub low_ms: i64,
    /// Right time minus left time is at most this, in milliseconds (rounded up).
    pub high_ms: i64,
    /// The bound comes from equal window ends (a window join), for `EXPLAIN`.
    pub window: bool,
}

impl TimeBound {
    /// For a row of input `side` at time `t`, the other input's matching rows lie in
    /// `[t + reach.0, t + reach.1]`; once the watermark passes `t + reach.1`, no future row
    /// of the other input can match it.
    fn reach(&self, side: usize) -> (i64, i64) {
        if side == 0 {
            (self.low_ms, self.high_ms)
        } else {
            (self.high_ms.saturating_neg(), self.low_ms.saturating_neg())
        }
    }

    /// How far the event times of emitted rows can be behind the input watermark: a pair
    /// found when its later row arrives holds the earlier one, and a row leaves the state
    /// (perhaps null-padded) that long after its own time.
    fn delay_ms(&self) -> i64 {
        self.high_ms.max(self.low_ms.saturating_neg()).max(0)
    }
}

fn missing() -> DataFusionError {
    DataFusionError::Internal("an interval join row is indexed but not stored".into())
}

/// Joins two append-only inputs within a time bound, with state bounded by the watermark.
pub struct IntervalJoinOperator {
    core: JoinCore,
    bound: TimeBound,
    sides: [TimedSide; 2],
    watermark_ms: i64,
    late_rows: u64,
    /// Arrival number of the next stored row, which orders rows of equal time.
    sequence: u64,
    /// Stored rows that may match the batch being processed: the probing row of each, the
    /// stored row (kept batch, row) and its place (key slot, position).
    candidate_probes: Vec<u32>,
    candidate_rows: Vec<(u32, u32)>,
    /// Each candidate's key slot and position in the other input's rows.
    candidate_places: Vec<(u32, usize)>,
}

impl std::fmt::Debug for IntervalJoinOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// What happens to a row of an incoming batch.
#[derive(Debug, Clone, Copy)]
enum Fate {
    /// Its key or time is NULL: nothing can match it.
    Unmatchable,
    /// Behind the watermark: dropped and counted.
    Late,
    /// Probes the other input; its candidates are this range.
    Probe {
        time_ms: i64,
        start: usize,
        end: usize,
    },
}

impl IntervalJoinOperator {
    /// A join as `spec` describes it, whose matching pairs satisfy `bound`.
    pub fn new(spec: JoinSpec, bound: TimeBound) -> DfResult<Self> {
        let core = JoinCore::new(Arc::new(spec))?;
        Ok(Self::with_core(core, bound))
    }

    fn with_core(core: JoinCore, bound: TimeBound) -> Self {
        Self {
            core,
            bound,
            sides: [TimedSide::default(), TimedSide::default()],
            watermark_ms: i64::MIN,
            late_rows: 0,
            sequence: 0,
            candidate_probes: Vec::new(),
            candidate_rows: Vec::new(),
            candidate_places: Vec::new(),
        }
    }

    /// Decides each row's fate and collects the other input's rows within reach of it.
    fn collect_candidates(
        &mut self,
        probe: usize,
        keys: &(Rows, Vec<bool>),
        times: &ArrayRef,
    ) -> DfResult<Vec<Fate>> {
        self.candidate_probes.clear();
        self.candidate_rows.clear();
        self.candidate_places.clear();
        let (keys, matchable) = keys;
        let times_ms = epoch_ms(times)?;
        let (from, to) = self.bound.reach(probe);
        let other = &self.sides[1 - probe];
        let mut fates = Vec::with_capacity(times_ms.len());
        for (index, time_ms) in times_ms.into_iter().enumerate() {
            if times.is_null(index) || !matchable[index] {
                fates.push(Fate::Unmatchable);
                continue;
            }
            if time_ms < self.watermark_ms {
                self.late_rows += 1;
                fates.push(Fate::Late);
                continue;
            }
            let start = self.candidate_rows.len();
            if let Some(slot) = other.slot(keys.row(index).as_ref()) {
                let (low, high) = (time_ms.saturating_add(from), time_ms.saturating_add(to));
                for (position, timed) in other.range(slot, low, high) {
                    self.candidate_probes.push(index as u32);
                    self.candidate_rows.push((timed.batch, timed.row));
                    self.candidate_places.push((slot, position));
                }
            }
            fates.push(Fate::Probe {
                time_ms,
                start,
                end: self.candidate_rows.len(),
            });
        }
        Ok(fates)
    }

    /// Drops the rows of input `side` that no future row can match, emitting the unmatched
    /// ones of an outer (or anti) side.
    fn expire(&mut self, side: usize, out: &mut Vec<ChangeBatch>) -> DfResult<()> {
        let reach = self.bound.reach(side).1;
        let watermark_ms = self.watermark_ms;
        let emits_unmatched = self.core.layout.single[side] == Some(Single::Unmatched);
        self.candidate_rows.clear();
        let mut pieces = Pieces::default();
        let unmatched = &mut self.candidate_rows;
        self.sides[side].expire(reach, watermark_ms, |timed| {
            if emits_unmatched && !timed.matched {
                pieces.push(None, Some(unmatched.len() as u32), 1);
                unmatched.push((timed.batch, timed.row));
            }
        });
        let result = if pieces.is_empty() {
            Ok(())
        } else {
            self.sides[side]
                .gather(&self.candidate_rows)
                .and_then(|stored| self.core.assemble(1 - side, None, &stored, pieces, false))
                .map(|batch| out.extend(batch))
        };
        self.sides[side].release_emptied();
        result
    }
}

impl Operator for IntervalJoinOperator {
    fn name(&self) -> &'static str {
        if self.bound.window {
            "WindowJoin"
        } else {
            "IntervalJoin"
        }
    }

    fn describe(&self) -> String {
        let spec = &self.core.spec;
        let retention = if self.bound.window {
            "rows leave state once the watermark passes their window end".to_string()
        } else {
            format!(
                "right time - left time in [{}, {}] ms; rows leave state once the watermark passes their reach",
                self.bound.low_ms, self.bound.high_ms
            )
        };
        format!(
            "{} {} {} ({retention}; append-only)",
            self.name(),
            spec.join_type,
            spec.describe_condition(),
        )
    }

    fn fork(&self) -> Box<dyn Operator> {
        // The prototype's encoders were built from this very spec, so building them again
        // cannot fail.
        let core = JoinCore::new(Arc::clone(&self.core.spec))
            .expect("join encoders were accepted when the prototype was built");
        Box::new(Self::with_core(core, self.bound))
    }

    fn state_entries(&self) -> u64 {
        self.sides.iter().map(|side| side.len() as u64).sum()
    }

    fn state_bytes(&self) -> u64 {
        self.sides.iter().map(TimedSide::bytes).sum()
    }

    fn late_rows(&self) -> u64 {
        self.late_rows
    }

    fn output_watermark(&self, watermark_ms: i64) -> i64 {
        if watermark_ms == WATERMARK_END_MS {
            watermark_ms
        } else {
            watermark_ms.saturating_sub(self.bound.delay_ms())
        }
    }

    fn process(
        &mut self,
        port: usize,
        input: ChangeBatch,
        out: &mut Vec<ChangeBatch>,
    ) -> DfResult<()> {
        if port > 1 || !input.is_insert_only() {
            return Err(DataFusionError::Internal(
                "an interval join reads two append-only inputs".into(),
            ));
        }
        let batch = input.batch();
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let probe = port;
        let keys = self.core.encode_keys(probe, batch)?;
        let time_column = batch.column(self.bound.columns[probe]);
        let fates = self.collect_candidates(probe, &keys, time_column)?;
        let layout = self.core.layout;
        let stored = if self.candidate_rows.is_empty() {
            Vec::new()
        } else {
            self.sides[1 - probe].gather(&self.candidate_rows)?
        };
        let passed =
            self.core
                .filter(probe, batch, self.candidate_probes.iter().copied(), &stored)?;
        let reach = self.bound.reach(probe).1;
        let own_single = layout.single[probe];
        let other_single = layout.single[1 - probe];
        // At most every pair plus every row alone.
        let mut pieces = Pieces::with_capacity(self.candidate_rows.len() + batch.num_rows());
        let (own, other) = split(&mut self.sides, probe);
        // The batch is kept (shared) if any of its rows is stored.
        let kept = own.keep(batch);
        for (index, fate) in fates.into_iter().enumerate() {
            let (time_ms, start, end) = match fate {
                Fate::Late => continue,
                Fate::Unmatchable => {
                    if own_single == Some(Single::Unmatched) {
                        pieces.push(Some(index as u32), None, 1);
                    }
                    continue;
                }
                Fate::Probe {
                    time_ms,
                    start,
                    end,
                } => (time_ms, start, end),
            };
            let key = keys.0.row(index);
            let mut matched = false;
            for candidate in start..end {
                if passed.as_ref().is_some_and(|p| !p.value(candidate)) {
                    continue;
                }
                matched = true;
                if layout.pairs {
                    pieces.push(Some(index as u32), Some(candidate as u32), 1);
                }
                let (slot, position) = self.candidate_places[candidate];
                let timed = other.row_mut(slot, position).ok_or_else(missing)?;
                if other_single == Some(Single::Matched) && !timed.matched {
                    pieces.push(None, Some(candidate as u32), 1);
                }
                timed.matched = true;
            }
            if own_single == Some(Single::Matched) && matched {
                // A semi join's row is emitted once, at its first match; it needs no state.
                pieces.push(Some(index as u32), None, 1);
                continue;
            }
            if time_ms.saturating_add(reach) < self.watermark_ms {
                // Already out of reach of every future row of the other input.
                if own_single == Some(Single::Unmatched) && !matched {
                    pieces.push(Some(index as u32), None, 1);
                }
                continue;
            }
            own.insert(
                key.as_ref(),
                TimedRow {
                    time_ms,
                    sequence: self.sequence,
                    batch: kept,
                    row: index as u32,
                    matched,
                },
            );
            self.sequence += 1;
        }
        own.release_unused(kept);
        out.extend(
            self.core
                .assemble(probe, Some(batch), &stored, pieces, false)?,
        );
        Ok(())
    }

    fn on_watermark(&mut self, watermark_ms: i64, out: &mut Vec<ChangeBatch>) -> DfResult<()> {
        if watermark_ms <= self.watermark_ms {
            return Ok(());
        }
        self.watermark_ms = watermark_ms;
        self.expire(0, out)?;
        self.expire(1, out)
    }

    fn snapshot(&mut self, _full: bool) -> DfResult<Option<OperatorState>> {
        self.snapshot_parts().map(Some)
    }

    fn restore(&mut self, parts: Vec<RestoredPart>) -> DfResult<()> {
        if holds_no_entries(&parts) {
            return Ok(());
        }
        self.restore_parts(&parts)
    }
}
