//! The runtime's part of a checkpoint: a consistent cut of every running query, and the
//! state a recovered query starts from.
//!
//! The cut is taken with every input held still by the caller (no source pushes): the
//! runtime waits until the workers have processed everything already in their rings,
//! including what they sent each other, then stops them between messages and has each
//! snapshot its own operators on its own thread. Nothing is in flight at that moment, so
//! the operators' state, the sources' positions and the sinks' input are one cut: the
//! single-process form of aligned barriers, where every channel is drained to the barrier.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::Runtime;
use crate::error::{CoreError, Result};
use crate::state::{OperatorState, RestoredPart};

/// One node of a query on one worker, as a checkpoint holds it.
#[derive(Debug, Clone)]
pub struct NodeSnapshot {
    /// The node's index in the query graph.
    pub node: usize,
    /// The operator's name, checked on restore (a changed plan cannot take old state).
    pub operator: &'static str,
    /// The node's input watermark (which never moves back).
    pub watermark_ms: i64,
    /// The watermark the node last forwarded.
    pub output_watermark_ms: i64,
    /// The operator's keyed state, if it holds any.
    pub state: Option<OperatorState>,
}

/// One query on one worker, as a checkpoint holds it.
#[derive(Debug, Clone)]
pub struct QuerySnapshot {
    /// The query's name (the catalog object it feeds).
    pub query: String,
    /// The worker it ran on.
    pub worker: usize,
    /// Its nodes, by index.
    pub nodes: Vec<NodeSnapshot>,
}

/// Restored state of one node on one worker.
#[derive(Debug, Clone, Default)]
pub struct NodeRestore {
    /// The operator name the checkpoint recorded; must equal the planned one.
    pub operator: String,
    /// The node's input watermark.
    pub watermark_ms: i64,
    /// The watermark the node last forwarded.
    pub output_watermark_ms: i64,
    /// The operator's state (latest entry per key).
    pub parts: Vec<RestoredPart>,
}

/// Where a recovered query starts: per `(worker, node)`, the state restored there.
#[derive(Debug, Clone, Default)]
pub struct QueryRestore {
    /// Restored nodes by `(worker, node)`.
    pub nodes: HashMap<(usize, usize), NodeRestore>,
}

/// Decides, per `(query, worker, node)`, whether the snapshot must be full (a new chain, or
/// one long enough to compact) rather than a delta.
pub type FullSnapshotRule = dyn Fn(&str, usize, usize) -> bool + Send + Sync;

/// A snapshot asked of every paused worker, in two phases so that no operator forgets its
/// changes for a cut that is then abandoned: each worker first reports whether its input is
/// empty; only if every worker's is does the coordinator let them snapshot (each on its own
/// thread, once); otherwise the cut is abandoned untouched and retried.
pub(crate) struct SnapshotRequest {
    pub(crate) generation: u64,
    pub(crate) full: Box<FullSnapshotRule>,
    pub(crate) results: Mutex<Vec<QuerySnapshot>>,
    /// The first error a worker met, as text (the request fails as a whole).
    pub(crate) error: Mutex<Option<String>>,
    /// Workers that reported on their input, and those whose input still held messages.
    pub(crate) checked: AtomicUsize,
    pub(crate) unsettled: AtomicUsize,
    /// The coordinator's decision once all checked: snapshot (`GO`) or not (`ABANDON`).
    pub(crate) decision: AtomicUsize,
    pub(crate) served: AtomicUsize,
}

/// `SnapshotRequest::decision` before the coordinator decided.
pub(crate) const PENDING: usize = 0;
/// Every worker's input was empty: snapshot.
pub(crate) const GO: usize = 1;
/// Some input was not: the cut is abandoned, nothing is snapshot.
pub(crate) const ABANDON: usize = 2;

impl std::fmt::Debug for SnapshotRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotRequest")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl SnapshotRequest {
    pub(crate) fn new(generation: u64, full: Box<FullSnapshotRule>) -> Self {
        Self {
            generation,
            full,
            results: Mutex::new(Vec::new()),
            error: Mutex::new(None),
            checked: AtomicUsize::new(0),
            unsettled: AtomicUsize::new(0),
            decision: AtomicUsize::new(PENDING),
            served: AtomicUsize::new(0),
        }
    }

    /// Records whether one worker's input was empty when it stopped.
    pub(crate) fn check_in(&self, settled: bool) {
        if !settled {
            self.unsettled.fetch_add(1, Ordering::SeqCst);
        }
        self.checked.fetch_add(1, Ordering::SeqCst);
    }

    /// Records one worker's snapshot.
    pub(crate) fn answer(&self, result: std::result::Result<Vec<QuerySnapshot>, String>) {
        match result {
            Ok(snapshots) => self
                .results
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(snapshots),
            Err(message) => {
                let mut error = self.error.lock().unwrap_or_else(PoisonError::into_inner);
                error.get_or_insert(message);
            }
        }
        self.served.fetch_add(1, Ordering::SeqCst);
    }
}

/// How many times a cut is retried when a worker still had input when it stopped (a timer
/// sent rows between the drain and the pause).
const CUT_ATTEMPTS_MAX: usize = 8;

/// A consistent cut of every query: the workers stand still until it is dropped, so the
/// caller can read what else belongs to the cut (materialized views' rows, reference
/// tables, source positions) and mark the sinks' input before anything moves on.
pub struct CheckpointCut<'a> {
    runtime: &'a Runtime,
    /// Every query's state on every worker, at the cut.
    pub queries: Vec<QuerySnapshot>,
}

impl std::fmt::Debug for CheckpointCut<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointCut")
            .field("queries", &self.queries.len())
            .finish_non_exhaustive()
    }
}

impl Drop for CheckpointCut<'_> {
    fn drop(&mut self) {
        self.runtime.end_pause();
    }
}

impl Runtime {
    /// Takes a consistent cut of every running query. The caller must hold every input
    /// still (no pushes, no source reads) for the duration: the runtime then drains what
    /// the workers have been sent, stops them between messages and has each snapshot its
    /// operators (`full` says which must give their whole state). The workers stay stopped
    /// until the returned cut is dropped.
    pub fn checkpoint_cut(
        &self,
        full: Box<FullSnapshotRule>,
        timeout: Duration,
    ) -> Result<CheckpointCut<'_>> {
        let full: std::sync::Arc<FullSnapshotRule> = std::sync::Arc::from(full);
        for _ in 0..CUT_ATTEMPTS_MAX {
            self.sync(timeout)?;
            let generation = self.next_id.fetch_add(1, Ordering::Relaxed);
            let rule = std::sync::Arc::clone(&full);
            let request = std::sync::Arc::new(SnapshotRequest::new(
                generation,
                Box::new(move |query, worker, node| rule(query, worker, node)),
            ));
            *self
                .pause
                .snapshot
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(std::sync::Arc::clone(&request));
            if let Err(e) = self.pause_workers() {
                self.end_pause();
                return Err(e);
            }
            let deadline = Instant::now() + timeout;
            let workers = self.workers.len();
            self.wait_for(&request.checked, workers, deadline, timeout)?;
            if request.unsettled.load(Ordering::SeqCst) > 0 {
                // Something moved between the drain and the pause: nothing was snapshot;
                // drain again.
                request.decision.store(ABANDON, Ordering::SeqCst);
                self.end_pause();
                continue;
            }
            request.decision.store(GO, Ordering::SeqCst);
            self.wait_for(&request.served, workers, deadline, timeout)?;
            if let Some(message) = request
                .error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
            {
                self.end_pause();
                return Err(CoreError::Internal(format!(
                    "a checkpoint snapshot failed: {message}"
                )));
            }
            let queries = std::mem::take(
                &mut *request
                    .results
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            );
            return Ok(CheckpointCut {
                runtime: self,
                queries,
            });
        }
        Err(CoreError::Timeout {
            what: format!(
                "a quiet moment for a checkpoint ({CUT_ATTEMPTS_MAX} attempts; timers keep sending rows)"
            ),
            waited_ms: timeout.as_millis() as u64,
        })
    }

    /// Waits until `counter` reaches `target` (workers answering), or fails the cut.
    fn wait_for(
        &self,
        counter: &AtomicUsize,
        target: usize,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<()> {
        while counter.load(Ordering::SeqCst) < target {
            if Instant::now() >= deadline || self.shutdown.load(Ordering::Acquire) {
                self.end_pause();
                return Err(CoreError::Timeout {
                    what: "workers to snapshot their state for a checkpoint".into(),
                    waited_ms: timeout.as_millis() as u64,
                });
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        Ok(())
    }

    /// Lets paused workers go on, forgetting any snapshot request.
    fn end_pause(&self) {
        *self
            .pause
            .snapshot
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        self.pause.requested.store(false, Ordering::SeqCst);
    }
}
