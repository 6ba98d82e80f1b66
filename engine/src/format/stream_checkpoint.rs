//! The stream-index checkpoint file, `streams.ckpt` (format-spec.md §12): the stream index as
//! of a durable seq, so that opening a large store replays only the log after it.
//!
//! It is a cache. Anything wrong with it (checksums, bounds, order, another store's id, a
//! covered seq beyond the log) makes the store rebuild the index from the log.
//!
//! Version 2 (§12.2), which every write produces, is laid out to be read in parts: a header
//! and a stream directory (one entry per stream) that an open reads whole, then one seq
//! block per stream and the recent-id section, each behind its own CRC, which the store
//! reads when it first needs them ([`CheckpointDirectory`], [`decode_seq_block`],
//! [`decode_recent`]). Version 1 (§12.1), one CRC over a body of every seq, is still read.
//! [`StreamCheckpoint::decode`] reads either version whole.

use byteorder::{ByteOrder, LittleEndian as LE};

use super::{DecodeError, crc32, prefix};
use crate::limits::{CHECKPOINT_HEADER_BYTES, CHECKPOINT_SEQS_MAX, STREAM_ID_BYTES_MAX};

/// The first eight bytes of a stream-index checkpoint.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"ANNALSIX";

/// Checkpoint version 1: one body of every seq behind one CRC (read, never written).
pub const CHECKPOINT_VERSION_1: u16 = 1;
/// Checkpoint version 2: a directory, then per-stream seq blocks and the recent ids, each
/// behind its own CRC (what every write produces).
pub const CHECKPOINT_VERSION_2: u16 = 2;

const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = OFF_MAGIC + 8;
const OFF_HEADER_BYTES: usize = OFF_VERSION + 2;
const OFF_FLAGS: usize = OFF_HEADER_BYTES + 2;
const OFF_LOG_ID: usize = OFF_FLAGS + 4;
const OFF_COVERED: usize = OFF_LOG_ID + 16;
const OFF_BODY_BYTES: usize = OFF_COVERED + 8;
const OFF_BODY_CRC: usize = OFF_BODY_BYTES + 8;
/// Version 1: 8 reserved bytes. Version 2: `stream_count`, then `recent_count`.
const OFF_RESERVED: usize = OFF_BODY_CRC + 4;
const OFF_STREAM_COUNT: usize = OFF_RESERVED;
const OFF_RECENT_COUNT: usize = OFF_STREAM_COUNT + 4;
const OFF_CRC: usize = CHECKPOINT_HEADER_BYTES - 4;
const _: () = assert!(OFF_RESERVED + 8 == OFF_CRC);
const _: () = assert!(OFF_RECENT_COUNT + 4 == OFF_CRC);

/// Bytes of one recent-id entry (both versions).
pub const RECENT_ENTRY_BYTES: u64 = 36;
/// Fewest bytes of a version 2 directory entry: a 1-byte id and the fixed fields.
const DIR_ENTRY_MIN_BYTES: u64 = 2 + 1 + 8 + 8 + 4;
/// Bytes after the last directory entry: `recent_crc`.
const DIR_TAIL_BYTES: usize = 4;

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

/// The 64-byte header of either version, checked (§12 validity, header rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointHeader {
    /// 1 or 2.
    pub version: u16,
    /// The store's log id.
    pub log_id: [u8; 16],
    /// Every event with a seq below this is in the checkpoint; none at or above it is.
    pub covered_seq: u64,
    /// Version 1: the body's length. Version 2: the directory's length.
    pub body_bytes: u64,
    /// CRC-32 of the body (version 1) or of the directory (version 2).
    pub body_crc: u32,
    /// Version 2: streams in the directory (0 in version 1, where the body says).
    pub stream_count: u32,
    /// Version 2: entries of the recent-id section (0 in version 1).
    pub recent_count: u32,
}

impl CheckpointHeader {
    /// Decodes and checks the header at the start of `buf` (at least 64 bytes).
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
        if version != CHECKPOINT_VERSION_1 && version != CHECKPOINT_VERSION_2 {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        if usize::from(LE::read_u16(&h[OFF_HEADER_BYTES..OFF_FLAGS])) != CHECKPOINT_HEADER_BYTES {
            return Err(DecodeError::Inconsistent("checkpoint header_bytes"));
        }
        let v1 = version == CHECKPOINT_VERSION_1;
        if LE::read_u32(&h[OFF_FLAGS..OFF_LOG_ID]) != 0
            || (v1 && h[OFF_RESERVED..OFF_CRC].iter().any(|&b| b != 0))
        {
            return Err(DecodeError::ReservedNonZero);
        }
        let mut log_id = [0u8; 16];
        log_id.copy_from_slice(&h[OFF_LOG_ID..OFF_COVERED]);
        let (stream_count, recent_count) = if v1 {
            (0, 0)
        } else {
            (
                LE::read_u32(&h[OFF_STREAM_COUNT..OFF_RECENT_COUNT]),
                LE::read_u32(&h[OFF_RECENT_COUNT..OFF_CRC]),
            )
        };
        Ok(CheckpointHeader {
            version,
            log_id,
            covered_seq: LE::read_u64(&h[OFF_COVERED..OFF_BODY_BYTES]),
            body_bytes: LE::read_u64(&h[OFF_BODY_BYTES..OFF_BODY_CRC]),
            body_crc: LE::read_u32(&h[OFF_BODY_CRC..OFF_RESERVED]),
            stream_count,
            recent_count,
        })
    }
}

/// Where a checksummed section of a version 2 file lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionRef {
    /// File offset of its first byte.
    pub offset: u64,
    /// Its length.
    pub bytes: u64,
    /// CRC-32 of its bytes.
    pub crc: u32,
}

/// A stream of a version 2 directory: its id, event count and seq block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryStream {
    /// The stream id.
    pub id: String,
    /// Its events below the covered seq (at least 1).
    pub seq_count: u64,
    /// Its seq block.
    pub block: SectionRef,
}

/// The directory of a version 2 checkpoint: everything an open reads. The seq blocks and
/// the recent-id section it points to are read and checked later, each on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointDirectory {
    /// The store's log id.
    pub log_id: [u8; 16],
    /// Every event with a seq below this is in the checkpoint; none at or above it is.
    pub covered_seq: u64,
    /// The streams, in file order.
    pub streams: Vec<DirectoryStream>,
    /// The recent-id section.
    pub recent: SectionRef,
    /// Its entries.
    pub recent_count: u32,
    /// Events of all streams (the sum of `seq_count`).
    pub events: u64,
}

impl CheckpointDirectory {
    /// Decodes and checks the directory `dir` (file bytes `64 .. 64 + header.body_bytes`) of
    /// a version 2 file of `file_bytes` bytes whose header is `header`. `max_seqs` bounds the
    /// seqs the blocks may hold in all (what decoding them may allocate): the store passes
    /// the log's visible end.
    pub fn decode(
        header: &CheckpointHeader,
        dir: &[u8],
        file_bytes: u64,
        max_seqs: u64,
    ) -> Result<Self, DecodeError> {
        if header.version != CHECKPOINT_VERSION_2 {
            return Err(DecodeError::UnsupportedVersion(header.version));
        }
        let dir_end = (CHECKPOINT_HEADER_BYTES as u64).checked_add(header.body_bytes);
        if dir_end.is_none_or(|end| end > file_bytes) {
            return Err(DecodeError::Inconsistent("checkpoint directory past the file's end"));
        }
        if dir.len() as u64 != header.body_bytes {
            return Err(DecodeError::Truncated {
                needed: header.body_bytes,
                available: dir.len() as u64,
            });
        }
        let stored = header.body_crc;
        let computed = crc32(dir);
        if stored != computed {
            return Err(DecodeError::ChecksumMismatch { stored, computed });
        }
        let mut r = Reader(dir);
        let n_streams = header.stream_count;
        r.check_room(u64::from(n_streams), DIR_ENTRY_MIN_BYTES)?;
        let mut streams = Vec::with_capacity(n_streams as usize);
        let mut seen = foldhash::HashSet::with_capacity_and_hasher(
            n_streams as usize,
            foldhash::fast::RandomState::default(),
        );
        let max_events = header.covered_seq.min(max_seqs);
        let mut events = 0u64;
        let mut offset = CHECKPOINT_HEADER_BYTES as u64 + header.body_bytes;
        for _ in 0..n_streams {
            let id = read_stream_id(&mut r)?;
            if !seen.insert(id) {
                return Err(DecodeError::Inconsistent("checkpoint names a stream twice"));
            }
            let seq_count = r.u64()?;
            if seq_count == 0 {
                return Err(DecodeError::Inconsistent("checkpoint stream without events"));
            }
            events = events.saturating_add(seq_count);
            if events > max_events {
                return Err(DecodeError::OutOfBounds {
                    field: "checkpoint events",
                    value: events,
                    max: max_events,
                });
            }
            let bytes = r.u64()?;
            let crc = r.u32()?;
            let end = offset.checked_add(bytes).filter(|&e| e <= file_bytes);
            let Some(end) = end.filter(|_| bytes >= 2) else {
                return Err(DecodeError::Inconsistent("checkpoint seq block out of the file"));
            };
            streams.push(DirectoryStream {
                id: id.to_owned(),
                seq_count,
                block: SectionRef { offset, bytes, crc },
            });
            offset = end;
        }
        let recent_crc = r.u32()?;
        if !r.0.is_empty() {
            return Err(DecodeError::Inconsistent("trailing bytes in checkpoint directory"));
        }
        let recent_bytes = u64::from(header.recent_count) * RECENT_ENTRY_BYTES;
        if offset.checked_add(recent_bytes) != Some(file_bytes) {
            return Err(DecodeError::Inconsistent("checkpoint file length"));
        }
        Ok(CheckpointDirectory {
            log_id: header.log_id,
            covered_seq: header.covered_seq,
            streams,
            recent: SectionRef { offset, bytes: recent_bytes, crc: recent_crc },
            recent_count: header.recent_count,
            events,
        })
    }
}

/// Decodes and checks the seq block of `stream` (the file bytes its [`SectionRef`] names)
/// of a checkpoint covering `covered_seq`: its CRC, then its runs (§12.2). Allocates
/// `stream.seq_count` seqs, which [`CheckpointDirectory::decode`] bounded.
pub fn decode_seq_block(
    block: &[u8],
    stream: &DirectoryStream,
    covered_seq: u64,
) -> Result<Vec<u64>, DecodeError> {
    if block.len() as u64 != stream.block.bytes {
        return Err(DecodeError::Truncated {
            needed: stream.block.bytes,
            available: block.len() as u64,
        });
    }
    let computed = crc32(block);
    if stream.block.crc != computed {
        return Err(DecodeError::ChecksumMismatch { stored: stream.block.crc, computed });
    }
    let count = stream.seq_count;
    let mut seqs: Vec<u64> = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    let mut r = Reader(block);
    // The smallest seq the next run may start at: runs are maximal, so a run after the
    // first starts at least two past the previous run's last seq (the gap counts from
    // there, which makes every block of given seqs the same bytes).
    let mut next = 0u64;
    while (seqs.len() as u64) < count {
        let gap = r.varint()?;
        let len = r.varint()?.checked_add(1);
        let left = count - seqs.len() as u64;
        let Some(len) = len.filter(|&l| l <= left) else {
            return Err(DecodeError::Inconsistent("checkpoint run longer than the stream"));
        };
        let start = next.checked_add(gap);
        let end = start.and_then(|s| s.checked_add(len)).filter(|&e| e <= covered_seq);
        let (Some(start), Some(end)) = (start, end) else {
            return Err(DecodeError::Inconsistent("checkpoint seqs out of order or range"));
        };
        if len == 1 {
            seqs.push(start);
        } else {
            seqs.extend(start..end);
        }
        next = end.saturating_add(1);
        if seqs.len() as u64 == count {
            break;
        }
    }
    if !r.0.is_empty() {
        return Err(DecodeError::Inconsistent("trailing bytes in checkpoint seq block"));
    }
    Ok(seqs)
}

/// Decodes and checks the recent-id section of a version 2 checkpoint (the file bytes
/// `dir.recent` names): its CRC, then that each entry names a stream of the directory, a
/// version below its event count and a seq below the covered seq, not below the version.
/// That the seq is the stream's seq of that version needs the stream's block and is not
/// checked here.
pub fn decode_recent(
    section: &[u8],
    dir: &CheckpointDirectory,
) -> Result<Vec<CheckpointId>, DecodeError> {
    if section.len() as u64 != dir.recent.bytes {
        return Err(DecodeError::Truncated {
            needed: dir.recent.bytes,
            available: section.len() as u64,
        });
    }
    let computed = crc32(section);
    if dir.recent.crc != computed {
        return Err(DecodeError::ChecksumMismatch { stored: dir.recent.crc, computed });
    }
    let mut r = Reader(section);
    let mut recent = Vec::with_capacity(dir.recent_count as usize);
    for _ in 0..dir.recent_count {
        let id = read_recent(&mut r)?;
        let count = dir.streams.get(id.stream as usize).map(|s| s.seq_count);
        let fits = count.is_some_and(|c| id.version < c)
            && id.seq < dir.covered_seq
            && id.seq >= id.version;
        if !fits {
            return Err(DecodeError::Inconsistent("checkpoint id names no indexed event"));
        }
        recent.push(id);
    }
    Ok(recent)
}

/// A stream's seq block for [`encode_v2`]: its seqs, or a block already encoded (copied
/// from the file a store loaded, with the CRC that file gave it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeqBlock<'a> {
    /// The seqs, strictly increasing, to encode.
    Seqs(&'a [u64]),
    /// An encoded block (§12.2) of `seq_count` seqs and its CRC.
    Encoded {
        /// Seqs it holds.
        seq_count: u64,
        /// Its bytes.
        bytes: Vec<u8>,
        /// Their CRC-32.
        crc: u32,
    },
}

/// Appends the seq block of `seqs` (strictly increasing): maximal runs of consecutive
/// seqs, each as the LEB128 gap from the previous run's end and the run's length minus 1.
pub fn encode_seq_block(seqs: &[u64], out: &mut Vec<u8>) {
    // Interleaved streams take about two bytes a seq: reserve once.
    out.reserve(seqs.len().saturating_mul(2).min(1 << 24) + 20);
    let mut i = 0;
    let mut next = 0u64;
    while let Some(&start) = seqs.get(i) {
        let j = run_end(seqs, i);
        let len = (j - i) as u64;
        put_varint(out, start - next);
        put_varint(out, len - 1);
        next = start + len + 1;
        i = j;
    }
}

/// The end (exclusive) of the run of consecutive seqs starting at `seqs[i]`. The seqs are
/// strictly increasing, so `seqs[i..=j]` are consecutive exactly when `seqs[j] - seqs[i]`
/// is `j - i`: a gallop then a bisection find the end in O(log run) probes, so a stream
/// written alone (one run of millions) costs a few dozen probes, not a pass over it.
fn run_end(seqs: &[u64], i: usize) -> usize {
    let start = seqs[i];
    let consecutive = |j: usize| seqs.get(j).is_some_and(|&q| q - start == (j - i) as u64);
    if !consecutive(i + 1) {
        return i + 1;
    }
    // `lo` is known consecutive, `hi` is not (or past the end).
    let (mut lo, mut step) = (i + 1, 1usize);
    let mut hi = loop {
        let probe = lo.saturating_add(step);
        if !consecutive(probe) {
            break probe.min(seqs.len());
        }
        lo = probe;
        step = step.saturating_mul(2);
    };
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if consecutive(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo + 1
}

/// Encodes a version 2 checkpoint file (§12.2) from its parts. Streams must have at least
/// one seq, ids 1..=`STREAM_ID_BYTES_MAX` bytes; `recent` entries index `streams`.
pub fn encode_v2(
    log_id: [u8; 16],
    covered_seq: u64,
    streams: &[(&str, SeqBlock<'_>)],
    recent: &[CheckpointId],
) -> Vec<u8> {
    let mut dir = Vec::with_capacity(streams.len() * 40 + DIR_TAIL_BYTES);
    let mut blocks = Vec::new();
    for (id, block) in streams {
        assert!(!id.is_empty() && id.len() <= STREAM_ID_BYTES_MAX);
        put_u16(&mut dir, id.len() as u16);
        dir.extend_from_slice(id.as_bytes());
        let (count, bytes, crc) = match block {
            SeqBlock::Seqs(seqs) => {
                let start = blocks.len();
                encode_seq_block(seqs, &mut blocks);
                (seqs.len() as u64, (blocks.len() - start) as u64, crc32(&blocks[start..]))
            }
            SeqBlock::Encoded { seq_count, bytes, crc } => {
                blocks.extend_from_slice(bytes);
                (*seq_count, bytes.len() as u64, *crc)
            }
        };
        put_u64(&mut dir, count);
        put_u64(&mut dir, bytes);
        put_u32(&mut dir, crc);
    }
    let mut section = Vec::with_capacity(recent.len() * RECENT_ENTRY_BYTES as usize);
    for r in recent {
        put_recent(&mut section, r);
    }
    put_u32(&mut dir, crc32(&section));
    let mut out = Vec::with_capacity(CHECKPOINT_HEADER_BYTES + dir.len() + blocks.len());
    out.extend_from_slice(&header_bytes(
        CHECKPOINT_VERSION_2,
        log_id,
        covered_seq,
        &dir,
        [streams.len() as u32, recent.len() as u32],
    ));
    out.extend_from_slice(&dir);
    out.extend_from_slice(&blocks);
    out.extend_from_slice(&section);
    out
}

fn header_bytes(
    version: u16,
    log_id: [u8; 16],
    covered_seq: u64,
    body: &[u8],
    counts: [u32; 2],
) -> [u8; CHECKPOINT_HEADER_BYTES] {
    let mut out = [0u8; CHECKPOINT_HEADER_BYTES];
    out[OFF_MAGIC..OFF_VERSION].copy_from_slice(&CHECKPOINT_MAGIC);
    LE::write_u16(&mut out[OFF_VERSION..OFF_HEADER_BYTES], version);
    LE::write_u16(&mut out[OFF_HEADER_BYTES..OFF_FLAGS], CHECKPOINT_HEADER_BYTES as u16);
    out[OFF_LOG_ID..OFF_COVERED].copy_from_slice(&log_id);
    LE::write_u64(&mut out[OFF_COVERED..OFF_BODY_BYTES], covered_seq);
    LE::write_u64(&mut out[OFF_BODY_BYTES..OFF_BODY_CRC], body.len() as u64);
    LE::write_u32(&mut out[OFF_BODY_CRC..OFF_RESERVED], crc32(body));
    LE::write_u32(&mut out[OFF_STREAM_COUNT..OFF_RECENT_COUNT], counts[0]);
    LE::write_u32(&mut out[OFF_RECENT_COUNT..OFF_CRC], counts[1]);
    let crc = crc32(&out[..OFF_CRC]);
    LE::write_u32(&mut out[OFF_CRC..], crc);
    out
}

impl StreamCheckpoint {
    /// Encodes the checkpoint file, version 2 (§12.2).
    pub fn encode(&self) -> Vec<u8> {
        let streams: Vec<(&str, SeqBlock<'_>)> =
            self.streams.iter().map(|s| (s.id.as_str(), SeqBlock::Seqs(&s.seqs))).collect();
        encode_v2(self.log_id, self.covered_seq, &streams, &self.recent)
    }

    /// Encodes the checkpoint file in version 1 (§12.1), which stores no longer write: for
    /// tests and tools that check that version 1 files still load.
    pub fn encode_v1(&self) -> Vec<u8> {
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
            put_recent(&mut body, r);
        }
        let mut out =
            header_bytes(CHECKPOINT_VERSION_1, self.log_id, self.covered_seq, &body, [0, 0])
                .to_vec();
        out.extend_from_slice(&body);
        out
    }

    /// Decodes and validates a whole checkpoint file of either version, allocating at most
    /// `CHECKPOINT_SEQS_MAX` seqs (see [`StreamCheckpoint::decode_bounded`]).
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        Self::decode_bounded(buf, CHECKPOINT_SEQS_MAX)
    }

    /// Decodes and validates a whole checkpoint file of either version. Every count is
    /// checked against the bytes that remain before anything is allocated for it; a version
    /// 2 file whose streams hold more than `max_seqs` seqs in all is rejected (its runs
    /// hold many seqs in few bytes). Version 2 is checked as the store checks it part by
    /// part, plus that each recent id's seq is its stream's seq of that version.
    pub fn decode_bounded(buf: &[u8], max_seqs: u64) -> Result<Self, DecodeError> {
        let header = CheckpointHeader::decode(buf)?;
        if header.version == CHECKPOINT_VERSION_1 {
            return decode_v1(&header, buf);
        }
        let dir_end = (CHECKPOINT_HEADER_BYTES as u64).saturating_add(header.body_bytes);
        let dir = buf.get(CHECKPOINT_HEADER_BYTES..).unwrap_or_default();
        let dir = dir.get(..usize::try_from(header.body_bytes).unwrap_or(usize::MAX));
        let Some(dir) = dir.filter(|_| dir_end <= buf.len() as u64) else {
            return Err(DecodeError::Inconsistent("checkpoint directory past the file's end"));
        };
        let directory = CheckpointDirectory::decode(&header, dir, buf.len() as u64, max_seqs)?;
        let section = |s: &SectionRef| -> &[u8] {
            // In the file: the directory checked every section against its length.
            buf.get(s.offset as usize..(s.offset + s.bytes) as usize).unwrap_or_default()
        };
        let mut streams = Vec::with_capacity(directory.streams.len());
        for s in &directory.streams {
            let seqs = decode_seq_block(section(&s.block), s, directory.covered_seq)?;
            streams.push(CheckpointStream { id: s.id.clone(), seqs });
        }
        let recent = decode_recent(section(&directory.recent), &directory)?;
        check_recent_seqs(&streams, &recent)?;
        Ok(StreamCheckpoint {
            log_id: header.log_id,
            covered_seq: header.covered_seq,
            streams,
            recent,
        })
    }
}

/// The version 1 body (§12.1), after its header.
fn decode_v1(header: &CheckpointHeader, buf: &[u8]) -> Result<StreamCheckpoint, DecodeError> {
    let body = buf.get(CHECKPOINT_HEADER_BYTES..).unwrap_or_default();
    if header.body_bytes != body.len() as u64 {
        return Err(DecodeError::Inconsistent("checkpoint body length"));
    }
    let stored = header.body_crc;
    let computed = crc32(body);
    if stored != computed {
        return Err(DecodeError::ChecksumMismatch { stored, computed });
    }
    let covered_seq = header.covered_seq;
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
        let id = read_stream_id(&mut r)?;
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
    r.check_room(u64::from(n_recent), RECENT_ENTRY_BYTES)?;
    let mut recent = Vec::with_capacity(n_recent as usize);
    for _ in 0..n_recent {
        recent.push(read_recent(&mut r)?);
    }
    check_recent_seqs(&streams, &recent)?;
    if !r.0.is_empty() {
        return Err(DecodeError::Inconsistent("trailing bytes in checkpoint"));
    }
    Ok(StreamCheckpoint { log_id: header.log_id, covered_seq, streams, recent })
}

/// Every recent id names an indexed event: its stream's seq of its version is its seq.
fn check_recent_seqs(
    streams: &[CheckpointStream],
    recent: &[CheckpointId],
) -> Result<(), DecodeError> {
    for id in recent {
        let known = streams
            .get(id.stream as usize)
            .and_then(|s| usize::try_from(id.version).ok().and_then(|v| s.seqs.get(v)))
            .is_some_and(|&q| q == id.seq);
        if !known {
            return Err(DecodeError::Inconsistent("checkpoint id names no indexed event"));
        }
    }
    Ok(())
}

/// A stream id: `id_bytes` (1 ..= `STREAM_ID_BYTES_MAX`), then that many bytes of UTF-8.
fn read_stream_id<'a>(r: &mut Reader<'a>) -> Result<&'a str, DecodeError> {
    let id_len = usize::from(r.u16()?);
    if id_len == 0 || id_len > STREAM_ID_BYTES_MAX {
        return Err(DecodeError::OutOfBounds {
            field: "checkpoint stream id length",
            value: id_len as u64,
            max: STREAM_ID_BYTES_MAX as u64,
        });
    }
    std::str::from_utf8(r.bytes(id_len)?)
        .map_err(|_| DecodeError::Inconsistent("checkpoint stream id is not UTF-8"))
}

fn read_recent(r: &mut Reader<'_>) -> Result<CheckpointId, DecodeError> {
    let mut event_id = [0u8; 16];
    event_id.copy_from_slice(r.bytes(16)?);
    Ok(CheckpointId { event_id, stream: r.u32()?, version: r.u64()?, seq: r.u64()? })
}

fn put_recent(out: &mut Vec<u8>, r: &CheckpointId) {
    out.extend_from_slice(&r.event_id);
    put_u32(out, r.stream);
    put_u64(out, r.version);
    put_u64(out, r.seq);
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

/// Unsigned LEB128: 7 bits a byte, low first, the high bit set on all but the last byte.
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    if v < 0x80 {
        out.push(v as u8);
        return;
    }
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A bounds-checked reader over a checkpoint section.
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

    /// An unsigned LEB128 of at most 10 bytes, in its shortest form (a last byte of 0 after
    /// others is refused, as is a value past `u64::MAX`), so that a block's bytes are a
    /// function of its seqs.
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let buf = self.0;
        let mut v = 0u64;
        for (i, &b) in buf.iter().take(10).enumerate() {
            if i == 9 && b > 1 {
                return Err(DecodeError::Inconsistent("checkpoint varint past 64 bits"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if b == 0 && i > 0 {
                    return Err(DecodeError::Inconsistent("checkpoint varint not minimal"));
                }
                self.0 = &buf[i + 1..];
                return Ok(v);
            }
        }
        if buf.len() < 10 {
            return Err(DecodeError::Truncated {
                needed: buf.len() as u64 + 1,
                available: buf.len() as u64,
            });
        }
        Err(DecodeError::Inconsistent("checkpoint varint past 64 bits"))
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
    use proptest::prelude::*;

    fn sample() -> StreamCheckpoint {
        StreamCheckpoint {
            log_id: [5; 16],
            covered_seq: 400,
            streams: vec![
                CheckpointStream { id: "order-1".into(), seqs: vec![0, 3, 7, 8, 9, 200] },
                CheckpointStream { id: "user".into(), seqs: vec![1, 2] },
                CheckpointStream { id: "bulk".into(), seqs: (250..399).collect() },
            ],
            recent: vec![
                CheckpointId { event_id: [1; 16], stream: 0, version: 2, seq: 7 },
                CheckpointId { event_id: [2; 16], stream: 1, version: 0, seq: 1 },
                CheckpointId { event_id: [3; 16], stream: 2, version: 148, seq: 398 },
            ],
        }
    }

    #[test]
    fn round_trip_in_both_versions() {
        assert_eq!(StreamCheckpoint::decode(&sample().encode()), Ok(sample()));
        assert_eq!(StreamCheckpoint::decode(&sample().encode_v1()), Ok(sample()));
        assert_eq!(CheckpointHeader::decode(&sample().encode()).unwrap().version, 2);
    }

    #[test]
    fn a_stream_written_alone_is_one_run() {
        let mut b = Vec::new();
        encode_seq_block(&(1_000..1_000_000).collect::<Vec<_>>(), &mut b);
        assert_eq!(b.len(), 2 + 3, "gap 1000 and length 998,999-1 as LEB128");
        let seqs: Vec<u64> = (0..50).map(|i| i * 3).collect();
        b.clear();
        encode_seq_block(&seqs, &mut b);
        assert_eq!(b.len(), 100, "single seqs: one byte of gap, one of length");
    }

    #[test]
    fn every_bit_flip_and_truncation_is_rejected() {
        for good in [sample().encode(), sample().encode_v1()] {
            for bit in 0..good.len() * 8 {
                let mut b = good.clone();
                b[bit / 8] ^= 1 << (bit % 8);
                assert!(StreamCheckpoint::decode(&b).is_err(), "flip of bit {bit} went unnoticed");
            }
            for n in 0..good.len() {
                assert!(StreamCheckpoint::decode(&good[..n]).is_err());
            }
        }
    }

    #[test]
    fn parts_decode_alone_and_a_damaged_block_fails_only_itself() {
        let file = sample().encode();
        let h = CheckpointHeader::decode(&file).unwrap();
        let dir_end = 64 + h.body_bytes as usize;
        let dir =
            CheckpointDirectory::decode(&h, &file[64..dir_end], file.len() as u64, 1000).unwrap();
        assert_eq!(dir.events, 157);
        let part = |s: &SectionRef| file[s.offset as usize..(s.offset + s.bytes) as usize].to_vec();
        for (i, s) in dir.streams.iter().enumerate() {
            assert_eq!(
                decode_seq_block(&part(&s.block), s, 400).unwrap(),
                sample().streams[i].seqs
            );
        }
        assert_eq!(decode_recent(&part(&dir.recent), &dir).unwrap(), sample().recent);
        let s = &dir.streams[2];
        let mut bad = part(&s.block);
        bad[1] ^= 4;
        assert!(matches!(
            decode_seq_block(&bad, s, 400),
            Err(DecodeError::ChecksumMismatch { .. })
        ));
        // Too few seqs for the whole store: the directory is refused before any block.
        let small = CheckpointDirectory::decode(&h, &file[64..dir_end], file.len() as u64, 100);
        assert!(matches!(small, Err(DecodeError::OutOfBounds { .. })));
        // A file of another length (blocks or recent ids missing or added).
        let longer =
            CheckpointDirectory::decode(&h, &file[64..dir_end], file.len() as u64 + 1, 1000);
        assert!(longer.is_err());
    }

    #[test]
    fn inconsistent_content_with_valid_checksums_is_rejected() {
        for encode in [StreamCheckpoint::encode, StreamCheckpoint::encode_v1] {
            let mut bad = sample();
            bad.streams[1].seqs = vec![1, 400];
            assert!(StreamCheckpoint::decode(&encode(&bad)).is_err(), "seq at covered_seq");
            let mut bad = sample();
            bad.streams[1].id = "order-1".into();
            assert!(StreamCheckpoint::decode(&encode(&bad)).is_err(), "a stream named twice");
            let mut bad = sample();
            bad.recent[0].seq = 3;
            assert!(StreamCheckpoint::decode(&encode(&bad)).is_err(), "id pointing nowhere");
            let mut bad = sample();
            bad.recent[0].stream = 3;
            assert!(StreamCheckpoint::decode(&encode(&bad)).is_err(), "id of no stream");
        }
        let mut v1 = sample();
        v1.streams[0].seqs = vec![3, 3];
        v1.recent.clear();
        assert!(StreamCheckpoint::decode(&v1.encode_v1()).is_err(), "v1 seqs not increasing");
        let mut empty = sample();
        empty.streams[1].seqs.clear();
        empty.recent.remove(1);
        assert!(StreamCheckpoint::decode(&empty.encode()).is_err(), "v2 stream of no events");
    }

    #[test]
    fn run_ends_agree_with_a_linear_scan() {
        let mut x = 7u64;
        for case in 0..200 {
            let mut seqs = Vec::new();
            let mut at = 0u64;
            for _ in 0..(case % 50) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                at += 1 + (x % 3) * (x % 5);
                seqs.push(at);
            }
            for i in 0..seqs.len() {
                let mut j = i + 1;
                while seqs.get(j).is_some_and(|&q| q == seqs[i] + (j - i) as u64) {
                    j += 1;
                }
                assert_eq!(run_end(&seqs, i), j, "case {case} at {i}: {seqs:?}");
            }
        }
        let long: Vec<u64> = (5..1_000_005).collect();
        assert_eq!(run_end(&long, 0), long.len());
        assert_eq!(run_end(&long, 999_999), long.len());
    }

    #[test]
    fn varints_are_shortest_and_bounded() {
        for v in [0, 1, 127, 128, 300, u64::MAX >> 1, u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(Reader(&b).varint(), Ok(v));
        }
        assert!(Reader(&[0x80, 0x00]).varint().is_err(), "a padded zero");
        assert!(
            Reader(&[0xff; 9].iter().copied().chain([2]).collect::<Vec<_>>()).varint().is_err()
        );
        assert!(Reader(&[0xff; 11]).varint().is_err());
        assert!(Reader(&[0x80]).varint().is_err(), "truncated");
    }

    fn arb_checkpoint() -> impl Strategy<Value = StreamCheckpoint> {
        let stream =
            ("[a-z]{1,6}(-[0-9]{1,3})?", prop::collection::vec((0u64..4, 1u64..30), 1..12));
        (prop::collection::vec(stream, 0..8), prop::collection::vec(any::<(u8, u8, u16)>(), 0..20))
            .prop_map(|(streams, ids)| {
                // Give each stream runs of seqs (gaps, lengths) that do not collide: stream i
                // owns the seqs congruent to i modulo 8, or a dense range when alone.
                let mut seen = std::collections::HashSet::new();
                let mut out = Vec::new();
                let k = streams.len().max(1) as u64;
                for (i, (id, runs)) in streams.into_iter().enumerate() {
                    if !seen.insert(id.clone()) {
                        continue;
                    }
                    let mut seqs = Vec::new();
                    let mut at = 0u64;
                    for (gap, len) in runs {
                        at += gap;
                        for _ in 0..len {
                            seqs.push(at * k + i as u64);
                            at += 1;
                        }
                    }
                    out.push(CheckpointStream { id, seqs });
                }
                let covered = out.iter().filter_map(|s| s.seqs.last()).max().map_or(0, |m| m + 1);
                let recent = ids
                    .into_iter()
                    .filter(|_| !out.is_empty())
                    .map(|(e, s, v)| {
                        let stream = s as usize % out.len();
                        let version = v as usize % out[stream].seqs.len();
                        let seq = out[stream].seqs[version];
                        let version = version as u64;
                        CheckpointId { event_id: [e; 16], stream: stream as u32, version, seq }
                    })
                    .collect();
                StreamCheckpoint { log_id: [9; 16], covered_seq: covered, streams: out, recent }
            })
    }

    fn cases() -> u32 {
        std::env::var("ANNAL_CHECKPOINT_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(256)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(cases()))]

        #[test]
        fn any_checkpoint_round_trips(ck in arb_checkpoint(), cut in any::<u16>()) {
            let v2 = ck.encode();
            prop_assert_eq!(StreamCheckpoint::decode(&v2), Ok(ck.clone()));
            prop_assert_eq!(StreamCheckpoint::decode(&ck.encode_v1()), Ok(ck.clone()));
            // An encoded block copied as it is gives the same file.
            let h = CheckpointHeader::decode(&v2).unwrap();
            let dir_end = 64 + h.body_bytes as usize;
            let dir = CheckpointDirectory::decode(&h, &v2[64..dir_end], v2.len() as u64, u64::MAX)
                .unwrap();
            let copied: Vec<(&str, SeqBlock<'_>)> = dir
                .streams
                .iter()
                .map(|s| {
                    let b = &v2[s.block.offset as usize..(s.block.offset + s.block.bytes) as usize];
                    let block = SeqBlock::Encoded {
                        seq_count: s.seq_count,
                        bytes: b.to_vec(),
                        crc: s.block.crc,
                    };
                    (s.id.as_str(), block)
                })
                .collect();
            prop_assert_eq!(&encode_v2(ck.log_id, ck.covered_seq, &copied, &ck.recent), &v2);
            let n = cut as usize % v2.len();
            prop_assert!(StreamCheckpoint::decode(&v2[..n]).is_err());
        }
    }
}
