//! One checkpoint being written: state files as they are added, then the manifest that
//! makes them a checkpoint.
//!
//! Commit order, which is what makes a checkpoint atomic: every state file is written to a
//! temporary name, fdatasync'ed and renamed as it is added; commit fsyncs the directory (all
//! renames durable), then writes the manifest atomically (temp file, fdatasync, rename,
//! directory fsync). A crash before the manifest's rename leaves the previous checkpoint in
//! force and orphan state files that the next commit's garbage collection deletes.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use laminar_core::state::{state_keys, OperatorState, StateKind};

use super::naming::state_file_name;
use super::store::CheckpointStore;
use crate::error::{Result, StorageError};
use crate::manifest::{
    write_manifest, Manifest, StateFileKind, StateFileRef, MANIFEST_FORMAT_VERSION,
};
use crate::snapshot::encode_state_file;

/// A checkpoint in progress; nothing of it counts until [`CheckpointBuilder::commit`].
#[derive(Debug)]
pub struct CheckpointBuilder<'s> {
    store: &'s mut CheckpointStore,
    epoch: u64,
    states: BTreeMap<String, Vec<StateFileRef>>,
    sources: BTreeMap<String, serde_json::Value>,
    sinks: BTreeMap<String, serde_json::Value>,
    engine: serde_json::Value,
    workers: usize,
}

impl<'s> CheckpointBuilder<'s> {
    pub(crate) fn new(store: &'s mut CheckpointStore, epoch: u64) -> Self {
        Self {
            store,
            epoch,
            states: BTreeMap::new(),
            sources: BTreeMap::new(),
            sinks: BTreeMap::new(),
            engine: serde_json::Value::Null,
            workers: 1,
        }
    }

    /// The checkpoint's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Writes the snapshot `state` of state `id` (durably) and adds it to the checkpoint: a
    /// full snapshot starts a new chain; a delta extends the chain `id` has in the previous
    /// checkpoint, and is refused if it has none.
    pub fn add_state(&mut self, id: &str, state: &OperatorState) -> Result<()> {
        let refuse = |reason: String| StorageError::Checkpoint {
            epoch: self.epoch,
            reason: format!("state '{id}': {reason}"),
        };
        if self.states.contains_key(id) {
            return Err(refuse("added twice".into()));
        }
        for part in &state.parts {
            for batch in &part.upserts {
                state_keys(batch).map_err(|e| refuse(format!("part '{}': {e}", part.name)))?;
            }
        }
        let (kind, mut chain) = match state.kind {
            StateKind::Full => (StateFileKind::Full, Vec::new()),
            StateKind::Delta => {
                let previous = self.store.last_manifest().and_then(|m| m.states.get(id));
                let Some(previous) = previous else {
                    return Err(refuse(
                        "a delta, but the previous checkpoint holds no snapshot of it to apply it to"
                            .into(),
                    ));
                };
                (StateFileKind::Delta, previous.clone())
            }
        };
        let file = state_file_name(self.epoch, id, kind);
        if self.states.values().flatten().any(|f| f.file == file) {
            return Err(refuse(format!(
                "its file name {file} collides with another state's"
            )));
        }
        let path = self.store.root.join(&file);
        let bytes = encode_state_file(&path, state)?;
        self.store
            .options
            .backend
            .write_file_synced(&path, &bytes)?;
        chain.push(StateFileRef {
            file,
            kind,
            bytes: bytes.len() as u64,
            crc32c: crc32c::crc32c(&bytes),
        });
        self.states.insert(id.to_string(), chain);
        Ok(())
    }

    /// Records the position source `name` resumes from.
    pub fn set_source(&mut self, name: impl Into<String>, position: serde_json::Value) {
        self.sources.insert(name.into(), position);
    }

    /// Records the transaction sink `name` pre-committed at this epoch.
    pub fn set_sink(&mut self, name: impl Into<String>, transaction: serde_json::Value) {
        self.sinks.insert(name.into(), transaction);
    }

    /// Records engine facts (e.g. the write-ahead log LSN the checkpoint covers).
    pub fn set_engine(&mut self, engine: serde_json::Value) {
        self.engine = engine;
    }

    /// Records the number of workers whose state the checkpoint holds (default 1).
    pub fn set_workers(&mut self, workers: usize) {
        self.workers = workers;
    }

    /// Makes the checkpoint durable and current: the state files' directory entries are
    /// synced, then the manifest is written atomically. Then deletes the manifests and files
    /// no kept checkpoint needs (failures there become [`CheckpointStore::take_gc_warnings`],
    /// not an error: the checkpoint is committed). States of the previous checkpoint that
    /// were not added are not part of this one.
    pub fn commit(self) -> Result<Manifest> {
        let backend = &self.store.options.backend;
        backend.sync_dir(&self.store.root)?;
        let manifest = Manifest {
            format_version: MANIFEST_FORMAT_VERSION,
            epoch: self.epoch,
            created_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            workers: self.workers,
            states: self.states,
            sources: self.sources,
            sinks: self.sinks,
            engine: self.engine,
        };
        write_manifest(backend.as_ref(), &self.store.root, &manifest)?;
        self.store.committed(manifest.clone());
        Ok(manifest)
    }
}
