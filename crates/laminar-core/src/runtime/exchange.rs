//! Exchange rings: one bounded SPSC ring for every ordered pair of workers, carrying the rows
//! a keyed operator needs on the worker that owns their key, plus the sender's watermarks and
//! end-of-stream. Every ring keeps its sender's order; counters let snapshot reads wait for
//! rows in flight between workers.
//!
//! A ring is full at [`EXCHANGE_RING_CAPACITY_MESSAGES`] messages or, for rows, at
//! [`EXCHANGE_RING_ROWS_MAX`] rows in flight: a join's or window's watermark is the minimum
//! over its senders, so whatever a sender runs ahead by waits in the receiver's state, and a
//! bound in messages alone let a worker run a million bids ahead (256 messages of ~4,000
//! rows), ten times a join's own state. Watermarks and other control messages carry no
//! rows and are bounded by the message count only, so a query sending many small messages
//! is not held back by the row bound.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::ingress::IngressCounters;
use crate::operator::Message;

/// Capacity of one exchange ring, in messages.
pub const EXCHANGE_RING_CAPACITY_MESSAGES: usize = 256;

/// Rows in flight on one exchange ring past which a sender holds further rows back (a
/// message of rows always goes when the ring holds none, however large).
pub const EXCHANGE_RING_ROWS_MAX: u64 = 65_536;

/// A message for exchange `node` of `query` on the receiving worker.
#[derive(Debug)]
pub(crate) struct ExchangeMessage {
    pub(crate) query: u64,
    pub(crate) node: usize,
    pub(crate) from: usize,
    pub(crate) message: Message,
}

impl ExchangeMessage {
    /// The rows the message carries.
    fn rows(&self) -> u64 {
        match &self.message {
            Message::Data(batch) => batch.num_rows() as u64,
            _ => 0,
        }
    }
}

/// A ring's two ends.
pub(crate) fn ring() -> (ExchangeLink, ExchangeInbound) {
    let (producer, consumer) = rtrb::RingBuffer::new(EXCHANGE_RING_CAPACITY_MESSAGES);
    let counters = Arc::new(IngressCounters::default());
    let rows = Arc::new(AtomicU64::new(0));
    (
        ExchangeLink {
            producer,
            counters: Arc::clone(&counters),
            rows: Arc::clone(&rows),
        },
        ExchangeInbound {
            consumer,
            counters,
            rows,
        },
    )
}

/// The sending end of one ring.
pub(crate) struct ExchangeLink {
    producer: rtrb::Producer<ExchangeMessage>,
    pub(crate) counters: Arc<IngressCounters>,
    /// Rows pushed and not yet popped.
    rows: Arc<AtomicU64>,
}

impl ExchangeLink {
    /// Pushes `message` unless the ring is full (in messages, or in rows for a message of
    /// rows), giving it back then.
    // As `rtrb`'s own push: the message comes back by value, not boxed, on every full ring.
    #[allow(clippy::result_large_err)]
    pub(crate) fn try_send(&mut self, message: ExchangeMessage) -> Result<(), ExchangeMessage> {
        let rows = message.rows();
        if rows > 0 {
            let in_flight = self.rows.load(Ordering::Acquire);
            if in_flight > 0 && in_flight + rows > EXCHANGE_RING_ROWS_MAX {
                return Err(message);
            }
        }
        // Counted before the push, so the receiver never takes off rows not yet added.
        self.rows.fetch_add(rows, Ordering::AcqRel);
        self.producer
            .push(message)
            .map_err(|rtrb::PushError::Full(message)| {
                self.rows.fetch_sub(rows, Ordering::AcqRel);
                message
            })
    }
}

/// The receiving end of one ring.
pub(crate) struct ExchangeInbound {
    consumer: rtrb::Consumer<ExchangeMessage>,
    pub(crate) counters: Arc<IngressCounters>,
    rows: Arc<AtomicU64>,
}

impl ExchangeInbound {
    /// The next message, if any.
    pub(crate) fn receive(&mut self) -> Option<ExchangeMessage> {
        let message = self.consumer.pop().ok()?;
        self.rows.fetch_sub(message.rows(), Ordering::AcqRel);
        Some(message)
    }

    /// Messages waiting in the ring.
    pub(crate) fn waiting(&self) -> usize {
        self.consumer.slots()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;

    use super::{ring, ExchangeMessage, EXCHANGE_RING_ROWS_MAX};
    use crate::change_batch::ChangeBatch;
    use crate::operator::Message;

    fn rows(count: u64) -> ExchangeMessage {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let values = Int64Array::from_iter_values(0..i64::try_from(count).expect("small"));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(values)]).expect("batch");
        message(Message::Data(ChangeBatch::insert_only(batch)))
    }

    fn message(message: Message) -> ExchangeMessage {
        ExchangeMessage {
            query: 1,
            node: 0,
            from: 0,
            message,
        }
    }

    #[test]
    fn a_ring_is_full_of_rows_before_it_is_full_of_messages_and_watermarks_still_pass() {
        let (mut link, mut inbound) = ring();
        let half = EXCHANGE_RING_ROWS_MAX / 2 + 1;
        assert!(link.try_send(rows(half)).is_ok());
        assert!(
            link.try_send(rows(half)).is_err(),
            "past the row bound while rows are in flight"
        );
        assert!(link.try_send(message(Message::Watermark(10))).is_ok());
        // The receiver takes the rows; the ring has room again.
        assert!(inbound.receive().is_some());
        assert!(link.try_send(rows(half)).is_ok());
        assert!(inbound.receive().is_some(), "the watermark, in order");
        assert!(inbound.receive().is_some());
        assert!(inbound.receive().is_none());
        // An empty ring takes a message of any size.
        assert!(link.try_send(rows(EXCHANGE_RING_ROWS_MAX * 2)).is_ok());
        assert_eq!(inbound.waiting(), 1);
    }
}
