//! Tests of resuming DATAGEN sources at a position through the public entry points: the
//! rows before a split plus the rows after it are the rows of a straight read, for every
//! generator, bounded or not; split at a batch boundary, partitions match too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::record_batch::RecordBatch;

use crate::resume_checks::{
    assert_split_equals_straight, read_to_end, rows_in_order, split_read, take_rows,
};
use crate::{create_source, ConnectorOptions, SourceConnector, SourcePosition};

fn source(pairs: &[(&str, &str)]) -> Box<dyn SourceConnector> {
    let options = ConnectorOptions::new(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    create_source("datagen", &options, None, Arc::default()).unwrap()
}

/// `first` then `second`, either possibly absent.
fn joined(first: Option<RecordBatch>, second: Option<RecordBatch>) -> Option<RecordBatch> {
    match (first, second) {
        (Some(a), Some(b)) => Some(concat_batches(&a.schema(), &[a, b]).unwrap()),
        (a, b) => a.or(b),
    }
}

const BATCH_ROWS: usize = 16;

#[test]
fn generators_resume_after_any_number_of_rows() {
    let configs: [&[(&str, &str)]; 4] = [
        &[
            ("kind", "trades"),
            ("events", "300"),
            ("partitions", "3"),
            ("symbols", "5"),
        ],
        &[
            ("kind", "nexmark"),
            ("table", "bid"),
            ("events", "400"),
            ("partitions", "2"),
        ],
        &[
            ("kind", "nexmark"),
            ("table", "auction"),
            ("events", "1000"),
            ("partitions", "3"),
        ],
        &[("kind", "nexmark"), ("table", "person"), ("events", "5000")],
    ];
    for config in configs {
        let source = source(config);
        let straight = rows_in_order(&read_to_end(source.open(BATCH_ROWS).unwrap().as_mut()));
        let total = straight.as_ref().map_or(0, RecordBatch::num_rows);
        assert!(total > 3 * BATCH_ROWS, "{config:?}");
        for rows in [0, 1, 15, 16, 17, 40, 48, total - 1, total, total + 1] {
            let (before, after) = split_read(source.as_ref(), BATCH_ROWS, rows);
            assert_eq!(
                joined(rows_in_order(&before), rows_in_order(&after)),
                straight,
                "{config:?} split after {rows} rows"
            );
            if rows % BATCH_ROWS == 0 {
                // At a batch boundary each partition continues as in a straight read.
                assert_split_equals_straight(source.as_ref(), BATCH_ROWS, rows);
            }
        }
    }
}

#[test]
fn an_unbounded_generator_resumes_its_price_walk() {
    let source = source(&[("kind", "trades"), ("partitions", "2"), ("seed", "9")]);
    let straight = take_rows(source.open(BATCH_ROWS).unwrap().as_mut(), 500).0;
    for rows in [7, 100, 333] {
        let (before, position) = take_rows(source.open(BATCH_ROWS).unwrap().as_mut(), rows);
        let mut reopened = source.open_at(BATCH_ROWS, &position).unwrap();
        let after = take_rows(reopened.as_mut(), 500 - rows).0;
        assert_eq!(
            joined(rows_in_order(&before), rows_in_order(&after)),
            rows_in_order(&straight),
            "split after {rows} rows"
        );
    }
}

#[test]
fn a_finished_generator_resumes_to_nothing() {
    let source = source(&[("kind", "nexmark"), ("table", "bid"), ("events", "100")]);
    let (before, after) = split_read(source.as_ref(), BATCH_ROWS, 1_000);
    assert_eq!(rows_in_order(&before).unwrap().num_rows(), 92);
    assert!(after.is_empty(), "{after:?}");
}

/// A position of `rows` rows in each of `partitions`, as a checkpoint stores it.
fn position(partitions: &[(u32, u64)]) -> SourcePosition {
    let entries: serde_json::Map<String, serde_json::Value> = partitions
        .iter()
        .map(|(partition, rows)| {
            (
                partition.to_string(),
                serde_json::json!({"id": partition.to_string(), "rows": rows, "ended": false}),
            )
        })
        .collect();
    serde_json::from_value(serde_json::json!({ "partitions": entries })).unwrap()
}

#[test]
fn a_position_the_generator_cannot_have_reached_is_refused() {
    let source = source(&[
        ("kind", "nexmark"),
        ("table", "auction"),
        ("events", "100"),
        ("partitions", "2"),
    ]);
    let error = source
        .open_at(BATCH_ROWS, &position(&[(7, 1)]))
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        error,
        "cannot resume DATAGEN source 'nexmark table auction' from its checkpoint: \
         partition 7: the generator has 2 partitions"
    );
    let error = source
        .open_at(BATCH_ROWS, &position(&[(0, 4), (1, 3)]))
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.ends_with("7 rows were read, but its 100 events make 6"),
        "{error}"
    );
}

#[test]
fn a_paced_generator_does_not_wait_for_the_rows_before_its_position() {
    // At 100 events per second the 2000 trades before the position took 20 seconds.
    let source = source(&[("kind", "trades"), ("rate", "100")]);
    let started = Instant::now();
    let mut reader = source
        .open_at(BATCH_ROWS, &position(&[(0, 2_000)]))
        .unwrap();
    let (events, _) = take_rows(reader.as_mut(), 1);
    assert_eq!(rows_in_order(&events).unwrap().num_rows(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}
