//! The payload of one write-ahead-log record of a push source or table: what was pushed,
//! so recovery can push it again. One byte of kind, then the rows as an Arrow IPC stream
//! (schema and one batch), which carries its own types so a record is read without the
//! catalog.

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
}

/// Encodes one record.
pub(crate) fn encode(kind: RecordKind, batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut bytes = vec![kind as u8];
    let failed = |e: datafusion::arrow::error::ArrowError| {
        DbError::Internal(format!("cannot encode a log record: {e}"))
    };
    let mut writer = StreamWriter::try_new(&mut bytes, &batch.schema()).map_err(failed)?;
    writer.write(batch).map_err(failed)?;
    writer.finish().map_err(failed)?;
    drop(writer);
    Ok(bytes)
}

/// Decodes one record; `what` names the log and record for the error.
pub(crate) fn decode(
    payload: &[u8],
    what: &dyn Fn() -> String,
) -> Result<(RecordKind, RecordBatch)> {
    let corrupt = |reason: String| DbError::Recovery {
        message: format!("{}: {reason}", what()),
    };
    let (&kind, rows) = payload
        .split_first()
        .ok_or_else(|| corrupt("empty record".into()))?;
    let kind = match kind {
        1 => RecordKind::Push,
        2 => RecordKind::Upsert,
        other => return Err(corrupt(format!("unknown record kind {other}"))),
    };
    let mut reader = StreamReader::try_new(Cursor::new(rows), None)
        .map_err(|e| corrupt(format!("unreadable rows: {e}")))?;
    let batch = reader
        .next()
        .ok_or_else(|| corrupt("a record without rows".into()))?
        .map_err(|e| corrupt(format!("unreadable rows: {e}")))?;
    Ok((kind, batch))
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
        let bytes = encode(RecordKind::Upsert, &batch).unwrap();
        let (kind, back) = decode(&bytes, &|| "log t".into()).unwrap();
        assert_eq!(kind, RecordKind::Upsert);
        assert_eq!(back, batch);
        assert!(decode(&bytes[..bytes.len() / 2], &|| "log t".into()).is_err());
        assert!(decode(&[9], &|| "log t".into()).is_err());
    }
}
