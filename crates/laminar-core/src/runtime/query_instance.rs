//! `QueryInstance`: one worker's copy of a continuous query. It pushes messages from a leaf
//! up to the root, merging watermarks (minimum over a node's ports) and end-of-stream (a
//! node ends when all its ports have) so operators see one ordered input.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::error::Result as DfResult;

use crate::change_batch::ChangeBatch;
use crate::error::{CoreError, Result};
use crate::graph::QueryGraph;
use crate::operator::KeyRouter;
use crate::operator::{Message, Operator};
use crate::watermark::{WATERMARK_END_MS, WATERMARK_MIN_MS};

struct NodeState {
    operator: Box<dyn Operator>,
    router: Option<Arc<KeyRouter>>,
    parent: Option<(usize, usize)>,
    port_watermarks_ms: Vec<i64>,
    port_ended: Vec<bool>,
    watermark_ms: i64,
    /// The watermark last forwarded (an operator may hold its input's back).
    output_watermark_ms: i64,
    ended: bool,
}

/// A message for another worker: `(worker, exchange node, message)`.
pub(crate) type Remote = (usize, usize, Message);

/// A query's operators on one worker.
pub(crate) struct QueryInstance {
    name: String,
    worker: usize,
    workers: usize,
    nodes: Vec<NodeState>,
    schema: SchemaRef,
    /// `(stream name, leaf node)` for every leaf.
    leaves: Vec<(String, usize)>,
    /// Operators with a processing-time timer.
    timers: Vec<Timer>,
    /// The operators' state bytes when last measured, and when that was.
    state_bytes: u64,
    state_bytes_measured: Option<Instant>,
}

/// How often a query's state bytes are measured at most.
const STATE_BYTES_REFRESH: Duration = Duration::from_millis(100);

/// What a query's operators hold and dropped, on one worker.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OperatorStats {
    pub(crate) state_entries: u64,
    pub(crate) state_bytes: u64,
    pub(crate) late_rows: u64,
}

/// A node's processing-time timer.
struct Timer {
    node: usize,
    interval: Duration,
    next: Instant,
}

impl QueryInstance {
    /// Forks the graph's operators for one worker.
    pub(crate) fn fork(name: &str, graph: &QueryGraph, worker: usize, workers: usize) -> Self {
        let nodes: Vec<NodeState> = graph
            .nodes
            .iter()
            .map(|node| {
                // An exchange receives from every worker: one port each.
                let ports = if node.router.is_some() {
                    workers
                } else {
                    node.ports
                };
                NodeState {
                    operator: node.operator.fork(),
                    router: node.router.clone(),
                    parent: node.parent,
                    port_watermarks_ms: vec![WATERMARK_MIN_MS; ports],
                    port_ended: vec![false; ports],
                    watermark_ms: WATERMARK_MIN_MS,
                    output_watermark_ms: WATERMARK_MIN_MS,
                    ended: false,
                }
            })
            .collect();
        let leaves = graph
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, node)| node.input.clone().map(|input| (input, i)))
            .collect();
        let started = Instant::now();
        let timers = nodes
            .iter()
            .enumerate()
            .filter_map(|(node, state)| {
                let interval = state.operator.timer_interval()?;
                Some(Timer {
                    node,
                    interval,
                    next: started + interval,
                })
            })
            .collect();
        Self {
            name: name.to_string(),
            worker,
            workers,
            nodes,
            schema: graph.schema.clone(),
            leaves,
            timers,
            state_bytes: 0,
            state_bytes_measured: None,
        }
    }

    /// When the next timer is due, if the query has timers.
    pub(crate) fn next_timer(&self) -> Option<Instant> {
        self.timers.iter().map(|timer| timer.next).min()
    }

    /// Runs every timer due at `now`; what they emit goes up the graph like any output.
    pub(crate) fn fire_timers(
        &mut self,
        now: Instant,
        out: &mut Vec<Message>,
        remote: &mut Vec<Remote>,
    ) -> Result<()> {
        for timer in 0..self.timers.len() {
            let Timer {
                node,
                interval,
                next,
            } = self.timers[timer];
            if next > now {
                continue;
            }
            // A worker that was busy for several intervals fires once, not once per interval.
            let mut following = next + interval;
            while following <= now {
                following += interval;
            }
            self.timers[timer].next = following;
            if self.nodes[node].ended {
                continue;
            }
            let mut produced = Vec::new();
            let result = self.nodes[node].operator.on_timer(&mut produced);
            self.check(node, result)?;
            for batch in produced {
                self.emit(node, Message::Data(batch), out, remote)?;
            }
        }
        Ok(())
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Indices of the exchange nodes (fed by every worker).
    pub(crate) fn exchange_nodes(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, node)| node.router.is_some())
            .map(|(index, _)| index)
            .collect()
    }

    /// State and late rows summed over the operators. State bytes can cost time
    /// proportional to the state, so they are measured at most every
    /// [`STATE_BYTES_REFRESH`] (and whenever the state is empty).
    pub(crate) fn operator_stats(&mut self) -> OperatorStats {
        let (state_entries, late_rows) = self.nodes.iter().fold((0, 0), |(state, late), node| {
            (
                state + node.operator.state_entries(),
                late + node.operator.late_rows(),
            )
        });
        let now = Instant::now();
        let stale = self
            .state_bytes_measured
            .is_none_or(|at| now.duration_since(at) >= STATE_BYTES_REFRESH);
        if state_entries == 0 {
            // Nothing held: no need to ask, and no reason to delay the next measurement.
            self.state_bytes = 0;
        } else if stale {
            self.state_bytes = self.nodes.iter().map(|n| n.operator.state_bytes()).sum();
            self.state_bytes_measured = Some(now);
        }
        OperatorStats {
            state_entries,
            state_bytes: self.state_bytes,
            late_rows,
        }
    }

    pub(crate) fn leaves(&self) -> &[(String, usize)] {
        &self.leaves
    }

    /// Feeds `message` into leaf `node`; messages leaving the root are appended to `out`,
    /// messages for other workers' exchanges to `remote`.
    pub(crate) fn push(
        &mut self,
        node: usize,
        message: Message,
        out: &mut Vec<Message>,
        remote: &mut Vec<Remote>,
    ) -> Result<()> {
        self.feed(node, 0, message, out, remote)
    }

    /// Feeds a message that worker `from` routed to exchange `node` on this worker.
    pub(crate) fn push_remote(
        &mut self,
        node: usize,
        from: usize,
        message: Message,
        out: &mut Vec<Message>,
        remote: &mut Vec<Remote>,
    ) -> Result<()> {
        let valid = self.nodes.get(node).is_some_and(|n| n.router.is_some()) && from < self.workers;
        if !valid {
            return Err(CoreError::Internal(format!(
                "query {}: exchange message for node {node} from worker {from}",
                self.name
            )));
        }
        self.feed(node, from, message, out, remote)
    }

    fn feed(
        &mut self,
        index: usize,
        port: usize,
        message: Message,
        out: &mut Vec<Message>,
        remote: &mut Vec<Remote>,
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
                    self.emit(index, Message::Data(batch), out, remote)?;
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
                        self.emit(index, Message::Data(batch), out, remote)?;
                    }
                    let node = &mut self.nodes[index];
                    let forwarded = node.operator.output_watermark(merged);
                    if forwarded > node.output_watermark_ms {
                        node.output_watermark_ms = forwarded;
                        self.emit(index, Message::Watermark(forwarded), out, remote)?;
                    }
                }
            }
            Message::End => {
                if self.nodes[index].port_ended[port] {
                    return Ok(());
                }
                // An ended port no longer holds the watermark back.
                self.feed(
                    index,
                    port,
                    Message::Watermark(WATERMARK_END_MS),
                    out,
                    remote,
                )?;
                let node = &mut self.nodes[index];
                node.port_ended[port] = true;
                if node.port_ended.iter().all(|e| *e) {
                    let mut produced = Vec::new();
                    let result = node.operator.on_end(&mut produced);
                    self.check(index, result)?;
                    for batch in produced {
                        self.emit(index, Message::Data(batch), out, remote)?;
                    }
                    self.nodes[index].ended = true;
                    self.emit(index, Message::End, out, remote)?;
                }
            }
        }
        Ok(())
    }

    fn emit(
        &mut self,
        index: usize,
        message: Message,
        out: &mut Vec<Message>,
        remote: &mut Vec<Remote>,
    ) -> Result<()> {
        let Some((parent, port)) = self.nodes[index].parent else {
            out.push(match message {
                Message::Data(batch) => Message::Data(self.conform(batch)?),
                other => other,
            });
            return Ok(());
        };
        let Some(router) = self.nodes[parent].router.clone() else {
            return self.feed(parent, port, message, out, remote);
        };
        // Into an exchange: rows go to the worker owning their key, progress to every
        // worker (each merges the progress of all senders).
        let this_worker = self.worker;
        match message {
            Message::Data(batch) => {
                let shares = self.check(parent, router.route(&batch, self.workers))?;
                for (worker, part) in shares {
                    if worker == this_worker {
                        self.feed(parent, this_worker, Message::Data(part), out, remote)?;
                    } else {
                        remote.push((worker, parent, Message::Data(part)));
                    }
                }
            }
            other => {
                for worker in (0..self.workers).filter(|w| *w != this_worker) {
                    remote.push((worker, parent, other.clone()));
                }
                self.feed(parent, this_worker, other, out, remote)?;
            }
        }
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

    fn check<T>(&self, index: usize, result: DfResult<T>) -> Result<T> {
        result.map_err(|source| CoreError::Operator {
            query: self.name.clone(),
            operator: self.nodes[index].operator.name().to_string(),
            source,
        })
    }
}
