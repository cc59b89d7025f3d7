//! Ingress: the bounded SPSC rings that carry a source's batches into the workers, one ring
//! per (source, worker). A full ring is backpressure: a blocking push waits for the worker,
//! a non-blocking push returns `Full`. Counters let a reader wait until everything enqueued
//! so far has been processed (read-your-writes for snapshot queries). The handle computes
//! the source's watermark over every row pushed, per source partition (the minimum over the
//! active ones), and tells every worker when it advances or when the source goes idle; it
//! also finds the rows late on arrival and routes them by its [`LatePolicy`]. A source with
//! keyed watermarks spreads its rows by key instead of round robin, so each key's rows reach
//! the workers in the order they were pushed.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::SortField;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::PhysicalExpr;

use super::checkpoint::Barrier;
use super::idle_clock::ClockShared;
use super::late::{route, LatePolicy, Routed};
use super::room::RoomWaiter;
use super::worker::WorkerShared;
use crate::change_batch::ChangeBatch;
use crate::error::{CoreError, Result};
use crate::operator::KeyRouter;
use crate::partition_watermarks::{PartitionWatermarks, SourceProgress};
use crate::watermark::WatermarkGenerator;

/// Capacity of one ingress ring, in batches.
pub const INGRESS_RING_CAPACITY_BATCHES: usize = 64;

/// Messages a full ring must drain to before its waiting producer is woken: it then pushes
/// this many in one go while the worker works on the rest (see `room`).
pub(crate) const INGRESS_RING_WAKE_AT_MESSAGES: usize = INGRESS_RING_CAPACITY_BATCHES / 2;

/// The watermark partition of rows pushed by the application (`push`, `INSERT`): all of
/// them, whichever ring they go to, as their order across pushers is the only one known.
const PUSH_PARTITION: u32 = 0;

/// The ring (and so the worker) carrying every change of a reference table; a query
/// created over the table starts from the table's rows on that worker too.
pub(crate) const TABLE_CHANGES_RING: usize = 0;

/// What a source sends to a worker.
#[derive(Debug, Clone)]
pub(crate) enum IngressMessage {
    Data(RecordBatch),
    /// A reference table's changes (retractions of replaced rows, then the new rows).
    Changes(Box<ChangeBatch>),
    /// The source's watermark, computed where every pushed row is seen.
    Watermark(i64),
    /// Every partition of the source is idle: it holds no watermark back until its next
    /// watermark (which the handle sends before the rows that end the silence).
    Idle,
    End,
    /// A checkpoint's barrier, behind every row the checkpoint covers.
    Barrier(Arc<Barrier>),
}

/// Messages enqueued into and processed out of one ring, and the producer waiting for room
/// in it.
#[derive(Debug, Default)]
pub(crate) struct IngressCounters {
    pub(crate) enqueued: AtomicU64,
    pub(crate) processed: AtomicU64,
    pub(crate) room: RoomWaiter,
}

/// The producing end of one ring.
pub(crate) struct RingProducer {
    producer: rtrb::Producer<IngressMessage>,
    counters: Arc<IngressCounters>,
    worker: Arc<WorkerShared>,
}

impl RingProducer {
    pub(crate) fn new(
        producer: rtrb::Producer<IngressMessage>,
        counters: Arc<IngressCounters>,
        worker: Arc<WorkerShared>,
    ) -> Self {
        Self {
            producer,
            counters,
            worker,
        }
    }

    /// True when a push would not wait.
    fn has_room(&self) -> bool {
        self.producer.slots() > 0
    }

    /// Pushes without waiting; gives the message back when the ring is full.
    fn try_push(&mut self, message: IngressMessage) -> std::result::Result<(), IngressMessage> {
        match self.producer.push(message) {
            Ok(()) => {
                self.counters.enqueued.fetch_add(1, Ordering::SeqCst);
                self.worker.wake();
                Ok(())
            }
            Err(rtrb::PushError::Full(message)) => {
                self.worker.wake();
                Err(message)
            }
        }
    }

    /// Pushes, waiting while the ring is full, until `stop` is set.
    fn push_blocking(&mut self, mut message: IngressMessage, stop: &[&AtomicBool]) -> Result<()> {
        loop {
            match self.try_push(message) {
                Ok(()) => return Ok(()),
                Err(returned) => message = returned,
            }
            if stop.iter().any(|flag| flag.load(Ordering::Acquire)) {
                return Err(CoreError::ShutDown);
            }
            let producer = &self.producer;
            self.counters.room.wait(|| {
                producer.slots() >= INGRESS_RING_CAPACITY_BATCHES - INGRESS_RING_WAKE_AT_MESSAGES
            });
        }
    }
}

/// Where a source's watermark partitions come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFeed {
    /// The application pushes rows (`push`, `try_push`): they are one partition, open from
    /// the start, so a source nobody pushes to goes idle after its timeout.
    Push,
    /// A connector reader names its partitions (`open_partition`, `push_to`,
    /// `end_partition`).
    Reader,
}

/// The watermark a handle computes over the rows pushed through it.
/// A source's watermark state at a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceWatermarkState {
    /// The source's watermark (epoch milliseconds).
    pub watermark_ms: i64,
    /// Each open partition's watermark.
    pub partitions: Vec<(u32, i64)>,
}

struct SourceWatermark {
    /// The `WATERMARK FOR` expression and the source's watermark, which never moves back.
    generator: WatermarkGenerator,
    partitions: PartitionWatermarks,
    /// The workers were last told that the source is idle.
    idle: bool,
}

/// The producing side of a source: one ring per worker. Cloneable handles share it.
pub struct IngressHandle {
    name: String,
    rings: Vec<Mutex<RingProducer>>,
    next_ring: AtomicUsize,
    closed: AtomicBool,
    abandoned: AtomicBool,
    shutdown: Arc<AtomicBool>,
    /// The source's watermark, computed here over every pushed row and sent to all workers,
    /// so a worker that holds no partition of the source is never behind.
    watermark: Option<Mutex<SourceWatermark>>,
    /// How long a partition may be silent before it is idle.
    idle_timeout: Option<Duration>,
    /// Told when a source that could not go idle can again (its partitions have an idle
    /// timeout).
    clock: Option<Arc<ClockShared>>,
    /// Where rows late on arrival go (only where the watermark is computed here).
    late: LatePolicy,
    late_rows: AtomicU64,
    /// For a source with keyed watermarks: rows go to the ring of the worker owning their
    /// key, whatever partition they were pushed to, so all rows of a key take one path
    /// through the workers and keyed aggregations see them in push order.
    key_router: Option<KeyRouter>,
}

impl std::fmt::Debug for IngressHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngressHandle")
            .field("name", &self.name)
            .field("rings", &self.rings.len())
            .finish_non_exhaustive()
    }
}

impl IngressHandle {
    /// A handle over `rings`. With a watermark, its partitions are those `feed` says;
    /// partitions silent for `idle_timeout` go idle, which `clock` watches for.
    pub(crate) fn new(
        name: String,
        rings: Vec<RingProducer>,
        shutdown: Arc<AtomicBool>,
        feed: SourceFeed,
        watermark: Option<(WatermarkGenerator, Option<Duration>)>,
        clock: Option<Arc<ClockShared>>,
        late: LatePolicy,
    ) -> Self {
        let idle_timeout = watermark.as_ref().and_then(|(_, timeout)| *timeout);
        let watermark = watermark.map(|(generator, idle_timeout)| {
            let mut partitions = PartitionWatermarks::new(idle_timeout);
            if feed == SourceFeed::Push {
                partitions.open(PUSH_PARTITION, Instant::now());
            }
            Mutex::new(SourceWatermark {
                generator,
                partitions,
                idle: false,
            })
        });
        Self {
            watermark,
            idle_timeout,
            clock,
            late,
            late_rows: AtomicU64::new(0),
            key_router: None,
            name,
            rings: rings.into_iter().map(Mutex::new).collect(),
            next_ring: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            shutdown,
        }
    }

    /// Spreads rows over the workers by the hash of the source's `columns` (the keys of its
    /// keyed watermark) rather than by partition. Fails for key types that cannot be hashed
    /// into a key.
    pub fn routed_by_key(mut self, schema: &Schema, columns: &[usize]) -> Result<Self> {
        let mut keys: Vec<Arc<dyn PhysicalExpr>> = Vec::with_capacity(columns.len());
        let mut fields = Vec::with_capacity(columns.len());
        for &index in columns {
            let field = schema.fields().get(index).ok_or_else(|| {
                CoreError::Internal(format!(
                    "source {}: key column {index} of {} columns",
                    self.name,
                    schema.fields().len()
                ))
            })?;
            keys.push(Arc::new(Column::new(field.name(), index)));
            fields.push(SortField::new(field.data_type().clone()));
        }
        let router = KeyRouter::new(keys, fields).map_err(|source| CoreError::Expression {
            context: format!("keys of source {}", self.name),
            source,
        })?;
        self.key_router = Some(router);
        Ok(self)
    }

    /// Number of rings (one per worker).
    pub fn partitions(&self) -> usize {
        self.rings.len()
    }

    /// Rows that were late on arrival: their event time was behind the watermark computed
    /// over the rows pushed before them.
    pub fn late_rows(&self) -> u64 {
        self.late_rows.load(Ordering::Relaxed)
    }

    /// Pushes a batch to the next ring in round-robin order, or to the next with room when
    /// that one is full (see [`Self::ring_with_room`]), waiting while all are full. Pushed
    /// batches are one watermark partition, whichever ring they take.
    pub fn push(&self, batch: RecordBatch) -> Result<()> {
        let ring = self.ring_with_room();
        self.push_routed(ring, PUSH_PARTITION, batch, true)
    }

    /// Pushes a batch of source partition `partition` to ring `partition % partitions()`,
    /// waiting while its queue is full. Batches of one partition are processed in order, and
    /// the partition has a watermark of its own (it is opened if it was not).
    pub fn push_to(&self, partition: u32, batch: RecordBatch) -> Result<()> {
        self.push_routed(partition as usize, partition, batch, true)
    }

    /// Pushes a batch without waiting; `CoreError::Full` when the ring (or the side stream's,
    /// for late rows) is full, and then nothing of the batch was pushed.
    pub fn try_push(&self, batch: RecordBatch) -> Result<()> {
        let ring = self.ring_with_room();
        self.push_routed(ring, PUSH_PARTITION, batch, false)
    }

    /// The ring a pushed batch takes: the next in round-robin order if it has room, else
    /// the first after it that has, else the next in order (whose push then waits or
    /// reports `Full`). A worker that fell behind gets no more batches until it catches up,
    /// and the others do not run dry meanwhile: waiting on the full ring of the slower
    /// worker, the pushing thread left the faster one idle (in the hopping-window
    /// benchmark two workers' on-core times over the same number of batches differed by
    /// up to 12%).
    fn ring_with_room(&self) -> usize {
        let next = self.next_ring.fetch_add(1, Ordering::Relaxed);
        let rings = self.rings.len();
        if rings == 1 {
            // No other ring to take: spare the push a second lock of its ring.
            return 0;
        }
        (0..rings)
            .map(|step| (next + step) % rings)
            .find(|&ring| lock_ring(&self.rings[ring]).has_room())
            .unwrap_or(next % rings)
    }

    /// Pushes a reference table's changes into ring `TABLE_CHANGES_RING`, waiting while it is full.
    /// One ring keeps a table's changes in the order they were made on every worker they
    /// reach (a retraction never overtakes the insert it retracts). The rows advance the
    /// watermark as pushed rows do, but none is late: a version behind the watermark is
    /// left to the joins reading it to judge.
    pub fn push_changes(&self, changes: ChangeBatch) -> Result<()> {
        let message = IngressMessage::Changes(Box::new(changes));
        let Some(watermark) = &self.watermark else {
            let mut ring = lock_ring(&self.rings[TABLE_CHANGES_RING]);
            self.check_open()?;
            return ring.push_blocking(message, &[&self.shutdown, &self.abandoned]);
        };
        let mut state = watermark.lock().unwrap_or_else(PoisonError::into_inner);
        let could_expire = state.partitions.next_expiry().is_some();
        let batch_max = match &message {
            IngressMessage::Changes(changes) => state.generator.batch_max(changes.batch())?,
            _ => None,
        };
        if state.idle {
            self.broadcast(&IngressMessage::Watermark(state.generator.current_ms()))?;
            state.idle = false;
        }
        {
            let mut ring = lock_ring(&self.rings[TABLE_CHANGES_RING]);
            self.check_open()?;
            ring.push_blocking(message, &[&self.shutdown, &self.abandoned])?;
        }
        let now = Instant::now();
        state.partitions.observe(PUSH_PARTITION, batch_max, now);
        state.partitions.expire(now);
        self.publish(&mut state)?;
        self.wake_clock(could_expire, &state);
        Ok(())
    }

    /// The source's watermark and its partitions', for a checkpoint (`None` for a source
    /// without a watermark). Read while pushes are held, it belongs to the cut.
    pub fn watermark_state(&self) -> Option<SourceWatermarkState> {
        let state = self
            .watermark
            .as_ref()?
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Some(SourceWatermarkState {
            watermark_ms: state.generator.current_ms(),
            partitions: state.partitions.watermarks(),
        })
    }

    /// Restores the watermark state a checkpoint recorded, before any row is pushed, and
    /// tells the workers the source's watermark.
    pub fn restore_watermark_state(&self, saved: &SourceWatermarkState) -> Result<()> {
        let Some(watermark) = &self.watermark else {
            return Ok(());
        };
        let mut state = watermark.lock().unwrap_or_else(PoisonError::into_inner);
        state.generator.restore(saved.watermark_ms);
        let now = Instant::now();
        for &(partition, ms) in &saved.partitions {
            state.partitions.restore(partition, ms, now);
        }
        let current = state.generator.current_ms();
        if current > crate::watermark::WATERMARK_MIN_MS && self.late.sends_watermarks() {
            self.broadcast(&IngressMessage::Watermark(current))?;
        }
        Ok(())
    }

    /// Source partition `partition` will produce rows: from now on it holds the watermark
    /// back, also before its first row, until it ends or goes idle.
    pub fn open_partition(&self, partition: u32) -> Result<()> {
        self.update_partitions(|partitions, now| partitions.open(partition, now))
    }

    /// Source partition `partition` produced its last row: it no longer holds the watermark
    /// back.
    pub fn end_partition(&self, partition: u32) -> Result<()> {
        self.update_partitions(|partitions, _| partitions.end(partition))
    }

    fn update_partitions(
        &self,
        change: impl FnOnce(&mut PartitionWatermarks, Instant),
    ) -> Result<()> {
        let Some(watermark) = &self.watermark else {
            return Ok(());
        };
        let mut state = watermark.lock().unwrap_or_else(PoisonError::into_inner);
        let could_expire = state.partitions.next_expiry().is_some();
        let now = Instant::now();
        change(&mut state.partitions, now);
        state.partitions.expire(now);
        self.publish(&mut state)?;
        self.wake_clock(could_expire, &state);
        Ok(())
    }

    fn push_routed(
        &self,
        ring: usize,
        partition: u32,
        batch: RecordBatch,
        wait: bool,
    ) -> Result<()> {
        let Some(watermark) = &self.watermark else {
            let routed = Routed {
                own: Some(batch),
                ..Routed::default()
            };
            return self.enqueue(ring, routed, wait);
        };
        // Held until the rows and the watermark they advance are queued, so concurrent
        // pushers agree on one order: a row is late exactly when a watermark queued before
        // it (on every ring) had passed it, and workers receive watermarks in increasing order.
        let mut state = watermark.lock().unwrap_or_else(PoisonError::into_inner);
        let started = Instant::now();
        let could_expire = state.partitions.next_expiry().is_some();
        let batch_max = state.generator.batch_max(&batch)?;
        let routed = route(&self.late, &state.generator, batch)?;
        let late_rows = routed.late_rows;
        if state.idle {
            // Rows end the silence: every worker hears so before any of them arrives.
            self.broadcast(&IngressMessage::Watermark(state.generator.current_ms()))?;
            state.idle = false;
        }
        match &self.key_router {
            Some(by_key) => self.enqueue_by_key(by_key, routed, wait)?,
            None => self.enqueue(ring, routed, wait)?,
        }
        self.late_rows.fetch_add(late_rows, Ordering::Relaxed);
        let now = Instant::now();
        state
            .partitions
            .discount(now.saturating_duration_since(started));
        state.partitions.observe(partition, batch_max, now);
        state.partitions.expire(now);
        self.publish(&mut state)?;
        self.wake_clock(could_expire, &state);
        Ok(())
    }

    /// Marks idle the partitions silent for their timeout at `now`, telling the workers what
    /// changes; returns when to look again (`None`: not before a row or partition arrives).
    /// A handle busy pushing is not silent: it is looked at again a timeout later.
    pub(crate) fn expire_idle(&self, now: Instant) -> Option<Instant> {
        let watermark = self.watermark.as_ref()?;
        let mut state = match watermark.try_lock() {
            Ok(state) => state,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            // The holder is pushing; its own push looks at idleness when it is done.
            Err(TryLockError::WouldBlock) => return self.idle_timeout.map(|t| now + t),
        };
        state.partitions.expire(now);
        // Published even when nothing expired now: a push that failed after announcing the
        // end of a silence leaves the workers to be told again. A closed or shut-down
        // runtime has nobody left to tell.
        let _ = self.publish(&mut state);
        state.partitions.next_expiry()
    }

    /// Tells every worker what the partitions allow now: a watermark that advanced, or
    /// that the source went idle.
    fn publish(&self, state: &mut SourceWatermark) -> Result<()> {
        // A stream without the source's watermarks (a late-data reader) still judges
        // lateness by it.
        let sends = self.late.sends_watermarks();
        match state.partitions.progress() {
            SourceProgress::Active(ms) => {
                let advanced = state.generator.advance(ms);
                let resumed = std::mem::take(&mut state.idle);
                match advanced {
                    Some(watermark) if sends => {
                        self.broadcast(&IngressMessage::Watermark(watermark))
                    }
                    None if resumed => {
                        self.broadcast(&IngressMessage::Watermark(state.generator.current_ms()))
                    }
                    _ => Ok(()),
                }
            }
            SourceProgress::Idle if sends && !state.idle => {
                state.idle = true;
                self.broadcast(&IngressMessage::Idle)
            }
            SourceProgress::Idle | SourceProgress::Closed => Ok(()),
        }
    }

    /// Sends `message` into every ring, waiting for room.
    fn broadcast(&self, message: &IngressMessage) -> Result<()> {
        for ring in &self.rings {
            lock_ring(ring).push_blocking(message.clone(), &[&self.shutdown, &self.abandoned])?;
        }
        Ok(())
    }

    /// The idle clock sleeps while no partition can expire; tell it when one can again.
    fn wake_clock(&self, could_expire: bool, state: &SourceWatermark) {
        if let Some(clock) = &self.clock {
            if !could_expire && state.partitions.next_expiry().is_some() {
                clock.poke();
            }
        }
    }

    /// Queues the routed rows: its own into ring `partition`, diverted ones into the same
    /// partition of the side stream. Without `wait`, nothing is queued unless all of it fits.
    fn enqueue(&self, partition: usize, routed: Routed, wait: bool) -> Result<()> {
        let mut ring = lock_ring(&self.rings[partition % self.rings.len()]);
        // Checked under the ring's lock so no row can follow the end-of-stream `finish` sent.
        self.check_open()?;
        let side = match (&self.late, routed.diverted) {
            (LatePolicy::Divert(side), Some(rows)) => {
                let ring = lock_ring(&side.rings[partition % side.rings.len()]);
                side.check_open()?;
                Some((side, ring, rows))
            }
            _ => None,
        };
        if !wait {
            let own_fits = routed.own.is_none() || ring.has_room();
            let side_fits = side.as_ref().is_none_or(|(_, ring, _)| ring.has_room());
            if !own_fits || !side_fits {
                let full = match &side {
                    Some((side, _, _)) if own_fits => &side.name,
                    _ => &self.name,
                };
                return Err(CoreError::Full {
                    source_name: full.clone(),
                    capacity: INGRESS_RING_CAPACITY_BATCHES,
                });
            }
        }
        // Both rings are locked and had room if `wait` is off: the pushes below do not wait.
        if let Some(rows) = routed.own {
            ring.push_blocking(
                IngressMessage::Data(rows),
                &[&self.shutdown, &self.abandoned],
            )?;
        }
        if let Some((side, mut ring, rows)) = side {
            ring.push_blocking(
                IngressMessage::Data(rows),
                &[&side.shutdown, &side.abandoned],
            )?;
        }
        Ok(())
    }

    /// Queues the routed rows into the rings of the workers owning their keys. Without
    /// `wait`, nothing is queued unless all of it fits.
    fn enqueue_by_key(&self, by_key: &KeyRouter, routed: Routed, wait: bool) -> Result<()> {
        if routed.diverted.is_some() {
            return Err(CoreError::Internal(format!(
                "source {}: late rows diverted from a source routed by key",
                self.name
            )));
        }
        let Some(rows) = routed.own else {
            return Ok(());
        };
        let shares = by_key
            .route(&ChangeBatch::insert_only(rows), self.rings.len())
            .map_err(|source| CoreError::Expression {
                context: format!("routing the rows of source {} by key", self.name),
                source,
            })?;
        // Rings are locked in worker order (shares come in that order), as `finish` locks
        // them, so pushers and `finish` cannot wait on each other in a cycle.
        let mut locked = Vec::with_capacity(shares.len());
        for (worker, rows) in shares {
            locked.push((lock_ring(&self.rings[worker]), rows.into_batch()));
        }
        self.check_open()?;
        if !wait && locked.iter().any(|(ring, _)| !ring.has_room()) {
            return Err(CoreError::Full {
                source_name: self.name.clone(),
                capacity: INGRESS_RING_CAPACITY_BATCHES,
            });
        }
        for (mut ring, rows) in locked {
            ring.push_blocking(
                IngressMessage::Data(rows),
                &[&self.shutdown, &self.abandoned],
            )?;
        }
        Ok(())
    }

    /// Ends the source: the final watermark and end-of-stream reach every worker, and later
    /// pushes are refused. Idempotent.
    pub fn finish(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        for ring in &self.rings {
            lock_ring(ring)
                .push_blocking(IngressMessage::End, &[&self.shutdown, &self.abandoned])?;
        }
        // The late rows of a source end with it.
        if let LatePolicy::Divert(side) = &self.late {
            side.finish()?;
        }
        Ok(())
    }

    /// Gives up on the source without ending it (it is being dropped): later and waiting
    /// pushes fail instead of blocking on a queue nobody drains.
    pub fn abandon(&self) {
        self.closed.store(true, Ordering::Release);
        self.abandoned.store(true, Ordering::Release);
        if let LatePolicy::Divert(side) = &self.late {
            side.abandon();
        }
    }

    /// Puts a checkpoint's barrier into every ring, behind what was pushed so far; the
    /// caller holds pushes still meanwhile. A finished or abandoned source gets none: its
    /// rings end (or are removed) before any barrier would be read.
    pub(crate) fn inject_barrier(&self, barrier: &Arc<Barrier>) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        for ring in &self.rings {
            lock_ring(ring).push_blocking(
                IngressMessage::Barrier(Arc::clone(barrier)),
                &[&self.shutdown, &self.abandoned],
            )?;
        }
        Ok(())
    }

    /// True once `finish` was called.
    pub fn is_finished(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(CoreError::Closed {
                source_name: self.name.clone(),
            });
        }
        if self.shutdown.load(Ordering::Acquire) {
            return Err(CoreError::ShutDown);
        }
        Ok(())
    }
}

fn lock_ring(ring: &Mutex<RingProducer>) -> MutexGuard<'_, RingProducer> {
    ring.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field};

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1_i64]))]).expect("batch")
    }

    /// A push source over `workers` rings that nobody drains, and the rings' reading ends.
    fn handle(workers: usize) -> (IngressHandle, Vec<rtrb::Consumer<IngressMessage>>) {
        let mut producers = Vec::new();
        let mut consumers = Vec::new();
        for index in 0..workers {
            let (producer, consumer) = rtrb::RingBuffer::new(INGRESS_RING_CAPACITY_BATCHES);
            producers.push(RingProducer::new(
                producer,
                Arc::new(IngressCounters::default()),
                Arc::new(WorkerShared::new(index)),
            ));
            consumers.push(consumer);
        }
        let handle = IngressHandle::new(
            "s".into(),
            producers,
            Arc::new(AtomicBool::new(false)),
            SourceFeed::Push,
            None,
            None,
            LatePolicy::Keep,
        );
        (handle, consumers)
    }

    #[test]
    fn pushes_take_turns_and_pass_a_full_ring_by_while_another_has_room() {
        let (handle, mut consumers) = handle(2);
        for _ in 0..2 * INGRESS_RING_CAPACITY_BATCHES {
            handle.try_push(batch()).expect("room");
        }
        // Round robin: each ring took half.
        assert!(consumers
            .iter()
            .all(|c| c.slots() == INGRESS_RING_CAPACITY_BATCHES));
        // The second worker catches up by ten batches; the first stays behind.
        for _ in 0..10 {
            consumers[1].pop().expect("a batch");
        }
        // All ten pushes go to the second ring, whatever the turn says.
        for push in 0..10 {
            handle
                .try_push(batch())
                .unwrap_or_else(|e| panic!("push {push}: {e}"));
        }
        assert_eq!(consumers[1].slots(), INGRESS_RING_CAPACITY_BATCHES);
        // Both full: the next push reports it.
        assert!(matches!(
            handle.try_push(batch()),
            Err(CoreError::Full { .. })
        ));
    }
}
