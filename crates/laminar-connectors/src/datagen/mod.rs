//! The DATAGEN connector: deterministic synthetic streams for tests, demos and benchmarks —
//! the Nexmark benchmark's person/auction/bid tables and a stock `trades` stream. Same options
//! and seed give the same rows, bit for bit; event time is synthetic with a bounded
//! out-of-order jitter, and `rate` optionally paces generation in wall-clock time.

mod columns;
mod event_time;
mod nexmark;
mod reader;
mod rng;
mod throttle;
mod trades;

use std::time::Duration;

use datafusion::arrow::datatypes::{Schema, SchemaRef, TimeUnit};

use crate::error::{ConnectorError, Result};
use crate::options::ConnectorOptions;
use crate::position::SourcePosition;
use crate::source::{SourceConnector, SourceReader, IDLE_TIMEOUT_OPTION};
use crate::timestamp::parse_timestamp;
use event_time::EventClock;
use nexmark::{NexmarkConfig, NexmarkGenerator, NexmarkTable};
use reader::{BatchGenerator, GeneratorReader};
use throttle::Throttle;
use trades::TradesGenerator;

/// Connector name used in messages.
const CONNECTOR: &str = "DATAGEN source";
/// Options every generator accepts.
const COMMON_OPTIONS: [&str; 10] = [
    IDLE_TIMEOUT_OPTION,
    "kind",
    "rate",
    "max_batch_delay",
    "events",
    "seed",
    "partitions",
    "start_time",
    "event_rate",
    "max_out_of_order_ms",
];
/// Options only `kind = 'nexmark'` accepts.
const NEXMARK_OPTIONS: [&str; 4] = [
    "table",
    "hot_auction_ratio",
    "hot_bidders_ratio",
    "hot_sellers_ratio",
];
/// Options only `kind = 'trades'` accepts.
const TRADES_OPTIONS: [&str; 1] = ["symbols"];

/// Default `start_time`: 2024-01-01 00:00:00 UTC.
const START_TIME_MS_DEFAULT: i64 = 1_704_067_200_000;
/// Default `event_rate`, events per second of event time (the Java generator's default).
const EVENT_RATE_DEFAULT: u64 = 10_000;
/// Default `max_out_of_order_ms`.
const MAX_OUT_OF_ORDER_MS_DEFAULT: u64 = 100;
/// Default `partitions`.
const PARTITIONS_DEFAULT: u32 = 1;
/// Largest `partitions`.
const PARTITIONS_MAX: u32 = 1_024;
/// Default `symbols` of `trades`.
const SYMBOLS_DEFAULT: usize = 8;
/// Largest `symbols` of `trades`.
const SYMBOLS_MAX: usize = 100_000;
/// Java defaults of the hot ratios.
const HOT_AUCTION_RATIO_DEFAULT: u64 = 2;
/// See [`HOT_AUCTION_RATIO_DEFAULT`].
const HOT_BIDDERS_RATIO_DEFAULT: u64 = 4;
/// See [`HOT_AUCTION_RATIO_DEFAULT`].
const HOT_SELLERS_RATIO_DEFAULT: u64 = 4;

/// Which generator a source runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Nexmark(NexmarkConfig),
    Trades { symbols: usize },
}

/// A validated DATAGEN source.
#[derive(Debug)]
pub(crate) struct DatagenSource {
    kind: Kind,
    seed: u64,
    clock: EventClock,
    rate: f64,
    /// With a `rate`: the longest an event waits for the rest of its batch.
    max_batch_delay: Duration,
    events: Option<u64>,
    partitions: u32,
    schema: SchemaRef,
    /// Table column index of each output column.
    projection: Vec<usize>,
}

impl DatagenSource {
    /// Validates options and the declared columns against the generator's table.
    pub(crate) fn create(options: &ConnectorOptions, declared: Option<SchemaRef>) -> Result<Self> {
        let (kind, table_schema, origin) = parse_kind(options)?;
        let rate = options.parse::<f64>(CONNECTOR, "rate")?.unwrap_or(0.0);
        if !rate.is_finite() || rate < 0.0 {
            return Err(ConnectorError::invalid_option(
                CONNECTOR,
                "rate",
                options.get("rate").unwrap_or_default(),
                "expected events per second, 0 or more (0 = as fast as possible)",
            ));
        }
        let partitions = options
            .parse::<u32>(CONNECTOR, "partitions")?
            .unwrap_or(PARTITIONS_DEFAULT);
        if !(1..=PARTITIONS_MAX).contains(&partitions) {
            return Err(out_of_range(
                options,
                "partitions",
                1,
                u64::from(PARTITIONS_MAX),
            ));
        }
        let (schema, projection) = match declared {
            None => {
                let projection = (0..table_schema.fields().len()).collect();
                (table_schema, projection)
            }
            Some(declared) => {
                let projection = project(&declared, &table_schema, &origin)?;
                (declared, projection)
            }
        };
        Ok(Self {
            kind,
            seed: options.parse::<u64>(CONNECTOR, "seed")?.unwrap_or(0),
            clock: parse_clock(options)?,
            rate,
            max_batch_delay: options
                .duration(CONNECTOR, "max_batch_delay")?
                .unwrap_or(throttle::MAX_BATCH_DELAY_DEFAULT),
            events: options.parse::<u64>(CONNECTOR, "events")?,
            partitions,
            schema,
            projection,
        })
    }
}

/// The generator kind and its options (checking that no option of another kind is given),
/// with the table's schema and its name for messages.
fn parse_kind(options: &ConnectorOptions) -> Result<(Kind, SchemaRef, String)> {
    let kind_name = options
        .choice(CONNECTOR, "kind", &["nexmark", "trades"])?
        .ok_or_else(|| ConnectorError::MissingOption {
            connector: CONNECTOR.to_owned(),
            option: "kind".to_owned(),
        })?;
    let mut known = COMMON_OPTIONS.to_vec();
    if kind_name == "trades" {
        known.extend(TRADES_OPTIONS);
        options.check_known(CONNECTOR, &known)?;
        let symbols = options
            .parse::<usize>(CONNECTOR, "symbols")?
            .unwrap_or(SYMBOLS_DEFAULT);
        if !(1..=SYMBOLS_MAX).contains(&symbols) {
            return Err(out_of_range(options, "symbols", 1, SYMBOLS_MAX as u64));
        }
        return Ok((
            Kind::Trades { symbols },
            trades::schema(),
            "trades".to_owned(),
        ));
    }
    known.extend(NEXMARK_OPTIONS);
    options.check_known(CONNECTOR, &known)?;
    let table = options
        .choice(CONNECTOR, "table", &NexmarkTable::NAMES)?
        .map(NexmarkTable::from_name)
        .ok_or_else(|| ConnectorError::MissingOption {
            connector: CONNECTOR.to_owned(),
            option: "table".to_owned(),
        })?;
    let config = NexmarkConfig {
        table,
        hot_auction_ratio: ratio(options, "hot_auction_ratio", HOT_AUCTION_RATIO_DEFAULT)?,
        hot_bidders_ratio: ratio(options, "hot_bidders_ratio", HOT_BIDDERS_RATIO_DEFAULT)?,
        hot_sellers_ratio: ratio(options, "hot_sellers_ratio", HOT_SELLERS_RATIO_DEFAULT)?,
    };
    Ok((
        Kind::Nexmark(config),
        table.schema(),
        format!("nexmark table {}", table.name()),
    ))
}

/// The event-time options: `start_time`, `event_rate`, `max_out_of_order_ms`.
fn parse_clock(options: &ConnectorOptions) -> Result<EventClock> {
    let event_rate = options
        .parse::<u64>(CONNECTOR, "event_rate")?
        .unwrap_or(EVENT_RATE_DEFAULT);
    if event_rate == 0 {
        return Err(out_of_range(options, "event_rate", 1, u64::MAX));
    }
    let start_ms = match options.get("start_time") {
        None => START_TIME_MS_DEFAULT,
        Some(raw) => parse_timestamp(raw, TimeUnit::Millisecond).ok_or_else(|| {
            ConnectorError::invalid_option(
                CONNECTOR,
                "start_time",
                raw,
                "expected a timestamp such as '2024-01-01 00:00:00' or epoch milliseconds",
            )
        })?,
    };
    Ok(EventClock {
        start_ms,
        event_rate,
        max_out_of_order_ms: options
            .parse::<u64>(CONNECTOR, "max_out_of_order_ms")?
            .unwrap_or(MAX_OUT_OF_ORDER_MS_DEFAULT),
    })
}

/// A hot ratio option: at least 1 (1 = nothing is hot).
fn ratio(options: &ConnectorOptions, key: &str, default: u64) -> Result<u64> {
    let value = options.parse::<u64>(CONNECTOR, key)?.unwrap_or(default);
    if value == 0 {
        return Err(out_of_range(options, key, 1, u64::MAX));
    }
    Ok(value)
}

fn out_of_range(options: &ConnectorOptions, key: &str, min: u64, max: u64) -> ConnectorError {
    let reason = if max == u64::MAX {
        format!("expected at least {min}")
    } else {
        format!("expected a number from {min} to {max}")
    };
    ConnectorError::invalid_option(CONNECTOR, key, options.get(key).unwrap_or_default(), reason)
}

/// Table column index of each declared column; each must exist with the same type.
fn project(declared: &Schema, table: &Schema, origin: &str) -> Result<Vec<usize>> {
    declared
        .fields()
        .iter()
        .map(|field| {
            let index = table
                .index_of(field.name())
                .ok()
                .or_else(|| {
                    table
                        .fields()
                        .iter()
                        .position(|f| f.name().eq_ignore_ascii_case(field.name()))
                })
                .ok_or_else(|| ConnectorError::ColumnNotFound {
                    column: field.name().clone(),
                    origin: origin.to_owned(),
                    available: table
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            let actual = table.field(index).data_type();
            if actual != field.data_type() {
                return Err(ConnectorError::ColumnType {
                    column: field.name().clone(),
                    origin: origin.to_owned(),
                    declared: field.data_type().to_string(),
                    actual: actual.to_string(),
                });
            }
            Ok(index)
        })
        .collect()
}

impl SourceConnector for DatagenSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn is_bounded(&self) -> bool {
        self.events.is_some()
    }

    fn open(&self, batch_rows_max: usize) -> Result<Box<dyn SourceReader>> {
        Ok(Box::new(self.reader(batch_rows_max)))
    }

    /// Resumes after the rows of `position`: generation is deterministic, so the generator
    /// continues from the event after the last row taken (the trades price walk is replayed
    /// up to there).
    fn open_at(
        &self,
        batch_rows_max: usize,
        position: &SourcePosition,
    ) -> Result<Box<dyn SourceReader>> {
        let origin = match self.kind {
            Kind::Nexmark(config) => format!("nexmark table {}", config.table.name()),
            Kind::Trades { .. } => "trades".to_owned(),
        };
        Ok(Box::new(
            self.reader(batch_rows_max).resume(position, &origin)?,
        ))
    }
}

impl DatagenSource {
    /// A reader from the first event.
    fn reader(&self, batch_rows_max: usize) -> GeneratorReader {
        let projection = self.projection.clone();
        let generator: Box<dyn BatchGenerator> = match self.kind {
            Kind::Nexmark(config) => Box::new(NexmarkGenerator::new(
                config, self.seed, self.clock, projection,
            )),
            Kind::Trades { symbols } => Box::new(TradesGenerator::new(
                self.seed, self.clock, symbols, projection,
            )),
        };
        GeneratorReader::new(
            generator,
            self.schema.clone(),
            self.events,
            Throttle::new(self.rate, self.max_batch_delay),
            self.partitions,
            batch_rows_max,
        )
    }
}

#[cfg(test)]
mod resume_tests;
#[cfg(test)]
mod tests;
