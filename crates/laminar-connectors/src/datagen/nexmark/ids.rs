//! Id arithmetic of the Nexmark model, as in the Java generator of Beam and Flink: event `n` is
//! a person, an auction or a bid by `n % 50` (1 : 3 : 46), and person and auction ids follow
//! from the event number, so any event can be generated alone and every reference it makes
//! points to a person or auction created at or before it.

use super::super::rng::SplitMix64;

/// Persons per [`PROPORTION_DENOMINATOR`] events.
pub(crate) const PERSON_PROPORTION: u64 = 1;
/// Auctions per [`PROPORTION_DENOMINATOR`] events.
pub(crate) const AUCTION_PROPORTION: u64 = 3;
/// Bids per [`PROPORTION_DENOMINATOR`] events.
pub(crate) const BID_PROPORTION: u64 = 46;
/// Length of the repeating person/auction/bid pattern.
pub(crate) const PROPORTION_DENOMINATOR: u64 =
    PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION;

/// Id of the first person.
pub(crate) const FIRST_PERSON_ID: i64 = 1_000;
/// Id of the first auction.
pub(crate) const FIRST_AUCTION_ID: i64 = 1_000;
/// Id of the first category.
pub(crate) const FIRST_CATEGORY_ID: i64 = 10;
/// Number of categories.
pub(crate) const CATEGORIES: u64 = 5;

/// How many recent persons a non-hot reference picks from.
const ACTIVE_PEOPLE: u64 = 1_000;
/// How many recent auctions a non-hot bid picks from.
pub(crate) const IN_FLIGHT_AUCTIONS: u64 = 100;
/// Hot auctions, bidders and sellers are the first id of each block of this many ids.
const HOT_BLOCK: u64 = 100;

/// What event `n` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventKind {
    /// A new person.
    Person,
    /// A new auction.
    Auction,
    /// A bid on an existing auction by an existing person.
    Bid,
}

/// The kind of event `n`.
pub(crate) fn kind(n: u64) -> EventKind {
    let offset = n % PROPORTION_DENOMINATOR;
    if offset < PERSON_PROPORTION {
        EventKind::Person
    } else if offset < PERSON_PROPORTION + AUCTION_PROPORTION {
        EventKind::Auction
    } else {
        EventKind::Bid
    }
}

/// Zero-based id of the last person created at or before event `n`.
pub(crate) fn last_person(n: u64) -> u64 {
    // With one person per epoch, created first, the last person is the epoch's.
    const _: () = assert!(PERSON_PROPORTION == 1);
    n / PROPORTION_DENOMINATOR
}

/// Zero-based id of the last auction created at or before event `n`; `None` before the first.
pub(crate) fn last_auction(n: u64) -> Option<u64> {
    let epoch = n / PROPORTION_DENOMINATOR;
    let offset = n % PROPORTION_DENOMINATOR;
    if offset < PERSON_PROPORTION {
        // A person event: the last auction is the final one of the previous epoch.
        let previous = epoch.checked_sub(1)?;
        Some(previous * AUCTION_PROPORTION + AUCTION_PROPORTION - 1)
    } else if offset >= PERSON_PROPORTION + AUCTION_PROPORTION {
        Some(epoch * AUCTION_PROPORTION + AUCTION_PROPORTION - 1)
    } else {
        Some(epoch * AUCTION_PROPORTION + offset - PERSON_PROPORTION)
    }
}

/// A zero-based person id among the [`ACTIVE_PEOPLE`] most recent at event `n`.
pub(crate) fn recent_person(n: u64, rng: &mut SplitMix64) -> u64 {
    let people = last_person(n) + 1;
    let active = people.min(ACTIVE_PEOPLE);
    people - active + rng.below(active)
}

/// A zero-based auction id among the [`IN_FLIGHT_AUCTIONS`] most recent at event `n` (a bid
/// or auction event, which always has an auction at or before it).
pub(crate) fn recent_auction(n: u64, rng: &mut SplitMix64) -> u64 {
    let newest = last_auction(n).unwrap_or(0);
    let oldest = newest.saturating_sub(IN_FLIGHT_AUCTIONS);
    oldest + rng.below(newest - oldest + 1)
}

/// Hot auction: the first auction of the block holding the newest one.
pub(crate) fn hot_auction(n: u64) -> u64 {
    last_auction(n).unwrap_or(0) / HOT_BLOCK * HOT_BLOCK
}

/// Hot bidder: the second person of the block holding the newest one (so hot bidders and hot
/// sellers differ), or the newest person while that block has only one.
pub(crate) fn hot_bidder(n: u64) -> u64 {
    let newest = last_person(n);
    (newest / HOT_BLOCK * HOT_BLOCK + 1).min(newest)
}

/// Hot seller: the first person of the block holding the newest one.
pub(crate) fn hot_seller(n: u64) -> u64 {
    last_person(n) / HOT_BLOCK * HOT_BLOCK
}

/// Where the events of `kind` sit in each run of [`PROPORTION_DENOMINATOR`] events: the
/// offset of the first, and how many there are.
fn span(kind: EventKind) -> (u64, u64) {
    match kind {
        EventKind::Person => (0, PERSON_PROPORTION),
        EventKind::Auction => (PERSON_PROPORTION, AUCTION_PROPORTION),
        EventKind::Bid => (PERSON_PROPORTION + AUCTION_PROPORTION, BID_PROPORTION),
    }
}

/// How many of events `0..events` are of `kind`.
pub(crate) fn events_of_kind(kind: EventKind, events: u64) -> u64 {
    let (first, count) = span(kind);
    let runs = events / PROPORTION_DENOMINATOR;
    let offset = events % PROPORTION_DENOMINATOR;
    runs * count + offset.saturating_sub(first).min(count)
}

/// The event after the first `rows` events of `kind`: where generating that table resumes.
/// `None` when it lies beyond the last event number.
pub(crate) fn event_after(kind: EventKind, rows: u64) -> Option<u64> {
    let Some(last) = rows.checked_sub(1) else {
        return Some(0);
    };
    let (first, count) = span(kind);
    (last / count)
        .checked_mul(PROPORTION_DENOMINATOR)?
        .checked_add(first + last % count + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_event_pattern() {
        assert_eq!(kind(0), EventKind::Person);
        assert_eq!(kind(1), EventKind::Auction);
        assert_eq!(kind(3), EventKind::Auction);
        assert_eq!(kind(4), EventKind::Bid);
        assert_eq!(kind(49), EventKind::Bid);
        assert_eq!(kind(50), EventKind::Person);
        assert_eq!(last_person(0), 0);
        assert_eq!(last_person(49), 0);
        assert_eq!(last_person(50), 1);
        assert_eq!(last_auction(0), None);
        assert_eq!(last_auction(1), Some(0));
        assert_eq!(last_auction(3), Some(2));
        assert_eq!(last_auction(10), Some(2));
        assert_eq!(last_auction(50), Some(2));
        assert_eq!(last_auction(51), Some(3));
    }

    #[test]
    fn rows_of_a_kind_map_to_events_and_back() {
        for kind in [EventKind::Person, EventKind::Auction, EventKind::Bid] {
            let mut rows = 0;
            for events in 0..=520 {
                assert_eq!(events_of_kind(kind, events), rows, "{kind:?} {events}");
                if events < 520 && super::kind(events) == kind {
                    rows += 1;
                    // The event after the row just counted.
                    assert_eq!(event_after(kind, rows), Some(events + 1), "{kind:?} {rows}");
                }
            }
            assert_eq!(event_after(kind, 0), Some(0));
        }
        assert_eq!(event_after(EventKind::Bid, u64::MAX), None);
    }
}
