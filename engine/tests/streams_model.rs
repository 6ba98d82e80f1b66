//! The store against an in-memory model: random appends with all four expectations, retries
//! with the same event ids, reads, clean reopens and crashes (on `SimFs`, random crash mode).
//! Under `Durability::Sync` every acknowledged append must survive, every rejected one must
//! have written nothing, versions are dense, and reads equal the model.
//!
//! Cases: `ANNAL_STREAM_MODEL_CASES` (default 64).

use std::collections::HashMap;
use std::sync::Arc;

use annal::fs::{CrashMode, SimFs, Storage};
use annal::{Direction, Error, ExpectedVersion, NewEvent, Options, Store, StoreOptions};
use proptest::prelude::*;
use uuid::Uuid;

#[derive(Debug, Clone)]
enum Op {
    Append { stream: u8, expect: u8, n: u8, offset: i8 },
    Retry { back: u8 },
    Reopen,
    Crash { mode: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..4, 0u8..4, 1u8..4, -1i8..2)
            .prop_map(|(stream, expect, n, offset)| Op::Append { stream, expect, n, offset }),
        2 => (0u8..8).prop_map(|back| Op::Retry { back }),
        1 => Just(Op::Reopen),
        1 => (0u8..3).prop_map(|mode| Op::Crash { mode }),
    ]
}

fn opts() -> StoreOptions {
    StoreOptions {
        log: Options { segment_bytes: 8 << 10, max_record_bytes: 1 << 10, ..Options::default() },
        recent_event_ids: 1000,
    }
}

/// One successful append as the model remembers it.
#[derive(Debug, Clone)]
struct Done {
    stream: String,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
    first_version: u64,
    first_seq: u64,
}

fn run(seed: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let sim = SimFs::new(seed);
    let storage: Arc<dyn Storage> = Arc::new(sim.clone());
    let mut store = Store::open_with(Arc::clone(&storage), "/m", opts()).unwrap();
    let mut model: HashMap<String, Vec<Uuid>> = HashMap::new();
    let mut done: Vec<Done> = Vec::new();
    let mut next_seq = 0u64;
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Append { stream, expect, n, offset } => {
                let stream = format!("s-{stream}");
                let len = model.get(&stream).map_or(0, Vec::len) as u64;
                let expected = match expect {
                    0 => ExpectedVersion::Any,
                    1 => ExpectedVersion::NoStream,
                    2 => ExpectedVersion::StreamExists,
                    _ => ExpectedVersion::Exact((len as i64 - 1 + i64::from(offset)).max(0) as u64),
                };
                let should = match expected {
                    ExpectedVersion::Any => true,
                    ExpectedVersion::NoStream => len == 0,
                    ExpectedVersion::StreamExists => len > 0,
                    ExpectedVersion::Exact(v) => v + 1 == len,
                };
                let events: Vec<NewEvent> = (0..n)
                    .map(|i| {
                        NewEvent::new("E", format!("{step}/{i}").repeat(step % 9 + 1))
                            .with_id(Uuid::now_v7())
                    })
                    .collect();
                match store.append(&stream, expected, &events) {
                    Ok(r) => {
                        prop_assert!(should, "step {step}: {expected:?} on {len} events accepted");
                        prop_assert_eq!(r.first_version, len);
                        prop_assert_eq!(r.first_seq, next_seq);
                        next_seq += u64::from(n);
                        let ids = model.entry(stream.clone()).or_default();
                        ids.extend(events.iter().map(|e| e.event_id.unwrap()));
                        done.push(Done {
                            stream,
                            expected,
                            events,
                            first_version: len,
                            first_seq: r.first_seq,
                        });
                    }
                    Err(Error::WrongExpectedVersion { actual, .. }) => {
                        prop_assert!(!should, "step {step}: {expected:?} on {len} rejected");
                        prop_assert_eq!(actual, len.checked_sub(1));
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("step {step}: {e}"))),
                }
            }
            Op::Retry { back } => {
                let Some(d) = done.iter().rev().nth(usize::from(back)).cloned() else { continue };
                let r = store
                    .append(&d.stream, d.expected, &d.events)
                    .map_err(|e| TestCaseError::fail(format!("step {step}: retry failed: {e}")))?;
                prop_assert_eq!((r.first_seq, r.first_version), (d.first_seq, d.first_version));
            }
            Op::Reopen => {
                store.close().unwrap();
                store = Store::open_with(Arc::clone(&storage), "/m", opts()).unwrap();
            }
            Op::Crash { mode } => {
                let mode =
                    [CrashMode::Random, CrashMode::DropAll, CrashMode::KeepAll][mode as usize];
                let report = sim.crash_with(mode);
                drop(store);
                store = Store::open_with(Arc::clone(&storage), "/m", opts()).map_err(|e| {
                    TestCaseError::fail(format!("step {step}: reopen after {report:?}: {e}"))
                })?;
            }
        }
        // Reads equal the model after every step.
        for (stream, ids) in &model {
            let evs = store.read_stream(stream, 0, Direction::Forward, usize::MAX).unwrap();
            let got: Vec<Uuid> = evs.iter().map(|e| e.event_id).collect();
            prop_assert_eq!(&got, ids, "step {}: stream {}", step, stream);
            prop_assert!(evs.iter().enumerate().all(|(v, e)| e.version == v as u64));
            prop_assert_eq!(store.stream_version(stream), (ids.len() as u64).checked_sub(1));
        }
        prop_assert_eq!(store.log().visible_end(), next_seq);
    }
    let all: Vec<_> = store.read_all(0).collect::<Result<_, _>>().unwrap();
    prop_assert_eq!(all.len() as u64, next_seq);
    Ok(())
}

fn cases() -> u32 {
    std::env::var("ANNAL_STREAM_MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(seed in any::<u64>(), ops in proptest::collection::vec(op(), 1..60)) {
        run(seed, ops)?;
    }
}

/// A retry after the acknowledgement was lost: the first attempt's fsync fails (the caller
/// sees an error, as after a timeout), the process dies; after reopen the same append with
/// the same ids leaves exactly one copy, whether or not the first write survived.
#[test]
fn idempotent_retry_after_crash_between_write_and_ack() {
    for (seed, mode) in (0..40u64).flat_map(|s| {
        [CrashMode::KeepAll, CrashMode::DropAll, CrashMode::Random].map(move |m| (s, m))
    }) {
        let sim = SimFs::new(seed);
        let storage: Arc<dyn Storage> = Arc::new(sim.clone());
        let store = Store::open_with(Arc::clone(&storage), "/r", opts()).unwrap();
        store.append("acc-1", ExpectedVersion::NoStream, &[NewEvent::new("Opened", "")]).unwrap();
        let batch: Vec<NewEvent> = (0..3)
            .map(|i| NewEvent::new("Deposited", format!("{i}")).with_id(Uuid::now_v7()))
            .collect();
        sim.fail_sync_at(0);
        let first = store.append("acc-1", ExpectedVersion::Exact(0), &batch);
        assert!(first.is_err(), "the injected fsync failure must surface");
        sim.crash_with(mode);
        drop(store);
        sim.clear_faults();
        let store = Store::open_with(Arc::clone(&storage), "/r", opts()).unwrap();
        let retry = store.append("acc-1", ExpectedVersion::Exact(0), &batch).unwrap();
        assert_eq!((retry.first_version, retry.count), (1, 3), "seed {seed} {mode:?}");
        let evs = store.read_stream("acc-1", 0, Direction::Forward, usize::MAX).unwrap();
        let ids: Vec<Uuid> = evs.iter().skip(1).map(|e| e.event_id).collect();
        let want: Vec<Uuid> = batch.iter().map(|e| e.event_id.unwrap()).collect();
        assert_eq!(ids, want, "seed {seed} {mode:?}: exactly one copy");
        // And once more after the retry: still one copy.
        store.append("acc-1", ExpectedVersion::Exact(0), &batch).unwrap();
        assert_eq!(store.stream_version("acc-1"), Some(3));
    }
}
