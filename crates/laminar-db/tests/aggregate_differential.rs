//! Differential tests of aggregation (unwindowed, tumbling, hopping and session windows):
//! for several seeds and at 1 and 4 workers, the materialized view after all input equals
//! DataFusion's batch answer for the same SQL over the same rows, and folding the subscribed
//! changelog gives the same rows; a changelog view is checked after every batch.

mod common;

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use laminar_db::LaminarDB;

use common::{batches, folded, rows, schema, timed_batch_answer, timed_batches, timed_view};

const QUERY: &str = "SELECT kind, amount % 7 AS bucket, count(*) AS n, sum(amount) AS total,
        min(amount) AS low, max(amount) AS high, count(DISTINCT id % 11) AS ids,
        round(avg(amount), 6) AS mean, round(stddev(amount), 6) AS sd,
        count(amount) FILTER (WHERE amount > 500) AS big
    FROM events GROUP BY kind, amount % 7 HAVING count(*) > 2";

fn batch_answer(input: &[RecordBatch]) -> Vec<String> {
    let ctx = SessionContext::new();
    let table = MemTable::try_new(schema(), vec![input.to_vec()]).expect("table");
    ctx.register_table("events", Arc::new(table))
        .expect("register");
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    let answer = runtime
        .block_on(async { ctx.sql(QUERY).await?.collect().await })
        .expect("batch answer");
    rows(&answer)
}

fn streaming_answer(input: &[RecordBatch], workers: usize) -> (Vec<String>, Vec<String>) {
    let db = LaminarDB::builder()
        .workers(workers)
        .pin_workers(false)
        .in_memory()
        .expect("database");
    db.execute("CREATE SOURCE events (id BIGINT NOT NULL, kind VARCHAR, amount BIGINT)")
        .expect("source");
    db.execute(&format!("CREATE MATERIALIZED VIEW result AS {QUERY}"))
        .expect("view");
    let mut changes = db.subscribe("result").expect("subscribe");
    let source = db.source("events").expect("handle");
    for batch in input {
        source.push(batch.clone()).expect("push");
    }
    let view = rows(&db.query("SELECT * FROM result").expect("query"));
    source.finish().expect("finish");

    let from_changelog = folded(&mut changes);
    (view, from_changelog)
}

#[test]
fn grouped_aggregation_matches_datafusion_at_one_and_four_workers() {
    for seed in [1, 7, 42, 1_000_003] {
        let input = batches(seed);
        let expected = batch_answer(&input);
        assert!(
            expected.len() > 10,
            "seed {seed}: too few groups to be a test"
        );
        for workers in [1, 4] {
            let (view, folded) = streaming_answer(&input, workers);
            assert_eq!(
                view, expected,
                "seed {seed}, {workers} workers: view differs from DataFusion"
            );
            assert_eq!(
                folded, expected,
                "seed {seed}, {workers} workers: folded changelog differs"
            );
        }
    }
}

/// The dataflow `EXPLAIN` prints for view `w` running `query` over `events`.
fn explained(db: &LaminarDB, query: &str) -> String {
    let explained = db
        .execute(&format!("EXPLAIN CREATE MATERIALIZED VIEW x AS {query}"))
        .expect("explain");
    rows(explained.batches().expect("rows")).join("\n")
}

/// Eight aggregates DataFusion runs vectorized (groups accumulators): the window operator's
/// columnar path.
const VECTORIZED_AGGREGATES: &str = "count(*) AS n, sum(price) AS total, min(price) AS low, \
    max(price) AS high, round(avg(price), 6) AS mean, round(stddev(price), 4) AS sd, \
    bool_or(price > 400) AS any_big, count(price) AS priced";

/// Eight aggregates, one without a groups accumulator (`COVAR_POP`): the row-at-a-time path.
const ROW_AGGREGATES: &str = "count(*) AS n, sum(price) AS total, min(price) AS low, \
    max(price) AS high, count(DISTINCT price % 5) AS kinds, round(avg(price), 6) AS mean, \
    round(covar_pop(price, k), 4) AS covar, bool_and(price > 10) AS all_above";

#[test]
fn tumbling_windows_on_close_match_datafusion_date_bin() {
    for (aggregates, vectorized) in [(VECTORIZED_AGGREGATES, true), (ROW_AGGREGATES, false)] {
        let streaming = format!(
            "SELECT k, window_start, window_end, {aggregates} FROM TUMBLE(events, ts, INTERVAL '2' SECOND) \
             GROUP BY k, window_start, window_end EMIT ON WINDOW CLOSE"
        );
        let batch = format!(
            "SELECT k, date_bin(INTERVAL '2' SECOND, ts, TIMESTAMP '1970-01-01 00:00:00') AS window_start, \
             date_bin(INTERVAL '2' SECOND, ts, TIMESTAMP '1970-01-01 00:00:00') + INTERVAL '2' SECOND AS window_end, \
             {aggregates} FROM events GROUP BY 1, 2, 3"
        );
        for seed in [3, 99, 2024] {
            let input = timed_batches(seed, 300);
            let expected = timed_batch_answer(&input, &batch);
            assert!(expected.len() > 50, "seed {seed}: too few windows");
            for workers in [1, 4] {
                let db = timed_view(workers, 300, &streaming);
                let plan = explained(&db, &streaming);
                assert_eq!(
                    plan.contains("WindowAggregate"),
                    vectorized,
                    "vectorized: {vectorized}\n{plan}"
                );
                // Vectorized windows aggregate in two phases (one, on one worker).
                assert_eq!(
                    plan.contains("merging partial states") && plan.contains("partial states,"),
                    vectorized,
                    "{plan}"
                );
                let source = db.source("events").expect("handle");
                for part in &input {
                    source.push(part.clone()).expect("push");
                }
                // Before the end, only windows the watermark passed have fired: a strict subset.
                let early = rows(&db.query("SELECT * FROM w").expect("query"));
                assert!(
                    early.len() < expected.len(),
                    "seed {seed}: the last windows are still open"
                );
                assert!(
                    early.iter().all(|row| expected.contains(row)),
                    "seed {seed}: an early row is not final"
                );
                source.finish().expect("finish");
                assert!(db.wait_finished(std::time::Duration::from_secs(30)));
                let all = rows(&db.query("SELECT * FROM w").expect("query"));
                assert_eq!(
                    all, expected,
                    "seed {seed}, {workers} workers, {vectorized}"
                );
            }
        }
    }
}

#[test]
fn hopping_windows_on_close_match_datafusion() {
    for aggregates in [VECTORIZED_AGGREGATES, ROW_AGGREGATES] {
        let streaming = format!(
            "SELECT k, window_start, window_end, {aggregates} \
             FROM HOP(events, ts, INTERVAL '1' SECOND, INTERVAL '3' SECOND) \
             GROUP BY k, window_start, window_end EMIT ON WINDOW CLOSE"
        );
        // Written independently of the rewrite: each row joined with the offsets of the
        // three windows containing it.
        let start = "date_bin(INTERVAL '1' SECOND, ts, TIMESTAMP '1970-01-01 00:00:00') - \
            CASE o.i WHEN 0 THEN INTERVAL '0' SECOND WHEN 1 THEN INTERVAL '1' SECOND ELSE INTERVAL '2' SECOND END";
        let batch = format!(
            "SELECT k, {start} AS window_start, {start} + INTERVAL '3' SECOND AS window_end, \
             {aggregates} FROM events CROSS JOIN (VALUES (0), (1), (2)) AS o(i) GROUP BY 1, 2, 3"
        );
        for seed in [5, 77] {
            let input = timed_batches(seed, 200);
            let expected = timed_batch_answer(&input, &batch);
            assert!(expected.len() > 50, "seed {seed}: too few windows");
            for workers in [1, 4] {
                let db = timed_view(workers, 200, &streaming);
                let source = db.source("events").expect("handle");
                for part in &input {
                    source.push(part.clone()).expect("push");
                }
                source.finish().expect("finish");
                assert!(db.wait_finished(std::time::Duration::from_secs(30)));
                let all = rows(&db.query("SELECT * FROM w").expect("query"));
                assert_eq!(all, expected, "seed {seed}, {workers} workers");
            }
        }
    }
}

/// DataFusion's answers to `outer` queries over view `per_group`, itself the answer to
/// `inner` over `input`.
fn nested_batch_answers(input: &[RecordBatch], inner: &str, outer: &[&str]) -> Vec<Vec<String>> {
    let ctx = SessionContext::new();
    let table = MemTable::try_new(schema(), vec![input.to_vec()]).expect("table");
    ctx.register_table("events", Arc::new(table))
        .expect("register");
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    runtime
        .block_on(async {
            let groups = ctx.sql(inner).await?.collect().await?;
            let view = MemTable::try_new(groups[0].schema(), vec![groups])?;
            ctx.register_table("per_group", Arc::new(view))?;
            let mut answers = Vec::new();
            for query in outer {
                answers.push(rows(&ctx.sql(query).await?.collect().await?));
            }
            Ok::<_, datafusion::error::DataFusionError>(answers)
        })
        .expect("batch answer")
}

/// The views `outer` (named `o0`, `o1`, ...) over view `per_group` running `inner`, after
/// all of `input`: the outer views are created once half of it is in (backfilled).
fn nested_streaming_answers(
    input: &[RecordBatch],
    workers: usize,
    inner: &str,
    outer: &[&str],
) -> Vec<Vec<String>> {
    let db = LaminarDB::builder()
        .workers(workers)
        .pin_workers(false)
        .in_memory()
        .expect("database");
    db.execute("CREATE SOURCE events (id BIGINT NOT NULL, kind VARCHAR, amount BIGINT)")
        .expect("source");
    db.execute(&format!("CREATE MATERIALIZED VIEW per_group AS {inner}"))
        .expect("inner");
    let source = db.source("events").expect("handle");
    let (first, second) = input.split_at(input.len() / 2);
    for batch in first {
        source.push(batch.clone()).expect("push");
    }
    // Created over a view that already holds rows: they are backfilled.
    for (index, query) in outer.iter().enumerate() {
        db.execute(&format!("CREATE MATERIALIZED VIEW o{index} AS {query}"))
            .expect("outer");
    }
    for batch in second {
        source.push(batch.clone()).expect("push");
    }
    (0..outer.len())
        .map(|index| rows(&db.query(&format!("SELECT * FROM o{index}")).expect("query")))
        .collect()
}

#[test]
fn aggregates_over_aggregates_stay_exact_and_backfill() {
    let inner = "SELECT kind, amount % 5 AS bucket, count(*) AS n, sum(amount) AS total FROM events GROUP BY kind, amount % 5";
    let outer = "SELECT n % 4 AS size, count(*) AS groups, sum(total) AS amount, \
                 round(avg(total), 6) AS mean FROM per_group GROUP BY n % 4";
    let filtered = "SELECT kind, bucket, n FROM per_group WHERE n > 20";
    for seed in [11, 23] {
        let input = batches(seed);
        let expected = nested_batch_answers(&input, inner, &[outer, filtered]);
        for workers in [1, 4] {
            let got = nested_streaming_answers(&input, workers, inner, &[outer, filtered]);
            assert_eq!(
                got[0], expected[0],
                "seed {seed}, {workers} workers: nested aggregate"
            );
            assert_eq!(
                got[1], expected[1],
                "seed {seed}, {workers} workers: filter over changelog"
            );
        }
    }
}

#[test]
fn session_windows_on_close_match_datafusion_window_functions() {
    let aggregates = "count(*) AS n, sum(price) AS total, min(price) AS low, max(price) AS high, \
                      count(DISTINCT price % 5) AS kinds, round(avg(price), 6) AS mean, \
                      round(stddev(price), 4) AS sd, bool_or(price > 400) AS any_big";
    let streaming = format!(
        "SELECT k, window_start, window_end, {aggregates} \
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
         {aggregates} FROM numbered GROUP BY k, sid"
    );
    for seed in [11, 404, 9000] {
        let input = timed_batches(seed, 300);
        let expected = timed_batch_answer(&input, &batch);
        assert!(expected.len() > 100, "seed {seed}: too few sessions");
        for workers in [1, 4] {
            let db = timed_view(workers, 300, &streaming);
            // The same sessions as a changelog, merged and retracted row by row.
            let changelog = streaming.replace(" EMIT ON WINDOW CLOSE", "");
            db.execute(&format!("CREATE MATERIALIZED VIEW c AS {changelog}"))
                .expect("changelog view");
            let source = db.source("events").expect("handle");
            for part in &input {
                source.push(part.clone()).expect("push");
            }
            // Sessions the watermark closed are final: out-of-order rows are never late.
            let early = rows(&db.query("SELECT * FROM w").expect("query"));
            assert!(
                early.len() < expected.len(),
                "seed {seed}: the last sessions are still open"
            );
            assert!(
                early.iter().all(|row| expected.contains(row)),
                "seed {seed}: an early row is not final"
            );
            source.finish().expect("finish");
            assert!(db.wait_finished(std::time::Duration::from_secs(30)));
            let all = rows(&db.query("SELECT * FROM w").expect("query"));
            assert_eq!(all, expected, "seed {seed}, {workers} workers");
            let folded = rows(&db.query("SELECT * FROM c").expect("query"));
            assert_eq!(
                folded, expected,
                "seed {seed}, {workers} workers, changelog"
            );
        }
    }
}

#[test]
fn windowed_changelog_equals_datafusion_after_every_batch() {
    let aggregates = "count(*) AS n, sum(price) AS total, min(price) AS low, max(price) AS high, \
                      count(DISTINCT price % 5) AS kinds, round(avg(price), 6) AS mean, \
                      round(stddev(price), 4) AS sd, bool_and(price > 10) AS all_above";
    let streaming = format!(
        "SELECT k, window_start, window_end, {aggregates} FROM TUMBLE(events, ts, INTERVAL '2' SECOND) \
         GROUP BY k, window_start, window_end EMIT CHANGES"
    );
    let batch = format!(
        "SELECT k, date_bin(INTERVAL '2' SECOND, ts, TIMESTAMP '1970-01-01 00:00:00') AS window_start, \
         date_bin(INTERVAL '2' SECOND, ts, TIMESTAMP '1970-01-01 00:00:00') + INTERVAL '2' SECOND AS window_end, \
         {aggregates} FROM events GROUP BY 1, 2, 3"
    );
    for seed in [8, 61] {
        let input = timed_batches(seed, 300);
        for workers in [1, 4] {
            let db = timed_view(workers, 300, &streaming);
            let mut changes = db.subscribe("w").expect("subscribe");
            let source = db.source("events").expect("handle");
            for (step, part) in input.iter().enumerate() {
                source.push(part.clone()).expect("push");
                // The folded changelog (the view) is exact after every batch and watermark.
                let expected = timed_batch_answer(&input[..=step], &batch);
                let view = rows(&db.query("SELECT * FROM w").expect("query"));
                assert_eq!(
                    view, expected,
                    "seed {seed}, {workers} workers, step {step}"
                );
            }
            source.finish().expect("finish");
            let expected = timed_batch_answer(&input, &batch);
            assert_eq!(
                folded(&mut changes),
                expected,
                "seed {seed}, {workers} workers"
            );
        }
    }
}

#[test]
fn order_sensitive_and_distinct_aggregates_over_a_changelog_match_datafusion() {
    // `last_id` is unique per inner group, so orderings by it have no ties.
    let inner = "SELECT kind, amount % 13 AS bucket, count(*) AS n, sum(amount) AS total, \
                 max(id) AS last_id FROM events GROUP BY kind, amount % 13";
    let by_size = "SELECT n % 4 AS size, min(total) AS low, max(total) AS high, \
                   count(DISTINCT kind) AS kinds, count(DISTINCT total % 3) AS residues, \
                   first_value(bucket ORDER BY last_id) AS oldest, \
                   last_value(kind ORDER BY last_id) AS newest, \
                   string_agg(kind || '/' || CAST(bucket AS VARCHAR), ',' ORDER BY last_id) AS trail, \
                   median(total) AS mid, sum(DISTINCT n) AS sizes \
                   FROM per_group GROUP BY n % 4";
    let overall =
        "SELECT min(n) AS fewest, max(last_id) AS last, count(DISTINCT bucket) AS buckets, \
                   first_value(kind ORDER BY last_id DESC) AS latest, \
                   array_agg(n ORDER BY last_id) AS sizes FROM per_group";
    for seed in [5, 31, 2_024] {
        let input = batches(seed);
        let expected = nested_batch_answers(&input, inner, &[by_size, overall]);
        assert!(
            expected[0].len() == 4,
            "seed {seed}: every size bucket has groups"
        );
        for workers in [1, 4] {
            let got = nested_streaming_answers(&input, workers, inner, &[by_size, overall]);
            assert_eq!(got, expected, "seed {seed}, {workers} workers");
        }
    }
}
