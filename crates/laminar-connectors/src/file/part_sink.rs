//! The output of a FILE sink whose `path` is a directory: one part file per epoch, written
//! through the two-phase commit of [`SinkConnector`](crate::SinkConnector) (names and rules
//! in `parts`). Without checkpoints (no `begin_epoch`), the whole output is one implicit
//! epoch 0, committed when the sink closes, and it replaces the parts an earlier run left.
//!
//! Invariants: at most one epoch is open (being written); epochs increase; at most
//! [`PENDING_EPOCHS_MAX`] epochs are pre-committed and not yet committed; after a failed
//! pre-commit, commit, abort or recovery the directory's state is unknown and the sink is
//! poisoned: it refuses all further work until the database reopens and recovers it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use super::encoder::Encoder;
use super::part_dir::{remove_if_present, PartDir};
use super::parts::{check_handle, recovery_deletions, CommitHandle, PartFile, PartRecord};
use super::{CsvDialect, FileFormat};
use crate::error::{ConnectorError, Result};

/// Connector name used in messages.
const CONNECTOR: &str = "FILE sink";
/// The epoch of a sink that is not transactional: all its rows, committed on close.
const DIRECT_EPOCH: u64 = 0;
/// Epochs that may wait, pre-committed, for their commit. Each is a synced temp file and
/// grows every handle; more means the coordinator stopped committing.
pub(crate) const PENDING_EPOCHS_MAX: usize = 64;

/// The epoch being written.
struct OpenEpoch {
    epoch: u64,
    /// Created with the epoch's first row: an epoch without rows writes no part.
    encoder: Option<Encoder>,
}

/// A directory of part files; see the module documentation.
pub(crate) struct PartSink {
    dir: PartDir,
    format: FileFormat,
    dialect: CsvDialect,
    schema: SchemaRef,
    /// Set by `begin_epoch` or `recover`: rows belong to explicit epochs, close commits nothing.
    transactional: bool,
    open: Option<OpenEpoch>,
    /// Pre-committed epochs not yet committed.
    pending: BTreeMap<u64, PartRecord>,
    /// The newest epoch begun or recovered; the next must be greater.
    last_epoch: Option<u64>,
    closed: bool,
    /// The failure that poisoned the sink.
    poisoned: Option<String>,
}

impl PartSink {
    pub(crate) fn new(
        dir: PathBuf,
        format: FileFormat,
        dialect: CsvDialect,
        schema: SchemaRef,
    ) -> Self {
        let names = super::parts::PartNames {
            extension: format.name(),
        };
        Self {
            dir: PartDir::new(dir, names),
            format,
            dialect,
            schema,
            transactional: false,
            open: None,
            pending: BTreeMap::new(),
            last_epoch: None,
            closed: false,
            poisoned: None,
        }
    }

    /// The protocol state, for `Debug`.
    pub(crate) fn describe(&self) -> String {
        format!(
            "transactional: {}, open epoch: {:?}, pending: {:?}, poisoned: {}",
            self.transactional,
            self.open.as_ref().map(|o| o.epoch),
            self.pending.keys().collect::<Vec<_>>(),
            self.poisoned.is_some()
        )
    }

    /// Writes rows of the sink's output schema to the open epoch's temp file.
    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.check_poisoned()?;
        if self.closed {
            return Err(self.bug("a write after close"));
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.open.is_none() {
            if self.transactional {
                return Err(self.bug("a write outside an epoch (after its pre-commit)"));
            }
            self.open = Some(OpenEpoch {
                epoch: DIRECT_EPOCH,
                encoder: None,
            });
        }
        let Some(open) = self.open.as_mut() else {
            return Ok(());
        };
        if open.encoder.is_none() {
            let temp = self.dir.temp_path(open.epoch);
            let encoder = Encoder::create(&temp, self.format, self.dialect, self.schema.clone())?;
            open.encoder = Some(encoder);
        }
        match open.encoder.as_mut() {
            Some(encoder) => encoder.write(batch),
            None => Ok(()),
        }
    }

    pub(crate) fn begin_epoch(&mut self, epoch: u64) -> Result<()> {
        self.check_poisoned()?;
        if self.closed {
            return Err(self.bug(&format!("epoch {epoch} began after close")));
        }
        if let Some(open) = &self.open {
            let message = if self.transactional {
                format!(
                    "epoch {epoch} began while epoch {} was neither pre-committed nor aborted",
                    open.epoch
                )
            } else {
                format!("epoch {epoch} began after rows were written outside any epoch")
            };
            return Err(self.bug(&message));
        }
        if let Some(last) = self.last_epoch.filter(|&last| epoch <= last) {
            return Err(self.bug(&format!("epoch {epoch} began after epoch {last}")));
        }
        self.transactional = true;
        self.last_epoch = Some(epoch);
        self.open = Some(OpenEpoch {
            epoch,
            encoder: None,
        });
        Ok(())
    }

    pub(crate) fn pre_commit(&mut self, epoch: u64) -> Result<serde_json::Value> {
        self.guarded(|sink| sink.pre_commit_open(epoch))
    }

    fn pre_commit_open(&mut self, epoch: u64) -> Result<serde_json::Value> {
        match &self.open {
            Some(open) if self.transactional && open.epoch == epoch => {}
            _ => {
                return Err(self.bug(&format!(
                    "pre-commit of epoch {epoch}, which is not the open epoch"
                )))
            }
        }
        if self.pending.len() >= PENDING_EPOCHS_MAX {
            return Err(self.bug(&format!(
                "{PENDING_EPOCHS_MAX} epochs are pre-committed and none of them was committed"
            )));
        }
        if let Some(record) = self.finish_open()? {
            self.pending.insert(epoch, record);
        }
        let handle = CommitHandle {
            parts: self.pending.values().copied().collect(),
        };
        serde_json::to_value(&handle).map_err(|e| self.bug(&format!("encoding a handle: {e}")))
    }

    /// Finishes and syncs the open epoch's temp file; `None` when the epoch had no rows.
    fn finish_open(&mut self) -> Result<Option<PartRecord>> {
        let Some(OpenEpoch { epoch, encoder }) = self.open.take() else {
            return Ok(None);
        };
        let Some(encoder) = encoder else {
            return Ok(None);
        };
        let file = encoder.finish()?;
        let bytes = self.dir.sync_temp(epoch, &file)?;
        Ok(Some(PartRecord { epoch, bytes }))
    }

    pub(crate) fn commit(&mut self, epoch: u64, handle: &serde_json::Value) -> Result<()> {
        self.guarded(|sink| {
            let handle = sink.parse_handle(epoch, handle)?;
            sink.dir.commit(epoch, &handle)?;
            sink.pending.retain(|&pending, _| pending > epoch);
            Ok(())
        })
    }

    pub(crate) fn abort(&mut self, epoch: u64) -> Result<()> {
        self.guarded(|sink| {
            if sink.open.as_ref().is_some_and(|open| open.epoch == epoch) {
                // Dropping the encoder closes the temp file before it is removed.
                sink.open = None;
                remove_if_present(&sink.dir.temp_path(epoch))?;
            }
            if sink.pending.remove(&epoch).is_some() {
                remove_if_present(&sink.dir.temp_path(epoch))?;
            }
            Ok(())
        })
    }

    pub(crate) fn recover(&mut self, committed: Option<(u64, &serde_json::Value)>) -> Result<()> {
        self.guarded(|sink| {
            if sink.open.is_some() || sink.last_epoch.is_some() || sink.closed {
                return Err(sink.bug("recovery after output began"));
            }
            let committed = match committed {
                Some((epoch, handle)) => Some((epoch, sink.parse_handle(epoch, handle)?)),
                None => None,
            };
            let restored = committed.as_ref().map(|(epoch, handle)| (*epoch, handle));
            let deletions = recovery_deletions(restored, &sink.dir.list()?);
            sink.dir.delete(&deletions)?;
            if let Some((epoch, handle)) = &committed {
                sink.dir.commit(*epoch, handle)?;
                sink.last_epoch = Some(*epoch);
            }
            sink.transactional = true;
            Ok(())
        })
    }

    pub(crate) fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        self.guarded(|sink| {
            if sink.transactional {
                // Rows after the last pre-commit are replayed after a restart; pre-committed
                // epochs stay for the coordinator's commit or for recovery.
                if let Some(open) = sink.open.take() {
                    let epoch = open.epoch;
                    // Dropping the encoder closes the temp file before it is removed.
                    drop(open);
                    remove_if_present(&sink.dir.temp_path(epoch))?;
                }
                return Ok(());
            }
            sink.close_direct()
        })
    }

    /// Commits the output of a sink without epochs as the one part of epoch 0, replacing
    /// every part and temp file of earlier runs.
    fn close_direct(&mut self) -> Result<()> {
        self.dir.create()?;
        let record = self.finish_open()?;
        let ours = PartFile::Temp(DIRECT_EPOCH);
        let stale: Vec<PartFile> = recovery_deletions(None, &self.dir.list()?)
            .into_iter()
            .filter(|file| record.is_none() || *file != ours)
            .collect();
        self.dir.delete(&stale)?;
        if let Some(record) = record {
            let handle = CommitHandle {
                parts: vec![record],
            };
            self.dir.commit(DIRECT_EPOCH, &handle)?;
        }
        Ok(())
    }

    /// Decodes and checks a handle given for `epoch`.
    fn parse_handle(&self, epoch: u64, handle: &serde_json::Value) -> Result<CommitHandle> {
        let failed = |reason: String| ConnectorError::CommitFailed {
            path: self.dir.path().to_path_buf(),
            epoch,
            reason,
        };
        let handle: CommitHandle = serde_json::from_value(handle.clone())
            .map_err(|e| failed(format!("its handle is not one of a FILE sink: {e}")))?;
        check_handle(epoch, &handle).map_err(failed)?;
        Ok(handle)
    }

    /// Runs `operation`, poisoning the sink if it fails other than by a caller's bug.
    fn guarded<T>(&mut self, operation: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.check_poisoned()?;
        let result = operation(self);
        if let Err(error) = &result {
            if !matches!(error, ConnectorError::Internal { .. }) {
                self.poisoned = Some(error.to_string());
            }
        }
        result
    }

    fn check_poisoned(&self) -> Result<()> {
        match &self.poisoned {
            Some(cause) => Err(ConnectorError::SinkPoisoned {
                path: self.dir.path().to_path_buf(),
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// An error for a call out of protocol order: a bug of the caller.
    fn bug(&self, what: &str) -> ConnectorError {
        ConnectorError::Internal {
            connector: CONNECTOR.to_owned(),
            message: format!("{}: {what}", self.dir.path().display()),
        }
    }
}
