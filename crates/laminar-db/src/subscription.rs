//! Subscriptions: live change batches of a stream or view, as an async `Stream` or a
//! blocking iterator. A subscription sees changes from the moment it is created and ends
//! when the stream ends (or the object is dropped).

use std::pin::Pin;
use std::task::{Context, Poll};

use laminar_core::ChangeBatch;
use tokio::sync::mpsc::Receiver;

/// A live feed of change batches.
#[derive(Debug)]
pub struct Subscription {
    name: String,
    receiver: Receiver<ChangeBatch>,
}

impl Subscription {
    pub(crate) fn new(name: String, receiver: Receiver<ChangeBatch>) -> Self {
        Self { name, receiver }
    }

    /// The stream or view subscribed to.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the next change batch; `None` once the stream has ended.
    /// Must not be called from inside an async runtime (use the `Stream` impl there).
    pub fn next_blocking(&mut self) -> Option<ChangeBatch> {
        self.receiver.blocking_recv()
    }

    /// The next change batch if one is ready, without waiting.
    pub fn try_next(&mut self) -> Option<ChangeBatch> {
        self.receiver.try_recv().ok()
    }

    /// Waits for the next change batch asynchronously; `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<ChangeBatch> {
        self.receiver.recv().await
    }

    /// A blocking iterator over the change batches, for non-async callers.
    pub fn blocking_iter(&mut self) -> impl Iterator<Item = ChangeBatch> + '_ {
        std::iter::from_fn(move || self.next_blocking())
    }
}

impl futures_core::Stream for Subscription {
    type Item = ChangeBatch;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver.poll_recv(cx)
    }
}
