//! Time bounds in a join condition: the conjuncts that bound the right input's time column
//! relative to the left's (`r.ts BETWEEN l.ts - INTERVAL '1' MINUTE AND l.ts + INTERVAL '2'
//! MINUTE`, the `<`, `<=`, `>`, `>=` forms, or equal times such as window ends among the
//! join keys), as millisecond bounds on `right time - left time`. The bounds decide which
//! stored rows an interval join pairs a row with and when it may forget a row, so they are
//! rounded outwards; the condition itself is still evaluated on every candidate pair, except
//! the conjuncts the bounds enforce exactly (see [`without_implied`]).

use std::collections::BTreeMap;

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::datatypes::TimeUnit;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};

const NANOS_PER_MS: i128 = 1_000_000;
const NANOS_PER_DAY: i128 = 86_400 * 1_000_000_000;

/// Bounds on `right time - left time` for one pair of time columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PairBounds {
    /// The left input's time column.
    pub(crate) left: usize,
    /// The right input's time column.
    pub(crate) right: usize,
    /// Right minus left is at least this (rounded down).
    pub(crate) low_ms: i64,
    /// Right minus left is at most this (rounded up).
    pub(crate) high_ms: i64,
}

/// A column shifted by a constant: `ts`, `ts + INTERVAL '1' SECOND`, `CAST(ts AS ...) - 5`.
#[derive(Debug, Clone, Copy)]
struct Shifted {
    column: usize,
    offset_ns: i128,
    /// The column is cast (to another timestamp unit), which may truncate it.
    cast: bool,
}

/// What is known of `right - left` for one pair of columns, in nanoseconds.
#[derive(Debug, Default, Clone, Copy)]
struct Known {
    low_ns: Option<i128>,
    high_ns: Option<i128>,
    cast: bool,
}

impl Known {
    fn at_least(&mut self, value: i128) {
        self.low_ns = Some(self.low_ns.map_or(value, |low| low.max(value)));
    }

    fn at_most(&mut self, value: i128) {
        self.high_ns = Some(self.high_ns.map_or(value, |high| high.min(value)));
    }
}

/// Every pair of time columns (left among `left_columns`, right among `right_columns`) that
/// the join's equalities `on` (unless NULL keys are equal) and its `filter` bound from both
/// sides.
pub(crate) fn time_bounds(
    on: &[(Expr, Expr)],
    on_nulls_equal: bool,
    filter: Option<&Expr>,
    schemas: [&DFSchema; 2],
    columns: [&[usize]; 2],
) -> Vec<PairBounds> {
    let mut known: BTreeMap<(usize, usize), Known> = BTreeMap::new();
    if !on_nulls_equal {
        for (left, right) in on {
            let (Some(l), Some(r)) = (shifted(left, schemas[0]), shifted(right, schemas[1])) else {
                continue;
            };
            // l + a = r + b: r - l = a - b.
            let entry = known.entry((l.column, r.column)).or_default();
            entry.at_least(l.offset_ns - r.offset_ns);
            entry.at_most(l.offset_ns - r.offset_ns);
            entry.cast |= l.cast || r.cast;
        }
    }
    if let Some(filter) = filter {
        if let Ok(pair_schema) = schemas[0].join(schemas[1]) {
            let left_len = schemas[0].fields().len();
            for conjunct in split_conjunction(filter) {
                note_comparison(conjunct, &pair_schema, left_len, &mut known);
            }
        }
    }
    known
        .into_iter()
        .filter(|((left, right), _)| columns[0].contains(left) && columns[1].contains(right))
        .filter_map(|((left, right), bounds)| {
            let widen = i128::from(bounds.cast);
            let low_ms = bounds.low_ns?.div_euclid(NANOS_PER_MS) - widen;
            let high_ms = -(-bounds.high_ns?).div_euclid(NANOS_PER_MS) + widen;
            Some(PairBounds {
                left,
                right,
                low_ms: clamp(low_ms),
                high_ms: clamp(high_ms),
            })
        })
        .collect()
}

/// `filter` without the conjuncts that the time bound on columns `columns` (left, right)
/// enforces exactly: inclusive comparisons (`>=`, `<=`, `=`) of the two columns, uncast,
/// both of millisecond precision (`TIMESTAMP(3)` or epoch-millisecond `BIGINT`), shifted by
/// whole milliseconds. The join only pairs rows whose times lie within the bound, which is
/// the intersection of every such conjunct, so evaluating them again on each pair changes
/// nothing (and Arrow's timestamp-minus-interval kernel allocates per value). Strict
/// comparisons stay: the bound rounds them to their inclusive forms.
pub(crate) fn without_implied(
    filter: Option<&Expr>,
    schemas: [&DFSchema; 2],
    columns: [usize; 2],
) -> Option<Expr> {
    let filter = filter?;
    let millis = |schema: &DFSchema, column: usize| {
        matches!(
            schema.field(column).data_type(),
            DataType::Timestamp(TimeUnit::Millisecond, _) | DataType::Int64
        )
    };
    if !millis(schemas[0], columns[0]) || !millis(schemas[1], columns[1]) {
        return Some(filter.clone());
    }
    let Ok(pair_schema) = schemas[0].join(schemas[1]) else {
        return Some(filter.clone());
    };
    let left_len = schemas[0].fields().len();
    let pair = [columns[0], left_len + columns[1]];
    let implied = |conjunct: &Expr| -> bool {
        let Expr::BinaryExpr(BinaryExpr { left, op, right }) = conjunct else {
            return false;
        };
        if !matches!(op, Operator::GtEq | Operator::LtEq | Operator::Eq) {
            return false;
        }
        let (Some(a), Some(b)) = (shifted(left, &pair_schema), shifted(right, &pair_schema)) else {
            return false;
        };
        let exact = |s: &Shifted| !s.cast && s.offset_ns % NANOS_PER_MS == 0;
        let same_pair = [a.column, b.column] == pair || [b.column, a.column] == pair;
        same_pair && exact(&a) && exact(&b)
    };
    conjunction(
        split_conjunction(filter)
            .into_iter()
            .filter(|conjunct| !implied(conjunct))
            .cloned(),
    )
}

fn clamp(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
}

/// Records what `a <op> b` says of `right - left`, when it compares a shifted left column
/// with a shifted right column. Strict comparisons bound as their inclusive forms.
fn note_comparison(
    conjunct: &Expr,
    pair_schema: &DFSchema,
    left_len: usize,
    known: &mut BTreeMap<(usize, usize), Known>,
) {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = conjunct else {
        return;
    };
    let (Some(a), Some(b)) = (shifted(left, pair_schema), shifted(right, pair_schema)) else {
        return;
    };
    // `a op b` as `right - left op' value`: with a left, `l + x <= r + y` is `r - l >= x - y`.
    let (l, r, value, flipped) = match (a.column < left_len, b.column < left_len) {
        (true, false) => (a, b, a.offset_ns - b.offset_ns, true),
        (false, true) => (b, a, b.offset_ns - a.offset_ns, false),
        _ => return,
    };
    let entry = known.entry((l.column, r.column - left_len)).or_default();
    entry.cast |= l.cast || r.cast;
    match (op, flipped) {
        (Operator::Eq, _) => {
            entry.at_least(value);
            entry.at_most(value);
        }
        (Operator::Lt | Operator::LtEq, true) | (Operator::Gt | Operator::GtEq, false) => {
            entry.at_least(value);
        }
        (Operator::Gt | Operator::GtEq, true) | (Operator::Lt | Operator::LtEq, false) => {
            entry.at_most(value);
        }
        _ => {}
    }
}

/// `expr` as a column of `schema` shifted by a constant.
fn shifted(expr: &Expr, schema: &DFSchema) -> Option<Shifted> {
    match expr {
        Expr::Column(column) => Some(Shifted {
            column: schema.index_of_column(column).ok()?,
            offset_ns: 0,
            cast: false,
        }),
        Expr::Cast(cast) if is_time(cast.field.data_type()) => {
            shifted(&cast.expr, schema).map(|s| Shifted { cast: true, ..s })
        }
        Expr::TryCast(cast) if is_time(cast.field.data_type()) => {
            shifted(&cast.expr, schema).map(|s| Shifted { cast: true, ..s })
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (base, offset_ns) = match op {
                Operator::Plus => match offset_ns(right) {
                    Some(offset) => (shifted(left, schema)?, offset),
                    None => (shifted(right, schema)?, offset_ns(left)?),
                },
                Operator::Minus => (shifted(left, schema)?, -offset_ns(right)?),
                _ => return None,
            };
            Some(Shifted {
                offset_ns: base.offset_ns + offset_ns,
                ..base
            })
        }
        _ => None,
    }
}

fn is_time(data_type: &DataType) -> bool {
    matches!(data_type, DataType::Timestamp(..) | DataType::Int64)
}

/// A constant time offset in nanoseconds: an interval of fixed length (no months), a
/// duration, or an integer (milliseconds, for BIGINT event times).
fn offset_ns(expr: &Expr) -> Option<i128> {
    let Expr::Literal(value, _) = expr else {
        return None;
    };
    Some(match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
            i128::from(v.days) * NANOS_PER_DAY + i128::from(v.nanoseconds)
        }
        ScalarValue::IntervalDayTime(Some(v)) => {
            i128::from(v.days) * NANOS_PER_DAY + i128::from(v.milliseconds) * NANOS_PER_MS
        }
        ScalarValue::DurationSecond(Some(v)) => i128::from(*v) * 1_000 * NANOS_PER_MS,
        ScalarValue::DurationMillisecond(Some(v)) | ScalarValue::Int64(Some(v)) => {
            i128::from(*v) * NANOS_PER_MS
        }
        ScalarValue::DurationMicrosecond(Some(v)) => i128::from(*v) * 1_000,
        ScalarValue::DurationNanosecond(Some(v)) => i128::from(*v),
        ScalarValue::Int32(Some(v)) => i128::from(*v) * NANOS_PER_MS,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    use datafusion::common::TableReference;
    use datafusion::logical_expr::{col, lit, Expr};
    use datafusion::scalar::ScalarValue;

    use super::{time_bounds, PairBounds};

    fn schema(table: &str) -> datafusion::common::DFSchema {
        let fields = Schema::new(vec![
            Field::new("k", datafusion::arrow::datatypes::DataType::Int64, false),
            Field::new(
                "ts",
                datafusion::arrow::datatypes::DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
        ]);
        datafusion::common::DFSchema::try_from_qualified_schema(
            TableReference::bare(table),
            &fields,
        )
        .expect("schema")
    }

    fn seconds(n: i64) -> Expr {
        lit(ScalarValue::new_interval_mdn(0, 0, n * 1_000_000_000))
    }

    fn bounds(filter: &Expr) -> Vec<PairBounds> {
        let (left, right) = (schema("a"), schema("b"));
        time_bounds(&[], false, Some(filter), [&left, &right], [&[1], &[1]])
    }

    #[test]
    fn the_conjuncts_an_exact_bound_enforces_leave_the_residual_condition() {
        let (left, right) = (schema("a"), schema("b"));
        let residual = |filter: &Expr| {
            super::without_implied(Some(filter), [&left, &right], [1, 1]).map(|e| e.to_string())
        };
        // Inclusive millisecond bounds: both go.
        let between = col("b.ts")
            .gt_eq(col("a.ts") - seconds(1))
            .and(col("b.ts").lt_eq(col("a.ts")));
        assert_eq!(residual(&between), None);
        // A strict comparison stays (the bound includes its edge), as does anything else.
        let strict = col("b.ts")
            .gt(col("a.ts") - seconds(1))
            .and(col("b.ts").lt_eq(col("a.ts")))
            .and(col("a.k").gt(lit(3_i64)));
        assert_eq!(
            residual(&strict),
            Some(
                col("b.ts")
                    .gt(col("a.ts") - seconds(1))
                    .and(col("a.k").gt(lit(3_i64)))
                    .to_string()
            )
        );
        // A sub-millisecond offset is not exact at millisecond precision.
        let fine = col("b.ts").lt_eq(col("a.ts") + lit(ScalarValue::new_interval_mdn(0, 0, 1)));
        assert_eq!(residual(&fine), Some(fine.to_string()));
    }

    #[test]
    fn between_bounds_the_right_time_from_both_sides() {
        // b.ts BETWEEN a.ts - 1 s AND a.ts + 2.5 s
        let filter = col("b.ts").gt_eq(col("a.ts") - seconds(1)).and(
            col("b.ts")
                .lt_eq(col("a.ts") + lit(ScalarValue::new_interval_mdn(0, 0, 2_500_000_000))),
        );
        assert_eq!(
            bounds(&filter),
            [PairBounds {
                left: 1,
                right: 1,
                low_ms: -1_000,
                high_ms: 2_500
            }]
        );
        // The same with the left column on the other side of each comparison, strictly.
        let filter = (col("a.ts") + seconds(1))
            .gt(col("b.ts"))
            .and((col("a.ts") - seconds(3)).lt(col("b.ts")));
        assert_eq!(
            bounds(&filter),
            [PairBounds {
                left: 1,
                right: 1,
                low_ms: -3_000,
                high_ms: 1_000
            }]
        );
    }

    #[test]
    fn one_sided_or_disjoint_conditions_bound_nothing() {
        assert!(bounds(&col("b.ts").gt_eq(col("a.ts"))).is_empty());
        let either = col("b.ts")
            .gt_eq(col("a.ts"))
            .or(col("b.ts").lt_eq(col("a.ts") + seconds(1)));
        assert!(bounds(&either).is_empty());
        // A bound on another column pair (keys) is not a time bound.
        let keys = col("b.k")
            .gt_eq(col("a.k"))
            .and(col("b.k").lt_eq(col("a.k")));
        assert!(bounds(&keys).is_empty());
    }

    #[test]
    fn equal_times_among_the_keys_bound_both_sides_by_zero() {
        let (left, right) = (schema("a"), schema("b"));
        let on = [(col("a.k"), col("b.k")), (col("a.ts"), col("b.ts"))];
        assert_eq!(
            time_bounds(&on, false, None, [&left, &right], [&[1], &[1]]),
            [PairBounds {
                left: 1,
                right: 1,
                low_ms: 0,
                high_ms: 0
            }]
        );
        // Keys whose NULLs are equal say nothing of NULL times.
        assert!(time_bounds(&on, true, None, [&left, &right], [&[1], &[1]]).is_empty());
    }
}
