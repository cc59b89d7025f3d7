//! Differential test of temporal joins (`JOIN table FOR SYSTEM_TIME AS OF o.ts`): seeded
//! random versions of a reference table interleaved with out-of-order orders, at 1 and 4
//! workers; after the input ends, the inner and the left join equal a straightforward
//! reference written here (the latest version of the order's key at or before its time).

#[allow(dead_code, reason = "each test binary uses part of the shared helpers")]
mod common;

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use datafusion::arrow::temporal_conversions::timestamp_ms_to_datetime;
use laminar_db::LaminarDB;

use common::rows;

const BASE_MS: i64 = 1_704_067_200_000;
const STEPS: i64 = 60;
const CURRENCIES: u64 = 5;

/// A seeded xorshift sequence.
struct Random(u64);

impl Random {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

fn timestamp(ms: i64) -> String {
    timestamp_ms_to_datetime(ms)
        .expect("a valid time")
        .format("%Y-%m-%d %H:%M:%S%.3f")
        .to_string()
}

/// The reference answer: every order with the latest version of its currency at or before
/// its time (`None` without one); `inner` drops the unmatched.
fn reference(
    versions: &HashMap<String, Vec<(i64, i64)>>,
    orders: &[(i64, String, i64)],
    inner: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    for (id, currency, ts) in orders {
        let rate = versions.get(currency).and_then(|v| {
            v.iter()
                .filter(|(from, _)| from <= ts)
                .max_by_key(|(from, _)| *from)
                .map(|(_, rate)| *rate)
        });
        match rate {
            Some(rate) => out.push(format!("{id}|{rate}")),
            None if !inner => out.push(format!("{id}|NULL")),
            None => {}
        }
    }
    out.sort();
    out
}

fn run(seed: u64, workers: usize) {
    let db = LaminarDB::builder()
        .workers(workers)
        .pin_workers(false)
        .in_memory()
        .expect("database");
    db.execute(
        "CREATE TABLE rates (currency VARCHAR, rate BIGINT, valid_from TIMESTAMP, \
         PRIMARY KEY (currency), WATERMARK FOR valid_from AS valid_from)",
    )
    .expect("table");
    db.execute(
        "CREATE SOURCE orders (id BIGINT, currency VARCHAR, ts TIMESTAMP, \
         WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)",
    )
    .expect("source");
    for (name, join) in [("matched", "JOIN"), ("all_orders", "LEFT JOIN")] {
        db.execute(&format!(
            "CREATE MATERIALIZED VIEW {name} AS SELECT o.id, r.rate FROM orders o \
             {join} rates FOR SYSTEM_TIME AS OF o.ts AS r ON o.currency = r.currency"
        ))
        .expect("view");
    }
    let source = db.source("orders").expect("handle");
    let schema = source.schema();
    let mut random = Random(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut versions: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
    let mut orders = Vec::new();
    for step in 0..STEPS {
        let at = BASE_MS + step * 1_000;
        // A new version of one currency, valid from the step's start.
        let currency = format!("C{}", random.next(CURRENCIES));
        let rate = i64::try_from(random.next(1_000)).expect("small");
        db.execute(&format!(
            "INSERT INTO rates VALUES ('{currency}', {rate}, '{}')",
            timestamp(at)
        ))
        .expect("version");
        versions.entry(currency).or_default().push((at, rate));
        // Orders within the step, out of order, some for currencies with no version yet.
        let count = 1 + random.next(6);
        let mut ids = Vec::new();
        let mut currencies = Vec::new();
        let mut times = Vec::new();
        for _ in 0..count {
            let id = i64::try_from(orders.len()).expect("small");
            let currency = format!("C{}", random.next(CURRENCIES + 1));
            let ts = at + i64::try_from(random.next(900)).expect("small");
            ids.push(id);
            currencies.push(currency.clone());
            times.push(ts);
            orders.push((id, currency, ts));
        }
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(currencies)),
                Arc::new(TimestampMillisecondArray::from(times)),
            ],
        )
        .expect("orders");
        source.push(batch).expect("push");
    }
    // A version past every order moves the table's watermark beyond them; the orders end.
    db.execute(&format!(
        "INSERT INTO rates VALUES ('END', 0, '{}')",
        timestamp(BASE_MS + (STEPS + 10) * 1_000)
    ))
    .expect("closing version");
    source.finish().expect("finish");
    db.sync().expect("processed");
    let matched = rows(&db.query("SELECT * FROM matched").expect("query"));
    let all = rows(&db.query("SELECT * FROM all_orders").expect("query"));
    assert_eq!(
        matched,
        reference(&versions, &orders, true),
        "seed {seed}, {workers} workers: inner temporal join"
    );
    assert_eq!(
        all,
        reference(&versions, &orders, false),
        "seed {seed}, {workers} workers: left temporal join"
    );
}

#[test]
fn temporal_joins_match_a_reference_at_one_and_four_workers() {
    // A hand-checked case first: version C0=5 from 0 s; an order at 0.5 s gets 5, none for C1.
    let mut versions = HashMap::new();
    versions.insert("C0".to_string(), vec![(0, 5), (1_000, 7)]);
    let orders = vec![
        (0, "C0".to_string(), 500),
        (1, "C1".to_string(), 500),
        (2, "C0".to_string(), 1_000),
    ];
    assert_eq!(reference(&versions, &orders, true), ["0|5", "2|7"]);
    assert_eq!(
        reference(&versions, &orders, false),
        ["0|5", "1|NULL", "2|7"]
    );
    for seed in [3, 17, 2_024] {
        for workers in [1, 4] {
            run(seed, workers);
        }
    }
}
