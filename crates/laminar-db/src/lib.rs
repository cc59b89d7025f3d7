//! LaminarDB: an embedded streaming SQL database, "SQLite for streams".
//!
//! Declare sources and continuous queries in SQL, push events (or read them from files and
//! generators), and read always-fresh results: subscribe to a stream's changes, query a
//! materialized view with ordinary `SELECT`, or write them out through a sink. Queries run on
//! a thread-per-core runtime (`workers`, default: one per core).
//!
//! ```
//! use laminar_db::LaminarDB;
//!
//! # fn main() -> Result<(), laminar_db::DbError> {
//! let db = LaminarDB::builder().workers(2).in_memory()?;
//! db.execute("CREATE SOURCE bids (auction BIGINT, price BIGINT, ts TIMESTAMP,
//!             WATERMARK FOR ts AS ts - INTERVAL '2' SECOND)")?;
//! db.execute("CREATE MATERIALIZED VIEW big_bids AS
//!             SELECT auction, price * 2 AS doubled FROM bids WHERE price > 100")?;
//!
//! // Rows arrive by INSERT, by `source(..).push(batch)`, or as typed rows.
//! db.execute("INSERT INTO bids VALUES (1, 50, '2024-01-01 00:00:00'),
//!                                     (2, 150, '2024-01-01 00:00:01')")?;
//! #[derive(serde::Serialize)]
//! struct Bid { auction: i64, price: i64, ts: i64 }
//! db.source("bids")?.push_rows(&[Bid { auction: 3, price: 300, ts: 1_704_067_202_000 }])?;
//!
//! // Snapshot reads see everything pushed before them.
//! let batches = db.query("SELECT auction, doubled FROM big_bids ORDER BY auction")?;
//! let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
//! assert_eq!(rows, 2);
//! # Ok(())
//! # }
//! ```
//!
//! # Durability and resumable subscriptions
//!
//! [`LaminarDB::open`] keeps the catalog, write-ahead logs of pushed rows and checkpoints in
//! a data directory, and recovers from them after a crash with exactly-once results. There,
//! a stream, materialized view or push source declared `WITH (output_log = 'on')` can be
//! followed from an epoch: [`LaminarDB::subscribe_from`] yields its changes and a
//! [`SubscriptionEvent::Committed`] marker after each checkpoint's changes. An application
//! that keeps the last committed epoch with what it made of the changes before it resumes
//! after that epoch, after its own crash or the database's, without a gap or a duplicate.
//!
//! ```
//! use laminar_db::{LaminarDB, SubscriptionEvent};
//!
//! # fn main() -> Result<(), laminar_db::DbError> {
//! # let dir = tempfile::tempdir().expect("a temporary directory");
//! let db = LaminarDB::builder()
//!     .workers(1)
//!     .pin_workers(false)
//!     .open(dir.path())?;
//! db.execute("CREATE SOURCE clicks (user_id BIGINT NOT NULL)")?;
//! db.execute("CREATE MATERIALIZED VIEW per_user WITH (output_log = 'on') AS
//!             SELECT user_id, count(*) AS n FROM clicks GROUP BY user_id")?;
//! let mut changes = db.subscribe_from("per_user", 0)?; // 0: everything since its creation
//! db.execute("INSERT INTO clicks VALUES (1), (2), (1)")?;
//! let epoch = db.checkpoint()?.epoch;
//!
//! let mut tentative = Vec::new();
//! for event in changes.blocking_iter() {
//!     match event {
//!         SubscriptionEvent::Changes(batch) => tentative.push(batch),
//!         // Durable: keep `e` with what was made of the changes so far; after a crash,
//!         // `subscribe_from("per_user", e)` goes on right after them.
//!         SubscriptionEvent::Committed(e) if e == epoch => break,
//!         SubscriptionEvent::Committed(_) => {}
//!     }
//! }
//! assert!(!tentative.is_empty());
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod callback_subscription;
mod catalog;
mod catalog_store;
mod db;
mod ddl;
mod durability;
mod epoch_subscription;
mod error;
mod insert;
mod lookup_table;
mod metrics;
mod result;
mod sink_runner;
mod snapshot;
mod source_handle;
mod source_runner;
mod statements;
mod subscription;
mod table;
mod table_load;

pub use callback_subscription::CallbackSubscription;
pub use db::{LaminarDB, LaminarDbBuilder, SourceHold};
pub use durability::{
    CheckpointInfo, DEFAULT_CHECKPOINT_INTERVAL, OUTPUT_LOG_EXTRA_EPOCHS_DEFAULT,
};
pub use epoch_subscription::{EpochSubscription, SubscriptionEvent};
pub use error::{DbError, Result};
pub use laminar_core::lookup::{LookupCounters, LookupError, LookupSource};
/// The storage layer (write-ahead log, checkpoint files, I/O backends), for tools such as
/// the `laminardb bench wal` benchmark that measure it directly.
pub use laminar_storage as storage;
pub use laminar_storage::wal::Durability;
pub use lookup_table::LookupTableMetrics;
pub use metrics::{Metrics, QueryStats, SourceStats};
pub use result::ExecuteResult;
pub use source_handle::SourceHandle;
pub use subscription::Subscription;

pub use datafusion::arrow;
pub use laminar_core::runtime::WorkerStats;
pub use laminar_core::ChangeBatch;
pub use laminar_sql::ObjectKind;
