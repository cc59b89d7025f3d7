//! Sink writer threads: a sink's query delivers its rows (with their change weights, for a
//! changelog) over a bounded channel to one thread that owns the connector, so slow output
//! I/O never runs on a worker. On the stream's end the sink is closed (files finalized) and
//! completion is signalled.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use laminar_connectors::SinkConnector;
use laminar_core::runtime::{EgressMessage, Progress};

/// Capacity of a sink's input channel, in batches (backpressure beyond it).
pub(crate) const SINK_CHANNEL_CAPACITY_BATCHES: usize = 64;

/// A running sink.
pub(crate) struct SinkTask {
    closed: Arc<AtomicBool>,
    error: Arc<Mutex<Option<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl SinkTask {
    /// Starts the writer thread; returns the task and the sender to attach to the stream.
    pub(crate) fn start(
        name: &str,
        sink: Box<dyn SinkConnector>,
        progress: Arc<Progress>,
    ) -> std::io::Result<(Self, SyncSender<EgressMessage>)> {
        let (sender, receiver) = sync_channel(SINK_CHANNEL_CAPACITY_BATCHES);
        let closed = Arc::new(AtomicBool::new(false));
        let error = Arc::new(Mutex::new(None));
        let thread = {
            let closed = Arc::clone(&closed);
            let error = Arc::clone(&error);
            let name = name.to_string();
            std::thread::Builder::new()
                .name(format!("laminar-sink-{name}"))
                .spawn(move || {
                    write_loop(&name, sink, &receiver, &error);
                    closed.store(true, Ordering::Release);
                    progress.bump();
                })?
        };
        Ok((
            Self {
                closed,
                error,
                thread: Some(thread),
            },
            sender,
        ))
    }

    /// True once the sink flushed and closed its output.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The first write or close error.
    pub(crate) fn error(&self) -> Option<String> {
        self.error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits up to `timeout` for the writer to finish (after its stream ended or its
    /// sender was dropped); a writer still busy after that is left to finish on its own.
    pub(crate) fn join(&mut self, progress: &Progress, timeout: std::time::Duration) {
        let deadline = std::time::Instant::now() + timeout;
        let closed = progress.wait_until(deadline, std::time::Duration::from_millis(10), || {
            self.is_closed()
        });
        if let Some(thread) = self.thread.take() {
            if closed {
                // A panicking connector already lost its output; nothing to add.
                let _ = thread.join();
            }
        }
    }
}

fn write_loop(
    name: &str,
    mut sink: Box<dyn SinkConnector>,
    receiver: &Receiver<EgressMessage>,
    error: &Mutex<Option<String>>,
) {
    let record = |message: String| {
        let mut slot = error.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(message);
        }
    };
    let mut failed = false;
    // The loop also ends when every sender is gone (the sink was dropped): close anyway so
    // what was written is a valid file.
    while let Ok(message) = receiver.recv() {
        match message {
            EgressMessage::Data(batch) => {
                if failed {
                    continue;
                }
                if let Err(e) = sink.write(batch.batch(), batch.weights()) {
                    record(format!("sink {name}: {e}"));
                    failed = true;
                }
            }
            EgressMessage::End => break,
        }
    }
    if let Err(e) = sink.close() {
        record(format!("sink {name}: {e}"));
    }
}
