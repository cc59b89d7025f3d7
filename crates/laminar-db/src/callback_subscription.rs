//! Callback subscriptions: a function the database runs on the worker thread for every
//! change batch of a stream, materialized view or push source — the lowest-latency way out,
//! since no thread is woken between the worker and the application. The function must be
//! quick and must not block: the worker waits for it. Batches produced on different
//! workers may arrive concurrently (each worker's in order). A function that panics is
//! removed. Dropping the returned handle removes the function; that, and subscribing
//! again, must not happen from inside the function (the stream's callbacks are locked
//! while it runs).

use std::sync::Arc;

use laminar_core::runtime::StreamOutlet;
use laminar_core::ChangeBatch;

use crate::db::LaminarDB;
use crate::error::Result;

/// A function receiving a stream's change batches; removed when this is dropped.
pub struct CallbackSubscription {
    name: String,
    outlet: Arc<StreamOutlet>,
    id: Option<u64>,
}

impl std::fmt::Debug for CallbackSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackSubscription")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl CallbackSubscription {
    /// The stream, view or source it follows.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// False when the stream had already ended when it was created (the function is
    /// never called).
    pub fn is_active(&self) -> bool {
        self.id.is_some()
    }
}

impl Drop for CallbackSubscription {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.outlet.remove_callback(id);
        }
    }
}

impl LaminarDB {
    /// Runs `callback` on every later change batch of `name` (a stream, materialized view
    /// or push source), on the thread of the worker producing it. See the module docs:
    /// the callback must be quick and must not block.
    pub fn subscribe_callback(
        &self,
        name: &str,
        callback: impl Fn(&ChangeBatch) + Send + Sync + 'static,
    ) -> Result<CallbackSubscription> {
        let outlet = self.subscribable_outlet(name)?;
        let id = outlet.add_callback(Box::new(callback));
        Ok(CallbackSubscription {
            name: name.to_string(),
            outlet,
            id,
        })
    }
}
