//! Union: `UNION ALL` of several inputs with the same schema; rows pass through unchanged
//! and the query instance takes the minimum watermark over the inputs.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::error::Result as DfResult;

use super::Operator;
use crate::change_batch::ChangeBatch;

/// Merges its inputs.
#[derive(Debug, Clone)]
pub struct UnionOperator {
    inputs: usize,
    schema: SchemaRef,
}

impl UnionOperator {
    /// A union of `inputs` streams producing `schema` (the planner already coerced the
    /// inputs' types; only field names and nullability may differ).
    pub fn new(inputs: usize, schema: SchemaRef) -> Self {
        Self { inputs, schema }
    }
}

impl Operator for UnionOperator {
    fn name(&self) -> &'static str {
        "Union"
    }

    fn describe(&self) -> String {
        format!("Union ALL ({} inputs)", self.inputs)
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
        if input.batch().schema() == self.schema {
            out.push(input);
        } else {
            let options = RecordBatchOptions::new().with_row_count(Some(input.num_rows()));
            let batch = RecordBatch::try_new_with_options(
                Arc::clone(&self.schema),
                input.batch().columns().to_vec(),
                &options,
            )?;
            out.push(input.map_batch(batch));
        }
        Ok(())
    }
}
