//! The writer of an output log: a [`SinkConnector`] run by the sink machinery
//! (`sink_runner`), so it takes part in checkpoints exactly like a transactional FILE
//! sink. The open epoch's change batches are appended to its hidden temp file as they
//! arrive (one framed record each, written whole before the state says they exist); the
//! checkpoint's barrier pre-commits the epoch (an end record, then fsync of the file and
//! the directory) before the manifest; once the manifest is durable the commit renames it
//! to its committed name, syncs the directory and removes committed epochs older than the
//! log keeps. Recovery completes the epochs the restored checkpoint pre-committed and
//! deletes everything after.
//!
//! Invariants: every epoch from the log's first has a file (an epoch without changes holds
//! only the header), so the committed files are a contiguous run of epochs; at most
//! [`PENDING_EPOCHS_MAX`] epochs wait for their commit; after a failed write, sync, rename
//! or recovery the log is poisoned: it refuses all further work (checkpoints fail) and its
//! subscriptions end with the error, until the database reopens and recovers it.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::Int64Array;
use datafusion::arrow::record_batch::RecordBatch;
use laminar_connectors::{ConnectorError, SinkConnector};

use super::naming::LogFile;
use super::plan::{decide_commit, recovery_deletions, CommitAction, LogHandle, PendingEpoch};
use super::record::{encode_changes, encode_end, encode_header};
use super::shared::{LogShared, LogState};

/// Epochs that may wait, pre-committed, for their commit; more means the coordinator
/// stopped committing.
pub(crate) const PENDING_EPOCHS_MAX: usize = 64;

/// The epoch being written.
struct OpenEpoch {
    epoch: u64,
    file: File,
    bytes: u64,
    /// Change records written.
    changes: u64,
}

/// Writes one object's output log.
pub(crate) struct LogWriter {
    shared: Arc<LogShared>,
    open: Option<OpenEpoch>,
    /// The failure that poisoned the log.
    poisoned: Option<String>,
    /// Encoding buffer, reused across records.
    scratch: Vec<u8>,
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter")
            .field("dir", &self.shared.dir())
            .field("open", &self.open.as_ref().map(|o| o.epoch))
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl LogWriter {
    pub(crate) fn new(shared: Arc<LogShared>) -> Self {
        Self {
            shared,
            open: None,
            poisoned: None,
            scratch: Vec::new(),
        }
    }

    fn check_poisoned(&self) -> Result<(), ConnectorError> {
        match &self.poisoned {
            Some(cause) => Err(ConnectorError::SinkPoisoned {
                path: self.shared.dir().to_path_buf(),
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Poisons the log with `error`, which is returned; subscriptions end with it.
    fn poison(&mut self, error: ConnectorError) -> ConnectorError {
        let message = format!("output log of {}: {error}", self.shared.object());
        if self.poisoned.is_none() {
            self.poisoned = Some(error.to_string());
            self.shared.update(|state| state.failed = Some(message));
        }
        error
    }

    fn bug(&self, message: &str) -> ConnectorError {
        ConnectorError::Internal {
            connector: format!("output log of {}", self.shared.object()),
            message: message.to_string(),
        }
    }

    fn io(&self, file: LogFile) -> impl Fn(std::io::Error) -> ConnectorError + '_ {
        move |e| io_error(self.shared.path(file), e)
    }

    fn append(
        &mut self,
        batch: &RecordBatch,
        weights: Option<&Int64Array>,
    ) -> Result<(), ConnectorError> {
        let Some(open) = self.open.as_mut() else {
            return Err(self.bug("a write outside an epoch"));
        };
        self.scratch.clear();
        encode_changes(batch, weights, &mut self.scratch).map_err(|message| {
            ConnectorError::Format {
                path: self.shared.path(LogFile::Temp(open.epoch)),
                message,
            }
        })?;
        let path = self.shared.path(LogFile::Temp(open.epoch));
        open.file
            .write_all(&self.scratch)
            .map_err(|e| io_error(path, e))?;
        open.bytes += self.scratch.len() as u64;
        open.changes += 1;
        let (epoch, bytes) = (open.epoch, open.bytes);
        self.shared
            .update(|state| state.open = Some((epoch, bytes)));
        Ok(())
    }

    fn begin(&mut self, epoch: u64) -> Result<(), ConnectorError> {
        if self.open.is_some() {
            return Err(self.bug(&format!(
                "epoch {epoch} began before the open one was pre-committed"
            )));
        }
        let last = {
            let state = self.shared.lock();
            state
                .pending
                .keys()
                .next_back()
                .copied()
                .max(state.committed)
        };
        if let Some(last) = last.filter(|&last| epoch <= last) {
            return Err(self.bug(&format!("epoch {epoch} began after epoch {last}")));
        }
        let temp = LogFile::Temp(epoch);
        let mut file = File::create(self.shared.path(temp)).map_err(self.io(temp))?;
        self.scratch.clear();
        encode_header(epoch, &mut self.scratch).map_err(|e| self.bug(&e))?;
        file.write_all(&self.scratch).map_err(self.io(temp))?;
        let bytes = self.scratch.len() as u64;
        self.open = Some(OpenEpoch {
            epoch,
            file,
            bytes,
            changes: 0,
        });
        self.shared.update(|state| {
            state.begin.get_or_insert(epoch);
            state.open = Some((epoch, bytes));
            state.ready = true;
        });
        Ok(())
    }

    fn precommit(&mut self, epoch: u64) -> Result<serde_json::Value, ConnectorError> {
        let mut open = match self.open.take() {
            Some(open) if open.epoch == epoch => open,
            other => {
                self.open = other;
                return Err(self.bug(&format!(
                    "pre-commit of epoch {epoch}, which is not the open epoch"
                )));
            }
        };
        if self.shared.lock().pending.len() >= PENDING_EPOCHS_MAX {
            return Err(self.bug(&format!(
                "{PENDING_EPOCHS_MAX} epochs are pre-committed and none of them was committed"
            )));
        }
        let temp = LogFile::Temp(epoch);
        self.scratch.clear();
        encode_end(open.changes, &mut self.scratch).map_err(|e| self.bug(&e))?;
        open.file.write_all(&self.scratch).map_err(self.io(temp))?;
        open.bytes += self.scratch.len() as u64;
        open.file.sync_all().map_err(self.io(temp))?;
        sync_dir(self.shared.dir())?;
        let handle = self.shared.update(|state| {
            state.pending.insert(epoch, open.bytes);
            state.open = None;
            LogHandle {
                begin: state.begin.unwrap_or(epoch),
                pending: pending_epochs(state),
            }
        });
        serde_json::to_value(&handle).map_err(|e| self.bug(&format!("encoding a handle: {e}")))
    }

    fn parse_handle(
        &self,
        epoch: u64,
        handle: &serde_json::Value,
    ) -> Result<LogHandle, ConnectorError> {
        let handle: LogHandle =
            serde_json::from_value(handle.clone()).map_err(|e| ConnectorError::CommitFailed {
                path: self.shared.dir().to_path_buf(),
                epoch,
                reason: format!("its handle {handle} is unreadable: {e}"),
            })?;
        handle
            .check(epoch)
            .map_err(|reason| ConnectorError::CommitFailed {
                path: self.shared.dir().to_path_buf(),
                epoch,
                reason,
            })?;
        Ok(handle)
    }

    /// Commits every epoch `handle` names (given for `epoch`), then removes what the log
    /// no longer keeps. Renames happen under the state's lock (see `shared`).
    fn commit_handle(&self, epoch: u64, handle: &LogHandle) -> Result<(), ConnectorError> {
        let shared = &self.shared;
        shared.update(|state| {
            for pending in &handle.pending {
                commit_epoch(shared, epoch, *pending)?;
            }
            sync_dir(shared.dir())?;
            state.committed = state.committed.max(Some(epoch));
            state.pending.retain(|&pending, _| pending > epoch);
            let first = handle.pending.first().map_or(epoch, |p| p.epoch);
            state.oldest.get_or_insert(first);
            collect_garbage(shared, state)
        })
    }

    fn recover_log(
        &mut self,
        committed: Option<(u64, &serde_json::Value)>,
    ) -> Result<(), ConnectorError> {
        let restored = match committed {
            Some((epoch, handle)) => Some((epoch, self.parse_handle(epoch, handle)?)),
            None => None,
        };
        let shared = &self.shared;
        let on_disk = list(shared.dir())?;
        let restored_ref = restored.as_ref().map(|(epoch, handle)| (*epoch, handle));
        for file in recovery_deletions(restored_ref, &on_disk) {
            remove_if_present(&shared.path(file))?;
        }
        let Some((epoch, handle)) = restored else {
            sync_dir(shared.dir())?;
            return Ok(());
        };
        shared.update(|state| {
            for pending in &handle.pending {
                commit_epoch(shared, epoch, *pending)?;
            }
            sync_dir(shared.dir())?;
            state.begin = Some(handle.begin);
            state.committed = Some(epoch);
            state.oldest = list(shared.dir())?
                .into_iter()
                .filter_map(|file| match file {
                    LogFile::Committed(epoch) => Some(epoch),
                    LogFile::Temp(_) => None,
                })
                .min();
            collect_garbage(shared, state)
        })
    }
}

impl SinkConnector for LogWriter {
    fn write(
        &mut self,
        batch: &RecordBatch,
        weights: Option<&Int64Array>,
    ) -> Result<(), ConnectorError> {
        self.check_poisoned()?;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.append(batch, weights).map_err(|e| self.poison(e))
    }

    fn close(&mut self) -> Result<(), ConnectorError> {
        // The open epoch's rows are replayed after a restart: recovery deletes its file.
        self.shared.update(|state| state.closed = true);
        Ok(())
    }

    fn check_exactly_once(&self) -> Result<(), ConnectorError> {
        Ok(())
    }

    fn begin_epoch(&mut self, epoch: u64) -> Result<(), ConnectorError> {
        self.check_poisoned()?;
        self.begin(epoch).map_err(|e| self.poison(e))
    }

    fn pre_commit(&mut self, epoch: u64) -> Result<serde_json::Value, ConnectorError> {
        self.check_poisoned()?;
        self.precommit(epoch).map_err(|e| self.poison(e))
    }

    fn commit(&mut self, epoch: u64, handle: &serde_json::Value) -> Result<(), ConnectorError> {
        self.check_poisoned()?;
        let committed = self
            .parse_handle(epoch, handle)
            .and_then(|handle| self.commit_handle(epoch, &handle));
        committed.map_err(|e| self.poison(e))
    }

    fn recover(
        &mut self,
        committed: Option<(u64, &serde_json::Value)>,
    ) -> Result<(), ConnectorError> {
        self.recover_log(committed).map_err(|e| self.poison(e))
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        // Also when the writer thread unwinds: waiting subscriptions must not wait forever.
        self.shared.update(|state| state.closed = true);
    }
}

/// Every pending epoch, in order, as a handle records them.
fn pending_epochs(state: &LogState) -> Vec<PendingEpoch> {
    state
        .pending
        .iter()
        .map(|(&epoch, &bytes)| PendingEpoch { epoch, bytes })
        .collect()
}

/// Renames `pending`'s temp file to its committed name, unless it already is.
fn commit_epoch(
    shared: &LogShared,
    epoch: u64,
    pending: PendingEpoch,
) -> Result<(), ConnectorError> {
    let temp = shared.path(LogFile::Temp(pending.epoch));
    let committed = shared.path(LogFile::Committed(pending.epoch));
    let action =
        decide_commit(pending, file_len(&temp)?, file_len(&committed)?).map_err(|reason| {
            ConnectorError::CommitFailed {
                path: shared.dir().to_path_buf(),
                epoch,
                reason: format!("epoch {}: {reason}", pending.epoch),
            }
        })?;
    if action == CommitAction::Rename {
        fs::rename(&temp, &committed).map_err(|e| io_error(&temp, e))?;
    }
    Ok(())
}

/// Removes the committed epochs the log no longer keeps. A file that cannot be removed is
/// reported, not fatal: the log no longer offers it either way.
fn collect_garbage(shared: &LogShared, state: &mut LogState) -> Result<(), ConnectorError> {
    let Some(removable) = state
        .holdings()
        .and_then(|holdings| holdings.collectable(shared.keep_epochs()))
    else {
        return Ok(());
    };
    let next = removable.end() + 1;
    for epoch in removable {
        let path = shared.path(LogFile::Committed(epoch));
        if let Err(e) = remove_if_present(&path) {
            eprintln!("laminardb: cannot remove an old epoch of an output log: {e}");
        }
    }
    state.oldest = Some(next);
    sync_dir(shared.dir())
}

/// An I/O error on `path`.
fn io_error(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> ConnectorError {
    ConnectorError::Io {
        path: path.into(),
        source,
    }
}

/// The log's files in `dir`.
fn list(dir: &Path) -> Result<Vec<LogFile>, ConnectorError> {
    let entries = fs::read_dir(dir).map_err(|e| io_error(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        if let Some(file) = entry.file_name().to_str().and_then(LogFile::parse) {
            files.push(file);
        }
    }
    Ok(files)
}

/// Removes `path`; a file already gone is fine.
fn remove_if_present(path: &Path) -> Result<(), ConnectorError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(io_error(path, e)),
        _ => Ok(()),
    }
}

/// The length of the file at `path`, `None` when there is none.
fn file_len(path: &Path) -> Result<Option<u64>, ConnectorError> {
    match fs::metadata(path) {
        Ok(metadata) => Ok(Some(metadata.len())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path, e)),
    }
}

/// Makes the entries of directory `dir` (created, renamed, removed files) durable.
#[cfg(unix)]
pub(crate) fn sync_dir(dir: &Path) -> Result<(), ConnectorError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}

/// Directories cannot be opened for syncing on this platform; its file system orders
/// metadata updates itself (NTFS journals them).
#[cfg(not(unix))]
pub(crate) fn sync_dir(_dir: &Path) -> Result<(), ConnectorError> {
    Ok(())
}
