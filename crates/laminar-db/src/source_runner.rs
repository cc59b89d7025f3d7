//! Connector source instances: each continuous query that reads a connector source gets its
//! own reader (files and generators are replayable, so every query sees the whole input, as
//! in RisingWave). A reader thread pulls batches from the connector and pushes them into the
//! query's ingress rings, blocking when they are full; at the end it finishes the stream.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use laminar_connectors::SourceConnector;
use laminar_core::runtime::{IngressHandle, StreamId, StreamOutlet};

/// Largest batch a connector hands to the engine.
pub(crate) const SOURCE_BATCH_ROWS_MAX: usize = 8192;

/// One query's reader of a connector source.
pub(crate) struct SourceInstance {
    pub(crate) source: String,
    pub(crate) stream: StreamId,
    pub(crate) outlet: Arc<StreamOutlet>,
    ingress: Arc<IngressHandle>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    error: Arc<Mutex<Option<String>>>,
}

impl SourceInstance {
    /// Starts reading `connector` into `ingress`.
    pub(crate) fn start(
        source: &str,
        connector: Arc<dyn SourceConnector>,
        stream: StreamId,
        outlet: Arc<StreamOutlet>,
        ingress: Arc<IngressHandle>,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let error = Arc::new(Mutex::new(None));
        let thread = {
            let ingress = Arc::clone(&ingress);
            let stop = Arc::clone(&stop);
            let error = Arc::clone(&error);
            let source = source.to_string();
            std::thread::Builder::new()
                .name(format!("laminar-source-{source}"))
                .spawn(move || read_loop(&source, connector.as_ref(), &ingress, &stop, &error))?
        };
        Ok(Self {
            source: source.to_string(),
            stream,
            outlet,
            ingress,
            stop,
            thread: Some(thread),
            error,
        })
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
        match reader.next_batch() {
            Ok(Some(batch)) => {
                if let Err(e) = ingress.push_to(batch.partition as usize, batch.batch) {
                    if !stop.load(Ordering::Acquire) {
                        record(format!("source {source}: {e}"));
                    }
                    return;
                }
            }
            Ok(None) => break,
            Err(e) => {
                record(format!("source {source}: {e}"));
                break;
            }
        }
    }
    // Ending the stream flushes every result downstream; a failure here means the
    // runtime is shutting down, which ends everything anyway.
    let _ = ingress.finish();
}
