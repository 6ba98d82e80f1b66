//! `Options::zero_ahead_bytes`: the writer writes zeros ahead of the active segment's end, in
//! chunks, so that later appends overwrite written blocks. The crash-recovery proptest runs
//! with it on and off; this checks the mechanism itself: where the zeros go, that they never
//! touch a byte of a record, and that they are covered by the group's own fsync.

use std::sync::Arc;

use annal::fs::{SimFs, TraceEvent};
use annal::{Log, Options};

const DIR: &str = "/store";
const SEGMENT_BYTES: u64 = 64 << 10;
const CHUNK: u64 = 5000;

fn opts(zero_ahead_bytes: u64) -> Options {
    Options {
        segment_bytes: SEGMENT_BYTES,
        max_record_bytes: 4096,
        zero_ahead_bytes,
        ..Options::default()
    }
}

/// The writes and syncs of segment files, in order.
fn segment_trace(sim: &SimFs) -> Vec<TraceEvent> {
    sim.trace()
        .into_iter()
        .filter(|e| match e {
            TraceEvent::Write { path, .. }
            | TraceEvent::SyncStart { path }
            // A segment's file is opened under its temp name (`.seg.tmp`) and then renamed.
            | TraceEvent::SyncEnd { path, .. } => path.to_string_lossy().contains(".seg"),
            _ => false,
        })
        .collect()
}

#[test]
fn zeros_go_ahead_of_the_records_in_chunks_and_are_synced_with_them() {
    let sim = SimFs::new(1);
    let log = Log::open_with(Arc::new(sim.clone()), DIR, opts(CHUNK)).unwrap();
    sim.set_tracing(true);
    // Every record frame is FRAME bytes, so any other write is zeros.
    let payload = vec![0xA5u8; 700];
    let frame = annal::format::batch_frame_bytes([700]);
    const APPENDS: u64 = 40;
    for _ in 0..APPENDS {
        log.append(&[&payload]).unwrap();
    }
    let mut record_end = 64u64;
    let mut zeroed_to = 64u64;
    let mut zero_writes = 0u64;
    let mut unsynced_zeros = false;
    for e in segment_trace(&sim) {
        match e {
            TraceEvent::Write { offset, len, .. } if len == frame => {
                assert_eq!(offset, record_end, "records are written back to back");
                record_end += len;
            }
            TraceEvent::Write { offset, len, .. } => {
                // Zeros start right after the record write that crossed the zeroed range,
                // so they never cover a byte of a record.
                assert_eq!(offset, record_end, "zeros at {offset}, records end at {record_end}");
                assert!(record_end > zeroed_to, "zeros written before the range was crossed");
                assert_eq!(len, CHUNK.min(SEGMENT_BYTES - offset), "a zero chunk");
                zeroed_to = offset + len;
                zero_writes += 1;
                unsynced_zeros = true;
            }
            TraceEvent::SyncEnd { ok: true, .. } => unsynced_zeros = false,
            _ => {}
        }
    }
    assert_eq!(record_end, 64 + APPENDS * frame);
    assert!(!unsynced_zeros, "zeros were left unsynced after the last acknowledged append");
    // The writer crosses the zeroed range once per chunk (each crossing zeroes CHUNK bytes
    // from the end of the record that crossed).
    let expected = (APPENDS * frame).div_ceil(CHUNK + frame / 2);
    assert!(
        (expected - 1..=expected + 1).contains(&zero_writes),
        "{zero_writes} zero writes, about {expected} expected"
    );
}

#[test]
fn zero_ahead_off_writes_only_records() {
    let sim = SimFs::new(2);
    let log = Log::open_with(Arc::new(sim.clone()), DIR, opts(0)).unwrap();
    sim.set_tracing(true);
    for i in 0..20u8 {
        log.append(&[vec![i; 500]]).unwrap();
    }
    let frame = annal::format::batch_frame_bytes([500]);
    let writes: Vec<u64> = segment_trace(&sim)
        .into_iter()
        .filter_map(|e| match e {
            TraceEvent::Write { len, .. } => Some(len),
            _ => None,
        })
        .collect();
    assert_eq!(writes, vec![frame; 20], "only record frames are written");
}

#[test]
fn a_store_with_zeros_ahead_reopens_to_exactly_its_records() {
    let sim = SimFs::new(3);
    let payloads: Vec<Vec<u8>> = (0..300u32).map(|i| i.to_le_bytes().repeat(50)).collect();
    {
        let log = Log::open_with(Arc::new(sim.clone()), DIR, opts(CHUNK)).unwrap();
        for p in &payloads {
            log.append(&[p]).unwrap();
        }
        // No close: power is lost with the zeros on disk after the last frame.
    }
    sim.crash();
    let log = Log::open_with(Arc::new(sim.clone()), DIR, opts(CHUNK)).unwrap();
    assert!(log.recovery_report().truncated.is_none(), "{:?}", log.recovery_report());
    let read: Vec<Vec<u8>> = log.cursor(0).map(|r| r.unwrap().payload.to_vec()).collect();
    assert_eq!(read, payloads);
}
