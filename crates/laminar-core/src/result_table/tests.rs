//! A view's rows snapshotted per worker and restored into a fresh table: snapshot queries
//! read the same rows, and snapshots continue incrementally after the restore.

use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::util::display::array_value_to_string;

use super::ResultTable;
use crate::change_batch::ChangeBatch;
use crate::state::{merge_states, OperatorState, StateKind};

/// A view whose first column is named like the state's key column.
fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("n", DataType::Int64, true),
    ]))
}

/// Rows `(key, n, weight)`.
fn change(rows: &[(&str, i64, i64)]) -> ChangeBatch {
    let batch = RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
        ],
    )
    .expect("batch");
    if rows.iter().all(|r| r.2 == 1) {
        ChangeBatch::insert_only(batch)
    } else {
        ChangeBatch::with_weights(batch, rows.iter().map(|r| r.2).collect())
    }
}

fn lines(batches: &[RecordBatch]) -> Vec<String> {
    let mut lines = Vec::new();
    for batch in batches {
        assert_eq!(batch.schema(), schema());
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = batch
                .columns()
                .iter()
                .map(|c| array_value_to_string(c, row).expect("cell"))
                .collect();
            lines.push(cells.join(" "));
        }
    }
    lines.sort();
    lines
}

fn snapshot(table: &ResultTable, worker: usize, full: bool) -> OperatorState {
    table
        .snapshot_worker(worker, full)
        .expect("snapshot")
        .expect("a view has state")
}

/// Asserts that `restored` reads as `original`, as a whole and per worker.
fn assert_same_rows(original: &ResultTable, restored: &ResultTable, workers: usize) {
    assert_eq!(
        lines(&restored.snapshot().expect("rows")),
        lines(&original.snapshot().expect("rows"))
    );
    for worker in 0..workers {
        assert_eq!(
            lines(&restored.snapshot_of(worker).expect("rows")),
            lines(&original.snapshot_of(worker).expect("rows"))
        );
    }
}

#[test]
fn an_append_only_view_snapshots_only_the_batches_appended_since_the_last_snapshot() {
    let original = ResultTable::new(schema(), 2);
    original
        .apply(0, &change(&[("a", 1, 1), ("b", 2, 1)]))
        .expect("apply");
    original.apply(1, &change(&[("c", 3, 1)])).expect("apply");
    let full = [snapshot(&original, 0, false), snapshot(&original, 1, true)];
    assert!(full.iter().all(|s| s.kind == StateKind::Full));
    original.apply(0, &change(&[("d", 4, 1)])).expect("apply");
    original.apply(0, &change(&[("a", 1, 1)])).expect("apply");
    let delta = [snapshot(&original, 0, false), snapshot(&original, 1, false)];
    assert_eq!(delta[0].kind, StateKind::Delta);
    assert_eq!(
        delta[0].parts[0].upsert_rows(),
        2,
        "only d and the second a"
    );
    assert!(delta[1].parts.is_empty(), "worker 1 appended nothing");

    let restored = ResultTable::new(schema(), 2);
    for worker in 0..2 {
        let chain = [full[worker].clone(), delta[worker].clone()];
        restored
            .restore_worker(worker, merge_states(&chain).expect("merge"))
            .expect("restore");
    }
    assert_same_rows(&original, &restored, 2);
    assert_eq!(lines(&restored.snapshot_of(0).expect("rows")).len(), 4);

    // After the restore, deltas continue the chain under fresh sequence numbers.
    restored.apply(0, &change(&[("e", 5, 1)])).expect("apply");
    original.apply(0, &change(&[("e", 5, 1)])).expect("apply");
    let after = snapshot(&restored, 0, false);
    assert_eq!(after.kind, StateKind::Delta);
    let again = ResultTable::new(schema(), 2);
    let chain = [full[0].clone(), delta[0].clone(), after];
    again
        .restore_worker(0, merge_states(&chain).expect("merge"))
        .expect("restore");
    assert_eq!(
        lines(&again.snapshot_of(0).expect("rows")),
        lines(&original.snapshot_of(0).expect("rows"))
    );
}

#[test]
fn a_changelog_view_snapshots_the_rows_whose_multiplicity_changed() {
    let original = ResultTable::changelog(schema(), 2).expect("table");
    original
        .apply(0, &change(&[("a", 1, 1), ("b", 2, 2), ("c", 3, 1)]))
        .expect("apply");
    // Retracted where it was not inserted: worker 1 holds b at -1.
    original
        .apply(1, &change(&[("b", 2, -1), ("d", 4, 1)]))
        .expect("apply");
    let full = [snapshot(&original, 0, true), snapshot(&original, 1, true)];
    original
        .apply(0, &change(&[("a", 1, -1), ("c", 3, 1)]))
        .expect("apply");
    original.apply(1, &change(&[("b", 2, 1)])).expect("apply");
    let delta = [snapshot(&original, 0, false), snapshot(&original, 1, false)];
    let counts = |state: &OperatorState| {
        let part = &state.parts[0];
        (part.upsert_rows(), part.deletes.len())
    };
    assert_eq!(counts(&delta[0]), (1, 1), "c rewritten, a deleted");
    assert_eq!(counts(&delta[1]), (0, 1), "b back to zero, deleted");

    let restored = ResultTable::changelog(schema(), 2).expect("table");
    for worker in 0..2 {
        let chain = [full[worker].clone(), delta[worker].clone()];
        restored
            .restore_worker(worker, merge_states(&chain).expect("merge"))
            .expect("restore");
    }
    assert_same_rows(&original, &restored, 2);
    assert_eq!(
        lines(&restored.snapshot().expect("rows")),
        ["b 2", "b 2", "c 3", "c 3", "d 4"]
    );
    // Changes after the restore apply to the restored multiplicities.
    for table in [&original, &restored] {
        table.apply(1, &change(&[("d", 4, -1)])).expect("apply");
    }
    assert_same_rows(&original, &restored, 2);
    assert_eq!(counts(&snapshot(&restored, 1, false)), (0, 1));
}

#[test]
fn a_worker_the_view_does_not_have_is_refused() {
    let table = ResultTable::new(schema(), 2);
    assert!(table.snapshot_worker(2, true).is_err());
    assert!(table.restore_worker(5, Vec::new()).is_err());
}
