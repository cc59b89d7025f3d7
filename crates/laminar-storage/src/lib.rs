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

#![deny(missing_docs)]

pub mod checkpoint;
pub mod error;
pub mod frame;
pub mod io;
pub mod manifest;
pub mod snapshot;
pub mod wal;

pub use error::{Result, StorageError};
