//! The sparse offset index files are a cache: a missing, damaged, stale, foreign or swapped
//! `.idx` file never changes what a read returns, is rebuilt from its segment, and is written
//! back (RELIABILITY.md row 11).
//!
//! The fixture is a cleanly closed store of five segments written in three sessions (so the
//! last segment holds a close frame in its middle, and older versions of two index files
//! exist). Each case damages index files only — bit flips (every bit of two of them, every
//! fifth bit of the others), truncation, extension, zeroing, deletion, swapping between
//! segments, the same file of another store, stale versions, and index files whose checksums
//! are valid but whose entries point at the wrong frames — and then checks that:
//!
//! * open succeeds and every `read(seq)` and a full cursor return exactly the original
//!   records;
//! * `stats().index_rebuilds` counts each damaged index that was rebuilt (at least one where
//!   an index was damaged);
//! * after a close, the next open finds every index valid again (nothing more to rebuild,
//!   a clean open that scans nothing) and reads the same records.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use annal::format::{IndexEntry, IndexHeader, decode_index, encode_index};
use annal::fs::{SimFs, Storage};
use annal::{Log, Options};

mod common;
use common::Rng;

const DIR: &str = "/store";

fn opts() -> Options {
    Options {
        segment_bytes: 8192,
        max_record_bytes: 1024,
        index_interval_bytes: 256,
        ..Options::default()
    }
}

fn seg_dir() -> PathBuf {
    Path::new(DIR).join("segments")
}

type Files = BTreeMap<PathBuf, Vec<u8>>;

struct Fixture {
    files: Files,
    records: Vec<Vec<u8>>,
    /// Segment bases, in order (the last is the active segment).
    bases: Vec<u64>,
    /// The index of the fourth segment written when it was the active one at a clean close
    /// (before it was sealed).
    stale_sealed_idx: (u64, Vec<u8>),
    /// The index of the last segment from the close before the last one.
    stale_active_idx: (u64, Vec<u8>),
}

fn idx_path(base: u64) -> PathBuf {
    seg_dir().join(format!("{base:020}.idx"))
}

fn snapshot(sim: &SimFs) -> Files {
    let mut out = Files::new();
    for n in sim.read_dir(&seg_dir()).unwrap() {
        let p = seg_dir().join(n);
        let b = sim.durable_bytes(&p).unwrap();
        out.insert(p, b);
    }
    out
}

/// Five segments written in three sessions, each ended by a clean close.
fn build(seed: u64) -> Fixture {
    let sim = SimFs::new(seed);
    let mut rng = Rng(0x1DE7_0000 + 17);
    let mut records: Vec<Vec<u8>> = Vec::new();
    let mut session = |until_rolls: u64, extra: usize, records: &mut Vec<Vec<u8>>| -> Files {
        let log = Log::open_with(Arc::new(sim.clone()), DIR, opts()).unwrap();
        let mut rolls = 0;
        let mut after = 0;
        while rolls < until_rolls || after < extra {
            let n = 1 + rng.below(4) as usize;
            let batch: Vec<Vec<u8>> = (0..n)
                .map(|_| {
                    let len = rng.below(200) as usize;
                    rng.bytes(len)
                })
                .collect();
            let a = log.append(&batch).unwrap();
            assert_eq!(a.first, records.len() as u64);
            records.extend(batch);
            if rolls >= until_rolls {
                after += 1;
            }
            rolls = log.stats().rolls;
        }
        log.close().unwrap();
        snapshot(&sim)
    };
    // Session 1: three rolls, then some batches in the fourth segment.
    let s1 = session(3, 10, &mut records);
    // Session 2: one more roll, some batches in the fifth.
    let s2 = session(1, 8, &mut records);
    // Session 3: more batches in the fifth segment, no roll.
    let files = session(0, 6, &mut records);
    let bases: Vec<u64> = files
        .keys()
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .map(|p| p.file_stem().unwrap().to_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(bases.len(), 5, "{bases:?}");
    let (b3, b4) = (bases[3], bases[4]);
    for b in &bases {
        assert!(files.contains_key(&idx_path(*b)), "index of {b}");
    }
    assert_ne!(s1[&idx_path(b3)], files[&idx_path(b3)]);
    assert_ne!(s2[&idx_path(b4)], files[&idx_path(b4)]);
    // Every index has several entries (an entry every 256 bytes).
    for b in &bases {
        let (_, entries) = decode_index(&files[&idx_path(*b)]).unwrap();
        assert!(entries.len() >= 3, "index of {b} has {} entries", entries.len());
    }
    Fixture {
        stale_sealed_idx: (b3, s1[&idx_path(b3)].clone()),
        stale_active_idx: (b4, s2[&idx_path(b4)].clone()),
        files,
        records,
        bases,
    }
}

/// One disagreement: a category for the summary and the details.
type Problem = (&'static str, String);

/// Opens the store with `files`, reads every record by seq and by cursor, checks the rebuild
/// counter, then closes, reopens and checks that the indexes were written back.
/// `damaged_sealed`: how many sealed segments' indexes are damaged (each must be rebuilt
/// once); `active_damaged`: whether the last segment's index is damaged.
fn check(
    fx: &Fixture,
    files: &Files,
    damaged_sealed: u64,
    active_damaged: bool,
    write_back: bool,
) -> Vec<Problem> {
    let sim = SimFs::new(3);
    for (p, b) in files {
        sim.write_file_raw(p, b).unwrap();
    }
    let mut problems = Vec::new();
    let log = match Log::open_with(Arc::new(sim.clone()), DIR, opts()) {
        Ok(l) => l,
        Err(e) => return vec![("open failed", format!("{e:?}"))],
    };
    let n = fx.records.len() as u64;
    if log.visible_end() != n {
        problems.push(("records lost", format!("{} of {n} visible", log.visible_end())));
    }
    problems.extend(read_all(fx, &log));
    let rebuilds = log.stats().index_rebuilds;
    if rebuilds != damaged_sealed && !(active_damaged && rebuilds == damaged_sealed + 1) {
        problems.push((
            "index_rebuilds differs from the damaged sealed indexes",
            format!("{rebuilds} rebuilt, {damaged_sealed} sealed damaged"),
        ));
    }
    if (damaged_sealed > 0 || active_damaged) && rebuilds == 0 {
        problems.push((
            "damaged index but index_rebuilds == 0",
            format!("{:?}", log.recovery_report()),
        ));
    }
    drop(log);
    if !write_back {
        return problems;
    }
    // Closed cleanly: every index must be valid again.
    match Log::open_with(Arc::new(sim.clone()), DIR, opts()) {
        Err(e) => problems.push(("reopen failed", format!("{e:?}"))),
        Ok(log) => {
            let r = log.recovery_report();
            if !r.clean || r.scanned_bytes != 0 {
                problems.push(("reopen after close not clean", format!("{r:?}")));
            }
            problems.extend(read_all(fx, &log));
            if log.stats().index_rebuilds != 0 {
                problems
                    .push(("index still rebuilt after write-back", format!("{:?}", log.stats())));
            }
        }
    }
    problems
}

/// Reads every record by seq and the whole log through a cursor.
fn read_all(fx: &Fixture, log: &Log) -> Vec<Problem> {
    let mut problems = Vec::new();
    let n = fx.records.len() as u64;
    for seq in 0..n {
        match log.read(seq) {
            Ok(r) if r.seq == seq && r.payload[..] == fx.records[seq as usize][..] => {}
            Ok(r) => problems.push(("WRONG RECORD from read", format!("read({seq}) = {r:?}"))),
            Err(e) => {
                problems.push(("read failed", format!("read({seq}): {e}")));
                break;
            }
        }
    }
    let mut next = 0u64;
    for r in log.cursor(0) {
        match r {
            Ok(r) if r.seq == next && r.payload[..] == fx.records[next as usize][..] => next += 1,
            Ok(r) => {
                problems.push(("WRONG RECORD from cursor", format!("at {next}: {r:?}")));
                break;
            }
            Err(e) => {
                problems.push(("cursor failed", format!("at {next}: {e}")));
                break;
            }
        }
    }
    if next != n && problems.is_empty() {
        problems.push(("cursor stopped early", format!("{next} of {n}")));
    }
    problems
}

/// Collects problems over many cases and reports them by category.
#[derive(Default)]
struct Failures {
    checked: usize,
    failed: usize,
    by_kind: BTreeMap<&'static str, (usize, String)>,
}

impl Failures {
    fn record(&mut self, what: String, problems: Vec<Problem>) {
        self.checked += 1;
        if !problems.is_empty() {
            self.failed += 1;
        }
        for (kind, detail) in problems {
            self.by_kind.entry(kind).or_insert_with(|| (0, format!("{what}: {detail}"))).0 += 1;
        }
    }

    fn merge(&mut self, other: Failures) {
        self.checked += other.checked;
        self.failed += other.failed;
        for (k, (n, ex)) in other.by_kind {
            self.by_kind.entry(k).or_insert((0, ex)).0 += n;
        }
    }

    fn assert_none(&self, name: &str) {
        let summary: Vec<String> =
            self.by_kind.iter().map(|(k, (n, ex))| format!("  {k}: {n} (first: {ex})")).collect();
        eprintln!("{name}: {} cases, {} failed\n{}", self.checked, self.failed, summary.join("\n"));
        assert!(
            self.failed == 0,
            "{name}: {} of {} cases failed:\n{}",
            self.failed,
            self.checked,
            summary.join("\n")
        );
    }
}

fn with(fx: &Fixture, path: &Path, bytes: Option<Vec<u8>>) -> Files {
    let mut files = fx.files.clone();
    match bytes {
        Some(b) => {
            files.insert(path.to_path_buf(), b);
        }
        None => {
            files.remove(path);
        }
    }
    files
}

/// Whether the index of `base` is the last (active) segment's.
fn is_active(fx: &Fixture, base: u64) -> bool {
    fx.bases.last() == Some(&base)
}

#[test]
fn damaged_missing_and_misplaced_indexes_are_rebuilt() {
    let fx = build(1);
    let other = build(2);
    let mut failures = Failures::default();
    let mut rng = Rng(5);
    for (i, &base) in fx.bases.iter().enumerate() {
        let p = idx_path(base);
        let orig = fx.files[&p].clone();
        let active = is_active(&fx, base);
        let sealed = u64::from(!active);
        let mut cases: Vec<(String, Option<Vec<u8>>)> = vec![
            ("deleted".into(), None),
            ("emptied".into(), Some(Vec::new())),
            ("zeroed".into(), Some(vec![0; orig.len()])),
            ("random bytes".into(), Some(rng.bytes(orig.len()))),
            ("extended by 16 zero bytes".into(), Some([orig.clone(), vec![0; 16]].concat())),
            ("extended by one entry".into(), Some([orig.clone(), orig[64..80].to_vec()].concat())),
            ("of another store".into(), Some(other.files[&p].clone())),
        ];
        for cut in [1, 40, 63, 64, 65, 80, orig.len() - 16, orig.len() - 1] {
            cases.push((format!("truncated to {cut}"), Some(orig[..cut].to_vec())));
        }
        // Swapped with the neighbours' indexes (their bases differ).
        for j in [i.wrapping_sub(1), i + 1] {
            if let Some(&nb) = fx.bases.get(j) {
                cases.push((
                    format!("replaced by the index of {nb}"),
                    Some(fx.files[&idx_path(nb)].clone()),
                ));
            }
        }
        for (what, bytes) in cases {
            let files = with(&fx, &p, bytes);
            let r = check(&fx, &files, sealed, active, true);
            failures.record(format!("index of {base} {what}"), r);
        }
    }
    // Stale versions: of a sealed segment (written at a close while it was active) and of the
    // active one (from the close before the last). The active one's is still true for the
    // prefix it covers, so nothing needs rebuilding there.
    let (b, stale) = &fx.stale_sealed_idx;
    let r = check(&fx, &with(&fx, &idx_path(*b), Some(stale.clone())), 1, false, true);
    failures.record(format!("stale index of sealed segment {b}"), r);
    let (b, stale) = &fx.stale_active_idx;
    let r = check(&fx, &with(&fx, &idx_path(*b), Some(stale.clone())), 0, false, true);
    failures.record(format!("stale index of active segment {b}"), r);
    // All at once: every index deleted; every index rotated to the next segment's name.
    let mut files = fx.files.clone();
    for &b in &fx.bases {
        files.remove(&idx_path(b));
    }
    failures.record("every index deleted".into(), check(&fx, &files, 4, true, true));
    let mut files = fx.files.clone();
    for (k, &b) in fx.bases.iter().enumerate() {
        let from = fx.bases[(k + 1) % fx.bases.len()];
        files.insert(idx_path(b), fx.files[&idx_path(from)].clone());
    }
    failures.record("every index rotated".into(), check(&fx, &files, 4, true, true));
    failures.assert_none("damaged, missing and misplaced indexes");
}

/// Every bit of the first sealed segment's index and of the active segment's index, and every
/// fifth bit of the other indexes, flipped one at a time.
#[test]
fn every_bit_flip_of_an_index_is_rebuilt() {
    let fx = build(1);
    let mut jobs: Vec<(u64, usize)> = Vec::new();
    for (i, &base) in fx.bases.iter().enumerate() {
        let len = fx.files[&idx_path(base)].len();
        let stride = if i == 1 || is_active(&fx, base) { 1 } else { 5 };
        jobs.extend((0..len * 8).step_by(stride).map(|bit| (base, bit)));
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(8);
    let fx = &fx;
    let failures = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .chunks(jobs.len().div_ceil(threads))
            .map(|chunk| {
                s.spawn(move || {
                    let mut failures = Failures::default();
                    for &(base, bit) in chunk {
                        let p = idx_path(base);
                        let mut b = fx.files[&p].clone();
                        b[bit / 8] ^= 1 << (bit % 8);
                        let active = is_active(fx, base);
                        // Every seq by `read` and a full cursor; the write-back is checked
                        // on every 64th flip.
                        let r = check(
                            fx,
                            &with(fx, &p, Some(b)),
                            u64::from(!active),
                            active,
                            bit % 64 == 0,
                        );
                        failures.record(format!("index of {base}, bit {bit}"), r);
                    }
                    failures
                })
            })
            .collect();
        let mut all = Failures::default();
        for h in handles {
            all.merge(h.join().unwrap());
        }
        all
    });
    failures.assert_none("index bit flips");
}

/// Index files whose checksums are valid but whose entries are wrong (as a bug or a stale
/// file of the same segment could leave them): entries are only hints, validated against
/// the frame they point to, so reads must still return the right records.
#[test]
fn forged_index_entries_are_not_trusted() {
    let fx = build(1);
    let mut failures = Failures::default();
    for &base in &fx.bases {
        let p = idx_path(base);
        let (h, entries) = decode_index(&fx.files[&p]).unwrap();
        let active = is_active(&fx, base);
        let forge = |entries: Vec<IndexEntry>| encode_index(&IndexHeader { ..h }, &entries);
        let mut cases: Vec<(&str, Vec<IndexEntry>)> = Vec::new();
        // Each entry's offset moved to the next entry's frame (a valid frame with another seq).
        let shifted: Vec<IndexEntry> =
            entries.windows(2).map(|w| IndexEntry { offset: w[1].offset, ..w[0] }).collect();
        cases.push(("offsets shifted to the next entry's frame", shifted));
        // Each entry's offset 8 bytes into its frame (not a frame header).
        let inside: Vec<IndexEntry> =
            entries.iter().map(|e| IndexEntry { offset: e.offset + 8, ..*e }).collect();
        cases.push(("offsets 8 bytes into the frame", inside));
        // Each entry's seq one too high (the frame there starts at another seq).
        let seq_plus: Vec<IndexEntry> = entries
            .iter()
            .filter(|e| e.seq + 1 < h.end_seq)
            .map(|e| IndexEntry { seq: e.seq + 1, ..*e })
            .collect();
        cases.push(("seqs one too high", seq_plus));
        // The last entry pointing at the seal or close frame.
        let mut at_end = entries.clone();
        if let Some(last) = at_end.last_mut() {
            last.offset = h.end_offset - 8;
        }
        cases.push(("last entry just before the end frame", at_end));
        for (what, e) in cases {
            let files = with(&fx, &p, Some(forge(e)));
            let r = check(&fx, &files, u64::from(!active), active, true);
            failures.record(format!("index of {base}: {what}"), r);
        }
    }
    failures.assert_none("forged index entries");
}
