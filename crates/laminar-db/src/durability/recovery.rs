//! What recovery reads from the newest valid checkpoint while the catalog's statements are
//! replayed: each query's restored nodes, each view's and table's rows, each source's log
//! position and watermark, and each sink's last pre-committed transaction.

use laminar_core::runtime::{NodeRestore, QueryRestore, SourceWatermarkState};
use laminar_core::state::RestoredPart;
use laminar_storage::checkpoint::Recovered;
use serde_json::{json, Value};

use super::{query_state_id, table_state_id, view_state_id};
use crate::error::{DbError, Result};

/// The newest valid checkpoint, as recovery consults it.
pub(crate) struct RecoveredState {
    recovered: Recovered,
}

impl RecoveredState {
    /// Checks the checkpoint fits a runtime of `workers` workers: keyed state is split by
    /// worker, so it can only be restored onto as many.
    pub(crate) fn new(recovered: Recovered, workers: usize) -> Result<Self> {
        let taken = recovered.manifest.workers;
        if taken != workers {
            return Err(DbError::Recovery {
                message: format!(
                    "checkpoint {} was taken with {taken} workers, but the database was opened \
                     with {workers}; open it with {taken} workers",
                    recovered.manifest.epoch
                ),
            });
        }
        Ok(Self { recovered })
    }

    /// Where the write-ahead logs stood at the checkpoint.
    pub(crate) fn log_positions(&self) -> super::LogPositions {
        super::log_positions(&self.recovered.manifest.engine)
    }

    /// The checkpoint's epoch.
    pub(crate) fn epoch(&self) -> u64 {
        self.recovered.manifest.epoch
    }

    /// Where query `name` resumes: its nodes' watermarks and state on every worker; `None`
    /// when the checkpoint does not know the query (it was created after it).
    pub(crate) fn query(&self, name: &str) -> Result<Option<QueryRestore>> {
        let Some(nodes) = self.recovered.manifest.engine["queries"][name].as_array() else {
            return Ok(None);
        };
        let mut restore = QueryRestore::default();
        for node in nodes {
            let bad = || DbError::Recovery {
                message: format!(
                    "checkpoint {}: query {name} has a malformed node entry {node}",
                    self.epoch()
                ),
            };
            let field = |i: usize| node.get(i).ok_or_else(bad);
            let worker = field(0)?.as_u64().ok_or_else(bad)? as usize;
            let index = field(1)?.as_u64().ok_or_else(bad)? as usize;
            let operator = field(2)?.as_str().ok_or_else(bad)?.to_string();
            let watermark_ms = field(3)?.as_i64().ok_or_else(bad)?;
            let output_watermark_ms = field(4)?.as_i64().ok_or_else(bad)?;
            let id = query_state_id(name, worker, index);
            let parts = if self.has_state(&id) {
                self.recovered.load_state(&id)?
            } else {
                Vec::new()
            };
            restore.nodes.insert(
                (worker, index),
                NodeRestore {
                    operator,
                    watermark_ms,
                    output_watermark_ms,
                    parts,
                },
            );
        }
        Ok(Some(restore))
    }

    /// The rows materialized view `name` held on `worker`.
    pub(crate) fn view(&self, name: &str, worker: usize) -> Result<Option<Vec<RestoredPart>>> {
        self.parts(&view_state_id(name, worker))
    }

    /// The rows table `name` held.
    pub(crate) fn table(&self, name: &str) -> Result<Option<Vec<RestoredPart>>> {
        self.parts(&table_state_id(name))
    }

    fn parts(&self, id: &str) -> Result<Option<Vec<RestoredPart>>> {
        if self.has_state(id) {
            Ok(Some(self.recovered.load_state(id)?))
        } else {
            Ok(None)
        }
    }

    fn has_state(&self, id: &str) -> bool {
        self.recovered.manifest.states.contains_key(id)
    }

    /// What the checkpoint recorded for source (or reader) `name`.
    pub(crate) fn source(&self, name: &str) -> Option<&Value> {
        self.recovered.manifest.sources.get(name)
    }

    /// The last transaction sink `name` had pre-committed at the checkpoint: `(epoch,
    /// handle)`; its handle names every earlier epoch still pending.
    pub(crate) fn sink(&self, name: &str) -> Option<(u64, Value)> {
        let entry = self.recovered.manifest.sinks.get(name)?;
        Some((entry["epoch"].as_u64()?, entry["handle"].clone()))
    }
}

/// A source's watermark state as the manifest records it.
pub(crate) fn watermark_json(state: Option<&SourceWatermarkState>) -> Value {
    match state {
        None => Value::Null,
        Some(state) => json!({
            "ms": state.watermark_ms,
            "partitions": state.partitions.iter().map(|(p, ms)| json!([p, ms])).collect::<Vec<_>>(),
        }),
    }
}

/// A source's watermark state read back from the manifest; `None` when absent or malformed
/// (the watermark then restarts from the rows that follow, which is only ever later).
pub(crate) fn watermark_from_json(value: &Value) -> Option<SourceWatermarkState> {
    let watermark_ms = value["ms"].as_i64()?;
    let partitions = value["partitions"]
        .as_array()?
        .iter()
        .filter_map(|p| Some((u32::try_from(p[0].as_u64()?).ok()?, p[1].as_i64()?)))
        .collect();
    Some(SourceWatermarkState {
        watermark_ms,
        partitions,
    })
}
