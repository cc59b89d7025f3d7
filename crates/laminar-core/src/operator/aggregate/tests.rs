//! Snapshot and restore of the aggregate: a restored instance continues exactly as the live
//! one (changelog, retractions, windows with allowed lateness, keyed watermarks, a global
//! aggregate), over every kind of aggregate function; and a delta is as small as the
//! groups touched.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::arrow::row::SortField;

use super::{AggregateCall, AggregateOperator, KeyedWatermark};
use crate::operator::test_support::{
    bytes, column, count_and_sum, every_kind_of_call, input_schema, inserts, part, round_trip,
    rows, Step,
};
use crate::operator::Operator;
use crate::state::StateKind;

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
