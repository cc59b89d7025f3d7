//! The payload of one write-ahead-log record: what was pushed into which source or table,
//! so recovery can push it again, in the order it was logged.
//!
//! `kind` (1 byte) | `seq` (u64 LE) | name length (u16 LE) | name (UTF-8) | rows: an Arrow
//! IPC stream (schema and one batch), which carries its own types so a record is read
//! without the catalog. `seq` orders the records of every log: one counter for the whole
//! database. A `Created` record has no rows: it marks where a source or table (re)created
//! under its name starts, so that records of an earlier object of the same name are not
//! pushed into it.

use std::io::Cursor;

use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::{DbError, Result};

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordKind {
    /// Rows pushed into a source (`push`, typed push, `INSERT`).
    Push = 1,
    /// Rows upserted into a table by `INSERT`.
    Upsert = 2,
    /// The source or table was created: earlier records under its name are not its own.
    Created = 3,
}

/// One decoded record.
#[derive(Debug)]
pub(crate) struct LogRecord {
    pub(crate) seq: u64,
    pub(crate) kind: RecordKind,
    pub(crate) source: String,
    /// The rows (none for `Created`).
    pub(crate) batch: Option<RecordBatch>,
}

/// Bytes before the name: kind, seq, name length.
const HEADER_BYTES: usize = 1 + 8 + 2;

/// Encodes one record.
pub(crate) fn encode(
    kind: RecordKind,
    seq: u64,
    source: &str,
    batch: Option<&RecordBatch>,
) -> Result<Vec<u8>> {
    let name_len = u16::try_from(source.len()).map_err(|_| {
        DbError::Internal(format!(
            "object name of {} bytes is too long to log",
            source.len()
        ))
    })?;
    let mut bytes = Vec::with_capacity(HEADER_BYTES + source.len());
    bytes.push(kind as u8);
    bytes.extend_from_slice(&seq.to_le_bytes());
    bytes.extend_from_slice(&name_len.to_le_bytes());
    bytes.extend_from_slice(source.as_bytes());
    if let Some(batch) = batch {
        let failed = |e: datafusion::arrow::error::ArrowError| {
            DbError::Internal(format!("cannot encode a log record: {e}"))
        };
        let mut writer = StreamWriter::try_new(&mut bytes, &batch.schema()).map_err(failed)?;
        writer.write(batch).map_err(failed)?;
        writer.finish().map_err(failed)?;
    }
    Ok(bytes)
}

/// Decodes one record; `what` names the log and record for the error.
pub(crate) fn decode(payload: &[u8], what: &dyn Fn() -> String) -> Result<LogRecord> {
    let corrupt = |reason: String| DbError::Recovery {
        message: format!("{}: {reason}", what()),
    };
    let header = payload
        .get(..HEADER_BYTES)
        .ok_or_else(|| corrupt(format!("a record of {} bytes", payload.len())))?;
    let kind = match header[0] {
        1 => RecordKind::Push,
        2 => RecordKind::Upsert,
        3 => RecordKind::Created,
        other => return Err(corrupt(format!("unknown record kind {other}"))),
    };
    let mut seq = [0_u8; 8];
    seq.copy_from_slice(&header[1..9]);
    let name_len = usize::from(u16::from_le_bytes([header[9], header[10]]));
    let name = payload
        .get(HEADER_BYTES..HEADER_BYTES + name_len)
        .ok_or_else(|| corrupt("a record cut inside its object name".into()))?;
    let source = std::str::from_utf8(name)
        .map_err(|_| corrupt("an object name that is not UTF-8".into()))?
        .to_string();
    let rows = &payload[HEADER_BYTES + name_len..];
    let batch = if kind == RecordKind::Created {
        None
    } else {
        let mut reader = StreamReader::try_new(Cursor::new(rows), None)
            .map_err(|e| corrupt(format!("unreadable rows: {e}")))?;
        Some(
            reader
                .next()
                .ok_or_else(|| corrupt("a record without rows".into()))?
                .map_err(|e| corrupt(format!("unreadable rows: {e}")))?,
        )
    };
    Ok(LogRecord {
        seq: u64::from_le_bytes(seq),
        kind,
        source,
        batch,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn a_record_round_trips_and_damage_is_an_error() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("a"), None])),
            ],
        )
        .unwrap();
        let bytes = encode(RecordKind::Upsert, 42, "t", Some(&batch)).unwrap();
        let record = decode(&bytes, &|| "log 0".into()).unwrap();
        assert_eq!(record.kind, RecordKind::Upsert);
        assert_eq!(record.seq, 42);
        assert_eq!(record.source, "t");
        assert_eq!(record.batch, Some(batch));
        assert!(decode(&bytes[..bytes.len() / 2], &|| "log 0".into()).is_err());
        assert!(decode(&bytes[..5], &|| "log 0".into()).is_err());
        assert!(decode(&[9; 16], &|| "log 0".into()).is_err());
        let marker = encode(RecordKind::Created, 7, "ünïcode", None).unwrap();
        let record = decode(&marker, &|| "log 0".into()).unwrap();
        assert_eq!(
            (record.kind, record.seq, record.source.as_str()),
            (RecordKind::Created, 7, "ünïcode")
        );
        assert!(record.batch.is_none());
    }
}
