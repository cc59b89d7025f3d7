//! A producer waiting for room in a full ingress ring, woken by the worker once the ring has
//! drained to half.
//!
//! A producer that polled a full ring on a timer woke once per timer tick, found room for a
//! batch or none, and slept again: on a 2-core machine each of those wake-ups is a context
//! switch on a core a worker needs (the hopping-window benchmark's pushing thread took
//! 100-121 ms on core that way, 29-39 ms woken as below). Waking the producer when half the
//! ring is free lets it push half a ring of batches per wake-up while the worker still has
//! the other half to work on.
//!
//! The handshake is the usual one for parking: the producer announces that it waits, then
//! looks at the ring once more before it parks; the worker takes a message off, then looks
//! whether a producer waits. Each side's store comes before its load in one total order
//! (`SeqCst` fences), so at least one of them sees the other and no wake-up is lost. The
//! park still has a timeout, so a producer also notices a shutdown without being woken.

use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread::Thread;
use std::time::Duration;

/// Longest a producer parks before it looks at the ring (and the stop flags) again.
pub(crate) const PRODUCER_PARK_MAX: Duration = Duration::from_millis(2);

/// The producer of one ring that waits for room, if any.
#[derive(Debug, Default)]
pub(crate) struct RoomWaiter {
    waiting: AtomicBool,
    producer: Mutex<Option<Thread>>,
}

impl RoomWaiter {
    /// Parks the calling producer until the worker reports room (see [`Self::drained`]),
    /// `has_room` says so before it parks, or [`PRODUCER_PARK_MAX`] passes.
    pub(crate) fn wait(&self, has_room: impl Fn() -> bool) {
        self.wait_at_most(has_room, PRODUCER_PARK_MAX);
    }

    /// [`Self::wait`] with another timeout.
    pub(crate) fn wait_at_most(&self, has_room: impl Fn() -> bool, timeout: Duration) {
        *self.producer.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(std::thread::current());
        self.waiting.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if !has_room() {
            std::thread::park_timeout(timeout);
        }
        self.waiting.store(false, Ordering::SeqCst);
    }

    /// A producer has announced that it waits (and not yet returned).
    #[cfg(test)]
    pub(crate) fn is_waiting(&self) -> bool {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Called by the worker after it took a message off the ring: wakes a waiting producer
    /// when `has_room` (the ring has drained far enough).
    pub(crate) fn drained(&self, has_room: impl Fn() -> bool) {
        fence(Ordering::SeqCst);
        if !self.waiting.load(Ordering::Relaxed) || !has_room() {
            return;
        }
        if self.waiting.swap(false, Ordering::SeqCst) {
            if let Some(producer) = self
                .producer
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
            {
                producer.unpark();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::time::Instant;

    /// Long enough that a producer left to its timeout fails the tests' bound of half of it.
    const NEVER: Duration = Duration::from_secs(10);
    /// Producer-worker handshakes in the lost-wake-up test.
    const ROUNDS: usize = 20_000;

    /// Returns once a producer has announced that it waits.
    fn until_waiting(waiter: &RoomWaiter) {
        while !waiter.is_waiting() {
            std::hint::spin_loop();
        }
    }

    #[test]
    fn no_wake_up_is_lost_between_a_producer_looking_and_a_worker_draining() {
        let waiter = Arc::new(RoomWaiter::default());
        let round = Arc::new(AtomicUsize::new(0));
        let worker = {
            let (waiter, round) = (Arc::clone(&waiter), Arc::clone(&round));
            std::thread::spawn(move || {
                for next in 1..=ROUNDS {
                    // Every other round waits for the producer to park first; the rest race
                    // its look at the ring.
                    if next % 2 == 0 {
                        until_waiting(&waiter);
                    }
                    round.store(next, Ordering::SeqCst);
                    waiter.drained(|| true);
                }
            })
        };
        let started = Instant::now();
        for next in 1..=ROUNDS {
            while round.load(Ordering::SeqCst) < next {
                waiter.wait_at_most(|| round.load(Ordering::SeqCst) >= next, NEVER);
                // A lost wake-up parks the producer until the timeout.
                assert!(
                    started.elapsed() < NEVER / 2,
                    "round {next} woke by the timeout"
                );
            }
        }
        worker.join().expect("worker");
    }

    #[test]
    fn a_producer_finding_room_on_its_second_look_does_not_park() {
        let waiter = RoomWaiter::default();
        let started = Instant::now();
        waiter.wait_at_most(|| true, NEVER);
        assert!(started.elapsed() < NEVER / 2);
        assert!(!waiter.is_waiting());
    }

    #[test]
    fn the_worker_wakes_no_one_before_the_ring_has_drained_far_enough() {
        let waiter = Arc::new(RoomWaiter::default());
        let room = Arc::new(AtomicUsize::new(0));
        let producer = {
            let (waiter, room) = (Arc::clone(&waiter), Arc::clone(&room));
            std::thread::spawn(move || {
                let mut wakes = 0;
                while room.load(Ordering::SeqCst) < 32 {
                    waiter.wait_at_most(|| room.load(Ordering::SeqCst) >= 32, NEVER);
                    wakes += 1;
                }
                wakes
            })
        };
        let started = Instant::now();
        for slots in 1..=32 {
            until_waiting(&waiter);
            room.store(slots, Ordering::SeqCst);
            waiter.drained(|| room.load(Ordering::SeqCst) >= 32);
        }
        // Spurious wake-ups of `park` aside, one wake-up for 32 slots, by the worker.
        assert!(producer.join().expect("producer") <= 3);
        assert!(started.elapsed() < NEVER / 2, "woken by the timeout");
    }
}
