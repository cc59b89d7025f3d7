//! End-to-end tests through the public API: push, subscribe and query; the same answer at 1
//! and 4 workers (and from DataFusion in batch); files in and out; the generator; catalog
//! persistence; and the errors users meet.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Array, Int64Array, StringArray, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use laminar_db::{DbError, ExecuteResult, LaminarDB};

const WAIT: Duration = Duration::from_secs(30);

fn db(workers: usize) -> LaminarDB {
    LaminarDB::builder()
        .workers(workers)
        .pin_workers(false)
        .in_memory()
        .expect("database starts")
}

/// A batch of one nullable BIGINT column `x`.
fn x_batch(values: Vec<i64>) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)])),
        vec![Arc::new(Int64Array::from(values))],
    )
    .expect("batch")
}

/// The values of a change batch's first (BIGINT) column.
fn x_values(batch: &laminar_db::ChangeBatch) -> Vec<i64> {
    let column = batch.batch().column(0);
    let column = column
        .as_any()
        .downcast_ref::<Int64Array>()
        .expect("BIGINT");
    column.values().to_vec()
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

fn text(batches: &[RecordBatch]) -> String {
    pretty_format_batches(batches).expect("formats").to_string()
}

fn events_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("kind", DataType::Utf8, true),
        Field::new("amount", DataType::Int64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
    ]))
}

/// Deterministic pseudo-random events: ids ascending, kinds from a small set, some NULLs.
fn events(start: i64, count: usize, seed: u64) -> RecordBatch {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let mut next = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as i64
    };
    let kinds = ["view", "click", "buy", "Refund"];
    let mut ids = Vec::with_capacity(count);
    let mut kind = Vec::with_capacity(count);
    let mut amount = Vec::with_capacity(count);
    let mut ts = Vec::with_capacity(count);
    for i in 0..count {
        let r = next();
        ids.push(start + i as i64);
        kind.push((r % 11 != 0).then(|| kinds[(r % 4) as usize]));
        amount.push((r % 13 != 0).then_some(r % 1000 - 100));
        ts.push(Some(1_704_067_200_000 + (start + i as i64) * 10 - r % 500));
    }
    RecordBatch::try_new(
        events_schema(),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(kind)),
            Arc::new(Int64Array::from(amount)),
            Arc::new(TimestampMillisecondArray::from(ts)),
        ],
    )
    .expect("valid batch")
}

const EVENTS_DDL: &str =
    "CREATE SOURCE events (id BIGINT NOT NULL, kind VARCHAR, amount BIGINT, ts TIMESTAMP,
    WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)";

const SHAPED_QUERY: &str = "SELECT id, lower(kind) AS kind,
        CASE WHEN amount IS NULL THEN 'unknown' WHEN amount < 0 THEN 'refund' WHEN amount > 500 THEN 'large' ELSE 'normal' END AS size,
        CAST(amount AS DOUBLE) / 100.0 AS dollars, date_trunc('second', ts) AS second
    FROM events WHERE kind IS NOT NULL AND (amount > 0 OR kind = 'Refund')";

/// Runs the shaped query over 20k events pushed in uneven batches, returning the view sorted.
fn shaped_result(workers: usize) -> Vec<RecordBatch> {
    let db = db(workers);
    db.execute(EVENTS_DDL).expect("source");
    db.execute(&format!(
        "CREATE MATERIALIZED VIEW shaped AS {SHAPED_QUERY}"
    ))
    .expect("view");
    let source = db.source("events").expect("handle");
    let mut start = 0;
    for (i, size) in [1, 7, 100, 3_000, 64, 8_192, 5_000, 3_636]
        .iter()
        .enumerate()
    {
        source.push(events(start, *size, i as u64)).expect("push");
        start += *size as i64;
    }
    db.query("SELECT * FROM shaped ORDER BY id").expect("query")
}

#[test]
fn same_result_at_one_and_four_workers_and_in_datafusion_batch() {
    let one = shaped_result(1);
    let four = shaped_result(4);
    assert!(
        rows(&one) > 5_000,
        "the filter keeps a good share of 20k rows, got {}",
        rows(&one)
    );
    assert_eq!(text(&one), text(&four));

    // The same SQL run by DataFusion over the same rows, in batch.
    let ctx = SessionContext::new();
    let mut batches = Vec::new();
    let mut start = 0;
    for (i, size) in [1, 7, 100, 3_000, 64, 8_192, 5_000, 3_636]
        .iter()
        .enumerate()
    {
        batches.push(events(start, *size, i as u64));
        start += *size as i64;
    }
    let table = MemTable::try_new(events_schema(), vec![batches]).expect("table");
    ctx.register_table("events", Arc::new(table))
        .expect("register");
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    let expected = runtime
        .block_on(async {
            ctx.sql(&format!("{SHAPED_QUERY} ORDER BY id"))
                .await?
                .collect()
                .await
        })
        .expect("batch answer");
    assert_eq!(text(&one), text(&expected));
}

#[derive(serde::Serialize)]
struct Event {
    id: i64,
    kind: &'static str,
    amount: i64,
    ts: i64,
}

#[test]
fn push_subscribe_and_query() {
    let db = db(2);
    db.execute(EVENTS_DDL).expect("source");
    db.execute("CREATE STREAM buys AS SELECT id, amount FROM events WHERE kind = 'buy'")
        .expect("stream");
    db.execute(
        "CREATE MATERIALIZED VIEW big_buys AS SELECT id, amount FROM buys WHERE amount > 100",
    )
    .expect("view");
    let mut live = db.subscribe("buys").expect("subscribe");

    let source = db.source("events").expect("handle");
    source.push(events(0, 1_000, 42)).expect("push");

    source
        .push_rows(&[
            Event {
                id: 5_000,
                kind: "buy",
                amount: 999,
                ts: 1_704_067_200_000,
            },
            Event {
                id: 5_001,
                kind: "view",
                amount: 1,
                ts: 1_704_067_200_001,
            },
        ])
        .expect("typed push");

    let expected_buys = {
        let batch = events(0, 1_000, 42);
        let kinds = batch
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .expect("kinds");
        (0..batch.num_rows())
            .filter(|i| kinds.is_valid(*i) && kinds.value(*i) == "buy")
            .count()
            + 1
    };
    let big = db
        .query("SELECT id, amount FROM big_buys WHERE id = 5000")
        .expect("query");
    assert_eq!(rows(&big), 1, "the typed row is visible right after push");

    // End the input: the subscription delivers everything and then ends.
    source.finish().expect("finish");
    let received: usize = live.blocking_iter().map(|b| b.num_rows()).sum();
    assert_eq!(received, expected_buys);
    assert!(
        db.wait_finished(WAIT),
        "queries over a finished source finish"
    );
    assert!(
        matches!(source.push(events(0, 1, 1)), Err(DbError::Core(_))),
        "a finished source refuses rows"
    );

    let metrics = db.metrics();
    assert_eq!(metrics.sources[0].rows, 1_002);
    let buys = metrics
        .queries
        .iter()
        .find(|q| q.name == "buys")
        .expect("buys stats");
    assert_eq!(buys.rows_out as usize, expected_buys);
    assert!(buys.finished);
    assert!(
        buys.watermark_ms.is_none(),
        "after the end the watermark is past every event"
    );
}

#[test]
fn subscription_is_an_async_stream() {
    let db = db(1);
    db.execute("CREATE SOURCE s (x BIGINT)").expect("source");
    db.execute("CREATE STREAM doubled AS SELECT x * 2 AS y FROM s")
        .expect("stream");
    let mut live = db.subscribe("doubled").expect("subscribe");
    db.execute("INSERT INTO s VALUES (1), (2), (3)")
        .expect("insert");
    db.source("s").expect("handle").finish().expect("finish");
    let all: Vec<i64> = futures::executor::block_on(async {
        let mut values = Vec::new();
        while let Some(change) = live.next().await {
            let ys = change
                .batch()
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("ys")
                .clone();
            values.extend(ys.iter().flatten());
        }
        values
    });
    assert_eq!(all, vec![2, 4, 6]);
}

#[test]
fn pushed_batches_are_checked_against_the_schema() {
    let db = db(1);
    db.execute(EVENTS_DDL).expect("source");
    db.execute("CREATE MATERIALIZED VIEW all_events AS SELECT * FROM events")
        .expect("view");
    let source = db.source("events").expect("handle");

    let wrong_type = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("amount", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1])),
            Arc::new(StringArray::from(vec!["12"])),
        ],
    )
    .expect("batch");
    let error = source
        .push(wrong_type)
        .expect_err("type mismatch")
        .to_string();
    assert_eq!(
        error,
        "source events, column amount: expected BIGINT, got VARCHAR"
    );

    let extra = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("colour", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1])),
            Arc::new(StringArray::from(vec!["red"])),
        ],
    )
    .expect("batch");
    let error = source.push(extra).expect_err("extra column").to_string();
    assert!(
        error.contains("the batch has column 'colour', which the source does not declare"),
        "{error}"
    );

    let missing_key = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "amount",
            DataType::Int64,
            true,
        )])),
        vec![Arc::new(Int64Array::from(vec![1]))],
    )
    .expect("batch");
    let error = source
        .push(missing_key)
        .expect_err("missing NOT NULL column")
        .to_string();
    assert!(error.contains("lacks column id"), "{error}");

    // Only a subset given: the other nullable columns are NULL.
    let subset = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)])),
        vec![Arc::new(Int64Array::from(vec![7]))],
    )
    .expect("batch");
    source.push(subset).expect("subset push");
    let all = db.query("SELECT id, kind FROM all_events").expect("query");
    assert_eq!(text(&all).matches("| 7  |").count(), 1, "{}", text(&all));
    assert_eq!(rows(&all), 1, "rejected batches left nothing behind");
}

fn laminar_core_capacity() -> usize {
    // Subscriber channel + the batch the worker is blocked delivering + the ingress ring.
    256 + 1 + 64
}

#[test]
fn a_full_queue_is_backpressure() {
    let db = db(1);
    db.execute("CREATE SOURCE s (x BIGINT)").expect("source");
    db.execute("CREATE STREAM copy AS SELECT x FROM s")
        .expect("stream");
    // A subscriber that does not read fills its channel, then the worker waits on it, then
    // the source's queue fills: a non-blocking push reports it.
    let stalled = db.subscribe("copy").expect("subscribe");
    let source = db.source("s").expect("handle");
    // Batches large enough that the worker does not merge queued ones (adaptive
    // micro-batching), so the capacity in batches is exact.
    let one = || x_batch(vec![1; 2_048]);
    // Capacity: 256 batches in the subscriber's channel, 1 held by the waiting worker, 64
    // in the source's queue. Pushes succeed until all of it is taken, then report Full.
    let capacity = laminar_core_capacity();
    let deadline = std::time::Instant::now() + WAIT;
    let mut accepted = 0;
    let mut last_error = String::new();
    while std::time::Instant::now() < deadline && accepted < capacity + 10 {
        match source.try_push(one()) {
            Ok(()) => accepted += 1,
            Err(e) => {
                last_error = e.to_string();
                if accepted >= capacity - 1 {
                    break;
                }
                std::thread::yield_now();
            }
        }
    }
    assert!(
        (capacity - 1..=capacity).contains(&accepted),
        "accepted {accepted} of capacity {capacity}"
    );
    assert!(last_error.contains("input queue is full"), "{last_error}");
    // Dropping the stalled subscriber releases the pipeline.
    drop(stalled);
    source
        .push(one())
        .expect("blocking push succeeds once the pipeline drains");
    db.sync().expect("everything processed");
}

#[test]
fn csv_in_parquet_out() {
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = dir.path().join("in.csv");
    std::fs::write(
        &csv,
        "city,temp,ts\nOslo,-3.5,2024-01-01 00:00:00\nRome,14.0,2024-01-01 00:00:01\nbad,row\nLima,22.5,2024-01-01 00:00:02\n",
    )
    .expect("write csv");
    let out = dir.path().join("out/warm.parquet");
    let db = db(2);
    db.execute(&format!(
        "CREATE SOURCE readings (city VARCHAR, temp DOUBLE, ts TIMESTAMP) FROM FILE (path = '{}', format = 'csv')",
        csv.display()
    ))
    .expect("source");
    db.execute(&format!(
        "CREATE SINK warm INTO FILE (path = '{}', format = 'parquet') AS SELECT upper(city) AS city, temp FROM readings WHERE temp > 0",
        out.display()
    ))
    .expect("sink");
    db.execute("CREATE MATERIALIZED VIEW cold AS SELECT city FROM readings WHERE temp <= 0")
        .expect("view");
    assert!(db.wait_finished(WAIT), "bounded file pipeline finishes");

    let cold = db.query("SELECT * FROM cold").expect("query");
    assert_eq!(text(&cold).matches("Oslo").count(), 1);

    let file = std::fs::File::open(&out).expect("parquet written");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet")
        .build()
        .expect("reader");
    let written: Vec<RecordBatch> = reader.collect::<Result<_, _>>().expect("batches");
    let mut cities: Vec<String> = written
        .iter()
        .flat_map(|b| {
            let c = b
                .column(0)
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("city")
                .clone();
            c.iter().flatten().map(str::to_string).collect::<Vec<_>>()
        })
        .collect();
    cities.sort();
    assert_eq!(cities, vec!["LIMA", "ROME"]);

    let metrics = db.metrics();
    let readings = metrics
        .sources
        .iter()
        .find(|s| s.name == "readings")
        .expect("source stats");
    assert_eq!(
        readings.malformed_records, 2,
        "the bad row is skipped once per reading query"
    );
    let first = readings.first_error.clone().expect("first error kept");
    assert!(first.contains("in.csv line 4"), "{first}");
}

#[test]
fn on_error_fail_stops_the_source_and_reports() {
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = dir.path().join("in.csv");
    std::fs::write(&csv, "n\n1\n2\nnot-a-number\n4\n").expect("write");
    let db = db(1);
    db.execute(&format!(
        "CREATE SOURCE nums (n BIGINT) FROM FILE (path = '{}', on_error = 'fail')",
        csv.display()
    ))
    .expect("source");
    db.execute("CREATE MATERIALIZED VIEW v AS SELECT n FROM nums")
        .expect("view");
    assert!(db.wait_finished(WAIT));
    let error = db.metrics().first_error().expect("the failure is reported");
    assert!(
        error.contains("line 4") && error.contains("in.csv"),
        "{error}"
    );
    let kept = db.query("SELECT n FROM v ORDER BY n").expect("query");
    assert_eq!(rows(&kept), 2, "rows before the bad record are kept");
}

#[test]
fn generator_is_deterministic_and_proportioned() {
    let run = |seed: u64| {
        let db = db(2);
        for table in ["person", "auction", "bid"] {
            db.execute(&format!(
                "CREATE SOURCE {table} FROM DATAGEN (kind = 'nexmark', table = '{table}', events = '5000', seed = '{seed}')"
            ))
            .expect("source");
            db.execute(&format!(
                "CREATE MATERIALIZED VIEW all_{table} AS SELECT * FROM {table}"
            ))
            .expect("view");
        }
        db.execute("FLUSH").expect("flush");
        let counts = db
            .query("SELECT (SELECT count(*) FROM all_person) AS p, (SELECT count(*) FROM all_auction) AS a, (SELECT count(*) FROM all_bid) AS b")
            .expect("counts");
        let bids = db
            .query("SELECT * FROM all_bid ORDER BY date_time, auction, bidder, price")
            .expect("bids");
        (text(&counts), text(&bids))
    };
    let (counts, bids) = run(11);
    assert!(counts.contains("| 100 | 300 | 4600 |"), "{counts}");
    let (_, again) = run(11);
    assert_eq!(bids, again, "same seed, same rows");
    let (_, other) = run(12);
    assert_ne!(bids, other, "another seed, other rows");
}

#[test]
fn catalog_is_restored_on_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let db = LaminarDB::builder()
            .workers(1)
            .pin_workers(false)
            .open(dir.path())
            .expect("open");
        db.execute("CREATE SOURCE \"Orders\" (id BIGINT, qty INT, WATERMARK FOR id AS id)")
            .expect("source");
        db.execute("CREATE MATERIALIZED VIEW big AS SELECT id FROM \"Orders\" WHERE qty > 10")
            .expect("view");
        db.execute("CREATE SOURCE temp (x INT)").expect("source");
        db.execute("DROP SOURCE temp").expect("drop");
    }
    let db = LaminarDB::builder()
        .workers(1)
        .pin_workers(false)
        .open(dir.path())
        .expect("reopen");
    let sources = db.execute("SHOW SOURCES").expect("show");
    let shown = text(sources.batches().expect("rows"));
    assert!(
        shown.contains("Orders") && !shown.contains("temp"),
        "{shown}"
    );
    db.execute("INSERT INTO \"Orders\" VALUES (1, 50), (2, 5)")
        .expect("insert after reopen");
    assert_eq!(rows(&db.query("SELECT * FROM big").expect("query")), 1);
    drop(db);

    std::fs::write(dir.path().join("catalog.json"), "{ not json").expect("corrupt");
    let error = LaminarDB::open(dir.path())
        .expect_err("corrupt catalog refused")
        .to_string();
    assert!(
        error.contains("catalog.json") && error.contains("not a valid catalog"),
        "{error}"
    );
}

#[test]
fn explain_prints_the_dataflow() {
    let db = db(4);
    db.execute(EVENTS_DDL).expect("source");
    db.execute(
        "CREATE SOURCE more (id BIGINT NOT NULL, kind VARCHAR, amount BIGINT, ts TIMESTAMP)",
    )
    .expect("source");
    let explained = db
        .execute("EXPLAIN CREATE MATERIALIZED VIEW v AS SELECT id, amount * 2 AS a FROM events WHERE kind = 'buy' UNION ALL SELECT id, amount FROM more")
        .expect("explain");
    let plan = text(explained.batches().expect("rows"));
    for expected in [
        "Dataflow for v (4 workers",
        "Union ALL (2 inputs)",
        "Filter",
        "Project",
        "Scan events",
        "Scan more",
        "forward",
    ] {
        assert!(plan.contains(expected), "missing {expected} in\n{plan}");
    }
    assert!(
        matches!(db.execute("SHOW MATERIALIZED VIEWS").expect("show"), ExecuteResult::Rows { ref batches, .. } if rows(batches) == 0),
        "EXPLAIN creates nothing"
    );
}

#[test]
fn errors_name_what_is_wrong() {
    let db = db(1);
    let syntax = db
        .execute("CREATE STREAM x AS\n SELEC a FROM s")
        .expect_err("syntax")
        .to_string();
    assert!(syntax.contains("SELEC at Line: 2, Column: 2"), "{syntax}");
    db.execute("CREATE SOURCE s (a INT)").expect("source");
    let column = db
        .execute("CREATE STREAM t AS SELECT b FROM s")
        .expect_err("column")
        .to_string();
    assert!(
        column.contains('b') && column.contains("stream t"),
        "{column}"
    );
    let unknown = db.subscribe("nope").expect_err("unknown").to_string();
    assert!(
        unknown.contains("'nope' does not exist (known: s)"),
        "{unknown}"
    );
    let not_select = db
        .query("DROP SOURCE s")
        .expect_err("query only selects")
        .to_string();
    assert!(
        not_select.contains("query() runs one SELECT"),
        "{not_select}"
    );
}

#[test]
fn dropping_the_database_closes_live_sinks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("live.csv");
    let started = std::time::Instant::now();
    {
        let db = db(2);
        db.execute("CREATE SOURCE s (x BIGINT)").expect("source");
        db.execute(&format!(
            "CREATE SINK live INTO FILE (path = '{}', format = 'csv') AS SELECT x FROM s",
            out.display()
        ))
        .expect("sink");
        db.execute("INSERT INTO s VALUES (1), (2), (3)")
            .expect("insert");
        db.sync().expect("processed");
        // The source never ends; dropping the database must still flush and close the file.
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "drop returned promptly"
    );
    let written = std::fs::read_to_string(&out).expect("file written");
    let mut lines: Vec<&str> = written.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, vec!["1", "2", "3", "x"]);
}

#[test]
fn held_sources_feed_every_query_of_a_pipeline() {
    let db = db(2);
    let hold = db.hold_sources();
    db.execute("CREATE SOURCE t FROM DATAGEN (kind = 'trades', events = '20000', seed = '5')")
        .expect("source");
    db.execute("CREATE STREAM big AS SELECT symbol, volume FROM t WHERE volume > 500")
        .expect("stream");
    // Created after the stream: without the hold, rows the stream emitted before this
    // statement would never reach the view.
    db.execute("CREATE MATERIALIZED VIEW all_big AS SELECT * FROM big")
        .expect("view");
    db.execute("CREATE MATERIALIZED VIEW all_t AS SELECT volume FROM t")
        .expect("view");
    let mut live = db.subscribe("big").expect("subscribe");
    drop(hold);
    assert!(db.wait_finished(WAIT));
    let seen: usize = live.blocking_iter().map(|b| b.num_rows()).sum();
    let counts = db
        .query("SELECT (SELECT count(*) FROM all_big) AS a, (SELECT count(*) FROM all_t WHERE volume > 500) AS b")
        .expect("counts");
    let shown = text(&counts);
    let expected = format!("| {seen} | {seen} |");
    assert!(
        seen > 1_000 && shown.contains(&expected),
        "subscription saw {seen}\n{shown}"
    );
}

#[test]
fn window_state_is_bounded_and_freed_when_windows_fire() {
    let db = db(2);
    db.execute(
        "CREATE SOURCE ticks (k BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '100' MILLISECOND)",
    )
    .expect("source");
    db.execute(
        "CREATE MATERIALIZED VIEW per_second AS SELECT count(*) AS n, window_start, window_end \
         FROM TUMBLE(ticks, ts, INTERVAL '1' SECOND) GROUP BY window_start, window_end EMIT ON WINDOW CLOSE",
    )
    .expect("view");
    let source = db.source("ticks").expect("handle");
    let schema = source.schema();
    // 1M rows, 10 ms apart: 100 rows in each of 10,000 one-second windows.
    let rows_total: i64 = 1_000_000;
    let batch_rows: i64 = 10_000;
    let base = 1_704_067_200_000_i64;
    let mut state_max = 0;
    let mut state_bytes_max = 0;
    for batch in 0..rows_total / batch_rows {
        let first = batch * batch_rows;
        let keys = Int64Array::from_iter_values(first..first + batch_rows);
        let ts = TimestampMillisecondArray::from_iter_values(
            (first..first + batch_rows).map(|i| base + i * 10),
        );
        let rows = RecordBatch::try_new(schema.clone(), vec![Arc::new(keys), Arc::new(ts)])
            .expect("batch");
        source.push(rows).expect("push");
        db.sync().expect("processed");
        let metrics = db.metrics();
        let state: u64 = metrics.queries.iter().map(|q| q.state_entries).sum();
        state_max = state_max.max(state);
        let bytes: u64 = metrics.queries.iter().map(|q| q.state_bytes).sum();
        state_bytes_max = state_bytes_max.max(bytes);
    }
    // Bounded bytes too: a group table and a count per open window (sampled, so only an
    // upper bound is checked; 64 KiB per window is far above what 100 windows need).
    assert!(state_bytes_max > 0, "open windows hold bytes");
    assert!(
        state_bytes_max <= 101 * 64 * 1024,
        "window state bytes stay bounded: {state_bytes_max}"
    );
    // One batch spans 100 windows; only those the watermark has not passed stay open.
    assert!(
        state_max <= 101,
        "open windows stay bounded by one batch's span: {state_max}"
    );
    source.finish().expect("finish");
    assert!(db.wait_finished(WAIT));
    let metrics = db.metrics();
    let view = metrics
        .queries
        .iter()
        .find(|q| q.name == "per_second")
        .expect("stats");
    assert_eq!(view.state_entries, 0, "every window fired and was freed");
    assert_eq!(view.state_bytes, 0, "no bytes held once every window fired");
    assert_eq!(view.rows_out, 10_000);
    let counts = db
        .query("SELECT count(*) AS windows, min(n) AS low, max(n) AS high FROM per_second")
        .expect("query");
    assert!(
        text(&counts).contains("| 10000   | 100 | 100  |"),
        "{}",
        text(&counts)
    );
}

#[test]
fn a_keyed_query_failing_on_one_worker_still_finishes() {
    let db = db(4);
    db.execute("CREATE SOURCE pairs (k BIGINT, d BIGINT)")
        .expect("source");
    db.execute(
        "CREATE MATERIALIZED VIEW per_k AS SELECT k, sum(10 / d) AS s FROM pairs GROUP BY k",
    )
    .expect("view");
    let source = db.source("pairs").expect("handle");
    for batch in 0..8_i64 {
        let keys = Int64Array::from_iter_values(batch * 100..batch * 100 + 100);
        // One row divides by zero: the worker processing it fails the query.
        let divisors =
            Int64Array::from_iter_values((0..100).map(|i| i64::from(!(batch == 3 && i == 7))));
        let rows = RecordBatch::try_new(source.schema(), vec![Arc::new(keys), Arc::new(divisors)])
            .expect("batch");
        source.push(rows).expect("push");
    }
    source.finish().expect("finish");
    assert!(
        db.wait_finished(WAIT),
        "the other workers end instead of waiting for the failed one"
    );
    let error = db.metrics().first_error().expect("the failure is reported");
    assert!(
        error.contains("per_k") && error.contains("Divide by zero"),
        "{error}"
    );
}

/// Each row's cells as text, NULL as `NULL`.
fn cells(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formatter"))
            .collect();
        for row in 0..batch.num_rows() {
            rows.push(
                formatters
                    .iter()
                    .map(|f| f.value(row).to_string())
                    .collect(),
            );
        }
    }
    rows
}

/// Folds changelog rows (the change kind last): one row more per `+`, one less per `-`.
/// Returns the rows left, sorted, each joined with `|`.
fn fold(rows: Vec<Vec<String>>) -> Vec<String> {
    let mut weights: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    for mut row in rows {
        let weight = match row.pop().as_deref() {
            Some("+") => 1,
            Some("-") => -1,
            other => panic!("unknown change kind {other:?}"),
        };
        *weights.entry(row.join("|")).or_default() += weight;
    }
    let mut left = Vec::new();
    for (row, weight) in weights {
        assert!(weight >= 0, "{row} retracted more often than inserted");
        left.extend(std::iter::repeat_n(row, weight as usize));
    }
    left.sort();
    left
}

#[test]
fn changelog_sinks_write_the_change_kind_and_fold_to_the_view() {
    let dir = tempfile::tempdir().expect("temp dir");
    let csv = dir.path().join("per_kind.csv");
    let parquet = dir.path().join("per_kind.parquet");
    let query = "SELECT kind, amount % 4 AS r, count(*) AS n, sum(amount) AS total, \
                 min(amount) AS low FROM events GROUP BY kind, amount % 4";
    for workers in [1, 4] {
        let db = db(workers);
        db.execute(EVENTS_DDL).expect("source");
        db.execute(&format!("CREATE MATERIALIZED VIEW per_kind AS {query}"))
            .expect("view");
        db.execute(&format!(
            "CREATE SINK to_csv INTO FILE (path = '{}') FROM per_kind",
            csv.display()
        ))
        .expect("csv sink");
        db.execute(&format!(
            "CREATE SINK to_parquet INTO FILE (path = '{}') AS {query}",
            parquet.display()
        ))
        .expect("parquet sink");
        let source = db.source("events").expect("handle");
        let mut start = 0;
        for (seed, size) in [1, 300, 7, 1_000, 64].into_iter().enumerate() {
            source.push(events(start, size, seed as u64)).expect("push");
            start += size as i64;
        }
        let view = cells(&db.query("SELECT * FROM per_kind").expect("query"));
        let mut expected: Vec<String> = view.iter().map(|row| row.join("|")).collect();
        expected.sort();
        assert!(expected.len() > 10, "enough groups to be a test");
        source.finish().expect("finish");
        assert!(db.wait_finished(WAIT), "sinks close when the input ends");

        let written = std::fs::read_to_string(&csv).expect("csv written");
        let mut lines = written.lines();
        assert_eq!(lines.next(), Some("kind,r,n,total,low,op"));
        let csv_rows: Vec<Vec<String>> = lines
            .map(|line| {
                line.split(',')
                    .map(|cell| if cell.is_empty() { "NULL" } else { cell }.to_string())
                    .collect()
            })
            .collect();
        assert!(
            csv_rows
                .iter()
                .any(|row| row.last().is_some_and(|op| op == "-")),
            "groups changed, so rows were retracted"
        );
        assert_eq!(fold(csv_rows), expected, "{workers} workers: csv");

        let file = std::fs::File::open(&parquet).expect("parquet written");
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .expect("parquet")
            .build()
            .expect("reader");
        let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().expect("batches");
        assert_eq!(
            batches[0]
                .schema()
                .fields()
                .last()
                .map(|f| f.name().as_str()),
            Some("op")
        );
        assert_eq!(
            fold(cells(&batches)),
            expected,
            "{workers} workers: parquet"
        );
    }
}

const SECOND_MS: i64 = 1_000;
const JAN_1_MS: i64 = 1_704_067_200_000;

/// One batch of `(auction, seconds after midnight)` rows for a source `(auction BIGINT, ts
/// TIMESTAMP)`.
fn bids_at(schema: &Arc<Schema>, rows: &[(i64, i64)]) -> RecordBatch {
    let auctions = Int64Array::from_iter_values(rows.iter().map(|(a, _)| *a));
    let ts = TimestampMillisecondArray::from_iter_values(
        rows.iter().map(|(_, s)| JAN_1_MS + s * SECOND_MS),
    );
    RecordBatch::try_new(Arc::clone(schema), vec![Arc::new(auctions), Arc::new(ts)])
        .expect("valid batch")
}

/// The `auction` column of every batch a subscription delivers until it ends, in the order
/// received; sorted with `sorted` (workers deliver their partitions independently).
fn auctions_until_end(subscription: &mut laminar_db::Subscription, sorted: bool) -> Vec<i64> {
    let mut auctions: Vec<i64> = subscription
        .blocking_iter()
        .flat_map(|change| {
            change
                .batch()
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("auctions")
                .iter()
                .flatten()
                .collect::<Vec<_>>()
        })
        .collect();
    if sorted {
        auctions.sort_unstable();
    }
    auctions
}

#[test]
fn late_rows_are_counted_and_diverted_to_the_late_data_stream() {
    for workers in [1, 4] {
        let db = db(workers);
        db.execute(
            "CREATE SOURCE bids (auction BIGINT, ts TIMESTAMP, \
             WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) LATE DATA TO late_bids",
        )
        .expect("source");
        db.execute(
            "CREATE MATERIALIZED VIEW late_windows AS SELECT count(*) AS n, window_start \
             FROM TUMBLE(late_bids, ts, INTERVAL '10' SECOND) GROUP BY window_start, window_end \
             EMIT ON WINDOW CLOSE",
        )
        .expect("view over the late rows");
        let mut on_time = db.subscribe("bids").expect("subscribe to the source");
        let mut late = db
            .subscribe("late_bids")
            .expect("subscribe to its late rows");
        let source = db.source("bids").expect("handle");
        let schema = source.schema();

        // Watermark 00:00:04, then 00:00:11; 3 s and 1 s are late, 4 s is exactly on time.
        source
            .push(bids_at(&schema, &[(1, 2), (2, 5)]))
            .expect("push");
        source
            .push(bids_at(&schema, &[(5, 3), (4, 12), (3, 1), (6, 4)]))
            .expect("push");
        source
            .try_push(bids_at(&schema, &[(7, 10)]))
            .expect("try_push");
        let stats = db.metrics();
        let bids = stats
            .sources
            .iter()
            .find(|s| s.name == "bids")
            .expect("bids");
        assert_eq!(
            bids.late_rows, 3,
            "counted as they are pushed ({workers} workers)"
        );

        source.finish().expect("finish");
        // Each late row once; on one worker, in the order pushed.
        let sorted = workers > 1;
        let expected_late = if sorted { vec![3, 5, 7] } else { vec![5, 3, 7] };
        assert_eq!(auctions_until_end(&mut late, sorted), expected_late);
        assert_eq!(auctions_until_end(&mut on_time, true), vec![1, 2, 4, 6]);
        assert!(
            db.wait_finished(WAIT),
            "the late-data stream ends with its source"
        );
        // No watermark of its own: the windows over the late rows fire at the end of input.
        let windows = db
            .query("SELECT n, window_start FROM late_windows ORDER BY window_start")
            .expect("query");
        let expected = [
            "+---+---------------------+",
            "| n | window_start        |",
            "+---+---------------------+",
            "| 2 | 2024-01-01T00:00:00 |",
            "| 1 | 2024-01-01T00:00:10 |",
            "+---+---------------------+",
        ]
        .join("\n");
        assert_eq!(text(&windows), expected, "{workers} workers");

        let stats = db.metrics();
        let bids = stats
            .sources
            .iter()
            .find(|s| s.name == "bids")
            .expect("bids");
        assert_eq!((bids.rows, bids.late_rows), (4, 3));
        let side = stats
            .queries
            .iter()
            .find(|q| q.name == "late_bids")
            .expect("late_bids stats");
        assert_eq!(side.kind, laminar_db::ObjectKind::Stream);
        assert_eq!((side.rows_out, side.finished), (3, true));
        assert_eq!(side.watermark_ms, None);

        let refused = db
            .source("late_bids")
            .expect_err("no pushing into late rows");
        assert!(
            refused.to_string().contains("late rows of source bids"),
            "{refused}"
        );
    }
}

#[test]
fn late_data_to_is_restored_on_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let open = || {
        LaminarDB::builder()
            .workers(2)
            .pin_workers(false)
            .open(dir.path())
            .expect("open")
    };
    {
        let db = open();
        db.execute(
            "CREATE SOURCE orders (id BIGINT, ts TIMESTAMP, WATERMARK FOR ts AS ts) \
             LATE DATA TO late_orders",
        )
        .expect("source");
        db.execute("CREATE MATERIALIZED VIEW late AS SELECT id FROM late_orders")
            .expect("view");
    }
    let db = open();
    let shown = text(
        db.execute("SHOW STREAMS")
            .expect("show")
            .batches()
            .expect("rows"),
    );
    assert!(
        shown.contains("late_orders") && shown.contains("LATE DATA TO late_orders"),
        "{shown}"
    );
    db.execute("INSERT INTO orders VALUES (1, '2024-01-01 00:00:05')")
        .expect("insert");
    db.execute("INSERT INTO orders VALUES (2, '2024-01-01 00:00:04'), (3, '2024-01-01 00:00:06')")
        .expect("insert");
    let late = db.query("SELECT id FROM late").expect("query");
    assert_eq!(
        text(&late),
        ["+----+", "| id |", "+----+", "| 2  |", "+----+"].join("\n")
    );
}

#[test]
fn keyed_watermark_is_restored_on_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let open = || {
        LaminarDB::builder()
            .workers(2)
            .pin_workers(false)
            .open(dir.path())
            .expect("open")
    };
    {
        let db = open();
        db.execute(
            "CREATE SOURCE readings (device VARCHAR, ts TIMESTAMP, \
             WATERMARK FOR ts AS ts PER KEY (device))",
        )
        .expect("source");
        db.execute(
            "CREATE MATERIALIZED VIEW per_device AS SELECT device, count(*) AS n \
             FROM TUMBLE(readings, ts, INTERVAL '10' SECOND) \
             GROUP BY device, window_start, window_end EMIT ON WINDOW CLOSE",
        )
        .expect("view");
    }
    let db = open();
    // 'slow' lags ten minutes behind 'fast'; its window closes by its own watermark, with
    // the row that one global watermark would have dropped.
    db.execute(
        "INSERT INTO readings VALUES ('fast', '2024-01-01 00:10:01'), ('slow', '2024-01-01 00:00:01')",
    )
    .expect("insert");
    db.execute(
        "INSERT INTO readings VALUES ('slow', '2024-01-01 00:00:02'), ('slow', '2024-01-01 00:00:11')",
    )
    .expect("insert");
    let closed = db.query("SELECT device, n FROM per_device").expect("query");
    assert_eq!(
        text(&closed),
        [
            "+--------+---+",
            "| device | n |",
            "+--------+---+",
            "| slow   | 2 |",
            "+--------+---+"
        ]
        .join("\n")
    );
}

#[test]
fn concurrent_pushers_route_every_late_row_exactly_once() {
    let db = db(4);
    db.execute(
        "CREATE SOURCE bids (auction BIGINT, ts TIMESTAMP, \
         WATERMARK FOR ts AS ts - INTERVAL '2' SECOND) LATE DATA TO late_bids",
    )
    .expect("source");
    db.execute("CREATE MATERIALIZED VIEW kept AS SELECT auction FROM bids")
        .expect("view");
    db.execute("CREATE MATERIALIZED VIEW late AS SELECT auction FROM late_bids")
        .expect("view");
    let source = db.source("bids").expect("handle");
    let (pushers, batches, batch_rows) = (4_i64, 50_i64, 20_i64);
    std::thread::scope(|scope| {
        for pusher in 0..pushers {
            let source = source.clone();
            scope.spawn(move || {
                let schema = source.schema();
                for batch in 0..batches {
                    // Each pusher moves forward in time with its own jitter, so the pushers'
                    // batches overtake each other and some rows fall behind the watermark.
                    let rows: Vec<(i64, i64)> = (0..batch_rows)
                        .map(|row| {
                            let id = (pusher * batches + batch) * batch_rows + row;
                            (id, batch + (id * 7_919) % 5 - pusher)
                        })
                        .collect();
                    source.push(bids_at(&schema, &rows)).expect("push");
                }
            });
        }
    });
    source.finish().expect("finish");
    assert!(db.wait_finished(WAIT));
    let stats = db.metrics();
    let bids = stats
        .sources
        .iter()
        .find(|s| s.name == "bids")
        .expect("bids");
    let side = stats
        .queries
        .iter()
        .find(|q| q.name == "late_bids")
        .expect("late_bids");
    let total = (pushers * batches * batch_rows) as u64;
    assert!(bids.late_rows > 0, "the jitter makes some rows late");
    assert_eq!(
        side.rows_out, bids.late_rows,
        "every late row reached the side stream"
    );
    assert_eq!(bids.rows + side.rows_out, total, "and no other row did");
    let counted = db
        .query(
            "SELECT count(*) AS n, count(DISTINCT auction) AS distinct_n FROM \
             (SELECT auction FROM kept UNION ALL SELECT auction FROM late)",
        )
        .expect("query");
    let value = |column: usize| {
        counted[0]
            .column(column)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("a count")
            .value(0) as u64
    };
    assert_eq!(
        (value(0), value(1)),
        (total, total),
        "each row in exactly one of the two"
    );
}

#[test]
fn show_workers_lists_cores_queues_rows_and_busy_time() {
    let db = db(2);
    db.execute("CREATE SOURCE s (k BIGINT)").expect("source");
    db.execute("CREATE MATERIALIZED VIEW per_k AS SELECT k, count(*) AS n FROM s GROUP BY k")
        .expect("view");
    let source = db.source("s").expect("handle");
    let schema = source.schema();
    for part in 0..20_i64 {
        let keys = Int64Array::from_iter_values(part * 1_000..(part + 1) * 1_000);
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(keys)]).expect("batch");
        source.push(batch).expect("push");
    }
    db.sync().expect("processed");
    let shown = db.execute("SHOW WORKERS").expect("show workers");
    let table = text(shown.batches().expect("rows"));
    assert!(
        table.contains(
            "| worker | core | queued | rows_processed | busy_ms | busy_percent | overruns |"
        ),
        "{table}"
    );
    let workers = db.metrics().workers;
    assert_eq!(workers.len(), 2);
    assert!(workers.iter().all(|w| w.core.is_none()), "pinning is off");
    assert_eq!(
        workers.iter().map(|w| w.rows_processed).sum::<u64>(),
        20_000,
        "every pushed row was processed by one worker"
    );
    assert!(
        workers
            .iter()
            .all(|w| w.busy > Duration::ZERO && w.busy <= w.uptime),
        "{workers:?}"
    );
    assert!(
        workers.iter().all(|w| w.queued_messages == 0),
        "{workers:?}"
    );
}

#[test]
fn a_huge_batch_is_processed_in_slices_and_completely() {
    let db = db(2);
    db.execute("CREATE SOURCE s (k BIGINT)").expect("source");
    db.execute("CREATE MATERIALIZED VIEW total AS SELECT count(*) AS n, sum(k) AS s FROM s")
        .expect("view");
    let source = db.source("s").expect("handle");
    let schema = source.schema();
    // Four times the rows one step takes: processed a slice at a time.
    let keys = Int64Array::from_iter_values(0..262_144);
    let batch = RecordBatch::try_new(schema, vec![Arc::new(keys)]).expect("batch");
    source.push(batch).expect("push");
    // A snapshot read waits for the whole batch, not its first slice.
    let result = text(&db.query("SELECT n, s FROM total").expect("query"));
    assert!(result.contains("| 262144 | 34359607296 |"), "{result}");
}

/// Adaptive micro-batching: with no backlog each small push goes through on its own (no
/// waiting to fill a batch); small pushes queued behind a busy worker are processed as one
/// batch. Every row arrives once, in order.
#[test]
fn small_pushes_queued_behind_a_busy_worker_are_processed_as_one_batch() {
    let db = db(1);
    db.execute("CREATE SOURCE s (x BIGINT)").expect("source");
    db.execute("CREATE STREAM copy AS SELECT x FROM s")
        .expect("stream");
    let mut subscription = db.subscribe("copy").expect("subscribe");
    let source = db.source("s").expect("handle");
    let row = |x: i64| x_batch(vec![x]);
    let values = x_values;
    // Low load: each push arrives alone, at once.
    for x in 0..3 {
        source.push(row(x)).expect("push");
        let batch = subscription.next_blocking().expect("a batch");
        assert_eq!(values(&batch), [x]);
    }
    // Busy: the subscriber's channel (256 batches) is full and the worker waits to deliver
    // one more row; 40 one-row pushes queue in the source's ring meanwhile.
    // One at a time, each processed before the next is pushed: queued together, the
    // worker would merge them into fewer batches than the channel holds.
    for x in 0..256 {
        source.push(row(1_000 + x)).expect("fill the channel");
        db.sync().expect("the worker delivered it");
    }
    source
        .push(row(1_256))
        .expect("the row the worker waits on");
    std::thread::sleep(Duration::from_millis(50));
    for x in 2_000..2_040 {
        source.try_push(row(x)).expect("queued in the ring");
    }
    let mut queued_rows = Vec::new();
    let mut queued_batches = 0;
    while queued_rows.len() < 40 {
        let batch = subscription.next_blocking().expect("a batch");
        let rows: Vec<i64> = values(&batch).into_iter().filter(|x| *x >= 2_000).collect();
        if !rows.is_empty() {
            queued_batches += 1;
        }
        queued_rows.extend(rows);
    }
    assert_eq!(queued_rows, (2_000..2_040).collect::<Vec<i64>>());
    // One batch, or two if the worker took the first queued rows with the row it waited on.
    assert!(
        queued_batches <= 2,
        "40 queued pushes arrived in {queued_batches} batches"
    );
}

/// A callback subscription runs on the worker for every batch, in order; dropping it stops
/// the calls; one that panics is removed and the stream goes on.
#[test]
fn a_callback_subscription_sees_every_batch_and_a_panicking_one_is_removed() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let db = db(1);
    db.execute("CREATE SOURCE s (x BIGINT)").expect("source");
    db.execute("CREATE STREAM copy AS SELECT x FROM s")
        .expect("stream");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = {
        let seen = Arc::clone(&seen);
        db.subscribe_callback("copy", move |batch| {
            seen.lock().expect("lock").extend(x_values(batch));
        })
        .expect("callback subscription")
    };
    assert!(recorder.is_active());
    let calls = Arc::new(AtomicUsize::new(0));
    let _panicking = {
        let calls = Arc::clone(&calls);
        db.subscribe_callback("copy", move |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            panic!("a faulty callback");
        })
        .expect("callback subscription")
    };
    let source = db.source("s").expect("handle");
    let rows = x_batch;
    source.push(rows(vec![1, 2])).expect("push");
    source.push(rows(vec![3])).expect("push");
    db.sync().expect("sync");
    assert_eq!(*seen.lock().expect("lock"), [1, 2, 3]);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the panicking callback was removed"
    );
    drop(recorder);
    source.push(rows(vec![4])).expect("push");
    db.sync().expect("sync");
    assert_eq!(*seen.lock().expect("lock"), [1, 2, 3]);
    assert!(db.subscribe_callback("nope", |_| {}).is_err());
}
