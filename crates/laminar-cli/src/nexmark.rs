//! `laminardb bench nexmark`: the Nexmark queries the SQL supports, over pre-generated
//! events. The three tables are generated first (not timed), sorted by event time and held
//! in memory; the timed run pushes them, interleaved in event-time order, into three push
//! sources and waits until the query has consumed everything. The same final answer is then
//! computed by DataFusion in batch over the same rows (also timed, with as many partitions
//! as workers), and the two answers are compared row for row.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use laminar_db::LaminarDB;

use crate::bench::{generate_table, slices, wait_finished, StatePeak, StateSampler};
use crate::error::CliError;
use crate::{table, units};

/// A Nexmark query: its streaming SQL and the same answer written for DataFusion in batch.
struct Query {
    name: &'static str,
    what: &'static str,
    streaming: String,
    batch: String,
    /// The result is a stream of appended rows (counted, not stored) rather than a view.
    appends: bool,
}

/// `t` with 10-second tumbling windows, for DataFusion in batch.
fn tumble_batch(table: &str) -> String {
    let bin = "date_bin(INTERVAL '10' SECOND, date_time, TIMESTAMP '1970-01-01 00:00:00')";
    format!("(SELECT *, {bin} AS window_start, {bin} + INTERVAL '10' SECOND AS window_end FROM {table})")
}

/// `t` with 10-second windows every 2 seconds, for DataFusion in batch: five copies.
fn hop_batch(table: &str) -> String {
    let bin = "date_bin(INTERVAL '2' SECOND, date_time, TIMESTAMP '1970-01-01 00:00:00')";
    let copies: Vec<String> = (0..5)
        .map(|i| {
            let start = format!("{bin} - INTERVAL '{}' SECOND", 2 * i);
            format!("SELECT *, {start} AS window_start, {start} + INTERVAL '10' SECOND AS window_end FROM {table}")
        })
        .collect();
    format!("({})", copies.join(" UNION ALL "))
}

/// Nexmark q5 over `source` (bids with hopping windows): the auctions with the most bids
/// per window.
fn hot_items(source: &str) -> String {
    format!(
        "SELECT a.auction, a.num, a.window_start FROM \
         (SELECT auction, count(*) AS num, window_start, window_end FROM {source} \
          GROUP BY auction, window_start, window_end) a \
         JOIN (SELECT max(num) AS maxn, window_start, window_end FROM \
          (SELECT auction, count(*) AS num, window_start, window_end FROM {source} \
           GROUP BY auction, window_start, window_end) c \
          GROUP BY window_start, window_end) m \
         ON a.window_start = m.window_start AND a.window_end = m.window_end \
         AND a.num >= m.maxn"
    )
}

/// The benchmarks over Nexmark tables beyond Nexmark's own queries (a keyed tumbling
/// window, joins): `(what, streaming, batch, appends)`.
fn extra_query(name: &str) -> Option<(&'static str, String, String, bool)> {
    let tumble = |t: &str| format!("TUMBLE({t}, date_time, INTERVAL '10' SECOND)");
    Some(match name {
        "tumble" => {
            let body = |source: &str| {
                format!(
                    "SELECT auction, count(*) AS bids, window_start, window_end FROM {source} \
                     GROUP BY auction, window_start, window_end"
                )
            };
            (
                "bids per auction and 10 s tumbling window (keyed window aggregate)",
                format!("{} EMIT ON WINDOW CLOSE", body(&tumble("bid"))),
                body(&tumble_batch("bid")),
                true,
            )
        }
        "interval" => {
            let sql = "SELECT a.id, a.seller, b.bidder, b.price FROM auction a JOIN bid b \
                 ON a.id = b.auction \
                 AND b.date_time BETWEEN a.date_time AND a.date_time + INTERVAL '10' SECOND"
                .to_string();
            (
                "bids in an auction's first 10 s (interval join)",
                sql.clone(),
                sql,
                true,
            )
        }
        "asof" => {
            let streaming = "SELECT b.auction, b.price, a.reserve, a.category FROM bid b \
                 ASOF JOIN auction a ON b.auction = a.id AND b.date_time >= a.date_time"
                .to_string();
            // Auction ids are unique, so the latest auction row at or before a bid is the
            // one with its id, if it is not later than the bid.
            let batch = "SELECT b.auction, b.price, a.reserve, a.category FROM bid b \
                 JOIN auction a ON b.auction = a.id AND b.date_time >= a.date_time"
                .to_string();
            (
                "each bid with its auction (ASOF join)",
                streaming,
                batch,
                true,
            )
        }
        _ => return None,
    })
}

/// Every query, by name (`q0` ... `q8`); `None` for one the SQL does not support.
fn query(name: &str) -> Option<Query> {
    let tumble = |t: &str| format!("TUMBLE({t}, date_time, INTERVAL '10' SECOND)");
    let hop = "HOP(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND)";
    let (what, streaming, batch, appends) = match name {
        "q0" => {
            let sql = "SELECT auction, bidder, price, date_time FROM bid".to_string();
            ("pass-through", sql.clone(), sql, true)
        }
        "q1" => {
            let sql =
                "SELECT auction, bidder, 0.908 * price AS price, date_time FROM bid".to_string();
            ("currency conversion", sql.clone(), sql, true)
        }
        "q2" => {
            let sql = "SELECT auction, price FROM bid WHERE auction % 123 = 0".to_string();
            ("selection", sql.clone(), sql, true)
        }
        "q3" => {
            let sql = "SELECT p.name, p.city, p.state, a.id FROM auction a JOIN person p \
                 ON a.seller = p.id WHERE a.category = 10 \
                 AND (p.state = 'OR' OR p.state = 'ID' OR p.state = 'CA')"
                .to_string();
            (
                "local item suggestion (regular join)",
                sql.clone(),
                sql,
                false,
            )
        }
        "q4" => {
            let sql = "SELECT category, avg(final) AS average FROM \
                 (SELECT max(b.price) AS final, a.category FROM auction a JOIN bid b \
                  ON a.id = b.auction \
                  AND b.date_time BETWEEN a.date_time AND a.expires \
                  GROUP BY a.id, a.category) q \
                 GROUP BY category"
                .to_string();
            (
                "average closing price per category (regular join, nested aggregates)",
                sql.clone(),
                sql,
                false,
            )
        }
        "q5" => (
            "hot items (hopping windows, window join)",
            format!("{} EMIT ON WINDOW CLOSE", hot_items(hop)),
            hot_items(&hop_batch("bid")),
            false,
        ),
        "q7" => {
            let body = |source: &str| {
                format!(
                    "SELECT b.auction, b.price, b.bidder, b.date_time FROM bid b JOIN \
                     (SELECT max(price) AS maxprice, window_end FROM {source} \
                      GROUP BY window_start, window_end) m \
                     ON b.price = m.maxprice \
                     WHERE b.date_time >= m.window_end - INTERVAL '10' SECOND \
                     AND b.date_time < m.window_end"
                )
            };
            (
                "highest bid per window (interval join)",
                format!("{} EMIT ON WINDOW CLOSE", body(&tumble("bid"))),
                body(&tumble_batch("bid")),
                false,
            )
        }
        "q8" => {
            let body = |persons: &str, auctions: &str| {
                format!(
                    "SELECT p.id, p.name, p.window_start FROM \
                     (SELECT id, name, window_start, window_end FROM {persons} \
                      GROUP BY id, name, window_start, window_end) p \
                     JOIN (SELECT seller, window_start, window_end FROM {auctions} \
                      GROUP BY seller, window_start, window_end) a \
                     ON p.id = a.seller AND p.window_start = a.window_start \
                     AND p.window_end = a.window_end"
                )
            };
            (
                "new users selling in their first window (window join)",
                format!(
                    "{} EMIT ON WINDOW CLOSE",
                    body(&tumble("person"), &tumble("auction"))
                ),
                body(&tumble_batch("person"), &tumble_batch("auction")),
                false,
            )
        }
        _ => extra_query(name)?,
    };
    Some(Query {
        name: QUERIES.iter().find(|q| **q == name).copied()?,
        what,
        streaming,
        batch,
        appends,
    })
}

/// The queries `bench nexmark` runs.
pub const QUERIES: [&str; 11] = [
    "q0", "q1", "q2", "q3", "q4", "q5", "q7", "q8", "tumble", "interval", "asof",
];

/// Options of `bench nexmark`.
#[derive(Debug, Clone)]
pub struct NexmarkOptions {
    /// The query (`q0` ... `q8`).
    pub query: String,
    /// Nexmark events to generate (all three tables).
    pub events: u64,
    /// Worker threads of the measured database (and DataFusion partitions).
    pub workers: usize,
    /// Rows per pushed batch.
    pub batch_rows: usize,
}

/// The source declarations: the DATAGEN tables' columns, with a watermark.
const SOURCES: [(&str, &str); 3] = [
    (
        "person",
        "CREATE SOURCE person (id BIGINT, name VARCHAR, email_address VARCHAR, \
         credit_card VARCHAR, city VARCHAR, state VARCHAR, date_time TIMESTAMP, extra VARCHAR, \
         WATERMARK FOR date_time AS date_time - INTERVAL '100' MILLISECOND)",
    ),
    (
        "auction",
        "CREATE SOURCE auction (id BIGINT, item_name VARCHAR, description VARCHAR, \
         initial_bid BIGINT, reserve BIGINT, date_time TIMESTAMP, expires TIMESTAMP, \
         seller BIGINT, category BIGINT, extra VARCHAR, \
         WATERMARK FOR date_time AS date_time - INTERVAL '100' MILLISECOND)",
    ),
    (
        "bid",
        "CREATE SOURCE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, \
         url VARCHAR, date_time TIMESTAMP, extra VARCHAR, \
         WATERMARK FOR date_time AS date_time - INTERVAL '100' MILLISECOND)",
    ),
];

/// Runs one Nexmark query and prints its report.
pub fn nexmark(options: &NexmarkOptions) -> Result<(), CliError> {
    let query = query(&options.query).ok_or_else(|| {
        CliError::environment(
            "bench nexmark",
            format!(
                "unknown or unsupported query '{}'; choose one of {}",
                options.query,
                QUERIES.join(", ")
            ),
        )
    })?;
    eprintln!(
        "generating {} Nexmark events ...",
        units::count(options.events)
    );
    let mut tables = Vec::new();
    for (name, _) in SOURCES {
        tables.push((name, generate_table(name, options.events, options.workers)?));
    }
    let pushes = interleave(&tables, options.batch_rows.max(1));
    let rows_in: u64 = tables.iter().map(|(_, t)| t.num_rows() as u64).sum();

    let db = LaminarDB::builder().workers(options.workers).in_memory()?;
    for (_, ddl) in SOURCES {
        db.execute(ddl)?;
    }
    let kind = if query.appends {
        "STREAM"
    } else {
        "MATERIALIZED VIEW"
    };
    db.execute(&format!("CREATE {kind} result AS {}", query.streaming))?;
    let counter = if query.appends {
        Some(crate::bench::spawn_counter(db.subscribe("result")?)?)
    } else {
        None
    };
    let handles = SOURCES
        .iter()
        .map(|(name, _)| db.source(name))
        .collect::<Result<Vec<_>, _>>()?;
    eprintln!(
        "pushing {} events ({} batches) through {} worker(s) ...",
        units::count(rows_in),
        units::count(pushes.len() as u64),
        options.workers
    );
    let started = Instant::now();
    let sampler = StateSampler::start(&db)?;
    for (table, batch) in pushes {
        handles[table].push(batch)?;
    }
    for handle in &handles {
        handle.finish()?;
    }
    wait_finished(&db, "the Nexmark query")?;
    let streaming_rows = match counter {
        Some(counter) => {
            counter
                .join()
                .map_err(|_| {
                    CliError::environment("counting the results", "the counting thread panicked")
                })?
                .0
        }
        None => 0,
    };
    let elapsed = started.elapsed();
    let state = sampler.stop()?;
    let late_rows: u64 = db.metrics().queries.iter().map(|q| q.late_rows).sum();

    let (batch_rows, batch_elapsed) = batch_answer(&query, &tables, options.workers)?;
    let (out_rows, matches) = if query.appends {
        (streaming_rows, streaming_rows == batch_rows.len() as u64)
    } else {
        let view = sorted_rows(&db.query("SELECT * FROM result")?)?;
        (view.len() as u64, view == batch_rows)
    };
    report(
        options,
        &query,
        &Measured {
            rows_in,
            out_rows,
            late_rows,
            elapsed,
            batch_elapsed,
            matches,
            state,
        },
    )
}

/// What the streaming and the batch run measured.
struct Measured {
    rows_in: u64,
    out_rows: u64,
    late_rows: u64,
    elapsed: Duration,
    batch_elapsed: Duration,
    matches: bool,
    state: StatePeak,
}

/// The tables' batches of at most `rows` rows, in the order their first rows' event times
/// come (a live stream's order, up to a batch).
fn interleave(tables: &[(&str, RecordBatch)], rows: usize) -> Vec<(usize, RecordBatch)> {
    let mut pushes: Vec<(i64, usize, RecordBatch)> = Vec::new();
    for (index, (_, all)) in tables.iter().enumerate() {
        let Ok(time) = all.schema().index_of("date_time") else {
            continue;
        };
        for batch in slices(all, rows) {
            let first = batch
                .column(time)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::TimestampMillisecondArray>()
                .map_or(0, |t| t.value(0));
            pushes.push((first, index, batch));
        }
    }
    pushes.sort_by_key(|(first, index, _)| (*first, *index));
    pushes
        .into_iter()
        .map(|(_, index, batch)| (index, batch))
        .collect()
}

/// DataFusion's answer over the same rows, sorted, and the time it took.
fn batch_answer(
    query: &Query,
    tables: &[(&str, RecordBatch)],
    workers: usize,
) -> Result<(Vec<String>, Duration), CliError> {
    let config = SessionConfig::new().with_target_partitions(workers.max(1));
    let ctx = SessionContext::new_with_config(config);
    for (name, batch) in tables {
        let table = MemTable::try_new(batch.schema(), vec![vec![batch.clone()]])
            .map_err(|e| CliError::environment("registering a batch table", e))?;
        ctx.register_table(*name, Arc::new(table))
            .map_err(|e| CliError::environment("registering a batch table", e))?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .build()
        .map_err(|e| CliError::environment("starting DataFusion's runtime", e))?;
    let started = Instant::now();
    let batches = runtime
        .block_on(async { ctx.sql(&query.batch).await?.collect().await })
        .map_err(|e| CliError::environment("the batch query", e))?;
    let elapsed = started.elapsed();
    Ok((sorted_rows(&batches)?, elapsed))
}

/// Every row as text, sorted, for comparing answers.
fn sorted_rows(batches: &[RecordBatch]) -> Result<Vec<String>, CliError> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CliError::environment("formatting rows", e))?;
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect();
            rows.push(cells.join("|"));
        }
    }
    rows.sort_unstable();
    Ok(rows)
}

fn report(options: &NexmarkOptions, query: &Query, measured: &Measured) -> Result<(), CliError> {
    let seconds = measured.elapsed.as_secs_f64();
    let per_second = if seconds > 0.0 {
        measured.rows_in as f64 / seconds
    } else {
        0.0
    };
    let ratio = if measured.batch_elapsed.is_zero() {
        0.0
    } else {
        seconds / measured.batch_elapsed.as_secs_f64()
    };
    let build = if cfg!(debug_assertions) {
        "dev (debug assertions on: far slower than a release build)"
    } else {
        "release"
    };
    let entries = [
        ("query", format!("Nexmark {}: {}", query.name, query.what)),
        ("sql", query.streaming.clone()),
        ("build", build.to_string()),
        ("workers", options.workers.to_string()),
        ("events in (all tables)", units::count(measured.rows_in)),
        ("elapsed (streaming)", units::elapsed(measured.elapsed)),
        ("events/s", units::rate(per_second)),
        (
            "events/s per worker",
            units::rate(per_second / options.workers as f64),
        ),
        ("rows out", units::count(measured.out_rows)),
        ("late rows dropped", units::count(measured.late_rows)),
        (
            "peak state entries (sampled)",
            units::count(measured.state.entries),
        ),
        (
            "state bytes per entry at that peak",
            measured
                .state
                .bytes
                .checked_div(measured.state.entries)
                .map_or_else(|| "(no state)".to_string(), units::count),
        ),
        (
            "DataFusion batch, same answer",
            units::elapsed(measured.batch_elapsed),
        ),
        ("streaming / batch time", format!("{ratio:.2}")),
        (
            "same answer as batch",
            if measured.matches { "yes" } else { "NO" }.to_string(),
        ),
    ]
    .map(|(key, value)| (key.to_string(), value));
    let text = table::key_values(("metric", "value"), &entries)
        .map_err(|e| CliError::environment("formatting the report", e))?;
    println!("{text}");
    if measured.matches {
        Ok(())
    } else {
        Err(CliError::environment(
            "bench nexmark",
            format!(
                "{}: the streaming answer differs from the batch answer",
                query.name
            ),
        ))
    }
}
