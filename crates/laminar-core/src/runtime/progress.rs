//! `Progress`: a counter bumped whenever a stream ends or a sink closes, so callers can wait
//! for completion on a condition variable instead of polling.

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A generation counter with a condition variable.
#[derive(Debug, Default)]
pub struct Progress {
    generation: Mutex<u64>,
    changed: Condvar,
}

impl Progress {
    /// Signals that something finished.
    pub fn bump(&self) {
        let mut generation = self
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *generation += 1;
        self.changed.notify_all();
    }

    /// Waits until `done()` holds or `deadline` passes; returns whether it holds.
    /// `done` is re-checked at least every `recheck` in case its inputs change silently.
    /// `done` runs without the counter's lock held, so it may take other locks freely.
    pub fn wait_until(
        &self,
        deadline: Instant,
        recheck: Duration,
        mut done: impl FnMut() -> bool,
    ) -> bool {
        loop {
            let seen = *self
                .generation
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if done() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let wait = (deadline - now).min(recheck);
            let generation = self
                .generation
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // A bump between reading `seen` and here is not missed: the count changed.
            if *generation == seen {
                let _unused = self
                    .changed
                    .wait_timeout(generation, wait)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
    }
}
