//! The checkpoint coordinator: takes one checkpoint of the whole database.
//!
//! 1. Close the input gate: no push, `INSERT` or connector batch is halfway; record each
//!    log's position, each reader's position, each source's watermark and each table's
//!    rows, and put the checkpoint's barrier into every source ring (aligned barriers,
//!    `laminar_core::runtime::checkpoint`). Open the gate: input flows on at once.
//! 2. The barrier travels with the rows. Each operator snapshots its state as the barrier
//!    passes it (operators with several inputs align them first), each view snapshots its
//!    rows per worker, each sink and output log receives the barrier behind exactly the
//!    rows before it. Wait until every worker is done with it (no object is created or
//!    dropped meanwhile: the catalog lock is held).
//! 3. Wait for each sink's and output log's pre-commit, write the state files and then the
//!    manifest (atomically): the checkpoint exists once the manifest does.
//! 4. Commit the sinks' and output logs' epoch (waiting for the output logs, so that a
//!    subscription can resume after the epoch once the checkpoint returns), drop the log
//!    records the checkpoint covers, and garbage-collect older checkpoints.
//!
//! A failure before the manifest leaves the previous checkpoint as the newest; the next
//! checkpoint is then full (operators already forgot what changed), and sink epochs
//! pre-committed meanwhile are committed by the next checkpoint that succeeds.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use laminar_core::runtime::Barrier;
use laminar_core::state::OperatorState;
use serde_json::{json, Value};

use super::recovery::watermark_json;
use super::{query_state_id, table_state_id, view_state_id, Durable, CHECKPOINT_CUT_TIMEOUT};
use crate::catalog::{Object, ObjectState};
use crate::db::{Inner, LaminarDB};
use crate::error::{DbError, Result};

/// How long a checkpoint waits for a sink to pre-commit.
const PRECOMMIT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a checkpoint waits for an output log to commit its epoch.
const OUTPUT_COMMIT_TIMEOUT: Duration = Duration::from_secs(60);

/// What a checkpoint wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// The checkpoint's epoch (increasing by one per checkpoint).
    pub epoch: u64,
    /// Bytes of state files written by this checkpoint.
    pub state_bytes: u64,
    /// State ids written as full snapshots.
    pub full_states: usize,
    /// State ids written as deltas.
    pub delta_states: usize,
    /// How long inputs stood still: while the barrier was put in (the workers never stop;
    /// each spends its operators' snapshot time as the barrier passes).
    pub pause: Duration,
    /// How long the barrier took to pass every worker (input flowing meanwhile).
    pub barrier: Duration,
    /// The longest time one worker spent snapshotting, processing nothing meanwhile.
    pub worker_stall: Duration,
    /// Total time of the checkpoint.
    pub duration: Duration,
}

impl From<CheckpointInfo> for crate::result::ExecuteResult {
    fn from(info: CheckpointInfo) -> Self {
        Self::Skipped {
            reason: format!(
                "CHECKPOINT {}: {} bytes of state ({} full, {} delta) in {} ms",
                info.epoch,
                info.state_bytes,
                info.full_states,
                info.delta_states,
                info.duration.as_millis()
            ),
        }
    }
}

/// Everything taken at the cut, written after it.
struct Taken {
    states: Vec<(String, OperatorState)>,
    engine: Value,
    sources: BTreeMap<String, Value>,
    /// Objects whose sink or output log was sent a barrier, by name.
    sinks: Vec<String>,
    /// Log positions to truncate through once the checkpoint is durable.
    log_positions: Option<super::LogPositions>,
    /// How long inputs stood still, the barrier took, and the longest worker stall.
    pause: Duration,
    barrier: Duration,
    worker_stall: Duration,
}

impl LaminarDB {
    /// Takes a checkpoint now: every query's state, every source's position and every
    /// sink's pending output become durable together, and log records before it are
    /// dropped. Fails for a database without a data directory.
    pub fn checkpoint(&self) -> Result<CheckpointInfo> {
        self.inner.checkpoint()
    }
}

impl Inner {
    pub(crate) fn checkpoint(&self) -> Result<CheckpointInfo> {
        let durable = self.durable.as_ref().ok_or_else(|| DbError::NotAllowed {
            statement: "CHECKPOINT".into(),
            message: "the database has no data directory (open it with LaminarDB::open)".into(),
        })?;
        let started = Instant::now();
        // One checkpoint at a time: the store's lock is held throughout.
        let mut store = durable.store.lock().unwrap_or_else(PoisonError::into_inner);
        let epoch = durable.next_epoch.load(Ordering::SeqCst);
        let force_full = durable.force_full.swap(false, Ordering::SeqCst);
        let healthy: HashSet<String> = if force_full {
            HashSet::new()
        } else {
            store
                .last_manifest()
                .map(|m| {
                    m.states
                        .keys()
                        .filter(|id| !store.needs_full(id))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default()
        };
        let taken = match self.take_cut(durable, &healthy) {
            Ok(taken) => taken,
            Err(e) => {
                durable.force_full.store(true, Ordering::SeqCst);
                return Err(checkpoint_error(epoch, &e));
            }
        };
        let (pause, barrier, worker_stall) = (taken.pause, taken.barrier, taken.worker_stall);
        let written = self.write_checkpoint(durable, &mut store, epoch, taken);
        match written {
            Ok((state_bytes, full_states, delta_states)) => Ok(CheckpointInfo {
                epoch,
                state_bytes,
                full_states,
                delta_states,
                pause,
                barrier,
                worker_stall,
                duration: started.elapsed(),
            }),
            Err(e) => {
                durable.force_full.store(true, Ordering::SeqCst);
                Err(checkpoint_error(epoch, &e))
            }
        }
    }

    /// Steps 1-4: inject the barrier with the inputs held still, let them go, and wait
    /// for the barrier to pass every operator, view and sink.
    fn take_cut(&self, durable: &Durable, healthy: &HashSet<String>) -> Result<Taken> {
        // Held until the barrier is through: no object is created or dropped meanwhile.
        let catalog = self.catalog.lock().unwrap_or_else(PoisonError::into_inner);
        let gate = durable.gate.close();
        let paused_at = Instant::now();
        let epoch = durable.next_epoch.load(Ordering::SeqCst);
        let (query_healthy, view_healthy) = (healthy.clone(), healthy.clone());
        let barrier = Arc::new(Barrier::new(
            epoch,
            self.runtime.workers(),
            Box::new(move |query: &str, worker: usize, node: usize| {
                !query_healthy.contains(&query_state_id(query, worker, node))
            }),
            Box::new(move |view: &str, worker: usize| {
                !view_healthy.contains(&view_state_id(view, worker))
            }),
        ));
        let mut taken = Taken {
            states: Vec::new(),
            engine: Value::Null,
            sources: BTreeMap::new(),
            sinks: Vec::new(),
            log_positions: None,
            pause: Duration::ZERO,
            barrier: Duration::ZERO,
            worker_stall: Duration::ZERO,
        };
        record_inputs(&catalog, healthy, &mut taken)?;
        taken.log_positions = durable.logs.as_ref().map(|logs| logs.positions());
        self.runtime.inject_barrier(&barrier)?;
        // The epoch is taken: a sink created from now on writes its first rows into the
        // next one.
        durable.next_epoch.store(epoch + 1, Ordering::SeqCst);
        drop(gate);
        taken.pause = paused_at.elapsed();
        let snapshots = barrier.wait(CHECKPOINT_CUT_TIMEOUT, self.runtime.stopped())?;
        taken.barrier = paused_at.elapsed();
        taken.worker_stall = snapshots.worker_stall;
        taken.engine = query_states(&snapshots.queries, &mut taken.states);
        if let Some(positions) = &taken.log_positions {
            taken.engine["wal"] = super::log_positions_json(positions);
        }
        for view in snapshots.views {
            taken
                .states
                .push((view_state_id(&view.view, view.worker), view.state));
        }
        // A sink whose stream ended before the barrier reached it hears the barrier
        // directly; one whose thread stopped after an error it reported no longer takes
        // part (its error fails its own output, not the checkpoint).
        taken.sinks.retain(|name| {
            let Some(object) = catalog.get(name) else {
                return false;
            };
            let Some(task) = object.epoch_task() else {
                return false;
            };
            let forwarded = object.outlet().map_or(0, |o| o.barrier_forwarded());
            forwarded >= epoch || task.barrier(epoch).is_ok()
        });
        Ok(taken)
    }

    /// Steps 3-4: pre-commits, state files, manifest, commits, log truncation.
    fn write_checkpoint(
        &self,
        durable: &Durable,
        store: &mut laminar_storage::checkpoint::CheckpointStore,
        epoch: u64,
        taken: Taken,
    ) -> Result<(u64, usize, usize)> {
        let mut sinks = BTreeMap::new();
        {
            let catalog = self.catalog.lock().unwrap_or_else(PoisonError::into_inner);
            for name in &taken.sinks {
                let Some(task) = catalog.get(name).and_then(Object::epoch_task) else {
                    continue;
                };
                let handle = task
                    .precommitted(epoch, PRECOMMIT_TIMEOUT)
                    .map_err(DbError::Internal)?;
                sinks.insert(name.clone(), handle);
            }
        }
        let mut builder = store.begin(epoch)?;
        builder.set_workers(self.runtime.workers());
        let (mut bytes, mut full, mut delta) = (0, 0, 0);
        for (id, state) in &taken.states {
            match state.kind {
                laminar_core::state::StateKind::Full => full += 1,
                laminar_core::state::StateKind::Delta => delta += 1,
            }
            builder.add_state(id, state)?;
        }
        for (name, value) in &taken.sources {
            builder.set_source(name, value.clone());
        }
        for (name, handle) in &sinks {
            // The handle names every epoch of the sink still pending, this one last. An
            // output log's entry is under its object's name: no sink has that name.
            builder.set_sink(name, json!({ "epoch": epoch, "handle": handle }));
        }
        builder.set_engine(taken.engine);
        // The manifest must never cover log records a power loss could still take: under
        // `group` durability the last ones may not be fsynced yet, and a log that lost them
        // would number new records below the manifest's position, which replay skips.
        if let Some(logs) = &durable.logs {
            logs.sync()?;
        }
        // On failure the epochs stay pre-committed: the next successful checkpoint's
        // handle names them, and its commit commits them.
        let manifest = builder.commit()?;
        // Each state id's newest file is the one this checkpoint wrote.
        for (id, _) in &taken.states {
            bytes += manifest
                .states
                .get(id)
                .and_then(|chain| chain.last())
                .map_or(0, |file| file.bytes);
        }
        let catalog = self.catalog.lock().unwrap_or_else(PoisonError::into_inner);
        let mut output_logs = Vec::new();
        for name in sinks.keys() {
            let Some(object) = catalog.get(name) else {
                continue;
            };
            if let Some(task) = object.epoch_task() {
                // A commit that fails is completed by recovery from this manifest.
                let _ = task.commit(epoch);
            }
            output_logs.extend(
                object
                    .output_log
                    .as_ref()
                    .map(|log| Arc::clone(log.shared())),
            );
        }
        drop(catalog);
        // Once a checkpoint returns, subscriptions can resume after its epoch. A log that
        // fails to commit fails its subscriptions; recovery completes the commit.
        for log in output_logs {
            log.wait_committed(epoch, OUTPUT_COMMIT_TIMEOUT);
        }
        // Records are dropped only once no kept checkpoint needs them: recovery may fall
        // back to the previous checkpoint (if the newest turns out corrupt), which replays
        // from its own, earlier, position.
        if let (Some(logs), Some(positions)) = (&durable.logs, taken.log_positions) {
            let previous = durable.swap_covered(positions.lsns);
            logs.truncate_through(&previous)?;
        }
        Ok((bytes, full, delta))
    }
}

/// Records, under the closed input gate, where every input stands: each push source's log
/// position and watermark, each table's rows, each connector reader's position; and which
/// objects take part in the epoch (sinks and output logs).
fn record_inputs(
    catalog: &crate::catalog::Catalog,
    healthy: &HashSet<String>,
    taken: &mut Taken,
) -> Result<()> {
    for object in catalog.objects() {
        match &object.state {
            ObjectState::PushSource {
                ingress,
                table,
                wal,
                ..
            } => {
                let pushes = wal.as_ref().map_or(0, |w| w.pushes());
                taken.sources.insert(
                    object.name.clone(),
                    json!({ "pushes": pushes, "watermark": watermark_json(ingress.watermark_state().as_ref()) }),
                );
                if let Some(table) = table {
                    let id = table_state_id(&object.name);
                    let state = table
                        .snapshot_state(!healthy.contains(&id))
                        .map_err(|e| DbError::Internal(format!("table {}: {e}", object.name)))?;
                    taken.states.push((id, state));
                }
            }
            ObjectState::Derived { instances, .. } => {
                for instance in instances {
                    taken.sources.insert(
                        instance.outlet.name().to_string(),
                        instance.checkpoint_position(),
                    );
                }
            }
            ObjectState::ConnectorSource { .. }
            | ObjectState::LateData { .. }
            | ObjectState::LookupTable { .. } => {}
        }
        if object.epoch_task().is_some() {
            taken.sinks.push(object.name.clone());
        }
    }
    Ok(())
}

/// The manifest's record of every query node (worker, node, operator, watermarks), with
/// the operators' snapshots added to `states` under their ids.
fn query_states(
    queries: &[laminar_core::runtime::QuerySnapshot],
    states: &mut Vec<(String, OperatorState)>,
) -> Value {
    let mut nodes_by_query: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for query in queries {
        let nodes = nodes_by_query.entry(query.query.clone()).or_default();
        for node in &query.nodes {
            nodes.push(json!([
                query.worker,
                node.node,
                node.operator,
                node.watermark_ms,
                node.output_watermark_ms
            ]));
            if let Some(state) = &node.state {
                states.push((
                    query_state_id(&query.query, query.worker, node.node),
                    state.clone(),
                ));
            }
        }
    }
    json!({ "queries": nodes_by_query })
}

fn checkpoint_error(epoch: u64, error: &DbError) -> DbError {
    DbError::Checkpoint {
        epoch,
        message: error.to_string(),
    }
}
