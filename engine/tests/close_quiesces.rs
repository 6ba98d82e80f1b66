//! Property: once `Store::close` returns, the store writes nothing more and its directory is
//! free: an open right after it is not refused as `Locked`. The store's background
//! checkpointer, woken by a segment roll just before the close, must not write `streams.ckpt`
//! afterwards: the writer lock is released by then, so such a write could race with the next
//! opener of the directory (in this or another process), whose own checkpoint write shares the
//! temp file name `streams.ckpt.tmp` (found by `hostile_env.rs`, where a reopen's close failed
//! with NotFound on that temp file).
//!
//! Rounds: `ANNAL_CLOSE_ROUNDS` (default 300), each on a fresh `SimFs`.

use std::sync::Arc;
use std::time::Duration;

use annal::fs::SimFs;
use annal::{ExpectedVersion, NewEvent, Options, Store, StoreOptions};

#[test]
fn no_checkpoint_write_after_close_returns() {
    let rounds: u64 =
        std::env::var("ANNAL_CLOSE_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let opts = StoreOptions {
        log: Options { segment_bytes: 8 << 10, max_record_bytes: 2048, ..Options::default() },
        ..StoreOptions::default()
    };
    let (mut late, mut locked) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let sim = SimFs::new(round);
        let store = Store::open_with(Arc::new(sim.clone()), "/store", opts.clone()).unwrap();
        // Many streams make each checkpoint write take a while; the last append rolls a
        // segment, which wakes the checkpointer right before the close.
        let rolls = store.log().stats().rolls;
        let mut i = 0;
        while store.log().stats().rolls == rolls || i < 200 {
            let ev = NewEvent::new("T", vec![b'x'; 40]);
            store.append(&format!("stream-{i}"), ExpectedVersion::Any, &[ev]).unwrap();
            i += 1;
        }
        store.close().unwrap();
        // The lock is free as soon as close returns (no thread still holds the store).
        match Store::open_with(Arc::new(sim.clone()), "/store", opts.clone()) {
            Ok(again) => drop(again),
            Err(annal::Error::Locked { .. }) => locked.push(round),
            Err(e) => panic!("round {round}: reopen after close: {e}"),
        }
        let writes = sim.write_count();
        std::thread::sleep(Duration::from_millis(2));
        if sim.write_count() != writes {
            late.push(round);
        }
    }
    assert!(late.is_empty(), "writes after close returned in rounds {late:?} of {rounds}");
    assert!(locked.is_empty(), "still locked after close returned in rounds {locked:?}");
}
