//! Periodic emission (`EMIT EVERY INTERVAL '..'`): sits on top of a query whose output is a
//! changelog and holds its changes back, consolidated, until the next tick of processing
//! time. A row inserted and retracted between two ticks never appears; a group updated a
//! thousand times appears once per tick, as one retraction and one insertion. Folding the
//! output gives the same result as folding the unthrottled changelog. What is pending is
//! flushed when the input ends.
//!
//! A snapshot holds the pending changes (part `pending`: each row's encoding, net weight and
//! arrival) and the arrival counter. It is always full: a tick empties the pending changes,
//! so they stay as small as what one interval brings.

use datafusion::common::HashMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{BinaryBuilder, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::error::{DataFusionError, Result as DfResult};

use super::Operator;
use crate::change_batch::ChangeBatch;
use crate::state::{restored_part, OperatorState, RestoredPart, StatePart};
use crate::state_codec::{
    counters_part, state_batch, Counters, PartReader, StateColumn, COUNTERS_PART,
};

/// Name of the state part holding the pending changes.
const PENDING_PART: &str = "pending";

/// The operator's name in restore errors.
const OPERATOR: &str = "PeriodicEmit";

/// Holds a changelog's changes and emits their net effect every `interval`.
pub struct PeriodicEmitOperator {
    interval: Duration,
    schema: SchemaRef,
    converter: RowConverter,
    /// Net weight of every row changed since the last tick, and when it was first seen.
    pending: HashMap<OwnedRow, (i64, u64)>,
    arrivals: u64,
}

impl std::fmt::Debug for PeriodicEmitOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl PeriodicEmitOperator {
    /// Emits the changes of rows of `schema` every `interval`.
    pub fn new(interval: Duration, schema: SchemaRef) -> DfResult<Self> {
        let converter = RowConverter::new(fields(&schema))?;
        Ok(Self {
            interval,
            schema,
            converter,
            pending: HashMap::new(),
            arrivals: 0,
        })
    }

    /// The pending changes as one batch, retractions first, each in arrival order.
    fn flush(&mut self, out: &mut Vec<ChangeBatch>) -> DfResult<()> {
        let mut changes: Vec<(OwnedRow, i64, u64)> = self
            .pending
            .drain()
            .filter(|(_, (weight, _))| *weight != 0)
            .map(|(row, (weight, seen))| (row, weight, seen))
            .collect();
        if changes.is_empty() {
            return Ok(());
        }
        changes.sort_by_key(|(_, weight, seen)| (*weight > 0, *seen));
        let columns = self
            .converter
            .convert_rows(changes.iter().map(|(row, ..)| row.row()))?;
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        let weights = Int64Array::from_iter_values(changes.iter().map(|(_, weight, _)| *weight));
        out.push(ChangeBatch::with_weights(batch, weights));
        Ok(())
    }
}

impl PeriodicEmitOperator {
    /// The pending changes and the arrival counter, whole.
    fn snapshot_state(&self) -> DfResult<OperatorState> {
        let mut rows = BinaryBuilder::new();
        let (mut weights, mut arrivals) = (Vec::new(), Vec::new());
        for (row, (weight, seen)) in &self.pending {
            rows.append_value(row.row().as_ref());
            weights.push(*weight);
            arrivals.push(*seen as i64);
        }
        let upserts = if weights.is_empty() {
            Vec::new()
        } else {
            let columns: Vec<StateColumn<&str>> = vec![
                ("weight", Arc::new(Int64Array::from(weights)), true),
                ("arrival", Arc::new(Int64Array::from(arrivals)), true),
            ];
            vec![state_batch(rows.finish(), columns)?]
        };
        Ok(OperatorState::full(vec![
            counters_part(&[("arrivals", self.arrivals as i64)])?,
            StatePart::new(PENDING_PART, upserts),
        ]))
    }

    /// Replaces the state of a fresh instance with `parts`, as [`Self::snapshot_state`]
    /// wrote them.
    fn restore_state(&mut self, parts: &[RestoredPart]) -> DfResult<()> {
        let known = [COUNTERS_PART, PENDING_PART];
        let Some(counters) = Counters::restore(OPERATOR, parts, &known)? else {
            return Ok(());
        };
        if !self.pending.is_empty() {
            return Err(DataFusionError::Internal(
                "state restored into a periodic emit holding changes".into(),
            ));
        }
        self.arrivals = counters.get("arrivals")? as u64;
        let parser = self.converter.parser();
        for batch in restored_part(parts, PENDING_PART).map_or(&[][..], |p| &p.batches) {
            let reader = PartReader::new(OPERATOR, PENDING_PART);
            let rows = reader.keys(batch)?;
            let (weights, arrivals) = (
                reader.required::<Int64Array>(batch, "weight")?,
                reader.required::<Int64Array>(batch, "arrival")?,
            );
            for index in 0..batch.num_rows() {
                let row = parser.parse(rows.value(index)).owned();
                let change = (weights.value(index), arrivals.value(index) as u64);
                if self.pending.insert(row, change).is_some() {
                    return Err(reader.malformed("a row appears twice"));
                }
            }
        }
        Ok(())
    }
}

fn fields(schema: &SchemaRef) -> Vec<SortField> {
    schema
        .fields()
        .iter()
        .map(|field| SortField::new(field.data_type().clone()))
        .collect()
}

impl Operator for PeriodicEmitOperator {
    fn name(&self) -> &'static str {
        "PeriodicEmit"
    }

    fn describe(&self) -> String {
        format!("PeriodicEmit every {} ms", self.interval.as_millis())
    }

    fn fork(&self) -> Box<dyn Operator> {
        Box::new(Self {
            interval: self.interval,
            schema: Arc::clone(&self.schema),
            // `new` built a converter for this very schema, so building another cannot fail.
            converter: RowConverter::new(fields(&self.schema))
                .expect("row types were accepted when the prototype was built"),
            pending: HashMap::new(),
            arrivals: 0,
        })
    }

    fn state_entries(&self) -> u64 {
        self.pending.len() as u64
    }

    fn snapshot(&mut self, _full: bool) -> DfResult<Option<OperatorState>> {
        self.snapshot_state().map(Some)
    }

    fn restore(&mut self, parts: Vec<RestoredPart>) -> DfResult<()> {
        self.restore_state(&parts)
    }

    fn timer_interval(&self) -> Option<Duration> {
        Some(self.interval)
    }

    fn on_timer(&mut self, out: &mut Vec<ChangeBatch>) -> DfResult<()> {
        self.flush(out)
    }

    fn on_end(&mut self, out: &mut Vec<ChangeBatch>) -> DfResult<()> {
        self.flush(out)
    }

    fn process(
        &mut self,
        _port: usize,
        input: ChangeBatch,
        _out: &mut Vec<ChangeBatch>,
    ) -> DfResult<()> {
        let rows = self.converter.convert_columns(input.batch().columns())?;
        let weights = input.weights();
        for (index, row) in rows.iter().enumerate() {
            let weight = weights.map_or(1, |w| w.value(index));
            self.arrivals += 1;
            let arrival = self.arrivals;
            let entry = self.pending.entry(row.owned()).or_insert((0, arrival));
            entry.0 += weight;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

    use super::PeriodicEmitOperator;
    use crate::change_batch::ChangeBatch;
    use crate::operator::test_support::{round_trip, Step};
    use crate::state::StateKind;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
        ]))
    }

    /// Changes `(k, n, weight)`.
    fn changes(rows: &[(&str, i64, i64)]) -> Step {
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .expect("batch");
        let weights = Int64Array::from_iter_values(rows.iter().map(|r| r.2));
        Step::Rows(ChangeBatch::with_weights(batch, weights))
    }

    #[test]
    fn pending_changes_are_emitted_after_restore_as_they_would_have_been() {
        let prototype =
            PeriodicEmitOperator::new(std::time::Duration::from_secs(1), schema()).expect("op");
        let a1 = [
            changes(&[("a", 1, 1), ("b", 1, 1)]),
            changes(&[("a", 1, -1), ("a", 2, 1)]),
        ];
        let a2 = [
            Step::Timer,
            changes(&[("b", 1, -1), ("b", 2, 1), ("c", 1, 1)]),
            // Inserted and retracted within one interval: never emitted.
            changes(&[("c", 1, -1), ("c", 2, 1)]),
        ];
        let b = [
            changes(&[("a", 2, -1), ("a", 3, 1)]),
            Step::Timer,
            changes(&[("d", 1, 1)]),
            Step::End,
        ];
        let snapshots = round_trip(&prototype, &a1, &a2, &b);
        assert_eq!(snapshots.delta.kind, StateKind::Full, "always whole");
    }
}
