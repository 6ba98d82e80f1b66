//! A 3-node cluster in one process over the in-memory network: clients append with expected
//! versions; the leader is stopped and a new one takes over; the stopped node comes back and
//! catches up (by snapshot: the log is purged behind snapshots); a partitioned node misses
//! appends and catches up when the partition heals. No acknowledged event is lost, every
//! response is the one the expected version calls for, and every node's store ends
//! identical (same digest of all events).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use annal::{Options, StoreOptions};
use annal_raft::mem_network::Router;
use annal_raft::{
    AppendRequest, AppendResponse, EventData, Expected, LogStore, Raft, StateMachine,
};
use openraft::{BasicNode, Config, SnapshotPolicy};

struct Node {
    raft: Raft,
    sm: StateMachine,
}

fn config() -> Arc<Config> {
    let c = Config {
        heartbeat_interval: 50,
        election_timeout_min: 200,
        election_timeout_max: 400,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(40),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..Config::default()
    };
    Arc::new(c.validate().unwrap())
}

async fn start(router: &Router, base: &Path, id: u64) -> Node {
    let dir = base.join(format!("node-{id}"));
    let log = LogStore::open(dir.join("log"), Options::default()).unwrap();
    let sm = StateMachine::open(dir.join("sm"), StoreOptions::default()).unwrap();
    let raft = Raft::new(id, config(), router.network(id), log, sm.clone()).await.unwrap();
    router.add(id, raft.clone());
    Node { raft, sm }
}

/// The leader every node of `among` agrees on (a restarted old leader may still believe in
/// itself for a while: agreement rules that out).
async fn leader_of(nodes: &BTreeMap<u64, Node>, among: &BTreeSet<u64>) -> u64 {
    for _ in 0..400 {
        let seen: BTreeSet<Option<u64>> =
            among.iter().map(|id| nodes[id].raft.metrics().borrow().current_leader).collect();
        if let [Some(l)] = seen.iter().copied().collect::<Vec<_>>()[..]
            && among.contains(&l)
        {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no leader among {among:?}");
}

/// Proposes `req` through the current leader among `among`, retrying on leader changes
/// (events carry ids, so a retry of an append that did commit returns the first result).
async fn write(
    nodes: &BTreeMap<u64, Node>,
    among: &BTreeSet<u64>,
    req: AppendRequest,
) -> AppendResponse {
    for _ in 0..50 {
        let l = leader_of(nodes, among).await;
        let fut = nodes[&l].raft.client_write(req.clone());
        match tokio::time::timeout(Duration::from_secs(3), fut).await {
            Ok(Ok(resp)) => return resp.data,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("could not write {req:?}");
}

/// What the clients were told.
#[derive(Default)]
struct Acks {
    /// (stream, version, id) of every acknowledged event.
    events: Vec<(String, u64, [u8; 16])>,
    next_id: u64,
}

impl Acks {
    /// Appends one event to `stream` expecting `expected`; checks the response against the
    /// model `versions` (the stream's last acknowledged version).
    async fn append(
        &mut self,
        nodes: &BTreeMap<u64, Node>,
        among: &BTreeSet<u64>,
        versions: &mut BTreeMap<String, u64>,
        stream: &str,
        expected: Expected,
    ) {
        self.next_id += 1;
        let id = uuid::Uuid::from_u64_pair(0xc11e, self.next_id).into_bytes();
        let mut ev = EventData::new("Deposited", format!("{{\"n\":{}}}", self.next_id));
        ev.id = Some(id);
        let req = AppendRequest { stream: stream.to_owned(), expected, events: vec![ev] };
        let actual = versions.get(stream).copied();
        let resp = write(nodes, among, req).await;
        if expected.admits(actual) {
            let want = actual.map_or(0, |v| v + 1);
            match resp {
                AppendResponse::Appended { first_version, count: 1, .. } => {
                    assert_eq!(first_version, want, "{stream}")
                }
                other => panic!("{stream} {expected:?} at {actual:?}: {other:?}"),
            }
            versions.insert(stream.to_owned(), want);
            self.events.push((stream.to_owned(), want, id));
        } else {
            assert_eq!(resp, AppendResponse::WrongExpectedVersion { expected, actual });
        }
    }
}

async fn converge(nodes: &BTreeMap<u64, Node>) -> u64 {
    let all: BTreeSet<u64> = nodes.keys().copied().collect();
    let l = leader_of(nodes, &all).await;
    // Everything the leader holds is what every node must apply.
    let target = nodes[&l].raft.metrics().borrow().last_log_index.unwrap();
    for (id, n) in nodes {
        n.raft
            .wait(Some(Duration::from_secs(20)))
            .applied_index_at_least(Some(target), "converge")
            .await
            .unwrap_or_else(|e| panic!("node {id} did not catch up to {target}: {e}"));
    }
    let digests: BTreeSet<u64> = nodes.values().map(|n| n.sm.digest().unwrap()).collect();
    if digests.len() != 1 {
        let dump: Vec<Vec<(u64, String, u64, String)>> = nodes
            .values()
            .map(|n| {
                n.sm.store()
                    .read_all(0)
                    .map(|e| {
                        let e = e.unwrap();
                        let d = String::from_utf8_lossy(&e.data).to_string();
                        (e.seq, e.stream_id.to_string(), e.version, d)
                    })
                    .collect()
            })
            .collect();
        for ((id, n), d) in nodes.iter().zip(&dump) {
            let m = n.raft.metrics().borrow().clone();
            eprintln!(
                "node {id}: {} events, applied {:?} snapshot {:?} purged {:?}",
                d.len(),
                m.last_applied,
                m.snapshot,
                m.purged
            );
        }
        for i in 0..dump.iter().map(|d| d.len()).max().unwrap() {
            let row: Vec<_> = dump.iter().map(|d| d.get(i)).collect();
            if row.windows(2).any(|w| w[0] != w[1]) {
                eprintln!("first difference at {i}: {row:?}");
                break;
            }
        }
    }
    assert_eq!(digests.len(), 1, "stores differ: {digests:?}");
    target
}

fn check_acks(nodes: &BTreeMap<u64, Node>, acks: &Acks) {
    for (id, n) in nodes {
        let store = n.sm.store();
        for (stream, version, ev_id) in &acks.events {
            let evs = store.read_stream(stream, 0, annal::Direction::Forward, usize::MAX).unwrap();
            let ev = evs
                .iter()
                .find(|e| e.version == *version)
                .unwrap_or_else(|| panic!("node {id} lost {stream}@{version}"));
            assert_eq!(ev.event_id.as_bytes(), ev_id, "node {id} {stream}@{version}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_survive_a_leader_stop_and_a_partition() {
    let tmp = tempfile::tempdir().unwrap();
    let base: PathBuf = tmp.path().to_path_buf();
    let router = Router::default();
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        nodes.insert(id, start(&router, &base, id).await);
    }
    let members: BTreeMap<u64, BasicNode> =
        (1..=3).map(|id| (id, BasicNode::new(format!("mem-{id}")))).collect();
    nodes[&1].raft.initialize(members).await.unwrap();
    let mut all: BTreeSet<u64> = (1..=3).collect();
    let mut acks = Acks::default();
    let mut versions = BTreeMap::new();

    // Phase 1: appends with right and wrong expected versions.
    for i in 0..60u64 {
        let stream = format!("account-{}", i % 4);
        let expected = match (versions.get(&stream).copied(), i % 7) {
            (None, _) => Expected::NoStream,
            (Some(_), 3) => Expected::NoStream, // wrong on purpose
            (Some(v), 5) => Expected::Exact(v + 3), // wrong on purpose
            (Some(v), _) => Expected::Exact(v),
        };
        acks.append(&nodes, &all, &mut versions, &stream, expected).await;
    }

    // Phase 2: stop the leader; a new leader takes over and appends go on.
    let old = leader_of(&nodes, &all).await;
    router.remove(old);
    let stopped = nodes.remove(&old).unwrap();
    stopped.raft.shutdown().await.unwrap();
    drop(stopped);
    all.remove(&old);
    let new = leader_of(&nodes, &all).await;
    assert_ne!(new, old);
    for i in 0..60u64 {
        let stream = format!("account-{}", i % 5);
        let expected = versions.get(&stream).map_or(Expected::NoStream, |&v| Expected::Exact(v));
        acks.append(&nodes, &all, &mut versions, &stream, expected).await;
    }
    converge(&nodes).await;
    check_acks(&nodes, &acks);

    // The leader snapshots and purges its log behind the snapshot, so the stopped node (its
    // log ends before that) can only come back by installing the snapshot.
    let leader = leader_of(&nodes, &all).await;
    nodes[&leader].raft.trigger().snapshot().await.unwrap();
    let m = nodes[&leader]
        .raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.purged.is_some() && m.purged == m.snapshot, "purged behind snapshot")
        .await
        .unwrap();
    assert!(m.purged.unwrap().index > 61, "{m:?}");

    // Phase 3: the stopped node restarts from its directories and catches up.
    nodes.insert(old, start(&router, &base, old).await);
    all.insert(old);
    converge(&nodes).await;
    check_acks(&nodes, &acks);
    // It came back by installing the snapshot (a new store generation).
    let generations: Vec<String> = std::fs::read_dir(base.join(format!("node-{old}/sm")))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("store-"))
        .collect();
    assert!(generations.len() == 1 && generations[0] != "store-0", "{generations:?}");

    // Phase 4: a follower is partitioned off; the majority goes on; the partition heals.
    let leader = leader_of(&nodes, &all).await;
    let cut = *all.iter().find(|&&id| id != leader).unwrap();
    router.isolate(cut);
    let majority: BTreeSet<u64> = all.iter().copied().filter(|&id| id != cut).collect();
    for i in 0..80u64 {
        let stream = format!("account-{}", i % 3);
        let expected = versions.get(&stream).map_or(Expected::NoStream, |&v| Expected::Exact(v));
        acks.append(&nodes, &majority, &mut versions, &stream, expected).await;
    }
    // Then the leader itself is cut off: the other two elect a leader and go on.
    let leader = leader_of(&nodes, &majority).await;
    router.heal();
    router.isolate(leader);
    let rest: BTreeSet<u64> = all.iter().copied().filter(|&id| id != leader).collect();
    for i in 0..20u64 {
        let stream = format!("account-{}", i % 2);
        let expected = versions.get(&stream).map_or(Expected::NoStream, |&v| Expected::Exact(v));
        acks.append(&nodes, &rest, &mut versions, &stream, expected).await;
    }
    router.heal();
    converge(&nodes).await;
    check_acks(&nodes, &acks);
    let total: u64 = versions.values().map(|v| v + 1).sum();
    assert_eq!(total as usize, acks.events.len());
    assert_eq!(nodes.values().next().unwrap().sm.store().log().visible_end(), total);

    for (_, n) in nodes {
        n.raft.shutdown().await.unwrap();
    }
}
