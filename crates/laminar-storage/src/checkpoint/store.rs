//! The checkpoint store: one directory of manifests and state files, opened once at start
//! (which finds the checkpoint to recover from) and then handed one checkpoint at a time.
//!
//! Invariants: epochs of committed checkpoints increase; the store keeps the newest `retain`
//! usable manifests and every state file they reference, so recovery can fall back past a
//! damaged newest checkpoint.

use std::path::{Path, PathBuf};

use super::builder::CheckpointBuilder;
use super::policy;
use super::recovery::{find_usable, Recovered};
use crate::error::{Result, StorageError};
use crate::io::{default_backend, parent_dir, Backend};
use crate::manifest::Manifest;

/// Default number of committed checkpoints kept.
pub const RETAIN_DEFAULT: usize = 2;
/// Default number of deltas after which a state gets a full snapshot again.
pub const COMPACTION_DELTAS_DEFAULT: usize = 8;

/// How a [`CheckpointStore`] keeps checkpoints.
#[derive(Debug, Clone)]
pub struct CheckpointOptions {
    /// Committed checkpoints kept (at least 1): the newest is recovered from; older ones are
    /// the fallback if it is damaged.
    pub retain: usize,
    /// After this many deltas, [`CheckpointStore::needs_full`] asks for a full snapshot.
    pub compaction_deltas: usize,
    /// The I/O backend files are written through.
    pub backend: Backend,
}

impl Default for CheckpointOptions {
    fn default() -> Self {
        Self {
            retain: RETAIN_DEFAULT,
            compaction_deltas: COMPACTION_DELTAS_DEFAULT,
            backend: default_backend(),
        }
    }
}

/// The checkpoints of one engine.
#[derive(Debug)]
pub struct CheckpointStore {
    pub(crate) root: PathBuf,
    pub(crate) options: CheckpointOptions,
    /// Usable manifests, newest first, at most `retain`; the first is the base of delta
    /// chains.
    pub(crate) kept: Vec<Manifest>,
    /// Files garbage collection could not delete, as messages.
    pub(crate) gc_warnings: Vec<String>,
}

impl CheckpointStore {
    /// Opens (creating if needed) the store in `root` with default options. See
    /// [`CheckpointStore::open_with`].
    pub fn open(root: impl AsRef<Path>) -> Result<(Self, Option<Recovered>, Vec<String>)> {
        Self::open_with(root, CheckpointOptions::default())
    }

    /// Opens the store in `root` and finds the newest usable checkpoint: `None` if there is
    /// no manifest; a warning per newer unusable manifest, naming it and why; an error
    /// ([`StorageError::NoValidCheckpoint`]) if manifests exist but none is usable.
    pub fn open_with(
        root: impl AsRef<Path>,
        options: CheckpointOptions,
    ) -> Result<(Self, Option<Recovered>, Vec<String>)> {
        let root = root.as_ref().to_path_buf();
        if options.retain == 0 {
            return Err(StorageError::InvalidOption {
                option: "checkpoints retained",
                value: "0".into(),
                reason: "at least 1 checkpoint must be kept".into(),
            });
        }
        if !root.exists() {
            std::fs::create_dir_all(&root).map_err(|e| StorageError::io(&root, e))?;
            options.backend.sync_dir(parent_dir(&root))?;
        }
        let found = find_usable(&root, options.retain - 1)?;
        let recovered = found
            .recovered
            .as_ref()
            .map(|m| Recovered::new(m.clone(), root.clone()));
        let kept = found.recovered.into_iter().chain(found.older).collect();
        let store = Self {
            root,
            options,
            kept,
            gc_warnings: Vec::new(),
        };
        Ok((store, recovered, found.warnings))
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The manifest of the last committed (or recovered) checkpoint.
    pub fn last_manifest(&self) -> Option<&Manifest> {
        self.kept.first()
    }

    /// The epoch of the last committed (or recovered) checkpoint.
    pub fn last_epoch(&self) -> Option<u64> {
        self.last_manifest().map(|m| m.epoch)
    }

    /// Whether the next snapshot of state `id` should be full rather than a delta: it has
    /// no snapshot chain yet, or the chain has `compaction_deltas` deltas, or its deltas
    /// outweigh its full snapshot. Keeps recovery time bounded.
    pub fn needs_full(&self, id: &str) -> bool {
        let chain = self
            .last_manifest()
            .and_then(|m| m.states.get(id))
            .map(Vec::as_slice);
        policy::needs_full(chain, self.options.compaction_deltas)
    }

    /// Starts the checkpoint of `epoch`, which must be greater than the last committed one.
    pub fn begin(&mut self, epoch: u64) -> Result<CheckpointBuilder<'_>> {
        if let Some(last) = self.last_epoch() {
            if epoch <= last {
                return Err(StorageError::Checkpoint {
                    epoch,
                    reason: format!(
                        "epochs must increase; the last committed checkpoint is epoch {last}"
                    ),
                });
            }
        }
        Ok(CheckpointBuilder::new(self, epoch))
    }

    /// Messages about files garbage collection could not delete since the last call (they
    /// do not make a commit fail: the checkpoint was already durable).
    pub fn take_gc_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.gc_warnings)
    }

    /// Keeps `manifest` as the newest checkpoint and deletes what no kept one needs.
    pub(crate) fn committed(&mut self, manifest: Manifest) {
        self.kept.insert(0, manifest);
        self.kept.truncate(self.options.retain);
        self.collect_garbage();
    }

    fn collect_garbage(&mut self) {
        let names: Vec<String> = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect(),
            Err(e) => {
                self.gc_warnings.push(format!(
                    "cannot list {} to delete old checkpoints: {e}",
                    self.root.display()
                ));
                return;
            }
        };
        let garbage = policy::garbage(&names, &self.kept);
        if garbage.is_empty() {
            return;
        }
        for name in garbage {
            let path = self.root.join(name);
            if let Err(e) = std::fs::remove_file(&path) {
                self.gc_warnings
                    .push(format!("cannot delete {}: {e}", path.display()));
            }
        }
        if let Err(e) = self.options.backend.sync_dir(&self.root) {
            self.gc_warnings.push(e.to_string());
        }
    }
}
