//! The stream index of `annal::Store`, through the public API: what an append's version
//! check and a stream read cost on top of the log.
//!
//! A store of 100,000 events of 256 B over 10,000 streams `s-<n>` (each event's stream
//! drawn at random, so about 10 events per stream, spread over the log), built with
//! `Durability::None`:
//! - `stream_version`: the index lookup alone, for a stream that exists and one that does
//!   not;
//! - `read_stream`: one short stream whole (index lookup, then a point read per event);
//! - `append_exact`: one event to a random stream with `ExpectedVersion::Exact`
//!   (`Durability::None`): the version check and index insert under the commit lock, plus
//!   the log append;
//! - `open_from_checkpoint`: `Store::open` of the closed store, which loads the index from
//!   `streams.ckpt` (and its close).

mod common;

use std::hint::black_box;

use annal::{Direction, Durability, ExpectedVersion, NewEvent, Options, Store, StoreOptions};
use annal_benches::contenders;
use annal_benches::payload::{EVENT_BYTES, XorShift};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const EVENTS: u64 = 100_000;
const STREAMS: u64 = 10_000;

fn options() -> StoreOptions {
    StoreOptions {
        log: Options { durability: Durability::None, ..Options::default() },
        ..StoreOptions::default()
    }
}

fn stream_index(c: &mut Criterion) {
    let dir = common::store_dir("stream-index");
    let store = Store::open(dir.path(), options()).expect("open");
    let mut versions = vec![0u64; STREAMS as usize];
    for e in contenders::stream_events(EVENTS, STREAMS, EVENT_BYTES) {
        let expected = match e.version {
            0 => ExpectedVersion::NoStream,
            v => ExpectedVersion::Exact(v - 1),
        };
        store.append(&e.stream, expected, &[NewEvent::new(e.event_type, e.data)]).expect("fill");
        versions[e.stream[2..].parse::<usize>().expect("stream number")] = e.version + 1;
    }
    store.log().sync().expect("sync");

    let mut g = c.benchmark_group("stream_index");
    g.throughput(Throughput::Elements(1));
    let mut rng = XorShift::new(3);
    g.bench_function("stream_version/hit", |b| {
        b.iter(|| {
            let s = format!("s-{}", rng.below(STREAMS));
            black_box(store.stream_version(&s))
        })
    });
    g.bench_function("stream_version/miss", |b| {
        b.iter(|| {
            let s = format!("x-{}", rng.below(STREAMS));
            black_box(store.stream_version(&s))
        })
    });
    g.bench_function("read_stream/short", |b| {
        b.iter(|| {
            let k = rng.below(STREAMS);
            let v = store
                .read_stream(&format!("s-{k}"), 0, Direction::Forward, usize::MAX)
                .expect("read");
            assert_eq!(v.len() as u64, versions[k as usize]);
            black_box(v)
        })
    });
    let data = vec![7u8; EVENT_BYTES];
    g.bench_function("append_exact", |b| {
        b.iter(|| {
            let k = rng.below(STREAMS) as usize;
            let expected = match versions[k] {
                0 => ExpectedVersion::NoStream,
                v => ExpectedVersion::Exact(v - 1),
            };
            let ev = NewEvent::new("ItemAdded", data.clone());
            store.append(&format!("s-{k}"), expected, &[ev]).expect("append");
            versions[k] += 1;
        })
    });
    g.finish();
    store.close().expect("close");

    let mut g = c.benchmark_group("stream_index");
    g.throughput(Throughput::Elements(EVENTS));
    g.bench_function("open_from_checkpoint", |b| {
        b.iter(|| {
            let s = Store::open(dir.path(), StoreOptions::default()).expect("reopen");
            assert!(s.index_stats().streams as u64 <= STREAMS);
            s.close().expect("close");
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = stream_index
}
criterion_main!(benches);
