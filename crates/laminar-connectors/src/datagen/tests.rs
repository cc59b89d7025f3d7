//! Tests of the DATAGEN source through the public entry points: the Nexmark model's
//! proportions and references, determinism, event-time bounds, projection and options.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Float64Array, Int64Array, StringArray, TimestampMillisecondArray};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;

use crate::{
    create_source, ConnectorError, ConnectorOptions, SourceBatch, SourceConnector, SourceEvent,
};

fn options(pairs: &[(&str, &str)]) -> ConnectorOptions {
    ConnectorOptions::new(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    )
}

fn source(pairs: &[(&str, &str)]) -> Box<dyn SourceConnector> {
    create_source("DATAGEN", &options(pairs), None, Arc::default()).unwrap()
}

fn read_events(source: &dyn SourceConnector, batch_rows_max: usize) -> Vec<SourceEvent> {
    let mut reader = source.open(batch_rows_max).unwrap();
    let mut events = Vec::new();
    while let Some(event) = reader.next_event().unwrap() {
        events.push(event);
    }
    events
}

fn read_batches(source: &dyn SourceConnector, batch_rows_max: usize) -> Vec<SourceBatch> {
    read_events(source, batch_rows_max)
        .into_iter()
        .filter_map(|event| match event {
            SourceEvent::Batch(batch) => {
                assert!(batch.batch.num_rows() <= batch_rows_max);
                Some(batch)
            }
            _ => None,
        })
        .collect()
}

fn read_all(source: &dyn SourceConnector, batch_rows_max: usize) -> RecordBatch {
    let batches: Vec<RecordBatch> = read_batches(source, batch_rows_max)
        .into_iter()
        .map(|b| b.batch)
        .collect();
    concat_batches(&source.schema(), &batches).unwrap()
}

fn nexmark(table: &str, events: u64, seed: u64) -> RecordBatch {
    let events = events.to_string();
    let seed = seed.to_string();
    read_all(
        source(&[
            ("kind", "nexmark"),
            ("table", table),
            ("events", &events),
            ("seed", &seed),
        ])
        .as_ref(),
        1_000,
    )
}

fn int64s(batch: &RecordBatch, column: &str) -> Vec<i64> {
    batch
        .column_by_name(column)
        .unwrap()
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .values()
        .to_vec()
}

fn timestamps(batch: &RecordBatch, column: &str) -> Vec<i64> {
    batch
        .column_by_name(column)
        .unwrap()
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .unwrap()
        .values()
        .to_vec()
}

fn strings(batch: &RecordBatch, column: &str) -> Vec<String> {
    batch
        .column_by_name(column)
        .unwrap()
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap()
        .iter()
        .map(|s| s.unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn nexmark_tables_split_events_exactly_1_3_46() {
    let k = 40;
    let events = 50 * k;
    assert_eq!(nexmark("person", events, 1).num_rows() as u64, k);
    assert_eq!(nexmark("auction", events, 1).num_rows() as u64, 3 * k);
    assert_eq!(nexmark("bid", events, 1).num_rows() as u64, 46 * k);
}

#[test]
fn events_bounds_the_whole_event_sequence_exactly() {
    // Events 0..5003: persons at n % 50 == 0 (101), auctions at 1..=3 (100 * 3 + 2).
    assert_eq!(nexmark("person", 5_003, 0).num_rows(), 101);
    assert_eq!(nexmark("auction", 5_003, 0).num_rows(), 302);
    assert_eq!(nexmark("bid", 5_003, 0).num_rows(), 5_003 - 101 - 302);
    let bounded = source(&[("kind", "nexmark"), ("table", "bid"), ("events", "10")]);
    assert!(bounded.is_bounded());
    let unbounded = source(&[("kind", "nexmark"), ("table", "bid")]);
    assert!(!unbounded.is_bounded());
    let mut reader = unbounded.open(500).unwrap();
    assert!(matches!(
        reader.next_event().unwrap(),
        Some(SourceEvent::PartitionOpened(0))
    ));
    for _ in 0..3 {
        match reader.next_event().unwrap() {
            Some(SourceEvent::Batch(batch)) => assert_eq!(batch.batch.num_rows(), 500),
            other => panic!("expected a batch, got {other:?}"),
        }
    }
}

#[test]
fn same_seed_same_rows_whatever_the_batch_size_different_seed_different_rows() {
    for table in ["person", "auction", "bid"] {
        let a = nexmark(table, 3_000, 7);
        let b = read_all(
            source(&[
                ("kind", "nexmark"),
                ("table", table),
                ("events", "3000"),
                ("seed", "7"),
            ])
            .as_ref(),
            13,
        );
        assert_eq!(a, b, "table {table}");
        let c = nexmark(table, 3_000, 8);
        assert_ne!(a, c, "table {table}");
    }
}

#[test]
fn references_point_to_persons_and_auctions_created_at_or_before() {
    let events = 20_000;
    let persons = nexmark("person", events, 3);
    let auctions = nexmark("auction", events, 3);
    let bids = nexmark("bid", events, 3);
    let person_ids = int64s(&persons, "id");
    let auction_ids = int64s(&auctions, "id");
    assert_eq!(person_ids, (1_000..1_000 + 400).collect::<Vec<i64>>());
    assert_eq!(auction_ids, (1_000..1_000 + 1_200).collect::<Vec<i64>>());
    let sellers = int64s(&auctions, "seller");
    let bid_auctions = int64s(&bids, "auction");
    let bidders = int64s(&bids, "bidder");
    let (mut persons_so_far, mut auctions_so_far, mut auction_row, mut bid_row) = (0, 0, 0, 0);
    // Walk the event sequence with its own oracle of what exists.
    for n in 0..events {
        match n % 50 {
            0 => persons_so_far += 1,
            1..=3 => {
                auctions_so_far += 1;
                let seller = sellers[auction_row];
                assert!(
                    (1_000..1_000 + persons_so_far).contains(&seller),
                    "event {n}"
                );
                auction_row += 1;
            }
            _ => {
                let auction = bid_auctions[bid_row];
                let bidder = bidders[bid_row];
                assert!(
                    (1_000..1_000 + auctions_so_far).contains(&auction),
                    "event {n}"
                );
                assert!(
                    (1_000..1_000 + persons_so_far).contains(&bidder),
                    "event {n}"
                );
                bid_row += 1;
            }
        }
    }
    assert_eq!(bid_row, bids.num_rows());
}

#[test]
fn hot_auction_ratio_sends_most_bids_to_hot_auctions() {
    let share_on_hot_ids = |ratio: &str| {
        let bids = read_all(
            source(&[
                ("kind", "nexmark"),
                ("table", "bid"),
                ("events", "50000"),
                ("hot_auction_ratio", ratio),
            ])
            .as_ref(),
            4_096,
        );
        let auctions = int64s(&bids, "auction");
        let hot = auctions.iter().filter(|a| (**a - 1_000) % 100 == 0).count();
        hot as f64 / auctions.len() as f64
    };
    let default_share = share_on_hot_ids("2");
    assert!(default_share > 0.45, "{default_share}");
    let no_hot_share = share_on_hot_ids("1");
    assert!(no_hot_share < 0.1, "{no_hot_share}");
}

#[test]
fn event_time_starts_at_start_time_and_disorder_stays_within_the_bound() {
    let bids = read_all(
        source(&[
            ("kind", "nexmark"),
            ("table", "bid"),
            ("events", "20000"),
            ("event_rate", "1000"),
            ("max_out_of_order_ms", "50"),
            ("start_time", "2024-06-01T00:00:00Z"),
        ])
        .as_ref(),
        1_000,
    );
    let start = 1_717_200_000_000;
    let times = timestamps(&bids, "date_time");
    let mut max_seen = i64::MIN;
    let mut late = 0;
    for ts in &times {
        assert!(*ts >= start - 50);
        assert!(
            *ts >= max_seen.saturating_sub(50),
            "{ts} is more than 50 ms behind {max_seen}"
        );
        if *ts < max_seen {
            late += 1;
        }
        max_seen = max_seen.max(*ts);
    }
    assert!(late > 100, "expected out-of-order rows, got {late}");
    // 20_000 events at 1_000 events per second of event time span 20 seconds.
    assert!(max_seen < start + 20_000 && max_seen > start + 19_000);

    let in_order = read_all(
        source(&[
            ("kind", "nexmark"),
            ("table", "bid"),
            ("events", "5000"),
            ("max_out_of_order_ms", "0"),
        ])
        .as_ref(),
        1_000,
    );
    let times = timestamps(&in_order, "date_time");
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(times[0], 1_704_067_200_000);
}

fn declared(columns: &[(&str, DataType)]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|(name, data_type)| Field::new(*name, data_type.clone(), true))
            .collect::<Vec<_>>(),
    ))
}

#[test]
fn declared_columns_select_and_order_the_output() {
    let schema = declared(&[
        ("price", DataType::Int64),
        (
            "date_time",
            DataType::Timestamp(TimeUnit::Millisecond, None),
        ),
        ("auction", DataType::Int64),
    ]);
    let projected = create_source(
        "datagen",
        &options(&[("kind", "nexmark"), ("table", "bid"), ("events", "2000")]),
        Some(schema.clone()),
        Arc::default(),
    )
    .unwrap();
    assert_eq!(projected.schema(), schema);
    let batch = read_all(projected.as_ref(), 300);
    assert_eq!(batch.schema(), schema);
    let full = nexmark("bid", 2_000, 0);
    assert_eq!(int64s(&batch, "price"), int64s(&full, "price"));
    assert_eq!(int64s(&batch, "auction"), int64s(&full, "auction"));
    assert_eq!(
        timestamps(&batch, "date_time"),
        timestamps(&full, "date_time")
    );
}

#[test]
fn declared_columns_must_exist_with_the_generator_type() {
    let create = |columns: &[(&str, DataType)]| {
        create_source(
            "datagen",
            &options(&[("kind", "nexmark"), ("table", "bid")]),
            Some(declared(columns)),
            Arc::default(),
        )
        .unwrap_err()
    };
    match create(&[("price", DataType::Float64)]) {
        ConnectorError::ColumnType {
            column,
            origin,
            declared,
            actual,
        } => {
            assert_eq!(column, "price");
            assert_eq!(origin, "nexmark table bid");
            assert_eq!(declared, "Float64");
            assert_eq!(actual, "Int64");
        }
        other => panic!("expected a column type error, got {other:?}"),
    }
    assert_eq!(
        create(&[("amount", DataType::Int64)]).to_string(),
        "column amount does not exist in nexmark table bid; available columns: auction, bidder, price, channel, url, date_time, extra"
    );
}

#[test]
fn person_and_auction_fields_look_like_nexmark() {
    let persons = nexmark("person", 5_000, 11);
    for (name, email, card) in strings(&persons, "name")
        .iter()
        .zip(strings(&persons, "email_address"))
        .zip(strings(&persons, "credit_card"))
        .map(|((n, e), c)| (n.clone(), e, c))
    {
        assert_eq!(name.split(' ').count(), 2, "{name}");
        assert!(
            email.contains('@') && email.rsplit('.').next() == Some("com"),
            "{email}"
        );
        assert_eq!(card.len(), 19, "{card}");
    }
    assert!(strings(&persons, "state")
        .iter()
        .all(|s| ["AZ", "CA", "ID", "OR", "WA", "WY"].contains(&s.as_str())));
    let auctions = nexmark("auction", 5_000, 11);
    let initial = int64s(&auctions, "initial_bid");
    let reserve = int64s(&auctions, "reserve");
    assert!(initial
        .iter()
        .zip(&reserve)
        .all(|(i, r)| *i >= 100 && r > i));
    let starts = timestamps(&auctions, "date_time");
    let expires = timestamps(&auctions, "expires");
    assert!(starts.iter().zip(&expires).all(|(s, e)| e > s));
    assert!(int64s(&auctions, "category")
        .iter()
        .all(|c| (10..15).contains(c)));
    let bids = nexmark("bid", 5_000, 11);
    assert!(strings(&bids, "url")
        .iter()
        .all(|u| u.starts_with("https://www.nexmark.com/")));
    let extra_len: usize = strings(&bids, "extra").iter().map(String::len).sum();
    let extra_avg = extra_len / bids.num_rows();
    assert!((60..=76).contains(&extra_avg), "{extra_avg}");
}

#[test]
fn partitions_open_first_then_take_batches_round_robin() {
    let events = read_events(
        source(&[
            ("kind", "nexmark"),
            ("table", "bid"),
            ("events", "1000"),
            ("partitions", "3"),
        ])
        .as_ref(),
        100,
    );
    let described: Vec<String> = events
        .iter()
        .take(8)
        .map(|event| match event {
            SourceEvent::PartitionOpened(p) => format!("open {p}"),
            SourceEvent::Batch(batch) => format!("batch {}", batch.partition),
            SourceEvent::PartitionEnded(p) => format!("end {p}"),
        })
        .collect();
    assert_eq!(
        described,
        ["open 0", "open 1", "open 2", "batch 0", "batch 1", "batch 2", "batch 0", "batch 1"]
    );
}

#[test]
fn trades_walk_prices_per_symbol_deterministically() {
    let read = |seed: &str| {
        read_all(
            source(&[
                ("kind", "trades"),
                ("events", "4000"),
                ("seed", seed),
                ("symbols", "50"),
            ])
            .as_ref(),
            512,
        )
    };
    let trades = read("5");
    assert_eq!(trades.num_rows(), 4_000);
    assert_eq!(trades, read("5"));
    assert_ne!(trades, read("6"));
    let symbols = strings(&trades, "symbol");
    let mut distinct = symbols.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 50);
    assert!(distinct.contains(&"AAPL".to_owned()) && distinct.contains(&"SYM0049".to_owned()));
    let prices = trades
        .column_by_name("price")
        .unwrap()
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap()
        .values()
        .to_vec();
    // Consecutive trades of one symbol move by at most 0.1% (plus rounding to cents).
    let aapl: Vec<f64> = symbols
        .iter()
        .zip(&prices)
        .filter(|(s, _)| s.as_str() == "AAPL")
        .map(|(_, p)| *p)
        .collect();
    assert!(aapl.len() > 40);
    assert!(aapl
        .windows(2)
        .all(|w| (w[1] - w[0]).abs() <= w[0] * 0.001 + 0.011));
    assert!(int64s(&trades, "volume")
        .iter()
        .all(|v| (1..=1_000).contains(v)));
    assert_eq!(
        source(&[("kind", "trades")]).schema().field(0).name(),
        "symbol"
    );
}

#[test]
fn rate_paces_generation_in_wall_clock_time() {
    let paced = source(&[("kind", "trades"), ("events", "600"), ("rate", "3000")]);
    let started = Instant::now();
    let batches = read_batches(paced.as_ref(), 10_000);
    let elapsed = started.elapsed();
    // 600 events at 3000 per second take 200 ms, delivered a tenth of a second's worth at a time.
    let sizes: Vec<usize> = batches.iter().map(|b| b.batch.num_rows()).collect();
    assert_eq!(sizes, vec![300, 300]);
    assert!(elapsed >= Duration::from_millis(195), "{elapsed:?}");
}

#[test]
fn max_batch_delay_bounds_how_long_a_paced_event_waits_for_its_batch() {
    let paced = source(&[
        ("kind", "trades"),
        ("events", "600"),
        ("rate", "3000"),
        ("max_batch_delay", "20ms"),
    ]);
    let batches = read_batches(paced.as_ref(), 10_000);
    // 20 ms of events at 3000 per second: 60 per batch.
    let sizes: Vec<usize> = batches.iter().map(|b| b.batch.num_rows()).collect();
    assert_eq!(sizes, vec![60; 10]);
    let bad = create_source(
        "datagen",
        &options(&[("kind", "trades"), ("max_batch_delay", "soon")]),
        None,
        Arc::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(bad.contains("max_batch_delay"), "{bad}");
}

#[test]
fn datagen_options_are_validated() {
    let err = |pairs: &[(&str, &str)]| {
        create_source("datagen", &options(pairs), None, Arc::default())
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err(&[("table", "bid")]),
        "connector DATAGEN source requires option 'kind'"
    );
    assert_eq!(
        err(&[("kind", "nexmark")]),
        "connector DATAGEN source requires option 'table'"
    );
    assert!(err(&[("kind", "nexmark"), ("table", "bids")])
        .contains("expected one of: bid, auction, person"));
    assert!(
        err(&[("kind", "nexmark"), ("table", "bid"), ("symbols", "3")])
            .starts_with("unknown option 'symbols' for connector DATAGEN source")
    );
    assert!(err(&[("kind", "trades"), ("rate", "-1")])
        .starts_with("invalid value '-1' for option 'rate'"));
    assert!(err(&[("kind", "trades"), ("partitions", "0")])
        .contains("expected a number from 1 to 1024"));
    assert!(err(&[("kind", "trades"), ("start_time", "noon")])
        .starts_with("invalid value 'noon' for option 'start_time'"));
    assert!(
        err(&[("kind", "trades"), ("events", "many")]).contains("expected a non-negative integer")
    );
}
