//! Wall-clock rate limiting of a generator (`rate` events per second). The reader asks how
//! long to wait before releasing the events generated so far; the schedule starts at the first
//! batch, so a pipeline that opens a source and starts later does not get a burst.

use std::time::{Duration, Instant};

/// The longest a rate-limited generator holds generated events back to fill a batch, unless
/// the source's `max_batch_delay` says otherwise: a slow rate still delivers events
/// promptly, a fast one in large batches.
pub(crate) const MAX_BATCH_DELAY_DEFAULT: Duration = Duration::from_millis(100);

/// Paces events at `rate` per second of wall-clock time; a rate of 0 means unlimited.
#[derive(Debug)]
pub(crate) struct Throttle {
    events_per_second: f64,
    max_batch_delay: Duration,
    started: Option<Instant>,
}

impl Throttle {
    pub(crate) fn new(events_per_second: f64, max_batch_delay: Duration) -> Self {
        Self {
            events_per_second,
            max_batch_delay,
            started: None,
        }
    }

    /// Largest number of events to put in one batch (`u64::MAX` when unlimited).
    pub(crate) fn events_per_batch_max(&self) -> u64 {
        if self.events_per_second > 0.0 {
            // The events due within `max_batch_delay`: the first of a batch waits at most
            // that long for the last.
            (self.events_per_second * self.max_batch_delay.as_secs_f64())
                .round()
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
