//! Live counters of a database: per source rows, watermark and malformed records; per
//! stream, view and sink rows out, watermark, completion and first error; per worker rows.
//! `laminardb run` turns successive snapshots into its progress line.

use laminar_core::runtime::WorkerStats;
use laminar_sql::ObjectKind;

/// A snapshot of the database's counters.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// One entry per source.
    pub sources: Vec<SourceStats>,
    /// One entry per stream, materialized view and sink.
    pub queries: Vec<QueryStats>,
    /// One entry per worker.
    pub workers: Vec<WorkerStats>,
}

/// Counters of one source.
#[derive(Debug, Clone)]
pub struct SourceStats {
    /// Source name.
    pub name: String,
    /// Rows that entered the engine (for connector sources: summed over the queries reading it).
    pub rows: u64,
    /// Watermark in epoch milliseconds, once one exists.
    pub watermark_ms: Option<i64>,
    /// Malformed records skipped by the connector.
    pub malformed_records: u64,
    /// The first connector error (malformed record or failure), naming file and line.
    pub first_error: Option<String>,
}

/// Counters of one stream, view or sink.
#[derive(Debug, Clone)]
pub struct QueryStats {
    /// Object name.
    pub name: String,
    /// What it is.
    pub kind: ObjectKind,
    /// Rows produced.
    pub rows_out: u64,
    /// Output watermark in epoch milliseconds, once one exists.
    pub watermark_ms: Option<i64>,
    /// All its inputs ended and every result was delivered (and written, for a sink).
    pub finished: bool,
    /// The first error of the query, its source readers or its sink.
    pub error: Option<String>,
    /// Entries of keyed state its operators hold (groups, open windows), over all workers.
    pub state_entries: u64,
    /// Input rows dropped because their window had already fired.
    pub late_rows: u64,
}

impl Metrics {
    /// Total rows that entered the engine.
    pub fn rows_in(&self) -> u64 {
        self.sources.iter().map(|s| s.rows).sum()
    }

    /// Total rows produced by streams, views and sinks.
    pub fn rows_out(&self) -> u64 {
        self.queries.iter().map(|q| q.rows_out).sum()
    }

    /// The lowest watermark over the queries that have one.
    pub fn min_watermark_ms(&self) -> Option<i64> {
        self.queries.iter().filter_map(|q| q.watermark_ms).min()
    }

    /// Every stream, view and sink finished (bounded inputs all read and flushed).
    pub fn all_finished(&self) -> bool {
        self.queries.iter().all(|q| q.finished)
    }

    /// The first error of any query or source.
    pub fn first_error(&self) -> Option<String> {
        self.queries
            .iter()
            .find_map(|q| q.error.clone())
            .or_else(|| self.sources.iter().find_map(|s| s.first_error.clone()))
    }
}

/// A watermark as shown to users: `None` before the first and after the last.
pub(crate) fn visible_watermark(ms: i64) -> Option<i64> {
    (ms != i64::MIN && ms != i64::MAX).then_some(ms)
}
