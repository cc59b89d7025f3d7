//! Lookup tables backed by an application's lookup source: a stream joined with one asks
//! the source for the keys its workers' caches miss, in batches, on threads of their own;
//! a held source never stalls a worker; errors name the table; waiting rows survive a
//! checkpoint and reopen.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use laminar_db::{LaminarDB, LookupError, LookupSource};

// Of the shared helpers, this test uses only `rows`.
#[allow(dead_code)]
mod common;

const WAIT: Duration = Duration::from_secs(30);

/// A customer directory: id -> (name, tier). Records each call's keys; holds calls while
/// `held`; fails every call while `failing`.
#[derive(Default)]
struct Directory {
    customers: HashMap<i64, (String, String)>,
    calls: Mutex<Vec<Vec<i64>>>,
    held: Mutex<bool>,
    released: Condvar,
    failing: Mutex<bool>,
}

impl Directory {
    fn new() -> Arc<Self> {
        let customers = (1..=6)
            .map(|id| {
                let tier = if id % 2 == 0 { "gold" } else { "basic" };
                (id, (format!("c{id}"), tier.to_string()))
            })
            .collect();
        Arc::new(Self {
            customers,
            ..Self::default()
        })
    }

    fn hold(&self, held: bool) {
        *self.held.lock().expect("lock") = held;
        self.released.notify_all();
    }

    fn calls(&self) -> Vec<Vec<i64>> {
        self.calls.lock().expect("lock").clone()
    }
}

/// Lets the directory's calls go when dropped.
struct Release(Arc<Directory>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.hold(false);
    }
}

impl LookupSource for Directory {
    fn lookup(&self, keys: &RecordBatch) -> Result<RecordBatch, LookupError> {
        let mut held = self.held.lock().expect("lock");
        while *held {
            held = self.released.wait(held).expect("lock");
        }
        drop(held);
        if *self.failing.lock().expect("lock") {
            return Err(LookupError::new("directory unreachable"));
        }
        let ids = keys
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| LookupError::new("ids are not BIGINT"))?;
        let mut asked: Vec<i64> = ids.iter().flatten().collect();
        asked.sort_unstable();
        self.calls.lock().expect("lock").push(asked.clone());
        let found: Vec<(i64, &(String, String))> = asked
            .iter()
            .filter_map(|id| self.customers.get(id).map(|c| (*id, c)))
            .collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("tier", DataType::Utf8, true),
        ]));
        Ok(RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(found.iter().map(|f| f.0))),
                Arc::new(StringArray::from_iter_values(found.iter().map(|f| &f.1 .0))),
                Arc::new(StringArray::from_iter_values(found.iter().map(|f| &f.1 .1))),
            ],
        )?)
    }
}

const SCHEMA: &str = "
    CREATE SOURCE orders (id BIGINT, customer BIGINT, amount BIGINT);
    CREATE TABLE customers (id BIGINT PRIMARY KEY, name VARCHAR, tier VARCHAR)
        FROM LOOKUP (source = 'crm', cache_rows = '100', cache_ttl = '10m', retries = '1');
";

fn database(workers: usize, directory: &Arc<Directory>) -> LaminarDB {
    let db = LaminarDB::builder()
        .workers(workers)
        .pin_workers(false)
        .lookup_source("crm", Arc::clone(directory) as Arc<dyn LookupSource>)
        .in_memory()
        .expect("database");
    for statement in LaminarDB::split_statements(SCHEMA).expect("statements") {
        db.execute(&statement).expect("schema");
    }
    db
}

fn push_orders(db: &LaminarDB, orders: &[(i64, Option<i64>, i64)]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("customer", DataType::Int64, true),
        Field::new("amount", DataType::Int64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(orders.iter().map(|o| o.0))),
            Arc::new(orders.iter().map(|o| o.1).collect::<Int64Array>()),
            Arc::new(Int64Array::from_iter_values(orders.iter().map(|o| o.2))),
        ],
    )
    .expect("orders");
    db.source("orders")
        .expect("orders source")
        .push(batch)
        .expect("push");
}

/// Waits until `sql` reads `expected` (sorted rows, `|`-separated).
fn wait_for(db: &LaminarDB, sql: &str, expected: &[&str]) {
    let deadline = Instant::now() + WAIT;
    loop {
        let rows = common::rows(&db.query(sql).unwrap_or_else(|e| panic!("{sql}: {e}")));
        if rows == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sql} read {rows:?}, expected {expected:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_stream_joins_the_source_s_rows_asking_only_for_what_the_caches_miss() {
    let directory = Directory::new();
    let db = database(2, &directory);
    db.execute(
        "CREATE MATERIALIZED VIEW named AS SELECT o.id, c.name FROM orders o \
         LEFT JOIN customers c ON o.customer = c.id",
    )
    .expect("left join");
    // A filter on the table (pushed below the join) and a condition on the pair.
    db.execute(
        "CREATE MATERIALIZED VIEW gold AS SELECT o.id, c.name, c.tier FROM orders o \
         JOIN customers c ON o.customer = c.id AND o.amount > 10 WHERE c.tier = 'gold'",
    )
    .expect("inner join");
    push_orders(
        &db,
        &[
            (1, Some(1), 5),
            (2, Some(2), 50),
            (3, Some(9), 50),
            (4, None, 50),
            (5, Some(4), 5),
            (6, Some(2), 20),
        ],
    );
    wait_for(
        &db,
        "SELECT * FROM named",
        &["1|c1", "2|c2", "3|NULL", "4|NULL", "5|c4", "6|c2"],
    );
    wait_for(&db, "SELECT * FROM gold", &["2|c2|gold", "6|c2|gold"]);
    let asked: usize = directory.calls().iter().map(Vec::len).sum();
    let first_calls = directory.calls().len();
    // The same customers again, each cached by every view that asked for it before (the
    // missing 9 included); orders of 10 or less never reach `gold`'s join.
    push_orders(&db, &[(7, Some(1), 5), (8, Some(9), 50), (9, Some(4), 5)]);
    wait_for(
        &db,
        "SELECT * FROM named WHERE id > 6",
        &["7|c1", "8|NULL", "9|c4"],
    );
    wait_for(&db, "SELECT * FROM gold WHERE id > 6", &[]);
    assert_eq!(
        directory.calls().len(),
        first_calls,
        "no call for cached keys"
    );
    let metrics = db.metrics();
    let [lookup] = metrics.lookups.as_slice() else {
        panic!("one lookup table: {:?}", metrics.lookups);
    };
    assert_eq!(
        (lookup.name.as_str(), lookup.source.as_str()),
        ("customers", "crm")
    );
    let counters = lookup.counters;
    // `named` probes 5 non-NULL keys, then 3; `gold` (orders over 10 only) 3, then 1.
    assert_eq!(counters.hits + counters.misses, 12, "{counters:?}");
    assert!(counters.hits >= 4, "{counters:?}");
    assert_eq!(counters.keys_requested, asked as u64);
    // `named` asks for 1, 2, 4 and 9 once each, `gold` for 2 and 9, on whichever worker.
    assert_eq!(asked, 6, "{:?}", directory.calls());
    assert_eq!(counters.cached_keys, 6);
}

#[test]
fn a_held_source_never_stalls_a_worker() {
    let directory = Directory::new();
    let db = database(1, &directory);
    db.execute(
        "CREATE MATERIALIZED VIEW named AS SELECT o.id, c.name FROM orders o \
         JOIN customers c ON o.customer = c.id",
    )
    .expect("join");
    db.execute("CREATE MATERIALIZED VIEW counted AS SELECT count(*) AS n FROM orders")
        .expect("count");
    directory.hold(true);
    // Released however the test ends, so a failing test does not hang its shutdown.
    let _release = Release(Arc::clone(&directory));
    push_orders(&db, &[(1, Some(1), 5), (2, Some(3), 5)]);
    // The one worker runs the count while the join waits for its source.
    wait_for(&db, "SELECT n FROM counted", &["2"]);
    push_orders(&db, &[(3, Some(5), 5)]);
    wait_for(&db, "SELECT n FROM counted", &["3"]);
    assert!(db
        .query("SELECT * FROM named")
        .map(|b| common::rows(&b))
        .expect("read")
        .is_empty());
    directory.hold(false);
    wait_for(&db, "SELECT * FROM named", &["1|c1", "2|c3", "3|c5"]);
}

#[test]
fn a_failing_source_fails_the_query_with_the_table_s_name() {
    let directory = Directory::new();
    *directory.failing.lock().expect("lock") = true;
    let db = database(1, &directory);
    db.execute(
        "CREATE MATERIALIZED VIEW named AS SELECT o.id, c.name FROM orders o \
         JOIN customers c ON o.customer = c.id",
    )
    .expect("join");
    push_orders(&db, &[(1, Some(1), 5)]);
    let deadline = Instant::now() + WAIT;
    let error = loop {
        let metrics = db.metrics();
        let named = metrics.queries.iter().find(|q| q.name == "named");
        if let Some(error) = named.and_then(|q| q.error.clone()) {
            break error;
        }
        assert!(Instant::now() < deadline, "the query never failed");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(
        error.contains("lookup table customers") && error.contains("directory unreachable"),
        "{error}"
    );
    assert_eq!(db.metrics().lookups[0].counters.failures, 2);
}

#[test]
fn what_a_lookup_table_cannot_do_is_refused_with_the_reason() {
    let directory = Directory::new();
    let db = database(1, &directory);
    let refused = |sql: &str, expected: &str| {
        let error = db.execute(sql).expect_err(sql).to_string();
        assert!(error.contains(expected), "{sql}: {error}");
    };
    refused(
        "CREATE TABLE other (id BIGINT PRIMARY KEY) FROM LOOKUP (source = 'nope')",
        "no lookup source named 'nope' is registered",
    );
    refused(
        "CREATE TABLE other (id BIGINT PRIMARY KEY) FROM LOOKUP (source = 'crm', cache = '1')",
        "cache",
    );
    refused(
        "CREATE TABLE other (id BIGINT PRIMARY KEY) FROM LOOKUP (cache_rows = '1')",
        "source",
    );
    refused("SELECT * FROM customers", "lookup table");
    refused("INSERT INTO customers VALUES (1, 'a', 'b')", "lookup table");
    refused(
        "CREATE MATERIALIZED VIEW v AS SELECT count(*) FROM customers",
        "reading lookup table customers other than by key",
    );
    refused(
        "CREATE MATERIALIZED VIEW v AS SELECT o.id FROM orders o JOIN customers c \
         ON o.customer = c.name",
        "primary key",
    );
    refused(
        "CREATE MATERIALIZED VIEW v AS SELECT o.id FROM orders o RIGHT JOIN customers c \
         ON o.customer = c.id",
        "lookup table customers",
    );
    db.execute(
        "CREATE MATERIALIZED VIEW named AS SELECT o.id, c.name FROM orders o \
         JOIN customers c ON o.customer = c.id",
    )
    .expect("join");
    refused("DROP TABLE customers", "named");
    assert!(db.source("customers").is_err());
    let tables = match db.execute("SHOW TABLES").expect("show") {
        laminar_db::ExecuteResult::Rows { batches, .. } => common::rows(&batches),
        other => panic!("SHOW TABLES answered {other:?}"),
    };
    assert!(
        tables.iter().any(|t| t.contains("lookup source 'crm'")),
        "{tables:?}"
    );
    db.execute("DROP MATERIALIZED VIEW named")
        .expect("drop view");
    db.execute("DROP TABLE customers").expect("drop table");
}

#[test]
fn rows_waiting_for_the_source_at_a_checkpoint_are_joined_once_after_reopening() {
    let dir = tempfile::tempdir().expect("dir");
    let directory = Directory::new();
    let open = |directory: &Arc<Directory>| {
        LaminarDB::builder()
            .workers(1)
            .pin_workers(false)
            .checkpoint_interval(None)
            .lookup_source("crm", Arc::clone(directory) as Arc<dyn LookupSource>)
            .open(dir.path())
            .expect("open")
    };
    {
        let db = open(&directory);
        for statement in LaminarDB::split_statements(SCHEMA).expect("statements") {
            db.execute(&statement).expect("schema");
        }
        db.execute(
            "CREATE MATERIALIZED VIEW named AS SELECT o.id, c.name FROM orders o \
             LEFT JOIN customers c ON o.customer = c.id",
        )
        .expect("join");
        push_orders(&db, &[(1, Some(1), 5)]);
        wait_for(&db, "SELECT * FROM named", &["1|c1"]);
        directory.hold(true);
        push_orders(&db, &[(2, Some(2), 5), (3, Some(7), 5)]);
        db.sync().expect("rows reached the join");
        db.checkpoint().expect("checkpoint while rows wait");
        // Closing checkpoints again, with the rows still waiting.
    }
    // The old database's call, still held, ends unanswered.
    directory.hold(false);
    let fresh = Directory::new();
    let db = open(&fresh);
    wait_for(&db, "SELECT * FROM named", &["1|c1", "2|c2", "3|NULL"]);
    assert_eq!(fresh.calls(), [vec![2, 7]]);
}

/// Prices by `(sku, region)`: a source with a two-column key that records its calls.
#[derive(Default)]
struct Prices {
    calls: Mutex<Vec<Vec<(i64, String)>>>,
}

impl LookupSource for Prices {
    fn lookup(&self, keys: &RecordBatch) -> Result<RecordBatch, LookupError> {
        let skus = keys
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| LookupError::new("sku is not BIGINT"))?;
        let regions = keys
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| LookupError::new("region is not VARCHAR"))?;
        let mut asked: Vec<(i64, String)> = (0..keys.num_rows())
            .map(|row| (skus.value(row), regions.value(row).to_string()))
            .collect();
        asked.sort();
        self.calls.lock().expect("lock").push(asked.clone());
        // Every sku has a price in "eu" (sku * 10) and none elsewhere; the answer's
        // columns come in the declared order, the price as INT (cast to the declared BIGINT).
        let found: Vec<&(i64, String)> = asked.iter().filter(|(_, r)| r == "eu").collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("sku", DataType::Int64, false),
            Field::new("region", DataType::Utf8, false),
            Field::new("price", DataType::Int32, true),
        ]));
        Ok(RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(found.iter().map(|f| f.0))),
                Arc::new(StringArray::from_iter_values(
                    found.iter().map(|f| f.1.as_str()),
                )),
                Arc::new(datafusion::arrow::array::Int32Array::from_iter_values(
                    found
                        .iter()
                        .map(|f| i32::try_from(f.0 * 10).unwrap_or(i32::MAX)),
                )),
            ],
        )?)
    }
}

#[test]
fn a_two_column_key_is_asked_in_declared_order_whatever_order_on_equates_it() {
    let prices = Arc::new(Prices::default());
    let db = LaminarDB::builder()
        .workers(2)
        .pin_workers(false)
        .lookup_source("prices", Arc::clone(&prices) as Arc<dyn LookupSource>)
        .in_memory()
        .expect("database");
    db.execute("CREATE SOURCE sales (id BIGINT, region VARCHAR, sku BIGINT)")
        .expect("source");
    db.execute(
        "CREATE TABLE price (sku BIGINT, region VARCHAR, price BIGINT, \
         PRIMARY KEY (sku, region)) FROM LOOKUP (source = 'prices')",
    )
    .expect("lookup table");
    db.execute(
        "CREATE MATERIALIZED VIEW priced AS SELECT s.id, p.price FROM sales s \
         LEFT JOIN price p ON s.region = p.region AND s.sku = p.sku",
    )
    .expect("join");
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("region", DataType::Utf8, true),
        Field::new("sku", DataType::Int64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values([1, 2, 3])),
            Arc::new(StringArray::from_iter_values(["eu", "us", "eu"])),
            Arc::new(Int64Array::from_iter_values([7, 7, 8])),
        ],
    )
    .expect("sales");
    db.source("sales")
        .expect("handle")
        .push(batch)
        .expect("push");
    wait_for(&db, "SELECT * FROM priced", &["1|70", "2|NULL", "3|80"]);
    let mut asked: Vec<(i64, String)> = prices
        .calls
        .lock()
        .expect("lock")
        .iter()
        .flatten()
        .cloned()
        .collect();
    asked.sort();
    assert_eq!(
        asked,
        [
            (7, "eu".to_string()),
            (7, "us".to_string()),
            (8, "eu".to_string())
        ]
    );
}
