//! The thread-per-core runtime: `workers` threads, each running every query's operators over
//! its own share of the input, fed by bounded SPSC rings. With one worker it is the single
//! reactor; the same code runs either way.

mod checkpoint;
mod exchange;
mod idle_clock;
mod ingress;
mod late;
mod outlet;
mod progress;
mod query_instance;
mod room;
mod sink_feed;
mod worker;

pub use checkpoint::{
    Barrier, BarrierSnapshots, FullSnapshotRule, FullViewRule, NodeRestore, NodeSnapshot,
    QueryRestore, QuerySnapshot, ViewSnapshot,
};
pub use exchange::EXCHANGE_RING_CAPACITY_MESSAGES;
use ingress::TABLE_CHANGES_RING;
pub use ingress::{IngressHandle, SourceFeed, SourceWatermarkState, INGRESS_RING_CAPACITY_BATCHES};
pub use late::LatePolicy;
pub use outlet::{
    BatchCallback, EgressMessage, StreamId, StreamOutlet, SUBSCRIBER_CHANNEL_CAPACITY_BATCHES,
};
pub use progress::Progress;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use crate::change_batch::ChangeBatch;

use crate::error::{CoreError, Result};
use crate::graph::QueryGraph;
use crate::reference_table::{HeldTable, ReferenceTable};
use crate::result_table::ResultTable;
use crate::watermark::WatermarkGenerator;
use exchange::{ExchangeInbound, ExchangeLink};
use idle_clock::IdleClock;
use ingress::{IngressCounters, RingProducer};
use query_instance::QueryInstance;
use worker::{Command, PauseGate, Worker, WorkerShared};

/// How the runtime runs.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Number of worker threads (at least 1).
    pub workers: usize,
    /// Pin worker `i` to core `i % cores` (turn off in containers that restrict cores).
    pub pin_workers: bool,
    /// How long an idle worker keeps polling before it parks; `None` (the default) for a
    /// short fixed spin. Longer spares the wake-up (microseconds) when input arrives more
    /// often than this, at the cost of a busy core for that long after the last input; on
    /// a machine whose cores are all taken it can slow other threads (see BENCHMARKS.md).
    pub idle_spin: Option<Duration>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            workers: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            pin_workers: true,
            idle_spin: None,
        }
    }
}

/// How long creating a query over a materialized view waits for the workers to pause.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long starting a query from restored state waits for the workers to restore it
/// (proportional to the state: a million groups take about a second).
const RESTORE_TIMEOUT: Duration = Duration::from_secs(600);

/// Rounds of exchange draining `sync` waits for (the depth of keyed queries over keyed
/// queries it covers).
const EXCHANGE_SYNC_ROUNDS_MAX: usize = 16;

/// Per-worker counters, for metrics and `SHOW WORKERS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerStats {
    /// Worker index.
    pub worker: usize,
    /// The CPU core the worker is pinned to, if pinning is on and succeeded.
    pub core: Option<usize>,
    /// Source rows this worker has processed.
    pub rows_processed: u64,
    /// Messages waiting in its input queues (sources and other workers) at its last look.
    pub queued_messages: u64,
    /// Time spent processing since the runtime started (not spinning or parked).
    pub busy: Duration,
    /// Steps (one message through every query reading it) that ran over the step budget.
    pub overruns: u64,
    /// Time since the runtime started.
    pub uptime: Duration,
}

struct QueryRecord {
    id: u64,
}

/// The running engine: workers, streams and queries.
pub struct Runtime {
    config: RuntimeConfig,
    workers: Vec<Arc<WorkerShared>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    shutdown: Arc<AtomicBool>,
    next_id: AtomicU64,
    outlets: Mutex<HashMap<StreamId, Arc<StreamOutlet>>>,
    counters: Mutex<Vec<Weak<IngressCounters>>>,
    /// Every source's input side, for checkpoint barriers.
    ingresses: Mutex<Vec<Weak<IngressHandle>>>,
    exchange_counters: Vec<Arc<IngressCounters>>,
    pause: Arc<PauseGate>,
    queries: Mutex<HashMap<String, QueryRecord>>,
    progress: Arc<Progress>,
    started: Instant,
    idle_clock: IdleClock,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Starts the worker threads.
    pub fn start(config: &RuntimeConfig) -> Result<Self> {
        let workers_count = config.workers.max(1);
        let shutdown = Arc::new(AtomicBool::new(false));
        let cores = if config.pin_workers {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let pause = Arc::new(PauseGate::default());
        let workers: Vec<Arc<WorkerShared>> = (0..workers_count)
            .map(|index| Arc::new(WorkerShared::new(index)))
            .collect();
        // One ring per ordered pair of distinct workers.
        let mut outgoing: Vec<Vec<Option<ExchangeLink>>> = (0..workers_count)
            .map(|_| (0..workers_count).map(|_| None).collect())
            .collect();
        let mut incoming: Vec<Vec<ExchangeInbound>> =
            (0..workers_count).map(|_| Vec::new()).collect();
        let mut exchange_counters = Vec::new();
        for (from, links) in outgoing.iter_mut().enumerate() {
            for (to, inbound) in incoming
                .iter_mut()
                .enumerate()
                .filter(|(to, _)| *to != from)
            {
                let (link, receiving) = exchange::ring();
                exchange_counters.push(Arc::clone(&link.counters));
                links[to] = Some(link);
                inbound.push(receiving);
            }
        }
        let mut threads = Vec::with_capacity(workers_count);
        for ((index, links), inbound) in outgoing.into_iter().enumerate().zip(incoming) {
            let core = (!cores.is_empty()).then(|| cores[index % cores.len()]);
            let worker_shared = Arc::clone(&workers[index]);
            let worker_shutdown = Arc::clone(&shutdown);
            let worker_pause = Arc::clone(&pause);
            let idle_spin = config.idle_spin;
            let peers = workers.clone();
            let thread = std::thread::Builder::new()
                .name(format!("laminar-worker-{index}"))
                .spawn(move || {
                    if let Some(core) = core {
                        // Pinning is best effort: a refused affinity leaves the thread floating.
                        if core_affinity::set_for_current(core) {
                            let id = i64::try_from(core.id).unwrap_or(-1);
                            worker_shared.core.store(id, Ordering::Relaxed);
                        }
                    }
                    // State is allocated after pinning, on the worker's own thread.
                    Worker::new(
                        worker_shared,
                        worker_shutdown,
                        worker_pause,
                        peers,
                        links,
                        inbound,
                    )
                    .run(idle_spin);
                })
                .map_err(|e| CoreError::Internal(format!("cannot spawn worker thread: {e}")))?;
            workers[index].set_thread(thread.thread().clone());
            threads.push(thread);
        }
        Ok(Self {
            config: RuntimeConfig {
                workers: workers_count,
                ..config.clone()
            },
            workers,
            threads: Mutex::new(threads),
            shutdown,
            next_id: AtomicU64::new(1),
            outlets: Mutex::new(HashMap::new()),
            counters: Mutex::new(Vec::new()),
            ingresses: Mutex::new(Vec::new()),
            exchange_counters,
            pause,
            queries: Mutex::new(HashMap::new()),
            progress: Arc::new(Progress::default()),
            started: Instant::now(),
            idle_clock: IdleClock::default(),
        })
    }

    /// Starts a checkpoint: puts `barrier` into every ring of every source, behind what was
    /// pushed so far. The caller holds every source still meanwhile (so the barrier falls
    /// at the positions it records) and creates no stream or query until the barrier is
    /// through; then waits for it with [`Barrier::wait`].
    pub fn inject_barrier(&self, barrier: &Arc<Barrier>) -> Result<()> {
        let ingresses: Vec<Arc<IngressHandle>> = self
            .ingresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for ingress in ingresses {
            ingress.inject_barrier(barrier)?;
        }
        for worker in &self.workers {
            worker.send(Command::Barrier(Arc::clone(barrier)));
        }
        Ok(())
    }

    /// Set once the runtime shuts down (a barrier then never completes).
    pub fn stopped(&self) -> &AtomicBool {
        &self.shutdown
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Per-worker counters.
    pub fn worker_stats(&self) -> Vec<WorkerStats> {
        self.workers
            .iter()
            .map(|w| WorkerStats {
                worker: w.index,
                core: usize::try_from(w.core.load(Ordering::Relaxed)).ok(),
                rows_processed: w.rows_processed.load(Ordering::Relaxed),
                queued_messages: w.queued_messages.load(Ordering::Relaxed),
                busy: Duration::from_nanos(w.busy_ns.load(Ordering::Relaxed)),
                overruns: w.overruns.load(Ordering::Relaxed),
                uptime: self.started.elapsed(),
            })
            .collect()
    }

    /// Creates a stream named `name`; `table` stores its rows when it is a materialized view.
    pub fn create_stream(
        &self,
        name: &str,
        schema: SchemaRef,
        table: Option<Arc<ResultTable>>,
    ) -> (StreamId, Arc<StreamOutlet>) {
        self.register_stream(self.new_outlet(name, schema, table))
    }

    /// Creates the stream carrying the changelog of reference table `table`; a query
    /// reading it starts from the table's rows (see `add_query`).
    pub fn create_table_stream(
        &self,
        name: &str,
        schema: SchemaRef,
        table: Arc<ReferenceTable>,
    ) -> (StreamId, Arc<StreamOutlet>) {
        self.register_stream(
            self.new_outlet(name, schema, None)
                .with_reference_table(table),
        )
    }

    fn new_outlet(
        &self,
        name: &str,
        schema: SchemaRef,
        table: Option<Arc<ResultTable>>,
    ) -> StreamOutlet {
        StreamOutlet::new(
            name.to_string(),
            schema,
            self.workers.len(),
            table,
            Arc::clone(&self.progress),
            Arc::clone(&self.shutdown),
        )
    }

    fn register_stream(&self, outlet: StreamOutlet) -> (StreamId, Arc<StreamOutlet>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let outlet = Arc::new(outlet);
        self.outlets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, Arc::clone(&outlet));
        (id, outlet)
    }

    /// The outlet of a stream.
    pub fn outlet(&self, stream: StreamId) -> Option<Arc<StreamOutlet>> {
        self.outlets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&stream)
            .cloned()
    }

    /// Opens the input side of a source stream: one ring per worker. With a watermark, the
    /// handle computes it over every pushed row, per source partition (`feed` says where
    /// partitions come from; the source's watermark is the minimum over the active ones),
    /// sends it to all workers, and routes the rows late on arrival by `late`. Partitions
    /// silent for `idle_timeout` are idle: they hold nothing back until their next row, and
    /// when all are, the workers are told the source is idle.
    pub fn create_ingress(
        &self,
        stream: StreamId,
        feed: SourceFeed,
        watermark: Option<&WatermarkGenerator>,
        idle_timeout: Option<Duration>,
        late: LatePolicy,
        by_key: Option<(&Schema, &[usize])>,
    ) -> Result<Arc<IngressHandle>> {
        let outlet = self
            .outlet(stream)
            .ok_or_else(|| CoreError::Internal(format!("ingress for unknown stream {stream}")))?;
        let mut producers = Vec::with_capacity(self.workers.len());
        for worker in &self.workers {
            let (producer, consumer) = rtrb::RingBuffer::new(INGRESS_RING_CAPACITY_BATCHES);
            let counters = Arc::new(IngressCounters::default());
            self.counters
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Arc::downgrade(&counters));
            worker.send(Command::AttachIngress {
                stream,
                consumer,
                counters: Arc::clone(&counters),
                outlet: Arc::clone(&outlet),
            });
            producers.push(RingProducer::new(producer, counters, Arc::clone(worker)));
        }
        let idle_timeout = idle_timeout.filter(|_| watermark.is_some());
        let mut handle = IngressHandle::new(
            outlet.name().to_string(),
            producers,
            Arc::clone(&self.shutdown),
            feed,
            watermark.map(|generator| (generator.clone(), idle_timeout)),
            idle_timeout.map(|_| self.idle_clock.shared()),
            late,
        );
        if let Some((schema, columns)) = by_key {
            handle = handle.routed_by_key(schema, columns)?;
        }
        let handle = Arc::new(handle);
        let mut ingresses = self
            .ingresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        ingresses.retain(|weak| weak.strong_count() > 0);
        ingresses.push(Arc::downgrade(&handle));
        drop(ingresses);
        if idle_timeout.is_some() {
            self.idle_clock.watch(&handle)?;
        }
        Ok(handle)
    }

    /// Starts query `name` on every worker; `bindings` maps each input name of the graph to
    /// the stream feeding it, and the results flow into `output`. An input that is a
    /// materialized view or a reference table first contributes the rows it holds, taken
    /// while the workers stand still so that no change is missed or counted twice.
    pub fn add_query(
        &self,
        name: &str,
        graph: &QueryGraph,
        bindings: &HashMap<String, StreamId>,
        output: StreamId,
    ) -> Result<()> {
        self.install_query(name, graph, bindings, output, None)
    }

    /// Starts query `name` as `add_query` does, from the state a checkpoint holds for it
    /// (`restore`) instead of from its inputs' current rows: those rows are already
    /// reflected in the restored state.
    pub fn add_restored_query(
        &self,
        name: &str,
        graph: &QueryGraph,
        bindings: &HashMap<String, StreamId>,
        output: StreamId,
        restore: &QueryRestore,
    ) -> Result<()> {
        self.install_query(name, graph, bindings, output, Some(restore))
    }

    fn install_query(
        &self,
        name: &str,
        graph: &QueryGraph,
        bindings: &HashMap<String, StreamId>,
        output: StreamId,
        restore: Option<&QueryRestore>,
    ) -> Result<()> {
        let outlet = self
            .outlet(output)
            .ok_or_else(|| CoreError::Internal(format!("query {name}: unknown output stream")))?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut streams: Vec<StreamId> = bindings.values().copied().collect();
        // Sorted, so concurrent creators hold reference tables in one order.
        streams.sort_unstable();
        streams.dedup();
        let inputs: Vec<(StreamId, Arc<StreamOutlet>)> = streams
            .iter()
            .filter_map(|s| self.outlet(*s).map(|o| (*s, o)))
            .collect();
        // A restored query's state already reflects its inputs' rows: nothing to backfill.
        let backfilled = if restore.is_some() {
            Vec::new()
        } else {
            inputs.clone()
        };
        let inputs = backfilled;
        let references: Vec<Arc<ReferenceTable>> = inputs
            .iter()
            .filter_map(|(_, o)| o.reference_table())
            .collect();
        // Writers to the tables wait until the query runs. Once what they published before
        // has been processed, the rows held are exactly the changes the workers have seen,
        // and every later change reaches the query through the table's stream.
        let held: Vec<HeldTable<'_>> = references.iter().map(|t| t.hold()).collect();
        if !held.is_empty() {
            self.sync(PAUSE_TIMEOUT)?;
        }
        let has_views = inputs.iter().any(|(_, o)| o.table().is_some());
        // A query with an exchange must exist on every worker before any worker sends it rows:
        // the workers stand still while it is installed, as they do for a backfill.
        let has_exchange = graph.nodes.iter().any(|n| n.router.is_some());
        let paused = has_views || !held.is_empty() || (has_exchange && self.workers.len() > 1);
        if paused {
            self.pause_workers()?;
        }
        let sent = self
            .backfill_rows(name, &inputs, &held)
            .and_then(|snapshots| {
                self.send_add_query(
                    name, graph, bindings, output, &outlet, id, &snapshots, paused, restore,
                )
            });
        if paused {
            self.pause.requested.store(false, Ordering::SeqCst);
        }
        drop(held);
        sent?;
        self.queries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_string(), QueryRecord { id });
        Ok(())
    }

    /// Per input stream and worker, the rows a new query starts from there, so that each
    /// reaches the query on the worker whose later changes to it follow on the same path:
    /// a materialized view's rows where each worker produced them, and a reference table's
    /// (`held`, in the order of `inputs`) on the worker whose ring carries every change of
    /// the table (see `IngressHandle::push_changes`).
    fn backfill_rows(
        &self,
        name: &str,
        inputs: &[(StreamId, Arc<StreamOutlet>)],
        held: &[HeldTable<'_>],
    ) -> Result<HashMap<(StreamId, usize), Vec<RecordBatch>>> {
        let failed = |e: datafusion::error::DataFusionError| CoreError::Operator {
            query: name.to_string(),
            operator: "Backfill".into(),
            source: e,
        };
        let mut snapshots = HashMap::new();
        let mut held = held.iter();
        for (stream, input) in inputs {
            if let Some(table) = input.table() {
                for worker in &self.workers {
                    let rows = table
                        .snapshot_of(worker.index)
                        .map_err(|e| failed(e.into()))?;
                    snapshots.insert((*stream, worker.index), rows);
                }
            }
            if input.reference_table().is_some() {
                let Some(table) = held.next() else {
                    return Err(CoreError::Internal(format!(
                        "query {name}: reference table {} was not held",
                        input.name()
                    )));
                };
                let rows = table.rows().map_err(failed)?;
                snapshots.insert((*stream, TABLE_CHANGES_RING), vec![rows]);
            }
        }
        Ok(snapshots)
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "the parts of one add_query call, split for the pause"
    )]
    fn send_add_query(
        &self,
        name: &str,
        graph: &QueryGraph,
        bindings: &HashMap<String, StreamId>,
        output: StreamId,
        outlet: &Arc<StreamOutlet>,
        id: u64,
        snapshots: &HashMap<(StreamId, usize), Vec<RecordBatch>>,
        wait_started: bool,
        restore: Option<&QueryRestore>,
    ) -> Result<()> {
        let started = Arc::new(AtomicUsize::new(0));
        // Each worker restores its share on its own thread: in parallel, and allocated
        // where it will be used (after pinning, like any state of the worker).
        let restore = restore.map(|r| Arc::new(r.clone()));
        let failure: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        for worker in &self.workers {
            let instance = QueryInstance::fork(name, graph, worker.index, self.workers.len());
            let mut leaf_bindings = Vec::new();
            let mut backfill = Vec::new();
            for (input, leaf) in instance.leaves() {
                let stream = bindings.get(input).ok_or_else(|| {
                    CoreError::Internal(format!("query {name}: input {input} is not bound"))
                })?;
                leaf_bindings.push((*leaf, *stream));
                for rows in snapshots
                    .get(&(*stream, worker.index))
                    .into_iter()
                    .flatten()
                {
                    if rows.num_rows() > 0 {
                        backfill.push((*leaf, ChangeBatch::insert_only(rows.clone())));
                    }
                }
            }
            worker.send(Command::AddQuery {
                id,
                instance,
                bindings: leaf_bindings,
                output,
                outlet: Arc::clone(outlet),
                backfill,
                started: Arc::clone(&started),
                restore: restore.clone(),
                failure: Arc::clone(&failure),
            });
        }
        if !wait_started && restore.is_none() {
            return Ok(());
        }
        // Backfilled rows are in flight once every worker started the query; later reads
        // (which wait for rows in flight) then see their results.
        self.pause.requested.store(false, Ordering::SeqCst);
        let timeout = if restore.is_some() {
            RESTORE_TIMEOUT
        } else {
            PAUSE_TIMEOUT
        };
        let deadline = Instant::now() + timeout;
        while started.load(Ordering::SeqCst) < self.workers.len() {
            if Instant::now() >= deadline || self.shutdown.load(Ordering::Acquire) {
                return Err(CoreError::Timeout {
                    what: format!("workers to start query {name}"),
                    waited_ms: timeout.as_millis() as u64,
                });
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        let failed = failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(message) = failed {
            // Workers that restored their share run the query: stop it everywhere.
            for worker in &self.workers {
                worker.send(Command::RemoveQuery { id });
            }
            return Err(CoreError::Internal(message));
        }
        Ok(())
    }

    /// Asks every worker to stand still between messages and waits until all do.
    fn pause_workers(&self) -> Result<()> {
        self.pause.requested.store(true, Ordering::SeqCst);
        for worker in &self.workers {
            worker.send_wake();
        }
        let deadline = Instant::now() + PAUSE_TIMEOUT;
        while self.pause.paused_workers.load(Ordering::SeqCst) < self.workers.len() {
            if Instant::now() >= deadline || self.shutdown.load(Ordering::Acquire) {
                self.pause.requested.store(false, Ordering::SeqCst);
                return Err(CoreError::Timeout {
                    what: "workers to pause for a consistent view snapshot (a subscriber or sink may be stalled)".into(),
                    waited_ms: PAUSE_TIMEOUT.as_millis() as u64,
                });
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        Ok(())
    }

    /// Stops query `name` on every worker.
    pub fn remove_query(&self, name: &str) {
        let record = self
            .queries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        if let Some(record) = record {
            for worker in &self.workers {
                worker.send(Command::RemoveQuery { id: record.id });
            }
        }
    }

    /// Forgets a stream on every worker (after its readers and writers are gone).
    pub fn remove_stream(&self, stream: StreamId) {
        self.outlets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&stream);
        for worker in &self.workers {
            worker.send(Command::RemoveStream { stream });
        }
    }

    /// Waits until every batch enqueued before this call has been processed by the workers,
    /// including what they sent each other for keyed operators, so a snapshot read sees it
    /// (read-your-writes).
    pub fn sync(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let ingress: Vec<Arc<IngressCounters>> = {
            let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
            counters.retain(|c| c.strong_count() > 0);
            counters.iter().filter_map(Weak::upgrade).collect()
        };
        self.wait_processed(&ingress, deadline, timeout)?;
        // Rows derived from that input may cross several exchanges (a keyed query over a
        // keyed query): wait round by round until no new exchange message appeared.
        let mut previous: Vec<u64> = Vec::new();
        for _ in 0..EXCHANGE_SYNC_ROUNDS_MAX {
            let produced: Vec<u64> = self
                .exchange_counters
                .iter()
                .map(|c| c.enqueued.load(Ordering::SeqCst))
                .collect();
            if produced == previous {
                break;
            }
            self.wait_processed(&self.exchange_counters, deadline, timeout)?;
            previous = produced;
        }
        Ok(())
    }

    /// Waits until each ring has processed what was enqueued into it when called.
    fn wait_processed(
        &self,
        rings: &[Arc<IngressCounters>],
        deadline: Instant,
        timeout: Duration,
    ) -> Result<()> {
        let targets: Vec<(&Arc<IngressCounters>, u64)> = rings
            .iter()
            .map(|c| (c, c.enqueued.load(Ordering::SeqCst)))
            .collect();
        let mut pause_us = 1;
        loop {
            if targets
                .iter()
                .all(|(c, target)| c.processed.load(Ordering::SeqCst) >= *target)
            {
                return Ok(());
            }
            if self.shutdown.load(Ordering::Acquire) {
                return Err(CoreError::ShutDown);
            }
            if Instant::now() >= deadline {
                return Err(CoreError::Timeout {
                    what: "workers to process pushed rows".into(),
                    waited_ms: timeout.as_millis() as u64,
                });
            }
            std::thread::sleep(Duration::from_micros(pause_us));
            pause_us = (pause_us * 2).min(1_000);
        }
    }

    /// Waits until `done()` holds (re-checked whenever a stream ends or a sink closes, and
    /// at least every 100 ms) or `timeout` passes; returns whether it holds.
    pub fn wait_until(&self, timeout: Duration, done: impl FnMut() -> bool) -> bool {
        self.progress
            .wait_until(Instant::now() + timeout, Duration::from_millis(100), done)
    }

    /// The progress signal (bumped when a stream ends); sinks bump it when they close.
    pub fn progress(&self) -> Arc<Progress> {
        Arc::clone(&self.progress)
    }

    /// True once the runtime has shut down.
    pub fn is_shut_down(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    /// Stops the workers and waits for them. Idempotent.
    pub fn shutdown(&self) {
        self.shutdown.store(true, Ordering::Release);
        self.idle_clock.stop();
        for worker in &self.workers {
            worker.wake();
            worker.send_wake();
        }
        let threads =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        for thread in threads {
            // A worker that panicked has nothing left to clean up.
            let _ = thread.join();
        }
        for worker in &self.workers {
            worker.discard_commands();
        }
        // Outlets hold the senders of sinks and subscribers; releasing them ends those.
        self.outlets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.shutdown();
    }
}
