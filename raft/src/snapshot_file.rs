//! The codec of the state machine's snapshot file `sm.snapshot` (format-spec.md §17): a
//! 32-byte header, the snapshot's meta (JSON of openraft's `SnapshotMeta`), then the
//! snapshot data. Pure: no I/O here (`state_machine.rs` reads and writes the file).

use annal::format::{DecodeError, crc32};

/// The file's magic bytes.
pub(crate) const SNAPSHOT_MAGIC: [u8; 8] = *b"ANNALRSN";
const SNAPSHOT_VERSION: u16 = 1;

/// Bytes of the fixed header.
pub(crate) const SNAPSHOT_HEADER_BYTES: usize = 32;
/// The largest meta (a log id and a membership: far below this).
pub(crate) const SNAPSHOT_META_BYTES_MAX: u64 = 1 << 20;
/// The largest snapshot data read back. Snapshots are built and held in memory whole (see the
/// README), so this bounds what a damaged length field can make a load allocate; the file's
/// length must match the header exactly before anything is allocated.
pub(crate) const SNAPSHOT_DATA_BYTES_MAX: u64 = 1 << 36;

const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = OFF_MAGIC + 8;
const OFF_FLAGS: usize = OFF_VERSION + 2;
const OFF_META_LEN: usize = OFF_FLAGS + 2;
const OFF_DATA_LEN: usize = OFF_META_LEN + 4;
const OFF_BODY_CRC: usize = OFF_DATA_LEN + 8;
const OFF_HEADER_CRC: usize = OFF_BODY_CRC + 4;
const _: () = assert!(OFF_HEADER_CRC + 4 == SNAPSHOT_HEADER_BYTES);
const _: () = assert!(OFF_HEADER_CRC == 28);

/// What the header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub meta_len: u32,
    pub data_len: u64,
    pub body_crc: u32,
}

fn u16_at(b: &[u8; SNAPSHOT_HEADER_BYTES], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8; SNAPSHOT_HEADER_BYTES], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8; SNAPSHOT_HEADER_BYTES], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// The whole file for `meta` (JSON bytes) and `data`. The caller keeps `meta` within
/// [`SNAPSHOT_META_BYTES_MAX`] (checked: an oversized one is `OutOfBounds`).
pub(crate) fn encode(meta: &[u8], data: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let meta_len = meta.len() as u64;
    if meta_len > SNAPSHOT_META_BYTES_MAX {
        let max = SNAPSHOT_META_BYTES_MAX;
        return Err(DecodeError::OutOfBounds { field: "meta_len", value: meta_len, max });
    }
    let data_len = data.len() as u64;
    if data_len > SNAPSHOT_DATA_BYTES_MAX {
        let max = SNAPSHOT_DATA_BYTES_MAX;
        return Err(DecodeError::OutOfBounds { field: "data_len", value: data_len, max });
    }
    let mut out = vec![0u8; SNAPSHOT_HEADER_BYTES];
    out[OFF_MAGIC..OFF_VERSION].copy_from_slice(&SNAPSHOT_MAGIC);
    out[OFF_VERSION..OFF_FLAGS].copy_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    out[OFF_META_LEN..OFF_DATA_LEN].copy_from_slice(&(meta_len as u32).to_le_bytes());
    out[OFF_DATA_LEN..OFF_BODY_CRC].copy_from_slice(&data_len.to_le_bytes());
    out.extend_from_slice(meta);
    out.extend_from_slice(data);
    let body_crc = crc32(&out[SNAPSHOT_HEADER_BYTES..]);
    out[OFF_BODY_CRC..OFF_HEADER_CRC].copy_from_slice(&body_crc.to_le_bytes());
    let header_crc = crc32(&out[..OFF_HEADER_CRC]);
    out[OFF_HEADER_CRC..SNAPSHOT_HEADER_BYTES].copy_from_slice(&header_crc.to_le_bytes());
    Ok(out)
}

/// Checks the header (its CRC first, then every field) against the file's length.
pub(crate) fn decode_header(buf: &[u8], file_len: u64) -> Result<Header, DecodeError> {
    let Some(b) = buf.get(..SNAPSHOT_HEADER_BYTES).and_then(|b| b.try_into().ok()) else {
        let available = buf.len() as u64;
        return Err(DecodeError::Truncated { needed: SNAPSHOT_HEADER_BYTES as u64, available });
    };
    let b: &[u8; SNAPSHOT_HEADER_BYTES] = b;
    let stored = u32_at(b, OFF_HEADER_CRC);
    let computed = crc32(&b[..OFF_HEADER_CRC]);
    if stored != computed {
        return Err(DecodeError::ChecksumMismatch { stored, computed });
    }
    if b[OFF_MAGIC..OFF_VERSION] != SNAPSHOT_MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = u16_at(b, OFF_VERSION);
    if version != SNAPSHOT_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    if u16_at(b, OFF_FLAGS) != 0 {
        return Err(DecodeError::ReservedNonZero);
    }
    let meta_len = u32_at(b, OFF_META_LEN);
    if u64::from(meta_len) > SNAPSHOT_META_BYTES_MAX {
        let (value, max) = (meta_len.into(), SNAPSHOT_META_BYTES_MAX);
        return Err(DecodeError::OutOfBounds { field: "meta_len", value, max });
    }
    let data_len = u64_at(b, OFF_DATA_LEN);
    if data_len > SNAPSHOT_DATA_BYTES_MAX {
        let (value, max) = (data_len, SNAPSHOT_DATA_BYTES_MAX);
        return Err(DecodeError::OutOfBounds { field: "data_len", value, max });
    }
    if SNAPSHOT_HEADER_BYTES as u64 + u64::from(meta_len) + data_len != file_len {
        return Err(DecodeError::Inconsistent("snapshot length does not match its header"));
    }
    Ok(Header { meta_len, data_len, body_crc: u32_at(b, OFF_BODY_CRC) })
}

/// Splits a whole file into (meta, data) after checking the header and the body's CRC.
pub(crate) fn decode(buf: &[u8]) -> Result<(&[u8], &[u8]), DecodeError> {
    let h = decode_header(buf, buf.len() as u64)?;
    let body = &buf[SNAPSHOT_HEADER_BYTES..];
    let computed = crc32(body);
    if computed != h.body_crc {
        return Err(DecodeError::ChecksumMismatch { stored: h.body_crc, computed });
    }
    Ok(body.split_at(h.meta_len as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_example_bytes() {
        // format-spec.md §17's example: meta `{}`, data `ab`.
        let f = encode(b"{}", b"ab").unwrap();
        assert_eq!(f.len(), 36);
        assert_eq!(&f[..8], b"ANNALRSN");
        assert_eq!(&f[8..12], &[1, 0, 0, 0]);
        assert_eq!(&f[12..16], &[2, 0, 0, 0]);
        assert_eq!(&f[16..24], &[2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&f[24..28], &crc32(b"{}ab").to_le_bytes());
        assert_eq!(&f[28..32], &crc32(&f[..28]).to_le_bytes());
        assert_eq!(&f[32..], b"{}ab");
    }

    #[test]
    fn round_trip_and_every_flipped_bit_or_cut_is_rejected() {
        let f = encode(br#"{"m":1}"#, b"snapshot data").unwrap();
        assert_eq!(decode(&f), Ok((&br#"{"m":1}"#[..], &b"snapshot data"[..])));
        for bit in 0..f.len() * 8 {
            let mut c = f.clone();
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&c).is_err(), "bit {bit}");
        }
        for len in 0..f.len() {
            assert!(decode(&f[..len]).is_err(), "cut at {len}");
        }
        let mut longer = f.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        assert!(decode(&[0u8; 64]).is_err(), "all zeros never validate");
    }
}
