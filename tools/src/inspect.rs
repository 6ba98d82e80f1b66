//! The report behind `annal stat`, and the verdicts and error summaries every command shares.
//! `stat` builds a structured report, which the binary prints as text
//! ([`StatReport::write_text`]) or JSON (serde).
//!
//! By default `stat` opens the store with [`Log::open`], so it takes the store's writer lock
//! (a store in use by another process gives [`Verdict::Locked`]) and runs recovery, which may
//! cut a torn tail (moving the bytes aside) or finish an interrupted segment roll; closing the
//! store writes a close frame. With [`Access::ReadOnly`] it uses [`Log::open_read_only`]
//! instead: no lock, no writes, and a torn tail is reported but stays. (`annal verify` is
//! read-only always: see [`crate::check`].)

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use annal::format::decode_index;
use annal::limits::{INDEX_ENTRIES_MAX, INDEX_ENTRY_BYTES, INDEX_HEADER_BYTES};
use annal::{Error, Log, Options, RecoveryReport};
use serde::Serialize;

use crate::escape;

/// The directory inside a store that holds segments and their indexes (format-spec.md §2).
const SEGMENTS_DIR: &str = "segments";

/// Digits of the zero-padded base seq in segment and index file names (format-spec.md §2).
const NAME_DIGITS: usize = 20;

/// Largest index file that can be valid: a header and `INDEX_ENTRIES_MAX` entries. A larger
/// file is reported as damaged without being read.
const INDEX_FILE_BYTES_MAX: u64 =
    INDEX_HEADER_BYTES as u64 + INDEX_ENTRIES_MAX as u64 * INDEX_ENTRY_BYTES as u64;

/// How a command ended, and so the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Nothing wrong: exit code 0.
    Ok,
    /// Problems were found or the store could not be read: exit code 1.
    Problems,
    /// Another handle holds the store's lock: exit code 3.
    Locked,
}

impl Verdict {
    /// The documented process exit code (2, usage errors, is clap's).
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Ok => 0,
            Verdict::Problems => 1,
            Verdict::Locked => 3,
        }
    }
}

/// How an inspection opens the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// As the writer ([`Log::open`]): takes the lock, recovery may repair (cut a torn tail,
    /// finish a seal), closing writes a close frame and index.
    Writer,
    /// Read only ([`Log::open_read_only`]): no lock, nothing written.
    ReadOnly,
}

/// An error, flattened into the fields a script needs.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorInfo {
    /// A stable name: `no_store`, `locked`, `corrupt`, `missing_segments`, `io`,
    /// `storage_full`, `poisoned`, `read_only`, `invalid_options`, `closed` or `other`.
    pub kind: &'static str,
    /// The full message.
    pub message: String,
    /// The file concerned, if the error names one.
    #[serde(serialize_with = "ser::opt_path")]
    pub file: Option<PathBuf>,
    /// The byte offset in that file, for corruption.
    pub offset: Option<u64>,
}

impl ErrorInfo {
    /// Flattens an engine error.
    pub fn from_error(e: &Error) -> Self {
        let (kind, file, offset) = match e {
            Error::Locked { dir } => ("locked", Some(dir.clone()), None),
            Error::Corrupt { file, offset, .. } => ("corrupt", Some(file.clone()), Some(*offset)),
            Error::MissingSegments { .. } => ("missing_segments", None, None),
            Error::Io { path, .. } => ("io", Some(path.clone()), None),
            Error::StorageFull { path, .. } => ("storage_full", Some(path.clone()), None),
            Error::Poisoned { .. } => ("poisoned", None, None),
            Error::NoStore { dir } => ("no_store", Some(dir.clone()), None),
            Error::ReadOnly => ("read_only", None, None),
            Error::InvalidOptions(_) => ("invalid_options", None, None),
            Error::Closed => ("closed", None, None),
            _ => ("other", None, None),
        };
        ErrorInfo { kind, message: e.to_string(), file, offset }
    }

    fn no_store(dir: &Path, why: &str) -> Self {
        ErrorInfo {
            kind: "no_store",
            message: format!("no annal store at {}: {why}", dir.display()),
            file: Some(dir.to_path_buf()),
            offset: None,
        }
    }

    fn verdict(&self) -> Verdict {
        if self.kind == "locked" { Verdict::Locked } else { Verdict::Problems }
    }
}

/// A torn tail that recovery cut (see [`annal::TruncatedTail`]).
#[derive(Debug, Clone, Serialize)]
pub struct TruncatedInfo {
    /// The segment file that was cut.
    #[serde(serialize_with = "ser::path")]
    pub segment: PathBuf,
    /// Offset of the first byte cut.
    pub offset: u64,
    /// Bytes cut, up to the last non-zero byte.
    pub bytes: u64,
    /// Records in batch headers that still decoded in the cut bytes.
    pub events: u64,
    /// Why the first cut frame was invalid.
    pub cause: String,
    /// Where the cut bytes were copied first.
    #[serde(serialize_with = "ser::opt_path")]
    pub moved_to: Option<PathBuf>,
}

/// What opening the store found and did (see [`annal::RecoveryReport`]).
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryInfo {
    /// The store had been closed cleanly.
    pub clean: bool,
    /// Segments found.
    pub segments: usize,
    /// The seq the next append gets.
    pub next_seq: u64,
    /// A torn tail that was cut, if any.
    pub truncated: Option<TruncatedInfo>,
    /// Base seqs of segments whose interrupted seal was completed.
    pub seals_completed: Vec<u64>,
    /// Leftover temp files that were removed.
    pub temp_files_removed: Vec<String>,
    /// Bytes of records scanned.
    pub scanned_bytes: u64,
    /// Wall time of the open, in milliseconds.
    pub open_ms: f64,
}

impl RecoveryInfo {
    fn new(r: &RecoveryReport, open_ms: f64) -> Self {
        RecoveryInfo {
            clean: r.clean,
            segments: r.segments,
            next_seq: r.next_seq,
            truncated: r.truncated.as_ref().map(|t| TruncatedInfo {
                segment: t.segment.clone(),
                offset: t.offset,
                bytes: t.bytes,
                events: t.events,
                cause: t.cause.to_string(),
                moved_to: t.moved_to.clone(),
            }),
            seals_completed: r.seals_completed.clone(),
            temp_files_removed: r.temp_files_removed.clone(),
            scanned_bytes: r.scanned_bytes,
            open_ms,
        }
    }
}

/// The state of a segment's index file. Index files are caches: none of these is a problem
/// for the store, the engine rebuilds what it needs.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum IndexStatus {
    /// Decodes, belongs to this store and segment, and covers the segment up to its end.
    Ok {
        /// Sparse entries.
        entries: usize,
    },
    /// Valid, but written before the segment's last records (the active segment after a
    /// crash, or before its first clean close). It is extended from the segment on use.
    Stale {
        /// The seq it covers up to.
        end_seq: u64,
    },
    /// No index file.
    Missing,
    /// Unreadable, damaged or not this segment's. It will be rebuilt.
    Damaged {
        /// Why.
        reason: String,
    },
}

/// One segment file.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentInfo {
    /// Seq of its first record.
    pub base: u64,
    /// Its path.
    #[serde(serialize_with = "ser::path")]
    pub file: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// The state of its index file.
    pub index: IndexStatus,
}

/// A summary of an open store.
#[derive(Debug, Clone, Serialize)]
pub struct StoreSummary {
    /// The store directory.
    #[serde(serialize_with = "ser::path")]
    pub dir: PathBuf,
    /// The store's random id, in UUID notation.
    pub log_id: String,
    /// Segment files, by base seq.
    pub segments: Vec<SegmentInfo>,
    /// Other files in the segments directory: tails recovery moved aside (`*.broken-*`) and
    /// files that are not the engine's.
    #[serde(serialize_with = "ser::paths")]
    pub other_files: Vec<PathBuf>,
    /// The seq the next append gets (= records in the log).
    pub next_seq: u64,
    /// The highest durable seq, if any record is durable.
    pub durable_head: Option<u64>,
    /// What opening the store found and did.
    pub recovery: RecoveryInfo,
}

/// The result of `annal stat`.
#[derive(Debug, Clone, Serialize)]
pub struct StatReport {
    /// How the command ended.
    pub verdict: Verdict,
    /// Why the store could not be opened, if it could not.
    pub error: Option<ErrorInfo>,
    /// The summary, if the store opened.
    pub store: Option<StoreSummary>,
}

/// Options the inspect commands open a store with. A store does not record the options it
/// was written with, so reads accept records up to the engine's hard ceiling, and no space is
/// reserved for the active segment, since these commands append nothing.
pub fn read_options() -> Options {
    let max_record_bytes = annal::limits::RECORD_BODY_BYTES_MAX;
    Options {
        max_record_bytes,
        // Only needs to be large enough for `Options::validate`: nothing is appended.
        segment_bytes: 2 * u64::from(max_record_bytes),
        preallocate: false,
        ..Options::default()
    }
}

/// Summarises the store in `dir` without reading its records.
pub fn stat(dir: &Path, access: Access) -> StatReport {
    match open(dir, access) {
        Err(error) => StatReport { verdict: error.verdict(), error: Some(error), store: None },
        Ok((log, store)) => {
            let mut report = StatReport { verdict: Verdict::Ok, error: None, store: Some(store) };
            if let Err(e) = log.close() {
                report.verdict = Verdict::Problems;
                report.error = Some(ErrorInfo::from_error(&e));
            }
            report
        }
    }
}

/// Opens the store (refusing to create one) and summarises it.
fn open(dir: &Path, access: Access) -> Result<(Log, StoreSummary), ErrorInfo> {
    check_store_exists(dir)?;
    let started = Instant::now();
    let opened = match access {
        Access::Writer => Log::open(dir, read_options()),
        Access::ReadOnly => Log::open_read_only(dir, read_options()),
    };
    let log = opened.map_err(|e| ErrorInfo::from_error(&e))?;
    let open_ms = started.elapsed().as_secs_f64() * 1e3;
    let summary = summarise(&log, dir, open_ms).map_err(|e| ErrorInfo {
        kind: "io",
        message: format!("listing {}: {e}", dir.join(SEGMENTS_DIR).display()),
        file: Some(dir.join(SEGMENTS_DIR)),
        offset: None,
    })?;
    Ok((log, summary))
}

/// `Log::open` creates a store where there is none; an inspection must not, so it looks for
/// at least one segment file first.
fn check_store_exists(dir: &Path) -> Result<(), ErrorInfo> {
    let seg_dir = dir.join(SEGMENTS_DIR);
    if !dir.is_dir() {
        return Err(ErrorInfo::no_store(dir, "the directory does not exist"));
    }
    let entries = match std::fs::read_dir(&seg_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ErrorInfo::no_store(dir, "it has no segments/ directory"));
        }
        Err(e) => {
            return Err(ErrorInfo {
                kind: "io",
                message: format!("listing {}: {e}", seg_dir.display()),
                file: Some(seg_dir),
                offset: None,
            });
        }
    };
    let has_segment = entries
        .filter_map(|e| e.ok())
        .any(|e| matches!(classify(e.file_name().as_encoded_bytes()), Entry::Segment(_)));
    if has_segment {
        Ok(())
    } else {
        Err(ErrorInfo::no_store(dir, "segments/ holds no segment file"))
    }
}

/// What a name in the segments directory is (format-spec.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Segment(u64),
    Index,
    Other,
}

fn classify(name: &[u8]) -> Entry {
    let parse = |stem: &[u8]| -> Option<u64> {
        if stem.len() != NAME_DIGITS || !stem.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(stem).ok()?.parse().ok()
    };
    if let Some(base) = name.strip_suffix(b".seg").and_then(parse) {
        return Entry::Segment(base);
    }
    if name.strip_suffix(b".idx").and_then(parse).is_some() {
        return Entry::Index;
    }
    Entry::Other
}

fn summarise(log: &Log, dir: &Path, open_ms: f64) -> io::Result<StoreSummary> {
    let seg_dir = dir.join(SEGMENTS_DIR);
    let mut segments = Vec::new();
    let mut other_files = Vec::new();
    for entry in std::fs::read_dir(&seg_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        match classify(name.as_encoded_bytes()) {
            Entry::Segment(base) => {
                let bytes = entry.metadata()?.len();
                let file = entry.path();
                segments.push(SegmentInfo { base, file, bytes, index: IndexStatus::Missing });
            }
            Entry::Index => {}
            Entry::Other => other_files.push(entry.path()),
        }
    }
    segments.sort_by_key(|s| s.base);
    other_files.sort();
    let log_id = log.log_id();
    let next_seq = log.recovery_report().next_seq;
    let ends: Vec<u64> = segments.iter().skip(1).map(|s| s.base).chain([next_seq]).collect();
    for (seg, end) in segments.iter_mut().zip(ends) {
        let path = seg_dir.join(format!("{:0width$}.idx", seg.base, width = NAME_DIGITS));
        seg.index = index_status(&path, &log_id, seg.base, end);
    }
    Ok(StoreSummary {
        dir: dir.to_path_buf(),
        log_id: uuid_text(&log_id),
        segments,
        other_files,
        next_seq,
        durable_head: log.durable_head(),
        recovery: RecoveryInfo::new(log.recovery_report(), open_ms),
    })
}

fn index_status(path: &Path, log_id: &[u8; 16], base: u64, end_seq: u64) -> IndexStatus {
    let damaged = |reason: String| IndexStatus::Damaged { reason };
    match std::fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return IndexStatus::Missing,
        Err(e) => return damaged(format!("cannot stat: {e}")),
        Ok(m) if m.len() > INDEX_FILE_BYTES_MAX => {
            return damaged(format!("{} bytes: larger than any valid index", m.len()));
        }
        Ok(_) => {}
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return damaged(format!("cannot read: {e}")),
    };
    match decode_index(&bytes) {
        Err(e) => damaged(e.to_string()),
        Ok((h, _)) if &h.log_id != log_id => damaged("belongs to another store".into()),
        Ok((h, _)) if h.segment_base != base => {
            damaged(format!("describes the segment at seq {}", h.segment_base))
        }
        Ok((h, _)) if h.end_seq > end_seq => {
            damaged(format!("claims records up to seq {} beyond the segment", h.end_seq))
        }
        Ok((h, _)) if h.end_seq < end_seq => IndexStatus::Stale { end_seq: h.end_seq },
        Ok((_, entries)) => IndexStatus::Ok { entries: entries.len() },
    }
}

fn uuid_text(id: &[u8; 16]) -> String {
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let part = |r: std::ops::Range<usize>| hex.get(r).unwrap_or_default().to_string();
    format!("{}-{}-{}-{}-{}", part(0..8), part(8..12), part(12..16), part(16..20), part(20..32))
}

/// `1234567` as `1,234,567`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `bytes` in the largest binary unit that keeps it at or above 1.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    let name = UNITS.get(unit).copied().unwrap_or("B");
    if unit == 0 { format!("{bytes} B") } else { format!("{v:.1} {name}") }
}

/// Serialises a report as pretty JSON with every control character escaped.
pub fn to_json<T: Serialize>(report: &T) -> String {
    match serde_json::to_string_pretty(report) {
        Ok(s) => escape::json(s),
        // Serialising these plain structs cannot fail; say so in JSON if it ever does.
        Err(e) => format!("{{\"error\": {:?}}}", e.to_string()),
    }
}

fn write_error(out: &mut dyn Write, e: &ErrorInfo) -> io::Result<()> {
    writeln!(out, "error ({}): {}", e.kind, escape::text(&e.message))
}

fn write_store(out: &mut dyn Write, s: &StoreSummary) -> io::Result<()> {
    writeln!(out, "  log id         {}", s.log_id)?;
    let total: u64 = s.segments.iter().map(|g| g.bytes).sum();
    writeln!(out, "  segments       {} ({} on disk)", s.segments.len(), human_bytes(total))?;
    for g in &s.segments {
        let name = g.file.file_name().map(Path::new).unwrap_or(&g.file);
        let index = match &g.index {
            IndexStatus::Ok { entries } => format!("index ok, {entries} entries"),
            IndexStatus::Stale { end_seq } => format!("index stale (up to seq {end_seq})"),
            IndexStatus::Missing => "no index file".to_string(),
            IndexStatus::Damaged { reason } => format!("index damaged: {reason}"),
        };
        let name = escape::path(name);
        let size = human_bytes(g.bytes);
        writeln!(out, "    {name}  {size:>10}  base seq {}, {}", g.base, escape::text(&index))?;
    }
    for f in &s.other_files {
        writeln!(out, "    other file: {}", escape::path(f))?;
    }
    writeln!(out, "  next seq       {}", s.next_seq)?;
    let head = s.durable_head.map_or_else(|| "none (empty log)".to_string(), |h| h.to_string());
    writeln!(out, "  durable head   {head}")?;
    let r = &s.recovery;
    let state = if r.clean { "clean (closed cleanly last time)" } else { "not clean (scanned)" };
    writeln!(out, "  recovery       {state}")?;
    writeln!(
        out,
        "                 scanned {} bytes, opened in {:.1} ms",
        grouped(r.scanned_bytes),
        r.open_ms
    )?;
    if let Some(t) = &r.truncated {
        let did = if t.moved_to.is_some() { "cut" } else { "found" };
        writeln!(
            out,
            "                 {did} a torn tail: {} bytes at offset {} of {}",
            t.bytes,
            t.offset,
            escape::path(&t.segment)
        )?;
        writeln!(out, "                 cause: {}", escape::text(&t.cause))?;
        if let Some(m) = &t.moved_to {
            writeln!(out, "                 cut bytes moved to {}", escape::path(m))?;
        }
    }
    if !r.seals_completed.is_empty() {
        writeln!(
            out,
            "                 completed interrupted seals of segments {:?}",
            r.seals_completed
        )?;
    }
    for t in &r.temp_files_removed {
        writeln!(out, "                 removed leftover temp file {}", escape::text(t))?;
    }
    Ok(())
}

impl StatReport {
    /// Writes the report for a person.
    pub fn write_text(&self, out: &mut dyn Write, dir: &Path) -> io::Result<()> {
        writeln!(out, "annal stat {}", escape::path(dir))?;
        if let Some(s) = &self.store {
            write_store(out, s)?;
        }
        if let Some(e) = &self.error {
            write_error(out, e)?;
        }
        Ok(())
    }
}

/// Paths in JSON. serde refuses paths that are not UTF-8; these become strings with U+FFFD
/// in place of the bytes that are not (the text output shows those bytes as `\xNN`).
mod ser {
    use std::path::{Path, PathBuf};

    use serde::Serializer;

    pub fn path<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&p.to_string_lossy())
    }

    pub fn opt_path<S: Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        match p {
            Some(p) => path(p, s),
            None => s.serialize_none(),
        }
    }

    pub fn paths<S: Serializer>(ps: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(ps.iter().map(|p| p.to_string_lossy()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_like_the_engine_writes_them() {
        assert_eq!(classify(b"00000000000000000042.seg"), Entry::Segment(42));
        assert_eq!(classify(b"00000000000000000042.idx"), Entry::Index);
        for other in [&b"42.seg"[..], b"00000000000000000042.seg.tmp", b"x", b"", b"\xff.seg"] {
            assert_eq!(classify(other), Entry::Other);
        }
        assert_eq!(classify(b"00000000000000000042.seg.broken-4096"), Entry::Other);
        assert_eq!(classify(b"99999999999999999999.seg"), Entry::Other, "overflows u64");
    }

    #[test]
    fn number_formatting() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1234567), "1,234,567");
        assert_eq!(human_bytes(100), "100 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(uuid_text(&[0xab; 16]), "abababab-abab-abab-abab-abababababab");
    }
}
