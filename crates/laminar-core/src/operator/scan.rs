//! Scan: the leaf of a query, reading one input stream and keeping only the columns the
//! query uses (DataFusion's projection pushdown lands here).

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::Result as DfResult;

use super::Operator;
use crate::change_batch::ChangeBatch;

/// Reads an input stream, optionally keeping a subset of its columns.
#[derive(Debug, Clone)]
pub struct ScanOperator {
    input: String,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
}

impl ScanOperator {
    /// Scans `input` (a source, stream or view), keeping the columns at `projection`.
    pub fn new(input: String, projection: Option<Vec<usize>>, schema: SchemaRef) -> Self {
        Self {
            input,
            projection,
            schema,
        }
    }
}

impl Operator for ScanOperator {
    fn name(&self) -> &'static str {
        "Scan"
    }

    fn describe(&self) -> String {
        let columns: Vec<&str> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        format!("Scan {} [{}]", self.input, columns.join(", "))
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
        match &self.projection {
            None => out.push(input),
            Some(indices) => {
                let projected = input.batch().project(indices)?;
                out.push(input.map_batch(projected));
            }
        }
        Ok(())
    }
}
