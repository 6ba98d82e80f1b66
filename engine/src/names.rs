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
/// Extension of segment files.
pub const SEGMENT_EXT: &str = "seg";
/// Extension of index files.
pub const INDEX_EXT: &str = "idx";
/// Middle part of the name of bytes a recovery or repair moved aside.
pub const BROKEN_MARK: &str = "broken";

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
            assert_eq!(
                parse_segment_dir_entry(&broken_tail_name(base, 7)),
                SegmentDirEntry::Broken
            );
        }
        for name in ["0.seg", "+0000000000000000001.seg", "99999999999999999999.seg", "x", ""] {
            assert_eq!(parse_segment_dir_entry(name), SegmentDirEntry::Foreign, "{name}");
        }
    }
}
