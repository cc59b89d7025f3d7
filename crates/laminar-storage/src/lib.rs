//! LaminarDB storage: the files that make a pipeline durable, and reading them back.
//!
//! - [`wal`]: the write-ahead log of pushed records (segments of length + CRC32C framed
//!   records, group-committed fdatasync, torn-tail repair, poisoning on a failed write).
//! - [`io`]: the backend writes and syncs go through (`std` or io_uring).
//! - [`frame`]: the record framing all of them share.
//!
//! It knows nothing of SQL.

#![deny(missing_docs)]

pub mod error;
pub mod frame;
pub mod io;
pub mod wal;

pub use error::{Result, StorageError};
