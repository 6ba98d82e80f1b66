//! Temporal reads: "as of a time" answers equal a filter over the global order by event
//! timestamp, and timestamps are non-decreasing in seq order, across segment rolls and
//! reopens. "As of" a time seeks through the sparse time index rather than scanning.

use std::time::Duration;

use annal::{ExpectedVersion, NewEvent, Options, Store, StoreOptions};

fn opts() -> StoreOptions {
    StoreOptions {
        log: Options {
            segment_bytes: 8 << 10,
            max_record_bytes: 1 << 10,
            index_interval_bytes: 256,
            ..Options::default()
        },
        ..StoreOptions::default()
    }
}

#[test]
fn as_of_time_equals_a_filter_over_read_all() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), opts()).unwrap();
    for round in 0..6u64 {
        for i in 0..60u64 {
            let stream = format!("acc-{}", i % 5);
            let ev = NewEvent::new("Moved", format!("{round}/{i}").repeat(5));
            store.append(&stream, ExpectedVersion::Any, &[ev]).unwrap();
            if i % 20 == 0 {
                // Let the clock move so that batches get distinct times.
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        if round % 2 == 1 {
            store.close().unwrap();
            store = Store::open(dir.path(), opts()).unwrap();
        }
    }
    assert!(store.log().stats().rolls > 0 || store.log().recovery_report().segments > 1);
    let all: Vec<_> = store.read_all(0).map(|e| e.unwrap()).collect();
    assert_eq!(all.len(), 360);
    assert!(all.windows(2).all(|w| w[0].timestamp_us <= w[1].timestamp_us), "time went back");
    let first = all[0].timestamp_us;
    let mut probes: Vec<u64> = all.iter().step_by(7).map(|e| e.timestamp_us).collect();
    probes.extend([0, first - 1, first, u64::MAX]);
    probes.extend(all.iter().step_by(11).map(|e| e.timestamp_us + 1));
    for t in probes {
        let expected_end = all.iter().filter(|e| e.timestamp_us <= t).count() as u64;
        assert_eq!(store.log().seq_at_time(t).unwrap(), expected_end, "seq_at_time({t})");
        for s in 0..5 {
            let stream = format!("acc-{s}");
            let got: Vec<u64> =
                store.read_stream_as_of_time(&stream, t).unwrap().iter().map(|e| e.seq).collect();
            let want: Vec<u64> = all
                .iter()
                .filter(|e| e.stream_id == stream && e.timestamp_us <= t)
                .map(|e| e.seq)
                .collect();
            assert_eq!(got, want, "{stream} as of {t}");
        }
    }
}
