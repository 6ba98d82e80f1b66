//! The stream-index checkpoint is a cache of the log: an open that loads it replays only the
//! log after it and ends with exactly the index a full rebuild gives; a damaged, foreign or
//! ahead-of-log checkpoint is detected, ignored, and the index is rebuilt; a version 2 seq block
//! or id window found damaged when first read is rebuilt from the log, never served.
//!
//! Cases of the model test: `ANNAL_CHECKPOINT_CASES` (default 48).

use std::sync::Arc;

use annal::format::{CheckpointDirectory, CheckpointHeader, SeqBlock, StreamCheckpoint, encode_v2};
use annal::fs::{SimFs, Storage};
use annal::{
    CheckpointState, Direction, Error, ExpectedVersion, NewEvent, Options, Store, StoreOptions,
};

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
        ("flipped header", {
            let mut b = good.clone();
            b[33] ^= 0x10;
            b
        }),
        ("flipped directory", {
            let mut b = good.clone();
            b[64 + 3] ^= 0x10;
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

/// The directory of the version 2 checkpoint `bytes`.
fn directory(bytes: &[u8]) -> CheckpointDirectory {
    let h = CheckpointHeader::decode(bytes).unwrap();
    assert_eq!(h.version, 2);
    let dir = &bytes[64..64 + h.body_bytes as usize];
    CheckpointDirectory::decode(&h, dir, bytes.len() as u64, u64::MAX).unwrap()
}

/// A store of 400 events over 13 streams, closed, and what a full rebuild observes.
fn closed_store(sim: &SimFs) -> Vec<String> {
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let store = Store::open_with(Arc::clone(&storage), "/s", opts()).unwrap();
    fill(&store, 0, 400);
    let seen = observe(&store);
    store.close().unwrap();
    seen
}

#[test]
fn a_damaged_block_found_after_the_open_is_rebuilt_from_the_log() {
    let sim = SimFs::new(21);
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let full = closed_store(&sim);
    let ckpt = "/s/streams.ckpt";
    let dir = directory(&sim.durable_bytes(ckpt).unwrap());
    assert_eq!(dir.streams.len(), 13);
    // One stream's block, then every block: each flipped after the open, when the open has
    // read only the header and the directory.
    let every: Vec<String> = (0..13).map(|i| format!("cat-{i}")).collect();
    for victims in [vec!["cat-5".to_string()], every] {
        let store = Store::open_with(Arc::clone(&storage), "/s", opts()).unwrap();
        assert_eq!(store.recovery().checkpoint, CheckpointState::Loaded { covered_seq: 400 });
        for v in &victims {
            let s = dir.streams.iter().find(|s| s.id == *v).unwrap();
            sim.flip_bit(ckpt, s.block.offset + s.block.bytes / 2, 3).unwrap();
        }
        assert_eq!(observe(&store), full, "victims {victims:?}");
        // The checkpoint written now carries the rebuilt seqs, not the damage.
        store.checkpoint().unwrap();
        let again = StreamCheckpoint::decode(&sim.current_bytes(ckpt).unwrap()).unwrap();
        assert_eq!(again.streams.iter().map(|s| s.seqs.len()).sum::<usize>(), 400);
        drop(store);
        let store = Store::open_with(Arc::clone(&storage), "/s", opts()).unwrap();
        assert!(matches!(store.recovery().checkpoint, CheckpointState::Loaded { .. }));
        assert_eq!(observe(&store), full);
        drop(store);
    }
}

#[test]
fn a_block_the_log_contradicts_fails_with_a_typed_error_not_wrong_data() {
    let sim = SimFs::new(22);
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    closed_store(&sim);
    let ckpt = "/s/streams.ckpt";
    let good = sim.durable_bytes(ckpt).unwrap();
    let whole = StreamCheckpoint::decode(&good).unwrap();
    // The directory says cat-5 has one event fewer than its block and the log hold: the
    // block fails its decode, the log scan finds the true count, and they disagree.
    let mut blocks: Vec<(&str, SeqBlock<'_>)> =
        whole.streams.iter().map(|s| (s.id.as_str(), SeqBlock::Seqs(&s.seqs))).collect();
    let dir = directory(&good);
    let victim = dir.streams.iter().position(|s| s.id == "cat-5").unwrap();
    let s = &dir.streams[victim];
    let raw = good[s.block.offset as usize..(s.block.offset + s.block.bytes) as usize].to_vec();
    blocks[victim].1 =
        SeqBlock::Encoded { seq_count: s.seq_count - 1, bytes: raw, crc: s.block.crc };
    let planted = encode_v2(whole.log_id, whole.covered_seq, &blocks, &[]);
    sim.write_file_raw(ckpt, &planted).unwrap();
    // Read before any append to it: the log's seqs are the stream's, whatever the directory
    // said, and the next checkpoint says so.
    let store = Store::open_with(Arc::clone(&storage), "/s", opts()).unwrap();
    assert!(matches!(store.recovery().checkpoint, CheckpointState::Loaded { .. }));
    let read = store.read_stream("cat-5", 0, Direction::Forward, usize::MAX).unwrap();
    let truth = &whole.streams.iter().find(|s| s.id == "cat-5").unwrap().seqs;
    assert_eq!(&read.iter().map(|e| e.seq).collect::<Vec<_>>(), truth);
    assert_eq!(store.index_stats().events, 400);
    store.close().unwrap();
    let sorted = |mut ck: StreamCheckpoint| {
        ck.streams.sort_by(|a, b| a.id.cmp(&b.id));
        ck.streams
    };
    let rewritten = StreamCheckpoint::decode(&sim.durable_bytes(ckpt).unwrap()).unwrap();
    assert_eq!(sorted(rewritten), sorted(whole.clone()));
    // Appended to first: that append's version came from the directory's count, so the
    // stream is refused rather than served.
    sim.write_file_raw(ckpt, &planted).unwrap();
    let store = Store::open_with(Arc::clone(&storage), "/s", opts()).unwrap();
    store.append("cat-5", ExpectedVersion::Any, &[NewEvent::new("T", "x")]).unwrap();
    let err = store.read_stream("cat-5", 0, Direction::Forward, usize::MAX).unwrap_err();
    assert!(matches!(&err, Error::CheckpointMismatch { stream, .. } if stream == "cat-5"), "{err}");
    assert!(store.read_category("cat", 0, usize::MAX).is_err());
    // The other streams are served, and right.
    let ok = store.read_stream("cat-4", 0, Direction::Forward, usize::MAX).unwrap();
    assert_eq!(
        ok.iter().map(|e| e.seq).collect::<Vec<_>>(),
        whole.streams.iter().find(|s| s.id == "cat-4").unwrap().seqs
    );
}

#[test]
fn a_damaged_id_window_is_rebuilt_from_the_log_and_retries_stay_idempotent() {
    let sim = SimFs::new(23);
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let store = Store::open_with(Arc::clone(&storage), "/s", opts()).unwrap();
    fill(&store, 0, 380);
    let id = uuid::Uuid::from_u128(0xfeed);
    let retry = [NewEvent::new("T", "x").with_id(id)];
    let first = store.append("cat-3", ExpectedVersion::Any, &retry).unwrap();
    fill(&store, 381, 19);
    store.close().unwrap();
    let ckpt = "/s/streams.ckpt";
    let dir = directory(&sim.durable_bytes(ckpt).unwrap());
    assert!(dir.recent_count > 0);
    for damage in [false, true] {
        let store = Store::open_with(Arc::clone(&storage), "/s", opts()).unwrap();
        if damage {
            sim.flip_bit(ckpt, dir.recent.offset + 5, 0).unwrap();
        }
        let again = store.append("cat-3", ExpectedVersion::Any, &retry).unwrap();
        assert_eq!(again, first, "damage {damage}");
        assert_eq!(store.log().visible_end(), 400, "the retry wrote nothing");
        let other = store.append("cat-3", ExpectedVersion::Exact(first.first_version), &retry);
        assert!(other.is_err(), "a retry at another position is refused");
        drop(store);
        if damage {
            // Put the good bytes back for nothing else: the drop rewrote the checkpoint.
            assert!(StreamCheckpoint::decode(&sim.current_bytes(ckpt).unwrap()).is_ok());
        }
    }
}

#[test]
fn a_version_1_checkpoint_still_loads_and_the_next_write_is_version_2() {
    let sim = SimFs::new(24);
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let full = closed_store(&sim);
    let ckpt = "/s/streams.ckpt";
    let v1 = StreamCheckpoint::decode(&sim.durable_bytes(ckpt).unwrap()).unwrap().encode_v1();
    sim.write_file_raw(ckpt, &v1).unwrap();
    let store = Store::open_with(Arc::clone(&storage), "/s", opts()).unwrap();
    assert_eq!(store.recovery().checkpoint, CheckpointState::Loaded { covered_seq: 400 });
    assert_eq!(store.recovery().replayed_events, 0);
    assert_eq!(observe(&store), full);
    store.close().unwrap();
    assert_eq!(CheckpointHeader::decode(&sim.durable_bytes(ckpt).unwrap()).unwrap().version, 2);
    // A damaged version 1 file is rejected whole, as before.
    let mut bad = v1.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    sim.write_file_raw(ckpt, &bad).unwrap();
    let store = Store::open_with(Arc::clone(&storage), "/s", opts()).unwrap();
    assert!(matches!(store.recovery().checkpoint, CheckpointState::Rejected { .. }));
    assert_eq!(observe(&store), full);
}

#[test]
fn unread_blocks_are_copied_into_the_next_checkpoint_and_a_clean_reopen_rewrites_nothing() {
    let sim = SimFs::new(25);
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    closed_store(&sim);
    let ckpt = "/s/streams.ckpt";
    let before = sim.durable_bytes(ckpt).unwrap();
    // Open and close without a change: the file is not written again.
    let writes = sim.write_count();
    Store::open_with(Arc::clone(&storage), "/s", opts()).unwrap().close().unwrap();
    assert_eq!(sim.durable_bytes(ckpt).unwrap(), before);
    assert_eq!(sim.write_count(), writes, "a clean close of an unchanged store wrote");
    // Append to one stream only and checkpoint with every other stream unread.
    let store = Store::open_with(Arc::clone(&storage), "/s", opts()).unwrap();
    store.append("cat-1", ExpectedVersion::Any, &[NewEvent::new("T", "more")]).unwrap();
    store.append("new-1", ExpectedVersion::NoStream, &[NewEvent::new("T", "new")]).unwrap();
    store.checkpoint().unwrap();
    let expected = observe(&store);
    drop(store);
    let after = sim.current_bytes(ckpt).unwrap();
    let (old, new) = (directory(&before), directory(&after));
    for s in new.streams.iter().filter(|s| s.id != "cat-1" && s.id != "new-1") {
        let o = old.streams.iter().find(|o| o.id == s.id).unwrap();
        assert_eq!((s.seq_count, s.block.crc), (o.seq_count, o.block.crc), "{}", s.id);
    }
    let store = Store::open_with(Arc::clone(&storage), "/s", opts()).unwrap();
    assert_eq!(store.recovery().checkpoint, CheckpointState::Loaded { covered_seq: 402 });
    assert_eq!(observe(&store), expected);
    assert_eq!(store.stream_version("cat-1"), Some(31));
    assert_eq!(store.stream_version("new-1"), Some(0));
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        stream: u8,
        n: u8,
    },
    Reopen,
    Checkpoint,
    ReadStream {
        stream: u8,
    },
    ReadCategory {
        cat: u8,
    },
    Event {
        back: u16,
    },
    /// Flip a bit of the open store's checkpoint in a seq block or the id window, then read
    /// every stream.
    Damage {
        at: u16,
        bit: u8,
    },
}

const STREAMS: [&str; 5] = ["a-1", "a-2", "b-1", "solo", "a-3"];

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        6 => (0u8..5, 1u8..12).prop_map(|(stream, n)| Op::Append { stream, n }),
        2 => Just(Op::Reopen),
        1 => Just(Op::Checkpoint),
        2 => (0u8..5).prop_map(|stream| Op::ReadStream { stream }),
        1 => (0u8..2).prop_map(|cat| Op::ReadCategory { cat }),
        1 => any::<u16>().prop_map(|back| Op::Event { back }),
        1 => (any::<u16>(), 0u8..8).prop_map(|(at, bit)| Op::Damage { at, bit }),
    ]
}

fn model_cases() -> u32 {
    std::env::var("ANNAL_CHECKPOINT_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(48)
}

/// Stream reads, category reads and point reads of a store opened from its checkpoint (seq
/// blocks read on first use, some damaged under it) equal an in-memory model of the log.
fn lazy_reads_match(ops: &[Op]) {
    let sim = SimFs::new(31);
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let mut store = Store::open_with(Arc::clone(&storage), "/m", opts()).unwrap();
    let mut model: Vec<Vec<u64>> = vec![Vec::new(); STREAMS.len()];
    let mut owner: Vec<usize> = Vec::new();
    let check_stream = |store: &Store, model: &[Vec<u64>], i: usize| {
        let evs = store.read_stream(STREAMS[i], 0, Direction::Forward, usize::MAX).unwrap();
        let seqs: Vec<u64> = evs.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, model[i], "{}", STREAMS[i]);
        assert!(evs.iter().enumerate().all(|(v, e)| e.version == v as u64));
        assert_eq!(store.stream_version(STREAMS[i]), (model[i].len() as u64).checked_sub(1));
    };
    for op in ops {
        match *op {
            Op::Append { stream, n } => {
                let i = stream as usize;
                let evs: Vec<NewEvent> =
                    (0..n).map(|k| NewEvent::new("T", format!("{i} {k} ").repeat(9))).collect();
                let expect = match model[i].len() {
                    0 => ExpectedVersion::NoStream,
                    l => ExpectedVersion::Exact(l as u64 - 1),
                };
                let r = store.append(STREAMS[i], expect, &evs).unwrap();
                for k in 0..u64::from(r.count) {
                    model[i].push(r.first_seq + k);
                    owner.push(i);
                }
            }
            Op::Reopen => {
                store.close().unwrap();
                store = Store::open_with(Arc::clone(&storage), "/m", opts()).unwrap();
                let state = &store.recovery().checkpoint;
                assert!(matches!(state, CheckpointState::Loaded { .. }), "{state:?}");
            }
            Op::Checkpoint => store.checkpoint().unwrap(),
            Op::ReadStream { stream } => check_stream(&store, &model, stream as usize),
            Op::ReadCategory { cat } => {
                let c = ["a", "b"][cat as usize];
                let got: Vec<u64> =
                    store.read_category(c, 0, usize::MAX).unwrap().iter().map(|e| e.seq).collect();
                let mut want: Vec<u64> = (0..STREAMS.len())
                    .filter(|&i| STREAMS[i].starts_with(&format!("{c}-")))
                    .flat_map(|i| model[i].clone())
                    .collect();
                want.sort_unstable();
                assert_eq!(got, want, "category {c}");
            }
            Op::Event { back } => {
                if let Some(seq) = (owner.len() as u64).checked_sub(1 + u64::from(back)) {
                    let e = store.event(seq).unwrap().unwrap();
                    let i = owner[seq as usize];
                    assert_eq!(e.stream_id, STREAMS[i]);
                    assert_eq!(model[i][e.version as usize], seq);
                }
            }
            Op::Damage { at, bit } => {
                let Some(bytes) = sim.current_bytes("/m/streams.ckpt") else { continue };
                let dir = directory(&bytes);
                // Mostly a seq block (the one `at` picks), sometimes the id window.
                let at = u64::from(at);
                let section = match dir.streams.get((at % 8) as usize) {
                    Some(s) => s.block,
                    None => dir.recent,
                };
                if section.bytes > 0 {
                    let off = section.offset + (at / 8) % section.bytes;
                    sim.flip_bit("/m/streams.ckpt", off, bit).unwrap();
                }
                for i in 0..STREAMS.len() {
                    check_stream(&store, &model, i);
                }
            }
        }
    }
    for i in 0..STREAMS.len() {
        check_stream(&store, &model, i);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(model_cases()))]

    #[test]
    fn lazily_read_streams_equal_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        lazy_reads_match(&ops);
    }
}
