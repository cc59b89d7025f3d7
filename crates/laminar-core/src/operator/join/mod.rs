//! Joins of two inputs on equal keys. The regular join keeps every row of both inputs per key
//! and emits a changelog; the interval join keeps a row only until the watermark proves that
//! no future row of the other input can match it, and emits append-only rows (a window join is
//! an interval join whose inputs' window ends are equal). Both index each input's rows by the
//! encoded join key, so a probe costs the rows of its key, and evaluate the residual condition
//! vectorized over the candidate pairs. This module holds what the two share: the join's
//! description, key and row encoding, and the assembly of output batches.

mod interval;
mod regular;
mod state_ttl;
#[cfg(test)]
mod tests;

pub use interval::{IntervalJoinOperator, TimeBound};
pub use regular::RegularJoinOperator;

use std::sync::Arc;

use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, UInt32Array,
};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatchOptions;
use datafusion::arrow::row::{RowConverter, RowParser, Rows, SortField};
use datafusion::common::JoinType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::physical_expr::PhysicalExpr;

use crate::change_batch::ChangeBatch;

/// What a join operator is built from, as the planner found it.
#[derive(Debug, Clone)]
pub struct JoinSpec {
    /// Inner, outer, semi or anti (mark joins have no streaming form).
    pub join_type: JoinType,
    /// The key expressions over each input (left, right), pairwise of equal types.
    pub keys: [Vec<Arc<dyn PhysicalExpr>>; 2],
    /// The keys' types.
    pub key_fields: Vec<SortField>,
    /// NULL keys equal each other (`INTERSECT`, `EXCEPT`); otherwise a NULL key matches nothing.
    pub nulls_equal: bool,
    /// The rest of the join condition, over a left row followed by a right row.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// The schemas of the two inputs.
    pub inputs: [SchemaRef; 2],
    /// The schema of the joined rows.
    pub schema: SchemaRef,
}

impl JoinSpec {
    /// `key = key` per key pair and the residual condition, for `EXPLAIN`.
    pub(crate) fn describe_condition(&self) -> String {
        let pairs: Vec<String> = self.keys[0]
            .iter()
            .zip(&self.keys[1])
            .map(|(left, right)| format!("{left} = {right}"))
            .collect();
        match &self.filter {
            Some(filter) => format!("on [{}] filter {filter}", pairs.join(", ")),
            None => format!("on [{}]", pairs.join(", ")),
        }
    }
}

/// When a row of one input is emitted on its own (null-padded, for outer joins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Single {
    /// While nothing matches it: the preserved side of an outer join, an anti join.
    Unmatched,
    /// While something matches it: a semi join.
    Matched,
}

impl Single {
    /// Whether a row with `matches` matching rows is emitted on its own.
    fn holds(self, matches: i64) -> bool {
        match self {
            Self::Unmatched => matches == 0,
            Self::Matched => matches > 0,
        }
    }
}

/// Which rows a join type emits.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// Matching pairs are emitted, as a left row followed by a right row (inner and outer
    /// joins); semi and anti joins emit one input's rows alone.
    pairs: bool,
    /// Per input, when its rows are emitted on their own.
    single: [Option<Single>; 2],
}

impl Layout {
    fn of(join_type: JoinType) -> DfResult<Self> {
        let (pairs, single) = match join_type {
            JoinType::Inner => (true, [None, None]),
            JoinType::Left => (true, [Some(Single::Unmatched), None]),
            JoinType::Right => (true, [None, Some(Single::Unmatched)]),
            JoinType::Full => (true, [Some(Single::Unmatched), Some(Single::Unmatched)]),
            JoinType::LeftSemi => (false, [Some(Single::Matched), None]),
            JoinType::RightSemi => (false, [None, Some(Single::Matched)]),
            JoinType::LeftAnti => (false, [Some(Single::Unmatched), None]),
            JoinType::RightAnti => (false, [None, Some(Single::Unmatched)]),
            other => {
                return Err(DataFusionError::Internal(format!(
                    "{other} join planned as a streaming join"
                )))
            }
        };
        Ok(Self { pairs, single })
    }

    /// Whether an output row can later be retracted even over append-only inputs: a row
    /// emitted while unmatched goes once a match arrives.
    fn retracts(self) -> bool {
        self.single.contains(&Some(Single::Unmatched))
    }
}

/// One instance's encoders for a join: keys, whole rows per input, and output assembly.
struct JoinCore {
    spec: Arc<JoinSpec>,
    layout: Layout,
    /// The schema of a left row followed by a right row, which the filter reads.
    pair_schema: SchemaRef,
    keys: RowConverter,
    rows: [RowConverter; 2],
    parsers: [RowParser; 2],
}

/// An input batch, encoded.
struct Encoded {
    keys: Rows,
    rows: Rows,
    /// Whether the row's key can equal another (no NULL in it, unless NULLs are equal).
    matchable: Vec<bool>,
}

/// A stored row of the other input that may match a probing row.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    /// The probing row's index in its batch.
    probe: u32,
    /// The stored row's encoding, a range of the candidates' arena.
    start: usize,
    end: usize,
}

/// Output rows in order: each takes its probing input's columns from the probing batch
/// (`None`: NULLs) and the other input's columns from a stored row (`None`: NULLs).
#[derive(Default)]
struct Pieces {
    probe: Vec<Option<u32>>,
    stored: Vec<Option<u32>>,
    weights: Vec<i64>,
}

impl Pieces {
    /// Room for `rows` output rows, so a large batch does not grow the vectors step by step.
    fn with_capacity(rows: usize) -> Self {
        Self {
            probe: Vec::with_capacity(rows),
            stored: Vec::with_capacity(rows),
            weights: Vec::with_capacity(rows),
        }
    }

    fn push(&mut self, probe: Option<u32>, stored: Option<u32>, weight: i64) {
        self.probe.push(probe);
        self.stored.push(stored);
        self.weights.push(weight);
    }

    fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// Rows of weight `w > 1` repeated `w` times, for output without weights.
    fn expanded(self) -> Self {
        if self.weights.iter().all(|w| *w == 1) {
            return self;
        }
        let mut expanded = Self::default();
        for ((probe, stored), weight) in self.probe.into_iter().zip(self.stored).zip(self.weights) {
            debug_assert!(weight > 0, "append-only join output with weight {weight}");
            for _ in 0..weight {
                expanded.push(probe, stored, 1);
            }
        }
        expanded
    }
}

impl JoinCore {
    fn new(spec: Arc<JoinSpec>) -> DfResult<Self> {
        let layout = Layout::of(spec.join_type)?;
        let mut fields: Vec<_> = spec.inputs[0].fields().iter().cloned().collect();
        fields.extend(spec.inputs[1].fields().iter().cloned());
        let pair_schema = Arc::new(Schema::new(fields));
        let row_fields = |schema: &SchemaRef| -> Vec<SortField> {
            schema
                .fields()
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect()
        };
        let rows = [
            RowConverter::new(row_fields(&spec.inputs[0]))?,
            RowConverter::new(row_fields(&spec.inputs[1]))?,
        ];
        let parsers = [rows[0].parser(), rows[1].parser()];
        Ok(Self {
            keys: RowConverter::new(spec.key_fields.clone())?,
            spec,
            layout,
            pair_schema,
            rows,
            parsers,
        })
    }

    /// Keys and rows of a batch of input `side`.
    fn encode(&self, side: usize, batch: &RecordBatch) -> DfResult<Encoded> {
        let (keys, matchable) = self.encode_keys(side, batch)?;
        let rows = self.rows[side].convert_columns(batch.columns())?;
        Ok(Encoded {
            keys,
            rows,
            matchable,
        })
    }

    /// The keys of a batch of input `side`, and whether each can equal another (no NULL
    /// in it, unless NULLs are equal).
    fn encode_keys(&self, side: usize, batch: &RecordBatch) -> DfResult<(Rows, Vec<bool>)> {
        let key_columns = super::evaluate_columns(&self.spec.keys[side], batch)?;
        let keys = self.keys.convert_columns(&key_columns)?;
        let matchable = (0..batch.num_rows())
            .map(|i| self.spec.nulls_equal || key_columns.iter().all(|c| c.is_valid(i)))
            .collect();
        Ok((keys, matchable))
    }

    /// The candidates' rows of input `side` as columns, one row per candidate.
    fn stored_columns(
        &self,
        side: usize,
        arena: &[u8],
        candidates: &[Candidate],
    ) -> DfResult<Vec<ArrayRef>> {
        let parser = &self.parsers[side];
        Ok(self.rows[side].convert_rows(
            candidates
                .iter()
                .map(|c| parser.parse(&arena[c.start..c.end])),
        )?)
    }

    /// Which candidate pairs satisfy the residual condition (all, without one).
    /// `probes` holds each candidate's probing row.
    fn filter(
        &self,
        probe_side: usize,
        batch: &RecordBatch,
        probes: impl ExactSizeIterator<Item = u32>,
        stored: &[ArrayRef],
    ) -> DfResult<Option<BooleanArray>> {
        let Some(filter) = &self.spec.filter else {
            return Ok(None);
        };
        let candidates = probes.len();
        if candidates == 0 {
            return Ok(None);
        }
        let indices = UInt32Array::from_iter_values(probes);
        let probe = batch
            .columns()
            .iter()
            .map(|c| take(c.as_ref(), &indices, None))
            .collect::<Result<Vec<_>, _>>()?;
        let columns = if probe_side == 0 {
            probe.into_iter().chain(stored.iter().cloned()).collect()
        } else {
            stored.iter().cloned().chain(probe).collect()
        };
        let options = RecordBatchOptions::new().with_row_count(Some(candidates));
        let pairs =
            RecordBatch::try_new_with_options(Arc::clone(&self.pair_schema), columns, &options)?;
        let passed = filter.evaluate(&pairs)?.into_array(candidates)?;
        let passed = passed
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| DataFusionError::Internal("join filter is not boolean".into()))?;
        // NULL is not true: the pair does not match.
        Ok(Some(
            passed
                .iter()
                .map(|v| Some(v.unwrap_or(false)))
                .collect::<BooleanArray>(),
        ))
    }

    /// The output batch for `pieces`: columns of `probe_side` from `probe` (NULLs when there
    /// is no probing batch), the other input's from `stored`. With `changelog`, weights are
    /// kept; otherwise every weight is positive and rows are repeated instead.
    fn assemble(
        &self,
        probe_side: usize,
        probe: Option<&RecordBatch>,
        stored: &[ArrayRef],
        pieces: Pieces,
        changelog: bool,
    ) -> DfResult<Option<ChangeBatch>> {
        if pieces.is_empty() {
            return Ok(None);
        }
        let pieces = if changelog { pieces } else { pieces.expanded() };
        let rows = pieces.weights.len();
        let stored_side = 1 - probe_side;
        let probe_columns = || -> DfResult<Vec<ArrayRef>> {
            let indices = UInt32Array::from(pieces.probe.clone());
            match probe {
                Some(batch) => gather(batch.columns(), &indices),
                None => Ok(null_columns(&self.spec.inputs[probe_side], rows)),
            }
        };
        let stored_columns = || -> DfResult<Vec<ArrayRef>> {
            let indices = UInt32Array::from(pieces.stored.clone());
            if indices.null_count() == rows {
                return Ok(null_columns(&self.spec.inputs[stored_side], rows));
            }
            gather(stored, &indices)
        };
        let columns = if self.layout.pairs {
            let (probe, stored) = (probe_columns()?, stored_columns()?);
            if probe_side == 0 {
                probe.into_iter().chain(stored).collect()
            } else {
                stored.into_iter().chain(probe).collect()
            }
        } else {
            // Semi and anti joins emit the rows of the side whose rows are single.
            let output_side = usize::from(self.layout.single[0].is_none());
            if output_side == probe_side {
                probe_columns()?
            } else {
                stored_columns()?
            }
        };
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        let batch =
            RecordBatch::try_new_with_options(Arc::clone(&self.spec.schema), columns, &options)?;
        Ok(Some(if changelog {
            ChangeBatch::with_weights(batch, Int64Array::from(pieces.weights))
        } else {
            ChangeBatch::insert_only(batch)
        }))
    }
}

/// `columns` taken at `indices` (NULL where an index is NULL).
fn gather(columns: &[ArrayRef], indices: &UInt32Array) -> DfResult<Vec<ArrayRef>> {
    Ok(columns
        .iter()
        .map(|c| take(c.as_ref(), indices, None))
        .collect::<Result<Vec<_>, _>>()?)
}

fn null_columns(schema: &SchemaRef, rows: usize) -> Vec<ArrayRef> {
    schema
        .fields()
        .iter()
        .map(|f| new_null_array(f.data_type(), rows))
        .collect()
}

/// The two inputs' states, the probing one first.
fn split<T>(sides: &mut [T; 2], probe: usize) -> (&mut T, &mut T) {
    let [left, right] = sides;
    if probe == 0 {
        (left, right)
    } else {
        (right, left)
    }
}
