//! The aggregate snapshot file, `snapshots/<encoded stream id>.snap` (format-spec.md §13): an
//! aggregate's state as of one event of its stream, so that loading it replays only the
//! events after that one.
//!
//! It is a cache. Anything wrong with it (checksums, bounds, another stream's or store's
//! file, another state schema, an event the log does not hold) makes the aggregate layer set
//! it aside and replay the stream from its start.

use byteorder::{ByteOrder, LittleEndian as LE};

use super::{DecodeError, crc32, prefix};
use crate::limits::{
    SNAPSHOT_HEADER_BYTES, SNAPSHOT_PAYLOAD_BYTES_MAX, SNAPSHOT_SCHEMA_BYTES_MAX,
    STREAM_ID_BYTES_MAX,
};

/// The first eight bytes of a snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"ANNALSNP";

/// The snapshot file version this build writes and reads.
pub const SNAPSHOT_VERSION: u16 = 1;

const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = OFF_MAGIC + 8;
const OFF_HEADER_BYTES: usize = OFF_VERSION + 2;
const OFF_FLAGS: usize = OFF_HEADER_BYTES + 2;
const OFF_LOG_ID: usize = OFF_FLAGS + 4;
const OFF_STREAM_VERSION: usize = OFF_LOG_ID + 16;
const OFF_SEQ: usize = OFF_STREAM_VERSION + 8;
const OFF_EVENT_ID: usize = OFF_SEQ + 8;
const OFF_STREAM_LEN: usize = OFF_EVENT_ID + 16;
const OFF_SCHEMA_LEN: usize = OFF_STREAM_LEN + 2;
const OFF_PAYLOAD_LEN: usize = OFF_SCHEMA_LEN + 2;
const OFF_BODY_CRC: usize = OFF_PAYLOAD_LEN + 4;
const OFF_RESERVED: usize = OFF_BODY_CRC + 4;
const OFF_CRC: usize = SNAPSHOT_HEADER_BYTES - 4;
const _: () = assert!(OFF_RESERVED + 16 == OFF_CRC);
const _: () = assert!(OFF_CRC == 92);

/// A decoded snapshot file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    /// The store's log id: a snapshot copied from another store is refused.
    pub log_id: [u8; 16],
    /// The stream (aggregate) whose state this is: checked against the stream asked for,
    /// since long ids share hashed file names.
    pub stream_id: String,
    /// The stream version of the last event folded into the state.
    pub stream_version: u64,
    /// The global seq of that event.
    pub seq: u64,
    /// The event id of that event, so a snapshot of events a crash lost is never matched
    /// against different events written later at the same version and seq.
    pub event_id: [u8; 16],
    /// Names the aggregate type and the encoding of its state (for example
    /// `bank.account/1`); a snapshot of another schema is refused.
    pub schema: String,
    /// The encoded state.
    pub payload: Vec<u8>,
}

impl SnapshotFile {
    /// Bytes this snapshot encodes to.
    pub fn encoded_len(&self) -> usize {
        SNAPSHOT_HEADER_BYTES + self.stream_id.len() + self.schema.len() + self.payload.len()
    }

    /// Encodes the file. Fails, writing nothing, when a field is beyond the limits
    /// [`SnapshotFile::decode`] enforces, so the engine never writes what it cannot read.
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        check_len("snapshot stream id length", self.stream_id.len(), 1, STREAM_ID_BYTES_MAX)?;
        check_len("snapshot schema length", self.schema.len(), 1, SNAPSHOT_SCHEMA_BYTES_MAX)?;
        check_len("snapshot payload length", self.payload.len(), 0, SNAPSHOT_PAYLOAD_BYTES_MAX)?;
        let mut out = Vec::with_capacity(self.encoded_len());
        out.resize(SNAPSHOT_HEADER_BYTES, 0);
        out.extend_from_slice(self.stream_id.as_bytes());
        out.extend_from_slice(self.schema.as_bytes());
        out.extend_from_slice(&self.payload);
        let body_crc = crc32(&out[SNAPSHOT_HEADER_BYTES..]);
        let h = &mut out[..SNAPSHOT_HEADER_BYTES];
        h[OFF_MAGIC..OFF_VERSION].copy_from_slice(&SNAPSHOT_MAGIC);
        LE::write_u16(&mut h[OFF_VERSION..OFF_HEADER_BYTES], SNAPSHOT_VERSION);
        LE::write_u16(&mut h[OFF_HEADER_BYTES..OFF_FLAGS], SNAPSHOT_HEADER_BYTES as u16);
        h[OFF_LOG_ID..OFF_STREAM_VERSION].copy_from_slice(&self.log_id);
        LE::write_u64(&mut h[OFF_STREAM_VERSION..OFF_SEQ], self.stream_version);
        LE::write_u64(&mut h[OFF_SEQ..OFF_EVENT_ID], self.seq);
        h[OFF_EVENT_ID..OFF_STREAM_LEN].copy_from_slice(&self.event_id);
        LE::write_u16(&mut h[OFF_STREAM_LEN..OFF_SCHEMA_LEN], self.stream_id.len() as u16);
        LE::write_u16(&mut h[OFF_SCHEMA_LEN..OFF_PAYLOAD_LEN], self.schema.len() as u16);
        LE::write_u32(&mut h[OFF_PAYLOAD_LEN..OFF_BODY_CRC], self.payload.len() as u32);
        LE::write_u32(&mut h[OFF_BODY_CRC..OFF_RESERVED], body_crc);
        let crc = crc32(&h[..OFF_CRC]);
        LE::write_u32(&mut h[OFF_CRC..], crc);
        Ok(out)
    }

    /// Decodes and validates a whole snapshot file, in the order format-spec.md §13 gives.
    /// Lengths are checked against their limits and the buffer before anything is copied.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let h = prefix::<SNAPSHOT_HEADER_BYTES>(buf)?;
        let stored = LE::read_u32(&h[OFF_CRC..]);
        let computed = crc32(&h[..OFF_CRC]);
        if stored != computed {
            return Err(DecodeError::ChecksumMismatch { stored, computed });
        }
        if h[OFF_MAGIC..OFF_VERSION] != SNAPSHOT_MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = LE::read_u16(&h[OFF_VERSION..OFF_HEADER_BYTES]);
        if version != SNAPSHOT_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        if usize::from(LE::read_u16(&h[OFF_HEADER_BYTES..OFF_FLAGS])) != SNAPSHOT_HEADER_BYTES {
            return Err(DecodeError::Inconsistent("snapshot header_bytes"));
        }
        if LE::read_u32(&h[OFF_FLAGS..OFF_LOG_ID]) != 0
            || h[OFF_RESERVED..OFF_CRC].iter().any(|&b| b != 0)
        {
            return Err(DecodeError::ReservedNonZero);
        }
        let stream_len = usize::from(LE::read_u16(&h[OFF_STREAM_LEN..OFF_SCHEMA_LEN]));
        let schema_len = usize::from(LE::read_u16(&h[OFF_SCHEMA_LEN..OFF_PAYLOAD_LEN]));
        let payload_len = LE::read_u32(&h[OFF_PAYLOAD_LEN..OFF_BODY_CRC]) as usize;
        check_len("snapshot stream id length", stream_len, 1, STREAM_ID_BYTES_MAX)?;
        check_len("snapshot schema length", schema_len, 1, SNAPSHOT_SCHEMA_BYTES_MAX)?;
        check_len("snapshot payload length", payload_len, 0, SNAPSHOT_PAYLOAD_BYTES_MAX)?;
        let body = buf.get(SNAPSHOT_HEADER_BYTES..).unwrap_or_default();
        if body.len() != stream_len + schema_len + payload_len {
            return Err(DecodeError::Inconsistent("snapshot file length"));
        }
        let stored = LE::read_u32(&h[OFF_BODY_CRC..OFF_RESERVED]);
        let computed = crc32(body);
        if stored != computed {
            return Err(DecodeError::ChecksumMismatch { stored, computed });
        }
        let (stream_id, rest) = body.split_at(stream_len);
        let (schema, payload) = rest.split_at(schema_len);
        let stream_id = utf8(stream_id, "snapshot stream id is not UTF-8")?;
        let schema = utf8(schema, "snapshot schema is not UTF-8")?;
        let mut log_id = [0u8; 16];
        log_id.copy_from_slice(&h[OFF_LOG_ID..OFF_STREAM_VERSION]);
        let mut event_id = [0u8; 16];
        event_id.copy_from_slice(&h[OFF_EVENT_ID..OFF_STREAM_LEN]);
        Ok(SnapshotFile {
            log_id,
            stream_id,
            stream_version: LE::read_u64(&h[OFF_STREAM_VERSION..OFF_SEQ]),
            seq: LE::read_u64(&h[OFF_SEQ..OFF_EVENT_ID]),
            event_id,
            schema,
            payload: payload.to_vec(),
        })
    }
}

fn utf8(b: &[u8], what: &'static str) -> Result<String, DecodeError> {
    std::str::from_utf8(b).map(str::to_owned).map_err(|_| DecodeError::Inconsistent(what))
}

fn check_len(field: &'static str, len: usize, min: usize, max: usize) -> Result<(), DecodeError> {
    if len < min || len > max {
        return Err(DecodeError::OutOfBounds { field, value: len as u64, max: max as u64 });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SnapshotFile {
        SnapshotFile {
            log_id: [7; 16],
            stream_id: "account-42".into(),
            stream_version: 9,
            seq: 1234,
            event_id: [3; 16],
            schema: "bank.account/1".into(),
            payload: br#"{"balance":100}"#.to_vec(),
        }
    }

    #[test]
    fn round_trip() {
        let bytes = sample().encode().unwrap();
        assert_eq!(bytes.len(), sample().encoded_len());
        assert_eq!(SnapshotFile::decode(&bytes), Ok(sample()));
        let mut empty = sample();
        empty.payload.clear();
        assert_eq!(SnapshotFile::decode(&empty.encode().unwrap()), Ok(empty));
    }

    /// The layout of format-spec.md §13, byte for byte.
    #[test]
    fn spec_layout() {
        let b = sample().encode().unwrap();
        assert_eq!(&b[0..8], b"ANNALSNP");
        assert_eq!(&b[8..12], &[1, 0, 96, 0]);
        assert_eq!(&b[12..16], &[0; 4]);
        assert_eq!(&b[16..32], &[7; 16]);
        assert_eq!(LE::read_u64(&b[32..40]), 9);
        assert_eq!(LE::read_u64(&b[40..48]), 1234);
        assert_eq!(&b[48..64], &[3; 16]);
        assert_eq!(LE::read_u16(&b[64..66]), 10);
        assert_eq!(LE::read_u16(&b[66..68]), 14);
        assert_eq!(LE::read_u32(&b[68..72]), 15);
        assert_eq!(LE::read_u32(&b[72..76]), crc32(&b[96..]));
        assert_eq!(&b[76..92], &[0; 16]);
        assert_eq!(LE::read_u32(&b[92..96]), crc32(&b[..92]));
        assert_eq!(&b[96..106], b"account-42");
    }

    #[test]
    fn every_bit_flip_and_truncation_is_rejected() {
        let good = sample().encode().unwrap();
        for bit in 0..good.len() * 8 {
            let mut b = good.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(SnapshotFile::decode(&b).is_err(), "flip of bit {bit} went unnoticed");
        }
        for n in 0..good.len() {
            assert!(SnapshotFile::decode(&good[..n]).is_err(), "cut at {n}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(SnapshotFile::decode(&longer).is_err());
        assert!(SnapshotFile::decode(&vec![0; good.len()]).is_err(), "all zero");
    }

    #[test]
    fn out_of_limit_fields_are_not_written() {
        let mut bad = sample();
        bad.stream_id.clear();
        assert!(bad.encode().is_err());
        let mut bad = sample();
        bad.schema = "x".repeat(SNAPSHOT_SCHEMA_BYTES_MAX + 1);
        assert!(bad.encode().is_err());
        let mut bad = sample();
        bad.stream_id = "x".repeat(STREAM_ID_BYTES_MAX + 1);
        assert!(bad.encode().is_err());
    }
}
