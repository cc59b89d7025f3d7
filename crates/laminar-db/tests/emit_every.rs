//! `EMIT EVERY`: a view releases its changelog once per interval of processing time, with
//! the changes between two ticks consolidated, and flushes what is pending when its input
//! ends. Folding the throttled changelog gives the same rows as the view itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use laminar_db::LaminarDB;

const WAIT: Duration = Duration::from_secs(30);
const BATCHES: i64 = 200;

fn database(interval: &str) -> LaminarDB {
    let db = LaminarDB::builder()
        .workers(2)
        .pin_workers(false)
        .in_memory()
        .expect("database starts");
    db.execute("CREATE SOURCE s (k VARCHAR NOT NULL, v BIGINT NOT NULL)")
        .expect("source");
    db.execute(&format!(
        "CREATE MATERIALIZED VIEW c AS SELECT k, count(*) AS n, sum(v) AS total FROM s \
         GROUP BY k EMIT EVERY INTERVAL '{interval}'"
    ))
    .expect("view");
    db
}

/// One row for key `a` and one for key `b`, both with value `v`.
fn pair(v: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, false),
        Field::new("v", DataType::Int64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["a", "b"])),
            Arc::new(Int64Array::from(vec![v, v])),
        ],
    )
    .expect("batch")
}

/// `(k, n, total)` rows of the view, sorted.
fn view_rows(db: &LaminarDB) -> Vec<(String, i64, i64)> {
    let batches = db.query("SELECT k, n, total FROM c").expect("query");
    let mut rows = Vec::new();
    for batch in &batches {
        let keys = batch.column(0).as_any().downcast_ref::<StringArray>();
        let counts = batch.column(1).as_any().downcast_ref::<Int64Array>();
        let totals = batch.column(2).as_any().downcast_ref::<Int64Array>();
        let (Some(keys), Some(counts), Some(totals)) = (keys, counts, totals) else {
            panic!("unexpected column types: {:?}", batch.schema());
        };
        for i in 0..batch.num_rows() {
            rows.push((keys.value(i).to_string(), counts.value(i), totals.value(i)));
        }
    }
    rows.sort();
    rows
}

fn expected(batches: i64) -> Vec<(String, i64, i64)> {
    let total = (0..batches).sum();
    vec![("a".into(), batches, total), ("b".into(), batches, total)]
}

#[test]
fn changes_are_consolidated_per_interval() {
    let db = database("300 milliseconds");
    let mut live = db.subscribe("c").expect("subscribe");
    let source = db.source("s").expect("handle");
    let started = Instant::now();
    for v in 0..BATCHES {
        source.push(pair(v)).expect("push");
    }
    // The view catches up on a tick, with no further input.
    let deadline = Instant::now() + WAIT;
    while view_rows(&db) != expected(BATCHES) {
        assert!(Instant::now() < deadline, "no tick released the changes");
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = started.elapsed();
    source.finish().expect("finish");

    let mut folded: HashMap<(String, i64, i64), i64> = HashMap::new();
    let mut change_rows = 0_usize;
    for change in live.blocking_iter() {
        let batch = change.batch();
        let keys = batch.column(0).as_any().downcast_ref::<StringArray>();
        let counts = batch.column(1).as_any().downcast_ref::<Int64Array>();
        let totals = batch.column(2).as_any().downcast_ref::<Int64Array>();
        let (Some(keys), Some(counts), Some(totals)) = (keys, counts, totals) else {
            panic!("unexpected column types: {:?}", batch.schema());
        };
        for i in 0..batch.num_rows() {
            let weight = change.weights().map_or(1, |w| w.value(i));
            let row = (keys.value(i).to_string(), counts.value(i), totals.value(i));
            *folded.entry(row).or_default() += weight;
            change_rows += 1;
        }
    }
    let mut folded: Vec<_> = folded
        .into_iter()
        .filter(|(_, weight)| *weight != 0)
        .map(|(row, weight)| {
            assert_eq!(weight, 1, "{row:?} folded to weight {weight}");
            row
        })
        .collect();
    folded.sort();
    assert_eq!(
        folded,
        expected(BATCHES),
        "the folded changelog is the view"
    );
    // Unthrottled, every batch would retract and insert both keys (800 rows). Throttled,
    // each worker's tick emits at most a retraction and an insertion per key it owns.
    let ticks = elapsed.as_millis() / 300 + 2;
    let bound = usize::try_from(ticks * 4).expect("small");
    assert!(
        change_rows <= bound,
        "{change_rows} change rows in {elapsed:?}: more than {bound}"
    );
}

#[test]
fn pending_changes_are_flushed_when_the_input_ends() {
    let db = database("1 hour");
    let source = db.source("s").expect("handle");
    for v in 0..10 {
        source.push(pair(v)).expect("push");
    }
    // Processed (a snapshot read waits for the pushed rows) but held until the next tick,
    // an hour from now.
    assert_eq!(view_rows(&db), Vec::new());
    let metrics = db.metrics();
    let view = metrics
        .queries
        .iter()
        .find(|q| q.name == "c")
        .expect("view stats");
    assert!(
        view.state_entries >= 2,
        "groups and pending changes are state"
    );
    source.finish().expect("finish");
    assert!(db.wait_finished(WAIT));
    assert_eq!(view_rows(&db), expected(10));
}
