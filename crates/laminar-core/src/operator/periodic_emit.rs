//! Periodic emission (`EMIT EVERY INTERVAL '..'`): sits on top of a query whose output is a
//! changelog and holds its changes back, consolidated, until the next tick of processing
//! time. A row inserted and retracted between two ticks never appears; a group updated a
//! thousand times appears once per tick, as one retraction and one insertion. Folding the
//! output gives the same result as folding the unthrottled changelog. What is pending is
//! flushed when the input ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::error::Result as DfResult;

use super::Operator;
use crate::change_batch::ChangeBatch;

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
