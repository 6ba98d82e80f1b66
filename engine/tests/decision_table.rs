//! RELIABILITY.md row 28: the recovery decision tables of format-spec.md §7.3, exhaustively.
//!
//! Property: for every combination of the inputs of table S (a non-last segment: trusted seal
//! T; how the walk stopped; durable proof P; end seq E against the next base N) and of table L
//! (the last segment: index promise I violated or not; how the walk stopped; proof P; zero
//! tail Z), exactly one row of the table matches (checked on the enumeration itself, as
//! TigerBeetle's `recovery_cases`), and a store built on a `SimFs` to present exactly those
//! inputs gets that row's outcome: the same error (kind, file and offset), or an open whose
//! report and files say what the row says (moved aside, cut, seal completed, truncated tail
//! reported). Each fixture is opened twice, on separate copies: by a writer (the "Outcome"
//! column) and read-only (the "Read-only open" column, which must also leave every byte of
//! every file unchanged). Table D's rows (directory and headers) are each realised once, with
//! the same two opens (D5, more than `SEGMENTS_MAX` segment names, with 2^20 + 1 empty names;
//! D11, a segment longer than 4 GiB, on a sparse file on the real file system).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use annal::format::{FrameKind, Placement, SegmentHeader, encode_marker_frame, log_tag};
use annal::fs::{SimFs, Storage};
use annal::limits::{FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES, SEGMENTS_MAX};
use annal::{CorruptionKind, Durability, Error, Log, Options, RecoveryReport};

const DIR: &str = "/store";

fn opts() -> Options {
    Options {
        segment_bytes: 4096,
        max_record_bytes: 512,
        durability: Durability::Sync,
        preallocate: false,
        ..Options::default()
    }
}

fn seg_name(base: u64) -> String {
    format!("segments/{base:020}.seg")
}

fn idx_name(base: u64) -> String {
    format!("segments/{base:020}.idx")
}

/// A store directory as file name (relative to `DIR`) -> bytes.
type Files = BTreeMap<String, Vec<u8>>;

fn files_of(sim: &SimFs) -> Files {
    let mut out = Files::new();
    let mut stack = vec![PathBuf::from(DIR)];
    while let Some(dir) = stack.pop() {
        for name in sim.read_dir(&dir).unwrap() {
            let p = dir.join(&name);
            match sim.current_bytes(&p) {
                Some(b) => {
                    let rel = p.strip_prefix(DIR).unwrap().to_string_lossy().into_owned();
                    out.insert(rel, b);
                }
                None => stack.push(p),
            }
        }
    }
    out
}

fn sim_of(files: &Files) -> SimFs {
    let sim = SimFs::new(1);
    sim.create_dir_all(&Path::new(DIR).join("segments")).unwrap();
    for (name, bytes) in files {
        sim.write_file_raw(Path::new(DIR).join(name), bytes).unwrap();
    }
    sim
}

fn open(files: &Files, read_only: bool) -> (Result<Log, Error>, SimFs) {
    let sim = sim_of(files);
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let log = if read_only {
        Log::open_read_only_with(storage, DIR, opts())
    } else {
        Log::open_with(storage, DIR, opts())
    };
    (log, sim)
}

fn payload(i: u64) -> Vec<u8> {
    format!("payload {i} ").repeat(1 + (i % 5) as usize).into_bytes()
}

/// The materials every fixture is cut from, all of one store (one log id).
struct Materials {
    log_id: [u8; 16],
    /// Segment 0 once it was sealed by a roll: ends exactly with its seal frame.
    sealed: Vec<u8>,
    /// Its end seq (the seal's seq), the base of segment 1.
    n: u64,
    /// A single-segment store after a clean close: segment 0 ending with a close frame.
    closed: Vec<u8>,
    /// Its end seq.
    e: u64,
    /// The index file written at that close (promises `e`).
    idx_now: Vec<u8>,
    /// The index of the same segment after more records and another close (promises more).
    idx_later: Vec<u8>,
    /// Offset of the first batch's payload in segment 0 (the same in both).
    first_payload: u64,
}

fn materials() -> Materials {
    // A single segment, closed; then more records and another close for a later index.
    let sim = SimFs::new(7);
    let log = Log::open_with(Arc::new(sim.clone()), DIR, opts()).unwrap();
    let log_id = log.log_id();
    for i in 0..6 {
        log.append(&[payload(i)]).unwrap();
    }
    let e = log.visible_end();
    log.close().unwrap();
    let f = files_of(&sim);
    let (closed, idx_now) = (f[&seg_name(0)].clone(), f[&idx_name(0)].clone());
    let log = Log::open_with(Arc::new(sim.clone()), DIR, opts()).unwrap();
    log.append(&[payload(6)]).unwrap();
    log.close().unwrap();
    let idx_later = files_of(&sim)[&idx_name(0)].clone();
    assert_eq!(
        log_id,
        Log::open_read_only_with(Arc::new(sim.clone()), DIR, opts()).unwrap().log_id()
    );

    // Keep appending to the same store until segment 0 is sealed.
    let log = Log::open_with(Arc::new(sim.clone()), DIR, opts()).unwrap();
    let mut i = 7;
    while log.stats().rolls == 0 {
        log.append(&[payload(i)]).unwrap();
        i += 1;
    }
    log.close().unwrap();
    let f = files_of(&sim);
    let sealed = f[&seg_name(0)].clone();
    let seal_at = sealed.len() - FRAME_HEADER_BYTES;
    let seal = annal::format::decode_frame_header(&sealed[seal_at..]).unwrap();
    assert_eq!(seal.kind, FrameKind::Seal);
    let n = seal.seq;
    assert!(f.contains_key(&seg_name(n)));
    let first_payload = (SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES + 16) as u64;
    Materials { log_id, sealed, n, closed, e, idx_now, idx_later, first_payload }
}

/// A segment holding only a header, with base `base`.
fn header_only(m: &Materials, base: u64) -> Vec<u8> {
    SegmentHeader { log_id: m.log_id, base_seq: base, created_unix_ms: 1 }.encode().to_vec()
}

fn marker(m: &Materials, kind: FrameKind, base: u64, seq: u64, at: u64) -> Vec<u8> {
    let p = Placement {
        seq,
        file_offset: at,
        synced_through: at,
        log_tag: log_tag(&m.log_id),
        timestamp_us: u64::MAX / 4,
    };
    encode_marker_frame(kind, (seq - base) as u32, p).to_vec()
}

// ---------------------------------------------------------------------------------------
// Table S
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Sealed,
    EndOfData,
    Invalid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Less,
    Greater,
}

/// One combination of table S's inputs; `None` = not evaluated.
#[derive(Debug, Clone, Copy)]
struct SInputs {
    t: bool,
    stop: Option<Stop>,
    p: Option<bool>,
    r: Cmp,
}

fn s_combinations() -> Vec<SInputs> {
    let mut out = Vec::new();
    for r in [Cmp::Eq, Cmp::Less, Cmp::Greater] {
        out.push(SInputs { t: true, stop: None, p: None, r });
        for stop in [Stop::Sealed, Stop::EndOfData] {
            out.push(SInputs { t: false, stop: Some(stop), p: None, r });
        }
        for p in [true, false] {
            out.push(SInputs { t: false, stop: Some(Stop::Invalid), p: Some(p), r });
        }
    }
    out
}

/// The rows of table S as predicates, in the spec's order.
/// A row of a decision table: its name and the condition on the inputs that selects it.
type Row<I> = (&'static str, fn(&I) -> bool);

fn s_rows() -> Vec<Row<SInputs>> {
    use Cmp::*;
    vec![
        ("S1", |i| i.t && i.r == Eq),
        ("S2", |i| i.t && i.r == Less),
        ("S3", |i| i.t && i.r == Greater),
        ("S4", |i| !i.t && i.stop == Some(Stop::Sealed) && i.r == Eq),
        ("S5", |i| !i.t && i.stop == Some(Stop::Sealed) && i.r == Less),
        ("S6", |i| !i.t && i.stop == Some(Stop::Sealed) && i.r == Greater),
        ("S7", |i| !i.t && i.stop == Some(Stop::EndOfData) && i.r == Eq),
        ("S8", |i| !i.t && i.stop == Some(Stop::EndOfData) && i.r == Less),
        ("S9", |i| !i.t && i.stop == Some(Stop::EndOfData) && i.r == Greater),
        ("S10", |i| !i.t && i.stop == Some(Stop::Invalid) && i.p == Some(true)),
        ("S11", |i| !i.t && i.stop == Some(Stop::Invalid) && i.p == Some(false) && i.r == Eq),
        ("S12", |i| !i.t && i.stop == Some(Stop::Invalid) && i.p == Some(false) && i.r == Less),
        ("S13", |i| !i.t && i.stop == Some(Stop::Invalid) && i.p == Some(false) && i.r == Greater),
    ]
}

/// What a fixture is expected to do, and where its interesting offset lies.
struct SFixture {
    files: Files,
    /// Segment 0's end seq E.
    e: u64,
    /// Segment 1's base N.
    next: u64,
    /// The walk's stop offset in segment 0 (A for Sealed, L for EndOfData, X for Invalid).
    at: u64,
}

fn s_fixture(m: &Materials, i: &SInputs) -> SFixture {
    let mut a = m.sealed.clone();
    let seal_at = (a.len() - FRAME_HEADER_BYTES) as u64;
    let at = match (i.t, i.stop, i.p) {
        (true, ..) => seal_at,
        (false, Some(Stop::Sealed), _) => {
            // Non-zero bytes after the seal: the last 56 bytes are no frame.
            a.extend_from_slice(&[0xAB; 64]);
            seal_at
        }
        (false, Some(Stop::EndOfData), _) => {
            a.truncate(seal_at as usize);
            seal_at
        }
        (false, Some(Stop::Invalid), Some(false)) => {
            // A garbled seal: an invalid frame with nothing valid after it.
            a.truncate(seal_at as usize);
            a.extend_from_slice(&[0xCD; FRAME_HEADER_BYTES]);
            seal_at
        }
        (false, Some(Stop::Invalid), Some(true)) => {
            // Damage in the first batch, durable batches after it, and a broken seal.
            a[m.first_payload as usize] ^= 0x20;
            a[seal_at as usize + 8] ^= 0x01;
            SEGMENT_HEADER_BYTES as u64
        }
        other => unreachable!("{other:?}"),
    };
    let next = match i.r {
        Cmp::Eq => m.n,
        Cmp::Less => m.n + 1,
        Cmp::Greater => m.n - 1,
    };
    let mut files = Files::new();
    files.insert("LOCK".into(), Vec::new());
    files.insert(seg_name(0), a);
    files.insert(seg_name(next), header_only(m, next));
    SFixture { files, e: m.n, next, at }
}

fn kind_of(r: &Result<Log, Error>) -> String {
    match r {
        Ok(_) => "opened".into(),
        Err(e) => format!("{e:?}"),
    }
}

fn assert_corrupt(
    r: &Result<Log, Error>,
    file: &str,
    offset: u64,
    want: impl Fn(&CorruptionKind) -> bool,
    ctx: &str,
) {
    match r {
        Err(Error::Corrupt { file: f, offset: o, kind }) => {
            assert_eq!(f, &Path::new(DIR).join(file), "{ctx}: file");
            assert_eq!(*o, offset, "{ctx}: offset ({kind:?})");
            assert!(want(kind), "{ctx}: kind {kind:?}");
        }
        other => panic!("{ctx}: expected Corrupt in {file} at {offset}, got {}", kind_of(other)),
    }
}

fn assert_missing(r: &Result<Log, Error>, from: u64, to: u64, ctx: &str) {
    match r {
        Err(Error::MissingSegments { from: f, to: t }) => assert_eq!((*f, *t), (from, to), "{ctx}"),
        other => panic!("{ctx}: expected MissingSegments {from}..{to}, got {}", kind_of(other)),
    }
}

fn report(r: &Result<Log, Error>, ctx: &str) -> RecoveryReport {
    match r {
        Ok(log) => log.recovery_report().clone(),
        Err(e) => panic!("{ctx}: expected the open to succeed, got {e:?}"),
    }
}

fn seq_mismatch(expected: u64, found: u64) -> impl Fn(&CorruptionKind) -> bool {
    move |k| match k {
        CorruptionKind::SeqMismatch { expected: e, found: f } => (*e, *f) == (expected, found),
        _ => false,
    }
}

/// Checks a table S fixture against `row`, writer (`ro = false`) or read-only.
fn check_s(row: &str, fx: &SFixture, ro: bool, ctx: &str) {
    let (r, sim) = open(&fx.files, ro);
    let after = files_of(&sim);
    let seg0 = seg_name(0);
    let seg1 = seg_name(fx.next);
    let (e, n, at) = (fx.e, fx.next, fx.at);
    let a_after = &after[&seg0];
    let moved: Vec<&String> = after.keys().filter(|k| k.contains(".broken-")).collect();
    match row {
        "S1" => {
            let rep = report(&r, ctx);
            assert!(rep.seals_completed.is_empty() && rep.moved_aside.is_empty(), "{ctx}");
            assert_eq!(a_after, &fx.files[&seg0], "{ctx}: a trusted segment was modified");
        }
        "S2" | "S5" => assert_missing(&r, e, n, ctx),
        "S3" | "S6" => assert_corrupt(&r, &seg1, 0, seq_mismatch(e, n), ctx),
        "S4" => {
            let rep = report(&r, ctx);
            assert!(!rep.clean, "{ctx}");
            if ro {
                assert!(rep.moved_aside.is_empty(), "{ctx}");
            } else {
                assert_eq!(a_after.len() as u64, at + FRAME_HEADER_BYTES as u64, "{ctx}: cut");
                assert_eq!(moved.len(), 1, "{ctx}: the bytes after the seal moved aside");
                assert_eq!(rep.moved_aside.len(), 1, "{ctx}");
            }
        }
        "S7" | "S11" => {
            let rep = report(&r, ctx);
            assert_eq!(rep.seals_completed, [0], "{ctx}");
            if !ro {
                assert_eq!(a_after.len() as u64, at + FRAME_HEADER_BYTES as u64, "{ctx}");
                let seal = annal::format::decode_frame_header(&a_after[at as usize..]).unwrap();
                assert_eq!((seal.kind, seal.seq, u64::from(seal.count)), (FrameKind::Seal, e, e));
                assert_eq!(moved.len(), usize::from(row == "S11"), "{ctx}: moved aside");
            }
            let log = r.unwrap();
            assert_eq!(log.cursor(0).filter(|x| x.is_ok()).count() as u64, e, "{ctx}: reads");
        }
        "S8" => {
            let want = |k: &CorruptionKind| match k {
                CorruptionKind::IncompleteSegment { end, next } => (*end, *next) == (e, n),
                _ => false,
            };
            assert_corrupt(&r, &seg0, at, want, ctx);
        }
        "S9" | "S13" => assert_corrupt(&r, &seg0, at, seq_mismatch(e, n), ctx),
        "S10" => {
            let want = |k: &CorruptionKind| matches!(k, CorruptionKind::MidLog { .. });
            assert_corrupt(&r, &seg0, at, want, ctx);
        }
        "S12" => {
            let want = |k: &CorruptionKind| matches!(k, CorruptionKind::Decode(_));
            assert_corrupt(&r, &seg0, at, want, ctx);
        }
        other => unreachable!("{other}"),
    }
    if ro {
        assert_eq!(after, fx.files, "{ctx}: the read-only open changed a file");
    }
    // The rows that fail before the writer may act must not modify anything.
    if matches!(row, "S2" | "S3" | "S8" | "S9" | "S10" | "S12" | "S13") {
        assert_eq!(after, fx.files, "{ctx}: a failed open modified files");
    }
}

#[test]
fn table_s_every_combination_gets_its_rows_outcome() {
    let m = materials();
    let rows = s_rows();
    let combos = s_combinations();
    assert_eq!(combos.len(), 15);
    let mut hit = BTreeMap::new();
    for i in &combos {
        let matching: Vec<&str> = rows.iter().filter(|(_, p)| p(i)).map(|(n, _)| *n).collect();
        assert_eq!(matching.len(), 1, "{i:?} matches rows {matching:?}");
        let row = matching[0];
        *hit.entry(row).or_insert(0) += 1;
        let fx = s_fixture(&m, i);
        for ro in [false, true] {
            check_s(row, &fx, ro, &format!("{row} {i:?} read_only={ro}"));
        }
    }
    assert_eq!(hit.len(), rows.len(), "every row is reached: {hit:?}");
}

// ---------------------------------------------------------------------------------------
// Table L
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Index {
    /// No index file.
    None,
    /// An index promising exactly the records present (not violated).
    Kept,
    /// An index promising more than the segment holds (violated).
    Broken,
}

#[derive(Debug, Clone, Copy)]
struct LInputs {
    index: Index,
    stop: Stop,
    p: Option<bool>,
    z: Option<bool>,
}

fn l_combinations() -> Vec<LInputs> {
    let mut out = Vec::new();
    for index in [Index::None, Index::Kept, Index::Broken] {
        for stop in [Stop::EndOfData, Stop::Sealed] {
            out.push(LInputs { index, stop, p: None, z: None });
        }
        // A proof of damage before the close frame an intact index points to cannot be seen:
        // the walk starts at that close frame (§9.2, latent damage behind a trusted point).
        if index != Index::Kept {
            out.push(LInputs { index, stop: Stop::Invalid, p: Some(true), z: None });
        }
        for z in [false, true] {
            out.push(LInputs { index, stop: Stop::Invalid, p: Some(false), z: Some(z) });
        }
    }
    out
}

fn l_rows() -> Vec<Row<LInputs>> {
    fn i(x: &LInputs) -> bool {
        x.index == Index::Broken
    }
    vec![
        ("L1", |x| x.index == Index::Broken),
        ("L2", |x| !i(x) && x.stop == Stop::EndOfData),
        ("L3", |x| !i(x) && x.stop == Stop::Sealed),
        ("L4", |x| !i(x) && x.stop == Stop::Invalid && x.p == Some(true)),
        ("L5", |x| !i(x) && x.stop == Stop::Invalid && x.p == Some(false) && x.z == Some(false)),
        ("L6", |x| !i(x) && x.stop == Stop::Invalid && x.p == Some(false) && x.z == Some(true)),
    ]
}

struct LFixture {
    files: Files,
    /// Offset where the walk stops (A, X or the end of the file).
    at: u64,
    /// Bytes after `at` (for L5's report).
    tail: u64,
}

fn l_fixture(m: &Materials, x: &LInputs) -> LFixture {
    let mut s = m.closed.clone();
    let len = s.len() as u64;
    let (at, tail) = match (x.stop, x.p, x.z) {
        (Stop::EndOfData, ..) => (len, 0),
        (Stop::Sealed, ..) => {
            s.extend(marker(m, FrameKind::Seal, 0, m.e, len));
            (len, 0)
        }
        (Stop::Invalid, Some(true), _) => {
            s[m.first_payload as usize] ^= 0x20;
            (SEGMENT_HEADER_BYTES as u64, 0)
        }
        (Stop::Invalid, Some(false), Some(false)) => {
            s.extend_from_slice(&[0xAB; 64]);
            (len, 64)
        }
        (Stop::Invalid, Some(false), Some(true)) => {
            s.extend_from_slice(&[0; 64]);
            (len, 0)
        }
        other => unreachable!("{other:?}"),
    };
    let mut files = Files::new();
    files.insert("LOCK".into(), Vec::new());
    files.insert(seg_name(0), s);
    match x.index {
        Index::None => {}
        Index::Kept => {
            files.insert(idx_name(0), m.idx_now.clone());
        }
        Index::Broken => {
            files.insert(idx_name(0), m.idx_later.clone());
        }
    }
    LFixture { files, at, tail }
}

fn check_l(row: &str, fx: &LFixture, m: &Materials, ro: bool, ctx: &str) {
    let (r, sim) = open(&fx.files, ro);
    let after = files_of(&sim);
    let seg0 = seg_name(0);
    let moved: Vec<&String> = after.keys().filter(|k| k.contains(".broken-")).collect();
    match row {
        "L1" => {
            let want = |k: &CorruptionKind| {
                matches!(k, CorruptionKind::StaleSegment { promised, found }
                    if *promised == m.e + 1 && *found <= m.e)
            };
            match &r {
                Err(Error::Corrupt { file, kind, .. }) => {
                    assert_eq!(file, &Path::new(DIR).join(&seg0), "{ctx}");
                    assert!(want(kind), "{ctx}: {kind:?}");
                }
                other => panic!("{ctx}: expected StaleSegment, got {}", kind_of(other)),
            }
        }
        "L2" => {
            let rep = report(&r, ctx);
            assert!(rep.truncated.is_none() && rep.moved_aside.is_empty(), "{ctx}: {rep:?}");
            assert_eq!(after[&seg0], fx.files[&seg0], "{ctx}");
            assert_eq!(rep.next_seq, m.e, "{ctx}");
        }
        "L3" => {
            let want = |k: &CorruptionKind| match k {
                CorruptionKind::SealedTail { next_seq } => *next_seq == m.e,
                _ => false,
            };
            assert_corrupt(&r, &seg0, fx.at, want, ctx);
        }
        "L4" => {
            let want = |k: &CorruptionKind| matches!(k, CorruptionKind::MidLog { .. });
            assert_corrupt(&r, &seg0, fx.at, want, ctx);
        }
        "L5" => {
            let rep = report(&r, ctx);
            let t = rep.truncated.clone().unwrap_or_else(|| panic!("{ctx}: no truncation"));
            assert_eq!((t.offset, t.bytes, t.events), (fx.at, fx.tail, 0), "{ctx}");
            assert_eq!(t.moved_to.is_some(), !ro, "{ctx}");
            assert_eq!(rep.next_seq, m.e, "{ctx}");
            if !ro {
                assert_eq!(after[&seg0].len() as u64, fx.at, "{ctx}: cut");
                assert_eq!(moved.len(), 1, "{ctx}");
            }
        }
        "L6" => {
            let rep = report(&r, ctx);
            assert!(rep.truncated.is_none() && rep.moved_aside.is_empty(), "{ctx}: {rep:?}");
            assert_eq!(rep.next_seq, m.e, "{ctx}");
            if !ro {
                assert_eq!(after[&seg0].len() as u64, fx.at, "{ctx}: cut");
            }
        }
        other => unreachable!("{other}"),
    }
    if let Ok(log) = &r {
        assert_eq!(log.cursor(0).filter(|x| x.is_ok()).count() as u64, m.e, "{ctx}: reads");
    }
    if ro || matches!(row, "L1" | "L3" | "L4") {
        assert_eq!(after, fx.files, "{ctx}: files modified");
    }
}

#[test]
fn table_l_every_combination_gets_its_rows_outcome() {
    let m = materials();
    let rows = l_rows();
    let combos = l_combinations();
    assert_eq!(combos.len(), 14);
    let mut hit = BTreeMap::new();
    for x in &combos {
        let matching: Vec<&str> = rows.iter().filter(|(_, p)| p(x)).map(|(n, _)| *n).collect();
        assert_eq!(matching.len(), 1, "{x:?} matches rows {matching:?}");
        let row = matching[0];
        *hit.entry(row).or_insert(0) += 1;
        let fx = l_fixture(&m, x);
        for ro in [false, true] {
            check_l(row, &fx, &m, ro, &format!("{row} {x:?} read_only={ro}"));
        }
    }
    assert_eq!(hit.len(), rows.len(), "every row is reached: {hit:?}");
}

// ---------------------------------------------------------------------------------------
// Table D
// ---------------------------------------------------------------------------------------

/// A closed two-segment store (sealed 0, active N with index).
fn two_segments(m: &Materials) -> Files {
    let mut f = Files::new();
    f.insert("LOCK".into(), Vec::new());
    f.insert(seg_name(0), m.sealed.clone());
    f.insert(seg_name(m.n), header_only(m, m.n));
    f
}

fn assert_seg_corrupt(
    r: &Result<Log, Error>,
    base: u64,
    want: fn(&CorruptionKind) -> bool,
    ctx: &str,
) {
    assert_corrupt(r, &seg_name(base), 0, want, ctx);
}

#[test]
fn table_d_every_row_gets_its_outcome() {
    let m = materials();
    // D0: invalid options.
    let sim = SimFs::new(0);
    let bad = Options { segment_bytes: 100, ..opts() };
    for ro in [false, true] {
        let storage: Arc<dyn Storage> = Arc::new(sim.clone());
        let r = if ro {
            Log::open_read_only_with(storage, DIR, bad.clone())
        } else {
            Log::open_with(storage, DIR, bad.clone())
        };
        assert!(matches!(r, Err(Error::InvalidOptions(_))), "D0 ro={ro}: {}", kind_of(&r));
    }
    assert!(sim.read_dir(Path::new("/")).unwrap().is_empty(), "D0 created files");

    // D1: no directory. D3: no segments/. D7: nothing in segments/.
    for (row, setup) in [("D1", 0), ("D3", 1), ("D7", 2)] {
        for ro in [false, true] {
            let sim = SimFs::new(0);
            if setup >= 1 {
                sim.create_dir_all(Path::new(DIR)).unwrap();
            }
            if setup >= 2 {
                sim.create_dir_all(&Path::new(DIR).join("segments")).unwrap();
            }
            let storage: Arc<dyn Storage> = Arc::new(sim.clone());
            let r = if ro {
                Log::open_read_only_with(storage, DIR, opts())
            } else {
                Log::open_with(storage, DIR, opts())
            };
            let ctx = format!("{row} ro={ro}");
            if ro {
                assert!(matches!(r, Err(Error::NoStore { .. })), "{ctx}: {}", kind_of(&r));
            } else {
                let rep = report(&r, &ctx);
                assert!(rep.clean && rep.segments == 1 && rep.next_seq == 0, "{ctx}: {rep:?}");
                assert!(files_of(&sim).contains_key(&seg_name(0)), "{ctx}");
            }
        }
    }

    // D2: LOCK held by another handle.
    let files = two_segments(&m);
    let sim = sim_of(&files);
    let holder = Log::open_with(Arc::new(sim.clone()), DIR, opts()).unwrap();
    let before = files_of(&sim);
    let r = Log::open_with(Arc::new(sim.clone()), DIR, opts());
    assert!(matches!(r, Err(Error::Locked { .. })), "D2: {}", kind_of(&r));
    assert_eq!(files_of(&sim), before, "D2 touched files");
    let r = Log::open_read_only_with(Arc::new(sim.clone()), DIR, opts());
    assert!(r.is_ok(), "D2 read-only: {}", kind_of(&r));
    drop(holder);

    // D4: temp files.
    let mut files = two_segments(&m);
    files.insert(format!("{}.tmp", seg_name(m.n + 5)), vec![1; 10]);
    files.insert(format!("{}.tmp", idx_name(0)), vec![2; 10]);
    let (r, sim) = open(&files, false);
    let rep = report(&r, "D4");
    assert_eq!(rep.temp_files_removed.len(), 2, "D4: {rep:?}");
    assert!(!files_of(&sim).keys().any(|k| k.ends_with(".tmp")), "D4");
    let (r, sim) = open(&files, true);
    assert!(report(&r, "D4 ro").temp_files_removed.is_empty());
    assert_eq!(files_of(&sim), files, "D4 ro");

    // D6: no segment, but an index or moved-aside file.
    for leftover in [idx_name(0), format!("{}.broken-64", seg_name(0))] {
        let mut files = Files::new();
        files.insert(leftover.clone(), vec![1; 8]);
        for ro in [false, true] {
            let (r, sim) = open(&files, ro);
            let want = |k: &CorruptionKind| matches!(k, CorruptionKind::SegmentsGone);
            assert_corrupt(&r, "segments", 0, want, &format!("D6 {leftover} ro={ro}"));
            let mut after = files_of(&sim);
            if !ro {
                // The writer took the lock (O2) before it looked at segments/.
                assert!(after.remove("LOCK").is_some(), "D6: no lock taken");
            }
            assert_eq!(after, files, "D6 modified files");
        }
    }

    // D8-D10, D12: header problems, each in the second segment (the first is fine).
    type KindCheck = fn(&CorruptionKind) -> bool;
    let cases: Vec<(&str, Vec<u8>, u64, KindCheck)> = vec![
        ("D8 short", header_only(&m, m.n)[..40].to_vec(), m.n, |k| {
            matches!(k, CorruptionKind::Decode(annal::format::DecodeError::Truncated { .. }))
        }),
        (
            "D8 bad crc",
            {
                let mut h = header_only(&m, m.n);
                h[40] ^= 1;
                h
            },
            m.n,
            |k| matches!(k, CorruptionKind::Decode(_)),
        ),
        (
            "D9 foreign",
            {
                SegmentHeader { log_id: [9; 16], base_seq: m.n, created_unix_ms: 1 }
                    .encode()
                    .to_vec()
            },
            m.n,
            |k| matches!(k, CorruptionKind::ForeignSegment),
        ),
        ("D10 name", header_only(&m, m.n + 3), m.n, |k| {
            matches!(k, CorruptionKind::SegmentNameMismatch { .. })
        }),
    ];
    for (row, bytes, base, want) in cases {
        let mut files = two_segments(&m);
        files.insert(seg_name(base), bytes);
        for ro in [false, true] {
            let (r, sim) = open(&files, ro);
            assert_seg_corrupt(&r, base, want, &format!("{row} ro={ro}"));
            assert_eq!(files_of(&sim), files, "{row} modified files");
        }
    }
    let mut files = Files::new();
    files.insert("LOCK".into(), Vec::new());
    files.insert(seg_name(m.n), header_only(&m, m.n));
    for ro in [false, true] {
        let (r, _) = open(&files, ro);
        assert_missing(&r, 0, m.n, &format!("D12 ro={ro}"));
    }
}

/// D5 on its own (it builds 2^20 + 1 names, the slowest fixture), so it runs beside the rest.
#[test]
fn table_d5_more_than_segments_max_names_is_refused() {
    // Empty files: the count is checked before any is opened.
    let sim = SimFs::new(0);
    for base in 0..=SEGMENTS_MAX as u64 {
        sim.write_file_raw(Path::new(DIR).join(seg_name(base)), b"").unwrap();
    }
    for ro in [false, true] {
        let storage: Arc<dyn Storage> = Arc::new(sim.clone());
        let r = if ro {
            Log::open_read_only_with(storage, DIR, opts())
        } else {
            Log::open_with(storage, DIR, opts())
        };
        let want = |k: &CorruptionKind| match k {
            CorruptionKind::TooManySegments { count } => *count == SEGMENTS_MAX as u64 + 1,
            _ => false,
        };
        assert_corrupt(&r, "segments", 0, want, &format!("D5 ro={ro}"));
    }
}

/// D11 needs a file longer than 4 GiB: a sparse file on the real file system.
#[test]
fn table_d11_a_segment_over_4_gib_is_refused() {
    let root = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = root.path().join("store");
    let log = Log::open(&dir, opts()).unwrap();
    log.append(&[b"x"]).unwrap();
    log.close().unwrap();
    let seg = dir.join(seg_name(0));
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(annal::limits::SEGMENT_BYTES_MAX + 8).unwrap();
    drop(f);
    for ro in [false, true] {
        let r = if ro { Log::open_read_only(&dir, opts()) } else { Log::open(&dir, opts()) };
        match &r {
            Err(Error::Corrupt { file, offset: 0, kind: CorruptionKind::Decode(d) }) => {
                assert_eq!(file, &seg);
                assert!(matches!(d, annal::format::DecodeError::OutOfBounds { .. }), "{d:?}");
            }
            other => panic!("D11 ro={ro}: {}", kind_of(other)),
        }
    }
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), annal::limits::SEGMENT_BYTES_MAX + 8);
}
