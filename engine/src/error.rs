//! The one public error type.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::format::DecodeError;

/// Result alias used throughout the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, with the fields tools need to report it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What the engine was doing.
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Arc<io::Error>,
    },
    /// The file system is full. Nothing from the failed append was acknowledged.
    #[error("storage full while {op} {}", path.display())]
    StorageFull {
        /// What the engine was doing.
        op: &'static str,
        /// The file concerned.
        path: PathBuf,
    },
    /// Another handle (in this or another process) owns the store directory.
    #[error("store {} is locked by another handle", dir.display())]
    Locked {
        /// The store directory.
        dir: PathBuf,
    },
    /// On-disk data failed validation in a way recovery may not repair by itself.
    #[error("corruption in {} at offset {offset}: {kind}", file.display())]
    Corrupt {
        /// The file holding the bad bytes.
        file: PathBuf,
        /// Byte offset in that file.
        offset: u64,
        /// What is wrong.
        kind: CorruptionKind,
    },
    /// Segments are missing: the sequence numbers in `[from, to)` have no segment.
    #[error("missing segment(s): seqs {from}..{to} are not covered by any segment file")]
    MissingSegments {
        /// First missing seq.
        from: u64,
        /// One past the last missing seq.
        to: u64,
    },
    /// An earlier write or fsync failed; the log accepts no more writes until reopened.
    #[error("log is poisoned by an earlier failure: {first_failure}")]
    Poisoned {
        /// The first failure, which made the page cache untrustworthy.
        first_failure: Arc<Error>,
    },
    /// A record's payload is larger than the configured maximum.
    #[error("record of {len} bytes exceeds the maximum of {max}")]
    RecordTooLarge {
        /// The payload length.
        len: u64,
        /// The configured maximum.
        max: u64,
    },
    /// A batch does not fit in one segment, or has too many records.
    #[error(
        "batch of {records} records / {bytes} bytes exceeds the limit of {max_records} / {max_bytes}"
    )]
    BatchTooLarge {
        /// Records in the batch.
        records: u64,
        /// Encoded bytes of the batch.
        bytes: u64,
        /// Record limit.
        max_records: u64,
        /// Byte limit (the segment's capacity).
        max_bytes: u64,
    },
    /// An append with no records.
    #[error("empty batch")]
    EmptyBatch,
    /// A read of a seq that is not (or not yet durably) in the log.
    #[error("seq {seq} is beyond the readable head {head}")]
    SeqOutOfRange {
        /// The seq asked for.
        seq: u64,
        /// One past the last readable seq.
        head: u64,
    },
    /// A read-only open found no store in the directory.
    #[error("no annal store in {}", dir.display())]
    NoStore {
        /// The directory.
        dir: PathBuf,
    },
    /// A write to a log opened read-only.
    #[error("log is open read-only")]
    ReadOnly,
    /// An append's expected version did not match the stream; nothing was written.
    #[error(
        "wrong expected version for stream {stream:?}: expected {expected:?}, actual {actual:?}"
    )]
    WrongExpectedVersion {
        /// The stream.
        stream: String,
        /// What the caller expected.
        expected: crate::streams::ExpectedVersion,
        /// The stream's version (its last event's), or `None` if it has no events.
        actual: Option<u64>,
    },
    /// A stream id that is empty, too long, or not UTF-8.
    #[error("invalid stream id: {reason}")]
    InvalidStreamId {
        /// What is wrong with it.
        reason: String,
    },
    /// An event type that is empty or too long.
    #[error("invalid event type: {reason}")]
    InvalidEventType {
        /// What is wrong with it.
        reason: String,
    },
    /// More events in one append than `BATCH_EVENTS_MAX`.
    #[error("{count} events in one append, the maximum is {max}")]
    TooManyEvents {
        /// Events given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A record that passed its CRC but is not a valid event body.
    #[error("record {seq} is not a valid event: {reason}")]
    BadEvent {
        /// The record's seq.
        seq: u64,
        /// Why.
        reason: String,
    },
    /// A stream's seqs in the stream-index checkpoint failed their check when first read,
    /// and the log, scanned to rebuild them, does not agree with the checkpoint's directory
    /// about a stream appended to since the open, whose versions were counted from the
    /// directory (format-spec.md §12.2): the stream is not served rather than served wrong.
    #[error("stream {stream:?}: its checkpoint block is damaged and the log disagrees: {reason}")]
    CheckpointMismatch {
        /// The stream.
        stream: String,
        /// Why.
        reason: String,
    },
    /// Event data or metadata did not encode or decode with the chosen codec.
    #[error("codec: {reason}")]
    Codec {
        /// The codec's message.
        reason: String,
    },
    /// Options that cannot work together.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// The log was closed.
    #[error("log is closed")]
    Closed,
    /// A projection name that is empty or too long.
    #[error("invalid projection name: {reason}")]
    InvalidProjectionName {
        /// What is wrong with it.
        reason: String,
    },
    /// A projection of this name is already running in this runner.
    #[error("projection {name:?} is already running")]
    ProjectionExists {
        /// The name.
        name: String,
    },
    /// A projection stopped because applying an event failed or panicked, or its state could
    /// not be restored or checkpointed.
    #[error("projection {name:?} failed at seq {seq}: {reason}")]
    ProjectionFailed {
        /// The projection.
        name: String,
        /// The seq of the event it failed on (its position).
        seq: u64,
        /// The error or panic message.
        reason: String,
    },
    /// A projection was stopped (or its store closed) before it reached what was waited for.
    #[error("projection {name:?} stopped at seq {position}")]
    ProjectionStopped {
        /// The projection.
        name: String,
        /// Its position when it stopped.
        position: u64,
    },
    /// A wait for a read model to reach a seq timed out.
    #[error("timed out waiting for seq {seq}; the read model is at {position}")]
    WaitTimedOut {
        /// The seq waited for.
        seq: u64,
        /// The read model's position at the timeout.
        position: u64,
    },
    /// `Log::truncate_from` or `Log::purge_before` on a log with other open handles (clones,
    /// cursors, a `Store`): they reopen the log, so they need the only handle.
    #[error("the log has other open handles")]
    Shared,
    /// A truncate at a seq inside a batch: a batch is atomic, so it is dropped whole or kept.
    #[error("seq {seq} is inside the batch starting at seq {batch_first}")]
    TruncateMidBatch {
        /// The seq asked for.
        seq: u64,
        /// The first seq of the batch holding it.
        batch_first: u64,
    },
    /// A read-only open found an unfinished truncate (`log.truncate`, format-spec.md §16.1),
    /// which only a writer's open completes.
    #[error("unfinished truncate in {}: open it for writing once", dir.display())]
    PendingTruncate {
        /// The store directory.
        dir: PathBuf,
    },
    /// A record that `inspect::DurableTail` returned as durable on the strength of its own
    /// fdatasync is no longer in the log: the writer had not synced it itself, its own
    /// fdatasync then failed, and it moved its unsynced bytes aside (format-spec.md §6.1).
    #[error(
        "record {seq}, returned as durable after this reader's own fdatasync, is no longer in \
         the log: the writer set its unsynced records aside after its fdatasync failed"
    )]
    Retracted {
        /// The last seq the reader returned.
        seq: u64,
    },
}

/// What is wrong with corrupt bytes (see format-spec.md §7 for the recovery decisions).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CorruptionKind {
    /// The bytes did not decode.
    #[error("{0}")]
    Decode(#[from] DecodeError),
    /// A segment's header carries another store's log id.
    #[error("segment belongs to another store")]
    ForeignSegment,
    /// A frame carries another store's log tag.
    #[error("frame belongs to another store")]
    ForeignFrame,
    /// A frame's recorded position is not where it was found.
    #[error("frame recorded for offset {recorded} found elsewhere")]
    MisplacedFrame {
        /// The offset the frame says it was written at.
        recorded: u64,
    },
    /// A segment's header disagrees with its file name.
    #[error("segment header base {header} does not match its file name base {name}")]
    SegmentNameMismatch {
        /// Base seq in the header.
        header: u64,
        /// Base seq in the file name.
        name: u64,
    },
    /// A record or frame seq does not follow its predecessor.
    #[error("expected seq {expected}, found {found}")]
    SeqMismatch {
        /// The seq the position implies.
        expected: u64,
        /// The seq found.
        found: u64,
    },
    /// A bad frame is followed by data that was durable before it: acknowledged data is
    /// damaged and must not be truncated silently.
    #[error("bad frame followed by durable data at offset {valid_at}: {cause}")]
    MidLog {
        /// Offset of the later valid frame proving the damage is not a torn tail.
        valid_at: u64,
        /// Why the frame at the reported offset is bad.
        cause: Box<CorruptionKind>,
    },
    /// The last segment is sealed, so a segment after it was created and is now missing.
    #[error("the last segment is sealed: the segment starting at seq {next_seq} is missing")]
    SealedTail {
        /// The seq the missing segment starts at.
        next_seq: u64,
    },
    /// The last segment holds fewer records than its index file says were durable at a
    /// clean close: it was replaced by an older copy or lost its end.
    #[error("segment ends at seq {found}, but its index says seqs up to {promised} were durable")]
    StaleSegment {
        /// One past the last seq the index file covers.
        promised: u64,
        /// One past the last seq found in the segment.
        found: u64,
    },
    /// The segments directory holds index files or moved-aside bytes but no segment.
    #[error("the segments are gone: index or moved-aside files remain, but no segment file")]
    SegmentsGone,
    /// More segment files than `SEGMENTS_MAX`.
    #[error("{count} segment files exceed the limit")]
    TooManySegments {
        /// Segment files found.
        count: u64,
    },
    /// A sealed (non-last) segment has no valid seal frame and its records do not end where
    /// the next segment begins.
    #[error(
        "sealed segment is incomplete: records end at seq {end}, next segment starts at {next}"
    )]
    IncompleteSegment {
        /// One past the last valid record.
        end: u64,
        /// The next segment's base.
        next: u64,
    },
}

impl Error {
    /// Wraps an I/O error, mapping "no space" to [`Error::StorageFull`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if source.kind() == io::ErrorKind::StorageFull
            || source.kind() == io::ErrorKind::QuotaExceeded
        {
            return Error::StorageFull { op, path };
        }
        Error::Io { op, path, source: Arc::new(source) }
    }

    /// A corruption error at `file`/`offset`.
    pub(crate) fn corrupt(
        file: impl Into<PathBuf>,
        offset: u64,
        kind: impl Into<CorruptionKind>,
    ) -> Self {
        Error::Corrupt { file: file.into(), offset, kind: kind.into() }
    }
}
