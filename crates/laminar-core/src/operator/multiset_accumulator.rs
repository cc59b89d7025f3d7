//! A retractable accumulator for any aggregate over a changelog. DataFusion's own
//! `retract_batch` is exact only for order-independent aggregates (COUNT, SUM, AVG, ...); for
//! MIN, FIRST_VALUE, ... it retracts in arrival order (a window frame), while a changelog may
//! retract any earlier row. This accumulator keeps the group's argument rows (values and
//! ordering columns, row-encoded) as a multiset that shrinks as rows are retracted: MIN and
//! MAX read its first or last value, COUNT(DISTINCT x) counts its keys, and every other
//! aggregate replays it into a fresh DataFusion accumulator.
//!
//! Its state (for checkpoints) is the multiset itself: the encoded rows and their counts, as
//! two lists; merging states adds the counts.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, BinaryArray, LargeListArray, UInt64Array,
};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;

/// `values` as the one value of a one-row list.
fn single_row_list(values: ArrayRef) -> LargeListArray {
    datafusion::common::utils::SingleRowListArrayBuilder::new(values).build_large_list_array()
}

/// How a call's result is read from its multiset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// The smallest non-NULL value: the row encoding sorts as the values do.
    Min,
    /// The largest non-NULL value.
    Max,
    /// The number of distinct non-NULL values.
    DistinctCount,
    /// Every held row, repeated by its count, fed to a fresh DataFusion accumulator (once
    /// per distinct row for a DISTINCT aggregate).
    Replay,
}

/// What the accumulators of one aggregate call share: the row encoding of its arguments and
/// how its result is read. Built once when the query is planned.
#[derive(Debug)]
pub(super) struct MultisetAggregate {
    function: Arc<AggregateFunctionExpr>,
    /// Encodes argument rows; rows decode only through the converter that encoded them, so
    /// every group of the call shares this one.
    converter: RowConverter,
    /// The encoding of a NULL argument, for calls with a single argument column.
    null_row: Option<Box<[u8]>>,
    reading: Reading,
}

impl MultisetAggregate {
    /// Prepares `function`, whose argument columns (its arguments, then its ORDER BY
    /// expressions) have `argument_types`. Fails, naming the function, for argument types
    /// the row encoding does not support.
    pub(super) fn new(
        function: Arc<AggregateFunctionExpr>,
        argument_types: &[DataType],
    ) -> DfResult<Self> {
        let fields: Vec<SortField> = argument_types
            .iter()
            .map(|t| SortField::new(t.clone()))
            .collect();
        if !RowConverter::supports_fields(&fields) {
            let types: Vec<String> = argument_types.iter().map(ToString::to_string).collect();
            return Err(DataFusionError::NotImplemented(format!(
                "{} over a changelog with arguments of type {}",
                function.fun().name().to_uppercase(),
                types.join(", ")
            )));
        }
        let converter = RowConverter::new(fields)?;
        let single = match argument_types {
            [only] => Some(only),
            _ => None,
        };
        let null_row = match single {
            Some(data_type) => {
                let nulls = converter.convert_columns(&[new_null_array(data_type, 1)])?;
                Some(nulls.row(0).data().into())
            }
            None => None,
        };
        let reading = match (single, function.get_minmax_desc()) {
            (Some(_), Some((_, true))) => Reading::Max,
            (Some(_), Some((_, false))) => Reading::Min,
            (Some(_), None) if function.is_distinct() && function.fun().name() == "count" => {
                Reading::DistinctCount
            }
            _ => Reading::Replay,
        };
        // A function DataFusion cannot build an accumulator for fails at CREATE, not on the
        // first row.
        function.create_accumulator()?;
        Ok(Self {
            function,
            converter,
            null_row,
            reading,
        })
    }

    /// A fresh accumulator for one group.
    pub(super) fn accumulator(self: &Arc<Self>) -> Box<dyn Accumulator> {
        Box::new(MultisetAccumulator {
            aggregate: Arc::clone(self),
            rows: BTreeMap::new(),
            row_bytes: 0,
        })
    }

    fn is_null(&self, row: &[u8]) -> bool {
        self.null_row.as_deref() == Some(row)
    }
}

/// One group's multiset of argument rows; see the module documentation.
#[derive(Debug)]
pub(super) struct MultisetAccumulator {
    aggregate: Arc<MultisetAggregate>,
    /// Encoded argument rows, ordered as their values, and how often each is held (never 0).
    rows: BTreeMap<Box<[u8]>, u64>,
    /// Bytes of the encoded rows held, for `size`.
    row_bytes: usize,
}

impl MultisetAccumulator {
    /// The result of the aggregate over just `row` (or over no row).
    fn over_one(&self, row: Option<&[u8]>) -> DfResult<ScalarValue> {
        let aggregate = &self.aggregate;
        let mut accumulator = aggregate.function.create_accumulator()?;
        if let Some(row) = row {
            let parser = aggregate.converter.parser();
            accumulator.update_batch(&aggregate.converter.convert_rows([parser.parse(row)])?)?;
        }
        accumulator.evaluate()
    }

    /// The result of the aggregate over every held row.
    fn replay(&self) -> DfResult<ScalarValue> {
        let aggregate = &self.aggregate;
        let mut accumulator = aggregate.function.create_accumulator()?;
        if self.rows.is_empty() {
            return accumulator.evaluate();
        }
        let parser = aggregate.converter.parser();
        let distinct_rows = aggregate
            .converter
            .convert_rows(self.rows.keys().map(|row| parser.parse(row)))?;
        // A DISTINCT aggregate keeps one of equal rows anyway.
        let columns =
            if aggregate.function.is_distinct() || self.rows.values().all(|&n| n == 1) {
                distinct_rows
            } else {
                let indices =
                    UInt64Array::from_iter_values(self.rows.values().enumerate().flat_map(
                        |(index, &count)| std::iter::repeat_n(index as u64, count as usize),
                    ));
                distinct_rows
                    .iter()
                    .map(|column| take(column.as_ref(), &indices, None))
                    .collect::<Result<Vec<ArrayRef>, _>>()?
            };
        accumulator.update_batch(&columns)?;
        accumulator.evaluate()
    }
}

impl Accumulator for MultisetAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        let rows = self.aggregate.converter.convert_columns(values)?;
        for row in &rows {
            if let Some(count) = self.rows.get_mut(row.data()) {
                *count += 1;
            } else {
                self.row_bytes += row.data().len();
                self.rows.insert(row.data().into(), 1);
            }
        }
        Ok(())
    }

    fn retract_batch(&mut self, values: &[ArrayRef]) -> DfResult<()> {
        let rows = self.aggregate.converter.convert_columns(values)?;
        for row in &rows {
            // A row never held has nothing to undo (the operator counts retractions of rows
            // its groups never received).
            let Some(count) = self.rows.get_mut(row.data()) else {
                continue;
            };
            *count -= 1;
            if *count == 0 {
                self.rows.remove(row.data());
                self.row_bytes -= row.data().len();
            }
        }
        Ok(())
    }

    fn evaluate(&mut self) -> DfResult<ScalarValue> {
        let aggregate = &self.aggregate;
        let mut values = self.rows.keys().map(AsRef::as_ref);
        match aggregate.reading {
            Reading::Min => self.over_one(values.find(|row| !aggregate.is_null(row))),
            Reading::Max => self.over_one(values.rev().find(|row| !aggregate.is_null(row))),
            Reading::DistinctCount => {
                let nulls = aggregate
                    .null_row
                    .as_ref()
                    .map_or(0, |null| usize::from(self.rows.contains_key(null)));
                Ok(ScalarValue::Int64(Some((self.rows.len() - nulls) as i64)))
            }
            Reading::Replay => self.replay(),
        }
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self.row_bytes
            + self.rows.len() * (std::mem::size_of::<Box<[u8]>>() + std::mem::size_of::<u64>())
    }

    /// The multiset: its encoded rows and their counts, as two one-row lists.
    fn state(&mut self) -> DfResult<Vec<ScalarValue>> {
        let rows = BinaryArray::from_iter_values(self.rows.keys());
        let counts = UInt64Array::from_iter_values(self.rows.values().copied());
        Ok(vec![
            ScalarValue::LargeList(Arc::new(single_row_list(Arc::new(rows)))),
            ScalarValue::LargeList(Arc::new(single_row_list(Arc::new(counts)))),
        ])
    }

    /// Adds the rows of each state (as [`Self::state`] wrote them) to the multiset.
    fn merge_batch(&mut self, states: &[ArrayRef]) -> DfResult<()> {
        let list = |index: usize| {
            states
                .get(index)
                .and_then(|s| s.as_any().downcast_ref::<LargeListArray>())
                .ok_or_else(|| {
                    DataFusionError::Internal(
                        "a multiset state is a list of rows and a list of counts".into(),
                    )
                })
        };
        let (rows, counts) = (list(0)?, list(1)?);
        for state in 0..rows.len().min(counts.len()) {
            let (row_values, count_values) = (rows.value(state), counts.value(state));
            let row_values = row_values.as_any().downcast_ref::<BinaryArray>();
            let count_values = count_values.as_any().downcast_ref::<UInt64Array>();
            let (Some(row_values), Some(count_values)) = (row_values, count_values) else {
                return Err(DataFusionError::Internal(
                    "a multiset state holds Binary rows and UInt64 counts".into(),
                ));
            };
            if row_values.len() != count_values.len() {
                return Err(DataFusionError::Internal(
                    "a multiset state has as many counts as rows".into(),
                ));
            }
            for (row, count) in row_values.iter().zip(count_values.iter()) {
                let (Some(row), Some(count)) = (row, count) else {
                    continue;
                };
                if count == 0 {
                    continue;
                }
                if let Some(held) = self.rows.get_mut(row) {
                    *held += count;
                } else {
                    self.row_bytes += row.len();
                    self.rows.insert(row.into(), count);
                }
            }
        }
        Ok(())
    }

    fn supports_retract_batch(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::compute::SortOptions;
    use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
    use datafusion::functions_aggregate::{
        array_agg::array_agg_udaf, count::count_udaf, first_last::first_value_udaf,
        min_max::max_udaf, min_max::min_udaf, string_agg::string_agg_udaf, sum::sum_udaf,
    };
    use datafusion::logical_expr::AggregateUDF;
    use datafusion::physical_expr::expressions::{col, lit};
    use datafusion::physical_expr::{PhysicalExpr, PhysicalSortExpr};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("x", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("ts", DataType::Int64, true),
        ]))
    }

    fn column(name: &str) -> Arc<dyn PhysicalExpr> {
        col(name, &schema()).expect("column exists")
    }

    /// The multiset aggregate of `udaf(args [ORDER BY ts [DESC]])`.
    fn aggregate(
        udaf: Arc<AggregateUDF>,
        args: Vec<Arc<dyn PhysicalExpr>>,
        order_by_ts: Option<bool>,
        distinct: bool,
    ) -> Arc<MultisetAggregate> {
        let order_by: Vec<PhysicalSortExpr> = order_by_ts
            .map(|descending| PhysicalSortExpr {
                expr: column("ts"),
                options: SortOptions {
                    descending,
                    nulls_first: false,
                },
            })
            .into_iter()
            .collect();
        let function = datafusion::physical_expr::aggregate::AggregateExprBuilder::new(udaf, args)
            .schema(schema())
            .order_by(order_by)
            .with_distinct(distinct)
            .alias("f")
            .build()
            .expect("aggregate builds");
        // As the operator does: arguments, then ordering columns.
        let types: Vec<DataType> = function
            .expressions()
            .iter()
            .chain(function.order_bys().iter().map(|sort| &sort.expr))
            .map(|e| e.data_type(&schema()).expect("typed"))
            .collect();
        Arc::new(MultisetAggregate::new(Arc::new(function), &types).expect("supported"))
    }

    fn ints(values: &[Option<i64>]) -> Vec<ArrayRef> {
        vec![Arc::new(Int64Array::from(values.to_vec()))]
    }

    fn value(accumulator: &mut Box<dyn Accumulator>) -> String {
        accumulator.evaluate().expect("evaluates").to_string()
    }

    #[test]
    fn retracting_the_minimum_reveals_the_next_and_duplicates_count() {
        let mut min = aggregate(min_udaf(), vec![column("x")], None, false).accumulator();
        let mut max = aggregate(max_udaf(), vec![column("x")], None, false).accumulator();
        for accumulator in [&mut min, &mut max] {
            accumulator
                .update_batch(&ints(&[Some(5), Some(1), Some(-9), Some(1), Some(12)]))
                .expect("update");
        }
        assert_eq!(
            (value(&mut min), value(&mut max)),
            ("-9".into(), "12".into())
        );
        for accumulator in [&mut min, &mut max] {
            accumulator
                .retract_batch(&ints(&[Some(-9), Some(1), Some(12)]))
                .expect("retract");
        }
        // One of the two 1s is still held.
        assert_eq!((value(&mut min), value(&mut max)), ("1".into(), "5".into()));
        min.retract_batch(&ints(&[Some(1)])).expect("retract");
        assert_eq!(value(&mut min), "5");
    }

    #[test]
    fn nulls_are_held_but_never_the_extreme_nor_counted() {
        let mut min = aggregate(min_udaf(), vec![column("x")], None, false).accumulator();
        let mut max = aggregate(max_udaf(), vec![column("x")], None, false).accumulator();
        let mut distinct = aggregate(count_udaf(), vec![column("x")], None, true).accumulator();
        let rows = ints(&[None, Some(4), None, Some(7), Some(4)]);
        for accumulator in [&mut min, &mut max, &mut distinct] {
            accumulator.update_batch(&rows).expect("update");
        }
        assert_eq!(value(&mut min), "4");
        assert_eq!(value(&mut max), "7");
        assert_eq!(value(&mut distinct), "2");
        let retracted = ints(&[Some(4), Some(7), Some(4)]);
        for accumulator in [&mut min, &mut max, &mut distinct] {
            accumulator.retract_batch(&retracted).expect("retract");
        }
        // Only NULLs are left.
        assert_eq!(value(&mut min), "NULL");
        assert_eq!(value(&mut max), "NULL");
        assert_eq!(value(&mut distinct), "0");
    }

    #[test]
    fn retracting_every_row_empties_the_multiset() {
        let sum = aggregate(sum_udaf(), vec![column("x")], None, false);
        let mut accumulator = sum.accumulator();
        let empty_size = accumulator.size();
        accumulator
            .update_batch(&ints(&[Some(3), Some(3), None, Some(4)]))
            .expect("update");
        assert!(accumulator.size() > empty_size);
        accumulator
            .retract_batch(&ints(&[Some(4), Some(3), None, Some(3)]))
            .expect("retract");
        assert_eq!(accumulator.size(), empty_size);
        assert_eq!(value(&mut accumulator), "NULL");
        // A row never held has nothing to undo.
        accumulator
            .retract_batch(&ints(&[Some(8)]))
            .expect("retract");
        accumulator.update_batch(&ints(&[Some(2)])).expect("update");
        assert_eq!(value(&mut accumulator), "2");
    }

    #[test]
    fn replay_repeats_duplicates_unless_distinct() {
        let mut sum = aggregate(sum_udaf(), vec![column("x")], None, false).accumulator();
        let mut distinct = aggregate(sum_udaf(), vec![column("x")], None, true).accumulator();
        let rows = ints(&[Some(2), Some(2), Some(3)]);
        for accumulator in [&mut sum, &mut distinct] {
            accumulator.update_batch(&rows).expect("update");
        }
        assert_eq!(
            (value(&mut sum), value(&mut distinct)),
            ("7".into(), "5".into())
        );
        for accumulator in [&mut sum, &mut distinct] {
            accumulator
                .retract_batch(&ints(&[Some(2)]))
                .expect("retract");
        }
        assert_eq!(
            (value(&mut sum), value(&mut distinct)),
            ("5".into(), "5".into())
        );
        for accumulator in [&mut sum, &mut distinct] {
            accumulator
                .retract_batch(&ints(&[Some(2)]))
                .expect("retract");
        }
        assert_eq!(
            (value(&mut sum), value(&mut distinct)),
            ("3".into(), "3".into())
        );
    }

    /// `s` and `ts` columns, as an aggregate ordered by `ts` receives them.
    fn by_ts(rows: &[(&str, i64)]) -> Vec<ArrayRef> {
        let s: StringArray = rows.iter().map(|(s, _)| Some(*s)).collect();
        let ts: Int64Array = rows.iter().map(|(_, ts)| Some(*ts)).collect();
        vec![Arc::new(s), Arc::new(ts)]
    }

    #[test]
    fn ordered_first_value_follows_retractions_ascending_and_descending() {
        let mut first =
            aggregate(first_value_udaf(), vec![column("s")], Some(false), false).accumulator();
        let mut latest =
            aggregate(first_value_udaf(), vec![column("s")], Some(true), false).accumulator();
        let rows = by_ts(&[("c", 2), ("a", 3), ("b", 1), ("d", 4)]);
        for accumulator in [&mut first, &mut latest] {
            accumulator.update_batch(&rows).expect("update");
        }
        assert_eq!(
            (value(&mut first), value(&mut latest)),
            ("b".into(), "d".into())
        );
        for accumulator in [&mut first, &mut latest] {
            accumulator
                .retract_batch(&by_ts(&[("b", 1), ("d", 4)]))
                .expect("retract");
        }
        assert_eq!(
            (value(&mut first), value(&mut latest)),
            ("c".into(), "a".into())
        );
    }

    /// `accumulator`'s state as the arrays a merge takes.
    fn state_arrays(accumulator: &mut Box<dyn Accumulator>) -> Vec<ArrayRef> {
        accumulator
            .state()
            .expect("state")
            .iter()
            .map(|value| value.to_array().expect("array"))
            .collect()
    }

    #[test]
    fn a_merged_state_keeps_every_copy_so_retractions_still_apply() {
        let min = aggregate(min_udaf(), vec![column("x")], None, false);
        let mut original = min.accumulator();
        original
            .update_batch(&ints(&[Some(5), Some(1), Some(1), None, Some(9)]))
            .expect("update");
        let mut other = min.accumulator();
        other
            .update_batch(&ints(&[Some(1), Some(0)]))
            .expect("update");
        let mut restored = min.accumulator();
        restored
            .merge_batch(&state_arrays(&mut original))
            .expect("merge");
        assert_eq!(restored.size(), original.size());
        // The state leaves the accumulator as it was.
        assert_eq!(
            (value(&mut original), value(&mut restored)),
            ("1".into(), "1".into())
        );
        restored
            .merge_batch(&state_arrays(&mut other))
            .expect("merge");
        assert_eq!(value(&mut restored), "0");
        // Three 1s are held now: two retractions leave one.
        restored
            .retract_batch(&ints(&[Some(0), Some(1), Some(1)]))
            .expect("retract");
        assert_eq!(value(&mut restored), "1");
        restored.retract_batch(&ints(&[Some(1)])).expect("retract");
        assert_eq!(value(&mut restored), "5");
    }

    #[test]
    fn string_and_array_agg_replay_the_held_rows() {
        let strings = |values: &[&str]| -> Vec<ArrayRef> {
            vec![
                Arc::new(values.iter().map(|v| Some(*v)).collect::<StringArray>()),
                Arc::new(StringArray::from(vec![","; values.len()])),
            ]
        };
        let mut joined =
            aggregate(string_agg_udaf(), vec![column("s"), lit(",")], None, false).accumulator();
        joined
            .update_batch(&strings(&["b", "a", "b"]))
            .expect("update");
        assert_eq!(value(&mut joined), "a,b,b");
        joined.retract_batch(&strings(&["b"])).expect("retract");
        assert_eq!(value(&mut joined), "a,b");

        let mut listed = aggregate(array_agg_udaf(), vec![column("x")], None, false).accumulator();
        listed
            .update_batch(&ints(&[Some(3), Some(1), Some(3)]))
            .expect("update");
        listed.retract_batch(&ints(&[Some(1)])).expect("retract");
        assert_eq!(value(&mut listed), "[3, 3]");
    }
}
