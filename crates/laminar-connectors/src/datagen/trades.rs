//! The `trades` generator: a stream of stock trades (symbol, price, volume, ts) over a fixed
//! set of symbols, each price following its own random walk. Unlike Nexmark ids, a price
//! depends on the symbol's earlier trades, so the walk is carried in the reader (and replayed
//! to resume after a number of trades); it is still deterministic for a seed.

use super::columns::{table_schema, ColumnType, Columns};
use super::event_time::EventClock;
use super::reader::{BatchGenerator, Generated};
use super::rng::SplitMix64;
use datafusion::arrow::datatypes::SchemaRef;

/// Columns of `trades`.
const TRADE_COLUMNS: [(&str, ColumnType); 4] = [
    ("symbol", ColumnType::Utf8),
    ("price", ColumnType::Float64),
    ("volume", ColumnType::Int64),
    ("ts", ColumnType::TimestampMs),
];

/// Names of the first symbols; further symbols are `SYM0040`, `SYM0041`, ...
const TICKERS: [&str; 40] = [
    "AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "META", "TSLA", "NFLX", "AMD", "INTC", "ORCL", "IBM",
    "CSCO", "ADBE", "CRM", "QCOM", "TXN", "AVGO", "PYPL", "UBER", "SHOP", "SNOW", "PLTR", "JPM",
    "BAC", "WFC", "GS", "MS", "V", "MA", "KO", "PEP", "WMT", "COST", "DIS", "NKE", "MCD", "XOM",
    "CVX", "PFE",
];

/// Largest relative price move of one trade (±0.1%).
const STEP_MAX: f64 = 0.001;
/// Prices never fall below one cent.
const PRICE_MIN: f64 = 0.01;
/// Largest volume of one trade.
const VOLUME_MAX: u64 = 1_000;

/// The schema of `trades`.
pub(crate) fn schema() -> SchemaRef {
    table_schema(&TRADE_COLUMNS)
}

/// Name of symbol `index`.
pub(crate) fn symbol_name(index: usize) -> String {
    TICKERS
        .get(index)
        .map_or_else(|| format!("SYM{index:04}"), |t| (*t).to_owned())
}

/// Generates trades; holds the current price of every symbol.
pub(crate) struct TradesGenerator {
    seed: u64,
    clock: EventClock,
    projection: Vec<usize>,
    symbols: Vec<String>,
    prices: Vec<f64>,
}

impl TradesGenerator {
    pub(crate) fn new(
        seed: u64,
        clock: EventClock,
        symbols: usize,
        projection: Vec<usize>,
    ) -> Self {
        let mut rng = SplitMix64::new(seed ^ 0x7472_6164_6573);
        let prices = (0..symbols)
            .map(|_| round_cents(20.0 + rng.unit_f64() * 480.0))
            .collect();
        Self {
            seed,
            clock,
            projection,
            symbols: (0..symbols).map(symbol_name).collect(),
            prices,
        }
    }
}

fn round_cents(price: f64) -> f64 {
    (price * 100.0).round() / 100.0
}

/// The part of trade `n` that moves its symbol's price.
struct Step {
    symbol: usize,
    ts: i64,
    /// The event's generator, at the draws that follow (the volume).
    rng: SplitMix64,
}

impl TradesGenerator {
    /// Draws trade `n`'s symbol and price move and applies the move.
    fn step(&mut self, n: u64) -> Step {
        let mut rng = SplitMix64::for_event(self.seed, n);
        let ts = self.clock.timestamp_ms(n, &mut rng);
        let symbol = rng.below(self.symbols.len() as u64) as usize;
        let step = (rng.unit_f64() * 2.0 - 1.0) * STEP_MAX;
        let price = &mut self.prices[symbol];
        *price = (*price * (1.0 + step)).max(PRICE_MIN);
        Step { symbol, ts, rng }
    }
}

impl BatchGenerator for TradesGenerator {
    fn generate(&mut self, first_event: u64, events_max: u64, rows_max: usize) -> Generated {
        let types: Vec<ColumnType> = TRADE_COLUMNS.iter().map(|(_, t)| *t).collect();
        let rows = usize::try_from(events_max).map_or(rows_max, |e| e.min(rows_max));
        let mut columns = Columns::new(&types, &self.projection, rows);
        for n in first_event..first_event.saturating_add(rows as u64) {
            let Step {
                symbol,
                ts,
                mut rng,
            } = self.step(n);
            let volume = 1 + rng.below(VOLUME_MAX) as i64;
            columns.utf8(0, &self.symbols[symbol]);
            columns.float64(1, round_cents(self.prices[symbol]));
            columns.int64(2, volume);
            columns.timestamp_ms(3, ts);
        }
        Generated {
            columns: columns.finish(&self.projection),
            rows,
            events: rows as u64,
        }
    }

    fn rows_in(&self, events: u64) -> u64 {
        events
    }

    /// Replays the price walk of the first `rows` trades (every event is a trade), one
    /// draw sequence per trade and no rows built: linear in `rows`, but cheap per trade.
    fn resume_after(&mut self, rows: u64) -> Option<u64> {
        for n in 0..rows {
            self.step(n);
        }
        Some(rows)
    }
}
