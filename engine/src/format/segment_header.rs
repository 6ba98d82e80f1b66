//! The fixed 64-byte header at the start of every segment file (format-spec.md §3).

use byteorder::{ByteOrder, LittleEndian as LE};

use super::{DecodeError, crc32, prefix};
use crate::limits::SEGMENT_HEADER_BYTES;

/// The first eight bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"ANNALSEG";

/// The on-disk format version this build writes and reads (format-spec.md §8).
pub const FORMAT_VERSION: u16 = 1;

const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = OFF_MAGIC + 8;
const OFF_HEADER_BYTES: usize = OFF_VERSION + 2;
const OFF_FLAGS: usize = OFF_HEADER_BYTES + 2;
const OFF_LOG_ID: usize = OFF_FLAGS + 4;
const OFF_BASE_SEQ: usize = OFF_LOG_ID + 16;
const OFF_CREATED: usize = OFF_BASE_SEQ + 8;
const OFF_RESERVED: usize = OFF_CREATED + 8;
const OFF_CRC: usize = SEGMENT_HEADER_BYTES - 4;
const _: () = assert!(OFF_RESERVED + 12 == OFF_CRC);
const _: () = assert!(OFF_CRC == 60);

/// The decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Random id shared by every segment of one store; a segment from another store is foreign.
    pub log_id: [u8; 16],
    /// Sequence number of the first record this segment may hold; also its file name.
    pub base_seq: u64,
    /// Creation time, milliseconds since the Unix epoch (informational).
    pub created_unix_ms: u64,
}

impl SegmentHeader {
    /// Encodes the header into its 64 bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut b = [0u8; SEGMENT_HEADER_BYTES];
        b[OFF_MAGIC..OFF_VERSION].copy_from_slice(&SEGMENT_MAGIC);
        LE::write_u16(&mut b[OFF_VERSION..OFF_HEADER_BYTES], FORMAT_VERSION);
        LE::write_u16(&mut b[OFF_HEADER_BYTES..OFF_FLAGS], SEGMENT_HEADER_BYTES as u16);
        b[OFF_LOG_ID..OFF_BASE_SEQ].copy_from_slice(&self.log_id);
        LE::write_u64(&mut b[OFF_BASE_SEQ..OFF_CREATED], self.base_seq);
        LE::write_u64(&mut b[OFF_CREATED..OFF_RESERVED], self.created_unix_ms);
        let crc = crc32(&b[..OFF_CRC]);
        LE::write_u32(&mut b[OFF_CRC..], crc);
        b
    }

    /// Decodes and validates a header from the start of `buf`.
    ///
    /// The checksum is checked first, then the magic, version, size and reserved fields.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let b = prefix::<SEGMENT_HEADER_BYTES>(buf)?;
        let stored = LE::read_u32(&b[OFF_CRC..]);
        let computed = crc32(&b[..OFF_CRC]);
        if stored != computed {
            return Err(DecodeError::ChecksumMismatch { stored, computed });
        }
        if b[OFF_MAGIC..OFF_VERSION] != SEGMENT_MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = LE::read_u16(&b[OFF_VERSION..OFF_HEADER_BYTES]);
        if version != FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        if usize::from(LE::read_u16(&b[OFF_HEADER_BYTES..OFF_FLAGS])) != SEGMENT_HEADER_BYTES {
            return Err(DecodeError::Inconsistent("segment header_bytes"));
        }
        if LE::read_u32(&b[OFF_FLAGS..OFF_LOG_ID]) != 0
            || b[OFF_RESERVED..OFF_CRC].iter().any(|&x| x != 0)
        {
            return Err(DecodeError::ReservedNonZero);
        }
        let mut log_id = [0u8; 16];
        log_id.copy_from_slice(&b[OFF_LOG_ID..OFF_BASE_SEQ]);
        Ok(SegmentHeader {
            log_id,
            base_seq: LE::read_u64(&b[OFF_BASE_SEQ..OFF_CREATED]),
            created_unix_ms: LE::read_u64(&b[OFF_CREATED..OFF_RESERVED]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = SegmentHeader { log_id: [7; 16], base_seq: 42, created_unix_ms: 1_700_000_000_000 };
        assert_eq!(SegmentHeader::decode(&h.encode()), Ok(h));
    }

    #[test]
    fn all_zero_never_validates() {
        assert!(matches!(
            SegmentHeader::decode(&[0u8; SEGMENT_HEADER_BYTES]),
            Err(DecodeError::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let h = SegmentHeader { log_id: [0xA5; 16], base_seq: 1 << 40, created_unix_ms: 9 };
        let good = h.encode();
        for bit in 0..SEGMENT_HEADER_BYTES * 8 {
            let mut b = good;
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(SegmentHeader::decode(&b).is_err(), "flip of bit {bit} went unnoticed");
        }
    }

    #[test]
    fn short_buffer_is_truncated_not_panic() {
        let good = SegmentHeader { log_id: [1; 16], base_seq: 0, created_unix_ms: 0 }.encode();
        for n in 0..SEGMENT_HEADER_BYTES {
            assert!(matches!(
                SegmentHeader::decode(&good[..n]),
                Err(DecodeError::Truncated { .. })
            ));
        }
    }
}
