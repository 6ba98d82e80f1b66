//! Repair of a damaged store (the `annal repair` command): cut a torn tail, rebuild missing or
//! damaged index files, set aside a broken stream-index checkpoint and, only when asked to
//! salvage, cut the log at mid-log damage.
//!
//! Repair never deletes a user's byte. Before it changes or removes a file it copies the
//! affected bytes (or moves the whole file) into `<dir>/quarantine/repair-<unix_ms>/`, beside
//! a `REPORT.txt` saying what was done (format-spec.md §15). It takes the store's writer lock
//! for the whole run, then releases it and opens the store once as a writer, so recovery
//! completes what it completes by itself (an interrupted seal) and a clean close follows.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::{EventBody, FrameKind, IndexHeader, align_up, log_tag};
use crate::fs::{OpenMode, StdFs, Storage, StorageFile};
use crate::index::{self, SparseIndex};
use crate::inspect::{
    CheckpointSurvey, Finding, FindingKind, IndexState, SegmentState, SegmentSurvey, Severity,
    Survey, SurveyOptions, survey_with,
};
use crate::limits::{
    FRAME_ALIGN_BYTES, FRAME_HEADER_BYTES, RECORD_BODY_BYTES_MAX, SEGMENT_HEADER_BYTES,
};
use crate::names;
use crate::options::Options;
use crate::segment::{self, FrameError, RecordCopier, Source};

/// What `repair` may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepairOptions {
    /// Plan only: report what would be done, change nothing, create no quarantine.
    pub dry_run: bool,
    /// Cut the log at mid-log damage, moving everything after it into quarantine. Without
    /// it, mid-log damage makes repair refuse to change anything.
    pub salvage: bool,
}

/// What one step of a repair does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ActionKind {
    /// Truncate a segment at a torn tail (bytes copied to quarantine first).
    CutTail,
    /// Truncate a sealed segment after its seal frame (bytes copied first).
    CutAfterSeal,
    /// Truncate a segment at mid-log damage (`--salvage`; bytes copied first).
    CutMidLog,
    /// Move a whole segment after a salvage cut into quarantine.
    QuarantineSegment,
    /// Move an index file into quarantine (damaged, or describing bytes that were cut).
    SetAsideIndex,
    /// Write a sealed segment's index file from the segment.
    RebuildIndex,
    /// Move the stream-index checkpoint into quarantine.
    SetAsideCheckpoint,
    /// Move a damaged aggregate snapshot (format-spec.md §13) into quarantine.
    SetAsideSnapshot,
    /// Move a damaged projection checkpoint (format-spec.md §14) into quarantine.
    SetAsideProjectionCheckpoint,
}

impl ActionKind {
    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::CutTail => "cut_tail",
            ActionKind::CutAfterSeal => "cut_after_seal",
            ActionKind::CutMidLog => "cut_mid_log",
            ActionKind::QuarantineSegment => "quarantine_segment",
            ActionKind::SetAsideIndex => "set_aside_index",
            ActionKind::RebuildIndex => "rebuild_index",
            ActionKind::SetAsideCheckpoint => "set_aside_checkpoint",
            ActionKind::SetAsideSnapshot => "set_aside_snapshot",
            ActionKind::SetAsideProjectionCheckpoint => "set_aside_projection_checkpoint",
        }
    }
}

/// One step of a repair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// What.
    pub kind: ActionKind,
    /// The store file changed or moved.
    pub file: PathBuf,
    /// Where a cut starts.
    pub offset: Option<u64>,
    /// Bytes copied or moved into quarantine.
    pub bytes: u64,
    /// Where in quarantine they went (none for a dry run or a rebuild).
    pub saved_to: Option<PathBuf>,
    /// A sentence for a person.
    pub detail: String,
}

/// What a salvage cut set aside, as far as the bytes decode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SalvageReport {
    /// The segment cut (or the first segment moved whole).
    pub cut_file: PathBuf,
    /// Offset of the cut in it (0: the whole file).
    pub cut_offset: u64,
    /// The first seq no longer in the log: the log now ends here.
    pub first_lost_seq: u64,
    /// Seq ranges `[start, end)` of records in the set-aside bytes that still verify.
    pub decoded_ranges: Vec<(u64, u64)>,
    /// Records in valid batch headers whose record did not verify.
    pub undecodable_records: u64,
    /// Streams of the set-aside events that decode, with their event counts.
    pub streams: BTreeMap<String, u64>,
    /// Decoded records that are not events.
    pub non_events: u64,
    /// Segment files moved whole.
    pub segments_moved: Vec<PathBuf>,
}

/// How a repair ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// There was nothing to repair.
    NothingToDo,
    /// The actions were carried out.
    Repaired,
    /// Dry run: the actions are what would be done.
    Planned,
    /// Mid-log damage and no `salvage`: nothing was changed.
    NeedsSalvage {
        /// The damaged file.
        file: PathBuf,
        /// Offset of the damage.
        offset: u64,
        /// First seq a salvage would set aside.
        seq: u64,
    },
}

/// The result of [`repair`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// How it ended.
    pub outcome: Outcome,
    /// The steps, in order.
    pub actions: Vec<Action>,
    /// This run's quarantine directory, if anything was set aside.
    pub quarantine: Option<PathBuf>,
    /// What a salvage cut set aside.
    pub salvage: Option<SalvageReport>,
    /// Findings before the repair.
    pub before: Vec<Finding>,
    /// Problems a survey still finds after the repair (empty when the store is clean).
    pub remaining: Vec<Finding>,
}

impl RepairReport {
    /// Whether the store is clean now (or, for a dry run, would be).
    pub fn succeeded(&self) -> bool {
        !matches!(self.outcome, Outcome::NeedsSalvage { .. }) && self.remaining.is_empty()
    }

    /// The report as text (what `REPORT.txt` holds).
    pub fn to_text(&self, dir: &Path) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "annal repair of {}", dir.display());
        for f in &self.before {
            let sev = if f.severity == Severity::Problem { "problem" } else { "warning" };
            let at = f.offset.map(|o| format!(" at offset {o}")).unwrap_or_default();
            let _ = writeln!(
                t,
                "found {sev} {}: {}{at}: {}",
                f.kind.as_str(),
                f.file.display(),
                f.message
            );
        }
        for a in &self.actions {
            let at = a.offset.map(|o| format!(" at offset {o}")).unwrap_or_default();
            let _ = write!(t, "{} {}{at}: {}", a.kind.as_str(), a.file.display(), a.detail);
            if let Some(s) = &a.saved_to {
                let _ = write!(t, "; {} bytes saved to {}", a.bytes, s.display());
            }
            t.push('\n');
        }
        if let Some(s) = &self.salvage {
            let _ = writeln!(
                t,
                "salvage: log cut at seq {} ({} offset {})",
                s.first_lost_seq,
                s.cut_file.display(),
                s.cut_offset
            );
            for (a, b) in &s.decoded_ranges {
                let _ = writeln!(t, "set aside seqs {a}..{b} (verified records)");
            }
            if s.undecodable_records > 0 {
                let _ =
                    writeln!(t, "set aside {} records that do not verify", s.undecodable_records);
            }
            for (stream, n) in &s.streams {
                let _ = writeln!(t, "stream {stream:?}: {n} events set aside");
            }
        }
        t
    }
}

/// A planned step: an [`Action`] plus how to carry it out.
enum Step {
    /// Copy `[from, to)` of `file` to quarantine, then truncate it to `from`.
    Cut { file: PathBuf, from: u64, to: u64 },
    /// Move the file into quarantine: copy it durably, then remove it.
    Move { file: PathBuf },
    /// Write this index.
    Index { file: PathBuf, header: IndexHeader, index: SparseIndex },
}

/// Repairs the store in `dir` (see the module docs). `progress(done, total)` reports bytes
/// surveyed. Fails with [`Error::Locked`] if another handle holds the store, with
/// [`Error::NoStore`] if there is none; an I/O error mid-repair stops it with the actions so
/// far already durable (each copy is fsynced before its cut).
pub fn repair(
    dir: &Path,
    opts: RepairOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<RepairReport> {
    repair_with(Arc::new(StdFs), dir, opts, progress)
}

/// [`repair`] on the given storage (for tests: [`crate::fs::SimFs`]).
pub fn repair_with(
    shared: Arc<dyn Storage>,
    dir: &Path,
    opts: RepairOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<RepairReport> {
    let storage = shared.as_ref();
    let seg_dir = names::segments_dir(dir);
    if !storage.exists(&seg_dir).map_err(|e| Error::io("stat", &seg_dir, e))? {
        return Err(Error::NoStore { dir: dir.to_path_buf() });
    }
    let lock_path = dir.join(names::LOCK_FILE);
    let lock = storage
        .try_lock(&lock_path)
        .map_err(|e| Error::io("lock", &lock_path, e))?
        .ok_or_else(|| Error::Locked { dir: dir.to_path_buf() })?;
    let survey = survey_with(storage, dir, SurveyOptions::default(), progress)?;
    let mut report = RepairReport {
        outcome: Outcome::NothingToDo,
        actions: Vec::new(),
        quarantine: None,
        salvage: None,
        before: survey.findings.clone(),
        remaining: Vec::new(),
    };
    let cut = first_cut(&survey);
    if let Some((i, offset, seq)) = cut
        && !opts.salvage
    {
        let file = survey.segments.get(i).map(|s| s.path.clone()).unwrap_or_default();
        report.outcome = Outcome::NeedsSalvage { file, offset, seq };
        report.remaining = problems(&survey.findings);
        return Ok(report);
    }

    let steps = plan(storage, &survey, cut, &mut report)?;
    if steps.is_empty() && survey.findings.is_empty() {
        return Ok(report);
    }
    if opts.dry_run {
        report.outcome = Outcome::Planned;
        return Ok(report);
    }

    let mut q = Quarantine { storage, dir, run: None };
    for (step, action) in steps.into_iter().zip(report.actions.iter_mut()) {
        action.saved_to = q.carry_out(step)?;
    }
    report.quarantine = q.run.clone();
    report.outcome = Outcome::Repaired;
    if let Some(run) = &report.quarantine {
        let text = report.to_text(dir);
        q.write_report(run, &text)?;
    }
    drop(lock);

    // One writer open: recovery completes an interrupted seal and rebuilds the active
    // segment's index; the close writes a close frame, the index and the checkpoint.
    let log_opts = Options { preallocate: false, ..Options::default() };
    if survey.events > 0 {
        let store_opts = crate::StoreOptions { log: log_opts, ..crate::StoreOptions::default() };
        crate::Store::open_with(Arc::clone(&shared), dir, store_opts)?.close()?;
    } else {
        crate::Log::open_with(Arc::clone(&shared), dir, log_opts)?.close()?;
    }
    let after = survey_with(storage, dir, SurveyOptions::default(), &mut |_, _| {})?;
    report.remaining = problems(&after.findings);
    Ok(report)
}

fn problems(findings: &[Finding]) -> Vec<Finding> {
    findings.iter().filter(|f| f.severity == Severity::Problem).cloned().collect()
}

/// Where a salvage would cut: (segment index, offset, first seq lost). Offset 0 means the
/// whole segment goes.
fn first_cut(s: &Survey) -> Option<(usize, u64, u64)> {
    let mut prev_end: Option<u64> = None;
    for (i, seg) in s.segments.iter().enumerate() {
        if let Some(end) = prev_end
            && end != seg.base
        {
            return Some((i, 0, end));
        }
        if let Some(d) = &seg.damage
            && !d.torn
        {
            return Some((i, d.offset, d.seq));
        }
        prev_end = Some(seg.end_seq);
    }
    None
}

/// Works out the steps (and their actions, pushed to `report` in the same order).
fn plan(
    storage: &dyn Storage,
    s: &Survey,
    cut: Option<(usize, u64, u64)>,
    report: &mut RepairReport,
) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    let mut push = |report: &mut RepairReport, step: Step, action: Action| {
        steps.push(step);
        report.actions.push(action);
    };
    let keep = cut.map_or(s.segments.len(), |(i, off, _)| if off == 0 { i } else { i + 1 });
    let tag = s.log_id.map(|id| log_tag(&id));

    if let Some((i, off, seq)) = cut {
        let mut salvage =
            SalvageReport { first_lost_seq: seq, cut_offset: off, ..Default::default() };
        if let Some(seg) = s.segments.get(i) {
            salvage.cut_file = seg.path.clone();
            if off > 0 {
                let to = seg.damage.as_ref().map_or(seg.bytes, |d| saved_end(d.nonzero_end, seg));
                if let Some(tag) = tag {
                    decode_loose(storage, &seg.path, off, to, tag, &mut salvage)?;
                }
                // The index goes first: a crash between the two steps must not leave an index
                // that promises records the cut removed (recovery refuses such a segment,
                // format-spec.md §7.3 row L1), while a missing index is only a cache.
                set_aside_index(storage, seg, &mut |st, a| push(report, st, a));
                let detail = format!("log cut at seq {seq}: damaged record and all after it");
                let a = act(ActionKind::CutMidLog, &seg.path, Some(off), to - off, detail);
                push(report, Step::Cut { file: seg.path.clone(), from: off, to }, a);
            }
        }
        // When whole segments go, the last one kept loses its seal frame: a sealed last
        // segment tells recovery that a segment after it is missing (format-spec.md §7.3).
        // Its index (the seal's, or a damaged one left by an interrupted earlier repair whose
        // cut already happened) goes first, as above.
        if off == 0
            && let Some(prev) = i.checked_sub(1).and_then(|p| s.segments.get(p))
        {
            if let Some(seal_at) = prev.seal_at {
                set_aside_index(storage, prev, &mut |st, a| push(report, st, a));
                let detail = "seal frame of the new last segment".to_string();
                let to = prev.bytes;
                let bytes = to - seal_at;
                let a = act(ActionKind::CutAfterSeal, &prev.path, Some(seal_at), bytes, detail);
                push(report, Step::Cut { file: prev.path.clone(), from: seal_at, to }, a);
            } else if matches!(prev.index, IndexState::Damaged { .. }) {
                set_aside_index(storage, prev, &mut |st, a| push(report, st, a));
            }
        }
        for seg in s.segments.iter().skip(keep) {
            if let Some(tag) = tag {
                decode_loose(
                    storage,
                    &seg.path,
                    SEGMENT_HEADER_BYTES as u64,
                    seg.bytes,
                    tag,
                    &mut salvage,
                )?;
            }
            salvage.segments_moved.push(seg.path.clone());
            let detail = format!("segment {} after the cut", seg.base);
            let a = act(ActionKind::QuarantineSegment, &seg.path, None, seg.bytes, detail);
            push(report, Step::Move { file: seg.path.clone() }, a);
            set_aside_index(storage, seg, &mut |st, a| push(report, st, a));
        }
        salvage.decoded_ranges = merge(std::mem::take(&mut salvage.decoded_ranges));
        report.salvage = Some(salvage);
    }

    for (i, seg) in s.segments.iter().enumerate().take(keep) {
        let cut_here = cut.is_some_and(|(c, _, _)| c == i);
        if let Some(d) = &seg.damage
            && d.torn
            && !cut_here
        {
            let detail = format!("torn tail from seq {}: {}", d.seq, d.cause);
            let end = saved_end(d.nonzero_end, seg);
            let bytes = end - d.offset;
            let a = act(ActionKind::CutTail, &seg.path, Some(d.offset), bytes, detail);
            push(report, Step::Cut { file: seg.path.clone(), from: d.offset, to: end }, a);
        }
        let after_seal =
            s.findings.iter().any(|f| f.kind == FindingKind::AfterSeal && f.file == seg.path);
        if after_seal && !cut_here {
            let detail = "bytes after the seal frame".to_string();
            let (from, to) = (seg.data_end, seg.bytes);
            let a = act(ActionKind::CutAfterSeal, &seg.path, Some(from), to - from, detail);
            push(report, Step::Cut { file: seg.path.clone(), from, to }, a);
        }
        if cut_here || cut.is_some_and(|(c, off, _)| off == 0 && c == i + 1) {
            continue;
        }
        let damaged = matches!(seg.index, IndexState::Damaged { .. });
        if damaged {
            set_aside_index(storage, seg, &mut |st, a| push(report, st, a));
        }
        if (damaged || seg.index == IndexState::Missing)
            && seg.state == SegmentState::Sealed
            && let (Some(log_id), Some(seal_at)) = (s.log_id, seg.seal_at)
        {
            let mut ix = SparseIndex::default();
            let interval = Options::default().index_interval_bytes;
            for b in &seg.batches {
                ix.note_batch(b.seq, b.offset, b.timestamp_us, interval);
            }
            let header = IndexHeader {
                log_id,
                segment_base: seg.base,
                end_offset: seal_at,
                end_seq: seg.end_seq,
            };
            let detail = format!(
                "{} entries from the segment's {} batches",
                ix.entries().len(),
                seg.batches.len()
            );
            let a = act(ActionKind::RebuildIndex, &seg.index_path(), None, 0, detail);
            push(report, Step::Index { file: seg.index_path(), header, index: ix }, a);
        }
    }

    let ckpt = s.dir.join(names::STREAM_CHECKPOINT_FILE);
    let set_aside = match &s.checkpoint {
        CheckpointSurvey::Damaged { bytes, reason } => Some((*bytes, reason.clone())),
        CheckpointSurvey::Ok { bytes, covered_seq, .. }
            if cut.is_some_and(|(_, _, seq)| *covered_seq > seq) =>
        {
            Some((*bytes, format!("it covers seq {covered_seq}, beyond the salvage cut")))
        }
        _ => None,
    };
    if let Some((bytes, reason)) = set_aside {
        let a = act(ActionKind::SetAsideCheckpoint, &ckpt, None, bytes, reason);
        push(report, Step::Move { file: ckpt }, a);
    }
    // Damaged snapshots and projection checkpoints: their readers would set them aside or
    // start over anyway; moved into quarantine, `verify` is clean again.
    for f in &s.findings {
        let kind = match f.kind {
            FindingKind::SnapshotDamaged => ActionKind::SetAsideSnapshot,
            FindingKind::ProjectionCheckpointDamaged => ActionKind::SetAsideProjectionCheckpoint,
            _ => continue,
        };
        let bytes = s
            .snapshots
            .iter()
            .chain(&s.projections)
            .find(|side| side.path == f.file)
            .map_or(0, |side| side.bytes);
        let a = act(kind, &f.file, None, bytes, f.message.clone());
        push(report, Step::Move { file: f.file.clone() }, a);
    }
    Ok(steps)
}

/// Where the bytes saved before a cut end: past the last non-zero byte, rounded up to the
/// frame alignment so a frame ending in zero bytes is saved whole; the zeros of
/// preallocated space after that are not copied.
fn saved_end(nonzero_end: u64, seg: &SegmentSurvey) -> u64 {
    align_up(nonzero_end).min(seg.bytes)
}

fn set_aside_index(storage: &dyn Storage, seg: &SegmentSurvey, push: &mut dyn FnMut(Step, Action)) {
    if seg.index == IndexState::Missing {
        return;
    }
    let path = seg.index_path();
    let why = match &seg.index {
        IndexState::Damaged { reason } => format!("damaged: {reason}"),
        _ => "it describes bytes that are cut".to_string(),
    };
    let bytes = storage.open(&path, OpenMode::Read).and_then(|f| f.len()).unwrap_or(0);
    push(
        Step::Move { file: path.clone() },
        act(ActionKind::SetAsideIndex, &path, None, bytes, why),
    );
}

/// An action not yet carried out.
fn act(kind: ActionKind, file: &Path, offset: Option<u64>, bytes: u64, detail: String) -> Action {
    Action { kind, file: file.to_path_buf(), offset, bytes, saved_to: None, detail }
}

/// Merges sorted-or-not ranges into disjoint sorted ones.
fn merge(mut r: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    r.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(r.len());
    for (a, b) in r {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Probes `[from, to)` of a segment for frames of this store at every aligned offset and
/// decodes the records that still verify (format-spec.md §7.2 probing). Each record is
/// copied out of the file first and checked in the copy, with the copy's own length, so
/// the streams reported come from bytes the CRC covered, even if the file changes between
/// two reads of the same record.
fn decode_loose(
    storage: &dyn Storage,
    path: &Path,
    from: u64,
    to: u64,
    tag: u64,
    into: &mut SalvageReport,
) -> Result<()> {
    let file = storage.open(path, OpenMode::Read).map_err(|e| Error::io("open", path, e))?;
    let len = file.len().map_err(|e| Error::io("stat", path, e))?.min(to);
    let mut src = Source::file(Arc::<dyn StorageFile>::from(file), len);
    let mut copier = RecordCopier::default();
    let align = FRAME_ALIGN_BYTES as u64;
    let mut pos = align_up(from);
    while pos + FRAME_HEADER_BYTES as u64 <= len {
        if src
            .get(pos, FRAME_ALIGN_BYTES)
            .map_err(|e| Error::io("read", path, e))?
            .iter()
            .all(|&b| b == 0)
        {
            pos += align;
            continue;
        }
        match segment::frame_at(&mut src, pos, tag) {
            Ok(f) if f.kind == FrameKind::Batch => {
                let mut rpos = pos + FRAME_HEADER_BYTES as u64;
                let body_end = rpos + u64::from(f.body_bytes);
                for i in 0..u64::from(f.count) {
                    let seq = f.seq + i;
                    match copier.record(&mut src, rpos, body_end, seq, RECORD_BODY_BYTES_MAX) {
                        Ok((payload, next)) => {
                            match EventBody::decode(&payload) {
                                Ok(b) => {
                                    *into.streams.entry(b.stream_id.to_owned()).or_insert(0) += 1
                                }
                                Err(_) => into.non_events += 1,
                            }
                            into.decoded_ranges.push((seq, seq + 1));
                            rpos = next;
                        }
                        Err(_) => {
                            into.undecodable_records += u64::from(f.count) - i;
                            break;
                        }
                    }
                }
                pos += f.total_bytes();
            }
            Ok(f) => pos += f.total_bytes(),
            Err(FrameError::Io(e)) => return Err(Error::io("read", path, e)),
            Err(FrameError::Bad(_)) => pos += align,
        }
    }
    Ok(())
}

/// This run's quarantine directory, made on first use.
struct Quarantine<'a> {
    storage: &'a dyn Storage,
    dir: &'a Path,
    run: Option<PathBuf>,
}

impl Quarantine<'_> {
    fn run_dir(&mut self) -> Result<PathBuf> {
        if let Some(r) = &self.run {
            return Ok(r.clone());
        }
        let root = self.dir.join(names::QUARANTINE_DIR);
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut k = 0;
        let run = loop {
            let candidate = root.join(names::repair_run_name(ms, k));
            if !self.storage.exists(&candidate).map_err(|e| Error::io("stat", &candidate, e))? {
                break candidate;
            }
            k += 1;
        };
        let seg = run.join(names::SEGMENTS_DIR);
        self.storage.create_dir_all(&seg).map_err(|e| Error::io("create dir", &seg, e))?;
        for d in [self.dir, root.as_path(), run.as_path()] {
            self.storage.sync_dir(d).map_err(|e| Error::io("sync dir", d, e))?;
        }
        self.run = Some(run.clone());
        Ok(run)
    }

    /// Where `file` (a store file) goes inside the run directory.
    fn target(&mut self, file: &Path, suffix: Option<u64>) -> Result<PathBuf> {
        let run = self.run_dir()?;
        let rel = file.strip_prefix(self.dir).unwrap_or(file);
        let name = rel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let name = match suffix {
            Some(off) => names::cut_bytes_name(&name, off),
            None => name,
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        let dir = run.join(parent);
        // `segments/` exists from the start; `snapshots/` and `projections/` on first use.
        if !self.storage.exists(&dir).map_err(|e| Error::io("stat", &dir, e))? {
            self.storage.create_dir_all(&dir).map_err(|e| Error::io("create dir", &dir, e))?;
            self.storage.sync_dir(&run).map_err(|e| Error::io("sync dir", &run, e))?;
        }
        Ok(dir.join(name))
    }

    fn carry_out(&mut self, step: Step) -> Result<Option<PathBuf>> {
        let st = self.storage;
        match step {
            Step::Cut { file, from, to } => {
                let target = self.target(&file, Some(from))?;
                let f =
                    st.open(&file, OpenMode::ReadWrite).map_err(|e| Error::io("open", &file, e))?;
                copy_range(st, (f.as_ref(), &file), from, to, &target)?;
                f.set_len(from).map_err(|e| Error::io("truncate", &file, e))?;
                f.sync_data().map_err(|e| Error::io("sync", &file, e))?;
                Ok(Some(target))
            }
            Step::Move { file } => {
                // Not a rename: a rename between two directories changes two directory
                // entries, and a crash may keep the removal without the addition (no fsync
                // order makes that atomic). A durable copy, then the removal, leaves the file
                // in one place or both at every point.
                let target = self.target(&file, None)?;
                let f = st.open(&file, OpenMode::Read).map_err(|e| Error::io("open", &file, e))?;
                let len = f.len().map_err(|e| Error::io("stat", &file, e))?;
                copy_range(st, (f.as_ref(), &file), 0, len, &target)?;
                drop(f);
                st.remove_file(&file).map_err(|e| Error::io("remove", &file, e))?;
                if let Some(d) = file.parent() {
                    st.sync_dir(d).map_err(|e| Error::io("sync dir", d, e))?;
                }
                Ok(Some(target))
            }
            Step::Index { file, header, index: ix } => {
                index::store(st, &file, &header, &ix)
                    .map_err(|e| Error::io("write index", &file, e))?;
                Ok(None)
            }
        }
    }

    fn write_report(&self, run: &Path, text: &str) -> Result<()> {
        let path = run.join(names::REPAIR_REPORT_FILE);
        crate::fs::write_atomic(self.storage, &path, text.as_bytes())
            .map_err(|e| Error::io("write report", &path, e))
    }
}

/// Copies `[from, to)` of `file` (open, and its path) into a new file `target`, in bounded
/// chunks, durably.
fn copy_range(
    storage: &dyn Storage,
    (file, source): (&dyn StorageFile, &Path),
    from: u64,
    to: u64,
    target: &Path,
) -> Result<()> {
    const CHUNK: u64 = 1 << 20;
    let out =
        storage.open(target, OpenMode::CreateNew).map_err(|e| Error::io("create", target, e))?;
    let mut buf = vec![0u8; CHUNK.min(to.saturating_sub(from)) as usize];
    let mut pos = from;
    while pos < to {
        let n = CHUNK.min(to - pos) as usize;
        let chunk = buf.get_mut(..n).unwrap_or_default();
        file.read_exact_at(chunk, pos).map_err(|e| Error::io("read", source, e))?;
        out.write_all_at(chunk, pos - from).map_err(|e| Error::io("write", target, e))?;
        pos += n as u64;
    }
    out.sync_data().map_err(|e| Error::io("sync", target, e))?;
    if let Some(d) = target.parent() {
        storage.sync_dir(d).map_err(|e| Error::io("sync dir", d, e))?;
    }
    Ok(())
}
