//! The Nexmark benchmark's data model (persons, auctions, bids), following the Java generator
//! of Beam and Flink: one event stream where event `n` is a person, an auction or a bid
//! (1 : 3 : 46), with ids derived from `n` and hot auctions, bidders and sellers. A source
//! reads one table and emits only that table's events, so sources with the same seed and
//! options form one consistent stream.

mod generator;
mod ids;
mod text;

use datafusion::arrow::datatypes::SchemaRef;

pub(crate) use generator::NexmarkGenerator;

use super::columns::{table_schema, ColumnType};
use ids::EventKind;

/// One of the three Nexmark tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NexmarkTable {
    /// `person`.
    Person,
    /// `auction`.
    Auction,
    /// `bid`.
    Bid,
}

/// Columns of `person`.
const PERSON_COLUMNS: [(&str, ColumnType); 8] = [
    ("id", ColumnType::Int64),
    ("name", ColumnType::Utf8),
    ("email_address", ColumnType::Utf8),
    ("credit_card", ColumnType::Utf8),
    ("city", ColumnType::Utf8),
    ("state", ColumnType::Utf8),
    ("date_time", ColumnType::TimestampMs),
    ("extra", ColumnType::Utf8),
];

/// Columns of `auction`.
const AUCTION_COLUMNS: [(&str, ColumnType); 10] = [
    ("id", ColumnType::Int64),
    ("item_name", ColumnType::Utf8),
    ("description", ColumnType::Utf8),
    ("initial_bid", ColumnType::Int64),
    ("reserve", ColumnType::Int64),
    ("date_time", ColumnType::TimestampMs),
    ("expires", ColumnType::TimestampMs),
    ("seller", ColumnType::Int64),
    ("category", ColumnType::Int64),
    ("extra", ColumnType::Utf8),
];

/// Columns of `bid`.
const BID_COLUMNS: [(&str, ColumnType); 7] = [
    ("auction", ColumnType::Int64),
    ("bidder", ColumnType::Int64),
    ("price", ColumnType::Int64),
    ("channel", ColumnType::Utf8),
    ("url", ColumnType::Utf8),
    ("date_time", ColumnType::TimestampMs),
    ("extra", ColumnType::Utf8),
];

impl NexmarkTable {
    /// Values of the `table` option.
    pub(crate) const NAMES: [&'static str; 3] = ["bid", "auction", "person"];

    /// The table named by a value of [`Self::NAMES`].
    pub(crate) fn from_name(name: &str) -> Self {
        match name {
            "person" => Self::Person,
            "auction" => Self::Auction,
            _ => Self::Bid,
        }
    }

    /// Lowercase name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Person => "person",
            Self::Auction => "auction",
            Self::Bid => "bid",
        }
    }

    fn columns(self) -> &'static [(&'static str, ColumnType)] {
        match self {
            Self::Person => &PERSON_COLUMNS,
            Self::Auction => &AUCTION_COLUMNS,
            Self::Bid => &BID_COLUMNS,
        }
    }

    /// Column types in table order.
    pub(crate) fn column_types(self) -> Vec<ColumnType> {
        self.columns().iter().map(|(_, t)| *t).collect()
    }

    /// The full schema of the table.
    pub(crate) fn schema(self) -> SchemaRef {
        table_schema(self.columns())
    }

    fn event_kind(self) -> EventKind {
        match self {
            Self::Person => EventKind::Person,
            Self::Auction => EventKind::Auction,
            Self::Bid => EventKind::Bid,
        }
    }
}

/// Nexmark-specific options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NexmarkConfig {
    /// Which table the source emits.
    pub(crate) table: NexmarkTable,
    /// `1 - 1/ratio` of bids go to the current hot auction.
    pub(crate) hot_auction_ratio: u64,
    /// `1 - 1/ratio` of bids come from the current hot bidder.
    pub(crate) hot_bidders_ratio: u64,
    /// `1 - 1/ratio` of auctions are by the current hot seller.
    pub(crate) hot_sellers_ratio: u64,
}
