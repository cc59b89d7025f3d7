//! Lookup join: each row of an append-only stream (port 0) probes the current rows of a
//! reference table (port 1, the table's changelog) on the table's primary key as it arrives,
//! processing-time semantics as in Flink's lookup join. Output is append-only: a table change
//! applies to stream rows arriving after it and never revisits rows already emitted. Both
//! inputs are routed by the key, so each worker holds its shard of the table; the table's
//! input holds no watermark back (a table without one would stall every window downstream).
//! Snapshots of the table copy are incremental by key (see `snapshot`).

mod snapshot;

use datafusion::common::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, Array, ArrayRef, BooleanArray, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::JoinType;
use datafusion::error::{DataFusionError, Result as DfResult};

use super::{batch_of_schema, evaluate_columns, JoinSpec, Operator};
use crate::change_batch::ChangeBatch;
use crate::state::{OperatorState, RestoredPart};

/// Joins stream rows with the table rows current when they arrive.
pub struct LookupJoinOperator {
    spec: Arc<JoinSpec>,
    keys: RowConverter,
    table_rows: RowConverter,
    /// This worker's shard of the table: each key's current row.
    table: HashMap<OwnedRow, OwnedRow>,
    /// Once snapshots are taken: the keys written or removed since the last one.
    changed: Option<HashSet<OwnedRow>>,
}

impl std::fmt::Debug for LookupJoinOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl LookupJoinOperator {
    /// A lookup join as `spec` says: an inner or left join, the stream on the left, the
    /// table's primary key among the right keys. The table's rows arrive on port 1, those
    /// current when the query starts first.
    pub fn new(spec: JoinSpec) -> DfResult<Self> {
        if !matches!(spec.join_type, JoinType::Inner | JoinType::Left) {
            return Err(DataFusionError::Internal(format!(
                "{} join planned as a lookup join",
                spec.join_type
            )));
        }
        Self::from_spec(Arc::new(spec))
    }

    fn from_spec(spec: Arc<JoinSpec>) -> DfResult<Self> {
        let table_fields = spec.inputs[1]
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        Ok(Self {
            keys: RowConverter::new(spec.key_fields.clone())?,
            table_rows: RowConverter::new(table_fields)?,
            table: HashMap::new(),
            changed: None,
            spec,
        })
    }

    fn apply_changes(&mut self, changes: &ChangeBatch) -> DfResult<()> {
        let batch = changes.batch();
        let key_columns = evaluate_columns(&self.spec.keys[1], batch)?;
        let keys = self.keys.convert_columns(&key_columns)?;
        let rows = self.table_rows.convert_columns(batch.columns())?;
        for index in 0..batch.num_rows() {
            let weight = changes.weights().map_or(1, |w| w.value(index));
            let key = keys.row(index).owned();
            if weight > 0 {
                note_change(&mut self.changed, &key);
                self.table.insert(key, rows.row(index).owned());
            } else if self
                .table
                .get(&key)
                .is_some_and(|current| current.row() == rows.row(index))
            {
                // Only the row retracted goes: a retraction arriving after the replacing
                // insert's (which one ring per table rules out) must not remove the new row.
                note_change(&mut self.changed, &key);
                self.table.remove(&key);
            }
        }
        Ok(())
    }

    fn probe(&self, batch: &RecordBatch, out: &mut Vec<ChangeBatch>) -> DfResult<()> {
        let key_columns = evaluate_columns(&self.spec.keys[0], batch)?;
        let keys = self.keys.convert_columns(&key_columns)?;
        let mut probes = Vec::with_capacity(batch.num_rows());
        let mut matches = Vec::with_capacity(batch.num_rows());
        for index in 0..batch.num_rows() {
            let null_key = key_columns.iter().any(|c| c.is_null(index));
            let found = if null_key {
                None
            } else {
                self.table.get(&keys.row(index).owned())
            };
            probes.push(index as u32);
            matches.push(found);
        }
        if let Some(filter) = &self.spec.filter {
            // The rest of the condition decides on each pair; a pair it rejects is no match.
            let pairs = self.assemble(batch, &probes, &matches)?;
            let keep = filter.evaluate(&pairs)?.into_array(pairs.num_rows())?;
            let keep = keep
                .as_any()
                .downcast_ref::<BooleanArray>()
                .ok_or_else(|| DataFusionError::Internal("join filter is not boolean".into()))?;
            for (index, found) in matches.iter_mut().enumerate() {
                if keep.is_null(index) || !keep.value(index) {
                    *found = None;
                }
            }
        }
        if self.spec.join_type == JoinType::Inner {
            let (kept_probes, kept): (Vec<u32>, Vec<Option<&OwnedRow>>) = probes
                .into_iter()
                .zip(matches)
                .filter(|(_, found)| found.is_some())
                .unzip();
            probes = kept_probes;
            matches = kept;
        }
        if probes.is_empty() {
            return Ok(());
        }
        out.push(ChangeBatch::insert_only(
            self.assemble(batch, &probes, &matches)?,
        ));
        Ok(())
    }

    /// Output rows: stream row `probes[i]` of `batch`, then the table row `matches[i]`
    /// (NULLs for none).
    fn assemble(
        &self,
        batch: &RecordBatch,
        probes: &[u32],
        matches: &[Option<&OwnedRow>],
    ) -> DfResult<RecordBatch> {
        let rows = probes.len();
        let probe_indices = UInt32Array::from(probes.to_vec());
        let mut columns: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .map(|c| take(c.as_ref(), &probe_indices, None))
            .collect::<Result<_, _>>()?;
        let found_rows: Vec<&OwnedRow> = matches.iter().flatten().copied().collect();
        if found_rows.is_empty() {
            columns.extend(
                self.spec.inputs[1]
                    .fields()
                    .iter()
                    .map(|f| new_null_array(f.data_type(), rows)),
            );
        } else {
            let values = self
                .table_rows
                .convert_rows(found_rows.iter().map(|r| r.row()))?;
            let mut next = 0_u32;
            let spread: UInt32Array = matches
                .iter()
                .map(|found| {
                    found.map(|_| {
                        next += 1;
                        next - 1
                    })
                })
                .collect();
            for column in &values {
                columns.push(take(column.as_ref(), &spread, None)?);
            }
        }
        // The row format may hand back looser types; the schema's are authoritative.
        batch_of_schema(&self.spec.schema, columns)
    }
}

/// Lists `key` among the changed keys, once snapshots are taken (and once per interval).
fn note_change(changed: &mut Option<HashSet<OwnedRow>>, key: &OwnedRow) {
    if let Some(changed) = changed {
        if !changed.contains(key) {
            changed.insert(key.clone());
        }
    }
}

impl Operator for LookupJoinOperator {
    fn name(&self) -> &'static str {
        "LookupJoin"
    }

    fn describe(&self) -> String {
        format!(
            "LookupJoin {}: {}, each stream row joined with the table rows current on its \
             arrival (append-only)",
            if self.spec.join_type == JoinType::Left {
                "LEFT"
            } else {
                "INNER"
            },
            self.spec.describe_condition()
        )
    }

    fn fork(&self) -> Box<dyn Operator> {
        // The prototype was built from this very spec, so building it again cannot fail.
        Box::new(
            Self::from_spec(Arc::clone(&self.spec))
                .expect("the spec was accepted when the prototype was built"),
        )
    }

    fn process(
        &mut self,
        port: usize,
        input: ChangeBatch,
        out: &mut Vec<ChangeBatch>,
    ) -> DfResult<()> {
        match port {
            0 if input.is_insert_only() => self.probe(input.batch(), out),
            0 => Err(DataFusionError::Internal(
                "retractions reached the stream side of a lookup join".into(),
            )),
            1 => self.apply_changes(&input),
            other => Err(DataFusionError::Internal(format!(
                "a lookup join has two inputs, not port {other}"
            ))),
        }
    }

    fn holds_watermark(&self, port: usize) -> bool {
        port == 0
    }

    fn state_entries(&self) -> u64 {
        self.table.len() as u64
    }

    fn state_bytes(&self) -> u64 {
        self.table
            .iter()
            .map(|(key, row)| (key.row().as_ref().len() + row.row().as_ref().len()) as u64)
            .sum()
    }

    fn snapshot(&mut self, full: bool) -> DfResult<Option<OperatorState>> {
        self.snapshot_table(full).map(Some)
    }

    fn restore(&mut self, parts: Vec<RestoredPart>) -> DfResult<()> {
        self.restore_table(&parts)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
    use datafusion::physical_expr::expressions::Column;
    use datafusion::physical_expr::PhysicalExpr;

    use super::*;

    fn schemas() -> (SchemaRef, SchemaRef, SchemaRef) {
        let orders = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("currency", DataType::Utf8, true),
        ]));
        let rates = Arc::new(Schema::new(vec![
            Field::new("currency", DataType::Utf8, false),
            Field::new("rate", DataType::Float64, true),
        ]));
        let joined = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("currency", DataType::Utf8, true),
            Field::new("r_currency", DataType::Utf8, true),
            Field::new("rate", DataType::Float64, true),
        ]));
        (orders, rates, joined)
    }

    fn join(join_type: JoinType) -> LookupJoinOperator {
        let (orders, rates, joined) = schemas();
        let key = |index: usize, name: &str| -> Arc<dyn PhysicalExpr> {
            Arc::new(Column::new(name, index))
        };
        LookupJoinOperator::new(JoinSpec {
            join_type,
            keys: [vec![key(1, "currency")], vec![key(0, "currency")]],
            key_fields: vec![SortField::new(DataType::Utf8)],
            nulls_equal: false,
            filter: None,
            inputs: [orders, rates],
            schema: joined,
        })
        .expect("a lookup join")
    }

    fn orders(rows: &[(i64, Option<&str>)]) -> ChangeBatch {
        let (schema, _, _) = schemas();
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(rows.iter().map(|r| r.1).collect::<StringArray>()),
            ],
        )
        .expect("columns match");
        ChangeBatch::insert_only(batch)
    }

    fn rates(rows: &[(&str, f64, i64)]) -> ChangeBatch {
        let (_, schema, _) = schemas();
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .expect("columns match");
        let weights = rows.iter().map(|r| r.2).collect();
        ChangeBatch::with_weights(batch, weights)
    }

    /// `id -> rate` per output row (`NULL` when unmatched).
    fn render(out: &[ChangeBatch]) -> Vec<String> {
        crate::operator::test_support::id_to_value(out, 3)
    }

    #[test]
    fn rows_join_the_table_as_it_is_on_arrival() {
        let mut op = join(JoinType::Left);
        let mut out = Vec::new();
        op.process(1, rates(&[("EUR", 1.1, 1)]), &mut out)
            .expect("changes");
        op.process(
            0,
            orders(&[(1, Some("EUR")), (2, Some("JPY")), (3, None)]),
            &mut out,
        )
        .expect("probe");
        op.process(1, rates(&[("EUR", 1.1, -1), ("EUR", 1.2, 1)]), &mut out)
            .expect("changes");
        op.process(0, orders(&[(4, Some("EUR"))]), &mut out)
            .expect("probe");
        assert_eq!(
            render(&out),
            ["1 -> 1.1", "2 -> NULL", "3 -> NULL", "4 -> 1.2"]
        );
        assert!(out.iter().all(ChangeBatch::is_insert_only));
        assert_eq!(op.state_entries(), 1);
    }

    #[test]
    fn an_inner_lookup_join_drops_unmatched_rows() {
        let mut op = join(JoinType::Inner);
        let mut out = Vec::new();
        op.process(1, rates(&[("EUR", 1.1, 1), ("GBP", 1.3, 1)]), &mut out)
            .expect("changes");
        op.process(1, rates(&[("GBP", 1.3, -1)]), &mut out)
            .expect("changes");
        op.process(0, orders(&[(1, Some("GBP")), (2, Some("EUR"))]), &mut out)
            .expect("probe");
        assert_eq!(render(&out), ["2 -> 1.1"]);
    }

    #[test]
    fn a_restored_lookup_join_probes_the_table_as_the_original_held_it() {
        use crate::operator::snapshot_harness::{assert_round_trip, Step};
        use crate::state::StateKind;

        let first = [
            Step::Data(
                1,
                rates(&[("EUR", 1.1, 1), ("GBP", 1.3, 1), ("CHF", 1.05, 1)]),
            ),
            Step::Data(0, orders(&[(1, Some("EUR"))])),
        ];
        let second = [
            Step::Data(
                1,
                rates(&[("EUR", 1.1, -1), ("EUR", 1.2, 1), ("GBP", 1.3, -1)]),
            ),
            Step::Data(0, orders(&[(2, Some("GBP"))])),
        ];
        let rest = [
            Step::Data(
                0,
                orders(&[(3, Some("EUR")), (4, Some("GBP")), (5, Some("CHF"))]),
            ),
            Step::End,
        ];
        let prototype = join(JoinType::Left);
        let trip = assert_round_trip(&prototype, &[&first, &second], &rest, render);
        assert_eq!(trip.output, ["3 -> 1.2", "4 -> NULL", "5 -> 1.05"]);
        let [full, delta] = &trip.snapshots[..] else {
            panic!("two snapshots");
        };
        assert_eq!(full.kind, StateKind::Full);
        assert_eq!(full.parts[0].upsert_rows(), 3);
        // EUR rewritten, GBP deleted, CHF untouched.
        assert_eq!(delta.kind, StateKind::Delta);
        assert_eq!(
            (delta.parts[0].upsert_rows(), delta.parts[0].deletes.len()),
            (1, 1)
        );
    }
}
