//! Operator state as Arrow batches: what an operator hands to a checkpoint, and what it gets
//! back on recovery.
//!
//! An operator's state is one or more named *parts* (a join has a left and a right side, an
//! aggregate its groups and a few counters). A part is a set of entries, each a row whose
//! first column, named [`STATE_KEY_COLUMN`], is a `Binary` key unique within the part; the
//! other columns are the operator's own. Keys are opaque to the storage layer, which only
//! merges by them: a snapshot is either the whole state ([`StateKind::Full`]) or the entries
//! changed since the operator's previous snapshot ([`StateKind::Delta`]: upserted entries,
//! and the keys of removed ones), and recovery hands the operator the latest entry per key
//! over the chain of a full snapshot and the deltas after it.
//!
//! The encoding inside a part is the operator's business (usually the row-format bytes of
//! its group or join key as the entry key, and DataFusion accumulator states as columns), and
//! may change between versions of LaminarDB: a checkpoint is read by the version that wrote
//! it (the manifest records a format version).

use datafusion::arrow::array::{Array, BinaryArray};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result as DfResult};

/// Name of the key column, the first column of every state batch.
pub const STATE_KEY_COLUMN: &str = "key";

/// Whether a snapshot replaces the operator's earlier snapshots or adds to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    /// The whole state: earlier snapshots of the operator are no longer needed.
    Full,
    /// Only what changed since the operator's previous snapshot.
    Delta,
}

/// One named part of an operator's state in a snapshot.
#[derive(Debug, Clone)]
pub struct StatePart {
    /// The part's name, stable across versions of the operator's state (e.g. `groups`).
    pub name: String,
    /// Entries written (inserted or replaced) since the previous snapshot, or all entries
    /// in a full one: first column [`STATE_KEY_COLUMN`] (`Binary`), unique within the part.
    pub upserts: Vec<RecordBatch>,
    /// Keys of entries removed since the previous snapshot (empty in a full one).
    pub deletes: Vec<Vec<u8>>,
}

impl StatePart {
    /// A part holding `upserts` and no deletes.
    pub fn new(name: impl Into<String>, upserts: Vec<RecordBatch>) -> Self {
        Self {
            name: name.into(),
            upserts,
            deletes: Vec::new(),
        }
    }

    /// Rows across the upsert batches.
    pub fn upsert_rows(&self) -> usize {
        self.upserts.iter().map(RecordBatch::num_rows).sum()
    }
}

/// What one operator on one worker hands to a checkpoint.
#[derive(Debug, Clone)]
pub struct OperatorState {
    /// Whole state or changes since the previous snapshot.
    pub kind: StateKind,
    /// The state's parts. A delta lists only parts that changed.
    pub parts: Vec<StatePart>,
}

impl OperatorState {
    /// A full snapshot made of `parts`.
    pub fn full(parts: Vec<StatePart>) -> Self {
        Self {
            kind: StateKind::Full,
            parts,
        }
    }
}

/// The restored state of one part: the latest entry per key (no deletes).
#[derive(Debug, Clone)]
pub struct RestoredPart {
    /// The part's name, as the operator wrote it.
    pub name: String,
    /// The entries, `STATE_KEY_COLUMN` first.
    pub batches: Vec<RecordBatch>,
}

/// The key column of a state batch, checked.
pub fn state_keys(batch: &RecordBatch) -> DfResult<&BinaryArray> {
    let keys = batch
        .columns()
        .first()
        .and_then(|c| c.as_any().downcast_ref::<BinaryArray>())
        .ok_or_else(|| {
            DataFusionError::Internal(format!(
                "a state batch must start with a Binary `{STATE_KEY_COLUMN}` column"
            ))
        })?;
    if keys.null_count() > 0 {
        return Err(DataFusionError::Internal(
            "a state batch's key column holds a NULL".into(),
        ));
    }
    Ok(keys)
}

/// The part named `name` among `parts`, if restored.
pub fn restored_part<'a>(parts: &'a [RestoredPart], name: &str) -> Option<&'a RestoredPart> {
    parts.iter().find(|p| p.name == name)
}

/// The latest entry per key over `chain`, a full snapshot followed by the deltas taken after
/// it (oldest first; anything before the last full snapshot is ignored): what recovery
/// hands to [`crate::Operator::restore`]. Within one snapshot a key appears at most once
/// (as an upsert or a delete).
pub fn merge_states(chain: &[OperatorState]) -> DfResult<Vec<RestoredPart>> {
    let start = chain
        .iter()
        .rposition(|s| s.kind == StateKind::Full)
        .unwrap_or(0);
    let chain = &chain[start..];
    let mut names: Vec<&str> = Vec::new();
    for state in chain {
        for part in &state.parts {
            if !names.contains(&part.name.as_str()) {
                names.push(&part.name);
            }
        }
    }
    names
        .into_iter()
        .map(|name| merge_part(chain, name))
        .collect()
}

/// Merges one part over a chain that starts at a full snapshot: walking newest to oldest,
/// an entry is kept unless a newer snapshot already wrote or deleted its key.
fn merge_part(chain: &[OperatorState], name: &str) -> DfResult<RestoredPart> {
    let mut seen: datafusion::common::HashSet<&[u8]> = datafusion::common::HashSet::new();
    let mut kept: Vec<RecordBatch> = Vec::new();
    for state in chain.iter().rev() {
        let Some(part) = state.parts.iter().find(|p| p.name == name) else {
            continue;
        };
        let mut batches = Vec::with_capacity(part.upserts.len());
        for batch in part.upserts.iter().rev() {
            let keys = state_keys(batch)?;
            let mask: datafusion::arrow::array::BooleanArray = (0..keys.len())
                .rev()
                .map(|i| Some(seen.insert(keys.value(i))))
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            if mask.true_count() > 0 {
                batches.push(datafusion::arrow::compute::filter_record_batch(
                    batch, &mask,
                )?);
            }
        }
        for key in &part.deletes {
            seen.insert(key);
        }
        batches.reverse();
        kept.splice(0..0, batches);
    }
    Ok(RestoredPart {
        name: name.to_string(),
        batches: kept,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{BinaryArray, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(entries: &[(&str, i64)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new(STATE_KEY_COLUMN, DataType::Binary, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let keys: BinaryArray = entries.iter().map(|(k, _)| Some(k.as_bytes())).collect();
        let values: Int64Array = entries.iter().map(|(_, v)| *v).collect();
        RecordBatch::try_new(schema, vec![Arc::new(keys), Arc::new(values)]).unwrap()
    }

    fn entries(parts: &[RestoredPart]) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        for part in parts {
            for b in &part.batches {
                let keys = state_keys(b).unwrap();
                let values = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
                for i in 0..b.num_rows() {
                    out.push((
                        String::from_utf8(keys.value(i).to_vec()).unwrap(),
                        values.value(i),
                    ));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn deltas_override_and_delete_entries_of_the_full_snapshot() {
        let full = OperatorState::full(vec![StatePart::new(
            "groups",
            vec![batch(&[("a", 1), ("b", 2)]), batch(&[("c", 3)])],
        )]);
        let delta1 = OperatorState {
            kind: StateKind::Delta,
            parts: vec![StatePart {
                name: "groups".into(),
                upserts: vec![batch(&[("a", 10), ("d", 4)])],
                deletes: vec![b"b".to_vec()],
            }],
        };
        let delta2 = OperatorState {
            kind: StateKind::Delta,
            parts: vec![StatePart {
                name: "groups".into(),
                upserts: vec![batch(&[("b", 20)])],
                deletes: vec![b"d".to_vec()],
            }],
        };
        let merged = merge_states(&[full, delta1, delta2]).unwrap();
        assert_eq!(
            entries(&merged),
            vec![("a".into(), 10), ("b".into(), 20), ("c".into(), 3)]
        );
    }

    #[test]
    fn a_later_full_snapshot_replaces_everything_before_it() {
        let old = OperatorState::full(vec![StatePart::new("groups", vec![batch(&[("a", 1)])])]);
        let new = OperatorState::full(vec![StatePart::new("groups", vec![batch(&[("z", 9)])])]);
        let merged = merge_states(&[old, new]).unwrap();
        assert_eq!(entries(&merged), vec![("z".into(), 9)]);
    }
}
