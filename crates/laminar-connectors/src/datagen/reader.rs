//! The reader shared by all generators: opens its partitions, walks the event sequence batch
//! by batch, stops at `events`, paces with `rate`, and gives each batch to the partition that
//! has received the fewest rows (the lowest on a tie: round robin while batches are full).
//! That choice depends only on the rows per partition, so a reader resumed at a position
//! continues exactly as the one that stopped would have; the rows themselves are one
//! sequence, which the generator resumes after the position's total.

use std::collections::VecDeque;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use super::throttle::Throttle;
use crate::error::{ConnectorError, Result};
use crate::position::SourcePosition;
use crate::source::{SourceBatch, SourceEvent, SourceReader};

/// Connector name used in messages.
const CONNECTOR: &str = "DATAGEN source";

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

    /// Rows this generator makes from events `0..events`.
    fn rows_in(&self, events: u64) -> u64;

    /// Prepares to continue after the first `rows` rows (replaying whatever state they
    /// built) and returns the event to generate next; `None` when that lies beyond the last
    /// event number.
    fn resume_after(&mut self, rows: u64) -> Option<u64>;
}

/// Drives a [`BatchGenerator`] as a [`SourceReader`].
pub(crate) struct GeneratorReader {
    generator: Box<dyn BatchGenerator>,
    schema: SchemaRef,
    events_total: Option<u64>,
    throttle: Throttle,
    batch_rows_max: usize,
    next_event: u64,
    /// The event the reader started at: pacing counts the events generated since.
    first_event: u64,
    /// Rows given to each partition, those before a resume included.
    partition_rows: Vec<u64>,
    /// Partitions that take batches: all but those a resumed position says ended.
    active: Vec<bool>,
    /// Partitions to report opened before the first batch, so the source's watermark
    /// waits for every one of them.
    to_open: VecDeque<u32>,
}

impl GeneratorReader {
    /// A reader from event 0 over `partitions` (at least 1) partitions.
    pub(crate) fn new(
        generator: Box<dyn BatchGenerator>,
        schema: SchemaRef,
        events_total: Option<u64>,
        throttle: Throttle,
        partitions: u32,
        batch_rows_max: usize,
    ) -> Self {
        let partitions = partitions.max(1);
        Self {
            generator,
            schema,
            events_total,
            throttle,
            batch_rows_max: batch_rows_max.max(1),
            next_event: 0,
            first_event: 0,
            partition_rows: vec![0; partitions as usize],
            active: vec![true; partitions as usize],
            to_open: (0..partitions).collect(),
        }
    }

    /// Continues after `position`: the generator resumes after the rows of all partitions
    /// together, each partition keeps its row count, and ended partitions are not opened.
    /// `origin` names the generated table in errors.
    pub(crate) fn resume(mut self, position: &SourcePosition, origin: &str) -> Result<Self> {
        let impossible = |partition: String, reason: String| ConnectorError::ResumeImpossible {
            connector: CONNECTOR.to_owned(),
            origin: origin.to_owned(),
            partition,
            reason,
        };
        let partitions = self.partition_rows.len();
        for (partition, at) in position.partitions() {
            let index = partition as usize;
            if index >= partitions {
                return Err(impossible(
                    format!("partition {partition}"),
                    format!("the generator has {partitions} partitions"),
                ));
            }
            self.partition_rows[index] = at.rows;
            self.active[index] = !at.ended;
        }
        let rows = position.rows_total().ok_or_else(|| {
            impossible(
                "all partitions".to_owned(),
                "their row counts overflow".to_owned(),
            )
        })?;
        if let Some(total) = self.events_total {
            let available = self.generator.rows_in(total);
            if rows > available {
                return Err(impossible(
                    "all partitions".to_owned(),
                    format!("{rows} rows were read, but its {total} events make {available}"),
                ));
            }
        }
        let next_event = self.generator.resume_after(rows).ok_or_else(|| {
            impossible(
                "all partitions".to_owned(),
                format!("{rows} rows lie beyond the last event"),
            )
        })?;
        self.next_event = next_event;
        self.first_event = next_event;
        self.to_open = (0..partitions as u32)
            .filter(|&p| self.active[p as usize])
            .collect();
        Ok(self)
    }

    /// The active partition that received the fewest rows, the lowest on a tie.
    fn next_partition(&self) -> Option<u32> {
        self.partition_rows
            .iter()
            .zip(&self.active)
            .enumerate()
            .filter(|(_, (_, active))| **active)
            .min_by_key(|(index, (rows, _))| (**rows, *index))
            .map(|(index, _)| index as u32)
    }
}

impl SourceReader for GeneratorReader {
    fn next_event(&mut self) -> Result<Option<SourceEvent>> {
        if let Some(partition) = self.to_open.pop_front() {
            return Ok(Some(SourceEvent::PartitionOpened(partition)));
        }
        let Some(partition) = self.next_partition() else {
            return Ok(None);
        };
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
            self.throttle.wait_for(self.next_event - self.first_event);
            if generated.rows == 0 {
                continue;
            }
            let batch =
                RecordBatch::try_new(self.schema.clone(), generated.columns).map_err(|e| {
                    ConnectorError::Internal {
                        connector: CONNECTOR.to_owned(),
                        message: format!("assembling a generated batch: {e}"),
                    }
                })?;
            let rows = &mut self.partition_rows[partition as usize];
            *rows = rows.saturating_add(generated.rows as u64);
            return Ok(Some(SourceEvent::Batch(SourceBatch { partition, batch })));
        }
    }
}
