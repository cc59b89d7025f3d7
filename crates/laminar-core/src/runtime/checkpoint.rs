//! The runtime's part of a checkpoint: aligned barriers, and the state a recovered query
//! starts from.
//!
//! The coordinator injects one [`Barrier`] into every ring of every source while the
//! sources stand still (so the barrier falls at the positions it records), then lets them
//! go on. Each worker passes the barrier along with the rows: an operator snapshots its
//! state when the barrier passes it; an operator with several inputs (a join, a union, an
//! exchange merging every worker's share) aligns them first, holding back what an input
//! sends after its barrier until every input has delivered it. A worker takes no more
//! input from a source ring that delivered the barrier until all its source rings have
//! (so what it holds back stays small), and a stream's sinks receive the barrier once
//! every worker's share of the stream reached it, with any rows a worker sent after its
//! barrier behind it. A worker is done with the barrier once all its source rings
//! delivered it and every query on it either passed it or had already ended; the
//! checkpoint's cut is complete once every worker is.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

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

/// One worker's share of a materialized view's rows, as a checkpoint holds it.
#[derive(Debug, Clone)]
pub struct ViewSnapshot {
    /// The stream (the view) the rows belong to.
    pub view: String,
    /// The worker that produced them.
    pub worker: usize,
    /// The rows, whole or what changed since the previous checkpoint.
    pub state: OperatorState,
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

/// Decides, per `(view, worker)`, whether a view's rows are snapshot whole.
pub type FullViewRule = dyn Fn(&str, usize) -> bool + Send + Sync;

/// What the workers answered to one barrier.
#[derive(Debug, Default)]
pub struct BarrierSnapshots {
    /// Every query's state on every worker, as the barrier passed it.
    pub queries: Vec<QuerySnapshot>,
    /// Every materialized view's rows, per worker, as the barrier reached them.
    pub views: Vec<ViewSnapshot>,
    /// The longest time one worker spent snapshotting (it processes nothing meanwhile).
    pub worker_stall: Duration,
}

#[derive(Default)]
struct Answers {
    snapshots: BarrierSnapshots,
    /// The first error met (the checkpoint fails as a whole).
    error: Option<String>,
    done: Vec<bool>,
}

/// A checkpoint's barrier: injected into every source ring, carried along with the rows,
/// and collecting what each operator and view snapshots as it passes.
pub struct Barrier {
    epoch: u64,
    full: Box<FullSnapshotRule>,
    view_full: Box<FullViewRule>,
    answers: Mutex<Answers>,
    changed: Condvar,
    /// Set once the coordinator stopped waiting: late answers are dropped.
    abandoned: AtomicBool,
    /// Per worker: nanoseconds spent snapshotting.
    stall_ns: Vec<AtomicU64>,
}

impl std::fmt::Debug for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Barrier")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Barrier {
    /// A barrier for checkpoint `epoch` over `workers` workers; `full` and `view_full` say
    /// which states must be snapshot whole.
    pub fn new(
        epoch: u64,
        workers: usize,
        full: Box<FullSnapshotRule>,
        view_full: Box<FullViewRule>,
    ) -> Self {
        Self {
            epoch,
            full,
            view_full,
            answers: Mutex::new(Answers {
                done: vec![false; workers],
                ..Answers::default()
            }),
            changed: Condvar::new(),
            abandoned: AtomicBool::new(false),
            stall_ns: (0..workers).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The checkpoint's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub(crate) fn is_full(&self, query: &str, worker: usize, node: usize) -> bool {
        (self.full)(query, worker, node)
    }

    pub(crate) fn is_view_full(&self, view: &str, worker: usize) -> bool {
        (self.view_full)(view, worker)
    }

    fn answers(&self) -> std::sync::MutexGuard<'_, Answers> {
        self.answers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn answer_query(&self, snapshot: QuerySnapshot) {
        if !self.abandoned.load(Ordering::Acquire) {
            self.answers().snapshots.queries.push(snapshot);
        }
    }

    pub(crate) fn answer_view(&self, snapshot: ViewSnapshot) {
        if !self.abandoned.load(Ordering::Acquire) {
            self.answers().snapshots.views.push(snapshot);
        }
    }

    /// Counts time worker `worker` spent snapshotting for this barrier.
    pub(crate) fn add_stall(&self, worker: usize, spent: Duration) {
        if let Some(stall) = self.stall_ns.get(worker) {
            let nanos = u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX);
            stall.fetch_add(nanos, Ordering::Relaxed);
        }
    }

    /// Records a failed snapshot: the checkpoint fails, the query goes on.
    pub(crate) fn fail(&self, message: String) {
        self.answers().error.get_or_insert(message);
    }

    /// Worker `worker` is done with the barrier.
    pub(crate) fn worker_done(&self, worker: usize) {
        let mut answers = self.answers();
        if let Some(done) = answers.done.get_mut(worker) {
            *done = true;
        }
        drop(answers);
        self.changed.notify_all();
    }

    /// Waits until every worker is done with the barrier, and takes what they answered.
    /// Fails when a snapshot failed, the runtime stops (`stopped`), or `timeout` passes.
    pub fn wait(&self, timeout: Duration, stopped: &AtomicBool) -> Result<BarrierSnapshots> {
        let deadline = Instant::now() + timeout;
        let mut answers = self.answers();
        loop {
            if let Some(message) = answers.error.take() {
                self.abandoned.store(true, Ordering::Release);
                return Err(CoreError::Internal(format!(
                    "a checkpoint snapshot failed: {message}"
                )));
            }
            if answers.done.iter().all(|done| *done) {
                let mut snapshots = std::mem::take(&mut answers.snapshots);
                snapshots.worker_stall = self
                    .stall_ns
                    .iter()
                    .map(|ns| Duration::from_nanos(ns.load(Ordering::Relaxed)))
                    .max()
                    .unwrap_or_default();
                return Ok(snapshots);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || stopped.load(Ordering::Acquire) {
                self.abandoned.store(true, Ordering::Release);
                let waiting: Vec<String> = answers
                    .done
                    .iter()
                    .enumerate()
                    .filter(|(_, done)| !**done)
                    .map(|(worker, _)| worker.to_string())
                    .collect();
                return Err(CoreError::Timeout {
                    what: format!(
                        "checkpoint barrier {} to pass workers {}",
                        self.epoch,
                        waiting.join(", ")
                    ),
                    waited_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                });
            }
            // Woken by every worker that finishes; re-checks the stop flag now and then.
            answers = self
                .changed
                .wait_timeout(answers, left.min(Duration::from_millis(50)))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}
