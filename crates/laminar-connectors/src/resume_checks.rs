//! Test support for resumable sources: take the first rows of a reader as the engine would
//! (observing every event into a position, stopping between any two rows), reopen at the
//! position, and compare with a reader that never stopped.

use std::collections::{BTreeMap, BTreeSet};

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::record_batch::RecordBatch;

use crate::{SourceBatch, SourceConnector, SourceEvent, SourcePosition, SourceReader};

/// Reads `reader` to its end; panics on an error.
pub(crate) fn read_to_end(reader: &mut dyn SourceReader) -> Vec<SourceEvent> {
    let mut events = Vec::new();
    while let Some(event) = reader.next_event().unwrap() {
        events.push(event);
    }
    events
}

/// Takes events of `reader` until `rows` rows were taken (cutting the last batch to fit) or
/// it ends; returns them with the position after them.
pub(crate) fn take_rows(
    reader: &mut dyn SourceReader,
    rows: usize,
) -> (Vec<SourceEvent>, SourcePosition) {
    let mut position = SourcePosition::new();
    let mut events = Vec::new();
    let mut taken = 0;
    while taken < rows {
        let Some(mut event) = reader.next_event().unwrap() else {
            position.finish();
            break;
        };
        if let SourceEvent::Batch(batch) = &event {
            let len = batch.batch.num_rows().min(rows - taken);
            taken += len;
            event = SourceEvent::Batch(SourceBatch {
                partition: batch.partition,
                batch: batch.batch.slice(0, len),
            });
        }
        position.observe(&event, reader);
        events.push(event);
    }
    (events, position)
}

/// The rows of each partition, concatenated; partitions without rows are left out.
pub(crate) fn rows_by_partition(events: &[SourceEvent]) -> BTreeMap<u32, RecordBatch> {
    let mut batches: BTreeMap<u32, Vec<RecordBatch>> = BTreeMap::new();
    for event in events {
        if let SourceEvent::Batch(batch) = event {
            if batch.batch.num_rows() > 0 {
                batches
                    .entry(batch.partition)
                    .or_default()
                    .push(batch.batch.clone());
            }
        }
    }
    batches
        .into_iter()
        .map(|(partition, list)| (partition, concat_batches(&list[0].schema(), &list).unwrap()))
        .collect()
}

/// All rows in the order they came, whatever their partition.
pub(crate) fn rows_in_order(events: &[SourceEvent]) -> Option<RecordBatch> {
    let batches: Vec<RecordBatch> = events
        .iter()
        .filter_map(|event| match event {
            SourceEvent::Batch(batch) => Some(batch.batch.clone()),
            _ => None,
        })
        .collect();
    let schema = batches.first()?.schema();
    Some(concat_batches(&schema, &batches).unwrap())
}

/// Reads the first `rows` rows of `source`, reopens it at the position after them and reads
/// the rest. Checks the reopened reader's events against the position: it never reports a
/// partition the position says ended, and opens every partition before its first batch.
/// Returns the events before and after.
pub(crate) fn split_read(
    source: &dyn SourceConnector,
    batch_rows_max: usize,
    rows: usize,
) -> (Vec<SourceEvent>, Vec<SourceEvent>) {
    let mut first = source.open(batch_rows_max).unwrap();
    let (before, position) = take_rows(first.as_mut(), rows);
    drop(first);
    // Through JSON, as a checkpoint stores it.
    let stored = serde_json::to_string(&position).unwrap();
    let position: SourcePosition = serde_json::from_str(&stored).unwrap();
    let mut reopened = source.open_at(batch_rows_max, &position).unwrap();
    let after = read_to_end(reopened.as_mut());
    let mut opened = BTreeSet::new();
    for event in &after {
        let partition = match event {
            SourceEvent::PartitionOpened(p) => {
                opened.insert(*p);
                *p
            }
            SourceEvent::Batch(batch) => {
                assert!(
                    opened.contains(&batch.partition),
                    "batch of unopened {}",
                    batch.partition
                );
                batch.partition
            }
            SourceEvent::PartitionEnded(p) => *p,
        };
        let ended = position.partition(partition).is_some_and(|at| at.ended);
        assert!(
            !ended,
            "partition {partition} ended before the position, reported after: {event:?}"
        );
    }
    (before, after)
}

/// Checks that every partition's rows before and after a split at `rows` are its rows
/// read straight.
pub(crate) fn assert_split_equals_straight(
    source: &dyn SourceConnector,
    batch_rows_max: usize,
    rows: usize,
) {
    let straight = read_to_end(source.open(batch_rows_max).unwrap().as_mut());
    let (before, after) = split_read(source, batch_rows_max, rows);
    let mut joined = rows_by_partition(&before);
    for (partition, batch) in rows_by_partition(&after) {
        let combined = match joined.remove(&partition) {
            Some(earlier) => concat_batches(&batch.schema(), &[earlier, batch]).unwrap(),
            None => batch,
        };
        joined.insert(partition, combined);
    }
    assert_eq!(
        joined,
        rows_by_partition(&straight),
        "split after {rows} rows"
    );
}
