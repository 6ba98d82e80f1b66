//! One segment file: creating it durably, reading bytes from it, walking and verifying its
//! frames, and classifying what follows the last valid frame (format-spec.md §3, §4, §7).
//!
//! Nothing here knows about other segments; `log` strings segments together.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use byteorder::{ByteOrder, LittleEndian as LE};

use crate::error::{CorruptionKind, Error, Result};
use crate::format::{
    DecodeError, Frame, FrameKind, SegmentHeader, align_up, decode_frame_header,
    decode_record_header,
};
use crate::fs::{OpenMode, Storage, StorageFile};
use crate::index::SparseIndex;
use crate::limits::{
    FRAME_ALIGN_BYTES, FRAME_HEADER_BYTES, RECORD_BODY_BYTES_MAX, RECORD_HEADER_BYTES,
    SEGMENT_HEADER_BYTES, UNPROVEN_BATCHES_MAX,
};
use crate::names;

/// First read size of a source that reads through `read_at` rather than a map: a point read
/// needs about one index interval.
const READ_WINDOW_MIN_BYTES: usize = 8 << 10;

/// Largest read size: sequential scans double the window up to this.
const READ_WINDOW_MAX_BYTES: usize = 256 << 10;

/// Random access to a segment's bytes: a memory map of a sealed segment, or positioned reads
/// through a window buffer.
pub(crate) enum Source {
    /// The whole file, mapped, as one `Bytes` that owns the map. Records are read out of it
    /// by copying ([`read_record`]): a payload handed to a caller never aliases the map.
    Mapped(bytes::Bytes),
    /// Positioned reads of the first `len` bytes of `file`.
    File {
        /// The segment file.
        file: Arc<dyn StorageFile>,
        /// Bytes that may be read (the file's length, or the readable prefix).
        len: u64,
        /// The cached window.
        window: Vec<u8>,
        /// File offset of `window[0]`.
        window_off: u64,
    },
}

impl Source {
    /// A source reading the first `len` bytes of `file`.
    pub(crate) fn file(file: Arc<dyn StorageFile>, len: u64) -> Self {
        Source::File { file, len, window: Vec::new(), window_off: 0 }
    }

    /// Raises the readable length of a file source (the active segment grows; bytes once
    /// readable never change, so the cached window stays valid).
    pub(crate) fn extend_to(&mut self, new_len: u64) {
        if let Source::File { len, .. } = self {
            *len = (*len).max(new_len);
        }
    }

    /// Bytes that may be read.
    pub(crate) fn len(&self) -> u64 {
        match self {
            Source::Mapped(m) => m.len() as u64,
            Source::File { len, .. } => *len,
        }
    }

    /// Exactly `n` bytes at `off`. Callers bound `n` before asking (it is never more than a
    /// frame header or one record, and the record length was checked against the maximum).
    pub(crate) fn get(&mut self, off: u64, n: usize) -> io::Result<&[u8]> {
        let end = off.checked_add(n as u64).filter(|&e| e <= self.len());
        let Some(end) = end else {
            return Err(io::ErrorKind::UnexpectedEof.into());
        };
        match self {
            Source::Mapped(m) => {
                m.get(off as usize..end as usize).ok_or_else(|| io::ErrorKind::UnexpectedEof.into())
            }
            Source::File { file, len, window, window_off } => {
                let have = off >= *window_off && end <= *window_off + window.len() as u64;
                if !have {
                    let grown =
                        (window.len() * 2).clamp(READ_WINDOW_MIN_BYTES, READ_WINDOW_MAX_BYTES);
                    let want = (n.max(grown) as u64).min(*len - off) as usize;
                    window.clear();
                    window.resize(want, 0);
                    // Read ahead as far as the file goes, but insist only on the `n` bytes
                    // asked for: the file may be shorter than the readable length a source
                    // was made with (a writer cut unsynced bytes after a failure).
                    let mut got = 0;
                    while got < want {
                        match file.read_at(&mut window[got..], off + got as u64) {
                            Ok(0) => break,
                            Ok(k) => got += k,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(e),
                        }
                    }
                    window.truncate(got);
                    *window_off = off;
                }
                let start = (off - *window_off) as usize;
                window.get(start..start + n).ok_or_else(|| io::ErrorKind::UnexpectedEof.into())
            }
        }
    }
}

/// Lets a memory map own the bytes of a [`bytes::Bytes`], so that every reader of a sealed
/// segment shares one map.
struct MapOwner(memmap2::Mmap);

impl AsRef<[u8]> for MapOwner {
    fn as_ref(&self) -> &[u8] {
        &self.0[..]
    }
}

/// The whole of a mapped file as one `Bytes` owning the map.
pub(crate) fn mapped_bytes(map: memmap2::Mmap) -> bytes::Bytes {
    bytes::Bytes::from_owner(MapOwner(map))
}

/// Why a frame at some offset is not valid, or an I/O error reading it.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// The bytes are bad.
    Bad(CorruptionKind),
    /// The bytes could not be read.
    Io(io::Error),
}

impl From<DecodeError> for FrameError {
    fn from(e: DecodeError) -> Self {
        FrameError::Bad(CorruptionKind::Decode(e))
    }
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(e)
    }
}

impl FrameError {
    /// Into the public error, naming the file and offset.
    pub(crate) fn at(self, path: &Path, offset: u64) -> Error {
        match self {
            FrameError::Bad(kind) => Error::corrupt(path, offset, kind),
            FrameError::Io(e) => Error::io("read", path, e),
        }
    }
}

/// Decodes the frame header at `off` and checks it belongs there: its recorded offset, its
/// log tag, and that the whole frame fits in the source.
pub(crate) fn frame_at(src: &mut Source, off: u64, log_tag: u64) -> Result<Frame, FrameError> {
    if !off.is_multiple_of(FRAME_ALIGN_BYTES as u64) {
        return Err(DecodeError::Inconsistent("frame offset is not 8-byte aligned").into());
    }
    let available = src.len().saturating_sub(off);
    if available < FRAME_HEADER_BYTES as u64 {
        return Err(DecodeError::Truncated { needed: FRAME_HEADER_BYTES as u64, available }.into());
    }
    let f = decode_frame_header(src.get(off, FRAME_HEADER_BYTES)?)?;
    if f.file_offset != off {
        return Err(FrameError::Bad(CorruptionKind::MisplacedFrame { recorded: f.file_offset }));
    }
    if f.log_tag != log_tag {
        return Err(FrameError::Bad(CorruptionKind::ForeignFrame));
    }
    if f.total_bytes() > available {
        return Err(DecodeError::Truncated { needed: f.total_bytes(), available }.into());
    }
    Ok(f)
}

/// Reads the record header at `pos` inside a batch body ending at `body_end` and returns
/// the payload length, bounded by the batch and by `max_payload`.
fn record_len_at(
    src: &mut Source,
    pos: u64,
    body_end: u64,
    max_payload: u32,
) -> Result<u32, FrameError> {
    if pos + RECORD_HEADER_BYTES as u64 > body_end {
        return Err(DecodeError::Inconsistent("record header crosses the batch end").into());
    }
    let h = src.get(pos, RECORD_HEADER_BYTES)?;
    record_len_in(h, pos, body_end, max_payload)
}

/// The payload length in the record header `h` (of the record at `pos` in a batch body
/// ending at `body_end`), bounded by the batch and by `max_payload`.
fn record_len_in(h: &[u8], pos: u64, body_end: u64, max_payload: u32) -> Result<u32, FrameError> {
    let len = h.get(4..8).map_or(u32::MAX, LE::read_u32);
    if len > max_payload {
        return Err(DecodeError::OutOfBounds {
            field: "record payload_bytes",
            value: len.into(),
            max: max_payload.into(),
        }
        .into());
    }
    if pos + RECORD_HEADER_BYTES as u64 + u64::from(len) > body_end {
        return Err(DecodeError::Inconsistent("record crosses the batch end").into());
    }
    Ok(len)
}

/// Verifies every record of the batch `f` at `off`: each CRC, each seq, that the records fill
/// the body exactly, and that the padding is zero. Returns the offset of a bad record with
/// the error.
pub(crate) fn verify_batch(
    src: &mut Source,
    off: u64,
    f: &Frame,
    max_payload: u32,
) -> Result<(), (u64, FrameError)> {
    let mut pos = off + FRAME_HEADER_BYTES as u64;
    let body_end = pos + u64::from(f.body_bytes);
    for i in 0..u64::from(f.count) {
        let len = record_len_at(src, pos, body_end, max_payload).map_err(|e| (pos, e))?;
        let n = RECORD_HEADER_BYTES + len as usize;
        let bytes = src.get(pos, n).map_err(|e| (pos, e.into()))?;
        decode_record_header(bytes, f.seq + i, max_payload).map_err(|e| (pos, e.into()))?;
        pos += n as u64;
    }
    if pos != body_end {
        return Err((pos, DecodeError::Inconsistent("records do not fill the batch").into()));
    }
    let pad = (align_up(u64::from(f.body_bytes)) - u64::from(f.body_bytes)) as usize;
    let padding = src.get(body_end, pad).map_err(|e| (body_end, e.into()))?;
    if padding.iter().any(|&b| b != 0) {
        return Err((body_end, DecodeError::ReservedNonZero.into()));
    }
    Ok(())
}

/// Finds record `seq` inside batch `f` at `off` and returns (payload offset, payload length)
/// after verifying that record's CRC and seq. Records before it are skipped by their lengths,
/// which are bounded by the batch; a wrong length ends in a CRC or seq mismatch, never in a
/// wrong record.
pub(crate) fn locate_record(
    src: &mut Source,
    off: u64,
    f: &Frame,
    seq: u64,
    max_payload: u32,
) -> Result<(u64, u32), (u64, FrameError)> {
    debug_assert!(seq >= f.seq && seq < f.seq + u64::from(f.count));
    let mut pos = off + FRAME_HEADER_BYTES as u64;
    let body_end = pos + u64::from(f.body_bytes);
    for _ in f.seq..seq {
        let len = record_len_at(src, pos, body_end, max_payload).map_err(|e| (pos, e))?;
        pos += RECORD_HEADER_BYTES as u64 + u64::from(len);
    }
    record_at(src, pos, body_end, seq, max_payload)
}

/// Reads and verifies the record at `pos` (before `end`) with two exact positioned reads,
/// for point reads where a read-ahead window would be wasted. Returns its payload.
pub(crate) fn read_record_exact(
    file: &dyn StorageFile,
    pos: u64,
    end: u64,
    seq: u64,
) -> Result<bytes::Bytes, (u64, FrameError)> {
    let mut h = [0u8; RECORD_HEADER_BYTES];
    if pos + RECORD_HEADER_BYTES as u64 > end {
        return Err((pos, DecodeError::Inconsistent("record header beyond the data").into()));
    }
    file.read_exact_at(&mut h, pos).map_err(|e| (pos, e.into()))?;
    let len = LE::read_u32(&h[4..8]);
    if len > RECORD_BODY_BYTES_MAX {
        let e = DecodeError::OutOfBounds {
            field: "record payload_bytes",
            value: len.into(),
            max: RECORD_BODY_BYTES_MAX.into(),
        };
        return Err((pos, e.into()));
    }
    let total = RECORD_HEADER_BYTES as u64 + u64::from(len);
    if pos + total > end {
        return Err((pos, DecodeError::Inconsistent("record crosses the end of the data").into()));
    }
    // Bounded by RECORD_BODY_BYTES_MAX, checked above.
    let mut buf = vec![0u8; total as usize];
    file.read_exact_at(&mut buf, pos).map_err(|e| (pos, e.into()))?;
    decode_record_header(&buf, seq, RECORD_BODY_BYTES_MAX).map_err(|e| (pos, e.into()))?;
    Ok(bytes::Bytes::from(buf).slice(RECORD_HEADER_BYTES..))
}

/// Verifies the record whose header is at `pos` (inside a batch body ending at `body_end`)
/// and returns (payload offset, payload length).
pub(crate) fn record_at(
    src: &mut Source,
    pos: u64,
    body_end: u64,
    seq: u64,
    max_payload: u32,
) -> Result<(u64, u32), (u64, FrameError)> {
    let len = record_len_at(src, pos, body_end, max_payload).map_err(|e| (pos, e))?;
    let bytes = src.get(pos, RECORD_HEADER_BYTES + len as usize).map_err(|e| (pos, e.into()))?;
    decode_record_header(bytes, seq, max_payload).map_err(|e| (pos, e.into()))?;
    Ok((pos + RECORD_HEADER_BYTES as u64, len))
}

/// Reads the record whose header is at `pos` (inside a batch body ending at `body_end`) and
/// returns its payload and the offset after it. The record is copied out of the source
/// first and the copy is verified (CRC, seq): the payload returned is the bytes that were
/// checked. Checking a memory map and then copying it, or handing out a view of the map,
/// would let a change to the file in between (another process ignoring `LOCK`, a page
/// re-read from a failing disk) reach the caller unchecked.
pub(crate) fn read_record(
    src: &mut Source,
    pos: u64,
    body_end: u64,
    seq: u64,
    max_payload: u32,
) -> Result<(bytes::Bytes, u64), (u64, FrameError)> {
    let len = record_len_at(src, pos, body_end, max_payload).map_err(|e| (pos, e))?;
    // Bounded by `max_payload`, checked by `record_len_at`.
    let copy = src.get(pos, RECORD_HEADER_BYTES + len as usize).map_err(|e| (pos, e.into()))?;
    let copy = copy.to_vec();
    // The copy's own header decides the length: it is what the CRC covers.
    let (header, _) = decode_record_header(&copy, seq, max_payload).map_err(|e| (pos, e.into()))?;
    let end = RECORD_HEADER_BYTES + header.payload_bytes as usize;
    let payload = bytes::Bytes::from(copy).slice(RECORD_HEADER_BYTES..end);
    Ok((payload, pos + end as u64))
}

/// Bytes a cursor copies out of a segment at a time (or one whole record, if larger).
/// Small enough that a record is checked while its copy is still in the CPU's cache.
const COPY_CHUNK_BYTES: usize = 64 << 10;

/// Size of the allocations chunks are carved from.
const COPY_BUFFER_BYTES: usize = 4 * COPY_CHUNK_BYTES;

/// Private copies of the records a cursor hands out, taken out of a source before they are
/// checked, so that a payload is a slice of bytes whose CRC was checked and that nothing else
/// can change (not a view of a memory map that another writer or the disk could change).
///
/// Records are copied a chunk at a time into one buffer. Right after a copy (while it is in
/// the cache) the records that lie whole in the chunk are checked in one pass, up to the first
/// that fails: that is the verified run, which later calls hand out without looking at the
/// source again ([`RecordCopier::verified`]). A chunk ends where the batch does; a record that
/// does not fit in the rest of a chunk starts a new chunk of its own size, bounded by the
/// record limit. The buffer's allocation is reused once no payload handed out from it is held.
#[derive(Default)]
pub(crate) struct RecordCopier {
    /// File offset of `chunk[0]`.
    start: u64,
    /// The current chunk: copied bytes, handed out as slices.
    chunk: bytes::Bytes,
    /// The allocation the next chunk is copied into.
    spare: bytes::BytesMut,
    /// Chunk-relative offsets of the verified run: the records from `run_start` up to
    /// `run_end`, back to back, each of which passed `decode_record_header` in this chunk.
    run_start: usize,
    run_end: usize,
}

impl RecordCopier {
    /// The record whose header is at file offset `pos` with seq `seq`, if it lies in the
    /// verified run: its payload and the offset after it. Records are only ever asked for at
    /// their own offsets, in order (a cursor's chain of offsets starts at a batch's first
    /// record), so `pos` inside the run is a record boundary of the run; the seq is compared
    /// as well, so a caller that broke that rule would get `None` and the checked path.
    #[inline]
    pub(crate) fn verified(&self, pos: u64, seq: u64) -> Option<(bytes::Bytes, u64)> {
        let rel = usize::try_from(pos.checked_sub(self.start)?).ok()?;
        if rel < self.run_start || rel >= self.run_end {
            return None;
        }
        let (len, found) = crate::format::record_len_and_seq(self.chunk.get(rel..self.run_end)?)?;
        let end = rel + RECORD_HEADER_BYTES + len as usize;
        if found != seq || end > self.run_end {
            return None;
        }
        Some((self.chunk.slice(rel + RECORD_HEADER_BYTES..end), pos + (end - rel) as u64))
    }

    /// The record whose header is at file offset `pos`, in a batch body ending at
    /// `body_end`: copied, then verified in the copy (length bounds, CRC, seq), with the
    /// records after it that the copy holds. Returns its payload and the offset after it.
    pub(crate) fn record(
        &mut self,
        src: &mut Source,
        pos: u64,
        body_end: u64,
        seq: u64,
        max_payload: u32,
    ) -> Result<(bytes::Bytes, u64), (u64, FrameError)> {
        if let Some(r) = self.verified(pos, seq) {
            return Ok(r);
        }
        let Some(left) = body_end.checked_sub(pos).filter(|&n| n >= RECORD_HEADER_BYTES as u64)
        else {
            let e = DecodeError::Inconsistent("record header crosses the batch end");
            return Err((pos, e.into()));
        };
        if !self.holds(pos, RECORD_HEADER_BYTES as u64) {
            let n = left.min(COPY_CHUNK_BYTES as u64) as usize;
            self.refill(src, pos, n).map_err(|e| (pos, e.into()))?;
        }
        let len = self.len_at(pos, body_end, max_payload)?;
        let whole = RECORD_HEADER_BYTES as u64 + u64::from(len);
        if !self.holds(pos, whole) {
            // Bounded by the batch and by `max_payload` (checked by `len_at`).
            self.refill(src, pos, whole as usize).map_err(|e| (pos, e.into()))?;
            // The new copy's own header decides: it is what the CRC is checked against.
            let again = self.len_at(pos, body_end, max_payload)?;
            if again != len {
                let e = DecodeError::Inconsistent("record changed while it was copied");
                return Err((pos, e.into()));
            }
        }
        self.verify_run(pos, body_end, seq, max_payload);
        if let Some(r) = self.verified(pos, seq) {
            return Ok(r);
        }
        // The record at `pos` did not verify: check it again for the error.
        let rel = (pos - self.start) as usize;
        let record = self.chunk.get(rel..rel + whole as usize).unwrap_or_default();
        decode_record_header(record, seq, max_payload).map_err(|e| (pos, e.into()))?;
        let e = DecodeError::Inconsistent("record verified but not handed out");
        Err((pos, e.into()))
    }

    /// Checks the records from file offset `pos` (seq `seq`) that lie whole in the chunk and
    /// inside the batch body ending at `body_end`, up to the first that fails, and makes them
    /// the verified run. `pos` lies in the chunk.
    fn verify_run(&mut self, pos: u64, body_end: u64, seq: u64, max_payload: u32) {
        let first = (pos - self.start) as usize;
        let limit = usize::try_from(body_end.saturating_sub(self.start))
            .unwrap_or(usize::MAX)
            .min(self.chunk.len());
        let data = self.chunk.get(..limit).unwrap_or_default();
        let (mut at, mut s) = (first, seq);
        while let Some(rest) = data.get(at..) {
            match decode_record_header(rest, s, max_payload) {
                Ok((_, payload)) => {
                    at += RECORD_HEADER_BYTES + payload.len();
                    s += 1;
                }
                Err(_) => break,
            }
        }
        self.run_start = first;
        self.run_end = at;
    }

    /// Whether the current chunk holds the `n` bytes at file offset `pos`.
    fn holds(&self, pos: u64, n: u64) -> bool {
        pos >= self.start
            && (pos - self.start).checked_add(n).is_some_and(|e| e <= self.chunk.len() as u64)
    }

    /// The payload length in the copied record header at `pos`, bounded by the batch and
    /// by `max_payload`.
    fn len_at(&self, pos: u64, body_end: u64, max_payload: u32) -> Result<u32, (u64, FrameError)> {
        let rel = (pos - self.start) as usize;
        let h = self.chunk.get(rel..rel + RECORD_HEADER_BYTES).unwrap_or_default();
        record_len_in(h, pos, body_end, max_payload).map_err(|e| (pos, e))
    }

    /// Copies the `n` bytes at `pos` into a fresh chunk (with an empty verified run).
    fn refill(&mut self, src: &mut Source, pos: u64, n: usize) -> io::Result<()> {
        let data = src.get(pos, n)?;
        // Drop this copier's own handle on the old chunk first, so that `reserve` can take
        // the allocation back when no payload of it is held any more.
        self.chunk = bytes::Bytes::new();
        self.run_start = 0;
        self.run_end = 0;
        // Chunks are carved one after another out of one allocation of at least
        // `COPY_BUFFER_BYTES`; a new one is made only when the rest cannot hold this chunk
        // (and `reserve` takes the old one back when no payload of it is held any more).
        // Asking `reserve` for a whole buffer at every refill would allocate one per chunk
        // while payloads are held: a caller keeping single-record batches would pin a
        // buffer per record.
        if self.spare.capacity() - self.spare.len() < n {
            self.spare.reserve(n.max(COPY_BUFFER_BYTES));
        }
        self.spare.extend_from_slice(data);
        self.chunk = self.spare.split().freeze();
        self.start = pos;
        Ok(())
    }
}

/// Where and why a scan stopped.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The readable bytes ended exactly after the last valid frame.
    EndOfData,
    /// A seal frame at `at`: the segment is complete.
    Sealed {
        /// Offset of the seal frame.
        at: u64,
    },
    /// An invalid frame (or record) at `at`.
    Invalid {
        /// Offset of the bad frame header (not of the bad record inside it).
        at: u64,
        /// What is wrong.
        kind: CorruptionKind,
    },
}

/// The result of walking a segment's frames from a trusted point.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Offset just past the last valid batch or close frame: where the next frame goes.
    pub end_offset: u64,
    /// The seq after the last valid record.
    pub next_seq: u64,
    /// Index entries for the batches seen (added to those passed in).
    pub index: SparseIndex,
    /// Why the walk ended.
    pub stop: Stop,
    /// The latest timestamp of the valid frames walked (0 if none).
    pub last_timestamp_us: u64,
    /// One past the last seq that a valid frame walked proves durable: the end of the last
    /// batch that ends at or before the largest `synced_through` of a valid frame (a seal or
    /// close frame proves everything before it), or `start_seq` (format-spec.md §6.1).
    pub proven_seq: u64,
}

/// The fixed facts a scan checks frames against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScanParams {
    /// The segment's base seq (to check the record counts of marker frames).
    pub base: u64,
    /// The store's log tag.
    pub log_tag: u64,
    /// The largest payload believed.
    pub max_payload: u32,
    /// Bytes between index entries.
    pub interval: u64,
}

/// Walks and fully verifies frames from `start` (a trusted frame boundary whose next seq is
/// `start_seq`), noting index entries, until the data ends, a seal frame, or the first invalid
/// frame.
pub(crate) fn scan(
    src: &mut Source,
    params: ScanParams,
    start: u64,
    start_seq: u64,
    mut index: SparseIndex,
) -> io::Result<Scan> {
    let ScanParams { base, log_tag, max_payload, interval } = params;
    let mut off = start;
    let mut next_seq = start_seq;
    let mut last_timestamp_us = 0;
    // Batches walked that no frame has proven durable yet: (end offset, next seq). A
    // writer's `synced_through` never goes back within a segment, so proofs pop from the
    // front.
    let mut unproven: VecDeque<(u64, u64)> = Default::default();
    let mut proven_seq = start_seq;
    let stop = loop {
        if off == src.len() {
            break Stop::EndOfData;
        }
        let f = match frame_at(src, off, log_tag) {
            Ok(f) => f,
            Err(FrameError::Io(e)) => return Err(e),
            Err(FrameError::Bad(kind)) => break Stop::Invalid { at: off, kind },
        };
        if f.seq != next_seq {
            let kind = CorruptionKind::SeqMismatch { expected: next_seq, found: f.seq };
            break Stop::Invalid { at: off, kind };
        }
        match f.kind {
            FrameKind::Batch => {
                match verify_batch(src, off, &f, max_payload) {
                    Ok(()) => {}
                    Err((_, FrameError::Io(e))) => return Err(e),
                    Err((_, FrameError::Bad(kind))) => break Stop::Invalid { at: off, kind },
                }
                prove(&mut unproven, &mut proven_seq, f.synced_through);
                if unproven.len() >= UNPROVEN_BATCHES_MAX {
                    unproven.pop_back();
                }
                unproven.push_back((off + f.total_bytes(), f.seq + u64::from(f.count)));
                index.note_batch(f.seq, off, f.timestamp_us, interval);
                // Frame times are non-decreasing as written; one that goes back is kept as it
                // is (the CRC covers it), so a time query near it is approximate, not lossy.
                last_timestamp_us = last_timestamp_us.max(f.timestamp_us);
                next_seq += u64::from(f.count);
                off += f.total_bytes();
            }
            FrameKind::Seal | FrameKind::Close => {
                if u64::from(f.count) != next_seq - base {
                    let kind = CorruptionKind::SeqMismatch {
                        expected: next_seq - base,
                        found: f.count.into(),
                    };
                    break Stop::Invalid { at: off, kind };
                }
                prove(&mut unproven, &mut proven_seq, f.synced_through);
                last_timestamp_us = last_timestamp_us.max(f.timestamp_us);
                if f.kind == FrameKind::Seal {
                    break Stop::Sealed { at: off };
                }
                off += f.total_bytes();
            }
        }
    };
    Ok(Scan { end_offset: off, next_seq, index, stop, last_timestamp_us, proven_seq })
}

/// A valid frame's `synced_through` proves durable every batch walked before it that ends
/// at or before it.
fn prove(unproven: &mut VecDeque<(u64, u64)>, proven: &mut u64, synced: u64) {
    while let Some(&(end, next)) = unproven.front()
        && end <= synced
    {
        *proven = next;
        unproven.pop_front();
    }
}

/// What lies after a bad frame at `bad_at`, found by probing every aligned offset.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TailSurvey {
    /// Offset of a later valid frame written after `bad_at` was durable: proof that the bad
    /// frame is damage to acknowledged data, not a torn write.
    pub durable_proof: Option<u64>,
    /// Records in the batch headers that still decode at or after `bad_at` (the events a cut
    /// would drop, as far as they can be told).
    pub events: u64,
    /// One past the last non-zero byte at or after `bad_at` (`bad_at` if all are zero).
    pub nonzero_end: u64,
}

/// Probes the bytes from `bad_at` to the end of the source (format-spec.md §7.2).
pub(crate) fn survey_tail(src: &mut Source, bad_at: u64, log_tag: u64) -> io::Result<TailSurvey> {
    let mut survey = TailSurvey { nonzero_end: bad_at, ..TailSurvey::default() };
    let len = src.len();
    let mut pos = bad_at;
    while pos < len {
        match survey_step(src, &mut survey, pos, len, bad_at, log_tag) {
            Ok(next) => pos = next,
            // The file ends before the length the source was made with: a writer gave back
            // its preallocated space (or cut unsynced bytes) while a read-only open looked.
            // What is past the file's end is not there to survey.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
    }
    Ok(survey)
}

/// Surveys the bytes at `pos` (a block of zeros, or up to the next aligned offset); returns
/// where the next step starts.
fn survey_step(
    src: &mut Source,
    survey: &mut TailSurvey,
    pos: u64,
    len: u64,
    bad_at: u64,
    log_tag: u64,
) -> io::Result<u64> {
    let align = FRAME_ALIGN_BYTES as u64;
    // Preallocated space is zeros, often megabytes of it: a block of zeros holds no frame (a
    // frame's kind byte is never zero) and no non-zero byte, so it is skipped whole.
    const ZERO_BLOCK: u64 = 64 << 10;
    if pos.is_multiple_of(align)
        && len - pos >= ZERO_BLOCK
        && src.get(pos, ZERO_BLOCK as usize)?.iter().all(|&b| b == 0)
    {
        return Ok(pos + ZERO_BLOCK);
    }
    let n = (len - pos).min(align) as usize;
    if let Some(last) = src.get(pos, n)?.iter().rposition(|&b| b != 0) {
        survey.nonzero_end = pos + last as u64 + 1;
    }
    let candidate = pos.is_multiple_of(align)
        && len - pos >= FRAME_HEADER_BYTES as u64
        && LE::read_u64(src.get(pos + 24, 8)?) == pos;
    if candidate
        && let Ok(f) = decode_frame_header(src.get(pos, FRAME_HEADER_BYTES)?)
        && f.log_tag == log_tag
    {
        if f.kind == FrameKind::Batch {
            survey.events += u64::from(f.count);
        }
        if f.synced_through > bad_at && survey.durable_proof.is_none() {
            survey.durable_proof = Some(pos);
        }
    }
    Ok(pos + n as u64)
}

/// Copies bytes `[from, to)` of a segment into a new file beside it,
/// `<base>.seg.broken-<from>[.N]`, in bounded chunks, and makes it durable. Bytes the log no
/// longer holds are a user's bytes all the same: they are moved aside, never just dropped.
pub(crate) fn move_aside(
    storage: &dyn Storage,
    seg_path: &Path,
    base: u64,
    file: &dyn StorageFile,
    from: u64,
    to: u64,
) -> io::Result<PathBuf> {
    const CHUNK: u64 = 1 << 20;
    let dir = seg_path.parent().unwrap_or(Path::new("."));
    let mut target = dir.join(names::broken_tail_name(base, from));
    let mut k = 1;
    while storage.exists(&target)? {
        target = dir.join(format!("{}.{k}", names::broken_tail_name(base, from)));
        k += 1;
    }
    let out = storage.open(&target, OpenMode::CreateNew)?;
    let mut buf = vec![0u8; CHUNK.min(to.saturating_sub(from)) as usize];
    let mut pos = from;
    while pos < to {
        let n = CHUNK.min(to - pos) as usize;
        let chunk = buf.get_mut(..n).unwrap_or_default();
        file.read_exact_at(chunk, pos)?;
        out.write_all_at(chunk, pos - from)?;
        pos += n as u64;
    }
    out.sync_data()?;
    storage.sync_dir(dir)?;
    Ok(target)
}

/// Reads and validates a segment header from the start of `file`.
pub(crate) fn read_header(file: &dyn StorageFile, path: &Path) -> Result<SegmentHeader> {
    let mut buf = [0u8; SEGMENT_HEADER_BYTES];
    let len = file.len().map_err(|e| Error::io("stat", path, e))?;
    if len < SEGMENT_HEADER_BYTES as u64 {
        let kind = DecodeError::Truncated { needed: SEGMENT_HEADER_BYTES as u64, available: len };
        return Err(Error::corrupt(path, 0, kind));
    }
    file.read_exact_at(&mut buf, 0).map_err(|e| Error::io("read", path, e))?;
    SegmentHeader::decode(&buf).map_err(|e| Error::corrupt(path, 0, e))
}

/// Creates the segment `base` durably: a temp file is created, preallocated, given its
/// header and fsynced, renamed to its final name, and the directory is fsynced. Only then may
/// a record in it be acknowledged (format-spec.md §6.2).
///
/// On failure the temp file is removed again (it never held a record) and the error says why;
/// `Error::StorageFull` means nothing changed.
pub(crate) fn create(
    storage: &dyn Storage,
    seg_dir: &Path,
    log_id: [u8; 16],
    base: u64,
    segment_bytes: u64,
    preallocate: bool,
) -> Result<(PathBuf, Arc<dyn StorageFile>)> {
    let path = seg_dir.join(names::segment_file_name(base));
    let tmp = seg_dir.join(format!("{}{}", names::segment_file_name(base), names::TMP_SUFFIX));
    if storage.exists(&tmp).map_err(|e| Error::io("stat", &tmp, e))? {
        storage.remove_file(&tmp).map_err(|e| Error::io("remove", &tmp, e))?;
    }
    let file = storage.open(&tmp, OpenMode::CreateNew).map_err(|e| Error::io("create", &tmp, e))?;
    let header = SegmentHeader { log_id, base_seq: base, created_unix_ms: now_unix_ms() };
    let fill = (|| -> io::Result<()> {
        if preallocate {
            file.preallocate(segment_bytes)?;
        }
        file.write_all_at(&header.encode(), 0)?;
        file.sync_data()
    })();
    if let Err(e) = fill {
        drop(file);
        // The temp file holds no record; removing it gives the space back.
        let _ = storage.remove_file(&tmp);
        return Err(Error::io("create segment", &tmp, e));
    }
    // From the rename on, the directory may have changed: a failure here is never reported
    // as the harmless `StorageFull` (which tells the committer nothing changed).
    let changed = |op: &'static str, p: &Path, e: io::Error| Error::Io {
        op,
        path: p.to_path_buf(),
        source: Arc::new(e),
    };
    storage.rename(&tmp, &path).map_err(|e| changed("rename", &tmp, e))?;
    storage.sync_dir(seg_dir).map_err(|e| changed("sync dir", seg_dir, e))?;
    Ok((path, Arc::from(file)))
}

/// Why a prepared spare could not become a segment.
#[derive(Debug)]
pub(crate) enum SpareError {
    /// Writing or syncing the header failed: the directory is unchanged and the spare was
    /// removed (best effort), so the roll can still create its segment the ordinary way.
    Untouched,
    /// The rename or the directory fsync failed: the directory may have changed.
    Changed(Error),
}

/// Turns a prepared spare (zero-filled to `segment_bytes` and synced, format-spec.md §6.2)
/// into segment `base`: the last steps of [`create`], header, fdatasync, rename, directory
/// fsync. Only after this may a record in it be acknowledged.
pub(crate) fn activate_spare(
    storage: &dyn Storage,
    seg_dir: &Path,
    log_id: [u8; 16],
    base: u64,
    (spare_path, file): (PathBuf, Box<dyn StorageFile>),
) -> Result<(PathBuf, Arc<dyn StorageFile>), SpareError> {
    let header = SegmentHeader { log_id, base_seq: base, created_unix_ms: now_unix_ms() };
    if file.write_all_at(&header.encode(), 0).and_then(|()| file.sync_data()).is_err() {
        drop(file);
        // Not a segment yet (wrong name): it holds no record, only zeros and the header.
        let _ = storage.remove_file(&spare_path);
        return Err(SpareError::Untouched);
    }
    let path = seg_dir.join(names::segment_file_name(base));
    let changed = |op: &'static str, p: &Path, e: io::Error| {
        SpareError::Changed(Error::Io { op, path: p.to_path_buf(), source: Arc::new(e) })
    };
    storage.rename(&spare_path, &path).map_err(|e| changed("rename", &spare_path, e))?;
    storage.sync_dir(seg_dir).map_err(|e| changed("sync dir", seg_dir, e))?;
    Ok((path, Arc::from(file)))
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Placement, decode_frame_header, encode_batch};

    /// One batch of `payloads` at offset 0 (seq 10), with byte `flip` (if any) of the frame
    /// flipped: the mapped source, the offset of each record, and the body's end.
    fn batch(payloads: &[Vec<u8>], flip: Option<usize>) -> (Source, Vec<u64>, u64) {
        let at =
            Placement { seq: 10, file_offset: 0, synced_through: 0, log_tag: 7, timestamp_us: 1 };
        let mut buf = Vec::new();
        encode_batch(&mut buf, at, payloads);
        let frame = decode_frame_header(&buf[..FRAME_HEADER_BYTES]).unwrap();
        let mut offs = Vec::new();
        let mut pos = FRAME_HEADER_BYTES as u64;
        for p in payloads {
            offs.push(pos);
            pos += (RECORD_HEADER_BYTES + p.len()) as u64;
        }
        if let Some(i) = flip {
            buf[i] ^= 0x10;
        }
        let body_end = FRAME_HEADER_BYTES as u64 + u64::from(frame.body_bytes);
        (Source::Mapped(bytes::Bytes::from(buf)), offs, body_end)
    }

    fn payloads(n: usize, len: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| (0..len).map(|j| (i * 31 + j) as u8).collect()).collect()
    }

    #[test]
    fn a_damaged_record_ends_the_verified_run_and_is_reported() {
        let ps = payloads(50, 300);
        let (_, offs, _) = batch(&ps, None);
        // A payload byte of record 30: its CRC no longer matches.
        let (mut src, _, body_end) = batch(&ps, Some(offs[30] as usize + RECORD_HEADER_BYTES + 5));
        let mut c = RecordCopier::default();
        for (i, p) in ps.iter().enumerate().take(30) {
            let (got, next) =
                c.record(&mut src, offs[i], body_end, 10 + i as u64, u32::MAX).unwrap();
            assert_eq!(&got[..], &p[..], "record {i}");
            assert_eq!(next, offs[i + 1]);
        }
        assert!(c.verified(offs[30], 40).is_none(), "a damaged record was in the verified run");
        match c.record(&mut src, offs[30], body_end, 40, u32::MAX) {
            Err((
                at,
                FrameError::Bad(CorruptionKind::Decode(DecodeError::ChecksumMismatch { .. })),
            )) => assert_eq!(at, offs[30]),
            other => panic!("record 30: {:?}", other.map(|(p, n)| (p.len(), n))),
        }
    }

    #[test]
    fn verified_records_are_handed_out_only_at_their_own_seq() {
        let ps = payloads(20, 100);
        let (mut src, offs, body_end) = batch(&ps, None);
        let mut c = RecordCopier::default();
        c.record(&mut src, offs[0], body_end, 10, u32::MAX).unwrap();
        // The whole batch fits in one chunk: every record is in the run, at its seq only.
        for (i, p) in ps.iter().enumerate().skip(1) {
            assert!(c.verified(offs[i], 10 + i as u64 + 1).is_none(), "record {i}, wrong seq");
            let (got, _) = c.verified(offs[i], 10 + i as u64).unwrap();
            assert_eq!(&got[..], &p[..]);
        }
        // Past the body's records there is nothing verified.
        assert!(c.verified(body_end, 30).is_none());
    }

    /// Payloads a caller keeps share the copier's buffers: a run of single-record batches
    /// is carved out of one allocation after another, not one allocation per record.
    #[test]
    fn kept_payloads_of_small_batches_share_allocations() {
        let mut buf = Vec::new();
        let mut recs = Vec::new();
        for i in 0..4000u64 {
            let off = buf.len() as u64;
            let at = Placement {
                seq: i,
                file_offset: off,
                synced_through: 0,
                log_tag: 7,
                timestamp_us: 1,
            };
            let p = vec![(i % 251) as u8; 200];
            encode_batch(&mut buf, at, &[&p]);
            recs.push((off + FRAME_HEADER_BYTES as u64, off + FRAME_HEADER_BYTES as u64 + 216, p));
        }
        let mut src = Source::Mapped(bytes::Bytes::from(buf));
        let mut c = RecordCopier::default();
        let mut kept = Vec::new();
        for (i, (pos, body_end, p)) in recs.iter().enumerate() {
            let (got, _) = c.record(&mut src, *pos, *body_end, i as u64, u32::MAX).unwrap();
            assert_eq!(&got[..], &p[..]);
            kept.push(got);
        }
        // 4000 chunks of 216 bytes fill about 3.3 buffers of 256 KiB.
        let fresh = kept
            .windows(2)
            .filter(|w| w[1].as_ptr() != w[0].as_ptr().wrapping_add(w[0].len() + 16))
            .count();
        assert!(fresh <= 4, "{fresh} fresh allocations for 4000 kept records");
    }

    #[test]
    fn records_larger_than_a_chunk_are_copied_whole_and_checked() {
        let ps = payloads(6, COPY_CHUNK_BYTES / 2 + 999);
        let (mut src, offs, body_end) = batch(&ps, None);
        let mut c = RecordCopier::default();
        for (i, p) in ps.iter().enumerate() {
            let (got, next) =
                c.record(&mut src, offs[i], body_end, 10 + i as u64, u32::MAX).unwrap();
            assert_eq!(&got[..], &p[..], "record {i}");
            assert_eq!(next, offs.get(i + 1).copied().unwrap_or(body_end));
        }
    }
}
