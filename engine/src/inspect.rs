//! Read-only structural access to a store: every segment, frame, record, index file and
//! checkpoint checked against the format, without the writer lock and without writing a byte
//! (the `annal inspect`, `verify` and `streams` commands are thin layers over this).
//!
//! [`survey`] walks the files as they are on disk, independently of [`crate::Log`]'s recovery:
//! it opens nothing for writing, takes no lock, and reports what it finds as [`Finding`]s with
//! the file, the byte offset and a stable kind, rather than failing at the first problem. A
//! torn tail that a writer's open would cut (format-spec.md §7.2) is a [`Severity::Warning`];
//! damage to data that was durable is a [`Severity::Problem`].
//!
//! [`read_events`] reads events in global order from a read-only open, with their stream
//! versions, so that a reader can run beside a writer.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{CorruptionKind, Error, Result};
use crate::format::{
    DecodeError, EventBody, FrameKind, ProjectionCheckpoint, SegmentHeader, SnapshotFile,
    StreamCheckpoint, decode_index, log_tag,
};
use crate::fs::{OpenMode, StdFs, Storage, StorageFile};
use crate::limits::{
    CHECKPOINT_BYTES_MAX, INDEX_ENTRIES_MAX, INDEX_ENTRY_BYTES, INDEX_HEADER_BYTES,
    PROJECTION_CHECKPOINT_HEADER_BYTES, PROJECTION_NAME_BYTES_MAX, PROJECTION_STATE_BYTES_MAX,
    RECORD_BODY_BYTES_MAX, SEGMENT_HEADER_BYTES, SEGMENTS_MAX, SNAPSHOT_FILE_BYTES_MAX,
};
use crate::log::{Cursor, Log, Record};
use crate::names::{self, SegmentDirEntry};
use crate::options::Options;
use crate::segment::{self, FrameError, RecordCopier, Source};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Something a writer's open repairs by itself without losing acknowledged data (a torn
    /// tail, an interrupted seal), or a cache that is missing. `annal verify` exits 0.
    Warning,
    /// Damage to durable data or to a file the store trusts. `annal verify` exits 1.
    Problem,
}

/// What a finding is about. [`FindingKind::as_str`] gives the stable name tools print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum FindingKind {
    /// Bytes after the last valid frame of the last segment that no later durable frame
    /// vouches for: an interrupted write, cut by a writer's open (format-spec.md §7.2).
    TornTail,
    /// A segment other than the last ends without its seal frame but its records reach the
    /// next segment's base: a crash during a roll, completed by a writer's open.
    MissingSeal,
    /// Non-zero bytes after a seal frame.
    AfterSeal,
    /// A bad frame or record followed by data that was durable, or in a sealed segment.
    MidLog,
    /// A segment header that does not decode, belongs to another store, or disagrees with
    /// the file name.
    SegmentHeader,
    /// A segment whose base seq is not where the previous segment's records end.
    SeqGap,
    /// An index file that does not decode, belongs elsewhere, or has an entry that does not
    /// match the batch it points to.
    IndexDamaged,
    /// A sealed segment without an index file (a cache: rebuilt on use).
    IndexMissing,
    /// A record that passed its CRC but is not an event body, in a store of events.
    BadEvent,
    /// The stream-index checkpoint does not decode, belongs elsewhere, or disagrees with the
    /// log.
    CheckpointDamaged,
    /// An aggregate snapshot (format-spec.md §13) that does not decode, belongs to another
    /// store or stream, or does not match the log's event at its version (ahead of the log,
    /// or of events since lost). A repository sets such a file aside and replays.
    SnapshotDamaged,
    /// A projection checkpoint (format-spec.md §14) that does not decode, belongs to another
    /// store or projection, or is ahead of the log. The runner starts such a projection over.
    ProjectionCheckpointDamaged,
    /// A file that could not be read.
    Unreadable,
}

impl FindingKind {
    /// The stable snake_case name of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::TornTail => "torn_tail",
            FindingKind::MissingSeal => "missing_seal",
            FindingKind::AfterSeal => "after_seal",
            FindingKind::MidLog => "mid_log",
            FindingKind::SegmentHeader => "segment_header",
            FindingKind::SeqGap => "seq_gap",
            FindingKind::IndexDamaged => "index_damaged",
            FindingKind::IndexMissing => "index_missing",
            FindingKind::BadEvent => "bad_event",
            FindingKind::CheckpointDamaged => "checkpoint_damaged",
            FindingKind::SnapshotDamaged => "snapshot_damaged",
            FindingKind::ProjectionCheckpointDamaged => "projection_checkpoint_damaged",
            FindingKind::Unreadable => "unreadable",
        }
    }
}

/// One thing found wrong, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Warning or problem.
    pub severity: Severity,
    /// What kind of thing.
    pub kind: FindingKind,
    /// The file concerned.
    pub file: PathBuf,
    /// The byte offset in that file, where there is one.
    pub offset: Option<u64>,
    /// A sentence for a person.
    pub message: String,
}

/// Whether a segment ends in a seal frame, a close frame, or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentState {
    /// Ends with a seal frame: complete, never written again.
    Sealed,
    /// The last frame is a close frame: the store was closed cleanly with this segment active.
    Closed,
    /// Neither: the active segment of a running or crashed writer.
    Active,
}

/// The state of a segment's index file (format-spec.md §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexState {
    /// Decodes, belongs to this segment, and every entry matches the batch it names.
    Ok {
        /// Entries.
        entries: usize,
        /// The seq it covers up to; less than the segment's end when it is stale (written
        /// at an earlier close), which is not a problem.
        end_seq: u64,
    },
    /// No index file.
    Missing,
    /// Unusable; why.
    Damaged {
        /// Why.
        reason: String,
    },
}

/// Damage found in a segment: the first bad frame or record, and what follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Offset of the bad frame header (0 for a bad segment header).
    pub offset: u64,
    /// The first seq that could not be read (the seq the bad frame should have held).
    pub seq: u64,
    /// What is wrong.
    pub cause: CorruptionKind,
    /// One past the last non-zero byte at or after `offset`.
    pub nonzero_end: u64,
    /// Offset of a later valid frame that was written after the damaged bytes were durable,
    /// if there is one: proof that the damage is not a torn write.
    pub durable_proof: Option<u64>,
    /// Whether a writer's open would cut it as a torn tail (a warning, not a problem).
    pub torn: bool,
}

/// One batch frame: where it is and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    /// Offset of its frame header.
    pub offset: u64,
    /// Seq of its first record.
    pub seq: u64,
    /// Records in it.
    pub count: u32,
    /// Its frame timestamp, microseconds since the Unix epoch.
    pub timestamp_us: u64,
}

/// One segment file as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSurvey {
    /// Base seq, from the file name.
    pub base: u64,
    /// The file.
    pub path: PathBuf,
    /// File size in bytes (preallocated space included).
    pub bytes: u64,
    /// Valid records, from the base on, before any damage.
    pub records: u64,
    /// One past the last valid record's seq.
    pub end_seq: u64,
    /// Offset just past the last valid frame.
    pub data_end: u64,
    /// Sealed, closed or active.
    pub state: SegmentState,
    /// Offset of the seal frame, if sealed.
    pub seal_at: Option<u64>,
    /// Its index file.
    pub index: IndexState,
    /// Every valid batch, in order.
    pub batches: Vec<BatchInfo>,
    /// The first damage, if any.
    pub damage: Option<Damage>,
}

impl SegmentSurvey {
    /// The index file's path.
    pub fn index_path(&self) -> PathBuf {
        self.path.with_file_name(names::index_file_name(self.base))
    }
}

/// One stream's events as found in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSummary {
    /// Events (its version is `events - 1`).
    pub events: u64,
    /// Seq of its first event.
    pub first_seq: u64,
    /// Seq of its last event.
    pub last_seq: u64,
}

/// The stream-index checkpoint `streams.ckpt` (format-spec.md §12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointSurvey {
    /// No checkpoint file.
    Missing,
    /// Decodes, is this store's, and agrees with the log.
    Ok {
        /// File size.
        bytes: u64,
        /// Events below this seq are in it.
        covered_seq: u64,
        /// Streams in it.
        streams: usize,
    },
    /// Unusable; a writer's open ignores it and rebuilds the index from the log.
    Damaged {
        /// File size.
        bytes: u64,
        /// Why.
        reason: String,
    },
}

/// A file in a side directory (`snapshots/`, `projections/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SideFile {
    /// The path.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
}

/// A projection checkpoint that checked out, and how far behind the log it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionPosition {
    /// The checkpoint file.
    pub path: PathBuf,
    /// The projection's name.
    pub name: String,
    /// The projection's version that wrote it.
    pub projection_version: u32,
    /// Every event below this seq was applied.
    pub position: u64,
    /// Events in the log at or after `position` (as far as the log reads without damage).
    pub lag: u64,
}

/// What [`survey`] reads beyond the frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SurveyOptions {
    /// Decode every record as an event body (format-spec.md §11), count streams and check
    /// the stream-index checkpoint against them.
    pub decode_events: bool,
}

impl Default for SurveyOptions {
    fn default() -> Self {
        SurveyOptions { decode_events: true }
    }
}

/// Everything [`survey`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Survey {
    /// The store directory.
    pub dir: PathBuf,
    /// The store's log id, from the first segment header that decodes.
    pub log_id: Option<[u8; 16]>,
    /// Segment files, by base seq.
    pub segments: Vec<SegmentSurvey>,
    /// Other files in `segments/`: moved-aside tails, temp files, foreign files.
    pub other_files: Vec<PathBuf>,
    /// One past the last seq readable from the start without a gap or damage.
    pub next_seq: u64,
    /// Records read and verified.
    pub records: u64,
    /// Bytes of record payloads read.
    pub payload_bytes: u64,
    /// The last frame of the last segment is a close frame: the last shutdown was clean.
    pub clean_shutdown: bool,
    /// Records that decode as events (only with `decode_events`).
    pub events: u64,
    /// Records that do not decode as events. A store written through [`crate::Log`] alone
    /// has only these, and that is not a problem; mixed with events it is.
    pub non_events: u64,
    /// Streams and their event counts (only with `decode_events`).
    pub streams: BTreeMap<String, StreamSummary>,
    /// The stream-index checkpoint.
    pub checkpoint: CheckpointSurvey,
    /// Files under `snapshots/`.
    pub snapshots: Vec<SideFile>,
    /// Files under `projections/`.
    pub projections: Vec<SideFile>,
    /// The projection checkpoints that checked out, by file name, with their lag.
    pub projection_positions: Vec<ProjectionPosition>,
    /// What is wrong, in file order.
    pub findings: Vec<Finding>,
}

impl Survey {
    /// Whether any finding is a [`Severity::Problem`].
    pub fn has_problems(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Problem)
    }
}

/// Most bad-event findings listed one by one; more are summarised in one finding.
const BAD_EVENTS_LISTED_MAX: usize = 20;

/// Surveys the store in `dir` on the real file system. See [`survey_with`].
pub fn survey(
    dir: &Path,
    opts: SurveyOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Survey> {
    survey_with(&StdFs, dir, opts, progress)
}

/// Walks every file of the store in `dir` read-only and reports what it finds.
///
/// `progress(done, total)` is called with bytes of segments walked so far. Fails only when
/// there is no store ([`Error::NoStore`]) or the segments directory cannot be listed; every
/// other problem is a [`Finding`].
pub fn survey_with(
    storage: &dyn Storage,
    dir: &Path,
    opts: SurveyOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Survey> {
    let seg_dir = names::segments_dir(dir);
    if !storage.exists(&seg_dir).map_err(|e| Error::io("stat", &seg_dir, e))? {
        return Err(Error::NoStore { dir: dir.to_path_buf() });
    }
    let mut names_found = storage.read_dir(&seg_dir).map_err(|e| Error::io("list", &seg_dir, e))?;
    names_found.sort();
    let mut bases = Vec::new();
    let mut other_files = Vec::new();
    for name in names_found {
        match names::parse_segment_dir_entry(&name) {
            SegmentDirEntry::Segment(base) => bases.push(base),
            SegmentDirEntry::Index(_) => {}
            _ => other_files.push(seg_dir.join(name)),
        }
    }
    if bases.is_empty() {
        return Err(Error::NoStore { dir: dir.to_path_buf() });
    }
    if bases.len() > SEGMENTS_MAX {
        let kind = CorruptionKind::TooManySegments { count: bases.len() as u64 };
        return Err(Error::corrupt(&seg_dir, 0, kind));
    }
    bases.sort_unstable();

    let mut w = Walker {
        storage,
        opts,
        findings: Vec::new(),
        streams: BTreeMap::new(),
        events: 0,
        non_events: 0,
        bad_events: Vec::new(),
        payload_bytes: 0,
        seq_stream: None,
        stream_ids: HashMap::new(),
        seq_base: bases.iter().copied().min().unwrap_or(0),
        snapshot_checks: HashMap::new(),
        projection_positions: Vec::new(),
    };
    if opts.decode_events {
        w.read_snapshots(dir);
    }
    let checkpoint_path = dir.join(names::STREAM_CHECKPOINT_FILE);
    let checkpoint_file = read_bounded(storage, &checkpoint_path, CHECKPOINT_BYTES_MAX);
    if opts.decode_events && matches!(checkpoint_file, Ok(Some(_))) {
        w.seq_stream = Some(Vec::new());
    }

    let mut files = Vec::with_capacity(bases.len());
    let mut total = 0;
    for &base in &bases {
        let path = seg_dir.join(names::segment_file_name(base));
        let opened = storage.open(&path, OpenMode::Read).and_then(|f| {
            let len = f.len()?;
            Ok((Arc::<dyn StorageFile>::from(f), len))
        });
        if let Ok((_, len)) = &opened {
            total += len;
        }
        files.push((base, path, opened));
    }

    // The log id comes from the first header that decodes.
    let mut log_id = None;
    for (_, _, opened) in &files {
        if let Ok((f, len)) = opened
            && *len >= SEGMENT_HEADER_BYTES as u64
        {
            let mut buf = [0u8; SEGMENT_HEADER_BYTES];
            if f.read_exact_at(&mut buf, 0).is_ok()
                && let Ok(h) = SegmentHeader::decode(&buf)
            {
                log_id = Some(h.log_id);
                break;
            }
        }
    }

    let mut segments = Vec::with_capacity(files.len());
    let mut done = 0;
    let mut expected_base: Option<u64> = None;
    for (i, (base, path, opened)) in files.into_iter().enumerate() {
        let (file, len) = match opened {
            Ok(x) => x,
            Err(e) => {
                w.find(Severity::Problem, FindingKind::Unreadable, &path, None, e.to_string());
                expected_base = None;
                continue;
            }
        };
        if let Some(exp) = expected_base
            && exp != base
        {
            let msg = format!("segment starts at seq {base}, but the previous one ends at {exp}");
            w.find(Severity::Problem, FindingKind::SeqGap, &path, Some(0), msg);
        }
        let next_base = bases.get(i + 1).copied();
        let seg = w.walk_segment(base, path, file, len, log_id, next_base)?;
        done += len;
        progress(done, total);
        expected_base = match &seg.damage {
            Some(d) if !d.torn => None,
            _ => Some(seg.end_seq),
        };
        segments.push(seg);
    }

    // A non-last segment that ends without a seal, with no damage, at the next base: an
    // interrupted roll that a writer's open completes.
    for pair in segments.windows(2) {
        if let [a, b] = pair
            && a.state != SegmentState::Sealed
            && a.damage.is_none()
            && a.end_seq == b.base
        {
            let msg = "segment has no seal frame; a writer's open completes the seal".to_string();
            w.find(Severity::Warning, FindingKind::MissingSeal, &a.path, Some(a.data_end), msg);
        }
    }

    let mut next_seq = segments.first().map_or(0, |s| s.base);
    for s in &segments {
        if s.base != next_seq {
            break;
        }
        next_seq = s.end_seq;
        if s.damage.as_ref().is_some_and(|d| !d.torn) {
            break;
        }
    }
    let records = segments.iter().map(|s| s.records).sum();
    let clean_shutdown =
        segments.last().is_some_and(|s| s.state == SegmentState::Closed && s.damage.is_none());

    if w.events > 0 && w.non_events > 0 {
        let listed: Vec<(u64, String, PathBuf)> = std::mem::take(&mut w.bad_events);
        for (seq, why, path) in &listed {
            let msg = format!("record {seq} passed its CRC but is not an event: {why}");
            w.find(Severity::Problem, FindingKind::BadEvent, path, None, msg);
        }
        if w.non_events > listed.len() as u64 {
            let more = w.non_events - listed.len() as u64;
            let path = seg_dir.clone();
            let msg = format!("{more} more records are not events");
            w.find(Severity::Problem, FindingKind::BadEvent, &path, None, msg);
        }
    }

    let checkpoint = match checkpoint_file {
        Ok(None) => CheckpointSurvey::Missing,
        Err(e) => {
            let reason = e.to_string();
            let msg = format!("cannot read the checkpoint: {reason}");
            w.find(Severity::Problem, FindingKind::CheckpointDamaged, &checkpoint_path, None, msg);
            CheckpointSurvey::Damaged { bytes: 0, reason }
        }
        Ok(Some(bytes)) => {
            let state = w.check_checkpoint(&bytes, log_id, next_seq);
            if let CheckpointSurvey::Damaged { reason, .. } = &state {
                let msg = format!("stream-index checkpoint is unusable: {reason}");
                let p = &checkpoint_path;
                w.find(Severity::Problem, FindingKind::CheckpointDamaged, p, None, msg);
            }
            state
        }
    };

    w.check_snapshots(log_id);
    w.check_projection_checkpoints(dir, log_id, next_seq);

    let findings = {
        let mut f = w.findings;
        f.sort_by(|a, b| (&a.file, a.offset).cmp(&(&b.file, b.offset)));
        f
    };
    Ok(Survey {
        dir: dir.to_path_buf(),
        log_id,
        segments,
        other_files,
        next_seq,
        records,
        payload_bytes: w.payload_bytes,
        clean_shutdown,
        events: w.events,
        non_events: w.non_events,
        streams: w.streams,
        checkpoint,
        snapshots: side_files(storage, &dir.join(names::SNAPSHOTS_DIR)),
        projections: side_files(storage, &dir.join(names::PROJECTIONS_DIR)),
        projection_positions: w.projection_positions,
        findings,
    })
}

/// Files under `<dir>/snapshots/` (and one level below), with sizes, by path.
pub fn snapshot_files(dir: &Path) -> Vec<SideFile> {
    side_files(&StdFs, &dir.join(names::SNAPSHOTS_DIR))
}

/// Files under `<dir>/projections/` (and one level below), with sizes, by path.
pub fn projection_files(dir: &Path) -> Vec<SideFile> {
    side_files(&StdFs, &dir.join(names::PROJECTIONS_DIR))
}

/// Files directly in `dir` (and one level below), by name; none if it does not exist.
fn side_files(storage: &dyn Storage, dir: &Path) -> Vec<SideFile> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = stack.pop() {
        let Ok(entries) = storage.read_dir(&d) else { continue };
        for name in entries {
            let p = d.join(name);
            if storage.read_dir(&p).is_ok() {
                if depth < 1 {
                    stack.push((p, depth + 1));
                }
            } else if let Ok(bytes) = storage.open(&p, OpenMode::Read).and_then(|f| f.len()) {
                out.push(SideFile { path: p, bytes });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Reads a whole file of at most `max` bytes; `None` if it does not exist.
fn read_bounded(storage: &dyn Storage, path: &Path, max: u64) -> Result<Option<Vec<u8>>> {
    let f = match storage.open(path, OpenMode::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let len = f.len().map_err(|e| Error::io("stat", path, e))?;
    if len > max {
        let kind = DecodeError::OutOfBounds { field: "file bytes", value: len, max };
        return Err(Error::corrupt(path, 0, kind));
    }
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, 0).map_err(|e| Error::io("read", path, e))?;
    Ok(Some(buf))
}

struct Walker<'a> {
    storage: &'a dyn Storage,
    opts: SurveyOptions,
    findings: Vec<Finding>,
    streams: BTreeMap<String, StreamSummary>,
    events: u64,
    non_events: u64,
    /// The first records that are not events: seq, why, segment.
    bad_events: Vec<(u64, String, PathBuf)>,
    payload_bytes: u64,
    /// Stream number of every seq from the first segment's base (u32::MAX: not an event),
    /// kept only to check a checkpoint against.
    seq_stream: Option<Vec<u32>>,
    stream_ids: HashMap<String, u32>,
    seq_base: u64,
    /// Snapshots to check against the log, by stream: the event each one names.
    snapshot_checks: HashMap<String, Vec<SnapshotCheck>>,
    /// Projection checkpoints that checked out.
    projection_positions: Vec<ProjectionPosition>,
}

/// A snapshot file that decoded, and what the log holds at the version it names.
struct SnapshotCheck {
    path: PathBuf,
    log_id: [u8; 16],
    version: u64,
    seq: u64,
    event_id: [u8; 16],
    /// (seq, event id) of the stream's event at `version`, once the walk met it.
    found: Option<(u64, [u8; 16])>,
}

impl Walker<'_> {
    fn find(&mut self, sev: Severity, kind: FindingKind, file: &Path, off: Option<u64>, m: String) {
        self.findings.push(Finding {
            severity: sev,
            kind,
            file: file.to_path_buf(),
            offset: off,
            message: m,
        });
    }

    /// Reads every snapshot file under `snapshots/` (format-spec.md §13); a file that does
    /// not decode or sits under another stream's name is a finding, the others are checked
    /// against the log as the walk meets their events.
    fn read_snapshots(&mut self, dir: &Path) {
        let snap_dir = names::snapshots_dir(dir);
        let Ok(mut entries) = self.storage.read_dir(&snap_dir) else { return };
        entries.sort();
        for name in entries {
            match names::parse_snapshot_dir_entry(&name) {
                names::SnapshotDirEntry::Plain(_) | names::SnapshotDirEntry::Hashed(_) => {}
                // Temp files of a replace, files set aside, and foreign files are not read.
                _ => continue,
            }
            let path = snap_dir.join(&name);
            let bad = |w: &mut Self, m: String| {
                w.find(Severity::Problem, FindingKind::SnapshotDamaged, &path, None, m);
            };
            let bytes = match read_bounded(self.storage, &path, SNAPSHOT_FILE_BYTES_MAX) {
                Ok(Some(b)) => b,
                Ok(None) => continue,
                Err(e) => {
                    bad(self, format!("cannot read the snapshot: {e}"));
                    continue;
                }
            };
            let snap = match SnapshotFile::decode(&bytes) {
                Ok(s) => s,
                Err(e) => {
                    bad(self, format!("snapshot does not decode: {e}"));
                    continue;
                }
            };
            if names::snapshot_file_name(&snap.stream_id) != name {
                // Debug quoting escapes control characters; a long id is cut for the message.
                let id: String = snap.stream_id.chars().take(64).collect();
                bad(self, format!("the snapshot of stream {id:?} is under another stream's name"));
                continue;
            }
            self.snapshot_checks.entry(snap.stream_id).or_default().push(SnapshotCheck {
                path,
                log_id: snap.log_id,
                version: snap.stream_version,
                seq: snap.seq,
                event_id: snap.event_id,
                found: None,
            });
        }
    }

    /// Compares each snapshot read by `read_snapshots` with the event the walk found at its
    /// version.
    fn check_snapshots(&mut self, log_id: Option<[u8; 16]>) {
        let checks: Vec<SnapshotCheck> =
            std::mem::take(&mut self.snapshot_checks).into_values().flatten().collect();
        for c in checks {
            let msg = if log_id.is_some_and(|id| id != c.log_id) {
                Some("the snapshot belongs to another store".to_string())
            } else {
                match c.found {
                    None => Some(format!(
                        "the snapshot is of version {} (seq {}), which the log does not hold",
                        c.version, c.seq
                    )),
                    Some((seq, id)) if seq != c.seq || id != c.event_id => Some(format!(
                        "the snapshot names seq {} at version {}, the log has seq {seq} (or \
                         another event id) there",
                        c.seq, c.version
                    )),
                    Some(_) => None,
                }
            };
            if let Some(m) = msg {
                self.find(Severity::Problem, FindingKind::SnapshotDamaged, &c.path, None, m);
            }
        }
    }

    /// Checks every projection checkpoint under `projections/` (format-spec.md §14): it
    /// decodes, belongs to this store, sits under its own name, and is not ahead of the log.
    fn check_projection_checkpoints(&mut self, dir: &Path, log_id: Option<[u8; 16]>, end: u64) {
        let proj_dir = names::projections_dir(dir);
        let Ok(mut entries) = self.storage.read_dir(&proj_dir) else { return };
        entries.sort();
        let max = (PROJECTION_CHECKPOINT_HEADER_BYTES + PROJECTION_NAME_BYTES_MAX) as u64
            + PROJECTION_STATE_BYTES_MAX;
        let ext = format!(".{}", names::PROJECTION_CHECKPOINT_EXT);
        for name in entries {
            if !name.ends_with(&ext) {
                // Temp files of a replace, and files a projection keeps beside its checkpoint.
                continue;
            }
            let path = proj_dir.join(&name);
            let msg = match read_bounded(self.storage, &path, max) {
                Ok(None) => continue,
                Err(e) => Some(format!("cannot read the checkpoint: {e}")),
                Ok(Some(bytes)) => match ProjectionCheckpoint::decode(&bytes) {
                    Err(e) => Some(format!("projection checkpoint does not decode: {e}")),
                    Ok(c) if log_id.is_some_and(|id| id != c.log_id) => {
                        Some("the checkpoint belongs to another store".to_string())
                    }
                    Ok(c) if names::projection_checkpoint_file_name(&c.name) != name => {
                        Some("the checkpoint is under another projection's name".to_string())
                    }
                    Ok(c) if c.position > end => Some(format!(
                        "the checkpoint is at seq {}, ahead of the log's end {end}",
                        c.position
                    )),
                    Ok(c) => {
                        self.projection_positions.push(ProjectionPosition {
                            path: path.clone(),
                            name: c.name,
                            projection_version: c.projection_version,
                            position: c.position,
                            lag: end - c.position,
                        });
                        None
                    }
                },
            };
            if let Some(m) = msg {
                let kind = FindingKind::ProjectionCheckpointDamaged;
                self.find(Severity::Problem, kind, &path, None, m);
            }
        }
    }

    fn walk_segment(
        &mut self,
        base: u64,
        path: PathBuf,
        file: Arc<dyn StorageFile>,
        len: u64,
        log_id: Option<[u8; 16]>,
        next_base: Option<u64>,
    ) -> Result<SegmentSurvey> {
        let last = next_base.is_none();
        let mut seg = SegmentSurvey {
            base,
            path: path.clone(),
            bytes: len,
            records: 0,
            end_seq: base,
            data_end: 0,
            state: SegmentState::Active,
            seal_at: None,
            index: IndexState::Missing,
            batches: Vec::new(),
            damage: None,
        };
        let header_damage = |cause: CorruptionKind| Damage {
            offset: 0,
            seq: base,
            cause,
            nonzero_end: len,
            durable_proof: None,
            torn: false,
        };
        let mut buf = [0u8; SEGMENT_HEADER_BYTES];
        let header = if len < SEGMENT_HEADER_BYTES as u64 {
            Err(CorruptionKind::Decode(DecodeError::Truncated {
                needed: SEGMENT_HEADER_BYTES as u64,
                available: len,
            }))
        } else {
            file.read_exact_at(&mut buf, 0).map_err(|e| Error::io("read", &path, e))?;
            SegmentHeader::decode(&buf).map_err(CorruptionKind::Decode)
        };
        let header = header.and_then(|h| {
            if Some(h.log_id) != log_id {
                Err(CorruptionKind::ForeignSegment)
            } else if h.base_seq != base {
                Err(CorruptionKind::SegmentNameMismatch { header: h.base_seq, name: base })
            } else {
                Ok(h)
            }
        });
        let header = match header {
            Ok(h) => h,
            Err(cause) => {
                let msg = format!("bad segment header: {cause}");
                self.find(Severity::Problem, FindingKind::SegmentHeader, &path, Some(0), msg);
                seg.damage = Some(header_damage(cause));
                return Ok(seg);
            }
        };
        let tag = log_tag(&header.log_id);
        let mut src = Source::file(Arc::clone(&file), len);
        let mut copier = RecordCopier::default();
        let mut off = SEGMENT_HEADER_BYTES as u64;
        let mut next = base;
        let mut last_close = false;
        let mut markers = Vec::new();
        let mut bad: Option<(u64, CorruptionKind)> = None;
        let mut shrank = false;
        while off < len {
            let f = match segment::frame_at(&mut src, off, tag) {
                Ok(f) => f,
                // A writer closing the store gives back the preallocated space after its
                // close frame: the file ended here while we read, with nothing after.
                Err(FrameError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    shrank = true;
                    break;
                }
                Err(FrameError::Io(e)) => return Err(Error::io("read", &path, e)),
                Err(FrameError::Bad(kind)) => {
                    bad = Some((off, kind));
                    break;
                }
            };
            if f.seq != next {
                bad = Some((off, CorruptionKind::SeqMismatch { expected: next, found: f.seq }));
                break;
            }
            match f.kind {
                FrameKind::Batch => {
                    match segment::verify_batch(&mut src, off, &f, RECORD_BODY_BYTES_MAX) {
                        Ok(()) => {}
                        Err((_, FrameError::Io(e))) => return Err(Error::io("read", &path, e)),
                        Err((_, FrameError::Bad(kind))) => {
                            bad = Some((off, kind));
                            break;
                        }
                    }
                    self.records_of(&mut src, &mut copier, off, &f, &path)?;
                    seg.batches.push(BatchInfo {
                        offset: off,
                        seq: f.seq,
                        count: f.count,
                        timestamp_us: f.timestamp_us,
                    });
                    next += u64::from(f.count);
                    last_close = false;
                }
                FrameKind::Seal | FrameKind::Close => {
                    if u64::from(f.count) != next - base {
                        let found = u64::from(f.count);
                        bad = Some((
                            off,
                            CorruptionKind::SeqMismatch { expected: next - base, found },
                        ));
                        break;
                    }
                    markers.push((off, f.seq));
                    if f.kind == FrameKind::Seal {
                        seg.state = SegmentState::Sealed;
                        seg.seal_at = Some(off);
                        off += f.total_bytes();
                        break;
                    }
                    last_close = true;
                }
            }
            off += f.total_bytes();
        }
        seg.data_end = off;
        seg.end_seq = next;
        seg.records = next - base;
        if seg.state != SegmentState::Sealed && last_close {
            seg.state = SegmentState::Closed;
        }
        let from = bad.as_ref().map_or(off, |(at, _)| *at);
        if from < len && !shrank {
            let survey = match segment::survey_tail(&mut src, from, tag) {
                Ok(s) => s,
                // As above: the writer cut its preallocated space while we probed it.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    segment::TailSurvey { nonzero_end: from, ..Default::default() }
                }
                Err(e) => return Err(Error::io("read", &path, e)),
            };
            if survey.nonzero_end > from {
                match bad {
                    None => {
                        let msg = format!(
                            "{} non-zero bytes after the seal frame",
                            survey.nonzero_end - from
                        );
                        self.find(
                            Severity::Warning,
                            FindingKind::AfterSeal,
                            &path,
                            Some(from),
                            msg,
                        );
                    }
                    Some((at, cause)) => {
                        let torn = survey.durable_proof.is_none()
                            && seg.state != SegmentState::Sealed
                            && (last || next_base == Some(next));
                        let damage = Damage {
                            offset: at,
                            seq: next,
                            cause,
                            nonzero_end: survey.nonzero_end,
                            durable_proof: survey.durable_proof,
                            torn,
                        };
                        self.report_damage(&path, &damage, last);
                        seg.damage = Some(damage);
                    }
                }
            }
        }
        seg.index = self.check_index(&seg, &header.log_id, &markers);
        Ok(seg)
    }

    fn report_damage(&mut self, path: &Path, d: &Damage, last: bool) {
        let bytes = d.nonzero_end - d.offset;
        if d.torn {
            let what = if last { "torn tail" } else { "torn end of a segment being sealed" };
            let msg = format!(
                "{what}: {bytes} bytes from seq {} are not durable and a writer's open cuts \
                 them ({})",
                d.seq, d.cause
            );
            self.find(Severity::Warning, FindingKind::TornTail, path, Some(d.offset), msg);
        } else {
            let why = match d.durable_proof {
                Some(p) => format!("durable data follows at offset {p}"),
                None if !last => "the segment is not the last".to_string(),
                None => "it is not a torn write".to_string(),
            };
            let msg = format!("damaged record at seq {}: {} ({why})", d.seq, d.cause);
            self.find(Severity::Problem, FindingKind::MidLog, path, Some(d.offset), msg);
        }
    }

    /// Decodes every record of a verified batch as an event, if asked to.
    ///
    /// Each record is copied out of the file first and checked again in the copy, with the
    /// copy's own length: what is decoded is exactly what the CRC covered. The batch check
    /// before read the bytes once already; a file that changed since (another writer
    /// ignoring `LOCK`, a disk returning a different page on a re-read) fails the check
    /// here instead of handing on bytes no CRC covered.
    fn records_of(
        &mut self,
        src: &mut Source,
        copier: &mut RecordCopier,
        off: u64,
        f: &crate::format::Frame,
        path: &Path,
    ) -> Result<()> {
        let mut pos = off + crate::limits::FRAME_HEADER_BYTES as u64;
        let body_end = pos + u64::from(f.body_bytes);
        for i in 0..u64::from(f.count) {
            let seq = f.seq + i;
            let (payload, next) = copier
                .record(src, pos, body_end, seq, RECORD_BODY_BYTES_MAX)
                .map_err(|(o, e)| e.at(path, o))?;
            pos = next;
            self.payload_bytes += payload.len() as u64;
            if !self.opts.decode_events {
                continue;
            }
            let stream_no = match EventBody::decode(&payload) {
                Ok(body) => {
                    self.events += 1;
                    let s = self
                        .streams
                        .entry(body.stream_id.to_owned())
                        .or_insert(StreamSummary { events: 0, first_seq: seq, last_seq: seq });
                    s.events += 1;
                    s.last_seq = seq;
                    let version = s.events - 1;
                    if let Some(checks) = self.snapshot_checks.get_mut(body.stream_id) {
                        for c in checks.iter_mut().filter(|c| c.version == version) {
                            c.found = Some((seq, body.event_id));
                        }
                    }
                    if self.seq_stream.is_some() {
                        let n = self.stream_ids.len() as u32;
                        *self.stream_ids.entry(body.stream_id.to_owned()).or_insert(n)
                    } else {
                        0
                    }
                }
                Err(e) => {
                    self.non_events += 1;
                    if self.bad_events.len() < BAD_EVENTS_LISTED_MAX {
                        self.bad_events.push((seq, e.to_string(), path.to_path_buf()));
                    }
                    u32::MAX
                }
            };
            if let Some(v) = &mut self.seq_stream {
                v.push(stream_no);
            }
        }
        Ok(())
    }

    fn check_index(
        &mut self,
        seg: &SegmentSurvey,
        log_id: &[u8; 16],
        markers: &[(u64, u64)],
    ) -> IndexState {
        let path = seg.index_path();
        let max =
            INDEX_HEADER_BYTES as u64 + u64::from(INDEX_ENTRIES_MAX) * INDEX_ENTRY_BYTES as u64;
        let bytes = match read_bounded(self.storage, &path, max) {
            Ok(Some(b)) => b,
            Ok(None) => {
                if seg.state == SegmentState::Sealed {
                    let msg = "sealed segment has no index file (rebuilt on use)".to_string();
                    self.find(Severity::Warning, FindingKind::IndexMissing, &path, None, msg);
                }
                return IndexState::Missing;
            }
            Err(e) => return self.index_damaged(&path, None, e.to_string()),
        };
        let (h, entries) = match decode_index(&bytes) {
            Ok(x) => x,
            Err(e) => return self.index_damaged(&path, None, e.to_string()),
        };
        if &h.log_id != log_id {
            return self.index_damaged(&path, Some(16), "it belongs to another store".into());
        }
        if h.segment_base != seg.base {
            let why = format!("it describes the segment at seq {}", h.segment_base);
            return self.index_damaged(&path, Some(32), why);
        }
        // Damage stops the walk: what the index says about bytes from there on cannot be
        // checked, and the damage is reported on the segment.
        let mut walked_to = seg.damage.as_ref().map_or(u64::MAX, |d| d.offset);
        if h.end_offset >= seg.data_end && seg.state != SegmentState::Sealed {
            // The index describes bytes past the walk. If the segment changed size since it
            // was walked, a writer appended and closed meanwhile and wrote this index: what
            // it says beyond the walk cannot be checked now. If not, the index is wrong.
            let now = self.storage.open(&seg.path, OpenMode::Read).and_then(|f| f.len());
            if now.is_ok_and(|n| n != seg.bytes) {
                walked_to = walked_to.min(seg.data_end);
            }
        }
        if h.end_offset < walked_to && !markers.contains(&(h.end_offset, h.end_seq)) {
            let why = format!(
                "its end (offset {}, seq {}) is not a seal or close frame of the segment",
                h.end_offset, h.end_seq
            );
            return self.index_damaged(&path, Some(40), why);
        }
        for (i, e) in entries.iter().enumerate().filter(|(_, e)| e.offset < walked_to) {
            let at = seg.batches.partition_point(|b| b.offset < e.offset);
            let ok = seg.batches.get(at).is_some_and(|b| {
                b.offset == e.offset && b.seq == e.seq && b.timestamp_us == e.timestamp_us
            }) && e.offset < h.end_offset;
            if !ok {
                let why = format!(
                    "entry {i} (seq {}, offset {}) does not match the batch at that offset",
                    e.seq, e.offset
                );
                let off = (INDEX_HEADER_BYTES + i * INDEX_ENTRY_BYTES) as u64;
                return self.index_damaged(&path, Some(off), why);
            }
        }
        IndexState::Ok { entries: entries.len(), end_seq: h.end_seq }
    }

    fn index_damaged(&mut self, path: &Path, off: Option<u64>, reason: String) -> IndexState {
        let msg = format!("index file is damaged: {reason}");
        self.find(Severity::Problem, FindingKind::IndexDamaged, path, off, msg);
        IndexState::Damaged { reason }
    }

    fn check_checkpoint(
        &mut self,
        bytes: &[u8],
        log_id: Option<[u8; 16]>,
        log_end: u64,
    ) -> CheckpointSurvey {
        let size = bytes.len() as u64;
        let damaged = |reason: String| CheckpointSurvey::Damaged { bytes: size, reason };
        let ck = match StreamCheckpoint::decode(bytes) {
            Ok(c) => c,
            Err(e) => return damaged(e.to_string()),
        };
        if Some(ck.log_id) != log_id {
            return damaged("it belongs to another store".into());
        }
        if ck.covered_seq > log_end {
            return damaged(format!(
                "it covers seq {} but the log's valid records end at {log_end}",
                ck.covered_seq
            ));
        }
        if let Some(seq_stream) = &self.seq_stream {
            let mut listed = 0u64;
            for s in &ck.streams {
                let Some(&no) = self.stream_ids.get(&s.id) else {
                    return damaged(format!("stream {:?} has no event in the log", s.id));
                };
                for &seq in &s.seqs {
                    let found = seq
                        .checked_sub(self.first_base())
                        .and_then(|i| usize::try_from(i).ok().and_then(|i| seq_stream.get(i)));
                    if seq >= ck.covered_seq || found != Some(&no) {
                        return damaged(format!(
                            "it lists seq {seq} in stream {:?}, the log does not",
                            s.id
                        ));
                    }
                }
                listed += s.seqs.len() as u64;
            }
            let below = seq_stream
                .iter()
                .take(ck.covered_seq.saturating_sub(self.first_base()) as usize)
                .filter(|&&n| n != u32::MAX)
                .count() as u64;
            if listed != below {
                return damaged(format!(
                    "it lists {listed} events below seq {}, the log holds {below}",
                    ck.covered_seq
                ));
            }
        }
        CheckpointSurvey::Ok { bytes: size, covered_seq: ck.covered_seq, streams: ck.streams.len() }
    }

    /// The seq `seq_stream[0]` describes: the first segment's base.
    fn first_base(&self) -> u64 {
        self.seq_base
    }
}

/// Read-only opens retried after an end of file met mid-scan.
const READ_ONLY_OPEN_RETRIES_MAX: u32 = 5;

/// [`Log::open_read_only`], retried when the scan meets an unexpected end of file: a writer
/// closing the store gives back the active segment's preallocated space (it truncates the file
/// after its close frame), and a read-only open that saw the longer file can then read past
/// the new end. A second open sees the file as it is; real damage does not go away.
fn open_read_only_retrying(storage: &Arc<dyn Storage>, dir: &Path) -> Result<Log> {
    let mut tries = 0;
    loop {
        match Log::open_read_only_with(Arc::clone(storage), dir, Options::default()) {
            Err(Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::UnexpectedEof
                    && tries < READ_ONLY_OPEN_RETRIES_MAX =>
            {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// One item read by [`read_events`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogItem {
    /// A record that decodes as an event.
    Event(crate::RecordedEvent),
    /// A record that does not (a store written through [`Log`] alone).
    Raw(Record),
}

/// Events in global order from `from_seq`, read through a read-only open of the log, each with
/// its stream version. Versions are positions in the stream, so the records before
/// `from_seq` are read too (stream ids only) to count them.
pub struct EventReader {
    storage: Arc<dyn Storage>,
    log: Log,
    cursor: Cursor,
    versions: HashMap<String, u64>,
    from_seq: u64,
    /// Records at or after this seq are not returned (yet): see [`DurableTail`].
    limit: u64,
    /// The last record returned.
    last: Option<Record>,
}

impl std::fmt::Debug for EventReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventReader").field("next_seq", &self.cursor.next_seq()).finish()
    }
}

impl EventReader {
    /// Opens the store in `dir` read-only (no lock, no writes) and positions at `from_seq`.
    pub fn open(dir: &Path, from_seq: u64) -> Result<EventReader> {
        EventReader::open_with(Arc::new(StdFs), dir, from_seq)
    }

    /// [`EventReader::open`] on the given storage.
    pub fn open_with(storage: Arc<dyn Storage>, dir: &Path, from_seq: u64) -> Result<EventReader> {
        let log = open_read_only_retrying(&storage, dir)?;
        let cursor = log.cursor(0);
        let versions = HashMap::new();
        let limit = u64::MAX;
        Ok(EventReader { storage, log, cursor, versions, from_seq, limit, last: None })
    }

    /// Re-opens the store read-only to see records appended since, continuing after the last
    /// record returned (versions carry over).
    pub fn reopen(&mut self) -> Result<()> {
        let next = self.cursor.next_seq();
        let log = open_read_only_retrying(&self.storage, self.log.dir())?;
        self.cursor = log.cursor(next);
        self.log = log;
        Ok(())
    }

    /// The seq of the next record this reader returns.
    pub fn next_seq(&self) -> u64 {
        self.cursor.next_seq().max(self.from_seq)
    }

    /// The log's readable end at open.
    pub fn visible_end(&self) -> u64 {
        self.log.visible_end()
    }

    /// The read-only log.
    pub fn log(&self) -> &Log {
        &self.log
    }
}

impl Iterator for EventReader {
    type Item = Result<LogItem>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.cursor.next_seq() >= self.limit {
                return None;
            }
            let rec = match self.cursor.next()? {
                Ok(r) => r,
                Err(e) => return Some(Err(e)),
            };
            if rec.seq >= self.from_seq {
                self.last = Some(rec.clone());
            }
            let item = match EventBody::decode(&rec.payload) {
                Ok(body) => {
                    let v = self.versions.entry(body.stream_id.to_owned()).or_insert(0);
                    let version = *v;
                    *v += 1;
                    if rec.seq < self.from_seq {
                        continue;
                    }
                    LogItem::Event(crate::RecordedEvent {
                        stream_id: body.stream_id.into(),
                        event_type: body.event_type.into(),
                        event_id: uuid::Uuid::from_bytes(body.event_id),
                        version,
                        seq: rec.seq,
                        timestamp_us: rec.timestamp_us,
                        metadata: rec.payload.slice_ref(body.metadata),
                        data: rec.payload.slice_ref(body.data),
                    })
                }
                Err(_) if rec.seq < self.from_seq => continue,
                Err(_) => LogItem::Raw(rec),
            };
            return Some(Ok(item));
        }
    }
}

/// Reads events from `from_seq` read-only; see [`EventReader`].
pub fn read_events(dir: &Path, from_seq: u64) -> Result<EventReader> {
    EventReader::open(dir, from_seq)
}

/// How a [`DurableTail`] proves records durable beyond what the files prove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailOptions {
    /// Once records past the proven end have waited this long, fdatasync the last segment
    /// through a read-only descriptor and, if that succeeds, prove them that way. `None`:
    /// never sync, wait for the writer's frames (an idle writer's last group then waits for
    /// its next append or its close).
    pub sync_after: Option<std::time::Duration>,
}

impl Default for TailOptions {
    fn default() -> Self {
        TailOptions { sync_after: Some(std::time::Duration::from_secs(1)) }
    }
}

/// An [`EventReader`] that follows a store read-only (beside a running writer) and returns a
/// record only once it is provably durable, so that no crash can take back a record it
/// returned.
///
/// A record is proven durable (format-spec.md §7.5) when
///
/// 1. a valid frame after it in the same segment has a `synced_through` at or past its end
///    (the writer wrote that frame after an fdatasync covering the record had returned; a
///    seal or close frame covers everything before it), or it is in a segment that is not
///    the last (a writer fdatasyncs a segment before it creates the next one, §6.3); or
/// 2. the writer's frames have proven nothing new for [`TailOptions::sync_after`] (a busy
///    writer's next append proves its last group within that time), and an fdatasync of
///    the last segment that this reader makes itself succeeds, after which a fresh read-only
///    open still finds it valid (every frame and record CRC checked again) and no new
///    moved-aside file (`.broken-`) has appeared in `segments/` since the reader began
///    waiting. The fdatasync writes nothing but makes what is in the page cache durable;
///    it is what keeps an idle writer's last group, which no later frame covers until the
///    next append, from waiting forever.
///
/// Rule 1 is final: the writer itself synced those bytes, and nothing takes them back. Rule 2
/// makes the bytes durable, so no crash takes them back either, but a **writer whose own
/// fdatasync fails** moves every byte after its last successful fdatasync aside and reuses
/// their seqs (`commit::discard_unsynced`, format-spec.md §6.1), whether or not this reader
/// synced them; and after a failed fdatasync the kernel may have marked the unsynced pages
/// clean, so a later fdatasync succeeds without writing them. Hence:
///
/// * the reader holds its descriptor of the last segment from the time it first saw that
///   segment, and Linux reports a writeback error to every descriptor open when it
///   happened: its own fdatasync then fails, [`DurableTail::poll`] returns that error and
///   the records past [`DurableTail::proven_end`] are not returned (they may never be
///   durable). The reader never syncs again (a retried fdatasync can succeed without the
///   data) and proves by frames only from then on;
/// * a writer that already discarded shows it: the fresh open no longer finds the records,
///   or a new `.broken-` file is there, and the proof is refused;
/// * a writer that discards later (its records were not synced by itself: `Durability::None`
///   or `Batched`, or a `Sync` group whose fdatasync stayed in flight past `sync_after` and
///   then failed) takes back records this reader returned: every poll checks that the last
///   record returned is still in the log unchanged, else returns [`Error::Retracted`].
///   Under `Durability::Sync` a group the writer acknowledged was synced by the writer and
///   is never discarded. [`TailOptions::sync_after`] `= None` avoids rule 2 altogether.
///
/// What no reader can tell: a writer whose fdatasync failed before this reader opened the
/// segment and that died before moving the bytes aside (the Note of §6.1; the writer's own
/// reopen keeps such bytes too).
pub struct DurableTail {
    reader: EventReader,
    opts: TailOptions,
    /// One past the last seq proven durable; never goes back.
    proven: u64,
    /// The last segment's base, path and a read-only descriptor of it, held from the first
    /// time this reader saw that segment as the last.
    sync_file: Option<(u64, PathBuf, Box<dyn crate::fs::StorageFile>)>,
    /// Since when the proof has not moved: the proven end then, the time, and the
    /// moved-aside files of `segments/` then.
    waiting: Option<(u64, std::time::Instant, Vec<String>)>,
    /// This reader's own fdatasync failed once.
    sync_failed: bool,
}

impl std::fmt::Debug for DurableTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableTail")
            .field("next_seq", &self.reader.next_seq())
            .field("proven", &self.proven)
            .finish()
    }
}

impl DurableTail {
    /// Opens the store in `dir` read-only on the real file system, positioned at `from_seq`.
    pub fn open(dir: &Path, from_seq: u64, opts: TailOptions) -> Result<DurableTail> {
        DurableTail::open_with(Arc::new(StdFs), dir, from_seq, opts)
    }

    /// [`DurableTail::open`] on the given storage.
    pub fn open_with(
        storage: Arc<dyn Storage>,
        dir: &Path,
        from_seq: u64,
        opts: TailOptions,
    ) -> Result<DurableTail> {
        let reader = EventReader::open_with(storage, dir, from_seq)?;
        let mut t = DurableTail {
            reader,
            opts,
            proven: 0,
            sync_file: None,
            waiting: None,
            sync_failed: false,
        };
        t.after_open()?;
        Ok(t)
    }

    /// One past the last seq proven durable: records below it are returned.
    pub fn proven_end(&self) -> u64 {
        self.proven
    }

    /// One past the last seq readable at the last open, durable or not.
    pub fn visible_end(&self) -> u64 {
        self.reader.visible_end()
    }

    /// The seq of the next record this reader returns.
    pub fn next_seq(&self) -> u64 {
        self.reader.next_seq()
    }

    /// Whether this reader's own fdatasync failed (the error [`DurableTail::poll`] returned
    /// then); it has not synced since.
    pub fn sync_failed(&self) -> bool {
        self.sync_failed
    }

    /// Re-opens the store to see what was appended since and what is proven now; when
    /// records past the proof have waited [`TailOptions::sync_after`], fdatasyncs the last
    /// segment to prove them (see [`DurableTail`]).
    pub fn poll(&mut self) -> Result<()> {
        self.reader.reopen()?;
        self.after_open()?;
        self.check_last()?;
        let target = self.reader.visible_end();
        if target <= self.proven {
            self.waiting = None;
            return Ok(());
        }
        let Some(after) = self.opts.sync_after else { return Ok(()) };
        // The wait restarts whenever the writer's frames prove more: a busy writer proves its
        // groups itself, and this reader then never syncs.
        if self.waiting.as_ref().is_none_or(|(at, _, _)| *at != self.proven) {
            self.waiting = Some((self.proven, std::time::Instant::now(), self.moved_aside()?));
        }
        match &self.waiting {
            Some((_, since, _)) if since.elapsed() >= after => self.prove_by_sync(target),
            _ => Ok(()),
        }
    }

    /// The last record returned must still be in the log as it was: the one thing that can
    /// take it back is a writer discarding what it had not synced itself, after this reader's
    /// fdatasync proved it (see [`DurableTail`]); a discard cuts a suffix, so checking the
    /// last record returned covers every earlier one.
    fn check_last(&self) -> Result<()> {
        let Some(last) = &self.reader.last else { return Ok(()) };
        let same = match self.reader.log().read(last.seq) {
            Ok(r) => r.payload == last.payload && r.timestamp_us == last.timestamp_us,
            Err(Error::SeqOutOfRange { .. }) => false,
            // Purged (`Log::purge_before`): gone on purpose, not taken back.
            Err(Error::MissingSegments { .. }) => true,
            Err(e) => return Err(e),
        };
        if same { Ok(()) } else { Err(Error::Retracted { seq: last.seq }) }
    }

    /// Takes the proof the files give, and a descriptor of a new last segment.
    fn after_open(&mut self) -> Result<()> {
        let framed = self.reader.log().durable_head().map_or(0, |h| h + 1);
        self.set_proven(framed);
        let Some((base, path)) = self.reader.log().last_segment() else { return Ok(()) };
        if self.sync_file.as_ref().is_none_or(|(b, _, _)| *b != base) {
            let file = self
                .reader
                .storage
                .open(&path, OpenMode::Read)
                .map_err(|e| Error::io("open", &path, e))?;
            self.sync_file = Some((base, path, file));
        }
        Ok(())
    }

    fn set_proven(&mut self, end: u64) {
        self.proven = self.proven.max(end);
        self.reader.limit = self.proven;
    }

    /// The moved-aside files in `segments/`.
    fn moved_aside(&self) -> Result<Vec<String>> {
        let seg_dir = names::segments_dir(self.reader.log().dir());
        let mut found =
            self.reader.storage.read_dir(&seg_dir).map_err(|e| Error::io("list", &seg_dir, e))?;
        found.retain(|n| names::parse_segment_dir_entry(n) == SegmentDirEntry::Broken);
        Ok(found)
    }

    /// Proves the records below `target` (visible at the last open) by an fdatasync of the
    /// last segment, then a fresh open that still finds them valid.
    fn prove_by_sync(&mut self, target: u64) -> Result<()> {
        let Some((base, path, file)) = &self.sync_file else { return Ok(()) };
        // Records in earlier segments are proven by the files already; anything else is odd
        // enough to wait for a frame.
        if self.proven < *base {
            return Ok(());
        }
        let base = *base;
        if let Err(e) = file.sync_data() {
            self.opts.sync_after = None;
            self.sync_failed = true;
            self.waiting = None;
            return Err(Error::io("sync", path, e));
        }
        let before = self.waiting.take().map(|(_, _, names)| names).unwrap_or_default();
        self.reader.reopen()?;
        self.after_open()?;
        self.check_last()?;
        if self.moved_aside()?.iter().any(|n| !before.contains(n)) {
            // A writer moved bytes aside meanwhile (a failed write or fdatasync, or a new
            // writer's recovery cutting a torn tail): prove nothing by this sync.
            return Ok(());
        }
        if self.reader.log().last_segment().map(|(b, _)| b) != Some(base) {
            // The writer rolled: the seal proves the old segment, and after_open took it.
            return Ok(());
        }
        let end = target.min(self.reader.visible_end());
        self.set_proven(end);
        Ok(())
    }
}

impl Iterator for DurableTail {
    type Item = Result<LogItem>;

    /// The next record below [`DurableTail::proven_end`]; `None` at the proven end (call
    /// [`DurableTail::poll`] and iterate again).
    fn next(&mut self) -> Option<Self::Item> {
        self.reader.next()
    }
}
