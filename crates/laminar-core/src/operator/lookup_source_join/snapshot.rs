//! Snapshots of a lookup join with a lookup source: the stream rows still waiting for the
//! source, in arrival order (the cache is not state: it refills from the source). Restored,
//! the rows are looked up again, so they join the source as it answers then. Always whole:
//! the waiting rows are few and change entirely between checkpoints.

use datafusion::arrow::array::BinaryArray;
use datafusion::error::Result as DfResult;
use std::time::Instant;

use super::LookupSourceJoinOperator;
use crate::state::{restored_part, OperatorState, RestoredPart, StatePart};
use crate::state_codec::{check_part_names, keyed_rows_batch, sequence_key, PartReader};

const OWNER: &str = "LookupSourceJoin";
const WAITING_PART: &str = "waiting";

impl LookupSourceJoinOperator {
    /// The waiting rows, one state batch per waiting batch, keyed by arrival order.
    pub(super) fn snapshot_waiting(&self) -> DfResult<OperatorState> {
        let mut sequence = 0_u64;
        let batches = self
            .waiting
            .iter()
            .map(|waiting| {
                let keys: BinaryArray = (0..waiting.batch.num_rows())
                    .map(|_| {
                        sequence += 1;
                        Some(sequence_key(sequence))
                    })
                    .collect();
                keyed_rows_batch(keys, &waiting.batch)
            })
            .collect::<DfResult<Vec<_>>>()?;
        Ok(OperatorState::full(vec![StatePart::new(
            WAITING_PART,
            batches,
        )]))
    }

    /// Queues the saved rows again, asking the source for their keys.
    pub(super) fn restore_waiting(&mut self, parts: &[RestoredPart]) -> DfResult<()> {
        check_part_names(OWNER, parts, &[WAITING_PART])?;
        let reader = PartReader::new(OWNER, WAITING_PART);
        let stream = std::sync::Arc::clone(&self.spec.stream);
        let now = Instant::now();
        for batch in restored_part(parts, WAITING_PART)
            .into_iter()
            .flat_map(|p| &p.batches)
            .filter(|b| b.num_rows() > 0)
        {
            let rows = reader.keyed_rows(batch, &stream)?;
            let (keys, valid) = self.key_rows(&rows)?;
            let keys = valid
                .iter()
                .enumerate()
                .map(|(row, valid)| valid.then(|| Box::from(keys.row(row).as_ref())))
                .collect();
            self.enqueue(rows, keys, now)?;
        }
        Ok(())
    }
}
