//! The stream-index checkpoint file, `streams.ckpt` (format-spec.md §12): the stream index as
//! of a durable seq, so that opening a large store replays only the log after it.
//!
//! It is a cache. Anything wrong with it (checksums, bounds, order, another store's id, a
//! covered seq beyond the log) makes the store rebuild the index from the log.

use byteorder::{ByteOrder, LittleEndian as LE};

use super::{DecodeError, crc32, prefix};
use crate::limits::{CHECKPOINT_HEADER_BYTES, STREAM_ID_BYTES_MAX};

/// The first eight bytes of a stream-index checkpoint.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"ANNALSIX";

const CHECKPOINT_VERSION: u16 = 1;

const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = OFF_MAGIC + 8;
const OFF_HEADER_BYTES: usize = OFF_VERSION + 2;
const OFF_FLAGS: usize = OFF_HEADER_BYTES + 2;
const OFF_LOG_ID: usize = OFF_FLAGS + 4;
const OFF_COVERED: usize = OFF_LOG_ID + 16;
const OFF_BODY_BYTES: usize = OFF_COVERED + 8;
const OFF_BODY_CRC: usize = OFF_BODY_BYTES + 8;
const OFF_RESERVED: usize = OFF_BODY_CRC + 4;
const OFF_CRC: usize = CHECKPOINT_HEADER_BYTES - 4;
const _: () = assert!(OFF_RESERVED + 8 == OFF_CRC);

/// One stream in a checkpoint: its id and the seqs of its events, increasing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointStream {
    /// The stream id.
    pub id: String,
    /// Seqs of its events (all below the covered seq), strictly increasing.
    pub seqs: Vec<u64>,
}

/// One remembered event id (for idempotent retries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointId {
    /// The event id.
    pub event_id: [u8; 16],
    /// Index of its stream in the checkpoint's stream list.
    pub stream: u32,
    /// Its version in that stream.
    pub version: u64,
    /// Its seq.
    pub seq: u64,
}

/// A decoded checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamCheckpoint {
    /// The store's log id.
    pub log_id: [u8; 16],
    /// Every event with a seq below this is in the checkpoint; none at or above it is.
    pub covered_seq: u64,
    /// The streams.
    pub streams: Vec<CheckpointStream>,
    /// Recent event ids, oldest first.
    pub recent: Vec<CheckpointId>,
}

impl StreamCheckpoint {
    /// Encodes the checkpoint file.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        put_u32(&mut body, self.streams.len() as u32);
        for s in &self.streams {
            assert!(!s.id.is_empty() && s.id.len() <= STREAM_ID_BYTES_MAX);
            put_u16(&mut body, s.id.len() as u16);
            body.extend_from_slice(s.id.as_bytes());
            put_u64(&mut body, s.seqs.len() as u64);
            for &q in &s.seqs {
                put_u64(&mut body, q);
            }
        }
        put_u32(&mut body, self.recent.len() as u32);
        for r in &self.recent {
            body.extend_from_slice(&r.event_id);
            put_u32(&mut body, r.stream);
            put_u64(&mut body, r.version);
            put_u64(&mut body, r.seq);
        }
        let mut out = vec![0u8; CHECKPOINT_HEADER_BYTES];
        out[OFF_MAGIC..OFF_VERSION].copy_from_slice(&CHECKPOINT_MAGIC);
        LE::write_u16(&mut out[OFF_VERSION..OFF_HEADER_BYTES], CHECKPOINT_VERSION);
        LE::write_u16(&mut out[OFF_HEADER_BYTES..OFF_FLAGS], CHECKPOINT_HEADER_BYTES as u16);
        out[OFF_LOG_ID..OFF_COVERED].copy_from_slice(&self.log_id);
        LE::write_u64(&mut out[OFF_COVERED..OFF_BODY_BYTES], self.covered_seq);
        LE::write_u64(&mut out[OFF_BODY_BYTES..OFF_BODY_CRC], body.len() as u64);
        LE::write_u32(&mut out[OFF_BODY_CRC..OFF_RESERVED], crc32(&body));
        let crc = crc32(&out[..OFF_CRC]);
        LE::write_u32(&mut out[OFF_CRC..], crc);
        out.extend_from_slice(&body);
        out
    }

    /// Decodes and validates a whole checkpoint file. Every count is checked against the
    /// bytes that remain before anything is allocated for it.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let h = prefix::<CHECKPOINT_HEADER_BYTES>(buf)?;
        let stored = LE::read_u32(&h[OFF_CRC..]);
        let computed = crc32(&h[..OFF_CRC]);
        if stored != computed {
            return Err(DecodeError::ChecksumMismatch { stored, computed });
        }
        if h[OFF_MAGIC..OFF_VERSION] != CHECKPOINT_MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = LE::read_u16(&h[OFF_VERSION..OFF_HEADER_BYTES]);
        if version != CHECKPOINT_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        if usize::from(LE::read_u16(&h[OFF_HEADER_BYTES..OFF_FLAGS])) != CHECKPOINT_HEADER_BYTES {
            return Err(DecodeError::Inconsistent("checkpoint header_bytes"));
        }
        if LE::read_u32(&h[OFF_FLAGS..OFF_LOG_ID]) != 0
            || h[OFF_RESERVED..OFF_CRC].iter().any(|&b| b != 0)
        {
            return Err(DecodeError::ReservedNonZero);
        }
        let body = buf.get(CHECKPOINT_HEADER_BYTES..).unwrap_or_default();
        if LE::read_u64(&h[OFF_BODY_BYTES..OFF_BODY_CRC]) != body.len() as u64 {
            return Err(DecodeError::Inconsistent("checkpoint body length"));
        }
        let stored = LE::read_u32(&h[OFF_BODY_CRC..OFF_RESERVED]);
        let computed = crc32(body);
        if stored != computed {
            return Err(DecodeError::ChecksumMismatch { stored, computed });
        }
        let mut log_id = [0u8; 16];
        log_id.copy_from_slice(&h[OFF_LOG_ID..OFF_COVERED]);
        let covered_seq = LE::read_u64(&h[OFF_COVERED..OFF_BODY_BYTES]);
        let mut r = Reader(body);
        let n_streams = r.u32()?;
        // Each stream takes at least 10 bytes; a count the body cannot hold is rejected
        // before the vector is allocated.
        r.check_room(u64::from(n_streams), 10)?;
        let mut streams = Vec::with_capacity(n_streams as usize);
        let mut seen = foldhash::HashSet::with_capacity_and_hasher(
            n_streams as usize,
            foldhash::fast::RandomState::default(),
        );
        for _ in 0..n_streams {
            let id_len = usize::from(r.u16()?);
            if id_len == 0 || id_len > STREAM_ID_BYTES_MAX {
                return Err(DecodeError::OutOfBounds {
                    field: "checkpoint stream id length",
                    value: id_len as u64,
                    max: STREAM_ID_BYTES_MAX as u64,
                });
            }
            let id = std::str::from_utf8(r.bytes(id_len)?)
                .map_err(|_| DecodeError::Inconsistent("checkpoint stream id is not UTF-8"))?;
            if !seen.insert(id) {
                return Err(DecodeError::Inconsistent("checkpoint names a stream twice"));
            }
            let id = id.to_owned();
            let n = r.u64()?;
            r.check_room(n, 8)?;
            // In bulk: decode every seq, then check the order in one pass (strictly
            // increasing, so only the last can reach `covered_seq`).
            let raw = r.bytes(n as usize * 8)?;
            let seqs: Vec<u64> = raw.chunks_exact(8).map(LE::read_u64).collect();
            let ordered = seqs.windows(2).all(|w| w[0] < w[1]);
            if !ordered || seqs.last().is_some_and(|&q| q >= covered_seq) {
                return Err(DecodeError::Inconsistent("checkpoint seqs out of order or range"));
            }
            streams.push(CheckpointStream { id, seqs });
        }
        let n_recent = r.u32()?;
        r.check_room(u64::from(n_recent), 36)?;
        let mut recent = Vec::with_capacity(n_recent as usize);
        for _ in 0..n_recent {
            let mut event_id = [0u8; 16];
            event_id.copy_from_slice(r.bytes(16)?);
            let id = CheckpointId { event_id, stream: r.u32()?, version: r.u64()?, seq: r.u64()? };
            let known = streams
                .get(id.stream as usize)
                .and_then(|s| s.seqs.get(id.version as usize))
                .is_some_and(|&q| q == id.seq);
            if !known {
                return Err(DecodeError::Inconsistent("checkpoint id names no indexed event"));
            }
            recent.push(id);
        }
        if !r.0.is_empty() {
            return Err(DecodeError::Inconsistent("trailing bytes in checkpoint"));
        }
        Ok(StreamCheckpoint { log_id, covered_seq, streams, recent })
    }
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// A bounds-checked reader over the checkpoint body.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated {
                needed: n as u64,
                available: self.0.len() as u64,
            });
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.bytes(2).map(LE::read_u16)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.bytes(4).map(LE::read_u32)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.bytes(8).map(LE::read_u64)
    }

    /// Fails unless `count` items of at least `each` bytes could fit in what remains.
    fn check_room(&self, count: u64, each: u64) -> Result<(), DecodeError> {
        let room = self.0.len() as u64 / each;
        if count > room {
            return Err(DecodeError::OutOfBounds {
                field: "checkpoint count",
                value: count,
                max: room,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StreamCheckpoint {
        StreamCheckpoint {
            log_id: [5; 16],
            covered_seq: 10,
            streams: vec![
                CheckpointStream { id: "order-1".into(), seqs: vec![0, 3, 7] },
                CheckpointStream { id: "user".into(), seqs: vec![1, 2] },
            ],
            recent: vec![
                CheckpointId { event_id: [1; 16], stream: 0, version: 2, seq: 7 },
                CheckpointId { event_id: [2; 16], stream: 1, version: 0, seq: 1 },
            ],
        }
    }

    #[test]
    fn round_trip() {
        assert_eq!(StreamCheckpoint::decode(&sample().encode()), Ok(sample()));
    }

    #[test]
    fn every_bit_flip_and_truncation_is_rejected() {
        let good = sample().encode();
        for bit in 0..good.len() * 8 {
            let mut b = good.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(StreamCheckpoint::decode(&b).is_err(), "flip of bit {bit} went unnoticed");
        }
        for n in 0..good.len() {
            assert!(StreamCheckpoint::decode(&good[..n]).is_err());
        }
    }

    #[test]
    fn inconsistent_content_with_valid_checksums_is_rejected() {
        let mut bad = sample();
        bad.streams[0].seqs = vec![3, 3];
        assert!(StreamCheckpoint::decode(&bad.encode()).is_err());
        let mut bad = sample();
        bad.streams[1].seqs = vec![1, 10];
        assert!(StreamCheckpoint::decode(&bad.encode()).is_err(), "seq at covered_seq");
        let mut bad = sample();
        bad.streams[1].id = "order-1".into();
        assert!(StreamCheckpoint::decode(&bad.encode()).is_err(), "a stream named twice");
        let mut bad = sample();
        bad.recent[0].seq = 3;
        assert!(StreamCheckpoint::decode(&bad.encode()).is_err(), "id pointing nowhere");
    }
}
