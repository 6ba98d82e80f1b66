//! Durable appends per second: an annal `Store` on its own versus the same appends through
//! raft with 1 and with 3 replicas in one process (in-memory network), each with the same
//! number of concurrent clients, each append one event of 100 bytes acknowledged only once
//! durable (the store under `Durability::Sync`; raft once a majority has fsynced the entry
//! and the leader has applied it to its store). Ratios are against the single store measured
//! in the same run.
//!
//! `cargo bench -p annal-raft --bench replicated_appends` (env: ANNAL_RAFT_BENCH_APPENDS,
//! default 4000; ANNAL_RAFT_BENCH_CLIENTS, default 32).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use annal::{ExpectedVersion, NewEvent, Options, Store, StoreOptions};
use annal_raft::mem_network::Router;
use annal_raft::{AppendRequest, EventData, Expected, LogStore, Raft, StateMachine};
use openraft::{BasicNode, Config};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn single_store(dir: &std::path::Path, appends: usize, clients: usize) -> f64 {
    let store = Store::open(dir.join("single"), StoreOptions::default()).unwrap();
    let per = appends / clients;
    let t = Instant::now();
    std::thread::scope(|s| {
        for c in 0..clients {
            let store = store.clone();
            s.spawn(move || {
                for _ in 0..per {
                    let ev = NewEvent::new("Deposited", vec![7u8; 100]);
                    store.append(&format!("client-{c}"), ExpectedVersion::Any, &[ev]).unwrap();
                }
            });
        }
    });
    let secs = t.elapsed().as_secs_f64();
    store.close().unwrap();
    (per * clients) as f64 / secs
}

async fn cluster(dir: &std::path::Path, n: u64, appends: usize, clients: usize) -> f64 {
    let config = Arc::new(
        Config {
            heartbeat_interval: 100,
            election_timeout_min: 500,
            election_timeout_max: 1000,
            ..Config::default()
        }
        .validate()
        .unwrap(),
    );
    let router = Router::default();
    let mut rafts = BTreeMap::new();
    for id in 1..=n {
        let d = dir.join(format!("{n}-node-{id}"));
        let log = LogStore::open(d.join("log"), Options::default()).unwrap();
        let sm = StateMachine::open(d.join("sm"), StoreOptions::default()).unwrap();
        let raft = Raft::new(id, Arc::clone(&config), router.network(id), log, sm).await.unwrap();
        router.add(id, raft.clone());
        rafts.insert(id, raft);
    }
    let members: BTreeMap<u64, BasicNode> = (1..=n).map(|id| (id, BasicNode::default())).collect();
    rafts[&1].initialize(members).await.unwrap();
    let leader = loop {
        if let Some(l) = rafts[&1].metrics().borrow().current_leader {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let per = appends / clients;
    let t = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let raft = rafts[&leader].clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per {
                let req = AppendRequest {
                    stream: format!("client-{c}"),
                    expected: Expected::Any,
                    events: vec![EventData::new("Deposited", vec![7u8; 100])],
                };
                raft.client_write(req).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    for raft in rafts.values() {
        raft.shutdown().await.unwrap();
    }
    (per * clients) as f64 / secs
}

fn main() {
    let appends = env("ANNAL_RAFT_BENCH_APPENDS", 4000);
    let clients = env("ANNAL_RAFT_BENCH_CLIENTS", 32);
    let dir = tempfile::tempdir_in(std::env::var("ANNAL_BENCH_DIR").unwrap_or(".".into())).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let base = single_store(dir.path(), appends, clients);
    let one = rt.block_on(cluster(dir.path(), 1, appends, clients));
    let three = rt.block_on(cluster(dir.path(), 3, appends, clients));
    println!("durable appends/s, {appends} appends of 1 event, {clients} concurrent clients");
    println!("  single store (Durability::Sync):   {base:>10.0}  1.00x");
    println!("  raft, 1 replica:                   {one:>10.0}  {:.2}x", one / base);
    println!("  raft, 3 replicas (one process):    {three:>10.0}  {:.2}x", three / base);
}
