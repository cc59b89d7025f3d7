//! Both join operators driven batch by batch. Inputs are rows `(k, v, ts)` (`v` may be NULL,
//! `ts` is epoch milliseconds); each output row reads `left | right ±weight`, a missing
//! side as `-`.

mod snapshot;

use std::sync::Arc;

use datafusion::arrow::array::{Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::row::SortField;
use datafusion::common::JoinType;
use datafusion::logical_expr::Operator as BinaryOperator;
use datafusion::physical_expr::expressions::{binary, col, Column};
use datafusion::physical_expr::PhysicalExpr;

use super::{IntervalJoinOperator, JoinSpec, RegularJoinOperator, TimeBound};
use crate::change_batch::ChangeBatch;
use crate::operator::Operator;
use crate::watermark::WATERMARK_END_MS;

fn input_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("v", DataType::Int64, true),
        Field::new("ts", DataType::Int64, false),
    ]))
}

fn output_schema(join_type: JoinType) -> SchemaRef {
    let fields = input_schema().fields().to_vec();
    let nullable = |fields: &[Arc<Field>]| -> Vec<Arc<Field>> {
        fields
            .iter()
            .map(|f| Arc::new(f.as_ref().clone().with_nullable(true)))
            .collect()
    };
    match join_type {
        JoinType::LeftSemi | JoinType::LeftAnti => input_schema(),
        _ => Arc::new(Schema::new(
            nullable(&fields)
                .into_iter()
                .chain(nullable(&fields))
                .collect::<Vec<_>>(),
        )),
    }
}

/// A join on `l.k = r.k`, with `l.v < r.v` as the residual condition when `filtered`.
fn spec(join_type: JoinType, filtered: bool) -> JoinSpec {
    let input = input_schema();
    let key = |schema: &SchemaRef| vec![col("k", schema).expect("column")];
    let filter = filtered.then(|| {
        let pair = Schema::new(
            input
                .fields()
                .iter()
                .chain(input.fields().iter())
                .cloned()
                .collect::<Vec<_>>(),
        );
        let left_v: Arc<dyn PhysicalExpr> = Arc::new(Column::new("v", 1));
        let right_v: Arc<dyn PhysicalExpr> = Arc::new(Column::new("v", 4));
        binary(left_v, BinaryOperator::Lt, right_v, &pair).expect("filter")
    });
    JoinSpec {
        join_type,
        keys: [key(&input), key(&input)],
        key_fields: vec![SortField::new(DataType::Int64)],
        nulls_equal: false,
        filter,
        inputs: [Arc::clone(&input), Arc::clone(&input)],
        schema: output_schema(join_type),
    }
}

/// Rows `(k, v, ts, weight)`; `None` for a NULL key or value.
fn rows(rows: &[(Option<i64>, Option<i64>, i64, i64)]) -> ChangeBatch {
    let batch = RecordBatch::try_new(
        input_schema(),
        vec![
            Arc::new(rows.iter().map(|r| r.0).collect::<Int64Array>()),
            Arc::new(rows.iter().map(|r| r.1).collect::<Int64Array>()),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .expect("batch");
    if rows.iter().all(|r| r.3 == 1) {
        ChangeBatch::insert_only(batch)
    } else {
        ChangeBatch::with_weights(
            batch,
            Int64Array::from_iter_values(rows.iter().map(|r| r.3)),
        )
    }
}

/// Inserted rows `(k, v, ts)`.
fn inserts(values: &[(i64, i64, i64)]) -> ChangeBatch {
    rows(
        &values
            .iter()
            .map(|&(k, v, ts)| (Some(k), Some(v), ts, 1))
            .collect::<Vec<_>>(),
    )
}

fn text(out: &[ChangeBatch]) -> Vec<String> {
    let mut lines = Vec::new();
    for change in out {
        let batch = change.batch();
        let cell = |column: usize, row: usize| {
            let values = batch
                .column(column)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("Int64 column");
            if values.is_null(row) {
                "-".to_string()
            } else {
                values.value(row).to_string()
            }
        };
        for row in 0..batch.num_rows() {
            let side = |first: usize| {
                let cells: Vec<String> = (first..first + 3).map(|c| cell(c, row)).collect();
                cells.join(" ")
            };
            let weight = change.weights().map_or(1, |w| w.value(row));
            if batch.num_columns() == 6 {
                lines.push(format!("{} | {} {weight:+}", side(0), side(3)));
            } else {
                lines.push(format!("{} {weight:+}", side(0)));
            }
        }
    }
    lines
}

fn process(join: &mut dyn Operator, port: usize, input: ChangeBatch) -> Vec<String> {
    let mut out = Vec::new();
    join.process(port, input, &mut out).expect("process");
    text(&out)
}

fn watermark(join: &mut dyn Operator, watermark_ms: i64) -> Vec<String> {
    let mut out = Vec::new();
    join.on_watermark(watermark_ms, &mut out)
        .expect("watermark");
    text(&out)
}

#[test]
fn an_inner_join_multiplies_weights_and_retracts_matches() {
    let mut join = RegularJoinOperator::new(spec(JoinType::Inner, false), true).expect("join");
    assert!(process(&mut join, 0, inserts(&[(1, 10, 0), (2, 20, 0)])).is_empty());
    // Two copies of the same right row: the pair's weight is 2.
    assert_eq!(
        process(
            &mut join,
            1,
            rows(&[(Some(1), Some(5), 0, 2), (Some(3), Some(7), 0, 1)])
        ),
        ["1 10 0 | 1 5 0 +2"]
    );
    assert_eq!(
        process(&mut join, 0, rows(&[(Some(1), Some(10), 0, -1)])),
        ["1 10 0 | 1 5 0 -2"]
    );
    // A retraction of a row never inserted is ignored.
    assert!(process(&mut join, 0, rows(&[(Some(1), Some(99), 0, -1)])).is_empty());
    // Left (2), right (1, twice) and (3) remain.
    assert_eq!(join.state_entries(), 3);
}

#[test]
fn a_left_join_emits_the_padded_row_until_the_first_match_and_after_the_last() {
    let mut join = RegularJoinOperator::new(spec(JoinType::Left, true), false).expect("join");
    assert_eq!(
        process(&mut join, 0, inserts(&[(1, 10, 0)])),
        ["1 10 0 | - - - +1"]
    );
    // v 5 fails l.v < r.v: still unmatched.
    assert!(process(&mut join, 1, inserts(&[(1, 5, 0)])).is_empty());
    assert_eq!(
        process(&mut join, 1, inserts(&[(1, 15, 1), (1, 20, 2)])),
        [
            "1 10 0 | 1 15 1 +1",
            "1 10 0 | - - - -1",
            "1 10 0 | 1 20 2 +1"
        ]
    );
    assert_eq!(
        process(&mut join, 1, rows(&[(Some(1), Some(15), 1, -1)])),
        ["1 10 0 | 1 15 1 -1"]
    );
    assert_eq!(
        process(&mut join, 1, rows(&[(Some(1), Some(20), 2, -1)])),
        ["1 10 0 | 1 20 2 -1", "1 10 0 | - - - +1"]
    );
    // A NULL key matches nothing, not even another NULL key.
    assert_eq!(
        process(&mut join, 0, rows(&[(None, Some(1), 0, 1)])),
        ["- 1 0 | - - - +1"]
    );
    assert!(process(&mut join, 1, rows(&[(None, Some(9), 0, 1)])).is_empty());
}

#[test]
fn a_full_join_pads_both_sides() {
    let mut join = RegularJoinOperator::new(spec(JoinType::Full, false), false).expect("join");
    assert_eq!(
        process(&mut join, 1, inserts(&[(1, 5, 0), (2, 6, 0)])),
        ["- - - | 1 5 0 +1", "- - - | 2 6 0 +1"]
    );
    assert_eq!(
        process(&mut join, 0, inserts(&[(1, 10, 0), (1, 11, 0)])),
        ["1 10 0 | 1 5 0 +1", "- - - | 1 5 0 -1", "1 11 0 | 1 5 0 +1",]
    );
}

#[test]
fn semi_and_anti_joins_emit_left_rows_while_matched_or_unmatched() {
    // Over inputs with retractions a semi join's rows are retracted too.
    let mut semi = RegularJoinOperator::new(spec(JoinType::LeftSemi, false), true).expect("join");
    let mut anti = RegularJoinOperator::new(spec(JoinType::LeftAnti, false), false).expect("join");
    assert!(process(&mut semi, 0, inserts(&[(1, 10, 0)])).is_empty());
    assert_eq!(process(&mut anti, 0, inserts(&[(1, 10, 0)])), ["1 10 0 +1"]);
    // A second match changes nothing: the row is in (or out) already.
    let right = || rows(&[(Some(1), Some(5), 0, 1), (Some(1), Some(6), 0, 1)]);
    assert_eq!(process(&mut semi, 1, right()), ["1 10 0 +1"]);
    assert_eq!(process(&mut anti, 1, right()), ["1 10 0 -1"]);
    let gone = || rows(&[(Some(1), Some(5), 0, -1), (Some(1), Some(6), 0, -1)]);
    assert_eq!(process(&mut semi, 1, gone()), ["1 10 0 -1"]);
    assert_eq!(process(&mut anti, 1, gone()), ["1 10 0 +1"]);
}

/// `r.ts BETWEEN l.ts - 10 AND l.ts + 20` (milliseconds), keyed by `k`.
fn interval(join_type: JoinType) -> IntervalJoinOperator {
    let mut spec = spec(join_type, false);
    let pair = spec.inputs[0]
        .fields()
        .iter()
        .chain(spec.inputs[1].fields().iter())
        .cloned()
        .collect::<Vec<_>>();
    let pair = Schema::new(pair);
    let left_ts: Arc<dyn PhysicalExpr> = Arc::new(Column::new("ts", 2));
    let right_ts: Arc<dyn PhysicalExpr> = Arc::new(Column::new("ts", 5));
    let literal = |v: i64| -> Arc<dyn PhysicalExpr> {
        datafusion::physical_expr::expressions::lit(datafusion::common::ScalarValue::Int64(Some(v)))
    };
    let low = binary(
        Arc::clone(&right_ts),
        BinaryOperator::GtEq,
        binary(
            Arc::clone(&left_ts),
            BinaryOperator::Minus,
            literal(10),
            &pair,
        )
        .expect("low"),
        &pair,
    )
    .expect("low");
    let high = binary(
        right_ts,
        BinaryOperator::LtEq,
        binary(left_ts, BinaryOperator::Plus, literal(20), &pair).expect("high"),
        &pair,
    )
    .expect("high");
    spec.filter = Some(binary(low, BinaryOperator::And, high, &pair).expect("filter"));
    let bound = TimeBound {
        columns: [2, 2],
        low_ms: -10,
        high_ms: 20,
        window: false,
    };
    IntervalJoinOperator::new(spec, bound).expect("join")
}

#[test]
fn an_interval_join_expires_rows_out_of_reach_of_the_watermark() {
    let mut join = interval(JoinType::Inner);
    assert!(process(&mut join, 0, inserts(&[(1, 1, 100), (1, 2, 200)])).is_empty());
    assert_eq!(
        process(
            &mut join,
            1,
            inserts(&[(1, 7, 95), (1, 8, 121), (2, 9, 100)])
        ),
        ["1 1 100 | 1 7 95 +1"]
    );
    assert_eq!(join.state_entries(), 5);
    // Left 100 can match right rows up to 120, right rows at 95 and 100 left rows up to 105
    // and 110: they go once the watermark passes those times; left 200 and right 121 stay.
    assert!(watermark(&mut join, 121).is_empty());
    assert_eq!(join.state_entries(), 2);
    assert_eq!(
        process(&mut join, 0, inserts(&[(1, 3, 125)])),
        ["1 3 125 | 1 8 121 +1"]
    );
    // The output watermark is held back by the bound, so the pairs are never late.
    assert_eq!(join.output_watermark(1_000), 980);
    assert_eq!(join.output_watermark(WATERMARK_END_MS), WATERMARK_END_MS);
    assert!(watermark(&mut join, WATERMARK_END_MS).is_empty());
    assert_eq!(join.state_entries(), 0);
}

#[test]
fn an_outer_interval_join_emits_each_unmatched_row_once_when_the_watermark_passes() {
    let mut join = interval(JoinType::Full);
    assert!(process(&mut join, 0, inserts(&[(1, 1, 100), (2, 2, 100)])).is_empty());
    assert_eq!(
        process(&mut join, 1, inserts(&[(1, 7, 105), (3, 8, 100)])),
        ["1 1 100 | 1 7 105 +1"]
    );
    assert!(watermark(&mut join, 110).is_empty());
    // Left rows reach 120: left 2 is emitted alone; right 3 (reach 110) at 111.
    assert_eq!(
        watermark(&mut join, 121),
        ["2 2 100 | - - - +1", "- - - | 3 8 100 +1"]
    );
    assert_eq!(join.state_entries(), 0);
    // Left 1 matched, so it never appears alone. A row behind the watermark is late.
    assert!(process(&mut join, 0, inserts(&[(5, 5, 120)])).is_empty());
    assert_eq!(join.late_rows(), 1);
    assert_eq!(join.state_entries(), 0);
}

#[test]
fn interval_semi_and_anti_joins_emit_each_left_row_once() {
    let mut semi = interval(JoinType::LeftSemi);
    let mut anti = interval(JoinType::LeftAnti);
    let left = || inserts(&[(1, 1, 100), (2, 2, 100)]);
    assert!(process(&mut semi, 0, left()).is_empty());
    assert!(process(&mut anti, 0, left()).is_empty());
    let right = || inserts(&[(1, 7, 105), (1, 8, 106)]);
    assert_eq!(process(&mut semi, 1, right()), ["1 1 100 +1"]);
    assert!(process(&mut anti, 1, right()).is_empty());
    assert!(watermark(&mut semi, WATERMARK_END_MS).is_empty());
    assert_eq!(watermark(&mut anti, WATERMARK_END_MS), ["2 2 100 +1"]);
}

#[test]
fn state_ttl_forgets_keys_idle_for_the_ttl_and_keeps_recent_ones() {
    let ttl = std::time::Duration::from_secs(10);
    let mut join = RegularJoinOperator::new(spec(JoinType::Inner, false), false)
        .expect("join")
        .with_state_ttl(ttl);
    let start = std::time::Instant::now();
    let at = |secs: u64| start + std::time::Duration::from_secs(secs);
    let mut out = Vec::new();
    join.process_at(0, &inserts(&[(1, 10, 0), (2, 20, 0)]), &mut out, at(0))
        .expect("process");
    // Key 2 is read (a right row probes it) and written at 6 s; key 1 is left alone.
    join.process_at(1, &inserts(&[(2, 5, 0)]), &mut out, at(6))
        .expect("process");
    assert_eq!(text(&out), ["2 20 0 | 2 5 0 +1"]);
    assert_eq!(join.state_entries(), 3);
    // Nothing is idle for 10 s yet.
    join.expire(at(9));
    assert_eq!(join.state_entries(), 3);
    // Key 1 is: its row goes, silently; key 2's rows (both inputs) stay.
    join.expire(at(12));
    assert_eq!(join.state_entries(), 2);
    let mut out = Vec::new();
    join.process_at(1, &inserts(&[(1, 7, 0), (2, 8, 0)]), &mut out, at(13))
        .expect("process");
    assert_eq!(
        text(&out),
        ["2 20 0 | 2 8 0 +1"],
        "key 1's left row was forgotten"
    );
    // Key 1 now holds its new right row; key 2 was touched at 13 s: all stay until 23 s.
    join.expire(at(22));
    assert_eq!(join.state_entries(), 4);
    join.expire(at(23));
    assert_eq!(join.state_entries(), 0);
    assert!(join.describe().contains("state_ttl 10000ms"));
}
