//! The idle clock: one thread, started with the first source that has an idle timeout, that
//! sleeps until a partition of such a source may have been silent for its timeout, then has
//! the source's ingress mark it idle and tell the workers. A silent source runs no code of
//! its own (nobody pushes, its reader waits for rows), so without this clock its silence
//! would go unnoticed.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::Instant;

use super::ingress::IngressHandle;
use crate::error::{CoreError, Result};

/// The part of the clock that ingress handles see.
#[derive(Default)]
pub(crate) struct ClockShared {
    state: Mutex<ClockState>,
    changed: Condvar,
}

#[derive(Default)]
struct ClockState {
    sources: Vec<Weak<IngressHandle>>,
    /// A source may expire earlier than the clock's current wait: look again first.
    stale: bool,
    stopped: bool,
}

impl ClockShared {
    fn lock(&self) -> MutexGuard<'_, ClockState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A source that could not expire can now (a partition became active).
    pub(crate) fn poke(&self) {
        self.lock().stale = true;
        self.changed.notify_one();
    }
}

/// The clock and its thread, if started.
#[derive(Default)]
pub(crate) struct IdleClock {
    shared: Arc<ClockShared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl IdleClock {
    /// What a watched source keeps to poke the clock.
    pub(crate) fn shared(&self) -> Arc<ClockShared> {
        Arc::clone(&self.shared)
    }

    /// Watches `source` from now until it is dropped; starts the thread on first use.
    pub(crate) fn watch(&self, source: &Arc<IngressHandle>) -> Result<()> {
        let mut thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner);
        {
            let mut state = self.shared.lock();
            if state.stopped {
                return Err(CoreError::ShutDown);
            }
            state.sources.push(Arc::downgrade(source));
            state.stale = true;
        }
        self.shared.changed.notify_one();
        if thread.is_none() {
            let shared = Arc::clone(&self.shared);
            let spawned = std::thread::Builder::new()
                .name("laminar-idle-clock".into())
                .spawn(move || run(&shared))
                .map_err(|e| CoreError::Internal(format!("cannot spawn the idle clock: {e}")))?;
            *thread = Some(spawned);
        }
        Ok(())
    }

    /// Stops the thread and waits for it. Idempotent.
    pub(crate) fn stop(&self) {
        self.shared.lock().stopped = true;
        self.shared.changed.notify_one();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            // A clock that panicked has nothing left to clean up.
            let _ = thread.join();
        }
    }
}

fn run(shared: &ClockShared) {
    loop {
        let sources: Vec<Arc<IngressHandle>> = {
            let mut state = shared.lock();
            if state.stopped {
                return;
            }
            state.stale = false;
            state.sources.retain(|source| source.strong_count() > 0);
            state.sources.iter().filter_map(Weak::upgrade).collect()
        };
        let now = Instant::now();
        // Handles are looked at without the clock's lock: one may wait for room in a ring.
        let next = sources.iter().filter_map(|s| s.expire_idle(now)).min();
        drop(sources);
        let mut state = shared.lock();
        while !state.stale && !state.stopped {
            let Some(at) = next else {
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            };
            let now = Instant::now();
            if at <= now {
                break;
            }
            state = shared
                .changed
                .wait_timeout(state, at - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}
