//! Sink writer threads: a sink's query delivers its rows (with their change weights, for a
//! changelog) over a bounded channel to one thread that owns the connector, so slow output
//! I/O never runs on a worker. On the stream's end the sink is closed (files finalized) and
//! completion is signalled.
//!
//! In a database with a data directory the sink is transactional: its rows belong to the
//! epoch of the checkpoint that follows them. A checkpoint's barrier, sent into the same
//! channel behind the rows of its cut, makes the thread pre-commit the epoch (durable, not
//! visible) and report the transaction's handle; once the checkpoint's manifest is durable,
//! a commit message makes the epoch visible. After the stream ends the thread stays for the
//! checkpoint that commits the last rows. An object's output log (`durability::output_log`)
//! runs on the same machinery, as an internal transactional sink.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use laminar_connectors::SinkConnector;
use laminar_core::runtime::{EgressMessage, Progress};
use serde_json::Value;

/// Capacity of a sink's input channel, in batches (backpressure beyond it).
pub(crate) const SINK_CHANNEL_CAPACITY_BATCHES: usize = 64;

/// How a transactional sink resumes.
#[derive(Debug, Clone)]
pub(crate) struct SinkResume {
    /// The last epoch the recovered checkpoint lists as pre-committed, with its handle
    /// (which names every earlier epoch still pending): committed (again, if it already
    /// was) before anything else. `None` for a new sink or a checkpoint without it.
    pub(crate) committed: Option<(u64, Value)>,
    /// The epoch the sink's first rows belong to.
    pub(crate) first_epoch: u64,
}

/// Pre-commit outcomes by epoch, which the checkpoint coordinator waits for.
#[derive(Default)]
struct Precommits {
    outcomes: Mutex<HashMap<u64, Result<Value, String>>>,
    ready: Condvar,
}

/// Called once on the writer thread when every row of the sink's input has arrived.
pub(crate) type InputEnded = Box<dyn FnOnce() + Send>;

/// A running sink.
pub(crate) struct SinkTask {
    name: String,
    closed: Arc<AtomicBool>,
    error: Arc<Mutex<Option<String>>>,
    thread: Option<JoinHandle<()>>,
    /// For checkpoint barriers and commits (transactional sinks only).
    control: Option<SyncSender<EgressMessage>>,
    precommits: Arc<Precommits>,
}

impl SinkTask {
    /// Starts the writer thread; returns the task and the sender to attach to the stream.
    /// With `resume`, the sink is transactional and first recovers its pending transaction.
    /// `on_input_ended` runs once every row has arrived (the stream ended, or its sender
    /// was dropped).
    pub(crate) fn start(
        name: &str,
        sink: Box<dyn SinkConnector>,
        progress: Arc<Progress>,
        resume: Option<SinkResume>,
        on_input_ended: Option<InputEnded>,
    ) -> std::io::Result<(Self, SyncSender<EgressMessage>)> {
        let (sender, receiver) = sync_channel(SINK_CHANNEL_CAPACITY_BATCHES);
        let closed = Arc::new(AtomicBool::new(false));
        let error = Arc::new(Mutex::new(None));
        let precommits = Arc::new(Precommits::default());
        let transactional = resume.is_some();
        let thread = {
            let closed = Arc::clone(&closed);
            let error = Arc::clone(&error);
            let precommits = Arc::clone(&precommits);
            let name = name.to_string();
            std::thread::Builder::new()
                .name(format!("laminar-sink-{name}"))
                .spawn(move || {
                    let mut writer = Writer {
                        name: &name,
                        sink,
                        error: &error,
                        failed: false,
                        precommits: &precommits,
                        handles: HashMap::new(),
                        on_input_ended,
                    };
                    if let Some(resume) = resume {
                        writer.resume(&resume);
                    }
                    writer.run(&receiver, &closed, &progress, transactional);
                })?
        };
        Ok((
            Self {
                name: name.to_string(),
                closed,
                error,
                thread: Some(thread),
                control: transactional.then(|| sender.clone()),
                precommits,
            },
            sender,
        ))
    }

    /// True once the sink flushed and closed its output (for a transactional sink: once
    /// every row reached it; the last ones become visible at the next checkpoint).
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

    /// True for a sink that takes part in checkpoints.
    pub(crate) fn is_transactional(&self) -> bool {
        self.control.is_some()
    }

    /// Sends a checkpoint's barrier behind the rows already sent.
    pub(crate) fn barrier(&self, epoch: u64) -> Result<(), String> {
        self.send(EgressMessage::Barrier(epoch))
    }

    /// Tells the sink that epoch `epoch`'s checkpoint is durable.
    pub(crate) fn commit(&self, epoch: u64) -> Result<(), String> {
        self.send(EgressMessage::Commit(epoch))
    }

    fn send(&self, message: EgressMessage) -> Result<(), String> {
        let control = self
            .control
            .as_ref()
            .ok_or_else(|| format!("sink {} is not transactional", self.name))?;
        control
            .send(message)
            .map_err(|_| format!("sink {}: its writer thread has stopped", self.name))
    }

    /// Waits for the pre-commit of `epoch`; returns the transaction's handle.
    pub(crate) fn precommitted(&self, epoch: u64, timeout: Duration) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        let mut outcomes = self
            .precommits
            .outcomes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(outcome) = outcomes.remove(&epoch) {
                return outcome;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "sink {}: no pre-commit of epoch {epoch} within {} ms",
                    self.name,
                    timeout.as_millis()
                ));
            }
            outcomes = self
                .precommits
                .ready
                .wait_timeout(outcomes, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits up to `timeout` for the writer to finish (after its stream ended or its
    /// sender was dropped); a writer still busy after that is left to finish on its own.
    pub(crate) fn join(&mut self, progress: &Progress, timeout: Duration) {
        // A transactional writer stays for checkpoints until its control sender goes.
        self.control = None;
        let deadline = Instant::now() + timeout;
        let closed = progress.wait_until(deadline, Duration::from_millis(10), || self.is_closed());
        if let Some(thread) = self.thread.take() {
            if closed {
                // A panicking connector already lost its output; nothing to add.
                let _ = thread.join();
            }
        }
    }
}

/// The writer thread's side of a sink.
struct Writer<'a> {
    name: &'a str,
    sink: Box<dyn SinkConnector>,
    error: &'a Mutex<Option<String>>,
    failed: bool,
    precommits: &'a Precommits,
    /// Pre-committed epochs not yet committed, with their handles.
    handles: HashMap<u64, Value>,
    on_input_ended: Option<InputEnded>,
}

impl Writer<'_> {
    fn record(&mut self, message: &str) {
        self.failed = true;
        let mut slot = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(format!("sink {}: {message}", self.name));
        }
    }

    fn resume(&mut self, resume: &SinkResume) {
        let committed = resume
            .committed
            .as_ref()
            .map(|(epoch, handle)| (*epoch, handle));
        if let Err(e) = self.sink.recover(committed) {
            self.record(&format!("cannot recover its last transaction: {e}"));
            return;
        }
        if let Err(e) = self.sink.begin_epoch(resume.first_epoch) {
            self.record(&e.to_string());
        }
    }

    fn run(
        &mut self,
        receiver: &Receiver<EgressMessage>,
        closed: &AtomicBool,
        progress: &Progress,
        transactional: bool,
    ) {
        // The loop also ends when every sender is gone (the sink was dropped): close anyway
        // so what was written is a valid file.
        let mut ended = false;
        while let Ok(message) = receiver.recv() {
            match message {
                EgressMessage::Data(batch) => {
                    if self.failed {
                        continue;
                    }
                    if let Err(e) = self.sink.write(batch.batch(), batch.weights()) {
                        self.record(&e.to_string());
                    }
                }
                EgressMessage::End if transactional => {
                    // Every row arrived; they become visible with the next checkpoint's
                    // commit, so the sink stays open for its barrier.
                    ended = true;
                    self.signal_closed(closed, progress);
                }
                EgressMessage::End => {
                    self.close();
                    self.signal_closed(closed, progress);
                    return;
                }
                EgressMessage::Barrier(epoch) => self.precommit(epoch),
                EgressMessage::Commit(epoch) => self.commit(epoch),
            }
        }
        self.close();
        if !ended {
            self.signal_closed(closed, progress);
        }
    }

    fn close(&mut self) {
        if let Err(e) = self.sink.close() {
            self.record(&e.to_string());
        }
    }

    fn signal_closed(&mut self, closed: &AtomicBool, progress: &Progress) {
        if let Some(on_input_ended) = self.on_input_ended.take() {
            on_input_ended();
        }
        closed.store(true, Ordering::Release);
        progress.bump();
    }

    fn precommit(&mut self, epoch: u64) {
        let outcome = if self.failed {
            Err(self
                .error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
                .unwrap_or_default())
        } else {
            self.sink
                .pre_commit(epoch)
                .and_then(|handle| {
                    self.sink.begin_epoch(epoch + 1)?;
                    Ok(handle)
                })
                .map_err(|e| format!("sink {}: pre-commit of epoch {epoch}: {e}", self.name))
        };
        match &outcome {
            Ok(handle) => {
                self.handles.insert(epoch, handle.clone());
            }
            Err(message) => {
                let message = message.clone();
                self.record(&message);
            }
        }
        self.precommits
            .outcomes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(epoch, outcome);
        self.precommits.ready.notify_all();
    }

    /// Commits every pre-committed epoch up to `epoch`, oldest first: an epoch whose own
    /// checkpoint failed is committed by the next one that succeeds, whose state covers it.
    fn commit(&mut self, epoch: u64) {
        let mut due: Vec<u64> = self
            .handles
            .keys()
            .copied()
            .filter(|e| *e <= epoch)
            .collect();
        due.sort_unstable();
        for each in due {
            let Some(handle) = self.handles.remove(&each) else {
                continue;
            };
            if let Err(e) = self.sink.commit(each, &handle) {
                self.record(&format!("commit of epoch {each}: {e}"));
            }
        }
    }
}
