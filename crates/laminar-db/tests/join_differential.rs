//! Differential tests of joins: two sources `l` and `r` receive seeded rows, out of order
//! within their watermark delay, in interleaved batches. For several seeds and at 1 and 4
//! workers, after the final watermark the view equals DataFusion's batch join of the same
//! rows, and so does the folded changelog of a subscription; interval and window joins emit
//! no retraction and hold no state once the input ends. A steady stream keeps their state
//! bounded.

#[allow(dead_code, reason = "each test binary uses part of the shared helpers")]
mod common;

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Int64Array, RecordBatch, TimestampMillisecondArray};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use laminar_db::{LaminarDB, Subscription};

use common::{folded, rows, timed_batches, timed_schema};

/// Watermark delay of both sources, within which rows arrive out of order.
const DELAY_MS: u64 = 300;
const WAIT: Duration = Duration::from_secs(60);

/// Seeded rows of `l` and of `r`.
fn inputs(seed: u64) -> (Vec<RecordBatch>, Vec<RecordBatch>) {
    (
        timed_batches(seed, DELAY_MS as i64),
        timed_batches(seed.wrapping_mul(31).wrapping_add(7), DELAY_MS as i64),
    )
}

/// DataFusion's answer to `sql` over tables `l` and `r`.
fn batch_answer(left: &[RecordBatch], right: &[RecordBatch], sql: &str) -> Vec<String> {
    let ctx = SessionContext::new();
    for (name, input) in [("l", left), ("r", right)] {
        let table = MemTable::try_new(timed_schema(), vec![input.to_vec()]).expect("table");
        ctx.register_table(name, Arc::new(table)).expect("register");
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    rows(
        &runtime
            .block_on(async { ctx.sql(sql).await?.collect().await })
            .expect("batch answer"),
    )
}

/// What a streaming run ends with.
struct Streamed {
    view: Vec<String>,
    folded: Vec<String>,
    /// Every change the view emitted was an insert.
    append_only: bool,
    /// Keyed state of the view's query once its input ended.
    state_entries: u64,
    late_rows: u64,
}

/// Runs `query` as view `w` over sources `l` and `r` (after the `setup` statements),
/// pushing their batches alternately, then ends the input.
fn streamed(
    workers: usize,
    setup: &[&str],
    query: &str,
    left: &[RecordBatch],
    right: &[RecordBatch],
) -> Streamed {
    let db = LaminarDB::builder()
        .workers(workers)
        .pin_workers(false)
        .in_memory()
        .expect("database");
    for name in ["l", "r"] {
        db.execute(&format!(
            "CREATE SOURCE {name} (k BIGINT NOT NULL, price BIGINT, ts TIMESTAMP NOT NULL, \
             WATERMARK FOR ts AS ts - INTERVAL '{DELAY_MS}' MILLISECOND)"
        ))
        .expect("source");
    }
    for statement in setup {
        db.execute(statement).expect("setup");
    }
    db.execute(&format!("CREATE MATERIALIZED VIEW w AS {query}"))
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    // Read while the rows are pushed: a subscription buffers a bounded number of batches,
    // and one nobody reads holds the workers back (backpressure) once it is full.
    let mut changes = db.subscribe("w").expect("subscribe");
    let mut kinds = db.subscribe("w").expect("subscribe");
    let folding = std::thread::spawn(move || folded(&mut changes));
    let checking = std::thread::spawn(move || inserts_only(&mut kinds));
    let (l, r) = (db.source("l").expect("l"), db.source("r").expect("r"));
    for index in 0..left.len().max(right.len()) {
        if let Some(batch) = left.get(index) {
            l.push(batch.clone()).expect("push");
        }
        if let Some(batch) = right.get(index) {
            r.push(batch.clone()).expect("push");
        }
    }
    l.finish().expect("finish");
    r.finish().expect("finish");
    assert!(db.wait_finished(WAIT), "{query}: the input did not end");
    let view = rows(&db.query("SELECT * FROM w").expect("query"));
    let stats = db
        .metrics()
        .queries
        .into_iter()
        .find(|q| q.name == "w")
        .expect("stats of w");
    Streamed {
        view,
        folded: folding.join().expect("the changelog reader"),
        append_only: checking.join().expect("the append-only check"),
        state_entries: stats.state_entries,
        late_rows: stats.late_rows,
    }
}

/// Whether every change of a subscription (read to its end) is an insert.
fn inserts_only(changes: &mut Subscription) -> bool {
    changes.blocking_iter().all(|change| {
        change
            .weights()
            .is_none_or(|w| w.iter().all(|w| w == Some(1)))
    })
}

/// Checks `streaming` (with `setup`) against DataFusion's `batch` for a few seeds, at 1 and
/// 4 workers. A bounded join (`bounded`) must also be append-only, lose no row as late and
/// end with no state.
fn check(setup: &[&str], streaming: &str, batch: &str, bounded: bool) {
    for seed in [3, 2024] {
        let (left, right) = inputs(seed);
        let expected = batch_answer(&left, &right, batch);
        assert!(
            expected.len() > 100,
            "seed {seed}: too few rows to be a test ({}): {batch}",
            expected.len()
        );
        for workers in [1, 4] {
            let run = streamed(workers, setup, streaming, &left, &right);
            let context = format!("seed {seed}, {workers} workers: {streaming}");
            assert_eq!(
                run.view, expected,
                "view differs from DataFusion; {context}"
            );
            assert_eq!(run.folded, expected, "folded changelog differs; {context}");
            if bounded {
                assert!(run.append_only, "a retraction; {context}");
                assert_eq!(run.late_rows, 0, "rows dropped as late; {context}");
                assert_eq!(run.state_entries, 0, "state left; {context}");
            }
        }
    }
}

/// `r.ts` within [-200 ms, +500 ms] of `l.ts`, with a residual condition on prices.
const INTERVAL: &str = "l.k = r.k AND r.ts BETWEEN l.ts - INTERVAL '200' MILLISECOND \
     AND l.ts + INTERVAL '500' MILLISECOND AND coalesce(l.price, 0) + coalesce(r.price, 0) > 150";

#[test]
fn interval_joins_match_datafusion() {
    let columns = "l.k AS lk, l.price AS lp, l.ts AS lt, r.k AS rk, r.price AS rp, r.ts AS rt";
    for kind in ["JOIN", "LEFT JOIN", "RIGHT JOIN", "FULL JOIN"] {
        let query = format!("SELECT {columns} FROM l {kind} r ON {INTERVAL}");
        check(&[], &query, &query, true);
    }
}

#[test]
fn interval_semi_and_anti_joins_match_datafusion() {
    for exists in ["EXISTS", "NOT EXISTS"] {
        let query = format!(
            "SELECT k, price, ts FROM l WHERE {exists} (SELECT 1 FROM r WHERE r.k = l.k \
             AND r.ts > l.ts - INTERVAL '100' MILLISECOND AND r.ts <= l.ts + INTERVAL '150' MILLISECOND)"
        );
        check(&[], &query, &query, true);
    }
}

/// `input`'s rows with their tumbling window of `size_ms`, computed by `date_bin` for
/// DataFusion.
fn tumbled(input: &str, size_ms: u64) -> String {
    let size = format!("INTERVAL '{size_ms}' MILLISECOND");
    let start = format!("date_bin({size}, ts, TIMESTAMP '1970-01-01 00:00:00')");
    format!(
        "(SELECT k, price, ts, {start} AS window_start, {start} + {size} AS window_end FROM {input})"
    )
}

#[test]
fn window_joins_of_windowed_rows_match_datafusion() {
    for kind in ["JOIN", "LEFT JOIN", "RIGHT JOIN", "FULL JOIN"] {
        let query = |l: &str, r: &str| {
            format!(
                "SELECT a.k AS ak, a.price AS ap, a.ts AS at, b.k AS bk, b.price AS bp, b.ts AS bt, \
                 a.window_start AS aw, b.window_start AS bw FROM {l} a {kind} {r} b \
                 ON a.k = b.k AND a.window_start = b.window_start AND a.window_end = b.window_end"
            )
        };
        let streaming = query(
            "TUMBLE(l, ts, INTERVAL '1' SECOND)",
            "TUMBLE(r, ts, INTERVAL '1' SECOND)",
        );
        check(
            &[],
            &streaming,
            &query(&tumbled("l", 1_000), &tumbled("r", 1_000)),
            true,
        );
    }
}

#[test]
fn window_joins_of_window_aggregates_match_datafusion() {
    // Nexmark q5's shape: per-key counts joined with their window's maximum (250 ms
    // windows, for enough of them), and an outer join of two inputs' per-key aggregates.
    let counts = |input: &str| {
        format!(
            "SELECT k, count(*) AS n, sum(price) AS total, window_start, window_end FROM {input} src \
             GROUP BY k, window_start, window_end"
        )
    };
    let hottest = |input: &str| {
        format!(
            "SELECT c.k, c.n, c.window_start FROM ({counts}) c JOIN \
             (SELECT max(n) AS top, window_start, window_end FROM ({counts}) x GROUP BY window_start, window_end) m \
             ON c.window_start = m.window_start AND c.window_end = m.window_end AND c.n >= m.top",
            counts = counts(input)
        )
    };
    check(
        &[],
        &format!(
            "{} EMIT ON WINDOW CLOSE",
            hottest("TUMBLE(l, ts, INTERVAL '250' MILLISECOND)")
        ),
        &hottest(&tumbled("l", 250)),
        true,
    );
    let outer = |l: &str, r: &str| {
        format!(
            "SELECT a.k AS ak, a.n AS an, b.k AS bk, b.total AS bt, a.window_start AS aw, b.window_start AS bw \
             FROM ({}) a FULL JOIN ({}) b \
             ON a.k = b.k AND a.window_start = b.window_start AND a.window_end = b.window_end AND a.n > 2",
            counts(l),
            counts(r)
        )
    };
    check(
        &[],
        &format!(
            "{} EMIT ON WINDOW CLOSE",
            outer(
                "TUMBLE(l, ts, INTERVAL '1' SECOND)",
                "TUMBLE(r, ts, INTERVAL '1' SECOND)"
            )
        ),
        &outer(&tumbled("l", 1_000), &tumbled("r", 1_000)),
        true,
    );
}

#[test]
fn regular_joins_match_datafusion() {
    // Equal prices (NULL never equal) of different keys: no time bound, so every row stays.
    let columns = "l.k AS lk, l.price AS lp, l.ts AS lt, r.k AS rk, r.price AS rp, r.ts AS rt";
    for kind in ["JOIN", "LEFT JOIN", "RIGHT JOIN", "FULL JOIN"] {
        let query = format!("SELECT {columns} FROM l {kind} r ON l.price = r.price AND l.k <> r.k");
        check(&[], &query, &query, false);
    }
    for exists in ["EXISTS", "NOT EXISTS"] {
        let query = format!(
            "SELECT k, price, ts FROM l WHERE {exists} \
             (SELECT 1 FROM r WHERE r.price = l.price AND r.ts < l.ts)"
        );
        check(&[], &query, &query, false);
    }
}

#[test]
fn regular_joins_over_a_changelog_match_datafusion() {
    // Per-key counts of `r` change with every batch: the join retracts and re-emits its
    // rows, and an outer row toggles as the count crosses the condition.
    let per_key = "SELECT k, count(*) AS n, max(price) AS top FROM r GROUP BY k";
    let setup = format!("CREATE MATERIALIZED VIEW per_key AS {per_key}");
    let query = |per_key: &str| {
        format!(
            "SELECT l.k, l.price, l.ts, p.n, p.top FROM l LEFT JOIN {per_key} p \
             ON l.k = p.k AND p.n > 150 AND l.price < p.top"
        )
    };
    check(
        &[setup.as_str()],
        &query("per_key"),
        &query(&format!("({per_key})")),
        false,
    );
    let semi = |per_key: &str| {
        format!("SELECT k, price FROM l WHERE EXISTS (SELECT 1 FROM {per_key} p WHERE p.k = l.k AND p.top > l.price * 2)")
    };
    check(
        &[setup.as_str()],
        &semi("per_key"),
        &semi(&format!("({per_key})")),
        false,
    );
}

/// Rows of `l` or `r` for one batch of a steady stream: `rows` rows 10 ms apart from
/// `first`, 50 keys.
fn steady_batch(first: i64, rows: i64) -> RecordBatch {
    let base = 1_704_067_200_000_i64;
    RecordBatch::try_new(
        timed_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(
                (first..first + rows).map(|i| i % 50),
            )),
            Arc::new(Int64Array::from_iter_values(
                (first..first + rows).map(|i| i % 500),
            )),
            Arc::new(TimestampMillisecondArray::from_iter_values(
                (first..first + rows).map(|i| base + i * 10),
            )),
        ],
    )
    .expect("batch")
}

#[test]
fn interval_and_window_join_state_stays_bounded_under_a_steady_stream() {
    let queries = [
        format!("SELECT l.k, l.ts, r.ts AS rt FROM l FULL JOIN r ON {INTERVAL}"),
        "SELECT a.k, a.ts, b.ts AS bt FROM TUMBLE(l, ts, INTERVAL '1' SECOND) a \
         LEFT JOIN TUMBLE(r, ts, INTERVAL '1' SECOND) b \
         ON a.k = b.k AND a.window_start = b.window_start AND a.window_end = b.window_end"
            .to_string(),
    ];
    for query in queries {
        for workers in [1, 4] {
            let db = LaminarDB::builder()
                .workers(workers)
                .pin_workers(false)
                .in_memory()
                .expect("database");
            for name in ["l", "r"] {
                db.execute(&format!(
                    "CREATE SOURCE {name} (k BIGINT NOT NULL, price BIGINT, ts TIMESTAMP NOT NULL, \
                     WATERMARK FOR ts AS ts - INTERVAL '{DELAY_MS}' MILLISECOND)"
                ))
                .expect("source");
            }
            db.execute(&format!("CREATE MATERIALIZED VIEW w AS {query}"))
                .expect("view");
            let (l, r) = (db.source("l").expect("l"), db.source("r").expect("r"));
            // 200 batches of 100 rows per input, one second of event time each.
            let mut state_max = 0;
            for batch in 0..200 {
                l.push(steady_batch(batch * 100, 100)).expect("push");
                r.push(steady_batch(batch * 100, 100)).expect("push");
                db.sync().expect("processed");
                let stats = db.metrics().queries.into_iter().find(|q| q.name == "w");
                state_max = state_max.max(stats.map_or(0, |q| q.state_entries));
            }
            // Live rows per input: one batch (1 s) plus what the watermark delay (300 ms) and
            // the bound (500 ms, or the 1 s window) keep: far below the 20,000 rows pushed.
            assert!(
                state_max <= 2 * 260,
                "{workers} workers: state grew to {state_max}: {query}"
            );
            l.finish().expect("finish");
            r.finish().expect("finish");
            assert!(db.wait_finished(WAIT));
            let stats = db
                .metrics()
                .queries
                .into_iter()
                .find(|q| q.name == "w")
                .expect("stats");
            assert_eq!(stats.state_entries, 0, "{workers} workers: {query}");
        }
    }
}
