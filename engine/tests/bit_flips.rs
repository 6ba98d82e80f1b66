//! Every single-bit flip and every damaged sector of a store's segment files is detected and
//! never turns into a wrong record (RELIABILITY.md rows 7 and 8).
//!
//! Fixtures: a store of two segments of about 8 KiB each on `SimFs`, closed cleanly, and the
//! same store as a crashed writer leaves it (no close frame, the last segment preallocated).
//! Each mutation is applied to a fresh copy of the fixture: every bit of both segment files
//! flipped one at a time (row 7), and every aligned 512-byte and 4 KiB sector zeroed and then
//! filled with random bytes (row 8). The store is then opened and everything is read back,
//! through a cursor over the whole log and through `read(seq)` of the records near the
//! damage. Each outcome is classified; the test fails if
//!
//! * any read returns a record that is not the original one (wrong bytes, wrong seq, or a
//!   record that silently disappeared), or open fails with anything but a typed corruption
//!   error;
//! * any mutation goes undetected: neither open fails, nor a read fails, nor recovery reports
//!   what it cut or repaired;
//! * a reported truncation does not match the damage exactly (offset of the first damaged
//!   frame, records that were lost, records counted in the cut, bytes up to the last non-zero
//!   one), or, for a single bit, cuts more than the last batch or close frame of the last
//!   segment — the only loss RELIABILITY.md accepts.
//!
//! A classification summary (counts per outcome, and per region of the file for failures) is
//! printed. `ANNAL_FLIP_STRIDE=k` flips only every k-th bit (default 1: all of them).

const FH: usize = annal::limits::FRAME_HEADER_BYTES;
const FH64: u64 = FH as u64;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use annal::format::{FrameKind, decode_frame_header};
use annal::fs::{SimFs, Storage};
use annal::{CorruptionKind, Error, Log, Options};

mod common;
use common::Rng;

const DIR: &str = "/store";
const SEGMENT_BYTES: u64 = 8192;

fn opts() -> Options {
    Options {
        segment_bytes: SEGMENT_BYTES,
        max_record_bytes: 1024,
        index_interval_bytes: 1024,
        ..Options::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The fixture and its layout.
// ---------------------------------------------------------------------------------------------

/// What a byte of a segment file is, for the classification of failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Region {
    SegmentHeader,
    BatchHeader,
    RecordHeader,
    Payload,
    BatchPadding,
    SealFrame,
    CloseFrame,
    /// Preallocated space after the last frame.
    ZeroTail,
}

#[derive(Debug, Clone, Copy)]
struct FrameAt {
    off: u64,
    total: u64,
    kind: FrameKind,
    seq: u64,
    count: u32,
}

#[derive(Debug, Clone)]
struct Seg {
    path: PathBuf,
    bytes: Vec<u8>,
    base: u64,
    frames: Vec<FrameAt>,
    /// Region of every byte.
    regions: Vec<Region>,
}

impl Seg {
    fn parse(path: PathBuf, bytes: Vec<u8>) -> Seg {
        let base: u64 = path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        let mut regions = vec![Region::ZeroTail; bytes.len()];
        regions[..64].fill(Region::SegmentHeader);
        let mut frames = Vec::new();
        let mut off = 64usize;
        while let Some(f) = bytes.get(off..).and_then(|b| decode_frame_header(b).ok()) {
            let total = f.total_bytes() as usize;
            let (head, rest) = match f.kind {
                FrameKind::Batch => (Region::BatchHeader, Region::BatchPadding),
                FrameKind::Seal => (Region::SealFrame, Region::SealFrame),
                FrameKind::Close => (Region::CloseFrame, Region::CloseFrame),
            };
            regions[off..off + FH].fill(head);
            regions[off + FH..off + total].fill(rest);
            let body_end = off + FH + f.body_bytes as usize;
            let mut pos = off + FH;
            while pos < body_end {
                let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
                regions[pos..pos + 16].fill(Region::RecordHeader);
                regions[pos + 16..pos + 16 + len].fill(Region::Payload);
                pos += 16 + len;
            }
            frames.push(FrameAt {
                off: off as u64,
                total: total as u64,
                kind: f.kind,
                seq: f.seq,
                count: f.count,
            });
            off += total;
            if f.kind == FrameKind::Seal {
                break;
            }
        }
        Seg { path, bytes, base, frames, regions }
    }

    /// End of the last frame.
    fn frames_end(&self) -> u64 {
        self.frames.last().map_or(64, |f| f.off + f.total)
    }
}

struct Fixture {
    name: &'static str,
    /// Every file of the segments directory.
    files: Vec<(PathBuf, Vec<u8>)>,
    /// The two segment files, parsed.
    segs: Vec<Seg>,
    records: Vec<Vec<u8>>,
}

/// Two segments of about 8 KiB: the first sealed, the second filled almost to the roll.
fn build(closed: bool) -> Fixture {
    let sim = SimFs::new(7);
    let log = Log::open_with(Arc::new(sim.clone()), DIR, opts()).unwrap();
    let mut rng = Rng(0xB17_F11B);
    let mut records: Vec<Vec<u8>> = Vec::new();
    let mut pos = 0u64;
    loop {
        let n = 1 + rng.below(3) as usize;
        let batch: Vec<Vec<u8>> = (0..n)
            .map(|_| {
                let len = match rng.below(8) {
                    0 => 0,
                    1 => 300 + rng.below(400) as usize,
                    _ => rng.below(90) as usize,
                };
                rng.bytes(len)
            })
            .collect();
        let bytes = annal::format::batch_frame_bytes(batch.iter().map(Vec::len));
        let rolls = log.stats().rolls;
        assert!(rolls <= 1, "the fixture rolled a second time: its prediction is wrong");
        // The engine rolls when a batch would leave no room for a seal and a close frame.
        if rolls == 1 && pos + bytes > SEGMENT_BYTES - 2 * FH64 {
            break;
        }
        let a = log.append(&batch).unwrap();
        assert_eq!(a.first, records.len() as u64);
        records.extend(batch);
        pos = if log.stats().rolls > rolls { 64 + bytes } else { pos + bytes };
    }
    let seg_dir = Path::new(DIR).join("segments");
    let snapshot = |sim: &SimFs| -> Vec<(PathBuf, Vec<u8>)> {
        let mut names = sim.read_dir(&seg_dir).unwrap();
        names.sort();
        names
            .into_iter()
            .map(|n| {
                let p = seg_dir.join(n);
                let b = sim.durable_bytes(&p).unwrap();
                (p, b)
            })
            .collect()
    };
    let files = if closed {
        log.close().unwrap();
        snapshot(&sim)
    } else {
        // Under Durability::Sync everything appended is durable: this is what a power loss
        // now leaves.
        let files = snapshot(&sim);
        drop(log);
        files
    };
    let segs: Vec<Seg> = files
        .iter()
        .filter(|(p, _)| p.extension().is_some_and(|e| e == "seg"))
        .map(|(p, b)| Seg::parse(p.clone(), b.clone()))
        .collect();
    assert_eq!(segs.len(), 2, "two segments");
    assert_eq!(segs[0].frames.last().unwrap().kind, FrameKind::Seal);
    let last = segs[1].frames.last().unwrap().kind;
    assert_eq!(last, if closed { FrameKind::Close } else { FrameKind::Batch });
    for s in &segs {
        assert!(s.bytes.len() > 7000, "segment of {} bytes", s.bytes.len());
    }
    let name = if closed { "closed" } else { "crashed" };
    Fixture { name, files, segs, records }
}

// ---------------------------------------------------------------------------------------------
// One mutation: open, read, classify.
// ---------------------------------------------------------------------------------------------

/// How a mutation was detected (or not).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// Open failed with a typed corruption error (its kind).
    OpenFailed(String),
    /// Open cut the tail of the last segment and reported it exactly.
    TailCutAndReported,
    /// Open cut more than the last batch of the last segment, and reported it (possible only
    /// when the damage spans several frames).
    TailCutBeyondLastBatch,
    /// Open completed the seal of a sealed segment whose seal was damaged (reported).
    SealRewritten,
    /// Open succeeded; a read failed with a corruption error.
    ReadFailed,
    /// The mutation changed no byte.
    Unchanged,
    // Failures:
    /// Nothing noticed the damage.
    Undetected,
    /// A read returned a wrong record, or records disappeared without a report.
    WrongData(String),
    /// The truncation report does not match the damage.
    BadReport(String),
    /// Open or a read failed with an error that is not a corruption error, or panicked.
    Unexpected(String),
}

impl Outcome {
    fn is_failure(&self, single_bit: bool) -> bool {
        match self {
            Outcome::Undetected
            | Outcome::WrongData(_)
            | Outcome::BadReport(_)
            | Outcome::Unexpected(_) => true,
            Outcome::TailCutBeyondLastBatch => single_bit,
            _ => false,
        }
    }

    /// A short label for the summary.
    fn label(&self) -> String {
        match self {
            Outcome::OpenFailed(k) => format!("open failed: {k}"),
            Outcome::WrongData(_) => "WRONG DATA".into(),
            Outcome::BadReport(_) => "BAD TRUNCATION REPORT".into(),
            Outcome::Unexpected(_) => "UNEXPECTED ERROR".into(),
            Outcome::Undetected => "UNDETECTED".into(),
            other => format!("{other:?}"),
        }
    }
}

fn kind_name(kind: &CorruptionKind) -> String {
    match kind {
        CorruptionKind::Decode(d) => {
            let s = format!("{d:?}");
            format!("Decode({})", s.split([' ', '(', '{']).next().unwrap_or_default())
        }
        CorruptionKind::MidLog { cause, .. } => format!("MidLog({})", kind_name(cause)),
        other => {
            let s = format!("{other:?}");
            s.split([' ', '(', '{']).next().unwrap_or_default().to_string()
        }
    }
}

/// Opens the fixture with segment `si` replaced by `mutated` and classifies the result.
/// `touched` is the byte range that was changed.
fn run_one(fx: &Fixture, si: usize, mutated: &[u8], touched: std::ops::Range<usize>) -> Outcome {
    let seg = &fx.segs[si];
    if mutated == &seg.bytes[..] {
        return Outcome::Unchanged;
    }
    let sim = SimFs::new(1);
    for (p, b) in &fx.files {
        let bytes = if *p == seg.path { mutated } else { &b[..] };
        sim.write_file_raw(p, bytes).unwrap();
    }
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Log::open_with(Arc::new(sim.clone()), DIR, opts())
    }));
    let log = match opened {
        Err(_) => return Outcome::Unexpected("open panicked".into()),
        Ok(Err(Error::Corrupt { kind, .. })) => return Outcome::OpenFailed(kind_name(&kind)),
        Ok(Err(Error::MissingSegments { .. })) => return Outcome::OpenFailed("Missing".into()),
        Ok(Err(e)) => return Outcome::Unexpected(format!("open: {e:?}")),
        Ok(Ok(log)) => log,
    };
    let outcome = classify_open(fx, si, &log, mutated, touched);
    // Skip the clean close of the drop: this store is thrown away.
    sim.crash_drop_all();
    drop(log);
    outcome
}

fn classify_open(
    fx: &Fixture,
    si: usize,
    log: &Log,
    mutated: &[u8],
    touched: std::ops::Range<usize>,
) -> Outcome {
    let seg = &fx.segs[si];
    let report = log.recovery_report().clone();
    let n = log.visible_end();
    let total = fx.records.len() as u64;
    let mut read_failed = false;
    // Everything, through one cursor.
    let mut next = 0u64;
    for r in log.cursor(0) {
        match r {
            Ok(rec)
                if rec.seq == next
                    && fx.records.get(next as usize) == Some(&rec.payload.to_vec()) =>
            {
                next += 1
            }
            Ok(rec) => return Outcome::WrongData(format!("cursor returned {rec:?} at {next}")),
            Err(Error::Corrupt { .. }) => {
                read_failed = true;
                break;
            }
            Err(e) => return Outcome::Unexpected(format!("cursor at {next}: {e:?}")),
        }
    }
    if !read_failed && next != n {
        return Outcome::WrongData(format!("cursor stopped at {next} of {n} without an error"));
    }
    // The records around the damage, by seq (through the sparse index).
    let near: Vec<u64> = seg
        .frames
        .iter()
        .filter(|f| f.kind == FrameKind::Batch)
        .filter(|f| {
            f.off as usize <= touched.end + 400 && (f.off + f.total) as usize + 400 >= touched.start
        })
        .flat_map(|f| f.seq..f.seq + u64::from(f.count))
        .chain([0, n.saturating_sub(1)])
        .filter(|&s| s < n)
        .collect();
    for seq in near {
        match log.read(seq) {
            Ok(r) if r.seq == seq && r.payload[..] == fx.records[seq as usize][..] => {}
            Ok(r) => return Outcome::WrongData(format!("read({seq}) returned {r:?}")),
            Err(Error::Corrupt { .. }) => read_failed = true,
            Err(e) => return Outcome::Unexpected(format!("read({seq}): {e:?}")),
        }
    }
    if let Some(t) = &report.truncated {
        return check_truncation(fx, si, t, n, mutated);
    }
    if n != total {
        return Outcome::WrongData(format!("{n} of {total} records, nothing reported"));
    }
    if !report.seals_completed.is_empty() {
        return Outcome::SealRewritten;
    }
    if read_failed {
        return Outcome::ReadFailed;
    }
    Outcome::Undetected
}

/// A truncation must be of the last segment, start at its first damaged frame, lose exactly
/// the records of the frames from there on, count the records of a cut batch whose header
/// survived, and run to the last non-zero byte.
fn check_truncation(
    fx: &Fixture,
    si: usize,
    t: &annal::TruncatedTail,
    n: u64,
    mutated: &[u8],
) -> Outcome {
    let last = fx.segs.len() - 1;
    let seg = &fx.segs[si];
    if si != last || t.segment != seg.path {
        return Outcome::BadReport(format!("cut {:?} after damage to {:?}", t.segment, seg.path));
    }
    let first_bad = seg.frames.iter().position(|f| {
        let r = f.off as usize..(f.off + f.total) as usize;
        mutated.get(r.clone()) != seg.bytes.get(r)
    });
    let at = first_bad.map_or(seg.frames_end(), |i| seg.frames[i].off);
    let kept: u64 = seg.base
        + seg.frames[..first_bad.unwrap_or(seg.frames.len())]
            .iter()
            .filter(|f| f.kind == FrameKind::Batch)
            .map(|f| u64::from(f.count))
            .sum::<u64>();
    let header_intact = first_bad.is_some_and(|i| {
        let f = seg.frames[i];
        let r = f.off as usize..f.off as usize + FH;
        f.kind == FrameKind::Batch && mutated.get(r.clone()) == seg.bytes.get(r)
    });
    let events = if header_intact { u64::from(seg.frames[first_bad.unwrap()].count) } else { 0 };
    let last_nz = mutated.iter().rposition(|&b| b != 0).map_or(0, |i| i as u64 + 1);
    let mut why = Vec::new();
    if t.offset != at {
        why.push(format!("offset {} != first damaged frame {at}", t.offset));
    }
    if n != kept {
        why.push(format!("{n} records kept, {kept} expected"));
    }
    if t.events != events {
        why.push(format!("events {} != {events}", t.events));
    }
    if t.bytes != last_nz.saturating_sub(at) {
        why.push(format!("bytes {} != {} (to the last non-zero byte)", t.bytes, last_nz - at));
    }
    if !why.is_empty() {
        return Outcome::BadReport(why.join("; "));
    }
    let last_batch = seg.frames.iter().rev().find(|f| f.kind == FrameKind::Batch).unwrap();
    if at < last_batch.off {
        return Outcome::TailCutBeyondLastBatch;
    }
    Outcome::TailCutAndReported
}

// ---------------------------------------------------------------------------------------------
// Sweeps and the summary.
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Tally {
    /// Outcome label -> count.
    outcomes: BTreeMap<String, u64>,
    /// (outcome label, region) -> (count, first example) for failures.
    failures: BTreeMap<(String, Region), (u64, String)>,
    total: u64,
}

impl Tally {
    fn add(
        &mut self,
        o: &Outcome,
        single_bit: bool,
        region: Region,
        what: impl FnOnce() -> String,
    ) {
        self.total += 1;
        *self.outcomes.entry(o.label()).or_default() += 1;
        if o.is_failure(single_bit) {
            let e = self
                .failures
                .entry((o.label(), region))
                .or_insert_with(|| (0, format!("{} -> {o:?}", what())));
            e.0 += 1;
        }
    }

    fn merge(&mut self, other: Tally) {
        self.total += other.total;
        for (k, v) in other.outcomes {
            *self.outcomes.entry(k).or_default() += v;
        }
        for (k, (n, ex)) in other.failures {
            let e = self.failures.entry(k).or_insert((0, ex));
            e.0 += n;
        }
    }

    fn finish(&self, title: &str) {
        let mut s = format!("{title}: {} mutations\n", self.total);
        for (k, v) in &self.outcomes {
            s += &format!("  {k}: {v}\n");
        }
        if !self.failures.is_empty() {
            s += "  failures by region:\n";
            for ((label, region), (n, ex)) in &self.failures {
                s += &format!("    {label} in {region:?}: {n} (first: {ex})\n");
            }
        }
        eprintln!("{s}");
        assert!(self.failures.is_empty(), "{s}");
    }
}

fn stride() -> usize {
    std::env::var("ANNAL_FLIP_STRIDE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&s| s > 0)
        .unwrap_or(1)
}

/// Flips every (`stride`-th) bit of both segment files, spread over a few threads.
fn flip_every_bit(fx: &Fixture) {
    let stride = stride();
    let mut jobs: Vec<(usize, usize)> = Vec::new();
    for (si, seg) in fx.segs.iter().enumerate() {
        jobs.extend((0..seg.bytes.len() * 8).step_by(stride).map(|bit| (si, bit)));
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(8);
    let tally = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .chunks(jobs.len().div_ceil(threads))
            .map(|chunk| {
                s.spawn(move || {
                    let mut tally = Tally::default();
                    for &(si, bit) in chunk {
                        let seg = &fx.segs[si];
                        let (byte, b) = (bit / 8, bit % 8);
                        let mut m = seg.bytes.clone();
                        m[byte] ^= 1 << b;
                        let o = run_one(fx, si, &m, byte..byte + 1);
                        tally.add(&o, true, seg.regions[byte], || {
                            format!("{} byte {byte} bit {b}", seg.path.display())
                        });
                    }
                    tally
                })
            })
            .collect();
        let mut all = Tally::default();
        for h in handles {
            all.merge(h.join().unwrap());
        }
        all
    });
    let note = if stride > 1 { format!(" (every {stride}th bit)") } else { String::new() };
    tally.finish(&format!("bit flips, {} store{note}", fx.name));
}

/// Zeroes and then randomises every aligned sector of both segment files.
fn damage_every_sector(fx: &Fixture, sector: usize) {
    let mut rng = Rng(0x5EC7_0B5E ^ sector as u64);
    let mut tally = Tally::default();
    for (si, seg) in fx.segs.iter().enumerate() {
        for start in (0..seg.bytes.len()).step_by(sector) {
            let end = (start + sector).min(seg.bytes.len());
            for zero in [true, false] {
                let mut m = seg.bytes.clone();
                if zero {
                    m[start..end].fill(0);
                } else {
                    m[start..end].copy_from_slice(&rng.bytes(end - start));
                }
                let o = run_one(fx, si, &m, start..end);
                // The region of the first byte that changed.
                let changed = (start..end).find(|&i| m[i] != seg.bytes[i]).unwrap_or(start);
                tally.add(&o, false, seg.regions[changed], || {
                    let how = if zero { "zeroed" } else { "randomised" };
                    format!("{} sector {start}..{end} {how}", seg.path.display())
                });
            }
        }
    }
    tally.finish(&format!("{sector}-byte sectors, {} store", fx.name));
}

#[test]
fn every_bit_flip_is_detected_closed_store() {
    flip_every_bit(&build(true));
}

#[test]
fn every_bit_flip_is_detected_crashed_store() {
    flip_every_bit(&build(false));
}

#[test]
fn every_damaged_sector_is_detected() {
    for closed in [true, false] {
        let fx = build(closed);
        damage_every_sector(&fx, 512);
        damage_every_sector(&fx, 4096);
    }
}
