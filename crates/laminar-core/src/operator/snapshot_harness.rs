//! Round trips of operator state through snapshots, for the operators' tests: run a script
//! through an operator, snapshot it (a full snapshot, then deltas), restore the chain into a
//! fork, and check that the original and the restored copy answer the rest of the script
//! alike, while a fork without the state answers otherwise (so the state mattered).

use crate::change_batch::ChangeBatch;
use crate::operator::Operator;
use crate::state::{merge_states, OperatorState};

/// One event of a script.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    /// A batch on an input port.
    Data(usize, ChangeBatch),
    /// The input watermark advances.
    Watermark(i64),
    /// Every input ended.
    End,
}

/// Runs `steps` through `op`: each step's output rendered by `render` and sorted (workers
/// and hash maps order rows differently; the multiset of rows is the answer), prefixed by
/// the step's number, and after each watermark the watermark the operator passes on.
pub(crate) fn run(
    op: &mut dyn Operator,
    steps: &[Step],
    render: fn(&[ChangeBatch]) -> Vec<String>,
) -> Vec<String> {
    let mut lines = Vec::new();
    for (index, step) in steps.iter().enumerate() {
        let mut out = Vec::new();
        match step {
            Step::Data(port, batch) => op.process(*port, batch.clone(), &mut out),
            Step::Watermark(ms) => op.on_watermark(*ms, &mut out),
            Step::End => op.on_end(&mut out),
        }
        .expect("the script runs");
        let mut rendered = render(&out);
        rendered.sort();
        lines.extend(
            rendered
                .into_iter()
                .map(|line| format!("{index:03}: {line}")),
        );
        if let Step::Watermark(ms) = step {
            let passed = op.output_watermark(*ms);
            lines.push(format!("{index:03}: watermark {passed}"));
        }
    }
    lines
}

/// The rows of `run`'s lines, without step numbers and watermarks, sorted.
fn rows_of(lines: &[String]) -> Vec<String> {
    let mut rows: Vec<String> = lines
        .iter()
        .filter(|line| !line.contains(": watermark "))
        .filter_map(|line| line.split_once(": ").map(|(_, row)| row.to_string()))
        .collect();
    rows.sort();
    rows
}

/// What a round trip saw.
pub(crate) struct RoundTrip {
    /// The snapshots taken, after each part of the first half.
    pub(crate) snapshots: Vec<OperatorState>,
    /// The original's (and the restored copy's) answer to the second half: its rows,
    /// sorted.
    pub(crate) output: Vec<String>,
}

/// Runs each of `first` through a fork of `prototype`, snapshotting after each (full after
/// the first, deltas after the others); restores the chain into another fork; runs `second`
/// through both and asserts equal answers (step by step, with the watermarks passed on),
/// late-row counts and state sizes, and that a fork without the state answers `second`
/// otherwise.
pub(crate) fn assert_round_trip(
    prototype: &dyn Operator,
    first: &[&[Step]],
    second: &[Step],
    render: fn(&[ChangeBatch]) -> Vec<String>,
) -> RoundTrip {
    let mut original = prototype.fork();
    let mut snapshots = Vec::new();
    for (index, part) in first.iter().enumerate() {
        run(original.as_mut(), part, render);
        let snapshot = original
            .snapshot(index == 0)
            .expect("snapshot")
            .expect("a stateful operator");
        snapshots.push(snapshot);
    }
    let mut restored = prototype.fork();
    restored
        .restore(merge_states(&snapshots).expect("merge"))
        .expect("restore");
    assert_eq!(restored.state_entries(), original.state_entries());
    assert_eq!(restored.late_rows(), original.late_rows());
    // What the operator holds back of its input watermark (e.g. for waiting rows).
    let probe_ms = i64::MAX - 1;
    assert_eq!(
        restored.output_watermark(probe_ms),
        original.output_watermark(probe_ms)
    );
    let output = run(original.as_mut(), second, render);
    assert_eq!(run(restored.as_mut(), second, render), output);
    assert_eq!(restored.late_rows(), original.late_rows());
    assert_eq!(restored.state_entries(), original.state_entries());
    let mut fresh = prototype.fork();
    assert_ne!(
        run(fresh.as_mut(), second, render),
        output,
        "the second half must depend on the state of the first"
    );
    RoundTrip {
        snapshots,
        output: rows_of(&output),
    }
}
