//! Every file and directory name the engine creates is built and parsed here, and only here.
//!
//! Segment and index files are named after the segment's base seq, zero-padded to 20 digits
//! so that `ls` sorts them numerically (as Kafka's `LogFileUtils` does).

use std::path::{Path, PathBuf};

/// The lock file at the root of a store directory.
pub const LOCK_FILE: &str = "LOCK";
/// The stream-index checkpoint at the root of a store directory.
pub const STREAM_CHECKPOINT_FILE: &str = "streams.ckpt";
/// The log-start marker at the root of a store directory (format-spec.md §16.2).
pub const LOG_START_FILE: &str = "log.start";
/// The truncate-intent marker at the root of a store directory (format-spec.md §16.1).
pub const LOG_TRUNCATE_FILE: &str = "log.truncate";
/// The directory holding segments and their indexes.
pub const SEGMENTS_DIR: &str = "segments";
/// Suffix of a temp file being written for an atomic replace or a segment being created.
pub const TMP_SUFFIX: &str = ".tmp";
/// The spare segment a background thread prepares (zero-filled and synced) for the next
/// roll (format-spec.md §6.2). A temp file: it never holds a record under this name.
pub const SPARE_SEGMENT_FILE: &str = "spare.seg.tmp";
/// Extension of segment files.
pub const SEGMENT_EXT: &str = "seg";
/// Extension of index files.
pub const INDEX_EXT: &str = "idx";
/// Middle part of the name of bytes a recovery or repair moved aside.
pub const BROKEN_MARK: &str = "broken";

/// Where `repair` keeps every byte it takes out of the store (format-spec.md §15).
pub const QUARANTINE_DIR: &str = "quarantine";
/// The report a repair writes into its quarantine directory.
pub const REPAIR_REPORT_FILE: &str = "REPORT.txt";

/// `<name>.from-<offset>`: bytes `[offset, end)` copied out of file `name` before it was cut.
pub fn cut_bytes_name(name: &str, offset: u64) -> String {
    format!("{name}.from-{offset}")
}

/// `repair-<unix_ms>[-<k>]`: one repair run's directory inside `quarantine/`.
pub fn repair_run_name(unix_ms: u64, k: u32) -> String {
    if k == 0 { format!("repair-{unix_ms}") } else { format!("repair-{unix_ms}-{k}") }
}

/// `<dir>/segments`.
pub fn segments_dir(dir: &Path) -> PathBuf {
    dir.join(SEGMENTS_DIR)
}

/// `<base:020>.seg`.
pub fn segment_file_name(base: u64) -> String {
    format!("{base:020}.{SEGMENT_EXT}")
}

/// `<base:020>.idx`.
pub fn index_file_name(base: u64) -> String {
    format!("{base:020}.{INDEX_EXT}")
}

/// `<base:020>.seg.broken-<offset>`: bytes cut from a segment at `offset`, kept for forensics.
pub fn broken_tail_name(base: u64, offset: u64) -> String {
    format!("{base:020}.{SEGMENT_EXT}.{BROKEN_MARK}-{offset}")
}

/// What a name found in the segments directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentDirEntry {
    /// A segment file with this base seq.
    Segment(u64),
    /// An index file for the segment with this base seq.
    Index(u64),
    /// A temp file of the engine's own (an interrupted create or atomic replace).
    Temp,
    /// Bytes moved aside by recovery or repair.
    Broken,
    /// Anything else: not the engine's, never touched.
    Foreign,
}

/// Classifies a name found in the segments directory. Only exact 20-digit names parse as
/// segments or indexes, so `0.seg` or `+0000000000000000001.seg` are foreign.
pub fn parse_segment_dir_entry(name: &str) -> SegmentDirEntry {
    if name == SPARE_SEGMENT_FILE {
        return SegmentDirEntry::Temp;
    }
    if let Some(stem) = name.strip_suffix(TMP_SUFFIX)
        && parse_base(stem).is_some()
    {
        return SegmentDirEntry::Temp;
    }
    if let Some((stem, _)) = name.split_once(&format!(".{SEGMENT_EXT}.{BROKEN_MARK}-"))
        && parse_digits(stem).is_some()
    {
        return SegmentDirEntry::Broken;
    }
    match parse_base(name) {
        Some((base, true)) => SegmentDirEntry::Segment(base),
        Some((base, false)) => SegmentDirEntry::Index(base),
        None => SegmentDirEntry::Foreign,
    }
}

/// Parses `<20 digits>.seg` (true) or `<20 digits>.idx` (false).
fn parse_base(name: &str) -> Option<(u64, bool)> {
    let (stem, ext) = name.split_once('.')?;
    let is_segment = match ext {
        SEGMENT_EXT => true,
        INDEX_EXT => false,
        _ => return None,
    };
    Some((parse_digits(stem)?, is_segment))
}

fn parse_digits(stem: &str) -> Option<u64> {
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// The directory holding aggregate snapshots (format-spec.md §13).
pub const SNAPSHOTS_DIR: &str = "snapshots";
/// Extension of snapshot files.
pub const SNAPSHOT_EXT: &str = "snap";
/// Prefix of a snapshot file name that spells its stream id out.
const SNAPSHOT_PLAIN_PREFIX: &str = "p-";
/// Prefix of a snapshot file name that carries a hash of its (long) stream id.
const SNAPSHOT_HASHED_PREFIX: &str = "h-";
/// Longest encoded id spelled out in full; a longer one is hashed. Keeps every name, with
/// its `.tmp` or `.broken-<n>` suffix, far below the 255 bytes file systems allow.
const SNAPSHOT_PLAIN_ID_BYTES_MAX: usize = 160;
/// Bytes of the readable prefix kept in front of the hash of a long id.
const SNAPSHOT_HASHED_PREFIX_BYTES_MAX: usize = 48;

/// `<dir>/snapshots`.
pub fn snapshots_dir(dir: &Path) -> PathBuf {
    dir.join(SNAPSHOTS_DIR)
}

/// Appends the file-name encoding of `id` (format-spec.md §13.1): the bytes `a-z`, `0-9`
/// and `-` stand for themselves, every other byte is `_` and two lowercase hex digits. The
/// result uses only lowercase letters, digits, `-` and `_`, so no id can name a path
/// separator, a dot, a NUL, or two names that differ only in case.
fn escape_id(id: &str, out: &mut String) {
    for &b in id.as_bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push('_');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Reverses [`escape_id`], accepting only its canonical output.
fn unescape_id(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' {
            out.push(b);
        } else if b == b'_' {
            let (hi, lo) = (bytes.next()?, bytes.next()?);
            let hi = HEX.iter().position(|&h| h == hi)?;
            let lo = HEX.iter().position(|&h| h == lo)?;
            let v = (hi << 4 | lo) as u8;
            if v.is_ascii_lowercase() || v.is_ascii_digit() || v == b'-' {
                return None;
            }
            out.push(v);
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

/// The snapshot file name of stream `id` (format-spec.md §13.1): `p-<escaped id>.snap`
/// when the escaped id has at most 160 bytes, else `h-<first escapes of it>.<SHA-256 of the
/// id, 64 lowercase hex digits>.snap`. Injective for the plain form; the hashed form relies
/// on SHA-256, and the full id inside the file is checked on load.
pub fn snapshot_file_name(id: &str) -> String {
    let mut escaped = String::with_capacity(id.len() + 8);
    escape_id(id, &mut escaped);
    if escaped.len() <= SNAPSHOT_PLAIN_ID_BYTES_MAX {
        return format!("{SNAPSHOT_PLAIN_PREFIX}{escaped}.{SNAPSHOT_EXT}");
    }
    // Cut the readable prefix between escapes, never inside one.
    let mut cut = 0;
    let mut iter = escaped.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        let unit = if c == '_' { 3 } else { 1 };
        if i + unit > SNAPSHOT_HASHED_PREFIX_BYTES_MAX {
            break;
        }
        cut = i + unit;
        if c == '_' {
            iter.next();
            iter.next();
        }
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(id.as_bytes());
    let mut hash = String::with_capacity(64);
    for b in digest {
        hash.push(char::from(HEX[usize::from(b >> 4)]));
        hash.push(char::from(HEX[usize::from(b & 15)]));
    }
    format!("{SNAPSHOT_HASHED_PREFIX}{}.{hash}.{SNAPSHOT_EXT}", &escaped[..cut])
}

/// `<snapshot file name>.broken-<n>`: a snapshot set aside by the aggregate layer.
pub fn snapshot_broken_name(file_name: &str, n: u32) -> String {
    format!("{file_name}.{BROKEN_MARK}-{n}")
}

/// What a name found in the snapshots directory is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotDirEntry {
    /// The snapshot of the stream with this id (a plain name).
    Plain(String),
    /// The snapshot of a long stream id: its readable prefix, decoded (a prefix of the id).
    Hashed(String),
    /// A temp file of an atomic replace in progress or interrupted.
    Temp,
    /// A snapshot set aside.
    Broken,
    /// Anything else: not the engine's, never touched.
    Foreign,
}

/// Classifies a name found in the snapshots directory.
pub fn parse_snapshot_dir_entry(name: &str) -> SnapshotDirEntry {
    if let Some(stem) = name.strip_suffix(TMP_SUFFIX)
        && !matches!(parse_snapshot_name(stem), SnapshotDirEntry::Foreign)
    {
        return SnapshotDirEntry::Temp;
    }
    if let Some((stem, n)) = name.rsplit_once(&format!(".{BROKEN_MARK}-"))
        && parse_digits_any(n)
        && !matches!(parse_snapshot_name(stem), SnapshotDirEntry::Foreign)
    {
        return SnapshotDirEntry::Broken;
    }
    parse_snapshot_name(name)
}

fn parse_digits_any(s: &str) -> bool {
    !s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit())
}

fn parse_snapshot_name(name: &str) -> SnapshotDirEntry {
    let Some(stem) = name.strip_suffix(&format!(".{SNAPSHOT_EXT}")) else {
        return SnapshotDirEntry::Foreign;
    };
    if let Some(escaped) = stem.strip_prefix(SNAPSHOT_PLAIN_PREFIX)
        && !escaped.is_empty()
        && escaped.len() <= SNAPSHOT_PLAIN_ID_BYTES_MAX
        && let Some(id) = unescape_id(escaped)
    {
        return SnapshotDirEntry::Plain(id);
    }
    if let Some(rest) = stem.strip_prefix(SNAPSHOT_HASHED_PREFIX)
        && let Some((escaped, hash)) = rest.split_once('.')
        && escaped.len() <= SNAPSHOT_HASHED_PREFIX_BYTES_MAX
        && hash.len() == 64
        && hash.bytes().all(|b| HEX.contains(&b))
        && let Some(prefix) = unescape_id(escaped)
    {
        return SnapshotDirEntry::Hashed(prefix);
    }
    SnapshotDirEntry::Foreign
}

/// The directory holding projection checkpoints, in a store directory.
pub const PROJECTIONS_DIR: &str = "projections";
/// Extension of projection checkpoint files.
pub const PROJECTION_CHECKPOINT_EXT: &str = "ckpt";

/// `<dir>/projections`.
pub fn projections_dir(dir: &Path) -> PathBuf {
    dir.join(PROJECTIONS_DIR)
}

/// `<encoded name>.ckpt`: the name with every byte outside `[A-Za-z0-9_-]` written as `%XX`
/// (upper-case hex), so no name can leave its directory, hide (leading `.`) or collide with
/// a temp file (format-spec.md §14).
pub fn projection_checkpoint_file_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 5);
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.push('.');
    out.push_str(PROJECTION_CHECKPOINT_EXT);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_strangers_are_foreign() {
        for base in [0, 1, 42, u64::MAX] {
            let s = segment_file_name(base);
            assert_eq!(s.len(), 24);
            assert_eq!(parse_segment_dir_entry(&s), SegmentDirEntry::Segment(base));
            assert_eq!(
                parse_segment_dir_entry(&index_file_name(base)),
                SegmentDirEntry::Index(base)
            );
            assert_eq!(parse_segment_dir_entry(&format!("{s}.tmp")), SegmentDirEntry::Temp);
            assert_eq!(parse_segment_dir_entry(&format!("{s}.tmp.tmp")), SegmentDirEntry::Foreign);
            assert_eq!(parse_segment_dir_entry(SPARE_SEGMENT_FILE), SegmentDirEntry::Temp);
            assert_eq!(parse_segment_dir_entry("spare.seg"), SegmentDirEntry::Foreign);
            assert_eq!(
                parse_segment_dir_entry(&broken_tail_name(base, 7)),
                SegmentDirEntry::Broken
            );
        }
        for name in ["0.seg", "+0000000000000000001.seg", "99999999999999999999.seg", "x", ""] {
            assert_eq!(parse_segment_dir_entry(name), SegmentDirEntry::Foreign, "{name}");
        }
    }

    #[test]
    fn snapshot_names_are_safe_and_round_trip() {
        let long = "Z".repeat(10 << 10);
        for id in ["account-1", "../../etc/passwd", "/abs", "a\0b", "A", "a", "_", "_41", ".", ".."]
        {
            let name = snapshot_file_name(id);
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
            );
            assert_eq!(parse_snapshot_dir_entry(&name), SnapshotDirEntry::Plain(id.into()), "{id}");
            assert_eq!(parse_snapshot_dir_entry(&format!("{name}.tmp")), SnapshotDirEntry::Temp);
            assert_eq!(
                parse_snapshot_dir_entry(&snapshot_broken_name(&name, 3)),
                SnapshotDirEntry::Broken
            );
        }
        assert_ne!(snapshot_file_name("A"), snapshot_file_name("a"));
        let name = snapshot_file_name(&long);
        assert!(name.len() < 140, "{}", name.len());
        let parsed = parse_snapshot_dir_entry(&name);
        assert!(matches!(parsed, SnapshotDirEntry::Hashed(p) if long.starts_with(&p)));
        // Non-canonical escapes do not parse, so parsing is the inverse of building.
        for name in
            ["p-_61.snap", "p-_4A.snap", "p-.snap", "p-A.snap", "x.snap", "p-a.snap.tmp.tmp"]
        {
            assert_eq!(parse_snapshot_dir_entry(name), SnapshotDirEntry::Foreign, "{name}");
        }
    }

    #[test]
    fn projection_names_are_encoded_into_one_safe_component() {
        assert_eq!(projection_checkpoint_file_name("orders_by-day"), "orders_by-day.ckpt");
        assert_eq!(projection_checkpoint_file_name("../x y"), "%2E%2E%2Fx%20y.ckpt");
        assert_eq!(projection_checkpoint_file_name("é"), "%C3%A9.ckpt");
        let long = "/".repeat(crate::limits::PROJECTION_NAME_BYTES_MAX);
        assert!(projection_checkpoint_file_name(&long).len() + TMP_SUFFIX.len() <= 255);
    }
}
