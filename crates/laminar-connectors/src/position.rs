//! Where a source resumes after a restart: [`SourcePosition`], per partition the rows the
//! engine has taken from the reader and whether the partition ended, with the partition's
//! id (a file's path) so that a changed input is detected. The engine builds it by
//! observing the events it takes from a reader — not what the reader read ahead — stores it
//! in a checkpoint as JSON, and hands it to
//! [`SourceConnector::open_at`](crate::SourceConnector::open_at) to continue from there.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::source::{SourceEvent, SourceReader};

/// How far the engine got in each partition of a source; see the module documentation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourcePosition {
    /// Every partition the reader reported, by partition number.
    partitions: BTreeMap<u32, PartitionPosition>,
}

/// The position in one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionPosition {
    /// What the partition reads, from [`SourceReader::partition_id`]: a file's path.
    pub id: String,
    /// Rows of the partition the engine took.
    pub rows: u64,
    /// The partition reported its end: it is not read again.
    pub ended: bool,
}

impl SourcePosition {
    /// The position before any row: a reader opened at it reads everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Follows one event the engine took from `reader`. Call it for every event, in order,
    /// where the engine hands the event on, so that the position describes exactly what was
    /// handed on.
    pub fn observe(&mut self, event: &SourceEvent, reader: &dyn SourceReader) {
        let (partition, rows, ended) = match event {
            SourceEvent::PartitionOpened(partition) => (*partition, 0, false),
            SourceEvent::Batch(batch) => (batch.partition, batch.batch.num_rows() as u64, false),
            SourceEvent::PartitionEnded(partition) => (*partition, 0, true),
        };
        let entry = self
            .partitions
            .entry(partition)
            .or_insert_with(|| PartitionPosition {
                id: reader.partition_id(partition),
                rows: 0,
                ended: false,
            });
        entry.rows = entry.rows.saturating_add(rows);
        entry.ended |= ended;
    }

    /// Records that the reader finished (`Ok(None)`), which ends every partition.
    pub fn finish(&mut self) {
        for partition in self.partitions.values_mut() {
            partition.ended = true;
        }
    }

    /// The position in `partition`, if the reader reported it.
    pub fn partition(&self, partition: u32) -> Option<&PartitionPosition> {
        self.partitions.get(&partition)
    }

    /// Every reported partition with its position, by partition number.
    pub fn partitions(&self) -> impl Iterator<Item = (u32, &PartitionPosition)> {
        self.partitions.iter().map(|(p, position)| (*p, position))
    }

    /// Rows taken over all partitions; `None` if the sum overflows (a corrupt position).
    pub fn rows_total(&self) -> Option<u64> {
        self.partitions
            .values()
            .try_fold(0u64, |sum, p| sum.checked_add(p.rows))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;

    use super::*;
    use crate::error::Result;
    use crate::source::SourceBatch;

    /// A reader whose partitions are named `p{n}`; never polled.
    struct Named;

    impl SourceReader for Named {
        fn next_event(&mut self) -> Result<Option<SourceEvent>> {
            Ok(None)
        }

        fn partition_id(&self, partition: u32) -> String {
            format!("p{partition}")
        }
    }

    fn batch(partition: u32, rows: i64) -> SourceEvent {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let column = Arc::new(Int64Array::from_iter_values(0..rows));
        SourceEvent::Batch(SourceBatch {
            partition,
            batch: RecordBatch::try_new(schema, vec![column]).unwrap(),
        })
    }

    #[test]
    fn counts_rows_per_partition_and_remembers_ends() {
        let mut position = SourcePosition::new();
        for event in [
            SourceEvent::PartitionOpened(0),
            SourceEvent::PartitionOpened(1),
            batch(0, 3),
            batch(1, 2),
            batch(0, 4),
            SourceEvent::PartitionEnded(0),
            // A partition first seen in a batch.
            batch(7, 1),
        ] {
            position.observe(&event, &Named);
        }
        let described: Vec<(u32, String, u64, bool)> = position
            .partitions()
            .map(|(p, at)| (p, at.id.clone(), at.rows, at.ended))
            .collect();
        assert_eq!(
            described,
            [
                (0, "p0".to_owned(), 7, true),
                (1, "p1".to_owned(), 2, false),
                (7, "p7".to_owned(), 1, false)
            ]
        );
        assert_eq!(position.rows_total(), Some(10));
        position.finish();
        assert!(position.partitions().all(|(_, at)| at.ended));
    }

    #[test]
    fn round_trips_through_json() {
        let mut position = SourcePosition::new();
        position.observe(&batch(2, 5), &Named);
        let json = serde_json::to_value(&position).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"partitions": {"2": {"id": "p2", "rows": 5, "ended": false}}})
        );
        assert_eq!(
            serde_json::from_value::<SourcePosition>(json).unwrap(),
            position
        );
    }
}
