//! Generation of the rows of one Nexmark table for a range of events. Each event draws from
//! its own random generator seeded by `(seed, n)`; strings come from forked sub-generators, so
//! skipping a column a source does not produce changes none of the others.

use std::sync::Arc;

use super::ids::{
    self, hot_auction, hot_bidder, hot_seller, last_auction, last_person, recent_auction,
    recent_person, FIRST_AUCTION_ID, FIRST_CATEGORY_ID, FIRST_PERSON_ID,
};
use super::text::{
    push_credit_card, push_email, push_extra, push_string, ChannelTable, AUCTION_BYTES_AVG,
    BID_BYTES_AVG, CHANNELS, FIRST_NAMES, HOT_CHANNELS, LAST_NAMES, PERSON_BYTES_AVG, US_CITIES,
    US_STATES,
};
use super::{NexmarkConfig, NexmarkTable};
use crate::datagen::columns::{ColumnType, Columns};
use crate::datagen::event_time::EventClock;
use crate::datagen::reader::{BatchGenerator, Generated};
use crate::datagen::rng::SplitMix64;

/// Share of bids through a hot channel is `1 - 1/HOT_CHANNELS_RATIO`.
const HOT_CHANNELS_RATIO: u64 = 2;
/// Bytes the fixed-size fields of an event count for in the `extra` padding computation.
const NUMBER_BYTES: usize = 8;

/// Generates the rows of one Nexmark table.
pub(crate) struct NexmarkGenerator {
    config: NexmarkConfig,
    seed: u64,
    clock: EventClock,
    types: Vec<ColumnType>,
    projection: Vec<usize>,
    channels: Option<Arc<ChannelTable>>,
    /// Reused text buffers: one per string being built for a row.
    text: [String; 3],
}

impl NexmarkGenerator {
    /// A generator producing the table columns `projection` (table indices, output order).
    pub(crate) fn new(
        config: NexmarkConfig,
        seed: u64,
        clock: EventClock,
        projection: Vec<usize>,
    ) -> Self {
        let channels =
            (config.table == NexmarkTable::Bid).then(|| Arc::new(ChannelTable::new(seed)));
        Self {
            config,
            seed,
            clock,
            types: config.table.column_types(),
            projection,
            channels,
            text: [String::new(), String::new(), String::new()],
        }
    }

    fn person(&mut self, n: u64, columns: &mut Columns) {
        let mut rng = SplitMix64::for_event(self.seed, n);
        let date_time = self.clock.timestamp_ms(n, &mut rng);
        let id = last_person(n) as i64 + FIRST_PERSON_ID;
        let first_name = FIRST_NAMES[rng.below(FIRST_NAMES.len() as u64) as usize];
        let last_name = LAST_NAMES[rng.below(LAST_NAMES.len() as u64) as usize];
        let city = US_CITIES[rng.below(US_CITIES.len() as u64) as usize];
        let state = US_STATES[rng.below(US_STATES.len() as u64) as usize];
        let mut email_rng = rng.fork();
        let mut card_rng = rng.fork();
        let mut extra_rng = rng.fork();
        let needs_extra = columns.needed(7);
        let [name, email, card] = &mut self.text;
        columns.int64(0, id);
        if columns.needed(1) || needs_extra {
            name.clear();
            name.push_str(first_name);
            name.push(' ');
            name.push_str(last_name);
            columns.utf8(1, name);
        }
        if columns.needed(2) || needs_extra {
            email.clear();
            push_email(email, &mut email_rng);
            columns.utf8(2, email);
        }
        if columns.needed(3) || needs_extra {
            card.clear();
            push_credit_card(card, &mut card_rng);
            columns.utf8(3, card);
        }
        columns.utf8(4, city);
        columns.utf8(5, state);
        columns.timestamp_ms(6, date_time);
        if needs_extra {
            let size =
                NUMBER_BYTES + name.len() + email.len() + card.len() + city.len() + state.len();
            name.clear();
            push_extra(name, &mut extra_rng, size, PERSON_BYTES_AVG);
            columns.utf8(7, name);
        }
    }

    fn auction(&mut self, n: u64, columns: &mut Columns) {
        let mut rng = SplitMix64::for_event(self.seed, n);
        let date_time = self.clock.timestamp_ms(n, &mut rng);
        let id = last_auction(n).unwrap_or(0) as i64 + FIRST_AUCTION_ID;
        let seller = if rng.below(self.config.hot_sellers_ratio) > 0 {
            hot_seller(n)
        } else {
            recent_person(n, &mut rng)
        } as i64
            + FIRST_PERSON_ID;
        let category = FIRST_CATEGORY_ID + rng.below(ids::CATEGORIES) as i64;
        let initial_bid = next_price(&mut rng);
        let expires = date_time.saturating_add(self.auction_length_ms(n, &mut rng));
        let reserve = initial_bid + next_price(&mut rng);
        let mut name_rng = rng.fork();
        let mut description_rng = rng.fork();
        let mut extra_rng = rng.fork();
        let needs_extra = columns.needed(9);
        let [name, description, extra] = &mut self.text;
        columns.int64(0, id);
        if columns.needed(1) || needs_extra {
            name.clear();
            push_string(name, &mut name_rng, 20, ' ');
            columns.utf8(1, name);
        }
        if columns.needed(2) || needs_extra {
            description.clear();
            push_string(description, &mut description_rng, 100, ' ');
            columns.utf8(2, description);
        }
        columns.int64(3, initial_bid);
        columns.int64(4, reserve);
        columns.timestamp_ms(5, date_time);
        columns.timestamp_ms(6, expires);
        columns.int64(7, seller);
        columns.int64(8, category);
        if needs_extra {
            let size = NUMBER_BYTES + name.len() + description.len() + 5 * NUMBER_BYTES;
            extra.clear();
            push_extra(extra, &mut extra_rng, size, AUCTION_BYTES_AVG);
            columns.utf8(9, extra);
        }
    }

    /// Auctions last on average until about [`ids::IN_FLIGHT_AUCTIONS`] more auctions have
    /// been created (the Java generator's rule).
    fn auction_length_ms(&self, n: u64, rng: &mut SplitMix64) -> i64 {
        let events_ahead =
            ids::IN_FLIGHT_AUCTIONS * ids::PROPORTION_DENOMINATOR / ids::AUCTION_PROPORTION;
        let horizon_ms = self
            .clock
            .base_ms(n.saturating_add(events_ahead))
            .saturating_sub(self.clock.base_ms(n));
        1 + rng.below(horizon_ms.saturating_mul(2).max(1) as u64) as i64
    }

    fn bid(&mut self, n: u64, columns: &mut Columns) {
        let mut rng = SplitMix64::for_event(self.seed, n);
        let date_time = self.clock.timestamp_ms(n, &mut rng);
        let auction = if rng.below(self.config.hot_auction_ratio) > 0 {
            hot_auction(n)
        } else {
            recent_auction(n, &mut rng)
        } as i64
            + FIRST_AUCTION_ID;
        let bidder = if rng.below(self.config.hot_bidders_ratio) > 0 {
            hot_bidder(n)
        } else {
            recent_person(n, &mut rng)
        } as i64
            + FIRST_PERSON_ID;
        let price = next_price(&mut rng);
        let hot = rng.below(HOT_CHANNELS_RATIO) > 0;
        let choice = if hot {
            rng.below(HOT_CHANNELS.len() as u64) as usize
        } else {
            rng.below(CHANNELS as u64) as usize
        };
        let mut extra_rng = rng.fork();
        columns.int64(0, auction);
        columns.int64(1, bidder);
        columns.int64(2, price);
        if let Some(channels) = &self.channels {
            if hot {
                columns.utf8(3, HOT_CHANNELS[choice]);
                columns.utf8(4, &channels.hot_urls[choice]);
            } else {
                columns.utf8(3, &channels.names[choice]);
                columns.utf8(4, &channels.urls[choice]);
            }
        }
        columns.timestamp_ms(5, date_time);
        if columns.needed(6) {
            let extra = &mut self.text[0];
            extra.clear();
            push_extra(extra, &mut extra_rng, 4 * NUMBER_BYTES, BID_BYTES_AVG);
            columns.utf8(6, extra);
        }
    }
}

/// A price in cents, log-uniform between 1.00 and 1,000,000.00.
fn next_price(rng: &mut SplitMix64) -> i64 {
    (10_f64.powf(rng.unit_f64() * 6.0) * 100.0).round() as i64
}

impl BatchGenerator for NexmarkGenerator {
    fn generate(&mut self, first_event: u64, events_max: u64, rows_max: usize) -> Generated {
        let kind = self.config.table.event_kind();
        let expected_rows = match self.config.table {
            NexmarkTable::Person => events_max / ids::PROPORTION_DENOMINATOR + 1,
            NexmarkTable::Auction => events_max / ids::PROPORTION_DENOMINATOR * 3 + 3,
            NexmarkTable::Bid => events_max,
        };
        let capacity = usize::try_from(expected_rows).map_or(rows_max, |r| r.min(rows_max));
        let mut columns = Columns::new(&self.types, &self.projection, capacity);
        let end = first_event.saturating_add(events_max);
        let mut n = first_event;
        let mut rows = 0;
        while n < end && rows < rows_max {
            if ids::kind(n) == kind {
                match self.config.table {
                    NexmarkTable::Person => self.person(n, &mut columns),
                    NexmarkTable::Auction => self.auction(n, &mut columns),
                    NexmarkTable::Bid => self.bid(n, &mut columns),
                }
                rows += 1;
            }
            n += 1;
        }
        Generated {
            columns: columns.finish(&self.projection),
            rows,
            events: n - first_event,
        }
    }

    fn rows_in(&self, events: u64) -> u64 {
        ids::events_of_kind(self.config.table.event_kind(), events)
    }

    fn resume_after(&mut self, rows: u64) -> Option<u64> {
        // Every event is generated from its number alone: nothing to replay.
        ids::event_after(self.config.table.event_kind(), rows)
    }
}
