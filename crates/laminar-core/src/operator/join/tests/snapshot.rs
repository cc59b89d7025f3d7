//! Snapshots of both joins restored into fresh instances: the restored join answers the
//! rest of the input as the original does.

use std::time::{Duration, Instant};

use datafusion::common::JoinType;

use super::{inserts, interval, rows, spec, text};
use crate::operator::join::regular::WallClock;
use crate::operator::join::RegularJoinOperator;
use crate::operator::snapshot_harness::{assert_round_trip, Step};
use crate::operator::Operator;
use crate::state::{merge_states, OperatorState, StateKind, StatePart};
use crate::watermark::WATERMARK_END_MS;

fn left(batch: crate::ChangeBatch) -> Step {
    Step::Data(0, batch)
}

fn right(batch: crate::ChangeBatch) -> Step {
    Step::Data(1, batch)
}

fn part<'a>(state: &'a OperatorState, name: &str) -> Option<&'a StatePart> {
    state.parts.iter().find(|p| p.name == name)
}

/// A full join on `l.k = r.k AND l.v < r.v` over changelogs: unmatched rows of both inputs
/// are emitted null-padded and retracted once matched.
fn full_join() -> RegularJoinOperator {
    RegularJoinOperator::new(spec(JoinType::Full, true), true).expect("join")
}

fn regular_first_half() -> (Vec<Step>, Vec<Step>) {
    let first = vec![
        left(inserts(&[(1, 10, 0), (2, 20, 0), (3, 30, 0), (4, 40, 0)])),
        // Right 3 fails `l.v < r.v`: both 3s stay unmatched.
        right(inserts(&[(2, 25, 0), (3, 5, 0), (5, 50, 0), (6, 60, 0)])),
        Step::Watermark(10),
    ];
    let second = vec![
        // Key 4 leaves the left input, key 6 the right one.
        left(rows(&[(Some(4), Some(40), 0, -1)])),
        right(rows(&[
            (Some(1), Some(15), 1, 1),
            (Some(6), Some(60), 0, -1),
        ])),
        left(rows(&[(Some(7), Some(70), 0, 2)])),
    ];
    (first, second)
}

fn regular_second_half() -> Vec<Step> {
    vec![
        // Matches right 5, whose padded row goes.
        left(inserts(&[(5, 40, 0)])),
        // Left 2 loses its only match and is padded again.
        right(rows(&[(Some(2), Some(25), 0, -1)])),
        // Left 3 is matched at last.
        right(inserts(&[(3, 35, 0)])),
        // One of two copies of left 7 goes, then the other is matched.
        left(rows(&[(Some(7), Some(70), 0, -1)])),
        right(inserts(&[(7, 80, 0)])),
        // Left 4 was retracted: right 4 stays unmatched.
        right(inserts(&[(4, 41, 0)])),
        Step::Watermark(100),
        Step::End,
    ]
}

#[test]
fn a_restored_regular_join_answers_like_the_original() {
    let (first, second) = regular_first_half();
    let whole: Vec<Step> = first.into_iter().chain(second).collect();
    let trip = assert_round_trip(&full_join(), &[&whole], &regular_second_half(), text);
    assert!(trip.output.contains(&"- - - | 5 50 0 -1".to_string()));
    assert!(trip.output.contains(&"2 20 0 | - - - +1".to_string()));
    assert!(trip.output.contains(&"- - - | 4 41 0 +1".to_string()));
}

#[test]
fn a_regular_join_restores_from_a_full_snapshot_and_a_delta() {
    let (first, second) = regular_first_half();
    let trip = assert_round_trip(
        &full_join(),
        &[&first, &second],
        &regular_second_half(),
        text,
    );
    let [full, delta] = &trip.snapshots[..] else {
        panic!("two snapshots");
    };
    assert_eq!(full.kind, StateKind::Full);
    assert_eq!(delta.kind, StateKind::Delta);
    // Left: key 1 (matched by a new right row) and 7 written, 4 deleted; right: key 1
    // written, 6 deleted.
    let left = part(delta, "left").expect("left part");
    assert_eq!((left.upsert_rows(), left.deletes.len()), (2, 1));
    let right = part(delta, "right").expect("right part");
    assert_eq!((right.upsert_rows(), right.deletes.len()), (1, 1));
}

#[test]
fn a_regular_join_delta_holds_only_the_keys_touched_since_the_last_snapshot() {
    const KEYS: i64 = 10_000;
    let mut join = RegularJoinOperator::new(spec(JoinType::Inner, false), true).expect("join");
    let all: Vec<(i64, i64, i64)> = (0..KEYS).map(|k| (k, k, 0)).collect();
    let mut out = Vec::new();
    join.process(0, inserts(&all), &mut out).expect("left");
    join.process(1, inserts(&all), &mut out).expect("right");
    let full = join.snapshot(false).expect("snapshot").expect("state");
    assert_eq!(full.kind, StateKind::Full, "the first snapshot is whole");
    let entries: usize = full.parts.iter().map(StatePart::upsert_rows).sum();
    assert_eq!(entries, 2 * KEYS as usize);
    // 1% of the keys: 90 get a second left row, 10 lose their only one.
    let touched: Vec<i64> = (0..KEYS).step_by(100).collect();
    let added: Vec<(i64, i64, i64)> = touched[10..].iter().map(|&k| (k, -k, 0)).collect();
    let removed: Vec<_> = touched[..10]
        .iter()
        .map(|&k| (Some(k), Some(k), 0, -1))
        .collect();
    join.process(0, inserts(&added), &mut out).expect("left");
    join.process(0, rows(&removed), &mut out).expect("left");
    let delta = join.snapshot(false).expect("snapshot").expect("state");
    assert_eq!(delta.kind, StateKind::Delta);
    let left = part(&delta, "left").expect("left part");
    assert_eq!((left.upsert_rows(), left.deletes.len()), (90, 10));
    assert!(part(&delta, "right").is_none(), "no right row changed");
    let quiet = join.snapshot(false).expect("snapshot").expect("state");
    assert!(quiet.parts.is_empty(), "nothing changed since the delta");
    let mut restored = join.fork();
    restored
        .restore(merge_states(&[full, delta, quiet]).expect("merge"))
        .expect("restore");
    assert_eq!(restored.state_entries(), join.state_entries());
    assert_eq!(restored.state_entries(), 2 * KEYS as u64 + 90 - 10);
}

#[test]
fn a_restored_join_keeps_each_keys_idle_time_for_its_state_ttl() {
    let ttl = Duration::from_secs(10);
    let make = || {
        RegularJoinOperator::new(spec(JoinType::Inner, false), false)
            .expect("join")
            .with_state_ttl(ttl)
    };
    let start = Instant::now();
    let at = |secs: u64| start + Duration::from_secs(secs);
    let mut original = make();
    let mut out = Vec::new();
    original
        .process_at(0, &inserts(&[(1, 10, 0)]), &mut out, at(0))
        .expect("process");
    let full = original
        .snapshot_at(true, clock(at(1), 1_000_000))
        .expect("full");
    original
        .process_at(0, &inserts(&[(2, 20, 0)]), &mut out, at(6))
        .expect("process");
    let delta = original
        .snapshot_at(false, clock(at(8), 1_007_000))
        .expect("delta");
    assert!(part(&delta, "expiry").is_some_and(|p| p.upsert_rows() == 1));
    // Restored 100 s later on the monotonic clock, 4 s later on the wall clock: key 1 has
    // been idle 11 s, key 2 5 s.
    let mut restored = make();
    let parts = merge_states(&[full, delta]).expect("merge");
    restored
        .restore_at(&parts, clock(at(100), 1_011_000))
        .expect("restore");
    restored.expire(at(100));
    original.expire(at(11));
    assert_eq!(restored.state_entries(), 1);
    assert_eq!(original.state_entries(), 1);
    let probe = |join: &mut RegularJoinOperator, now: Instant| {
        let mut out = Vec::new();
        join.process_at(1, &inserts(&[(1, 7, 0), (2, 8, 0)]), &mut out, now)
            .expect("probe");
        text(&out)
    };
    assert_eq!(probe(&mut restored, at(100)), probe(&mut original, at(11)));
    assert_eq!(probe(&mut restored, at(100)), ["2 20 0 | 2 8 0 +1"]);
}

fn clock(now: Instant, unix_ms: i64) -> WallClock {
    WallClock { now, unix_ms }
}

#[test]
fn a_restored_interval_join_answers_like_the_original() {
    let first = vec![
        left(inserts(&[(1, 1, 100), (2, 2, 100), (3, 3, 150)])),
        right(inserts(&[(1, 7, 105), (4, 8, 100), (3, 9, 200)])),
        Step::Watermark(110),
    ];
    let second = vec![
        // Late: behind the watermark.
        left(inserts(&[(9, 9, 100)])),
        // Left 3 reaches right times up to 170; right 3 at 200 reaches left times from 180.
        left(inserts(&[(3, 4, 185)])),
        right(inserts(&[(2, 5, 115)])),
    ];
    let rest = vec![
        // Right 4 (reaching left times up to 110) goes unmatched, emitted null-padded; left
        // 1 and 2 (reaching 120) go matched.
        Step::Watermark(125),
        right(inserts(&[(3, 6, 160), (5, 1, 130)])),
        left(inserts(&[(5, 2, 140)])),
        Step::Watermark(WATERMARK_END_MS),
        Step::End,
    ];
    let prototype = interval(JoinType::Full);
    let whole: Vec<Step> = first.iter().chain(&second).cloned().collect();
    let trip = assert_round_trip(&prototype, &[&whole], &rest, text);
    assert!(trip.output.contains(&"- - - | 4 8 100 +1".to_string()));
    let chain = assert_round_trip(&prototype, &[&first, &second], &rest, text);
    assert_eq!(chain.output, trip.output);
}

#[test]
fn a_checkpoint_of_another_operator_is_refused_with_an_error() {
    let mut interval = interval(JoinType::Inner);
    let mut out = Vec::new();
    interval
        .process(0, inserts(&[(1, 1, 100)]), &mut out)
        .expect("process");
    let state = interval.snapshot(true).expect("snapshot").expect("state");
    let mut regular = full_join().fork();
    let error = regular
        .restore(merge_states(&[state]).expect("merge"))
        .expect_err("another operator's state");
    assert!(error.to_string().contains("RegularJoin"), "{error}");
    assert!(error.to_string().contains("progress"), "{error}");
}
