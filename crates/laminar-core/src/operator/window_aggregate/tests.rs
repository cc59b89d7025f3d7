//! Snapshot and restore of the vectorized window aggregate: a restored instance continues
//! exactly as the live one, and a delta rewrites only the windows that received rows and
//! deletes the windows fired.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema};

use super::WindowAggregateOperator;
use crate::operator::test_support::{
    bytes, column, every_kind_of_call, input_schema, inserts, part, round_trip, Step,
};
use crate::operator::{AggregateCall, Operator};
use crate::state::StateKind;

/// The calls of every kind that have a groups accumulator.
pub(super) fn vectorized_calls() -> Vec<AggregateCall> {
    let calls: Vec<AggregateCall> = every_kind_of_call()
        .into_iter()
        .filter(|c| c.function.groups_accumulator_supported())
        .collect();
    let names: Vec<&str> = calls.iter().map(|c| c.function.fun().name()).collect();
    for expected in ["count", "sum", "avg", "min", "max", "stddev", "first_value"] {
        assert!(names.contains(&expected), "{expected} among {names:?}");
    }
    calls
}

/// `SELECT k, end, <calls> .. GROUP BY k, end EMIT ON WINDOW CLOSE`.
pub(super) fn window_aggregate(calls: Vec<AggregateCall>) -> WindowAggregateOperator {
    let schema = input_schema();
    let key_fields: Vec<Field> = ["k", "end"]
        .iter()
        .map(|k| {
            let field = schema.field_with_name(k).expect("key");
            Field::new(field.name(), field.data_type().clone(), true)
        })
        .collect();
    let mut fields = key_fields.clone();
    fields.extend(calls.iter().map(|c| c.function.field().as_ref().clone()));
    WindowAggregateOperator::new(
        vec![column("k"), column("end")],
        calls,
        &key_fields,
        1,
        Arc::new(Schema::new(fields)),
    )
    .expect("window aggregate")
}

#[test]
fn windows_continue_after_restore_and_a_delta_holds_only_windows_touched_or_fired() {
    let prototype = window_aggregate(vectorized_calls());
    let a1 = [
        inserts(&[("a", 1, 100), ("b", 2, 200), ("a", 3, 1_100)]),
        inserts(&[("b", 4, 1_900), ("a", 5, 2_500), ("c", 6, 2_600)]),
        Step::Watermark(1_000),
    ];
    let a2 = [
        // Window 3000 receives rows, window 2000 does not and fires.
        inserts(&[("a", 7, 2_700), ("d", 8, 2_800), ("a", 9, 3_100)]),
        Step::Watermark(2_000),
    ];
    let b = [
        // A row of window 2000 is late.
        inserts(&[("a", 10, 1_500), ("c", 11, 2_900), ("e", 12, 3_500)]),
        Step::Watermark(3_000),
        inserts(&[("a", 13, 4_200)]),
        Step::End,
    ];
    let snapshots = round_trip(&prototype, &a1, &a2, &b);
    assert_eq!(part(&snapshots.full, "windows").upsert_rows(), 2);
    assert_eq!(snapshots.delta.kind, StateKind::Delta);
    let windows = part(&snapshots.delta, "windows");
    assert_eq!(
        windows.upsert_rows(),
        2,
        "windows 3000 and 4000 received rows"
    );
    assert_eq!(windows.deletes, vec![2_000_i64.to_be_bytes().to_vec()]);
}

#[test]
fn a_delta_rewrites_only_the_window_that_received_rows() {
    let mut operator = window_aggregate(vectorized_calls());
    let mut out = Vec::new();
    // Ten windows of 1,000 groups each.
    let names: Vec<String> = (0..1_000).map(|g| format!("group-{g}")).collect();
    for window in 0..10 {
        let rows: Vec<(&str, i64, i64)> = names
            .iter()
            .enumerate()
            .map(|(g, n)| (n.as_str(), g as i64, window * 1_000 + 10))
            .collect();
        let Step::Rows(batch) = inserts(&rows) else {
            unreachable!("inserts are rows")
        };
        operator.process(0, batch, &mut out).expect("process");
    }
    let full = operator.snapshot(true).expect("snapshot").expect("state");
    assert_eq!(part(&full, "windows").upsert_rows(), 10);
    let Step::Rows(batch) = inserts(&[("group-7", 1, 5_500)]) else {
        unreachable!("inserts are rows")
    };
    operator.process(0, batch, &mut out).expect("process");
    let delta = operator.snapshot(false).expect("snapshot").expect("state");
    assert_eq!(part(&delta, "windows").upsert_rows(), 1);
    let (full_bytes, delta_bytes) = (bytes(&full), bytes(&delta));
    assert!(
        delta_bytes * 5 < full_bytes,
        "the delta takes {delta_bytes} bytes, the full snapshot {full_bytes}"
    );
    assert!(out.is_empty(), "no window fired");
}

#[test]
fn a_batch_spanning_windows_in_runs_or_interleaved_gives_the_answer_of_one_row_per_batch() {
    use crate::operator::test_support::{count_and_sum, run};
    let rows = [
        ("a", 1, 100),
        ("a", 2, 200),
        ("b", 3, 1_100),
        // Window 1000 again after window 2000: its rows lie in two runs.
        ("a", 4, 300),
        ("b", 5, 2_100),
        ("b", 6, 2_200),
    ];
    let in_one_batch = [
        inserts(&rows),
        Step::Watermark(1_000),
        // In runs: a late row (window 1000), then windows 2000 and 3000.
        inserts(&[("a", 7, 900), ("c", 8, 1_500), ("c", 9, 2_500)]),
        Step::End,
    ];
    let mut one_per_batch: Vec<Step> = rows.iter().map(|r| inserts(&[*r])).collect();
    one_per_batch.extend([
        Step::Watermark(1_000),
        inserts(&[("a", 7, 900)]),
        inserts(&[("c", 8, 1_500)]),
        inserts(&[("c", 9, 2_500)]),
        Step::End,
    ]);
    let mut batched = window_aggregate(count_and_sum());
    let answer = run(&mut batched, &in_one_batch);
    assert_eq!(
        answer,
        [
            "a 1000 3 7 +1",
            "b 2000 1 3 +1",
            "b 3000 2 11 +1",
            "c 2000 1 8 +1",
            "c 3000 1 9 +1",
        ]
    );
    assert_eq!(batched.late_rows(), 1);
    assert_eq!(
        answer,
        run(&mut window_aggregate(count_and_sum()), &one_per_batch)
    );
}
