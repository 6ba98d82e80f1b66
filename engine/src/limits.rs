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

/// Most batches a segment walk remembers while waiting for a later frame to prove them durable
/// (`segment::scan`, format-spec.md §7.5): 16 bytes each, so at most 1 MiB. Beyond it the
/// newest entry is replaced, so a proof covering only the replaced batches proves less than
/// it could (never more) until a later frame covers the newest.
pub const UNPROVEN_BATCHES_MAX: usize = 1 << 16;

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

/// Most seqs a stream-index checkpoint decoded whole (`StreamCheckpoint::decode`, for tools)
/// may hold: a version 2 file stores runs of seqs in a few bytes, so its length does not
/// bound them. A store loading its own checkpoint bounds them by the log's end instead.
pub const CHECKPOINT_SEQS_MAX: u64 = 1 << 29;

/// Bytes of the fixed header of an aggregate snapshot file (format-spec.md §13).
pub const SNAPSHOT_HEADER_BYTES: usize = 96;

/// Longest schema tag of a snapshot (names the aggregate type and its state encoding), in
/// UTF-8 bytes.
pub const SNAPSHOT_SCHEMA_BYTES_MAX: usize = 256;

/// Largest encoded aggregate state in one snapshot. A state that encodes larger is not
/// snapshotted (the aggregate is then always loaded by replay).
pub const SNAPSHOT_PAYLOAD_BYTES_MAX: usize = 64 << 20;

/// Largest snapshot file read back; a larger one is set aside unread.
pub const SNAPSHOT_FILE_BYTES_MAX: u64 = (SNAPSHOT_HEADER_BYTES
    + STREAM_ID_BYTES_MAX
    + SNAPSHOT_SCHEMA_BYTES_MAX
    + SNAPSHOT_PAYLOAD_BYTES_MAX) as u64;

/// Most files one aggregate's snapshots may have moved aside (`.broken-<n>`); past this,
/// a bad snapshot is left in place, ignored and reported, so a flapping disk cannot fill the
/// directory.
pub const SNAPSHOT_SET_ASIDE_MAX: u32 = 1000;
/// Bytes of the fixed header of a projection checkpoint (format-spec.md §14).
pub const PROJECTION_CHECKPOINT_HEADER_BYTES: usize = 64;

/// Longest projection name, in UTF-8 bytes. A name becomes a file name with every byte
/// outside `[A-Za-z0-9_-]` written as `%XX`, so 80 bytes stay within the 255-byte file-name
/// limit of common file systems, suffixes included.
pub const PROJECTION_NAME_BYTES_MAX: usize = 80;

/// Largest projection state stored in a checkpoint (exactly-once projections keep their
/// whole view there); a larger one is refused when writing and treated as damage when read.
pub const PROJECTION_STATE_BYTES_MAX: u64 = 1 << 30;
/// Size of a log marker file, `log.start` or `log.truncate` (format-spec.md §16); a file of
/// another length is rejected before it is read.
pub const LOG_MARKER_BYTES: usize = 48;
