//! The record framing every file kind uses: `[u32 LE payload length][u32 LE CRC32C of the
//! payload][payload]`.
//!
//! Invariants: a payload is never empty (so a run of zero bytes, what a filesystem may leave
//! after a power loss, never reads as a record) and never longer than
//! [`MAX_FRAME_PAYLOAD_BYTES`]. Reading a frame tells apart a clean end of file, a torn
//! record (the file ends inside it: what an interrupted append leaves) and a corrupt one
//! (checksum mismatch, impossible length). Whether a torn record may end a file is the
//! caller's decision: only a write-ahead log's last segment allows it, and it uses
//! [`find_frame_after`] to tell a torn tail from damage in the middle of the file.

/// Bytes of a frame header: payload length and checksum.
pub const FRAME_HEADER_BYTES: usize = 8;

/// The largest payload a frame may hold. A length above it is read as corruption; writers
/// refuse larger payloads before writing anything.
pub const MAX_FRAME_PAYLOAD_BYTES: usize = 1 << 30;

/// A payload too large to frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTooLarge {
    /// The payload's bytes.
    pub bytes: usize,
}

impl std::fmt::Display for FrameTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.bytes == 0 {
            write!(f, "an empty record cannot be framed")
        } else {
            write!(
                f,
                "a record of {} bytes exceeds the maximum of {MAX_FRAME_PAYLOAD_BYTES} bytes",
                self.bytes
            )
        }
    }
}

/// Appends one frame to `out` whose payload is `parts` concatenated (so a caller can frame a
/// header and a body without copying them together first).
pub fn encode_frame(out: &mut Vec<u8>, parts: &[&[u8]]) -> Result<(), FrameTooLarge> {
    let bytes: usize = parts.iter().map(|p| p.len()).sum();
    if bytes == 0 || bytes > MAX_FRAME_PAYLOAD_BYTES {
        return Err(FrameTooLarge { bytes });
    }
    let crc = parts
        .iter()
        .fold(0_u32, |crc, part| crc32c::crc32c_append(crc, part));
    out.reserve(FRAME_HEADER_BYTES + bytes);
    // `bytes` <= MAX_FRAME_PAYLOAD_BYTES < u32::MAX, checked above.
    out.extend_from_slice(&(bytes as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
    Ok(())
}

/// What is found at a position of a file's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameEvent<'a> {
    /// A whole frame with a matching checksum.
    Frame {
        /// Where the frame's header starts.
        offset: u64,
        /// Its payload.
        payload: &'a [u8],
    },
    /// The position is the end of the file.
    End,
    /// The file ends inside the frame starting at `offset`.
    Torn {
        /// Where the incomplete frame starts.
        offset: u64,
        /// What is missing.
        reason: String,
    },
    /// The frame starting at `offset` is damaged.
    Corrupt {
        /// Where the damaged frame starts.
        offset: u64,
        /// The failed check.
        reason: String,
    },
}

/// The frame at byte `pos` of `bytes`, classified.
pub fn read_frame_at(bytes: &[u8], pos: usize) -> FrameEvent<'_> {
    let offset = pos as u64;
    let Some(rest) = bytes.get(pos..) else {
        return FrameEvent::Corrupt {
            offset,
            reason: format!("position {pos} is past the end of the file"),
        };
    };
    if rest.is_empty() {
        return FrameEvent::End;
    }
    let Some((len, crc)) = header(rest) else {
        return FrameEvent::Torn {
            offset,
            reason: format!(
                "the file ends inside a record header ({} of {FRAME_HEADER_BYTES} bytes)",
                rest.len()
            ),
        };
    };
    if len == 0 {
        return FrameEvent::Corrupt {
            offset,
            reason: "zero-length record (never written)".into(),
        };
    }
    if len > MAX_FRAME_PAYLOAD_BYTES {
        return FrameEvent::Corrupt {
            offset,
            reason: format!(
                "record length {len} exceeds the maximum of {MAX_FRAME_PAYLOAD_BYTES} bytes"
            ),
        };
    }
    let body = &rest[FRAME_HEADER_BYTES..];
    let Some(payload) = body.get(..len) else {
        return FrameEvent::Torn {
            offset,
            reason: format!(
                "the file ends inside a record of {len} bytes ({} present)",
                body.len()
            ),
        };
    };
    if crc32c::crc32c(payload) != crc {
        return FrameEvent::Corrupt {
            offset,
            reason: "checksum mismatch".into(),
        };
    }
    FrameEvent::Frame { offset, payload }
}

/// The payload length and checksum of the header at the start of `rest`, if it is whole.
fn header(rest: &[u8]) -> Option<(usize, u32)> {
    let len = u32::from_le_bytes(rest.get(0..4)?.try_into().ok()?);
    let crc = u32::from_le_bytes(rest.get(4..8)?.try_into().ok()?);
    Some((len as usize, crc))
}

/// The start of the first whole frame with a matching checksum that begins after byte
/// `from`, among frames whose payload `plausible` accepts (checked before the checksum, so
/// the caller's cheap test, e.g. "starts with a sequence number in range", filters
/// candidates before the costly one).
///
/// This tells a torn tail from damage in the middle of a file: an append that was cut short
/// is the last thing written, so nothing valid follows it; a damaged record followed by a
/// valid one is corruption. A random match needs 32 checksum bits to agree by chance.
pub fn find_frame_after(
    bytes: &[u8],
    from: usize,
    plausible: impl Fn(&[u8]) -> bool,
) -> Option<usize> {
    let last_start = bytes.len().checked_sub(FRAME_HEADER_BYTES + 1)?;
    (from.saturating_add(1)..=last_start).find(|&start| {
        let rest = &bytes[start..];
        let Some((len, crc)) = header(rest) else {
            return false;
        };
        if len == 0 || len > MAX_FRAME_PAYLOAD_BYTES {
            return false;
        }
        let Some(payload) = rest[FRAME_HEADER_BYTES..].get(..len) else {
            return false;
        };
        plausible(payload) && crc32c::crc32c(payload) == crc
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            encode_frame(&mut out, &[p]).unwrap();
        }
        out
    }

    fn read_all(bytes: &[u8]) -> (Vec<Vec<u8>>, FrameEvent<'_>) {
        let mut pos = 0;
        let mut payloads = Vec::new();
        loop {
            match read_frame_at(bytes, pos) {
                FrameEvent::Frame { payload, .. } => {
                    pos += FRAME_HEADER_BYTES + payload.len();
                    payloads.push(payload.to_vec());
                }
                other => return (payloads, other),
            }
        }
    }

    #[test]
    fn frames_round_trip_and_end_cleanly() {
        let bytes = framed(&[b"one", b"two two", b"3"]);
        let (payloads, end) = read_all(&bytes);
        assert_eq!(
            payloads,
            vec![b"one".to_vec(), b"two two".to_vec(), b"3".to_vec()]
        );
        assert_eq!(end, FrameEvent::End);
    }

    #[test]
    fn a_frame_of_several_parts_reads_as_their_concatenation() {
        let mut bytes = Vec::new();
        encode_frame(&mut bytes, &[b"head", b"", b"body"]).unwrap();
        assert_eq!(bytes, framed(&[b"headbody"]));
    }

    #[test]
    fn empty_payloads_are_refused() {
        let mut out = Vec::new();
        assert_eq!(
            encode_frame(&mut out, &[b""]),
            Err(FrameTooLarge { bytes: 0 })
        );
        assert!(out.is_empty());
    }

    #[test]
    fn a_file_ending_inside_a_header_or_payload_is_torn() {
        let bytes = framed(&[b"first", b"second record"]);
        let second = FRAME_HEADER_BYTES + 5;
        for cut in second + 1..bytes.len() {
            let (payloads, end) = read_all(&bytes[..cut]);
            assert_eq!(payloads, vec![b"first".to_vec()], "cut at {cut}");
            assert!(
                matches!(end, FrameEvent::Torn { offset, .. } if offset == second as u64),
                "cut at {cut}: {end:?}"
            );
        }
    }

    #[test]
    fn a_flipped_bit_is_a_checksum_mismatch_or_an_impossible_length() {
        let bytes = framed(&[b"first", b"second record"]);
        for byte in 0..bytes.len() {
            for bit in 0..8 {
                let mut damaged = bytes.clone();
                damaged[byte] ^= 1 << bit;
                let (payloads, end) = read_all(&damaged);
                // Only the damaged record and what follows are lost, never a wrong payload.
                let expected: &[&[u8]] = if byte < FRAME_HEADER_BYTES + 5 {
                    &[]
                } else {
                    &[b"first"]
                };
                assert_eq!(payloads, expected, "bit {bit} of byte {byte}");
                assert!(
                    matches!(end, FrameEvent::Corrupt { .. } | FrameEvent::Torn { .. }),
                    "bit {bit} of byte {byte}: {end:?}"
                );
            }
        }
    }

    #[test]
    fn zero_bytes_never_read_as_a_record() {
        let zeros = vec![0_u8; 64];
        assert!(matches!(
            read_frame_at(&zeros, 0),
            FrameEvent::Corrupt { .. }
        ));
        assert_eq!(find_frame_after(&zeros, 0, |_| true), None);
    }

    #[test]
    fn a_length_beyond_the_maximum_is_corrupt_even_at_the_end() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(u32::MAX).to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
        assert!(matches!(
            read_frame_at(&bytes, 0),
            FrameEvent::Corrupt { .. }
        ));
    }

    #[test]
    fn a_valid_frame_after_damage_is_found() {
        let mut bytes = framed(&[b"first", b"second", b"third"]);
        bytes[FRAME_HEADER_BYTES + 1] ^= 0x10;
        let second = FRAME_HEADER_BYTES + 5;
        assert_eq!(find_frame_after(&bytes, 0, |_| true), Some(second));
        assert_eq!(
            find_frame_after(&bytes, 0, |p| p.starts_with(b"th")),
            Some(second + FRAME_HEADER_BYTES + 6)
        );
        assert_eq!(
            find_frame_after(&bytes, second + 1, |p| p == b"second"),
            None
        );
    }
}
