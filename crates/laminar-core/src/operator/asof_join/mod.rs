//! ASOF join: each left row (port 0) is joined with at most one right row (port 1) of the
//! same key, the closest in time in the join's direction (backward, forward or nearest),
//! optionally within a tolerance; both inputs are append-only and routed by key. A left row
//! is emitted once the watermark proves no right row able to change its match can still
//! arrive (or, with early emission, on arrival, corrected by retraction), and rows behind
//! the watermark are late. Right rows are pruned behind the watermark, and the output
//! watermark is held at the oldest waiting left row so rows emitted later are not late
//! downstream. Snapshots are whole (see `snapshot`).
mod snapshot;
mod state;
#[cfg(test)]
mod tests;

use datafusion::common::hash_map::Entry;
use datafusion::common::{HashMap, HashSet};
use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, Array, Int64Array, UInt32Array};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter, Rows, SortField};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::physical_expr::PhysicalExpr;

use self::state::{best, horizon, settled, InsertedRight, KeyState, Matching, Pending};
use super::{batch_of_schema, Operator};
use crate::change_batch::ChangeBatch;
use crate::state::{OperatorState, RestoredPart};
use crate::state_codec::holds_no_entries;
use crate::watermark::WATERMARK_END_MS;

/// Which right row a left row matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsofDirection {
    /// The latest right row at (or strictly before) the left row's time.
    Backward,
    /// The earliest right row at (or strictly after) the left row's time.
    Forward,
    /// The closest right row either way; on equal distance, the earlier one.
    Nearest,
}

/// What an ASOF join matches and when it emits.
#[allow(
    clippy::struct_excessive_bools,
    reason = "independent switches of the join, each named where it is set"
)]
#[derive(Debug, Clone, Copy)]
pub struct AsofJoinSpec {
    /// Which right row matches.
    pub direction: AsofDirection,
    /// `>=`/`<=` (true): a right row at the left row's own time matches; `>`/`<` (false):
    /// it must be strictly before/after. Ignored for nearest joins, which are inclusive.
    pub inclusive: bool,
    /// A match farther than this from the left row is no match (milliseconds).
    pub tolerance_ms: Option<i64>,
    /// `ASOF LEFT JOIN`: unmatched left rows are emitted with NULL right columns.
    pub outer: bool,
    /// Emit each left row on arrival and correct it by retraction, instead of once final.
    pub early: bool,
    /// The right input is a versioned table's changelog (a temporal join): each inserted
    /// row is a new version, valid from its time until the next version's; the retraction
    /// of the version it replaces says nothing more and is skipped.
    pub versioned_right: bool,
}

/// One input of an ASOF join.
#[derive(Debug, Clone)]
pub struct AsofJoinSide {
    /// Equality keys over this side's rows; both sides' keys have the same types.
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The event time: a `TIMESTAMP` (any unit) or a `BIGINT` of epoch milliseconds.
    pub time: Arc<dyn PhysicalExpr>,
    /// Schema of this side's rows.
    pub schema: SchemaRef,
}

/// Shared by every worker's instance.
#[derive(Debug)]
struct Config {
    left: AsofJoinSide,
    right: AsofJoinSide,
    spec: AsofJoinSpec,
    matching: Matching,
    key_fields: Vec<SortField>,
    /// Left columns, then right columns.
    schema: SchemaRef,
    /// Join time units per millisecond, and per unit of each side's time.
    units_per_ms: i64,
    left_scale: i64,
    right_scale: i64,
}

struct Converters {
    key: RowConverter,
    left: RowConverter,
    right: RowConverter,
}

impl Converters {
    fn new(config: &Config) -> DfResult<Self> {
        let row_fields = |side: &AsofJoinSide| {
            side.schema
                .fields()
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect::<Vec<_>>()
        };
        Ok(Self {
            key: RowConverter::new(config.key_fields.clone())?,
            left: RowConverter::new(row_fields(&config.left))?,
            right: RowConverter::new(row_fields(&config.right))?,
        })
    }
}

/// Rows to emit: a left row, its match (`None`: NULL-padded) and the change's weight.
#[derive(Default)]
struct Output {
    left: Vec<OwnedRow>,
    right: Vec<Option<OwnedRow>>,
    weights: Vec<i64>,
}

impl Output {
    fn push(&mut self, left: OwnedRow, right: Option<OwnedRow>, weight: i64) {
        self.left.push(left);
        self.right.push(right);
        self.weights.push(weight);
    }
}

/// Joins each left row with its closest right row of the same key.
pub struct AsofJoinOperator {
    config: Arc<Config>,
    converters: Converters,
    /// The one key when the join has no equality keys.
    global_key: Option<OwnedRow>,
    keys: HashMap<OwnedRow, KeyState>,
    /// Keys that received rows since the last watermark step.
    dirty: HashSet<OwnedRow>,
    /// Keys by the time after which a watermark may settle or prune something of theirs
    /// without new input (see `next_wake`): a step visits the dirty keys and those whose
    /// time it passed, never the quiet rest. An entry whose key has since registered
    /// another time is stale and skipped.
    wakeups: BTreeMap<i64, Vec<OwnedRow>>,
    /// Each key with waiting left rows counted at its oldest one's time: the output
    /// watermark's hold is the first.
    held: BTreeMap<i64, u64>,
    /// Input watermark, in join time units.
    watermark: i64,
    /// Output watermark bound: the oldest waiting left row's time (milliseconds).
    hold_ms: i64,
    arrivals: u64,
    rows_held: u64,
    late_rows: u64,
}

impl std::fmt::Debug for AsofJoinOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// The state of `key`, made if new, and listed among the `dirty` keys (once per step: the
/// key is cloned and hashed into the list only when it is not in it already).
fn key_state<'a>(
    keys: &'a mut HashMap<OwnedRow, KeyState>,
    dirty: &mut HashSet<OwnedRow>,
    key: OwnedRow,
) -> &'a mut KeyState {
    let (newly_dirty, state) = match keys.entry(key) {
        Entry::Occupied(entry) => {
            let key = (!entry.get().dirty).then(|| entry.key().clone());
            (key, entry.into_mut())
        }
        Entry::Vacant(entry) => {
            let key = entry.key().clone();
            (Some(key), entry.insert(KeyState::default()))
        }
    };
    if let Some(key) = newly_dirty {
        state.dirty = true;
        dirty.insert(key);
    }
    state
}

/// Takes one count of `time` from `counts`.
fn uncount(counts: &mut BTreeMap<i64, u64>, time: i64) {
    if let Some(count) = counts.get_mut(&time) {
        *count -= 1;
        if *count == 0 {
            counts.remove(&time);
        }
    }
}

/// After `state` was settled and pruned at `watermark`: the time after which a later
/// watermark can settle one of its waiting rows or prune one of its right rows without new
/// input (`i64::MAX`: only new rows or the end can).
fn next_wake(state: &KeyState, watermark: i64, matching: &Matching) -> i64 {
    let horizon_of = |time: i64| {
        horizon(
            time,
            best(&state.right, time, matching).map(|m| m.0),
            matching,
        )
    };
    let pending = if matching.direction == AsofDirection::Nearest {
        // Nearest horizons do not grow with the row's time: the earliest of all.
        state
            .pending
            .keys()
            .map(|&(time, _)| horizon_of(time))
            .min()
    } else {
        state
            .pending
            .keys()
            .next()
            .map(|&(time, _)| horizon_of(time))
    };
    if let Some(pending) = pending {
        // Right rows prune behind the oldest waiting row, which moves only when it settles.
        return pending;
    }
    // No waiting rows: right rows prune behind the watermark itself.
    let mut times = state.right.keys();
    let Some(&first) = times.next() else {
        return i64::MAX;
    };
    if matching.direction == AsofDirection::Forward {
        return first;
    }
    // The latest row before the bound stays until a later one passes it, or until it is
    // out of tolerance.
    let superseded = times.next().copied().unwrap_or(i64::MAX);
    let expires = match matching.tolerance {
        Some(tolerance) if first < watermark => first.saturating_add(tolerance),
        _ => i64::MAX,
    };
    superseded.min(expires)
}

/// Settles one key's left rows the watermark made final and prunes its right rows; returns
/// the rows released.
fn settle_key(state: &mut KeyState, watermark: i64, config: &Config, output: &mut Output) -> u64 {
    let mut released = state.settle(watermark, &config.matching, config.spec, output);
    let bound = if watermark == i64::MAX {
        i64::MAX
    } else {
        state
            .pending
            .keys()
            .next()
            .map_or(watermark, |&(t, _)| t.min(watermark))
    };
    if watermark == i64::MAX {
        released += state.right.len() as u64;
        state.right.clear();
    } else {
        released += state.prune_right(bound, &config.matching);
    }
    released
}

/// Nanoseconds per unit of a time column's type; BIGINT times are epoch milliseconds.
fn unit_nanos(data_type: &DataType) -> DfResult<i64> {
    Ok(match data_type {
        DataType::Timestamp(TimeUnit::Second, _) => 1_000_000_000,
        DataType::Timestamp(TimeUnit::Millisecond, _) | DataType::Int64 => 1_000_000,
        DataType::Timestamp(TimeUnit::Microsecond, _) => 1_000,
        DataType::Timestamp(TimeUnit::Nanosecond, _) => 1,
        other => {
            return Err(DataFusionError::Plan(format!(
                "an ASOF join compares TIMESTAMP or BIGINT (epoch milliseconds) times, got {other}"
            )))
        }
    })
}

impl AsofJoinOperator {
    /// Joins `left` rows with `right` rows as `spec` says; output rows have `schema` (the
    /// left columns, then the right columns).
    pub fn new(
        left: AsofJoinSide,
        right: AsofJoinSide,
        spec: AsofJoinSpec,
        schema: SchemaRef,
    ) -> DfResult<Self> {
        if left.keys.len() != right.keys.len() {
            return Err(DataFusionError::Internal(
                "an ASOF join's sides have as many keys".into(),
            ));
        }
        let mut key_fields = Vec::with_capacity(left.keys.len());
        for (l, r) in left.keys.iter().zip(&right.keys) {
            let (lt, rt) = (l.data_type(&left.schema)?, r.data_type(&right.schema)?);
            if lt != rt {
                return Err(DataFusionError::Plan(format!(
                    "ASOF join keys {l} ({lt}) and {r} ({rt}) have different types"
                )));
            }
            key_fields.push(SortField::new(lt));
        }
        let left_nanos = unit_nanos(&left.time.data_type(&left.schema)?)?;
        let right_nanos = unit_nanos(&right.time.data_type(&right.schema)?)?;
        // The finer unit of the two, never coarser than milliseconds (the watermark's unit).
        let nanos = left_nanos.min(right_nanos).min(1_000_000);
        let units_per_ms = 1_000_000 / nanos;
        let matching = Matching {
            direction: spec.direction,
            inclusive: spec.inclusive || spec.direction == AsofDirection::Nearest,
            tolerance: spec.tolerance_ms.map(|t| t.saturating_mul(units_per_ms)),
        };
        let config = Config {
            left,
            right,
            spec,
            matching,
            key_fields,
            schema,
            units_per_ms,
            left_scale: left_nanos / nanos,
            right_scale: right_nanos / nanos,
        };
        Self::from_config(Arc::new(config))
    }

    fn from_config(config: Arc<Config>) -> DfResult<Self> {
        let global_key = if config.key_fields.is_empty() {
            Some(super::global_key()?)
        } else {
            None
        };
        Ok(Self {
            converters: Converters::new(&config)?,
            config,
            global_key,
            keys: HashMap::new(),
            dirty: HashSet::new(),
            wakeups: BTreeMap::new(),
            held: BTreeMap::new(),
            watermark: i64::MIN,
            hold_ms: i64::MAX,
            arrivals: 0,
            rows_held: 0,
            late_rows: 0,
        })
    }

    /// The rows of `batch` as `(key, time)` per row: `None` for a row that can match
    /// nothing (a NULL key or time); times in join units.
    fn keys_and_times(
        &self,
        side: &AsofJoinSide,
        scale: i64,
        batch: &RecordBatch,
    ) -> DfResult<Vec<Option<(OwnedRow, i64)>>> {
        let rows = batch.num_rows();
        let key_columns = super::evaluate_columns(&side.keys, batch)?;
        let keys: Option<Rows> = match self.global_key {
            Some(_) => None,
            None => Some(self.converters.key.convert_columns(&key_columns)?),
        };
        let times = side.time.evaluate(batch)?.into_array(rows)?;
        let raw = cast(&times, &DataType::Int64)?;
        let raw = raw
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| DataFusionError::Internal("cast to Int64".into()))?;
        let mut out = Vec::with_capacity(rows);
        for index in 0..rows {
            let null_key = key_columns.iter().any(|c| c.is_null(index));
            if null_key || raw.is_null(index) {
                out.push(None);
                continue;
            }
            let key = match (&keys, &self.global_key) {
                (Some(keys), _) => keys.row(index).owned(),
                (None, Some(global)) => global.clone(),
                (None, None) => {
                    return Err(DataFusionError::Internal(
                        "an ASOF join without keys has no global key".into(),
                    ))
                }
            };
            out.push(Some((key, raw.value(index).saturating_mul(scale))));
        }
        Ok(out)
    }

    fn add_left(&mut self, keyed: Option<(OwnedRow, i64)>, row: OwnedRow, output: &mut Output) {
        let config = Arc::clone(&self.config);
        let (outer, early) = (config.spec.outer, config.spec.early);
        let Some((key, time)) = keyed else {
            // SQL equality never holds for NULL: the row's answer is final now.
            if outer {
                output.push(row, None, 1);
            }
            return;
        };
        if time < self.watermark {
            self.late_rows += 1;
            return;
        }
        let state = key_state(&mut self.keys, &mut self.dirty, key);
        let matched = best(&state.right, time, &config.matching).map(|(s, r)| (s, r.clone()));
        let done = settled(
            self.watermark,
            horizon(time, matched.as_ref().map(|m| m.0), &config.matching),
        );
        if (early || done) && (outer || matched.is_some()) {
            output.push(row.clone(), matched.as_ref().map(|m| m.1.clone()), 1);
        }
        if done {
            return;
        }
        let pending = Pending {
            row,
            answer: if early { matched } else { None },
        };
        state.pending.insert((time, self.arrivals), pending);
        self.arrivals += 1;
        self.rows_held += 1;
    }

    fn add_right(&mut self, keyed: Option<(OwnedRow, i64)>, row: OwnedRow, output: &mut Output) {
        let Some((key, time)) = keyed else {
            return;
        };
        if time < self.watermark {
            self.late_rows += 1;
            return;
        }
        let config = Arc::clone(&self.config);
        let state = key_state(&mut self.keys, &mut self.dirty, key);
        match state.insert_right(time, row) {
            InsertedRight::Added => self.rows_held += 1,
            InsertedRight::Replaced => {}
            InsertedRight::Shadowed => return,
        }
        if config.spec.early {
            state.correct(time, &config.matching, config.spec.outer, output);
        }
    }

    /// Settles the left rows the watermark made final, prunes right rows, and recomputes
    /// the output watermark's hold. Only the keys that received rows since the last step
    /// and those whose wake-up time the watermark passed are visited (at the end, all), so
    /// a step costs what changed, not the number of keys held.
    fn settle_all(&mut self, output: &mut Output) {
        let config = Arc::clone(&self.config);
        let watermark = self.watermark;
        let mut visit: Vec<OwnedRow> = self.dirty.drain().collect();
        if watermark == i64::MAX {
            self.wakeups.clear();
            visit = self.keys.keys().cloned().collect();
        } else {
            while let Some(entry) = self.wakeups.first_entry() {
                if *entry.key() >= watermark {
                    break;
                }
                let (at, keys) = entry.remove_entry();
                // A key that registered another time since is visited at that one.
                visit.extend(
                    keys.into_iter()
                        .filter(|key| self.keys.get(key).is_some_and(|s| s.wake == Some(at))),
                );
            }
        }
        let mut released = 0;
        for key in visit {
            let Some(state) = self.keys.get_mut(&key) else {
                continue;
            };
            state.dirty = false;
            released += settle_key(state, watermark, &config, output);
            let oldest = state.pending.keys().next().map(|&(t, _)| t);
            if oldest != state.held_at {
                if let Some(old) = state.held_at {
                    uncount(&mut self.held, old);
                }
                if let Some(new) = oldest {
                    *self.held.entry(new).or_default() += 1;
                }
                state.held_at = oldest;
            }
            if state.is_empty() {
                self.keys.remove(&key);
                continue;
            }
            let wake = next_wake(state, watermark, &config.matching);
            if wake != i64::MAX && state.wake != Some(wake) {
                state.wake = Some(wake);
                self.wakeups.entry(wake).or_default().push(key);
            }
        }
        self.rows_held -= released;
        self.hold_ms = self
            .held
            .keys()
            .next()
            .map_or(i64::MAX, |&oldest| oldest.div_euclid(config.units_per_ms));
    }

    /// One change batch for `output`: the left columns, then the right ones (NULL where
    /// unmatched); weights only with early emission.
    fn changes(&self, output: Output) -> DfResult<Option<ChangeBatch>> {
        let rows = output.left.len();
        if rows == 0 {
            return Ok(None);
        }
        let mut columns = self
            .converters
            .left
            .convert_rows(output.left.iter().map(OwnedRow::row))?;
        let matched: Vec<&OwnedRow> = output.right.iter().flatten().collect();
        let right_fields = self.config.right.schema.fields();
        if matched.is_empty() {
            columns.extend(
                right_fields
                    .iter()
                    .map(|f| new_null_array(f.data_type(), rows)),
            );
        } else {
            let values = self
                .converters
                .right
                .convert_rows(matched.iter().map(|r| r.row()))?;
            if matched.len() == rows {
                columns.extend(values);
            } else {
                let mut next = 0_u32;
                let indices: UInt32Array = output
                    .right
                    .iter()
                    .map(|r| {
                        r.as_ref().map(|_| {
                            next += 1;
                            next - 1
                        })
                    })
                    .collect();
                for column in &values {
                    columns.push(take(column.as_ref(), &indices, None)?);
                }
            }
        }
        // The row format may hand back looser types (e.g. a dictionary's values); the
        // schema's types are authoritative.
        let batch = batch_of_schema(&self.config.schema, columns)?;
        Ok(Some(if self.config.spec.early {
            ChangeBatch::with_weights(batch, Int64Array::from(output.weights))
        } else {
            ChangeBatch::insert_only(batch)
        }))
    }
}

impl Operator for AsofJoinOperator {
    fn name(&self) -> &'static str {
        "AsofJoin"
    }

    fn describe(&self) -> String {
        let config = &self.config;
        let spec = &config.spec;
        let comparison = match (spec.direction, spec.inclusive) {
            (AsofDirection::Backward, true) => ">=",
            (AsofDirection::Backward, false) => ">",
            (AsofDirection::Forward, true) => "<=",
            (AsofDirection::Forward, false) => "<",
            (AsofDirection::Nearest, _) => "nearest",
        };
        let keys = |side: &AsofJoinSide| {
            side.keys
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let tolerance = spec
            .tolerance_ms
            .map_or_else(String::new, |t| format!(" within {t}ms"));
        format!(
            "AsofJoin {}: left {} {comparison} right {}{tolerance}, keys [{}] = [{}], {}",
            if spec.outer { "LEFT" } else { "INNER" },
            config.left.time,
            config.right.time,
            keys(&config.left),
            keys(&config.right),
            if spec.early {
                "changelog: emitted early, corrected by retraction"
            } else {
                "emitted once final"
            }
        )
    }

    fn fork(&self) -> Box<dyn Operator> {
        // `new` built converters from this very configuration, so building them again
        // cannot fail.
        Box::new(
            Self::from_config(Arc::clone(&self.config))
                .expect("the configuration was accepted when the prototype was built"),
        )
    }

    fn process(
        &mut self,
        port: usize,
        input: ChangeBatch,
        out: &mut Vec<ChangeBatch>,
    ) -> DfResult<()> {
        let input = match input.weights() {
            None => input,
            Some(weights) if port == 1 && self.config.spec.versioned_right => {
                let inserts = datafusion::arrow::compute::kernels::cmp::gt(
                    weights,
                    &Int64Array::new_scalar(0),
                )?;
                ChangeBatch::insert_only(datafusion::arrow::compute::filter_record_batch(
                    input.batch(),
                    &inserts,
                )?)
            }
            Some(_) => {
                return Err(DataFusionError::Internal(
                    "retractions reached an ASOF join, which reads append-only inputs".into(),
                ))
            }
        };
        let config = Arc::clone(&self.config);
        let batch = input.batch();
        let (side, scale, converter) = match port {
            0 => (&config.left, config.left_scale, &self.converters.left),
            1 => (&config.right, config.right_scale, &self.converters.right),
            other => {
                return Err(DataFusionError::Internal(format!(
                    "an ASOF join has two inputs, not port {other}"
                )))
            }
        };
        let rows = converter.convert_columns(batch.columns())?;
        let keyed = self.keys_and_times(side, scale, batch)?;
        let mut output = Output::default();
        for (index, keyed) in keyed.into_iter().enumerate() {
            let row = rows.row(index).owned();
            if port == 0 {
                self.add_left(keyed, row, &mut output);
            } else {
                self.add_right(keyed, row, &mut output);
            }
        }
        if let Some(change) = self.changes(output)? {
            out.push(change);
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark_ms: i64, out: &mut Vec<ChangeBatch>) -> DfResult<()> {
        let watermark = if watermark_ms == WATERMARK_END_MS {
            i64::MAX
        } else {
            watermark_ms.saturating_mul(self.config.units_per_ms)
        };
        if watermark <= self.watermark {
            return Ok(());
        }
        self.watermark = watermark;
        let mut output = Output::default();
        self.settle_all(&mut output);
        if let Some(change) = self.changes(output)? {
            out.push(change);
        }
        Ok(())
    }

    fn on_end(&mut self, out: &mut Vec<ChangeBatch>) -> DfResult<()> {
        self.on_watermark(WATERMARK_END_MS, out)
    }

    fn output_watermark(&self, watermark_ms: i64) -> i64 {
        watermark_ms.min(self.hold_ms)
    }

    fn state_entries(&self) -> u64 {
        self.rows_held
    }

    fn state_bytes(&self) -> u64 {
        self.keys
            .iter()
            .map(|(key, state)| key.row().as_ref().len() as u64 + state.bytes())
            .sum()
    }

    fn late_rows(&self) -> u64 {
        self.late_rows
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
