//! The projection checkpoint file, `projections/<encoded name>.ckpt` (format-spec.md §14):
//! how far a projection got (every event below `position` was applied), the projection's
//! version, and, for exactly-once projections, the projection's own state as of that
//! position, so that view and position are replaced together by one atomic write.
//!
//! It is derived data. Anything wrong with it (checksums, bounds, another store's id, another
//! projection's name, a position beyond the log) makes the runner start the projection from
//! seq 0.

use byteorder::{ByteOrder, LittleEndian as LE};

use super::{DecodeError, crc32, prefix};
use crate::limits::{
    PROJECTION_CHECKPOINT_HEADER_BYTES, PROJECTION_NAME_BYTES_MAX, PROJECTION_STATE_BYTES_MAX,
};

/// The first eight bytes of a projection checkpoint.
pub const PROJECTION_CHECKPOINT_MAGIC: [u8; 8] = *b"ANNALPCK";

const VERSION: u16 = 1;
/// Flag bit: the file carries the projection's state.
const FLAG_STATE: u32 = 1;

const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = OFF_MAGIC + 8;
const OFF_HEADER_BYTES: usize = OFF_VERSION + 2;
const OFF_FLAGS: usize = OFF_HEADER_BYTES + 2;
const OFF_LOG_ID: usize = OFF_FLAGS + 4;
const OFF_POSITION: usize = OFF_LOG_ID + 16;
const OFF_PROJ_VERSION: usize = OFF_POSITION + 8;
const OFF_NAME_BYTES: usize = OFF_PROJ_VERSION + 4;
const OFF_RESERVED: usize = OFF_NAME_BYTES + 2;
const OFF_STATE_BYTES: usize = OFF_RESERVED + 2;
const OFF_BODY_CRC: usize = OFF_STATE_BYTES + 8;
const OFF_CRC: usize = OFF_BODY_CRC + 4;
const _: () = assert!(OFF_CRC + 4 == PROJECTION_CHECKPOINT_HEADER_BYTES);

/// A decoded projection checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionCheckpoint {
    /// The store's log id.
    pub log_id: [u8; 16],
    /// The projection's name (UTF-8, 1..=`PROJECTION_NAME_BYTES_MAX` bytes).
    pub name: String,
    /// Every event with a seq below this was applied (or filtered out); none at or above it.
    pub position: u64,
    /// The projection's version when the checkpoint was written.
    pub projection_version: u32,
    /// The projection's state as of `position` (exactly-once projections), or `None`.
    pub state: Option<Vec<u8>>,
}

impl ProjectionCheckpoint {
    /// Encodes the checkpoint file. Panics if the name or state break their limits (the
    /// runner checks both first: the engine never writes what it could not read back).
    pub fn encode(&self) -> Vec<u8> {
        assert!(!self.name.is_empty() && self.name.len() <= PROJECTION_NAME_BYTES_MAX);
        let state = self.state.as_deref().unwrap_or_default();
        assert!(state.len() as u64 <= PROJECTION_STATE_BYTES_MAX);
        let mut out = vec![0u8; PROJECTION_CHECKPOINT_HEADER_BYTES];
        out[OFF_MAGIC..OFF_VERSION].copy_from_slice(&PROJECTION_CHECKPOINT_MAGIC);
        LE::write_u16(&mut out[OFF_VERSION..], VERSION);
        LE::write_u16(&mut out[OFF_HEADER_BYTES..], PROJECTION_CHECKPOINT_HEADER_BYTES as u16);
        let flags = if self.state.is_some() { FLAG_STATE } else { 0 };
        LE::write_u32(&mut out[OFF_FLAGS..], flags);
        out[OFF_LOG_ID..OFF_POSITION].copy_from_slice(&self.log_id);
        LE::write_u64(&mut out[OFF_POSITION..], self.position);
        LE::write_u32(&mut out[OFF_PROJ_VERSION..], self.projection_version);
        LE::write_u16(&mut out[OFF_NAME_BYTES..], self.name.len() as u16);
        LE::write_u64(&mut out[OFF_STATE_BYTES..], state.len() as u64);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(self.name.as_bytes());
        hasher.update(state);
        LE::write_u32(&mut out[OFF_BODY_CRC..], hasher.finalize());
        let crc = crc32(&out[..OFF_CRC]);
        LE::write_u32(&mut out[OFF_CRC..], crc);
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(state);
        out
    }

    /// Decodes and validates a whole checkpoint file: header CRC before any other field,
    /// every length against its limit and against the bytes present, then the body CRC.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let h = prefix::<PROJECTION_CHECKPOINT_HEADER_BYTES>(buf)?;
        let stored = LE::read_u32(&h[OFF_CRC..]);
        let computed = crc32(&h[..OFF_CRC]);
        if stored != computed {
            return Err(DecodeError::ChecksumMismatch { stored, computed });
        }
        if h[OFF_MAGIC..OFF_VERSION] != PROJECTION_CHECKPOINT_MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = LE::read_u16(&h[OFF_VERSION..]);
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        if usize::from(LE::read_u16(&h[OFF_HEADER_BYTES..])) != PROJECTION_CHECKPOINT_HEADER_BYTES {
            return Err(DecodeError::Inconsistent("projection checkpoint header_bytes"));
        }
        let flags = LE::read_u32(&h[OFF_FLAGS..]);
        if flags & !FLAG_STATE != 0 || h[OFF_RESERVED..OFF_STATE_BYTES].iter().any(|&b| b != 0) {
            return Err(DecodeError::ReservedNonZero);
        }
        let name_len = usize::from(LE::read_u16(&h[OFF_NAME_BYTES..]));
        if name_len == 0 || name_len > PROJECTION_NAME_BYTES_MAX {
            return Err(DecodeError::OutOfBounds {
                field: "projection name_bytes",
                value: name_len as u64,
                max: PROJECTION_NAME_BYTES_MAX as u64,
            });
        }
        let state_len = LE::read_u64(&h[OFF_STATE_BYTES..]);
        if state_len > PROJECTION_STATE_BYTES_MAX {
            return Err(DecodeError::OutOfBounds {
                field: "projection state_bytes",
                value: state_len,
                max: PROJECTION_STATE_BYTES_MAX,
            });
        }
        if flags & FLAG_STATE == 0 && state_len != 0 {
            return Err(DecodeError::Inconsistent("projection state without its flag"));
        }
        let body = buf.get(PROJECTION_CHECKPOINT_HEADER_BYTES..).unwrap_or_default();
        let want = name_len as u64 + state_len;
        if body.len() as u64 != want {
            return Err(DecodeError::Inconsistent("projection checkpoint length"));
        }
        let stored = LE::read_u32(&h[OFF_BODY_CRC..]);
        let computed = crc32(body);
        if stored != computed {
            return Err(DecodeError::ChecksumMismatch { stored, computed });
        }
        let (name, state) = body.split_at(name_len);
        let name = std::str::from_utf8(name)
            .map_err(|_| DecodeError::Inconsistent("projection name is not UTF-8"))?
            .to_owned();
        let mut log_id = [0u8; 16];
        log_id.copy_from_slice(&h[OFF_LOG_ID..OFF_POSITION]);
        Ok(ProjectionCheckpoint {
            log_id,
            name,
            position: LE::read_u64(&h[OFF_POSITION..]),
            projection_version: LE::read_u32(&h[OFF_PROJ_VERSION..]),
            state: (flags & FLAG_STATE != 0).then(|| state.to_vec()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(state: Option<Vec<u8>>) -> ProjectionCheckpoint {
        ProjectionCheckpoint {
            log_id: [7; 16],
            name: "orders by customer".into(),
            position: 4711,
            projection_version: 3,
            state,
        }
    }

    #[test]
    fn round_trip_with_and_without_state() {
        for s in [None, Some(vec![]), Some(b"view bytes".to_vec())] {
            let c = sample(s);
            assert_eq!(ProjectionCheckpoint::decode(&c.encode()), Ok(c));
        }
    }

    #[test]
    fn spec_example_bytes() {
        // format-spec.md §14: the worked example.
        let c = ProjectionCheckpoint {
            log_id: [0; 16],
            name: "p".into(),
            position: 2,
            projection_version: 1,
            state: Some(vec![0xab]),
        };
        let b = c.encode();
        assert_eq!(b.len(), 66);
        assert_eq!(&b[0..8], b"ANNALPCK");
        assert_eq!(&b[8..16], &[1, 0, 64, 0, 1, 0, 0, 0]);
        assert_eq!(&b[32..48], &[2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&b[48..56], &[1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(LE::read_u32(&b[56..60]), crc32(&[b'p', 0xab]));
        assert_eq!(LE::read_u32(&b[60..64]), crc32(&b[..60]));
        assert_eq!(&b[64..], &[b'p', 0xab]);
    }

    #[test]
    fn every_bit_flip_and_truncation_is_rejected() {
        let good = sample(Some(b"state".to_vec())).encode();
        for bit in 0..good.len() * 8 {
            let mut b = good.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(ProjectionCheckpoint::decode(&b).is_err(), "flip of bit {bit} went unnoticed");
        }
        for n in 0..good.len() {
            assert!(ProjectionCheckpoint::decode(&good[..n]).is_err());
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(ProjectionCheckpoint::decode(&longer).is_err());
    }

    #[test]
    fn oversized_lengths_are_rejected_before_allocating() {
        let mut b = sample(None).encode();
        LE::write_u64(&mut b[OFF_STATE_BYTES..], u64::MAX);
        LE::write_u32(&mut b[OFF_FLAGS..], FLAG_STATE);
        let crc = crc32(&b[..OFF_CRC]);
        LE::write_u32(&mut b[OFF_CRC..], crc);
        assert!(matches!(
            ProjectionCheckpoint::decode(&b),
            Err(DecodeError::OutOfBounds { field: "projection state_bytes", .. })
        ));
    }
}
