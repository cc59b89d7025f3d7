//! The write-ahead log of one push source or table: every push and `INSERT` is appended
//! (and durable under the database's durability mode) before the push returns, so rows
//! acknowledged after the last checkpoint are pushed again on recovery.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use laminar_storage::wal::{read_wal, Durability, WalOptions, WalWriter};

use super::wal_record::{decode, encode, RecordKind};
use crate::error::{DbError, Result};

/// One source's log.
#[derive(Debug)]
pub(crate) struct SourceWal {
    source: String,
    dir: PathBuf,
    writer: WalWriter,
}

impl SourceWal {
    /// Opens (creating) the log of `source` under `root`, dropping a torn tail (rows that
    /// were never acknowledged). Returns the log and a warning if a tail was dropped.
    pub(crate) fn open(
        root: &Path,
        source: &str,
        durability: Durability,
    ) -> Result<(Arc<Self>, Option<String>)> {
        let dir = root.join(escape(source));
        let (writer, report) = WalWriter::open(&dir, durability, WalOptions::default())?;
        let warning = report.torn_tail.map(|torn| {
            format!(
                "log of {source}: dropped {} bytes at offset {} of {} ({}); they were never acknowledged",
                torn.bytes_dropped,
                torn.offset,
                torn.path.display(),
                torn.reason
            )
        });
        Ok((
            Arc::new(Self {
                source: source.to_string(),
                dir,
                writer,
            }),
            warning,
        ))
    }

    /// Appends one record; returns its log position once durable.
    pub(crate) fn append(&self, kind: RecordKind, batch: &RecordBatch) -> Result<u64> {
        let payload = encode(kind, batch)?;
        Ok(self.writer.append(&payload)?)
    }

    /// The source or table the log belongs to.
    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// The position of the last record appended.
    pub(crate) fn last_lsn(&self) -> u64 {
        self.writer.last_lsn()
    }

    /// Makes every record appended so far durable (fsynced).
    pub(crate) fn sync(&self) -> Result<()> {
        self.writer.sync()?;
        Ok(())
    }

    /// Forgets the records a checkpoint covers.
    pub(crate) fn truncate_through(&self, lsn: u64) -> Result<()> {
        self.writer.truncate_through(lsn)?;
        Ok(())
    }

    /// Every record after `after_lsn`, in order, decoded.
    pub(crate) fn records_after(
        &self,
        after_lsn: u64,
    ) -> Result<Vec<(u64, RecordKind, RecordBatch)>> {
        let read = read_wal(&self.dir, after_lsn)?;
        let mut records = Vec::new();
        for record in read.records {
            let lsn = record.lsn;
            let what = || format!("log of {} (record {lsn})", self.source);
            let (kind, batch) = decode(&record.payload, &what)?;
            records.push((lsn, kind, batch));
        }
        Ok(records)
    }
}

/// A file-system-safe directory name for an object name: letters, digits and `_` stay,
/// every other byte becomes `%XX`, so distinct names never share a directory.
pub(crate) fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' {
            out.push(char::from(byte));
        } else {
            // Writing into a String cannot fail.
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// The error for a log that cannot be replayed into its source.
pub(crate) fn replay_error(source: &str, lsn: u64, error: &DbError) -> DbError {
    DbError::Recovery {
        message: format!("log of {source}, record {lsn}: cannot push it again: {error}"),
    }
}
