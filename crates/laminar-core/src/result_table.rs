//! `ResultTable`: the stored result of a materialized view, written by workers and read by
//! snapshot queries. An append-only view keeps its batches; a view over a changelog (an
//! aggregation) keeps a multiset of rows, folding each change in by its weight, so a
//! retraction removes exactly the row it names. Rows are kept per producing worker, so a
//! query created later can start, on each worker, from the rows that worker produced: the
//! later changes to those rows come from the same worker, in order. Each worker's rows are
//! snapshotted for checkpoints incrementally (see `snapshot`).

mod snapshot;
#[cfg(test)]
mod tests;

use datafusion::common::hash_map::Entry;
use datafusion::common::{HashMap, HashSet};
use std::sync::{PoisonError, RwLock};

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};

use crate::change_batch::ChangeBatch;

enum Rows {
    /// Batches per producing worker.
    Append(Vec<AppendRows>),
    /// Row multiplicities per producing worker.
    Changelog {
        converter: RowConverter,
        workers: Vec<CountedRows>,
    },
}

/// One worker's batches of an append-only view.
#[derive(Debug, Default, Clone)]
struct AppendRows {
    batches: Vec<RecordBatch>,
    /// Once snapshots are taken: what they hold so far.
    snapshotted: Option<Snapshotted>,
}

/// The prefix of a worker's batches that its snapshots hold.
#[derive(Debug, Clone, Copy)]
struct Snapshotted {
    batches: usize,
    /// Rows in those batches, and the sequence number of the next row.
    rows: u64,
}

/// One worker's row multiplicities of a changelog view.
#[derive(Debug, Default, Clone)]
struct CountedRows {
    counts: HashMap<OwnedRow, i64>,
    /// Once snapshots are taken: the rows whose multiplicity changed since the last one.
    changed: Option<HashSet<OwnedRow>>,
}

/// The rows of a materialized view.
pub struct ResultTable {
    schema: SchemaRef,
    rows: RwLock<Rows>,
}

impl std::fmt::Debug for ResultTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultTable")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

impl ResultTable {
    /// An empty table for an append-only query run by `workers` workers.
    pub fn new(schema: SchemaRef, workers: usize) -> Self {
        Self {
            schema,
            rows: RwLock::new(Rows::Append(vec![AppendRows::default(); workers.max(1)])),
        }
    }

    /// An empty table for a query whose output carries retractions.
    pub fn changelog(schema: SchemaRef, workers: usize) -> Result<Self, ArrowError> {
        let fields = schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        Ok(Self {
            rows: RwLock::new(Rows::Changelog {
                converter: RowConverter::new(fields)?,
                workers: vec![CountedRows::default(); workers.max(1)],
            }),
            schema,
        })
    }

    /// The table's schema.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Applies a change batch produced on `worker`: inserts rows, removes retracted ones.
    pub fn apply(&self, worker: usize, change: &ChangeBatch) -> Result<(), ArrowError> {
        if change.num_rows() == 0 {
            return Ok(());
        }
        // A poisoned lock means a reader panicked mid-clone; the data itself is intact.
        let mut rows = self.rows.write().unwrap_or_else(PoisonError::into_inner);
        match &mut *rows {
            Rows::Append(workers) => {
                debug_assert!(
                    change.is_insert_only(),
                    "retraction into an append-only view"
                );
                let slot = worker % workers.len();
                workers[slot].batches.push(change.batch().clone());
            }
            Rows::Changelog { converter, workers } => {
                let slot = worker % workers.len();
                let CountedRows { counts, changed } = &mut workers[slot];
                let converted = converter.convert_columns(change.batch().columns())?;
                for (index, row) in converted.iter().enumerate() {
                    let weight = change.weights().map_or(1, |w| w.value(index));
                    match counts.entry(row.owned()) {
                        Entry::Occupied(mut entry) => {
                            note_change(changed, entry.key());
                            *entry.get_mut() += weight;
                            if *entry.get() == 0 {
                                entry.remove();
                            }
                        }
                        Entry::Vacant(entry) => {
                            if weight != 0 {
                                note_change(changed, entry.key());
                                entry.insert(weight);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// A consistent snapshot of the rows.
    pub fn snapshot(&self) -> Result<Vec<RecordBatch>, ArrowError> {
        self.rows_of(None)
    }

    /// The rows produced on `worker` (a retraction counts where it was produced, so a row
    /// may have moved; the sum over all workers is the table).
    pub fn snapshot_of(&self, worker: usize) -> Result<Vec<RecordBatch>, ArrowError> {
        self.rows_of(Some(worker))
    }

    fn rows_of(&self, worker: Option<usize>) -> Result<Vec<RecordBatch>, ArrowError> {
        let rows = self.rows.read().unwrap_or_else(PoisonError::into_inner);
        match &*rows {
            Rows::Append(workers) => Ok(match worker {
                Some(worker) => workers
                    .get(worker)
                    .map(|w| w.batches.clone())
                    .unwrap_or_default(),
                None => workers.iter().flat_map(|w| w.batches.clone()).collect(),
            }),
            Rows::Changelog { converter, workers } => {
                let mut merged: HashMap<&OwnedRow, i64> = HashMap::new();
                let chosen: Vec<&HashMap<OwnedRow, i64>> = match worker {
                    Some(worker) => workers.get(worker).map(|w| &w.counts).into_iter().collect(),
                    None => workers.iter().map(|w| &w.counts).collect(),
                };
                for per_worker in chosen {
                    for (row, count) in per_worker {
                        *merged.entry(row).or_insert(0) += count;
                    }
                }
                let live = merged
                    .iter()
                    .filter(|(_, count)| **count > 0)
                    .flat_map(|(row, count)| std::iter::repeat_n(row.row(), *count as usize));
                let columns: Vec<ArrayRef> = converter.convert_rows(live)?;
                Ok(vec![RecordBatch::try_new(self.schema.clone(), columns)?])
            }
        }
    }
}

/// Lists `row` among the changed rows, once snapshots are taken (and once per interval).
fn note_change(changed: &mut Option<HashSet<OwnedRow>>, row: &OwnedRow) {
    if let Some(changed) = changed {
        if !changed.contains(row) {
            changed.insert(row.clone());
        }
    }
}
