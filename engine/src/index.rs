//! The sparse offset index of one segment: which batch starts where, every
//! `index_interval_bytes` (format-spec.md §5).
//!
//! In memory it is a sorted vector of [`IndexEntry`]. On disk it is a sidecar file written
//! atomically when the segment is sealed or the store is closed. It is a cache: a missing,
//! damaged, stale or foreign file is rebuilt from the segment, and a lookup result is only a
//! hint that the reader validates against the frame it points to.

use std::path::Path;

use crate::format::{IndexEntry, IndexHeader, decode_index, encode_index};
use crate::fs::{OpenMode, Storage, write_atomic};
use crate::limits::{INDEX_ENTRIES_MAX, INDEX_ENTRY_BYTES, INDEX_HEADER_BYTES};

/// The in-memory sparse index of one segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SparseIndex {
    entries: Vec<IndexEntry>,
}

impl SparseIndex {
    /// An index from entries already known to be increasing.
    pub(crate) fn from_entries(entries: Vec<IndexEntry>) -> Self {
        debug_assert!(entries.windows(2).all(|w| w[0].seq < w[1].seq && w[0].offset < w[1].offset));
        SparseIndex { entries }
    }

    /// Records the batch starting at `offset` with first record `seq` if it is at least
    /// `interval` bytes past the last entry (the first batch always gets an entry).
    pub(crate) fn note_batch(&mut self, seq: u64, offset: u64, timestamp_us: u64, interval: u64) {
        let due = match self.entries.last() {
            None => true,
            Some(last) => offset.saturating_sub(last.offset) >= interval,
        };
        if due && self.entries.len() < INDEX_ENTRIES_MAX as usize {
            self.entries.push(IndexEntry { seq, offset, timestamp_us });
        }
    }

    /// The last entry whose seq is at most `seq`, if any.
    pub(crate) fn floor(&self, seq: u64) -> Option<IndexEntry> {
        let n = self.entries.partition_point(|e| e.seq <= seq);
        n.checked_sub(1).and_then(|i| self.entries.get(i)).copied()
    }

    /// The last entry written at or before `timestamp_us`, if any.
    pub(crate) fn floor_time(&self, timestamp_us: u64) -> Option<IndexEntry> {
        let n = self.entries.partition_point(|e| e.timestamp_us <= timestamp_us);
        n.checked_sub(1).and_then(|i| self.entries.get(i)).copied()
    }

    /// The first entry (the segment's first batch).
    pub(crate) fn first(&self) -> Option<IndexEntry> {
        self.entries.first().copied()
    }

    /// All entries, in order.
    pub(crate) fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }
}

/// Why an index file was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IndexProblem {
    /// No file.
    Missing,
    /// The file could not be read or decoded.
    Damaged(String),
    /// It belongs to another store or another segment.
    Foreign,
}

/// Loads the index file of the segment with `base` and checks it belongs to it. The caller
/// validates `end_offset` against the segment before trusting the index's coverage.
pub(crate) fn load(
    storage: &dyn Storage,
    path: &Path,
    log_id: &[u8; 16],
    base: u64,
    segment_len: u64,
) -> Result<(IndexHeader, SparseIndex), IndexProblem> {
    let file = match storage.open(path, OpenMode::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(IndexProblem::Missing),
        Err(e) => return Err(IndexProblem::Damaged(e.to_string())),
    };
    let len = file.len().map_err(|e| IndexProblem::Damaged(e.to_string()))?;
    // Bound the read before allocating: an index never holds more entries than the limit.
    let max_len =
        INDEX_HEADER_BYTES as u64 + u64::from(INDEX_ENTRIES_MAX) * INDEX_ENTRY_BYTES as u64;
    if len > max_len {
        return Err(IndexProblem::Damaged(format!("index file of {len} bytes is over the limit")));
    }
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, 0).map_err(|e| IndexProblem::Damaged(e.to_string()))?;
    let (header, entries) = decode_index(&buf).map_err(|e| IndexProblem::Damaged(e.to_string()))?;
    if header.log_id != *log_id || header.segment_base != base {
        return Err(IndexProblem::Foreign);
    }
    if header.end_offset > segment_len {
        return Err(IndexProblem::Damaged("index covers more than the segment holds".into()));
    }
    Ok((header, SparseIndex::from_entries(entries)))
}

/// Writes the index file atomically.
pub(crate) fn store(
    storage: &dyn Storage,
    path: &Path,
    header: &IndexHeader,
    index: &SparseIndex,
) -> std::io::Result<()> {
    write_atomic(storage, path, &encode_index(header, index.entries()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn note_batch_respects_interval_and_floor_finds_predecessor() {
        let mut ix = SparseIndex::default();
        ix.note_batch(0, 64, 10, 100);
        ix.note_batch(1, 120, 10, 100); // too close
        ix.note_batch(2, 168, 20, 100);
        ix.note_batch(5, 400, 20, 100);
        assert_eq!(ix.entries().len(), 3);
        assert_eq!(ix.floor(0).map(|e| e.offset), Some(64));
        assert_eq!(ix.floor(1).map(|e| e.offset), Some(64));
        assert_eq!(ix.floor(4).map(|e| e.offset), Some(168));
        assert_eq!(ix.floor_time(9), None);
        assert_eq!(ix.floor_time(15).map(|e| e.seq), Some(0));
        assert_eq!(ix.floor_time(20).map(|e| e.seq), Some(5));
        assert_eq!(ix.floor(99).map(|e| e.offset), Some(400));
    }
}
