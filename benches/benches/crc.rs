//! CRC-32 (crc32fast), the checksum of every frame header and record: one-shot over a
//! 256-byte payload and a 64 KiB buffer, and the record pattern (12 header bytes, then the
//! payload, through one hasher) that `record_crc` uses.

mod common;

use std::hint::black_box;

use annal_benches::payload;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn crc(c: &mut Criterion) {
    for len in [256usize, 64 << 10] {
        let buf = payload::pool(1, len, 3).remove(0);
        let mut g = c.benchmark_group(format!("crc32fast/{len}B"));
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function("hash", |b| b.iter(|| black_box(crc32fast::hash(black_box(&buf)))));
        g.finish();
    }
    let payload = payload::pool(1, 256, 4).remove(0);
    let mut g = c.benchmark_group("crc32fast/record-12B+256B");
    g.throughput(Throughput::Bytes(12 + 256));
    g.bench_function("annal::format::record_crc", |b| {
        b.iter(|| black_box(annal::format::record_crc(256, black_box(42), black_box(&payload))))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = crc
}
criterion_main!(benches);
