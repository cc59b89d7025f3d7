//! Checkpoints taken while rows keep arriving are consistent cuts: the barrier passes
//! joins, unions and exchanges (aligning their inputs, holding back what follows it)
//! without losing, duplicating or reordering a row, and the state it snapshots matches the
//! log positions recorded when it was injected. Four workers, two sources pushed from
//! their own threads, a checkpoint as often as one completes; then the database is
//! abandoned without a clean shutdown and reopened (the last checkpoint taken during the
//! pushes, plus the logged rows after it), and every view is compared with the same
//! pushes through a database that never checkpoints.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Array, Int64Array, RecordBatch, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use laminar_db::{Durability, LaminarDB};

const WORKERS: usize = 4;
const PUSHES: i64 = 300;
const ROWS_PER_PUSH: i64 = 40;

const STATEMENTS: &[&str] = &[
    "CREATE SOURCE a (k BIGINT NOT NULL, v BIGINT NOT NULL, ts TIMESTAMP(3) NOT NULL, \
     WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)",
    "CREATE SOURCE b (k BIGINT NOT NULL, v BIGINT NOT NULL, ts TIMESTAMP(3) NOT NULL, \
     WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)",
    "CREATE MATERIALIZED VIEW totals AS SELECT k, count(*) AS n, sum(v) AS s FROM a GROUP BY k",
    "CREATE MATERIALIZED VIEW windows AS SELECT window_start, k, count(*) AS n, sum(v) AS s \
     FROM TUMBLE(a, ts, INTERVAL '1' SECOND) GROUP BY window_start, k",
    "CREATE MATERIALIZED VIEW pairs AS SELECT a.k, a.v AS av, b.v AS bv FROM a JOIN b \
     ON a.k = b.k AND b.ts BETWEEN a.ts - INTERVAL '1' SECOND AND a.ts + INTERVAL '1' SECOND",
    "CREATE MATERIALIZED VIEW both_sides AS SELECT k, count(*) AS n, sum(v) AS s FROM \
     (SELECT k, v FROM a UNION ALL SELECT k, v FROM b) GROUP BY k",
];

const VIEWS: &[&str] = &["totals", "windows", "pairs", "both_sides"];

/// Push `i` of source `side` (0 or 1): event time increasing by 10 ms a row, keys 0..37.
fn push(side: i64, i: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
    ]));
    let rows: Vec<i64> = (i * ROWS_PER_PUSH..(i + 1) * ROWS_PER_PUSH).collect();
    let keys: Vec<i64> = rows.iter().map(|r| (r * 7 + side) % 37).collect();
    let values: Vec<i64> = rows.iter().map(|r| r * 3 + side).collect();
    let times: Vec<i64> = rows.iter().map(|r| r * 10 + side * 3).collect();
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(keys)),
            Arc::new(Int64Array::from(values)),
            Arc::new(TimestampMillisecondArray::from(times)),
        ],
    )
    .expect("batch")
}

fn create(db: &LaminarDB) {
    for statement in STATEMENTS {
        db.execute(statement).expect("statement");
    }
}

/// Ends the sources and waits for every result.
fn finish(db: &LaminarDB) {
    db.finish_push_sources().expect("sources end");
    assert!(db.wait_finished(Duration::from_secs(60)), "queries finish");
}

/// Checkpoints that must complete before the pushers push their last rows, however fast
/// they are, so that several cuts fall in the middle of the input.
const CHECKPOINTS_DURING: usize = 3;

/// Pushes both sources from their own threads; `during` runs on this thread until both
/// are done, and the pushers hold their last pushes until it has run
/// `CHECKPOINTS_DURING` times. Returns how many times it ran.
fn push_all(db: &LaminarDB, mut during: impl FnMut()) -> usize {
    let done = Arc::new(AtomicBool::new(false));
    let ran = Arc::new(AtomicUsize::new(0));
    let pushers: Vec<_> = [("a", 0), ("b", 1)]
        .into_iter()
        .map(|(name, side)| {
            let source = db.source(name).expect("source");
            let ran = Arc::clone(&ran);
            std::thread::spawn(move || {
                for i in 0..PUSHES {
                    if i == PUSHES - 10 {
                        while ran.load(Ordering::SeqCst) < CHECKPOINTS_DURING {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    source.push(push(side, i)).expect("push");
                }
            })
        })
        .collect();
    let waiter = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            for pusher in pushers {
                pusher.join().expect("pusher");
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    while !done.load(Ordering::SeqCst) {
        during();
        ran.fetch_add(1, Ordering::SeqCst);
    }
    waiter.join().expect("waiter");
    ran.load(Ordering::SeqCst)
}

/// Every view's rows as text, counted.
fn results(db: &LaminarDB) -> BTreeMap<String, BTreeMap<String, usize>> {
    VIEWS
        .iter()
        .map(|view| {
            let mut rows = BTreeMap::new();
            for batch in db.query(&format!("SELECT * FROM {view}")).expect("query") {
                for row in 0..batch.num_rows() {
                    let text: Vec<String> = batch
                        .columns()
                        .iter()
                        .map(|column| format_value(column.as_ref(), row))
                        .collect();
                    *rows.entry(text.join(",")).or_default() += 1;
                }
            }
            ((*view).to_string(), rows)
        })
        .collect()
}

fn format_value(column: &dyn Array, row: usize) -> String {
    datafusion::arrow::util::display::ArrayFormatter::try_new(
        column,
        &datafusion::arrow::util::display::FormatOptions::default(),
    )
    .expect("formatter")
    .value(row)
    .to_string()
}

fn open(dir: &Path) -> LaminarDB {
    LaminarDB::builder()
        .workers(WORKERS)
        .pin_workers(false)
        .checkpoint_interval(None)
        .durability(Durability::Group)
        .open(dir)
        .expect("database opens")
}

#[test]
fn checkpoints_taken_while_rows_arrive_are_consistent_cuts() {
    let oracle_db = LaminarDB::builder()
        .workers(WORKERS)
        .pin_workers(false)
        .in_memory()
        .expect("in-memory database");
    create(&oracle_db);
    push_all(&oracle_db, || std::thread::sleep(Duration::from_millis(1)));
    finish(&oracle_db);
    let expected = results(&oracle_db);
    for (view, rows) in &expected {
        assert!(!rows.is_empty(), "view {view} is empty");
    }

    let dir = tempfile::tempdir().expect("temp dir");
    let db = open(dir.path());
    create(&db);
    let checkpoints = push_all(&db, || {
        db.checkpoint().expect("checkpoint under load");
    });
    assert!(checkpoints >= CHECKPOINTS_DURING);
    // Abandoned without its final checkpoint: the reopened database starts from the last
    // checkpoint taken during the pushes and replays the rows logged after it.
    std::mem::forget(db);
    let db = open(dir.path());
    assert!(
        db.recovery_warnings().is_empty(),
        "{:?}",
        db.recovery_warnings()
    );
    create(&db);
    finish(&db);
    let recovered = results(&db);
    for (view, rows) in &expected {
        let got = &recovered[view];
        let differing: Vec<String> = rows
            .iter()
            .filter(|(row, count)| got.get(*row) != Some(*count))
            .map(|(row, count)| format!("{row} x{count} (got {:?})", got.get(row)))
            .chain(
                got.iter()
                    .filter(|(row, _)| !rows.contains_key(*row))
                    .map(|(row, count)| format!("{row} x{count} (not expected)")),
            )
            .collect();
        assert!(
            differing.is_empty(),
            "view {view}: {} rows differ after recovery, e.g. {:?}",
            differing.len(),
            &differing[..differing.len().min(5)]
        );
    }
}
