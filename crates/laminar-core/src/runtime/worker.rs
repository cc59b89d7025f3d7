//! A worker: one (optionally core-pinned) thread running the reactor loop over its shard of
//! every query. It drains its ingress rings under a per-ring budget (a huge batch a slice at
//! a time), pushes each message through the queries reading that stream on this worker, and
//! parks when idle so an embedded database costs nothing while no data flows.
//!
//! A checkpoint's barrier arriving on a source ring stops the worker reading that ring
//! until every source ring delivered it (see `runtime::checkpoint`); the worker is done
//! with the barrier once, in addition, every query on it passed the barrier on to its
//! output or had already ended.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::Thread;
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;

use super::checkpoint::{Barrier, QueryRestore};
use super::exchange::{ExchangeInbound, ExchangeLink, ExchangeMessage};
use super::ingress::{IngressCounters, IngressMessage, INGRESS_RING_WAKE_AT_MESSAGES};
use super::outlet::{StreamId, StreamOutlet};
use super::query_instance::{QueryInstance, Remote};
use crate::change_batch::ChangeBatch;
use crate::operator::Message;
use crate::watermark::WATERMARK_END_MS;

/// Messages taken from one ring before moving to the next, so one busy source cannot starve
/// the others or the control commands.
const RING_BUDGET_MESSAGES: usize = 16;
/// A pushed batch smaller than this is merged with the small batches queued behind it.
const COALESCE_FROM_ROWS: usize = 1_024;
/// The most rows a merged batch holds.
const COALESCE_ROWS_MAX: usize = 8_192;
/// Empty polls spun before parking.
const IDLE_SPINS_MAX: u32 = 200;
/// Rows one step processes at most: a larger pushed batch is processed a slice at a time,
/// with the worker's other rings, exchanges and timers served between slices, so one huge
/// batch cannot hold back watermarks or other queries.
const ROWS_PER_STEP_MAX: usize = 65_536;
/// A step (one message through every query reading it) taking longer than this is an
/// overrun, counted per worker.
const STEP_BUDGET: Duration = Duration::from_millis(10);
/// A parked worker re-checks its rings at least this often (guards against a lost wakeup).
const PARK_TIMEOUT: Duration = Duration::from_millis(50);

/// Control-plane requests to a worker (not on the data path).
// A handful per query or checkpoint: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Command {
    AttachIngress {
        stream: StreamId,
        consumer: rtrb::Consumer<IngressMessage>,
        counters: Arc<IngressCounters>,
        outlet: Arc<StreamOutlet>,
    },
    AddQuery {
        id: u64,
        instance: QueryInstance,
        bindings: Vec<(usize, StreamId)>,
        output: StreamId,
        outlet: Arc<StreamOutlet>,
        /// Rows the inputs already hold (materialized views), fed to the leaves first.
        backfill: Vec<(usize, ChangeBatch)>,
        /// Counts the workers that have started the query (and pushed their backfill).
        started: Arc<AtomicUsize>,
        /// State a checkpoint holds for the query, restored by the worker before it starts.
        restore: Option<Arc<QueryRestore>>,
        /// Where a worker that could not restore its share says why.
        failure: Arc<Mutex<Option<String>>>,
    },
    RemoveQuery {
        id: u64,
    },
    RemoveStream {
        stream: StreamId,
    },
    /// A checkpoint's barrier was put into every source ring: the worker is to be done
    /// with it even if no ring of it delivers one (its sources all ended).
    Barrier(Arc<Barrier>),
}

/// The part of a worker other threads see.
pub(crate) struct WorkerShared {
    pub(crate) index: usize,
    commands: Mutex<Vec<Command>>,
    has_commands: AtomicBool,
    sleeping: AtomicBool,
    thread: OnceLock<Thread>,
    pub(crate) rows_processed: AtomicU64,
    /// The core the worker is pinned to, or -1.
    pub(crate) core: AtomicI64,
    /// Nanoseconds spent processing (not spinning or parked).
    pub(crate) busy_ns: AtomicU64,
    /// Messages waiting in the worker's input rings and overflow, at its last look.
    pub(crate) queued_messages: AtomicU64,
    /// Steps that took longer than [`STEP_BUDGET`].
    pub(crate) overruns: AtomicU64,
}

/// A request that every worker stop between messages (for a consistent cut of the
/// materialized views a new query backfills from), and how many have stopped.
#[derive(Debug, Default)]
pub(crate) struct PauseGate {
    pub(crate) requested: AtomicBool,
    pub(crate) paused_workers: AtomicUsize,
}

impl WorkerShared {
    pub(crate) fn new(index: usize) -> Self {
        Self {
            index,
            commands: Mutex::new(Vec::new()),
            has_commands: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            thread: OnceLock::new(),
            rows_processed: AtomicU64::new(0),
            core: AtomicI64::new(-1),
            busy_ns: AtomicU64::new(0),
            queued_messages: AtomicU64::new(0),
            overruns: AtomicU64::new(0),
        }
    }

    pub(crate) fn set_thread(&self, thread: Thread) {
        // Set once right after spawn; a second call would be a bug and is ignored.
        let _ = self.thread.set(thread);
    }

    /// Wakes the worker if it is parked.
    pub(crate) fn wake(&self) {
        if self.sleeping.load(Ordering::SeqCst) {
            if let Some(thread) = self.thread.get() {
                thread.unpark();
            }
        }
    }

    /// Drops commands the worker never applied (after it stopped), releasing what they hold.
    pub(crate) fn discard_commands(&self) {
        self.commands
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Unparks the worker unconditionally (used at shutdown).
    pub(crate) fn send_wake(&self) {
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }

    pub(crate) fn send(&self, command: Command) {
        self.commands
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(command);
        self.has_commands.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }
}

struct IngressSlot {
    stream: StreamId,
    consumer: rtrb::Consumer<IngressMessage>,
    counters: Arc<IngressCounters>,
    /// Ended or removed; swept after the current poll so indices stay valid meanwhile.
    done: bool,
    /// Slices of a batch above [`ROWS_PER_STEP_MAX`] still to process, before the ring's
    /// next message; the message counts as processed once they are.
    carry: VecDeque<RecordBatch>,
    /// Ring messages beyond the one that started the carry, counted as processed with it.
    carry_extra: u64,
    /// Queued small batches may be merged: no query fed by the stream, directly or through
    /// other queries, depends on batch boundaries.
    mergeable: bool,
    /// The epoch of the barrier the ring delivered, while the worker waits for its other
    /// rings' (the ring is not read meanwhile).
    barrier: Option<u64>,
}

impl IngressSlot {
    /// Takes the ring's next message. Every message leaves the ring here, so a producer
    /// waiting for room always hears when the ring has drained to half (merging small
    /// batches takes many at once; a producer it did not tell slept until its timeout).
    fn pop(&mut self) -> Option<IngressMessage> {
        let message = self.consumer.pop().ok()?;
        let consumer = &self.consumer;
        self.counters
            .room
            .drained(|| consumer.slots() <= INGRESS_RING_WAKE_AT_MESSAGES);
        Some(message)
    }
}

/// A barrier this worker has seen and is not done with.
struct BarrierInFlight {
    barrier: Arc<Barrier>,
    /// Every source ring delivered it.
    rings_aligned: bool,
    /// Queries that passed it to their output.
    answered: HashSet<u64>,
}

struct RunningQuery {
    instance: QueryInstance,
    output: StreamId,
}

/// The worker's own state, touched only by its thread.
pub(crate) struct Worker {
    shared: Arc<WorkerShared>,
    shutdown: Arc<AtomicBool>,
    pause: Arc<PauseGate>,
    ingress: Vec<IngressSlot>,
    queries: HashMap<u64, RunningQuery>,
    readers: HashMap<StreamId, Vec<(u64, usize)>>,
    outlets: HashMap<StreamId, Arc<StreamOutlet>>,
    ended_streams: HashSet<StreamId>,
    work: VecDeque<(StreamId, Message)>,
    produced: Vec<Message>,
    remote: Vec<Remote>,
    peers: Vec<Arc<WorkerShared>>,
    /// Outgoing exchange rings, by target worker (`None` for this worker itself).
    exchange_out: Vec<Option<ExchangeLink>>,
    exchange_in: Vec<ExchangeInbound>,
    /// Exchange messages whose ring was full, in order. While any wait here, the worker
    /// takes no new source input but keeps draining its own exchange input, so two workers
    /// waiting on each other always make progress.
    overflow: VecDeque<(usize, ExchangeMessage)>,
    /// The earliest processing-time timer of any query here.
    next_timer: Option<Instant>,
    /// Checkpoint barriers seen and not done with, oldest first.
    barriers: Vec<BarrierInFlight>,
    /// The epoch of the last barrier the worker was done with (epochs only grow).
    barrier_done: u64,
}

impl Worker {
    pub(crate) fn new(
        shared: Arc<WorkerShared>,
        shutdown: Arc<AtomicBool>,
        pause: Arc<PauseGate>,
        peers: Vec<Arc<WorkerShared>>,
        exchange_out: Vec<Option<ExchangeLink>>,
        exchange_in: Vec<ExchangeInbound>,
    ) -> Self {
        Self {
            shared,
            shutdown,
            pause,
            remote: Vec::new(),
            peers,
            exchange_out,
            exchange_in,
            overflow: VecDeque::new(),
            next_timer: None,
            barriers: Vec::new(),
            barrier_done: 0,
            ingress: Vec::new(),
            queries: HashMap::new(),
            readers: HashMap::new(),
            outlets: HashMap::new(),
            ended_streams: HashSet::new(),
            work: VecDeque::new(),
            produced: Vec::new(),
        }
    }

    /// The reactor loop; returns on shutdown. An idle worker polls for `idle_spin` (or
    /// [`IDLE_SPINS_MAX`] times) before it parks.
    pub(crate) fn run(mut self, idle_spin: Option<Duration>) {
        let mut idle_spins = 0;
        let mut idle_since: Option<Instant> = None;
        loop {
            if self.shutdown.load(Ordering::Acquire) {
                return;
            }
            if self.pause.requested.load(Ordering::SeqCst) {
                self.wait_while_paused();
            }
            if self.shared.has_commands.swap(false, Ordering::SeqCst) {
                self.apply_commands();
            }
            let work_started = Instant::now();
            let mut did_work = self.flush_overflow();
            if self.next_timer.is_some_and(|due| due <= work_started) {
                did_work |= self.fire_timers();
            }
            did_work |= self.poll_exchange();
            if self.overflow.is_empty() {
                did_work |= self.poll_ingress();
            }
            if !self.barriers.is_empty() {
                self.advance_barriers();
            }
            if did_work {
                let busy = u64::try_from(work_started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                self.shared.busy_ns.fetch_add(busy, Ordering::Relaxed);
                self.publish_queue_depth();
                idle_spins = 0;
                idle_since = None;
                continue;
            }
            if !self.overflow.is_empty() {
                // Waiting for a peer to drain: don't park, it may never wake us.
                std::thread::yield_now();
                continue;
            }
            idle_spins += 1;
            let spinning = match idle_spin {
                Some(spin) => idle_since.get_or_insert_with(Instant::now).elapsed() < spin,
                None => idle_spins < IDLE_SPINS_MAX,
            };
            if spinning {
                std::hint::spin_loop();
                continue;
            }
            self.shared.sleeping.store(true, Ordering::SeqCst);
            if !self.has_pending() {
                let armed = self
                    .queries
                    .values()
                    .filter_map(|query| query.instance.next_armed_timer())
                    .min();
                let timeout = armed.map_or(PARK_TIMEOUT, |due| {
                    due.saturating_duration_since(Instant::now())
                        .min(PARK_TIMEOUT)
                });
                std::thread::park_timeout(timeout);
            }
            self.shared.sleeping.store(false, Ordering::SeqCst);
            idle_spins = 0;
            idle_since = None;
        }
    }

    /// Counts `messages` of a ring as processed, publishing the queue depth first: a reader
    /// that waited for the count (`sync`, then `SHOW WORKERS`) sees a depth taken after
    /// the messages left the ring, not one from before.
    fn count_processed(&self, counters: &IngressCounters, messages: u64) {
        self.publish_queue_depth();
        counters.processed.fetch_add(messages, Ordering::SeqCst);
    }

    /// Publishes how many messages wait in this worker's rings (for `SHOW WORKERS`).
    fn publish_queue_depth(&self) {
        let ingress: usize = self
            .ingress
            .iter()
            .filter(|slot| !slot.done)
            .map(|slot| slot.consumer.slots())
            .sum();
        let exchange: usize = self.exchange_in.iter().map(ExchangeInbound::waiting).sum();
        let queued = (ingress + exchange + self.overflow.len()) as u64;
        self.shared.queued_messages.store(queued, Ordering::Relaxed);
    }

    /// Stands still between messages until the pause is lifted.
    fn wait_while_paused(&mut self) {
        self.pause.paused_workers.fetch_add(1, Ordering::SeqCst);
        while self.pause.requested.load(Ordering::SeqCst) && !self.shutdown.load(Ordering::Acquire)
        {
            std::thread::sleep(Duration::from_micros(50));
        }
        self.pause.paused_workers.fetch_sub(1, Ordering::SeqCst);
    }

    /// Records the sight of `barrier`, unless the worker is already done with it.
    fn barrier_seen(&mut self, barrier: &Arc<Barrier>) {
        if barrier.epoch() > self.barrier_done {
            self.barrier_in_flight(barrier);
        }
    }

    /// The worker's record of `barrier`, created on first sight.
    fn barrier_in_flight(&mut self, barrier: &Arc<Barrier>) -> &mut BarrierInFlight {
        let epoch = barrier.epoch();
        if !self.barriers.iter().any(|b| b.barrier.epoch() == epoch) {
            self.barriers.push(BarrierInFlight {
                barrier: Arc::clone(barrier),
                rings_aligned: false,
                answered: HashSet::new(),
            });
            self.barriers.sort_by_key(|b| b.barrier.epoch());
        }
        let position = self
            .barriers
            .iter()
            .position(|b| b.barrier.epoch() == epoch)
            .unwrap_or(0);
        &mut self.barriers[position]
    }

    /// Moves the oldest barrier on: once every source ring delivered it, the rings are
    /// read again; once every query also passed it (or had ended: its state is final and
    /// snapshot now), the worker is done with it.
    fn advance_barriers(&mut self) {
        let Some(oldest) = self.barriers.first() else {
            return;
        };
        let epoch = oldest.barrier.epoch();
        if !oldest.rings_aligned {
            // A ring that ended, or whose source is gone and left nothing, has no barrier
            // to deliver.
            let aligned = self.ingress.iter().all(|slot| {
                slot.done
                    || slot.barrier == Some(epoch)
                    || (slot.consumer.is_abandoned() && slot.consumer.is_empty())
            });
            if !aligned {
                return;
            }
            // Streams that receive the barrier: from a ring, from the query producing
            // them, or not at all because they ended. Any other stream a query reads has
            // no input at all, so the barrier is at its start: it is put there now.
            let mut fed: HashSet<StreamId> = self.ended_streams.clone();
            fed.extend(self.queries.values().map(|query| query.output));
            for slot in &mut self.ingress {
                if slot.barrier == Some(epoch) {
                    slot.barrier = None;
                    fed.insert(slot.stream);
                }
            }
            self.barriers[0].rings_aligned = true;
            let unfed: Vec<StreamId> = self
                .readers
                .keys()
                .filter(|stream| !fed.contains(stream))
                .copied()
                .collect();
            let barrier = Arc::clone(&self.barriers[0].barrier);
            for stream in unfed {
                self.work
                    .push_back((stream, Message::Barrier(Arc::clone(&barrier))));
            }
            self.drain_work();
        }
        let barrier = Arc::clone(&self.barriers[0].barrier);
        let worker = self.shared.index;
        let mut pending = false;
        let ids: Vec<u64> = self.queries.keys().copied().collect();
        for id in ids {
            if self.barriers[0].answered.contains(&id) {
                continue;
            }
            let Some(query) = self.queries.get_mut(&id) else {
                continue;
            };
            if !query.instance.is_ended() {
                pending = true;
                continue;
            }
            query.instance.answer_barrier(&barrier);
            if let Some(outlet) = self.outlets.get(&query.output) {
                outlet.snapshot_view(worker, &barrier);
            }
            self.barriers[0].answered.insert(id);
        }
        if !pending {
            barrier.worker_done(worker);
            self.barrier_done = self.barrier_done.max(barrier.epoch());
            self.barriers.remove(0);
        }
    }

    fn has_pending(&self) -> bool {
        if self.pause.requested.load(Ordering::SeqCst) {
            return true;
        }
        self.shutdown.load(Ordering::Acquire)
            || self.shared.has_commands.load(Ordering::SeqCst)
            || self
                .ingress
                .iter()
                .any(|slot| !slot.done && slot.consumer.slots() > 0)
            || self.exchange_in.iter().any(|inbound| inbound.waiting() > 0)
    }

    /// Decides, per source ring, whether queued small batches may be merged: not when a
    /// query reading the stream, or reading what such a query produces, depends on batch
    /// boundaries. Recomputed when queries or streams come and go.
    fn refresh_mergeable(&mut self) {
        for index in 0..self.ingress.len() {
            let mut pending = vec![self.ingress[index].stream];
            let mut seen = HashSet::new();
            let mut mergeable = true;
            while let Some(stream) = pending.pop() {
                if !seen.insert(stream) {
                    continue;
                }
                for (id, _) in self.readers.get(&stream).into_iter().flatten() {
                    if let Some(query) = self.queries.get(id) {
                        mergeable &= !query.instance.needs_batch_boundaries();
                        pending.push(query.output);
                    }
                }
            }
            self.ingress[index].mergeable = mergeable;
        }
    }

    fn apply_commands(&mut self) {
        let commands = std::mem::take(
            &mut *self
                .shared
                .commands
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for command in commands {
            match command {
                Command::AttachIngress {
                    stream,
                    consumer,
                    counters,
                    outlet,
                } => {
                    self.outlets.insert(stream, outlet);
                    self.ingress.push(IngressSlot {
                        stream,
                        consumer,
                        counters,
                        done: false,
                        carry: VecDeque::new(),
                        carry_extra: 0,
                        mergeable: false,
                        barrier: None,
                    });
                }
                Command::AddQuery {
                    id,
                    instance,
                    bindings,
                    output,
                    outlet,
                    backfill,
                    started,
                    restore,
                    failure,
                } => {
                    let mut instance = instance;
                    match restore.map(|r| restore_instance(&mut instance, &r)) {
                        Some(Err(message)) => {
                            failure
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .get_or_insert(message);
                        }
                        _ => self.add_query(id, instance, &bindings, output, outlet, backfill),
                    }
                    started.fetch_add(1, Ordering::SeqCst);
                }
                Command::RemoveQuery { id } => self.remove_query(id),
                Command::Barrier(barrier) => self.barrier_seen(&barrier),
                Command::RemoveStream { stream } => {
                    for slot in &mut self.ingress {
                        if slot.stream == stream {
                            slot.done = true;
                        }
                    }
                    self.outlets.remove(&stream);
                    self.readers.remove(&stream);
                    self.ended_streams.remove(&stream);
                }
            }
        }
        self.refresh_mergeable();
    }

    fn add_query(
        &mut self,
        id: u64,
        instance: QueryInstance,
        bindings: &[(usize, StreamId)],
        output: StreamId,
        outlet: Arc<StreamOutlet>,
        backfill: Vec<(usize, ChangeBatch)>,
    ) {
        self.outlets.insert(output, outlet);
        self.queries.insert(id, RunningQuery { instance, output });
        self.schedule_timers();
        for (leaf, rows) in backfill {
            self.push_into_query(id, leaf, Message::Data(rows));
            self.drain_work();
        }
        let mut already_ended = Vec::new();
        for &(leaf, stream) in bindings {
            self.readers.entry(stream).or_default().push((id, leaf));
            if self.ended_streams.contains(&stream) {
                already_ended.push(leaf);
            }
        }
        // Inputs that finished before the query existed end its leaves right away.
        for leaf in already_ended {
            self.push_into_query(id, leaf, Message::End);
        }
        self.drain_work();
    }

    fn remove_query(&mut self, id: u64) {
        if let Some(query) = self.queries.remove(&id) {
            self.outlets.remove(&query.output);
        }
        for readers in self.readers.values_mut() {
            readers.retain(|(query, _)| *query != id);
        }
        self.schedule_timers();
    }

    /// Recomputes when the next timer of any query is due.
    fn schedule_timers(&mut self) {
        self.next_timer = self
            .queries
            .values()
            .filter_map(|query| query.instance.next_timer())
            .min();
    }

    /// Runs the timers that are due; returns whether any ran.
    fn fire_timers(&mut self) -> bool {
        let now = Instant::now();
        let due: Vec<u64> = self
            .queries
            .iter()
            .filter(|(_, query)| query.instance.next_timer().is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        let mut ran = false;
        for id in &due {
            self.step_query(*id, |instance, out, remote| {
                instance.fire_timers(now, &mut ran, out, remote)
            });
            self.drain_work();
        }
        self.schedule_timers();
        ran
    }

    /// Drains every ring up to its budget; returns whether anything was processed.
    fn poll_ingress(&mut self) -> bool {
        let mut did_work = false;
        for index in 0..self.ingress.len() {
            for _ in 0..RING_BUDGET_MESSAGES {
                if self.ingress[index].done || self.ingress[index].barrier.is_some() {
                    break;
                }
                if let Some(slice) = self.ingress[index].carry.pop_front() {
                    did_work = true;
                    self.process_ingress(index, IngressMessage::Data(slice));
                    if self.ingress[index].carry.is_empty() {
                        let extra = std::mem::take(&mut self.ingress[index].carry_extra);
                        self.count_processed(&self.ingress[index].counters, 1 + extra);
                    }
                    continue;
                }
                let Some(message) = self.ingress[index].pop() else {
                    break;
                };
                did_work = true;
                // A query created before this message was pushed must see it: its command
                // was queued before the push, so it is visible now.
                if self.shared.has_commands.swap(false, Ordering::SeqCst) {
                    self.apply_commands();
                }
                if self.ingress[index].done {
                    // Removed by a command just applied: the message has no reader left.
                    self.count_processed(&self.ingress[index].counters, 1);
                    break;
                }
                let mut merged = 0;
                let message = match message {
                    IngressMessage::Data(batch)
                        if batch.num_rows() < COALESCE_FROM_ROWS
                            && self.ingress[index].mergeable =>
                    {
                        let (batch, taken) = self.coalesce(index, batch);
                        merged = taken;
                        IngressMessage::Data(batch)
                    }
                    IngressMessage::Data(batch) if batch.num_rows() > ROWS_PER_STEP_MAX => {
                        let mut slices = slices(&batch, ROWS_PER_STEP_MAX);
                        let first = slices.pop_front();
                        self.ingress[index].carry = slices;
                        match first {
                            Some(first) => IngressMessage::Data(first),
                            None => IngressMessage::Data(batch),
                        }
                    }
                    other => other,
                };
                let finished = self.process_ingress(index, message);
                if !self.ingress[index].carry.is_empty() {
                    // Counted as processed once its last slice is.
                    continue;
                }
                self.count_processed(&self.ingress[index].counters, 1 + merged);
                if finished {
                    self.ingress[index].done = true;
                }
            }
        }
        for slot in self.ingress.iter().filter(|slot| slot.done) {
            // Whatever is left in a retired ring will never be processed; waiters on it
            // (read-your-writes) must not wait for it.
            slot.counters.processed.store(u64::MAX, Ordering::SeqCst);
        }
        self.ingress.retain(|slot| !slot.done);
        did_work
    }

    /// Adaptive micro-batching: a small batch is processed together with the small batches
    /// queued right behind it in its ring (up to [`COALESCE_ROWS_MAX`] rows), so a backlog
    /// of tiny pushes costs one pass through the operators instead of one each. Nothing is
    /// waited for: with no backlog the batch goes on alone at once, so the added delay is
    /// zero. Only consecutive rows are merged (never across a watermark or other message),
    /// so every operator sees the same sequence of rows and progress. Returns the batch and
    /// how many more ring messages it took.
    fn coalesce(&mut self, index: usize, first: RecordBatch) -> (RecordBatch, u64) {
        let slot = &mut self.ingress[index];
        let mut rows = first.num_rows();
        let mut parts: Vec<RecordBatch> = Vec::new();
        while let Ok(IngressMessage::Data(next)) = slot.consumer.peek() {
            let same_schema =
                Arc::ptr_eq(&next.schema(), &first.schema()) || next.schema() == first.schema();
            if rows + next.num_rows() > COALESCE_ROWS_MAX || !same_schema {
                break;
            }
            rows += next.num_rows();
            match slot.pop() {
                Some(IngressMessage::Data(next)) => parts.push(next),
                // Only this thread pops: the peeked message is the one popped.
                _ => break,
            }
        }
        if parts.is_empty() {
            return (first, 0);
        }
        let taken = parts.len() as u64;
        parts.insert(0, first);
        if let Ok(batch) = datafusion::arrow::compute::concat_batches(&parts[0].schema(), &parts) {
            return (batch, taken);
        }
        // Equal schemas always concatenate; should it fail, the batches go on one at a
        // time, as pushed, counted as processed with the last.
        let mut parts = parts.into_iter();
        let slot = &mut self.ingress[index];
        let first = parts.next();
        slot.carry.extend(parts);
        slot.carry_extra = taken;
        match first {
            Some(first) => (first, 0),
            None => (
                RecordBatch::new_empty(Arc::new(datafusion::arrow::datatypes::Schema::empty())),
                0,
            ),
        }
    }

    /// Processes one message from ring `index`; returns true when the ring's stream ended.
    /// A step over its budget is counted.
    fn process_ingress(&mut self, index: usize, message: IngressMessage) -> bool {
        let started = Instant::now();
        let finished = self.process_ingress_message(index, message);
        if started.elapsed() > STEP_BUDGET {
            self.shared.overruns.fetch_add(1, Ordering::Relaxed);
        }
        finished
    }

    fn process_ingress_message(&mut self, index: usize, message: IngressMessage) -> bool {
        let stream = self.ingress[index].stream;
        match message {
            IngressMessage::Data(batch) => {
                self.shared
                    .rows_processed
                    .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                self.work
                    .push_back((stream, Message::Data(ChangeBatch::insert_only(batch))));
                self.drain_work();
                false
            }
            IngressMessage::Changes(changes) => {
                self.shared
                    .rows_processed
                    .fetch_add(changes.num_rows() as u64, Ordering::Relaxed);
                self.work.push_back((stream, Message::Data(*changes)));
                self.drain_work();
                false
            }
            IngressMessage::Watermark(ms) => {
                self.work.push_back((stream, Message::Watermark(ms)));
                self.drain_work();
                false
            }
            IngressMessage::Idle => {
                self.work.push_back((stream, Message::Idle));
                self.drain_work();
                false
            }
            IngressMessage::Barrier(barrier) => {
                // The ring is not read again until every ring delivered the barrier.
                self.ingress[index].barrier = Some(barrier.epoch());
                self.barrier_seen(&barrier);
                self.work.push_back((stream, Message::Barrier(barrier)));
                self.drain_work();
                false
            }
            IngressMessage::End => {
                self.work
                    .push_back((stream, Message::Watermark(WATERMARK_END_MS)));
                self.work.push_back((stream, Message::End));
                self.drain_work();
                true
            }
        }
    }

    /// Dispatches queued stream messages to outlets and reading queries until none remain.
    fn drain_work(&mut self) {
        while let Some((stream, message)) = self.work.pop_front() {
            if let Some(outlet) = self.outlets.get(&stream) {
                outlet.deliver(self.shared.index, &message);
            }
            match &message {
                Message::End => {
                    self.ended_streams.insert(stream);
                }
                Message::Barrier(barrier) => self.barrier_reached(stream, barrier),
                _ => {}
            }
            let Some(readers) = self.readers.get(&stream) else {
                continue;
            };
            let readers = readers.clone();
            for (query, leaf) in readers {
                self.push_into_query(query, leaf, message.clone());
            }
        }
    }

    /// The barrier reached stream `stream`'s output here: the query producing the stream
    /// (if one does) passed it.
    fn barrier_reached(&mut self, stream: StreamId, barrier: &Arc<Barrier>) {
        let producers: Vec<u64> = self
            .queries
            .iter()
            .filter(|(_, query)| query.output == stream)
            .map(|(id, _)| *id)
            .collect();
        if barrier.epoch() > self.barrier_done {
            self.barrier_in_flight(barrier).answered.extend(producers);
        }
    }

    /// Feeds a message into one query's leaf, queueing what its root produces.
    fn push_into_query(&mut self, id: u64, leaf: usize, message: Message) {
        self.step_query(id, |instance, out, remote| {
            instance.push(leaf, message, out, remote)
        });
    }

    /// Runs one step of query `id`, queueing what its root produces and sending what other
    /// workers must process. A failing query records its error, ends its output on this
    /// worker, and stops reading.
    fn step_query(
        &mut self,
        id: u64,
        step: impl FnOnce(
            &mut QueryInstance,
            &mut Vec<Message>,
            &mut Vec<Remote>,
        ) -> crate::error::Result<()>,
    ) {
        let Some(query) = self.queries.get_mut(&id) else {
            return;
        };
        let output = query.output;
        // An operator that panics (a bug, here or in a DataFusion kernel) fails its query,
        // not the worker every other query runs on.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            step(&mut query.instance, &mut self.produced, &mut self.remote)
        }))
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(ToString::to_string)
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(crate::error::CoreError::Internal(format!(
                "query {} panicked: {what}",
                query.instance.name()
            )))
        });
        let stats = query.instance.operator_stats();
        if let Some(outlet) = self.outlets.get(&output) {
            outlet.report_operator_stats(self.shared.index, stats);
        }
        for produced in self.produced.drain(..) {
            self.work.push_back((output, produced));
        }
        let remote: Vec<Remote> = self.remote.drain(..).collect();
        for (target, node, message) in remote {
            self.send_exchange(
                target,
                ExchangeMessage {
                    query: id,
                    node,
                    from: self.shared.index,
                    message,
                },
            );
        }
        if let Err(error) = result {
            if let Some(outlet) = self.outlets.get(&output) {
                outlet.record_error(error.to_string());
            }
            for readers in self.readers.values_mut() {
                readers.retain(|(query, _)| *query != id);
            }
            if !self.ended_streams.contains(&output) {
                self.work.push_back((output, Message::End));
            }
            // The other workers' exchanges wait for this worker's rows and progress; ending
            // its port lets them finish with what they have instead of stalling.
            let exchanges = self
                .queries
                .get(&id)
                .map(|q| q.instance.exchange_nodes())
                .unwrap_or_default();
            let me = self.shared.index;
            for node in exchanges {
                for target in (0..self.peers.len()).filter(|t| *t != me) {
                    self.send_exchange(
                        target,
                        ExchangeMessage {
                            query: id,
                            node,
                            from: me,
                            message: Message::End,
                        },
                    );
                }
            }
            self.queries.remove(&id);
        }
    }

    /// Sends an exchange message, keeping per-target order: behind earlier messages still
    /// waiting for room, or into the target's ring.
    fn send_exchange(&mut self, target: usize, message: ExchangeMessage) {
        let Some(Some(link)) = self.exchange_out.get_mut(target) else {
            return;
        };
        link.counters.enqueued.fetch_add(1, Ordering::SeqCst);
        if self.overflow.iter().any(|(t, _)| *t == target) {
            self.overflow.push_back((target, message));
            return;
        }
        match link.try_send(message) {
            Ok(()) => self.peers[target].wake(),
            Err(message) => {
                self.peers[target].wake();
                self.overflow.push_back((target, message));
            }
        }
    }

    /// Moves waiting exchange messages into rings with room; returns whether any moved.
    fn flush_overflow(&mut self) -> bool {
        if self.overflow.is_empty() {
            return false;
        }
        let mut moved = false;
        let mut blocked = vec![false; self.exchange_out.len()];
        let mut waiting = VecDeque::with_capacity(self.overflow.len());
        while let Some((target, message)) = self.overflow.pop_front() {
            let pushed = match self.exchange_out.get_mut(target) {
                Some(Some(link)) if !blocked[target] => link.try_send(message).err(),
                _ => Some(message),
            };
            match pushed {
                None => {
                    moved = true;
                    self.peers[target].wake();
                }
                Some(message) => {
                    blocked[target] = true;
                    waiting.push_back((target, message));
                }
            }
        }
        self.overflow = waiting;
        moved
    }

    /// Drains the exchange rings from other workers; returns whether anything arrived.
    fn poll_exchange(&mut self) -> bool {
        let mut did_work = false;
        for index in 0..self.exchange_in.len() {
            for _ in 0..RING_BUDGET_MESSAGES {
                let Some(message) = self.exchange_in[index].receive() else {
                    break;
                };
                did_work = true;
                // A query created before the sender saw its input is visible now.
                if self.shared.has_commands.swap(false, Ordering::SeqCst) {
                    self.apply_commands();
                }
                let ExchangeMessage {
                    query,
                    node,
                    from,
                    message,
                } = message;
                // Messages of a dropped query find no instance and are discarded.
                self.step_query(query, |instance, out, remote| {
                    instance.push_remote(node, from, message, out, remote)
                });
                self.drain_work();
                self.count_processed(&self.exchange_in[index].counters, 1);
            }
        }
        did_work
    }
}

/// `batch` cut into consecutive zero-copy slices of at most `rows` rows.
/// Restores one worker's share of a query's state; a panic (state decoding trusts bytes the
/// storage layer checksummed, so only a bug) is an error, not a dead worker.
fn restore_instance(instance: &mut QueryInstance, restore: &QueryRestore) -> Result<(), String> {
    let name = instance.name().to_string();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| instance.restore(restore)))
        .map_err(|_| format!("query {name}: restoring its state panicked"))?
        .map_err(|e| e.to_string())
}

fn slices(batch: &RecordBatch, rows: usize) -> VecDeque<RecordBatch> {
    (0..batch.num_rows())
        .step_by(rows.max(1))
        .map(|offset| batch.slice(offset, rows.min(batch.num_rows() - offset)))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Array, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;

    use super::slices;
    use super::{IngressCounters, IngressMessage, IngressSlot, StreamId};
    use crate::runtime::ingress::INGRESS_RING_CAPACITY_BATCHES;

    #[test]
    fn a_producer_waiting_on_a_full_ring_wakes_when_pops_drain_it_to_half() {
        let (mut producer, consumer) = rtrb::RingBuffer::new(INGRESS_RING_CAPACITY_BATCHES);
        for _ in 0..INGRESS_RING_CAPACITY_BATCHES {
            producer.push(IngressMessage::Idle).expect("room");
        }
        let counters = Arc::new(IngressCounters::default());
        let mut slot = IngressSlot {
            stream: StreamId::from(0_u8),
            consumer,
            counters: Arc::clone(&counters),
            done: false,
            carry: std::collections::VecDeque::new(),
            carry_extra: 0,
            mergeable: true,
            barrier: None,
        };
        let never = std::time::Duration::from_secs(10);
        let parked = Arc::clone(&counters);
        let waiting = std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let half = INGRESS_RING_CAPACITY_BATCHES / 2;
            while producer.slots() < half {
                counters
                    .room
                    .wait_at_most(|| producer.slots() >= half, never);
            }
            started.elapsed()
        });
        while !parked.room.is_waiting() {
            std::hint::spin_loop();
        }
        // Pop until the producer has room: the last pop must wake it.
        for _ in 0..INGRESS_RING_CAPACITY_BATCHES / 2 {
            slot.pop().expect("a message");
        }
        let waited = waiting.join().expect("producer");
        assert!(waited < never / 2, "woken by its timeout after {waited:?}");
    }

    #[test]
    fn slices_cover_a_batch_in_order() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let values = Int64Array::from_iter_values(0..10);
        let batch = RecordBatch::try_new(schema, vec![Arc::new(values)]).expect("batch");
        let parts = slices(&batch, 4);
        let sizes: Vec<usize> = parts.iter().map(RecordBatch::num_rows).collect();
        assert_eq!(sizes, vec![4, 4, 2]);
        let last = parts[2]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .expect("ints")
            .value(1);
        assert_eq!(last, 9);
    }
}
