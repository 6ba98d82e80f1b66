//! The event store proper: streams of events with dense versions, optimistic concurrency,
//! idempotent appends, and reads by stream, category and global order (ARCHITECTURE.md layer
//! `streams`).
//!
//! Every event is one log record whose payload is an event body (format-spec.md §11); one
//! `append` call is one log batch, so its events land together or not at all. The expected-
//! version and idempotency checks run inside the group-commit leader, in log order, right
//! before the batch is encoded: they are race-free without a lock held across the fsync, and
//! appends to different streams share group commits.

mod ids;
mod index;
#[cfg(feature = "serde")]
mod typed;

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use byteorder::{ByteOrder, LE};
use bytes::{Buf, Bytes};
use smol_str::SmolStr;
use uuid::Uuid;

pub use index::category_of;
use index::{CheckpointSource, StreamIndex, Unloaded};
#[cfg(feature = "serde")]
pub use typed::{CAUSATION_ID, CORRELATION_ID};

use crate::error::{Error, Result};
use crate::format::{EVENT_TYPE_NOT_UTF8, EventBody, STREAM_ID_NOT_UTF8};
use crate::fs::{StdFs, Storage};
use crate::limits::{BATCH_EVENTS_MAX, EVENT_TYPE_BYTES_MAX, STREAM_ID_BYTES_MAX};
use crate::log::{Cursor, Log, Record};
use crate::options::Options;

/// What the caller expects a stream's current version to be when appending.
///
/// A stream's version is the version of its last event; versions are dense from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must have no events.
    NoStream,
    /// The stream must have at least one event.
    StreamExists,
    /// The stream's last event must have exactly this version.
    Exact(u64),
}

/// An event to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Its type name: UTF-8, 1..=`EVENT_TYPE_BYTES_MAX` bytes.
    pub event_type: String,
    /// Its id; `None` gets a fresh UUID v7. Give one to make retries idempotent.
    pub event_id: Option<Uuid>,
    /// Metadata; by convention a JSON object whose `$correlationId` and `$causationId` keys
    /// carry correlation and causation ids (as EventStoreDB does).
    pub metadata: Bytes,
    /// The event's data.
    pub data: Bytes,
}

impl NewEvent {
    /// An event of `event_type` with `data`, no metadata and a fresh id.
    pub fn new(event_type: impl Into<String>, data: impl Into<Bytes>) -> Self {
        NewEvent {
            event_type: event_type.into(),
            event_id: None,
            metadata: Bytes::new(),
            data: data.into(),
        }
    }

    /// Sets the event id.
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.event_id = Some(id);
        self
    }

    /// Sets the metadata.
    pub fn with_metadata(mut self, metadata: impl Into<Bytes>) -> Self {
        self.metadata = metadata.into();
        self
    }
}

/// An event read back from the store.
///
/// Reading one copies nothing out of the record the log read (and checked against its CRC):
/// `metadata` and `data` are slices of its payload, and `stream_id` and `event_type` are
/// [`SmolStr`]s, which hold up to 23 bytes inline (no allocation; a longer one is shared
/// behind an `Arc`, and a scan reuses the previous event's when it is the same). A
/// `SmolStr` dereferences to `&str` (`e.stream_id.as_str()`, `&*e.stream_id`), compares
/// with strings both ways (`e.stream_id == "order-1"`) and converts into a `String`
/// (`e.stream_id.to_string()`, `String::from(e.stream_id)`). Holding `metadata` or `data`
/// keeps the buffer the record was read into alive (for a scan, the chunk of records it
/// was copied with): copy out (`e.data.to_vec()`) what is kept for long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// Its stream.
    pub stream_id: SmolStr,
    /// Its type name.
    pub event_type: SmolStr,
    /// Its id.
    pub event_id: Uuid,
    /// Its version in its stream (dense from 0).
    pub version: u64,
    /// Its global sequence number (dense from 0 across the store).
    pub seq: u64,
    /// When it was appended, microseconds since the Unix epoch; set by the store,
    /// non-decreasing across the log.
    pub timestamp_us: u64,
    /// Its metadata.
    pub metadata: Bytes,
    /// Its data.
    pub data: Bytes,
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// Seq of the first event (the events have seqs `first_seq ..= last_seq`).
    pub first_seq: u64,
    /// Version of the first event in its stream.
    pub first_version: u64,
    /// Events in the append.
    pub count: u32,
}

impl AppendResult {
    /// Seq of the last event.
    pub fn last_seq(&self) -> u64 {
        self.first_seq + u64::from(self.count) - 1
    }

    /// The stream's version after the append: pass it as `Exact` to append next.
    pub fn next_expected_version(&self) -> u64 {
        self.first_version + u64::from(self.count) - 1
    }
}

/// Direction of a stream read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Increasing versions.
    Forward,
    /// Decreasing versions.
    Backward,
}

/// Options of a [`Store`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Options of the underlying log.
    pub log: Options,
    /// How many of the most recent event ids are remembered to make retried appends
    /// idempotent (about 90 bytes each). Default 100 000. A retry of an append whose ids
    /// have left this window is written again (with `ExpectedVersion::Exact` it then fails
    /// its version check instead, which is why retries should use `Exact`).
    pub recent_event_ids: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { log: Options::default(), recent_event_ids: 100_000 }
    }
}

/// Size of the stream index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexStats {
    /// Streams.
    pub streams: usize,
    /// Events.
    pub events: u64,
    /// Approximate heap bytes held by the index, the recent-id window included.
    pub heap_bytes: u64,
}

/// What opening a store found about its stream-index checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointState {
    /// Loaded: only the log after `covered_seq` was replayed.
    Loaded {
        /// Events below this seq came from the checkpoint.
        covered_seq: u64,
    },
    /// There was none: the whole log was replayed.
    Missing,
    /// It was unusable (damaged, foreign, or ahead of the log) and was ignored: the whole
    /// log was replayed, and the next checkpoint replaces it.
    Rejected {
        /// Why.
        reason: String,
    },
}

/// What opening a store did to rebuild its stream index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreRecovery {
    /// The checkpoint's fate.
    pub checkpoint: CheckpointState,
    /// Events read from the log to complete the index.
    pub replayed_events: u64,
}

/// An event store over one directory.
///
/// `Store` is a cheap handle: clone it to share it between threads; every method is
/// thread-safe. The stream index is checkpointed to `streams.ckpt` in the background after
/// each segment roll and at close, so an open replays only the log after the checkpoint.
#[derive(Debug, Clone)]
pub struct Store {
    shared: Arc<Shared>,
    log: Log,
    index: Arc<RwLock<StreamIndex>>,
}

#[derive(Debug)]
struct Shared {
    log: Log,
    index: Arc<RwLock<StreamIndex>>,
    storage: Arc<dyn Storage>,
    checkpoint_path: std::path::PathBuf,
    recovery: StoreRecovery,
    /// The index's id window is still unread in the checkpoint: read it before appending.
    recent_unread: std::sync::atomic::AtomicBool,
    /// Segment rolls seen when the last checkpoint was requested.
    rolls_checkpointed: std::sync::atomic::AtomicU64,
    wake: crossbeam_channel::Sender<()>,
    closed: std::sync::atomic::AtomicBool,
    /// Serialises checkpoint writers (the background thread and `close`), which share one
    /// temp file name.
    writing: Mutex<()>,
    /// The background checkpointer, joined by `close` so that no thread holds the store (and
    /// with it the log's lock) once `close` returns.
    checkpointer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Shared {
    /// Writes the index as of the visible end, atomically. Fails with `Closed` once the store
    /// is closed: a background request that comes late must not write after `close` returned
    /// and released the writer lock. `then_close` marks the store closed in the same turn, so
    /// that no background write can follow the closing one.
    fn write_checkpoint(&self, then_close: bool) -> Result<()> {
        let _one_at_a_time = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        // Only checkpoint writers, which take turns here, set `closed`.
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if then_close {
            self.closed.store(true, std::sync::atomic::Ordering::Release);
        }
        // Only what is durable: under `Durability::None` the visible end runs ahead of it.
        let covered = self.log.durable_head().map_or(0, |h| h + 1).min(self.log.visible_end());
        let bytes = loop {
            let need = {
                let ix = self.index.read().unwrap_or_else(|e| e.into_inner());
                if ix.unchanged_since_load(covered) {
                    // The file on disk says exactly this already.
                    return Ok(());
                }
                match ix.encode_checkpoint(self.log.log_id(), covered) {
                    Ok(bytes) => break bytes,
                    Err(need) => need,
                }
            };
            self.load(need)?;
        };
        crate::fs::write_atomic(self.storage.as_ref(), &self.checkpoint_path, &bytes)
            .map_err(|e| Error::io("write checkpoint", &self.checkpoint_path, e))
    }
}

impl Shared {
    /// Reads what `need` names from the loaded checkpoint into the index: the streams' seq
    /// blocks and the id window. A block or window that fails its check is rebuilt from the
    /// log instead (format-spec.md §12.2, use at open); nothing unchecked is installed.
    fn load(&self, need: Unloaded) -> Result<()> {
        if need.recent {
            load_recent(&self.index, &self.log)?;
            self.recent_unread.store(false, std::sync::atomic::Ordering::Release);
        }
        load_streams(&self.index, &self.log, need.streams)
    }

    /// Reads the id window from the checkpoint if it is still unread.
    fn ensure_recent(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        if self.recent_unread.load(Ordering::Acquire) {
            load_recent(&self.index, &self.log)?;
            self.recent_unread.store(false, Ordering::Release);
        }
        Ok(())
    }
}

/// Reads the seq blocks of `streams` (those still unread) and installs them. The file is
/// read without the index lock; a block that fails its check is rebuilt by scanning the
/// log below the checkpoint's covered seq for the stream's events (`CheckpointMismatch` if
/// the log contradicts the directory's count for a stream appended to since the open).
fn load_streams(index: &RwLock<StreamIndex>, log: &Log, streams: Vec<Arc<str>>) -> Result<()> {
    let (source, jobs) = {
        let ix = index.read().unwrap_or_else(|e| e.into_inner());
        let jobs: Vec<(Arc<str>, u32)> =
            streams.into_iter().filter_map(|s| ix.lazy_slot(&s).map(|slot| (s, slot))).collect();
        (ix.source(), jobs)
    };
    let Some(source) = source else { return Ok(()) };
    let mut loaded = Vec::with_capacity(jobs.len());
    let mut failed = foldhash::HashMap::default();
    for (stream, slot) in jobs {
        match source.read_block(slot) {
            Ok(seqs) => loaded.push((stream, seqs)),
            Err(_) => {
                failed.insert(stream, Vec::new());
            }
        }
    }
    let repaired = !failed.is_empty();
    if repaired {
        scan_log_for(log, source.covered_seq(), &mut failed)?;
        loaded.extend(failed);
    }
    let mut ix = index.write().unwrap_or_else(|e| e.into_inner());
    if repaired {
        ix.mark_repaired();
    }
    for (stream, seqs) in loaded {
        ix.install(&stream, seqs)
            .map_err(|reason| Error::CheckpointMismatch { stream: stream.to_string(), reason })?;
    }
    Ok(())
}

/// Adds to `streams` the seqs below `covered` of each stream it names, from the log.
fn scan_log_for(
    log: &Log,
    covered: u64,
    streams: &mut foldhash::HashMap<Arc<str>, Vec<u64>>,
) -> Result<()> {
    for rec in log.cursor(0) {
        let rec = rec?;
        if rec.seq >= covered {
            break;
        }
        let body = decode(&rec)?;
        if let Some(seqs) = streams.get_mut(body.stream_id) {
            seqs.push(rec.seq);
        }
    }
    Ok(())
}

/// Reads the id window from the checkpoint into the index if it is still unread; if it
/// fails its check, rebuilds it from the log's last events below the covered seq.
fn load_recent(index: &RwLock<StreamIndex>, log: &Log) -> Result<()> {
    let source = {
        let ix = index.read().unwrap_or_else(|e| e.into_inner());
        if !ix.recent_unread() {
            return Ok(());
        }
        ix.source()
    };
    let Some(source) = source else { return Ok(()) };
    match source.read_recent() {
        Ok(ids) => index.write().unwrap_or_else(|e| e.into_inner()).install_recent(ids),
        Err(_) => {
            let covered = source.covered_seq();
            let from = covered.saturating_sub(source.recent_count());
            let mut window = Vec::new();
            for rec in log.cursor(from) {
                let rec = rec?;
                if rec.seq >= covered {
                    break;
                }
                let body = decode(&rec)?;
                window.push((body.event_id, body.stream_id.to_owned(), rec.seq));
            }
            index.write().unwrap_or_else(|e| e.into_inner()).install_recent_from_log(window);
        }
    }
    Ok(())
}

impl Drop for Shared {
    fn drop(&mut self) {
        if !self.log.is_read_only() {
            let _ = self.write_checkpoint(false);
        }
    }
}

/// A checkpoint that passed its checks at open.
enum LoadedCheckpoint {
    /// Version 1, read whole.
    Whole(crate::format::StreamCheckpoint),
    /// Version 2: its directory, the rest left in the file.
    Directory(Arc<CheckpointSource>),
}

impl LoadedCheckpoint {
    fn covered_seq(&self) -> u64 {
        match self {
            LoadedCheckpoint::Whole(ck) => ck.covered_seq,
            LoadedCheckpoint::Directory(src) => src.covered_seq(),
        }
    }
}

/// Loads and validates the checkpoint for `log`: a version 1 file whole, a version 2 file's
/// header and directory only (format-spec.md §12).
fn load_checkpoint(
    storage: &dyn Storage,
    path: &Path,
    log: &Log,
) -> std::result::Result<LoadedCheckpoint, CheckpointState> {
    use crate::format::{CHECKPOINT_VERSION_1, CheckpointDirectory, CheckpointHeader};
    use crate::limits::CHECKPOINT_HEADER_BYTES;
    let rejected = |reason: String| CheckpointState::Rejected { reason };
    let file = match storage.open(path, crate::fs::OpenMode::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(CheckpointState::Missing),
        Err(e) => return Err(rejected(e.to_string())),
    };
    let len = file.len().map_err(|e| rejected(e.to_string()))?;
    if len > crate::limits::CHECKPOINT_BYTES_MAX {
        return Err(rejected(format!("{len} bytes is over the limit")));
    }
    let mut head = [0u8; CHECKPOINT_HEADER_BYTES];
    let head_len = CHECKPOINT_HEADER_BYTES.min(len as usize);
    file.read_exact_at(&mut head[..head_len], 0).map_err(|e| rejected(e.to_string()))?;
    let header =
        CheckpointHeader::decode(&head[..head_len]).map_err(|e| rejected(e.to_string()))?;
    // Against the store first: a foreign or ahead-of-log file is rejected as such.
    if header.log_id != log.log_id() {
        return Err(rejected("it belongs to another store".into()));
    }
    if header.covered_seq > log.visible_end() {
        return Err(rejected(format!(
            "it covers seq {} but the log ends at {}",
            header.covered_seq,
            log.visible_end()
        )));
    }
    let loaded = if header.version == CHECKPOINT_VERSION_1 {
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, 0).map_err(|e| rejected(e.to_string()))?;
        let ck =
            crate::format::StreamCheckpoint::decode(&buf).map_err(|e| rejected(e.to_string()))?;
        LoadedCheckpoint::Whole(ck)
    } else {
        // The directory's length is checked against the file's before it is allocated.
        let dir_bytes = header.body_bytes;
        if dir_bytes > len - CHECKPOINT_HEADER_BYTES as u64 {
            return Err(rejected("checkpoint directory past the file's end".into()));
        }
        let mut dir = vec![0u8; dir_bytes as usize];
        file.read_exact_at(&mut dir, CHECKPOINT_HEADER_BYTES as u64)
            .map_err(|e| rejected(e.to_string()))?;
        let dir = CheckpointDirectory::decode(&header, &dir, len, log.visible_end())
            .map_err(|e| rejected(e.to_string()))?;
        LoadedCheckpoint::Directory(Arc::new(CheckpointSource::new(file, dir)))
    };
    Ok(loaded)
}

/// Checks a stream id given as bytes: UTF-8, 1..=`STREAM_ID_BYTES_MAX` bytes.
pub fn parse_stream_id(bytes: &[u8]) -> Result<&str> {
    let s = std::str::from_utf8(bytes)
        .map_err(|_| Error::InvalidStreamId { reason: "not UTF-8".into() })?;
    check_stream_id(s)?;
    Ok(s)
}

fn check_stream_id(s: &str) -> Result<()> {
    if s.is_empty() {
        return Err(Error::InvalidStreamId { reason: "empty".into() });
    }
    if s.len() > STREAM_ID_BYTES_MAX {
        return Err(Error::InvalidStreamId {
            reason: format!("{} bytes, the maximum is {STREAM_ID_BYTES_MAX}", s.len()),
        });
    }
    Ok(())
}

impl Store {
    /// Opens (creating if needed) the store in `dir` on the real file system.
    pub fn open(dir: impl AsRef<Path>, opts: StoreOptions) -> Result<Store> {
        Store::open_with(Arc::new(StdFs), dir, opts)
    }

    /// Opens the store in `dir` on the given storage, recovering the log and rebuilding the
    /// stream index from it.
    pub fn open_with(
        storage: Arc<dyn Storage>,
        dir: impl AsRef<Path>,
        opts: StoreOptions,
    ) -> Result<Store> {
        let log = Log::open_with(Arc::clone(&storage), dir, opts.log.clone())?;
        let checkpoint_path = log.dir().join(crate::names::STREAM_CHECKPOINT_FILE);
        let (index, from, checkpoint) =
            match load_checkpoint(storage.as_ref(), &checkpoint_path, &log) {
                Ok(ck) => {
                    let covered_seq = ck.covered_seq();
                    let ix = match ck {
                        LoadedCheckpoint::Whole(ck) => {
                            StreamIndex::from_checkpoint(ck, opts.recent_event_ids)
                        }
                        LoadedCheckpoint::Directory(src) => {
                            StreamIndex::from_directory(src, opts.recent_event_ids)
                        }
                    };
                    (ix, covered_seq, CheckpointState::Loaded { covered_seq })
                }
                Err(state) => (StreamIndex::new(opts.recent_event_ids), 0, state),
            };
        let index = Arc::new(RwLock::new(index));
        if log.visible_end() > from {
            // Replay appends to the id window: read it first.
            load_recent(&index, &log)?;
        }
        let mut replayed_events = 0;
        {
            let mut ix = index.write().unwrap_or_else(|e| e.into_inner());
            for rec in log.cursor(from) {
                let rec = rec?;
                let body = decode(&rec)?;
                ix.push(body.stream_id, rec.seq, body.event_id);
                replayed_events += 1;
            }
        }
        let recent_unread = index.read().unwrap_or_else(|e| e.into_inner()).recent_unread();
        let (wake, woken) = crossbeam_channel::bounded(1);
        let shared = Arc::new(Shared {
            log: log.clone(),
            index: Arc::clone(&index),
            storage,
            checkpoint_path,
            recovery: StoreRecovery { checkpoint, replayed_events },
            recent_unread: std::sync::atomic::AtomicBool::new(recent_unread),
            rolls_checkpointed: std::sync::atomic::AtomicU64::new(log.stats().rolls),
            wake,
            closed: std::sync::atomic::AtomicBool::new(false),
            writing: Mutex::new(()),
            checkpointer: Mutex::new(None),
        });
        let thread = spawn_checkpointer(Arc::downgrade(&shared), woken);
        *shared.checkpointer.lock().unwrap_or_else(|e| e.into_inner()) = thread;
        Ok(Store { shared, log, index })
    }

    /// What opening the store did to rebuild its stream index.
    pub fn recovery(&self) -> &StoreRecovery {
        &self.shared.recovery
    }

    /// Writes the stream-index checkpoint now (it is also written after segment rolls and
    /// at close). Fails with [`Error::Closed`] once the store is closed.
    pub fn checkpoint(&self) -> Result<()> {
        self.shared.write_checkpoint(false)
    }

    /// Asks the background checkpointer for a checkpoint if a segment was sealed since the
    /// last one.
    fn after_append(&self) {
        use std::sync::atomic::Ordering;
        let rolls = self.log.stats().rolls;
        if self.shared.rolls_checkpointed.fetch_max(rolls, Ordering::AcqRel) < rolls {
            let _ = self.shared.wake.try_send(());
        }
    }

    /// The underlying log.
    pub fn log(&self) -> &Log {
        &self.log
    }

    fn read_index(&self) -> RwLockReadGuard<'_, StreamIndex> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the lookup `f` on the index, first reading from the checkpoint whatever it
    /// says it needs (streams' seqs not read yet), as often as it says so.
    fn with_index<T>(
        &self,
        mut f: impl FnMut(&StreamIndex) -> std::result::Result<T, Unloaded>,
    ) -> Result<T> {
        loop {
            let need = match f(&self.read_index()) {
                Ok(t) => return Ok(t),
                Err(need) => need,
            };
            self.shared.load(need)?;
        }
    }

    /// Appends `events` to `stream` as one atomic batch, if the stream's version is what
    /// `expected` says; otherwise writes nothing and fails with
    /// [`Error::WrongExpectedVersion`].
    ///
    /// Idempotent: if the events' ids were appended to this stream before, at the position
    /// `expected` implies (any position for `Any`/`StreamExists`), and are still within the
    /// recent-id window, nothing is written and the original result is returned once it is
    /// durable. A partial match fails with `WrongExpectedVersion`. Returns when the events
    /// are as durable as the log's policy promises.
    pub fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendResult> {
        check_stream_id(stream)?;
        if events.is_empty() {
            return Err(Error::EmptyBatch);
        }
        if events.len() > BATCH_EVENTS_MAX {
            return Err(Error::TooManyEvents { count: events.len(), max: BATCH_EVENTS_MAX });
        }
        // Fresh ids for the events without one, the clock read once for all (see `ids`).
        let mut fresh = vec![[0u8; 16]; events.iter().filter(|e| e.event_id.is_none()).count()];
        ids::fill_v7(&mut fresh);
        let mut fresh = fresh.into_iter();
        let ids: Vec<[u8; 16]> = events
            .iter()
            .map(|e| e.event_id.map(|u| *u.as_bytes()).or_else(|| fresh.next()).unwrap_or_default())
            .collect();
        let mut lens = Vec::with_capacity(events.len());
        for (e, &id) in events.iter().zip(&ids) {
            if e.event_type.is_empty() || e.event_type.len() > EVENT_TYPE_BYTES_MAX {
                return Err(Error::InvalidEventType {
                    reason: format!(
                        "{} bytes, allowed 1..={EVENT_TYPE_BYTES_MAX}",
                        e.event_type.len()
                    ),
                });
            }
            let len = event_body(stream, e, id).encoded_len();
            if len > self.log.max_record_bytes() as usize {
                return Err(Error::RecordTooLarge {
                    len: len as u64,
                    max: self.log.max_record_bytes().into(),
                });
            }
            lens.push(len);
        }
        // The bodies are encoded straight into the batch frame.
        let batch = self.log.prepare_with(&lens, |i, out| {
            if let (Some(e), Some(&id)) = (events.get(i), ids.get(i)) {
                event_body(stream, e, id).encode_into(out);
            }
        })?;
        self.shared.ensure_recent()?;
        let outcome: Arc<Mutex<Option<AppendResult>>> = Arc::default();
        let hook = {
            let index = Arc::clone(&self.index);
            let outcome = Arc::clone(&outcome);
            let stream: Arc<str> = Arc::from(stream);
            move |ctx: crate::commit::CommitCtx| -> Result<bool> {
                let mut ix = index.write().unwrap_or_else(|e| e.into_inner());
                let decided = check_and_index(&mut ix, &stream, expected, &ids, ctx.first_seq)?;
                let write = decided.1;
                *outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(decided.0);
                Ok(write)
            }
        };
        let appended = self.log.append_prepared_hooked(batch, Box::new(hook))?;
        self.after_append();
        let result = outcome.lock().unwrap_or_else(|e| e.into_inner()).take();
        let result = result.ok_or(Error::Closed)?;
        if appended.count == 0 && self.log.visible_end() <= result.last_seq() {
            // A retry of an append that is written but not yet durable: wait for it.
            self.log.sync()?;
        }
        Ok(result)
    }

    /// The version of the stream's last visible event, or `None` if it has none.
    pub fn stream_version(&self, stream: &str) -> Option<u64> {
        let visible = self.log.visible_end();
        self.read_index().visible_len(stream, visible).checked_sub(1)
    }

    /// Up to `max_count` events of `stream` starting at version `from_version` (inclusive),
    /// forwards or backwards. Backwards from `u64::MAX` starts at the last event. A missing
    /// stream reads as empty.
    pub fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        direction: Direction,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let visible = self.log.visible_end();
        let picked: Vec<(u64, u64)> = self.with_index(|ix| {
            let Some(seqs) = ix.seqs(stream)? else { return Ok(Vec::new()) };
            let n = seqs.partition_point(|&s| s < visible) as u64;
            let versions: Box<dyn Iterator<Item = u64>> = match direction {
                Direction::Forward => Box::new(from_version..n),
                Direction::Backward if n == 0 => Box::new(std::iter::empty()),
                Direction::Backward => Box::new((0..=from_version.min(n - 1)).rev()),
            };
            Ok(versions
                .take(max_count)
                .filter_map(|v| seqs.get(v as usize).map(|&s| (v, s)))
                .collect())
        })?;
        picked.into_iter().map(|(version, seq)| self.event_at(seq, Some(version))).collect()
    }

    /// The events of `stream` with seq at most `seq`: the stream as it was at that point.
    pub fn read_stream_as_of(&self, stream: &str, seq: u64) -> Result<Vec<RecordedEvent>> {
        let visible = self.log.visible_end();
        let picked: Vec<u64> = self.with_index(|ix| {
            let Some(seqs) = ix.seqs(stream)? else { return Ok(Vec::new()) };
            Ok(seqs.iter().copied().take_while(|&s| s <= seq && s < visible).collect())
        })?;
        picked.into_iter().enumerate().map(|(v, s)| self.event_at(s, Some(v as u64))).collect()
    }

    /// The events of `stream` appended at or before `timestamp_us` (microseconds since the
    /// Unix epoch): the stream as it was at that time. Seeks by time through the log's sparse
    /// time index.
    pub fn read_stream_as_of_time(
        &self,
        stream: &str,
        timestamp_us: u64,
    ) -> Result<Vec<RecordedEvent>> {
        match self.log.seq_at_time(timestamp_us)?.checked_sub(1) {
            Some(last) => self.read_stream_as_of(stream, last),
            None => Ok(Vec::new()),
        }
    }

    /// Up to `max_count` events of the streams in `category` (see [`category_of`]) with seq at
    /// least `from_seq`, in log order.
    pub fn read_category(
        &self,
        category: &str,
        from_seq: u64,
        max_count: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let visible = self.log.visible_end();
        let picked: Vec<u64> = self.with_index(|ix| {
            let Some(seqs) = ix.category_seqs(category)? else { return Ok(Vec::new()) };
            let start = seqs.partition_point(|&s| s < from_seq);
            Ok(seqs
                .iter()
                .skip(start)
                .copied()
                .take_while(|&s| s < visible)
                .take(max_count)
                .collect())
        })?;
        picked.into_iter().map(|s| self.event_at(s, None)).collect()
    }

    /// The event at global position `seq`, or `None` if `seq` is at or past the visible end.
    ///
    /// A point read: it finds the record through the log's per-segment record offsets (as
    /// [`Log::read`] does), checks its CRC, decodes it, and takes its version from the stream
    /// index, without walking the log from a sparse index entry as [`Store::read_all`] does.
    ///
    /// # Errors
    ///
    /// - [`Error::Corrupt`] if the record's bytes do not verify (nothing unverified is
    ///   returned);
    /// - [`Error::BadEvent`] if the record is not an event of this store (such as a record
    ///   appended through [`Store::log`] directly);
    /// - [`Error::MissingSegments`] if `seq` is below the log's first seq
    ///   ([`Log::purge_before`]);
    /// - [`Error::Io`] if the read fails.
    pub fn event(&self, seq: u64) -> Result<Option<RecordedEvent>> {
        if seq >= self.log.visible_end() {
            return Ok(None);
        }
        self.event_at(seq, None).map(Some)
    }

    /// Every event from `from_seq` on, in global order, up to the visible end (re-checked on
    /// each step).
    pub fn read_all(&self, from_seq: u64) -> AllEvents {
        AllEvents {
            store: self.clone(),
            cursor: self.log.cursor(from_seq),
            run: None,
            last_type: None,
            next_versions: NextVersions::default(),
        }
    }

    /// The ids of every stream with at least one visible event, sorted.
    pub fn streams(&self) -> Vec<String> {
        let visible = self.log.visible_end();
        let ix = self.read_index();
        let mut out: Vec<String> = ix
            .stream_ids()
            .filter(|id| ix.has_visible(id, visible))
            .map(|id| id.to_string())
            .collect();
        out.sort_unstable();
        out
    }

    /// Size of the stream index.
    pub fn index_stats(&self) -> IndexStats {
        let ix = self.read_index();
        IndexStats { streams: ix.stream_count(), events: ix.events(), heap_bytes: ix.heap_bytes() }
    }

    /// Closes the store cleanly: writes the stream-index checkpoint, then closes the log
    /// (see [`Log::close`]).
    pub fn close(self) -> Result<()> {
        let written = self.shared.write_checkpoint(true);
        // Wake the checkpointer so that it sees `closed` and ends, and wait for it: it may
        // hold the store, and with it the log's lock, for a moment after a late wake-up.
        let _ = self.shared.wake.try_send(());
        let thread = self.shared.checkpointer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread.filter(|t| t.thread().id() != std::thread::current().id()) {
            let _ = t.join();
        }
        let closed = self.log.close();
        written.and(closed)
    }

    fn event_at(&self, seq: u64, version: Option<u64>) -> Result<RecordedEvent> {
        let mut event = decode_shared(self.log.read(seq)?, version.unwrap_or(0))?;
        if version.is_none() {
            event.version = self
                .with_index(|ix| ix.version_of(&event.stream_id, seq))?
                .ok_or_else(|| not_indexed(seq))?;
        }
        Ok(event)
    }
}

fn decode(rec: &Record) -> Result<EventBody<'_>> {
    EventBody::decode(&rec.payload)
        .map_err(|e| Error::BadEvent { seq: rec.seq, reason: e.to_string() })
}

/// The error of a record that decodes as an event but is not one of the index's (such as a
/// record appended through [`Store::log`] directly).
fn not_indexed(seq: u64) -> Error {
    Error::BadEvent { seq, reason: "event is not in the index".into() }
}

/// Decodes `rec`'s event body (format-spec.md §11) into the event at `version`, with every
/// check of [`EventBody::decode`]. The metadata and the data are slices of the payload, not
/// copies (the data takes over the record's own handle on it).
fn decode_shared(rec: Record, version: u64) -> Result<RecordedEvent> {
    let Record { seq, timestamp_us, mut payload } = rec;
    let bad = |e: crate::format::DecodeError| Error::BadEvent { seq, reason: e.to_string() };
    let raw = EventBody::decode_layout(&payload).map_err(bad)?;
    let stream_id = std::str::from_utf8(raw.stream_id).map_err(|_| bad(STREAM_ID_NOT_UTF8))?;
    let event_type = std::str::from_utf8(raw.event_type).map_err(|_| bad(EVENT_TYPE_NOT_UTF8))?;
    let (stream_id, event_type) = (SmolStr::new(stream_id), SmolStr::new(event_type));
    let event_id = Uuid::from_bytes(raw.event_id);
    let metadata = payload.slice_ref(raw.metadata);
    // The data ends the payload (§11).
    let data_at = payload.len() - raw.data.len();
    payload.advance(data_at);
    Ok(RecordedEvent {
        stream_id,
        event_type,
        event_id,
        version,
        seq,
        timestamp_us,
        metadata,
        data: payload,
    })
}

/// The body of `e` as an event of `stream` with id `id`.
fn event_body<'a>(stream: &'a str, e: &'a NewEvent, id: [u8; 16]) -> EventBody<'a> {
    EventBody {
        stream_id: stream,
        event_type: &e.event_type,
        event_id: id,
        metadata: &e.metadata,
        data: &e.data,
    }
}

/// The leader-side decision for one append: idempotent replay, version check, and indexing.
/// Returns the result and whether the batch must be written.
fn check_and_index(
    ix: &mut StreamIndex,
    stream: &Arc<str>,
    expected: ExpectedVersion,
    ids: &[[u8; 16]],
    first_seq: u64,
) -> Result<(AppendResult, bool)> {
    let count = ids.len() as u32;
    ix.materialize_recent();
    let len = ix.len_of(stream);
    let wrong = || Error::WrongExpectedVersion {
        stream: stream.to_string(),
        expected,
        actual: len.checked_sub(1),
    };
    let number = ix.stream_number(stream);
    if let Some(first) = ids.first().and_then(|id| ix.recent(id)).copied()
        && Some(first.stream) == number
    {
        let position_ok = match expected {
            ExpectedVersion::Exact(v) => v.checked_add(1) == Some(first.version),
            ExpectedVersion::NoStream => first.version == 0,
            ExpectedVersion::Any | ExpectedVersion::StreamExists => true,
        };
        let all_match = ids.iter().enumerate().all(|(i, id)| {
            ix.recent(id)
                .is_some_and(|e| e.stream == first.stream && e.version == first.version + i as u64)
        });
        if position_ok && all_match {
            let result = AppendResult { first_seq: first.seq, first_version: first.version, count };
            return Ok((result, false));
        }
        return Err(wrong());
    }
    let ok = match expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => len == 0,
        ExpectedVersion::StreamExists => len > 0,
        ExpectedVersion::Exact(v) => v.checked_add(1) == Some(len),
    };
    if !ok {
        return Err(wrong());
    }
    ix.push_run(stream, first_seq, ids);
    Ok((AppendResult { first_seq, first_version: len, count }, true))
}

/// The background thread that writes checkpoints when asked. It holds only a weak reference
/// and ends with the last store handle.
fn spawn_checkpointer(
    shared: std::sync::Weak<Shared>,
    woken: crossbeam_channel::Receiver<()>,
) -> Option<std::thread::JoinHandle<()>> {
    let spawned = std::thread::Builder::new().name("annal-checkpoint".into()).spawn(move || {
        while woken.recv().is_ok() {
            let Some(shared) = shared.upgrade() else { return };
            if shared.closed.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            // A failed checkpoint costs only replay time at the next open.
            let _ = shared.write_checkpoint(false);
        }
    });
    // Without the thread, checkpoints are still written at close.
    spawned.ok()
}

/// Each stream's next version in a scan in log order (but the current run's).
type NextVersions = foldhash::HashMap<Box<str>, u64>;

/// Seqs of the current stream a scan copies out of the stream index when a run of its
/// events starts ...
const SCAN_WINDOW_MIN: usize = 8;
/// ... and at most, the window doubling each time the run outgrows it.
const SCAN_WINDOW_MAX: usize = 512;

/// The stream of the events a scan is reading, and a copy of a window of its seqs.
#[derive(Debug)]
struct Run {
    stream: SmolStr,
    /// The version of `seqs[0]`.
    first: u64,
    /// The stream's seqs from version `first` on, as the index held them (a stream's seqs
    /// never change once indexed; the index only grows).
    seqs: Vec<u64>,
    /// The version the stream's next event in the scan should have.
    next: u64,
}

/// Iterator over all events in global order (see [`Store::read_all`]).
///
/// Finding an event's version takes the stream index's read lock only when a run of events
/// of one stream starts or outgrows its window: it copies a window of the stream's seqs
/// (8, doubling up to 512 while the run goes on), and within it an event's version is the
/// previous one plus one, checked against the copy. An event of the run's stream also takes
/// its id from the run (compared, not decoded again). Records are not read ahead: each one
/// is handed out before the cursor reads the next, so the cursor can reuse its buffer.
#[derive(Debug)]
pub struct AllEvents {
    store: Store,
    cursor: Cursor,
    run: Option<Run>,
    /// The type of the last event read.
    last_type: Option<SmolStr>,
    /// The next version of every stream met so far but the run's.
    next_versions: NextVersions,
}

impl AllEvents {
    /// The version of the event at `seq` of `stream` (the run's if `in_run`), looked up in the
    /// index, and the run moved to its stream with a fresh window.
    #[inline(never)]
    fn version_from_index(&mut self, stream: &SmolStr, seq: u64, in_run: bool) -> Result<u64> {
        // The stream's seqs, read from the checkpoint first if they are still there.
        let ix = loop {
            let ix = self.store.read_index();
            let need = ix.seqs(stream).err();
            match need {
                None => break ix,
                Some(need) => {
                    drop(ix);
                    self.store.shared.load(need)?;
                }
            }
        };
        let seqs = ix.seqs(stream).ok().flatten().ok_or_else(|| not_indexed(seq))?;
        let hint = match &self.run {
            Some(run) if in_run => Some(run.next),
            _ => self.next_versions.get(&**stream).copied(),
        };
        let at = |v: u64| usize::try_from(v).ok().and_then(|v| seqs.get(v)).copied();
        let version = match hint {
            Some(h) if at(h) == Some(seq) => h,
            _ => {
                // The stream's seqs are loaded (above): the lookup needs nothing more.
                ix.version_of(stream, seq).ok().flatten().ok_or_else(|| not_indexed(seq))?
            }
        };
        let window = match &self.run {
            Some(run) if in_run => (run.seqs.len() * 2).clamp(SCAN_WINDOW_MIN, SCAN_WINDOW_MAX),
            _ => SCAN_WINDOW_MIN,
        };
        let from = version as usize;
        let copy = seqs.get(from..seqs.len().min(from + window)).unwrap_or_default();
        match &mut self.run {
            Some(run) if in_run => {
                run.seqs.clear();
                run.seqs.extend_from_slice(copy);
            }
            run => {
                let mut seqs = Vec::new();
                if let Some(old) = run.take() {
                    match self.next_versions.get_mut(&*old.stream) {
                        Some(n) => *n = old.next,
                        None => {
                            self.next_versions.insert(Box::from(old.stream.as_str()), old.next);
                        }
                    }
                    // Its allocation serves the new run.
                    seqs = old.seqs;
                    seqs.clear();
                }
                seqs.extend_from_slice(copy);
                *run = Some(Run { stream: stream.clone(), first: version, seqs, next: 0 });
            }
        }
        if let Some(run) = &mut self.run {
            run.first = version;
        }
        Ok(version)
    }
}

impl Iterator for AllEvents {
    type Item = Result<RecordedEvent>;

    /// Decodes the record (every check of [`EventBody::decode`]) into locals and builds the
    /// event once, with empty metadata that only an event with some replaces. Inlined into
    /// the caller's loop (another crate's too: hence `#[inline]`), so that the 152-byte event
    /// is not copied out of the returned value; each such copy of a just-written value was a
    /// store-forwarding stall, together about a sixth of a scan's time.
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let Record { seq, timestamp_us, payload } = match self.cursor.next()? {
            Ok(rec) => rec,
            Err(e) => return Some(Err(e)),
        };
        let bad = |e: crate::format::DecodeError| Error::BadEvent { seq, reason: e.to_string() };
        let raw = match EventBody::decode_layout(&payload) {
            Ok(raw) => raw,
            Err(e) => return Some(Err(bad(e))),
        };
        let run_stream = self.run.as_ref().map(|r| &r.stream);
        let (stream_id, in_run) = match run_stream {
            Some(s) if same_bytes(s.as_bytes(), raw.stream_id) => (s.clone(), true),
            _ => match std::str::from_utf8(raw.stream_id) {
                Ok(s) => (SmolStr::new(s), false),
                Err(_) => return Some(Err(bad(STREAM_ID_NOT_UTF8))),
            },
        };
        let event_type = match &self.last_type {
            Some(t) if same_bytes(t.as_bytes(), raw.event_type) => t.clone(),
            _ => match std::str::from_utf8(raw.event_type) {
                Ok(t) => {
                    let t = SmolStr::new(t);
                    self.last_type = Some(t.clone());
                    t
                }
                Err(_) => return Some(Err(bad(EVENT_TYPE_NOT_UTF8))),
            },
        };
        let event_id = Uuid::from_bytes(raw.event_id);
        // The metadata and the data end the payload (§11).
        let (meta_len, data_len) = (raw.metadata.len(), raw.data.len());
        let in_window = self.run.as_ref().filter(|_| in_run).and_then(|run| {
            let i = usize::try_from(run.next.checked_sub(run.first)?).ok()?;
            (run.seqs.get(i) == Some(&seq)).then_some(run.next)
        });
        let version = match in_window {
            Some(v) => v,
            None => match self.version_from_index(&stream_id, seq, in_run) {
                Ok(v) => v,
                Err(e) => return Some(Err(e)),
            },
        };
        if let Some(run) = &mut self.run {
            run.next = version + 1;
        }
        let data_at = payload.len() - data_len;
        let mut event = RecordedEvent {
            stream_id,
            event_type,
            event_id,
            version,
            seq,
            timestamp_us,
            metadata: Bytes::new(),
            data: payload,
        };
        if meta_len != 0 {
            event.metadata = event.data.slice(data_at - meta_len..data_at);
        }
        // The data takes over the record's own handle on the payload.
        event.data.advance(data_at);
        Some(Ok(event))
    }
}

/// Whether `a` and `b` are the same bytes; for the short ids a scan compares with the last
/// event's, with a few word compares rather than a call to `bcmp`.
#[inline(always)]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    // Two (possibly overlapping) words cover a string of one to two words' length.
    let words = |w: usize, read: fn(&[u8]) -> u64| {
        read(&a[..w]) == read(&b[..w]) && read(&a[n - w..]) == read(&b[n - w..])
    };
    match n {
        0 => true,
        1 => a[0] == b[0],
        2..4 => words(2, |s| u64::from(LE::read_u16(s))),
        4..8 => words(4, |s| u64::from(LE::read_u32(s))),
        8..=16 => words(8, LE::read_u64),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::same_bytes;

    #[test]
    fn same_bytes_agrees_with_slice_equality() {
        let base: Vec<u8> = (0..40u8).map(|i| b'a' + i % 26).collect();
        for len in 0..=base.len() {
            let a = &base[..len];
            assert!(same_bytes(a, a), "len {len}");
            for other in 0..=base.len() {
                assert_eq!(same_bytes(a, &base[..other]), len == other, "{len} {other}");
            }
            for at in 0..len {
                let mut b = a.to_vec();
                b[at] ^= 0x20;
                assert!(!same_bytes(a, &b), "len {len}, byte {at}");
            }
        }
    }
}
