//! The write-ahead log: records pushed into the engine (non-replayable input) are appended
//! here before they are acknowledged, and replayed after the last checkpoint at recovery.
//!
//! A log is a directory of segment files (`segment`), written by one [`WalWriter`] (`writer`,
//! with `group_commit` sharing fdatasyncs between appenders) and read back by [`read_wal`] /
//! [`WalReader`] (`reader`). Records carry LSNs that start at 1 and grow by 1 per record.

mod durability;
mod group_commit;
mod reader;
mod segment;
mod writer;

pub use durability::Durability;
pub use reader::{read_wal, WalRead, WalReader, WalRecord};
pub use segment::{
    parse_segment_file_name, scan_segment, segment_file_name, SegmentScan, TornTail,
    MAX_RECORD_BYTES, SEGMENT_FORMAT_VERSION, SEGMENT_MAGIC,
};
pub use writer::{
    WalOpenReport, WalOptions, WalWriter, GROUP_COMMIT_INTERVAL_DEFAULT, SEGMENT_BYTES_DEFAULT,
};
