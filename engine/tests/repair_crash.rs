//! Property: `repair` is crash-safe. On damaged stores (a torn tail with a damaged index, a
//! damaged stream checkpoint and a damaged snapshot; mid-log corruption repaired with
//! `salvage`), a power loss at
//! every persistence point of the repair (the k-th fdatasync or directory fsync fails and the
//! machine crashes right after; also the k-th write) leaves a store where
//!
//! (a) no byte of the original segments is lost: every byte no longer in its segment is in a
//!     durable file under `quarantine/` (or one the engine moved aside in `segments/`);
//! (b) a second repair completes, after which a survey finds no problem, and the store opens
//!     and takes appends;
//! (c) every event before the damage is still readable, byte for byte.
//!
//! Seeds: `ANNAL_REPAIR_CRASH_SEEDS` (default 2) per fixture and fault kind.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use annal::fs::{CrashMode, SimFs, Storage};
use annal::inspect::{SurveyOptions, survey_with};
use annal::repair::{ActionKind, RepairOptions, repair_with};
use annal::{ExpectedVersion, NewEvent, Options, Store, StoreOptions};
use common::Rng;

const DIR: &str = "/store";

fn store_opts() -> StoreOptions {
    let log = Options {
        segment_bytes: 4096,
        max_record_bytes: 1024,
        preallocate: false,
        ..Options::default()
    };
    StoreOptions { log, ..StoreOptions::default() }
}

/// Every file under `dir` on `fs`, by path.
fn files(fs: &SimFs, dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(names) = fs.read_dir(&d) else { continue };
        for n in names {
            let p = d.join(n);
            match fs.current_bytes(&p) {
                Some(b) => {
                    out.insert(p, b);
                }
                None => stack.push(p),
            }
        }
    }
    out
}

/// A damaged store and what it held before the damage.
struct Fixture {
    files: BTreeMap<PathBuf, Vec<u8>>,
    /// Every record payload, by seq, before the damage.
    records: Vec<Vec<u8>>,
    /// Records before this seq must survive the repair.
    intact_before: u64,
    salvage: bool,
    /// Index, checkpoint and snapshot files the repair sets aside whole.
    side: Vec<PathBuf>,
    /// Actions an uninterrupted repair takes (among others).
    expect: &'static [ActionKind],
}

/// Events in several 4 KiB segments, cleanly closed (index files and a checkpoint written).
fn build(seed: u64) -> (SimFs, Vec<Vec<u8>>, PathBuf) {
    let fs = SimFs::new(seed);
    let store = Store::open_with(Arc::new(fs.clone()), DIR, store_opts()).unwrap();
    let mut rng = Rng(seed | 1);
    for i in 0..60 {
        let stream = format!("acct-{}", rng.below(4));
        let data = format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(rng.below(120) as usize));
        store.append(&stream, ExpectedVersion::Any, &[NewEvent::new("Moved", data)]).unwrap();
    }
    let records =
        store.log().cursor(0).map(|r| r.unwrap().payload.to_vec()).collect::<Vec<Vec<u8>>>();
    let snapshot = annal::SnapshotStore::for_store(&store).path_for("acct-0");
    store.close().unwrap();
    (fs, records, snapshot)
}

fn segment_paths(files: &BTreeMap<PathBuf, Vec<u8>>) -> Vec<PathBuf> {
    files
        .keys()
        .filter(|p| p.parent() == Some(Path::new("/store/segments")))
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .cloned()
        .collect()
}

/// A torn tail on the last segment, a flipped byte in a sealed segment's index and in the
/// stream checkpoint, and a snapshot file that does not decode.
fn torn_tail(seed: u64) -> Fixture {
    let (fs, records, snapshot) = build(seed);
    let mut files = files(&fs, Path::new(DIR));
    let segs = segment_paths(&files);
    assert!(segs.len() >= 3, "the fixture has several segments");
    let mut rng = Rng(seed ^ 0x5eed);
    let last = files.get_mut(segs.last().unwrap()).unwrap();
    let torn: Vec<u8> = (0..40 + rng.below(200)).map(|_| 1 + (rng.next() % 255) as u8).collect();
    last.extend_from_slice(&torn);
    let idx = segs[0].with_extension("idx");
    let ix = files.get_mut(&idx).expect("a sealed segment has an index");
    let at = 40 + rng.below(ix.len() as u64 - 40) as usize;
    ix[at] ^= 0x10;
    let ckpt = PathBuf::from("/store/streams.ckpt");
    let ck = files.get_mut(&ckpt).expect("a clean close writes the checkpoint");
    let at = rng.below(ck.len() as u64) as usize;
    ck[at] ^= 0x04;
    let junk: Vec<u8> = (0..300).map(|_| rng.next() as u8).collect();
    files.insert(snapshot.clone(), junk);
    let n = records.len() as u64;
    let side = vec![idx, ckpt, snapshot];
    let expect = &[
        ActionKind::CutTail,
        ActionKind::SetAsideIndex,
        ActionKind::RebuildIndex,
        ActionKind::SetAsideCheckpoint,
        ActionKind::SetAsideSnapshot,
    ];
    Fixture { files, records, intact_before: n, salvage: false, side, expect }
}

/// A flipped byte inside a record of a sealed segment in the middle of the log.
fn mid_log(seed: u64) -> Fixture {
    let (fs, records, _) = build(seed);
    let mut files = files(&fs, Path::new(DIR));
    let segs = segment_paths(&files);
    let mid = &segs[segs.len() / 2];
    let base: u64 = mid.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    let seg = files.get_mut(mid).unwrap();
    // Inside the first batch's first record payload: its CRC fails, later frames still prove
    // the segment durable (a sealed segment is never a torn tail).
    let at = annal::limits::SEGMENT_HEADER_BYTES + annal::limits::FRAME_HEADER_BYTES + 20;
    seg[at] ^= 0x01;
    // The cut segment's index and every later one describe cut bytes; the checkpoint covers
    // seqs beyond the cut.
    let mut side: Vec<PathBuf> =
        segs[segs.len() / 2..].iter().map(|p| p.with_extension("idx")).collect();
    side.push(PathBuf::from("/store/streams.ckpt"));
    let expect = &[
        ActionKind::SetAsideIndex,
        ActionKind::CutMidLog,
        ActionKind::QuarantineSegment,
        ActionKind::SetAsideCheckpoint,
    ];
    Fixture { files, records, intact_before: base, salvage: true, side, expect }
}

fn load(f: &Fixture, seed: u64) -> SimFs {
    let fs = SimFs::new(seed);
    for (p, b) in &f.files {
        fs.write_file_raw(p, b).unwrap();
    }
    fs
}

/// (a): every byte of every original segment is still in place or in a saved copy.
fn no_byte_lost(f: &Fixture, fs: &SimFs, what: &str) {
    let now = files(fs, Path::new(DIR));
    for path in segment_paths(&f.files) {
        let orig = &f.files[&path];
        let cur = now.get(&path).map_or(&[][..], |b| b.as_slice());
        let same = orig.iter().zip(cur).take_while(|(a, b)| a == b).count();
        if same == orig.len() {
            continue;
        }
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        // A whole copy, or the bytes from some offset at or before the first difference.
        let saved = now.iter().any(|(p, b)| {
            let Some(n) = p.file_name().and_then(|n| n.to_str()) else { return false };
            let in_quarantine = p.starts_with("/store/quarantine");
            let from = if in_quarantine && n == name {
                Some(0)
            } else if let Some(off) = n
                .strip_prefix(&format!("{name}.from-"))
                .filter(|_| in_quarantine)
                .or_else(|| n.strip_prefix(&format!("{name}.broken-")))
            {
                off.split('.').next().and_then(|o| o.parse::<usize>().ok())
            } else {
                None
            };
            let Some(from) = from.filter(|&o| o <= same) else { return false };
            let rest = &orig[from..];
            rest.len() >= b.len()
                && rest[..b.len()] == b[..]
                && rest[b.len()..].iter().all(|&x| x == 0)
        });
        assert!(saved, "{what}: bytes of {name} from offset {same} are in no saved copy");
    }
    for path in &f.side {
        let orig = &f.files[path];
        let kept = now.get(path) == Some(orig)
            || now.iter().any(|(p, b)| p.starts_with("/store/quarantine") && b == orig);
        assert!(kept, "{what}: {} is neither in place nor in quarantine", path.display());
    }
}

/// (b) and (c) after a second repair.
fn recovers(f: &Fixture, fs: &SimFs, what: &str) {
    let storage: Arc<dyn Storage> = Arc::new(fs.clone());
    let opts = RepairOptions { dry_run: false, salvage: f.salvage };
    let report = repair_with(Arc::clone(&storage), Path::new(DIR), opts, &mut |_, _| {})
        .unwrap_or_else(|e| panic!("{what}: second repair failed: {e}"));
    assert!(report.succeeded(), "{what}: second repair left {:?}", report.remaining);
    no_byte_lost(f, fs, &format!("{what}, after the second repair"));
    let s = survey_with(storage.as_ref(), Path::new(DIR), SurveyOptions::default(), &mut |_, _| {})
        .unwrap();
    assert!(!s.has_problems(), "{what}: verify after repair: {:?}", s.findings);
    let store = Store::open_with(Arc::clone(&storage), DIR, store_opts())
        .unwrap_or_else(|e| panic!("{what}: open after repair: {e}"));
    let got: Vec<Vec<u8>> = store.log().cursor(0).map(|r| r.unwrap().payload.to_vec()).collect();
    let keep = f.intact_before as usize;
    assert!(got.len() >= keep, "{what}: {} records left, {keep} were before the damage", got.len());
    assert_eq!(got[..keep], f.records[..keep], "{what}: records before the damage changed");
    store.append("after", ExpectedVersion::Any, &[NewEvent::new("Appended", "{}")]).unwrap();
    store.close().unwrap();
    Store::open_with(storage, DIR, store_opts()).unwrap().close().unwrap();
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// The k-th fdatasync or directory fsync fails.
    Sync,
    /// The k-th write fails after applying a prefix.
    Write,
}

/// For every k, the k-th persistence step of the repair fails and power is lost right after.
/// Runs until a repair completes with the fault never reached.
fn crash_at_every_point(name: &str, fixture: fn(u64) -> Fixture, fault: Fault, seed: u64) {
    let f = fixture(seed);
    for k in 0.. {
        let what = format!("{name} seed {seed} {fault:?} k={k}");
        let fs = load(&f, seed * 1000 + k);
        let storage: Arc<dyn Storage> = Arc::new(fs.clone());
        match fault {
            Fault::Sync => fs.fail_sync_at(k),
            Fault::Write => fs.fail_write_at(k, true),
        }
        let opts = RepairOptions { dry_run: false, salvage: f.salvage };
        let done = repair_with(storage, Path::new(DIR), opts, &mut |_, _| {});
        fs.clear_faults();
        let mode = if k % 2 == 0 { CrashMode::Random } else { CrashMode::DropAll };
        fs.crash_with(mode);
        no_byte_lost(&f, &fs, &what);
        recovers(&f, &fs, &what);
        if let Ok(r) = done {
            assert!(r.succeeded(), "{what}: {:?}", r.remaining);
            for kind in f.expect {
                assert!(r.actions.iter().any(|a| a.kind == *kind), "{what}: no {kind:?}");
            }
            assert!(k > 2, "{what}: the repair persists in several steps");
            break;
        }
        assert!(k < 1000, "{what}: the repair never completed");
    }
}

fn seeds() -> u64 {
    std::env::var("ANNAL_REPAIR_CRASH_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2)
}

#[test]
fn torn_tail_repair_survives_a_crash_at_every_sync() {
    for seed in 1..=seeds() {
        crash_at_every_point("torn tail", torn_tail, Fault::Sync, seed);
    }
}

#[test]
fn torn_tail_repair_survives_a_crash_at_every_write() {
    for seed in 1..=seeds() {
        crash_at_every_point("torn tail", torn_tail, Fault::Write, seed);
    }
}

#[test]
fn salvage_survives_a_crash_at_every_sync() {
    for seed in 1..=seeds() {
        crash_at_every_point("mid-log salvage", mid_log, Fault::Sync, seed);
    }
}

#[test]
fn salvage_survives_a_crash_at_every_write() {
    for seed in 1..=seeds() {
        crash_at_every_point("mid-log salvage", mid_log, Fault::Write, seed);
    }
}
