//! What `annal::Store` reads cost on top of the log they read through (W4 and W5 of
//! `compare` in small): a store of 200,000 events of 256 B in one stream, appended in
//! batches of 1,000 with `Durability::None`, warm page cache.
//!
//! - `log_scan` / `store_scan`: `Log::cursor(0)` against `Store::read_all(0)` over every
//!   event (CRC checked by both; the store also decodes each event and finds its version);
//! - `log_point` / `store_point`: `Log::read(seq)` against `Store::event(seq)` at random
//!   seqs.
//!
//! Compare each store figure with its log figure from the same run.

mod common;

use std::hint::black_box;

use annal::{Durability, ExpectedVersion, NewEvent, Options, Store, StoreOptions};
use annal_benches::payload::{self, EVENT_BYTES, XorShift};
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const EVENTS: u64 = 200_000;
const BATCH: usize = 1_000;

fn store_read(c: &mut Criterion) {
    let pool: Vec<Bytes> =
        payload::pool(BATCH, EVENT_BYTES, 7).into_iter().map(Bytes::from).collect();
    let dir = common::store_dir("store-read");
    let opts = StoreOptions {
        log: Options { durability: Durability::None, ..Options::default() },
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), opts).expect("open");
    let mut version = 0u64;
    while version < EVENTS {
        let batch: Vec<NewEvent> = pool.iter().map(|d| NewEvent::new("Bulk", d.clone())).collect();
        let expected = match version {
            0 => ExpectedVersion::NoStream,
            v => ExpectedVersion::Exact(v - 1),
        };
        store.append("bulk", expected, &batch).expect("fill");
        version += BATCH as u64;
    }
    store.log().sync().expect("sync");
    let log = store.log().clone();

    let mut g = c.benchmark_group("store_read");
    g.throughput(Throughput::Elements(EVENTS));
    g.bench_function("log_scan", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for r in log.cursor(0) {
                n += r.expect("record").payload.len() as u64;
            }
            black_box(n)
        })
    });
    g.bench_function("store_scan", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for e in store.read_all(0) {
                let e = e.expect("event");
                n += e.data.len() as u64 + e.version;
            }
            assert!(n >= EVENTS * EVENT_BYTES as u64);
            black_box(n)
        })
    });
    g.throughput(Throughput::Elements(1));
    let mut rng = XorShift::new(11);
    g.bench_function("log_point", |b| {
        b.iter(|| black_box(log.read(rng.below(EVENTS)).expect("read").payload.len()))
    });
    g.bench_function("store_point", |b| {
        b.iter(|| {
            let e = store.event(rng.below(EVENTS)).expect("read").expect("an event");
            black_box(e.data.len() as u64 + e.version)
        })
    });
    g.finish();
    store.close().expect("close");
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = store_read
}
criterion_main!(benches);
