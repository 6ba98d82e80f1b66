//! Byte layouts of every on-disk structure: pure encode/decode functions, no I/O.
//!
//! format-spec.md is the authority; each submodule cites the section it implements. All
//! integers are little-endian. Every checksum is CRC-32 (IEEE, as computed by `crc32fast`).
//! Decoders check the checksum before they trust any other field, and they never panic or
//! allocate on malformed input: a bad buffer becomes a [`DecodeError`].

mod event;
mod frame;
mod index_file;
mod log_marker;
mod projection_checkpoint;
mod segment_header;
mod snapshot_file;
#[cfg(test)]
mod spec_example;
mod stream_checkpoint;

pub(crate) use event::{EVENT_TYPE_NOT_UTF8, STREAM_ID_NOT_UTF8};
pub use event::{EVENT_VERSION, EventBody, RawEventBody};
pub use frame::{
    Frame, FrameKind, Placement, PreparedBatch, RecordHeader, align_up, batch_frame_bytes,
    decode_frame_header, decode_record_header, encode_batch, encode_marker_frame, log_tag,
    record_crc, record_len_and_seq,
};
pub use index_file::{IndexEntry, IndexHeader, decode_index, encode_index};
pub use log_marker::{LOG_MARKER_MAGIC, LogMarker, LogMarkerKind};
pub use projection_checkpoint::{PROJECTION_CHECKPOINT_MAGIC, ProjectionCheckpoint};
pub use segment_header::{FORMAT_VERSION, SEGMENT_MAGIC, SegmentHeader};
pub use snapshot_file::{SNAPSHOT_MAGIC, SNAPSHOT_VERSION, SnapshotFile};
pub use stream_checkpoint::{
    CHECKPOINT_MAGIC, CHECKPOINT_VERSION_1, CHECKPOINT_VERSION_2, CheckpointDirectory,
    CheckpointHeader, CheckpointId, CheckpointStream, DirectoryStream, RECENT_ENTRY_BYTES,
    SectionRef, SeqBlock, StreamCheckpoint, decode_recent, decode_seq_block, encode_seq_block,
    encode_v2,
};

/// Why a buffer did not decode as the structure it was expected to hold.
///
/// Decoders return this; the layers above add where (file, offset) the bytes came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The buffer ends before the structure does.
    #[error("truncated: needed {needed} bytes, {available} available")]
    Truncated {
        /// Bytes the structure needs.
        needed: u64,
        /// Bytes that were there.
        available: u64,
    },
    /// The magic bytes are not the ones this structure starts with.
    #[error("bad magic bytes")]
    BadMagic,
    /// The structure's format version is not one this build reads.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u16),
    /// The stored checksum does not match the bytes it covers.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// The CRC stored in the structure.
        stored: u32,
        /// The CRC computed over the bytes it is said to cover.
        computed: u32,
    },
    /// A field that must be zero (reserved) is not.
    #[error("reserved bytes are not zero")]
    ReservedNonZero,
    /// The frame kind byte is not a known kind (0 is never valid).
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// A length or count is larger than its limit or than the bytes that hold it.
    #[error("{field} = {value} exceeds its limit {max}")]
    OutOfBounds {
        /// Which field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The largest value allowed here.
        max: u64,
    },
    /// A field holds a value that contradicts another field or the structure's position.
    #[error("inconsistent field: {0}")]
    Inconsistent(&'static str),
}

/// CRC-32 of `bytes`, the one checksum every structure uses.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Returns the `N` bytes at the start of `buf`, or `Truncated`.
fn prefix<const N: usize>(buf: &[u8]) -> Result<&[u8; N], DecodeError> {
    buf.first_chunk::<N>()
        .ok_or(DecodeError::Truncated { needed: N as u64, available: buf.len() as u64 })
}
