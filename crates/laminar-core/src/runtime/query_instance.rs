//! `QueryInstance`: one worker's copy of a continuous query. It pushes messages from a leaf
//! up to the root, merging watermarks (minimum over a node's ports) and end-of-stream (a
//! node ends when all its ports have) so operators see one ordered input.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::error::Result as DfResult;

use crate::change_batch::ChangeBatch;
use crate::error::{CoreError, Result};
use crate::graph::QueryGraph;
use crate::operator::{Message, Operator};
use crate::watermark::{WATERMARK_END_MS, WATERMARK_MIN_MS};

struct NodeState {
    operator: Box<dyn Operator>,
    parent: Option<(usize, usize)>,
    port_watermarks_ms: Vec<i64>,
    port_ended: Vec<bool>,
    watermark_ms: i64,
    ended: bool,
}

/// A query's operators on one worker.
pub(crate) struct QueryInstance {
    name: String,
    nodes: Vec<NodeState>,
    schema: SchemaRef,
    /// `(stream name, leaf node)` for every leaf.
    leaves: Vec<(String, usize)>,
}

impl QueryInstance {
    /// Forks the graph's operators for one worker.
    pub(crate) fn fork(name: &str, graph: &QueryGraph) -> Self {
        let nodes = graph
            .nodes
            .iter()
            .map(|node| NodeState {
                operator: node.operator.fork(),
                parent: node.parent,
                port_watermarks_ms: vec![WATERMARK_MIN_MS; node.ports],
                port_ended: vec![false; node.ports],
                watermark_ms: WATERMARK_MIN_MS,
                ended: false,
            })
            .collect();
        let leaves = graph
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, node)| node.input.clone().map(|input| (input, i)))
            .collect();
        Self {
            name: name.to_string(),
            nodes,
            schema: graph.schema.clone(),
            leaves,
        }
    }

    pub(crate) fn leaves(&self) -> &[(String, usize)] {
        &self.leaves
    }

    /// Feeds `message` into leaf `node`; messages leaving the root are appended to `out`.
    pub(crate) fn push(
        &mut self,
        node: usize,
        message: Message,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        self.feed(node, 0, message, out)
    }

    fn feed(
        &mut self,
        index: usize,
        port: usize,
        message: Message,
        out: &mut Vec<Message>,
    ) -> Result<()> {
        if self.nodes[index].ended {
            return Ok(());
        }
        match message {
            Message::Data(batch) => {
                let mut produced = Vec::new();
                let node = &mut self.nodes[index];
                let result = node.operator.process(port, batch, &mut produced);
                self.check(index, result)?;
                for batch in produced {
                    self.emit(index, Message::Data(batch), out)?;
                }
            }
            Message::Watermark(ms) => {
                let node = &mut self.nodes[index];
                let port_watermark = &mut node.port_watermarks_ms[port];
                *port_watermark = (*port_watermark).max(ms);
                let merged = node
                    .port_watermarks_ms
                    .iter()
                    .copied()
                    .min()
                    .unwrap_or(WATERMARK_MIN_MS);
                if merged > node.watermark_ms {
                    node.watermark_ms = merged;
                    let mut produced = Vec::new();
                    let result = node.operator.on_watermark(merged, &mut produced);
                    self.check(index, result)?;
                    for batch in produced {
                        self.emit(index, Message::Data(batch), out)?;
                    }
                    self.emit(index, Message::Watermark(merged), out)?;
                }
            }
            Message::End => {
                // An ended port no longer holds the watermark back.
                self.feed(index, port, Message::Watermark(WATERMARK_END_MS), out)?;
                let node = &mut self.nodes[index];
                node.port_ended[port] = true;
                if node.port_ended.iter().all(|e| *e) {
                    let mut produced = Vec::new();
                    let result = node.operator.on_end(&mut produced);
                    self.check(index, result)?;
                    for batch in produced {
                        self.emit(index, Message::Data(batch), out)?;
                    }
                    self.nodes[index].ended = true;
                    self.emit(index, Message::End, out)?;
                }
            }
        }
        Ok(())
    }

    fn emit(&mut self, index: usize, message: Message, out: &mut Vec<Message>) -> Result<()> {
        if let Some((parent, port)) = self.nodes[index].parent {
            return self.feed(parent, port, message, out);
        }
        out.push(match message {
            Message::Data(batch) => Message::Data(self.conform(batch)?),
            other => other,
        });
        Ok(())
    }

    /// Gives root batches the query's declared schema (names and nullability can differ
    /// from what a scan or union passes through; types cannot).
    fn conform(&self, batch: ChangeBatch) -> Result<ChangeBatch> {
        if batch.batch().schema() == self.schema {
            return Ok(batch);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        let rows = RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            batch.batch().columns().to_vec(),
            &options,
        )
        .map_err(|e| CoreError::Operator {
            query: self.name.clone(),
            operator: "Output".into(),
            source: e.into(),
        })?;
        Ok(batch.map_batch(rows))
    }

    fn check(&self, index: usize, result: DfResult<()>) -> Result<()> {
        result.map_err(|source| CoreError::Operator {
            query: self.name.clone(),
            operator: self.nodes[index].operator.name().to_string(),
            source,
        })
    }
}
