//! `Options::prepare_segments` (format-spec.md §6.2): once the active segment is half full, a
//! background thread writes a spare segment file with zeros and syncs it; the next roll turns
//! it into the new segment (header, fdatasync, rename, directory fsync) instead of creating
//! one. These tests check that rolls use the spare, that the spare never holds a record under
//! its temp name, that a leftover spare is removed by a writable open and left alone by a
//! read-only one, and that a fault or a crash at any step of a roll onto a spare loses no
//! acknowledged record.

use std::sync::Arc;
use std::time::{Duration, Instant};

use annal::fs::{SimFs, Storage};
use annal::{Log, Options};

const SPARE: &str = "spare.seg.tmp";
const SEGMENT_BYTES: u64 = 64 << 10;

fn opts() -> Options {
    Options { segment_bytes: SEGMENT_BYTES, max_record_bytes: 4096, ..Options::default() }
}

fn payload(i: u64) -> Vec<u8> {
    let mut p = vec![(i % 251) as u8; 200 + (i % 7) as usize];
    p[..8].copy_from_slice(&i.to_le_bytes());
    p
}

/// Appends single records until the active segment is past half full, then waits (up to
/// 20 s) for the spare. Returns the next record number.
fn fill_until_spare_ready(log: &Log, mut i: u64) -> u64 {
    let rolls = log.stats().rolls;
    // A little more than half a segment: the request goes out at the half.
    while log.stats().bytes_written < SEGMENT_BYTES / 2 + 4096 {
        log.append(&[payload(i)]).unwrap();
        i += 1;
    }
    assert_eq!(log.stats().rolls, rolls, "the test must not roll before the spare is ready");
    let start = Instant::now();
    while !log.stats().spare_ready {
        assert!(start.elapsed() < Duration::from_secs(20), "no spare after 20 s");
        std::thread::sleep(Duration::from_millis(2));
    }
    i
}

fn read_all(log: &Log) -> Vec<Vec<u8>> {
    log.cursor(0).map(|r| r.unwrap().payload.to_vec()).collect()
}

#[test]
fn a_roll_takes_the_prepared_spare_on_the_real_file_system() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let seg_dir = dir.join("segments");
    let log = Log::open(&dir, opts()).unwrap();
    if !annal::fs::StdFs.zero_fill_pays(&seg_dir) {
        println!("skipped: {} is memory-backed, where segments are not prepared", dir.display());
        return;
    }
    let mut i = fill_until_spare_ready(&log, 0);
    let spare = seg_dir.join(SPARE);
    assert_eq!(std::fs::metadata(&spare).unwrap().len(), SEGMENT_BYTES, "spare is full size");
    while log.stats().rolls == 0 {
        log.append(&[payload(i)]).unwrap();
        i += 1;
    }
    let st = log.stats();
    assert_eq!((st.prepared_rolls, st.spare_failures), (1, 0));
    assert!(!spare.exists(), "the spare became the new segment");
    // The second segment fills past its half too and gets a spare of its own; the third
    // roll may or may not find one ready, and either way loses nothing.
    for _ in 0..2000 {
        log.append(&[payload(i)]).unwrap();
        i += 1;
    }
    let expected: Vec<_> = (0..i).map(payload).collect();
    assert_eq!(read_all(&log), expected);
    log.close().unwrap();
    assert!(!spare.exists(), "close removes an unused spare");
    let log = Log::open(&dir, opts()).unwrap();
    assert_eq!(read_all(&log), expected, "after reopen");
    assert!(log.recovery_report().temp_files_removed.is_empty());
}

#[test]
fn a_leftover_spare_is_removed_by_a_writable_open_only() {
    let sim = SimFs::new(7);
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let log = Log::open_with(Arc::clone(&storage), "/s", opts()).unwrap();
    log.append(&[payload(0)]).unwrap();
    log.close().unwrap();
    // What a crash in the middle of a preparation, or of a roll onto it, leaves behind:
    // zeros, perhaps under a header that never got its rename.
    let mut junk = vec![0u8; 8192];
    junk[..8].copy_from_slice(b"ANNALSEG");
    sim.write_file_raw(format!("/s/segments/{SPARE}"), &junk).unwrap();
    let ro = Log::open_read_only_with(Arc::clone(&storage), "/s", opts()).unwrap();
    assert_eq!(read_all(&ro), vec![payload(0)]);
    drop(ro);
    assert!(sim.current_bytes(format!("/s/segments/{SPARE}")).is_some(), "read-only keeps it");
    let log = Log::open_with(Arc::clone(&storage), "/s", opts()).unwrap();
    assert_eq!(log.recovery_report().temp_files_removed, vec![SPARE.to_string()]);
    assert!(sim.current_bytes(format!("/s/segments/{SPARE}")).is_none());
    assert_eq!(read_all(&log), vec![payload(0)]);
}

/// Where the roll onto the spare is made to fail.
#[derive(Debug, Clone, Copy)]
enum Fault {
    None,
    /// The k-th sync after the spare is ready (0: the old segment's final fsync; then the
    /// spare's header fsync, the directory fsync, the seal's fsync...).
    Sync(u64),
    /// The k-th write after the spare is ready (0: the spare's header).
    Write(u64),
}

/// Drives a SimFs log to a ready spare, arms `fault`, appends through the roll, crashes at a
/// seeded random state and reopens: every acknowledged record must be there, in order.
fn roll_onto_spare_then_crash(seed: u64, fault: Fault) {
    let sim = SimFs::new(seed);
    sim.set_zero_fill_pays(true);
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let log = Log::open_with(Arc::clone(&storage), "/s", opts()).unwrap();
    let mut acked: Vec<Vec<u8>> = Vec::new();
    let mut i = 0;
    let ready_at = fill_until_spare_ready(&log, i);
    acked.extend((i..ready_at).map(payload));
    i = ready_at;
    // Up to the append that rolls: it does not fit before the room kept for a seal and a
    // close frame (format-spec.md §6.3).
    let fits = |log: &Log, i: u64| {
        let frame = annal::format::batch_frame_bytes([payload(i).len()]);
        64 + log.stats().bytes_written + frame <= SEGMENT_BYTES - 2 * 56
    };
    while fits(&log, i) {
        log.append(&[payload(i)]).unwrap();
        acked.push(payload(i));
        i += 1;
    }
    assert_eq!(log.stats().rolls, 0);
    // Counted from the rolling append: the spare's header is write 0 and its fsync sync 0;
    // the directory fsync is sync 1; the old segment's seal is write 1, its fsync sync 2;
    // then its index file; then the record itself.
    match fault {
        Fault::None => {}
        Fault::Sync(k) => sim.fail_sync_at(k),
        Fault::Write(k) => sim.fail_write_at(k, false),
    }
    let mut failed = false;
    // The rolling append and a few more (after a failure, they must keep failing).
    for _ in 0..20 {
        match log.append(&[payload(i)]) {
            Ok(_) => {
                assert!(!failed, "{fault:?}: an append succeeded after a failure poisoned");
                acked.push(payload(i));
            }
            Err(_) => failed = true,
        }
        i += 1;
    }
    if let Fault::None = fault {
        assert_eq!(log.stats().prepared_rolls, 1, "the roll took the spare");
    }
    // Power loss with the log still open (as a process crash would leave it).
    // (Forgotten, not dropped: a dropped handle would try to close on the crashed disk.)
    std::mem::forget(log);
    sim.crash();
    sim.clear_faults();
    let log = Log::open_with(Arc::clone(&storage), "/s", opts())
        .unwrap_or_else(|e| panic!("seed {seed} {fault:?}: reopen failed: {e}"));
    let got = read_all(&log);
    assert!(got.len() >= acked.len(), "seed {seed} {fault:?}: lost acknowledged records");
    assert_eq!(got[..acked.len()], acked[..], "seed {seed} {fault:?}: records differ");
    for (n, p) in got.iter().enumerate().skip(acked.len()) {
        assert_eq!(p, &payload(n as u64), "seed {seed} {fault:?}: a foreign record");
    }
    assert!(
        sim.current_bytes(format!("/s/segments/{SPARE}")).is_none(),
        "seed {seed} {fault:?}: the open left a spare behind"
    );
    log.append(&[b"after".as_slice()]).unwrap();
}

#[test]
fn faults_and_crashes_during_a_roll_onto_a_spare_lose_no_acknowledged_record() {
    let cases: u64 =
        std::env::var("ANNAL_SPARE_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    for seed in 0..cases {
        roll_onto_spare_then_crash(seed, Fault::None);
        for k in 0..6 {
            roll_onto_spare_then_crash(seed, Fault::Sync(k));
        }
        for k in 0..4 {
            roll_onto_spare_then_crash(seed, Fault::Write(k));
        }
    }
}

/// Under `Durability::None` syncs are rare, so zeros written ahead would mostly reach the
/// device for nothing (`Options::zeroing_pays`): no spare is prepared and the roll creates its
/// segment the ordinary way, with nothing written past the records.
#[test]
fn no_spare_and_no_zeros_ahead_under_durability_none() {
    let sim = SimFs::new(7);
    sim.set_zero_fill_pays(true);
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let opts = Options { durability: annal::Durability::None, ..opts() };
    let log = Log::open_with(Arc::clone(&storage), "/s", opts).unwrap();
    let mut i = 0;
    while log.stats().bytes_written < SEGMENT_BYTES / 2 + 4096 {
        log.append(&[payload(i)]).unwrap();
        i += 1;
    }
    // Past the half, where a spare would be asked for: none may appear (on SimFs one is
    // ready within milliseconds when it is asked for).
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        assert!(!log.stats().spare_ready, "a spare was prepared under Durability::None");
        std::thread::sleep(Duration::from_millis(5));
    }
    while log.stats().rolls == 0 {
        log.append(&[payload(i)]).unwrap();
        i += 1;
    }
    let st = log.stats();
    assert_eq!((st.prepared_rolls, st.spare_ready), (0, false), "{st:?}");
    // One write per group and one seal per roll: no zeros written ahead of the records.
    assert_eq!(st.writes, st.groups + st.rolls, "{st:?}");
    let names = storage.read_dir(std::path::Path::new("/s/segments")).unwrap();
    assert!(!names.iter().any(|n| n == SPARE), "{names:?}");
    log.sync().unwrap();
    let expected: Vec<_> = (0..i).map(payload).collect();
    assert_eq!(read_all(&log), expected);
}
