//! Ingress: the bounded SPSC rings that carry a source's batches into the workers, one ring
//! per (source, worker). A full ring is backpressure: a blocking push waits for the worker,
//! a non-blocking push returns `Full`. Counters let a reader wait until everything enqueued
//! so far has been processed (read-your-writes for snapshot queries).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use datafusion::arrow::record_batch::RecordBatch;

use super::worker::WorkerShared;
use crate::error::{CoreError, Result};
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
    ) -> Self {
        Self {
            watermark: watermark.map(Mutex::new),
            name,
            rings: rings.into_iter().map(Mutex::new).collect(),
            next_ring: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            abandoned: AtomicBool::new(false),
            shutdown,
        }
    }

    /// Number of partitions (one per worker).
    pub fn partitions(&self) -> usize {
        self.rings.len()
    }

    /// Pushes a batch to the next partition in round-robin order, waiting while its queue is
    /// full.
    pub fn push(&self, batch: RecordBatch) -> Result<()> {
        let partition = self.next_ring.fetch_add(1, Ordering::Relaxed);
        self.push_to(partition, batch)
    }

    fn batch_max(&self, batch: &RecordBatch) -> Result<Option<i64>> {
        match &self.watermark {
            None => Ok(None),
            Some(generator) => generator
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .batch_max(batch),
        }
    }

    /// After rows were pushed: if they advance the source's watermark, every worker
    /// receives it behind the rows already in its queue.
    fn advance_watermark(&self, batch_max: Option<i64>) -> Result<()> {
        let (Some(generator), Some(batch_max)) = (&self.watermark, batch_max) else {
            return Ok(());
        };
        // Held while broadcasting, so workers receive watermarks in increasing order.
        let mut generator = generator.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(watermark) = generator.advance(batch_max) else {
            return Ok(());
        };
        for ring in &self.rings {
            let mut ring = ring.lock().unwrap_or_else(PoisonError::into_inner);
            ring.push_blocking(
                IngressMessage::Watermark(watermark),
                &[&self.shutdown, &self.abandoned],
            )?;
        }
        Ok(())
    }

    /// Pushes a batch to `partition % partitions()`, waiting while its queue is full. Batches
    /// pushed to one partition are processed in order.
    pub fn push_to(&self, partition: usize, batch: RecordBatch) -> Result<()> {
        let batch_max = self.batch_max(&batch)?;
        self.push_to_ring(partition, batch)?;
        self.advance_watermark(batch_max)
    }

    fn push_to_ring(&self, partition: usize, batch: RecordBatch) -> Result<()> {
        let ring = &self.rings[partition % self.rings.len()];
        let mut ring = ring.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked under the ring's lock so no row can follow the end-of-stream `finish` sent.
        self.check_open()?;
        ring.push_blocking(
            IngressMessage::Data(batch),
            &[&self.shutdown, &self.abandoned],
        )
    }

    /// Pushes a batch without waiting; `CoreError::Full` when the partition's queue is full.
    pub fn try_push(&self, batch: RecordBatch) -> Result<()> {
        let partition = self.next_ring.fetch_add(1, Ordering::Relaxed);
        let batch_max = self.batch_max(&batch)?;
        {
            let ring = &self.rings[partition % self.rings.len()];
            let mut ring = ring.lock().unwrap_or_else(PoisonError::into_inner);
            self.check_open()?;
            ring.try_push(IngressMessage::Data(batch))
                .map_err(|_| CoreError::Full {
                    source_name: self.name.clone(),
                    capacity: INGRESS_RING_CAPACITY_BATCHES,
                })?;
        }
        self.advance_watermark(batch_max)
    }

    /// Ends the source: the final watermark and end-of-stream reach every worker, and later
    /// pushes are refused. Idempotent.
    pub fn finish(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        for ring in &self.rings {
            let mut ring = ring.lock().unwrap_or_else(PoisonError::into_inner);
            ring.push_blocking(IngressMessage::End, &[&self.shutdown, &self.abandoned])?;
        }
        Ok(())
    }

    /// Gives up on the source without ending it (it is being dropped): later and waiting
    /// pushes fail instead of blocking on a queue nobody drains.
    pub fn abandon(&self) {
        self.closed.store(true, Ordering::Release);
        self.abandoned.store(true, Ordering::Release);
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
