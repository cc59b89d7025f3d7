//! Event time of generated events. Event `n` is due at `start_time + n / event_rate` seconds
//! and its timestamp is that instant minus a random jitter of at most `max_out_of_order_ms`,
//! so a timestamp is never more than `max_out_of_order_ms` behind any timestamp emitted before
//! it: a watermark of `ts - INTERVAL 'max_out_of_order_ms' MILLISECOND` drops nothing.

use super::rng::SplitMix64;

/// The event-time model shared by every generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EventClock {
    /// Timestamp of event 0 before jitter, epoch milliseconds.
    pub(crate) start_ms: i64,
    /// Events per second of event time (at least 1).
    pub(crate) event_rate: u64,
    /// Largest jitter subtracted from an event's due time.
    pub(crate) max_out_of_order_ms: u64,
}

impl EventClock {
    /// The due time of event `n` without jitter; non-decreasing in `n`.
    pub(crate) fn base_ms(&self, n: u64) -> i64 {
        let offset_ms = u128::from(n) * 1_000 / u128::from(self.event_rate.max(1));
        self.start_ms
            .saturating_add(i64::try_from(offset_ms).unwrap_or(i64::MAX))
    }

    /// The timestamp of event `n`. Always the first draw from the event's generator, so the
    /// rest of the event does not depend on the jitter setting.
    pub(crate) fn timestamp_ms(&self, n: u64, rng: &mut SplitMix64) -> i64 {
        let jitter = rng.below(self.max_out_of_order_ms.saturating_add(1));
        self.base_ms(n)
            .saturating_sub(i64::try_from(jitter).unwrap_or(i64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_spaced_by_the_rate_and_jitter_is_bounded() {
        let clock = EventClock {
            start_ms: 1_000,
            event_rate: 4,
            max_out_of_order_ms: 50,
        };
        assert_eq!(clock.base_ms(0), 1_000);
        assert_eq!(clock.base_ms(1), 1_250);
        assert_eq!(clock.base_ms(4), 2_000);
        let mut max_seen = i64::MIN;
        for n in 0..10_000 {
            let ts = clock.timestamp_ms(n, &mut SplitMix64::for_event(3, n));
            assert!(ts <= clock.base_ms(n) && ts >= clock.base_ms(n) - 50);
            assert!(ts >= max_seen.saturating_sub(50));
            max_seen = max_seen.max(ts);
        }
    }
}
