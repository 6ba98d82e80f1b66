//! Every fixed size and every bound of the engine, in one place.
//!
//! A length read from disk is checked against these before it is used to allocate
//! (RELIABILITY.md row 21); the same bounds are enforced when writing, so the engine never
//! writes what it could not read back.

/// Bytes of the fixed header at the start of every segment file (format-spec.md §3).
pub const SEGMENT_HEADER_BYTES: usize = 64;

/// Bytes of a frame header: batch, seal and close frames share this layout (format-spec.md §4).
pub const FRAME_HEADER_BYTES: usize = 56;

/// Bytes of the header in front of every record inside a batch (format-spec.md §4.2).
pub const RECORD_HEADER_BYTES: usize = 16;

/// Frames start at file offsets that are multiples of this; batches are zero-padded to it.
pub const FRAME_ALIGN_BYTES: usize = 8;

/// Bytes of the fixed header of an index file (format-spec.md §5).
pub const INDEX_HEADER_BYTES: usize = 64;

/// Bytes of one index entry (format-spec.md §5).
pub const INDEX_ENTRY_BYTES: usize = 24;

/// Hard ceiling on one record's payload. `Options::max_record_bytes` may be set lower, never
/// higher. 64 MiB keeps a single decode allocation far below the fuzzers' malloc limit.
pub const RECORD_BODY_BYTES_MAX: u32 = 64 << 20;

/// Hard ceiling on records in one batch (one `append` call). A batch of empty records still
/// costs `RECORD_HEADER_BYTES` each, so this also bounds per-batch bookkeeping.
pub const BATCH_RECORDS_MAX: u32 = 1 << 20;

/// Hard ceiling on a segment file's size; `Options::segment_bytes` may not exceed it. At
/// 4 GiB a batch body always fits the frame's 32-bit `body_bytes`; a larger file found at
/// open is refused as damaged.
pub const SEGMENT_BYTES_MAX: u64 = 4 << 30;

/// Smallest segment a store may be configured with: room for the header, a frame and a seal.
pub const SEGMENT_BYTES_MIN: u64 = 4096;

/// Hard ceiling on entries in one index file (96 MiB of entries). An index larger than this is
/// treated as damaged and rebuilt from its segment.
pub const INDEX_ENTRIES_MAX: u32 = 1 << 22;

/// Hard ceiling on the number of segment files a store directory may hold; more is refused at
/// open rather than exhausting memory or descriptors (RELIABILITY.md §3.8).
pub const SEGMENTS_MAX: usize = 1 << 20;

const _: () = assert!(SEGMENT_HEADER_BYTES.is_multiple_of(FRAME_ALIGN_BYTES));
const _: () = assert!(FRAME_HEADER_BYTES.is_multiple_of(FRAME_ALIGN_BYTES));
const _: () = assert!(RECORD_HEADER_BYTES.is_multiple_of(FRAME_ALIGN_BYTES));
const _: () = assert!(SEGMENT_BYTES_MIN as usize > SEGMENT_HEADER_BYTES + 2 * FRAME_HEADER_BYTES);

/// Bytes of the fixed header of an event body (format-spec.md §11).
pub const EVENT_HEADER_BYTES: usize = 32;

/// Longest stream id, in UTF-8 bytes. Ids are never used as file names as they are
/// (see the snapshot layer's encoding), so this bounds memory, not paths.
pub const STREAM_ID_BYTES_MAX: usize = 4096;

/// Longest event type name, in UTF-8 bytes.
pub const EVENT_TYPE_BYTES_MAX: usize = 256;

/// Most events one `Store::append` call may write (one atomic batch).
pub const BATCH_EVENTS_MAX: usize = 10_000;

/// Bytes of the fixed header of the stream-index checkpoint (format-spec.md §12).
pub const CHECKPOINT_HEADER_BYTES: usize = 64;

/// Largest stream-index checkpoint file read back; a larger one is treated as damaged and
/// the index is rebuilt from the log.
pub const CHECKPOINT_BYTES_MAX: u64 = 4 << 30;

/// Size of a log marker file, `log.start` or `log.truncate` (format-spec.md §16); a file of
/// another length is rejected before it is read.
pub const LOG_MARKER_BYTES: usize = 48;
