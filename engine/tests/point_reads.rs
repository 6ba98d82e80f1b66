//! `Log::read(seq)` through the per-segment record offsets returns exactly what a cursor
//! returns (payload and timestamp) for every seq, whatever the memory budget for those
//! offsets (none, part of the store, all of it), across segments, close frames and a
//! concurrently growing active segment.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use annal::{Error, Log, Options};

fn opts(budget: u64) -> Options {
    Options {
        segment_bytes: 32 << 10,
        max_record_bytes: 2 << 10,
        point_read_index_bytes: budget,
        ..Options::default()
    }
}

#[test]
fn point_reads_equal_the_cursor_under_any_budget() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), opts(64 << 20)).unwrap();
    let mut expected = Vec::new();
    for i in 0..400u32 {
        let batch: Vec<Vec<u8>> =
            (0..(i % 7 + 1)).map(|j| vec![(i + j) as u8; ((i * 13 + j) % 300) as usize]).collect();
        log.append(&batch).unwrap();
        expected.extend(batch);
    }
    log.close().unwrap();
    // A budget of 0, one that covers about one segment, and the default. Each round closes
    // and appends, so close frames sit between batches of the active segment.
    for budget in [0, 2_000, 64 << 20] {
        let log = Log::open(dir.path(), opts(budget)).unwrap();
        assert!(log.recovery_report().segments > 3);
        let via_cursor: Vec<_> = log.cursor(0).map(|r| r.unwrap()).collect();
        assert_eq!(via_cursor.len(), expected.len());
        // Out of order, so that offsets are built for segments in no particular order.
        let n = expected.len() as u64;
        for k in 0..n {
            let seq = (k * 7919) % n;
            let r = log.read(seq).unwrap();
            assert_eq!(r, via_cursor[seq as usize], "budget {budget}, seq {seq}");
            assert_eq!(r.payload, expected[seq as usize]);
        }
        assert!(matches!(log.read(n), Err(Error::SeqOutOfRange { .. })));
        log.append(&[b"more"]).unwrap();
        assert_eq!(&log.read(n).unwrap().payload[..], b"more");
        log.close().unwrap();
        expected.push(b"more".to_vec());
    }
}

#[test]
fn point_reads_follow_a_growing_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), opts(64 << 20)).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let log = log.clone();
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !done.load(Ordering::Acquire) {
                let end = log.visible_end();
                for seq in (0..end).rev().take(50) {
                    let r = log.read(seq).unwrap();
                    assert_eq!(r.payload.len(), (seq % 97) as usize, "seq {seq}");
                    assert!(r.payload.iter().all(|&b| b == seq as u8));
                    reads += 1;
                }
            }
            reads
        })
    };
    for seq in 0..3_000u64 {
        log.append(&[vec![seq as u8; (seq % 97) as usize]]).unwrap();
    }
    done.store(true, Ordering::Release);
    assert!(reader.join().unwrap() > 0);
}
