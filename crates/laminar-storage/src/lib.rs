//! LaminarDB storage: the files that make a pipeline durable, and reading them back.
//!
//! - [`wal`]: the write-ahead log of pushed records (segments of length + CRC32C framed
//!   records, group-committed fdatasync, torn-tail repair, poisoning on a failed write).
//! - [`snapshot`]: one operator's state ([`laminar_core::state::OperatorState`]) as a file
//!   of Arrow IPC sections.
//! - [`manifest`]: what a checkpoint consists of, written atomically.
//! - [`checkpoint`]: the store the checkpoint coordinator writes to and recovery reads from:
//!   full and incremental state chains, fallback past damaged checkpoints, compaction policy,
//!   garbage collection.
//! - [`io`]: the backend writes and syncs go through (`std` or io_uring).
//! - [`frame`]: the record framing all of them share.
//!
//! It knows nothing of SQL. Byte formats and the rules for torn and corrupt files are in
//! `docs/storage-format.md`.
//!
//! # Use
//!
//! Push sources append to a [`wal::WalWriter`]; the checkpoint coordinator writes operator
//! states and source/sink positions through a [`checkpoint::CheckpointStore`]; at start,
//! recovery loads the newest usable checkpoint and replays the log after it.
//!
//! ```
//! use laminar_core::state::{OperatorState, StatePart};
//! use laminar_storage::checkpoint::CheckpointStore;
//! use laminar_storage::wal::{read_wal, Durability, WalOptions, WalWriter};
//!
//! # fn main() -> laminar_storage::Result<()> {
//! let dir = tempfile::tempdir().expect("a temporary directory");
//! // Appends return once the record is durable under the mode (group: written; synced
//! // within 5 ms).
//! let (wal, _report) = WalWriter::open(dir.path().join("wal"), Durability::Group, WalOptions::default())?;
//! let lsn = wal.append(b"a pushed batch")?;
//!
//! let (mut store, recovered, warnings) = CheckpointStore::open(dir.path().join("checkpoints"))?;
//! assert!(recovered.is_none() && warnings.is_empty());
//! assert!(store.needs_full("q1/agg@0")); // no snapshot yet: the first one is full
//! let mut checkpoint = store.begin(1)?;
//! checkpoint.add_state("q1/agg@0", &OperatorState::full(vec![StatePart::new("groups", vec![])]))?;
//! checkpoint.set_engine(serde_json::json!({ "wal_lsn": lsn }));
//! wal.sync()?; // the checkpoint covers `lsn`: make it durable first
//! checkpoint.commit()?;
//! wal.truncate_through(lsn)?;
//! drop(wal);
//!
//! // Recovery: the checkpoint's states, then the log after it.
//! let (_store, recovered, _warnings) = CheckpointStore::open(dir.path().join("checkpoints"))?;
//! let recovered = recovered.expect("a committed checkpoint");
//! let parts = recovered.load_state("q1/agg@0")?;
//! assert_eq!(parts[0].name, "groups");
//! let replay = read_wal(dir.path().join("wal"), lsn)?;
//! assert!(replay.records.is_empty());
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub mod checkpoint;
pub mod error;
pub mod frame;
pub mod io;
pub mod manifest;
pub mod snapshot;
pub mod wal;

pub use error::{Result, StorageError};
