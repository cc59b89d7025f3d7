//! Ingress: the bounded SPSC rings that carry a source's batches into the workers, one ring
//! per (source, worker). A full ring is backpressure: a blocking push waits for the worker,
//! a non-blocking push returns `Full`. Counters let a reader wait until everything enqueued
//! so far has been processed (read-your-writes for snapshot queries). Where the handle
//! computes the source's watermark, it also finds the rows late on arrival and routes them
//! by its [`LatePolicy`]. A source with keyed watermarks spreads its rows by key instead of
//! round robin, so each key's rows reach the workers in the order they were pushed.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::SortField;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::PhysicalExpr;

use super::late::{route, LatePolicy, Routed};
use super::worker::WorkerShared;
use crate::change_batch::ChangeBatch;
use crate::error::{CoreError, Result};
use crate::operator::KeyRouter;
use crate::watermark::WatermarkGenerator;

/// Capacity of one ingress ring, in batches.
pub const INGRESS_RING_CAPACITY_BATCHES: usize = 64;

/// Longest a blocked producer sleeps between retries.
const PRODUCER_BACKOFF_MAX_US: u64 = 500;

/// What a source sends to a worker.
#[derive(Debug)]
pub(crate) enum IngressMessage {
    Data(RecordBatch),
    /// The source's watermark, computed where every pushed row is seen (push sources).
    Watermark(i64),
    End,
}

/// Messages enqueued into and processed out of one ring.
#[derive(Debug, Default)]
pub(crate) struct IngressCounters {
    pub(crate) enqueued: AtomicU64,
    pub(crate) processed: AtomicU64,
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
        let mut backoff_us = 1;
        loop {
            match self.try_push(message) {
                Ok(()) => return Ok(()),
                Err(returned) => message = returned,
            }
            if stop.iter().any(|flag| flag.load(Ordering::Acquire)) {
                return Err(CoreError::ShutDown);
            }
            std::thread::sleep(Duration::from_micros(backoff_us));
            backoff_us = (backoff_us * 2).min(PRODUCER_BACKOFF_MAX_US);
        }
    }
}

/// The producing side of a source: one ring per worker. Cloneable handles share it.
pub struct IngressHandle {
    name: String,
    rings: Vec<Mutex<RingProducer>>,
    next_ring: AtomicUsize,
    closed: AtomicBool,
    abandoned: AtomicBool,
    shutdown: Arc<AtomicBool>,
    /// For a source whose rows are spread over the workers by the pusher (round robin), the
    /// watermark is computed here over every pushed row and sent to all workers; otherwise
    /// each worker computes its own partition's watermark.
    watermark: Option<Mutex<WatermarkGenerator>>,
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
    pub(crate) fn new(
        name: String,
        rings: Vec<RingProducer>,
        shutdown: Arc<AtomicBool>,
        watermark: Option<WatermarkGenerator>,
        late: LatePolicy,
    ) -> Self {
        Self {
            watermark: watermark.map(Mutex::new),
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

    /// Number of partitions (one per worker).
    pub fn partitions(&self) -> usize {
        self.rings.len()
    }

    /// Rows that were late on arrival: their event time was behind the watermark computed
    /// over the rows pushed before them.
    pub fn late_rows(&self) -> u64 {
        self.late_rows.load(Ordering::Relaxed)
    }

    /// Pushes a batch to the next partition in round-robin order, waiting while its queue is
    /// full.
    pub fn push(&self, batch: RecordBatch) -> Result<()> {
        let partition = self.next_ring.fetch_add(1, Ordering::Relaxed);
        self.push_to(partition, batch)
    }

    /// Pushes a batch to `partition % partitions()`, waiting while its queue is full. Batches
    /// pushed to one partition are processed in order.
    pub fn push_to(&self, partition: usize, batch: RecordBatch) -> Result<()> {
        self.push_routed(partition, batch, true)
    }

    /// Pushes a batch without waiting; `CoreError::Full` when the partition's queue (or the
    /// side stream's, for late rows) is full, and then nothing of the batch was pushed.
    pub fn try_push(&self, batch: RecordBatch) -> Result<()> {
        let partition = self.next_ring.fetch_add(1, Ordering::Relaxed);
        self.push_routed(partition, batch, false)
    }

    fn push_routed(&self, partition: usize, batch: RecordBatch, wait: bool) -> Result<()> {
        let Some(generator) = &self.watermark else {
            let routed = Routed {
                own: Some(batch),
                ..Routed::default()
            };
            return self.enqueue(partition, routed, wait);
        };
        // Held until the rows and the watermark they advance are queued, so concurrent
        // pushers agree on one order: a row is late exactly when a watermark queued before
        // it (on every ring) had passed it, and workers receive watermarks in increasing order.
        let mut generator = generator.lock().unwrap_or_else(PoisonError::into_inner);
        let batch_max = generator.batch_max(&batch)?;
        let routed = route(&self.late, &generator, batch)?;
        let late_rows = routed.late_rows;
        match &self.key_router {
            Some(by_key) => self.enqueue_by_key(by_key, routed, wait)?,
            None => self.enqueue(partition, routed, wait)?,
        }
        self.late_rows.fetch_add(late_rows, Ordering::Relaxed);
        let advanced = batch_max.and_then(|ms| generator.advance(ms));
        match advanced {
            Some(watermark) if self.late.sends_watermarks() => {
                for ring in &self.rings {
                    lock_ring(ring).push_blocking(
                        IngressMessage::Watermark(watermark),
                        &[&self.shutdown, &self.abandoned],
                    )?;
                }
                Ok(())
            }
            _ => Ok(()),
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
