//! The source half of the connector SDK: the [`SourceConnector`] / [`SourceReader`] traits the
//! engine drives (opening from the start, or resuming at a [`SourcePosition`]), the
//! [`SourceEvent`]s a reader produces (rows, and its partitions opening and ending, which the
//! engine's per-partition watermarks follow), the shared [`SourceMetrics`] it displays, and
//! [`create_source`], the one entry point that maps a connector name to its implementation
//! and reads the options every source takes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use crate::datagen::DatagenSource;
use crate::error::{ConnectorError, Result};
use crate::file::FileSource;
use crate::options::ConnectorOptions;
use crate::position::SourcePosition;

/// Names accepted by [`create_source`], for error messages.
const SOURCE_CONNECTORS: &str = "datagen, file";

/// The option every source connector takes: how long a partition may produce no row before
/// it is idle and no longer holds the source's watermark back. Each connector lists it
/// among its known options; [`create_source`] reads it.
pub(crate) const IDLE_TIMEOUT_OPTION: &str = "idle_timeout";

/// A configured source: knows its schema and opens readers. Created (and thereby validated)
/// when the source is declared; opened when a pipeline starts.
pub trait SourceConnector: Send + Sync + std::fmt::Debug {
    /// Schema of the rows produced (the declared schema if one was given).
    fn schema(&self) -> SchemaRef;
    /// True when the source finishes by itself (files; a generator with `events`).
    fn is_bounded(&self) -> bool;
    /// Opens a reader yielding batches of at most `batch_rows_max` rows.
    fn open(&self, batch_rows_max: usize) -> Result<Box<dyn SourceReader>>;

    /// Opens a reader that continues after `position`, which the engine built by observing
    /// an earlier reader of this source ([`SourcePosition::observe`]): in every partition it
    /// skips exactly the rows the position says were taken.
    ///
    /// What the engine's per-partition watermarks see: the reader reports `PartitionOpened`
    /// for each partition it will read, and a partition the position lists keeps its
    /// number, so the engine can restore its watermark; a partition the position lists as
    /// ended is never reported again (it stays ended and holds no watermark back). New
    /// partitions (files that appeared since) get numbers after every listed one.
    ///
    /// An error names the source and the partition when the input changed so that the
    /// position no longer fits it (a file is gone, or has fewer rows than were taken).
    /// Connectors that cannot resume return [`ConnectorError::Unsupported`].
    fn open_at(
        &self,
        batch_rows_max: usize,
        position: &SourcePosition,
    ) -> Result<Box<dyn SourceReader>> {
        let _ = (batch_rows_max, position);
        let name = std::any::type_name::<Self>();
        Err(ConnectorError::Unsupported {
            connector: name.rsplit("::").next().unwrap_or(name).to_owned(),
            feature: "resuming from a checkpoint's position".to_owned(),
        })
    }
    /// How long a partition may produce no row (processing time) before it is idle: the
    /// `idle_timeout` option; `None` when not given (partitions are never idle).
    fn idle_timeout(&self) -> Option<Duration> {
        None
    }
}

/// A running source, polled from one dedicated thread.
pub trait SourceReader: Send {
    /// Blocks until the next event is ready (may sleep for rate limiting); Ok(None) when
    /// finished, which ends every partition.
    ///
    /// After an `Err` the reader is finished: the engine should not poll it again, and one
    /// that is polled anyway returns `Ok(None)`.
    fn next_event(&mut self) -> Result<Option<SourceEvent>>;

    /// What `partition` reads, for a [`SourcePosition`]: a file's path, so that resuming
    /// detects a changed input. Defaults to the partition's number.
    fn partition_id(&self, partition: u32) -> String {
        partition.to_string()
    }
}

/// What a reader produces.
///
/// Each partition has a watermark of its own, and the source's is the minimum over its open
/// partitions, so a reader opens a partition before its first batch when it knows the
/// partition will produce rows (all the files it reads at once, every generator partition):
/// an opened partition holds the watermark back even before its first row. A partition
/// first seen in a batch is opened then. A partition that will produce no more rows should
/// be ended, so it no longer holds the watermark back.
#[derive(Debug, Clone)]
pub enum SourceEvent {
    /// This partition will produce rows.
    PartitionOpened(u32),
    /// Rows of one partition.
    Batch(SourceBatch),
    /// This partition produced its last row.
    PartitionEnded(u32),
}

/// One batch of rows from a source.
///
/// `partition`: batches with the same partition must be processed in order, and each
/// partition has its own watermark (file index for files; for generators a round robin over
/// the `partitions` option, default 1). The engine maps partition % workers to a worker.
#[derive(Debug, Clone)]
pub struct SourceBatch {
    /// Ordering domain of this batch.
    pub partition: u32,
    /// The rows, with exactly the connector's schema.
    pub batch: RecordBatch,
}

/// Counters the engine displays for a source: rows produced, malformed records skipped and
/// the text of the first malformed record. Shared between the reader thread and the engine.
#[derive(Debug, Default)]
pub struct SourceMetrics {
    rows_read: AtomicU64,
    records_malformed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl SourceMetrics {
    /// Rows produced so far (malformed records excluded).
    pub fn rows_read(&self) -> u64 {
        self.rows_read.load(Ordering::Relaxed)
    }

    /// Malformed records seen so far (skipped, or the one that failed the source).
    pub fn records_malformed(&self) -> u64 {
        self.records_malformed.load(Ordering::Relaxed)
    }

    /// Text of the first malformed record, naming file, line and column.
    pub fn first_error(&self) -> Option<String> {
        self.first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Adds `rows` to the produced-rows counter.
    pub fn record_rows(&self, rows: u64) {
        self.rows_read.fetch_add(rows, Ordering::Relaxed);
    }

    /// Counts one malformed record; keeps `message` if it is the first one.
    pub fn record_malformed(&self, message: &str) {
        self.records_malformed.fetch_add(1, Ordering::Relaxed);
        let mut first = self
            .first_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if first.is_none() {
            *first = Some(message.to_owned());
        }
    }
}

/// Creates the source connector named `connector` (case-insensitive: `file`, `datagen`),
/// validating `options` and the `declared` schema. Performs no I/O except where the schema
/// must be read from data (a parquet file source without declared columns).
pub fn create_source(
    connector: &str,
    options: &ConnectorOptions,
    declared: Option<SchemaRef>,
    metrics: Arc<SourceMetrics>,
) -> Result<Box<dyn SourceConnector>> {
    let declared = declared.filter(|schema| !schema.fields().is_empty());
    let name = connector.trim().to_ascii_lowercase();
    let idle_timeout = options.duration(
        &format!("{} source", name.to_ascii_uppercase()),
        IDLE_TIMEOUT_OPTION,
    )?;
    let inner: Box<dyn SourceConnector> = match name.as_str() {
        "file" => Box::new(FileSource::create(options, declared, Arc::clone(&metrics))?),
        "datagen" => Box::new(DatagenSource::create(options, declared)?),
        _ => {
            return Err(ConnectorError::UnknownConnector {
                role: "source",
                name: connector.to_owned(),
                known: SOURCE_CONNECTORS.to_owned(),
            })
        }
    };
    Ok(Box::new(Metered {
        inner,
        metrics,
        idle_timeout,
    }))
}

/// Wraps every source so that rows are counted in one place, whatever the connector, and
/// carries the options every source takes.
#[derive(Debug)]
struct Metered {
    inner: Box<dyn SourceConnector>,
    metrics: Arc<SourceMetrics>,
    idle_timeout: Option<Duration>,
}

impl SourceConnector for Metered {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn is_bounded(&self) -> bool {
        self.inner.is_bounded()
    }

    fn open(&self, batch_rows_max: usize) -> Result<Box<dyn SourceReader>> {
        let inner = self.inner.open(batch_rows_max.max(1))?;
        Ok(Box::new(MeteredReader {
            inner,
            metrics: Arc::clone(&self.metrics),
            finished: false,
        }))
    }

    fn open_at(
        &self,
        batch_rows_max: usize,
        position: &SourcePosition,
    ) -> Result<Box<dyn SourceReader>> {
        let inner = self.inner.open_at(batch_rows_max.max(1), position)?;
        Ok(Box::new(MeteredReader {
            inner,
            metrics: Arc::clone(&self.metrics),
            finished: false,
        }))
    }

    fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
    }
}

/// Counts rows and makes the reader fused: after the end or an error it returns `Ok(None)`.
struct MeteredReader {
    inner: Box<dyn SourceReader>,
    metrics: Arc<SourceMetrics>,
    finished: bool,
}

impl SourceReader for MeteredReader {
    fn next_event(&mut self) -> Result<Option<SourceEvent>> {
        if self.finished {
            return Ok(None);
        }
        match self.inner.next_event() {
            Ok(Some(event)) => {
                if let SourceEvent::Batch(batch) = &event {
                    self.metrics.record_rows(batch.batch.num_rows() as u64);
                }
                Ok(Some(event))
            }
            other => {
                self.finished = true;
                other
            }
        }
    }

    fn partition_id(&self, partition: u32) -> String {
        self.inner.partition_id(partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_connector_lists_known_ones() {
        let err = create_source("kafkaa", &ConnectorOptions::default(), None, Arc::default())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown source connector 'kafkaa'; known source connectors: datagen, file"
        );
    }

    #[test]
    fn every_source_takes_an_idle_timeout() {
        let options = |timeout: &str| {
            ConnectorOptions::new([
                ("kind".to_owned(), "trades".to_owned()),
                ("idle_timeout".to_owned(), timeout.to_owned()),
            ])
        };
        let source = create_source("datagen", &options("250ms"), None, Arc::default()).unwrap();
        assert_eq!(source.idle_timeout(), Some(Duration::from_millis(250)));
        let err = create_source("datagen", &options("soon"), None, Arc::default()).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "invalid value 'soon' for option 'idle_timeout' of connector DATAGEN source"
            ),
            "{err}"
        );
        let without = ConnectorOptions::new([("kind".to_owned(), "trades".to_owned())]);
        let source = create_source("datagen", &without, None, Arc::default()).unwrap();
        assert_eq!(source.idle_timeout(), None);
    }

    #[test]
    fn metrics_keep_only_the_first_error() {
        let m = SourceMetrics::default();
        m.record_malformed("first");
        m.record_malformed("second");
        m.record_rows(5);
        assert_eq!(m.records_malformed(), 2);
        assert_eq!(m.first_error().as_deref(), Some("first"));
        assert_eq!(m.rows_read(), 5);
    }
}
