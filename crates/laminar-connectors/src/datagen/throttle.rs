//! Wall-clock rate limiting of a generator (`rate` events per second). The reader asks how
//! long to wait before releasing the events generated so far; the schedule starts at the first
//! batch, so a pipeline that opens a source and starts later does not get a burst.

use std::time::{Duration, Instant};

/// How many batches a rate-limited generator emits per second at most, so that a slow rate
/// still delivers events promptly instead of waiting to fill a batch.
const BATCHES_PER_SECOND_MAX: f64 = 10.0;

/// Paces events at `rate` per second of wall-clock time; a rate of 0 means unlimited.
#[derive(Debug)]
pub(crate) struct Throttle {
    events_per_second: f64,
    started: Option<Instant>,
}

impl Throttle {
    pub(crate) fn new(events_per_second: f64) -> Self {
        Self {
            events_per_second,
            started: None,
        }
    }

    /// Largest number of events to put in one batch (`u64::MAX` when unlimited).
    pub(crate) fn events_per_batch_max(&self) -> u64 {
        if self.events_per_second > 0.0 {
            (self.events_per_second / BATCHES_PER_SECOND_MAX)
                .ceil()
                .max(1.0) as u64
        } else {
            u64::MAX
        }
    }

    /// Sleeps until `events_done` events are due since the first call.
    pub(crate) fn wait_for(&mut self, events_done: u64) {
        if self.events_per_second <= 0.0 {
            return;
        }
        let started = *self.started.get_or_insert_with(Instant::now);
        // Both conversions only fail for schedules millions of years away.
        let Ok(offset) = Duration::try_from_secs_f64(events_done as f64 / self.events_per_second)
        else {
            return;
        };
        let Some(due) = started.checked_add(offset) else {
            return;
        };
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }
}
