//! Differential test of keyed watermarks: keys whose event times lag each other by tens of
//! seconds, each key's rows out of order within the watermark delay of its own newest row.
//! With `PER KEY`, for several seeds and at 1 and 4 workers, the windows (tumbling, hopping
//! and session) a keyed view emits before the end of input are final (DataFusion's batch
//! answer has them, and every key has some, fired by its own watermark), and after the end the
//! view and its subscribed changes equal the batch answer: no row was late. Under one global
//! watermark the same rows lose the lagging keys' rows.

#[allow(
    dead_code,
    reason = "helpers shared by several test crates; this one uses a part of them"
)]
mod common;

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Int64Array, RecordBatch, TimestampMillisecondArray};
use laminar_db::LaminarDB;

use common::{folded, rows, timed_batch_answer, timed_schema, timed_view};

const DELAY_MS: i64 = 300;
const KEYS: u64 = 6;
/// How far behind the previous key each key's event times are.
const LAG_PER_KEY_MS: i64 = 45_000;
const WAIT: Duration = Duration::from_secs(30);

const AGGREGATES: &str = "count(*) AS n, sum(price) AS total, min(price) AS low, \
    max(price) AS high, count(DISTINCT price % 5) AS kinds";

/// `date_bin` spelled out: the batch side of `TUMBLE(events, ts, INTERVAL '2' SECOND)`.
const TUMBLE_BOUNDS: &str = "date_bin(INTERVAL '2' SECOND, ts, TIMESTAMP '1970-01-01 00:00:00') \
    AS window_start, date_bin(INTERVAL '2' SECOND, ts, TIMESTAMP '1970-01-01 00:00:00') \
    + INTERVAL '2' SECOND AS window_end";

/// Seeded rows of `KEYS` keys, key `k` lagging `k * LAG_PER_KEY_MS` behind key 0; within a
/// key, a row is behind the key's newest row by less than `DELAY_MS`, so no row is late for
/// its key.
fn skewed_batches(seed: u64) -> Vec<RecordBatch> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(7);
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let base = 1_704_067_200_000_i64;
    let mut clock = 0_i64;
    [4, 250, 1, 600, 80, 900]
        .iter()
        .map(|&size| {
            let mut keys = Vec::with_capacity(size);
            let mut prices = Vec::with_capacity(size);
            let mut times = Vec::with_capacity(size);
            for _ in 0..size {
                clock += (next() % 40) as i64;
                let key = next() % KEYS;
                let jitter = (next() % DELAY_MS as u64) as i64;
                let price = next() % 500;
                keys.push(key as i64);
                prices.push((price % 9 != 0).then_some(price as i64));
                times.push(base + clock - key as i64 * LAG_PER_KEY_MS - jitter);
            }
            RecordBatch::try_new(
                timed_schema(),
                vec![
                    Arc::new(Int64Array::from(keys)),
                    Arc::new(Int64Array::from(prices)),
                    Arc::new(TimestampMillisecondArray::from(times)),
                ],
            )
            .expect("valid batch")
        })
        .collect()
}

/// A database with source `events` watermarked per key `k`, and view `w` running `query`.
fn keyed_view(workers: usize, query: &str) -> LaminarDB {
    let db = LaminarDB::builder()
        .workers(workers)
        .pin_workers(false)
        .in_memory()
        .expect("database");
    db.execute(&format!(
        "CREATE SOURCE events (k BIGINT NOT NULL, price BIGINT, ts TIMESTAMP NOT NULL, \
         WATERMARK FOR ts AS ts - INTERVAL '{DELAY_MS}' MILLISECOND PER KEY (k))"
    ))
    .expect("source");
    db.execute(&format!("CREATE MATERIALIZED VIEW w AS {query}"))
        .expect("view");
    db
}

/// The dataflow `EXPLAIN` prints for a view running `query`.
fn explained(db: &LaminarDB, query: &str) -> String {
    let explained = db
        .execute(&format!("EXPLAIN CREATE MATERIALIZED VIEW x AS {query}"))
        .expect("explain");
    rows(explained.batches().expect("rows")).join("\n")
}

/// Runs `streaming` over the skewed rows of several seeds at 1 and 4 workers and checks it
/// against DataFusion's answer to `batch`.
fn check_keyed(streaming: &str, batch: &str) {
    for seed in [2, 40, 777] {
        let input = skewed_batches(seed);
        let expected = timed_batch_answer(&input, batch);
        assert!(expected.len() > 100, "seed {seed}: too few windows");
        for workers in [1, 4] {
            let db = keyed_view(workers, streaming);
            let plan = explained(&db, streaming);
            assert!(plan.contains("per key"), "not keyed:\n{plan}");
            let mut changes = db.subscribe("w").expect("subscribe");
            let source = db.source("events").expect("handle");
            for part in &input {
                source.push(part.clone()).expect("push");
            }
            // Before the end, each key's windows behind its own watermark have fired, and
            // they are final.
            let early = rows(&db.query("SELECT * FROM w").expect("query"));
            assert!(
                early.len() < expected.len(),
                "seed {seed}: the last windows are still open"
            );
            assert!(
                early.iter().all(|row| expected.contains(row)),
                "seed {seed}, {workers} workers: an early row is not final"
            );
            for key in 0..KEYS {
                assert!(
                    early.iter().any(|row| row.starts_with(&format!("{key}|"))),
                    "seed {seed}, {workers} workers: no window of key {key} fired early"
                );
            }
            source.finish().expect("finish");
            assert!(db.wait_finished(WAIT));
            let all = rows(&db.query("SELECT * FROM w").expect("query"));
            assert_eq!(all, expected, "seed {seed}, {workers} workers");
            assert_eq!(
                folded(&mut changes),
                expected,
                "seed {seed}, {workers} workers: subscribed changes"
            );
            let view = db.metrics().queries.into_iter().find(|q| q.name == "w");
            assert_eq!(view.map(|q| q.late_rows), Some(0), "seed {seed}: late rows");
        }
    }
}

#[test]
fn keyed_tumbling_windows_lose_nothing_and_fire_final_rows_early() {
    let streaming = format!(
        "SELECT k, window_start, window_end, {AGGREGATES} \
         FROM TUMBLE(events, ts, INTERVAL '2' SECOND) \
         GROUP BY k, window_start, window_end EMIT ON WINDOW CLOSE"
    );
    let batch = format!("SELECT k, {TUMBLE_BOUNDS}, {AGGREGATES} FROM events GROUP BY 1, 2, 3");
    check_keyed(&streaming, &batch);
}

#[test]
fn keyed_tumbling_windows_through_a_filter_and_renamed_key_match_datafusion() {
    // The key passes renamed through an aliased derived table and a filter; a key's
    // watermark then follows the rows that pass the filter.
    let streaming = format!(
        "SELECT device, window_start, window_end, {AGGREGATES} \
         FROM (SELECT k AS device, price, window_start, window_end \
               FROM TUMBLE(events, ts, INTERVAL '2' SECOND) AS e WHERE price > 100) AS t \
         GROUP BY device, window_start, window_end EMIT ON WINDOW CLOSE"
    );
    let batch = format!(
        "SELECT k AS device, {TUMBLE_BOUNDS}, {AGGREGATES} FROM events WHERE price > 100 \
         GROUP BY 1, 2, 3"
    );
    check_keyed(&streaming, &batch);
}

#[test]
fn keyed_hopping_windows_lose_nothing_and_fire_final_rows_early() {
    let streaming = format!(
        "SELECT k, window_start, window_end, {AGGREGATES} \
         FROM HOP(events, ts, INTERVAL '1' SECOND, INTERVAL '3' SECOND) \
         GROUP BY k, window_start, window_end EMIT ON WINDOW CLOSE"
    );
    // Written independently of the rewrite: each row joined with the offsets of the three
    // windows containing it.
    let start = "date_bin(INTERVAL '1' SECOND, ts, TIMESTAMP '1970-01-01 00:00:00') - \
        CASE o.i WHEN 0 THEN INTERVAL '0' SECOND WHEN 1 THEN INTERVAL '1' SECOND ELSE INTERVAL '2' SECOND END";
    let batch = format!(
        "SELECT k, {start} AS window_start, {start} + INTERVAL '3' SECOND AS window_end, \
         {AGGREGATES} FROM events CROSS JOIN (VALUES (0), (1), (2)) AS o(i) GROUP BY 1, 2, 3"
    );
    check_keyed(&streaming, &batch);
}

#[test]
fn keyed_session_windows_lose_nothing_and_fire_final_rows_early() {
    let streaming = format!(
        "SELECT k, window_start, window_end, {AGGREGATES} \
         FROM SESSION(events, ts, INTERVAL '150' MILLISECOND) \
         GROUP BY k, window_start, window_end EMIT ON WINDOW CLOSE"
    );
    // Written independently of the session operator: a row starts a new session of its key
    // when it is more than the gap after the previous row; sessions are numbered by a
    // running sum of those starts.
    let batch = format!(
        "WITH flagged AS ( \
           SELECT k, price, ts, CASE WHEN ts - lag(ts) OVER (PARTITION BY k ORDER BY ts) \
             <= INTERVAL '150' MILLISECOND THEN 0 ELSE 1 END AS starts FROM events), \
         numbered AS ( \
           SELECT *, sum(starts) OVER (PARTITION BY k ORDER BY ts ROWS UNBOUNDED PRECEDING) AS sid \
           FROM flagged) \
         SELECT k, min(ts) AS window_start, max(ts) + INTERVAL '150' MILLISECOND AS window_end, \
         {AGGREGATES} FROM numbered GROUP BY k, sid"
    );
    check_keyed(&streaming, &batch);
}

#[test]
fn one_global_watermark_drops_the_lagging_keys_rows() {
    let streaming = format!(
        "SELECT k, window_start, window_end, {AGGREGATES} \
         FROM TUMBLE(events, ts, INTERVAL '2' SECOND) \
         GROUP BY k, window_start, window_end EMIT ON WINDOW CLOSE"
    );
    let batch = format!("SELECT k, {TUMBLE_BOUNDS}, {AGGREGATES} FROM events GROUP BY 1, 2, 3");
    let input = skewed_batches(2);
    let expected = timed_batch_answer(&input, &batch);
    let db = timed_view(1, DELAY_MS.unsigned_abs(), &streaming);
    let source = db.source("events").expect("handle");
    for part in &input {
        source.push(part.clone()).expect("push");
    }
    source.finish().expect("finish");
    assert!(db.wait_finished(WAIT));
    let all = rows(&db.query("SELECT * FROM w").expect("query"));
    assert_ne!(all, expected);
    let late = db
        .metrics()
        .queries
        .into_iter()
        .find(|q| q.name == "w")
        .map_or(0, |q| q.late_rows);
    assert!(late > 100, "only {late} rows were late");
}
