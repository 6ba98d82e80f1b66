//! Frame codecs: encoding a batch frame (in one go with `encode_batch`, or split as the log
//! does: `PreparedBatch::new` on the appending thread, `finalize` in the group-commit
//! leader) and decoding a frame header and a record. Pure CPU, no I/O.

mod common;

use std::hint::black_box;

use annal::format::{
    Placement, PreparedBatch, decode_frame_header, decode_record_header, encode_batch,
};
use annal::limits::{FRAME_HEADER_BYTES, RECORD_BODY_BYTES_MAX};
use annal_benches::payload::{self, EVENT_BYTES};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const TAG: u64 = 0x1234_5678_9ABC_DEF0;

fn at(seq: u64) -> Placement {
    Placement { seq, file_offset: 64, synced_through: 64, log_tag: TAG, timestamp_us: 1 }
}

fn encode(c: &mut Criterion) {
    let pool = payload::pool(1_000, EVENT_BYTES, 1);
    for n in [1usize, 1_000] {
        let payloads = &pool[..n];
        let mut g = c.benchmark_group(format!("frame/encode/{n}x{EVENT_BYTES}B"));
        g.throughput(Throughput::Elements(n as u64));
        let mut out = Vec::new();
        g.bench_function("encode_batch", |b| {
            b.iter(|| {
                out.clear();
                encode_batch(&mut out, at(black_box(1_000)), payloads);
                black_box(out.len())
            })
        });
        g.bench_function("PreparedBatch::new", |b| {
            b.iter(|| black_box(PreparedBatch::new(black_box(payloads))))
        });
        let mut prepared = PreparedBatch::new(payloads);
        g.bench_function("PreparedBatch::finalize", |b| {
            b.iter(|| black_box(prepared.finalize(at(black_box(1_000))).len()))
        });
        g.finish();
    }
}

fn decode(c: &mut Criterion) {
    let pool = payload::pool(1, EVENT_BYTES, 2);
    let mut frame = Vec::new();
    encode_batch(&mut frame, at(7), &pool);
    let mut g = c.benchmark_group("frame/decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_frame_header", |b| {
        b.iter(|| black_box(decode_frame_header(black_box(&frame[..FRAME_HEADER_BYTES]))))
    });
    let record = &frame[FRAME_HEADER_BYTES..];
    g.bench_function(format!("decode_record_header/{EVENT_BYTES}B"), |b| {
        b.iter(|| {
            let r = decode_record_header(black_box(record), 7, RECORD_BODY_BYTES_MAX);
            black_box(r.map(|(h, p)| (h.seq, p.len())))
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = encode, decode
}
criterion_main!(benches);
