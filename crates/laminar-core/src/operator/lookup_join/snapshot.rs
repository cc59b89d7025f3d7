//! Snapshots of the lookup join's copy of its table shard, incremental by key: one entry per
//! table key (the key's and the row's encodings), and a delta rewrites the keys written
//! since the previous snapshot and deletes those retracted. Unlike the other joins' state
//! the table is not bounded by the watermark, so whole snapshots would grow with it.

use datafusion::common::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{BinaryArray, RecordBatch};
use datafusion::arrow::row::OwnedRow;
use datafusion::error::Result as DfResult;

use super::LookupJoinOperator;
use crate::state::{restored_part, OperatorState, RestoredPart, StateKind, StatePart};
use crate::state_codec::{check_part_names, state_batch, PartReader, STATE_BATCH_ENTRIES_MAX};

const OWNER: &str = "LookupJoin";
const TABLE_PART: &str = "table";

/// State batches of `entries` (key, row).
fn table_batches(entries: &[(&OwnedRow, &OwnedRow)]) -> DfResult<Vec<RecordBatch>> {
    entries
        .chunks(STATE_BATCH_ENTRIES_MAX)
        .map(|chunk| {
            let keys: BinaryArray = chunk.iter().map(|(key, _)| Some(key.row())).collect();
            let rows: BinaryArray = chunk.iter().map(|(_, row)| Some(row.row())).collect();
            state_batch(keys, vec![("row", Arc::new(rows), false)])
        })
        .collect()
}

impl LookupJoinOperator {
    /// The table copy, whole or the keys changed since the last snapshot (the first
    /// snapshot is whole); what changes next counts from here.
    pub(super) fn snapshot_table(&mut self, full: bool) -> DfResult<OperatorState> {
        let changed = self.changed.replace(HashSet::new());
        let changed = match changed {
            Some(changed) if !full => changed,
            _ => {
                let entries: Vec<_> = self.table.iter().collect();
                let part = StatePart::new(TABLE_PART, table_batches(&entries)?);
                return Ok(OperatorState::full(vec![part]));
            }
        };
        let mut entries = Vec::new();
        let mut deletes = Vec::new();
        for key in &changed {
            match self.table.get(key) {
                Some(row) => entries.push((key, row)),
                None => deletes.push(key.row().as_ref().to_vec()),
            }
        }
        let parts = if entries.is_empty() && deletes.is_empty() {
            Vec::new()
        } else {
            vec![StatePart {
                name: TABLE_PART.to_string(),
                upserts: table_batches(&entries)?,
                deletes,
            }]
        };
        Ok(OperatorState {
            kind: StateKind::Delta,
            parts,
        })
    }

    /// Replaces the table copy with `parts`; changes count from here.
    pub(super) fn restore_table(&mut self, parts: &[RestoredPart]) -> DfResult<()> {
        check_part_names(OWNER, parts, &[TABLE_PART])?;
        let reader = PartReader::new(OWNER, TABLE_PART);
        let key_parser = self.keys.parser();
        let row_parser = self.table_rows.parser();
        self.table.clear();
        for batch in restored_part(parts, TABLE_PART)
            .into_iter()
            .flat_map(|p| &p.batches)
        {
            let keys = reader.keys(batch)?;
            let rows = reader.required::<BinaryArray>(batch, "row")?;
            for (key, row) in keys.iter().flatten().zip(rows.iter().flatten()) {
                self.table
                    .insert(key_parser.parse(key).owned(), row_parser.parse(row).owned());
            }
        }
        self.changed = Some(HashSet::new());
        Ok(())
    }
}
