//! The ASOF join driven batch by batch. Left rows are `(k, ts, id)`, right rows
//! `(k, ts, price)`, times BIGINT milliseconds; each output row reads
//! `id@ts -> price@ts` (`-> NULL` when unmatched), with `-` before a retraction.

mod snapshot;

use std::sync::Arc;

use datafusion::arrow::array::{Array, Int64Array, RecordBatch, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::physical_expr::expressions::col;

use super::{AsofDirection, AsofJoinOperator, AsofJoinSide, AsofJoinSpec};
use crate::change_batch::ChangeBatch;
use crate::operator::Operator;
use crate::watermark::WATERMARK_END_MS;

fn side_schema(value: &str, time: DataType) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("ts", time, true),
        Field::new(value, DataType::Int64, true),
    ]))
}

fn output_schema(left: &SchemaRef, right: &SchemaRef) -> SchemaRef {
    let fields: Vec<_> = left
        .fields()
        .iter()
        .chain(right.fields().iter())
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    Arc::new(Schema::new(fields))
}

fn side(schema: &SchemaRef, keyed: bool) -> AsofJoinSide {
    AsofJoinSide {
        keys: if keyed {
            vec![col("k", schema).expect("k")]
        } else {
            Vec::new()
        },
        time: col("ts", schema).expect("ts"),
        schema: Arc::clone(schema),
    }
}

fn spec(direction: AsofDirection) -> AsofJoinSpec {
    AsofJoinSpec {
        direction,
        inclusive: true,
        tolerance_ms: None,
        outer: false,
        early: false,
        versioned_right: false,
    }
}

fn join(spec: AsofJoinSpec) -> AsofJoinOperator {
    let left = side_schema("id", DataType::Int64);
    let right = side_schema("price", DataType::Int64);
    let schema = output_schema(&left, &right);
    AsofJoinOperator::new(side(&left, true), side(&right, true), spec, schema).expect("join")
}

/// Rows `(k, ts, value)`; `None` is NULL.
fn rows(schema: &SchemaRef, rows: &[(Option<i64>, Option<i64>, i64)]) -> ChangeBatch {
    let batch = RecordBatch::try_new(
        Arc::clone(schema),
        vec![
            Arc::new(rows.iter().map(|r| r.0).collect::<Int64Array>()),
            Arc::new(rows.iter().map(|r| r.1).collect::<Int64Array>()),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ],
    )
    .expect("batch");
    ChangeBatch::insert_only(batch)
}

fn left(join: &mut AsofJoinOperator, input: &[(i64, i64, i64)]) -> Vec<String> {
    let input: Vec<_> = input.iter().map(|r| (Some(r.0), Some(r.1), r.2)).collect();
    let schema = side_schema("id", DataType::Int64);
    let mut out = Vec::new();
    join.process(0, rows(&schema, &input), &mut out)
        .expect("left");
    text(&out)
}

fn right(join: &mut AsofJoinOperator, input: &[(i64, i64, i64)]) -> Vec<String> {
    let input: Vec<_> = input.iter().map(|r| (Some(r.0), Some(r.1), r.2)).collect();
    let schema = side_schema("price", DataType::Int64);
    let mut out = Vec::new();
    join.process(1, rows(&schema, &input), &mut out)
        .expect("right");
    text(&out)
}

fn watermark(join: &mut AsofJoinOperator, ms: i64) -> Vec<String> {
    let mut out = Vec::new();
    join.on_watermark(ms, &mut out).expect("watermark");
    text(&out)
}

fn text(out: &[ChangeBatch]) -> Vec<String> {
    let mut lines = Vec::new();
    for change in out {
        let batch = change.batch();
        let value = |column: usize, row: usize| {
            let array = batch
                .column(column)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("Int64 column");
            (!array.is_null(row)).then(|| array.value(row))
        };
        for row in 0..batch.num_rows() {
            let sign = match change.weights().map(|w| w.value(row)) {
                Some(-1) => "-",
                _ => "",
            };
            let id = value(2, row).unwrap_or_default();
            let ts = value(1, row).unwrap_or_default();
            let matched = match (value(5, row), value(4, row)) {
                (Some(price), Some(at)) => format!("{price}@{at}"),
                _ => "NULL".to_string(),
            };
            lines.push(format!("{sign}{id}@{ts} -> {matched}"));
        }
    }
    lines.sort();
    lines
}

#[test]
fn backward_emits_each_left_row_once_the_watermark_passes_it() {
    let mut join = join(spec(AsofDirection::Backward));
    assert!(right(&mut join, &[(1, 10, 100), (1, 20, 200), (2, 12, 900)]).is_empty());
    // Out of order: left rows arrive before and after their time's right rows.
    assert!(left(&mut join, &[(1, 15, 1), (1, 20, 2), (1, 5, 3), (2, 30, 4)]).is_empty());
    assert_eq!(watermark(&mut join, 16), ["1@15 -> 100@10"]);
    // A right row at 18 arrives in time, yet the row at 20 has an exact match.
    assert!(right(&mut join, &[(1, 18, 180)]).is_empty());
    assert_eq!(watermark(&mut join, 21), ["2@20 -> 200@20"]);
    assert_eq!(watermark(&mut join, 31), ["4@30 -> 900@12"]);
    assert_eq!(join.late_rows(), 0);
}

#[test]
fn strict_backward_skips_a_right_row_at_the_same_time() {
    let mut join = join(AsofJoinSpec {
        inclusive: false,
        ..spec(AsofDirection::Backward)
    });
    right(&mut join, &[(1, 10, 100), (1, 20, 200)]);
    left(&mut join, &[(1, 20, 1)]);
    // The row at 20 can only match rows before 20: at watermark 20 that is settled.
    assert_eq!(watermark(&mut join, 20), ["1@20 -> 100@10"]);
}

#[test]
fn forward_waits_for_the_first_right_row_at_or_after_the_left_row() {
    let mut join = join(spec(AsofDirection::Forward));
    left(&mut join, &[(1, 15, 1), (1, 25, 2)]);
    right(&mut join, &[(1, 20, 200)]);
    // A row between 15 and 20 could still come.
    assert!(watermark(&mut join, 19).is_empty());
    assert_eq!(
        join.output_watermark(19),
        15,
        "the waiting row holds the watermark"
    );
    assert_eq!(watermark(&mut join, 21), ["1@15 -> 200@20"]);
    assert_eq!(join.output_watermark(21), 21);
    // Strictly, `<` would also have waited; the row at 25 has no match yet.
    assert!(watermark(&mut join, 40).is_empty());
    assert_eq!(join.output_watermark(40), 25);
    right(&mut join, &[(1, 50, 500)]);
    assert_eq!(watermark(&mut join, 51), ["2@25 -> 500@50"]);
}

#[test]
fn nearest_takes_the_closer_row_and_the_earlier_one_on_a_tie() {
    let mut join = join(spec(AsofDirection::Nearest));
    right(&mut join, &[(1, 10, 100), (1, 20, 200), (1, 40, 400)]);
    left(&mut join, &[(1, 15, 1), (1, 19, 2), (1, 26, 3)]);
    // Row 15 ties between 10 and 20: the earlier wins, settled once nothing closer than 5
    // after it can come.
    assert_eq!(
        watermark(&mut join, 21),
        ["1@15 -> 100@10", "2@19 -> 200@20"]
    );
    // Row 26 matches 20 (distance 6) unless a row before 32 arrives.
    assert!(watermark(&mut join, 32).is_empty());
    assert_eq!(watermark(&mut join, 33), ["3@26 -> 200@20"]);
}

#[test]
fn tolerance_bounds_the_match_and_settles_unmatched_rows() {
    let mut join = join(AsofJoinSpec {
        tolerance_ms: Some(3),
        outer: true,
        ..spec(AsofDirection::Forward)
    });
    right(&mut join, &[(1, 20, 200)]);
    left(&mut join, &[(1, 15, 1), (1, 18, 2)]);
    // Row 15 is 5 away from 20: no match, settled once nothing up to 18 can come.
    assert_eq!(watermark(&mut join, 19), ["1@15 -> NULL"]);
    assert_eq!(watermark(&mut join, 21), ["2@18 -> 200@20"]);
}

#[test]
fn left_outer_rows_with_null_key_or_time_are_final_at_once() {
    let mut join = join(AsofJoinSpec {
        outer: true,
        ..spec(AsofDirection::Backward)
    });
    let schema = side_schema("id", DataType::Int64);
    let mut out = Vec::new();
    join.process(
        0,
        rows(&schema, &[(None, Some(5), 1), (Some(1), None, 2)]),
        &mut out,
    )
    .expect("left");
    assert_eq!(text(&out), ["1@5 -> NULL", "2@0 -> NULL"]);
    assert_eq!(join.state_entries(), 0);
}

#[test]
fn rows_behind_the_watermark_are_late() {
    let mut join = join(spec(AsofDirection::Backward));
    right(&mut join, &[(1, 10, 100)]);
    watermark(&mut join, 16);
    // A right row at 12 would change answers already settled; a left row at 14 may need
    // right rows already pruned.
    right(&mut join, &[(1, 12, 120)]);
    left(&mut join, &[(1, 14, 1), (1, 16, 2)]);
    assert_eq!(join.late_rows(), 2);
    assert_eq!(watermark(&mut join, 17), ["2@16 -> 100@10"]);
}

#[test]
fn state_keeps_the_latest_right_row_per_key_and_empties_at_the_end() {
    let mut join = join(spec(AsofDirection::Backward));
    right(
        &mut join,
        &[(1, 10, 100), (1, 20, 200), (1, 30, 300), (2, 5, 50)],
    );
    assert_eq!(join.state_entries(), 4);
    watermark(&mut join, 25);
    // Key 1 keeps 20 (the latest before 25) and 30; key 2 keeps 5.
    assert_eq!(join.state_entries(), 3);
    left(&mut join, &[(1, 26, 1)]);
    assert_eq!(watermark(&mut join, 27), ["1@26 -> 200@20"]);
    watermark(&mut join, WATERMARK_END_MS);
    assert_eq!(join.state_entries(), 0);
    assert_eq!(join.state_bytes(), 0);
}

#[test]
fn a_key_gone_quiet_is_pruned_when_the_watermark_reaches_its_rows_and_not_visited_before() {
    let mut join = join(spec(AsofDirection::Backward));
    right(&mut join, &[(1, 10, 100), (1, 20, 200), (1, 30, 300)]);
    watermark(&mut join, 15);
    // Key 1 gets no more rows. Until the watermark passes 20 nothing of it can go.
    assert_eq!(join.state_entries(), 3);
    for step in 16..=20 {
        watermark(&mut join, step);
    }
    assert_eq!(join.state_entries(), 3);
    assert_eq!(join.wakeups.keys().copied().collect::<Vec<_>>(), [20]);
    // Past 20, the row at 10 goes; past 30, the one at 20: no full sweep needed.
    watermark(&mut join, 21);
    assert_eq!(join.state_entries(), 2);
    watermark(&mut join, 31);
    assert_eq!(join.state_entries(), 1, "only the latest row, 30");
    assert!(join.wakeups.is_empty(), "nothing left to wake for");
}

#[test]
fn a_quiet_key_s_last_row_leaves_once_out_of_tolerance() {
    let mut join = join(AsofJoinSpec {
        tolerance_ms: Some(5),
        ..spec(AsofDirection::Backward)
    });
    right(&mut join, &[(1, 10, 100)]);
    watermark(&mut join, 12);
    assert_eq!(join.state_entries(), 1);
    watermark(&mut join, 15);
    assert_eq!(
        join.state_entries(),
        1,
        "a left row at 15 could still match 10"
    );
    watermark(&mut join, 16);
    assert_eq!(join.state_entries(), 0);
}

#[test]
fn forward_state_drops_right_rows_behind_the_oldest_waiting_left_row() {
    let mut join = join(spec(AsofDirection::Forward));
    left(&mut join, &[(1, 12, 1)]);
    right(&mut join, &[(1, 10, 100), (1, 14, 140)]);
    // Row 12 waits for nothing before 14 can still come; 10 can match no left row.
    watermark(&mut join, 13);
    assert_eq!(join.state_entries(), 2, "left 12 and right 14");
    assert_eq!(watermark(&mut join, 15), ["1@12 -> 140@14"]);
    // Left rows still to come are at 15 or later: 14 can match none of them.
    assert_eq!(join.state_entries(), 0);
}

#[test]
fn equal_time_right_rows_resolve_to_the_one_that_sorts_last() {
    let mut join = join(spec(AsofDirection::Backward));
    right(&mut join, &[(1, 10, 300), (1, 10, 100)]);
    right(&mut join, &[(1, 10, 200)]);
    left(&mut join, &[(1, 10, 1)]);
    assert_eq!(join.state_entries(), 2);
    assert_eq!(watermark(&mut join, 11), ["1@10 -> 300@10"]);
}

#[test]
fn early_emission_corrects_a_row_when_a_better_match_arrives() {
    let mut join = join(AsofJoinSpec {
        outer: true,
        early: true,
        ..spec(AsofDirection::Backward)
    });
    assert_eq!(left(&mut join, &[(1, 15, 1)]), ["1@15 -> NULL"]);
    assert_eq!(
        right(&mut join, &[(1, 10, 100)]),
        ["-1@15 -> NULL", "1@15 -> 100@10"]
    );
    assert_eq!(
        right(&mut join, &[(1, 12, 120), (1, 16, 160)]),
        ["-1@15 -> 100@10", "1@15 -> 120@12"]
    );
    // Settled: nothing more to say, and the row is forgotten.
    assert!(watermark(&mut join, 16).is_empty());
    assert!(right(&mut join, &[(1, 16, 161)]).is_empty());
    assert_eq!(join.state_entries(), 2, "right rows 12 and 16");
}

#[test]
fn inner_early_emission_inserts_once_a_match_exists() {
    let mut join = join(AsofJoinSpec {
        early: true,
        ..spec(AsofDirection::Nearest)
    });
    assert!(left(&mut join, &[(1, 15, 1)]).is_empty());
    assert_eq!(right(&mut join, &[(1, 30, 300)]), ["1@15 -> 300@30"]);
    assert_eq!(
        right(&mut join, &[(1, 12, 120)]),
        ["-1@15 -> 300@30", "1@15 -> 120@12"]
    );
}

#[test]
fn a_join_without_keys_matches_across_all_rows() {
    let left_schema = side_schema("id", DataType::Int64);
    let right_schema = side_schema("price", DataType::Int64);
    let schema = output_schema(&left_schema, &right_schema);
    let mut join = AsofJoinOperator::new(
        side(&left_schema, false),
        side(&right_schema, false),
        spec(AsofDirection::Backward),
        schema,
    )
    .expect("join");
    right(&mut join, &[(1, 10, 100), (2, 12, 120)]);
    left(&mut join, &[(3, 15, 1)]);
    assert_eq!(watermark(&mut join, 16), ["1@15 -> 120@12"]);
}

#[test]
fn microsecond_times_compare_below_the_millisecond() {
    let micros = DataType::Timestamp(TimeUnit::Microsecond, None);
    let left_schema = side_schema("id", micros.clone());
    let right_schema = side_schema("price", DataType::Int64);
    let schema = output_schema(&left_schema, &right_schema);
    let mut join = AsofJoinOperator::new(
        side(&left_schema, true),
        side(&right_schema, true),
        spec(AsofDirection::Backward),
        schema,
    )
    .expect("join");
    right(&mut join, &[(1, 10, 100), (1, 11, 110)]);
    // 10.999 ms: before the right row at 11 ms.
    let batch = RecordBatch::try_new(
        Arc::clone(&left_schema),
        vec![
            Arc::new(Int64Array::from(vec![1])),
            Arc::new(TimestampMicrosecondArray::from(vec![10_999])),
            Arc::new(Int64Array::from(vec![7])),
        ],
    )
    .expect("batch");
    let mut out = Vec::new();
    join.process(0, ChangeBatch::insert_only(batch), &mut out)
        .expect("left");
    assert!(out.is_empty());
    // Settled at watermark 11 ms (11 000 us > 10 999 us); the output holds no later row.
    join.on_watermark(11, &mut out).expect("watermark");
    let batch = out[0].batch();
    let price = batch
        .column(5)
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("price");
    assert_eq!(price.value(0), 100);
}

#[test]
fn retractions_are_refused() {
    let mut join = join(spec(AsofDirection::Backward));
    let schema = side_schema("id", DataType::Int64);
    let batch = rows(&schema, &[(Some(1), Some(1), 1)]).into_batch();
    let change = ChangeBatch::with_weights(batch, Int64Array::from(vec![-1]));
    let mut out = Vec::new();
    assert!(join.process(0, change, &mut out).is_err());
}

#[test]
fn a_versioned_right_input_skips_the_retractions_of_replaced_versions() {
    let mut join = join(AsofJoinSpec {
        versioned_right: true,
        ..spec(AsofDirection::Backward)
    });
    let right = side_schema("price", DataType::Int64);
    let batch = RecordBatch::try_new(
        right,
        vec![
            Arc::new(Int64Array::from(vec![1, 1])),
            Arc::new(Int64Array::from(vec![100, 200])),
            Arc::new(Int64Array::from(vec![10, 20])),
        ],
    )
    .expect("batch");
    let change = ChangeBatch::with_weights(batch, Int64Array::from(vec![-1, 1]));
    let mut out = Vec::new();
    join.process(1, change, &mut out)
        .expect("a versioned right input takes retractions");
    assert_eq!(join.state_entries(), 1);
}
