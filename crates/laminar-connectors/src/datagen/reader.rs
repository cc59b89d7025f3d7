//! The reader shared by all generators: opens its partitions, walks the event sequence batch
//! by batch, stops at `events`, paces with `rate`, and assigns batches to partitions round
//! robin.

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use super::throttle::Throttle;
use crate::error::{ConnectorError, Result};
use crate::source::{SourceBatch, SourceEvent, SourceReader};

/// Rows generated for a range of events.
pub(crate) struct Generated {
    /// The produced columns, in output order.
    pub(crate) columns: Vec<ArrayRef>,
    /// Number of rows in `columns`.
    pub(crate) rows: usize,
    /// Number of events consumed (rows plus events of other tables).
    pub(crate) events: u64,
}

/// A generator of rows for consecutive event numbers.
pub(crate) trait BatchGenerator: Send {
    /// Generates the rows of events `first_event..first_event + events_max`, stopping early
    /// once `rows_max` rows are made.
    fn generate(&mut self, first_event: u64, events_max: u64, rows_max: usize) -> Generated;
}

/// Drives a [`BatchGenerator`] as a [`SourceReader`].
pub(crate) struct GeneratorReader {
    pub(crate) generator: Box<dyn BatchGenerator>,
    pub(crate) schema: SchemaRef,
    pub(crate) events_total: Option<u64>,
    pub(crate) throttle: Throttle,
    pub(crate) partitions: u32,
    pub(crate) batch_rows_max: usize,
    pub(crate) next_event: u64,
    pub(crate) batches: u64,
    /// Partitions opened so far: all are, before the first batch, so the source's
    /// watermark waits for every one of them.
    pub(crate) partitions_opened: u32,
}

impl SourceReader for GeneratorReader {
    fn next_event(&mut self) -> Result<Option<SourceEvent>> {
        if self.partitions_opened < self.partitions.max(1) {
            let partition = self.partitions_opened;
            self.partitions_opened += 1;
            return Ok(Some(SourceEvent::PartitionOpened(partition)));
        }
        loop {
            let remaining = self
                .events_total
                .map_or(u64::MAX, |total| total.saturating_sub(self.next_event));
            if remaining == 0 {
                return Ok(None);
            }
            let events_max = remaining.min(self.throttle.events_per_batch_max());
            let generated =
                self.generator
                    .generate(self.next_event, events_max, self.batch_rows_max);
            self.next_event = self.next_event.saturating_add(generated.events);
            self.throttle.wait_for(self.next_event);
            if generated.rows == 0 {
                continue;
            }
            let batch =
                RecordBatch::try_new(self.schema.clone(), generated.columns).map_err(|e| {
                    ConnectorError::Internal {
                        connector: "DATAGEN source".to_owned(),
                        message: format!("assembling a generated batch: {e}"),
                    }
                })?;
            let partition = (self.batches % u64::from(self.partitions.max(1))) as u32;
            self.batches += 1;
            return Ok(Some(SourceEvent::Batch(SourceBatch { partition, batch })));
        }
    }
}
