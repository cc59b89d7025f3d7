//! Differential test of top-N per group: for several seeds, with rows out of order, and at 1
//! and 4 workers, each view after all input equals DataFusion's batch answer for the same
//! ranking over the same rows; per window (emitted once, when the watermark passes) and as
//! a changelog (whose folded changes give the same rows).

mod common;

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use laminar_db::LaminarDB;

use common::{batches, folded, rows, schema, timed_batch_answer, timed_batches, timed_view};

const WAIT: Duration = Duration::from_secs(30);
const DELAY_MS: u64 = 300;

/// `date_bin` spelled out, for the batch side of `TUMBLE(events, ts, INTERVAL '2' SECOND)`.
const WINDOWED: &str = "SELECT *, \
    date_bin(INTERVAL '2' SECOND, ts, TIMESTAMP '1970-01-01 00:00:00') AS window_start, \
    date_bin(INTERVAL '2' SECOND, ts, TIMESTAMP '1970-01-01 00:00:00') + INTERVAL '2' SECOND AS window_end \
    FROM events";

/// Pushes every batch, checks that rows shown before the end are final ones of `expected`,
/// ends the input and returns the view's rows and the state left.
fn run_to_end(
    db: &LaminarDB,
    view: &str,
    input: &[RecordBatch],
    expected: &[String],
) -> (Vec<String>, u64) {
    let source = db.source("events").expect("handle");
    for batch in input {
        source.push(batch.clone()).expect("push");
    }
    let early = rows(&db.query(&format!("SELECT * FROM {view}")).expect("query"));
    assert!(
        early.len() < expected.len(),
        "the last windows are still open"
    );
    assert!(
        early.iter().all(|row| expected.contains(row)),
        "a window's top N is emitted once, final"
    );
    source.finish().expect("finish");
    assert!(db.wait_finished(WAIT));
    let state = db
        .metrics()
        .queries
        .iter()
        .filter(|q| q.name == view)
        .map(|q| q.state_entries)
        .sum();
    (
        rows(&db.query(&format!("SELECT * FROM {view}")).expect("query")),
        state,
    )
}

#[test]
fn top_n_per_tumbling_window_matches_datafusion() {
    // Ties in the ORDER BY are between identical rows only, so any order gives one answer.
    let ranking = |input: &str| {
        format!(
            "SELECT k, price, ts, window_start, rn FROM (SELECT k, price, ts, window_start, window_end, \
             ROW_NUMBER() OVER (PARTITION BY k, window_start, window_end ORDER BY price DESC NULLS LAST, ts) AS rn \
             FROM {input}) WHERE rn <= 3"
        )
    };
    let cheapest = |input: &str| {
        format!(
            "SELECT price, k, ts, window_end FROM (SELECT *, \
             ROW_NUMBER() OVER (PARTITION BY window_end ORDER BY price ASC NULLS FIRST, ts DESC, k) AS rn \
             FROM {input}) WHERE rn = 1"
        )
    };
    let tumble = "TUMBLE(events, ts, INTERVAL '2' SECOND)";
    let windowed = format!("({WINDOWED})");
    for seed in [3, 99, 2024] {
        let input = timed_batches(seed, DELAY_MS as i64);
        for (streaming, batch) in [
            (ranking(tumble), ranking(&windowed)),
            (cheapest(tumble), cheapest(&windowed)),
        ] {
            let expected = timed_batch_answer(&input, &batch);
            assert!(expected.len() > 10, "seed {seed}: too few windows");
            for workers in [1, 4] {
                let db = timed_view(workers, DELAY_MS, &streaming);
                let (all, state) = run_to_end(&db, "w", &input, &expected);
                assert_eq!(all, expected, "seed {seed}, {workers} workers: {streaming}");
                assert_eq!(state, 0, "every window was emitted and freed");
            }
        }
    }
}

#[test]
fn top_n_over_a_view_emitting_on_window_close_matches_datafusion() {
    let counts = "SELECT k, window_start, window_end, count(*) AS n, sum(price) AS total \
        FROM TUMBLE(events, ts, INTERVAL '2' SECOND) GROUP BY k, window_start, window_end \
        EMIT ON WINDOW CLOSE";
    let top = "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end \
        ORDER BY n DESC, total ASC NULLS FIRST, k) AS rn FROM w) WHERE rn <= 3";
    let batch = format!(
        "WITH w AS (SELECT k, window_start, window_end, count(*) AS n, sum(price) AS total \
         FROM ({WINDOWED}) GROUP BY k, window_start, window_end) {top}"
    );
    for seed in [5, 77] {
        let input = timed_batches(seed, DELAY_MS as i64);
        let expected = timed_batch_answer(&input, &batch);
        assert!(expected.len() > 50, "seed {seed}: too few windows");
        for workers in [1, 4] {
            let db = timed_view(workers, DELAY_MS, counts);
            db.execute(&format!("CREATE MATERIALIZED VIEW top AS {top}"))
                .expect("top-N view");
            let (all, state) = run_to_end(&db, "top", &input, &expected);
            assert_eq!(all, expected, "seed {seed}, {workers} workers");
            assert_eq!(state, 0, "every window was emitted and freed");
        }
    }
}

#[test]
fn top_n_over_an_append_only_stream_is_an_exact_changelog() {
    let top = "SELECT * FROM (SELECT k, price, ts, ROW_NUMBER() OVER (PARTITION BY k \
        ORDER BY price DESC NULLS LAST, ts) AS rn FROM events) WHERE rn <= 4";
    for seed in [8, 31] {
        let input = timed_batches(seed, DELAY_MS as i64);
        let expected = timed_batch_answer(&input, top);
        for workers in [1, 4] {
            let db = timed_view(workers, DELAY_MS, top);
            let mut changes = db.subscribe("w").expect("subscribe");
            let source = db.source("events").expect("handle");
            for batch in &input {
                source.push(batch.clone()).expect("push");
            }
            let view = rows(&db.query("SELECT * FROM w").expect("query"));
            assert_eq!(view, expected, "seed {seed}, {workers} workers");
            source.finish().expect("finish");
            assert_eq!(
                folded(&mut changes),
                expected,
                "seed {seed}, {workers} workers: folded changelog"
            );
            let state: u64 = db.metrics().queries.iter().map(|q| q.state_entries).sum();
            assert!(
                state <= 13 * 4,
                "only the best 4 rows of each of 13 keys are kept"
            );
        }
    }
}

#[test]
fn top_n_over_a_changelog_follows_retractions() {
    let per_group =
        "SELECT kind, amount % 5 AS bucket, count(*) AS n FROM events GROUP BY kind, amount % 5";
    let tops = [
        // Partitioned, row number read: rank changes are retracted and re-inserted.
        "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY kind ORDER BY n DESC, bucket) AS rn \
         FROM per_group) WHERE rn <= 2",
        // Global, row number dropped: only rows entering and leaving change.
        "SELECT kind, bucket, n FROM (SELECT *, ROW_NUMBER() OVER (ORDER BY n DESC, kind, bucket) AS rn \
         FROM per_group) WHERE rn < 6",
    ];
    for seed in [11, 23] {
        let input = batches(seed);
        let expected: Vec<Vec<String>> = {
            let ctx = SessionContext::new();
            let table = MemTable::try_new(schema(), vec![input.clone()]).expect("table");
            ctx.register_table("events", Arc::new(table))
                .expect("register");
            let runtime = tokio::runtime::Runtime::new().expect("tokio");
            runtime
                .block_on(async {
                    let groups = ctx.sql(per_group).await?.collect().await?;
                    let view = MemTable::try_new(groups[0].schema(), vec![groups])?;
                    ctx.register_table("per_group", Arc::new(view))?;
                    let mut answers = Vec::new();
                    for top in tops {
                        answers.push(rows(&ctx.sql(top).await?.collect().await?));
                    }
                    Ok::<_, datafusion::error::DataFusionError>(answers)
                })
                .expect("batch answer")
        };
        for workers in [1, 4] {
            let db = LaminarDB::builder()
                .workers(workers)
                .pin_workers(false)
                .in_memory()
                .expect("database");
            db.execute("CREATE SOURCE events (id BIGINT NOT NULL, kind VARCHAR, amount BIGINT)")
                .expect("source");
            db.execute(&format!(
                "CREATE MATERIALIZED VIEW per_group AS {per_group}"
            ))
            .expect("groups");
            let mut subscriptions = Vec::new();
            for (index, top) in tops.iter().enumerate() {
                db.execute(&format!("CREATE MATERIALIZED VIEW top{index} AS {top}"))
                    .expect("top-N view");
                subscriptions.push(db.subscribe(&format!("top{index}")).expect("subscribe"));
            }
            let source = db.source("events").expect("handle");
            for batch in &input {
                source.push(batch.clone()).expect("push");
            }
            for (index, expected) in expected.iter().enumerate() {
                let view = rows(
                    &db.query(&format!("SELECT * FROM top{index}"))
                        .expect("query"),
                );
                assert_eq!(
                    &view, expected,
                    "seed {seed}, {workers} workers: {}",
                    tops[index]
                );
            }
            source.finish().expect("finish");
            for (subscription, expected) in subscriptions.iter_mut().zip(&expected) {
                assert_eq!(
                    &folded(subscription),
                    expected,
                    "seed {seed}, {workers} workers: folded"
                );
            }
        }
    }
}
