//! `state_ttl` on a regular join: a key whose rows were not read or written for the TTL is
//! forgotten, so a row arriving later for it no longer joins with those rows; without the
//! option the same row joins. The option survives a reopen (the catalog stores it as SQL).

use std::path::Path;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use laminar_db::LaminarDB;

/// How long a condition may take to hold before the test fails.
const WAIT: Duration = Duration::from_secs(30);
/// Between two looks at a condition.
const POLL: Duration = Duration::from_millis(10);

fn open(dir: Option<&Path>) -> LaminarDB {
    let builder = LaminarDB::builder().workers(2).pin_workers(false);
    match dir {
        Some(dir) => builder.open(dir),
        None => builder.in_memory(),
    }
    .expect("database starts")
}

fn create(db: &LaminarDB, with: &str) {
    db.execute("CREATE SOURCE l (k VARCHAR NOT NULL, v BIGINT NOT NULL)")
        .expect("source l");
    db.execute("CREATE SOURCE r (k VARCHAR NOT NULL, w BIGINT NOT NULL)")
        .expect("source r");
    db.execute(&format!(
        "CREATE MATERIALIZED VIEW j {with} AS SELECT l.k, l.v, r.w FROM l JOIN r ON l.k = r.k"
    ))
    .expect("view j");
}

fn state_entries(db: &LaminarDB) -> u64 {
    db.metrics()
        .queries
        .iter()
        .find(|q| q.name == "j")
        .map(|q| q.state_entries)
        .expect("view j has stats")
}

/// Waits until the view's join holds `entries` rows; false if it does not within `WAIT`.
fn wait_for_state(db: &LaminarDB, entries: u64) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if state_entries(db) == entries {
            return true;
        }
        std::thread::sleep(POLL);
    }
    false
}

fn row_count(db: &LaminarDB) -> usize {
    let batches = db.query("SELECT * FROM j").expect("query j");
    batches.iter().map(RecordBatch::num_rows).sum()
}

fn insert(db: &LaminarDB, sql: &str) {
    db.execute(sql).expect("insert");
    db.sync().expect("processed");
}

/// Left rows for keys `a` and `b`, then, once they were forgotten, a right row for `a`.
fn forgets_idle_keys(db: &LaminarDB) {
    insert(db, "INSERT INTO l VALUES ('a', 1), ('b', 2)");
    assert!(
        wait_for_state(db, 0),
        "idle keys are dropped after state_ttl"
    );
    insert(db, "INSERT INTO r VALUES ('a', 10)");
    assert_eq!(row_count(db), 0, "the left row for 'a' was forgotten");
    assert!(state_entries(db) <= 1, "only the new right row may be held");
}

#[test]
fn a_regular_join_with_state_ttl_forgets_idle_keys() {
    let db = open(None);
    create(&db, "WITH (state_ttl = '200ms')");
    forgets_idle_keys(&db);
}

#[test]
fn without_state_ttl_the_same_rows_join() {
    let db = open(None);
    create(&db, "");
    insert(&db, "INSERT INTO l VALUES ('a', 1), ('b', 2)");
    // Longer than the TTL above: nothing is dropped without the option.
    let until = Instant::now() + Duration::from_millis(400);
    while Instant::now() < until {
        assert_eq!(
            state_entries(&db),
            2,
            "a join without state_ttl keeps its rows"
        );
        std::thread::sleep(POLL);
    }
    insert(&db, "INSERT INTO r VALUES ('a', 10)");
    assert_eq!(row_count(&db), 1, "the right row joins the kept left row");
}

#[test]
fn state_ttl_is_restored_on_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let db = open(Some(dir.path()));
        create(&db, "WITH (state_ttl = '200ms')");
    }
    let db = open(Some(dir.path()));
    forgets_idle_keys(&db);
}
