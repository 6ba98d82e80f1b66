//! The log markers `log.start` and `log.truncate` (format-spec.md §16): two small sidecars,
//! each replaced atomically, that make purge and truncate crash-safe.

use byteorder::{ByteOrder, LittleEndian as LE};

use super::{DecodeError, crc32, prefix};
use crate::limits::LOG_MARKER_BYTES;

/// The first eight bytes of a log marker.
pub const LOG_MARKER_MAGIC: [u8; 8] = *b"ANNALMRK";

const LOG_MARKER_VERSION: u16 = 1;

const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = OFF_MAGIC + 8;
const OFF_KIND: usize = OFF_VERSION + 2;
const OFF_FLAGS: usize = OFF_KIND + 2;
const OFF_LOG_ID: usize = OFF_FLAGS + 4;
const OFF_SEQ: usize = OFF_LOG_ID + 16;
const OFF_RESERVED: usize = OFF_SEQ + 8;
const OFF_CRC: usize = LOG_MARKER_BYTES - 4;
const _: () = assert!(OFF_RESERVED + 4 == OFF_CRC);
const _: () = assert!(OFF_CRC == 44);

/// What a log marker records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogMarkerKind {
    /// `log.start`: the log's first seq after a purge.
    Start,
    /// `log.truncate`: a truncation that must be completed before the log is used.
    Truncate,
}

impl LogMarkerKind {
    fn code(self) -> u16 {
        match self {
            LogMarkerKind::Start => 1,
            LogMarkerKind::Truncate => 2,
        }
    }
}

/// A decoded log marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogMarker {
    /// Which marker.
    pub kind: LogMarkerKind,
    /// The log id of the store it belongs to.
    pub log_id: [u8; 16],
    /// For `Start`, the first seq the log holds; for `Truncate`, the first seq dropped.
    pub seq: u64,
}

impl LogMarker {
    /// Encodes the marker into its 48 bytes.
    pub fn encode(&self) -> [u8; LOG_MARKER_BYTES] {
        let mut b = [0u8; LOG_MARKER_BYTES];
        b[OFF_MAGIC..OFF_VERSION].copy_from_slice(&LOG_MARKER_MAGIC);
        LE::write_u16(&mut b[OFF_VERSION..OFF_KIND], LOG_MARKER_VERSION);
        LE::write_u16(&mut b[OFF_KIND..OFF_FLAGS], self.kind.code());
        b[OFF_LOG_ID..OFF_SEQ].copy_from_slice(&self.log_id);
        LE::write_u64(&mut b[OFF_SEQ..OFF_RESERVED], self.seq);
        let crc = crc32(&b[..OFF_CRC]);
        LE::write_u32(&mut b[OFF_CRC..], crc);
        b
    }

    /// Decodes and validates a marker of the `expected` kind: exactly 48 bytes, checksum
    /// first, then magic, version, kind and reserved bytes.
    pub fn decode(buf: &[u8], expected: LogMarkerKind) -> Result<Self, DecodeError> {
        let b = prefix::<LOG_MARKER_BYTES>(buf)?;
        if buf.len() != LOG_MARKER_BYTES {
            return Err(DecodeError::Inconsistent("log marker length"));
        }
        let stored = LE::read_u32(&b[OFF_CRC..]);
        let computed = crc32(&b[..OFF_CRC]);
        if stored != computed {
            return Err(DecodeError::ChecksumMismatch { stored, computed });
        }
        if b[OFF_MAGIC..OFF_VERSION] != LOG_MARKER_MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = LE::read_u16(&b[OFF_VERSION..OFF_KIND]);
        if version != LOG_MARKER_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        if LE::read_u16(&b[OFF_KIND..OFF_FLAGS]) != expected.code() {
            return Err(DecodeError::Inconsistent("log marker kind"));
        }
        if b[OFF_FLAGS..OFF_LOG_ID].iter().chain(&b[OFF_RESERVED..OFF_CRC]).any(|&x| x != 0) {
            return Err(DecodeError::ReservedNonZero);
        }
        let mut log_id = [0u8; 16];
        log_id.copy_from_slice(&b[OFF_LOG_ID..OFF_SEQ]);
        Ok(LogMarker { kind: expected, log_id, seq: LE::read_u64(&b[OFF_SEQ..OFF_RESERVED]) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_flipped_bit_is_rejected() {
        let m = LogMarker { kind: LogMarkerKind::Truncate, log_id: [7; 16], seq: 4711 };
        let b = m.encode();
        assert_eq!(LogMarker::decode(&b, LogMarkerKind::Truncate), Ok(m));
        assert!(LogMarker::decode(&b, LogMarkerKind::Start).is_err());
        assert!(LogMarker::decode(&b[..47], LogMarkerKind::Truncate).is_err());
        for bit in 0..LOG_MARKER_BYTES * 8 {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(LogMarker::decode(&c, LogMarkerKind::Truncate).is_err(), "bit {bit}");
        }
    }
}
