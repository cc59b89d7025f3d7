//! Recovery from a data directory: a checkpoint restores every query's state, rows pushed
//! after it come back from the write-ahead log, and the result equals what an
//! uninterrupted database computes. A "crash" here abandons a database without its clean
//! shutdown (no final checkpoint); the process-kill tests are in `crash.rs`.

use std::path::Path;

use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use laminar_db::{Durability, LaminarDB};
use std::sync::Arc;

fn open(dir: &Path, workers: usize) -> LaminarDB {
    LaminarDB::builder()
        .workers(workers)
        .pin_workers(false)
        .checkpoint_interval(None)
        .durability(Durability::Group)
        .open(dir)
        .expect("database opens")
}

/// Leaves `db` running without a clean shutdown, as a crash would (its threads stay idle
/// until the test process ends).
fn crash(db: LaminarDB) {
    std::mem::forget(db);
}

fn batch(keys: &[i64], values: &[i64]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(keys.to_vec())),
            Arc::new(Int64Array::from(values.to_vec())),
        ],
    )
    .expect("batch")
}

/// The `(k, count, sum)` rows of view `agg`, sorted.
fn totals(db: &LaminarDB) -> Vec<(i64, i64, i64)> {
    let batches = db
        .query("SELECT k, c, s FROM agg ORDER BY k")
        .expect("query agg");
    let mut rows = Vec::new();
    for b in &batches {
        let col = |i: usize| {
            b.column(i)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("BIGINT column")
                .clone()
        };
        let (k, c, s) = (col(0), col(1), col(2));
        for i in 0..b.num_rows() {
            rows.push((k.value(i), c.value(i), s.value(i)));
        }
    }
    rows.sort_unstable();
    rows
}

fn create(db: &LaminarDB) {
    db.execute("CREATE SOURCE s (k BIGINT NOT NULL, v BIGINT NOT NULL)")
        .expect("source");
    db.execute(
        "CREATE MATERIALIZED VIEW agg AS SELECT k, count(*) AS c, sum(v) AS s FROM s GROUP BY k",
    )
    .expect("view");
}

/// The batches pushed, deterministic: batch `i` touches keys `i % 7 ..`.
fn pushes(count: usize) -> Vec<RecordBatch> {
    (0..count)
        .map(|i| {
            let keys: Vec<i64> = (0..50).map(|r| ((i * 3 + r) % 23) as i64).collect();
            let values: Vec<i64> = (0..50).map(|r| (i * 100 + r) as i64).collect();
            batch(&keys, &values)
        })
        .collect()
}

fn oracle(batches: &[RecordBatch]) -> Vec<(i64, i64, i64)> {
    let db = LaminarDB::builder()
        .workers(2)
        .pin_workers(false)
        .in_memory()
        .expect("in-memory database");
    create(&db);
    let source = db.source("s").expect("source s");
    for b in batches {
        source.push(b.clone()).expect("push");
    }
    totals(&db)
}

#[test]
fn state_and_logged_rows_survive_a_crash_after_a_checkpoint() {
    let dir = tempfile::tempdir().expect("temp dir");
    let all = pushes(40);
    let db = open(dir.path(), 2);
    create(&db);
    let source = db.source("s").expect("source s");
    for b in &all[..20] {
        source.push(b.clone()).expect("push");
    }
    db.checkpoint().expect("checkpoint");
    for b in &all[20..30] {
        source.push(b.clone()).expect("push");
    }
    crash(db);

    let db = open(dir.path(), 2);
    // The script is run again on restart: identical statements are no-ops.
    create(&db);
    let source = db.source("s").expect("source s");
    assert_eq!(
        source.logged_pushes(),
        30,
        "every acknowledged push is in the log"
    );
    for b in &all[30..] {
        source.push(b.clone()).expect("push");
    }
    assert_eq!(totals(&db), oracle(&all));
}

#[test]
fn a_second_checkpoint_writes_a_delta_and_recovery_merges_the_chain() {
    let dir = tempfile::tempdir().expect("temp dir");
    let all = pushes(30);
    let db = open(dir.path(), 1);
    create(&db);
    let source = db.source("s").expect("source s");
    for b in &all[..10] {
        source.push(b.clone()).expect("push");
    }
    let first = db.checkpoint().expect("first checkpoint");
    assert!(first.full_states > 0, "{first:?}");
    for b in &all[10..20] {
        source.push(b.clone()).expect("push");
    }
    let second = db.checkpoint().expect("second checkpoint");
    assert!(second.delta_states > 0, "{second:?}");
    assert_eq!(second.epoch, first.epoch + 1);
    crash(db);

    let db = open(dir.path(), 1);
    create(&db);
    let source = db.source("s").expect("source s");
    for b in &all[20..] {
        source.push(b.clone()).expect("push");
    }
    assert_eq!(totals(&db), oracle(&all));
}

#[test]
fn a_changed_definition_is_refused_and_workers_must_match() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = open(dir.path(), 2);
    create(&db);
    db.checkpoint().expect("checkpoint");
    drop(db);

    let db = open(dir.path(), 2);
    let error = db
        .execute("CREATE MATERIALIZED VIEW agg AS SELECT k, count(*) AS c FROM s GROUP BY k")
        .expect_err("a changed definition is an error");
    let message = error.to_string();
    assert!(message.contains("agg"), "{message}");
    assert!(message.contains("another definition"), "{message}");
    drop(db);

    let error = LaminarDB::builder()
        .workers(1)
        .pin_workers(false)
        .checkpoint_interval(None)
        .open(dir.path())
        .expect_err("a checkpoint of 2 workers does not open with 1");
    assert!(error.to_string().contains("2 workers"), "{error}");
}

#[test]
fn checkpoint_needs_a_data_directory() {
    let db = LaminarDB::builder()
        .workers(1)
        .pin_workers(false)
        .in_memory()
        .expect("in-memory database");
    let error = db.execute("CHECKPOINT").expect_err("no data directory");
    assert!(error.to_string().contains("data directory"), "{error}");
}

/// Flips one bit in the middle of `path`.
fn flip_bit(path: &Path) {
    let mut bytes = std::fs::read(path).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(path, bytes).expect("write");
}

fn manifests(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(dir.join("checkpoints"))
        .expect("checkpoints directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("manifest-") && !n.contains(".tmp"))
        })
        .collect();
    found.sort();
    found
}

#[test]
fn a_corrupt_newest_checkpoint_falls_back_to_the_previous_one_and_its_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let all = pushes(30);
    let db = open(dir.path(), 2);
    create(&db);
    let source = db.source("s").expect("source s");
    for b in &all[..10] {
        source.push(b.clone()).expect("push");
    }
    db.checkpoint().expect("first checkpoint");
    for b in &all[10..20] {
        source.push(b.clone()).expect("push");
    }
    db.checkpoint().expect("second checkpoint");
    for b in &all[20..25] {
        source.push(b.clone()).expect("push");
    }
    crash(db);
    let found = manifests(dir.path());
    assert_eq!(found.len(), 2, "two checkpoints are kept: {found:?}");
    flip_bit(&found[1]);

    let db = open(dir.path(), 2);
    let warnings = db.recovery_warnings();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains(&found[1].file_name().unwrap().to_string_lossy().to_string())),
        "the warning names the corrupt manifest: {warnings:?}"
    );
    create(&db);
    let source = db.source("s").expect("source s");
    for b in &all[25..] {
        source.push(b.clone()).expect("push");
    }
    assert_eq!(totals(&db), oracle(&all));
}

#[test]
fn no_valid_checkpoint_left_refuses_to_open_naming_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = open(dir.path(), 1);
    create(&db);
    db.source("s")
        .expect("source s")
        .push(batch(&[1], &[1]))
        .expect("push");
    db.checkpoint().expect("checkpoint");
    crash(db);
    for manifest in manifests(dir.path()) {
        flip_bit(&manifest);
    }
    let error = LaminarDB::builder()
        .workers(1)
        .pin_workers(false)
        .checkpoint_interval(None)
        .open(dir.path())
        .expect_err("nothing valid remains");
    assert!(error.to_string().contains("manifest-"), "{error}");
}

#[test]
fn a_single_file_sink_is_refused_under_a_data_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = open(dir.path(), 1);
    create(&db);
    let file = dir.path().join("out.csv");
    let error = db
        .execute(&format!(
            "CREATE SINK out INTO FILE (path = '{}', format = 'csv') FROM agg",
            file.display()
        ))
        .expect_err("a single file cannot be written exactly once");
    let message = error.to_string();
    assert!(message.contains("ending in '/'"), "{message}");
    db.execute(&format!(
        "CREATE SINK out INTO FILE (path = '{}/', format = 'csv') FROM agg",
        file.display()
    ))
    .expect("a directory can");
}

/// A checkpoint's barrier goes into every source's rings; a source that already finished
/// (a file read to its end) has none to deliver, and the checkpoint still completes, with
/// the sink's rows of the epoch committed.
#[test]
fn a_checkpoint_completes_after_a_file_source_finished() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("input.csv");
    std::fs::write(&input, "shop,amount\n1,2\n3,4\n1,5\n").expect("input written");
    let out = dir.path().join("out/");
    let db = open(dir.path(), 2);
    db.execute(&format!(
        "CREATE SOURCE sales (shop BIGINT NOT NULL, amount BIGINT NOT NULL) \
         FROM FILE (path = '{}', format = 'csv')",
        input.display()
    ))
    .expect("source");
    db.execute(&format!(
        "CREATE SINK totals INTO FILE (path = '{}', format = 'csv') AS \
         SELECT shop, sum(amount) AS total FROM sales GROUP BY shop",
        out.display()
    ))
    .expect("sink");
    // The reader finishes the file on its own; wait until the sink holds its rows.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut info = db.checkpoint().expect("first checkpoint");
    let mut committed = String::new();
    while std::time::Instant::now() < deadline {
        // The directory appears with the first committed part.
        committed = std::fs::read_dir(&out)
            .map(|entries| {
                entries
                    .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path()).ok())
                    .collect()
            })
            .unwrap_or_default();
        if committed.lines().filter(|l| !l.starts_with("shop")).count() >= 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        info = db.checkpoint().expect("checkpoint after the file ended");
    }
    assert!(info.epoch >= 1);
    let mut rows: Vec<&str> = committed
        .lines()
        .filter(|l| !l.starts_with("shop"))
        .collect();
    rows.sort_unstable();
    assert_eq!(rows, ["1,7,+", "3,4,+"], "committed parts: {committed}");
}

/// A table loaded `FROM FILE` is read once, at creation: a reopened database restores its
/// rows (and later `INSERT`s) from the checkpoint and log, even with the file gone.
#[test]
fn a_table_loaded_from_a_file_is_restored_without_reading_it_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("rates.csv");
    std::fs::write(&file, "currency,rate\nEUR,2.0\nGBP,4.0\n").expect("file written");
    let create = format!(
        "CREATE TABLE rates (currency VARCHAR PRIMARY KEY, rate DOUBLE) \
         FROM FILE (path = '{}', format = 'csv')",
        file.display()
    );
    let rows = |db: &LaminarDB| -> Vec<String> {
        let batches = db
            .query("SELECT currency, CAST(rate AS VARCHAR) FROM rates ORDER BY currency")
            .expect("query rates");
        let mut rows = Vec::new();
        for b in &batches {
            let text =
                datafusion::arrow::util::pretty::pretty_format_batches(std::slice::from_ref(b))
                    .expect("format")
                    .to_string();
            rows.extend(
                text.lines()
                    .filter(|l| l.starts_with("| ") && !l.contains("currency"))
                    .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")),
            );
        }
        rows
    };
    {
        let db = open(dir.path(), 2);
        db.execute(&create).expect("table from file");
        db.checkpoint().expect("checkpoint");
        db.execute("INSERT INTO rates VALUES ('EUR', 3.0)")
            .expect("insert after the checkpoint");
        crash(db);
    }
    std::fs::remove_file(&file).expect("file removed");
    let db = open(dir.path(), 2);
    db.execute(&create)
        .expect("the same statement again is a no-op");
    assert_eq!(rows(&db), ["| EUR | 3.0 |", "| GBP | 4.0 |"]);
}

/// The logs are shared by every source: a source dropped and created again under the same
/// name, with no checkpoint between, gets back only the rows pushed into it, not its
/// predecessor's, and a source pushed from two threads (two logs) gets back every row.
#[test]
fn a_recreated_source_replays_only_its_own_rows_and_every_thread_s_rows_come_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let all = pushes(40);
    let db = open(dir.path(), 2);
    create(&db);
    let source = db.source("s").expect("source s");
    for b in &all[..10] {
        source.push(b.clone()).expect("push");
    }
    db.execute("DROP MATERIALIZED VIEW agg").expect("drop view");
    db.execute("DROP SOURCE s").expect("drop source");
    create(&db);
    let source = db.source("s").expect("source s again");
    // Two threads: each appends to its own worker log.
    std::thread::scope(|scope| {
        let halves = [&all[10..25], &all[25..]];
        for half in halves {
            let source = db.source("s").expect("source s");
            scope.spawn(move || {
                for b in half {
                    source.push(b.clone()).expect("push");
                }
            });
        }
    });
    assert_eq!(source.logged_pushes(), 30);
    crash(db);

    let db = open(dir.path(), 2);
    create(&db);
    assert_eq!(db.source("s").expect("source s").logged_pushes(), 30);
    assert_eq!(totals(&db), oracle(&all[10..]));
    let logs: Vec<String> = std::fs::read_dir(dir.path().join("wal"))
        .expect("log directory")
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().to_string()))
        .collect();
    assert!(
        logs.contains(&"worker-0".to_string()) && logs.contains(&"worker-1".to_string()),
        "{logs:?}"
    );
}

/// Windows closing with the watermark, aggregated in two phases on two workers: partial
/// states held on each worker at the checkpoint come back with it.
const WINDOWED: &str = "CREATE MATERIALIZED VIEW wagg AS \
     SELECT k, count(*) AS c, sum(v) AS s, window_start \
     FROM TUMBLE(w, ts, INTERVAL '1' SECOND) GROUP BY k, window_start, window_end \
     EMIT ON WINDOW CLOSE";

fn create_windowed(db: &LaminarDB) {
    db.execute(
        "CREATE SOURCE w (k BIGINT NOT NULL, v BIGINT NOT NULL, ts TIMESTAMP(3) NOT NULL, \
         WATERMARK FOR ts AS ts - INTERVAL '500' MILLISECOND)",
    )
    .expect("source");
    db.execute(WINDOWED).expect("view");
}

/// Batch `i`: 50 rows of 23 keys, at `i * 100` ms (ten batches per window).
fn timed_pushes(count: usize) -> Vec<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Millisecond, None),
            false,
        ),
    ]));
    (0..count)
        .map(|i| {
            let keys: Vec<i64> = (0..50).map(|r| ((i * 3 + r) % 23) as i64).collect();
            let values: Vec<i64> = (0..50).map(|r| (i * 100 + r) as i64).collect();
            let times: Vec<i64> = (0..50).map(|r| (i * 100 + r) as i64).collect();
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(Int64Array::from(keys)),
                    Arc::new(Int64Array::from(values)),
                    Arc::new(datafusion::arrow::array::TimestampMillisecondArray::from(
                        times,
                    )),
                ],
            )
            .expect("batch")
        })
        .collect()
}

/// Every row of view `wagg` once its source finished, as text, sorted.
fn finished_windows(db: &LaminarDB) -> Vec<String> {
    db.source("w").expect("source w").finish().expect("finish");
    assert!(db.wait_finished(std::time::Duration::from_secs(30)));
    let mut rows = Vec::new();
    for batch in db.query("SELECT * FROM wagg").expect("query wagg") {
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = batch
                .columns()
                .iter()
                .map(|c| {
                    datafusion::arrow::util::display::array_value_to_string(c, row)
                        .expect("printable")
                })
                .collect();
            rows.push(cells.join(" "));
        }
    }
    rows.sort();
    rows
}

#[test]
fn windows_aggregated_in_two_phases_survive_a_crash_after_a_checkpoint() {
    let all = timed_pushes(40);
    let expected = {
        let db = LaminarDB::builder()
            .workers(2)
            .pin_workers(false)
            .in_memory()
            .expect("in-memory database");
        create_windowed(&db);
        let source = db.source("w").expect("source w");
        for b in &all {
            source.push(b.clone()).expect("push");
        }
        finished_windows(&db)
    };
    assert_eq!(expected.len(), 4 * 23, "four windows of 23 keys");

    let dir = tempfile::tempdir().expect("temp dir");
    let db = open(dir.path(), 2);
    create_windowed(&db);
    let explained = db
        .execute(&format!("EXPLAIN {}", WINDOWED.replace(" wagg ", " x ")))
        .expect("explain");
    let plan = format!("{:?}", explained.batches().expect("rows"));
    assert!(plan.contains("merging partial states"), "{plan}");
    let source = db.source("w").expect("source w");
    // Watermark 1.149 s: window [0 s, 1 s) closed, merged by its owners; window [1 s, 2 s)
    // open, its rows split between both workers' partial states.
    for b in &all[..17] {
        source.push(b.clone()).expect("push");
    }
    db.sync().expect("sync");
    db.checkpoint().expect("checkpoint");
    for b in &all[17..25] {
        source.push(b.clone()).expect("push");
    }
    crash(db);

    let db = open(dir.path(), 2);
    create_windowed(&db);
    let source = db.source("w").expect("source w");
    for b in &all[25..] {
        source.push(b.clone()).expect("push");
    }
    assert_eq!(finished_windows(&db), expected);
}
