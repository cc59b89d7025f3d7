//! Connector source instances: each continuous query that reads a connector source gets its
//! own reader (files and generators are replayable, so every query sees the whole input, as
//! in RisingWave). A reader thread pulls batches from the connector and pushes them into the
//! query's ingress rings, blocking when they are full, and tells the ingress which source
//! partitions open and end (each has its own watermark); at the end it finishes the stream.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use laminar_connectors::{SourceConnector, SourceEvent, SourcePosition, SourceReader};
use laminar_core::runtime::{IngressHandle, StreamId, StreamOutlet};

use crate::durability::InputGate;

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
    /// What the reader handed to the workers, per partition: its position, which a
    /// checkpoint records.
    position: Arc<Mutex<SourcePosition>>,
    /// Reopen at the position (restored from a checkpoint) rather than from the start.
    resume: bool,
    /// With a data directory: entered for each event, so a checkpoint never splits one.
    gate: Option<Arc<InputGate>>,
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
            position: Arc::new(Mutex::new(SourcePosition::new())),
            resume: false,
            gate: None,
        }
    }

    /// Reads on from `position` (restored from a checkpoint) instead of from the start.
    pub(crate) fn resume_at(mut self, position: SourcePosition) -> Self {
        self.position = Arc::new(Mutex::new(position));
        self.resume = true;
        self
    }

    /// Makes each batch one step of the input gate a checkpoint closes.
    pub(crate) fn with_gate(mut self, gate: Option<Arc<InputGate>>) -> Self {
        self.gate = gate;
        self
    }

    /// The reader's position and its source's watermark, as a checkpoint records them
    /// (taken while the input gate is closed, so it matches what the workers were handed).
    pub(crate) fn checkpoint_position(&self) -> serde_json::Value {
        let position = self
            .position
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        serde_json::json!({
            // A position is plain data; serializing it cannot fail.
            "position": serde_json::to_value(position).unwrap_or_default(),
            "watermark": crate::durability::watermark_json(self.ingress.watermark_state().as_ref()),
        })
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
        let progress = Progress {
            position: Arc::clone(&self.position),
            gate: self.gate.clone(),
            resume: self.resume,
        };
        let spawned = std::thread::Builder::new()
            .name(format!("laminar-source-{source}"))
            .spawn(move || {
                read_loop(
                    &source,
                    connector.as_ref(),
                    &ingress,
                    &stop,
                    &error,
                    &progress,
                );
            });
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

/// What the read loop updates as it hands events over.
struct Progress {
    position: Arc<Mutex<SourcePosition>>,
    gate: Option<Arc<InputGate>>,
    resume: bool,
}

impl Progress {
    /// Opens the reader: at the recorded position when resuming.
    fn open(
        &self,
        connector: &dyn SourceConnector,
    ) -> laminar_connectors::Result<Box<dyn SourceReader>> {
        if self.resume {
            let position = self
                .position
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            connector.open_at(SOURCE_BATCH_ROWS_MAX, &position)
        } else {
            connector.open(SOURCE_BATCH_ROWS_MAX)
        }
    }

    /// Hands one event to the ingress and records it in the position, as one step.
    fn deliver(
        &self,
        ingress: &IngressHandle,
        reader: &dyn SourceReader,
        event: SourceEvent,
    ) -> laminar_core::Result<()> {
        let _entered = self.gate.as_ref().map(|g| g.enter());
        self.position
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .observe(&event, reader);
        match event {
            SourceEvent::PartitionOpened(partition) => ingress.open_partition(partition),
            SourceEvent::Batch(batch) => ingress.push_to(batch.partition, batch.batch),
            SourceEvent::PartitionEnded(partition) => ingress.end_partition(partition),
        }
    }

    /// The reader finished: every partition ended, and so does the stream (one step, so
    /// a checkpoint records the end with the position that says so).
    fn finish(&self, ingress: &IngressHandle) {
        let _entered = self.gate.as_ref().map(|g| g.enter());
        self.position
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .finish();
        // Ending the stream flushes every result downstream; a failure here means the
        // runtime is shutting down, which ends everything anyway.
        let _ = ingress.finish();
    }
}

fn read_loop(
    source: &str,
    connector: &dyn SourceConnector,
    ingress: &IngressHandle,
    stop: &AtomicBool,
    error: &Mutex<Option<String>>,
    progress: &Progress,
) {
    let record = |message: String| {
        let mut slot = error.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(message);
        }
    };
    let mut reader = match progress.open(connector) {
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
            Ok(Some(event)) => progress.deliver(ingress, reader.as_ref(), event),
            Ok(None) => {
                progress.finish(ingress);
                return;
            }
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
    // A failed reader ends its stream too, so queries over it finish with what they have.
    let _ = ingress.finish();
}
