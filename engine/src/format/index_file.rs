//! The sparse offset index sidecar of one segment (format-spec.md §5).
//!
//! The index is a cache: anything wrong with it makes the reader rebuild it from the segment.
//! Even a well-formed index is never trusted on its own: every entry used for a read is
//! validated against the batch header it points to.

use byteorder::{ByteOrder, LittleEndian as LE};

use super::{DecodeError, crc32, prefix};
use crate::limits::{FRAME_ALIGN_BYTES, INDEX_ENTRIES_MAX, INDEX_ENTRY_BYTES, INDEX_HEADER_BYTES};

/// The first eight bytes of every index file.
pub const INDEX_MAGIC: [u8; 8] = *b"ANNALIDX";

/// The index format version this build writes and reads.
const INDEX_VERSION: u16 = 1;

const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = OFF_MAGIC + 8;
const OFF_HEADER_BYTES: usize = OFF_VERSION + 2;
const OFF_COUNT: usize = OFF_HEADER_BYTES + 2;
const OFF_LOG_ID: usize = OFF_COUNT + 4;
const OFF_BASE: usize = OFF_LOG_ID + 16;
const OFF_END_OFFSET: usize = OFF_BASE + 8;
const OFF_END_SEQ: usize = OFF_END_OFFSET + 8;
const OFF_ENTRIES_CRC: usize = OFF_END_SEQ + 8;
const OFF_CRC: usize = OFF_ENTRIES_CRC + 4;
const _: () = assert!(OFF_CRC + 4 == INDEX_HEADER_BYTES);

/// One sparse index entry: the batch whose first record is `seq` starts at `offset` and was
/// written at `timestamp_us` (so a time can be found without a scan).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct IndexEntry {
    /// First seq of the batch.
    pub seq: u64,
    /// File offset of the batch's frame header.
    pub offset: u64,
    /// The batch's frame timestamp, microseconds since the Unix epoch.
    pub timestamp_us: u64,
}

/// The decoded index header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexHeader {
    /// The log id of the store the segment belongs to.
    pub log_id: [u8; 16],
    /// Base seq of the segment this index describes.
    pub segment_base: u64,
    /// Offset of the seal or close frame the index was written at: it covers all batches
    /// before it.
    pub end_offset: u64,
    /// The next seq at `end_offset`.
    pub end_seq: u64,
}

/// Encodes an index file: header then entries.
pub fn encode_index(header: &IndexHeader, entries: &[IndexEntry]) -> Vec<u8> {
    assert!(entries.len() <= INDEX_ENTRIES_MAX as usize);
    let mut out = vec![0u8; INDEX_HEADER_BYTES + entries.len() * INDEX_ENTRY_BYTES];
    let (h, body) = out.split_at_mut(INDEX_HEADER_BYTES);
    for (e, chunk) in entries.iter().zip(body.chunks_exact_mut(INDEX_ENTRY_BYTES)) {
        LE::write_u64(&mut chunk[..8], e.seq);
        LE::write_u64(&mut chunk[8..16], e.offset);
        LE::write_u64(&mut chunk[16..], e.timestamp_us);
    }
    h[OFF_MAGIC..OFF_VERSION].copy_from_slice(&INDEX_MAGIC);
    LE::write_u16(&mut h[OFF_VERSION..OFF_HEADER_BYTES], INDEX_VERSION);
    LE::write_u16(&mut h[OFF_HEADER_BYTES..OFF_COUNT], INDEX_HEADER_BYTES as u16);
    LE::write_u32(&mut h[OFF_COUNT..OFF_LOG_ID], entries.len() as u32);
    h[OFF_LOG_ID..OFF_BASE].copy_from_slice(&header.log_id);
    LE::write_u64(&mut h[OFF_BASE..OFF_END_OFFSET], header.segment_base);
    LE::write_u64(&mut h[OFF_END_OFFSET..OFF_END_SEQ], header.end_offset);
    LE::write_u64(&mut h[OFF_END_SEQ..OFF_ENTRIES_CRC], header.end_seq);
    LE::write_u32(&mut h[OFF_ENTRIES_CRC..OFF_CRC], crc32(body));
    let crc = crc32(&h[..OFF_CRC]);
    LE::write_u32(&mut h[OFF_CRC..], crc);
    out
}

/// Decodes a whole index file and checks its internal consistency: checksums, entry count
/// against the file size and `INDEX_ENTRIES_MAX`, entries strictly increasing in both seq and
/// offset, all within the segment's range. The caller checks log id and segment base.
pub fn decode_index(buf: &[u8]) -> Result<(IndexHeader, Vec<IndexEntry>), DecodeError> {
    let h = prefix::<INDEX_HEADER_BYTES>(buf)?;
    let stored = LE::read_u32(&h[OFF_CRC..]);
    let computed = crc32(&h[..OFF_CRC]);
    if stored != computed {
        return Err(DecodeError::ChecksumMismatch { stored, computed });
    }
    if h[OFF_MAGIC..OFF_VERSION] != INDEX_MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = LE::read_u16(&h[OFF_VERSION..OFF_HEADER_BYTES]);
    if version != INDEX_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    if usize::from(LE::read_u16(&h[OFF_HEADER_BYTES..OFF_COUNT])) != INDEX_HEADER_BYTES {
        return Err(DecodeError::Inconsistent("index header_bytes"));
    }
    let count = LE::read_u32(&h[OFF_COUNT..OFF_LOG_ID]);
    if count > INDEX_ENTRIES_MAX {
        return Err(DecodeError::OutOfBounds {
            field: "index entry count",
            value: count.into(),
            max: INDEX_ENTRIES_MAX.into(),
        });
    }
    let body = buf.get(INDEX_HEADER_BYTES..).unwrap_or_default();
    let expected = count as usize * INDEX_ENTRY_BYTES;
    if body.len() != expected {
        return Err(DecodeError::Inconsistent("index file size does not match its entry count"));
    }
    let stored = LE::read_u32(&h[OFF_ENTRIES_CRC..OFF_CRC]);
    let computed = crc32(body);
    if stored != computed {
        return Err(DecodeError::ChecksumMismatch { stored, computed });
    }
    let mut log_id = [0u8; 16];
    log_id.copy_from_slice(&h[OFF_LOG_ID..OFF_BASE]);
    let header = IndexHeader {
        log_id,
        segment_base: LE::read_u64(&h[OFF_BASE..OFF_END_OFFSET]),
        end_offset: LE::read_u64(&h[OFF_END_OFFSET..OFF_END_SEQ]),
        end_seq: LE::read_u64(&h[OFF_END_SEQ..OFF_ENTRIES_CRC]),
    };
    if !header.end_offset.is_multiple_of(FRAME_ALIGN_BYTES as u64) {
        return Err(DecodeError::Inconsistent("index end offset is not 8-byte aligned"));
    }
    if header.end_seq < header.segment_base {
        return Err(DecodeError::Inconsistent("index end seq before the segment base"));
    }
    // The count was bounded above and matched against the bytes present, so this allocation
    // is at most INDEX_ENTRIES_MAX entries and never larger than the input.
    let mut entries = Vec::with_capacity(count as usize);
    let mut prev: Option<IndexEntry> = None;
    for chunk in body.chunks_exact(INDEX_ENTRY_BYTES) {
        let e = IndexEntry {
            seq: LE::read_u64(&chunk[..8]),
            offset: LE::read_u64(&chunk[8..16]),
            timestamp_us: LE::read_u64(&chunk[16..]),
        };
        let in_range = e.seq >= header.segment_base
            && e.seq < header.end_seq
            && e.offset < header.end_offset
            && e.offset.is_multiple_of(FRAME_ALIGN_BYTES as u64);
        let increasing = prev.is_none_or(|p| {
            e.seq > p.seq && e.offset > p.offset && e.timestamp_us >= p.timestamp_us
        });
        if !in_range || !increasing {
            return Err(DecodeError::Inconsistent("index entries out of order or out of range"));
        }
        entries.push(e);
        prev = Some(e);
    }
    Ok((header, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (IndexHeader, Vec<IndexEntry>) {
        let h = IndexHeader { log_id: [3; 16], segment_base: 100, end_offset: 9000, end_seq: 180 };
        let e = vec![
            IndexEntry { seq: 100, offset: 64, timestamp_us: 7 },
            IndexEntry { seq: 140, offset: 4208, timestamp_us: 7 },
            IndexEntry { seq: 170, offset: 8504, timestamp_us: 9 },
        ];
        (h, e)
    }

    #[test]
    fn round_trip() {
        let (h, e) = sample();
        assert_eq!(decode_index(&encode_index(&h, &e)), Ok((h, e)));
    }

    #[test]
    fn every_bit_flip_and_truncation_is_rejected() {
        let (h, e) = sample();
        let good = encode_index(&h, &e);
        for bit in 0..good.len() * 8 {
            let mut b = good.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_index(&b).is_err(), "flip of bit {bit} went unnoticed");
        }
        for n in 0..good.len() {
            assert!(decode_index(&good[..n]).is_err());
        }
    }

    #[test]
    fn huge_count_rejected_without_allocating() {
        let (h, e) = sample();
        let mut b = encode_index(&h, &e);
        LE::write_u32(&mut b[OFF_COUNT..OFF_LOG_ID], u32::MAX);
        let crc = crc32(&b[..OFF_CRC]);
        LE::write_u32(&mut b[OFF_CRC..INDEX_HEADER_BYTES], crc);
        assert!(matches!(decode_index(&b), Err(DecodeError::OutOfBounds { .. })));
    }
}
