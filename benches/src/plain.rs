//! The plain-file baseline: annal's frames in one preallocated file, with nothing else.
//!
//! A batch is encoded with [`annal::format::encode_batch`], so the baseline writes the very
//! bytes annal writes (48-byte frame header, 16-byte record headers, CRC-32 of every
//! record), and pays the same encoding and checksum work. What it leaves out is everything
//! that makes a log more than a file: segments, rolls, seal and close frames kept in sync
//! with index files, locking, group-commit bookkeeping, recovery rules. The ratio
//! annal/baseline is therefore the price of that machinery.
//!
//! - Writes: one file created with `O_EXCL`, `fallocate`d up front, a 64-byte header, then
//!   frames appended with `write_all`; `sync_data` when the workload asks for durability.
//! - Sequential reads: `read` into a 4 MiB buffer, every frame header and record CRC
//!   verified with annal's decoders ([`scan`]).
//! - Random reads: a dense in-memory `Vec<u64>` of record offsets, one `pread` of the record
//!   and its CRC check ([`PlainReader`]).
//! - Opening: after a clean close, read the header and the close frame at the end of the
//!   file ([`open_clean`]); after a crash, scan the whole file to find its valid end
//!   ([`recover`]): a single file has nothing to bound the scan.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use annal::format::{
    FrameKind, Placement, batch_frame_bytes, decode_frame_header, decode_record_header,
    encode_batch, encode_marker_frame,
};
use annal::limits::{FRAME_HEADER_BYTES, RECORD_BODY_BYTES_MAX, RECORD_HEADER_BYTES};

/// Log tag written into the baseline's frames (annal derives its own from the log id).
pub const PLAIN_LOG_TAG: u64 = 0x504c_4149_4e4c_4f47;

/// Bytes before the first frame: the same as annal's segment header, so frames sit at the
/// same offsets.
pub const PLAIN_HEADER_BYTES: u64 = 64;

/// Magic at the start of a baseline file.
const PLAIN_MAGIC: [u8; 8] = *b"PLAINLOG";

/// Bytes per `read` of a sequential scan.
const SCAN_BUFFER_BYTES: usize = 4 << 20;

/// Creates `path` (it must not exist) and reserves `len` bytes with `fallocate`, falling
/// back to a sparse extension where the file system cannot reserve space.
pub fn create_preallocated(path: &Path, len: u64) -> io::Result<File> {
    let file = OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
    preallocate(&file, 0, len)?;
    Ok(file)
}

/// Reserves `len` bytes at `offset` of `file` (extending it), as annal's segments do.
/// Nothing for `len` 0.
pub fn preallocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use rustix::fs::{FallocateFlags, fallocate};
    if len == 0 {
        return Ok(());
    }
    match fallocate(file, FallocateFlags::empty(), offset, len) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {
            if file.metadata()?.len() < offset + len {
                file.set_len(offset + len)?;
            }
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes `len` zero bytes at `offset` of `file` and syncs them: space that is both
/// allocated and initialized, so later overwrites need no extent conversion and an
/// `fdatasync` after them flushes data only (what PostgreSQL does to its WAL segments).
pub fn zero_fill(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let zeros = vec![0u8; 1 << 20];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], offset + done)?;
        done += n as u64;
    }
    file.sync_data()
}

/// Bytes of a baseline file holding `events` payloads of `payload_bytes` appended in
/// batches of `batch` (header and frames, no close frame).
pub fn file_bytes(events: u64, batch: usize, payload_bytes: usize) -> u64 {
    let full = events / batch as u64;
    let rest = (events % batch as u64) as usize;
    let mut total = PLAIN_HEADER_BYTES + full * batch_frame_bytes(vec![payload_bytes; batch]);
    if rest > 0 {
        total += batch_frame_bytes(vec![payload_bytes; rest]);
    }
    total
}

/// The 64-byte header of a baseline file.
fn header() -> [u8; PLAIN_HEADER_BYTES as usize] {
    let mut h = [0u8; PLAIN_HEADER_BYTES as usize];
    h[..8].copy_from_slice(&PLAIN_MAGIC);
    h
}

/// Appends batches of frames to a new baseline file. Not thread-safe (one writer).
#[derive(Debug)]
pub struct PlainWriter {
    file: File,
    pos: u64,
    next_seq: u64,
    buf: Vec<u8>,
}

impl PlainWriter {
    /// Creates the file with `preallocate` bytes reserved and writes its header (not synced).
    pub fn create(path: &Path, preallocate: u64) -> io::Result<Self> {
        let mut file = create_preallocated(path, preallocate)?;
        file.write_all(&header())?;
        Ok(PlainWriter { file, pos: PLAIN_HEADER_BYTES, next_seq: 0, buf: Vec::new() })
    }

    /// Encodes `payloads` as one batch frame and writes it after the previous one with one
    /// `write_all` (not synced).
    pub fn append<P: AsRef<[u8]>>(&mut self, payloads: &[P]) -> io::Result<()> {
        self.buf.clear();
        let at = Placement {
            seq: self.next_seq,
            file_offset: self.pos,
            synced_through: PLAIN_HEADER_BYTES,
            log_tag: PLAIN_LOG_TAG,
            timestamp_us: 0,
        };
        encode_batch(&mut self.buf, at, payloads);
        self.file.write_all(&self.buf)?;
        self.pos += self.buf.len() as u64;
        self.next_seq += payloads.len() as u64;
        Ok(())
    }

    /// `fdatasync` of everything written so far.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Events written so far.
    pub fn events(&self) -> u64 {
        self.next_seq
    }

    /// Clean close: a close frame after the last batch, the preallocated rest cut off, and
    /// an fsync, so that [`open_clean`] finds the end without scanning.
    pub fn close(self) -> io::Result<()> {
        write_close(&self.file, self.pos, self.next_seq)
    }
}

/// Writes a close frame at `pos`, cuts the file after it and syncs.
fn write_close(file: &File, pos: u64, next_seq: u64) -> io::Result<()> {
    let count = u32::try_from(next_seq)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many events for a close"))?;
    let at = Placement {
        seq: next_seq,
        file_offset: pos,
        synced_through: pos,
        log_tag: PLAIN_LOG_TAG,
        timestamp_us: 0,
    };
    let frame = encode_marker_frame(FrameKind::Close, count, at);
    file.write_all_at(&frame, pos)?;
    file.set_len(pos + FRAME_HEADER_BYTES as u64)?;
    file.sync_data()
}

/// Where a sequential scan of a baseline file ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanEnd {
    /// Valid events found (their seqs are `0..events`).
    pub events: u64,
    /// Offset just past the last valid batch frame: where the next frame would go.
    pub end: u64,
    /// Whether the valid frames end with a close frame (a clean close).
    pub closed: bool,
}

/// A forward-only window over a file read in large chunks.
struct ChunkReader {
    file: File,
    buf: Vec<u8>,
    /// File offset of `buf[lo]`.
    base: u64,
    lo: usize,
    hi: usize,
}

impl ChunkReader {
    fn new(file: File) -> Self {
        ChunkReader { file, buf: vec![0u8; SCAN_BUFFER_BYTES], base: 0, lo: 0, hi: 0 }
    }

    /// The `n` bytes at `off` (never before the previous window's start), or `None` if the
    /// file ends first.
    fn window(&mut self, off: u64, n: usize) -> io::Result<Option<&[u8]>> {
        let skip = off - self.base;
        if skip > (self.hi - self.lo) as u64 {
            // Past everything buffered (not reached by a sequential scan): start afresh.
            use std::io::{Seek, SeekFrom};
            self.file.seek(SeekFrom::Start(off))?;
            self.lo = 0;
            self.hi = 0;
        } else {
            self.lo += skip as usize;
        }
        self.base = off;
        while self.hi - self.lo < n {
            if self.lo + n > self.buf.len() {
                // Not enough room after the window: move the partial frame to the front.
                self.buf.copy_within(self.lo..self.hi, 0);
                self.hi -= self.lo;
                self.lo = 0;
                if n > self.buf.len() {
                    self.buf.resize(n, 0);
                }
            }
            let got = self.file.read(&mut self.buf[self.hi..])?;
            if got == 0 {
                return Ok(None);
            }
            self.hi += got;
        }
        Ok(Some(&self.buf[self.lo..self.lo + n]))
    }
}

/// Reads the file at `path` front to back, verifying every frame header and every record's
/// CRC, and calls `on_record(seq, record_offset, payload)` for each record. Stops at the end
/// of the file or at the first frame that does not verify (zeroed preallocated space, a torn
/// write): what follows is not part of the log.
pub fn scan(path: &Path, mut on_record: impl FnMut(u64, u64, &[u8])) -> io::Result<ScanEnd> {
    let mut r = ChunkReader::new(File::open(path)?);
    match r.window(0, PLAIN_HEADER_BYTES as usize)? {
        Some(h) if h[..8] == PLAIN_MAGIC => {}
        _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "not a baseline file")),
    }
    let mut pos = PLAIN_HEADER_BYTES;
    let mut seq = 0u64;
    let mut closed = false;
    while let Some(h) = r.window(pos, FRAME_HEADER_BYTES)? {
        let Ok(f) = decode_frame_header(h) else { break };
        if f.file_offset != pos || f.log_tag != PLAIN_LOG_TAG || f.seq != seq {
            break;
        }
        if f.kind != FrameKind::Batch {
            closed = f.kind == FrameKind::Close;
            break;
        }
        let total = f.total_bytes() as usize;
        let Some(frame) = r.window(pos, total)? else { break };
        let body_end = FRAME_HEADER_BYTES + f.body_bytes as usize;
        let mut p = FRAME_HEADER_BYTES;
        let mut valid = true;
        for i in 0..u64::from(f.count) {
            let Ok((_, payload)) =
                decode_record_header(&frame[p..body_end], seq + i, RECORD_BODY_BYTES_MAX)
            else {
                valid = false;
                break;
            };
            on_record(seq + i, pos + p as u64, payload);
            p += RECORD_HEADER_BYTES + payload.len();
        }
        if !valid || p != body_end {
            break;
        }
        pos += total as u64;
        seq += u64::from(f.count);
    }
    Ok(ScanEnd { events: seq, end: pos, closed })
}

/// Crash recovery of a baseline file: scan it all to find where the valid frames end.
pub fn recover(path: &Path) -> io::Result<ScanEnd> {
    scan(path, |_, _, _| {})
}

/// Clean open of a baseline file: check the header and the close frame at the end of the
/// file, and return the next seq. Fails if the file was not closed cleanly.
pub fn open_clean(path: &Path) -> io::Result<u64> {
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let mut h = [0u8; PLAIN_HEADER_BYTES as usize];
    file.read_exact_at(&mut h, 0)?;
    if h[..8] != PLAIN_MAGIC {
        return Err(bad("not a baseline file"));
    }
    let len = file.metadata()?.len();
    let at = len
        .checked_sub(FRAME_HEADER_BYTES as u64)
        .filter(|&a| a >= PLAIN_HEADER_BYTES)
        .ok_or_else(|| bad("no close frame"))?;
    let mut c = [0u8; FRAME_HEADER_BYTES];
    file.read_exact_at(&mut c, at)?;
    let f = decode_frame_header(&c).map_err(|e| bad(&e.to_string()))?;
    if f.kind != FrameKind::Close || f.file_offset != at || f.log_tag != PLAIN_LOG_TAG {
        return Err(bad("the last frame is not a close frame"));
    }
    Ok(f.seq)
}

/// Turns a baseline file left by a crash into a cleanly closed one: find the end by a scan,
/// then write the close frame there.
pub fn close_after_crash(path: &Path) -> io::Result<ScanEnd> {
    let end = recover(path)?;
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    write_close(&file, end.end, end.events)?;
    Ok(ScanEnd { closed: true, ..end })
}

/// Random reads of a baseline file through a dense in-memory offset index: one `pread` and
/// one CRC check per read. Every record must have the same payload size (all benchmark
/// events do), so one read fetches header and payload. Not thread-safe.
#[derive(Debug)]
pub struct PlainReader {
    file: File,
    offsets: Vec<u64>,
    buf: Vec<u8>,
}

impl PlainReader {
    /// Opens `path` and builds its index with one scan (not part of any timed read).
    pub fn open(path: &Path, payload_bytes: usize) -> io::Result<Self> {
        let mut offsets = Vec::new();
        scan(path, |_, off, _| offsets.push(off))?;
        let file = File::open(path)?;
        Ok(PlainReader { file, offsets, buf: vec![0u8; RECORD_HEADER_BYTES + payload_bytes] })
    }

    /// Records in the index.
    pub fn events(&self) -> u64 {
        self.offsets.len() as u64
    }

    /// Record `seq`'s payload, CRC-checked.
    pub fn read(&mut self, seq: u64) -> io::Result<&[u8]> {
        let off = usize::try_from(seq)
            .ok()
            .and_then(|i| self.offsets.get(i))
            .copied()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "seq beyond the end"))?;
        self.file.read_exact_at(&mut self.buf, off)?;
        let (_, payload) = decode_record_header(&self.buf, seq, RECORD_BODY_BYTES_MAX)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload;

    #[test]
    fn written_frames_scan_back_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plain.log");
        let pool = payload::pool(7, 40, 3);
        let mut w = PlainWriter::create(&path, 1 << 16).unwrap();
        for chunk in pool.chunks(3) {
            w.append(chunk).unwrap();
        }
        w.sync().unwrap();
        drop(w);
        // A crashed file: preallocated zeros after the last frame.
        let mut seen = Vec::new();
        let end = scan(&path, |seq, _, p| seen.push((seq, p.to_vec()))).unwrap();
        assert_eq!(end.events, 7);
        assert!(!end.closed);
        assert_eq!(end.end, file_bytes(6, 3, 40) + batch_frame_bytes([40]));
        for (seq, p) in &seen {
            assert_eq!(p.as_slice(), payload::expected(&pool, *seq));
        }
        assert!(open_clean(&path).is_err());
        close_after_crash(&path).unwrap();
        assert_eq!(open_clean(&path).unwrap(), 7);
        let mut r = PlainReader::open(&path, 40).unwrap();
        assert_eq!(r.events(), 7);
        assert_eq!(r.read(4).unwrap(), payload::expected(&pool, 4));
        assert!(r.read(7).is_err());
    }

    #[test]
    fn a_flipped_byte_ends_the_scan() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plain.log");
        let pool = payload::pool(4, 32, 9);
        let mut w = PlainWriter::create(&path, 4096).unwrap();
        w.append(&pool[..2]).unwrap();
        w.append(&pool[2..]).unwrap();
        drop(w);
        let second = file_bytes(2, 2, 32);
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        // A byte in the first payload of the second batch.
        f.write_all_at(&[0xFF], second + (FRAME_HEADER_BYTES + RECORD_HEADER_BYTES) as u64)
            .unwrap();
        let end = recover(&path).unwrap();
        assert_eq!(end.events, 2);
        assert_eq!(end.end, second);
    }
}
