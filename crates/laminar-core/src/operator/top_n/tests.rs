//! The top-N operator driven batch by batch; each output row reads `k v end #rn ±weight`.

use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::physical_expr::expressions::col;
use datafusion::physical_expr::PhysicalSortExpr;

use super::TopNOperator;
use crate::change_batch::ChangeBatch;
use crate::operator::test_support::{part, round_trip, Step};
use crate::operator::Operator;
use crate::watermark::WATERMARK_END_MS;

fn input_schema() -> Schema {
    Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Int64, true),
        Field::new("end", DataType::Int64, false),
    ])
}

fn output_schema() -> SchemaRef {
    let mut fields = input_schema().fields().to_vec();
    fields.push(Arc::new(Field::new("rn", DataType::UInt64, false)));
    Arc::new(Schema::new(fields))
}

/// `ROW_NUMBER() OVER (PARTITION BY <keys> ORDER BY v DESC) <= limit`.
fn top_n(keys: &[&str], limit: usize) -> TopNOperator {
    let schema = input_schema();
    let keys = keys
        .iter()
        .map(|k| col(k, &schema).expect("column"))
        .collect();
    let order = vec![PhysicalSortExpr {
        expr: col("v", &schema).expect("column"),
        options: SortOptions {
            descending: true,
            nulls_first: false,
        },
    }];
    TopNOperator::new(keys, order, limit, output_schema()).expect("operator")
}

/// Rows `(k, v, end, weight)`.
fn rows(rows: &[(i64, i64, i64, i64)]) -> ChangeBatch {
    let column = |f: fn(&(i64, i64, i64, i64)) -> i64| {
        Arc::new(Int64Array::from_iter_values(rows.iter().map(f))) as _
    };
    let batch = RecordBatch::try_new(
        Arc::new(input_schema()),
        vec![column(|r| r.0), column(|r| r.1), column(|r| r.2)],
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

fn process(operator: &mut TopNOperator, input: ChangeBatch) -> Vec<String> {
    let mut out = Vec::new();
    operator.process(0, input, &mut out).expect("process");
    text(&out)
}

fn text(out: &[ChangeBatch]) -> Vec<String> {
    let mut lines = Vec::new();
    for change in out {
        let batch = change.batch();
        let int = |column: usize, row: usize| {
            datafusion::arrow::array::cast::as_primitive_array::<
                datafusion::arrow::datatypes::Int64Type,
            >(batch.column(column))
            .value(row)
        };
        let ranks = datafusion::arrow::array::cast::as_primitive_array::<
            datafusion::arrow::datatypes::UInt64Type,
        >(batch.column(3));
        for row in 0..batch.num_rows() {
            let weight = change.weights().map_or(1, |w| w.value(row));
            lines.push(format!(
                "{} {} {} #{} {weight:+}",
                int(0, row),
                int(1, row),
                int(2, row),
                ranks.value(row)
            ));
        }
    }
    lines
}

#[test]
fn a_retraction_in_the_top_n_promotes_the_next_row() {
    let mut operator = top_n(&["k"], 2).retracting();
    let out = process(
        &mut operator,
        rows(&[(1, 10, 0, 1), (1, 30, 0, 1), (1, 20, 0, 1), (2, 5, 0, 1)]),
    );
    assert_eq!(out, ["1 30 0 #1 +1", "1 20 0 #2 +1", "2 5 0 #1 +1"]);
    // Over a changelog every row is kept: 10 is waiting below the top 2.
    assert_eq!(operator.state_entries(), 4);

    let out = process(&mut operator, rows(&[(1, 30, 0, -1)]));
    assert_eq!(
        out,
        [
            "1 30 0 #1 -1",
            "1 20 0 #2 -1",
            "1 20 0 #1 +1",
            "1 10 0 #2 +1"
        ]
    );
    // Retracting a row never received changes nothing.
    assert!(process(&mut operator, rows(&[(1, 99, 0, -1)])).is_empty());
    assert_eq!(operator.state_entries(), 3);
}

#[test]
fn unread_row_numbers_are_not_updated() {
    let mut operator = top_n(&["k"], 2).retracting().without_rank_updates();
    process(
        &mut operator,
        rows(&[(1, 10, 0, 1), (1, 30, 0, 1), (1, 20, 0, 1)]),
    );
    // 20 stays in the top 2: only the row leaving and the row entering change.
    let out = process(&mut operator, rows(&[(1, 30, 0, -1)]));
    assert_eq!(out, ["1 30 0 #1 -1", "1 10 0 #2 +1"]);
    // A later retraction names the row as it was emitted.
    let out = process(&mut operator, rows(&[(1, 20, 0, -1)]));
    assert_eq!(out, ["1 20 0 #2 -1"]);
}

#[test]
fn an_append_only_input_keeps_only_the_best_rows() {
    let mut operator = top_n(&["k"], 3);
    let input: Vec<_> = (0..100).map(|v| (7, v, 0, 1)).collect();
    let out = process(&mut operator, rows(&input));
    assert_eq!(out, ["7 99 0 #1 +1", "7 98 0 #2 +1", "7 97 0 #3 +1"]);
    assert_eq!(operator.state_entries(), 3);
    // A row below the top 3 changes nothing; one above shifts the others down.
    assert!(process(&mut operator, rows(&[(7, 50, 0, 1)])).is_empty());
    let out = process(&mut operator, rows(&[(7, 1000, 0, 1)]));
    assert_eq!(
        out,
        [
            "7 99 0 #1 -1",
            "7 98 0 #2 -1",
            "7 97 0 #3 -1",
            "7 1000 0 #1 +1",
            "7 99 0 #2 +1",
            "7 98 0 #3 +1",
        ]
    );
    assert_eq!(operator.state_entries(), 3);
}

#[test]
fn identical_rows_take_consecutive_numbers() {
    let mut operator = top_n(&["k"], 3).retracting();
    let out = process(
        &mut operator,
        rows(&[(1, 5, 0, 1), (1, 7, 0, 1), (1, 5, 0, 1), (1, 5, 0, 1)]),
    );
    assert_eq!(out, ["1 7 0 #1 +1", "1 5 0 #2 +1", "1 5 0 #3 +1"]);
    let out = process(&mut operator, rows(&[(1, 5, 0, -2)]));
    assert_eq!(out, ["1 5 0 #3 -1"]);
}

#[test]
fn window_partitions_emit_once_when_the_watermark_passes_their_end() {
    let mut operator = top_n(&["k", "end"], 2).emit_on_window_close(1);
    let out = process(
        &mut operator,
        rows(&[
            (1, 10, 1000, 1),
            (1, 30, 1000, 1),
            (1, 20, 1000, 1),
            (1, 40, 2000, 1),
            (2, 5, 1000, 1),
        ]),
    );
    assert!(out.is_empty(), "nothing before the watermark: {out:?}");
    assert_eq!(operator.state_entries(), 4, "the best 2 of each partition");

    let mut out = Vec::new();
    operator.on_watermark(999, &mut out).expect("watermark");
    assert!(out.is_empty());
    operator.on_watermark(1000, &mut out).expect("watermark");
    assert_eq!(
        text(&out),
        ["1 30 1000 #1 +1", "1 20 1000 #2 +1", "2 5 1000 #1 +1"]
    );
    assert_eq!(operator.state_entries(), 1);

    // A row of an emitted partition is late: dropped and counted.
    assert!(process(&mut operator, rows(&[(1, 99, 1000, 1)])).is_empty());
    assert_eq!(operator.late_rows(), 1);

    let mut out = Vec::new();
    operator
        .on_watermark(WATERMARK_END_MS, &mut out)
        .expect("watermark");
    assert_eq!(text(&out), ["1 40 2000 #1 +1"]);
    assert_eq!(operator.state_entries(), 0, "every partition was freed");
}

/// `rows` as a step of a scripted input.
fn step(input: &[(i64, i64, i64, i64)]) -> Step {
    Step::Rows(rows(input))
}

#[test]
fn a_changelog_top_n_continues_after_restore_and_an_emptied_partition_is_deleted() {
    let prototype = top_n(&["k"], 2).retracting();
    let a1 = [
        step(&[(1, 10, 0, 1), (1, 30, 0, 1), (1, 20, 0, 1), (2, 5, 0, 1)]),
        step(&[(3, 7, 0, 1), (1, 20, 0, 1)]),
    ];
    let a2 = [
        step(&[(1, 30, 0, -1), (2, 6, 0, 1)]),
        // Partition 3 loses its one row.
        step(&[(3, 7, 0, -1)]),
    ];
    let b = [
        step(&[(1, 20, 0, -1), (1, 40, 0, 1), (3, 1, 0, 1)]),
        step(&[(2, 5, 0, -1), (4, 9, 0, 1)]),
        Step::End,
    ];
    let snapshots = round_trip(&prototype, &a1, &a2, &b);
    assert_eq!(part(&snapshots.full, "partitions").upsert_rows(), 3);
    let delta = part(&snapshots.delta, "partitions");
    assert_eq!(delta.upsert_rows(), 2, "partitions 1 and 2");
    assert_eq!(delta.deletes.len(), 1, "partition 3");
}

#[test]
fn unread_row_numbers_and_a_global_top_n_continue_after_restore() {
    for prototype in [
        top_n(&["k"], 3).without_rank_updates(),
        top_n(&[], 2).retracting(),
    ] {
        let a1 = [step(&[(1, 10, 0, 1), (1, 30, 0, 1), (2, 20, 0, 1)])];
        let a2 = [step(&[(1, 5, 0, 1), (2, 25, 0, 1)])];
        let b = [
            step(&[(1, 50, 0, 1), (2, 1, 0, 1), (1, 29, 0, 1)]),
            Step::End,
        ];
        round_trip(&prototype, &a1, &a2, &b);
    }
}

#[test]
fn window_partitions_continue_after_restore_and_fired_ones_are_deleted() {
    let prototype = top_n(&["k", "end"], 2).emit_on_window_close(1);
    let a1 = [
        step(&[(1, 10, 1000, 1), (1, 30, 1000, 1), (1, 20, 2000, 1)]),
        step(&[(2, 5, 2000, 1), (2, 7, 3000, 1)]),
        Step::Watermark(1000),
    ];
    let a2 = [
        step(&[(1, 25, 2000, 1), (1, 40, 3000, 1)]),
        Step::Watermark(2000),
    ];
    let b = [
        // Window 2000 was emitted: late.
        step(&[(1, 99, 2000, 1), (2, 8, 3000, 1), (2, 1, 4000, 1)]),
        Step::Watermark(3000),
        step(&[(3, 3, 5000, 1)]),
        Step::End,
    ];
    let snapshots = round_trip(&prototype, &a1, &a2, &b);
    let delta = part(&snapshots.delta, "partitions");
    assert_eq!(delta.upsert_rows(), 1, "partition (1, 3000) received rows");
    assert_eq!(delta.deletes.len(), 2, "partitions of window 2000 fired");
}
