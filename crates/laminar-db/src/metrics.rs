//! Live counters of a database: per source rows, watermark, late rows and malformed
//! records; per stream, view and sink rows out, watermark, completion and first error; per
//! worker rows. `laminardb run` turns successive snapshots into its progress line.

use crate::lookup_table::LookupTableMetrics;
use laminar_connectors::SourceMetrics;
use laminar_core::runtime::WorkerStats;
use laminar_sql::ObjectKind;

use crate::catalog::{Catalog, DivertedStream, Object, ObjectState};
use crate::sink_runner::SinkTask;
use crate::source_runner::SourceInstance;

/// A snapshot of the database's counters.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// One entry per source.
    pub sources: Vec<SourceStats>,
    /// One entry per stream (a source's `LATE DATA TO` stream included), materialized view
    /// and sink.
    pub queries: Vec<QueryStats>,
    /// One entry per worker.
    pub workers: Vec<WorkerStats>,
    /// One entry per lookup table: its cache hits and misses and its source's calls.
    pub lookups: Vec<LookupTableMetrics>,
}

/// Counters of one source.
#[derive(Debug, Clone)]
pub struct SourceStats {
    /// Source name.
    pub name: String,
    /// Rows that entered the engine (for connector sources: summed over the queries reading it).
    /// With `LATE DATA TO`, the late rows count as rows of that stream instead.
    pub rows: u64,
    /// Watermark in epoch milliseconds, once one exists.
    pub watermark_ms: Option<i64>,
    /// Every partition has produced no row for the source's `idle_timeout`: the source
    /// holds no watermark back until its next row. For a connector source, true when every
    /// query's reader of it is idle.
    pub idle: bool,
    /// Rows late on arrival: their event time was behind the source's watermark as it stood
    /// before their batch. They flow on unless the source has `LATE DATA TO`, which diverts
    /// them to its stream. Every reader of a connector source reads the same input and
    /// counts the same rows; the source shows the count of the reader that got furthest,
    /// not a sum over readers.
    pub late_rows: u64,
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
    /// Every input that has not ended is idle (its sources' `idle_timeout` passed without
    /// a row): the output holds no watermark back downstream.
    pub idle: bool,
    /// All its inputs ended and every result was delivered (and written, for a sink).
    pub finished: bool,
    /// The first error of the query, its source readers or its sink.
    pub error: Option<String>,
    /// Entries of keyed state its operators hold (groups, open windows, rows held by joins),
    /// over all workers.
    pub state_entries: u64,
    /// Approximate bytes of that state (keys and accumulators), sampled at most every 100 ms
    /// per worker.
    pub state_bytes: u64,
    /// The entries held when `state_bytes` was measured (`state_bytes` divided by it is the
    /// bytes per entry).
    pub state_bytes_entries: u64,
    /// Input rows dropped because their window had already fired, or because they reached
    /// an interval or window join behind its watermark.
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

/// The counters of every object in `catalog`.
pub(crate) fn collect(catalog: &Catalog, workers: Vec<WorkerStats>) -> Metrics {
    let mut metrics = Metrics {
        workers,
        ..Metrics::default()
    };
    for object in catalog.objects() {
        match &object.state {
            ObjectState::PushSource {
                outlet, ingress, ..
            } => metrics.sources.push(SourceStats {
                name: object.name.clone(),
                rows: outlet.rows(),
                watermark_ms: visible_watermark(outlet.watermark_ms()),
                idle: outlet.is_idle(),
                late_rows: ingress.late_rows(),
                malformed_records: 0,
                first_error: outlet.error(),
            }),
            ObjectState::ConnectorSource {
                metrics: source, ..
            } => metrics
                .sources
                .push(connector_source_stats(catalog, object, source)),
            ObjectState::LookupTable { service, source } => {
                metrics.lookups.push(LookupTableMetrics {
                    name: object.name.clone(),
                    source: source.clone(),
                    counters: service.counters(),
                });
            }
            ObjectState::LateData { source, diverted } => {
                metrics
                    .queries
                    .push(late_data_stats(catalog, object, source, diverted.as_ref()));
            }
            ObjectState::Derived {
                outlet,
                instances,
                sink,
                ..
            } => {
                let error = outlet
                    .error()
                    .or_else(|| {
                        instances
                            .iter()
                            .find_map(|i| i.error().or_else(|| i.outlet.error()))
                    })
                    .or_else(|| sink.as_ref().and_then(SinkTask::error));
                metrics.queries.push(QueryStats {
                    name: object.name.clone(),
                    kind: object.kind,
                    rows_out: outlet.rows(),
                    watermark_ms: visible_watermark(outlet.watermark_ms()),
                    idle: outlet.is_idle(),
                    state_entries: outlet.state_entries(),
                    state_bytes: outlet.state_bytes(),
                    state_bytes_entries: outlet.state_bytes_entries(),
                    late_rows: outlet.late_rows(),
                    finished: outlet.is_ended() && sink.as_ref().is_none_or(SinkTask::is_closed),
                    error,
                });
            }
        }
    }
    metrics
}

/// Every reader of connector source `source` (the queries' own instances).
fn readers_of<'a>(
    catalog: &'a Catalog,
    source: &'a str,
) -> impl Iterator<Item = &'a SourceInstance> {
    catalog
        .objects()
        .iter()
        .filter_map(|o| match &o.state {
            ObjectState::Derived { instances, .. } => Some(instances),
            _ => None,
        })
        .flatten()
        .filter(move |i| i.source == source)
}

fn connector_source_stats(
    catalog: &Catalog,
    object: &Object,
    source: &SourceMetrics,
) -> SourceStats {
    let mut rows = 0;
    let mut late_rows = 0;
    let mut watermark: Option<i64> = None;
    let mut readers = 0;
    let mut idle_readers = 0;
    let mut first_error = source.first_error();
    for reader in readers_of(catalog, &object.name) {
        // Readers of the LATE DATA TO stream see the same late rows but deliver only those.
        late_rows = late_rows.max(reader.late_rows());
        first_error = first_error.or_else(|| reader.error());
        if reader.late_only {
            continue;
        }
        rows += reader.outlet.rows();
        readers += 1;
        if reader.outlet.is_idle() {
            idle_readers += 1;
        }
        if let Some(ms) = visible_watermark(reader.outlet.watermark_ms()) {
            watermark = Some(watermark.map_or(ms, |w| w.min(ms)));
        }
    }
    SourceStats {
        name: object.name.clone(),
        rows,
        watermark_ms: watermark,
        idle: readers > 0 && idle_readers == readers,
        late_rows,
        malformed_records: source.records_malformed(),
        first_error,
    }
}

/// A `LATE DATA TO` stream: the rows diverted into it (a push source), or delivered by the
/// readers of its connector source that keep only the late rows. It has no watermark.
fn late_data_stats(
    catalog: &Catalog,
    object: &Object,
    source: &str,
    diverted: Option<&DivertedStream>,
) -> QueryStats {
    let (rows_out, finished, error) = if let Some(diverted) = diverted {
        let outlet = &diverted.outlet;
        (outlet.rows(), outlet.is_ended(), outlet.error())
    } else {
        let readers: Vec<&SourceInstance> = readers_of(catalog, source)
            .filter(|r| r.late_only)
            .collect();
        (
            readers.iter().map(|r| r.outlet.rows()).sum(),
            readers.iter().all(|r| r.outlet.is_ended()),
            readers.iter().find_map(|r| r.error()),
        )
    };
    QueryStats {
        name: object.name.clone(),
        kind: object.kind,
        rows_out,
        watermark_ms: None,
        idle: false,
        finished,
        error,
        state_entries: 0,
        state_bytes: 0,
        state_bytes_entries: 0,
        late_rows: 0,
    }
}
