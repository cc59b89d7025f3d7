//! `StreamOutlet`: where a stream's messages leave the workers: the materialized view's
//! result table, live subscribers, a sink's channel, and the stream's counters (rows,
//! per-worker watermark and idleness, end, first error). Shared by all workers; locks are
//! taken once per batch, never per row.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;

use super::checkpoint::{Barrier, ViewSnapshot};
use super::progress::Progress;
use super::query_instance::OperatorStats;
use super::sink_feed::{SinkFeed, SinkItem};
use crate::change_batch::ChangeBatch;
use crate::operator::Message;
use crate::reference_table::ReferenceTable;
use crate::result_table::ResultTable;
use crate::watermark::WATERMARK_MIN_MS;

/// Capacity of a subscriber's channel, in change batches. A subscriber that falls this far
/// behind slows the pipeline down (backpressure) rather than growing memory.
pub const SUBSCRIBER_CHANNEL_CAPACITY_BATCHES: usize = 256;

/// What a sink's writer thread receives.
#[derive(Debug)]
pub enum EgressMessage {
    /// Rows to write.
    Data(ChangeBatch),
    /// Every worker finished the stream: flush and close.
    End,
    /// A checkpoint's barrier: every row before this belongs to epoch `.0`, which the sink
    /// pre-commits; rows after it belong to the next epoch. It reaches the sink once every
    /// worker's share of the stream reached it (see `sink_feed`).
    Barrier(u64),
    /// The checkpoint of epoch `.0` is durable: the sink commits that epoch.
    Commit(u64),
}

/// A function run on the worker thread for every batch a stream delivers there (see
/// [`StreamOutlet::add_callback`]).
pub type BatchCallback = Box<dyn Fn(&ChangeBatch) + Send + Sync>;

/// A stream's callbacks, by id.
struct CallbackList(Vec<(u64, BatchCallback)>);

impl std::fmt::Debug for CallbackList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} callback(s)", self.0.len())
    }
}

/// Identifies a stream inside one runtime.
pub type StreamId = u64;

/// The exit of one stream.
#[derive(Debug)]
pub struct StreamOutlet {
    name: String,
    schema: SchemaRef,
    workers: usize,
    table: Option<Arc<ResultTable>>,
    /// The reference table whose changelog the stream carries, if it is one.
    reference: Option<Arc<ReferenceTable>>,
    subscribers: Mutex<Vec<tokio::sync::mpsc::Sender<ChangeBatch>>>,
    /// Callbacks run on the delivering worker's thread, by id; `has_callbacks` spares the
    /// lock when there are none.
    callbacks: Mutex<CallbackList>,
    has_callbacks: AtomicBool,
    next_callback: AtomicU64,
    sinks: Mutex<SinkFeed>,
    rows: AtomicU64,
    watermarks_ms: Vec<AtomicI64>,
    /// Per worker: the stream's last word there was that it is idle.
    idle: Vec<AtomicBool>,
    ended: Vec<AtomicBool>,
    ended_workers: AtomicUsize,
    state_entries: Vec<AtomicU64>,
    state_bytes: Vec<AtomicU64>,
    state_bytes_entries: Vec<AtomicU64>,
    late_rows: Vec<AtomicU64>,
    error: Mutex<Option<String>>,
    progress: Arc<Progress>,
    shutdown: Arc<AtomicBool>,
}

/// Longest pause between retries while a subscriber's or sink's channel is full.
const DELIVERY_BACKOFF_MAX_US: u64 = 1_000;

/// Outcome of handing a batch to one receiver.
enum Delivery {
    Sent,
    Gone,
}

/// Outcome of one attempt to hand a batch over.
enum Offer {
    Taken,
    Full(ChangeBatch),
    Gone,
}

impl StreamOutlet {
    pub(crate) fn new(
        name: String,
        schema: SchemaRef,
        workers: usize,
        table: Option<Arc<ResultTable>>,
        progress: Arc<Progress>,
        shutdown: Arc<AtomicBool>,
    ) -> Self {
        Self {
            name,
            schema,
            workers,
            table,
            reference: None,
            subscribers: Mutex::new(Vec::new()),
            callbacks: Mutex::new(CallbackList(Vec::new())),
            has_callbacks: AtomicBool::new(false),
            next_callback: AtomicU64::new(1),
            sinks: Mutex::new(SinkFeed::new(workers)),
            rows: AtomicU64::new(0),
            watermarks_ms: (0..workers)
                .map(|_| AtomicI64::new(WATERMARK_MIN_MS))
                .collect(),
            idle: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            ended: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            ended_workers: AtomicUsize::new(0),
            state_entries: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            state_bytes: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            state_bytes_entries: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            late_rows: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            error: Mutex::new(None),
            progress,
            shutdown,
        }
    }

    /// The stream's name (the catalog object, or `source#query` for a connector instance).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stream's schema.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The materialized view's stored rows, if the stream is one.
    pub fn table(&self) -> Option<Arc<ResultTable>> {
        self.table.clone()
    }

    /// Marks the stream as carrying the changelog of `table`.
    pub(crate) fn with_reference_table(mut self, table: Arc<ReferenceTable>) -> Self {
        self.reference = Some(table);
        self
    }

    /// The reference table whose changelog the stream carries, if it is one.
    pub fn reference_table(&self) -> Option<Arc<ReferenceTable>> {
        self.reference.clone()
    }

    /// Rows that left through this outlet.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// The stream's watermark (epoch ms; `i64::MIN` before any): the minimum over the
    /// workers that have one, so a worker that has not heard of one yet does not hide the
    /// others' in this display.
    pub fn watermark_ms(&self) -> i64 {
        self.watermarks_ms
            .iter()
            .map(|w| w.load(Ordering::Acquire))
            .filter(|ms| *ms != WATERMARK_MIN_MS)
            .min()
            .unwrap_or(WATERMARK_MIN_MS)
    }

    /// True when the stream is idle on every worker that has not ended it (and it has not
    /// ended everywhere): its sources have been silent for their idle timeout.
    pub fn is_idle(&self) -> bool {
        let mut idle = false;
        for (worker_idle, ended) in self.idle.iter().zip(&self.ended) {
            if ended.load(Ordering::Acquire) {
                continue;
            }
            if !worker_idle.load(Ordering::Acquire) {
                return false;
            }
            idle = true;
        }
        idle
    }

    /// True once every worker ended the stream.
    pub fn is_ended(&self) -> bool {
        self.ended_workers.load(Ordering::Acquire) == self.workers
    }

    /// The first error of the query producing this stream, if it failed.
    pub fn error(&self) -> Option<String> {
        self.error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Adds a live subscriber; returns false (and drops it) if the stream already ended.
    pub fn subscribe(&self, sender: tokio::sync::mpsc::Sender<ChangeBatch>) -> bool {
        let mut subscribers = self
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.is_ended() {
            return false;
        }
        subscribers.push(sender);
        true
    }

    /// Adds a callback run for every later batch, on the thread of the worker delivering
    /// it, before any subscriber's channel sees the batch: no thread wakes up in between,
    /// so this is the lowest-latency way out. It must be quick and must not block (the
    /// worker waits for it; batches of different workers may arrive concurrently, each in
    /// order); one that panics is removed. Returns its id, or `None` if the stream ended.
    pub fn add_callback(&self, callback: BatchCallback) -> Option<u64> {
        let mut callbacks = self
            .callbacks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.is_ended() {
            return None;
        }
        let id = self.next_callback.fetch_add(1, Ordering::Relaxed);
        callbacks.0.push((id, callback));
        self.has_callbacks.store(true, Ordering::Release);
        Some(id)
    }

    /// Removes callback `id`.
    pub fn remove_callback(&self, id: u64) {
        let mut callbacks = self
            .callbacks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        callbacks.0.retain(|(each, _)| *each != id);
        self.has_callbacks
            .store(!callbacks.0.is_empty(), Ordering::Release);
    }

    /// Runs the callbacks on `batch`; one that panics is removed.
    fn run_callbacks(&self, batch: &ChangeBatch) {
        let mut callbacks = self
            .callbacks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        callbacks.0.retain(|(_, callback)| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| callback(batch))).is_ok()
        });
        self.has_callbacks
            .store(!callbacks.0.is_empty(), Ordering::Release);
    }

    /// Attaches a sink's channel; it receives every later batch and one `End`.
    pub fn attach_sink(&self, sender: SyncSender<EgressMessage>) {
        let mut sinks = self.sinks.lock().unwrap_or_else(PoisonError::into_inner);
        if sinks.all_ended() {
            // Nothing more will flow; let the sink close right away. A send error means
            // the sink thread is gone, which leaves nothing to tell.
            let _ = sender.send(EgressMessage::End);
            return;
        }
        sinks.attach(sender);
    }

    /// The epoch of the last checkpoint barrier this stream's sinks received (0 for none).
    pub fn barrier_forwarded(&self) -> u64 {
        self.sinks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .forwarded()
    }

    /// Snapshots `worker`'s share of the view's rows for `barrier`, if the stream is a
    /// materialized view.
    pub(crate) fn snapshot_view(&self, worker: usize, barrier: &Barrier) {
        let Some(table) = &self.table else {
            return;
        };
        let full = barrier.is_view_full(&self.name, worker);
        let started = std::time::Instant::now();
        let taken = table.snapshot_worker(worker, full);
        barrier.add_stall(worker, started.elapsed());
        match taken {
            Ok(Some(state)) => barrier.answer_view(ViewSnapshot {
                view: self.name.clone(),
                worker,
                state,
            }),
            Ok(None) => {}
            Err(e) => barrier.fail(format!("view {}: {e}", self.name)),
        }
    }

    fn to_sinks(&self, worker: usize, item: SinkItem) {
        self.sinks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .offer(worker, item, &self.shutdown);
    }

    /// Publishes the state size and late-row count of the query's operators on `worker`.
    pub(crate) fn report_operator_stats(&self, worker: usize, stats: OperatorStats) {
        self.state_entries[worker].store(stats.state_entries, Ordering::Relaxed);
        self.state_bytes[worker].store(stats.state_bytes, Ordering::Relaxed);
        self.state_bytes_entries[worker].store(stats.state_bytes_entries, Ordering::Relaxed);
        self.late_rows[worker].store(stats.late_rows, Ordering::Relaxed);
    }

    /// Approximate bytes of keyed state the producing query holds, over all workers
    /// (sampled at most every 100 ms per worker).
    pub fn state_bytes(&self) -> u64 {
        self.state_bytes
            .iter()
            .map(|v| v.load(Ordering::Relaxed))
            .sum()
    }

    /// Entries of keyed state the producing query holds, over all workers.
    pub fn state_entries(&self) -> u64 {
        self.state_entries
            .iter()
            .map(|v| v.load(Ordering::Relaxed))
            .sum()
    }

    /// The entries the producing query held when its state bytes were last measured, over
    /// all workers: `state_bytes / state_bytes_entries` is the bytes per entry.
    pub fn state_bytes_entries(&self) -> u64 {
        self.state_bytes_entries
            .iter()
            .map(|v| v.load(Ordering::Relaxed))
            .sum()
    }

    /// Rows the producing query dropped as late, over all workers.
    pub fn late_rows(&self) -> u64 {
        self.late_rows
            .iter()
            .map(|v| v.load(Ordering::Relaxed))
            .sum()
    }

    pub(crate) fn record_error(&self, message: String) {
        let mut error = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        if error.is_none() {
            *error = Some(message);
        }
    }

    /// Delivers a message produced on `worker`.
    pub(crate) fn deliver(&self, worker: usize, message: &Message) {
        match message {
            Message::Data(batch) => self.deliver_data(worker, batch),
            Message::Watermark(ms) => {
                self.idle[worker].store(false, Ordering::Release);
                self.watermarks_ms[worker].fetch_max(*ms, Ordering::AcqRel);
            }
            Message::Idle => self.idle[worker].store(true, Ordering::Release),
            Message::End => self.deliver_end(worker),
            Message::Barrier(barrier) => {
                self.snapshot_view(worker, barrier);
                self.to_sinks(worker, SinkItem::Barrier(barrier.epoch()));
            }
        }
    }

    fn deliver_data(&self, worker: usize, batch: &ChangeBatch) {
        if batch.num_rows() == 0 {
            return;
        }
        self.rows
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        if let Some(table) = &self.table {
            if let Err(e) = table.apply(worker, batch) {
                self.record_error(format!("storing rows of {}: {e}", self.name));
            }
        }
        if self.has_callbacks.load(Ordering::Acquire) {
            self.run_callbacks(batch);
        }
        // Receivers are cloned out so a slow one never holds the lock: other workers, a new
        // `subscribe` and the end of the stream proceed while this worker waits on it.
        let subscribers = self
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for subscriber in &subscribers {
            let delivery =
                self.send_with_backpressure(batch.clone(), |b| match subscriber.try_send(b) {
                    Ok(()) => Offer::Taken,
                    Err(tokio::sync::mpsc::error::TrySendError::Full(b)) => Offer::Full(b),
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => Offer::Gone,
                });
            if matches!(delivery, Delivery::Gone) {
                // The subscription was dropped: forget it.
                self.subscribers
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .retain(|s| !s.same_channel(subscriber));
            }
        }
        self.to_sinks(worker, SinkItem::Data(batch.clone()));
    }

    /// Offers `batch` until the receiver takes it (a full channel is backpressure: the
    /// worker waits) or is gone; gives up when the runtime shuts down.
    fn send_with_backpressure(
        &self,
        mut batch: ChangeBatch,
        mut try_send: impl FnMut(ChangeBatch) -> Offer,
    ) -> Delivery {
        let mut backoff_us = 1;
        loop {
            match try_send(batch) {
                Offer::Taken => return Delivery::Sent,
                Offer::Gone => return Delivery::Gone,
                Offer::Full(returned) => batch = returned,
            }
            if self.shutdown.load(Ordering::Acquire) {
                return Delivery::Gone;
            }
            std::thread::sleep(Duration::from_micros(backoff_us));
            backoff_us = (backoff_us * 2).min(DELIVERY_BACKOFF_MAX_US);
        }
    }

    fn deliver_end(&self, worker: usize) {
        if self.ended[worker].swap(true, Ordering::AcqRel) {
            return;
        }
        // The sinks hear the end once every worker's share ended, behind any barrier.
        self.to_sinks(worker, SinkItem::End);
        let ended = self.ended_workers.fetch_add(1, Ordering::AcqRel) + 1;
        if ended == self.workers {
            // Dropping the senders ends every subscription.
            self.subscribers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
            self.progress.bump();
        }
    }
}
