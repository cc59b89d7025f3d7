//! Connector source instances: each continuous query that reads a connector source gets its
//! own reader (files and generators are replayable, so every query sees the whole input, as
//! in RisingWave). A reader thread pulls batches from the connector and pushes them into the
//! query's ingress rings, blocking when they are full, and tells the ingress which source
//! partitions open and end (each has its own watermark); at the end it finishes the stream.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use laminar_connectors::{SourceConnector, SourceEvent};
use laminar_core::runtime::{IngressHandle, StreamId, StreamOutlet};

/// Largest batch a connector hands to the engine.
pub(crate) const SOURCE_BATCH_ROWS_MAX: usize = 8192;

/// One query's reader of a connector source. Prepared when the query is created and
/// started once the database is not holding sources (see `LaminarDB::hold_sources`).
pub(crate) struct SourceInstance {
    /// The connector source read.
    pub(crate) source: String,
    /// It reads the source's `LATE DATA TO` stream: its ingress keeps only the late rows.
    pub(crate) late_only: bool,
    pub(crate) stream: StreamId,
    pub(crate) outlet: Arc<StreamOutlet>,
    connector: Arc<dyn SourceConnector>,
    ingress: Arc<IngressHandle>,
    stop: Arc<AtomicBool>,
    started: bool,
    thread: Option<JoinHandle<()>>,
    error: Arc<Mutex<Option<String>>>,
}

impl SourceInstance {
    /// A reader of `connector` into `ingress`, not yet reading.
    pub(crate) fn prepare(
        source: &str,
        late_only: bool,
        connector: Arc<dyn SourceConnector>,
        stream: StreamId,
        outlet: Arc<StreamOutlet>,
        ingress: Arc<IngressHandle>,
    ) -> Self {
        Self {
            source: source.to_string(),
            late_only,
            stream,
            outlet,
            connector,
            ingress,
            stop: Arc::new(AtomicBool::new(false)),
            started: false,
            thread: None,
            error: Arc::new(Mutex::new(None)),
        }
    }

    /// Starts the reader thread; idempotent. A thread that cannot be spawned is recorded as
    /// the instance's error and ends its stream, so queries over it finish.
    pub(crate) fn start(&mut self) {
        if self.started || self.stop.load(Ordering::Acquire) {
            return;
        }
        self.started = true;
        let connector = Arc::clone(&self.connector);
        let ingress = Arc::clone(&self.ingress);
        let stop = Arc::clone(&self.stop);
        let error = Arc::clone(&self.error);
        let source = self.source.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("laminar-source-{source}"))
            .spawn(move || read_loop(&source, connector.as_ref(), &ingress, &stop, &error));
        match spawned {
            Ok(thread) => self.thread = Some(thread),
            Err(e) => {
                *self.error.lock().unwrap_or_else(PoisonError::into_inner) = Some(format!(
                    "source {}: cannot start its reader thread: {e}",
                    self.source
                ));
                // Ending the stream lets the queries over it finish instead of waiting.
                let _ = self.ingress.finish();
            }
        }
    }

    /// True once `start` ran.
    pub(crate) fn is_started(&self) -> bool {
        self.started
    }

    /// Rows this reader found late on arrival.
    pub(crate) fn late_rows(&self) -> u64 {
        self.ingress.late_rows()
    }

    /// The error that stopped the reader, if any.
    pub(crate) fn error(&self) -> Option<String> {
        self.error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops the reader without ending the stream (the query is being dropped).
    pub(crate) fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.ingress.abandon();
        if let Some(thread) = self.thread.take() {
            // A reader blocked inside a slow connector call finishes on its own; joining
            // here would stall DROP, so the thread is detached.
            drop(thread);
        }
    }
}

impl Drop for SourceInstance {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_loop(
    source: &str,
    connector: &dyn SourceConnector,
    ingress: &IngressHandle,
    stop: &AtomicBool,
    error: &Mutex<Option<String>>,
) {
    let record = |message: String| {
        let mut slot = error.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(message);
        }
    };
    let mut reader = match connector.open(SOURCE_BATCH_ROWS_MAX) {
        Ok(reader) => reader,
        Err(e) => {
            record(format!("source {source}: {e}"));
            let _ = ingress.finish();
            return;
        }
    };
    loop {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let delivered = match reader.next_event() {
            Ok(Some(SourceEvent::PartitionOpened(partition))) => ingress.open_partition(partition),
            Ok(Some(SourceEvent::Batch(batch))) => ingress.push_to(batch.partition, batch.batch),
            Ok(Some(SourceEvent::PartitionEnded(partition))) => ingress.end_partition(partition),
            Ok(None) => break,
            Err(e) => {
                record(format!("source {source}: {e}"));
                break;
            }
        };
        if let Err(e) = delivered {
            if !stop.load(Ordering::Acquire) {
                record(format!("source {source}: {e}"));
            }
            return;
        }
    }
    // Ending the stream flushes every result downstream; a failure here means the
    // runtime is shutting down, which ends everything anyway.
    let _ = ingress.finish();
}
