//! Output logs: the committed changes of a stream, materialized view or push source
//! declared `WITH (output_log = 'on')`, one file per checkpoint epoch under
//! `outputs/<object>/`, from which an [`EpochSubscription`](crate::EpochSubscription)
//! resumes after any epoch the log still holds without a gap or a duplicate.
//!
//! The log is an internal transactional sink on the object's stream (see `writer`): its
//! epochs are cut by the same barriers, pre-committed before the same manifests and
//! committed after them as FILE sinks' parts, so the epochs a log holds are exactly the
//! changes between the checkpoints that recovery restores. Subscriptions read only these
//! files (the open epoch's too, as it grows), never a second in-memory feed, so where
//! they start and how they follow the writer needs no hand-over (see `shared`).

mod naming;
mod plan;
mod reader;
mod record;
mod shared;
mod writer;

use std::sync::Arc;

use laminar_core::runtime::StreamOutlet;

pub(crate) use plan::Refusal;
pub(crate) use reader::EpochFile;
pub(crate) use shared::{EpochStatus, LogShared};

use crate::db::LaminarDB;
use crate::error::{DbError, Result};
use crate::sink_runner::SinkTask;

/// Directory of the output logs, under the data directory.
const OUTPUTS_DIR: &str = "outputs";

/// An object's output log: the writer thread taking part in checkpoints, and the state its
/// subscriptions read.
pub(crate) struct OutputLog {
    task: SinkTask,
    shared: Arc<LogShared>,
}

impl OutputLog {
    /// The writer thread, which checkpoints barrier, pre-commit and commit like a sink.
    pub(crate) fn task(&self) -> &SinkTask {
        &self.task
    }

    /// The state subscriptions read.
    pub(crate) fn shared(&self) -> &Arc<LogShared> {
        &self.shared
    }

    /// The writer thread, to wait for when the object goes.
    pub(crate) fn into_task(self) -> SinkTask {
        self.task
    }
}

impl LaminarDB {
    /// Starts the output log of `name`, whose changes leave through `outlet`. A new object
    /// (`restoring` false) starts an empty log (a dropped object's leftovers are removed);
    /// a restored one recovers its log to the checkpoint being restored.
    pub(crate) fn start_output_log(
        &self,
        name: &str,
        outlet: &StreamOutlet,
        restoring: bool,
    ) -> Result<OutputLog> {
        let durable = self.inner.durable.as_ref().ok_or_else(|| {
            DbError::Internal(format!("output log of {name} without a data directory"))
        })?;
        let outputs = durable.dir.join(OUTPUTS_DIR);
        let dir = outputs.join(escape(name));
        let failed = |action: &str, e: &dyn std::fmt::Display| DbError::OutputLog {
            object: name.to_string(),
            message: format!("cannot {action} {}: {e}", dir.display()),
        };
        if !restoring && dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| failed("clear the old log", &e))?;
        }
        std::fs::create_dir_all(&dir).map_err(|e| failed("create", &e))?;
        for created in [&outputs, &durable.dir] {
            writer::sync_dir(created).map_err(|e| failed("sync", &e))?;
        }
        let shared = Arc::new(LogShared::new(
            name,
            dir.clone(),
            durable.output_log_keep_epochs,
        ));
        let ended = Arc::clone(&shared);
        let (task, sender) = SinkTask::start(
            &format!("output log of {name}"),
            Box::new(writer::LogWriter::new(Arc::clone(&shared))),
            self.inner.runtime.progress(),
            self.sink_resume(name, restoring),
            Some(Box::new(move || {
                ended.update(|state| state.input_ended = true);
            })),
        )
        .map_err(|e| DbError::Internal(format!("cannot start the output log of {name}: {e}")))?;
        outlet.attach_sink(sender);
        Ok(OutputLog { task, shared })
    }
}

/// A file-system-safe directory name for an object name: letters, digits and `_` stay,
/// every other byte becomes `%XX`, so distinct names never share a directory.
pub(crate) fn escape(name: &str) -> String {
    use std::fmt::Write as _;
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Array, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use laminar_connectors::SinkConnector;

    use super::naming::LogFile;
    use super::writer::LogWriter;
    use super::LogShared;
    use crate::epoch_subscription::{EpochSubscription, SubscriptionEvent};

    fn rows(values: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values.to_vec()))]).unwrap()
    }

    /// What `sub` has ready, as text: `[values]` per change batch, `c<epoch>` per marker.
    fn ready(sub: &mut EpochSubscription) -> Vec<String> {
        std::iter::from_fn(|| sub.try_next())
            .map(|event| match event {
                SubscriptionEvent::Committed(epoch) => format!("c{epoch}"),
                SubscriptionEvent::Changes(changes) => {
                    let values = changes.batch().column(0);
                    let values = values.as_any().downcast_ref::<Int64Array>().unwrap();
                    format!("{:?}", values.values().to_vec())
                }
            })
            .collect()
    }

    fn log(dir: &std::path::Path) -> (Arc<LogShared>, LogWriter) {
        let shared = Arc::new(LogShared::new("v", dir.to_path_buf(), 2));
        let writer = LogWriter::new(Arc::clone(&shared));
        (shared, writer)
    }

    #[test]
    fn a_pre_committed_epoch_holds_back_its_marker_and_the_next_epochs_rows() {
        let dir = tempfile::tempdir().unwrap();
        let (shared, mut writer) = log(dir.path());
        writer.recover(None).unwrap();
        writer.begin_epoch(1).unwrap();
        writer.write(&rows(&[1]), None).unwrap();
        let mut sub = EpochSubscription::start("v", Arc::clone(&shared), 0).unwrap();
        assert_eq!(ready(&mut sub), ["[1]"]);
        writer.write(&rows(&[2]), None).unwrap();
        assert_eq!(ready(&mut sub), ["[2]"]);
        let handle = writer.pre_commit(1).unwrap();
        writer.begin_epoch(2).unwrap();
        writer.write(&rows(&[3]), None).unwrap();
        // Epoch 1 is durable but its checkpoint's manifest may not be: no marker yet, and
        // nothing of epoch 2 before the marker.
        assert!(ready(&mut sub).is_empty());
        writer.commit(1, &handle).unwrap();
        assert_eq!(ready(&mut sub), ["c1", "[3]"]);
        let mut later = EpochSubscription::start("v", Arc::clone(&shared), 1).unwrap();
        assert_eq!(ready(&mut later), ["[3]"]);
        let error = EpochSubscription::start("v", shared, 2).unwrap_err();
        assert!(
            error.to_string().contains("newest committed epoch is 1"),
            "{error}"
        );
    }

    #[test]
    fn recovery_completes_the_restored_epochs_and_deletes_later_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (_, mut writer) = log(dir.path());
        writer.recover(None).unwrap();
        writer.begin_epoch(1).unwrap();
        writer.write(&rows(&[1]), None).unwrap();
        let first = writer.pre_commit(1).unwrap();
        writer.begin_epoch(2).unwrap();
        writer.write(&rows(&[2]), None).unwrap();
        let second = writer.pre_commit(2).unwrap();
        writer.begin_epoch(3).unwrap();
        writer.write(&rows(&[3]), None).unwrap();
        // A crash before any commit, with checkpoint 2's manifest written: its handle
        // names epochs 1 and 2.
        drop(writer);
        let (shared, mut writer) = log(dir.path());
        writer.recover(Some((2, &second))).unwrap();
        writer.begin_epoch(3).unwrap();
        let mut sub = EpochSubscription::start("v", Arc::clone(&shared), 0).unwrap();
        assert_eq!(ready(&mut sub), ["[1]", "c1", "[2]", "c2"]);
        drop(sub);
        drop(writer);

        // Checkpoint 2 turns out damaged: recovery from checkpoint 1 rolls epoch 2 back.
        let (shared, mut writer) = log(dir.path());
        writer.recover(Some((1, &first))).unwrap();
        assert!(!shared.path(LogFile::Committed(2)).exists());
        assert!(!shared.path(LogFile::Temp(3)).exists());
        writer.begin_epoch(2).unwrap();
        let mut sub = EpochSubscription::start("v", shared, 0).unwrap();
        assert_eq!(ready(&mut sub), ["[1]", "c1"]);
    }
}
