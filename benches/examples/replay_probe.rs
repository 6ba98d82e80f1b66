//! Replays a bulk store (like `compare`'s W4: one stream `bulk`, 256-byte events appended
//! in batches of 1,000) with `Log::cursor` and `Store::read_all`, warm, in one process: a
//! loop to profile (`perf record`) and a quick same-run comparison of the store's scan with
//! the cursor under it.
//!
//! `cargo run --release -p annal-benches --example replay_probe -- DIR [EVENTS] [PASSES] [MODE]`
//! builds the store in DIR if it is missing, then replays it PASSES times and prints each
//! pass's rate, then the best and the median ns/event of each reader. MODE: `log` (the
//! cursor only), `store` (`read_all` only), `decode` (the cursor, then the cursor with
//! `EventBody::decode` of each record, then `read_all`: what decoding costs without
//! building a `RecordedEvent`), anything else both the cursor and `read_all`.

use std::time::Instant;

use annal::{Durability, ExpectedVersion, NewEvent, Options, Store, StoreOptions};
use bytes::Bytes;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().ok_or("usage: replay_probe DIR [EVENTS] [PASSES] [log|store]")?;
    let events: u64 = args.get(1).map_or(Ok(1_000_000), |s| s.parse())?;
    let passes: u32 = args.get(2).map_or(Ok(5), |s| s.parse())?;
    let which = args.get(3).map_or("both", String::as_str);
    let opts = StoreOptions {
        log: Options { durability: Durability::None, ..Options::default() },
        ..StoreOptions::default()
    };
    let store = Store::open(dir, opts)?;
    if store.log().visible_end() == 0 {
        let pool: Vec<Bytes> =
            (0..1_000u32).map(|i| Bytes::from(vec![(i % 251) as u8; 256])).collect();
        let mut version = 0u64;
        while version < events {
            let n = (events - version).min(pool.len() as u64) as usize;
            let batch: Vec<NewEvent> =
                pool[..n].iter().map(|d| NewEvent::new("E", d.clone())).collect();
            let expected = match version {
                0 => ExpectedVersion::NoStream,
                v => ExpectedVersion::Exact(v - 1),
            };
            store.append("bulk", expected, &batch)?;
            version += n as u64;
        }
        store.log().sync()?;
    }
    let events = store.log().visible_end();
    let (mut log_ns, mut store_ns, mut dec_ns) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..passes {
        if which != "store" {
            let t = Instant::now();
            let mut sum = 0u64;
            for r in store.log().cursor(0) {
                let r = r?;
                sum += u64::from(r.payload[r.payload.len() - 1]);
            }
            let s = t.elapsed().as_secs_f64();
            log_ns.push(s * 1e9 / events as f64);
            println!("log   {:>6.2} M/s ({sum})", events as f64 / s / 1e6);
        }
        if which == "decode" {
            let t = Instant::now();
            let mut sum = 0u64;
            for r in store.log().cursor(0) {
                let r = r?;
                let b = annal::format::EventBody::decode(&r.payload)?;
                sum += u64::from(b.data[0]) + b.stream_id.len() as u64;
            }
            let s = t.elapsed().as_secs_f64();
            dec_ns.push(s * 1e9 / events as f64);
            println!("dec   {:>6.2} M/s ({sum})", events as f64 / s / 1e6);
        }
        if which != "log" {
            let t = Instant::now();
            let mut sum = 0u64;
            for e in store.read_all(0) {
                let e = e?;
                sum += u64::from(e.data[0]) + (e.version & 1);
            }
            let s = t.elapsed().as_secs_f64();
            store_ns.push(s * 1e9 / events as f64);
            println!("store {:>6.2} M/s ({sum})", events as f64 / s / 1e6);
        }
    }
    for (name, ns) in [("log", &mut log_ns), ("decode", &mut dec_ns), ("store", &mut store_ns)] {
        if !ns.is_empty() {
            ns.sort_by(f64::total_cmp);
            println!("{name} ns/event: best {:.1}, median {:.1}", ns[0], ns[ns.len() / 2]);
        }
    }
    store.close()?;
    Ok(())
}
