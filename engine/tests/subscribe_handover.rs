//! Subscriptions started at random moments while many writers append see every event from
//! their start seq exactly once, in seq order, with no gap, across the catch-up -> live
//! handover; filtered subscriptions see exactly the matching subset; and under
//! `Durability::Sync` no event is delivered before it is durable.
//!
//! Each round runs on a fresh [`SimFs`] (fsync costs nothing, so the writers race hard):
//! four writer threads append batches of 1..=3 events to their own streams while six
//! subscriber threads start after random delays, from a random seq at or below the head at
//! that moment (sometimes exactly the head, sometimes 0), and consume until they have passed
//! the final head. `ANNAL_SUBSCRIBE_ROUNDS` sets the number of rounds (default 20).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use annal::fs::SimFs;
use annal::{ExpectedVersion, Filter, NewEvent, RecordedEvent, Store, StoreOptions};

const WRITERS: usize = 4;
const SUBSCRIBERS: usize = 6;
const BATCHES_PER_WRITER: usize = 300;

fn rounds() -> u64 {
    std::env::var("ANNAL_SUBSCRIBE_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20)
}

fn open(sim: &SimFs) -> Store {
    Store::open_with(Arc::new(sim.clone()), "/store", StoreOptions::default()).unwrap()
}

/// What one subscriber saw.
struct Seen {
    from: u64,
    filter: Option<String>,
    events: Vec<RecordedEvent>,
}

fn round(seed: u64) {
    let sim = SimFs::new(seed);
    let store = open(&sim);
    let done = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(WRITERS + SUBSCRIBERS));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        let start = Arc::clone(&start);
        writers.push(thread::spawn(move || {
            let mut rng = fastrand::Rng::with_seed(seed * 100 + w as u64);
            start.wait();
            for b in 0..BATCHES_PER_WRITER {
                let n = rng.usize(1..=3);
                let events: Vec<NewEvent> = (0..n)
                    .map(|i| NewEvent::new(if i == 0 { "First" } else { "More" }, format!("{b}")))
                    .collect();
                store.append(&format!("writer-{w}"), ExpectedVersion::Any, &events).unwrap();
                if rng.u8(..) < 8 {
                    thread::yield_now();
                }
            }
        }));
    }
    let mut subscribers = Vec::new();
    for s in 0..SUBSCRIBERS {
        let store = store.clone();
        let start = Arc::clone(&start);
        let done = Arc::clone(&done);
        subscribers.push(thread::spawn(move || {
            let mut rng = fastrand::Rng::with_seed(seed * 1000 + s as u64);
            start.wait();
            thread::sleep(Duration::from_micros(rng.u64(0..3000)));
            let head = store.log().visible_end();
            let from = match rng.u8(0..3) {
                0 => 0,
                1 => head,
                _ => rng.u64(0..=head),
            };
            let filter = (s % 3 == 2).then(|| format!("writer-{}", s % WRITERS));
            let mut sub = store.subscribe(from);
            if let Some(stream) = &filter {
                sub = sub.with_filter(Filter::all().stream(stream.clone()));
            }
            let mut events = Vec::new();
            loop {
                // The final head is known once the writers are done; stop when passed.
                let finished = done.load(Ordering::Acquire);
                let target = store.log().visible_end();
                if finished && sub.position() >= target {
                    break;
                }
                if let Some(e) = sub.next_timeout(Duration::from_millis(20)).unwrap() {
                    // Never ahead of the durable head under the default `Sync` policy.
                    let durable = store.log().durable_head();
                    assert!(durable.is_some_and(|d| e.seq <= d), "seq {} not durable", e.seq);
                    events.push(e);
                }
            }
            Seen { from, filter, events }
        }));
    }
    for w in writers {
        w.join().unwrap();
    }
    done.store(true, Ordering::Release);
    let seen: Vec<Seen> = subscribers.into_iter().map(|s| s.join().unwrap()).collect();
    let head = store.log().visible_end();
    assert_eq!(head, store.index_stats().events);
    let all: Vec<RecordedEvent> = store.read_all(0).map(|e| e.unwrap()).collect();
    assert_eq!(all.len() as u64, head);
    for s in seen {
        let expected: Vec<&RecordedEvent> = all
            .iter()
            .skip(s.from as usize)
            .filter(|e| s.filter.as_ref().is_none_or(|f| e.stream_id == *f))
            .collect();
        let got: Vec<u64> = s.events.iter().map(|e| e.seq).collect();
        let want: Vec<u64> = expected.iter().map(|e| e.seq).collect();
        assert_eq!(
            got, want,
            "seed {seed}: subscriber from {} (filter {:?}) saw the wrong events",
            s.from, s.filter
        );
        for (g, w) in s.events.iter().zip(expected) {
            assert_eq!(g, w, "seed {seed}: event {} differs from the log", g.seq);
        }
    }
    store.close().unwrap();
}

#[test]
fn every_event_once_in_order_across_the_handover() {
    for seed in 0..rounds() {
        round(seed);
    }
}

#[test]
fn a_subscription_ends_when_the_store_closes() {
    let sim = SimFs::new(99);
    let store = open(&sim);
    store.append("a-1", ExpectedVersion::Any, &[NewEvent::new("T", "x")]).unwrap();
    let sub = store.subscribe(0);
    let reader = thread::spawn(move || sub.map(|e| e.unwrap().seq).collect::<Vec<_>>());
    thread::sleep(Duration::from_millis(20));
    store.append("a-1", ExpectedVersion::Any, &[NewEvent::new("T", "y")]).unwrap();
    store.log().clone().close().unwrap();
    assert_eq!(reader.join().unwrap(), vec![0, 1]);
}

#[test]
fn filters_by_category_and_event_type() {
    let sim = SimFs::new(98);
    let store = open(&sim);
    let ev = |t: &str| NewEvent::new(t, "d");
    store.append("order-1", ExpectedVersion::Any, &[ev("Placed"), ev("Shipped")]).unwrap();
    store.append("user-1", ExpectedVersion::Any, &[ev("Placed")]).unwrap();
    store.append("order-2", ExpectedVersion::Any, &[ev("Placed")]).unwrap();
    store.append("misc", ExpectedVersion::Any, &[ev("Shipped")]).unwrap();
    let take = |f: Filter| {
        let mut sub = store.subscribe(0).with_filter(f);
        let mut out = Vec::new();
        while let Some(e) = sub.try_next().unwrap() {
            out.push(e.seq);
        }
        assert_eq!(sub.position(), 5);
        out
    };
    assert_eq!(take(Filter::all()), vec![0, 1, 2, 3, 4]);
    assert_eq!(take(Filter::all().category("order")), vec![0, 1, 3]);
    assert_eq!(take(Filter::all().category("order").event_type("Shipped")), vec![1]);
    assert_eq!(take(Filter::all().stream("misc").category("user")), vec![2, 4]);
    assert_eq!(take(Filter::all().event_type("Placed")), vec![0, 2, 3]);
}
