//! Helpers shared by the differential tests: seeded input rows, DataFusion's batch answer
//! over them, databases running a query over the same rows, and rows as sortable text.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use laminar_db::{LaminarDB, Subscription};

/// Schema of table `events` for the unwindowed tests: `id`, `kind` (with NULLs), `amount`.
pub fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("kind", DataType::Utf8, true),
        Field::new("amount", DataType::Int64, true),
    ]))
}

/// Seeded rows: few kinds (with NULLs) and amounts that repeat, so groups are hit often.
pub fn batches(seed: u64) -> Vec<RecordBatch> {
    let mut state = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 1_000_000) as i64
    };
    let kinds = ["a", "b", "c", "d", "e"];
    let mut id = 0;
    [1, 17, 400, 3, 1_000, 250]
        .iter()
        .map(|&size| {
            let mut ids = Vec::new();
            let mut kind = Vec::new();
            let mut amount = Vec::new();
            for _ in 0..size {
                let r = next();
                ids.push(id);
                id += 1;
                kind.push((r % 9 != 0).then(|| kinds[(r % 5) as usize]));
                amount.push((r % 17 != 0).then_some(r % 1_000));
            }
            RecordBatch::try_new(
                schema(),
                vec![
                    Arc::new(Int64Array::from(ids)),
                    Arc::new(StringArray::from(kind)),
                    Arc::new(Int64Array::from(amount)),
                ],
            )
            .expect("valid batch")
        })
        .collect()
}

/// Rows as text, one `|`-separated line per row, sorted.
pub fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formatter"))
            .collect();
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect();
            rows.push(cells.join("|"));
        }
    }
    rows.sort();
    rows
}

/// Rows with event times out of order within `delay_ms` of the newest row seen so far.
pub fn timed_batches(seed: u64, delay_ms: i64) -> Vec<RecordBatch> {
    let schema = timed_schema();
    let mut state = seed.wrapping_mul(0x2545_F491_4F6C_DD1D).wrapping_add(1);
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 1_000_000) as i64
    };
    let base = 1_704_067_200_000_i64;
    let mut clock = 0_i64;
    [5, 300, 1, 700, 64, 930]
        .iter()
        .map(|&size| {
            let mut keys = Vec::new();
            let mut prices = Vec::new();
            let mut ts = Vec::new();
            for _ in 0..size {
                let r = next();
                clock += r % 40;
                keys.push(r % 13);
                prices.push((r % 7 != 0).then_some(r % 500));
                // Behind the newest row by less than the watermark delay: never late.
                ts.push(base + clock - (r % delay_ms));
            }
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(keys)),
                    Arc::new(Int64Array::from(prices)),
                    Arc::new(datafusion::arrow::array::TimestampMillisecondArray::from(
                        ts,
                    )),
                ],
            )
            .expect("valid batch")
        })
        .collect()
}

/// DataFusion's answer to `sql` over `input` as table `events`.
pub fn timed_batch_answer(input: &[RecordBatch], sql: &str) -> Vec<String> {
    let ctx = SessionContext::new();
    let table = MemTable::try_new(timed_schema(), vec![input.to_vec()]).expect("table");
    ctx.register_table("events", Arc::new(table))
        .expect("register");
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    rows(
        &runtime
            .block_on(async { ctx.sql(sql).await?.collect().await })
            .expect("batch answer"),
    )
}

/// A database with source `events` (watermark `delay_ms` behind) and view `w` running `query`.
pub fn timed_view(workers: usize, delay_ms: u64, query: &str) -> LaminarDB {
    let db = LaminarDB::builder()
        .workers(workers)
        .pin_workers(false)
        .in_memory()
        .expect("database");
    db.execute(&format!(
        "CREATE SOURCE events (k BIGINT NOT NULL, price BIGINT, ts TIMESTAMP NOT NULL, \
         WATERMARK FOR ts AS ts - INTERVAL '{delay_ms}' MILLISECOND)"
    ))
    .expect("source");
    db.execute(&format!("CREATE MATERIALIZED VIEW w AS {query}"))
        .expect("view");
    db
}

/// Schema of table `events` for the event-time tests: `k`, `price` (with NULLs), `ts`.
pub fn timed_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("price", DataType::Int64, true),
        Field::new(
            "ts",
            DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Millisecond, None),
            false,
        ),
    ]))
}

/// Folds a subscribed changelog until its stream ends: every row's weights must sum to its
/// multiplicity in the result, so no row is retracted more often than inserted.
pub fn folded(changes: &mut Subscription) -> Vec<String> {
    let mut folded: HashMap<String, i64> = HashMap::new();
    for change in changes.blocking_iter() {
        let keys = rows(std::slice::from_ref(change.batch()));
        // `rows` sorts; re-derive per-row keys in batch order for the weights.
        let options = FormatOptions::default().with_null("NULL");
        let formatters: Vec<_> = change
            .batch()
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formatter"))
            .collect();
        assert_eq!(keys.len(), change.num_rows());
        for row in 0..change.num_rows() {
            let cells: Vec<String> = formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect();
            let weight = change.weights().map_or(1, |w| w.value(row));
            *folded.entry(cells.join("|")).or_insert(0) += weight;
        }
    }
    let mut from_changelog = Vec::new();
    for (row, count) in folded {
        assert!(count >= 0, "row {row} retracted more often than inserted");
        for _ in 0..count {
            from_changelog.push(row.clone());
        }
    }
    from_changelog.sort();
    from_changelog
}
