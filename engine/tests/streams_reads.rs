//! Stream, category, global and as-of reads agree with what was appended, before and after a
//! reopen (the index is rebuilt from the log), and idempotent retries write nothing twice.

use annal::{Direction, Error, ExpectedVersion, NewEvent, Store, StoreOptions};
use uuid::Uuid;

fn ev(t: &str, d: &str) -> NewEvent {
    NewEvent::new(t, d.to_owned())
}

#[test]
fn reads_agree_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    store
        .append("order-1", ExpectedVersion::NoStream, &[ev("Placed", "a"), ev("Paid", "b")])
        .unwrap();
    store.append("user-7", ExpectedVersion::Any, &[ev("Joined", "c")]).unwrap();
    let r = store.append("order-2", ExpectedVersion::NoStream, &[ev("Placed", "d")]).unwrap();
    assert_eq!((r.first_seq, r.first_version), (3, 0));
    store.append("order-1", ExpectedVersion::Exact(1), &[ev("Shipped", "e")]).unwrap();
    let check = |store: &Store| {
        let fwd = store.read_stream("order-1", 0, Direction::Forward, 10).unwrap();
        assert_eq!(fwd.iter().map(|e| e.data.as_ref()).collect::<Vec<_>>(), [b"a", b"b", b"e"]);
        assert_eq!(fwd.iter().map(|e| e.seq).collect::<Vec<_>>(), [0, 1, 4]);
        let back = store.read_stream("order-1", u64::MAX, Direction::Backward, 2).unwrap();
        assert_eq!(back.iter().map(|e| e.version).collect::<Vec<_>>(), [2, 1]);
        let cat = store.read_category("order", 1, 10).unwrap();
        assert_eq!(cat.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 3, 4]);
        let all: Vec<_> = store.read_all(0).map(|e| e.unwrap()).collect();
        assert_eq!(all.len(), 5);
        assert_eq!(all[4].version, 2);
        assert_eq!(all[4].event_type, "Shipped");
        let as_of = store.read_stream_as_of("order-1", 3).unwrap();
        assert_eq!(as_of.len(), 2);
        assert_eq!(store.streams(), ["order-1", "order-2", "user-7"]);
        assert_eq!(store.stream_version("nope"), None);
        assert!(store.read_stream("nope", 0, Direction::Forward, 5).unwrap().is_empty());
    };
    check(&store);
    store.close().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    check(&store);
}

#[test]
fn idempotent_retries_return_the_original_result() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let ids = [Uuid::now_v7(), Uuid::now_v7()];
    let batch: Vec<NewEvent> = ids.iter().map(|id| ev("E", "x").with_id(*id)).collect();
    let first = store.append("acc-1", ExpectedVersion::NoStream, &batch).unwrap();
    store.append("acc-1", ExpectedVersion::Exact(1), &[ev("F", "y")]).unwrap();
    // Same ids, same expectation: the original result, nothing written.
    let again = store.append("acc-1", ExpectedVersion::NoStream, &batch).unwrap();
    assert_eq!(again, first);
    let again_any = store.append("acc-1", ExpectedVersion::Any, &batch).unwrap();
    assert_eq!(again_any, first);
    assert_eq!(store.stream_version("acc-1"), Some(2));
    // A partial match is a conflict, not a silent half-write.
    let mixed = [ev("E", "x").with_id(ids[0]), ev("E", "z")];
    assert!(matches!(
        store.append("acc-1", ExpectedVersion::Any, &mixed),
        Err(Error::WrongExpectedVersion { .. })
    ));
    // After a reopen (the id window is rebuilt from the log) the retry is still recognised.
    store.close().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert_eq!(store.append("acc-1", ExpectedVersion::NoStream, &batch).unwrap(), first);
    assert_eq!(store.log().visible_end(), 3);
}

#[test]
fn a_batch_mixing_given_and_fresh_ids_keeps_the_given_ones_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let given = [Uuid::new_v4(), Uuid::new_v4()];
    let batch = [ev("E", "a"), ev("E", "b").with_id(given[0]), ev("E", "c"), ev("E", "d")];
    let tail = [ev("E", "e").with_id(given[1]), ev("E", "f")];
    store.append("mix-1", ExpectedVersion::NoStream, &batch).unwrap();
    store.append("mix-1", ExpectedVersion::Exact(3), &tail).unwrap();
    let read = store.read_stream("mix-1", 0, Direction::Forward, 10).unwrap();
    let ids: Vec<Uuid> = read.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), 6);
    assert_eq!((ids[1], ids[4]), (given[0], given[1]));
    let fresh = [ids[0], ids[2], ids[3], ids[5]];
    assert!(fresh.iter().all(|id| id.get_version_num() == 7), "{fresh:?}");
    assert!(fresh.windows(2).all(|w| w[0] < w[1]), "fresh ids increase: {fresh:?}");
    // The given ids make retries idempotent; the fresh ones were remembered too.
    let again = store.append("mix-1", ExpectedVersion::Exact(3), &tail[..1]).unwrap();
    assert_eq!((again.first_version, again.count), (4, 1));
    assert_eq!(store.stream_version("mix-1"), Some(5));
}

#[test]
fn bad_input_is_a_typed_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert!(matches!(
        store.append("", ExpectedVersion::Any, &[ev("E", "x")]),
        Err(Error::InvalidStreamId { .. })
    ));
    let long = "s".repeat(annal::limits::STREAM_ID_BYTES_MAX + 1);
    assert!(matches!(
        store.append(&long, ExpectedVersion::Any, &[ev("E", "x")]),
        Err(Error::InvalidStreamId { .. })
    ));
    assert!(matches!(store.append("s", ExpectedVersion::Any, &[]), Err(Error::EmptyBatch)));
    assert!(matches!(
        store.append("s", ExpectedVersion::Any, &[ev("", "x")]),
        Err(Error::InvalidEventType { .. })
    ));
    let many: Vec<_> = (0..=annal::limits::BATCH_EVENTS_MAX).map(|_| ev("E", "")).collect();
    assert!(matches!(
        store.append("s", ExpectedVersion::Any, &many),
        Err(Error::TooManyEvents { .. })
    ));
    let huge = NewEvent::new("E", vec![0u8; 17 << 20]);
    assert!(matches!(
        store.append("s", ExpectedVersion::Any, &[huge]),
        Err(Error::RecordTooLarge { .. })
    ));
    assert!(matches!(annal::parse_stream_id(&[0xff, 0xfe]), Err(Error::InvalidStreamId { .. })));
    assert!(matches!(
        store.append("s", ExpectedVersion::Exact(0), &[ev("E", "x")]),
        Err(Error::WrongExpectedVersion { actual: None, .. })
    ));
    assert_eq!(store.log().visible_end(), 0, "nothing may have been written");
}
