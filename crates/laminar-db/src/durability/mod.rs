//! Durability of a database opened on a data directory: the write-ahead logs of push
//! sources and tables, checkpoints of every query's state with the sources' positions and
//! the sinks' transactions, and recovery from them (see `docs/storage-format.md`).
//!
//! Layout under the data directory: `catalog.json` (the statements), `wal/worker-<i>/` (one
//! log per worker, shared by push sources and tables), `checkpoints/` (manifests and state
//! files),
//! `outputs/<object>/` (the output log of each object declared with `output_log`).

mod coordinator;
mod input_gate;
mod lifecycle;
pub(crate) mod output_log;
mod recovery;
mod wal_record;
mod worker_logs;

pub use coordinator::CheckpointInfo;
pub(crate) use input_gate::InputGate;
pub(crate) use recovery::{watermark_json, RecoveredState};
pub(crate) use wal_record::RecordKind;
pub(crate) use worker_logs::{LogPositions, SourceLog, WorkerLogs};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use laminar_storage::checkpoint::{CheckpointStore, RETAIN_DEFAULT};
use laminar_storage::wal::Durability;

use crate::error::Result;

/// Default time between automatic checkpoints.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10);

/// Committed epochs an output log keeps beyond those of the checkpoints kept, by default.
pub const OUTPUT_LOG_EXTRA_EPOCHS_DEFAULT: u64 = 8;

/// How long a checkpoint waits for its barrier to pass every worker.
pub(crate) const CHECKPOINT_CUT_TIMEOUT: Duration = Duration::from_secs(30);

/// The durable side of a database with a data directory.
pub(crate) struct Durable {
    pub(crate) dir: PathBuf,
    pub(crate) durability: Durability,
    pub(crate) gate: Arc<InputGate>,
    /// The checkpoint store; its lock also keeps checkpoints one at a time.
    pub(crate) store: Mutex<CheckpointStore>,
    /// What the newest valid checkpoint holds, consulted while the catalog is restored.
    pub(crate) recovered: Mutex<Option<Arc<RecoveredState>>>,
    /// The epoch the next checkpoint gets.
    pub(crate) next_epoch: AtomicU64,
    /// The last checkpoint failed after operators reset what counts as changed: the next
    /// one must be full.
    pub(crate) force_full: AtomicBool,
    /// Warnings of recovery (a torn log tail dropped, a corrupt checkpoint skipped).
    pub(crate) warnings: Mutex<Vec<String>>,
    /// The write-ahead logs of push sources and tables (none under durability `none`).
    pub(crate) logs: Option<Arc<WorkerLogs>>,
    /// Per log, the position the newest checkpoint covers: the next checkpoint drops the
    /// records up to it (not up to its own position, which the previous one, kept as a
    /// fallback, does not cover).
    covered: Mutex<Vec<u64>>,
    /// Time between automatic checkpoints; `None` for none.
    pub(crate) interval: Option<Duration>,
    /// Committed epochs each output log keeps: those of the checkpoints the store keeps
    /// (recovery may fall back to the older one) plus the configured extra.
    pub(crate) output_log_keep_epochs: u64,
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durable")
            .field("dir", &self.dir)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl Durable {
    /// Opens the checkpoint store under `dir` and reads the newest valid checkpoint.
    pub(crate) fn open(
        dir: &Path,
        durability: Durability,
        interval: Option<Duration>,
        workers: usize,
        output_log_extra_epochs: u64,
    ) -> Result<Self> {
        let (store, recovered, warnings) = CheckpointStore::open(dir.join("checkpoints"))?;
        let next_epoch = recovered.as_ref().map_or(1, |r| r.manifest.epoch + 1);
        let mut warnings = warnings;
        let covered = recovered
            .as_ref()
            .map(|r| log_positions(&r.manifest.engine).lsns)
            .unwrap_or_default();
        let logs = if durability == Durability::None {
            None
        } else {
            let (logs, torn) = WorkerLogs::open(&dir.join("wal"), workers, durability)?;
            for warning in &torn {
                eprintln!("laminardb: {warning}");
            }
            warnings.extend(torn);
            Some(logs)
        };
        let recovered = recovered
            .map(|r| RecoveredState::new(r, workers).map(Arc::new))
            .transpose()?;
        Ok(Self {
            dir: dir.to_path_buf(),
            durability,
            gate: Arc::new(InputGate::default()),
            store: Mutex::new(store),
            recovered: Mutex::new(recovered),
            next_epoch: AtomicU64::new(next_epoch),
            force_full: AtomicBool::new(false),
            logs,
            covered: Mutex::new(covered),
            warnings: Mutex::new(warnings),
            interval,
            output_log_keep_epochs: RETAIN_DEFAULT as u64 + output_log_extra_epochs,
        })
    }

    /// Records that the checkpoint just committed covers the logs up to `lsns`; returns
    /// the positions the previous one covered, up to which records may go.
    pub(crate) fn swap_covered(&self, lsns: Vec<u64>) -> Vec<u64> {
        std::mem::replace(
            &mut *self.covered.lock().unwrap_or_else(PoisonError::into_inner),
            lsns,
        )
    }
}

/// The log positions a checkpoint's engine record holds (`wal`: the last sequence number
/// and each worker log's position); zeros for a checkpoint without logs.
pub(crate) fn log_positions(engine: &serde_json::Value) -> LogPositions {
    let wal = &engine["wal"];
    LogPositions {
        seq: wal["seq"].as_u64().unwrap_or(0),
        lsns: wal["lsns"]
            .as_array()
            .map(|lsns| lsns.iter().map(|l| l.as_u64().unwrap_or(0)).collect())
            .unwrap_or_default(),
    }
}

/// The engine record of log positions `positions`.
pub(crate) fn log_positions_json(positions: &LogPositions) -> serde_json::Value {
    serde_json::json!({ "seq": positions.seq, "lsns": positions.lsns })
}

/// The state id of node `node` of query `query` on `worker`.
pub(crate) fn query_state_id(query: &str, worker: usize, node: usize) -> String {
    format!("query/{query}/{worker}/{node}")
}

/// The state id of materialized view `view`'s rows produced on `worker`.
pub(crate) fn view_state_id(view: &str, worker: usize) -> String {
    format!("view/{view}/{worker}")
}

/// The state id of table `table`'s rows.
pub(crate) fn table_state_id(table: &str) -> String {
    format!("table/{table}")
}
