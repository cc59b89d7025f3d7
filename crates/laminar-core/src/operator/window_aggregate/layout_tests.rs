//! The keys a window holds once: a declared `window_start` the rows agree on stays out of the
//! group table; one they disagree on moves into it, and the answer never changes.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema};

use super::WindowAggregateOperator;
use crate::operator::test_support::{
    column, count_and_sum, input_schema, inserts, round_trip, run, Step,
};

/// `SELECT k, v, end, count(*), sum(v) .. GROUP BY k, v, end EMIT ON WINDOW CLOSE`, with
/// `v` declared the window start when `declared`.
fn grouped_by_k_v_end(declared: bool) -> WindowAggregateOperator {
    let schema = input_schema();
    let key_fields: Vec<Field> = ["k", "v", "end"]
        .iter()
        .map(|k| {
            let field = schema.field_with_name(k).expect("key");
            Field::new(field.name(), field.data_type().clone(), true)
        })
        .collect();
    let calls = count_and_sum();
    let mut fields = key_fields.clone();
    fields.extend(calls.iter().map(|c| c.function.field().as_ref().clone()));
    let operator = WindowAggregateOperator::new(
        vec![column("k"), column("v"), column("end")],
        calls,
        &key_fields,
        2,
        Arc::new(Schema::new(fields)),
    )
    .expect("window aggregate");
    if declared {
        operator.with_window_start_key(1)
    } else {
        operator
    }
}

/// The answer to `steps` with `v` declared the window start, which must be the answer
/// without.
fn answer_of(steps: &[Step]) -> Vec<String> {
    let answer = run(&mut grouped_by_k_v_end(true), steps);
    assert_eq!(answer, run(&mut grouped_by_k_v_end(false), steps));
    answer
}

#[test]
fn a_window_start_the_rows_agree_on_is_held_once_and_put_back_on_every_row() {
    // `v` is the same in every row of a window: 7 in window 1000, 8 in window 2000.
    let steps = [
        inserts(&[("a", 7, 100), ("b", 7, 200), ("a", 8, 1_100)]),
        inserts(&[("a", 7, 300), ("c", 8, 1_900)]),
        Step::End,
    ];
    assert_eq!(
        answer_of(&steps),
        [
            "a 7 1000 2 14 +1",
            "a 8 2000 1 8 +1",
            "b 7 1000 1 7 +1",
            "c 8 2000 1 8 +1"
        ]
    );
}

#[test]
fn a_window_start_the_rows_disagree_on_moves_into_the_group_tables_mid_window() {
    let steps = [
        // Agreeing so far, in two open windows.
        inserts(&[("a", 7, 100), ("b", 7, 200), ("a", 8, 1_100)]),
        // Window 1000 now gets rows with v = 9, in this batch and against what it holds.
        inserts(&[("a", 9, 300), ("a", 7, 400), ("b", 9, 500)]),
        Step::Watermark(1_000),
        inserts(&[("c", 8, 1_500), ("c", 3, 1_600)]),
        Step::End,
    ];
    assert_eq!(
        answer_of(&steps),
        [
            "a 7 1000 2 14 +1",
            "a 8 2000 1 8 +1",
            "a 9 1000 1 9 +1",
            "b 7 1000 1 7 +1",
            "b 9 1000 1 9 +1",
            "c 3 2000 1 3 +1",
            "c 8 2000 1 8 +1",
        ]
    );
}

#[test]
fn a_restore_that_finds_rows_of_one_window_disagreeing_groups_by_the_key() {
    // The snapshot is taken after window 1000's rows disagreed on `v`; the restored
    // instance (declared, agreeing so far) meets them in the state it reads.
    let a1 = [inserts(&[("a", 7, 100), ("a", 9, 300), ("b", 8, 1_100)])];
    let a2 = [inserts(&[("b", 8, 1_200), ("c", 6, 400)])];
    let b = [
        inserts(&[("a", 7, 500), ("b", 8, 1_300)]),
        Step::Watermark(1_000),
        inserts(&[("d", 8, 1_700)]),
        Step::End,
    ];
    round_trip(&grouped_by_k_v_end(true), &a1, &a2, &b);
}
