//! Exchange: where rows change workers. On the sending side a `KeyRouter` splits each batch
//! by the hash of its key columns, so every key has one owning worker; on the receiving side
//! the exchange is a pass-through whose input ports are the sending workers, so the query
//! instance merges their watermarks and ends like any multi-input node.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
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
    converter: RowConverter,
}

impl std::fmt::Debug for KeyRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRouter")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl KeyRouter {
    /// A router for `keys`, whose types are `key_fields`.
    pub fn new(keys: Vec<Arc<dyn PhysicalExpr>>, key_fields: Vec<SortField>) -> DfResult<Self> {
        Ok(Self {
            keys,
            converter: RowConverter::new(key_fields)?,
        })
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
        let keys = self.converter.convert_columns(&columns)?;
        let mut shares: Vec<Vec<u32>> = vec![Vec::new(); workers];
        for (index, key) in keys.iter().enumerate() {
            // SipHash with fixed keys: every worker computes the same owner for a key.
            let mut hasher = std::hash::DefaultHasher::new();
            key.as_ref().hash(&mut hasher);
            shares[(hasher.finish() % workers as u64) as usize].push(index as u32);
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
