//! The durable lifecycle of a database: opening push sources' and tables' logs, restoring
//! their watermarks and rows, replaying logged rows after the checkpoint once every
//! statement is restored, and the thread that takes automatic checkpoints.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use laminar_connectors::SourcePosition;
use laminar_core::runtime::{IngressHandle, QueryRestore, SourceWatermarkState};
use laminar_core::{ReferenceTable, ResultTable};

use super::recovery::watermark_from_json;
use super::worker_logs::replay_error;
use super::{RecordKind, SourceLog};
use crate::catalog::ObjectState;
use crate::db::{Inner, LaminarDB};
use crate::error::{DbError, Result};
use crate::sink_runner::SinkResume;

impl LaminarDB {
    /// What recovery had to work around when the database opened: a torn log tail dropped
    /// (rows never acknowledged), a corrupt checkpoint skipped for an older one. Empty for
    /// a clean open or a database without a data directory.
    pub fn recovery_warnings(&self) -> Vec<String> {
        self.inner.durable.as_ref().map_or_else(Vec::new, |d| {
            d.warnings
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        })
    }

    /// The way of push source or table `name` into the write-ahead logs (none without a
    /// data directory or with durability `none`). A new object (`restoring` false) logs
    /// that it starts here: records of an earlier object of the same name are not its own.
    /// A restored one counts the records the recovered checkpoint says it had logged.
    pub(crate) fn open_source_log(
        &self,
        name: &str,
        restoring: bool,
    ) -> Result<Option<Arc<SourceLog>>> {
        let Some(durable) = &self.inner.durable else {
            return Ok(None);
        };
        let Some(logs) = &durable.logs else {
            return Ok(None);
        };
        let pushes = if restoring {
            durable
                .recovered
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .and_then(|r| r.source(name).and_then(|v| v["pushes"].as_u64()))
                .unwrap_or(0)
        } else {
            logs.append(name, RecordKind::Created, None)?;
            0
        };
        Ok(Some(Arc::new(SourceLog::new(
            name,
            Arc::clone(logs),
            pushes,
        ))))
    }

    /// Restores source or table `name`'s watermark, and a table's rows, from the
    /// checkpoint being recovered.
    pub(crate) fn restore_source(
        &self,
        name: &str,
        ingress: &IngressHandle,
        table: Option<&ReferenceTable>,
    ) -> Result<()> {
        let Some(durable) = &self.inner.durable else {
            return Ok(());
        };
        let recovered = durable
            .recovered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(recovered) = recovered.as_ref() else {
            return Ok(());
        };
        if let Some(table) = table {
            if let Some(parts) = recovered.table(name)? {
                table.restore_state(parts).map_err(|e| DbError::Recovery {
                    message: format!("table {name}: {e}"),
                })?;
            }
        }
        if let Some(saved) = recovered
            .source(name)
            .and_then(|v| watermark_from_json(&v["watermark"]))
        {
            ingress.restore_watermark_state(&saved)?;
        }
        Ok(())
    }

    /// Pushes again every logged record after the recovered checkpoint's positions, in the
    /// order they were logged (across sources too), into its source or table. Records of
    /// objects dropped since, or of an earlier object of the same name, are skipped.
    pub(crate) fn replay_logs(&self) -> Result<()> {
        let Some(durable) = &self.inner.durable else {
            return Ok(());
        };
        let Some(logs) = &durable.logs else {
            return Ok(());
        };
        let after = durable
            .recovered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|r| r.log_positions())
            .unwrap_or_default();
        logs.raise_seq(after.seq);
        let records = logs.records_after(&after.lsns)?;
        let sources: HashMap<String, Arc<SourceLog>> = self
            .catalog()
            .objects()
            .iter()
            .filter_map(|o| match &o.state {
                ObjectState::PushSource { wal: Some(wal), .. } => {
                    Some((o.name.clone(), Arc::clone(wal)))
                }
                _ => None,
            })
            .collect();
        // Each object's records start at its latest `Created` record, if the logs still
        // hold it (otherwise a checkpoint covers it and every earlier record).
        let mut starts: HashMap<&str, u64> = HashMap::new();
        for record in records.iter().filter(|r| r.kind == RecordKind::Created) {
            starts.insert(&record.source, record.seq);
        }
        for record in &records {
            logs.raise_seq(record.seq);
            let (Some(log), Some(batch)) = (sources.get(&record.source), &record.batch) else {
                continue;
            };
            if starts
                .get(record.source.as_str())
                .is_some_and(|start| record.seq < *start)
            {
                continue;
            }
            let name = &record.source;
            let pushed = match record.kind {
                RecordKind::Push => self.push_unlogged(name, batch.clone()),
                RecordKind::Upsert => self.upsert_table(name, batch, false),
                RecordKind::Created => Ok(()),
            };
            match pushed {
                // The statement that logged it failed the same way and applied nothing.
                Err(DbError::BadBatch { .. }) | Ok(()) => log.replayed(),
                Err(e) => return Err(replay_error(name, record.seq, &e)),
            }
        }
        Ok(())
    }

    /// Pushes rows into push source `name` without logging them (they come from its log).
    fn push_unlogged(
        &self,
        name: &str,
        batch: datafusion::arrow::record_batch::RecordBatch,
    ) -> Result<()> {
        let ingress = match self.catalog().get(name).map(|o| &o.state) {
            Some(ObjectState::PushSource { ingress, .. }) => Arc::clone(ingress),
            _ => return Err(DbError::Internal(format!("{name} is not a push source"))),
        };
        ingress.push(batch)?;
        Ok(())
    }

    /// The state query `name` resumes from, when the database is being restored and the
    /// recovered checkpoint knows the query.
    pub(crate) fn restored_query(&self, name: &str) -> Result<Option<QueryRestore>> {
        let Some(durable) = &self.inner.durable else {
            return Ok(None);
        };
        let recovered = durable
            .recovered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match recovered.as_ref() {
            Some(recovered) => recovered.query(name),
            None => Ok(None),
        }
    }

    /// Starts restoring materialized view `name`'s rows on every worker (when restoring),
    /// on a thread of its own: it overlaps with restoring the view's query, which runs on
    /// the workers. The rows are in place once [`ViewRestore::join`] returns, which the
    /// caller does before any input flows.
    pub(crate) fn spawn_view_restore(
        &self,
        name: &str,
        table: &Arc<ResultTable>,
        restoring: bool,
    ) -> Result<Option<ViewRestore>> {
        let Some(durable) = self.inner.durable.as_ref().filter(|_| restoring) else {
            return Ok(None);
        };
        let recovered = durable
            .recovered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(recovered) = recovered else {
            return Ok(None);
        };
        let workers = self.inner.runtime.workers();
        let view = name.to_string();
        let table = Arc::clone(table);
        let handle = std::thread::Builder::new()
            .name(format!("laminar-restore-{name}"))
            .spawn(move || -> Result<()> {
                for worker in 0..workers {
                    if let Some(parts) = recovered.view(&view, worker)? {
                        table
                            .restore_worker(worker, parts)
                            .map_err(|e| DbError::Recovery {
                                message: format!("materialized view {view}: {e}"),
                            })?;
                    }
                }
                Ok(())
            })
            .map_err(|e| DbError::Internal(format!("cannot start a restore thread: {e}")))?;
        Ok(Some(ViewRestore {
            name: name.to_string(),
            handle,
        }))
    }

    /// How sink `name` resumes: transactional with a data directory, completing the
    /// transactions the recovered checkpoint lists when restoring.
    pub(crate) fn sink_resume(&self, name: &str, restoring: bool) -> Option<SinkResume> {
        let durable = self.inner.durable.as_ref()?;
        let first_epoch = durable.next_epoch.load(std::sync::atomic::Ordering::SeqCst);
        let committed = if restoring {
            durable
                .recovered
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .and_then(|r| r.sink(name))
        } else {
            None
        };
        Some(SinkResume {
            committed,
            first_epoch,
        })
    }

    /// The position reader `stream` (a connector source read by one query) resumes from,
    /// when restoring and the checkpoint recorded one, with its watermark state.
    pub(crate) fn restored_reader(
        &self,
        stream: &str,
        restoring: bool,
    ) -> Result<Option<(SourcePosition, Option<SourceWatermarkState>)>> {
        let Some(durable) = self.inner.durable.as_ref().filter(|_| restoring) else {
            return Ok(None);
        };
        let recovered = durable
            .recovered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(saved) = recovered.as_ref().and_then(|r| r.source(stream)) else {
            return Ok(None);
        };
        let position: SourcePosition =
            serde_json::from_value(saved["position"].clone()).map_err(|e| DbError::Recovery {
                message: format!("the checkpoint's position of reader {stream} is unreadable: {e}"),
            })?;
        Ok(Some((position, watermark_from_json(&saved["watermark"]))))
    }

    /// Recovery is over: objects restored from the data directory are marked so, the
    /// checkpoint consulted is released.
    pub(crate) fn mark_restored(&self) {
        if let Some(durable) = &self.inner.durable {
            durable
                .recovered
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
        }
        for object in self.catalog().objects_mut() {
            object.restored = true;
        }
    }

    /// Starts the thread taking a checkpoint every interval, if one is configured. It holds
    /// the database weakly, so dropping the last handle still shuts it down.
    pub(crate) fn start_checkpoints(&self) {
        let Some(interval) = self.inner.durable.as_ref().and_then(|d| d.interval) else {
            return;
        };
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let stop = Arc::clone(&self.inner.checkpoints_stop);
        let spawned = std::thread::Builder::new()
            .name("laminar-checkpoints".into())
            .spawn(move || checkpoint_loop(&weak, &stop, interval));
        match spawned {
            Ok(thread) => {
                *self
                    .inner
                    .checkpoint_thread
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(thread);
            }
            Err(e) => eprintln!("laminardb: cannot start automatic checkpoints: {e}"),
        }
    }
}

fn checkpoint_loop(
    db: &Weak<Inner>,
    stop: &(std::sync::Mutex<bool>, std::sync::Condvar),
    interval: Duration,
) {
    let (stopped, wake) = stop;
    loop {
        {
            let guard = stopped.lock().unwrap_or_else(PoisonError::into_inner);
            let (guard, _) = wake
                .wait_timeout_while(guard, interval, |stopped| !*stopped)
                .unwrap_or_else(PoisonError::into_inner);
            if *guard {
                return;
            }
        }
        let Some(inner) = db.upgrade() else {
            return;
        };
        if inner.runtime.is_shut_down() {
            return;
        }
        if let Err(e) = inner.checkpoint() {
            eprintln!("laminardb: automatic checkpoint failed: {e}");
        }
    }
}

/// A materialized view's rows being restored on their own thread.
pub(crate) struct ViewRestore {
    name: String,
    handle: std::thread::JoinHandle<Result<()>>,
}

impl ViewRestore {
    /// Waits until the rows are restored.
    pub(crate) fn join(self) -> Result<()> {
        self.handle.join().map_err(|_| DbError::Recovery {
            message: format!(
                "materialized view {}: restoring its rows panicked",
                self.name
            ),
        })?
    }
}
