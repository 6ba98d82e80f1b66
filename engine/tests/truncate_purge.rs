//! `Log::truncate_from` and `Log::purge_before` (format-spec.md §16): what they keep and drop,
//! that dropped bytes are moved aside, and that a crash (power loss) at any point of either
//! leaves, after recovery, the log as it was before or as it is after, never in between.

use std::path::Path;
use std::sync::Arc;

use annal::fs::{CrashMode, SimFs, Storage};
use annal::{Error, Log, Options};

mod common;
use common::Rng;

const DIR: &str = "/store";

fn opts() -> Options {
    Options { segment_bytes: 4096, max_record_bytes: 1024, preallocate: true, ..Options::default() }
}

/// Appends `batches` batches of 1..4 records of 20..200 bytes; returns every payload and the
/// first seq of every batch.
fn fill(log: &Log, rng: &mut Rng, batches: usize) -> (Vec<Vec<u8>>, Vec<u64>) {
    let (mut all, mut starts) = (Vec::new(), Vec::new());
    for _ in 0..batches {
        let n = 1 + rng.below(3) as usize;
        let batch: Vec<Vec<u8>> = (0..n)
            .map(|_| {
                let len = 20 + rng.below(180) as usize;
                rng.bytes(len)
            })
            .collect();
        let a = log.append(&batch).unwrap();
        assert_eq!(a.first, all.len() as u64);
        starts.push(a.first);
        all.extend(batch);
    }
    (all, starts)
}

fn contents(log: &Log) -> Vec<Vec<u8>> {
    log.cursor(log.first_seq()).map(|r| r.unwrap().payload.to_vec()).collect()
}

fn seg_names(sim: &SimFs) -> Vec<String> {
    let mut v = sim.read_dir(Path::new("/store/segments")).unwrap();
    v.sort();
    v
}

#[test]
fn truncate_drops_the_tail_moves_it_aside_and_appends_continue() {
    let mut rng = Rng(7);
    for pick in 0..12u64 {
        let sim = SimFs::new(pick);
        let storage: Arc<dyn Storage> = Arc::new(sim.clone());
        let log = Log::open_with(Arc::clone(&storage), DIR, opts()).unwrap();
        let (all, starts) = fill(&log, &mut rng, 120);
        let segs_before = seg_names(&sim).iter().filter(|n| n.ends_with(".seg")).count();
        assert!(segs_before >= 4, "fixture spans several segments");
        let from = starts[(rng.below(starts.len() as u64)) as usize];
        // Inside a batch of several records: refused, nothing changes.
        let multi = starts.windows(2).find(|w| w[1] - w[0] > 1).unwrap()[0];
        let log = match log.truncate_from(multi + 1) {
            Err(Error::TruncateMidBatch { seq, batch_first }) => {
                assert_eq!((seq, batch_first), (multi + 1, multi));
                Log::open_with(Arc::clone(&storage), DIR, opts()).unwrap()
            }
            other => panic!("mid-batch truncate: {other:?}"),
        };
        // A second handle: refused.
        let other = log.clone();
        let log = match log.truncate_from(from) {
            Err(Error::Shared) => other,
            o => panic!("shared truncate: {o:?}"),
        };
        let log = log.truncate_from(from).unwrap();
        assert_eq!(log.visible_end(), from);
        assert_eq!(contents(&log), all[..from as usize]);
        assert!(
            seg_names(&sim).iter().any(|n| n.contains(".broken-")),
            "dropped bytes are moved aside"
        );
        let a = log.append(&[b"after".as_slice()]).unwrap();
        assert_eq!(a.first, from);
        log.close().unwrap();
        let log = Log::open_with(Arc::clone(&storage), DIR, opts()).unwrap();
        assert!(log.recovery_report().clean, "{:?}", log.recovery_report());
        let mut want = all[..from as usize].to_vec();
        want.push(b"after".to_vec());
        assert_eq!(contents(&log), want);
        // Beyond the end: nothing happens.
        let log = log.truncate_from(from + 5).unwrap();
        assert_eq!(log.visible_end(), from + 1);
    }
}

#[test]
fn purge_removes_whole_sealed_segments_below_the_seq_only() {
    let mut rng = Rng(11);
    let sim = SimFs::new(3);
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let log = Log::open_with(Arc::clone(&storage), DIR, opts()).unwrap();
    let (all, _) = fill(&log, &mut rng, 150);
    let bases: Vec<u64> = seg_names(&sim)
        .iter()
        .filter_map(|n| n.strip_suffix(".seg").map(|s| s.parse().unwrap()))
        .collect();
    assert!(bases.len() >= 5);
    // Just short of the third segment's base: only the first is wholly covered.
    let log = log.purge_before(bases[2] - 1).unwrap();
    assert_eq!(log.first_seq(), bases[1]);
    let log = log.purge_before(bases[2]).unwrap();
    assert_eq!(log.first_seq(), bases[2]);
    assert_eq!(contents(&log), all[bases[2] as usize..]);
    assert!(matches!(log.read(bases[2] - 1), Err(Error::MissingSegments { .. })));
    let names = seg_names(&sim);
    assert!(!names.iter().any(|n| n.starts_with(&format!("{:020}", bases[0]))), "{names:?}");
    // Beyond everything: the active segment stays.
    let log = log.purge_before(u64::MAX).unwrap();
    assert_eq!(log.first_seq(), *bases.last().unwrap());
    let a = log.append(&[b"x".as_slice()]).unwrap();
    assert_eq!(a.first, all.len() as u64);
    log.close().unwrap();
    let log = Log::open_with(Arc::clone(&storage), DIR, opts()).unwrap();
    assert_eq!(log.first_seq(), *bases.last().unwrap());
    // Truncating below the start is refused.
    assert!(matches!(log.truncate_from(0), Err(Error::SeqOutOfRange { .. })));
}

#[test]
fn a_purge_marker_without_its_first_segment_is_refused() {
    let mut rng = Rng(5);
    let sim = SimFs::new(9);
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let log = Log::open_with(Arc::clone(&storage), DIR, opts()).unwrap();
    fill(&log, &mut rng, 100);
    let log = log.purge_before(all_mid(&sim)).unwrap();
    let first = log.first_seq();
    assert!(first > 0);
    log.close().unwrap();
    let seg = format!("/store/segments/{first:020}.seg");
    sim.rename(Path::new(&seg), Path::new("/store/elsewhere")).unwrap();
    match Log::open_with(Arc::clone(&storage), DIR, opts()) {
        Err(Error::MissingSegments { from, to }) => assert!(from == first && to > first),
        other => panic!("{other:?}"),
    }
}

/// The base of a segment in the middle of the store.
fn all_mid(sim: &SimFs) -> u64 {
    let bases: Vec<u64> = seg_names(sim)
        .iter()
        .filter_map(|n| n.strip_suffix(".seg").map(|s| s.parse().unwrap()))
        .collect();
    bases[bases.len() / 2]
}

/// Which operation a crash test interrupts.
#[derive(Clone, Copy, Debug)]
enum Op {
    Truncate,
    Purge,
}

/// For every k, the k-th sync of the operation (or of the reopen it triggers) fails and
/// power is lost right after; recovery must show the log before or after the operation.
/// Runs until an operation completes with no fault reached.
fn crash_during(op: Op, seed: u64) {
    let mut rng = Rng(seed | 1);
    let (mut saw_before, mut saw_after) = (false, false);
    for k in 0.. {
        let sim = SimFs::new(seed * 1000 + k);
        let storage: Arc<dyn Storage> = Arc::new(sim.clone());
        let log = Log::open_with(Arc::clone(&storage), DIR, opts()).unwrap();
        let mut fixture = Rng(seed);
        let (all, starts) = fill(&log, &mut fixture, 90);
        let at = match op {
            Op::Truncate => starts[(rng.below(starts.len() as u64 - 1) + 1) as usize],
            Op::Purge => all_mid(&sim) + rng.below(all.len() as u64 / 2),
        };
        let (before, after): (Vec<Vec<u8>>, Vec<Vec<u8>>) = match op {
            Op::Truncate => (all.clone(), all[..at as usize].to_vec()),
            Op::Purge => (all.clone(), Vec::new()),
        };
        sim.fail_sync_at(k);
        let done = match op {
            Op::Truncate => log.truncate_from(at).map(drop),
            Op::Purge => log.purge_before(at).map(drop),
        };
        sim.clear_faults();
        let mode = if k % 2 == 0 { CrashMode::Random } else { CrashMode::DropAll };
        sim.crash_with(mode);
        let log = Log::open_with(Arc::clone(&storage), DIR, opts())
            .unwrap_or_else(|e| panic!("{op:?} k={k}: reopen after crash: {e}"));
        let got = contents(&log);
        saw_before |= got == before;
        saw_after |= match op {
            Op::Truncate => got == after,
            Op::Purge => log.first_seq() > 0,
        };
        match op {
            Op::Truncate => assert!(
                got == before || got == after,
                "{op:?} k={k}: {} records, before {}, after {}",
                got.len(),
                before.len(),
                after.len()
            ),
            Op::Purge => {
                // Before: everything from 0; after: a suffix from a segment base at most `at`.
                let first = log.first_seq();
                assert!(first <= at, "{op:?} k={k}: purged past {at}: {first}");
                assert_eq!(got, all[first as usize..], "{op:?} k={k}");
                let _ = after;
            }
        }
        // Appending and reopening works from either state.
        log.append(&[b"z".as_slice()]).unwrap();
        log.close().unwrap();
        Log::open_with(Arc::clone(&storage), DIR, opts()).unwrap();
        // Once the fault lies beyond the operation's last sync, it completes: every
        // interruption point has been tried.
        if done.is_ok() {
            assert!(k > 3, "{op:?}: the operation syncs several times");
            assert!(saw_before && saw_after, "{op:?}: crashes landed on both sides");
            break;
        }
        assert!(k < 500, "{op:?}: the operation never completed");
    }
}

#[test]
fn crash_at_every_sync_of_truncate_leaves_before_or_after() {
    for seed in 1..=3 {
        crash_during(Op::Truncate, seed);
    }
}

#[test]
fn crash_at_every_sync_of_purge_leaves_before_or_after() {
    for seed in 1..=3 {
        crash_during(Op::Purge, seed);
    }
}
