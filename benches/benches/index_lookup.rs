//! Random `Log::read(seq)` on a warm store: the sparse index lookup, the walk from the
//! indexed frame to the record, and the record's CRC check.
//!
//! Stores of 200,000 events of 256 B in 16 MiB segments (so most records sit in sealed,
//! memory-mapped segments and the rest in the active one, read with positioned reads),
//! appended one event per batch (an index entry every 4 KiB, about 13 frames apart) or in
//! batches of 1,000 (an entry per batch; the record is found by walking the batch's record
//! headers). Sealed and active segments are measured apart, as they take different paths.

mod common;

use std::hint::black_box;

use annal_benches::payload::{self, EVENT_BYTES, XorShift};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const EVENTS: u64 = 200_000;
const SEGMENT_BYTES: u64 = 16 << 20;

fn lookup(c: &mut Criterion) {
    let pool = payload::pool(1_000, EVENT_BYTES, 5);
    let mut g = c.benchmark_group("index_lookup/read_random");
    g.throughput(Throughput::Elements(1));
    for batch in [1usize, 1_000] {
        let dir = common::store_dir("index");
        let log = common::filled_log(dir.path(), SEGMENT_BYTES, EVENTS, batch, &pool);
        let active = common::active_base(dir.path());
        assert!(active > 0 && active < EVENTS, "the store must have sealed segments");
        // Warm: map every segment and load every index once.
        for seq in (0..EVENTS).step_by(997) {
            log.read(seq).expect("warm-up read");
        }
        for (name, lo, hi) in [("sealed", 0, active), ("active", active, EVENTS)] {
            let mut rng = XorShift::new(11);
            g.bench_function(format!("batch{batch}/{name}"), |b| {
                b.iter(|| {
                    let seq = lo + rng.below(hi - lo);
                    let r = log.read(seq).expect("read");
                    black_box(r.payload.len())
                })
            });
        }
        log.close().expect("close");
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = lookup
}
criterion_main!(benches);
