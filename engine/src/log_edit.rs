//! Truncate and purge at the file level (format-spec.md §16): completing a durable
//! truncate intent, and reading the log-start marker. Both run at open, before recovery, with
//! the directory's lock held; `Log::truncate_from` and `Log::purge_before` write the marker
//! and reopen.

use std::path::Path;
use std::sync::Arc;

use crate::error::{CorruptionKind, Error, Result};
use crate::format::{FrameKind, LogMarker, LogMarkerKind, log_tag};
use crate::fs::{OpenMode, Storage, StorageFile};
use crate::limits::{LOG_MARKER_BYTES, SEGMENT_HEADER_BYTES};
use crate::names::{self, SegmentDirEntry};
use crate::segment::{self, Source};

/// Reads the marker `name` in `dir`, if there is one. A marker that fails its checks is
/// corruption: it is not a cache, and guessing would either resurrect dropped records or
/// lose kept ones.
pub(crate) fn read_marker(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
    kind: LogMarkerKind,
) -> Result<Option<LogMarker>> {
    let path = dir.join(name);
    if !storage.exists(&path).map_err(|e| Error::io("stat", &path, e))? {
        return Ok(None);
    }
    let file = storage.open(&path, OpenMode::Read).map_err(|e| Error::io("open", &path, e))?;
    let len = file.len().map_err(|e| Error::io("stat", &path, e))?;
    if len != LOG_MARKER_BYTES as u64 {
        let kind = crate::format::DecodeError::OutOfBounds {
            field: "log marker length",
            value: len,
            max: LOG_MARKER_BYTES as u64,
        };
        return Err(Error::corrupt(&path, 0, kind));
    }
    let mut buf = [0u8; LOG_MARKER_BYTES];
    file.read_exact_at(&mut buf, 0).map_err(|e| Error::io("read", &path, e))?;
    LogMarker::decode(&buf, kind).map(Some).map_err(|e| Error::corrupt(&path, 0, e))
}

/// Writes the marker `name` in `dir` with the atomic replace of format-spec.md §6.5.
pub(crate) fn write_marker(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
    marker: &LogMarker,
) -> Result<()> {
    let path = dir.join(name);
    crate::fs::write_atomic(storage, &path, &marker.encode())
        .map_err(|e| Error::io("write marker", &path, e))
}

/// Completes the truncate `log.truncate` asks for, if there is one (format-spec.md §16.1),
/// then removes the marker. Idempotent: a crash anywhere in here is completed by the next
/// open. Writer only.
pub(crate) fn finish_truncate(storage: &dyn Storage, dir: &Path, seg_dir: &Path) -> Result<()> {
    let Some(m) = read_marker(storage, dir, names::LOG_TRUNCATE_FILE, LogMarkerKind::Truncate)?
    else {
        return Ok(());
    };
    let from = m.seq;
    let sync_dir = |d: &Path| storage.sync_dir(d).map_err(|e| Error::io("sync dir", d, e));
    let mut bases: Vec<u64> = storage
        .read_dir(seg_dir)
        .map_err(|e| Error::io("list", seg_dir, e))?
        .iter()
        .filter_map(|n| match names::parse_segment_dir_entry(n) {
            SegmentDirEntry::Segment(b) => Some(b),
            _ => None,
        })
        .collect();
    bases.sort_unstable();
    // 1. Whole segments above `from`, last first, so what remains is always a prefix of the
    //    segments: index (a cache) removed, segment renamed aside whole.
    for &base in bases.iter().rev().take_while(|&&b| b > from) {
        remove_index(storage, seg_dir, base)?;
        let path = seg_dir.join(names::segment_file_name(base));
        let mut target = seg_dir.join(names::broken_tail_name(base, 0));
        let mut k = 1;
        while storage.exists(&target).map_err(|e| Error::io("stat", &target, e))? {
            target = seg_dir.join(format!("{}.{k}", names::broken_tail_name(base, 0)));
            k += 1;
        }
        storage.rename(&path, &target).map_err(|e| Error::io("move aside", &path, e))?;
    }
    sync_dir(seg_dir)?;
    // 2. The segment holding `from`: cut at the first frame at or after it.
    if let Some(&base) = bases.iter().rev().find(|&&b| b <= from) {
        cut_segment(storage, seg_dir, &m.log_id, base, from)?;
    }
    // 3. Done: the marker goes last.
    let path = dir.join(names::LOG_TRUNCATE_FILE);
    storage.remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
    sync_dir(dir)
}

fn remove_index(storage: &dyn Storage, seg_dir: &Path, base: u64) -> Result<()> {
    let ix = seg_dir.join(names::index_file_name(base));
    if storage.exists(&ix).map_err(|e| Error::io("stat", &ix, e))? {
        storage.remove_file(&ix).map_err(|e| Error::io("remove", &ix, e))?;
    }
    Ok(())
}

/// Cuts segment `base` at the first frame whose seq is `from` or more, moving the cut bytes
/// aside. If the walk ends before such a frame (already cut, or damage that recovery will
/// judge), nothing is cut.
fn cut_segment(
    storage: &dyn Storage,
    seg_dir: &Path,
    log_id: &[u8; 16],
    base: u64,
    from: u64,
) -> Result<()> {
    let path = seg_dir.join(names::segment_file_name(base));
    let file: Arc<dyn StorageFile> = Arc::from(
        storage.open(&path, OpenMode::ReadWrite).map_err(|e| Error::io("open", &path, e))?,
    );
    let header = segment::read_header(file.as_ref(), &path)?;
    if header.log_id != *log_id {
        return Err(Error::corrupt(&path, 0, CorruptionKind::ForeignSegment));
    }
    let len = file.len().map_err(|e| Error::io("stat", &path, e))?;
    let tag = log_tag(log_id);
    let mut src = Source::file(Arc::clone(&file), len);
    let mut off = SEGMENT_HEADER_BYTES as u64;
    let cut = loop {
        let Ok(f) = segment::frame_at(&mut src, off, tag) else { return Ok(()) };
        if f.seq >= from {
            break off;
        }
        match f.kind {
            FrameKind::Seal => return Ok(()),
            FrameKind::Batch if f.seq + u64::from(f.count) > from => {
                return Err(Error::TruncateMidBatch { seq: from, batch_first: f.seq });
            }
            _ => off += f.total_bytes(),
        }
    };
    // The index may promise records beyond the cut (format-spec.md §7.3): it goes first.
    remove_index(storage, seg_dir, base)?;
    storage.sync_dir(seg_dir).map_err(|e| Error::io("sync dir", seg_dir, e))?;
    let survey =
        segment::survey_tail(&mut src, cut, tag).map_err(|e| Error::io("read", &path, e))?;
    if survey.nonzero_end > cut {
        segment::move_aside(storage, &path, base, file.as_ref(), cut, survey.nonzero_end)
            .map_err(|e| Error::io("move aside", &path, e))?;
    }
    file.set_len(cut).map_err(|e| Error::io("truncate", &path, e))?;
    file.sync_data().map_err(|e| Error::io("sync", &path, e))
}
