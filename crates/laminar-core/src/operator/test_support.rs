//! What the operators' snapshot tests share: a scripted input of batches, watermarks and
//! the end; output as sorted text rows; aggregate calls built as the planner builds them;
//! and the round trip that checks a restored operator continues exactly as the live one.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::functions_aggregate::{
    any_value::any_value_udaf,
    approx_distinct::approx_distinct_udaf,
    approx_median::approx_median_udaf,
    approx_percentile_cont::approx_percentile_cont_udaf,
    array_agg::array_agg_udaf,
    average::avg_udaf,
    bit_and_or_xor::{bit_and_udaf, bit_xor_udaf},
    bool_and_or::{bool_and_udaf, bool_or_udaf},
    correlation::corr_udaf,
    count::count_udaf,
    covariance::covar_pop_udaf,
    first_last::{first_value_udaf, last_value_udaf},
    median::median_udaf,
    min_max::{max_udaf, min_udaf},
    nth_value::nth_value_udaf,
    stddev::stddev_udaf,
    string_agg::string_agg_udaf,
    sum::sum_udaf,
    variance::var_pop_udaf,
};
use datafusion::logical_expr::AggregateUDF;
use datafusion::physical_expr::aggregate::AggregateExprBuilder;
use datafusion::physical_expr::expressions::{cast, col, lit};
use datafusion::physical_expr::{PhysicalExpr, PhysicalSortExpr};

use super::{AggregateCall, Operator};
use crate::change_batch::ChangeBatch;
use crate::state::{merge_states, OperatorState, StateKind, StatePart};
use crate::watermark::WATERMARK_END_MS;

/// One message of a scripted input.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    Rows(ChangeBatch),
    Watermark(i64),
    /// A tick of the operator's processing-time timer.
    Timer,
    /// The final watermark, then the end of input.
    End,
}

/// The rows of `out`, one line each (`col col .. ±weight`), sorted.
pub(crate) fn render(out: &[ChangeBatch]) -> Vec<String> {
    let mut lines = Vec::new();
    for change in out {
        let batch = change.batch();
        for row in 0..batch.num_rows() {
            let mut line: Vec<String> = batch
                .columns()
                .iter()
                .map(|c| array_value_to_string(c.as_ref(), row).expect("printable"))
                .collect();
            let weight = change.weights().map_or(1, |w| w.value(row));
            line.push(format!("{weight:+}"));
            lines.push(line.join(" "));
        }
    }
    lines.sort();
    lines
}

/// Feeds `steps` to `operator` and returns its output, rendered.
pub(crate) fn run(operator: &mut dyn Operator, steps: &[Step]) -> Vec<String> {
    let mut out = Vec::new();
    for step in steps {
        match step {
            Step::Rows(batch) => operator.process(0, batch.clone(), &mut out),
            Step::Watermark(ms) => operator.on_watermark(*ms, &mut out),
            Step::Timer => operator.on_timer(&mut out),
            Step::End => operator
                .on_watermark(WATERMARK_END_MS, &mut out)
                .and_then(|()| operator.on_end(&mut out)),
        }
        .expect("the operator accepts the step");
    }
    render(&out)
}

/// `prototype.fork()` restored from the merge of `chain`.
pub(crate) fn restored(prototype: &dyn Operator, chain: &[OperatorState]) -> Box<dyn Operator> {
    let mut operator = prototype.fork();
    operator
        .restore(merge_states(chain).expect("states merge"))
        .expect("the operator restores");
    operator
}

/// The snapshots [`round_trip`] took.
pub(crate) struct Snapshots {
    pub(crate) full: OperatorState,
    pub(crate) delta: OperatorState,
}

/// Runs `a1`, takes a full snapshot, runs `a2`, takes a delta; then checks, feeding the rest:
/// - an instance restored from the full snapshot and fed `a2` then `b`, and one restored from
///   the full snapshot and the delta and fed `b`, emit exactly what the live instance does;
/// - the live instance emits what an instance never snapshotted does (taking a snapshot does
///   not change the answer);
/// - restored instances hold as many entries and late rows as the live one.
///
/// `b` must produce output, so the comparison says something.
pub(crate) fn round_trip(
    prototype: &dyn Operator,
    a1: &[Step],
    a2: &[Step],
    b: &[Step],
) -> Snapshots {
    let mut live = prototype.fork();
    let mut reference = prototype.fork();
    assert_eq!(run(live.as_mut(), a1), run(reference.as_mut(), a1));
    let full = live
        .snapshot(true)
        .expect("snapshot")
        .expect("the operator keeps state");
    assert_eq!(full.kind, StateKind::Full);
    let mut from_full = restored(prototype, std::slice::from_ref(&full));
    assert_eq!(from_full.state_entries(), live.state_entries());

    let live_a2 = run(live.as_mut(), a2);
    assert_eq!(
        live_a2,
        run(reference.as_mut(), a2),
        "a snapshot changed the output"
    );
    assert_eq!(
        run(from_full.as_mut(), a2),
        live_a2,
        "restored from the full snapshot"
    );
    let delta = live
        .snapshot(false)
        .expect("snapshot")
        .expect("the operator keeps state");
    let mut from_chain = restored(prototype, &[full.clone(), delta.clone()]);
    assert_eq!(from_chain.state_entries(), live.state_entries());
    assert_eq!(from_chain.late_rows(), live.late_rows());

    let live_b = run(live.as_mut(), b);
    assert!(!live_b.is_empty(), "part B must produce output to compare");
    assert_eq!(
        live_b,
        run(reference.as_mut(), b),
        "a snapshot changed the output"
    );
    assert_eq!(
        run(from_full.as_mut(), b),
        live_b,
        "restored from the full snapshot"
    );
    assert_eq!(
        run(from_chain.as_mut(), b),
        live_b,
        "restored from full + delta"
    );
    assert_eq!(from_chain.late_rows(), live.late_rows());
    Snapshots { full, delta }
}

/// The aggregate call `udaf(args)` over rows of `schema`, as the planner builds it.
pub(crate) fn call(
    udaf: Arc<AggregateUDF>,
    args: Vec<Arc<dyn PhysicalExpr>>,
    order_by: Vec<PhysicalSortExpr>,
    distinct: bool,
    schema: &SchemaRef,
) -> AggregateCall {
    let name = format!("{}_{}", udaf.name(), args.len());
    let function = AggregateExprBuilder::new(udaf, args)
        .schema(Arc::clone(schema))
        .order_by(order_by)
        .with_distinct(distinct)
        .alias(name)
        .build()
        .expect("aggregate builds");
    AggregateCall {
        function: Arc::new(function),
        filter: None,
    }
}

/// The part `name` of `state`.
pub(crate) fn part<'a>(state: &'a OperatorState, name: &str) -> &'a StatePart {
    state
        .parts
        .iter()
        .find(|p| p.name == name)
        .expect("the part is written")
}

/// Bytes of the upserted batches and deleted keys of `state`.
pub(crate) fn bytes(state: &OperatorState) -> usize {
    state
        .parts
        .iter()
        .map(|p| {
            let upserts: usize = p
                .upserts
                .iter()
                .map(RecordBatch::get_array_memory_size)
                .sum();
            upserts + p.deletes.iter().map(Vec::len).sum::<usize>()
        })
        .sum()
}

// The test input of the aggregate operators: rows `(k, v, s, b, ts, end)`.

pub(crate) fn input_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, false),
        Field::new("v", DataType::Int64, true),
        Field::new("s", DataType::Utf8, true),
        Field::new("b", DataType::Boolean, true),
        Field::new("ts", DataType::Int64, false),
        Field::new("end", DataType::Int64, false),
    ]))
}

pub(crate) fn column(name: &str) -> Arc<dyn PhysicalExpr> {
    col(name, &input_schema()).expect("column")
}

/// Rows `(k, v, ts, weight)`: `s` is `s<v>`, `b` whether `v` is even, `end` the end of the
/// one-second window of `ts`.
pub(crate) fn rows(rows: &[(&str, Option<i64>, i64, i64)]) -> Step {
    let keys: ArrayRef = Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0)));
    let values: ArrayRef = Arc::new(rows.iter().map(|r| r.1).collect::<Int64Array>());
    let strings: ArrayRef = Arc::new(
        rows.iter()
            .map(|r| r.1.map(|v| format!("s{v}")))
            .collect::<StringArray>(),
    );
    let even: ArrayRef = Arc::new(
        rows.iter()
            .map(|r| r.1.map(|v| v % 2 == 0))
            .collect::<BooleanArray>(),
    );
    let times: ArrayRef = Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2)));
    let ends: ArrayRef = Arc::new(Int64Array::from_iter_values(
        rows.iter().map(|r| (r.2.div_euclid(1000) + 1) * 1000),
    ));
    let batch = RecordBatch::try_new(
        input_schema(),
        vec![keys, values, strings, even, times, ends],
    )
    .expect("batch");
    if rows.iter().all(|r| r.3 == 1) {
        Step::Rows(ChangeBatch::insert_only(batch))
    } else {
        let weights = Int64Array::from_iter_values(rows.iter().map(|r| r.3));
        Step::Rows(ChangeBatch::with_weights(batch, weights))
    }
}

/// Inserted rows `(k, v, ts)`.
pub(crate) fn inserts(values: &[(&str, i64, i64)]) -> Step {
    let rows_with_weights: Vec<_> = values
        .iter()
        .map(|&(k, v, ts)| (k, Some(v), ts, 1))
        .collect();
    rows(&rows_with_weights)
}

pub(crate) fn by_ts() -> Vec<PhysicalSortExpr> {
    vec![PhysicalSortExpr {
        expr: column("ts"),
        options: SortOptions::default(),
    }]
}

/// One call of every kind the engine runs: order-independent (retracted natively over a
/// changelog), extremes, order-sensitive, DISTINCT, sketches, lists and strings.
pub(crate) fn every_kind_of_call() -> Vec<AggregateCall> {
    let schema = input_schema();
    let v = || vec![column("v")];
    // As the planner coerces them: AVG, STDDEV and VAR take DOUBLE.
    let double = || vec![cast(column("v"), &schema, DataType::Float64).expect("cast to DOUBLE")];
    let ts_double = || cast(column("ts"), &schema, DataType::Float64).expect("cast to DOUBLE");
    vec![
        call(count_udaf(), v(), vec![], false, &schema),
        call(sum_udaf(), v(), vec![], false, &schema),
        call(avg_udaf(), double(), vec![], false, &schema),
        call(min_udaf(), v(), vec![], false, &schema),
        call(max_udaf(), v(), vec![], false, &schema),
        call(stddev_udaf(), double(), vec![], false, &schema),
        call(var_pop_udaf(), double(), vec![], false, &schema),
        call(approx_distinct_udaf(), v(), vec![], false, &schema),
        call(first_value_udaf(), v(), by_ts(), false, &schema),
        call(
            last_value_udaf(),
            vec![column("s")],
            by_ts(),
            false,
            &schema,
        ),
        call(array_agg_udaf(), v(), vec![], false, &schema),
        call(array_agg_udaf(), v(), by_ts(), false, &schema),
        call(bool_and_udaf(), vec![column("b")], vec![], false, &schema),
        call(bool_or_udaf(), vec![column("b")], vec![], false, &schema),
        call(count_udaf(), v(), vec![], true, &schema),
        call(sum_udaf(), v(), vec![], true, &schema),
        call(
            string_agg_udaf(),
            vec![column("s"), lit(",")],
            vec![],
            false,
            &schema,
        ),
        call(median_udaf(), v(), vec![], false, &schema),
        call(any_value_udaf(), v(), vec![], false, &schema),
        call(approx_median_udaf(), double(), vec![], false, &schema),
        call(
            approx_percentile_cont_udaf(),
            vec![double()[0].clone(), lit(0.5_f64)],
            vec![],
            false,
            &schema,
        ),
        call(bit_and_udaf(), v(), vec![], false, &schema),
        call(bit_xor_udaf(), v(), vec![], false, &schema),
        call(
            corr_udaf(),
            vec![double()[0].clone(), ts_double()],
            vec![],
            false,
            &schema,
        ),
        call(
            covar_pop_udaf(),
            vec![double()[0].clone(), ts_double()],
            vec![],
            false,
            &schema,
        ),
        call(
            nth_value_udaf(),
            vec![column("v"), lit(2_i64)],
            by_ts(),
            false,
            &schema,
        ),
    ]
}

pub(crate) fn count_and_sum() -> Vec<AggregateCall> {
    let schema = input_schema();
    vec![
        call(count_udaf(), vec![column("v")], vec![], false, &schema),
        call(sum_udaf(), vec![column("v")], vec![], false, &schema),
    ]
}

/// `id -> value` per output row of `out`: the BIGINT id in column 0 and the DOUBLE value in
/// column `value` (`NULL` when unmatched), as the lookup joins' tests read their output.
pub(crate) fn id_to_value(out: &[crate::change_batch::ChangeBatch], value: usize) -> Vec<String> {
    use datafusion::arrow::array::{Array, Float64Array};
    let mut lines = Vec::new();
    for change in out {
        let batch = change.batch();
        let ids = batch.column(0).as_any().downcast_ref::<Int64Array>();
        let values = batch.column(value).as_any().downcast_ref::<Float64Array>();
        let (Some(ids), Some(values)) = (ids, values) else {
            return vec!["unexpected columns".into()];
        };
        for row in 0..batch.num_rows() {
            let shown = if values.is_null(row) {
                "NULL".to_string()
            } else {
                values.value(row).to_string()
            };
            lines.push(format!("{} -> {shown}", ids.value(row)));
        }
    }
    lines
}
