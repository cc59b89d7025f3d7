//! Snapshot and restore of the [`TopNOperator`]'s state, incremental by partition.
//!
//! Parts: `counters` (the watermark, late rows) and `partitions`, one entry per partition
//! keyed by its row-format partition key: its window end, the rows it holds (ORDER BY key
//! and whole-row encodings, and multiplicities, as lists) and the rows it last emitted with
//! their numbers. A delta rewrites the partitions that received rows since the previous
//! snapshot and deletes the partitions freed. A partition is written whole: over a changelog
//! (which keeps every row) a touched partition costs all its rows.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, BinaryArray, BinaryBuilder, Int64Array, LargeListBuilder, RecordBatch, UInt64Array,
    UInt64Builder,
};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::row::OwnedRow;
use datafusion::error::{DataFusionError, Result as DfResult};

use super::partition::{Numbered, Partition, RankKey};
use super::TopNOperator;
use crate::state::{restored_part, OperatorState, RestoredPart, StateKind, StatePart};
use crate::state_codec::{
    counters_part, state_batch, Counters, PartReader, StateColumn, COUNTERS_PART,
};

/// Name of the part holding the partitions.
const PARTITIONS_PART: &str = "partitions";

/// The operator's name in restore errors.
const OPERATOR: &str = "TopN";

/// List columns of rank keys with a number each (a multiplicity or a row number).
struct RankedColumns {
    orders: LargeListBuilder<BinaryBuilder>,
    rows: LargeListBuilder<BinaryBuilder>,
    numbers: LargeListBuilder<UInt64Builder>,
}

impl RankedColumns {
    fn new() -> Self {
        Self {
            orders: LargeListBuilder::new(BinaryBuilder::new()),
            rows: LargeListBuilder::new(BinaryBuilder::new()),
            numbers: LargeListBuilder::new(UInt64Builder::new()),
        }
    }

    /// Appends one partition's list.
    fn push<'a>(&mut self, keys: impl Iterator<Item = (&'a RankKey, u64)>) {
        for (key, number) in keys {
            self.orders.values().append_value(key.order_bytes());
            self.rows.values().append_value(key.row_bytes());
            self.numbers.values().append_value(number);
        }
        self.orders.append(true);
        self.rows.append(true);
        self.numbers.append(true);
    }

    /// The columns, named with `prefix`.
    fn finish(mut self, prefix: &str) -> Vec<StateColumn> {
        vec![
            (
                format!("{prefix}_order"),
                Arc::new(self.orders.finish()),
                true,
            ),
            (format!("{prefix}_row"), Arc::new(self.rows.finish()), true),
            (
                format!("{prefix}_number"),
                Arc::new(self.numbers.finish()),
                true,
            ),
        ]
    }
}

impl TopNOperator {
    /// The operator's state: every partition with `full` (or when a delta cannot say what
    /// changed), otherwise the partitions changed and removed since the previous snapshot.
    pub(super) fn snapshot_state(&mut self, full: bool) -> DfResult<OperatorState> {
        let full = full || self.changes.needs_full();
        let (changed, removed) = self.changes.take();
        let (keys, deletes) = if full {
            (self.partitions.keys().cloned().collect(), Vec::new())
        } else {
            let deletes = removed
                .into_iter()
                .filter(|key| !self.partitions.contains_key(key))
                .map(|key| key.row().as_ref().to_vec())
                .collect();
            (changed, deletes)
        };
        let counters = counters_part(&[
            ("watermark_ms", self.watermark_ms),
            ("late_rows", self.late_rows as i64),
        ])?;
        let mut partitions = StatePart::new(PARTITIONS_PART, self.write_partitions(keys, full)?);
        partitions.deletes = deletes;
        let kind = if full {
            StateKind::Full
        } else {
            StateKind::Delta
        };
        Ok(OperatorState {
            kind,
            parts: vec![counters, partitions],
        })
    }

    /// The state batch of the partitions `keys` (those still held and, unless `all`, still
    /// dirty: a key may be listed twice).
    fn write_partitions(&mut self, keys: Vec<OwnedRow>, all: bool) -> DfResult<Vec<RecordBatch>> {
        let mut key_bytes = BinaryBuilder::new();
        let mut window_ends = Vec::new();
        let mut ranked = RankedColumns::new();
        let mut emitted = RankedColumns::new();
        for key in keys {
            let Some(partition) = self.partitions.get_mut(&key) else {
                continue;
            };
            if !all && !partition.flags.is_dirty() {
                continue;
            }
            partition.flags.written();
            key_bytes.append_value(key.row().as_ref());
            window_ends.push(partition.window_end_ms);
            ranked.push(partition.ranked());
            emitted.push(partition.emitted().iter().map(|(key, rank)| (key, *rank)));
        }
        if window_ends.is_empty() {
            return Ok(Vec::new());
        }
        let mut columns: Vec<StateColumn> = vec![(
            "window_end_ms".into(),
            Arc::new(Int64Array::from(window_ends)),
            true,
        )];
        columns.extend(ranked.finish("ranked"));
        columns.extend(emitted.finish("emitted"));
        Ok(vec![state_batch(key_bytes.finish(), columns)?])
    }

    /// Replaces the state of a fresh instance with `parts`, as [`Self::snapshot_state`]
    /// wrote them (merged over a chain of snapshots).
    pub(super) fn restore_state(&mut self, parts: &[RestoredPart]) -> DfResult<()> {
        let known = [COUNTERS_PART, PARTITIONS_PART];
        let Some(counters) = Counters::restore(OPERATOR, parts, &known)? else {
            return Ok(());
        };
        if !self.partitions.is_empty() {
            return Err(DataFusionError::Internal(
                "state restored into a top-N that already holds partitions".into(),
            ));
        }
        self.watermark_ms = counters.get("watermark_ms")?;
        self.late_rows = counters.get("late_rows")? as u64;
        for batch in restored_part(parts, PARTITIONS_PART).map_or(&[][..], |p| &p.batches) {
            let reader = PartReader::new(OPERATOR, PARTITIONS_PART);
            let keys = reader.keys(batch)?;
            let window_ends = reader.required::<Int64Array>(batch, "window_end_ms")?;
            for row in 0..batch.num_rows() {
                let partition = Partition::restored(
                    self.read_ranked(&reader, batch, "ranked", row)?,
                    self.read_ranked(&reader, batch, "emitted", row)?,
                    window_ends.value(row),
                );
                // The one partition without PARTITION BY has no key columns to parse.
                let key = match &self.global_key {
                    Some(global) => global.clone(),
                    None => self
                        .converters
                        .partition
                        .parser()
                        .parse(keys.value(row))
                        .owned(),
                };
                self.rows_held += partition.rows();
                if self.partitions.insert(key, partition).is_some() {
                    return Err(reader.malformed("a partition key appears twice"));
                }
            }
        }
        self.changes.restored();
        Ok(())
    }

    /// The rank keys and numbers of list columns `prefix_*` at `row`.
    fn read_ranked(
        &self,
        reader: &PartReader<'_>,
        batch: &RecordBatch,
        prefix: &str,
        row: usize,
    ) -> DfResult<Vec<Numbered>> {
        let binary = |name: String| -> DfResult<BinaryArray> {
            let values = reader.list_value(batch, &name, row, &DataType::Binary)?;
            values
                .as_any()
                .downcast_ref::<BinaryArray>()
                .cloned()
                .ok_or_else(|| reader.column_error(&name, "holds no list of Binary"))
        };
        let orders = binary(format!("{prefix}_order"))?;
        let rows = binary(format!("{prefix}_row"))?;
        let name = format!("{prefix}_number");
        let numbers = reader.list_value(batch, &name, row, &DataType::UInt64)?;
        let numbers = numbers
            .as_any()
            .downcast_ref::<UInt64Array>()
            .ok_or_else(|| reader.column_error(&name, "holds no list of UInt64"))?;
        let nulls = orders.null_count() + rows.null_count() + numbers.null_count();
        if orders.len() != rows.len() || rows.len() != numbers.len() || nulls > 0 {
            return Err(reader.malformed(format!("the lists `{prefix}_*` do not match")));
        }
        let (order_parser, row_parser) =
            (self.converters.order.parser(), self.converters.row.parser());
        Ok((0..orders.len())
            .map(|i| {
                let key = RankKey::new(
                    order_parser.parse(orders.value(i)).owned(),
                    row_parser.parse(rows.value(i)).owned(),
                );
                (key, numbers.value(i))
            })
            .collect())
    }
}
