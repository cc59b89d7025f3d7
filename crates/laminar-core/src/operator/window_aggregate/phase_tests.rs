//! Two-phase window aggregation: partial instances on two workers, whose states a final
//! instance merges, give the single-phase answer, whichever rows reach the partials after
//! their window closed there, when a partial's input goes idle, or past the flush bound.

use datafusion::arrow::array::{Int64Array, StringArray};
use datafusion::arrow::record_batch::RecordBatch;

use super::phase::PARTIAL_FLUSH_GROUPS;
use super::tests::{vectorized_calls, window_aggregate};
use super::{TwoPhase, WindowAggregateOperator};
use crate::change_batch::ChangeBatch;
use crate::operator::test_support::{inserts, render, Step};
use crate::operator::{AggregateCall, Operator};

/// The vectorized calls whose answer does not depend on the order rows are merged in:
/// not those concatenating values in arrival order (`array_agg` without `ORDER BY`,
/// `string_agg`), nor the floating-point statistics whose rounding differs with the order
/// partial states are merged in (as in DataFusion's own two-phase aggregation).
fn order_independent_calls() -> Vec<AggregateCall> {
    vectorized_calls()
        .into_iter()
        .filter(|call| {
            let name = call.function.fun().name();
            let unordered_concat = (name == "array_agg" && call.function.order_bys().is_empty())
                || name == "string_agg";
            let rounding = ["stddev", "var_pop", "corr", "covar_pop"].contains(&name);
            !unordered_concat && !rounding
        })
        .collect()
}

/// One event of a scripted input over two workers.
enum Event {
    /// Rows arriving on one worker.
    Rows(usize, Step),
    /// Both workers' watermark.
    Watermark(i64),
    /// One worker's input goes idle.
    Idle(usize),
}

/// A single-phase instance, and two partial instances with the final one merging them.
struct Phases {
    single: WindowAggregateOperator,
    partials: [Box<dyn Operator>; 2],
    last: Box<dyn Operator>,
    single_out: Vec<ChangeBatch>,
    last_out: Vec<ChangeBatch>,
}

impl Phases {
    fn new() -> Self {
        let TwoPhase { partial, last, .. } = window_aggregate(order_independent_calls())
            .two_phase()
            .expect("two phases");
        Self {
            single: window_aggregate(order_independent_calls()),
            partials: [partial.fork_for(2), partial.fork_for(2)],
            last: last.fork_for(2),
            single_out: Vec::new(),
            last_out: Vec::new(),
        }
    }

    /// Feeds the final instance what a partial emitted.
    fn deliver(&mut self, emitted: Vec<ChangeBatch>) {
        for batch in emitted {
            self.last
                .process(0, batch, &mut self.last_out)
                .expect("the final instance merges");
        }
    }

    fn feed(&mut self, event: Event) {
        match event {
            Event::Rows(worker, Step::Rows(batch)) => {
                self.single
                    .process(0, batch.clone(), &mut self.single_out)
                    .expect("single");
                let mut emitted = Vec::new();
                self.partials[worker]
                    .process(0, batch, &mut emitted)
                    .expect("partial");
                self.deliver(emitted);
            }
            Event::Rows(..) => unreachable!("rows are rows"),
            Event::Watermark(ms) => {
                self.single
                    .on_watermark(ms, &mut self.single_out)
                    .expect("single");
                for worker in 0..2 {
                    let mut emitted = Vec::new();
                    self.partials[worker]
                        .on_watermark(ms, &mut emitted)
                        .expect("partial");
                    self.deliver(emitted);
                }
                // The final instance's watermark is the minimum of both: both just sent it.
                self.last
                    .on_watermark(ms, &mut self.last_out)
                    .expect("final");
            }
            Event::Idle(worker) => {
                let mut emitted = Vec::new();
                self.partials[worker]
                    .on_idle(&mut emitted)
                    .expect("partial");
                self.deliver(emitted);
            }
        }
    }
}

#[test]
fn partial_states_merged_give_the_single_phase_answer_late_rows_included() {
    let mut phases = Phases::new();
    let events = [
        Event::Rows(0, inserts(&[("a", 1, 100), ("b", 2, 200), ("a", 3, 1_100)])),
        Event::Rows(1, inserts(&[("a", 4, 150), ("c", 5, 900), ("b", 6, 1_200)])),
        Event::Watermark(1_000),
        // Late on both phases: window 1000 closed everywhere.
        Event::Rows(1, inserts(&[("a", 7, 500), ("b", 8, 1_500)])),
        Event::Rows(0, inserts(&[("b", 9, 1_900), ("d", 10, 2_500)])),
        Event::Watermark(2_000),
        Event::Rows(0, inserts(&[("a", 11, 2_100), ("d", 12, 2_200)])),
        Event::Rows(1, inserts(&[("d", 13, 2_300)])),
        Event::Watermark(i64::MAX),
    ];
    let names: Vec<String> = order_independent_calls()
        .iter()
        .map(|c| c.function.fun().name().to_string())
        .collect();
    for expected in ["count", "sum", "avg", "min", "max", "first_value", "median"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} among {names:?}"
        );
    }
    for event in events {
        phases.feed(event);
    }
    let single = render(&phases.single_out);
    assert_eq!(single.len(), 7, "{single:?}");
    assert_eq!(render(&phases.last_out), single);
    assert_eq!(phases.single.late_rows(), 1);
    assert_eq!(
        phases.last.late_rows(),
        1,
        "the final instance judges late rows"
    );
    assert_eq!(phases.partials[1].late_rows(), 0);
}

#[test]
fn a_partial_whose_input_goes_idle_hands_over_its_states() {
    let mut phases = Phases::new();
    phases.feed(Event::Rows(0, inserts(&[("a", 1, 100), ("b", 2, 1_200)])));
    phases.feed(Event::Rows(1, inserts(&[("a", 3, 300)])));
    assert_eq!(phases.partials[1].state_entries(), 1);
    phases.feed(Event::Idle(1));
    assert_eq!(phases.partials[1].state_entries(), 0, "states handed over");
    assert_eq!(
        phases.last.state_entries(),
        1,
        "held by the final instance until the window closes"
    );
    // An idle worker no longer holds the final instance back: worker 0's watermark alone
    // closes window 1000, with worker 1's row in it.
    let mut emitted = Vec::new();
    phases.partials[0]
        .on_watermark(1_000, &mut emitted)
        .expect("partial");
    phases.deliver(emitted);
    phases
        .last
        .on_watermark(1_000, &mut phases.last_out)
        .expect("final");
    phases
        .single
        .on_watermark(1_000, &mut phases.single_out)
        .expect("single");
    assert_eq!(render(&phases.last_out), render(&phases.single_out));
    assert_eq!(render(&phases.last_out).len(), 1);
    assert!(render(&phases.last_out)[0].starts_with("a 1000 2 "));
}

#[test]
fn a_partial_past_its_flush_bound_hands_over_its_states() {
    let mut phases = Phases::new();
    let groups = PARTIAL_FLUSH_GROUPS + 1;
    let keys: Vec<String> = (0..groups).map(|g| format!("k{g}")).collect();
    let rows = |window: i64| {
        let batch = RecordBatch::try_new(
            crate::operator::test_support::input_schema(),
            vec![
                std::sync::Arc::new(StringArray::from_iter_values(&keys)),
                std::sync::Arc::new(Int64Array::from_iter_values(0..groups as i64)),
                std::sync::Arc::new(StringArray::from_iter_values(keys.iter().map(|_| "s"))),
                std::sync::Arc::new(datafusion::arrow::array::BooleanArray::from(vec![
                    true;
                    groups
                ])),
                std::sync::Arc::new(Int64Array::from(vec![window - 1; groups])),
                std::sync::Arc::new(Int64Array::from(vec![window; groups])),
            ],
        )
        .expect("batch");
        Step::Rows(ChangeBatch::insert_only(batch))
    };
    phases.feed(Event::Rows(0, rows(1_000)));
    assert_eq!(
        phases.partials[0].state_entries(),
        0,
        "flushed past the bound"
    );
    assert_eq!(phases.last.state_entries(), groups as u64);
    phases.feed(Event::Rows(0, inserts(&[("k7", 5, 10)])));
    phases.feed(Event::Watermark(i64::MAX));
    let merged = render(&phases.last_out);
    assert_eq!(merged.len(), groups);
    assert_eq!(merged, render(&phases.single_out));
}

#[test]
fn on_one_worker_the_partial_passes_rows_through_and_the_final_aggregates_them() {
    let TwoPhase { partial, last, .. } = window_aggregate(order_independent_calls())
        .two_phase()
        .expect("two phases");
    let (mut partial, mut last) = (partial.fork_for(1), last.fork_for(1));
    let Step::Rows(batch) = inserts(&[("a", 1, 100), ("a", 2, 200)]) else {
        unreachable!("inserts are rows")
    };
    let mut passed = Vec::new();
    partial
        .process(0, batch.clone(), &mut passed)
        .expect("partial");
    assert_eq!(passed.len(), 1);
    assert_eq!(passed[0].batch(), batch.batch(), "untouched");
    let mut out = Vec::new();
    for batch in passed {
        last.process(0, batch, &mut out).expect("final");
    }
    last.on_watermark(1_000, &mut out).expect("final");
    let mut single = window_aggregate(order_independent_calls());
    let mut expected = Vec::new();
    single.process(0, batch, &mut expected).expect("single");
    single.on_watermark(1_000, &mut expected).expect("single");
    assert_eq!(render(&out), render(&expected));
}
