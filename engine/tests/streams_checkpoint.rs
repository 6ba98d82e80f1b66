//! The stream-index checkpoint is a cache of the log: an open that loads it replays only the
//! log after it and ends with exactly the index a full rebuild gives; a damaged, foreign or
//! ahead-of-log checkpoint is detected, ignored, and the index is rebuilt.

use std::sync::Arc;

use annal::fs::{SimFs, Storage};
use annal::{CheckpointState, Direction, ExpectedVersion, NewEvent, Options, Store, StoreOptions};

fn opts() -> StoreOptions {
    StoreOptions {
        log: Options { segment_bytes: 16 << 10, max_record_bytes: 2 << 10, ..Options::default() },
        recent_event_ids: 50,
    }
}

/// Everything a reader can observe, for comparing two opens.
fn observe(store: &Store) -> Vec<String> {
    let mut out = Vec::new();
    for s in store.streams() {
        let evs = store.read_stream(&s, 0, Direction::Forward, usize::MAX).unwrap();
        out.push(format!("{s}: {:?}", evs.iter().map(|e| (e.version, e.seq)).collect::<Vec<_>>()));
    }
    out.push(format!("{:?}", store.read_category("cat", 0, usize::MAX).unwrap().len()));
    let all: Vec<_> = store.read_all(0).map(|e| e.unwrap()).map(|e| (e.seq, e.version)).collect();
    out.push(format!("{all:?}"));
    out
}

fn fill(store: &Store, from: u64, n: u64) {
    for i in from..from + n {
        let stream = format!("cat-{}", i % 13);
        let data = format!("event {i} ").repeat((i % 20) as usize + 1);
        store.append(&stream, ExpectedVersion::Any, &[NewEvent::new("T", data)]).unwrap();
    }
}

#[test]
fn loaded_checkpoint_equals_full_rebuild_and_damage_is_detected() {
    let sim = SimFs::new(7);
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let store = Store::open_with(Arc::clone(&storage), "/s", opts()).unwrap();
    fill(&store, 0, 400);
    assert!(store.log().stats().rolls > 3);
    store.close().unwrap();

    let store = Store::open_with(Arc::clone(&storage), "/s", opts()).unwrap();
    assert_eq!(store.recovery().checkpoint, CheckpointState::Loaded { covered_seq: 400 });
    assert_eq!(store.recovery().replayed_events, 0);
    let from_checkpoint = observe(&store);
    // Idempotency window survives through the checkpoint too.
    fill(&store, 400, 30);
    let after_more = observe(&store);
    drop(store);

    let ckpt = "/s/streams.ckpt";
    let good = sim.durable_bytes(ckpt).unwrap();
    for (what, bytes) in [
        ("flipped", {
            let mut b = good.clone();
            let mid = b.len() / 2;
            b[mid] ^= 0x10;
            b
        }),
        ("truncated", good[..good.len() - 3].to_vec()),
        ("empty", Vec::new()),
    ] {
        sim.write_file_raw(ckpt, &bytes).unwrap();
        let store = Store::open_with(Arc::clone(&storage), "/s", opts()).unwrap();
        assert!(
            matches!(store.recovery().checkpoint, CheckpointState::Rejected { .. }),
            "{what}: {:?}",
            store.recovery()
        );
        assert_eq!(store.recovery().replayed_events, 430);
        assert_eq!(observe(&store), after_more, "{what}");
        drop(store);
    }
    sim.write_file_raw(ckpt, &good).unwrap();
    let store = Store::open_with(Arc::clone(&storage), "/s", opts()).unwrap();
    // The good checkpoint again (from the drop's best-effort rewrite or the restored bytes):
    // a partial replay that still gives the same index.
    assert!(matches!(store.recovery().checkpoint, CheckpointState::Loaded { .. }));
    assert_eq!(observe(&store), after_more);
    assert_ne!(from_checkpoint, after_more);
}

#[test]
fn checkpoint_ahead_of_the_log_or_from_another_store_is_rejected() {
    let sim = SimFs::new(9);
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let store = Store::open_with(Arc::clone(&storage), "/a", opts()).unwrap();
    fill(&store, 0, 50);
    store.close().unwrap();
    // Keep the log as it is now, then grow it and its checkpoint.
    let seg_dir = std::path::Path::new("/a/segments");
    let old_log: Vec<(String, Vec<u8>)> = storage
        .read_dir(seg_dir)
        .unwrap()
        .into_iter()
        .map(|n| {
            let bytes = sim.durable_bytes(seg_dir.join(&n)).unwrap();
            (n, bytes)
        })
        .collect();
    let store = Store::open_with(Arc::clone(&storage), "/a", opts()).unwrap();
    fill(&store, 50, 150);
    store.close().unwrap();
    let big = sim.durable_bytes("/a/streams.ckpt").unwrap();

    // Ahead of the log: the same store's newer checkpoint beside its older log.
    let older = SimFs::new(10);
    for (n, bytes) in &old_log {
        older.write_file_raw(seg_dir.join(n), bytes).unwrap();
    }
    older.write_file_raw("/a/streams.ckpt", &big).unwrap();
    let store = Store::open_with(Arc::new(older.clone()), "/a", opts()).unwrap();
    let state = store.recovery().checkpoint.clone();
    assert!(
        matches!(&state, CheckpointState::Rejected { reason } if reason.contains("covers")),
        "{state:?}"
    );
    assert_eq!(store.read_all(0).count(), 50);
    drop(store);

    // Another store's checkpoint.
    let other = SimFs::new(12);
    let store = Store::open_with(Arc::new(other.clone()), "/b", opts()).unwrap();
    fill(&store, 0, 10);
    store.close().unwrap();
    other.write_file_raw("/b/streams.ckpt", &big).unwrap();
    let store = Store::open_with(Arc::new(other.clone()), "/b", opts()).unwrap();
    let state = store.recovery().checkpoint.clone();
    assert!(
        matches!(&state, CheckpointState::Rejected { reason } if reason.contains("another")),
        "{state:?}"
    );
    assert_eq!(store.read_all(0).count(), 10);
}

#[test]
fn background_checkpoint_after_rolls_shortens_replay_after_a_crash() {
    let sim = SimFs::new(11);
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let store = Store::open_with(Arc::clone(&storage), "/c", opts()).unwrap();
    fill(&store, 0, 300);
    // The checkpointer runs in the background: wait (bounded) for its file to appear.
    let mut waited = 0;
    while sim.durable_bytes("/c/streams.ckpt").is_none() && waited < 500 {
        std::thread::sleep(std::time::Duration::from_millis(10));
        waited += 1;
    }
    assert!(sim.durable_bytes("/c/streams.ckpt").is_some(), "no checkpoint after rolls");
    let expected = observe(&store);
    sim.crash_with(annal::fs::CrashMode::KeepAll);
    drop(store);
    let store = Store::open_with(Arc::clone(&storage), "/c", opts()).unwrap();
    let CheckpointState::Loaded { covered_seq } = store.recovery().checkpoint else {
        panic!("{:?}", store.recovery())
    };
    assert!(covered_seq > 0);
    assert_eq!(store.recovery().replayed_events, 300 - covered_seq);
    assert_eq!(observe(&store), expected);
}
