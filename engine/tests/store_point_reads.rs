//! `Store::event(seq)`: a point read by global seq returns exactly the event `read_all`
//! returns at that seq (every field), across segments and a reopen; `None` at and past the
//! visible end; a typed `BadEvent` for a record that is not an event; a typed `Corrupt` for a
//! damaged record, while every other event still reads back intact.

use std::os::unix::fs::FileExt;

use annal::{Durability, Error, ExpectedVersion, NewEvent, Options, Store, StoreOptions};

fn opts() -> StoreOptions {
    StoreOptions {
        log: Options {
            segment_bytes: 16 << 10,
            max_record_bytes: 2 << 10,
            durability: Durability::None,
            ..Options::default()
        },
        ..StoreOptions::default()
    }
}

fn data(seq: u64) -> Vec<u8> {
    let mut d = format!("event {seq:06}:").into_bytes();
    d.extend((0..(seq * 31 % 200)).map(|k| (seq + k) as u8));
    d
}

/// Appends `n` events over a few streams, in batches of 1-3; returns the stream of each.
fn fill(store: &Store, n: u64) -> Vec<String> {
    let mut streams = Vec::new();
    while (streams.len() as u64) < n {
        let seq = streams.len() as u64;
        let stream = format!("s-{}", seq % 5);
        let k = (seq % 3 + 1).min(n - seq);
        let batch: Vec<NewEvent> =
            (0..k).map(|j| NewEvent::new(format!("T{}", (seq + j) % 4), data(seq + j))).collect();
        let r = store.append(&stream, ExpectedVersion::Any, &batch).unwrap();
        assert_eq!(r.first_seq, seq);
        streams.extend((0..k).map(|_| stream.clone()));
    }
    store.log().sync().unwrap();
    streams
}

#[test]
fn point_reads_equal_read_all_and_end_at_the_visible_end() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let streams = fill(&store, 600);
    assert!(store.log().stats().rolls >= 3, "the events must span several segments");
    let all: Vec<_> = store.read_all(0).map(|e| e.unwrap()).collect();
    assert_eq!(all.len(), 600);
    let check = |store: &Store| {
        // Out of order, so that the record offsets are built in no particular order.
        for k in 0..600u64 {
            let seq = (k * 7919) % 600;
            let e = store.event(seq).unwrap().unwrap();
            assert_eq!(e, all[seq as usize], "seq {seq}");
            assert_eq!(e.stream_id, streams[seq as usize]);
            assert_eq!(e.data, data(seq));
        }
        assert_eq!(store.event(600).unwrap(), None);
        assert_eq!(store.event(u64::MAX).unwrap(), None);
    };
    check(&store);
    store.close().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    check(&store);
    let r = store.append("late", ExpectedVersion::NoStream, &[NewEvent::new("T", "x")]).unwrap();
    assert_eq!(r.first_seq, 600);
    let late = store.event(600).unwrap().unwrap();
    assert_eq!((late.stream_id.as_str(), late.version, &late.data[..]), ("late", 0, &b"x"[..]));
    assert_eq!(store.event(601).unwrap(), None);
    store.close().unwrap();
}

#[test]
fn a_record_that_is_not_an_event_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    fill(&store, 10);
    // Written under the store, through its log: it is no event body.
    let raw = store.log().append(&[b"not an event body"]).unwrap();
    fill_more(&store);
    match store.event(raw.first) {
        Err(Error::BadEvent { seq, .. }) => assert_eq!(seq, raw.first),
        other => panic!("expected BadEvent for seq {}, got {other:?}", raw.first),
    }
    // Its neighbours read as they should.
    assert_eq!(store.event(raw.first - 1).unwrap().unwrap().data, data(raw.first - 1));
    assert_eq!(store.event(raw.first + 1).unwrap().unwrap().stream_id, "after");
}

fn fill_more(store: &Store) {
    store.append("after", ExpectedVersion::NoStream, &[NewEvent::new("T", "y")]).unwrap();
    store.log().sync().unwrap();
}

#[test]
fn a_damaged_record_is_corrupt_and_the_others_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    fill(&store, 300);
    let victim = 150u64;
    let marker = format!("event {victim:06}:").into_bytes();
    // Flip one bit of the victim's data through a second descriptor: the page cache shows it
    // to the engine at once, whether it reads the segment by pread or through a map.
    let mut hits = 0;
    for entry in std::fs::read_dir(dir.path().join("segments")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "seg") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(marker.len()).position(|w| w == marker) {
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.write_all_at(&[bytes[at] ^ 0x01], at as u64).unwrap();
            f.sync_all().unwrap();
            hits += 1;
        }
    }
    assert_eq!(hits, 1, "the victim's data must be found exactly once");
    for _ in 0..2 {
        // Twice: no verdict is cached, and the damage never turns into returned bytes.
        match store.event(victim) {
            Err(Error::Corrupt { .. }) => {}
            other => panic!("expected Corrupt for seq {victim}, got {other:?}"),
        }
    }
    for seq in (0..300u64).filter(|&s| s != victim) {
        assert_eq!(store.event(seq).unwrap().unwrap().data, data(seq), "seq {seq}");
    }
}
