//! Snapshots of a materialized view's rows, one per producing worker, incremental: an
//! append-only view's part `rows` holds each row under its worker-local sequence number, so
//! a delta is the batches appended since the previous snapshot; a changelog view's part
//! `counts` holds each distinct row (its row encoding as the key) with its multiplicity on
//! the worker, so a delta rewrites the rows whose multiplicity changed and deletes those
//! that dropped to zero.

use datafusion::common::HashSet;
use std::sync::{Arc, PoisonError};

use datafusion::arrow::array::{Array, BinaryArray, Int64Array, RecordBatch};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::row::{OwnedRow, RowConverter};
use datafusion::error::{DataFusionError, Result as DfResult};

use super::{AppendRows, CountedRows, ResultTable, Rows, Snapshotted};
use crate::state::{OperatorState, RestoredPart, StateKind, StatePart};
use crate::state_codec::{
    check_part_names, keyed_rows_batch, sequence_key, state_batch, PartReader,
    STATE_BATCH_ENTRIES_MAX,
};

const OWNER: &str = "materialized view";
const ROWS_PART: &str = "rows";
const COUNTS_PART: &str = "counts";

/// A state error as the table's (Arrow) error.
fn arrow_error(error: DataFusionError) -> ArrowError {
    ArrowError::ExternalError(Box::new(error))
}

fn no_worker(worker: usize, workers: usize) -> ArrowError {
    ArrowError::InvalidArgumentError(format!(
        "materialized view rows are kept for {workers} workers; there is no worker {worker}"
    ))
}

impl ResultTable {
    /// The rows produced on `worker` for a checkpoint: all of them with `full` (or at the
    /// worker's first snapshot), otherwise what changed since its previous snapshot.
    /// Never `None`: a view always has state, if only empty.
    pub fn snapshot_worker(
        &self,
        worker: usize,
        full: bool,
    ) -> Result<Option<OperatorState>, ArrowError> {
        let mut rows = self.rows.write().unwrap_or_else(PoisonError::into_inner);
        let state = match &mut *rows {
            Rows::Append(workers) => {
                let count = workers.len();
                let rows = workers.get_mut(worker).ok_or(no_worker(worker, count))?;
                snapshot_appended(rows, full)
            }
            Rows::Changelog { workers, .. } => {
                let count = workers.len();
                let rows = workers.get_mut(worker).ok_or(no_worker(worker, count))?;
                snapshot_counted(rows, full)
            }
        };
        state.map(Some).map_err(arrow_error)
    }

    /// Replaces the rows produced on `worker` with `parts` (the latest entry per key over
    /// its snapshots); changes count from here.
    pub fn restore_worker(
        &self,
        worker: usize,
        parts: Vec<RestoredPart>,
    ) -> Result<(), ArrowError> {
        let mut rows = self.rows.write().unwrap_or_else(PoisonError::into_inner);
        let restored = match &mut *rows {
            Rows::Append(workers) => {
                let count = workers.len();
                let rows = workers.get_mut(worker).ok_or(no_worker(worker, count))?;
                check_part_names(OWNER, &parts, &[ROWS_PART])
                    .and_then(|()| restore_appended(rows, take_part(parts).as_ref(), &self.schema))
            }
            Rows::Changelog { converter, workers } => {
                let count = workers.len();
                let rows = workers.get_mut(worker).ok_or(no_worker(worker, count))?;
                check_part_names(OWNER, &parts, &[COUNTS_PART])
                    .and_then(|()| restore_counted(rows, take_part(parts).as_ref(), converter))
            }
        };
        restored.map_err(arrow_error)
    }
}

/// The batches not yet snapshotted (all of them with `full`), each row keyed by its
/// sequence number.
fn snapshot_appended(rows: &mut AppendRows, full: bool) -> DfResult<OperatorState> {
    let whole = full || rows.snapshotted.is_none();
    let from = match rows.snapshotted {
        Some(done) if !whole => done,
        _ => Snapshotted {
            batches: 0,
            rows: 0,
        },
    };
    let mut next = from.rows;
    let mut upserts = Vec::new();
    for batch in &rows.batches[from.batches..] {
        let keys: BinaryArray = (next..next + batch.num_rows() as u64)
            .map(|sequence| Some(sequence_key(sequence)))
            .collect();
        next += batch.num_rows() as u64;
        if batch.num_rows() > 0 {
            upserts.push(keyed_rows_batch(keys, batch)?);
        }
    }
    rows.snapshotted = Some(Snapshotted {
        batches: rows.batches.len(),
        rows: next,
    });
    let part = StatePart::new(ROWS_PART, upserts);
    Ok(if whole {
        OperatorState::full(vec![part])
    } else {
        OperatorState {
            kind: StateKind::Delta,
            parts: if part.upserts.is_empty() {
                Vec::new()
            } else {
                vec![part]
            },
        }
    })
}

/// The multiplicities changed since the last snapshot (all of them with `full`).
fn snapshot_counted(rows: &mut CountedRows, full: bool) -> DfResult<OperatorState> {
    let changed = rows.changed.replace(HashSet::new());
    let (kind, entries, deletes) = match &changed {
        Some(changed) if !full => {
            let mut entries = Vec::new();
            let mut deletes = Vec::new();
            for row in changed {
                match rows.counts.get(row) {
                    Some(count) => entries.push((row, *count)),
                    None => deletes.push(row.row().as_ref().to_vec()),
                }
            }
            (StateKind::Delta, entries, deletes)
        }
        _ => (
            StateKind::Full,
            rows.counts
                .iter()
                .map(|(row, count)| (row, *count))
                .collect(),
            Vec::new(),
        ),
    };
    let upserts = entries
        .chunks(STATE_BATCH_ENTRIES_MAX)
        .map(|chunk| {
            let keys: BinaryArray = chunk.iter().map(|(row, _)| Some(row.row())).collect();
            let counts: Int64Array = chunk.iter().map(|(_, count)| *count).collect();
            state_batch(keys, vec![("count", Arc::new(counts), false)])
        })
        .collect::<DfResult<Vec<_>>>()?;
    let parts = if kind == StateKind::Delta && upserts.is_empty() && deletes.is_empty() {
        Vec::new()
    } else {
        vec![StatePart {
            name: COUNTS_PART.to_string(),
            upserts,
            deletes,
        }]
    };
    Ok(OperatorState { kind, parts })
}

/// The one part of a view's state (checked to be the part its kind writes).
fn take_part(parts: Vec<RestoredPart>) -> Option<RestoredPart> {
    parts.into_iter().next()
}

fn restore_appended(
    rows: &mut AppendRows,
    part: Option<&RestoredPart>,
    schema: &datafusion::arrow::datatypes::SchemaRef,
) -> DfResult<()> {
    let reader = PartReader::new(OWNER, ROWS_PART);
    // Each snapshot wrote whole batches under ascending sequence numbers, and no entry is
    // ever replaced, so ordering the batches by their first key restores the rows' order.
    let mut keyed: Vec<(u64, RecordBatch)> = Vec::new();
    let mut next = 0;
    for batch in part.into_iter().flat_map(|p| &p.batches) {
        let keys = reader.keys(batch)?;
        let mut sequences = Vec::with_capacity(keys.len());
        for key in keys.iter().flatten() {
            let bytes: [u8; 8] = key
                .try_into()
                .map_err(|_| reader.malformed("a key is not a sequence number"))?;
            sequences.push(u64::from_be_bytes(bytes));
        }
        let (Some(&first), Some(&last)) = (sequences.first(), sequences.iter().max()) else {
            continue;
        };
        next = next.max(last + 1);
        keyed.push((first, reader.keyed_rows(batch, schema)?));
    }
    keyed.sort_by_key(|(first, _)| *first);
    rows.batches = keyed.into_iter().map(|(_, batch)| batch).collect();
    rows.snapshotted = Some(Snapshotted {
        batches: rows.batches.len(),
        rows: next,
    });
    Ok(())
}

fn restore_counted(
    rows: &mut CountedRows,
    part: Option<&RestoredPart>,
    converter: &RowConverter,
) -> DfResult<()> {
    let reader = PartReader::new(OWNER, COUNTS_PART);
    let parser = converter.parser();
    rows.counts.clear();
    for batch in part.into_iter().flat_map(|p| &p.batches) {
        let keys = reader.keys(batch)?;
        let counts = reader.required::<Int64Array>(batch, "count")?;
        for (row, count) in keys.iter().flatten().zip(counts.values().iter()) {
            // A worker's multiplicity may be negative (the row's insert was produced on
            // another worker); zero is never stored.
            if *count != 0 {
                let row: OwnedRow = parser.parse(row).owned();
                rows.counts.insert(row, *count);
            }
        }
    }
    rows.changed = Some(HashSet::new());
    Ok(())
}
