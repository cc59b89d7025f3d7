//! Exchange rings: one bounded SPSC ring for every ordered pair of workers, carrying the rows
//! a keyed operator needs on the worker that owns their key, plus the sender's watermarks and
//! end-of-stream. Every ring keeps its sender's order; counters let snapshot reads wait for
//! rows in flight between workers.

use std::sync::Arc;

use super::ingress::IngressCounters;
use crate::operator::Message;

/// Capacity of one exchange ring, in messages.
pub const EXCHANGE_RING_CAPACITY_MESSAGES: usize = 256;

/// A message for exchange `node` of `query` on the receiving worker.
#[derive(Debug)]
pub(crate) struct ExchangeMessage {
    pub(crate) query: u64,
    pub(crate) node: usize,
    pub(crate) from: usize,
    pub(crate) message: Message,
}

/// The sending end of one ring.
pub(crate) struct ExchangeLink {
    pub(crate) producer: rtrb::Producer<ExchangeMessage>,
    pub(crate) counters: Arc<IngressCounters>,
}

/// The receiving end of one ring.
pub(crate) struct ExchangeInbound {
    pub(crate) consumer: rtrb::Consumer<ExchangeMessage>,
    pub(crate) counters: Arc<IngressCounters>,
}
