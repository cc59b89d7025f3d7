//! Durability of a database opened on a data directory: the write-ahead logs of push
//! sources and tables, checkpoints of every query's state with the sources' positions and
//! the sinks' transactions, and recovery from them (see `docs/storage-format.md`).
//!
//! Layout under the data directory: `catalog.json` (the statements), `wal/<object>/` (one
//! log per push source or table), `checkpoints/` (manifests and state files),
//! `outputs/<object>/` (the output log of each object declared with `output_log`).

mod coordinator;
mod input_gate;
mod lifecycle;
pub(crate) mod output_log;
mod recovery;
mod source_wal;
mod wal_record;

pub use coordinator::CheckpointInfo;
pub(crate) use input_gate::InputGate;
pub(crate) use recovery::{watermark_json, RecoveredState};
pub(crate) use source_wal::SourceWal;
pub(crate) use wal_record::RecordKind;

use std::collections::HashMap;
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
    /// Per log, the position the newest checkpoint covers: the next checkpoint drops the
    /// records up to it (not up to its own position, which the previous one, kept as a
    /// fallback, does not cover).
    covered: Mutex<HashMap<String, u64>>,
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
        let covered = recovered
            .iter()
            .flat_map(|r| r.manifest.sources.iter())
            .filter_map(|(name, saved)| Some((name.clone(), saved["lsn"].as_u64()?)))
            .collect();
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
            covered: Mutex::new(covered),
            warnings: Mutex::new(warnings),
            interval,
            output_log_keep_epochs: RETAIN_DEFAULT as u64 + output_log_extra_epochs,
        })
    }

    /// Records that the checkpoint just committed covers log `source` up to `lsn`; returns
    /// the position the previous one covered, up to which records may go.
    pub(crate) fn swap_covered(&self, source: &str, lsn: u64) -> Option<u64> {
        self.covered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(source.to_string(), lsn)
    }

    /// Where the logs of push sources and tables live.
    pub(crate) fn wal_root(&self) -> PathBuf {
        self.dir.join("wal")
    }
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
