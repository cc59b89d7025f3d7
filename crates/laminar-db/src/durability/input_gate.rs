//! The input gate: every way rows enter the engine (a push, an `INSERT`, a connector
//! reader's batch) passes it shared, for the whole of "log the rows, hand them to the
//! workers"; a checkpoint closes it exclusively. While it is closed, the log positions and
//! reader positions it records are exactly the input the workers were handed, nothing is
//! halfway, and the cut the runtime then takes matches them.

use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Shared by every input path of one database.
#[derive(Debug, Default)]
pub(crate) struct InputGate {
    lock: RwLock<()>,
}

impl InputGate {
    /// Enters for one input step; a checkpoint waits until the step is done.
    pub(crate) fn enter(&self) -> RwLockReadGuard<'_, ()> {
        // The guarded value is (), so a poisoned lock protects nothing that could be torn.
        self.lock.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the gate: returns once no input step is in progress, and none starts until
    /// the guard is dropped.
    pub(crate) fn close(&self) -> RwLockWriteGuard<'_, ()> {
        self.lock.write().unwrap_or_else(PoisonError::into_inner)
    }
}
