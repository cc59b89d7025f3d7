//! The write-ahead logs of push sources and tables: one log per worker (`wal/worker-<i>/`),
//! shared by every source and table, so concurrent pushers append without contending. A
//! thread always appends to the same log (threads are spread over the logs in the order
//! they first push), and every push and `INSERT` is appended (and durable under the
//! database's durability mode) before it returns, so rows acknowledged after the last
//! checkpoint are pushed again on recovery.
//!
//! One sequence number orders the records of all logs: recovery merges the logs by it and
//! pushes the records again in the order they were logged, across sources too. A
//! checkpoint records, with the inputs held still, each log's last position and the last
//! sequence number; the records up to the previous checkpoint's positions are then
//! dropped.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use laminar_storage::wal::{read_wal, Durability, WalOptions, WalWriter};

use super::wal_record::{decode, encode, LogRecord, RecordKind};
use crate::error::{DbError, Result};

/// Where the logs stand at a checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LogPositions {
    /// The last sequence number handed out.
    pub(crate) seq: u64,
    /// Each log's last position, by worker.
    pub(crate) lsns: Vec<u64>,
}

/// Every worker's log.
#[derive(Debug)]
pub(crate) struct WorkerLogs {
    dir: PathBuf,
    writers: Vec<WalWriter>,
    seq: AtomicU64,
}

/// Threads that appended so far, to spread new ones over the logs.
static THREADS_SEEN: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's log slot, taken on its first append.
    static SLOT: Cell<Option<usize>> = const { Cell::new(None) };
}

impl WorkerLogs {
    /// Opens (creating) one log per worker under `root`, and any more an earlier run with
    /// more workers left, dropping torn tails (rows never acknowledged). Returns the logs
    /// and a warning per dropped tail. A directory laid out otherwise is refused.
    pub(crate) fn open(
        root: &Path,
        workers: usize,
        durability: Durability,
    ) -> Result<(Arc<Self>, Vec<String>)> {
        std::fs::create_dir_all(root).map_err(|e| io_error(root, &e))?;
        let mut count = workers.max(1);
        for entry in std::fs::read_dir(root).map_err(|e| io_error(root, &e))? {
            let entry = entry.map_err(|e| io_error(root, &e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            let index = name
                .strip_prefix("worker-")
                .and_then(|i| i.parse::<usize>().ok())
                .ok_or_else(|| DbError::Recovery {
                    message: format!(
                        "{} holds {name}, which is not a worker's log (worker-<n>); \
                         the directory was written by another layout",
                        root.display()
                    ),
                })?;
            count = count.max(index + 1);
        }
        let mut writers = Vec::with_capacity(count);
        let mut warnings = Vec::new();
        for worker in 0..count {
            let dir = root.join(format!("worker-{worker}"));
            let (writer, report) = WalWriter::open(&dir, durability, WalOptions::default())?;
            if let Some(torn) = report.torn_tail {
                warnings.push(format!(
                    "log of worker {worker}: dropped {} bytes at offset {} of {} ({}); \
                     they were never acknowledged",
                    torn.bytes_dropped,
                    torn.offset,
                    torn.path.display(),
                    torn.reason
                ));
            }
            writers.push(writer);
        }
        Ok((
            Arc::new(Self {
                dir: root.to_path_buf(),
                writers,
                seq: AtomicU64::new(0),
            }),
            warnings,
        ))
    }

    /// Appends one record for `source` to this thread's log; returns once it is durable.
    pub(crate) fn append(
        &self,
        source: &str,
        kind: RecordKind,
        batch: Option<&RecordBatch>,
    ) -> Result<()> {
        let slot = SLOT.with(|slot| {
            slot.get().unwrap_or_else(|| {
                let taken = THREADS_SEEN.fetch_add(1, Ordering::Relaxed);
                slot.set(Some(taken));
                taken
            })
        });
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let payload = encode(kind, seq, source, batch)?;
        self.writers[slot % self.writers.len()].append(&payload)?;
        Ok(())
    }

    /// The last sequence number and each log's last position. Exact while no append is in
    /// progress (the input gate is closed).
    pub(crate) fn positions(&self) -> LogPositions {
        LogPositions {
            seq: self.seq.load(Ordering::SeqCst),
            lsns: self.writers.iter().map(WalWriter::last_lsn).collect(),
        }
    }

    /// Numbers later records after `seq` (recovery found records up to it).
    pub(crate) fn raise_seq(&self, seq: u64) {
        self.seq.fetch_max(seq, Ordering::SeqCst);
    }

    /// Makes every record appended so far durable (fsynced).
    pub(crate) fn sync(&self) -> Result<()> {
        for writer in &self.writers {
            writer.sync()?;
        }
        Ok(())
    }

    /// Forgets the records up to `lsns` (by worker) a checkpoint covers.
    pub(crate) fn truncate_through(&self, lsns: &[u64]) -> Result<()> {
        for (writer, lsn) in self.writers.iter().zip(lsns) {
            writer.truncate_through(*lsn)?;
        }
        Ok(())
    }

    /// Every record after `after` (each log's position, by worker; missing ones are 0),
    /// decoded, in sequence order.
    pub(crate) fn records_after(&self, after: &[u64]) -> Result<Vec<LogRecord>> {
        let mut records = Vec::new();
        for worker in 0..self.writers.len() {
            let dir = self.dir.join(format!("worker-{worker}"));
            let from = after.get(worker).copied().unwrap_or(0);
            for record in read_wal(&dir, from)?.records {
                let lsn = record.lsn;
                let what = || format!("log of worker {worker} (record {lsn})");
                records.push(decode(&record.payload, &what)?);
            }
        }
        records.sort_by_key(|record| record.seq);
        Ok(records)
    }
}

/// One source's or table's way into the logs, counting what it logged.
#[derive(Debug)]
pub(crate) struct SourceLog {
    source: String,
    logs: Arc<WorkerLogs>,
    pushes: AtomicU64,
}

impl SourceLog {
    pub(crate) fn new(source: &str, logs: Arc<WorkerLogs>, pushes: u64) -> Self {
        Self {
            source: source.to_string(),
            logs,
            pushes: AtomicU64::new(pushes),
        }
    }

    /// Logs one push or upsert (durable under the database's durability mode).
    pub(crate) fn append(&self, kind: RecordKind, batch: &RecordBatch) -> Result<()> {
        self.logs.append(&self.source, kind, Some(batch))?;
        self.pushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Counts a record pushed again on recovery.
    pub(crate) fn replayed(&self) {
        self.pushes.fetch_add(1, Ordering::SeqCst);
    }

    /// Records logged since the source or table was created.
    pub(crate) fn pushes(&self) -> u64 {
        self.pushes.load(Ordering::SeqCst)
    }
}

fn io_error(path: &Path, error: &std::io::Error) -> DbError {
    DbError::Recovery {
        message: format!("cannot read the logs at {}: {error}", path.display()),
    }
}

/// The error for a record that cannot be pushed again into its source.
pub(crate) fn replay_error(source: &str, seq: u64, error: &DbError) -> DbError {
    DbError::Recovery {
        message: format!("log record {seq} of {source}: cannot push it again: {error}"),
    }
}
