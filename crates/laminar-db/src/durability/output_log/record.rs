//! The records of an output log's epoch file, each one frame (length + CRC32C, see
//! `laminar_storage::frame`) whose payload starts with a kind byte: first a header naming
//! the format version and the epoch (so a file renamed or copied to the wrong place is
//! detected), then one record per change batch, its rows as an Arrow IPC stream (schema
//! and one batch) which, for a batch with change weights, carries them as an extra last
//! column; a pre-committed epoch ends with an end record counting the change records (so
//! a file cut short at a record boundary is detected too).

use std::io::Cursor;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use laminar_core::ChangeBatch;
use laminar_storage::frame::encode_frame;

/// The header's magic bytes.
const MAGIC: &[u8] = b"LAMINAR-OUTPUT-LOG";
/// Version of the epoch file format.
const FORMAT_VERSION: u8 = 1;
/// The name of the weight column in a weighted record (found by position, not name).
const WEIGHT_COLUMN: &str = "__laminar_weight";

const KIND_HEADER: u8 = 0;
const KIND_INSERTS: u8 = 1;
const KIND_WEIGHTED: u8 = 2;
const KIND_END: u8 = 3;

/// One record of an epoch file.
#[derive(Debug)]
pub(crate) enum Record {
    /// The file's first record: the epoch it holds.
    Header {
        /// The epoch.
        epoch: u64,
    },
    /// A change batch, as the object produced it.
    Changes(ChangeBatch),
    /// The last record of a pre-committed epoch.
    End {
        /// Change records before it.
        changes: u64,
    },
}

/// Appends the framed header of `epoch`'s file to `out`.
pub(crate) fn encode_header(epoch: u64, out: &mut Vec<u8>) -> Result<(), String> {
    let mut payload = Vec::with_capacity(1 + MAGIC.len() + 1 + 8);
    payload.push(KIND_HEADER);
    payload.extend_from_slice(MAGIC);
    payload.push(FORMAT_VERSION);
    payload.extend_from_slice(&epoch.to_le_bytes());
    encode_frame(out, &[&payload]).map_err(|e| e.to_string())
}

/// Appends the framed end record of an epoch of `changes` change records to `out`.
pub(crate) fn encode_end(changes: u64, out: &mut Vec<u8>) -> Result<(), String> {
    let mut payload = vec![KIND_END];
    payload.extend_from_slice(&changes.to_le_bytes());
    encode_frame(out, &[&payload]).map_err(|e| e.to_string())
}

/// Appends the framed record of one change batch to `out`.
pub(crate) fn encode_changes(
    batch: &RecordBatch,
    weights: Option<&Int64Array>,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let (kind, rows) = match weights {
        None => (KIND_INSERTS, batch.clone()),
        Some(weights) => (KIND_WEIGHTED, with_weights(batch, weights)?),
    };
    let mut payload = vec![kind];
    let mut writer =
        StreamWriter::try_new(&mut payload, &rows.schema()).map_err(|e| e.to_string())?;
    writer.write(&rows).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    drop(writer);
    encode_frame(out, &[&payload]).map_err(|e| e.to_string())
}

/// `batch` with `weights` as an extra last column.
fn with_weights(batch: &RecordBatch, weights: &Int64Array) -> Result<RecordBatch, String> {
    let schema = batch.schema();
    let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(WEIGHT_COLUMN, DataType::Int64, false)));
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.push(Arc::new(weights.clone()));
    let schema = Schema::new_with_metadata(fields, schema.metadata().clone());
    RecordBatch::try_new(Arc::new(schema), columns).map_err(|e| e.to_string())
}

/// Decodes one record's payload (its frame's checksum already verified).
pub(crate) fn decode(payload: &[u8]) -> Result<Record, String> {
    let (&kind, rest) = payload
        .split_first()
        .ok_or_else(|| "an empty record".to_string())?;
    match kind {
        KIND_HEADER => decode_header(rest),
        KIND_INSERTS => Ok(Record::Changes(ChangeBatch::insert_only(read_batch(rest)?))),
        KIND_WEIGHTED => {
            let rows = read_batch(rest)?;
            let last = rows
                .num_columns()
                .checked_sub(1)
                .ok_or_else(|| "a weighted record without columns".to_string())?;
            let weights = rows
                .column(last)
                .as_any()
                .downcast_ref::<Int64Array>()
                .filter(|w| w.null_count() == 0)
                .ok_or_else(|| "a weighted record whose last column is not weights".to_string())?
                .clone();
            let columns: Vec<usize> = (0..last).collect();
            let rows = rows.project(&columns).map_err(|e| e.to_string())?;
            Ok(Record::Changes(ChangeBatch::with_weights(rows, weights)))
        }
        KIND_END => {
            let changes: [u8; 8] = rest
                .try_into()
                .map_err(|_| "an end record of the wrong length".to_string())?;
            Ok(Record::End {
                changes: u64::from_le_bytes(changes),
            })
        }
        other => Err(format!("unknown record kind {other}")),
    }
}

fn decode_header(rest: &[u8]) -> Result<Record, String> {
    let body = rest
        .strip_prefix(MAGIC)
        .ok_or_else(|| "not an output log file (no header)".to_string())?;
    match body {
        [version, epoch @ ..] if *version == FORMAT_VERSION => {
            let epoch: [u8; 8] = epoch
                .try_into()
                .map_err(|_| "a header of the wrong length".to_string())?;
            Ok(Record::Header {
                epoch: u64::from_le_bytes(epoch),
            })
        }
        [version, ..] => Err(format!(
            "format version {version}; this version of LaminarDB reads version {FORMAT_VERSION}"
        )),
        [] => Err("a header without a version".into()),
    }
}

fn read_batch(ipc: &[u8]) -> Result<RecordBatch, String> {
    let mut reader = StreamReader::try_new(Cursor::new(ipc), None)
        .map_err(|e| format!("unreadable rows: {e}"))?;
    reader
        .next()
        .ok_or_else(|| "a record without rows".to_string())?
        .map_err(|e| format!("unreadable rows: {e}"))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::StringArray;
    use laminar_storage::frame::{read_frame_at, FrameEvent};

    use super::*;

    fn rows() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("a"), None])),
            ],
        )
        .unwrap()
    }

    fn payload(framed: &[u8]) -> &[u8] {
        match read_frame_at(framed, 0) {
            FrameEvent::Frame { payload, .. } => payload,
            other => panic!("not a whole frame: {other:?}"),
        }
    }

    #[test]
    fn header_and_change_batches_round_trip() {
        let mut out = Vec::new();
        encode_header(42, &mut out).unwrap();
        assert!(matches!(
            decode(payload(&out)),
            Ok(Record::Header { epoch: 42 })
        ));

        let mut out = Vec::new();
        encode_end(7, &mut out).unwrap();
        assert!(matches!(
            decode(payload(&out)),
            Ok(Record::End { changes: 7 })
        ));

        let mut out = Vec::new();
        encode_changes(&rows(), None, &mut out).unwrap();
        let Ok(Record::Changes(back)) = decode(payload(&out)) else {
            panic!("changes");
        };
        assert_eq!(back.batch(), &rows());
        assert!(back.weights().is_none());

        let weights = Int64Array::from(vec![1, -1]);
        let mut out = Vec::new();
        encode_changes(&rows(), Some(&weights), &mut out).unwrap();
        let Ok(Record::Changes(back)) = decode(payload(&out)) else {
            panic!("changes");
        };
        assert_eq!(back.batch(), &rows());
        assert_eq!(back.weights(), Some(&weights));
    }

    #[test]
    fn damaged_payloads_are_errors() {
        let mut out = Vec::new();
        encode_changes(&rows(), None, &mut out).unwrap();
        let whole = payload(&out).to_vec();
        assert!(decode(&whole[..whole.len() / 2]).is_err());
        assert!(decode(&[9]).is_err());
        assert!(decode(&[]).is_err());
        let mut header = Vec::new();
        encode_header(1, &mut header).unwrap();
        let mut future = payload(&header).to_vec();
        future[1 + MAGIC.len()] = FORMAT_VERSION + 1;
        assert!(decode(&future).unwrap_err().contains("format version"));
        // Cut inside the magic bytes.
        assert!(decode(&payload(&header)[..8]).is_err());
    }
}
