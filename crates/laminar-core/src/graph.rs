//! `QueryGraph`: the dataflow of one continuous query as the planner built it: a tree of
//! operator prototypes whose leaves read named input streams. The runtime forks one
//! instance per worker; `EXPLAIN` prints it.

use std::fmt::Write as _;

use datafusion::arrow::datatypes::SchemaRef;

use std::sync::Arc;

use crate::operator::{KeyRouter, Operator};

/// One node of a query graph.
pub struct QueryNode {
    /// The operator prototype (forked per worker).
    pub operator: Box<dyn Operator>,
    /// Where this node's output goes: `(node index, input port)`; `None` for the root.
    pub parent: Option<(usize, usize)>,
    /// Number of input ports (1 for most operators, k for a k-way union; 1 for a scan, fed
    /// by its input stream).
    pub ports: usize,
    /// For a leaf: the name of the stream it reads.
    pub input: Option<String>,
    /// For an exchange: routes the rows reaching it to the worker owning their key. Its
    /// `ports` are then the sending workers, set when the graph is forked.
    pub router: Option<Arc<KeyRouter>>,
}

impl std::fmt::Debug for QueryNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryNode")
            .field("operator", &self.operator.describe())
            .field("parent", &self.parent)
            .field("ports", &self.ports)
            .field("input", &self.input)
            .field("exchange", &self.router.is_some())
            .finish()
    }
}

/// A continuous query's dataflow: nodes, their wiring, and the output schema.
#[derive(Debug)]
pub struct QueryGraph {
    /// Nodes; the root is the one without a parent.
    pub nodes: Vec<QueryNode>,
    /// Schema of the rows the query produces.
    pub schema: SchemaRef,
    /// The query's output carries retractions (it aggregates, or reads a changelog).
    pub changelog: bool,
    /// A stateful operator of the query (aggregate or top-N) consumes retractions (it reads
    /// a changelog).
    pub aggregates_changelog: bool,
    /// For an append-only output whose rows belong to event-time windows: the column
    /// holding each row's window end.
    pub window_end: Option<usize>,
    /// What the output's watermark says of its rows' event times.
    pub row_times: RowTimes,
    /// A regular join of the query consumes retractions (it reads a changelog).
    pub joins_changelog: bool,
    /// The lookup tables its lookup joins ask (read by key, not inputs: no rows flow from
    /// them into the query).
    pub lookup_tables: Vec<String>,
}

/// What a stream's watermark says of its rows' event times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowTimes {
    /// Nothing known.
    Unknown,
    /// The watermark bounds this column, rows behind it being late (a source's `WATERMARK
    /// FOR` column, passed through, or an interval join's time column): an interval join
    /// can expire its state by it.
    EventTime(usize),
    /// The rows come from a regular join: the watermark does not bound their event times,
    /// so no window can close over them.
    Unordered,
}

impl QueryGraph {
    /// Index of the root node.
    pub fn root(&self) -> Option<usize> {
        self.nodes.iter().position(|n| n.parent.is_none())
    }

    /// Names of the streams the query reads, once each, in leaf order.
    pub fn inputs(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for node in &self.nodes {
            if let Some(input) = &node.input {
                if !names.contains(input) {
                    names.push(input.clone());
                }
            }
        }
        names
    }

    /// Renders the graph as an indented tree, root first, with the partitioning of each
    /// edge and the number of workers running it.
    pub fn explain(&self, output: &str, workers: usize) -> String {
        let mut text = format!("Dataflow for {output} ({workers} workers, one instance of every operator per worker)\n");
        if let Some(root) = self.root() {
            self.explain_node(root, 1, &mut text);
        }
        text
    }

    fn explain_node(&self, index: usize, depth: usize, text: &mut String) {
        let node = &self.nodes[index];
        let indent = "  ".repeat(depth);
        let _ = writeln!(text, "{indent}{}", node.operator.describe());
        if let Some(input) = &node.input {
            let _ = writeln!(
                text,
                "{indent}  <- {input} (forward: each worker reads its own partitions)"
            );
        }
        if node.router.is_some() {
            let _ = writeln!(
                text,
                "{indent}  <- from every worker (each key is owned by one worker)"
            );
        }
        for (child, candidate) in self.nodes.iter().enumerate() {
            if candidate.parent.is_some_and(|(parent, _)| parent == index) {
                self.explain_node(child, depth + 1, text);
            }
        }
    }
}
