//! Snapshots of a reference table's rows for checkpoints, incremental by primary key: part
//! `rows` holds each current row under its key's row encoding, and a delta rewrites the
//! keys written since the previous snapshot (rows are only ever replaced, never removed).

use datafusion::common::HashSet;

use datafusion::arrow::array::{Array, BinaryArray};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::OwnedRow;
use datafusion::error::Result as DfResult;

use super::ReferenceTable;
use crate::state::{OperatorState, RestoredPart, StateKind, StatePart};
use crate::state_codec::{check_part_names, keyed_rows_batch, PartReader, STATE_BATCH_ENTRIES_MAX};

const ROWS_PART: &str = "rows";

impl ReferenceTable {
    /// The table's rows for a checkpoint: all of them with `full` (or at the first
    /// snapshot), otherwise the keys written since the previous snapshot.
    pub fn snapshot_state(&self, full: bool) -> DfResult<OperatorState> {
        let mut state = self.lock();
        let changed = state.changed.replace(HashSet::new());
        let (kind, entries, deletes) = match &changed {
            Some(changed) if !full => {
                let mut entries = Vec::new();
                let mut deletes = Vec::new();
                for key in changed {
                    match state.rows.get(key) {
                        Some(row) => entries.push((key, row)),
                        None => deletes.push(key.row().as_ref().to_vec()),
                    }
                }
                (StateKind::Delta, entries, deletes)
            }
            _ => (StateKind::Full, state.rows.iter().collect(), Vec::new()),
        };
        let upserts = entries
            .chunks(STATE_BATCH_ENTRIES_MAX)
            .map(|chunk| self.rows_batch(chunk))
            .collect::<DfResult<Vec<_>>>()?;
        let parts = if kind == StateKind::Delta && upserts.is_empty() && deletes.is_empty() {
            Vec::new()
        } else {
            vec![StatePart {
                name: ROWS_PART.to_string(),
                upserts,
                deletes,
            }]
        };
        Ok(OperatorState { kind, parts })
    }

    fn rows_batch(&self, entries: &[(&OwnedRow, &RecordBatch)]) -> DfResult<RecordBatch> {
        let keys: BinaryArray = entries.iter().map(|(key, _)| Some(key.row())).collect();
        let rows = concat_batches(&self.schema, entries.iter().map(|(_, row)| *row))?;
        keyed_rows_batch(keys, &rows)
    }

    /// Replaces the table's rows with `parts` (the latest entry per key over its
    /// snapshots), refusing rows whose key is NULL or is not the key they are stored under;
    /// changes count from here. Publishes nothing: queries reading the table start after.
    pub fn restore_state(&self, parts: Vec<RestoredPart>) -> DfResult<()> {
        let owner = format!("table {}", self.name);
        check_part_names(&owner, &parts, &[ROWS_PART])?;
        let part = parts.into_iter().next();
        let reader = PartReader::new(&owner, ROWS_PART);
        let mut state = self.lock();
        let mut restored = datafusion::common::HashMap::new();
        for batch in part.iter().flat_map(|p| &p.batches) {
            let stored_keys = reader.keys(batch)?;
            let rows = reader.keyed_rows(batch, &self.schema)?;
            let key_columns: Vec<_> = self.key.iter().map(|&k| rows.column(k).clone()).collect();
            if key_columns.iter().any(|c| c.null_count() > 0) {
                return Err(reader.malformed("a row's primary key is NULL"));
            }
            let keys = state.converter.convert_columns(&key_columns)?;
            for index in 0..rows.num_rows() {
                let key = keys.row(index);
                if key.as_ref() != stored_keys.value(index) {
                    return Err(reader.malformed("a row is stored under another row's key"));
                }
                restored.insert(key.owned(), rows.slice(index, 1));
            }
        }
        state.rows = restored;
        state.changed = Some(HashSet::new());
        Ok(())
    }
}
