//! The command side. `load_10k`: loading an aggregate of 10,000 events from a snapshot at
//! version 9,990 (a snapshot file plus 9 events) against a full replay of its stream (the
//! baseline, same run). `execute_{sync,none}`: commands per second through
//! `Repository::execute` (load, handle, append with the expected version) with 1 and 8
//! threads on distinct aggregates and on one shared aggregate, against a bare `Store::append`
//! of the same event from 1 thread (the baseline: what a command costs without the
//! aggregate), with every append fsynced (`Durability::Sync`) and without (`None`).

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use annal::format::SnapshotFile;
use annal::{
    Aggregate, Codec, Direction, Durability, ExpectedVersion, JsonCodec, NewEvent, Options,
    Repository, RepositoryOptions, SnapshotStore, SnapshotUse, Store, StoreOptions,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Account {
    balance: u64,
    deposits: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Event {
    Deposited { amount: u64 },
}

#[derive(Debug)]
struct Never;

impl std::fmt::Display for Never {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("never")
    }
}

impl std::error::Error for Never {}

impl Aggregate for Account {
    type Command = u64;
    type Event = Event;
    type Error = Never;
    const CATEGORY: &'static str = "account";
    const SNAPSHOT_SCHEMA: &'static str = "bench.account/1";

    fn handle(&self, amount: &u64) -> Result<Vec<Event>, Never> {
        Ok(vec![Event::Deposited { amount: *amount }])
    }

    fn apply(&mut self, e: &Event) {
        let Event::Deposited { amount } = e;
        self.balance += amount;
        self.deposits += 1;
    }
}

const EVENTS: u64 = 10_000;
const SNAPSHOT_AT: u64 = 9_990;

fn store(dir: &std::path::Path, durability: Durability) -> Store {
    let opts =
        StoreOptions { log: Options { durability, ..Options::default() }, ..Default::default() };
    Store::open(dir, opts).expect("open the store")
}

fn load(c: &mut Criterion) {
    let dir = common::store_dir("aggregate-load");
    let store = store(dir.path(), Durability::None);
    let events: Vec<NewEvent> =
        (0..EVENTS).map(|_| NewEvent::new("Deposited", r#"{"amount":1}"#)).collect();
    for chunk in events.chunks(1_000) {
        store.append("account-big", ExpectedVersion::Any, chunk).expect("append");
    }
    store.log().sync().expect("sync");
    let opts = RepositoryOptions { snapshot_every: None, ..RepositoryOptions::default() };
    let repo: Repository<Account> = Repository::new(store.clone(), opts).expect("repository");
    // The snapshot at version 9,990: the fold of events 0..=9,990.
    let head = store
        .read_stream("account-big", 0, Direction::Forward, (SNAPSHOT_AT + 1) as usize)
        .expect("read");
    let mut state = Account::default();
    for e in &head {
        state.apply(&repo.decode_event(e).expect("decode"));
    }
    let anchor = head.last().expect("events");
    let snapshots = SnapshotStore::for_store(&store);
    snapshots
        .write(&SnapshotFile {
            log_id: snapshots.log_id(),
            stream_id: "account-big".into(),
            stream_version: anchor.version,
            seq: anchor.seq,
            event_id: *anchor.event_id.as_bytes(),
            schema: Account::SNAPSHOT_SCHEMA.into(),
            payload: Codec::<Account>::encode_state(&JsonCodec, &state).expect("encode"),
        })
        .expect("write the snapshot");
    let loaded = repo.load("big").expect("load");
    assert_eq!(loaded.snapshot, SnapshotUse::Used { version: SNAPSHOT_AT });
    assert_eq!(loaded.replayed, EVENTS - SNAPSHOT_AT - 1);
    assert_eq!(loaded.state, repo.replay("big").expect("replay").state);

    let mut g = c.benchmark_group("aggregate/load_10k");
    g.throughput(Throughput::Elements(1));
    g.bench_function("snapshot_at_9990", |b| {
        b.iter(|| black_box(repo.load("big").expect("load").state.balance))
    });
    g.bench_function("full_replay", |b| {
        b.iter(|| black_box(repo.replay("big").expect("replay").state.balance))
    });
    g.finish();
    drop(repo);
    store.close().expect("close");
}

/// Runs `iters` commands split over `threads` threads; `id(t)` is thread `t`'s aggregate.
fn run(
    repo: &Repository<Account>,
    threads: u64,
    iters: u64,
    id: impl Fn(u64) -> String + Sync,
) -> Duration {
    let per = iters.div_ceil(threads);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (repo, id) = (repo.clone(), &id);
            s.spawn(move || {
                let id = id(t);
                for _ in 0..per {
                    black_box(repo.execute(&id, &1).expect("execute"));
                }
            });
        }
    });
    // Per command: the time for all of them, as if `iters` ran (rounding up adds a few).
    start.elapsed().mul_f64(iters as f64 / (per * threads) as f64)
}

fn execute(c: &mut Criterion) {
    for (name, durability) in [("sync", Durability::Sync), ("none", Durability::None)] {
        let dir = common::store_dir("aggregate-execute");
        let store = store(dir.path(), durability);
        let opts = RepositoryOptions { max_retries: 100_000, ..Default::default() };
        let repo: Repository<Account> = Repository::new(store.clone(), opts).expect("repository");
        let mut g = c.benchmark_group(format!("aggregate/execute_{name}"));
        g.throughput(Throughput::Elements(1));
        let mut n = 0u64;
        g.bench_function("baseline_store_append_1_thread", |b| {
            b.iter(|| {
                n += 1;
                let e = NewEvent::new("Deposited", r#"{"amount":1}"#);
                black_box(store.append(&format!("raw-{n}"), ExpectedVersion::NoStream, &[e]))
            })
        });
        g.bench_function("1_thread", |b| {
            b.iter_custom(|iters| run(&repo, 1, iters, |_| "solo".into()))
        });
        g.bench_function("8_threads_distinct", |b| {
            b.iter_custom(|iters| run(&repo, 8, iters, |t| format!("d{t}")))
        });
        g.bench_function("8_threads_same", |b| {
            b.iter_custom(|iters| run(&repo, 8, iters, |_| "shared".into()))
        });
        g.finish();
        repo.flush_snapshots();
        for id in ["solo", "d0", "shared"] {
            let loaded = repo.load(id).expect("load");
            assert_eq!(loaded.state, repo.replay(id).expect("replay").state);
        }
        drop(repo);
        store.close().expect("close");
    }
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = load, execute
}
criterion_main!(benches);
