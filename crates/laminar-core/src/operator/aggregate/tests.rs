//! Snapshot and restore of the aggregate: a restored instance continues exactly as the live
//! one (changelog, retractions, windows with allowed lateness, keyed watermarks, a global
//! aggregate), over every kind of aggregate function; and a delta is as small as the
//! groups touched.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::row::SortField;
use datafusion::functions_aggregate::{
    approx_distinct::approx_distinct_udaf,
    array_agg::array_agg_udaf,
    average::avg_udaf,
    bool_and_or::{bool_and_udaf, bool_or_udaf},
    count::count_udaf,
    first_last::{first_value_udaf, last_value_udaf},
    median::median_udaf,
    min_max::{max_udaf, min_udaf},
    stddev::stddev_udaf,
    string_agg::string_agg_udaf,
    sum::sum_udaf,
    variance::var_pop_udaf,
};
use datafusion::physical_expr::expressions::{cast, col, lit};
use datafusion::physical_expr::{PhysicalExpr, PhysicalSortExpr};

use super::{AggregateCall, AggregateOperator, KeyedWatermark};
use crate::change_batch::ChangeBatch;
use crate::operator::test_support::{call, round_trip, Step};
use crate::operator::Operator;
use crate::state::{OperatorState, StateKind, StatePart};

fn input_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, false),
        Field::new("v", DataType::Int64, true),
        Field::new("s", DataType::Utf8, true),
        Field::new("b", DataType::Boolean, true),
        Field::new("ts", DataType::Int64, false),
        Field::new("end", DataType::Int64, false),
    ]))
}

fn column(name: &str) -> Arc<dyn PhysicalExpr> {
    col(name, &input_schema()).expect("column")
}

/// Rows `(k, v, ts, weight)`: `s` is `s<v>`, `b` whether `v` is even, `end` the end of the
/// one-second window of `ts`.
fn rows(rows: &[(&str, Option<i64>, i64, i64)]) -> Step {
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
fn inserts(values: &[(&str, i64, i64)]) -> Step {
    let rows_with_weights: Vec<_> = values
        .iter()
        .map(|&(k, v, ts)| (k, Some(v), ts, 1))
        .collect();
    rows(&rows_with_weights)
}

fn by_ts() -> Vec<PhysicalSortExpr> {
    vec![PhysicalSortExpr {
        expr: column("ts"),
        options: SortOptions::default(),
    }]
}

/// One call of every kind the engine runs: order-independent (retracted natively over a
/// changelog), extremes, order-sensitive, DISTINCT, sketches, lists and strings.
fn every_kind_of_call() -> Vec<AggregateCall> {
    let schema = input_schema();
    let v = || vec![column("v")];
    // As the planner coerces them: AVG, STDDEV and VAR take DOUBLE.
    let double = || vec![cast(column("v"), &schema, DataType::Float64).expect("cast to DOUBLE")];
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
    ]
}

fn count_and_sum() -> Vec<AggregateCall> {
    let schema = input_schema();
    vec![
        call(count_udaf(), vec![column("v")], vec![], false, &schema),
        call(sum_udaf(), vec![column("v")], vec![], false, &schema),
    ]
}

/// `SELECT <keys>, <calls> .. GROUP BY <keys>`.
fn aggregate(keys: &[&str], calls: Vec<AggregateCall>) -> AggregateOperator {
    let schema = input_schema();
    let mut fields: Vec<Field> = keys
        .iter()
        .map(|k| schema.field_with_name(k).expect("key").clone())
        .collect();
    let key_fields = fields
        .iter()
        .map(|f| SortField::new(f.data_type().clone()))
        .collect();
    fields.extend(calls.iter().map(|c| c.function.field().as_ref().clone()));
    let keys = keys.iter().map(|k| column(k)).collect();
    AggregateOperator::new(keys, calls, key_fields, Arc::new(Schema::new(fields)))
        .expect("aggregate")
}

/// The part `name` of `state`.
fn part<'a>(state: &'a OperatorState, name: &str) -> &'a StatePart {
    state
        .parts
        .iter()
        .find(|p| p.name == name)
        .expect("the part is written")
}

#[test]
fn a_changelog_aggregate_continues_after_restore_over_every_kind_of_call() {
    let prototype = aggregate(&["k"], every_kind_of_call());
    let a1 = [
        inserts(&[("a", 5, 100), ("b", 2, 110), ("a", 3, 120), ("c", 9, 130)]),
        rows(&[("a", None, 140, 1), ("b", Some(7), 150, 1)]),
    ];
    let a2 = [inserts(&[("a", 4, 200), ("d", 1, 210), ("a", 5, 220)])];
    let b = [
        inserts(&[("a", -2, 300), ("b", 2, 310), ("e", 8, 320)]),
        inserts(&[("c", 11, 400), ("a", 6, 410)]),
        Step::End,
    ];
    let snapshots = round_trip(&prototype, &a1, &a2, &b);
    assert_eq!(part(&snapshots.full, "groups").upsert_rows(), 3);
    assert_eq!(snapshots.delta.kind, StateKind::Delta);
    let groups = part(&snapshots.delta, "groups");
    assert_eq!(groups.upsert_rows(), 2, "the delta holds a and d");
    assert!(groups.deletes.is_empty());
}

#[test]
fn retractions_continue_after_restore_and_a_group_retracted_away_is_deleted() {
    let prototype = aggregate(&["k"], every_kind_of_call())
        .retracting(&input_schema())
        .expect("retractable");
    let a1 = [
        inserts(&[("a", 1, 100), ("a", 2, 110), ("a", 3, 120), ("b", 5, 130)]),
        inserts(&[("c", 7, 140), ("a", 2, 150)]),
    ];
    let a2 = [
        rows(&[("c", Some(7), 140, -1), ("a", Some(1), 100, -1)]),
        rows(&[("a", Some(4), 200, 1), ("d", Some(9), 210, 1)]),
    ];
    let b = [
        rows(&[("a", Some(2), 110, -1), ("a", Some(3), 120, -1)]),
        rows(&[
            ("b", Some(6), 300, 1),
            ("d", Some(9), 210, -1),
            ("c", Some(8), 310, 1),
        ]),
        // Of a group never received: nothing to undo, counted.
        rows(&[("z", Some(99), 320, -1)]),
        Step::End,
    ];
    let snapshots = round_trip(&prototype, &a1, &a2, &b);
    let groups = part(&snapshots.delta, "groups");
    assert_eq!(groups.upsert_rows(), 2, "the delta holds a and d");
    assert_eq!(groups.deletes.len(), 1, "c was retracted away");
}

#[test]
fn windows_with_allowed_lateness_continue_after_restore() {
    let prototype = aggregate(&["k", "end"], every_kind_of_call()).emit_on_window_close(1, 1_500);
    let a1 = [
        inserts(&[
            ("a", 1, 100),
            ("b", 2, 200),
            ("a", 3, 1_100),
            ("b", 4, 1_900),
        ]),
        Step::Watermark(1_000),
    ];
    let a2 = [
        // Late for window 1000, within its lateness: corrects the fired row.
        inserts(&[("a", 5, 500), ("c", 6, 2_100)]),
        Step::Watermark(2_600),
    ];
    let b = [
        // Window 2000 is corrected; window 1000 is past its lateness (late rows).
        inserts(&[("a", 7, 1_500), ("a", 8, 900), ("c", 9, 2_200)]),
        Step::Watermark(4_000),
        inserts(&[("d", 1, 4_100)]),
        Step::End,
    ];
    let snapshots = round_trip(&prototype, &a1, &a2, &b);
    let groups = part(&snapshots.delta, "groups");
    assert_eq!(
        groups.deletes.len(),
        2,
        "window 1000 of a and b expired at watermark 2600"
    );
}

#[test]
fn keyed_watermark_windows_continue_after_restore() {
    let spec = KeyedWatermark {
        event_time: column("ts"),
        key_positions: vec![0],
        delay_ms: 100,
    };
    let prototype = aggregate(&["k", "end"], count_and_sum())
        .emit_on_window_close(1, 0)
        .keyed_watermarks(spec)
        .expect("keyed");
    let a1 = [inserts(&[("a", 1, 100), ("a", 2, 1_200), ("b", 3, 300)])];
    let a2 = [inserts(&[("b", 4, 2_500), ("a", 5, 1_300), ("c", 6, 700)])];
    let b = [
        // a's watermark is 1200: its window 1000 closed, the row is late.
        inserts(&[("a", 7, 500), ("a", 8, 3_000), ("c", 9, 2_000)]),
        Step::End,
    ];
    let snapshots = round_trip(&prototype, &a1, &a2, &b);
    let keys = part(&snapshots.delta, "key_watermarks");
    assert_eq!(keys.upsert_rows(), 3, "a, b and c moved or appeared");
}

#[test]
fn a_global_aggregate_continues_after_restore() {
    let prototype = aggregate(&[], every_kind_of_call());
    let a1 = [inserts(&[("a", 1, 100), ("b", 2, 200)])];
    let a2 = [inserts(&[("c", 3, 300)])];
    let b = [inserts(&[("d", 4, 400)]), Step::End];
    round_trip(&prototype, &a1, &a2, &b);
}

/// Bytes of the upserted batches and deleted keys of `state`.
fn bytes(state: &OperatorState) -> usize {
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

#[test]
fn a_delta_after_touching_one_percent_of_the_groups_holds_only_those() {
    let mut operator = aggregate(&["k"], count_and_sum());
    let names: Vec<String> = (0..10_000).map(|g| format!("group-{g}")).collect();
    let all: Vec<(&str, i64, i64)> = names.iter().map(|n| (n.as_str(), 1, 0)).collect();
    let mut out = Vec::new();
    let Step::Rows(batch) = inserts(&all) else {
        unreachable!("inserts are rows")
    };
    operator.process(0, batch, &mut out).expect("process");
    let full = operator.snapshot(false).expect("snapshot").expect("state");
    assert_eq!(full.kind, StateKind::Full, "the first snapshot is full");
    assert_eq!(part(&full, "groups").upsert_rows(), 10_000);

    let touched: Vec<(&str, i64, i64)> = names
        .iter()
        .step_by(100)
        .map(|n| (n.as_str(), 2, 0))
        .collect();
    let Step::Rows(batch) = inserts(&touched) else {
        unreachable!("inserts are rows")
    };
    operator.process(0, batch, &mut out).expect("process");
    let delta = operator.snapshot(false).expect("snapshot").expect("state");
    assert_eq!(delta.kind, StateKind::Delta);
    assert_eq!(part(&delta, "groups").upsert_rows(), 100);
    let (full_bytes, delta_bytes) = (bytes(&full), bytes(&delta));
    assert!(
        delta_bytes * 50 < full_bytes,
        "the delta takes {delta_bytes} bytes, the full snapshot {full_bytes}"
    );
    // Nothing touched since: an empty delta.
    let idle = operator.snapshot(false).expect("snapshot").expect("state");
    assert_eq!(part(&idle, "groups").upsert_rows(), 0);
}

#[test]
fn restoring_a_part_the_aggregate_never_writes_fails_naming_it() {
    let prototype = aggregate(&["k"], count_and_sum());
    let mut live = prototype.fork();
    let mut out = Vec::new();
    let Step::Rows(batch) = inserts(&[("a", 1, 0)]) else {
        unreachable!("inserts are rows")
    };
    live.process(0, batch, &mut out).expect("process");
    let mut state = live.snapshot(true).expect("snapshot").expect("state");
    state.parts[0].name = "sessions".into();
    let parts = crate::state::merge_states(&[state]).expect("merge");
    let error = prototype.fork().restore(parts).expect_err("unknown part");
    assert!(error.to_string().contains("part `sessions`"), "{error}");
}
