//! Embedding LaminarDB: declare a source and continuous queries, push rows (as Arrow
//! batches, typed rows and INSERT), follow a stream live and read a view with SQL.
//!
//! Run: `cargo run -p laminar-db --example embedded`

use std::sync::Arc;

use laminar_db::arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
use laminar_db::arrow::record_batch::RecordBatch;
use laminar_db::arrow::util::pretty::pretty_format_batches;
use laminar_db::LaminarDB;

#[derive(serde::Serialize)]
struct Trade {
    symbol: &'static str,
    qty: i64,
    ts: i64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = LaminarDB::builder().workers(2).in_memory()?;
    db.execute(
        "CREATE SOURCE trades (symbol VARCHAR, qty BIGINT, ts TIMESTAMP,
                               WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)",
    )?;
    db.execute("CREATE STREAM big_trades AS SELECT symbol, qty, ts FROM trades WHERE qty >= 100")?;
    db.execute(
        "CREATE MATERIALIZED VIEW by_desk AS
         SELECT symbol, qty, CASE WHEN symbol LIKE 'A%' THEN 'desk-a' ELSE 'desk-b' END AS desk
         FROM big_trades",
    )?;

    // Follow the stream from another thread with the blocking iterator.
    let mut live = db.subscribe("big_trades")?;
    let follower = std::thread::spawn(move || {
        let rows: usize = live.blocking_iter().map(|change| change.num_rows()).sum();
        println!("the subscription saw {rows} big trades before the source ended");
    });

    let source = db.source("trades")?;
    let schema = source.schema();
    source.push(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["AAPL", "MSFT", "AMZN"])),
            Arc::new(Int64Array::from(vec![500, 20, 150])),
            Arc::new(TimestampMillisecondArray::from(vec![
                1_704_067_200_000,
                1_704_067_200_500,
                1_704_067_201_000,
            ])),
        ],
    )?)?;
    source.push_rows(&[Trade {
        symbol: "MSFT",
        qty: 300,
        ts: 1_704_067_202_000,
    }])?;
    db.execute("INSERT INTO trades VALUES ('AAPL', 100, '2024-01-01 00:00:03')")?;

    let view = db.query("SELECT desk, sum(qty) AS qty FROM by_desk GROUP BY desk ORDER BY desk")?;
    println!("{}", pretty_format_batches(&view)?);

    source.finish()?;
    follower
        .join()
        .map_err(|_| "the follower thread panicked")?;
    Ok(())
}
