//! Snapshots of the ASOF join restored into fresh instances: the restored join settles,
//! corrects and holds the watermark as the original does.

use datafusion::arrow::datatypes::DataType;

use super::{join, output_schema, rows, side, side_schema, spec, text};
use crate::operator::asof_join::{AsofDirection, AsofJoinOperator, AsofJoinSpec};
use crate::operator::snapshot_harness::{assert_round_trip, Step};
use crate::state::StateKind;
use crate::watermark::WATERMARK_END_MS;

/// Left rows `(k, ts, id)`.
fn left(input: &[(i64, i64, i64)]) -> Step {
    let input: Vec<_> = input.iter().map(|r| (Some(r.0), Some(r.1), r.2)).collect();
    Step::Data(0, rows(&side_schema("id", DataType::Int64), &input))
}

/// Right rows `(k, ts, price)`.
fn right(input: &[(i64, i64, i64)]) -> Step {
    let input: Vec<_> = input.iter().map(|r| (Some(r.0), Some(r.1), r.2)).collect();
    Step::Data(1, rows(&side_schema("price", DataType::Int64), &input))
}

#[test]
fn a_restored_early_asof_join_corrects_the_answers_it_emitted_before() {
    let prototype = join(AsofJoinSpec {
        outer: true,
        early: true,
        ..spec(AsofDirection::Backward)
    });
    let first = vec![
        right(&[(1, 10, 100), (2, 5, 50)]),
        left(&[(1, 15, 1), (1, 20, 2), (2, 30, 3), (3, 20, 4)]),
        Step::Watermark(12),
    ];
    let second = vec![
        // Left 2 now matches 180; left 1 settles; a right row behind the watermark is late.
        right(&[(1, 18, 180), (2, 1, 10)]),
        left(&[(1, 25, 5)]),
        Step::Watermark(16),
    ];
    let rest = vec![
        right(&[(1, 22, 220), (3, 19, 190)]),
        Step::Watermark(30),
        right(&[(2, 31, 310)]),
        Step::End,
    ];
    let whole: Vec<Step> = first.iter().chain(&second).cloned().collect();
    let trip = assert_round_trip(&prototype, &[&whole], &rest, text);
    // Answers emitted before the snapshot are corrected after the restore.
    assert!(trip.output.contains(&"-5@25 -> 180@18".to_string()));
    assert!(trip.output.contains(&"-4@20 -> NULL".to_string()));
    let chain = assert_round_trip(&prototype, &[&first, &second], &rest, text);
    assert_eq!(chain.output, trip.output);
    assert!(chain.snapshots.iter().all(|s| s.kind == StateKind::Full));
}

#[test]
fn a_restored_forward_asof_join_holds_the_watermark_for_its_waiting_rows() {
    let prototype = join(AsofJoinSpec {
        tolerance_ms: Some(40),
        ..spec(AsofDirection::Forward)
    });
    let first = vec![
        left(&[(1, 15, 1), (1, 25, 2), (2, 26, 3)]),
        right(&[(1, 20, 200)]),
        Step::Watermark(21),
    ];
    let rest = vec![
        right(&[(1, 50, 500), (2, 60, 600)]),
        Step::Watermark(51),
        left(&[(2, 55, 4)]),
        Step::Watermark(WATERMARK_END_MS),
        Step::End,
    ];
    let trip = assert_round_trip(&prototype, &[&first], &rest, text);
    assert_eq!(
        trip.output,
        ["2@25 -> 500@50", "3@26 -> 600@60", "4@55 -> 600@60"]
    );
}

#[test]
fn a_restored_asof_join_without_keys_matches_across_all_rows() {
    let left_schema = side_schema("id", DataType::Int64);
    let right_schema = side_schema("price", DataType::Int64);
    let prototype = AsofJoinOperator::new(
        side(&left_schema, false),
        side(&right_schema, false),
        spec(AsofDirection::Backward),
        output_schema(&left_schema, &right_schema),
    )
    .expect("join");
    let first = vec![right(&[(1, 10, 100), (2, 12, 120)]), left(&[(3, 15, 1)])];
    let rest = vec![Step::Watermark(16), Step::End];
    let trip = assert_round_trip(&prototype, &[&first], &rest, text);
    assert_eq!(trip.output, ["1@15 -> 120@12"]);
}
