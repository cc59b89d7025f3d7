//! Exchange: where rows change workers. On the sending side a `KeyRouter` splits each batch
//! by the hash of its key columns, so every key has one owning worker; on the receiving side
//! the exchange is a pass-through whose input ports are the sending workers, so the query
//! instance merges their watermarks and ends like any multi-input node.

use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::hash_utils::{create_hashes, RandomState};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::physical_expr::PhysicalExpr;

use super::Operator;
use crate::change_batch::ChangeBatch;

/// The receiving side of an exchange: rows pass through unchanged.
#[derive(Debug, Clone)]
pub struct ExchangeOperator {
    keys: Vec<Arc<dyn PhysicalExpr>>,
}

impl ExchangeOperator {
    /// An exchange routing by `keys` (empty: every row goes to worker 0).
    pub fn new(keys: Vec<Arc<dyn PhysicalExpr>>) -> Self {
        Self { keys }
    }
}

impl Operator for ExchangeOperator {
    fn name(&self) -> &'static str {
        "Exchange"
    }

    fn describe(&self) -> String {
        let keys: Vec<String> = self.keys.iter().map(ToString::to_string).collect();
        if keys.is_empty() {
            "Exchange single (every row to worker 0)".to_string()
        } else {
            format!("Exchange hash({})", keys.join(", "))
        }
    }

    fn fork(&self) -> Box<dyn Operator> {
        Box::new(self.clone())
    }

    fn process(
        &mut self,
        _port: usize,
        input: ChangeBatch,
        out: &mut Vec<ChangeBatch>,
    ) -> DfResult<()> {
        out.push(input);
        Ok(())
    }
}

/// Splits batches by key hash over the workers.
pub struct KeyRouter {
    keys: Vec<Arc<dyn PhysicalExpr>>,
}

/// The hash every worker routes keys by: fixed, so all workers (and every side of a join)
/// agree on a key's owner. DataFusion's vectorized column hashing, a column at a time.
const ROUTING_HASH: RandomState = RandomState::with_seed(0x6c61_6d69_6e61_7264);

impl std::fmt::Debug for KeyRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRouter")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

/// The worker owning a key hash: the hash's position in `0..workers` by its high bits
/// (a multiply and shift, cheaper than a division).
fn owner(hash: u64, workers: usize) -> usize {
    ((u128::from(hash) * workers as u128) >> 64) as usize
}

impl KeyRouter {
    /// A router for `keys`, whose types are `key_fields`. Fails for key types the engine
    /// cannot key state by (those the row format refuses), at planning rather than on the
    /// first row.
    pub fn new(keys: Vec<Arc<dyn PhysicalExpr>>, key_fields: Vec<SortField>) -> DfResult<Self> {
        RowConverter::new(key_fields)?;
        Ok(Self { keys })
    }

    /// `(worker, rows)` for every worker that receives rows of `input`; rows keep their
    /// order within each worker's share.
    pub fn route(
        &self,
        input: &ChangeBatch,
        workers: usize,
    ) -> DfResult<Vec<(usize, ChangeBatch)>> {
        if workers <= 1 || self.keys.is_empty() {
            return Ok(vec![(0, input.clone())]);
        }
        let batch = input.batch();
        let rows = batch.num_rows();
        let columns = super::evaluate_columns(&self.keys, batch)?;
        let mut hashes = vec![0_u64; rows];
        create_hashes(&columns, &ROUTING_HASH, &mut hashes)?;
        let mut counts = vec![0_usize; workers];
        for hash in &hashes {
            counts[owner(*hash, workers)] += 1;
        }
        let mut shares: Vec<Vec<u32>> = counts.iter().map(|n| Vec::with_capacity(*n)).collect();
        for (index, hash) in hashes.iter().enumerate() {
            shares[owner(*hash, workers)].push(index as u32);
        }
        let mut routed = Vec::new();
        for (worker, share) in shares.into_iter().enumerate() {
            if share.is_empty() {
                continue;
            }
            if share.len() == rows {
                routed.push((worker, input.clone()));
                continue;
            }
            let indices = UInt32Array::from(share);
            let columns = batch
                .columns()
                .iter()
                .map(|c| take(c.as_ref(), &indices, None))
                .collect::<Result<Vec<_>, _>>()?;
            let part = RecordBatch::try_new(batch.schema(), columns)?;
            let change = match input.weights() {
                None => ChangeBatch::insert_only(part),
                Some(weights) => {
                    let weights = take(weights, &indices, None)?;
                    let weights = weights
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .ok_or_else(|| DataFusionError::Internal("weights are Int64".into()))?
                        .clone();
                    ChangeBatch::with_weights(part, weights)
                }
            };
            routed.push((worker, change));
        }
        Ok(routed)
    }
}
