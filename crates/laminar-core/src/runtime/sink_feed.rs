//! `SinkFeed`: the path from a stream's workers into its sinks' channels, which lines up
//! checkpoint barriers. Each worker's share of the stream reaches the barrier on its own;
//! a sink must see it once, behind every row of the checkpoint and ahead of every row
//! after it. So what a worker sends after its barrier is held back until every worker's
//! share reached the barrier (or ended), and goes out behind it, in order.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::Duration;

use super::outlet::EgressMessage;
use crate::change_batch::ChangeBatch;

/// Longest pause between retries while a sink's channel is full.
const SINK_BACKOFF_MAX_US: u64 = 1_000;

/// One worker's message on its way to the sinks.
#[derive(Debug)]
pub(crate) enum SinkItem {
    Data(ChangeBatch),
    Barrier(u64),
    End,
}

/// A stream's sinks, and the barrier being lined up across its workers.
#[derive(Debug)]
pub(crate) struct SinkFeed {
    sinks: Vec<SyncSender<EgressMessage>>,
    /// The epoch of the barrier some worker's share reached and others have not.
    aligning: Option<u64>,
    /// Per worker: its share reached the barrier being lined up.
    arrived: Vec<bool>,
    /// Per worker: its share ended.
    ended: Vec<bool>,
    /// Per worker: what it sent after reaching the barrier.
    held: Vec<VecDeque<SinkItem>>,
    /// The last barrier's epoch passed to the sinks.
    forwarded: u64,
}

impl SinkFeed {
    pub(crate) fn new(workers: usize) -> Self {
        Self {
            sinks: Vec::new(),
            aligning: None,
            arrived: vec![false; workers],
            ended: vec![false; workers],
            held: (0..workers).map(|_| VecDeque::new()).collect(),
            forwarded: 0,
        }
    }

    /// True once every worker's share ended (the sinks were told, and let go).
    pub(crate) fn all_ended(&self) -> bool {
        self.ended.iter().all(|e| *e)
    }

    pub(crate) fn attach(&mut self, sender: SyncSender<EgressMessage>) {
        self.sinks.push(sender);
    }

    /// The epoch of the last barrier passed to the sinks.
    pub(crate) fn forwarded(&self) -> u64 {
        self.forwarded
    }

    /// Takes one message from `worker`, in that worker's order.
    pub(crate) fn offer(&mut self, worker: usize, item: SinkItem, shutdown: &AtomicBool) {
        if matches!(item, SinkItem::Data(_)) && self.sinks.is_empty() {
            return;
        }
        if self.arrived[worker] {
            self.held[worker].push_back(item);
            return;
        }
        self.apply(worker, item, shutdown);
        self.release(shutdown);
    }

    fn apply(&mut self, worker: usize, item: SinkItem, shutdown: &AtomicBool) {
        match item {
            SinkItem::Data(batch) => {
                // A writer that stopped (its error is recorded by the sink) refuses at once.
                self.sinks
                    .retain(|sink| send(sink, EgressMessage::Data(batch.clone()), shutdown));
            }
            SinkItem::Barrier(epoch) => {
                self.arrived[worker] = true;
                self.aligning = Some(epoch);
            }
            SinkItem::End => {
                self.ended[worker] = true;
                if self.all_ended() {
                    for sink in std::mem::take(&mut self.sinks) {
                        let _ = sink.send(EgressMessage::End);
                    }
                }
            }
        }
    }

    /// Passes the barrier being lined up once every worker's share reached it or ended,
    /// then what the workers held back behind it.
    fn release(&mut self, shutdown: &AtomicBool) {
        while let Some(epoch) = self.aligning {
            let lined_up = self
                .arrived
                .iter()
                .zip(&self.ended)
                .all(|(arrived, ended)| *arrived || *ended);
            if !lined_up {
                return;
            }
            self.sinks
                .retain(|sink| send(sink, EgressMessage::Barrier(epoch), shutdown));
            self.forwarded = epoch;
            self.aligning = None;
            self.arrived.fill(false);
            for worker in 0..self.held.len() {
                while !self.arrived[worker] {
                    let Some(item) = self.held[worker].pop_front() else {
                        break;
                    };
                    self.apply(worker, item, shutdown);
                }
            }
        }
    }
}

/// Sends into a sink's channel, waiting while it is full (backpressure); false once the
/// sink is gone or the runtime shuts down.
fn send(
    sink: &SyncSender<EgressMessage>,
    mut message: EgressMessage,
    shutdown: &AtomicBool,
) -> bool {
    let mut backoff_us = 1;
    loop {
        match sink.try_send(message) {
            Ok(()) => return true,
            Err(TrySendError::Disconnected(_)) => return false,
            Err(TrySendError::Full(returned)) => message = returned,
        }
        if shutdown.load(Ordering::Acquire) {
            return false;
        }
        std::thread::sleep(Duration::from_micros(backoff_us));
        backoff_us = (backoff_us * 2).min(SINK_BACKOFF_MAX_US);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use std::sync::mpsc::sync_channel;
    use std::sync::Arc;

    fn rows(value: i64) -> SinkItem {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![value]))])
            .expect("batch");
        SinkItem::Data(ChangeBatch::insert_only(batch))
    }

    fn received(receiver: &std::sync::mpsc::Receiver<EgressMessage>) -> Vec<String> {
        receiver
            .try_iter()
            .map(|message| match message {
                EgressMessage::Data(batch) => {
                    let values = batch.batch().column(0);
                    let values = values
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .expect("BIGINT");
                    format!("row {}", values.value(0))
                }
                EgressMessage::Barrier(epoch) => format!("barrier {epoch}"),
                EgressMessage::End => "end".into(),
                EgressMessage::Commit(epoch) => format!("commit {epoch}"),
            })
            .collect()
    }

    #[test]
    fn rows_a_worker_sends_after_its_barrier_follow_the_barrier() {
        let stop = AtomicBool::new(false);
        let (sender, receiver) = sync_channel(64);
        let mut feed = SinkFeed::new(2);
        feed.attach(sender);
        feed.offer(0, rows(1), &stop);
        feed.offer(0, SinkItem::Barrier(7), &stop);
        feed.offer(0, rows(2), &stop);
        feed.offer(1, rows(3), &stop);
        assert_eq!(received(&receiver), ["row 1", "row 3"]);
        assert_eq!(feed.forwarded(), 0);
        feed.offer(1, SinkItem::Barrier(7), &stop);
        feed.offer(1, rows(4), &stop);
        assert_eq!(received(&receiver), ["barrier 7", "row 2", "row 4"]);
        assert_eq!(feed.forwarded(), 7);
    }

    #[test]
    fn an_ended_worker_does_not_hold_the_barrier_and_the_end_comes_last() {
        let stop = AtomicBool::new(false);
        let (sender, receiver) = sync_channel(64);
        let mut feed = SinkFeed::new(2);
        feed.attach(sender);
        feed.offer(0, SinkItem::Barrier(3), &stop);
        feed.offer(0, rows(1), &stop);
        feed.offer(0, SinkItem::End, &stop);
        assert!(received(&receiver).is_empty());
        feed.offer(1, SinkItem::End, &stop);
        assert_eq!(received(&receiver), ["barrier 3", "row 1", "end"]);
        assert!(feed.all_ended());
    }
}
