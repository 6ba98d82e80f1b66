//! `Store::read_all` finds each event's version from a window of its stream's seqs copied out
//! of the index, and shares the last event's stream and type strings: every event it returns
//! must still equal the point read of its seq and carry its position in its stream, from any
//! start seq, across long runs of one stream (windows that grow and refill), interleaved
//! streams, and records that are not events of the index (a typed `BadEvent`, after which the
//! scan goes on with the right versions).

use std::collections::HashMap;

use annal::format::EventBody;
use annal::{Durability, Error, ExpectedVersion, NewEvent, Options, Store, StoreOptions};

fn opts() -> StoreOptions {
    StoreOptions {
        log: Options {
            segment_bytes: 64 << 10,
            max_record_bytes: 2 << 10,
            durability: Durability::None,
            ..Options::default()
        },
        ..StoreOptions::default()
    }
}

/// A stream id of `len` bytes or more: short ids fit inline in a `SmolStr`, long ones do not.
fn stream_name(k: u64, long: bool) -> String {
    if long { format!("order-{k}-{}", "x".repeat(40)) } else { format!("s-{k}") }
}

/// Appends runs of one stream (up to 1,300 events, past the largest window) between
/// stretches of interleaved single events, and returns each seq's (stream, version).
fn fill(store: &Store) -> Vec<(String, u64)> {
    let mut model: Vec<(String, u64)> = Vec::new();
    let mut next: HashMap<String, u64> = HashMap::new();
    let mut append = |store: &Store, stream: &str, n: u64, model: &mut Vec<(String, u64)>| {
        let batch: Vec<NewEvent> = (0..n)
            .map(|j| NewEvent::new(format!("T{}", j % 3), format!("{stream}/{j}").into_bytes()))
            .collect();
        let r = store.append(stream, ExpectedVersion::Any, &batch).unwrap();
        assert_eq!(r.first_seq, model.len() as u64);
        let v = next.entry(stream.to_owned()).or_insert(0);
        for _ in 0..n {
            model.push((stream.to_owned(), *v));
            *v += 1;
        }
    };
    for round in 0..4u64 {
        let long = round % 2 == 1;
        // In batches of at most 100: a run is events of one stream in a row, whatever the
        // batches.
        let mut left = 1_300 - round * 300;
        while left > 0 {
            append(store, &stream_name(round % 2, long), left.min(100), &mut model);
            left -= left.min(100);
        }
        for k in 0..200u64 {
            append(store, &stream_name(k % 7, k % 3 == 0), 1 + k % 2, &mut model);
        }
    }
    store.log().sync().unwrap();
    model
}

fn check_from(store: &Store, model: &[(String, u64)], from: u64) {
    let mut n = 0;
    for (i, e) in store.read_all(from).enumerate() {
        let e = e.unwrap();
        let seq = from + i as u64;
        assert_eq!(e.seq, seq);
        let (stream, version) = &model[seq as usize];
        assert_eq!((e.stream_id.as_str(), e.version), (stream.as_str(), *version), "seq {seq}");
        assert_eq!(Some(&e), store.event(seq).unwrap().as_ref(), "seq {seq}");
        n += 1;
    }
    assert_eq!(n, model.len() as u64 - from);
}

#[test]
fn scans_from_any_seq_agree_with_the_model_and_the_point_reads() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let model = fill(&store);
    assert!(store.log().stats().rolls >= 3, "the events must span several segments");
    for from in [0, 1, 7, 511, 512, 513, 1_299, 1_300, 1_301, 1_777, 3_000] {
        check_from(&store, &model, from);
    }
    store.close().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    check_from(&store, &model, 0);
    store.close().unwrap();
}

#[test]
fn records_outside_the_index_are_bad_events_and_the_scan_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    let a: Vec<NewEvent> = (0..20).map(|j| NewEvent::new("T", vec![j as u8])).collect();
    store.append("run", ExpectedVersion::NoStream, &a).unwrap();
    // Through the log, under the store: a well-formed body of the run's stream that the index
    // never saw, then bytes that are no event body at all.
    let mut body = Vec::new();
    let forged = EventBody {
        stream_id: "run",
        event_type: "T",
        event_id: [7; 16],
        metadata: b"",
        data: b"",
    };
    forged.encode_into(&mut body);
    let raw = store.log().append(&[body.as_slice(), b"not an event body"]).unwrap();
    store.append("run", ExpectedVersion::Exact(19), &a).unwrap();
    store.append("other", ExpectedVersion::NoStream, &a[..1]).unwrap();
    store.append("run", ExpectedVersion::Exact(39), &a[..1]).unwrap();
    store.log().sync().unwrap();
    for from in [0, 19, raw.first, raw.first + 1, raw.first + 2] {
        let items: Vec<_> = store.read_all(from).collect();
        assert_eq!(items.len() as u64, 44 - from, "from {from}");
        for (i, item) in items.into_iter().enumerate() {
            let seq = from + i as u64;
            match (seq, item) {
                (s, Err(Error::BadEvent { seq, .. })) if s == raw.first || s == raw.first + 1 => {
                    assert_eq!(seq, s)
                }
                (s, Ok(e)) if s < raw.first => assert_eq!((e.seq, e.version), (s, s)),
                (s, Ok(e)) if s < 42 => assert_eq!((e.seq, e.version), (s, s - 2)),
                (42, Ok(e)) => assert_eq!((e.stream_id.as_str(), e.version), ("other", 0)),
                (43, Ok(e)) => assert_eq!((e.stream_id.as_str(), e.version), ("run", 40)),
                (s, other) => panic!("seq {s}: {other:?}"),
            }
        }
    }
    store.close().unwrap();
}

/// Stream ids and event types of every length from 1 to 40 bytes that differ from the last
/// event's in a single byte (first, middle or last), some events with metadata: the scan
/// compares each id with the last event's and must tell them apart, and must hand out the
/// metadata and the data as written.
#[test]
fn ids_that_differ_in_one_byte_and_metadata_scan_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), opts()).unwrap();
    struct Written {
        id: String,
        event_type: String,
        version: u64,
        meta: Vec<u8>,
        data: Vec<u8>,
    }
    let mut model: Vec<Written> = Vec::new();
    let mut next: HashMap<String, u64> = HashMap::new();
    for len in 1..=40usize {
        for at in [0, len / 2, len - 1] {
            for flip in [false, true, false] {
                let mut id: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                if flip {
                    id[at] = b'Z';
                }
                let id = String::from_utf8(id).unwrap();
                let event_type = id.chars().rev().collect::<String>();
                let meta =
                    if model.len().is_multiple_of(3) { Vec::new() } else { id.as_bytes().to_vec() };
                let data = format!("{}/{}", model.len(), id).into_bytes();
                let e = NewEvent::new(event_type.clone(), data.clone()).with_metadata(meta.clone());
                store.append(&id, ExpectedVersion::Any, &[e]).unwrap();
                let v = next.entry(id.clone()).or_insert(0);
                model.push(Written { id, event_type, version: *v, meta, data });
                *v += 1;
            }
        }
    }
    let mut n = 0;
    for (seq, e) in store.read_all(0).enumerate() {
        let e = e.unwrap();
        let Written { id, event_type, version, meta, data } = &model[seq];
        assert_eq!(e.seq, seq as u64);
        assert_eq!(
            (e.stream_id.as_str(), e.event_type.as_str()),
            (id.as_str(), event_type.as_str())
        );
        assert_eq!(e.version, *version, "seq {seq}");
        assert_eq!((&e.metadata[..], &e.data[..]), (&meta[..], &data[..]), "seq {seq}");
        assert_eq!(Some(&e), store.event(seq as u64).unwrap().as_ref(), "seq {seq}");
        n += 1;
    }
    assert_eq!(n, model.len());
    store.close().unwrap();
}
