//! The regular join: every row of both inputs is kept, per key, as a multiset (a count per
//! distinct row), so the join is exact over changelogs and its state grows with its inputs.
//! A change on one input joins the other input's matching rows (weights multiply); outer,
//! semi and anti joins also keep, per stored row, how many rows of the other input match it,
//! so the null-padded (or lone) row is emitted while that count is zero (or positive) and
//! retracted when it changes. With a `state_ttl`, a key whose rows (on either input) were
//! not read or written for that long is forgotten without emitting anything, which bounds
//! the state and changes the answer. Snapshots are incremental by key (see `snapshot`).

mod snapshot;

use datafusion::common::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::error::{DataFusionError, Result as DfResult};

use super::state_ttl::KeyExpiry;
use super::{split, Candidate, JoinCore, JoinSpec, Pieces};
use crate::change_batch::ChangeBatch;
use crate::operator::Operator;
use crate::state::{OperatorState, RestoredPart};
pub(super) use snapshot::WallClock;

/// A distinct stored row: its multiplicity and how many rows of the other input match it.
#[derive(Debug, Clone, Copy)]
struct Stored {
    count: i64,
    matches: i64,
}

/// One key's distinct rows.
type KeyRows = HashMap<Box<[u8]>, Stored>;

/// One key's rows on one input, and whether they changed since the last snapshot.
#[derive(Default)]
struct Group {
    rows: KeyRows,
    changed: bool,
}

/// One input's rows: key encoding to row encoding to counts.
#[derive(Default)]
struct Side {
    groups: HashMap<Box<[u8]>, Group>,
    rows: u64,
    /// Once snapshots are taken: the keys whose rows changed or went since the last one,
    /// each listed when its group is first changed in the interval (so the hot path
    /// allocates once per key and interval, not per row), or again if its group went and
    /// came back; the snapshot removes duplicates.
    changed: Option<Vec<Box<[u8]>>>,
}

/// Lists `key` among the changed keys (once snapshots are taken) unless its group is
/// already listed.
fn note_change(changed: &mut Option<Vec<Box<[u8]>>>, group: &mut Group, key: &[u8]) {
    if let Some(changed) = changed {
        if !group.changed {
            group.changed = true;
            changed.push(key.into());
        }
    }
}

impl Side {
    fn count(&self, key: &[u8], row: &[u8]) -> i64 {
        self.groups
            .get(key)
            .and_then(|group| group.rows.get(row))
            .map_or(0, |stored| stored.count)
    }

    /// Adds `weight` copies of `row` (each matched by `matches` rows of the other input).
    fn apply(&mut self, key: &[u8], row: &[u8], weight: i64, matches: i64) {
        let group = match self.groups.get_mut(key) {
            Some(group) => group,
            None => self.groups.entry(key.into()).or_default(),
        };
        note_change(&mut self.changed, group, key);
        let stored = if let Some(stored) = group.rows.get_mut(row) {
            stored
        } else {
            self.rows += 1;
            group
                .rows
                .entry(row.into())
                .or_insert(Stored { count: 0, matches })
        };
        stored.count += weight;
        stored.matches = matches;
        if stored.count == 0 {
            group.rows.remove(row);
            self.rows -= 1;
            if group.rows.is_empty() {
                self.groups.remove(key);
            }
        }
    }

    /// Drops every row of `key`.
    fn forget(&mut self, key: &[u8]) {
        if let Some((key, group)) = self.groups.remove_entry(key) {
            self.rows -= group.rows.len() as u64;
            if let Some(changed) = &mut self.changed {
                if !group.changed {
                    changed.push(key);
                }
            }
        }
    }

    fn bytes(&self) -> u64 {
        self.groups
            .iter()
            .map(|(key, group)| {
                let rows: usize = group
                    .rows
                    .keys()
                    .map(|row| row.len() + std::mem::size_of::<(Box<[u8]>, Stored)>())
                    .sum();
                key.len() + std::mem::size_of::<(Box<[u8]>, Group)>() + rows
            })
            .sum::<usize>() as u64
    }
}

/// Joins two inputs (append-only or changelogs) keeping all their rows.
pub struct RegularJoinOperator {
    core: JoinCore,
    /// The output carries retractions (an input does, or an unmatched row can be retracted).
    changelog: bool,
    sides: [Side; 2],
    /// With a `state_ttl`: when each key was last read or written.
    expiry: Option<KeyExpiry>,
    /// Retractions of rows the join never received, ignored.
    unmatched_retractions: u64,
    /// Stored rows that may match the batch being processed, and their encodings.
    candidates: Vec<Candidate>,
    candidate_counts: Vec<i64>,
    arena: Vec<u8>,
}

impl std::fmt::Debug for RegularJoinOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl RegularJoinOperator {
    /// A join as `spec` describes it; `changelog_inputs` says whether an input carries
    /// retractions (the output then does too).
    pub fn new(spec: JoinSpec, changelog_inputs: bool) -> DfResult<Self> {
        let core = JoinCore::new(Arc::new(spec))?;
        let changelog = changelog_inputs || core.layout.retracts();
        Ok(Self::with_core(core, changelog, None))
    }

    /// The join forgets a key's rows once they have not been read or written for `ttl`.
    #[must_use]
    pub fn with_state_ttl(mut self, ttl: Duration) -> Self {
        self.expiry = Some(KeyExpiry::new(ttl));
        self
    }

    fn with_core(core: JoinCore, changelog: bool, state_ttl: Option<Duration>) -> Self {
        Self {
            core,
            changelog,
            sides: [Side::default(), Side::default()],
            expiry: state_ttl.map(KeyExpiry::new),
            unmatched_retractions: 0,
            candidates: Vec::new(),
            candidate_counts: Vec::new(),
            arena: Vec::new(),
        }
    }

    /// Collects, per row of the batch, the other input's stored rows of the same key.
    /// Returns each row's range of candidates.
    fn collect_candidates(
        &mut self,
        probe: usize,
        encoded: &super::Encoded,
    ) -> Vec<(usize, usize)> {
        self.candidates.clear();
        self.candidate_counts.clear();
        self.arena.clear();
        let other = &self.sides[1 - probe];
        let mut ranges = Vec::with_capacity(encoded.matchable.len());
        for (index, matchable) in encoded.matchable.iter().enumerate() {
            let start = self.candidates.len();
            let group = matchable
                .then(|| other.groups.get(encoded.keys.row(index).as_ref()))
                .flatten();
            for (row, stored) in group.into_iter().flat_map(|group| &group.rows) {
                let begin = self.arena.len();
                self.arena.extend_from_slice(row);
                self.candidates.push(Candidate {
                    probe: index as u32,
                    start: begin,
                    end: self.arena.len(),
                });
                self.candidate_counts.push(stored.count);
            }
            ranges.push((start, self.candidates.len()));
        }
        ranges
    }

    /// Forgets the keys not read or written for the TTL as of `now`; emits nothing.
    pub(super) fn expire(&mut self, now: Instant) {
        let Some(expiry) = &mut self.expiry else {
            return;
        };
        for key in expiry.expire(now) {
            for side in &mut self.sides {
                side.forget(&key);
            }
        }
    }

    /// `process` with the batch's arrival time given, so expiry can be tested with explicit
    /// times.
    pub(super) fn process_at(
        &mut self,
        port: usize,
        input: &ChangeBatch,
        out: &mut Vec<ChangeBatch>,
        now: Instant,
    ) -> DfResult<()> {
        if port > 1 {
            return Err(DataFusionError::Internal(format!("join input port {port}")));
        }
        let batch = input.batch();
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let probe = port;
        let encoded = self.core.encode(probe, batch)?;
        let ranges = self.collect_candidates(probe, &encoded);
        let layout = self.core.layout;
        let needs_stored =
            self.core.spec.filter.is_some() || layout.pairs || layout.single[1 - probe].is_some();
        let stored = if needs_stored && !self.candidates.is_empty() {
            self.core
                .stored_columns(1 - probe, &self.arena, &self.candidates)?
        } else {
            Vec::new()
        };
        let passed = self.core.filter(
            probe,
            batch,
            self.candidates.iter().map(|c| c.probe),
            &stored,
        )?;
        let mut pieces = Pieces::default();
        let (own, other) = split(&mut self.sides, probe);
        for (index, &(start, end)) in ranges.iter().enumerate() {
            let key = encoded.keys.row(index);
            let row = encoded.rows.row(index);
            let mut weight = input.weights().map_or(1, |w| w.value(index));
            let held = own.count(key.as_ref(), row.as_ref());
            if held + weight < 0 {
                self.unmatched_retractions += (-(held + weight)) as u64;
                weight = -held;
            }
            if weight == 0 {
                continue;
            }
            let mut matches = 0;
            for candidate in start..end {
                if passed.as_ref().is_some_and(|p| !p.value(candidate)) {
                    continue;
                }
                let count = self.candidate_counts[candidate];
                matches += count;
                if layout.pairs {
                    pieces.push(Some(index as u32), Some(candidate as u32), weight * count);
                }
                let Some(when) = layout.single[1 - probe] else {
                    continue;
                };
                let range = &self.candidates[candidate];
                let left_state =
                    || DataFusionError::Internal("a join candidate left the state".into());
                let group = other.groups.get_mut(key.as_ref()).ok_or_else(left_state)?;
                note_change(&mut other.changed, group, key.as_ref());
                let stored = group
                    .rows
                    .get_mut(&self.arena[range.start..range.end])
                    .ok_or_else(left_state)?;
                let before = when.holds(stored.matches);
                stored.matches += weight;
                match (before, when.holds(stored.matches)) {
                    (false, true) => pieces.push(None, Some(candidate as u32), count),
                    (true, false) => pieces.push(None, Some(candidate as u32), -count),
                    _ => {}
                }
            }
            if layout.single[probe].is_some_and(|when| when.holds(matches)) {
                pieces.push(Some(index as u32), None, weight);
            }
            own.apply(key.as_ref(), row.as_ref(), weight, matches);
            if let Some(expiry) = &mut self.expiry {
                record_access(expiry, key.as_ref(), [&*own, &*other], now);
            }
        }
        let emitted = self
            .core
            .assemble(probe, Some(batch), &stored, pieces, self.changelog)?;
        out.extend(emitted);
        Ok(())
    }
}

/// Files `key` under `now` while either input holds rows of it; forgets it once neither does.
fn record_access(expiry: &mut KeyExpiry, key: &[u8], sides: [&Side; 2], now: Instant) {
    if sides.iter().any(|side| side.groups.contains_key(key)) {
        expiry.touch(key, now);
    } else {
        expiry.forget(key);
    }
}

impl Operator for RegularJoinOperator {
    fn name(&self) -> &'static str {
        "RegularJoin"
    }

    fn describe(&self) -> String {
        format!(
            "RegularJoin {} {} ({}; {})",
            self.core.spec.join_type,
            self.core.spec.describe_condition(),
            if self.changelog {
                "changelog"
            } else {
                "append-only"
            },
            self.expiry.as_ref().map_or_else(
                || "keeps every row of both inputs".to_string(),
                |expiry| format!(
                    "forgets a key idle for state_ttl {}ms",
                    expiry.ttl().as_millis()
                )
            )
        )
    }

    fn fork(&self) -> Box<dyn Operator> {
        // The prototype's encoders were built from this very spec, so building them again
        // cannot fail.
        let core = JoinCore::new(Arc::clone(&self.core.spec))
            .expect("join encoders were accepted when the prototype was built");
        let state_ttl = self.expiry.as_ref().map(KeyExpiry::ttl);
        Box::new(Self::with_core(core, self.changelog, state_ttl))
    }

    fn state_entries(&self) -> u64 {
        self.sides.iter().map(|side| side.rows).sum()
    }

    fn state_bytes(&self) -> u64 {
        let index = self.expiry.as_ref().map_or(0, KeyExpiry::bytes);
        self.sides.iter().map(Side::bytes).sum::<u64>() + index
    }

    fn timer_interval(&self) -> Option<Duration> {
        self.expiry.as_ref().map(KeyExpiry::check_interval)
    }

    fn on_timer(&mut self, _out: &mut Vec<ChangeBatch>) -> DfResult<()> {
        self.expire(Instant::now());
        Ok(())
    }

    fn process(
        &mut self,
        port: usize,
        input: ChangeBatch,
        out: &mut Vec<ChangeBatch>,
    ) -> DfResult<()> {
        self.process_at(port, &input, out, Instant::now())
    }

    fn snapshot(&mut self, full: bool) -> DfResult<Option<OperatorState>> {
        self.snapshot_at(full, WallClock::now()).map(Some)
    }

    fn restore(&mut self, parts: Vec<RestoredPart>) -> DfResult<()> {
        self.restore_at(&parts, WallClock::now())
    }
}
