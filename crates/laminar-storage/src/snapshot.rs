//! The state file: one operator's [`OperatorState`] (full or delta) on disk.
//!
//! Layout: the 8-byte magic `LMDBSTA\0`, then frames (see [`crate::frame`]): a header
//! (`u32` format version, `u8` kind: 0 full / 1 delta, `u32` part count), then per part a
//! part section (`u8` tag 1, `u32` name length, UTF-8 name, `u64` delete-key count, `u32`
//! batch count), its delete keys in sections of at most [`DELETE_SECTION_BYTES`] (`u8` tag 2,
//! `u32` key count, then per key `u32` length and bytes), and one section per upsert batch
//! (`u8` tag 3, the batch as an Arrow IPC stream: schema, batch, end marker). All integers are
//! little-endian.
//!
//! Invariants: every byte after the magic is covered by a frame checksum; the counts in the
//! header and part sections say exactly which sections follow, and the file ends right after
//! the last one, so a truncation at a frame boundary is detected too.

use std::path::Path;

use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::ipc::reader::StreamDecoder;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use laminar_core::state::{OperatorState, StateKind, StatePart};

use crate::error::{Result, StorageError};
use crate::frame::{encode_frame, read_frame_at, FrameEvent, FRAME_HEADER_BYTES};
use crate::io::IoBackend;

/// The first bytes of every state file.
pub const STATE_MAGIC: &[u8; 8] = b"LMDBSTA\0";
/// The state file format this version writes and reads.
pub const STATE_FORMAT_VERSION: u32 = 1;
/// The most key bytes one delete-key section holds; more keys take more sections.
pub const DELETE_SECTION_BYTES: usize = 4 << 20;

const TAG_PART: u8 = 1;
const TAG_DELETES: u8 = 2;
const TAG_BATCH: u8 = 3;

/// Writes `state` as the file `path` atomically and durably (temp file, fdatasync, rename,
/// directory fsync); returns the file's size in bytes.
pub fn write_state_file(
    backend: &dyn IoBackend,
    path: &Path,
    state: &OperatorState,
) -> Result<u64> {
    let bytes = encode_state_file(path, state)?;
    backend.write_file_atomic(path, &bytes)?;
    Ok(bytes.len() as u64)
}

/// Reads the state file `path`, checking every byte.
pub fn read_state_file(path: &Path) -> Result<OperatorState> {
    let bytes = std::fs::read(path).map_err(|e| StorageError::io(path, e))?;
    parse_state_file(path, &bytes)
}

/// The bytes of the state file for `state` (`path` names it in errors).
pub fn encode_state_file(path: &Path, state: &OperatorState) -> Result<Vec<u8>> {
    let mut out = STATE_MAGIC.to_vec();
    let kind: u8 = match state.kind {
        StateKind::Full => 0,
        StateKind::Delta => 1,
    };
    let parts = count_u32(path, state.parts.len(), "parts")?;
    frame(
        path,
        &mut out,
        &[
            &STATE_FORMAT_VERSION.to_le_bytes(),
            &[kind],
            &parts.to_le_bytes(),
        ],
    )?;
    for part in &state.parts {
        encode_part(path, &mut out, part)?;
    }
    Ok(out)
}

fn encode_part(path: &Path, out: &mut Vec<u8>, part: &StatePart) -> Result<()> {
    let name_len = count_u32(path, part.name.len(), "bytes in a part name")?;
    let batches = count_u32(path, part.upserts.len(), "batches in a part")?;
    frame(
        path,
        out,
        &[
            &[TAG_PART],
            &name_len.to_le_bytes(),
            part.name.as_bytes(),
            &(part.deletes.len() as u64).to_le_bytes(),
            &batches.to_le_bytes(),
        ],
    )?;
    let mut keys = part.deletes.as_slice();
    while !keys.is_empty() {
        let mut bytes = 0;
        let take = keys
            .iter()
            .position(|key| {
                bytes += 4 + key.len();
                bytes > DELETE_SECTION_BYTES
            })
            .unwrap_or(keys.len())
            .max(1);
        let (chunk, rest) = keys.split_at(take);
        let mut section = vec![TAG_DELETES];
        section.extend_from_slice(&count_u32(path, chunk.len(), "delete keys")?.to_le_bytes());
        for key in chunk {
            section.extend_from_slice(&count_u32(path, key.len(), "bytes in a key")?.to_le_bytes());
            section.extend_from_slice(key);
        }
        frame(path, out, &[&section])?;
        keys = rest;
    }
    for batch in &part.upserts {
        let ipc = encode_batch(path, batch)?;
        frame(path, out, &[&[TAG_BATCH], &ipc])?;
    }
    Ok(())
}

/// `batch` as an Arrow IPC stream of its own (so every batch may have its own schema).
fn encode_batch(path: &Path, batch: &RecordBatch) -> Result<Vec<u8>> {
    let failed = |e: datafusion::arrow::error::ArrowError| {
        StorageError::format(
            path,
            format!("cannot encode a state batch as Arrow IPC: {e}"),
        )
    };
    let mut writer = StreamWriter::try_new(Vec::new(), &batch.schema()).map_err(failed)?;
    writer.write(batch).map_err(failed)?;
    writer.finish().map_err(failed)?;
    writer.into_inner().map_err(failed)
}

fn frame(path: &Path, out: &mut Vec<u8>, parts: &[&[u8]]) -> Result<()> {
    encode_frame(out, parts).map_err(|e| StorageError::format(path, format!("state section: {e}")))
}

fn count_u32(path: &Path, n: usize, what: &str) -> Result<u32> {
    u32::try_from(n).map_err(|_| StorageError::format(path, format!("too many {what}: {n}")))
}

/// Parses the bytes of state file `path` (named in errors). Never panics on any bytes.
pub fn parse_state_file(path: &Path, bytes: &[u8]) -> Result<OperatorState> {
    if bytes.get(..STATE_MAGIC.len()) != Some(STATE_MAGIC.as_slice()) {
        return Err(StorageError::corrupt(
            path,
            0,
            "not a state file (bad magic)",
        ));
    }
    let mut sections = Sections {
        path,
        bytes,
        pos: STATE_MAGIC.len(),
    };
    let (offset, header) = sections.next("the header")?;
    let mut fields = Fields::new(path, offset, header);
    let version = fields.u32()?;
    if version != STATE_FORMAT_VERSION {
        return Err(StorageError::format(
            path,
            format!("state file format version {version} is not supported (this version reads {STATE_FORMAT_VERSION})"),
        ));
    }
    let kind = match fields.u8()? {
        0 => StateKind::Full,
        1 => StateKind::Delta,
        other => {
            return Err(StorageError::corrupt(
                path,
                offset,
                format!("unknown state kind {other}"),
            ))
        }
    };
    let part_count = fields.u32()?;
    fields.finish()?;
    let mut parts = Vec::new();
    for _ in 0..part_count {
        parts.push(parse_part(&mut sections)?);
    }
    if sections.pos != bytes.len() {
        return Err(StorageError::corrupt(
            path,
            sections.pos as u64,
            "bytes after the last section",
        ));
    }
    Ok(OperatorState { kind, parts })
}

fn parse_part(sections: &mut Sections<'_>) -> Result<StatePart> {
    let path = sections.path;
    let (offset, payload) = sections.next("a part section")?;
    let mut fields = Fields::new(path, offset, payload);
    fields.tag(TAG_PART, "a part section")?;
    let name_len = fields.u32()? as usize;
    let name = String::from_utf8(fields.take(name_len)?.to_vec())
        .map_err(|_| StorageError::corrupt(path, offset, "part name is not UTF-8"))?;
    let delete_count = fields.u64()?;
    let batch_count = fields.u32()?;
    fields.finish()?;
    let mut deletes = Vec::new();
    while (deletes.len() as u64) < delete_count {
        let (offset, payload) = sections.next("a delete-key section")?;
        let mut fields = Fields::new(path, offset, payload);
        fields.tag(TAG_DELETES, "a delete-key section")?;
        let count = fields.u32()?;
        if count == 0 || deletes.len() as u64 + u64::from(count) > delete_count {
            return Err(StorageError::corrupt(
                path,
                offset,
                format!(
                    "a delete-key section of {count} keys does not fit the part's {delete_count}"
                ),
            ));
        }
        for _ in 0..count {
            let len = fields.u32()? as usize;
            deletes.push(fields.take(len)?.to_vec());
        }
        fields.finish()?;
    }
    let mut upserts = Vec::new();
    for _ in 0..batch_count {
        let (offset, payload) = sections.next("a batch section")?;
        let mut fields = Fields::new(path, offset, payload);
        fields.tag(TAG_BATCH, "a batch section")?;
        upserts.push(decode_batch(path, offset, fields.rest())?);
    }
    Ok(StatePart {
        name,
        upserts,
        deletes,
    })
}

/// The one batch of an Arrow IPC stream. Decoded with Arrow's push decoder over the bytes at
/// hand: unlike its stream reader, it never allocates a buffer of a length the (possibly
/// damaged) stream claims, only copies of bytes that exist.
fn decode_batch(path: &Path, offset: u64, ipc: &[u8]) -> Result<RecordBatch> {
    let bad = |e: String| StorageError::corrupt(path, offset, format!("state batch: {e}"));
    let mut decoder = StreamDecoder::new();
    let mut buffer = Buffer::from_slice_ref(ipc);
    let mut batch = None;
    while !buffer.is_empty() {
        if let Some(decoded) = decoder
            .decode(&mut buffer)
            .map_err(|e| bad(e.to_string()))?
        {
            if batch.replace(decoded).is_some() {
                return Err(bad("the Arrow IPC stream holds more than one batch".into()));
            }
        }
    }
    decoder.finish().map_err(|e| bad(e.to_string()))?;
    batch.ok_or_else(|| bad("the Arrow IPC stream holds no batch".into()))
}

/// The frames of a state file, read in order; anything but a whole frame is corruption.
struct Sections<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Sections<'a> {
    /// The next frame's offset and payload; `what` names the expected section in errors.
    fn next(&mut self, what: &str) -> Result<(u64, &'a [u8])> {
        match read_frame_at(self.bytes, self.pos) {
            FrameEvent::Frame { offset, payload } => {
                self.pos += FRAME_HEADER_BYTES + payload.len();
                Ok((offset, payload))
            }
            FrameEvent::End => Err(StorageError::corrupt(
                self.path,
                self.pos as u64,
                format!("truncated: the file ends where {what} should start"),
            )),
            FrameEvent::Torn { offset, reason } => Err(StorageError::corrupt(
                self.path,
                offset,
                format!("truncated: {reason}"),
            )),
            FrameEvent::Corrupt { offset, reason } => {
                Err(StorageError::corrupt(self.path, offset, reason))
            }
        }
    }
}

/// Little-endian fields of one section's payload, bounds-checked.
struct Fields<'a> {
    path: &'a Path,
    offset: u64,
    bytes: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(path: &'a Path, offset: u64, bytes: &'a [u8]) -> Self {
        Self {
            path,
            offset,
            bytes,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.bytes.len() {
            return Err(StorageError::corrupt(
                self.path,
                self.offset,
                "a section is shorter than its fields",
            ));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        let mut b = [0; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64> {
        let mut b = [0; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    fn tag(&mut self, expected: u8, what: &str) -> Result<()> {
        let tag = self.u8()?;
        if tag == expected {
            Ok(())
        } else {
            Err(StorageError::corrupt(
                self.path,
                self.offset,
                format!("expected {what} (tag {expected}), found tag {tag}"),
            ))
        }
    }

    fn rest(self) -> &'a [u8] {
        self.bytes
    }

    fn finish(self) -> Result<()> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(StorageError::corrupt(
                self.path,
                self.offset,
                "a section is longer than its fields",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{BinaryArray, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use laminar_core::state::STATE_KEY_COLUMN;

    use super::*;

    fn batch(keys: &[&str], values: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new(STATE_KEY_COLUMN, DataType::Binary, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let keys: BinaryArray = keys.iter().map(|k| Some(k.as_bytes())).collect();
        RecordBatch::try_new(
            schema,
            vec![Arc::new(keys), Arc::new(Int64Array::from(values.to_vec()))],
        )
        .unwrap()
    }

    fn other_schema_batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new(STATE_KEY_COLUMN, DataType::Binary, false),
            Field::new("s", DataType::Utf8, true),
        ]));
        let keys: BinaryArray = vec![Some(b"k".as_slice())].into_iter().collect();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(keys),
                Arc::new(StringArray::from(vec![None::<&str>])),
            ],
        )
        .unwrap()
    }

    fn delta() -> OperatorState {
        OperatorState {
            kind: StateKind::Delta,
            parts: vec![
                StatePart {
                    name: "groups".into(),
                    upserts: vec![batch(&["a", "b"], &[1, 2]), batch(&[], &[])],
                    deletes: vec![b"x".to_vec(), Vec::new()],
                },
                StatePart::new("meta ü", vec![other_schema_batch()]),
                StatePart::new("empty", vec![]),
            ],
        }
    }

    fn assert_same(a: &OperatorState, b: &OperatorState) {
        assert_eq!(a.kind, b.kind);
        assert_eq!(a.parts.len(), b.parts.len());
        for (pa, pb) in a.parts.iter().zip(&b.parts) {
            assert_eq!(pa.name, pb.name);
            assert_eq!(pa.deletes, pb.deletes);
            assert_eq!(pa.upserts, pb.upserts);
        }
    }

    #[test]
    fn a_state_round_trips_with_a_schema_per_part() {
        let path = Path::new("s.state");
        let state = delta();
        let bytes = encode_state_file(path, &state).unwrap();
        assert_same(&parse_state_file(path, &bytes).unwrap(), &state);
    }

    #[test]
    fn many_delete_keys_span_several_sections() {
        let path = Path::new("s.state");
        let keys: Vec<Vec<u8>> = (0..3_000_u32).map(|i| vec![i as u8; 3_000]).collect();
        let state = OperatorState {
            kind: StateKind::Delta,
            parts: vec![StatePart {
                name: "p".into(),
                upserts: vec![],
                deletes: keys,
            }],
        };
        let bytes = encode_state_file(path, &state).unwrap();
        assert!(bytes.len() > 2 * DELETE_SECTION_BYTES);
        assert_same(&parse_state_file(path, &bytes).unwrap(), &state);
    }

    #[test]
    fn trailing_bytes_and_a_missing_section_are_corruption() {
        let path = Path::new("s.state");
        let bytes = encode_state_file(path, &delta()).unwrap();
        let mut longer = bytes.clone();
        encode_frame(&mut longer, &[b"extra"]).unwrap();
        let err = parse_state_file(path, &longer).unwrap_err();
        assert!(err.to_string().contains("after the last section"), "{err}");
        // Cut exactly after the first part's section: every frame is whole, one is missing.
        let mut pos = STATE_MAGIC.len();
        for _ in 0..2 {
            let FrameEvent::Frame { payload, .. } = read_frame_at(&bytes, pos) else {
                panic!()
            };
            pos += FRAME_HEADER_BYTES + payload.len();
        }
        let err = parse_state_file(path, &bytes[..pos]).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}
