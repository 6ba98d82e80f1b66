//! The body of every fuzz target, shared by the cargo-fuzz binaries (`fuzz_targets/*.rs`) and
//! the stable-toolchain regression runner (`tools/tests/fuzz_corpus.rs`), which both include
//! this file with `#[path = ...] mod targets;`. It depends on `annal` and `std` only.
//!
//! Every function takes arbitrary bytes and must not panic except through the assertions
//! here, which state properties the decoders promise (RELIABILITY.md rows 19, 20 and 22): a
//! structure that decodes re-encodes to exactly the bytes it came from (so no field escapes
//! its checksum or its checks), and a store that opens can be read, appended to and reopened.

use std::path::Path;
use std::sync::Arc;

use annal::format::{
    FrameKind, Placement, SegmentHeader, SnapshotFile, decode_frame_header, decode_index,
    decode_record_header, encode_batch, encode_index, record_crc,
};
use annal::fs::SimFs;
use annal::limits::{
    FRAME_HEADER_BYTES, RECORD_BODY_BYTES_MAX, RECORD_HEADER_BYTES, SEGMENT_BYTES_MIN,
    SEGMENT_HEADER_BYTES,
};
use annal::{Log, Options};

/// Whether the input was accepted as a valid structure (or, for `open_dir`, a store that
/// opened and read back without error). The regression runner checks seed files named
/// `valid-*` and `invalid-*` against this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Decoded (or opened and read) without error.
    Accepted,
    /// Rejected with an error, as malformed input must be.
    Rejected,
}

/// The store directory inside the simulated file system of `open_dir`.
pub const STORE_DIR: &str = "/store";

/// Options `open_dir` opens stores with: the smallest segments, so a few KiB of input can hold
/// several; no preallocation, so no allocation depends on a configured size.
pub fn open_dir_options() -> Options {
    Options {
        segment_bytes: SEGMENT_BYTES_MIN,
        max_record_bytes: 1024,
        index_interval_bytes: 256,
        preallocate: false,
        ..Options::default()
    }
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    let bytes = b.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// `SegmentHeader::decode` on arbitrary bytes.
pub fn segment_header(data: &[u8]) -> Outcome {
    match SegmentHeader::decode(data) {
        Ok(h) => {
            assert_eq!(
                &h.encode()[..],
                &data[..SEGMENT_HEADER_BYTES],
                "header re-encodes differently"
            );
            Outcome::Accepted
        }
        Err(_) => Outcome::Rejected,
    }
}

/// `decode_record_header` on the input as a lone record, then `decode_frame_header` on it as
/// a frame; a batch frame whose body is present has its records decoded too.
pub fn frame(data: &[u8]) -> Outcome {
    // As a lone record, expecting the seq the record claims, so the seq check passes whenever
    // the checksum does and the fuzzer can reach past it.
    let claimed = le_u64(data, 8).unwrap_or(0);
    if let Ok((h, payload)) = decode_record_header(data, claimed, RECORD_BODY_BYTES_MAX) {
        assert_eq!(payload.len(), h.payload_bytes as usize);
        assert_eq!(h.seq, claimed);
        assert_eq!(record_crc(h.payload_bytes, h.seq, payload), h.crc);
        assert_eq!(payload, &data[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + payload.len()]);
    }

    let Ok(f) = decode_frame_header(data) else { return Outcome::Rejected };
    assert_eq!(&f.encode_header()[..], &data[..FRAME_HEADER_BYTES], "frame re-encodes differently");
    assert!(f.synced_through <= f.file_offset);
    if f.kind != FrameKind::Batch {
        assert_eq!(f.body_bytes, 0);
        return Outcome::Accepted;
    }
    assert!(f.count >= 1);
    let body_end = FRAME_HEADER_BYTES + f.body_bytes as usize;
    let Some(body) = data.get(FRAME_HEADER_BYTES..body_end) else {
        return Outcome::Rejected;
    };
    let mut payloads = Vec::new();
    let mut pos = 0usize;
    for i in 0..u64::from(f.count) {
        let Some(rest) = body.get(pos..) else { return Outcome::Rejected };
        let Ok((h, payload)) = decode_record_header(rest, f.seq + i, RECORD_BODY_BYTES_MAX) else {
            return Outcome::Rejected;
        };
        payloads.push(payload);
        pos += RECORD_HEADER_BYTES + h.payload_bytes as usize;
    }
    if pos != body.len() {
        return Outcome::Rejected;
    }
    // Every record decoded: the batch re-encodes to the same bytes (padding aside, which the
    // decoder does not read).
    let mut out = Vec::new();
    let at = Placement {
        seq: f.seq,
        file_offset: f.file_offset,
        synced_through: f.synced_through,
        log_tag: f.log_tag,
        timestamp_us: f.timestamp_us,
    };
    encode_batch(&mut out, at, &payloads);
    assert_eq!(&out[..body_end], &data[..body_end], "batch re-encodes differently");
    Outcome::Accepted
}

/// `decode_index` on arbitrary bytes.
pub fn index_file(data: &[u8]) -> Outcome {
    match decode_index(data) {
        Ok((h, entries)) => {
            assert_eq!(encode_index(&h, &entries), data, "index re-encodes differently");
            for pair in entries.windows(2) {
                assert!(pair[0].seq < pair[1].seq && pair[0].offset < pair[1].offset);
            }
            for e in &entries {
                assert!(e.seq >= h.segment_base && e.seq < h.end_seq && e.offset < h.end_offset);
            }
            Outcome::Accepted
        }
        Err(_) => Outcome::Rejected,
    }
}

/// `SnapshotFile::decode` (format-spec.md §13): an accepted snapshot re-encodes to exactly
/// its bytes.
pub fn snapshot_file(data: &[u8]) -> Outcome {
    match SnapshotFile::decode(data) {
        Ok(snap) => {
            assert_eq!(snap.encode().as_deref(), Ok(data), "snapshot re-encodes differently");
            Outcome::Accepted
        }
        Err(_) => Outcome::Rejected,
    }
}

/// The files of a store directory that `open_dir` builds from its input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirImage {
    /// Segment files: `(base seq used in the file name, bytes)`.
    pub segments: Vec<(u64, Vec<u8>)>,
    /// The index file of the last segment, if any.
    pub last_index: Option<Vec<u8>>,
}

/// Control byte bit: the input holds an index file for the last segment after the segments.
const WITH_INDEX: u8 = 1 << 2;
/// Control byte bit: name segments 0, 1, 2 instead of after the base seq in their header.
const NAME_BY_POSITION: u8 = 1 << 3;

/// Splits fuzz input into a store directory:
///
/// ```text
/// control u8   bits 0-1: segment files - 1 (1..=3; 3 counts as 2), bit 2: WITH_INDEX,
///              bit 3: NAME_BY_POSITION
/// len u32 LE   for every chunk but the last (clamped to the bytes left)
/// chunks       segment files in order, then the index file if WITH_INDEX
/// ```
///
/// A segment is named after the base seq its header claims (bytes 32..40), so real segments
/// keep their names, unless NAME_BY_POSITION is set or the chunk is too short to say.
pub fn split_dir(data: &[u8]) -> DirImage {
    let Some((&control, mut rest)) = data.split_first() else { return DirImage::default() };
    let segments = 1 + usize::from(control & 0b11).min(2);
    let with_index = control & WITH_INDEX != 0;
    let chunks = segments + usize::from(with_index);
    let mut lens = Vec::with_capacity(chunks);
    for _ in 1..chunks {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else { break };
        lens.push(u32::from_le_bytes(*len) as usize);
        rest = tail;
    }
    let mut parts = Vec::with_capacity(chunks);
    for len in lens {
        let (part, tail) = rest.split_at(len.min(rest.len()));
        parts.push(part.to_vec());
        rest = tail;
    }
    parts.push(rest.to_vec());
    parts.resize(chunks, Vec::new());
    let last_index = if with_index { parts.pop() } else { None };
    let by_position = control & NAME_BY_POSITION != 0;
    let segments = parts
        .into_iter()
        .enumerate()
        .map(|(i, bytes)| {
            let named = if by_position { None } else { le_u64(&bytes, 32) };
            (named.unwrap_or(i as u64), bytes)
        })
        .collect();
    DirImage { segments, last_index }
}

/// The inverse of [`split_dir`] for images it can express (used to write seed inputs).
pub fn join_dir(image: &DirImage) -> Vec<u8> {
    let mut chunks: Vec<&[u8]> = image.segments.iter().map(|(_, b)| b.as_slice()).collect();
    assert!((1..=3).contains(&chunks.len()));
    let mut control = (chunks.len() - 1) as u8;
    if let Some(ix) = &image.last_index {
        control |= WITH_INDEX;
        chunks.push(ix);
    }
    let mut out = vec![control];
    for c in &chunks[..chunks.len() - 1] {
        out.extend_from_slice(&u32::try_from(c.len()).unwrap().to_le_bytes());
    }
    for c in chunks {
        out.extend_from_slice(c);
    }
    out
}

/// Writes `image` into a fresh simulated file system, as a store left on disk.
pub fn build_dir(image: &DirImage) -> SimFs {
    let sim = SimFs::new(0);
    let dir = Path::new(STORE_DIR);
    sim.write_file_raw(dir.join("LOCK"), b"").unwrap();
    let mut last = None;
    for (base, bytes) in &image.segments {
        sim.write_file_raw(dir.join(format!("segments/{base:020}.seg")), bytes).unwrap();
        last = Some(*base);
    }
    if let (Some(base), Some(ix)) = (last, &image.last_index) {
        sim.write_file_raw(dir.join(format!("segments/{base:020}.idx")), ix).unwrap();
    }
    sim
}

/// Builds a store directory from the input (see [`split_dir`]) in a `SimFs`, opens it with
/// `Log::open_with` and, if it opens, reads every record with a cursor. A store that opened
/// must also take an append, close cleanly, and reopen clean with that append readable.
pub fn open_dir(data: &[u8]) -> Outcome {
    let image = split_dir(data);
    let sim = build_dir(&image);
    let storage: Arc<dyn annal::fs::Storage> = Arc::new(sim.clone());
    let Ok(log) = Log::open_with(Arc::clone(&storage), STORE_DIR, open_dir_options()) else {
        return Outcome::Rejected;
    };
    let next = log.recovery_report().next_seq;
    assert_eq!(log.visible_end(), next);
    let mut read = 0u64;
    let mut outcome = Outcome::Accepted;
    for item in log.cursor(0) {
        match item {
            Ok(rec) => {
                assert_eq!(rec.seq, read, "cursor skipped or repeated a seq");
                assert!(rec.payload.len() <= 1024, "record above max_record_bytes returned");
                read += 1;
            }
            Err(_) => {
                // Damage inside a sealed segment is found on read, not at open: its seal
                // frame vouches for it without a scan.
                outcome = Outcome::Rejected;
                break;
            }
        }
    }
    if outcome == Outcome::Accepted {
        assert_eq!(read, next, "cursor ended before the recovered head");
    }

    // The recovered store is writable and its state survives a clean close.
    let appended = log.append(&[b"after recovery"]);
    let Ok(a) = appended else { return Outcome::Rejected };
    assert_eq!(a.first, next, "append after recovery got the wrong seq");
    if log.close().is_err() {
        return Outcome::Rejected;
    }
    let log = match Log::open_with(storage, STORE_DIR, open_dir_options()) {
        Ok(log) => log,
        Err(e) => panic!("a store that opened and closed cleanly fails to reopen: {e}"),
    };
    let r = log.recovery_report();
    assert!(r.clean, "clean close did not give a clean open: {r:?}");
    assert_eq!(r.next_seq, next + 1);
    match log.read(next) {
        Ok(rec) => assert_eq!(&rec.payload[..], b"after recovery"),
        Err(e) => panic!("the append after recovery is not readable after reopen: {e}"),
    }
    outcome
}
