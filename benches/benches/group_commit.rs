//! One thread appending single 256-byte events: `Durability::None` (the write path without
//! fsync: encoding, the group-commit round trip, one write) against `Durability::Sync` (the
//! same plus one fdatasync per append). The difference is the price of durability on this
//! disk; the multi-threaded comparison with a plain-file group commit is in `log_compare`.

mod common;

use std::hint::black_box;

use annal::{Durability, Log, Options};
use annal_benches::payload::{self, EVENT_BYTES};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn append(c: &mut Criterion) {
    let pool = payload::pool(64, EVENT_BYTES, 6);
    let mut g = c.benchmark_group("group_commit/append_1x256B");
    g.throughput(Throughput::Elements(1));
    for (name, durability) in [("none", Durability::None), ("sync", Durability::Sync)] {
        let dir = common::store_dir("append");
        let log = Log::open(dir.path(), Options { durability, ..Options::default() })
            .expect("open the log");
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                black_box(log.append(&[&pool[i % pool.len()]]).expect("append"))
            })
        });
        log.close().expect("close");
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = append
}
criterion_main!(benches);
