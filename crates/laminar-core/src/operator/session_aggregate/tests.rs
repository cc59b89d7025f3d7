//! Snapshot and restore of the session aggregate: a restored instance continues exactly as
//! the live one (changelog, window close with allowed lateness, keyed watermarks), and a
//! delta holds the sessions that grew or merged and deletes those they replaced.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::row::SortField;
use datafusion::logical_expr::Operator as BinaryOperator;
use datafusion::physical_expr::expressions::{binary, lit};

use super::{SessionAggregateOperator, SessionWindow};
use crate::operator::test_support::{
    column, every_kind_of_call, input_schema, inserts, part, round_trip, Step,
};
use crate::state::StateKind;

/// Sessions with a gap of 500 ms per `k`: each row's own window is `[ts, ts + 500)`.
fn sessions() -> SessionAggregateOperator {
    let input = input_schema();
    let calls = every_kind_of_call();
    let end = binary(column("ts"), BinaryOperator::Plus, lit(500_i64), &input).expect("end");
    let mut fields = vec![
        Field::new("k", DataType::Utf8, false),
        Field::new("window_start", DataType::Int64, false),
        Field::new("window_end", DataType::Int64, false),
    ];
    fields.extend(calls.iter().map(|c| c.function.field().as_ref().clone()));
    let key_fields = [DataType::Utf8, DataType::Int64, DataType::Int64].map(SortField::new);
    SessionAggregateOperator::new(
        vec![column("k"), column("ts"), end],
        SessionWindow {
            start_key: 1,
            end_key: 2,
        },
        calls,
        &key_fields,
        Arc::new(Schema::new(fields)),
    )
    .expect("sessions")
}

#[test]
fn changelog_sessions_continue_after_restore_and_a_moved_session_is_deleted() {
    let prototype = sessions();
    let a1 = [
        inserts(&[("a", 1, 100), ("a", 2, 300), ("b", 3, 1_000)]),
        inserts(&[("a", 4, 2_000)]),
    ];
    // a's first session now starts at 50: its entry at 100 goes.
    let a2 = [inserts(&[("a", 5, 50), ("b", 6, 1_200)])];
    let b = [
        inserts(&[("a", 7, 1_400), ("c", 8, 100)]),
        // Bridges a's sessions into one.
        inserts(&[("a", 9, 1_600), ("a", 10, 1_100)]),
        Step::End,
    ];
    let snapshots = round_trip(&prototype, &a1, &a2, &b);
    assert_eq!(part(&snapshots.full, "sessions").upsert_rows(), 3);
    assert_eq!(snapshots.delta.kind, StateKind::Delta);
    let delta = part(&snapshots.delta, "sessions");
    assert_eq!(
        delta.upsert_rows(),
        2,
        "a's session from 50 and b's session"
    );
    assert_eq!(delta.deletes.len(), 1, "a's session from 100");
}

#[test]
fn closed_sessions_with_allowed_lateness_continue_after_restore() {
    let prototype = sessions().emit_on_window_close(1_000);
    let a1 = [
        inserts(&[("a", 1, 100), ("a", 2, 300), ("b", 3, 1_000)]),
        Step::Watermark(900),
    ];
    let a2 = [
        // Late within the lateness: a's fired session grows and is corrected.
        inserts(&[("a", 4, 600)]),
        Step::Watermark(2_000),
    ];
    let b = [
        // b's row is past its lateness: late.
        inserts(&[("a", 5, 5_000), ("b", 6, 100)]),
        Step::Watermark(2_200),
        inserts(&[("a", 7, 1_500)]),
        Step::End,
    ];
    round_trip(&prototype, &a1, &a2, &b);
}

#[test]
fn keyed_sessions_continue_after_restore() {
    let prototype = sessions().emit_on_window_close(0).keyed_watermarks(100);
    let a1 = [inserts(&[("a", 1, 100), ("a", 2, 1_000), ("b", 3, 300)])];
    let a2 = [inserts(&[("b", 4, 2_000), ("a", 5, 1_200)])];
    let b = [
        // a's watermark is 1100: the row's own window [400, 900) closed, it is late.
        inserts(&[("a", 6, 400), ("a", 7, 3_000), ("c", 8, 50)]),
        Step::End,
    ];
    let snapshots = round_trip(&prototype, &a1, &a2, &b);
    let watermarks = part(&snapshots.delta, "partition_watermarks");
    assert_eq!(watermarks.upsert_rows(), 2, "a's and b's watermarks moved");
}
