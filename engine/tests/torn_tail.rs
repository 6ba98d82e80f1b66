//! A torn, zero-filled or garbage tail of the last segment is cut, reported exactly, and
//! never costs a complete batch (RELIABILITY.md rows 5 and 6).
//!
//! Row 5: a store of several segments is built (closed cleanly; left as a crashed writer
//! leaves it: preallocated, no close frame; or closed, reopened, appended to and crashed, so
//! that the torn batches follow a close frame its index points to), on `SimFs` and on the
//! real file system. Then, for every byte offset inside the last three batches of the last
//! segment (and inside its close frame), the segment is cut there — truncated, or zeroed from
//! there on — and the store is reopened. Open must succeed, return exactly the batches that
//! are still complete, and report a `TruncatedTail` whose offset is the first incomplete
//! frame, whose `bytes` run to the last non-zero byte cut, whose `events` count the records
//! of a cut batch whose header survived, and whose moved-aside file holds exactly the cut
//! bytes. An append, close and reopen afterwards must find nothing to cut and every record
//! intact.
//!
//! One exception: in a cleanly closed store, a cut before the close frame removes records the
//! close had made durable (its index file says so). That is damage, not a torn write, and
//! open may instead refuse with `CorruptionKind::StaleSegment` naming exactly the records
//! promised and found and the offset where the segment now ends (RELIABILITY.md row 9).
//!
//! Row 6: 0 to 64 KiB of zeros, of random bytes, or of mixes of both after the last frame:
//! open treats it as the end of the log (reporting the non-zero bytes it cut), and the next
//! append + reopen reads back every record with no error.

const FH: usize = annal::limits::FRAME_HEADER_BYTES;
const FH64: u64 = FH as u64;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use annal::format::{DecodeError, FrameKind, decode_frame_header};
use annal::fs::{SimFs, Storage};
use annal::{CorruptionKind, Log, Options, TruncatedTail};

mod common;
use common::Rng;

const SIM_DIR: &str = "/store";

// ---------------------------------------------------------------------------------------------
// Two places to put a store: the simulation and a real directory.
// ---------------------------------------------------------------------------------------------

/// A store location whose segment directory can be set to exact bytes before each open.
trait Backend {
    /// Replaces everything in the segments directory with `files`.
    fn reset(&mut self, files: &[(String, Vec<u8>)]);
    /// Opens the store.
    fn open(&self, opts: &Options) -> annal::Result<Log>;
    /// The bytes of a file, by path as the engine names it.
    fn read(&self, path: &Path) -> Option<Vec<u8>>;
    /// The files of the segments directory, sorted, with their bytes.
    fn snapshot(&self) -> Vec<(String, Vec<u8>)>;
    fn name(&self) -> &'static str;
}

struct Sim {
    sim: SimFs,
    seed: u64,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        Sim { sim: SimFs::new(seed), seed }
    }
}

impl Backend for Sim {
    fn reset(&mut self, files: &[(String, Vec<u8>)]) {
        self.seed += 1;
        self.sim = SimFs::new(self.seed);
        for (name, bytes) in files {
            let p = Path::new(SIM_DIR).join("segments").join(name);
            self.sim.write_file_raw(p, bytes).unwrap();
        }
    }
    fn open(&self, opts: &Options) -> annal::Result<Log> {
        Log::open_with(Arc::new(self.sim.clone()), SIM_DIR, opts.clone())
    }
    fn read(&self, path: &Path) -> Option<Vec<u8>> {
        self.sim.current_bytes(path)
    }
    fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        let dir = Path::new(SIM_DIR).join("segments");
        let mut names = self.sim.read_dir(&dir).unwrap();
        names.sort();
        names
            .into_iter()
            .map(|n| (n.clone(), self.sim.current_bytes(dir.join(&n)).unwrap()))
            .collect()
    }
    fn name(&self) -> &'static str {
        "SimFs"
    }
}

struct Disk {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Disk {
    fn new() -> Disk {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        Disk { _tmp: tmp, dir }
    }
    fn seg_dir(&self) -> PathBuf {
        self.dir.join("segments")
    }
}

impl Backend for Disk {
    fn reset(&mut self, files: &[(String, Vec<u8>)]) {
        let seg_dir = self.seg_dir();
        std::fs::create_dir_all(&seg_dir).unwrap();
        for e in std::fs::read_dir(&seg_dir).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
        for (name, bytes) in files {
            std::fs::write(seg_dir.join(name), bytes).unwrap();
        }
    }
    fn open(&self, opts: &Options) -> annal::Result<Log> {
        Log::open(&self.dir, opts.clone())
    }
    fn read(&self, path: &Path) -> Option<Vec<u8>> {
        std::fs::read(path).ok()
    }
    fn snapshot(&self) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(self.seg_dir())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
            })
            .collect();
        out.sort();
        out
    }
    fn name(&self) -> &'static str {
        "StdFs"
    }
}

// ---------------------------------------------------------------------------------------------
// The fixture.
// ---------------------------------------------------------------------------------------------

fn opts(segment_bytes: u64) -> Options {
    Options {
        segment_bytes,
        max_record_bytes: 2048,
        index_interval_bytes: 512,
        ..Options::default()
    }
}

/// One frame of the last segment, as found by walking it with the public codec.
#[derive(Debug, Clone, Copy)]
struct FrameAt {
    off: u64,
    total: u64,
    kind: FrameKind,
    count: u32,
}

/// Walks the frames of a segment image from its header to the first thing that is not a
/// frame.
fn frames(seg: &[u8]) -> Vec<FrameAt> {
    let mut out = Vec::new();
    let mut off = 64usize;
    while let Some(f) = seg.get(off..).and_then(|b| decode_frame_header(b).ok()) {
        out.push(FrameAt { off: off as u64, total: f.total_bytes(), kind: f.kind, count: f.count });
        off += f.total_bytes() as usize;
    }
    out
}

struct Fixture {
    opts: Options,
    /// The segments directory: (file name, bytes), sorted.
    files: Vec<(String, Vec<u8>)>,
    /// Every record of the store, by seq.
    records: Vec<Vec<u8>>,
    /// Name of the last segment file and its frames.
    last: String,
    last_frames: Vec<FrameAt>,
    /// Seq of the first record of the last segment.
    last_base: u64,
    /// The store was closed cleanly (its last segment ends with a close frame that its
    /// index file points to).
    closed: bool,
}

impl Fixture {
    fn last_bytes(&self) -> &[u8] {
        &self.files.iter().find(|(n, _)| *n == self.last).unwrap().1
    }

    /// The files with the last segment replaced.
    fn with_last(&self, bytes: Vec<u8>) -> Vec<(String, Vec<u8>)> {
        let mut files = self.files.clone();
        files.iter_mut().find(|(n, _)| *n == self.last).unwrap().1 = bytes;
        files
    }

    /// Records in the frames before `frame_index` of the last segment, plus all earlier
    /// segments.
    fn records_before(&self, frame_index: usize) -> u64 {
        self.last_base
            + self.last_frames[..frame_index]
                .iter()
                .filter(|f| f.kind == FrameKind::Batch)
                .map(|f| u64::from(f.count))
                .sum::<u64>()
    }
}

/// How the fixture's writer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Closed cleanly after the last batch.
    Closed,
    /// Lost power after the last batch (everything acknowledged, nothing closed).
    Crashed,
    /// Closed cleanly, reopened, appended the tail batches, then lost power: the last
    /// segment holds a close frame (which its index file points to) before the tail.
    ReopenedThenCrashed,
}

/// Builds a store of a few segments whose last segment ends with the batches `tail` (payload
/// lengths).
fn build(
    backend: &mut dyn Backend,
    ending: Ending,
    segment_bytes: u64,
    tail: &[&[usize]],
) -> Fixture {
    backend.reset(&[]);
    let opts = opts(segment_bytes);
    let mut log = backend.open(&opts).unwrap();
    let mut rng = Rng(0x7011_7A11 ^ segment_bytes ^ ending as u64);
    let mut records: Vec<Vec<u8>> = Vec::new();
    let append = |log: &Log, records: &mut Vec<Vec<u8>>, batch: Vec<Vec<u8>>| {
        let a = log.append(&batch).unwrap();
        assert_eq!(a.first, records.len() as u64);
        records.extend(batch);
    };
    // At least two sealed segments, then a few batches in the last one.
    while log.stats().rolls < 2 {
        let n = 1 + rng.below(4) as usize;
        let batch = (0..n).map(|_| {
            let len = rng.below(300) as usize;
            rng.bytes(len)
        });
        append(&log, &mut records, batch.collect());
    }
    for _ in 0..3 {
        let batch = (0..2).map(|_| {
            let len = rng.below(100) as usize;
            rng.bytes(len)
        });
        append(&log, &mut records, batch.collect());
    }
    assert_eq!(log.stats().rolls, 2);
    if ending == Ending::ReopenedThenCrashed {
        log.close().unwrap();
        log = backend.open(&opts).unwrap();
    }
    let rolls = log.stats().rolls;
    for lens in tail {
        append(&log, &mut records, lens.iter().map(|&l| rng.bytes(l)).collect());
    }
    assert_eq!(log.stats().rolls, rolls, "the tail batches must land in the third segment");
    let files = if ending == Ending::Closed {
        log.close().unwrap();
        backend.snapshot()
    } else {
        // Everything was fsynced (Durability::Sync): the files as they are now are what a
        // power loss at this point leaves.
        let files = backend.snapshot();
        drop(log);
        files
    };
    let last = files.iter().filter(|(n, _)| n.ends_with(".seg")).map(|(n, _)| n.clone()).max();
    let last = last.unwrap();
    let last_base: u64 = last.trim_end_matches(".seg").parse().unwrap();
    let bytes = &files.iter().find(|(n, _)| *n == last).unwrap().1;
    let last_frames = frames(bytes);
    let closes = last_frames.iter().filter(|f| f.kind == FrameKind::Close).count();
    match ending {
        Ending::Closed => {
            assert_eq!((last_frames.last().map(|f| f.kind), closes), (Some(FrameKind::Close), 1));
            let close = last_frames.last().unwrap();
            assert_eq!(close.off + close.total, bytes.len() as u64, "cut after its close frame");
        }
        Ending::Crashed | Ending::ReopenedThenCrashed => {
            let want_closes = usize::from(ending == Ending::ReopenedThenCrashed);
            assert_eq!(
                (last_frames.last().map(|f| f.kind), closes),
                (Some(FrameKind::Batch), want_closes)
            );
            assert_eq!(bytes.len() as u64, segment_bytes, "an unclosed segment stays preallocated");
        }
    }
    Fixture { opts, files, records, last, last_frames, last_base, closed: ending == Ending::Closed }
}

// ---------------------------------------------------------------------------------------------
// Checks.
// ---------------------------------------------------------------------------------------------

/// What the store must look like after opening a damaged last segment.
#[derive(Debug)]
struct Expect {
    records: u64,
    /// End of the last intact frame: where the log now ends.
    at: u64,
    /// `None`: nothing non-zero was cut.
    truncated: Option<ExpectCut>,
}

#[derive(Debug)]
struct ExpectCut {
    offset: u64,
    /// The cut bytes, from `offset` to the last non-zero one.
    bytes: Vec<u8>,
    events: u64,
    /// The exact cause, where the test can tell it.
    cause: Option<CorruptionKind>,
}

/// Works out the expectation for a last segment changed from `orig` to `damaged`: the first
/// frame that is not byte-identical ends the log.
fn expect(fx: &Fixture, damaged: &[u8]) -> Expect {
    let orig = fx.last_bytes();
    let bad = fx.last_frames.iter().position(|f| {
        let r = f.off as usize..(f.off + f.total) as usize;
        damaged.get(r.clone()) != orig.get(r)
    });
    let (first_bad, at) = match bad {
        Some(i) => (i, fx.last_frames[i].off),
        None => {
            let end = fx.last_frames.last().map_or(64, |f| f.off + f.total);
            (fx.last_frames.len(), end)
        }
    };
    let records = fx.records_before(first_bad);
    let cut = damaged.get(at as usize..).unwrap_or_default();
    let Some(last_nz) = cut.iter().rposition(|&b| b != 0) else {
        return Expect { records, at, truncated: None };
    };
    let header_intact = bad.is_some_and(|i| {
        let f = fx.last_frames[i];
        let r = f.off as usize..f.off as usize + FH;
        f.kind == FrameKind::Batch && damaged.get(r.clone()) == orig.get(r)
    });
    let events = if header_intact { u64::from(fx.last_frames[first_bad].count) } else { 0 };
    // A plain truncation has an exact cause: the frame runs past the end of the file.
    let available = damaged.len() as u64 - at;
    let cause = bad.and_then(|i| {
        let f = fx.last_frames[i];
        let prefix_intact = orig.get(at as usize..damaged.len()) == damaged.get(at as usize..);
        let needed = if available < FH64 { FH64 } else { f.total };
        (prefix_intact && available < f.total)
            .then_some(CorruptionKind::Decode(DecodeError::Truncated { needed, available }))
    });
    Expect {
        records,
        at,
        truncated: Some(ExpectCut { offset: at, bytes: cut[..=last_nz].to_vec(), events, cause }),
    }
}

/// One disagreement with the expectation: a category (for the summary) and the details.
type Problem = (&'static str, String);

/// Compares the report's truncation with the expectation.
fn truncation_problems(
    backend: &dyn Backend,
    file_len: u64,
    got: Option<&TruncatedTail>,
    want: Option<&ExpectCut>,
) -> Vec<Problem> {
    let mut why = Vec::new();
    match (got, want) {
        (None, None) => {}
        // Only zeros were cut, yet whole frames are gone: an engine that knows (from a valid
        // index of a cleanly closed segment) that they had been durable may report the loss.
        (Some(t), None) if t.bytes == 0 && t.moved_to.is_none() => {}
        (Some(t), Some(w)) => {
            if t.offset != w.offset {
                why.push(("offset", format!("offset {} != {}", t.offset, w.offset)));
            }
            let want_bytes = w.bytes.len() as u64;
            if t.bytes != want_bytes {
                // The engine's survey notes non-zero bytes per 8-byte chunk.
                let rounded = (w.offset + want_bytes).next_multiple_of(8).min(file_len) - w.offset;
                let cat = if t.bytes == rounded {
                    "bytes past the last non-zero byte (rounded to 8)"
                } else {
                    "bytes"
                };
                why.push((
                    cat,
                    format!("bytes {} != {want_bytes} (to the last non-zero)", t.bytes),
                ));
            }
            if t.events != w.events {
                why.push(("events", format!("events {} != {}", t.events, w.events)));
            }
            if let Some(c) = &w.cause
                && t.cause != *c
            {
                why.push(("cause", format!("cause {:?} != {c:?}", t.cause)));
            }
            match t.moved_to.as_deref().and_then(|p| backend.read(p)) {
                Some(b) if b == w.bytes => {}
                Some(b)
                    if b.starts_with(&w.bytes) && b[w.bytes.len()..].iter().all(|&x| x == 0) =>
                {
                    why.push(("moved-aside file has trailing zeros", format!("{} bytes", b.len())))
                }
                Some(b) => why.push(("moved-aside bytes", format!("{} bytes differ", b.len()))),
                None => why.push(("cut bytes not kept", format!("moved_to {:?}", t.moved_to))),
            }
        }
        (g, w) => why.push(("truncation report", format!("report {g:?}, expected {w:?}"))),
    }
    why
}

/// Reads everything through a cursor and by seq; `Err` names the first difference.
fn check_records(log: &Log, want: &[Vec<u8>]) -> Result<(), String> {
    if log.visible_end() != want.len() as u64 {
        return Err(format!("{} records visible, {} expected", log.visible_end(), want.len()));
    }
    let mut n = 0usize;
    for r in log.cursor(0) {
        let r = r.map_err(|e| format!("cursor failed at {n}: {e}"))?;
        if r.seq != n as u64 || r.payload[..] != want[n][..] {
            return Err(format!("cursor returned a wrong record at {n}"));
        }
        n += 1;
    }
    if n != want.len() {
        return Err(format!("cursor stopped after {n} of {}", want.len()));
    }
    for (seq, w) in want.iter().enumerate().rev().take(40) {
        match log.read(seq as u64) {
            Ok(r) if r.payload[..] == w[..] => {}
            other => return Err(format!("read({seq}) gave {other:?}")),
        }
    }
    Ok(())
}

/// Opens the damaged store, checks it against the expectation, then appends, closes,
/// reopens and checks that nothing more is cut and every record is intact.
fn check_open(
    backend: &mut dyn Backend,
    fx: &Fixture,
    damaged: Vec<u8>,
    follow_up: bool,
) -> (&'static str, Vec<Problem>) {
    let want = expect(fx, &damaged);
    let file_len = damaged.len() as u64;
    backend.reset(&fx.with_last(damaged));
    let log = match backend.open(&fx.opts) {
        Ok(log) => log,
        Err(e) => return ("open refused", refusal_problems(fx, &want, e)),
    };
    ("opened", opened_problems(backend, fx, &want, file_len, log, follow_up))
}

/// A cleanly closed store whose last segment lost records that its index file says were
/// durable at the close: that is not a torn write of a crash but damage to acknowledged
/// data, and the engine may refuse to open, naming exactly the records it was promised and
/// found, and where the segment now ends. Any other refusal is a failure.
fn refusal_problems(fx: &Fixture, want: &Expect, e: annal::Error) -> Vec<Problem> {
    let total = fx.records.len() as u64;
    match &e {
        annal::Error::Corrupt {
            file,
            offset,
            kind: CorruptionKind::StaleSegment { promised, found },
        } if fx.closed && want.records < total => {
            let mut why = Vec::new();
            if !file.ends_with(&fx.last) {
                why.push(("refusal names the wrong file", format!("{e:?}")));
            }
            if (*promised, *found) != (total, want.records) {
                let w = format!("{e:?}: expected promised {total}, found {}", want.records);
                why.push(("refusal with wrong seqs", w));
            }
            if *offset != want.at {
                let w = format!("{e:?}: expected offset {}", want.at);
                why.push(("refusal with wrong offset", w));
            }
            why
        }
        _ => vec![("open failed", format!("{e:?}"))],
    }
}

/// Checks an opened store against the expectation, then appends, closes, reopens and checks
/// that nothing more is cut and every record is intact.
fn opened_problems(
    backend: &mut dyn Backend,
    fx: &Fixture,
    want: &Expect,
    file_len: u64,
    log: Log,
    follow_up: bool,
) -> Vec<Problem> {
    let report = log.recovery_report().clone();
    let mut problems =
        truncation_problems(backend, file_len, report.truncated.as_ref(), want.truncated.as_ref());
    let records = &fx.records[..want.records as usize];
    if let Err(e) = check_records(&log, records) {
        problems.push(("records after open", e));
    }
    if report.next_seq != want.records {
        problems.push(("next_seq", format!("{} != {}", report.next_seq, want.records)));
    }
    if !follow_up {
        return problems;
    }
    let extra: Vec<Vec<u8>> = vec![b"after the cut".to_vec(), Vec::new(), vec![0xA5; 300]];
    match log.append(&extra) {
        Ok(a) if a.first == want.records => {}
        other => problems.push(("append after the cut", format!("{other:?}"))),
    }
    drop(log);
    match backend.open(&fx.opts) {
        Ok(log) => {
            let r = log.recovery_report();
            if r.truncated.is_some() || !r.clean {
                problems.push(("second open not clean", format!("{r:?}")));
            }
            let mut all = records.to_vec();
            all.extend(extra);
            if let Err(e) = check_records(&log, &all) {
                problems.push(("records after append + reopen", e));
            }
        }
        Err(e) => problems.push(("second open failed", format!("{e:?}"))),
    }
    problems
}

/// Collects the problems of many cut points and reports them by category.
#[derive(Default)]
struct Failures {
    checked: usize,
    failed: usize,
    /// Outcome ("opened", "open refused") -> count.
    outcomes: std::collections::BTreeMap<&'static str, usize>,
    /// Category -> (count, first example).
    by_kind: std::collections::BTreeMap<&'static str, (usize, String)>,
}

impl Failures {
    fn record(&mut self, what: String, (outcome, problems): (&'static str, Vec<Problem>)) {
        self.checked += 1;
        *self.outcomes.entry(outcome).or_default() += 1;
        if !problems.is_empty() {
            self.failed += 1;
        }
        for (kind, detail) in problems {
            let e = self.by_kind.entry(kind).or_insert_with(|| (0, format!("{what}: {detail}")));
            e.0 += 1;
        }
    }

    fn assert_none(&self, name: &str) {
        let summary: Vec<String> = self
            .by_kind
            .iter()
            .map(|(k, (n, first))| format!("  {k}: {n} (first: {first})"))
            .collect();
        eprintln!(
            "{name}: {} checked ({:?}), {} failed\n{}",
            self.checked,
            self.outcomes,
            self.failed,
            summary.join("\n")
        );
        assert!(
            self.failed == 0,
            "{name}: {} of {} cut points failed:\n{}",
            self.failed,
            self.checked,
            summary.join("\n")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Row 5: every cut offset in the last three batches.
// ---------------------------------------------------------------------------------------------

/// Offsets of the structure of the frames of a segment image: frame starts, frame header
/// ends, record header starts and ends, body ends.
fn boundaries(seg: &[u8], frames: &[FrameAt]) -> Vec<u64> {
    let mut out = Vec::new();
    for f in frames {
        out.extend([f.off, f.off + FH64, f.off + f.total]);
        let body_end = f.off
            + FH64
            + u64::from(decode_frame_header(&seg[f.off as usize..]).unwrap().body_bytes);
        let mut pos = f.off + FH64;
        while pos + 16 <= body_end {
            let len =
                u32::from_le_bytes(seg[pos as usize + 4..pos as usize + 8].try_into().unwrap());
            out.extend([pos, pos + 16]);
            pos += 16 + u64::from(len);
        }
        out.push(body_end);
    }
    out
}

/// Cuts the last segment by truncation and (if `zero_too`) by zeroing the rest, at offsets
/// from the start of its third-to-last batch to its end (the close frame included): every
/// `stride`-th offset and every offset within one byte of a frame or record boundary
/// (`stride` 1: every offset). The append + reopen follow-up runs after each cut on
/// `SimFs`, and after every eighth and the boundary ones on the real disk, where each
/// costs several fsyncs.
fn every_cut(
    backend: &mut dyn Backend,
    ending: Ending,
    tail: &[&[usize]],
    zero_too: bool,
    stride: u64,
) {
    let fx = build(backend, ending, 8192, tail);
    let batches: Vec<&FrameAt> =
        fx.last_frames.iter().filter(|f| f.kind == FrameKind::Batch).collect();
    assert!(batches.len() >= 3);
    let from = batches[batches.len() - 3].off;
    let end = fx.last_frames.last().map(|f| f.off + f.total).unwrap();
    let orig = fx.last_bytes().to_vec();
    let mut failures = Failures::default();
    let marks = boundaries(&orig, &fx.last_frames);
    let near_boundary = |k: u64| marks.iter().any(|m| m.abs_diff(k) <= 1);
    let follow_every = if stride == 1 { 1 } else { 8 };
    for k in from..end {
        if !(k - from).is_multiple_of(stride) && !near_boundary(k) {
            continue;
        }
        let follow = (k - from).is_multiple_of(follow_every) || near_boundary(k);
        let truncated = orig[..k as usize].to_vec();
        let r = check_open(backend, &fx, truncated, follow);
        failures.record(format!("truncate at {k}"), r);
        if zero_too {
            let mut zeroed = orig.clone();
            zeroed[k as usize..].fill(0);
            let r = check_open(backend, &fx, zeroed, follow);
            failures.record(format!("zero from {k}"), r);
        }
    }
    failures.assert_none(&format!("{} {ending:?} store, cuts in {from}..{end}", backend.name()));
}

/// Payload lengths of the last three batches: records that fill a frame exactly, empty
/// records, records with padding, a long one.
const SIM_TAIL: &[&[usize]] = &[&[13, 0, 40], &[600], &[0], &[7, 1, 24]];
/// Shorter for the real disk, where every open, append and close fsyncs (and cut points are
/// sampled there: every fifth offset plus every one next to a boundary).
const DISK_TAIL: &[&[usize]] = &[&[21, 0], &[3], &[0, 30]];

#[test]
fn torn_tail_every_offset_simfs_closed() {
    every_cut(&mut Sim::new(1), Ending::Closed, SIM_TAIL, true, 1);
}

#[test]
fn torn_tail_every_offset_simfs_crashed() {
    every_cut(&mut Sim::new(2), Ending::Crashed, SIM_TAIL, true, 1);
}

#[test]
fn torn_tail_every_offset_simfs_reopened_then_crashed() {
    every_cut(&mut Sim::new(5), Ending::ReopenedThenCrashed, SIM_TAIL, true, 1);
}

#[test]
fn torn_tail_every_offset_disk_closed() {
    every_cut(&mut Disk::new(), Ending::Closed, DISK_TAIL, false, 5);
}

#[test]
fn torn_tail_every_offset_disk_crashed() {
    every_cut(&mut Disk::new(), Ending::Crashed, DISK_TAIL, false, 5);
}

#[test]
fn torn_tail_every_offset_disk_reopened_then_crashed() {
    every_cut(&mut Disk::new(), Ending::ReopenedThenCrashed, DISK_TAIL, false, 5);
}

// ---------------------------------------------------------------------------------------------
// Row 6: zero-filled and garbage tails.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Tail {
    Zeros,
    Garbage,
    /// Garbage, then zeros for the second half.
    GarbageThenZeros,
    /// Zeros, then garbage for the second half.
    ZerosThenGarbage,
}

fn tail_bytes(kind: Tail, len: usize, rng: &mut Rng) -> Vec<u8> {
    let mut t = match kind {
        Tail::Zeros => vec![0u8; len],
        _ => rng.bytes(len),
    };
    match kind {
        Tail::GarbageThenZeros => t[len / 2..].fill(0),
        Tail::ZerosThenGarbage => t[..len / 2].fill(0),
        _ => {}
    }
    t
}

const TAIL_LENS: &[usize] =
    &[0, 1, 7, 8, 9, 47, 48, 49, 63, 64, 100, 511, 512, 513, 4095, 4096, 4097, 20000, 65535, 65536];

fn zero_and_garbage_tails(backend: &mut dyn Backend, ending: Ending, lens: &[usize]) {
    let fx = build(backend, ending, 128 << 10, &[&[5, 0], &[1000]]);
    let end = fx.last_frames.last().map(|f| f.off + f.total).unwrap() as usize;
    let orig = fx.last_bytes()[..end].to_vec();
    let mut rng = Rng(0x6A7B_A6E5 ^ ending as u64);
    let mut failures = Failures::default();
    for kind in [Tail::Zeros, Tail::Garbage, Tail::GarbageThenZeros, Tail::ZerosThenGarbage] {
        for &len in lens {
            let mut damaged = orig.clone();
            damaged.extend(tail_bytes(kind, len, &mut rng));
            let r = check_open(backend, &fx, damaged, true);
            failures.record(format!("{kind:?} tail of {len} bytes"), r);
        }
    }
    failures.assert_none(&format!("{} {ending:?} store, tails after offset {end}", backend.name()));
}

#[test]
fn zero_and_garbage_tails_simfs() {
    let mut rng = Rng(99);
    let mut lens = TAIL_LENS.to_vec();
    lens.extend((0..30).map(|_| rng.below(65537) as usize));
    zero_and_garbage_tails(&mut Sim::new(3), Ending::Closed, &lens);
    zero_and_garbage_tails(&mut Sim::new(4), Ending::Crashed, &lens);
    zero_and_garbage_tails(&mut Sim::new(6), Ending::ReopenedThenCrashed, &lens);
}

#[test]
fn zero_and_garbage_tails_disk() {
    // Fewer lengths than on SimFs: every case fsyncs several times.
    let lens = [0, 9, 513, 65536];
    zero_and_garbage_tails(&mut Disk::new(), Ending::Closed, &lens);
    zero_and_garbage_tails(&mut Disk::new(), Ending::Crashed, &lens);
}
