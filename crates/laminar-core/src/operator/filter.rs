//! Filter: keeps the rows for which a DataFusion predicate is true (NULL counts as false,
//! as in SQL `WHERE`). Evaluated over whole batches.

use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray, Int64Array};
use datafusion::arrow::compute::{filter, filter_record_batch};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::physical_expr::PhysicalExpr;

use super::Operator;
use crate::change_batch::ChangeBatch;

/// Keeps rows matching a predicate.
#[derive(Debug, Clone)]
pub struct FilterOperator {
    predicate: Arc<dyn PhysicalExpr>,
}

impl FilterOperator {
    /// Filters by `predicate`, which must evaluate to a boolean.
    pub fn new(predicate: Arc<dyn PhysicalExpr>) -> Self {
        Self { predicate }
    }
}

impl Operator for FilterOperator {
    fn name(&self) -> &'static str {
        "Filter"
    }

    fn describe(&self) -> String {
        format!("Filter {}", self.predicate)
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
        let rows = input.num_rows();
        let mask = self.predicate.evaluate(input.batch())?.into_array(rows)?;
        let mask = mask
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| {
                DataFusionError::Plan(format!(
                    "filter predicate {} is {}, not BOOLEAN",
                    self.predicate,
                    mask.data_type()
                ))
            })?;
        let kept = mask.true_count();
        if kept == rows {
            out.push(input);
        } else if kept > 0 {
            let batch = filter_record_batch(input.batch(), mask)?;
            out.push(match input.weights() {
                None => ChangeBatch::insert_only(batch),
                Some(weights) => {
                    let weights = filter(weights, mask)?;
                    let weights = weights
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .ok_or_else(|| {
                            DataFusionError::Internal("filtered weights are not Int64".into())
                        })?
                        .clone();
                    ChangeBatch::with_weights(batch, weights)
                }
            });
        }
        Ok(())
    }
}
