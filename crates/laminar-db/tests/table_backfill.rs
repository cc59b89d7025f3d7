//! Queries created over a reference table while another thread upserts into it: each starts
//! from the table's rows at its creation and follows every later change, so after the
//! writes it holds exactly what the table holds (no change missed or counted twice), at 1
//! and 4 workers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use datafusion::arrow::util::pretty::pretty_format_batches;
use laminar_db::LaminarDB;

/// Upserts the writer makes, over `KEYS` keys (so most replace a row).
const WRITES: usize = 300;
const KEYS: usize = 23;
/// Views of each kind created while the writer runs.
const VIEWS: usize = 6;
const WAIT_TIMEOUT: Duration = Duration::from_secs(60);

/// The rows `sql` reads, as a table of text.
fn rows(db: &LaminarDB, sql: &str) -> String {
    let batches = db.query(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    pretty_format_batches(&batches)
        .expect("printable rows")
        .to_string()
}

/// Waits until the writer has made `target` upserts (or finished early on an error).
fn wait_for_writes(written: &AtomicUsize, target: usize) {
    let deadline = Instant::now() + WAIT_TIMEOUT;
    while written.load(Ordering::SeqCst) < target {
        assert!(
            Instant::now() < deadline,
            "writer stalled before {target} upserts"
        );
        std::thread::yield_now();
    }
}

fn check_views_follow_concurrent_upserts(workers: usize) {
    let db = LaminarDB::builder()
        .workers(workers)
        .pin_workers(false)
        .in_memory()
        .expect("database");
    db.execute("CREATE TABLE kv (k BIGINT PRIMARY KEY, v BIGINT)")
        .expect("table");
    let written = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            for i in 0..WRITES {
                let result = db.execute(&format!("INSERT INTO kv VALUES ({}, {i})", i % KEYS));
                // Counted even on failure, so the creating thread never waits forever.
                written.fetch_add(1, Ordering::SeqCst);
                result.expect("upsert");
            }
        });
        for n in 0..VIEWS {
            // Views start at several points of the writes: before any, and part-way.
            wait_for_writes(&written, n * WRITES / (VIEWS + 1));
            db.execute(&format!(
                "CREATE MATERIALIZED VIEW total_{n} AS \
                 SELECT count(*) AS n, sum(v) AS total FROM kv"
            ))
            .expect("count view");
            db.execute(&format!(
                "CREATE MATERIALIZED VIEW rows_{n} AS SELECT k, v * 10 AS v10 FROM kv"
            ))
            .expect("projection view");
        }
        writer.join().expect("writer thread");
    });
    db.sync().expect("sync");

    let totals = rows(&db, "SELECT count(*) AS n, sum(v) AS total FROM kv");
    let projected = rows(&db, "SELECT k, v * 10 AS v10 FROM kv ORDER BY k");
    assert!(
        totals.contains(&format!("| {KEYS} ")),
        "every key was written: {totals}"
    );
    for n in 0..VIEWS {
        let view_totals = rows(&db, &format!("SELECT n, total FROM total_{n}"));
        assert_eq!(view_totals, totals, "total_{n} at {workers} workers");
        let view_rows = rows(&db, &format!("SELECT k, v10 FROM rows_{n} ORDER BY k"));
        assert_eq!(view_rows, projected, "rows_{n} at {workers} workers");
    }
}

#[test]
fn views_created_during_upserts_equal_the_table_at_one_worker() {
    check_views_follow_concurrent_upserts(1);
}

#[test]
fn views_created_during_upserts_equal_the_table_at_four_workers() {
    check_views_follow_concurrent_upserts(4);
}
