//! Property: `inspect::DurableTail` (what `annal tail` prints) returns a record only once it is
//! durable — every record it returned survives a power loss that drops everything unsynced —
//! and it does not stall: an idle writer's last group is returned once the reader's own
//! fdatasync proves it, or, without that, once a later frame does.
//!
//! Random workloads on `SimFs` interleave appends under `Sync` and `None`, explicit syncs,
//! rolls (small segments), clean close, process crash and reopen, a failing fdatasync of the
//! writer (which poisons it and moves its unsynced bytes aside), and polls of a reader that
//! syncs or never syncs; then power loss. A failure of the reader's own fdatasync has its own
//! test. Case count: `ANNAL_TAIL_CASES` (default 300).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use annal::fs::SimFs;
use annal::inspect::{DurableTail, LogItem, TailOptions};
use annal::{Durability, Log, Options};
use common::Rng;

const DIR: &str = "/store";

fn opts(durability: Durability) -> Options {
    Options {
        durability,
        segment_bytes: 4096,
        max_record_bytes: 512,
        preallocate: false,
        ..Options::default()
    }
}

fn open(fs: &SimFs, durability: Durability) -> Log {
    Log::open_with(Arc::new(fs.clone()), DIR, opts(durability)).unwrap()
}

fn tail(fs: &SimFs, sync_after: Option<Duration>) -> DurableTail {
    DurableTail::open_with(Arc::new(fs.clone()), Path::new(DIR), 0, TailOptions { sync_after })
        .unwrap()
}

/// Every record the reader returns now, as (seq, payload).
fn drain(t: &mut DurableTail) -> Vec<(u64, Vec<u8>)> {
    t.map(|i| match i.unwrap() {
        LogItem::Raw(r) => (r.seq, r.payload.to_vec()),
        LogItem::Event(e) => panic!("a log of raw records returned an event at {}", e.seq),
    })
    .collect()
}

fn seqs(recs: &[(u64, Vec<u8>)]) -> Vec<u64> {
    recs.iter().map(|r| r.0).collect()
}

#[test]
fn an_idle_sync_writers_last_group_waits_for_a_proof() {
    let fs = SimFs::new(1);
    let log = open(&fs, Durability::Sync);
    log.append(&[b"a".as_slice(), b"b"]).unwrap();
    log.append(&[b"c"]).unwrap();
    // Both appends returned (fsynced), but only the second frame's synced_through vouches
    // for the first; nothing yet vouches for the second.
    let mut frames_only = tail(&fs, None);
    assert_eq!(seqs(&drain(&mut frames_only)), [0, 1]);
    assert_eq!(frames_only.visible_end(), 3);
    frames_only.poll().unwrap();
    assert_eq!(drain(&mut frames_only), []);
    // A reader allowed to sync proves it itself.
    let mut syncing = tail(&fs, Some(Duration::ZERO));
    assert_eq!(seqs(&drain(&mut syncing)), [0, 1]);
    syncing.poll().unwrap();
    assert_eq!(seqs(&drain(&mut syncing)), [2]);
    // The next append proves it by its frame, and the close proves the last one.
    log.append(&[b"d"]).unwrap();
    frames_only.poll().unwrap();
    assert_eq!(seqs(&drain(&mut frames_only)), [2]);
    log.close().unwrap();
    frames_only.poll().unwrap();
    assert_eq!(seqs(&drain(&mut frames_only)), [3]);
}

#[test]
fn a_busy_writer_proves_its_groups_itself_and_the_reader_never_syncs() {
    let fs = SimFs::new(5);
    let log = open(&fs, Durability::Sync);
    log.append(&[b"0"]).unwrap();
    let mut t = tail(&fs, Some(Duration::from_millis(150)));
    let mut got = seqs(&drain(&mut t));
    for i in 1..12u8 {
        log.append(&[[i]]).unwrap();
        std::thread::sleep(Duration::from_millis(40));
        let syncs = fs.sync_count();
        t.poll().unwrap();
        assert_eq!(fs.sync_count(), syncs, "the reader synced beside a busy writer");
        got.extend(seqs(&drain(&mut t)));
    }
    assert_eq!(got, (0..11).collect::<Vec<u64>>(), "each append proves the one before");
    // Idle: after the wait, the reader's own fdatasync proves the last group.
    std::thread::sleep(Duration::from_millis(200));
    let syncs = fs.sync_count();
    t.poll().unwrap();
    assert_eq!(fs.sync_count(), syncs + 1);
    assert_eq!(seqs(&drain(&mut t)), [11]);
}

#[test]
fn unsynced_records_are_not_returned_until_durable() {
    let fs = SimFs::new(2);
    let log = open(&fs, Durability::None);
    log.append(&[b"w0"]).unwrap();
    log.append(&[b"w1"]).unwrap();
    let mut t = tail(&fs, None);
    assert_eq!(drain(&mut t), []);
    assert_eq!(t.visible_end(), 2);
    // Written, readable, not durable: a power loss now takes them.
    log.sync().unwrap();
    t.poll().unwrap();
    assert_eq!(drain(&mut t), [], "an fsync writes no frame: nothing proves it to a reader");
    log.append(&[b"w2"]).unwrap();
    t.poll().unwrap();
    assert_eq!(seqs(&drain(&mut t)), [0, 1]);
    // The reader's own sync makes w2 durable and then returns it.
    let mut s = tail(&fs, Some(Duration::ZERO));
    assert_eq!(seqs(&drain(&mut s)), [0, 1]);
    s.poll().unwrap();
    assert_eq!(drain(&mut s), [(2, b"w2".to_vec())]);
    fs.crash_drop_all();
    let back = open(&fs, Durability::Sync);
    assert_eq!(back.read(2).unwrap().payload.as_ref(), b"w2");
}

#[test]
fn the_readers_failed_fdatasync_is_an_error_and_proves_nothing() {
    let fs = SimFs::new(3);
    let log = open(&fs, Durability::None);
    log.append(&[b"x"]).unwrap();
    let mut t = tail(&fs, Some(Duration::ZERO));
    fs.fail_sync_at(0);
    let e = t.poll().unwrap_err();
    assert!(t.sync_failed(), "{e}");
    assert_eq!(drain(&mut t), []);
    // It never syncs again (a retried fdatasync can succeed without the data).
    let syncs = fs.sync_count();
    t.poll().unwrap();
    t.poll().unwrap();
    assert_eq!(fs.sync_count(), syncs);
    assert_eq!(drain(&mut t), []);
    drop(log);
}

#[test]
fn records_a_poisoned_writer_set_aside_are_never_returned() {
    let fs = SimFs::new(4);
    let log = open(&fs, Durability::None);
    log.append(&[b"kept"]).unwrap();
    log.sync().unwrap();
    log.append(&[b"lost"]).unwrap();
    let mut t = tail(&fs, None);
    t.poll().unwrap();
    assert_eq!(drain(&mut t), [(0, b"kept".to_vec())], "the frame of `lost` proves `kept`");
    // The writer's fsync fails: the kernel forgets the pages, the writer is poisoned and
    // moves the unsynced bytes aside.
    fs.fail_sync_at(0);
    assert!(log.sync().is_err());
    let mut s = tail(&fs, Some(Duration::ZERO));
    s.poll().unwrap();
    s.poll().unwrap();
    let got = drain(&mut s);
    assert!(!got.iter().any(|r| r.1 == b"lost"), "{got:?}");
    fs.crash_drop_all();
    let back = open(&fs, Durability::Sync);
    for (seq, payload) in got {
        assert_eq!(back.read(seq).unwrap().payload.as_ref(), payload.as_slice());
    }
}

fn cases() -> u64 {
    std::env::var("ANNAL_TAIL_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(300)
}

#[test]
fn every_returned_record_survives_power_loss() {
    if let Some(seed) = std::env::var("ANNAL_TAIL_SEED").ok().and_then(|s| s.parse().ok()) {
        return run_case(seed);
    }
    for case in 0..cases() {
        let seed = 0x7A11_0000 + case;
        run_case(seed);
    }
}

/// What the reader has done so far in one case.
struct Reader {
    t: DurableTail,
    sync_after: Option<Duration>,
    returned: Vec<(u64, Vec<u8>)>,
    /// It stopped (as `annal tail` exits): its own fdatasync failed, or it reported a
    /// retraction.
    stopped: bool,
    retracted: Option<u64>,
}

impl Reader {
    fn poll(&mut self, seed: u64, faulted: bool) {
        if self.stopped {
            return;
        }
        match self.t.poll() {
            Ok(()) => {}
            Err(_) if self.t.sync_failed() => self.stopped = true,
            Err(annal::Error::Retracted { seq }) => {
                // Only a writer whose fdatasync failed takes back what the reader's own
                // fdatasync proved.
                assert!(faulted && self.sync_after.is_some(), "seed {seed}: retracted {seq}");
                self.retracted = Some(seq);
                self.stopped = true;
            }
            Err(e) => panic!("seed {seed}: poll failed: {e}"),
        }
    }

    fn drain(&mut self) -> Vec<u64> {
        if self.stopped {
            return Vec::new();
        }
        let got = drain(&mut self.t);
        let s = seqs(&got);
        self.returned.extend(got);
        s
    }
}

fn run_case(seed: u64) {
    let mut rng = Rng(seed | 1);
    let fs = SimFs::new(seed);
    let policy = |rng: &mut Rng| {
        if rng.below(2) == 0 { Durability::Sync } else { Durability::None }
    };
    let mut log = Some(open(&fs, policy(&mut rng)));
    let sync_after = if rng.below(2) == 0 { Some(Duration::ZERO) } else { None };
    let mut r = Reader {
        t: tail(&fs, sync_after),
        sync_after,
        returned: Vec::new(),
        stopped: false,
        retracted: None,
    };
    let mut faulted = false;
    let debug = std::env::var_os("ANNAL_TAIL_DEBUG").is_some();
    if debug {
        eprintln!("reader sync_after {sync_after:?}");
    }
    for step in 0..40 {
        let op = rng.below(10);
        if debug {
            let (p, v) = (r.t.proven_end(), r.t.visible_end());
            eprintln!("step {step} op {op} proven {p} visible {v}");
        }
        match op {
            0..=4 => {
                if let Some(l) = &log {
                    let n = 1 + rng.below(3) as usize;
                    let mut batch = Vec::new();
                    for _ in 0..n {
                        let len = 1 + rng.below(300) as usize;
                        batch.push(rng.bytes(len));
                    }
                    let _ = l.append(&batch);
                }
            }
            5 => {
                if let Some(l) = &log {
                    let _ = l.sync();
                }
            }
            6 => {
                // A clean close, or a process crash (the page cache survives), then a new
                // writer, maybe under the other policy.
                if let Some(l) = log.take() {
                    if rng.below(2) == 0 {
                        let _ = l.close();
                    } else {
                        std::mem::forget(l);
                        // The reader looks once more before its handles go stale with the
                        // crash, then a new one goes on where it stopped.
                        r.poll(seed, faulted);
                        r.drain();
                        fs.crash_keep_all();
                        let opts = TailOptions { sync_after };
                        let storage = Arc::new(fs.clone());
                        let from = r.t.next_seq();
                        r.t = DurableTail::open_with(storage, Path::new(DIR), from, opts)
                            .unwrap_or_else(|e| panic!("seed {seed}: reader reopen: {e}"));
                    }
                }
                let p = policy(&mut rng);
                log = Log::open_with(Arc::new(fs.clone()), DIR, opts(p)).ok();
                if debug {
                    eprintln!("  new writer {p:?}: {}", log.is_some());
                }
            }
            7 => {
                // The writer's fdatasync fails (only the writer's: SimFs does not report a
                // failure to every open descriptor as Linux does, so a failure injected into
                // the reader's sync would go unseen by the writer, which Linux never allows).
                if let Some(l) = &log {
                    faulted = true;
                    fs.fail_sync_at(0);
                    let _ = l.append(&[rng.bytes(20)]);
                    let _ = l.sync();
                    fs.clear_faults();
                }
            }
            _ => {}
        }
        if rng.below(3) == 0 {
            r.poll(seed, faulted);
        }
        let got = r.drain();
        if debug && !got.is_empty() {
            eprintln!("  returned {got:?}");
        }
    }
    // `annal tail` polls for ever: it would see a retraction by now.
    r.poll(seed, faulted);
    // Power loss: only what was synced survives.
    drop(log);
    fs.crash_drop_all();
    let back = Log::open_with(Arc::new(fs.clone()), DIR, opts(Durability::Sync))
        .unwrap_or_else(|e| panic!("seed {seed}: reopen failed: {e}"));
    let returned = &r.returned;
    let want: Vec<u64> = (returned.first().map_or(0, |r| r.0)..).take(returned.len()).collect();
    assert_eq!(seqs(returned), want, "seed {seed}: returned seqs not dense");
    for (seq, payload) in returned {
        let same = back.read(*seq).is_ok_and(|r| r.payload.as_ref() == payload.as_slice());
        if !same && r.retracted.is_some_and(|x| x >= *seq) {
            // The reported retraction: a writer's discard cut a suffix of what was returned.
            break;
        }
        assert!(same, "seed {seed}: seq {seq} was returned as durable, then lost or changed");
    }
}
