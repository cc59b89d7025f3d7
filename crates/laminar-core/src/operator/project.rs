//! Project: computes output columns from DataFusion physical expressions (every scalar
//! function, `CASE`, `CAST`, arithmetic) over whole batches. Weights pass through untouched.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::error::Result as DfResult;
use datafusion::physical_expr::PhysicalExpr;

use super::Operator;
use crate::change_batch::ChangeBatch;

/// Computes one column per expression.
#[derive(Debug, Clone)]
pub struct ProjectOperator {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
}

impl ProjectOperator {
    /// Projects `exprs`, producing batches with `schema` (one field per expression).
    pub fn new(exprs: Vec<Arc<dyn PhysicalExpr>>, schema: SchemaRef) -> Self {
        debug_assert_eq!(exprs.len(), schema.fields().len());
        Self { exprs, schema }
    }
}

impl Operator for ProjectOperator {
    fn name(&self) -> &'static str {
        "Project"
    }

    fn describe(&self) -> String {
        let items: Vec<String> = self
            .exprs
            .iter()
            .zip(self.schema.fields())
            .map(|(e, f)| format!("{e} AS {}", f.name()))
            .collect();
        format!("Project {}", items.join(", "))
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
        let columns = super::evaluate_columns(&self.exprs, input.batch())?;
        // Row count is explicit so a projection of only literals keeps the input's rows.
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        let batch = RecordBatch::try_new_with_options(Arc::clone(&self.schema), columns, &options)?;
        out.push(input.map_batch(batch));
        Ok(())
    }
}
