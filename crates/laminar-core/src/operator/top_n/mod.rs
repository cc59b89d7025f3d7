//! Top-N per group: `ROW_NUMBER() OVER (PARTITION BY .. ORDER BY ..)` filtered by `rn <= N`.
//! Rows reach the operator routed by partition key, so each worker owns whole partitions.
//! Over the rows of event-time windows (`window_end` among the partition keys, append-only
//! input) a partition is complete once the watermark reaches its window end: its best N rows
//! are emitted once, numbered, and its state is freed. Otherwise the output is a changelog:
//! after each batch, every partition the batch touched retracts the rows that left its top N
//! (or changed rank) and inserts those that entered. Ties in the ORDER BY are broken by the
//! whole row, so the answer does not depend on arrival order or on the number of workers.
//! Snapshots are incremental by partition ([`state`]).

mod partition;
mod state;
#[cfg(test)]
mod tests;

use datafusion::common::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, UInt64Array};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::row::{OwnedRow, RowConverter, Rows, SortField};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::physical_expr::{PhysicalExpr, PhysicalSortExpr};

use self::partition::{Numbered, Partition};
use super::change_tracker::ChangeTracker;
use super::{batch_of_schema, Operator};
use crate::change_batch::ChangeBatch;
use crate::state::{OperatorState, RestoredPart};

/// When results leave the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Emit {
    /// A changelog, updated after every batch.
    Changes,
    /// Once per partition, when the watermark reaches its window end (partition key
    /// `window_end_key`).
    WindowClose { window_end_key: usize },
}

/// What the operator ranks by, and how it emits; shared by every worker's instance.
#[derive(Debug, Clone)]
struct Config {
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    partition_fields: Vec<SortField>,
    order_by: Vec<PhysicalSortExpr>,
    order_fields: Vec<SortField>,
    /// One field per input column: the whole row, stored and used as the tie-breaker.
    row_fields: Vec<SortField>,
    limit: usize,
    /// The input columns followed by the row number.
    schema: SchemaRef,
    emit: Emit,
    /// The input carries retractions: every row is kept, as a retraction can promote a row
    /// from below the top N.
    retracting: bool,
    /// Something downstream reads the row number: a row whose number changes is retracted
    /// and inserted again with the new one.
    rank_updates: bool,
}

/// Row converters for the partition key, the ORDER BY key and the whole row.
struct Converters {
    partition: RowConverter,
    order: RowConverter,
    row: RowConverter,
}

impl Converters {
    fn new(config: &Config) -> DfResult<Self> {
        Ok(Self {
            partition: RowConverter::new(config.partition_fields.clone())?,
            order: RowConverter::new(config.order_fields.clone())?,
            row: RowConverter::new(config.row_fields.clone())?,
        })
    }
}

/// Keeps the best N rows of every partition and emits them numbered.
pub struct TopNOperator {
    config: Config,
    converters: Converters,
    /// The one partition when there is no `PARTITION BY`.
    global_key: Option<OwnedRow>,
    partitions: HashMap<OwnedRow, Partition>,
    rows_held: u64,
    watermark_ms: i64,
    late_rows: u64,
    /// Partitions changed and removed since the previous snapshot.
    changes: ChangeTracker<OwnedRow>,
}

impl std::fmt::Debug for TopNOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl TopNOperator {
    /// Numbers the rows of each partition (by `partition_by`) in `order_by` order and keeps
    /// the first `limit`. Output rows have `schema`: the input columns, then the row number.
    /// Emits a changelog over an append-only input until told otherwise.
    pub fn new(
        partition_by: Vec<Arc<dyn PhysicalExpr>>,
        order_by: Vec<PhysicalSortExpr>,
        limit: usize,
        schema: SchemaRef,
    ) -> DfResult<Self> {
        let Some((_, input_fields)) = schema.fields().split_last() else {
            return Err(DataFusionError::Internal(
                "a top-N schema ends with the row number".into(),
            ));
        };
        let input = Schema::new(input_fields.to_vec());
        let partition_fields = partition_by
            .iter()
            .map(|e| Ok(SortField::new(e.data_type(&input)?)))
            .collect::<DfResult<Vec<_>>>()?;
        let order_fields = order_by
            .iter()
            .map(|s| {
                Ok(SortField::new_with_options(
                    s.expr.data_type(&input)?,
                    s.options,
                ))
            })
            .collect::<DfResult<Vec<_>>>()?;
        let row_fields = input
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        let config = Config {
            partition_by,
            partition_fields,
            order_by,
            order_fields,
            row_fields,
            limit,
            schema,
            emit: Emit::Changes,
            retracting: false,
            rank_updates: true,
        };
        Self::from_config(config)
    }

    fn from_config(config: Config) -> DfResult<Self> {
        let global_key = if config.partition_by.is_empty() {
            Some(super::global_key()?)
        } else {
            None
        };
        Ok(Self {
            converters: Converters::new(&config)?,
            config,
            global_key,
            partitions: HashMap::new(),
            rows_held: 0,
            watermark_ms: i64::MIN,
            late_rows: 0,
            changes: ChangeTracker::default(),
        })
    }

    /// Emits each partition once, when the watermark reaches its window end (partition key
    /// `window_end_key`), and frees it; rows of partitions already emitted are dropped and
    /// counted as late.
    pub fn emit_on_window_close(mut self, window_end_key: usize) -> Self {
        self.config.emit = Emit::WindowClose { window_end_key };
        self
    }

    /// Consumes a changelog: retracted rows leave their partition, and every row is kept,
    /// since a retraction in the top N promotes the next row.
    pub fn retracting(mut self) -> Self {
        self.config.retracting = true;
        self
    }

    /// Nothing downstream reads the row number: a row that stays in the top N while its
    /// number changes is not retracted and inserted again.
    pub fn without_rank_updates(mut self) -> Self {
        self.config.rank_updates = false;
        self
    }

    /// How many rows a partition keeps: all of them over a changelog.
    fn cap(&self) -> Option<u64> {
        (!self.config.retracting).then_some(self.config.limit as u64)
    }

    fn partition_keys(&self, columns: &[ArrayRef]) -> DfResult<Option<Rows>> {
        if self.global_key.is_some() {
            return Ok(None);
        }
        Ok(Some(self.converters.partition.convert_columns(columns)?))
    }

    /// Builds one change batch: the retractions, then the insertions (weights only for a
    /// changelog).
    fn changes(
        &self,
        retracted: &[Numbered],
        inserted: &[Numbered],
    ) -> DfResult<Option<ChangeBatch>> {
        if retracted.is_empty() && inserted.is_empty() {
            return Ok(None);
        }
        let all = || retracted.iter().chain(inserted);
        let mut columns = self
            .converters
            .row
            .convert_rows(all().map(|(key, _)| key.row.row()))?;
        columns.push(Arc::new(UInt64Array::from_iter_values(
            all().map(|(_, rank)| *rank),
        )));
        // The row format may hand back looser types (e.g. a dictionary's values); the
        // schema's types are authoritative.
        let batch = batch_of_schema(&self.config.schema, columns)?;
        if self.config.emit != Emit::Changes {
            return Ok(Some(ChangeBatch::insert_only(batch)));
        }
        let weights = Int64Array::from_iter_values(
            std::iter::repeat_n(-1, retracted.len()).chain(std::iter::repeat_n(1, inserted.len())),
        );
        Ok(Some(ChangeBatch::with_weights(batch, weights)))
    }

    /// Changelog output after a batch: what changed in the top N of each partition it
    /// touched. Partitions left without rows go.
    fn updates(&mut self, touched: HashSet<OwnedRow>) -> DfResult<Option<ChangeBatch>> {
        let mut touched: Vec<OwnedRow> = touched.into_iter().collect();
        // Partitions in key order, so output does not depend on hash order.
        touched.sort();
        let (mut retracted, mut inserted) = (Vec::new(), Vec::new());
        for key in touched {
            let Some(partition) = self.partitions.get_mut(&key) else {
                continue;
            };
            partition.update(
                self.config.limit,
                self.config.rank_updates,
                &mut retracted,
                &mut inserted,
            );
            if partition.is_empty() {
                if let Some(partition) = self.partitions.remove(&key) {
                    self.changes.remove(partition.flags, || key.clone());
                }
            }
        }
        self.changes(&retracted, &inserted)
    }

    /// Emits every partition whose window end the watermark reached, and frees it.
    fn fire(&mut self, watermark_ms: i64) -> DfResult<Option<ChangeBatch>> {
        let mut closed: Vec<OwnedRow> = self
            .partitions
            .iter()
            .filter(|(_, partition)| partition.window_end_ms <= watermark_ms)
            .map(|(key, _)| key.clone())
            .collect();
        // Partitions in key order, so output does not depend on hash order.
        closed.sort();
        let mut rows = Vec::new();
        for key in closed {
            if let Some(partition) = self.partitions.remove(&key) {
                self.changes.remove(partition.flags, || key.clone());
                self.rows_held -= partition.rows();
                rows.extend(partition.top(self.config.limit));
            }
        }
        self.changes(&[], &rows)
    }
}

impl Operator for TopNOperator {
    fn name(&self) -> &'static str {
        "TopN"
    }

    fn describe(&self) -> String {
        let keys: Vec<String> = self
            .config
            .partition_by
            .iter()
            .map(ToString::to_string)
            .collect();
        let order: Vec<String> = self
            .config
            .order_by
            .iter()
            .map(ToString::to_string)
            .collect();
        let emit = match self.config.emit {
            Emit::WindowClose { .. } => "emit on window close",
            Emit::Changes if self.config.retracting => "changelog, keeps every row",
            Emit::Changes => "changelog",
        };
        let numbers = if self.config.rank_updates {
            ""
        } else {
            ", row numbers unread"
        };
        format!(
            "TopN {} per [{}] by [{}] ({emit}{numbers})",
            self.config.limit,
            keys.join(", "),
            order.join(", ")
        )
    }

    fn fork(&self) -> Box<dyn Operator> {
        // `new` built converters from this very configuration, so building them again
        // cannot fail.
        Box::new(
            Self::from_config(self.config.clone())
                .expect("the configuration was accepted when the prototype was built"),
        )
    }

    fn state_entries(&self) -> u64 {
        self.rows_held
    }

    fn late_rows(&self) -> u64 {
        self.late_rows
    }

    fn snapshot(&mut self, full: bool) -> DfResult<Option<OperatorState>> {
        self.snapshot_state(full).map(Some)
    }

    fn restore(&mut self, parts: Vec<RestoredPart>) -> DfResult<()> {
        self.restore_state(&parts)
    }

    fn on_watermark(&mut self, watermark_ms: i64, out: &mut Vec<ChangeBatch>) -> DfResult<()> {
        if self.config.emit == Emit::Changes {
            return Ok(());
        }
        self.watermark_ms = self.watermark_ms.max(watermark_ms);
        if let Some(change) = self.fire(watermark_ms)? {
            out.push(change);
        }
        Ok(())
    }

    fn process(
        &mut self,
        _port: usize,
        input: ChangeBatch,
        out: &mut Vec<ChangeBatch>,
    ) -> DfResult<()> {
        if !input.is_insert_only() && !self.config.retracting {
            return Err(DataFusionError::Internal(
                "retractions reached a top-N planned for an append-only input".into(),
            ));
        }
        let batch = input.batch();
        let partition_columns = super::evaluate_columns(&self.config.partition_by, batch)?;
        let partition_keys = self.partition_keys(&partition_columns)?;
        let order_columns =
            super::evaluate_columns(self.config.order_by.iter().map(|s| &s.expr), batch)?;
        let order_keys = self.converters.order.convert_columns(&order_columns)?;
        let rows = self.converters.row.convert_columns(batch.columns())?;
        let window_ends = match self.config.emit {
            Emit::WindowClose { window_end_key } => {
                Some(super::epoch_ms(&partition_columns[window_end_key])?)
            }
            Emit::Changes => None,
        };
        let cap = self.cap();
        let mut touched: HashSet<OwnedRow> = HashSet::new();
        for index in 0..batch.num_rows() {
            let weight = input.weights().map_or(1, |w| w.value(index));
            let window_end_ms = window_ends.as_ref().map_or(i64::MAX, |ends| ends[index]);
            if window_ends.is_some() && window_end_ms <= self.watermark_ms {
                // The partition was emitted: its result is final.
                self.late_rows += weight.unsigned_abs();
                continue;
            }
            let key = match (&partition_keys, &self.global_key) {
                (Some(keys), _) => keys.row(index).owned(),
                (None, Some(global)) => global.clone(),
                (None, None) => {
                    return Err(DataFusionError::Internal(
                        "a top-N without partition keys has no global key".into(),
                    ))
                }
            };
            let partition = self.partitions.entry(key.clone()).or_default();
            self.changes.touch(&mut partition.flags, || key.clone());
            partition.window_end_ms = window_end_ms;
            let (order, row) = (order_keys.row(index), rows.row(index));
            if weight > 0 {
                let added = partition.insert(order, row, weight.unsigned_abs(), cap);
                self.rows_held = self.rows_held.saturating_add_signed(added);
            } else {
                // A retraction of a row never received (it predates the query) has nothing
                // to undo.
                self.rows_held -= partition.remove(order, row, weight.unsigned_abs());
            }
            if self.config.emit == Emit::Changes {
                touched.insert(key);
            }
        }
        if let Some(change) = self.updates(touched)? {
            out.push(change);
        }
        Ok(())
    }
}
