//! What the operators' snapshot tests share: a scripted input of batches, watermarks and
//! the end; output as sorted text rows; aggregate calls built as the planner builds them;
//! and the round trip that checks a restored operator continues exactly as the live one.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::logical_expr::AggregateUDF;
use datafusion::physical_expr::aggregate::AggregateExprBuilder;
use datafusion::physical_expr::{PhysicalExpr, PhysicalSortExpr};

use super::{AggregateCall, Operator};
use crate::change_batch::ChangeBatch;
use crate::state::{merge_states, OperatorState, StateKind};
use crate::watermark::WATERMARK_END_MS;

/// One message of a scripted input.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    Rows(ChangeBatch),
    Watermark(i64),
    /// The final watermark, then the end of input.
    End,
}

/// The rows of `out`, one line each (`col col .. ±weight`), sorted.
pub(crate) fn render(out: &[ChangeBatch]) -> Vec<String> {
    let mut lines = Vec::new();
    for change in out {
        let batch = change.batch();
        for row in 0..batch.num_rows() {
            let mut line: Vec<String> = batch
                .columns()
                .iter()
                .map(|c| array_value_to_string(c.as_ref(), row).expect("printable"))
                .collect();
            let weight = change.weights().map_or(1, |w| w.value(row));
            line.push(format!("{weight:+}"));
            lines.push(line.join(" "));
        }
    }
    lines.sort();
    lines
}

/// Feeds `steps` to `operator` and returns its output, rendered.
pub(crate) fn run(operator: &mut dyn Operator, steps: &[Step]) -> Vec<String> {
    let mut out = Vec::new();
    for step in steps {
        match step {
            Step::Rows(batch) => operator.process(0, batch.clone(), &mut out),
            Step::Watermark(ms) => operator.on_watermark(*ms, &mut out),
            Step::End => operator
                .on_watermark(WATERMARK_END_MS, &mut out)
                .and_then(|()| operator.on_end(&mut out)),
        }
        .expect("the operator accepts the step");
    }
    render(&out)
}

/// `prototype.fork()` restored from the merge of `chain`.
pub(crate) fn restored(prototype: &dyn Operator, chain: &[OperatorState]) -> Box<dyn Operator> {
    let mut operator = prototype.fork();
    operator
        .restore(merge_states(chain).expect("states merge"))
        .expect("the operator restores");
    operator
}

/// The snapshots [`round_trip`] took.
pub(crate) struct Snapshots {
    pub(crate) full: OperatorState,
    pub(crate) delta: OperatorState,
}

/// Runs `a1`, takes a full snapshot, runs `a2`, takes a delta; then checks, feeding the rest:
/// - an instance restored from the full snapshot and fed `a2` then `b`, and one restored from
///   the full snapshot and the delta and fed `b`, emit exactly what the live instance does;
/// - the live instance emits what an instance never snapshotted does (taking a snapshot does
///   not change the answer);
/// - restored instances hold as many entries and late rows as the live one.
///
/// `b` must produce output, so the comparison says something.
pub(crate) fn round_trip(
    prototype: &dyn Operator,
    a1: &[Step],
    a2: &[Step],
    b: &[Step],
) -> Snapshots {
    let mut live = prototype.fork();
    let mut reference = prototype.fork();
    assert_eq!(run(live.as_mut(), a1), run(reference.as_mut(), a1));
    let full = live
        .snapshot(true)
        .expect("snapshot")
        .expect("the operator keeps state");
    assert_eq!(full.kind, StateKind::Full);
    let mut from_full = restored(prototype, std::slice::from_ref(&full));
    assert_eq!(from_full.state_entries(), live.state_entries());

    let live_a2 = run(live.as_mut(), a2);
    assert_eq!(
        live_a2,
        run(reference.as_mut(), a2),
        "a snapshot changed the output"
    );
    assert_eq!(
        run(from_full.as_mut(), a2),
        live_a2,
        "restored from the full snapshot"
    );
    let delta = live
        .snapshot(false)
        .expect("snapshot")
        .expect("the operator keeps state");
    let mut from_chain = restored(prototype, &[full.clone(), delta.clone()]);
    assert_eq!(from_chain.state_entries(), live.state_entries());
    assert_eq!(from_chain.late_rows(), live.late_rows());

    let live_b = run(live.as_mut(), b);
    assert!(!live_b.is_empty(), "part B must produce output to compare");
    assert_eq!(
        live_b,
        run(reference.as_mut(), b),
        "a snapshot changed the output"
    );
    assert_eq!(
        run(from_full.as_mut(), b),
        live_b,
        "restored from the full snapshot"
    );
    assert_eq!(
        run(from_chain.as_mut(), b),
        live_b,
        "restored from full + delta"
    );
    assert_eq!(from_chain.late_rows(), live.late_rows());
    Snapshots { full, delta }
}

/// The aggregate call `udaf(args)` over rows of `schema`, as the planner builds it.
pub(crate) fn call(
    udaf: Arc<AggregateUDF>,
    args: Vec<Arc<dyn PhysicalExpr>>,
    order_by: Vec<PhysicalSortExpr>,
    distinct: bool,
    schema: &SchemaRef,
) -> AggregateCall {
    let name = format!("{}_{}", udaf.name(), args.len());
    let function = AggregateExprBuilder::new(udaf, args)
        .schema(Arc::clone(schema))
        .order_by(order_by)
        .with_distinct(distinct)
        .alias(name)
        .build()
        .expect("aggregate builds");
    AggregateCall {
        function: Arc::new(function),
        filter: None,
    }
}
