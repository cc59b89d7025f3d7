//! `QueryInstance`: one worker's copy of a continuous query. It pushes messages from a leaf
//! up to the root, merging watermarks (minimum over a node's ports) and end-of-stream (a
//! node ends when all its ports have) so operators see one ordered input.
//!
//! A port whose input said it is idle is left out of the minimum until rows or a watermark
//! arrive on it again. A node none of whose ports can hold the watermark back, some of them
//! idle and the others at the end of time, is idle itself (not at the end of time: an idle
//! input may still send rows) and says so upward, and says so again with its watermark when
//! a port wakes. A woken port's watermark may be behind the node's, which never moves back:
//! the node then waits for it to catch up, and the rows it sends meanwhile are late wherever
//! their window has already closed.
//!
//! A checkpoint's barrier passes a node once every port that has not ended delivered it:
//! what a port sends after its barrier is held back until then. The node's operator
//! snapshots as the barrier passes, and the query answers the barrier once it leaves the
//! root.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::error::Result as DfResult;

use super::checkpoint::{Barrier, NodeSnapshot, QueryRestore, QuerySnapshot};
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
    port_idle: Vec<bool>,
    port_ended: Vec<bool>,
    watermark_ms: i64,
    /// The node told its parent it is idle.
    idle: bool,
    /// The watermark last forwarded (an operator may hold its input's back).
    output_watermark_ms: i64,
    ended: bool,
    /// The barrier being aligned, and the ports that delivered it.
    barrier: Option<Arc<Barrier>>,
    barrier_ports: Vec<bool>,
    /// What ports sent after delivering the barrier, in order, until it passes.
    held: VecDeque<(usize, Message)>,
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
    /// The operators' state bytes when last measured, the entries they held then, and when
    /// the next measurement is due.
    state_bytes: (u64, u64),
    state_bytes_due: Option<Instant>,
    /// Each node's snapshot for the barrier in flight, taken as the barrier passed it.
    barrier_snapshots: Vec<Option<NodeSnapshot>>,
}

/// How often a query's state bytes are measured at most.
const STATE_BYTES_REFRESH: Duration = Duration::from_millis(100);

/// What a query's operators hold and dropped, on one worker.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OperatorStats {
    pub(crate) state_entries: u64,
    pub(crate) state_bytes: u64,
    /// The entries held when `state_bytes` was measured.
    pub(crate) state_bytes_entries: u64,
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
                    operator: node.operator.fork_for(workers),
                    router: node.router.clone(),
                    parent: node.parent,
                    port_watermarks_ms: vec![WATERMARK_MIN_MS; ports],
                    port_idle: vec![false; ports],
                    port_ended: vec![false; ports],
                    watermark_ms: WATERMARK_MIN_MS,
                    idle: false,
                    output_watermark_ms: WATERMARK_MIN_MS,
                    ended: false,
                    barrier: None,
                    barrier_ports: vec![false; ports],
                    held: VecDeque::new(),
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
        let barrier_snapshots = vec![None; nodes.len()];
        Self {
            name: name.to_string(),
            worker,
            workers,
            nodes,
            barrier_snapshots,
            schema: graph.schema.clone(),
            leaves,
            timers,
            state_bytes: (0, 0),
            state_bytes_due: None,
        }
    }

    /// When the next timer is due, if the query has timers.
    pub(crate) fn next_timer(&self) -> Option<Instant> {
        self.timers.iter().map(|timer| timer.next).min()
    }

    /// When the next armed timer is due: what a parked worker must wake for.
    pub(crate) fn next_armed_timer(&self) -> Option<Instant> {
        self.timers
            .iter()
            .filter(|timer| self.nodes[timer.node].operator.timer_armed())
            .map(|timer| timer.next)
            .min()
    }

    /// Runs every armed timer due at `now`; what they emit goes up the graph like any
    /// output. Sets `ran` when one ran.
    pub(crate) fn fire_timers(
        &mut self,
        now: Instant,
        ran: &mut bool,
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
            if self.nodes[node].ended || !self.nodes[node].operator.timer_armed() {
                continue;
            }
            *ran = true;
            let mut produced = Vec::new();
            let result = self.nodes[node].operator.on_timer(&mut produced);
            self.check(node, result)?;
            for batch in produced {
                self.emit(node, Message::Data(batch), out, remote)?;
            }
            // Rows the timer released may have held the output watermark back.
            let state = &mut self.nodes[node];
            let outgoing = state.operator.output_watermark(state.watermark_ms);
            if outgoing > state.output_watermark_ms {
                state.output_watermark_ms = outgoing;
                self.emit(node, Message::Watermark(outgoing), out, remote)?;
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
    /// [`STATE_BYTES_REFRESH`], and at most 1% of the time: after a measurement that took
    /// `t`, the next waits at least `100 t` (a state of millions of rows is measured rarely).
    pub(crate) fn operator_stats(&mut self) -> OperatorStats {
        let (state_entries, late_rows) = self.nodes.iter().fold((0, 0), |(state, late), node| {
            (
                state + node.operator.state_entries(),
                late + node.operator.late_rows(),
            )
        });
        let now = Instant::now();
        let due = self.state_bytes_due.is_none_or(|due| now >= due);
        if state_entries == 0 {
            // Nothing held: no need to ask, and no reason to delay the next measurement.
            self.state_bytes = (0, 0);
        } else if due {
            let bytes = self.nodes.iter().map(|n| n.operator.state_bytes()).sum();
            self.state_bytes = (bytes, state_entries);
            let cost = now.elapsed();
            self.state_bytes_due = Some(now + STATE_BYTES_REFRESH.max(cost * 100));
        }
        OperatorStats {
            state_entries,
            state_bytes: self.state_bytes.0,
            state_bytes_entries: self.state_bytes.1,
            late_rows,
        }
    }

    /// True when an operator of the query depends on where its input batches end.
    pub(crate) fn needs_batch_boundaries(&self) -> bool {
        self.nodes
            .iter()
            .any(|node| node.operator.needs_batch_boundaries())
    }

    /// True once the query's output ended on this worker: its state no longer changes.
    pub(crate) fn is_ended(&self) -> bool {
        self.nodes
            .iter()
            .any(|node| node.parent.is_none() && node.ended)
    }

    /// Node `index`'s watermarks and operator state for `barrier`'s checkpoint. A snapshot
    /// that fails fails the checkpoint (recorded in the barrier), not the query.
    fn snapshot_node(&mut self, index: usize, barrier: &Barrier) -> NodeSnapshot {
        let full = barrier.is_full(&self.name, self.worker, index);
        let node = &mut self.nodes[index];
        let started = Instant::now();
        let taken = node.operator.snapshot(full);
        barrier.add_stall(self.worker, started.elapsed());
        let state = match taken {
            Ok(state) => state,
            Err(e) => {
                barrier.fail(format!(
                    "query {}, operator {}: {e}",
                    self.name,
                    node.operator.name()
                ));
                None
            }
        };
        NodeSnapshot {
            node: index,
            operator: node.operator.name(),
            watermark_ms: node.watermark_ms,
            output_watermark_ms: node.output_watermark_ms,
            state,
        }
    }

    /// Answers `barrier` with every node's snapshot: those taken as it passed, and for
    /// nodes it never reached (ended ones, whose state no longer changes) one taken now.
    pub(crate) fn answer_barrier(&mut self, barrier: &Barrier) {
        let mut nodes = Vec::with_capacity(self.nodes.len());
        for index in 0..self.nodes.len() {
            let snapshot = match self.barrier_snapshots[index].take() {
                Some(snapshot) => snapshot,
                None => self.snapshot_node(index, barrier),
            };
            nodes.push(snapshot);
        }
        barrier.answer_query(QuerySnapshot {
            query: self.name.clone(),
            worker: self.worker,
            nodes,
        });
    }

    /// Restores the nodes' watermarks and operator state from a checkpoint, before the
    /// query sees any message. A node whose operator differs from the checkpoint's (the
    /// query was planned differently) is an error: its state would be misread.
    pub(crate) fn restore(&mut self, restored: &QueryRestore) -> Result<()> {
        for (index, node) in self.nodes.iter_mut().enumerate() {
            let Some(saved) = restored.nodes.get(&(self.worker, index)) else {
                continue;
            };
            if saved.operator != node.operator.name() {
                return Err(CoreError::Internal(format!(
                    "query {}: node {index} is a {} but the checkpoint holds a {} there; \
                     the query was planned differently than when the checkpoint was taken",
                    self.name,
                    node.operator.name(),
                    saved.operator
                )));
            }
            node.watermark_ms = saved.watermark_ms;
            node.output_watermark_ms = saved.output_watermark_ms;
            node.operator
                .restore(saved.parts.clone())
                .map_err(|source| CoreError::Operator {
                    query: self.name.clone(),
                    operator: node.operator.name().to_string(),
                    source,
                })?;
        }
        Ok(())
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
        let node = &mut self.nodes[index];
        if node.ended {
            return Ok(());
        }
        if node.barrier.is_some() && node.barrier_ports[port] {
            // After this port's barrier: waits until the barrier passes the node.
            node.held.push_back((port, message));
            return Ok(());
        }
        match message {
            Message::Barrier(barrier) => {
                node.barrier_ports[port] = true;
                node.barrier.get_or_insert(barrier);
                self.pass_barrier(index, out, remote)?;
            }
            Message::Data(batch) => {
                if self.nodes[index].port_idle[port] {
                    // Rows wake the port: the node holds the watermark back for it again.
                    self.nodes[index].port_idle[port] = false;
                    self.settle(index, out, remote)?;
                }
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
                node.port_idle[port] = false;
                self.settle(index, out, remote)?;
            }
            Message::Idle => {
                let node = &mut self.nodes[index];
                if node.port_idle[port] || node.port_ended[port] {
                    return Ok(());
                }
                node.port_idle[port] = true;
                self.settle(index, out, remote)?;
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
                } else {
                    // An ended port no longer holds a barrier back.
                    self.pass_barrier(index, out, remote)?;
                }
            }
        }
        Ok(())
    }

    /// Passes the barrier node `index` is aligning once every port delivered it or ended:
    /// the operator snapshots, the barrier goes on, then what the ports held back.
    fn pass_barrier(
        &mut self,
        index: usize,
        out: &mut Vec<Message>,
        remote: &mut Vec<Remote>,
    ) -> Result<()> {
        let node = &mut self.nodes[index];
        let aligned = node
            .barrier_ports
            .iter()
            .zip(&node.port_ended)
            .all(|(barrier, ended)| *barrier || *ended);
        if !aligned {
            return Ok(());
        }
        let Some(barrier) = node.barrier.take() else {
            return Ok(());
        };
        node.barrier_ports.fill(false);
        let held = std::mem::take(&mut node.held);
        let snapshot = self.snapshot_node(index, &barrier);
        self.barrier_snapshots[index] = Some(snapshot);
        self.emit(index, Message::Barrier(barrier), out, remote)?;
        for (port, message) in held {
            self.feed(index, port, message, out, remote)?;
        }
        Ok(())
    }

    /// Merges the watermarks of node `index`'s ports after one changed: the minimum over the
    /// ports that are neither idle nor at the end of time (the end of time once all ports
    /// are there). When every port that could hold the watermark back is idle, the node is
    /// idle and says so; when it was and is no longer, it says so with its watermark.
    fn settle(
        &mut self,
        index: usize,
        out: &mut Vec<Message>,
        remote: &mut Vec<Remote>,
    ) -> Result<()> {
        let node = &mut self.nodes[index];
        let operator = &node.operator;
        let ports = || {
            node.port_watermarks_ms
                .iter()
                .zip(&node.port_idle)
                .enumerate()
                .filter(|(port, _)| operator.holds_watermark(*port))
                .map(|(_, pair)| pair)
        };
        let holding = ports()
            .filter(|(ms, idle)| !**idle && **ms != WATERMARK_END_MS)
            .map(|(ms, _)| *ms)
            .min();
        let all_ended = ports().all(|(ms, _)| *ms == WATERMARK_END_MS);
        let merged = match holding {
            Some(ms) => ms,
            None if all_ended => WATERMARK_END_MS,
            None => {
                if !node.idle {
                    node.idle = true;
                    let mut produced = Vec::new();
                    let result = node.operator.on_idle(&mut produced);
                    self.check(index, result)?;
                    for batch in produced {
                        self.emit(index, Message::Data(batch), out, remote)?;
                    }
                    self.emit(index, Message::Idle, out, remote)?;
                }
                return Ok(());
            }
        };
        let resumed = std::mem::take(&mut node.idle);
        if merged > node.watermark_ms {
            node.watermark_ms = merged;
            let mut produced = Vec::new();
            let result = node.operator.on_watermark(merged, &mut produced);
            self.check(index, result)?;
            for batch in produced {
                self.emit(index, Message::Data(batch), out, remote)?;
            }
            // An operator whose output lags its input (an interval join pairing a new row
            // with older ones, an ASOF join holding rows for a match, a keyed-watermark
            // aggregate) holds its output watermark back accordingly; it never goes back.
            let node = &mut self.nodes[index];
            let outgoing = node.operator.output_watermark(merged);
            if outgoing > node.output_watermark_ms {
                node.output_watermark_ms = outgoing;
                self.emit(index, Message::Watermark(outgoing), out, remote)?;
            }
        } else if resumed {
            // Waking up: the parent hears again the watermark last forwarded.
            let watermark = node.output_watermark_ms;
            self.emit(index, Message::Watermark(watermark), out, remote)?;
        }
        Ok(())
    }

    /// The watermark node `index` forwards for its input watermark `merged`: held back by
    /// what its operator asks (an interval join emits rows older than its input watermark),
    /// except the end of time, which everything downstream must see to close.
    fn emit(
        &mut self,
        index: usize,
        message: Message,
        out: &mut Vec<Message>,
        remote: &mut Vec<Remote>,
    ) -> Result<()> {
        let Some((parent, port)) = self.nodes[index].parent else {
            if let Message::Barrier(barrier) = &message {
                self.answer_barrier(barrier);
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::QueryNode;
    use crate::operator::UnionOperator;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    /// A union of leaves `a` (node 1) and `b` (node 2), each a pass-through.
    fn union_of_two() -> QueryInstance {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let node = |ports: usize, parent: Option<(usize, usize)>, input: Option<&str>| QueryNode {
            operator: Box::new(UnionOperator::new(ports, Arc::clone(&schema))),
            parent,
            ports,
            input: input.map(str::to_string),
            router: None,
        };
        let graph = QueryGraph {
            nodes: vec![
                node(2, None, None),
                node(1, Some((0, 0)), Some("a")),
                node(1, Some((0, 1)), Some("b")),
            ],
            schema: Arc::clone(&schema),
            changelog: false,
            aggregates_changelog: false,
            window_end: None,
            row_times: crate::graph::RowTimes::Unknown,
            joins_changelog: false,
            lookup_tables: Vec::new(),
        };
        QueryInstance::fork("q", &graph, 0, 1)
    }

    fn rows() -> Message {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1]))]).expect("batch");
        Message::Data(ChangeBatch::insert_only(batch))
    }

    /// Feeds `message` into leaf `leaf`; what leaves the root, as text.
    fn push(query: &mut QueryInstance, leaf: usize, message: Message) -> Vec<String> {
        let mut out = Vec::new();
        let mut remote = Vec::new();
        query
            .push(leaf, message, &mut out, &mut remote)
            .expect("pushed");
        out.iter()
            .map(|message| match message {
                Message::Data(batch) => format!("{} rows", batch.num_rows()),
                Message::Watermark(WATERMARK_END_MS) => "end of time".to_string(),
                Message::Watermark(ms) => format!("watermark {ms}"),
                Message::Idle => "idle".to_string(),
                Message::End => "end".to_string(),
                Message::Barrier(barrier) => format!("barrier {}", barrier.epoch()),
            })
            .collect()
    }

    fn barrier(epoch: u64) -> Arc<Barrier> {
        Arc::new(Barrier::new(
            epoch,
            1,
            Box::new(|_, _, _| true),
            Box::new(|_, _| true),
        ))
    }

    #[test]
    fn a_barrier_passes_a_union_once_both_inputs_delivered_it_and_what_followed_it_waits() {
        let (a, b) = (1, 2);
        let mut query = union_of_two();
        let first = barrier(1);
        assert!(push(&mut query, a, Message::Barrier(Arc::clone(&first))).is_empty());
        // After its barrier, a's rows and watermark wait; b's rows before its barrier pass.
        assert!(push(&mut query, a, rows()).is_empty());
        assert!(push(&mut query, a, Message::Watermark(10)).is_empty());
        assert_eq!(push(&mut query, b, rows()), ["1 rows"]);
        assert_eq!(
            push(&mut query, b, Message::Watermark(5)),
            Vec::<String>::new()
        );
        // b's barrier aligns the union: the barrier goes on, then what a held back.
        assert_eq!(
            push(&mut query, b, Message::Barrier(Arc::clone(&first))),
            ["barrier 1", "1 rows", "watermark 5"]
        );
        // The query answered the barrier with every node's snapshot, the union's taken
        // before a's held-back watermark reached it.
        first.worker_done(0);
        let answered = first
            .wait(
                std::time::Duration::ZERO,
                &std::sync::atomic::AtomicBool::new(false),
            )
            .expect("answered");
        assert_eq!(answered.queries.len(), 1);
        let nodes = &answered.queries[0].nodes;
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[0].watermark_ms, WATERMARK_MIN_MS);
        assert_eq!(nodes[1].watermark_ms, WATERMARK_MIN_MS);
    }

    #[test]
    fn an_ended_input_does_not_hold_a_barrier_back() {
        let (a, b) = (1, 2);
        let mut query = union_of_two();
        assert!(push(&mut query, a, Message::Barrier(barrier(1))).is_empty());
        assert!(push(&mut query, a, rows()).is_empty());
        assert_eq!(push(&mut query, b, Message::End), ["barrier 1", "1 rows"]);
        assert!(!query.is_ended());
    }

    #[test]
    fn idle_ports_leave_the_minimum_until_they_wake() {
        let (a, b) = (1, 2);
        let mut query = union_of_two();
        assert!(push(&mut query, a, Message::Watermark(10)).is_empty());
        assert_eq!(push(&mut query, b, Message::Watermark(5)), ["watermark 5"]);
        // b idle: a alone holds the union.
        assert_eq!(push(&mut query, b, Message::Idle), ["watermark 10"]);
        assert_eq!(
            push(&mut query, a, Message::Watermark(20)),
            ["watermark 20"]
        );
        // Both idle: the union is idle.
        assert_eq!(push(&mut query, a, Message::Idle), ["idle"]);
        assert!(push(&mut query, a, Message::Idle).is_empty());
        // Rows wake b, whose watermark (5) is behind the union's: the union says it is
        // active again with its own watermark, which does not move back, and waits for b.
        assert_eq!(push(&mut query, b, rows()), ["watermark 20", "1 rows"]);
        assert!(push(&mut query, b, Message::Watermark(15)).is_empty());
        assert_eq!(
            push(&mut query, b, Message::Watermark(30)),
            ["watermark 30"]
        );
    }

    #[test]
    fn an_ended_input_beside_an_idle_one_leaves_the_union_idle_not_ended() {
        let (a, b) = (1, 2);
        let mut query = union_of_two();
        push(&mut query, a, Message::Watermark(10));
        assert_eq!(
            push(&mut query, b, Message::Watermark(30)),
            ["watermark 10"]
        );
        // a's end lets b alone hold the union.
        assert_eq!(push(&mut query, a, Message::End), ["watermark 30"]);
        // b idle beside an ended input: nothing holds the union, yet b may still send rows,
        // so it is idle rather than at the end of time.
        assert_eq!(push(&mut query, b, Message::Idle), ["idle"]);
        assert_eq!(push(&mut query, b, Message::End), ["end of time", "end"]);
    }
}
