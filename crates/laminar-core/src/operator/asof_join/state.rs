//! One join key's state: the right rows by time and the left rows still waiting for a final
//! answer, with the rules over them: which right row matches, when an answer is final,
//! what early emission corrects, and which right rows can go. Times here are in the join's
//! time unit (the finer of the two sides' units, at least milliseconds).
//!
//! Invariants: among right rows with the same time only the one that sorts last (by the
//! whole row) is kept, since it is the only one any left row can match; a pending left row's
//! `answer` is what was last emitted for it (early emission only).

use std::collections::BTreeMap;
use std::ops::Bound;

use datafusion::arrow::row::OwnedRow;

use super::{AsofDirection, AsofJoinSpec, Output};

/// What a left row matches, with the tolerance in the join's time unit.
#[derive(Debug, Clone, Copy)]
pub(super) struct Matching {
    pub(super) direction: AsofDirection,
    /// `>=`/`<=`: a right row at the left row's own time matches; `>`/`<`: it must be
    /// strictly before/after. Nearest joins are always inclusive.
    pub(super) inclusive: bool,
    pub(super) tolerance: Option<i64>,
}

/// A right row a left row matched: its time and the row.
pub(super) type Match = (i64, OwnedRow);

/// A left row waiting until its answer can no longer change.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) row: OwnedRow,
    /// With early emission, the match emitted for the row (`None`: unmatched).
    pub(super) answer: Option<Match>,
}

/// What adding a right row did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum InsertedRight {
    /// A new time.
    Added,
    /// It replaced an equal-time row that sorts before it.
    Replaced,
    /// An equal-time row that sorts after it is kept instead.
    Shadowed,
}

/// The rows of one join key.
#[derive(Debug, Default)]
pub(super) struct KeyState {
    pub(super) right: BTreeMap<i64, OwnedRow>,
    /// By `(time, arrival number)`: equal rows each wait for their own answer.
    pub(super) pending: BTreeMap<(i64, u64), Pending>,
    /// The wake-up time the join registered for the key (see `next_wake`).
    pub(super) wake: Option<i64>,
    /// The oldest waiting row's time as the join's hold counts it.
    pub(super) held_at: Option<i64>,
    /// The key is in the join's list of keys that got rows since the last step.
    pub(super) dirty: bool,
}

impl KeyState {
    pub(super) fn is_empty(&self) -> bool {
        self.right.is_empty() && self.pending.is_empty()
    }

    /// Adds a right row, unless an equal-time row that sorts after it shadows it.
    pub(super) fn insert_right(&mut self, time: i64, row: OwnedRow) -> InsertedRight {
        match self.right.get_mut(&time) {
            None => {
                self.right.insert(time, row);
                InsertedRight::Added
            }
            Some(existing) if row > *existing => {
                *existing = row;
                InsertedRight::Replaced
            }
            Some(_) => InsertedRight::Shadowed,
        }
    }

    /// Drops right rows no left row at or after `bound` can match: all before it, except,
    /// for backward and nearest joins, the latest before it (if within tolerance). Returns
    /// how many went.
    pub(super) fn prune_right(&mut self, bound: i64, matching: &Matching) -> u64 {
        let keep_latest = matching.direction != AsofDirection::Forward;
        let mut dropped = 0;
        loop {
            let mut times = self.right.keys();
            let Some(&first) = times.next() else {
                break;
            };
            if first >= bound {
                break;
            }
            let latest_before = times.next().is_none_or(|&next| next >= bound);
            if keep_latest && latest_before {
                if matching
                    .tolerance
                    .is_some_and(|t| distance(bound, first) > t)
                {
                    self.right.remove(&first);
                    dropped += 1;
                }
                break;
            }
            self.right.remove(&first);
            dropped += 1;
        }
        dropped
    }

    /// Early emission: after a right row at `time` arrived, retracts and re-emits the left
    /// rows whose match it changed.
    pub(super) fn correct(
        &mut self,
        time: i64,
        matching: &Matching,
        outer: bool,
        output: &mut Output,
    ) {
        let reach = matching.tolerance.unwrap_or(i64::MAX);
        // The left rows the new row can be the match of.
        let (low, high) = match matching.direction {
            AsofDirection::Backward => (time, time.saturating_add(reach)),
            AsofDirection::Forward => (time.saturating_sub(reach), time),
            AsofDirection::Nearest => (time.saturating_sub(reach), time.saturating_add(reach)),
        };
        let Self { right, pending, .. } = self;
        for (&(t, _), waiting) in pending.range_mut((low, 0)..=(high, u64::MAX)) {
            let matched = best(right, t, matching);
            let same = match (&waiting.answer, matched) {
                (None, None) => true,
                (Some((was_at, was)), Some((at, row))) => *was_at == at && was == row,
                _ => false,
            };
            if same {
                continue;
            }
            let now = matched.map(|(at, row)| (at, row.clone()));
            if outer || waiting.answer.is_some() {
                let old = waiting.answer.as_ref().map(|(_, r)| r.clone());
                output.push(waiting.row.clone(), old, -1);
            }
            if outer || now.is_some() {
                output.push(waiting.row.clone(), now.as_ref().map(|(_, r)| r.clone()), 1);
            }
            waiting.answer = now;
        }
    }

    /// Releases the left rows whose answer the watermark settled, emitting them unless they
    /// were emitted early; returns how many left.
    pub(super) fn settle(
        &mut self,
        watermark: i64,
        matching: &Matching,
        spec: AsofJoinSpec,
        output: &mut Output,
    ) -> u64 {
        let end = watermark == i64::MAX;
        // Without right rows or tolerance only the end settles forward and nearest answers.
        if !end
            && self.right.is_empty()
            && matching.tolerance.is_none()
            && matching.direction != AsofDirection::Backward
        {
            return 0;
        }
        // A row's horizon is at least its time minus one: later rows cannot be settled.
        let upper = if end {
            (i64::MAX, u64::MAX)
        } else {
            (watermark, u64::MAX)
        };
        let mut done = Vec::new();
        for &position in self.pending.range(..=upper).map(|(position, _)| position) {
            let matched = best(&self.right, position.0, matching);
            if settled(
                watermark,
                horizon(position.0, matched.map(|m| m.0), matching),
            ) {
                done.push((position, matched.map(|m| m.1.clone())));
            } else if matching.direction != AsofDirection::Nearest {
                // Backward and forward horizons grow with the row's time.
                break;
            }
        }
        let released = done.len() as u64;
        for (position, matched) in done {
            let Some(waiting) = self.pending.remove(&position) else {
                continue;
            };
            if !spec.early && (spec.outer || matched.is_some()) {
                output.push(waiting.row, matched, 1);
            }
        }
        released
    }

    /// Approximate bytes held: row bytes plus per-entry overhead.
    pub(super) fn bytes(&self) -> u64 {
        // Map entry, row header and key overhead, roughly.
        const ENTRY_OVERHEAD: u64 = 48;
        let size = |row: &OwnedRow| row.row().as_ref().len() as u64;
        let right: u64 = self
            .right
            .values()
            .map(|row| size(row) + ENTRY_OVERHEAD)
            .sum();
        let pending: u64 = self
            .pending
            .values()
            .map(|p| size(&p.row) + p.answer.as_ref().map_or(0, |(_, r)| size(r)) + ENTRY_OVERHEAD)
            .sum();
        right + pending
    }
}

/// The right row (of `right`) a left row at `time` matches now.
pub(super) fn best<'a>(
    right: &'a BTreeMap<i64, OwnedRow>,
    time: i64,
    matching: &Matching,
) -> Option<(i64, &'a OwnedRow)> {
    let before = || {
        let upper = if matching.inclusive || matching.direction == AsofDirection::Nearest {
            Bound::Included(time)
        } else {
            Bound::Excluded(time)
        };
        right
            .range((Bound::Unbounded, upper))
            .next_back()
            .map(|(s, row)| (*s, row))
    };
    let after = |lower| {
        right
            .range((lower, Bound::Unbounded))
            .next()
            .map(|(s, row)| (*s, row))
    };
    let candidate = match matching.direction {
        AsofDirection::Backward => before(),
        AsofDirection::Forward => after(if matching.inclusive {
            Bound::Included(time)
        } else {
            Bound::Excluded(time)
        }),
        // On equal distance the earlier row wins.
        AsofDirection::Nearest => match (before(), after(Bound::Excluded(time))) {
            (Some(b), Some(f)) if distance(time, f.0) < distance(time, b.0) => Some(f),
            (Some(b), _) => Some(b),
            (None, f) => f,
        },
    };
    candidate.filter(|(s, _)| matching.tolerance.is_none_or(|t| distance(time, *s) <= t))
}

/// The latest watermark at which the answer of a left row at `time`, matching a right row at
/// `best` now, could still change: once the watermark passes it, a right row that could beat
/// `best` would be late. `i64::MAX`: only the end of input settles it.
pub(super) fn horizon(time: i64, best: Option<i64>, matching: &Matching) -> i64 {
    let beyond_tolerance = matching
        .tolerance
        .map_or(i64::MAX, |t| time.saturating_add(t));
    match matching.direction {
        // Any later right row is at or after the watermark, so after the left row.
        AsofDirection::Backward if matching.inclusive => time,
        AsofDirection::Backward => time.saturating_sub(1),
        // A later right row can only beat (or tie with) `best` at or before it.
        AsofDirection::Forward => best.unwrap_or(i64::MAX).min(beyond_tolerance),
        // A later right row is after the left row, closer only within the current distance.
        AsofDirection::Nearest => match best {
            Some(s) => time.saturating_add(distance(time, s)),
            None => beyond_tolerance,
        },
    }
}

/// True once the watermark settles an answer whose horizon is `horizon` (the end of input
/// settles every answer).
pub(super) fn settled(watermark: i64, horizon: i64) -> bool {
    watermark == i64::MAX || watermark > horizon
}

/// How far apart two times are (saturating: times near the ends of `i64` never overflow).
pub(super) fn distance(a: i64, b: i64) -> i64 {
    a.abs_diff(b).min(i64::MAX as u64) as i64
}
