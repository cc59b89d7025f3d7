//! The reader of a FILE source: reads its planned files side by side, a batch of each in
//! turn (up to [`FILES_OPEN_MAX`] at once, in planned order), reporting each file as a
//! partition that opens and ends. A file resumed from a position first skips the rows
//! already taken: Parquet by seeking past them, CSV and JSON by decoding and dropping them,
//! so that the rows skipped are exactly the good rows delivered before, whatever the
//! malformed records (which are counted again in the metrics as they are read again).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use super::csv_reader::CsvFileReader;
use super::json_reader::JsonFileReader;
use super::malformed::{MalformedPolicy, OnError};
use super::parquet_reader::ParquetFileReader;
use super::resume::PlannedFile;
use super::{CsvDialect, FileFormat};
use crate::error::{ConnectorError, Result};
use crate::source::{SourceBatch, SourceEvent, SourceMetrics, SourceReader};

/// Connector name used in messages.
const CONNECTOR: &str = "FILE source";
/// Files read at once. Each holds a reader's buffers, and the source's watermark waits for
/// the slowest of them; a file further in path order opens when one of these ends.
pub(crate) const FILES_OPEN_MAX: usize = 16;

/// How the source's files are read: the same for each of them.
pub(crate) struct FileReading {
    /// The source's `path` option, for messages.
    pub(crate) origin: String,
    pub(crate) format: FileFormat,
    pub(crate) dialect: CsvDialect,
    pub(crate) on_error: OnError,
    pub(crate) schema: SchemaRef,
    pub(crate) metrics: Arc<SourceMetrics>,
    pub(crate) batch_rows_max: usize,
}

/// The reader of one open file, whatever its format.
enum FileReader {
    Csv(CsvFileReader),
    Json(JsonFileReader),
    Parquet(ParquetFileReader),
}

impl FileReader {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        match self {
            Self::Csv(reader) => reader.next_batch(),
            Self::Json(reader) => reader.next_batch(),
            Self::Parquet(reader) => reader.next_batch(),
        }
    }
}

/// An open file and its partition.
struct OpenFile {
    partition: u32,
    reader: FileReader,
    /// The rows after the skipped ones in the batch where skipping stopped.
    carry: Option<RecordBatch>,
}

impl OpenFile {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        match self.carry.take() {
            Some(batch) => Ok(Some(batch)),
            None => self.reader.next_batch(),
        }
    }
}

/// Reads planned files side by side; see the module documentation.
pub(crate) struct FileSourceReader {
    reading: FileReading,
    /// Files not opened yet, in reading order.
    planned: VecDeque<PlannedFile>,
    /// The path of every planned partition, for positions.
    ids: BTreeMap<u32, String>,
    /// The files being read, in the order they take turns.
    open: Vec<OpenFile>,
    /// Index in `open` of the file whose turn it is.
    turn: usize,
    /// Partitions opened and ended, to report before the next batch.
    pending: VecDeque<SourceEvent>,
    started: bool,
}

impl FileSourceReader {
    pub(crate) fn new(reading: FileReading, planned: Vec<PlannedFile>) -> Self {
        let ids = planned
            .iter()
            .map(|file| (file.partition, file.path.display().to_string()))
            .collect();
        Self {
            reading,
            planned: planned.into(),
            ids,
            open: Vec::new(),
            turn: 0,
            pending: VecDeque::new(),
            started: false,
        }
    }

    /// Opens the first files now rather than at the first event, so that errors opening
    /// them (and skipping their rows) are returned to the caller of `open_at`.
    pub(crate) fn start(&mut self) -> Result<()> {
        self.started = true;
        self.open_files()
    }

    /// Opens planned files until `FILES_OPEN_MAX` are open or none is left, reporting each
    /// as an opened partition.
    fn open_files(&mut self) -> Result<()> {
        while self.open.len() < FILES_OPEN_MAX {
            let Some(file) = self.planned.pop_front() else {
                return Ok(());
            };
            let open = self.open_file(&file)?;
            self.open.push(open);
            self.pending
                .push_back(SourceEvent::PartitionOpened(file.partition));
        }
        Ok(())
    }

    /// Opens `file` and skips the rows already taken from it.
    fn open_file(&self, file: &PlannedFile) -> Result<OpenFile> {
        let reading = &self.reading;
        let schema = Arc::clone(&reading.schema);
        let policy = MalformedPolicy::new(
            file.path.display().to_string(),
            reading.on_error,
            Arc::clone(&reading.metrics),
        );
        let rows_max = reading.batch_rows_max;
        let mut reader = match reading.format {
            FileFormat::Csv => FileReader::Csv(CsvFileReader::open(
                &file.path,
                schema,
                reading.dialect,
                policy,
                rows_max,
            )?),
            FileFormat::Json => {
                FileReader::Json(JsonFileReader::open(&file.path, schema, policy, rows_max)?)
            }
            FileFormat::Parquet => FileReader::Parquet(ParquetFileReader::open(
                &file.path,
                schema,
                rows_max,
                file.skip_rows,
            )?),
        };
        let carry = match &mut reader {
            FileReader::Parquet(parquet) if parquet.rows_total() < file.skip_rows => {
                return Err(self.too_short(file, parquet.rows_total()));
            }
            FileReader::Parquet(_) => None,
            decoded => match skip_rows(decoded, file.skip_rows)? {
                Skipped::Rest(carry) => carry,
                Skipped::FileEnded { rows_found } => {
                    return Err(self.too_short(file, rows_found));
                }
            },
        };
        Ok(OpenFile {
            partition: file.partition,
            reader,
            carry,
        })
    }

    fn too_short(&self, file: &PlannedFile, rows: u64) -> ConnectorError {
        ConnectorError::ResumeImpossible {
            connector: CONNECTOR.to_owned(),
            origin: self.reading.origin.clone(),
            partition: file.path.display().to_string(),
            reason: format!(
                "it has {rows} rows, fewer than the {} the checkpoint says were read",
                file.skip_rows
            ),
        }
    }
}

/// The outcome of skipping rows of a file.
enum Skipped {
    /// All were skipped; the rest of the batch where skipping stopped, if any.
    Rest(Option<RecordBatch>),
    /// The file ended after `rows_found` rows.
    FileEnded { rows_found: u64 },
}

/// Decodes and drops the first `rows` rows of `reader`.
fn skip_rows(reader: &mut FileReader, rows: u64) -> Result<Skipped> {
    let mut skipped = 0u64;
    while skipped < rows {
        let Some(batch) = reader.next_batch()? else {
            return Ok(Skipped::FileEnded {
                rows_found: skipped,
            });
        };
        let len = batch.num_rows() as u64;
        if skipped + len > rows {
            let offset = (rows - skipped) as usize;
            return Ok(Skipped::Rest(Some(
                batch.slice(offset, batch.num_rows() - offset),
            )));
        }
        skipped += len;
    }
    Ok(Skipped::Rest(None))
}

impl SourceReader for FileSourceReader {
    fn next_event(&mut self) -> Result<Option<SourceEvent>> {
        if !self.started {
            self.start()?;
        }
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            if self.open.is_empty() {
                return Ok(None);
            }
            if self.turn >= self.open.len() {
                self.turn = 0;
            }
            let file = &mut self.open[self.turn];
            let partition = file.partition;
            if let Some(batch) = file.next_batch()? {
                self.turn += 1;
                return Ok(Some(SourceEvent::Batch(SourceBatch { partition, batch })));
            }
            // The next file in turn moves into this index; a newly opened one takes its
            // turn last.
            self.open.remove(self.turn);
            self.pending
                .push_back(SourceEvent::PartitionEnded(partition));
            self.open_files()?;
        }
    }

    fn partition_id(&self, partition: u32) -> String {
        self.ids
            .get(&partition)
            .cloned()
            .unwrap_or_else(|| partition.to_string())
    }
}
