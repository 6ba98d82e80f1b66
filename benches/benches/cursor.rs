//! Replay throughput: a cursor from seq 0 over 200,000 events of 256 B (batches of 1,000),
//! every record CRC-checked, warm page cache.

mod common;

use std::hint::black_box;

use annal_benches::payload::{self, EVENT_BYTES};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const EVENTS: u64 = 200_000;

fn scan(c: &mut Criterion) {
    let pool = payload::pool(1_000, EVENT_BYTES, 7);
    let dir = common::store_dir("cursor");
    let log = common::filled_log(dir.path(), 64 << 20, EVENTS, 1_000, &pool);
    let mut g = c.benchmark_group("cursor");
    g.throughput(Throughput::Elements(EVENTS));
    g.bench_function("scan_200k_events", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for r in log.cursor(0) {
                let r = r.expect("record");
                n += r.payload.len() as u64;
            }
            assert_eq!(n, EVENTS * EVENT_BYTES as u64);
            black_box(n)
        })
    });
    g.finish();
    log.close().expect("close");
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = scan
}
criterion_main!(benches);
