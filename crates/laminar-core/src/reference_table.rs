//! `ReferenceTable`: the current rows of a `CREATE TABLE`, one per primary key. Writes are
//! upserts: a row whose key is already present replaces the old one, and every write is
//! turned into the changelog (the old row retracted, the new one inserted) that the queries
//! reading the table consume. Snapshot reads copy the current rows out. For checkpoints the
//! rows are snapshotted incrementally by key (see `snapshot`).

mod snapshot;

use datafusion::common::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use datafusion::arrow::array::{Array, Int64Array, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::error::{DataFusionError, Result as DfResult};

use crate::change_batch::ChangeBatch;

/// The rows of a reference table, keyed by primary key, in insertion order of their keys'
/// latest write.
#[derive(Debug)]
pub struct ReferenceTable {
    name: String,
    schema: SchemaRef,
    /// Column indices of the primary key.
    key: Vec<usize>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    converter: RowConverter,
    /// Each key's current row, as a one-row batch.
    rows: HashMap<OwnedRow, RecordBatch>,
    /// Once snapshots are taken: the keys written since the last one.
    changed: Option<HashSet<OwnedRow>>,
}

impl ReferenceTable {
    /// An empty table `name` with `schema`, keyed by the columns at `key`.
    pub fn new(name: &str, schema: SchemaRef, key: Vec<usize>) -> DfResult<Self> {
        if key.is_empty() {
            return Err(DataFusionError::Internal(format!(
                "reference table {name} has no primary key"
            )));
        }
        let fields = key
            .iter()
            .map(|&k| SortField::new(schema.field(k).data_type().clone()))
            .collect();
        Ok(Self {
            name: name.to_string(),
            state: Mutex::new(State {
                converter: RowConverter::new(fields)?,
                rows: HashMap::new(),
                changed: None,
            }),
            schema,
            key,
        })
    }

    /// The table's schema.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Column indices of the primary key.
    pub fn key(&self) -> &[usize] {
        &self.key
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Upserts `batch` (rows of the table's schema) and hands the resulting changes to
    /// `publish` while the table is still locked, so concurrent writers publish their
    /// changes in the order they applied them. Within a batch, a later row of a key replaces
    /// an earlier one. A row with a NULL key is refused and nothing of the batch is applied.
    pub fn upsert<E>(
        &self,
        batch: &RecordBatch,
        publish: impl FnOnce(ChangeBatch) -> Result<(), E>,
    ) -> Result<(), UpsertError<E>> {
        let key_columns: Vec<_> = self.key.iter().map(|&k| batch.column(k).clone()).collect();
        if let Some((column, _)) = self
            .key
            .iter()
            .zip(&key_columns)
            .find(|(_, values)| values.null_count() > 0)
        {
            return Err(UpsertError::NullKey {
                table: self.name.clone(),
                column: self.schema.field(*column).name().clone(),
            });
        }
        let mut state = self.lock();
        let keys = state
            .converter
            .convert_columns(&key_columns)
            .map_err(|e| UpsertError::Engine(e.into()))?;
        // The last row of each key in the batch wins.
        let mut latest: HashMap<OwnedRow, usize> = HashMap::new();
        let mut order = Vec::new();
        for index in 0..batch.num_rows() {
            let key = keys.row(index).owned();
            if latest.insert(key.clone(), index).is_none() {
                order.push(key);
            }
        }
        let mut retracted = Vec::new();
        let mut inserted = Vec::with_capacity(order.len());
        for key in &order {
            if let Some(old) = state.rows.get(key) {
                retracted.push(old.clone());
            }
            inserted.push(latest[key] as u32);
        }
        let new_rows = take_record_batch(batch, &UInt32Array::from(inserted.clone()))
            .map_err(|e| UpsertError::Engine(e.into()))?;
        let mut parts = retracted.clone();
        parts.push(new_rows);
        let changes =
            concat_batches(&self.schema, &parts).map_err(|e| UpsertError::Engine(e.into()))?;
        let weights: Int64Array = std::iter::repeat_n(-1, retracted.len())
            .chain(std::iter::repeat_n(1, order.len()))
            .collect();
        publish(ChangeBatch::with_weights(changes, weights)).map_err(UpsertError::Publish)?;
        for (key, index) in order.into_iter().zip(inserted) {
            if let Some(changed) = &mut state.changed {
                changed.insert(key.clone());
            }
            state.rows.insert(key, batch.slice(index as usize, 1));
        }
        Ok(())
    }

    /// The current rows, one batch.
    pub fn snapshot(&self) -> DfResult<RecordBatch> {
        self.hold().rows()
    }

    /// Holds the table still: writers wait (before publishing anything) until the guard is
    /// dropped, so the rows it reads are exactly the changes published so far.
    pub fn hold(&self) -> HeldTable<'_> {
        HeldTable {
            schema: &self.schema,
            state: self.lock(),
        }
    }

    /// Number of rows (keys) held.
    pub fn len(&self) -> usize {
        self.lock().rows.len()
    }

    /// True when the table holds no row.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A reference table no write can change while this lives.
#[derive(Debug)]
pub struct HeldTable<'a> {
    schema: &'a SchemaRef,
    state: MutexGuard<'a, State>,
}

impl HeldTable<'_> {
    /// The current rows, one batch.
    pub fn rows(&self) -> DfResult<RecordBatch> {
        let rows: Vec<&RecordBatch> = self.state.rows.values().collect();
        Ok(concat_batches(self.schema, rows)?)
    }
}

/// Why an upsert was not applied.
#[derive(Debug)]
pub enum UpsertError<E> {
    /// A row's primary key column is NULL.
    NullKey {
        /// The table.
        table: String,
        /// The key column holding NULL.
        column: String,
    },
    /// Publishing the changes failed; the table is unchanged.
    Publish(E),
    /// Arrow could not convert the rows (a bug).
    Engine(DataFusionError),
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Float64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn rates(rows: &[(&str, f64)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("currency", DataType::Utf8, false),
            Field::new("rate", DataType::Float64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .expect("columns match the schema")
    }

    fn describe(change: &ChangeBatch) -> Vec<String> {
        let batch = change.batch();
        let currency = batch.column(0).as_any().downcast_ref::<StringArray>();
        let rate = batch.column(1).as_any().downcast_ref::<Float64Array>();
        let (Some(currency), Some(rate), Some(weights)) = (currency, rate, change.weights()) else {
            return vec!["unexpected change batch".into()];
        };
        (0..batch.num_rows())
            .map(|i| {
                format!(
                    "{:+} {} {}",
                    weights.value(i),
                    currency.value(i),
                    rate.value(i)
                )
            })
            .collect()
    }

    #[test]
    fn upserts_retract_the_replaced_row() {
        let first = rates(&[("EUR", 1.1), ("GBP", 1.3)]);
        let table = ReferenceTable::new("rates", first.schema(), vec![0]).expect("a key");
        let mut published = Vec::new();
        let mut record = |change: ChangeBatch| {
            published.push(describe(&change));
            Ok::<_, ()>(())
        };
        table.upsert(&first, &mut record).expect("upsert");
        table
            .upsert(
                &rates(&[("EUR", 1.2), ("EUR", 1.25), ("JPY", 0.01)]),
                &mut record,
            )
            .expect("upsert");
        assert_eq!(published[0], ["+1 EUR 1.1", "+1 GBP 1.3"]);
        assert_eq!(published[1], ["-1 EUR 1.1", "+1 EUR 1.25", "+1 JPY 0.01"]);
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn a_failed_publish_leaves_the_table_unchanged() {
        let first = rates(&[("EUR", 1.1)]);
        let table = ReferenceTable::new("rates", first.schema(), vec![0]).expect("a key");
        let outcome = table.upsert(&first, |_| Err("queue closed"));
        assert!(matches!(outcome, Err(UpsertError::Publish("queue closed"))));
        assert!(table.is_empty());
    }

    fn lines(batch: &RecordBatch) -> Vec<String> {
        let currency = batch.column(0).as_any().downcast_ref::<StringArray>();
        let rate = batch.column(1).as_any().downcast_ref::<Float64Array>();
        let (Some(currency), Some(rate)) = (currency, rate) else {
            return vec!["unexpected batch".into()];
        };
        let mut lines: Vec<String> = (0..batch.num_rows())
            .map(|i| format!("{} {}", currency.value(i), rate.value(i)))
            .collect();
        lines.sort();
        lines
    }

    #[test]
    fn a_restored_table_holds_the_rows_of_a_snapshot_chain() {
        use crate::state::{merge_states, StateKind};

        let first = rates(&[("EUR", 1.1), ("GBP", 1.3)]);
        let table = ReferenceTable::new("rates", first.schema(), vec![0]).expect("a key");
        let ignore = |_: ChangeBatch| Ok::<_, ()>(());
        table.upsert(&first, ignore).expect("upsert");
        let full = table.snapshot_state(false).expect("snapshot");
        assert_eq!(full.kind, StateKind::Full, "the first snapshot is whole");
        table
            .upsert(
                &rates(&[("EUR", 1.2), ("EUR", 1.25), ("JPY", 0.01)]),
                ignore,
            )
            .expect("upsert");
        let delta = table.snapshot_state(false).expect("snapshot");
        assert_eq!(delta.kind, StateKind::Delta);
        assert_eq!(delta.parts[0].upsert_rows(), 2, "EUR and JPY, not GBP");
        assert!(table
            .snapshot_state(false)
            .expect("snapshot")
            .parts
            .is_empty());

        let restored = ReferenceTable::new("rates", first.schema(), vec![0]).expect("a key");
        restored
            .restore_state(merge_states(&[full, delta]).expect("merge"))
            .expect("restore");
        let rows = lines(&restored.snapshot().expect("rows"));
        assert_eq!(rows, lines(&table.snapshot().expect("rows")));
        assert_eq!(rows, ["EUR 1.25", "GBP 1.3", "JPY 0.01"]);
        // The restored rows are the table's: the next upsert of a key replaces its row.
        let mut published = Vec::new();
        restored
            .upsert(&rates(&[("GBP", 1.4)]), |change| {
                published.push(describe(&change));
                Ok::<_, ()>(())
            })
            .expect("upsert");
        assert_eq!(published[0], ["-1 GBP 1.3", "+1 GBP 1.4"]);
        let after = restored.snapshot_state(false).expect("snapshot");
        assert_eq!(after.parts[0].upsert_rows(), 1);
    }

    #[test]
    fn a_row_stored_under_another_key_is_refused() {
        use crate::state::{merge_states, StatePart};
        use crate::state_codec::keyed_rows_batch;

        let row = rates(&[("EUR", 1.1)]);
        let table = ReferenceTable::new("rates", row.schema(), vec![0]).expect("a key");
        let keys = datafusion::arrow::array::BinaryArray::from_vec(vec![b"not the key"]);
        let state = crate::state::OperatorState::full(vec![StatePart::new(
            "rows",
            vec![keyed_rows_batch(keys, &row).expect("batch")],
        )]);
        let error = table
            .restore_state(merge_states(&[state]).expect("merge"))
            .expect_err("a wrong key");
        assert!(error.to_string().contains("table rates"), "{error}");
        assert!(table.is_empty());
    }
}
