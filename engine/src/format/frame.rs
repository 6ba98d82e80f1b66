//! Frames inside a segment: the 48-byte frame header shared by batch, seal and close frames,
//! and the 16-byte record header inside a batch (format-spec.md §4).

use byteorder::{ByteOrder, LittleEndian as LE};

use super::{DecodeError, crc32, prefix};
use crate::limits::{
    BATCH_RECORDS_MAX, FRAME_ALIGN_BYTES, FRAME_HEADER_BYTES, RECORD_BODY_BYTES_MAX,
    RECORD_HEADER_BYTES,
};

const OFF_CRC: usize = 0;
const OFF_KIND: usize = OFF_CRC + 4;
const OFF_RESERVED: usize = OFF_KIND + 1;
const OFF_BODY_BYTES: usize = OFF_RESERVED + 3;
const OFF_COUNT: usize = OFF_BODY_BYTES + 4;
const OFF_SEQ: usize = OFF_COUNT + 4;
const OFF_FILE_OFFSET: usize = OFF_SEQ + 8;
const OFF_SYNCED: usize = OFF_FILE_OFFSET + 8;
const OFF_LOG_TAG: usize = OFF_SYNCED + 8;
const OFF_TIMESTAMP: usize = OFF_LOG_TAG + 8;
const _: () = assert!(OFF_TIMESTAMP + 8 == FRAME_HEADER_BYTES);

const REC_OFF_CRC: usize = 0;
const REC_OFF_LEN: usize = REC_OFF_CRC + 4;
const REC_OFF_SEQ: usize = REC_OFF_LEN + 4;
const _: () = assert!(REC_OFF_SEQ + 8 == RECORD_HEADER_BYTES);

/// What a frame is (format-spec.md §4.1). Zero is never a valid kind, so zero-filled space
/// (preallocation, lost writes) never decodes as a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// A batch of records: everything one `append` call wrote, atomically.
    Batch = 1,
    /// The last frame of a sealed segment: nothing follows it in this file.
    Seal = 2,
    /// Written at a clean close at the end of the active segment; appends continue after it.
    Close = 3,
}

impl FrameKind {
    fn from_byte(b: u8) -> Result<Self, DecodeError> {
        match b {
            1 => Ok(FrameKind::Batch),
            2 => Ok(FrameKind::Seal),
            3 => Ok(FrameKind::Close),
            other => Err(DecodeError::UnknownKind(other)),
        }
    }
}

/// A decoded frame header. Field meanings per kind are in format-spec.md §4.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Batch, seal or close.
    pub kind: FrameKind,
    /// Batch: bytes of the record frames that follow (without padding). Seal/close: 0.
    pub body_bytes: u32,
    /// Batch: records in the batch (at least 1). Seal/close: records in the whole segment.
    pub count: u32,
    /// Batch: sequence number of its first record. Seal/close: the next sequence number.
    pub seq: u64,
    /// The file offset of this frame header; a frame found elsewhere is misplaced.
    pub file_offset: u64,
    /// When the frame was written, every byte of the file before this offset was durable.
    pub synced_through: u64,
    /// The first eight bytes of the store's log id; a frame of another store is foreign.
    pub log_tag: u64,
    /// When the frame was written, in microseconds since the Unix epoch; non-decreasing
    /// across the log (the writer never goes back, even if the clock does).
    pub timestamp_us: u64,
}

impl Frame {
    /// Bytes this frame occupies in the file, padding included.
    pub fn total_bytes(&self) -> u64 {
        FRAME_HEADER_BYTES as u64 + align_up(u64::from(self.body_bytes))
    }

    /// Encodes the 48-byte header.
    pub fn encode_header(&self) -> [u8; FRAME_HEADER_BYTES] {
        let mut b = [0u8; FRAME_HEADER_BYTES];
        b[OFF_KIND] = self.kind as u8;
        LE::write_u32(&mut b[OFF_BODY_BYTES..OFF_COUNT], self.body_bytes);
        LE::write_u32(&mut b[OFF_COUNT..OFF_SEQ], self.count);
        LE::write_u64(&mut b[OFF_SEQ..OFF_FILE_OFFSET], self.seq);
        LE::write_u64(&mut b[OFF_FILE_OFFSET..OFF_SYNCED], self.file_offset);
        LE::write_u64(&mut b[OFF_SYNCED..OFF_LOG_TAG], self.synced_through);
        LE::write_u64(&mut b[OFF_LOG_TAG..OFF_TIMESTAMP], self.log_tag);
        LE::write_u64(&mut b[OFF_TIMESTAMP..], self.timestamp_us);
        let crc = crc32(&b[OFF_KIND..]);
        LE::write_u32(&mut b[OFF_CRC..OFF_KIND], crc);
        b
    }
}

/// Where and when a frame is written: the header fields that depend on the frame's place in
/// the log rather than on its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Placement {
    /// Batch: the seq of its first record. Seal/close: the next seq.
    pub seq: u64,
    /// The file offset the frame header is written at.
    pub file_offset: u64,
    /// Every byte of the file before this offset was durable when the frame was written.
    pub synced_through: u64,
    /// The store's log tag.
    pub log_tag: u64,
    /// The write time, microseconds since the Unix epoch, non-decreasing across the log.
    pub timestamp_us: u64,
}

impl Placement {
    fn frame(&self, kind: FrameKind, body_bytes: u32, count: u32) -> Frame {
        Frame {
            kind,
            body_bytes,
            count,
            seq: self.seq,
            file_offset: self.file_offset,
            synced_through: self.synced_through,
            log_tag: self.log_tag,
            timestamp_us: self.timestamp_us,
        }
    }
}

/// The log tag of a log id: its first eight bytes read as a little-endian `u64`.
pub fn log_tag(log_id: &[u8; 16]) -> u64 {
    LE::read_u64(&log_id[..8])
}

/// Rounds `n` up to the frame alignment.
pub fn align_up(n: u64) -> u64 {
    let a = FRAME_ALIGN_BYTES as u64;
    n.div_ceil(a).saturating_mul(a)
}

/// Bytes a batch of records with these payload sizes occupies, padding included.
pub fn batch_frame_bytes<I: IntoIterator<Item = usize>>(payload_lens: I) -> u64 {
    let body: u64 = payload_lens.into_iter().map(|n| RECORD_HEADER_BYTES as u64 + n as u64).sum();
    FRAME_HEADER_BYTES as u64 + align_up(body)
}

/// Decodes and validates the frame header at the start of `buf`.
///
/// Checks, in order: the header checksum, the kind, the reserved bytes, and the bounds of
/// `count` and `body_bytes` for the kind. It does not know where the bytes came from: the
/// caller checks `file_offset`, `log_tag` and `seq` against the frame's position.
pub fn decode_frame_header(buf: &[u8]) -> Result<Frame, DecodeError> {
    let b = prefix::<FRAME_HEADER_BYTES>(buf)?;
    let stored = LE::read_u32(&b[OFF_CRC..OFF_KIND]);
    let computed = crc32(&b[OFF_KIND..]);
    if stored != computed {
        return Err(DecodeError::ChecksumMismatch { stored, computed });
    }
    let kind = FrameKind::from_byte(b[OFF_KIND])?;
    if b[OFF_RESERVED..OFF_BODY_BYTES].iter().any(|&x| x != 0) {
        return Err(DecodeError::ReservedNonZero);
    }
    let frame = Frame {
        kind,
        body_bytes: LE::read_u32(&b[OFF_BODY_BYTES..OFF_COUNT]),
        count: LE::read_u32(&b[OFF_COUNT..OFF_SEQ]),
        seq: LE::read_u64(&b[OFF_SEQ..OFF_FILE_OFFSET]),
        file_offset: LE::read_u64(&b[OFF_FILE_OFFSET..OFF_SYNCED]),
        synced_through: LE::read_u64(&b[OFF_SYNCED..OFF_LOG_TAG]),
        log_tag: LE::read_u64(&b[OFF_LOG_TAG..OFF_TIMESTAMP]),
        timestamp_us: LE::read_u64(&b[OFF_TIMESTAMP..]),
    };
    match kind {
        FrameKind::Batch => {
            if frame.count == 0 {
                return Err(DecodeError::Inconsistent("batch with zero records"));
            }
            if frame.count > BATCH_RECORDS_MAX {
                return Err(DecodeError::OutOfBounds {
                    field: "batch count",
                    value: frame.count.into(),
                    max: BATCH_RECORDS_MAX.into(),
                });
            }
            let min_body = u64::from(frame.count) * RECORD_HEADER_BYTES as u64;
            if u64::from(frame.body_bytes) < min_body {
                return Err(DecodeError::Inconsistent(
                    "batch body smaller than its record headers",
                ));
            }
            if frame.seq.checked_add(u64::from(frame.count)).is_none() {
                return Err(DecodeError::Inconsistent("batch seq range overflows"));
            }
        }
        FrameKind::Seal | FrameKind::Close => {
            if frame.body_bytes != 0 {
                return Err(DecodeError::Inconsistent("marker frame with a body"));
            }
        }
    }
    if frame.synced_through > frame.file_offset {
        return Err(DecodeError::Inconsistent("synced_through beyond the frame itself"));
    }
    Ok(frame)
}

/// A decoded record header inside a batch (format-spec.md §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Stored CRC over the payload and then header bytes 4..16.
    pub crc: u32,
    /// Payload length in bytes.
    pub payload_bytes: u32,
    /// The record's global sequence number.
    pub seq: u64,
}

/// The CRC a record with this header and payload must carry.
pub fn record_crc(payload_bytes: u32, seq: u64, payload: &[u8]) -> u32 {
    let mut fields = [0u8; RECORD_HEADER_BYTES - 4];
    LE::write_u32(&mut fields[..4], payload_bytes);
    LE::write_u64(&mut fields[4..], seq);
    // The payload comes first, so an appender can checksum it before it knows the record's
    // seq, and the group-commit leader only adds the 12 header bytes.
    let mut h = crc32fast::Hasher::new();
    h.update(payload);
    h.update(&fields);
    h.finalize()
}

/// Decodes the record at the start of `buf` (header and payload) and verifies it.
///
/// `expected_seq` is the seq the record's position implies and `max_payload` the configured
/// bound; the payload length is checked against both the bound and the bytes of `buf` before
/// the payload is touched. Returns the header and the payload slice.
pub fn decode_record_header(
    buf: &[u8],
    expected_seq: u64,
    max_payload: u32,
) -> Result<(RecordHeader, &[u8]), DecodeError> {
    let b = prefix::<RECORD_HEADER_BYTES>(buf)?;
    let header = RecordHeader {
        crc: LE::read_u32(&b[REC_OFF_CRC..REC_OFF_LEN]),
        payload_bytes: LE::read_u32(&b[REC_OFF_LEN..REC_OFF_SEQ]),
        seq: LE::read_u64(&b[REC_OFF_SEQ..]),
    };
    let max = max_payload.min(RECORD_BODY_BYTES_MAX);
    if header.payload_bytes > max {
        return Err(DecodeError::OutOfBounds {
            field: "record payload_bytes",
            value: header.payload_bytes.into(),
            max: max.into(),
        });
    }
    let end = RECORD_HEADER_BYTES + header.payload_bytes as usize;
    let payload = buf
        .get(RECORD_HEADER_BYTES..end)
        .ok_or(DecodeError::Truncated { needed: end as u64, available: buf.len() as u64 })?;
    let computed = record_crc(header.payload_bytes, header.seq, payload);
    if computed != header.crc {
        return Err(DecodeError::ChecksumMismatch { stored: header.crc, computed });
    }
    if header.seq != expected_seq {
        return Err(DecodeError::Inconsistent("record seq does not follow its batch"));
    }
    Ok((header, payload))
}

/// The `payload_bytes` and `seq` fields of the record header at the start of `buf`, unchecked
/// (`None` if `buf` is shorter than a header). Only for records already verified by
/// [`decode_record_header`] in the same bytes.
#[inline]
pub fn record_len_and_seq(buf: &[u8]) -> Option<(u32, u64)> {
    let b = buf.get(..RECORD_HEADER_BYTES)?;
    Some((LE::read_u32(&b[REC_OFF_LEN..REC_OFF_SEQ]), LE::read_u64(&b[REC_OFF_SEQ..])))
}

/// Appends one batch frame (header, records, zero padding) to `out`.
///
/// The caller has checked the payload sizes and count against the limits; this is asserted.
pub fn encode_batch<P: AsRef<[u8]>>(out: &mut Vec<u8>, at: Placement, payloads: &[P]) {
    let first_seq = at.seq;
    assert!(!payloads.is_empty() && payloads.len() <= BATCH_RECORDS_MAX as usize);
    let body: usize = payloads.iter().map(|p| RECORD_HEADER_BYTES + p.as_ref().len()).sum();
    // Callers bound batches by the segment size, which is far below 4 GiB of body.
    assert!(u32::try_from(body).is_ok(), "batch body exceeds u32");
    let body_bytes = body as u32;
    let frame = at.frame(FrameKind::Batch, body_bytes, payloads.len() as u32);
    out.reserve(frame.total_bytes() as usize);
    let start = out.len();
    out.extend_from_slice(&frame.encode_header());
    for (i, p) in payloads.iter().enumerate() {
        let p = p.as_ref();
        assert!(p.len() <= RECORD_BODY_BYTES_MAX as usize, "payload over RECORD_BODY_BYTES_MAX");
        let len = p.len() as u32;
        let seq = first_seq + i as u64;
        let mut h = [0u8; RECORD_HEADER_BYTES];
        LE::write_u32(&mut h[REC_OFF_CRC..REC_OFF_LEN], record_crc(len, seq, p));
        LE::write_u32(&mut h[REC_OFF_LEN..REC_OFF_SEQ], len);
        LE::write_u64(&mut h[REC_OFF_SEQ..], seq);
        out.extend_from_slice(&h);
        out.extend_from_slice(p);
    }
    out.resize(start + frame.total_bytes() as usize, 0);
}

/// A batch encoded by the appending thread before it knows its seqs or position: records,
/// lengths and payload checksums are done, and [`PreparedBatch::finalize`] fills in the
/// position-dependent fields. This moves the byte copying and most of the CRC work out of
/// the group-commit leader and onto the appenders, which run in parallel.
#[derive(Debug, Clone)]
pub struct PreparedBatch {
    buf: Vec<u8>,
    /// Each record's payload length and the CRC state after its payload.
    payload_crcs: Vec<(u32, crc32fast::Hasher)>,
}

impl PreparedBatch {
    /// Encodes `payloads` (non-empty, each within the limits the caller checked).
    ///
    /// # Panics
    ///
    /// If `payloads` is empty, holds more than `BATCH_RECORDS_MAX` payloads or one over
    /// `RECORD_BODY_BYTES_MAX`: the log checks these limits (with typed errors) before it
    /// encodes, and so must any other caller.
    pub fn new<P: AsRef<[u8]>>(payloads: &[P]) -> Self {
        let lens: Vec<usize> = payloads.iter().map(|p| p.as_ref().len()).collect();
        Self::from_writer(&lens, |i, out| {
            if let Some(p) = payloads.get(i) {
                out.extend_from_slice(p.as_ref());
            }
        })
    }

    /// Encodes `lens.len()` records (non-empty, each within the limits the caller checked)
    /// whose payloads are written straight into the frame: `write(i, out)` appends record
    /// `i`'s payload to `out`, exactly `lens[i]` bytes (asserted). A caller that encodes its
    /// payloads anyway (the store's event bodies) spares itself a buffer and a copy.
    ///
    /// # Panics
    ///
    /// On the limits [`PreparedBatch::new`] panics on, and if `write` appends another number
    /// of bytes than `lens[i]`.
    pub fn from_writer(lens: &[usize], mut write: impl FnMut(usize, &mut Vec<u8>)) -> Self {
        assert!(!lens.is_empty() && lens.len() <= BATCH_RECORDS_MAX as usize);
        let total = batch_frame_bytes(lens.iter().copied());
        let mut buf = Vec::with_capacity(total as usize);
        buf.resize(FRAME_HEADER_BYTES, 0);
        let mut payload_crcs = Vec::with_capacity(lens.len());
        for (i, &len) in lens.iter().enumerate() {
            assert!(len <= RECORD_BODY_BYTES_MAX as usize, "payload over RECORD_BODY_BYTES_MAX");
            let mut h = [0u8; RECORD_HEADER_BYTES];
            LE::write_u32(&mut h[REC_OFF_LEN..REC_OFF_SEQ], len as u32);
            buf.extend_from_slice(&h);
            let start = buf.len();
            write(i, &mut buf);
            assert_eq!(buf.len() - start, len, "a payload of another length than declared");
            let mut h = crc32fast::Hasher::new();
            h.update(&buf[start..]);
            payload_crcs.push((len as u32, h));
        }
        buf.resize(total as usize, 0);
        PreparedBatch { buf, payload_crcs }
    }

    /// The frame bytes as last finalized (before `finalize`, with placeholder headers).
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Records in the batch.
    pub fn count(&self) -> u32 {
        self.payload_crcs.len() as u32
    }

    /// Bytes of the whole frame, padding included.
    pub fn frame_bytes(&self) -> u64 {
        self.buf.len() as u64
    }

    /// Fills in the seqs, position, durability watermark, log tag and time, and returns the
    /// frame bytes, ready to be written at `at.file_offset`.
    pub fn finalize(&mut self, at: Placement) -> &[u8] {
        let first_seq = at.seq;
        let body_bytes: u64 = self
            .payload_crcs
            .iter()
            .map(|&(len, _)| RECORD_HEADER_BYTES as u64 + u64::from(len))
            .sum();
        let frame = at.frame(FrameKind::Batch, body_bytes as u32, self.count());
        self.buf[..FRAME_HEADER_BYTES].copy_from_slice(&frame.encode_header());
        let mut pos = FRAME_HEADER_BYTES;
        for (i, (len, after_payload)) in self.payload_crcs.iter().enumerate() {
            let len = *len;
            let seq = first_seq + i as u64;
            let mut fields = [0u8; RECORD_HEADER_BYTES - 4];
            LE::write_u32(&mut fields[..4], len);
            LE::write_u64(&mut fields[4..], seq);
            let mut h = after_payload.clone();
            h.update(&fields);
            let rec = &mut self.buf[pos..pos + RECORD_HEADER_BYTES];
            LE::write_u32(&mut rec[REC_OFF_CRC..REC_OFF_LEN], h.finalize());
            LE::write_u64(&mut rec[REC_OFF_SEQ..], seq);
            pos += RECORD_HEADER_BYTES + len as usize;
        }
        &self.buf
    }
}

/// Encodes a seal or close frame: `count` records in the segment, `at.seq` the next seq. A
/// marker is written only after everything before it was synced, so its `synced_through` is
/// its own offset whatever `at` says.
pub fn encode_marker_frame(kind: FrameKind, count: u32, at: Placement) -> [u8; FRAME_HEADER_BYTES] {
    assert!(kind != FrameKind::Batch);
    Placement { synced_through: at.file_offset, ..at }.frame(kind, 0, count).encode_header()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Placement as P;

    #[test]
    fn all_zero_frame_and_record_never_validate() {
        assert!(decode_frame_header(&[0u8; FRAME_HEADER_BYTES]).is_err());
        assert!(decode_record_header(&[0u8; 64], 0, 1024).is_err());
    }

    #[test]
    fn a_batch_from_a_writer_is_the_batch_of_its_payloads() {
        let payloads: [&[u8]; 4] = [b"a", b"", b"hello world", &[7; 300]];
        let lens: Vec<usize> = payloads.iter().map(|p| p.len()).collect();
        let at = Placement {
            seq: 3,
            file_offset: 4096,
            synced_through: 64,
            log_tag: 0x1234,
            timestamp_us: 9,
        };
        let mut direct = Vec::new();
        encode_batch(&mut direct, at, &payloads);
        let mut written =
            PreparedBatch::from_writer(&lens, |i, out| out.extend_from_slice(payloads[i]));
        assert_eq!(written.count(), 4);
        assert_eq!(written.finalize(at), &direct[..]);
    }

    #[test]
    fn batch_round_trip() {
        let payloads: [&[u8]; 3] = [b"a", b"", b"hello world"];
        let mut out = Vec::new();
        let at = Placement {
            seq: 10,
            file_offset: 64,
            synced_through: 64,
            log_tag: 0xABCD,
            timestamp_us: 5,
        };
        encode_batch(&mut out, at, &payloads);
        assert_eq!(out.len() as u64, batch_frame_bytes(payloads.iter().map(|p| p.len())));
        assert_eq!(out.len() % FRAME_ALIGN_BYTES, 0);
        let f = decode_frame_header(&out).unwrap();
        assert_eq!(
            (f.kind, f.count, f.seq, f.file_offset, f.log_tag),
            (FrameKind::Batch, 3, 10, 64, 0xABCD)
        );
        let mut pos = FRAME_HEADER_BYTES;
        for (i, p) in payloads.iter().enumerate() {
            let (h, got) = decode_record_header(&out[pos..], 10 + i as u64, 1024).unwrap();
            assert_eq!(got, *p);
            pos += RECORD_HEADER_BYTES + h.payload_bytes as usize;
        }
    }

    #[test]
    fn prepared_batch_matches_direct_encoding() {
        let payloads: Vec<Vec<u8>> = (0..20).map(|i| vec![i as u8; i * 7]).collect();
        let mut direct = Vec::new();
        encode_batch(
            &mut direct,
            P { seq: 1000, file_offset: 4096, synced_through: 512, log_tag: 0x55, timestamp_us: 9 },
            &payloads,
        );
        let mut prepared = PreparedBatch::new(&payloads);
        assert_eq!(prepared.frame_bytes(), direct.len() as u64);
        assert_eq!(
            prepared.finalize(P {
                seq: 1000,
                file_offset: 4096,
                synced_through: 512,
                log_tag: 0x55,
                timestamp_us: 9
            }),
            &direct[..]
        );
        // Finalizing again at another position rewrites every position-dependent field.
        let mut again = Vec::new();
        encode_batch(
            &mut again,
            P { seq: 7, file_offset: 64, synced_through: 64, log_tag: 0x55, timestamp_us: 9 },
            &payloads,
        );
        assert_eq!(
            prepared.finalize(P {
                seq: 7,
                file_offset: 64,
                synced_through: 64,
                log_tag: 0x55,
                timestamp_us: 9
            }),
            &again[..]
        );
    }

    #[test]
    fn oversize_length_rejected_before_use() {
        let mut out = Vec::new();
        encode_batch(
            &mut out,
            P { seq: 0, file_offset: 64, synced_through: 64, log_tag: 1, timestamp_us: 9 },
            &[b"abc"],
        );
        let rec = &mut out[FRAME_HEADER_BYTES..];
        LE::write_u32(&mut rec[REC_OFF_LEN..REC_OFF_SEQ], u32::MAX);
        assert!(matches!(
            decode_record_header(rec, 0, 1 << 20),
            Err(DecodeError::OutOfBounds { .. })
        ));
        LE::write_u32(&mut rec[REC_OFF_LEN..REC_OFF_SEQ], 1000);
        assert!(matches!(
            decode_record_header(rec, 0, 1 << 20),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn every_bit_flip_of_a_batch_is_detected() {
        let mut good = Vec::new();
        encode_batch(
            &mut good,
            P { seq: 5, file_offset: 128, synced_through: 64, log_tag: 77, timestamp_us: 9 },
            &[b"xy".as_slice(), b"zzzz"],
        );
        let body_end = FRAME_HEADER_BYTES + 2 * RECORD_HEADER_BYTES + 6;
        for bit in 0..body_end * 8 {
            let mut b = good.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            let ok = (|| -> Result<(), DecodeError> {
                let f = decode_frame_header(&b)?;
                if f != decode_frame_header(&good)? {
                    return Err(DecodeError::Inconsistent("changed"));
                }
                let (h, _) = decode_record_header(&b[FRAME_HEADER_BYTES..], 5, 1024)?;
                let next = FRAME_HEADER_BYTES + RECORD_HEADER_BYTES + h.payload_bytes as usize;
                decode_record_header(&b[next..], 6, 1024)?;
                Ok(())
            })();
            assert!(ok.is_err(), "flip of bit {bit} went unnoticed");
        }
    }
}
