//! The ordered set of segments: opening and recovering a store directory, global sequence
//! numbers, reads by seq, the replay cursor, and the durable head.
//!
//! Writing lives in `commit`; this module owns the shared state both use.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use bytes::Bytes;

use crate::commit::{Committer, WriterState};
use crate::error::{CorruptionKind, Error, Result};
use crate::format::{Frame, FrameKind, IndexEntry, IndexHeader, PreparedBatch, log_tag};
use crate::fs::{LockGuard, OpenMode, StdFs, Storage, StorageFile};
use crate::index::{self, SparseIndex};
use crate::limits::{
    BATCH_RECORDS_MAX, FRAME_HEADER_BYTES, RECORD_BODY_BYTES_MAX, SEGMENT_BYTES_MAX,
    SEGMENT_HEADER_BYTES, SEGMENTS_MAX,
};
use crate::names::{self, SegmentDirEntry};
use crate::options::{Durability, Options};
use crate::segment::{self, Scan, Source, Stop};
use crate::stats::{Stats, StatsSnapshot};

/// One record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its global sequence number.
    pub seq: u64,
    /// When its batch was written, microseconds since the Unix epoch (non-decreasing in seq
    /// order; all records of one batch share it).
    pub timestamp_us: u64,
    /// The bytes that were appended, verified against their CRC.
    pub payload: Bytes,
}

/// Where an append landed: seqs `first .. first + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Seq of the batch's first record.
    pub first: u64,
    /// Records in the batch.
    pub count: u32,
}

impl Appended {
    /// Seq of the batch's last record.
    pub fn last(&self) -> u64 {
        self.first + u64::from(self.count) - 1
    }
}

/// A torn tail cut off at open: bytes after the last valid frame of the last segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruncatedTail {
    /// The segment file.
    pub segment: PathBuf,
    /// Offset of the first byte cut.
    pub offset: u64,
    /// Bytes cut, up to and including the last non-zero byte (the zeros of preallocated
    /// space after it are not counted).
    pub bytes: u64,
    /// Records in batch headers that still decoded in the cut bytes. None of them had been
    /// acknowledged as durable under the durable policies (format-spec.md §7).
    pub events: u64,
    /// Why the first cut frame was invalid.
    pub cause: CorruptionKind,
    /// Where the cut bytes were copied before the cut, if any were non-zero.
    pub moved_to: Option<PathBuf>,
}

/// What opening the store found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The store was closed cleanly: every sealed segment was trusted through its seal, the
    /// last one through the close frame its index points to, and no record was scanned.
    pub clean: bool,
    /// Segments found.
    pub segments: usize,
    /// The seq the next append gets.
    pub next_seq: u64,
    /// A torn tail that was cut, if any.
    pub truncated: Option<TruncatedTail>,
    /// Segments whose seal was missing after a crash during a roll (base seqs); a writer
    /// completes the seal, a read-only open only reports it.
    pub seals_completed: Vec<u64>,
    /// Leftover temp files of interrupted creates or replaces that were removed (writer only).
    pub temp_files_removed: Vec<String>,
    /// The last segment's index file was missing, damaged or stale, so its index was rebuilt
    /// by scanning the segment (normal after a crash; counted in `stats().index_rebuilds`).
    pub active_index_rebuilt: bool,
    /// Bytes moved aside by this open (torn tails, bytes after a seal), as files named
    /// `<segment>.broken-<offset>` beside the segment.
    pub moved_aside: Vec<PathBuf>,
    /// Bytes of frames scanned during recovery (segment headers and the close frame an index
    /// points to are checked, not counted).
    pub scanned_bytes: u64,
}

/// A sealed segment's final facts.
#[derive(Debug)]
pub(crate) struct Sealed {
    /// One past its last record.
    pub next_seq: u64,
    /// Offset of its seal frame; the file ends right after it.
    pub seal_at: u64,
    /// Bytes that belong to the segment: `seal_at` plus the seal frame, or just `seal_at`
    /// when a read-only open found the seal missing (an interrupted roll).
    pub data_end: u64,
    /// The map, made on first read where the storage supports it.
    pub map: OnceLock<Option<Bytes>>,
}

/// One segment as the log sees it.
#[derive(Debug)]
pub(crate) struct Segment {
    pub base: u64,
    pub path: PathBuf,
    pub file: Arc<dyn StorageFile>,
    /// The sparse index. For sealed segments it is loaded on first read.
    pub index: RwLock<SparseIndex>,
    pub index_loaded: OnceLock<()>,
    /// The in-memory index was rebuilt by a reader and its file is missing or stale.
    pub index_dirty: std::sync::atomic::AtomicBool,
    /// For the active segment: bytes readers may read (all frames below it are complete).
    pub readable_end: AtomicU64,
    pub sealed: OnceLock<Sealed>,
    /// Where each record starts, for point reads; grown on demand (format-spec.md §5.2).
    pub dense: RwLock<DenseOffsets>,
}

/// The offset of every record of a segment up to `end`, found by walking frame headers
/// (each checked) and record lengths. A hint, like the sparse index: a point read still
/// verifies the CRC and seq of the record it lands on.
#[derive(Debug, Default)]
pub(crate) struct DenseOffsets {
    /// `offsets[i]`: file offset of the header of record `base + i`, and the index in
    /// `batches` of the batch holding it (a direct lookup: a search of `batches` costs a
    /// cache miss per step on a large segment).
    offsets: Vec<(u32, u32)>,
    /// `(first seq, timestamp, frame offset)` of every batch walked, in order.
    batches: Vec<(u64, u64, u64)>,
    /// Offset of the next frame to walk.
    end: u64,
    /// The walk met a frame it could not trust: point reads beyond use the cursor path,
    /// which reports the damage.
    stuck: bool,
}

impl Segment {
    pub(crate) fn new(base: u64, path: PathBuf, file: Arc<dyn StorageFile>) -> Self {
        Segment {
            base,
            path,
            file,
            index: RwLock::new(SparseIndex::default()),
            index_loaded: OnceLock::new(),
            index_dirty: std::sync::atomic::AtomicBool::new(false),
            readable_end: AtomicU64::new(SEGMENT_HEADER_BYTES as u64),
            sealed: OnceLock::new(),
            dense: RwLock::new(DenseOffsets {
                end: SEGMENT_HEADER_BYTES as u64,
                ..DenseOffsets::default()
            }),
        }
    }

    /// A byte source for reads: the map of a sealed segment, or positioned reads of the
    /// readable prefix of the active one.
    pub(crate) fn source(&self) -> Source {
        if let Some(s) = self.sealed.get() {
            let map =
                s.map.get_or_init(|| self.file.map().ok().flatten().map(segment::mapped_bytes));
            if let Some(m) = map
                && m.len() as u64 == s.data_end
            {
                return Source::Mapped(m.clone());
            }
            return Source::file(Arc::clone(&self.file), s.data_end);
        }
        Source::file(Arc::clone(&self.file), self.readable_end.load(Ordering::Acquire))
    }

    pub(crate) fn index_path(&self) -> PathBuf {
        self.path.with_file_name(names::index_file_name(self.base))
    }
}

/// State shared by every handle of one open log.
#[derive(Debug)]
pub(crate) struct Inner {
    pub storage: Arc<dyn Storage>,
    pub dir: PathBuf,
    pub seg_dir: PathBuf,
    pub opts: Options,
    pub log_id: [u8; 16],
    pub log_tag: u64,
    pub segments: RwLock<Vec<Arc<Segment>>>,
    /// One past the last seq readers may see (durable, or written under `Durability::None`).
    pub visible: AtomicU64,
    /// One past the last seq known durable.
    pub durable: AtomicU64,
    pub committer: Committer,
    pub poison: OnceLock<Arc<Error>>,
    pub stats: Stats,
    pub recovery: RecoveryReport,
    /// Opened with [`Log::open_read_only`]: no lock, no writes.
    pub read_only: bool,
    /// Bytes held by the dense offsets of all segments (bounded by
    /// `Options::point_read_index_bytes`).
    pub dense_bytes: AtomicU64,
    /// Wake-ups for subscribers when the visible end advances (see `commit::Notifier`).
    pub heads: crate::commit::Notifier,
    /// Prepares the next segment in the background (`Options::prepare_segments`).
    pub preparer: Option<crate::prepare::Preparer>,
    /// Dropping this ends the `Batched` flusher thread.
    pub flusher_stop: std::sync::Mutex<Option<crossbeam_channel::Sender<()>>>,
    pub _lock: Option<Box<dyn LockGuard>>,
}

/// A segmented, CRC-checked write-ahead log with group commit.
///
/// `Log` is a cheap handle: clone it to share one open log between threads; every method
/// takes `&self` and is thread-safe. The directory is owned exclusively (a `LOCK` file) until
/// the last handle is dropped; dropping the last handle closes the log cleanly, as
/// [`Log::close`] does, but ignores errors.
#[derive(Debug, Clone)]
pub struct Log {
    pub(crate) inner: Arc<Inner>,
}

impl Log {
    /// Opens (creating if needed) the log in `dir` on the real file system.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Log> {
        Log::open_with(Arc::new(StdFs), dir, opts)
    }

    /// Opens the log in `dir` on the given storage (for tests: [`crate::fs::SimFs`]).
    ///
    /// Takes the directory's lock first (a second open gets [`Error::Locked`] and touches no
    /// other file), then recovers as format-spec.md §7 describes: a torn tail is cut and
    /// reported in [`Log::recovery_report`]; damage to data that was durable is an error.
    pub fn open_with(
        storage: Arc<dyn Storage>,
        dir: impl AsRef<Path>,
        opts: Options,
    ) -> Result<Log> {
        Log::open_mode(storage, dir.as_ref(), opts, true)
    }

    /// Opens the log in `dir` for reading only, on the real file system: takes no lock and
    /// writes nothing, so it works beside a running writer's store (seeing what was on disk
    /// at open) and on a read-only mount. Recovery decides as for a writer but does not act:
    /// a torn tail is reported in [`Log::recovery_report`] and hidden, not cut. Appends fail
    /// with [`Error::ReadOnly`].
    pub fn open_read_only(dir: impl AsRef<Path>, opts: Options) -> Result<Log> {
        Log::open_read_only_with(Arc::new(StdFs), dir, opts)
    }

    /// [`Log::open_read_only`] on the given storage.
    pub fn open_read_only_with(
        storage: Arc<dyn Storage>,
        dir: impl AsRef<Path>,
        opts: Options,
    ) -> Result<Log> {
        Log::open_mode(storage, dir.as_ref(), opts, false)
    }

    fn open_mode(
        storage: Arc<dyn Storage>,
        dir: &Path,
        opts: Options,
        writable: bool,
    ) -> Result<Log> {
        opts.validate()?;
        let dir = dir.to_path_buf();
        let seg_dir = names::segments_dir(&dir);
        let lock = if writable {
            create_dir_durably(storage.as_ref(), &dir)?;
            let lock_path = dir.join(names::LOCK_FILE);
            let lock = storage
                .try_lock(&lock_path)
                .map_err(|e| Error::io("lock", &lock_path, e))?
                .ok_or_else(|| Error::Locked { dir: dir.clone() })?;
            create_dir_durably(storage.as_ref(), &seg_dir)?;
            crate::log_edit::finish_truncate(storage.as_ref(), &dir, &seg_dir)?;
            Some(lock)
        } else {
            if !storage.exists(&seg_dir).map_err(|e| Error::io("stat", &seg_dir, e))? {
                return Err(Error::NoStore { dir });
            }
            let intent = dir.join(names::LOG_TRUNCATE_FILE);
            if storage.exists(&intent).map_err(|e| Error::io("stat", &intent, e))? {
                return Err(Error::PendingTruncate { dir });
            }
            None
        };
        let start = crate::log_edit::read_marker(
            storage.as_ref(),
            &dir,
            names::LOG_START_FILE,
            crate::format::LogMarkerKind::Start,
        )?;
        let recovered = recover(storage.as_ref(), &seg_dir, &opts, writable, start)?;
        let Recovered { log_id, segments, writer, report, proven_seq } = recovered;
        let next_seq = writer.next_seq;
        let preparer = (writable
            && opts.preallocate
            && opts.prepare_segments
            && opts.zeroing_pays()
            && storage.zero_fill_pays(&seg_dir))
        .then(|| {
            let spare = seg_dir.join(names::SPARE_SEGMENT_FILE);
            crate::prepare::Preparer::new(Arc::clone(&storage), spare, opts.segment_bytes)
        });
        let inner = Arc::new(Inner {
            preparer,
            storage,
            dir,
            seg_dir,
            log_tag: log_tag(&log_id),
            log_id,
            segments: RwLock::new(segments),
            visible: AtomicU64::new(next_seq),
            durable: AtomicU64::new(proven_seq),
            committer: Committer::new(writer),
            poison: OnceLock::new(),
            stats: Stats::after_recovery(&report),
            recovery: report,
            opts,
            read_only: !writable,
            flusher_stop: std::sync::Mutex::new(None),
            heads: crate::commit::Notifier::default(),
            dense_bytes: AtomicU64::new(0),
            _lock: lock,
        });
        if let (Durability::Batched { max_delay, .. }, true) = (inner.opts.durability, writable) {
            let (tx, rx) = crossbeam_channel::bounded(0);
            *inner.flusher_stop.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
            crate::commit::spawn_flusher(Arc::downgrade(&inner), max_delay, rx)
                .map_err(|e| Error::io("start flusher thread", &inner.dir, e))?;
        }
        Ok(Log { inner })
    }

    /// Appends `payloads` as one atomic batch and returns their seqs.
    ///
    /// All records land together or none does, also across a crash. Under the default
    /// [`Durability::Sync`] this returns only after the batch is fsynced; concurrent calls
    /// share one fsync. Errors: [`Error::EmptyBatch`], [`Error::RecordTooLarge`],
    /// [`Error::BatchTooLarge`] (nothing written); [`Error::StorageFull`] or [`Error::Io`]
    /// for the batch whose write failed; [`Error::Poisoned`] for every append after a failed
    /// write or fsync until the log is reopened.
    pub fn append<P: AsRef<[u8]>>(&self, payloads: &[P]) -> Result<Appended> {
        let batch = self.prepare(payloads)?;
        self.inner.append_prepared(batch, None)
    }

    /// Appends with a leader-side check (see `commit::CommitHook`).
    #[cfg(test)]
    pub(crate) fn append_hooked<P: AsRef<[u8]>>(
        &self,
        payloads: &[P],
        hook: crate::commit::CommitHook,
    ) -> Result<Appended> {
        let batch = self.prepare(payloads)?;
        self.inner.append_prepared(batch, Some(hook))
    }

    /// Checks the limits and encodes a batch on the calling thread.
    pub(crate) fn prepare<P: AsRef<[u8]>>(&self, payloads: &[P]) -> Result<PreparedBatch> {
        self.check_batch(payloads.iter().map(|p| p.as_ref().len()))?;
        Ok(PreparedBatch::new(payloads))
    }

    /// Checks the limits for payloads of `lens` bytes and encodes a batch whose payloads
    /// `write` writes straight into the frame (see [`PreparedBatch::from_writer`]).
    pub(crate) fn prepare_with(
        &self,
        lens: &[usize],
        write: impl FnMut(usize, &mut Vec<u8>),
    ) -> Result<PreparedBatch> {
        self.check_batch(lens.iter().copied())?;
        Ok(PreparedBatch::from_writer(lens, write))
    }

    /// Appends a batch from [`Log::prepare_with`] with a leader-side check (see
    /// `commit::CommitHook`).
    pub(crate) fn append_prepared_hooked(
        &self,
        batch: PreparedBatch,
        hook: crate::commit::CommitHook,
    ) -> Result<Appended> {
        self.inner.append_prepared(batch, Some(hook))
    }

    /// The limits on a batch of payloads of these lengths.
    fn check_batch(&self, lens: impl Iterator<Item = usize> + Clone) -> Result<()> {
        let max = self.inner.opts.max_record_bytes;
        let mut records = 0u64;
        for len in lens.clone() {
            records += 1;
            if len as u64 > u64::from(max) {
                return Err(Error::RecordTooLarge { len: len as u64, max: max.into() });
            }
        }
        if records == 0 {
            return Err(Error::EmptyBatch);
        }
        let bytes = crate::format::batch_frame_bytes(lens);
        let capacity = self.inner.opts.segment_capacity();
        if records > u64::from(BATCH_RECORDS_MAX) || bytes > capacity {
            return Err(Error::BatchTooLarge {
                records,
                bytes,
                max_records: BATCH_RECORDS_MAX.into(),
                max_bytes: capacity,
            });
        }
        Ok(())
    }

    /// Forces an fsync of everything written so far (a no-op under `Durability::Sync`, where
    /// everything acknowledged is already durable).
    pub fn sync(&self) -> Result<()> {
        self.inner.sync()
    }

    /// The highest seq that is durable, or `None` if nothing is.
    ///
    /// On a log opened with [`Log::open_read_only`] this is the highest seq the files prove
    /// durable (format-spec.md §7.5): every sealed segment, and in the last segment every
    /// batch that a later valid frame's `synced_through` covers (a close frame covers all
    /// before it). Records after it may be readable (written by a running writer, or left by
    /// one that crashed) without being durable.
    pub fn durable_head(&self) -> Option<u64> {
        self.inner.durable.load(Ordering::Acquire).checked_sub(1)
    }

    /// The last segment's base seq and path.
    pub(crate) fn last_segment(&self) -> Option<(u64, PathBuf)> {
        let segs = self.inner.segments.read().unwrap_or_else(|e| e.into_inner());
        segs.last().map(|s| (s.base, s.path.clone()))
    }

    /// One past the highest seq a reader may see now: reads and cursors stop here.
    pub fn visible_end(&self) -> u64 {
        self.inner.visible.load(Ordering::Acquire)
    }

    /// A receiver woken whenever the visible end advances; each value is the new
    /// [`Log::visible_end`]. This is the notification channel subscribers are built on
    /// (`Store::subscribe` uses it).
    ///
    /// The channel holds one value and the writer only ever `try_send`s, so a slow receiver
    /// never slows appends; it misses values instead. After every wake-up, read from your
    /// own next seq up to `visible_end()` (a [`Cursor`] does): then a missed value loses
    /// nothing, and a value for records already read costs one empty read. Register before
    /// the first read, so nothing that becomes visible after that read goes unnoticed.
    ///
    /// What it publishes is the visible end: under [`Durability::Sync`] and
    /// [`Durability::Batched`] that is the durable end, so a receiver never learns of a
    /// record a crash could take back; under [`Durability::None`] it is the written end,
    /// records a crash may still take back. The channel disconnects when the log is closed
    /// (after the last records became visible).
    pub fn subscribe_heads(&self) -> crossbeam_channel::Receiver<u64> {
        self.inner.heads.register()
    }

    /// Counters since open.
    pub fn stats(&self) -> StatsSnapshot {
        let mut s = self.inner.stats.snapshot();
        if let Some(p) = &self.inner.preparer {
            s.prepared_rolls = p.used();
            s.spare_failures = p.failed();
            s.spare_ready = p.is_ready();
        }
        s
    }

    /// What opening the store found and did.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// The store's random log id.
    pub fn log_id(&self) -> [u8; 16] {
        self.inner.log_id
    }

    /// Whether the log was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    /// The largest record payload this log accepts.
    pub fn max_record_bytes(&self) -> u32 {
        self.inner.opts.max_record_bytes
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The storage the log was opened on (for derived files such as projection checkpoints).
    pub(crate) fn storage(&self) -> &Arc<dyn Storage> {
        &self.inner.storage
    }

    /// Reads record `seq`, verifying its CRC. Fails with [`Error::SeqOutOfRange`] for seqs
    /// not yet visible and [`Error::Corrupt`] if the bytes do not verify.
    pub fn read(&self, seq: u64) -> Result<Record> {
        let visible = self.visible_end();
        if seq >= visible {
            return Err(Error::SeqOutOfRange { seq, head: visible });
        }
        if let Some(rec) = self.inner.point_read(seq)? {
            return Ok(rec);
        }
        let mut cursor = self.cursor(seq);
        match cursor.next() {
            Some(r) => r,
            None => Err(Error::SeqOutOfRange { seq, head: self.visible_end() }),
        }
    }

    /// A cursor over records `from ..` up to the visible end, re-checked on every step, so it
    /// keeps going while writers append. Every record's CRC is checked.
    pub fn cursor(&self, from: u64) -> Cursor {
        Cursor { inner: Arc::clone(&self.inner), next: from, pos: None, done: false }
    }

    /// One past the last visible seq written at or before `timestamp_us`: the log as it was
    /// at that moment is the seqs `0 .. seq_at_time(t)`. It seeks through the timestamps of
    /// the sparse indexes (segments by their first batch, then the index entries), then reads
    /// at most about one index interval of frame headers.
    pub fn seq_at_time(&self, timestamp_us: u64) -> Result<u64> {
        self.inner.seq_at_time(timestamp_us)
    }

    /// Closes the log cleanly: waits for in-flight appends, writes a close frame and the
    /// active segment's index, so the next open need not scan. Later appends on any handle
    /// fail with [`Error::Closed`].
    pub fn close(self) -> Result<()> {
        let closed = self.inner.close();
        // Everything that will ever be visible is: subscribers may drain and end.
        self.inner.heads.close();
        closed
    }

    /// The first seq the log holds: 0, or where [`Log::purge_before`] left it. Reads below it
    /// fail with [`Error::MissingSegments`].
    pub fn first_seq(&self) -> u64 {
        let segs = self.inner.segments.read().unwrap_or_else(|e| e.into_inner());
        segs.first().map_or(0, |s| s.base)
    }

    /// Drops the records `from ..` (a raft log's conflicting uncommitted entries) and returns
    /// the reopened log, whose next append gets seq `from`. `from` must start a batch
    /// ([`Error::TruncateMidBatch`]: batches are atomic) and be at least [`Log::first_seq`];
    /// at or beyond the visible end it changes nothing. The log must have no other handle
    /// ([`Error::Shared`]).
    ///
    /// Crash-safe (format-spec.md §16.1): a durable intent `log.truncate` is written first,
    /// then the log is closed and reopened, and the open completes the intent: whole segments
    /// above `from` are renamed aside, the segment holding it is cut with its cut bytes moved
    /// aside (never deleted), and the intent is removed. After a crash the log is either as
    /// before (no intent) or truncated (the next open completes it).
    pub fn truncate_from(self, from: u64) -> Result<Log> {
        if self.inner.read_only {
            return Err(Error::ReadOnly);
        }
        if Arc::strong_count(&self.inner) != 1 {
            return Err(Error::Shared);
        }
        let end = self.visible_end();
        if from >= end {
            return Ok(self);
        }
        if from < self.first_seq() {
            return Err(Error::SeqOutOfRange { seq: from, head: end });
        }
        let seg = self.inner.segment_for(from).ok_or(Error::MissingSegments { from, to: end })?;
        let (_, frame) = self.inner.seek(&seg, &mut seg.source(), from)?;
        if frame.seq != from {
            return Err(Error::TruncateMidBatch { seq: from, batch_first: frame.seq });
        }
        drop(seg);
        let marker = crate::format::LogMarker {
            kind: crate::format::LogMarkerKind::Truncate,
            log_id: self.inner.log_id,
            seq: from,
        };
        self.reopen_after(names::LOG_TRUNCATE_FILE, &marker)
    }

    /// Removes the whole sealed segments whose records are all below `before` (a raft log's
    /// entries covered by a snapshot) and returns the reopened log. Records at or above
    /// `before` are kept, and so are records below it that share a segment with one that is
    /// not covered: [`Log::first_seq`] tells where the log starts now. The log must have no
    /// other handle ([`Error::Shared`]).
    ///
    /// Crash-safe (format-spec.md §16.2): the new first seq is written to `log.start` first
    /// (atomically), then the log is reopened, and the open removes the segments below it.
    /// After a crash the log starts either where it did or at the new first seq.
    pub fn purge_before(self, before: u64) -> Result<Log> {
        if self.inner.read_only {
            return Err(Error::ReadOnly);
        }
        if Arc::strong_count(&self.inner) != 1 {
            return Err(Error::Shared);
        }
        let start = {
            let segs = self.inner.segments.read().unwrap_or_else(|e| e.into_inner());
            let covered = |s: &Arc<Segment>| s.sealed.get().is_some_and(|x| x.next_seq <= before);
            segs.iter().find(|s| !covered(s)).map_or(0, |s| s.base)
        };
        if start <= self.first_seq() {
            return Ok(self);
        }
        let marker = crate::format::LogMarker {
            kind: crate::format::LogMarkerKind::Start,
            log_id: self.inner.log_id,
            seq: start,
        };
        self.reopen_after(names::LOG_START_FILE, &marker)
    }

    /// Writes `marker` durably, closes this (only) handle, waits until the flusher thread has
    /// let go of the log (it holds it for an instant at most), and opens it again.
    fn reopen_after(self, name: &str, marker: &crate::format::LogMarker) -> Result<Log> {
        let storage = Arc::clone(&self.inner.storage);
        let dir = self.inner.dir.clone();
        let opts = self.inner.opts.clone();
        crate::log_edit::write_marker(storage.as_ref(), &dir, name, marker)?;
        let weak = Arc::downgrade(&self.inner);
        self.close()?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while weak.strong_count() > 0 {
            if std::time::Instant::now() > deadline {
                return Err(Error::Shared);
            }
            std::thread::yield_now();
        }
        Log::open_with(storage, dir, opts)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

impl Inner {
    /// The segment holding `seq` (the last one whose base is at most `seq`).
    pub(crate) fn segment_for(&self, seq: u64) -> Option<Arc<Segment>> {
        let segs = self.segments.read().unwrap_or_else(|e| e.into_inner());
        let n = segs.partition_point(|s| s.base <= seq);
        n.checked_sub(1).and_then(|i| segs.get(i)).cloned()
    }

    /// Makes sure a sealed segment's sparse index is in memory: loaded from its file, or
    /// rebuilt from the segment when the file is missing, damaged or foreign (and then
    /// rewritten, best effort: it is a cache).
    fn ensure_index(&self, seg: &Segment) -> Result<()> {
        let Some(sealed) = seg.sealed.get() else {
            return Ok(());
        };
        if seg.index_loaded.get().is_some() {
            return Ok(());
        }
        let path = seg.index_path();
        let data_len = sealed.data_end;
        let loaded = index::load(self.storage.as_ref(), &path, &self.log_id, seg.base, data_len)
            .ok()
            .filter(|(h, _)| h.end_offset == sealed.seal_at && h.end_seq == sealed.next_seq);
        let ix = match loaded {
            Some((_, ix)) => ix,
            None => self.rebuild_index(seg, sealed)?,
        };
        *seg.index.write().unwrap_or_else(|e| e.into_inner()) = ix;
        let _ = seg.index_loaded.set(());
        Ok(())
    }

    fn rebuild_index(&self, seg: &Segment, sealed: &Sealed) -> Result<SparseIndex> {
        self.stats.index_rebuilds.fetch_add(1, Ordering::Relaxed);
        let mut src = seg.source();
        let params = segment::ScanParams {
            base: seg.base,
            log_tag: self.log_tag,
            max_payload: RECORD_BODY_BYTES_MAX,
            interval: self.opts.index_interval_bytes,
        };
        let start = SEGMENT_HEADER_BYTES as u64;
        let scan = segment::scan(&mut src, params, start, seg.base, SparseIndex::default())
            .map_err(|e| Error::io("read", &seg.path, e))?;
        // The records must end exactly where the seal is (or, for a segment whose seal a
        // read-only open found missing, where it would be).
        let complete = scan.end_offset == sealed.seal_at && scan.next_seq == sealed.next_seq;
        match scan.stop {
            _ if complete => {}
            Stop::Invalid { at, kind } => return Err(Error::corrupt(&seg.path, at, kind)),
            _ => {
                let kind =
                    CorruptionKind::IncompleteSegment { end: scan.next_seq, next: sealed.next_seq };
                return Err(Error::corrupt(&seg.path, scan.end_offset, kind));
            }
        }
        // Readers never write: the writer persists the rebuilt index at close.
        seg.index_dirty.store(true, Ordering::Release);
        Ok(scan.index)
    }

    /// Rebuilds the active segment's index from its readable bytes, keeping the entries the
    /// writer has added since for batches beyond them.
    fn rebuild_active_index(&self, seg: &Segment) -> Result<()> {
        self.stats.index_rebuilds.fetch_add(1, Ordering::Relaxed);
        let end = seg.readable_end.load(Ordering::Acquire);
        let mut src = Source::file(Arc::clone(&seg.file), end);
        let params = segment::ScanParams {
            base: seg.base,
            log_tag: self.log_tag,
            max_payload: RECORD_BODY_BYTES_MAX,
            interval: self.opts.index_interval_bytes,
        };
        let start = SEGMENT_HEADER_BYTES as u64;
        let scan = segment::scan(&mut src, params, start, seg.base, SparseIndex::default())
            .map_err(|e| Error::io("read", &seg.path, e))?;
        if let Stop::Invalid { at, kind } = scan.stop {
            return Err(Error::corrupt(&seg.path, at, kind));
        }
        seg.index_dirty.store(true, Ordering::Release);
        let mut ix = seg.index.write().unwrap_or_else(|e| e.into_inner());
        let mut entries = scan.index.entries().to_vec();
        entries.extend(ix.entries().iter().filter(|e| e.offset >= scan.end_offset));
        *ix = SparseIndex::from_entries(entries);
        Ok(())
    }

    /// Writes the index file of a sealed segment (writer only). A failure poisons the log:
    /// index files share the segments' directory, and a failed write or fsync there means
    /// the directory's state cannot be trusted.
    pub(crate) fn store_index(&self, seg: &Segment) -> Result<()> {
        let Some(sealed) = seg.sealed.get() else { return Ok(()) };
        let header = IndexHeader {
            log_id: self.log_id,
            segment_base: seg.base,
            end_offset: sealed.seal_at,
            end_seq: sealed.next_seq,
        };
        let ix = seg.index.read().unwrap_or_else(|e| e.into_inner()).clone();
        let path = seg.index_path();
        match index::store(self.storage.as_ref(), &path, &header, &ix) {
            Ok(()) => {
                seg.index_dirty.store(false, Ordering::Release);
                Ok(())
            }
            Err(e) => match Error::io("write index", &path, e) {
                // Out of space writing a cache changes nothing the log relies on: keep the
                // index in memory, mark it for writing at close, and go on.
                full @ Error::StorageFull { .. } => {
                    seg.index_dirty.store(true, Ordering::Release);
                    Err(full)
                }
                other => Err(self.poison(other)),
            },
        }
    }

    /// Reads a visible `seq` through its segment's dense offsets, or `None` when they cannot
    /// help (the memory budget is spent, or the walk met damage): the caller then uses a
    /// cursor, which reports any damage precisely.
    fn point_read(&self, seq: u64) -> Result<Option<Record>> {
        let Some(seg) = self.segment_for(seq) else { return Ok(None) };
        let i = (seq - seg.base) as usize;
        let known = |d: &DenseOffsets| -> Option<(u64, u64)> {
            let &(off, b) = d.offsets.get(i)?;
            Some((u64::from(off), d.batches.get(b as usize)?.1))
        };
        let hit = known(&seg.dense.read().unwrap_or_else(|e| e.into_inner()));
        let hit = match hit {
            Some(h) => Some(h),
            None => {
                self.extend_dense(&seg);
                known(&seg.dense.read().unwrap_or_else(|e| e.into_inner()))
            }
        };
        let Some((off, timestamp_us)) = hit else { return Ok(None) };
        let mut src = seg.source();
        let end = src.len();
        if let Source::File { file, .. } = &src {
            // No read-ahead window for one record: its header, then exactly its bytes.
            let payload = segment::read_record_exact(file.as_ref(), off, end, seq)
                .map_err(|(o, e)| e.at(&seg.path, o))?;
            return Ok(Some(Record { seq, timestamp_us, payload }));
        }
        let (payload, _) = segment::read_record(&mut src, off, end, seq, RECORD_BODY_BYTES_MAX)
            .map_err(|(o, e)| e.at(&seg.path, o))?;
        Ok(Some(Record { seq, timestamp_us, payload }))
    }

    /// Walks the frames after the dense offsets' end up to the readable end, within the
    /// memory budget.
    fn extend_dense(&self, seg: &Segment) {
        let mut d = seg.dense.write().unwrap_or_else(|e| e.into_inner());
        if d.stuck {
            return;
        }
        let mut src = seg.source();
        let limit = src.len();
        let walked_from = d.end;
        while d.end < limit {
            let off = d.end;
            let Ok(f) = segment::frame_at(&mut src, off, self.log_tag) else {
                d.stuck = true;
                return;
            };
            match f.kind {
                FrameKind::Seal => break,
                FrameKind::Close => {}
                FrameKind::Batch => {
                    if f.seq != seg.base + d.offsets.len() as u64 {
                        d.stuck = true;
                        return;
                    }
                    let need = u64::from(f.count) * 8 + 24;
                    let spent = self.dense_bytes.fetch_add(need, Ordering::AcqRel);
                    if spent + need > self.opts.point_read_index_bytes {
                        self.dense_bytes.fetch_sub(need, Ordering::AcqRel);
                        return;
                    }
                    let Ok(batch) = u32::try_from(d.batches.len()) else {
                        d.stuck = true;
                        return;
                    };
                    let mut pos = off + FRAME_HEADER_BYTES as u64;
                    let body_end = pos + u64::from(f.body_bytes);
                    for _ in 0..f.count {
                        let Ok(h) = src.get(pos, crate::limits::RECORD_HEADER_BYTES) else {
                            d.stuck = true;
                            return;
                        };
                        let len = u64::from(u32::from_le_bytes([h[4], h[5], h[6], h[7]]));
                        let next = pos + crate::limits::RECORD_HEADER_BYTES as u64 + len;
                        if next > body_end || pos > u64::from(u32::MAX) {
                            d.stuck = true;
                            return;
                        }
                        d.offsets.push((pos as u32, batch));
                        pos = next;
                    }
                    d.batches.push((f.seq, f.timestamp_us, off));
                }
            }
            d.end = off + f.total_bytes();
        }
        let walked_to = d.end;
        drop(d);
        self.check_index_against_dense(seg, walked_from, walked_to);
    }

    /// Once a sealed segment's frames have all been walked, every sparse index entry must
    /// name a batch that was seen (offset, first seq and time); if one does not, the index is
    /// wrong (stale, forged, foreign) and is rebuilt from what the walk found.
    fn check_index_against_dense(&self, seg: &Segment, from: u64, to: u64) {
        if from >= to || self.ensure_index(seg).is_err() {
            return;
        }
        let d = seg.dense.read().unwrap_or_else(|e| e.into_inner());
        let ix = seg.index.read().unwrap_or_else(|e| e.into_inner());
        let walked = ix.entries().iter().filter(|e| e.offset >= from && e.offset < to);
        let agrees = walked.clone().all(|e| {
            let i = d.batches.partition_point(|&(_, _, off)| off < e.offset);
            d.batches.get(i).is_some_and(|&(first, ts, off)| {
                off == e.offset && first == e.seq && ts == e.timestamp_us
            })
        });
        drop(walked);
        if agrees {
            return;
        }
        drop(ix);
        let mut rebuilt = SparseIndex::default();
        for &(first, ts, off) in &d.batches {
            rebuilt.note_batch(first, off, ts, self.opts.index_interval_bytes);
        }
        drop(d);
        self.stats.index_rebuilds.fetch_add(1, Ordering::Relaxed);
        let mut ix = seg.index.write().unwrap_or_else(|e| e.into_inner());
        // Keep what the writer noted beyond the walk (the active segment grows meanwhile).
        let mut entries = rebuilt.entries().to_vec();
        entries.extend(ix.entries().iter().filter(|e| e.offset >= to));
        *ix = SparseIndex::from_entries(entries);
        seg.index_dirty.store(true, Ordering::Release);
    }

    fn first_timestamp(&self, seg: &Segment) -> Result<Option<u64>> {
        self.ensure_index(seg)?;
        Ok(seg.index.read().unwrap_or_else(|e| e.into_inner()).first().map(|e| e.timestamp_us))
    }

    fn seq_at_time(&self, t: u64) -> Result<u64> {
        let visible = self.visible.load(Ordering::Acquire);
        let segs: Vec<Arc<Segment>> =
            self.segments.read().unwrap_or_else(|e| e.into_inner()).clone();
        // The last segment whose first batch is no later than `t` (times are non-decreasing,
        // so segments are ordered by their first batch's time too).
        let (mut lo, mut hi) = (0usize, segs.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let Some(seg) = segs.get(mid) else { break };
            match self.first_timestamp(seg)? {
                Some(ts) if ts <= t => lo = mid + 1,
                _ => hi = mid,
            }
        }
        let Some(seg) = lo.checked_sub(1).and_then(|i| segs.get(i)) else { return Ok(0) };
        let Some(entry) = seg.index.read().unwrap_or_else(|e| e.into_inner()).floor_time(t) else {
            return Ok(0);
        };
        let mut src = seg.source();
        let mut off = entry.offset;
        let mut end = entry.seq;
        while off < src.len() && end < visible {
            let f =
                segment::frame_at(&mut src, off, self.log_tag).map_err(|e| e.at(&seg.path, off))?;
            match f.kind {
                FrameKind::Seal => break,
                FrameKind::Batch if f.timestamp_us > t => break,
                FrameKind::Batch => end = f.seq + u64::from(f.count),
                FrameKind::Close => {}
            }
            off += f.total_bytes();
        }
        Ok(end.min(visible))
    }

    /// Positions a reader at the batch holding `seq`: returns the frame offset and the seq
    /// of the batch's first record, starting from the sparse index and validating the entry
    /// against the frame it points to.
    fn seek(&self, seg: &Segment, src: &mut Source, seq: u64) -> Result<(u64, Frame)> {
        match self.seek_once(seg, src, seq) {
            Err(Error::Corrupt { file, .. }) if file == seg.index_path() => {
                // The index passed its own checks but points at the wrong frame (stale, or
                // from another segment): it is a cache, so rebuild it and try again.
                match seg.sealed.get() {
                    Some(sealed) => {
                        let ix = self.rebuild_index(seg, sealed)?;
                        *seg.index.write().unwrap_or_else(|e| e.into_inner()) = ix;
                    }
                    None => self.rebuild_active_index(seg)?,
                }
                self.seek_once(seg, src, seq)
            }
            other => other,
        }
    }

    fn seek_once(&self, seg: &Segment, src: &mut Source, seq: u64) -> Result<(u64, Frame)> {
        self.ensure_index(seg)?;
        let entry = seg.index.read().unwrap_or_else(|e| e.into_inner()).floor(seq);
        let start = entry.unwrap_or(IndexEntry {
            seq: seg.base,
            offset: SEGMENT_HEADER_BYTES as u64,
            timestamp_us: 0,
        });
        let mut off = start.offset;
        let mut first = true;
        loop {
            let f = match segment::frame_at(src, off, self.log_tag) {
                Ok(f) => f,
                // An index entry must point at a valid frame: if it does not, the index is
                // what is wrong (the caller rebuilds it and tries again).
                Err(segment::FrameError::Bad(kind)) if first && entry.is_some() => {
                    return Err(Error::corrupt(seg.index_path(), off, kind));
                }
                Err(e) => return Err(e.at(&seg.path, off)),
            };
            if first && entry.is_some() && (f.kind != FrameKind::Batch || f.seq != start.seq) {
                // The entry does not describe the frame it points to: the index is wrong.
                let kind = CorruptionKind::SeqMismatch { expected: start.seq, found: f.seq };
                return Err(Error::corrupt(seg.index_path(), off, kind));
            }
            first = false;
            match f.kind {
                FrameKind::Batch if seq < f.seq + u64::from(f.count) => {
                    if seq < f.seq {
                        let kind = CorruptionKind::SeqMismatch { expected: seq, found: f.seq };
                        return Err(Error::corrupt(&seg.path, off, kind));
                    }
                    return Ok((off, f));
                }
                FrameKind::Seal => {
                    let kind = CorruptionKind::SeqMismatch { expected: seq, found: f.seq };
                    return Err(Error::corrupt(&seg.path, off, kind));
                }
                _ => off += f.total_bytes(),
            }
        }
    }
}

/// Reading position of a cursor inside one segment.
struct Pos {
    seg: Arc<Segment>,
    src: Source,
    /// Offset of the current batch's frame header.
    frame_off: u64,
    frame: Frame,
    /// Offset of the next record inside the batch.
    rec_off: u64,
    /// Copies of the records handed out (see `segment::RecordCopier`).
    copier: segment::RecordCopier,
}

impl Pos {
    /// Checks the zero padding of the current batch, which the format promises (a cursor
    /// leaving a batch is the one reader that has walked all of it).
    fn check_padding(&mut self) -> Result<()> {
        let body_end =
            self.frame_off + FRAME_HEADER_BYTES as u64 + u64::from(self.frame.body_bytes);
        let pad = (self.frame_off + self.frame.total_bytes() - body_end) as usize;
        let padding =
            self.src.get(body_end, pad).map_err(|e| Error::io("read", &self.seg.path, e))?;
        if padding.iter().any(|&b| b != 0) {
            let kind = crate::format::DecodeError::ReservedNonZero;
            return Err(Error::corrupt(&self.seg.path, body_end, kind));
        }
        Ok(())
    }
}

/// An iterator over records from a seq up to the visible end, across segments.
///
/// Each step re-reads the visible end, so a cursor that returned `None` yields more once
/// writers have appended. It yields an error (and then stops) on any record that does not
/// verify. A cursor holds its segment open; it is `Send` but not `Sync`.
pub struct Cursor {
    inner: Arc<Inner>,
    next: u64,
    pos: Option<Pos>,
    done: bool,
}

impl std::fmt::Debug for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cursor").field("next", &self.next).field("done", &self.done).finish()
    }
}

impl Cursor {
    /// The seq the next call to `next` returns.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// The slow path of [`Cursor::next`], kept out of line so that the fast path inlines.
    #[inline(never)]
    fn step(&mut self) -> Result<Option<Record>> {
        let visible = self.inner.visible.load(Ordering::Acquire);
        if self.next >= visible {
            if let Some(p) = self.pos.as_mut()
                && p.frame.seq + u64::from(p.frame.count) <= self.next
            {
                p.check_padding()?;
            }
            return Ok(None);
        }
        // Reads believe any length up to the hard limit: the configured maximum bounds new
        // appends only, so lowering it never hides what was acknowledged.
        let max = RECORD_BODY_BYTES_MAX;
        let need_seek = match &self.pos {
            None => true,
            Some(p) => {
                p.frame.seq + u64::from(p.frame.count) <= self.next && {
                    // Past this batch: stay in the segment if the next frame is here.
                    p.seg.sealed.get().is_some_and(|s| self.next >= s.next_seq)
                }
            }
        };
        if need_seek {
            if let Some(p) = self.pos.as_mut() {
                p.check_padding()?;
            }
            let seq = self.next;
            let seg = self
                .inner
                .segment_for(seq)
                .ok_or(Error::MissingSegments { from: seq, to: seq + 1 })?;
            let mut src = seg.source();
            let (frame_off, frame) = self.inner.seek(&seg, &mut src, seq)?;
            let (rec_off, _) = segment::locate_record(&mut src, frame_off, &frame, seq, max)
                .map_err(|(o, e)| e.at(&seg.path, o))?;
            let rec_off = rec_off - crate::limits::RECORD_HEADER_BYTES as u64;
            self.pos =
                Some(Pos { seg, src, frame_off, frame, rec_off, copier: Default::default() });
        }
        let Some(p) = self.pos.as_mut() else {
            return Ok(None);
        };
        // The active segment grows (and is cut to size when sealed): read up to what is
        // readable now.
        p.src.extend_to(p.seg.readable_end.load(Ordering::Acquire));
        // Move to the next batch in this segment if the current one is finished.
        while p.frame.seq + u64::from(p.frame.count) <= self.next {
            p.check_padding()?;
            let off = p.frame_off + p.frame.total_bytes();
            let f = segment::frame_at(&mut p.src, off, self.inner.log_tag)
                .map_err(|e| e.at(&p.seg.path, off))?;
            if f.kind == FrameKind::Seal || f.seq != self.next {
                let kind = CorruptionKind::SeqMismatch { expected: self.next, found: f.seq };
                return Err(Error::corrupt(&p.seg.path, off, kind));
            }
            p.frame_off = off;
            p.rec_off = off + FRAME_HEADER_BYTES as u64;
            p.frame = if f.kind == FrameKind::Close {
                // A close frame holds no records: step over it.
                Frame { count: 0, ..f }
            } else {
                f
            };
        }
        let body_end = p.frame_off + FRAME_HEADER_BYTES as u64 + u64::from(p.frame.body_bytes);
        let (payload, next) = p
            .copier
            .record(&mut p.src, p.rec_off, body_end, self.next, max)
            .map_err(|(o, e)| e.at(&p.seg.path, o))?;
        p.rec_off = next;
        let rec = Record { seq: self.next, timestamp_us: p.frame.timestamp_us, payload };
        self.next += 1;
        Ok(Some(rec))
    }
}

impl Iterator for Cursor {
    type Item = Result<Record>;

    /// Inlined into every caller (a store scan's loop among them): returned through memory,
    /// the record was read back right after being written, a stall each time.
    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        // The common case: the next record is in the current batch and was verified with the
        // copy it came in (`RecordCopier::verified`), and it is visible.
        if let Some(p) = self.pos.as_mut()
            && self.next < p.frame.seq + u64::from(p.frame.count)
            && self.next < self.inner.visible.load(Ordering::Acquire)
            && let Some((payload, next)) = p.copier.verified(p.rec_off, self.next)
        {
            p.rec_off = next;
            let rec = Record { seq: self.next, timestamp_us: p.frame.timestamp_us, payload };
            self.next += 1;
            return Some(Ok(rec));
        }
        match self.step() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Creates `dir` if it is missing and makes its entry durable (fsync of its parent), so a
/// power loss cannot take away a directory that acknowledged data lives in.
fn create_dir_durably(storage: &dyn Storage, dir: &Path) -> Result<()> {
    if storage.exists(dir).map_err(|e| Error::io("stat", dir, e))? {
        return Ok(());
    }
    storage.create_dir_all(dir).map_err(|e| Error::io("create dir", dir, e))?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        storage.sync_dir(parent).map_err(|e| Error::io("sync dir", parent, e))?;
    }
    Ok(())
}

/// What recovery hands to `Log::open_with`.
struct Recovered {
    log_id: [u8; 16],
    segments: Vec<Arc<Segment>>,
    writer: WriterState,
    report: RecoveryReport,
    /// One past the last seq the frames on disk prove durable (format-spec.md §7.5); a
    /// writer's open makes everything it keeps durable, so there it is `writer.next_seq`.
    proven_seq: u64,
}

/// A segment file found at open, with its header checked.
struct Found {
    base: u64,
    path: PathBuf,
    file: Arc<dyn StorageFile>,
    len: u64,
}

/// What recovery may do to the files (format-spec.md §7.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// A writer holding the lock: cut torn tails, complete seals, remove temp files.
    Write,
    /// A reader: decide the same, act on nothing.
    ReadOnly,
}

/// Recovers the segments directory (format-spec.md §7).
fn recover(
    storage: &dyn Storage,
    seg_dir: &Path,
    opts: &Options,
    writable: bool,
    start: Option<crate::format::LogMarker>,
) -> Result<Recovered> {
    let access = if writable { Access::Write } else { Access::ReadOnly };
    let start_seq = start.map_or(0, |m| m.seq);
    let mut report = RecoveryReport::default();
    let names = storage.read_dir(seg_dir).map_err(|e| Error::io("list", seg_dir, e))?;
    let mut bases = Vec::new();
    let mut leftovers = 0usize;
    for name in names {
        match names::parse_segment_dir_entry(&name) {
            SegmentDirEntry::Segment(base) => bases.push(base),
            SegmentDirEntry::Temp if access == Access::Write => {
                // An interrupted segment create or sidecar replace: it never became a file
                // the store relies on, and a segment temp file never held a record.
                let p = seg_dir.join(&name);
                storage.remove_file(&p).map_err(|e| Error::io("remove", &p, e))?;
                report.temp_files_removed.push(name);
            }
            SegmentDirEntry::Index(_) | SegmentDirEntry::Broken => leftovers += 1,
            _ => {}
        }
    }
    if bases.len() > SEGMENTS_MAX {
        let kind = CorruptionKind::TooManySegments { count: bases.len() as u64 };
        return Err(Error::corrupt(seg_dir, 0, kind));
    }
    if !report.temp_files_removed.is_empty() {
        storage.sync_dir(seg_dir).map_err(|e| Error::io("sync dir", seg_dir, e))?;
    }
    bases.sort_unstable();
    if bases.is_empty() {
        if leftovers > 0 || start_seq > 0 {
            // Index files or moved-aside bytes without any segment: the segments are gone.
            // Starting a fresh store here would silently hide that.
            return Err(Error::corrupt(seg_dir, 0, CorruptionKind::SegmentsGone));
        }
        if access == Access::ReadOnly {
            return Err(Error::NoStore { dir: seg_dir.to_path_buf() });
        }
        return create_fresh(storage, seg_dir, opts, report);
    }
    let mode = if access == Access::Write { OpenMode::ReadWrite } else { OpenMode::Read };

    // Every header first: identity and names, before trusting anything else.
    let mut found = Vec::with_capacity(bases.len());
    let mut log_id = None;
    for &base in &bases {
        let path = seg_dir.join(names::segment_file_name(base));
        let file: Arc<dyn StorageFile> =
            Arc::from(storage.open(&path, mode).map_err(|e| Error::io("open", &path, e))?);
        let header = segment::read_header(file.as_ref(), &path)?;
        let id = *log_id.get_or_insert(header.log_id);
        if header.log_id != id {
            return Err(Error::corrupt(&path, 0, CorruptionKind::ForeignSegment));
        }
        if header.base_seq != base {
            let kind = CorruptionKind::SegmentNameMismatch { header: header.base_seq, name: base };
            return Err(Error::corrupt(&path, 0, kind));
        }
        let len = file.len().map_err(|e| Error::io("stat", &path, e))?;
        if len > SEGMENT_BYTES_MAX {
            let kind = crate::format::DecodeError::OutOfBounds {
                field: "segment file length",
                value: len,
                max: SEGMENT_BYTES_MAX,
            };
            return Err(Error::corrupt(&path, 0, kind));
        }
        found.push(Found { base, path, file, len });
    }
    let log_id = log_id.unwrap_or_default();
    let tag = log_tag(&log_id);
    if let Some(m) = start
        && m.log_id != log_id
    {
        let path = seg_dir.parent().unwrap_or(seg_dir).join(names::LOG_START_FILE);
        return Err(Error::corrupt(path, 0, CorruptionKind::ForeignSegment));
    }
    // Segments wholly below the log start are what an interrupted purge had still to remove
    // (format-spec.md §16.2); the first one kept must start exactly there.
    let below = found.iter().take_while(|f| f.base < start_seq).count();
    match found.get(below) {
        Some(first) if first.base == start_seq => {}
        Some(first) => return Err(Error::MissingSegments { from: start_seq, to: first.base }),
        None => return Err(Error::corrupt(seg_dir, 0, CorruptionKind::SegmentsGone)),
    }
    for f in found.drain(..below) {
        if access == Access::Write {
            let ix = seg_dir.join(names::index_file_name(f.base));
            if storage.exists(&ix).map_err(|e| Error::io("stat", &ix, e))? {
                storage.remove_file(&ix).map_err(|e| Error::io("remove", &ix, e))?;
            }
            storage.remove_file(&f.path).map_err(|e| Error::io("remove", &f.path, e))?;
        }
    }
    if below > 0 && access == Access::Write {
        storage.sync_dir(seg_dir).map_err(|e| Error::io("sync dir", seg_dir, e))?;
    }

    let mut segments = Vec::with_capacity(found.len());
    let mut all_sealed_trusted = true;
    // Frame times never go back: the next frame is no earlier than the last seal's.
    let mut timestamp_floor = 0;
    for pair in found.windows(2) {
        let [f, next] = pair else { continue };
        let (seal_at, next_seq, trusted, last_ts) =
            recover_sealed(storage, f, next.base, tag, access, &mut report)?;
        timestamp_floor = timestamp_floor.max(last_ts);
        // Without a writer to complete it, a missing seal stays missing.
        let missing = access == Access::ReadOnly && report.seals_completed.last() == Some(&f.base);
        let data_end = if missing { seal_at } else { seal_at + FRAME_HEADER_BYTES as u64 };
        all_sealed_trusted &= trusted;
        if next_seq != next.base {
            if next_seq < next.base {
                return Err(Error::MissingSegments { from: next_seq, to: next.base });
            }
            let kind = CorruptionKind::SeqMismatch { expected: next_seq, found: next.base };
            return Err(Error::corrupt(&next.path, 0, kind));
        }
        let seg = Segment::new(f.base, f.path.clone(), Arc::clone(&f.file));
        let _ = seg.sealed.set(Sealed { next_seq, seal_at, data_end, map: OnceLock::new() });
        segments.push(Arc::new(seg));
    }
    let last = found.last().ok_or(Error::NoStore { dir: seg_dir.to_path_buf() })?;
    let (writer, proven_seq) =
        recover_active(storage, last, &log_id, opts, access, timestamp_floor, &mut report)?;
    report.clean &= all_sealed_trusted;
    segments.push(Arc::clone(&writer.active));
    report.segments = segments.len();
    report.next_seq = writer.next_seq;
    let proven_seq = if access == Access::Write { writer.next_seq } else { proven_seq };
    Ok(Recovered { log_id, segments, writer, report, proven_seq })
}

fn create_fresh(
    storage: &dyn Storage,
    seg_dir: &Path,
    opts: &Options,
    mut report: RecoveryReport,
) -> Result<Recovered> {
    let log_id = *uuid::Uuid::new_v4().as_bytes();
    let (path, file) =
        segment::create(storage, seg_dir, log_id, 0, opts.segment_bytes, opts.preallocate)?;
    let seg = Arc::new(Segment::new(0, path, file));
    let _ = seg.index_loaded.set(());
    report.clean = true;
    report.segments = 1;
    let writer = WriterState::new(Arc::clone(&seg), SEGMENT_HEADER_BYTES as u64, 0, 0);
    Ok(Recovered { log_id, segments: vec![seg], writer, report, proven_seq: 0 })
}

/// A non-last segment (format-spec.md §7.3, table S): trusted through its seal frame at the
/// end of the file, else scanned. A segment whose seal is missing because a roll was
/// interrupted has its seal completed. Returns (seal offset, next seq, trusted without scan).
fn recover_sealed(
    storage: &dyn Storage,
    f: &Found,
    next_base: u64,
    tag: u64,
    access: Access,
    report: &mut RecoveryReport,
) -> Result<(u64, u64, bool, u64)> {
    let mut src = Source::file(Arc::clone(&f.file), f.len);
    if let Some(at) = f.len.checked_sub(FRAME_HEADER_BYTES as u64)
        && at >= SEGMENT_HEADER_BYTES as u64
        && let Ok(frame) = segment::frame_at(&mut src, at, tag)
        && frame.kind == FrameKind::Seal
        && frame.seq >= f.base
        && u64::from(frame.count) == frame.seq - f.base
    {
        return Ok((at, frame.seq, true, frame.timestamp_us));
    }
    // No trustworthy seal at the end of the file: walk the records.
    let scan = scan_from_start(&mut src, f, tag)?;
    report.scanned_bytes += scan.end_offset - SEGMENT_HEADER_BYTES as u64;
    let bad = |kind: CorruptionKind, at: u64| Err(Error::corrupt(&f.path, at, kind));
    match &scan.stop {
        Stop::Sealed { at } => {
            // A seal with bytes after it (a crash between writing the seal and cutting the
            // preallocated space): whatever follows the seal is not part of the log.
            let after = at + FRAME_HEADER_BYTES as u64;
            let survey = segment::survey_tail(&mut src, after, tag)
                .map_err(|e| Error::io("read", &f.path, e))?;
            if access == Access::Write {
                cut_tail(storage, f, after, &survey, report)?;
            }
            Ok((*at, scan.next_seq, false, scan.last_timestamp_us))
        }
        Stop::EndOfData | Stop::Invalid { .. } => {
            let end = scan.end_offset;
            if let Stop::Invalid { at, kind } = &scan.stop {
                let survey = segment::survey_tail(&mut src, *at, tag)
                    .map_err(|e| Error::io("read", &f.path, e))?;
                if let Some(valid_at) = survey.durable_proof {
                    let kind = CorruptionKind::MidLog { valid_at, cause: Box::new(kind.clone()) };
                    return bad(kind, *at);
                }
                if scan.next_seq < next_base {
                    // Records the next segment's base says exist are missing here.
                    return bad(kind.clone(), *at);
                }
            }
            if scan.next_seq < next_base {
                return bad(
                    CorruptionKind::IncompleteSegment { end: scan.next_seq, next: next_base },
                    end,
                );
            }
            if scan.next_seq > next_base {
                return bad(
                    CorruptionKind::SeqMismatch { expected: scan.next_seq, found: next_base },
                    end,
                );
            }
            // Interrupted roll: every record is here; only the seal is missing or torn.
            report.seals_completed.push(f.base);
            if access == Access::ReadOnly {
                return Ok((end, scan.next_seq, false, scan.last_timestamp_us));
            }
            let survey = segment::survey_tail(&mut src, end, tag)
                .map_err(|e| Error::io("read", &f.path, e))?;
            cut_tail(storage, f, end, &survey, report)?;
            let at = crate::format::Placement {
                seq: scan.next_seq,
                file_offset: end,
                synced_through: end,
                log_tag: tag,
                timestamp_us: scan.last_timestamp_us,
            };
            let seal = crate::format::encode_marker_frame(
                FrameKind::Seal,
                (scan.next_seq - f.base) as u32,
                at,
            );
            f.file.write_all_at(&seal, end).map_err(|e| Error::io("write", &f.path, e))?;
            f.file.sync_data().map_err(|e| Error::io("sync", &f.path, e))?;
            Ok((end, scan.next_seq, false, scan.last_timestamp_us))
        }
    }
}

fn scan_params(f: &Found, tag: u64, opts_interval: u64) -> segment::ScanParams {
    segment::ScanParams {
        base: f.base,
        log_tag: tag,
        max_payload: RECORD_BODY_BYTES_MAX,
        interval: opts_interval,
    }
}

fn scan_from_start(src: &mut Source, f: &Found, tag: u64) -> Result<Scan> {
    // Sealed segments get their index from their own file (or a rebuild on first read);
    // this scan only decides where the records end.
    let params = scan_params(f, tag, u64::MAX);
    segment::scan(src, params, SEGMENT_HEADER_BYTES as u64, f.base, SparseIndex::default())
        .map_err(|e| Error::io("read", &f.path, e))
}

/// Copies the bytes from `at` up to the last non-zero word aside (if any), then truncates
/// the file to `at` and syncs it. Cut bytes were never durable parts of the log
/// (format-spec.md §7), but they are a user's bytes all the same: they are moved aside,
/// never just dropped. Copies in bounded chunks.
fn cut_tail(
    storage: &dyn Storage,
    f: &Found,
    at: u64,
    survey: &segment::TailSurvey,
    report: &mut RecoveryReport,
) -> Result<Option<PathBuf>> {
    let mut moved = None;
    if survey.nonzero_end > at {
        let target =
            segment::move_aside(storage, &f.path, f.base, f.file.as_ref(), at, survey.nonzero_end)
                .map_err(|e| Error::io("move aside", &f.path, e))?;
        report.moved_aside.push(target.clone());
        moved = Some(target);
    }
    f.file.set_len(at).map_err(|e| Error::io("truncate", &f.path, e))?;
    f.file.sync_data().map_err(|e| Error::io("sync", &f.path, e))?;
    Ok(moved)
}

/// The last segment (format-spec.md §7.3, table L): trusted up to the close frame its index
/// file points to, then scanned to the end; a torn tail is cut and reported, damage to
/// durable data is an error. Returns the writer state and one past the last seq the frames
/// walked prove durable (`Scan::proven_seq`).
fn recover_active(
    storage: &dyn Storage,
    f: &Found,
    log_id: &[u8; 16],
    opts: &Options,
    access: Access,
    timestamp_floor: u64,
    report: &mut RecoveryReport,
) -> Result<(WriterState, u64)> {
    let tag = log_tag(log_id);
    let mut src = Source::file(Arc::clone(&f.file), f.len);
    let seg = Arc::new(Segment::new(f.base, f.path.clone(), Arc::clone(&f.file)));
    let _ = seg.index_loaded.set(());
    // The last trusted point: the close frame the index file was written at.
    let mut start = (SEGMENT_HEADER_BYTES as u64, f.base, SparseIndex::default());
    let mut from_index = false;
    // An index file is only written once its close frame is durable: the records it covers
    // must still be there, whatever else happened to the segment.
    let mut promised = None;
    if let Ok((h, ix)) = index::load(storage, &seg.index_path(), log_id, f.base, u64::MAX) {
        promised = Some(h.end_seq);
        let close_ok = segment::frame_at(&mut src, h.end_offset, tag).is_ok_and(|c| {
            c.kind == FrameKind::Close
                && c.seq == h.end_seq
                && u64::from(c.count) == h.end_seq - f.base
        });
        if close_ok {
            start = (h.end_offset, h.end_seq, ix);
            from_index = true;
        }
    }
    let (start_off, start_seq, ix) = start;
    let params = scan_params(f, tag, opts.index_interval_bytes);
    let scan = segment::scan(&mut src, params, start_off, start_seq, ix)
        .map_err(|e| Error::io("read", &f.path, e))?;
    if let Some(end_seq) = promised
        && scan.next_seq < end_seq
    {
        let kind = CorruptionKind::StaleSegment { promised: end_seq, found: scan.next_seq };
        return Err(Error::corrupt(&f.path, scan.end_offset, kind));
    }
    // The close frame the index points to is checked, not scanned.
    let skipped = if from_index { FRAME_HEADER_BYTES as u64 } else { 0 };
    report.scanned_bytes += scan.end_offset.saturating_sub(start_off + skipped);
    let ends_with_close = f.len >= (SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES) as u64
        && segment::frame_at(&mut src, f.len - FRAME_HEADER_BYTES as u64, tag)
            .is_ok_and(|c| c.kind == FrameKind::Close);
    report.active_index_rebuilt = !from_index;
    report.clean = from_index
        && ends_with_close
        && matches!(scan.stop, Stop::EndOfData)
        && scan.end_offset == start_off + skipped;
    match &scan.stop {
        Stop::EndOfData => {}
        Stop::Sealed { at } => {
            let kind = CorruptionKind::SealedTail { next_seq: scan.next_seq };
            return Err(Error::corrupt(&f.path, *at, kind));
        }
        Stop::Invalid { at, kind } => {
            let survey = segment::survey_tail(&mut src, *at, tag)
                .map_err(|e| Error::io("read", &f.path, e))?;
            if let Some(valid_at) = survey.durable_proof {
                let kind = CorruptionKind::MidLog { valid_at, cause: Box::new(kind.clone()) };
                return Err(Error::corrupt(&f.path, *at, kind));
            }
            let moved_to = match access {
                Access::Write => cut_tail(storage, f, *at, &survey, report)?,
                Access::ReadOnly => None,
            };
            if survey.nonzero_end > *at {
                report.truncated = Some(TruncatedTail {
                    segment: f.path.clone(),
                    offset: *at,
                    bytes: survey.nonzero_end - at,
                    events: survey.events,
                    cause: kind.clone(),
                    moved_to,
                });
            }
        }
    }
    if access == Access::Write {
        if opts.preallocate {
            f.file
                .preallocate(opts.segment_bytes)
                .map_err(|e| Error::io("preallocate", &f.path, e))?;
        }
        if !report.clean {
            // What was read back may have been in the page cache only (a process crash under
            // a non-sync policy): make it durable before calling it durable. After a clean
            // close it was synced already.
            f.file.sync_data().map_err(|e| Error::io("sync", &f.path, e))?;
        }
    }
    *seg.index.write().unwrap_or_else(|e| e.into_inner()) = scan.index;
    seg.readable_end.store(scan.end_offset, Ordering::Release);
    let last_timestamp_us = scan.last_timestamp_us.max(timestamp_floor);
    let mut writer = WriterState::new(seg, scan.end_offset, scan.next_seq, last_timestamp_us);
    writer.tail_is_close = report.clean;
    Ok((writer, scan.proven_seq))
}
