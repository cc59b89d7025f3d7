//! Tests of the lookup join with a lookup source, against a source in memory that records
//! its calls and can be held (to prove the join does not wait for it) or made to fail.

use std::collections::HashMap as StdHashMap;
use std::sync::{Condvar, Mutex};

use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::physical_expr::expressions::Column;

use super::*;
use crate::lookup::{LookupError, LookupOptions, LookupSource};

/// Currency rates in memory: records each call's keys; held while `held` is set; fails
/// the first `failures` calls.
#[derive(Default)]
struct Rates {
    table: StdHashMap<String, f64>,
    calls: Mutex<Vec<Vec<String>>>,
    held: Mutex<bool>,
    released: Condvar,
    failures: Mutex<u32>,
}

impl Rates {
    fn new(rates: &[(&str, f64)]) -> Arc<Self> {
        Arc::new(Self {
            table: rates.iter().map(|(k, v)| ((*k).to_string(), *v)).collect(),
            ..Self::default()
        })
    }

    fn hold(&self, held: bool) {
        *self.held.lock().expect("lock") = held;
        self.released.notify_all();
    }

    fn calls(&self) -> Vec<Vec<String>> {
        self.calls.lock().expect("lock").clone()
    }
}

impl LookupSource for Rates {
    fn lookup(&self, keys: &RecordBatch) -> Result<RecordBatch, LookupError> {
        let mut held = self.held.lock().expect("lock");
        while *held {
            held = self.released.wait(held).expect("lock");
        }
        drop(held);
        let keys = keys
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| LookupError::new("keys are not strings"))?;
        let asked: Vec<String> = keys.iter().flatten().map(str::to_string).collect();
        self.calls.lock().expect("lock").push(asked.clone());
        {
            let mut failures = self.failures.lock().expect("lock");
            if *failures > 0 {
                *failures -= 1;
                return Err(LookupError::new("connection refused"));
            }
        }
        let found: Vec<(&String, f64)> = asked
            .iter()
            .filter_map(|k| self.table.get(k).map(|v| (k, *v)))
            .collect();
        Ok(RecordBatch::try_new(
            table_schema(),
            vec![
                Arc::new(StringArray::from_iter_values(found.iter().map(|f| f.0))),
                Arc::new(Float64Array::from_iter_values(found.iter().map(|f| f.1))),
            ],
        )?)
    }
}

fn table_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("currency", DataType::Utf8, false),
        Field::new("rate", DataType::Float64, true),
    ]))
}

fn stream_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("currency", DataType::Utf8, true),
    ]))
}

fn join(
    source: &Arc<Rates>,
    join_type: JoinType,
    options: LookupOptions,
) -> LookupSourceJoinOperator {
    let service = LookupService::start(
        "rates",
        table_schema(),
        vec![0],
        Arc::clone(source) as Arc<dyn LookupSource>,
        options,
    )
    .expect("threads start");
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("currency", DataType::Utf8, true),
        Field::new("rate", DataType::Float64, true),
    ]));
    LookupSourceJoinOperator::new(LookupSourceJoinSpec {
        join_type,
        stream_keys: vec![Arc::new(Column::new("currency", 1))],
        table_columns: vec![1],
        table_filter: None,
        filter: None,
        stream: stream_schema(),
        schema,
        service: Arc::new(service),
    })
    .expect("a lookup join")
}

fn orders(rows: &[(i64, Option<&str>)]) -> ChangeBatch {
    ChangeBatch::insert_only(
        RecordBatch::try_new(
            stream_schema(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(rows.iter().map(|r| r.1).collect::<StringArray>()),
            ],
        )
        .expect("columns match"),
    )
}

/// `id -> rate` per output row, `NULL` when unmatched.
fn render(out: &[ChangeBatch]) -> Vec<String> {
    crate::operator::test_support::id_to_value(out, 2)
}

/// Polls `op` the way the worker's timer does until nothing waits (at most 5 s).
fn settle(op: &mut LookupSourceJoinOperator, out: &mut Vec<ChangeBatch>) -> DfResult<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while op.timer_armed() {
        op.on_timer(out)?;
        assert!(Instant::now() < deadline, "the source never answered");
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

#[test]
fn misses_go_to_the_source_once_per_batch_and_hits_come_from_the_cache() {
    let source = Rates::new(&[("EUR", 1.1), ("GBP", 1.3)]);
    let mut op = join(&source, JoinType::Left, LookupOptions::default());
    let mut out = Vec::new();
    op.process(
        0,
        orders(&[
            (1, Some("EUR")),
            (2, Some("JPY")),
            (3, Some("EUR")),
            (4, None),
        ]),
        &mut out,
    )
    .expect("probe");
    // Nothing was joined on the worker: the batch waits for the source.
    assert!(out.is_empty());
    settle(&mut op, &mut out).expect("answers");
    assert_eq!(
        render(&out),
        ["1 -> 1.1", "2 -> NULL", "3 -> 1.1", "4 -> NULL"]
    );
    // One call, each distinct key once, the NULL key never.
    assert_eq!(source.calls(), [["EUR", "JPY"]]);
    out.clear();
    // Both the row and the "no row" answer are cached: no call, joined at once.
    op.process(0, orders(&[(5, Some("JPY")), (6, Some("EUR"))]), &mut out)
        .expect("probe");
    assert_eq!(render(&out), ["5 -> NULL", "6 -> 1.1"]);
    assert_eq!(source.calls().len(), 1);
    let counters = op.spec.service.counters();
    assert_eq!((counters.hits, counters.misses), (2, 3));
    assert_eq!(
        (
            counters.requests,
            counters.keys_requested,
            counters.rows_returned
        ),
        (1, 2, 1)
    );
    assert_eq!(counters.cached_keys, 2);
}

#[test]
fn the_worker_goes_on_while_the_source_is_held_and_rows_leave_in_arrival_order() {
    let source = Rates::new(&[("EUR", 1.1), ("GBP", 1.3)]);
    let mut op = join(&source, JoinType::Inner, LookupOptions::default());
    let mut out = Vec::new();
    op.process(0, orders(&[(1, Some("GBP"))]), &mut out)
        .expect("probe");
    settle(&mut op, &mut out).expect("answers");
    out.clear();
    source.hold(true);
    op.on_watermark(100, &mut out).expect("watermark");
    op.process(0, orders(&[(2, Some("EUR")), (3, Some("CHF"))]), &mut out)
        .expect("probe returns while the source is held");
    op.on_watermark(200, &mut out).expect("watermark");
    // GBP is cached, but its row arrived after rows still waiting: it waits behind them.
    op.process(0, orders(&[(4, Some("GBP")), (5, Some("EUR"))]), &mut out)
        .expect("probe");
    op.on_timer(&mut out).expect("poll");
    assert!(out.is_empty());
    // The output watermark stays where the oldest waiting rows arrived.
    assert_eq!(op.output_watermark(300), 100);
    // EUR was asked for once, by the first batch; the second waits for the same answer.
    source.hold(false);
    settle(&mut op, &mut out).expect("answers");
    assert_eq!(render(&out), ["2 -> 1.1", "4 -> 1.3", "5 -> 1.1"]);
    assert_eq!(source.calls(), [vec!["GBP"], vec!["EUR", "CHF"]]);
    assert_eq!(op.output_watermark(300), 300);
}

#[test]
fn misses_arriving_while_every_thread_is_busy_go_as_one_request() {
    let source = Rates::new(&[("EUR", 1.1), ("GBP", 1.3), ("CHF", 1.05)]);
    let options = LookupOptions {
        threads: 1,
        ..LookupOptions::default()
    };
    let mut op = join(&source, JoinType::Left, options);
    let mut out = Vec::new();
    source.hold(true);
    op.process(0, orders(&[(1, Some("EUR"))]), &mut out)
        .expect("probe");
    // The one thread is busy with EUR: GBP and CHF wait to be asked together.
    op.process(0, orders(&[(2, Some("GBP"))]), &mut out)
        .expect("probe");
    op.process(0, orders(&[(3, Some("CHF")), (4, Some("EUR"))]), &mut out)
        .expect("probe");
    source.hold(false);
    settle(&mut op, &mut out).expect("answers");
    assert_eq!(
        render(&out),
        ["1 -> 1.1", "2 -> 1.3", "3 -> 1.05", "4 -> 1.1"]
    );
    assert_eq!(source.calls(), [vec!["EUR"], vec!["GBP", "CHF"]]);
}

#[test]
fn an_answer_older_than_the_ttl_is_asked_for_again() {
    let source = Rates::new(&[("EUR", 1.1)]);
    let options = LookupOptions {
        cache_ttl: Some(Duration::from_millis(30)),
        ..LookupOptions::default()
    };
    let mut op = join(&source, JoinType::Left, options);
    let mut out = Vec::new();
    op.process(0, orders(&[(1, Some("EUR"))]), &mut out)
        .expect("probe");
    settle(&mut op, &mut out).expect("answers");
    op.process(0, orders(&[(2, Some("EUR"))]), &mut out)
        .expect("probe");
    std::thread::sleep(Duration::from_millis(40));
    op.process(0, orders(&[(3, Some("EUR"))]), &mut out)
        .expect("probe");
    settle(&mut op, &mut out).expect("answers");
    assert_eq!(render(&out), ["1 -> 1.1", "2 -> 1.1", "3 -> 1.1"]);
    assert_eq!(source.calls().len(), 2);
    assert_eq!(op.spec.service.counters().expirations, 1);
}

#[test]
fn a_failing_source_is_retried_then_fails_the_join_naming_the_table() {
    let source = Rates::new(&[("EUR", 1.1)]);
    let options = LookupOptions {
        retries: 2,
        ..LookupOptions::default()
    };
    let mut op = join(&source, JoinType::Left, options);
    let mut out = Vec::new();
    // Two failures, then an answer: retried, not failed.
    *source.failures.lock().expect("lock") = 2;
    op.process(0, orders(&[(1, Some("EUR"))]), &mut out)
        .expect("probe");
    settle(&mut op, &mut out).expect("answers after two retries");
    assert_eq!(render(&out), ["1 -> 1.1"]);
    // Three failures exceed two retries.
    *source.failures.lock().expect("lock") = 3;
    op.process(0, orders(&[(2, Some("GBP"))]), &mut out)
        .expect("probe");
    let error = settle(&mut op, &mut out).expect_err("the source keeps failing");
    let message = error.to_string();
    assert!(
        message.contains("lookup table rates") && message.contains("connection refused"),
        "{message}"
    );
    assert_eq!(op.spec.service.counters().failures, 5);
}

#[test]
fn waiting_rows_are_saved_by_a_snapshot_and_looked_up_again_when_restored() {
    let source = Rates::new(&[("EUR", 1.1), ("GBP", 1.3)]);
    let mut op = join(&source, JoinType::Left, LookupOptions::default());
    let mut out = Vec::new();
    source.hold(true);
    op.process(0, orders(&[(1, Some("EUR")), (2, Some("XXX"))]), &mut out)
        .expect("probe");
    op.process(0, orders(&[(3, Some("GBP"))]), &mut out)
        .expect("probe");
    let state = op
        .snapshot(true)
        .expect("snapshot")
        .expect("the waiting rows");
    let parts = crate::state::merge_states(&[state]).expect("parts");
    let mut restored = op.fork();
    restored.restore(parts).expect("restore");
    source.hold(false);
    let mut restored_out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while restored.timer_armed() {
        restored.on_timer(&mut restored_out).expect("answers");
        assert!(Instant::now() < deadline, "the source never answered");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(render(&restored_out), ["1 -> 1.1", "2 -> NULL", "3 -> 1.3"]);
    // The original answers too: the snapshot took nothing from it.
    settle(&mut op, &mut out).expect("answers");
    assert_eq!(render(&out), ["1 -> 1.1", "2 -> NULL", "3 -> 1.3"]);
}

#[test]
fn at_the_end_of_input_the_waiting_rows_are_waited_for() {
    let source = Rates::new(&[("EUR", 1.1)]);
    let mut op = join(&source, JoinType::Inner, LookupOptions::default());
    let mut out = Vec::new();
    source.hold(true);
    op.process(0, orders(&[(1, Some("EUR")), (2, Some("JPY"))]), &mut out)
        .expect("probe");
    let release = {
        let source = Arc::clone(&source);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            source.hold(false);
        })
    };
    op.on_end(&mut out).expect("end");
    release.join().expect("released");
    assert_eq!(render(&out), ["1 -> 1.1"]);
    assert!(!op.timer_armed());
}
